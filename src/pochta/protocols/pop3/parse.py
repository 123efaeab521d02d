"""POP3 command syntax and the framing of multi-line responses.

Commands (RFC 1939 §3, RFC 2449 §3)::

    command  = keyword *(SP param) CRLF    ; keyword: 3-4 printable characters,
    keyword  = 3*4VCHAR                    ; case-insensitive
    param    = 1*40VCHAR                   ; (RFC 2449 §4: params up to 40 octets)

Multi-line responses end with "." CRLF; a line of the body that begins with "." gets one more
"." in front (RFC 1939 §3, "byte-stuffing").
"""

from __future__ import annotations

import base64
import binascii
import re

from pochta.protocols.pop3.responses import BAD_BASE64, ResponseError, err

__all__ = [
    "MAX_NUMBER_DIGITS",
    "decode_base64",
    "dot_stuff",
    "multiline",
    "parse_number",
    "split_command",
    "top_of",
]

# A message number or line count longer than this is refused rather than converted: a
# maildrop never holds 10^10 messages, and int() of a long digit string costs time.
MAX_NUMBER_DIGITS = 10

_DIGITS = re.compile(r"[0-9]+")


def split_command(line: str) -> tuple[str, str]:
    """(KEYWORD upper-cased, the rest after one space) (RFC 1939 §3: keywords are
    case-insensitive and separated from their arguments by a single space)."""
    keyword, _, rest = line.partition(" ")
    return keyword.upper(), rest


def parse_number(text: str, *, minimum: int = 1) -> int:
    """A message number (RFC 1939 §5: "a message-number ... 1 ...") or, with ``minimum=0``,
    TOP's line count (RFC 1939 §7: "a non-negative number of lines")."""
    if not _DIGITS.fullmatch(text) or len(text) > MAX_NUMBER_DIGITS:
        raise ResponseError(err(f"Not a number: {text[:20]!r}" if text else "Number expected"))
    value = int(text)
    if value < minimum:
        raise ResponseError(err("Message numbers start at 1") if minimum else err("Bad number"))
    return value


def decode_base64(text: str) -> bytes:
    """A SASL response or initial response (RFC 5034 §4: BASE64, RFC 4648 §4)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError(BAD_BASE64) from None


def dot_stuff(content: bytes) -> bytes:
    """The body of a multi-line response: byte-stuffed (RFC 1939 §3) and ending in CRLF, ready
    for the terminating ".\\r\\n".

    A "." is added at the start of every line that begins with one. Lines end with CRLF in the
    store's messages, but a "." is also stuffed after a bare LF: a client that splits lines
    on LF alone (many do) must never see a "." CRLF line that is not our terminator.
    """
    stuffed = content.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        # RFC 1939 §3: the terminator is CRLF "." CRLF; a message without a final line end
        # gets one, so its last line is not joined with the terminator.
        stuffed += b"\r\n"
    return stuffed


def multiline(lines: list[str]) -> bytes:
    """Text lines as a multi-line response body with its terminator (RFC 1939 §3)."""
    body = "".join(f"{line}\r\n" for line in lines).encode()
    return dot_stuff(body) + b".\r\n"


def top_of(content: bytes, lines: int) -> bytes:
    """RFC 1939 §7 TOP: the header, the blank line after it, then ``lines`` lines of the body
    (all of it when it has fewer). A message without a blank line is all header."""
    if content.startswith(b"\r\n"):
        head_end = 2  # an empty header: the message starts with the blank line
    else:
        blank = content.find(b"\r\n\r\n")
        if blank < 0:
            return content
        head_end = blank + 4
    end = head_end
    for _ in range(lines):
        nl = content.find(b"\n", end)
        if nl < 0:
            return content
        end = nl + 1
    return content[:end]
