"""The header block of a message as raw bytes: split it, edit fields, join it back exactly.

cleanup never decodes or re-encodes a message: the body may be 8-bit or binary (RFC 6152,
RFC 3030) and header fields may hold UTF-8 (RFC 6532). :func:`split_message` cuts the
content into header fields, the separating empty line and the body, keeping every byte, so
``split_message(x).join() == x`` for any ``x``. Fields we do not change are written back as
they came, folding and all; only the fields we add or rewrite are new bytes.

Where the header block ends (RFC 5322 §2.1, §2.2, §3.5):

- at the first empty line (CRLF, or LF alone in a message that uses bare LF line ends);
- or at the first line that is neither a field (``name: ...``) nor a continuation of one
  (a line starting with SP or HTAB, RFC 5322 §2.2.3): that line starts the body, as in
  Postfix cleanup(8), and ``separator`` is empty.

A field name is printable US-ASCII except ``:`` (RFC 5322 §2.2 ftext); whitespace between
the name and the colon is tolerated (RFC 5322 §4.5, obsolete syntax). A line ends at LF; a
CR not followed by LF is ordinary text (the SMTP layer has already refused bare CRs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_HEADER_BLOCK_BYTES",
    "MAX_HEADER_FIELD_BYTES",
    "HeaderField",
    "HeaderLimitError",
    "SplitMessage",
    "detect_newline",
    "leading_fields",
    "make_field",
    "split_message",
]

MAX_HEADER_BLOCK_BYTES = 1024 * 1024
"""A header block larger than this is refused (Postfix header_size_limit is per field)."""
MAX_HEADER_FIELD_BYTES = 64 * 1024
"""One field, continuation lines included, larger than this is refused."""

# RFC 5322 §2.2: field-name = 1*ftext, ftext = %d33-57 / %d59-126; §4.5.1 obs: WSP before ":".
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_NAME_TEXT = re.compile(r"[\x21-\x39\x3b-\x7e]+")


class HeaderLimitError(ValueError):
    """The header block or one field is over its limit; ``what`` says which."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is over {limit} bytes ({size}+)")
        self.what = what
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One field as it came: ``raw`` holds the name, the colon, the value with its
    continuation lines and the final line ending (absent only at the end of the content)."""

    raw: bytes
    name: str  # as written, without whitespace before the colon

    @property
    def key(self) -> str:
        """The name lower-cased, for comparisons (field names are case-insensitive)."""
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """Everything after the colon, line ending included."""
        return self.raw[self.raw.index(b":") + 1 :]

    @property
    def text(self) -> str:
        """The value as text without the final line ending, leading and trailing
        whitespace; bytes that are not UTF-8 become surrogate escapes."""
        return self.value.decode("utf-8", "surrogateescape").strip()


@dataclass(frozen=True, slots=True)
class SplitMessage:
    headers: tuple[HeaderField, ...]
    separator: bytes  # b"\r\n", b"\n", or b"" when the block ended without an empty line
    body: bytes

    def join(self) -> bytes:
        return b"".join(h.raw for h in self.headers) + self.separator + self.body

    @property
    def header_bytes(self) -> int:
        return sum(len(h.raw) for h in self.headers)

    def get_all(self, name: str) -> list[HeaderField]:
        key = name.lower()
        return [h for h in self.headers if h.key == key]

    def has(self, name: str) -> bool:
        key = name.lower()
        return any(h.key == key for h in self.headers)

    def count(self, name: str) -> int:
        key = name.lower()
        return sum(1 for h in self.headers if h.key == key)


def split_message(
    content: bytes,
    *,
    max_block_bytes: int | None = None,
    max_field_bytes: int | None = None,
) -> SplitMessage:
    """Cut ``content`` into header fields, separator and body (see the module docstring).

    With limits, raise HeaderLimitError as soon as the header block or one field is over
    its limit, without reading further.
    """
    headers: list[HeaderField] = []
    start: int | None = None  # where the current field starts
    name = ""
    pos = 0
    size = len(content)
    while pos < size:
        newline = content.find(b"\n", pos)
        end = size if newline < 0 else newline + 1
        if content[pos : pos + 1] in (b" ", b"\t"):
            if start is None:
                break  # continuation text without a field: the body starts here
        elif content[pos:end] in (b"\r\n", b"\n"):
            if start is not None:
                headers.append(HeaderField(content[start:pos], name))
            return SplitMessage(tuple(headers), content[pos:end], content[end:])
        else:
            match = _FIELD_NAME.match(content, pos, end)
            if match is None:
                break  # not a field: the body starts here
            if start is not None:
                headers.append(HeaderField(content[start:pos], name))
            start, name = pos, match.group(1).decode("ascii")
        assert start is not None  # a field is open here: its first line or a continuation
        if max_block_bytes is not None and end > max_block_bytes:
            raise HeaderLimitError("header block", end, max_block_bytes)
        if max_field_bytes is not None and end - start > max_field_bytes:
            raise HeaderLimitError(f"header field {name}", end - start, max_field_bytes)
        pos = end
    if start is not None:
        headers.append(HeaderField(content[start:pos], name))
    return SplitMessage(tuple(headers), b"", content[pos:])


def detect_newline(message: SplitMessage) -> bytes:
    """The line ending the message uses: that of its first line; CRLF when there is none."""
    for raw in (*(h.raw for h in message.headers), message.separator, message.body):
        newline = raw.find(b"\n")
        if newline >= 0:
            return b"\r\n" if raw[newline - 1 : newline] == b"\r" else b"\n"
    return b"\r\n"


def make_field(name: str, value: str, newline: bytes = b"\r\n") -> HeaderField:
    """A new field ``name: value``; line breaks in ``value`` must be followed by SP or HTAB
    (folding, RFC 5322 §2.2.3) and are written with ``newline``. UTF-8 is allowed in the
    value (RFC 6532 §3.2)."""
    if not _NAME_TEXT.fullmatch(name):
        raise ValueError(f"{name!r} is not a header field name (RFC 5322 §2.2)")
    lines = value.replace("\r\n", "\n").split("\n")
    if any("\r" in line for line in lines) or any(
        line[:1] not in (" ", "\t") for line in lines[1:]
    ):
        raise ValueError("a line break in a header value must be followed by SP or HTAB")
    text = newline.decode("ascii").join(lines)
    raw = f"{name}: {text}".encode("utf-8", "surrogateescape") + newline
    return HeaderField(raw, name)


def leading_fields(content: bytes, limit: int) -> tuple[HeaderField, ...]:
    """The header fields of ``content`` that lie within its first ``limit`` bytes: all of
    them when the header block ends there; else those that end before the limit (the field
    that crosses it may go on, so it is left out). For checks that read the header of any
    message but must not scan more than ``limit`` bytes of it."""
    try:
        return split_message(content, max_block_bytes=limit).headers
    except HeaderLimitError:
        pass
    cut = content.rfind(b"\n", 0, limit) + 1
    return split_message(content[:cut]).headers[:-1]
