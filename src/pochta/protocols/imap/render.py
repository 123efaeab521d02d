"""Writing IMAP data (RFC 9051 §4 and §9): strings quoted or as literals, NIL, numbers,
lists, tagged and untagged lines, and modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import datetime as dt
import re

from pochta.mime.utf7 import decode_modified_utf7, encode_modified_utf7
from pochta.protocols.imap.values import Atom, IMAPValue

_QUOTABLE_MAX = 1024
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


_NOT_QUOTABLE = re.compile(rb"[^\x20-\x7e]")


def _quotable(data: bytes) -> bool:
    """Printable US-ASCII, short: a quoted string (RFC 9051 §4.3); else a literal."""
    return len(data) <= _QUOTABLE_MAX and _NOT_QUOTABLE.search(data) is None


def render(value: IMAPValue, *, binary: bool = False) -> bytes:
    """One value per the convention of ``values.py``. ``binary``: octets that hold NUL go
    as a literal8 (RFC 3516 §4.3)."""
    if value is None:
        return b"NIL"
    if isinstance(value, bool):  # pragma: no cover - not part of the convention
        raise TypeError("bool is not an IMAP value")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, Atom):
        return str(value).encode("utf-8")
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, list | tuple):
        return b"(" + b" ".join(render(v) for v in value) + b")"
    else:  # pragma: no cover
        raise TypeError(f"not an IMAP value: {value!r}")
    if _quotable(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    if binary and b"\x00" in data:
        return b"~{%d}\r\n" % len(data) + data
    return b"{%d}\r\n" % len(data) + data


def render_text(value: IMAPValue) -> str:
    return render(value).decode("utf-8", "replace")


def untagged(*items: IMAPValue | bytes) -> bytes:
    parts = [i if isinstance(i, bytes) else render(i) for i in items]
    return b"* " + b" ".join(parts) + b"\r\n"


def tagged(tag: str, status: str, text: str, code: str | None = None) -> bytes:
    """``tag OK [CODE] text``; the text is made safe (no CR/LF)."""
    clean = text.replace("\r", " ").replace("\n", " ")
    head = f"{tag} {status} "
    if code:
        head += f"[{code}] "
    return (head + clean).encode("utf-8") + b"\r\n"


def format_internaldate(when: dt.datetime) -> str:
    """RFC 9051 §9 date-time: ``dd-Mon-yyyy hh:mm:ss +zzzz`` (day with a leading space)."""
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    zone = f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    return (
        f"{when.day:2d}-{MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {zone}"
    )


def set_text(numbers: list[int]) -> str:
    """Ascending numbers as a compact sequence set (``1:3,7``)."""
    out: list[str] = []
    values = sorted(set(numbers))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}:{values[j]}")
        i = j + 1
    return ",".join(out)


# -- modified UTF-7 (RFC 3501 §5.1.3) -------------------------------------------------------

# One implementation, shared with the Maildir folder directory names.
encode_mailbox = encode_modified_utf7
decode_mailbox = decode_modified_utf7
