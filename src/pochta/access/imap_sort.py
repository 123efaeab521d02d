"""SORT (RFC 5256 §3, DISPLAYFROM/DISPLAYTO RFC 5957): the order of messages by criteria.

Base subjects follow RFC 5256 §2.1 (leaders "Re:", "Fwd:", "Fw:", "[blob]" and the
"(fwd)" trailer removed repeatedly, "[fwd: ...]" unwrapped), after RFC 2047 decoding.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass

from pochta.access.imap_headers import decode_value, raw_fields
from pochta.store import MessageInfo

_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"^(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:\s*", re.IGNORECASE)
_BLOB_ONLY = re.compile(rf"^{_BLOB}")
_TRAILER = re.compile(r"\s*\(fwd\)\s*$", re.IGNORECASE)
_FWD_WRAP = re.compile(r"^\[fwd:\s*(.*)\]$", re.IGNORECASE | re.DOTALL)


def base_subject(subject: str) -> str:
    s = " ".join(subject.split())
    while True:
        before = s
        while True:  # (2) trailers
            t = _TRAILER.sub("", s)
            if t == s:
                break
            s = t
        while True:  # (5) leaders and blobs
            t = _LEADER.sub("", s)
            if t == s:
                b = _BLOB_ONLY.sub("", s)
                if b and b != s:
                    t = b
            if t == s:
                break
            s = t
        m = _FWD_WRAP.match(s)  # (6)
        if m:
            s = m.group(1).strip()
        if s == before:
            return s.casefold()


@dataclass(frozen=True, slots=True)
class SortInfo:
    seq: int
    uid: int
    arrival: float
    date: float
    size: int
    subject: str
    from_: str
    to: str
    cc: str
    display_from: str
    display_to: str


def _first(value: str) -> tuple[str, str]:
    pairs = email.utils.getaddresses([value]) if value else []
    if not pairs:
        return "", ""
    name, addr = pairs[0]
    return addr.rpartition("@")[0] or addr, name or addr


def sort_info(seq: int, uid: int, info: MessageInfo, raw: bytes) -> SortInfo:
    fields: dict[str, str] = {}
    for name, value in raw_fields(raw):
        fields.setdefault(name, decode_value(value))
    date = info.internal_date
    if "date" in fields:
        try:
            parsed = email.utils.parsedate_to_datetime(fields["date"])
            date = parsed.timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    from_box, from_display = _first(fields.get("from", ""))
    to_box, to_display = _first(fields.get("to", ""))
    cc_box, _ = _first(fields.get("cc", ""))
    return SortInfo(
        seq,
        uid,
        info.internal_date,
        date,
        info.size,
        base_subject(fields.get("subject", "")),
        from_box.casefold(),
        to_box.casefold(),
        cc_box.casefold(),
        from_display.casefold(),
        to_display.casefold(),
    )


_KEYS: dict[str, Callable[[SortInfo], object]] = {
    "ARRIVAL": lambda i: i.arrival,
    "DATE": lambda i: i.date,
    "SIZE": lambda i: i.size,
    "SUBJECT": lambda i: i.subject,
    "FROM": lambda i: i.from_,
    "TO": lambda i: i.to,
    "CC": lambda i: i.cc,
    "DISPLAYFROM": lambda i: i.display_from,
    "DISPLAYTO": lambda i: i.display_to,
}


def sort_messages(infos: list[SortInfo], criteria: list[tuple[str, bool]]) -> list[SortInfo]:
    """Stable sorts from the last criterion to the first; ties keep sequence order."""
    out = sorted(infos, key=lambda i: i.seq)
    for name, reverse in reversed(criteria):
        out.sort(key=_KEYS[name], reverse=reverse)  # type: ignore[arg-type]
    return out
