"""Writing IMAP data (RFC 9051 §4 and §9): strings quoted or as literals, NIL, numbers,
lists, tagged and untagged lines, and modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import base64
import datetime as dt

from pochta.protocols.imap.values import Atom, IMAPValue

_QUOTABLE_MAX = 1024
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _quotable(data: bytes) -> bool:
    if len(data) > _QUOTABLE_MAX:
        return False
    return all(0x20 <= b < 0x7F for b in data)


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


def encode_mailbox(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mailbox(name: str) -> str:
    """Raises ValueError for names that are not valid modified UTF-7."""
    out: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ord(ch) > 0x7E or ord(ch) < 0x20:
            raise ValueError("8-bit or control character in a modified UTF-7 name")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-sequence")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                raw = base64.b64decode(b64, validate=True)
                text = raw.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise ValueError("invalid modified base64 in a mailbox name") from None
            if (
                any(0x20 <= ord(c) <= 0x7E for c in text)
                or encode_mailbox(text) != "&" + chunk + "-"
            ):
                raise ValueError("non-canonical modified UTF-7")
            out.append(text)
        i = end + 1
    return "".join(out)
