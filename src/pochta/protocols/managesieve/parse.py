"""ManageSieve command syntax (RFC 5804 §4): one command = an atom, then arguments separated
by spaces (atoms, numbers, quoted strings, literals), then CRLF.

The ABNF this module implements (RFC 5804 §4, with RFC 5234's core rules)::

    command       = command-name *(SP argument) CRLF    ; the shapes per command: server.py
    string        = quoted / literal-c2s / literal-s2c
    quoted        = DQUOTE *1024QUOTED-CHAR DQUOTE
    QUOTED-CHAR   = SAFE-UTF8-CHAR / "\\" QUOTED-SPECIALS
    QUOTED-SPECIALS = DQUOTE / "\\"
    SAFE-CHAR     = %x01-09 / %x0B-0C / %x0E-21 / %x23-5B / %x5D-7F
    literal-c2s   = "{" number "+" "}" CRLF *OCTET
    literal-s2c   = "{" number "}" CRLF *OCTET
    number        = 1*DIGIT                             ; 0 .. 4,294,967,295

``parse_command`` is pure: it looks at the buffer from its start and says what is there: a
whole command (and where it ends), not enough bytes yet (and how many at least are needed),
or an error (and from where the rest of the line is to be dropped). It never depends on how
the bytes were cut into reads, so a command fed byte by byte gives what it gives whole
(tests/unit/test_managesieve_core.py holds it as a property).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_NUMBER",
    "MAX_QUOTED_OCTETS",
    "Atom",
    "Bad",
    "Command",
    "Incomplete",
    "LiteralTooLarge",
    "Token",
    "TooLong",
    "parse_command",
    "parse_string_line",
]

MAX_QUOTED_OCTETS: Final = 1024  # RFC 5804 §4: quoted = DQUOTE *1024QUOTED-CHAR DQUOTE
MAX_NUMBER: Final = 4_294_967_295  # RFC 5804 §4: number is 0 .. 4,294,967,295
_ATOM_END: Final = frozenset(b' \r\n"{}()')


@dataclass(frozen=True, slots=True)
class Atom:
    """An unquoted word: a command name, a number, or another atom."""

    text: str


Token = Atom | bytes  # bytes: a string's value (quoted or literal), unescaped


@dataclass(frozen=True, slots=True)
class Command:
    tokens: list[Token]
    end: int  # the offset just past the CRLF


@dataclass(frozen=True, slots=True)
class Incomplete:
    need: int  # nothing can be decided before the buffer holds this many octets


@dataclass(frozen=True, slots=True)
class Bad:
    """A syntax error; the rest of the line from ``at`` is to be dropped."""

    message: str
    at: int


@dataclass(frozen=True, slots=True)
class TooLong:
    """The command line (literals not counted) is longer than the limit; the rest of the
    line from ``at`` is to be dropped."""

    at: int


@dataclass(frozen=True, slots=True)
class LiteralTooLarge:
    """A literal larger than the limit: its ``size`` octets from ``at`` are to be skipped,
    then the rest of its line."""

    size: int
    at: int


Parsed = Command | Incomplete | Bad | TooLong | LiteralTooLarge


def parse_command(buf: bytes | bytearray, *, max_line_bytes: int, max_literal_bytes: int) -> Parsed:
    """The command at the start of ``buf`` (see the module docstring)."""
    tokens: list[Token] = []
    pos = 0
    line_bytes = 0  # octets of the line outside literals
    size = len(buf)
    while True:
        if line_bytes > max_line_bytes:
            return TooLong(pos)
        if pos >= size:
            return Incomplete(size + 1)
        c = buf[pos]
        if tokens or pos > 0:
            if c == 0x0D or c == 0x0A:
                end = _line_end(buf, pos)
                if end is None:
                    return Incomplete(size + 1)
                if end < 0:
                    return Bad("a line ends with CRLF", pos)
                return Command(tokens, end)
            if c != 0x20:
                return Bad("arguments are separated by one space", pos)
            pos += 1
            line_bytes += 1
            if pos >= size:
                return Incomplete(size + 1)
            c = buf[pos]
        elif c == 0x0D or c == 0x0A:
            end = _line_end(buf, pos)
            if end is None:
                return Incomplete(size + 1)
            if end < 0:
                return Bad("a line ends with CRLF", pos)
            return Command([], end)  # an empty line: ignored
        start = pos
        if c == 0x22:  # quoted
            result = _quoted(buf, pos)
            if isinstance(result, Incomplete | Bad):
                return result  # a quoted string is short (1024 octets): no limit needed here
            value, pos = result
            tokens.append(value)
            line_bytes += pos - start
        elif c == 0x7B:  # literal
            header = _literal_header(buf, pos)
            if isinstance(header, Incomplete | Bad):
                return header
            length, body = header
            line_bytes += body - start
            if length > max_literal_bytes:
                return LiteralTooLarge(length, body)
            if size < body + length:
                return Incomplete(body + length)
            tokens.append(bytes(buf[body : body + length]))
            pos = body + length
        else:
            while pos < size and buf[pos] not in _ATOM_END and 0x20 < buf[pos] < 0x7F:
                pos += 1
            if pos == start:
                return Bad(f"unexpected {chr(c)!r}" if 0x20 < c < 0x7F else "unexpected octet", pos)
            line_bytes += pos - start
            if line_bytes > max_line_bytes:
                return TooLong(pos)  # checked before the atom's end: the same, however cut
            if pos >= size:
                return Incomplete(size + 1)
            if buf[pos] not in _ATOM_END:
                return Bad("an atom is printable ASCII", pos)
            tokens.append(Atom(buf[start:pos].decode("ascii")))


def _line_end(buf: bytes | bytearray, pos: int) -> int | None:
    """Past the line end at ``pos``: CRLF, or a bare LF (taken as one, as Dovecot does);
    None when a CR is the last octet; -1 for a CR followed by something else."""
    if buf[pos] == 0x0A:
        return pos + 1
    if pos + 1 >= len(buf):
        return None
    return pos + 2 if buf[pos + 1] == 0x0A else -1


def _quoted(buf: bytes | bytearray, pos: int) -> tuple[bytes, int] | Incomplete | Bad:
    out = bytearray()
    i = pos + 1
    size = len(buf)
    while i < size:
        c = buf[i]
        if c == 0x22:
            return bytes(out), i + 1
        if c == 0x5C:  # RFC 5804 §4: "\" QUOTED-SPECIALS
            if i + 1 >= size:
                return Incomplete(size + 1)
            n = buf[i + 1]
            if n not in (0x22, 0x5C):
                return Bad('in a quoted string "\\" escapes only "\\" and \'"\'', i)
            out.append(n)
            i += 2
        elif c in (0x00, 0x0D, 0x0A):  # SAFE-CHAR: no NUL, CR or LF
            return Bad("a quoted string holds no CR, LF or NUL; send a literal", i)
        else:
            out.append(c)
            i += 1
        if len(out) > MAX_QUOTED_OCTETS:
            return Bad(
                f"a quoted string holds at most {MAX_QUOTED_OCTETS} octets; send a literal", i
            )
    return Incomplete(size + 1)


def _literal_header(buf: bytes | bytearray, pos: int) -> tuple[int, int] | Incomplete | Bad:
    """``{N+}CRLF`` or ``{N}CRLF`` at ``pos``: (N, offset of the literal's first octet).
    RFC 5804 §4 has no continuation: the server never sends "+" for either form."""
    i = pos + 1
    size = len(buf)
    digits = bytearray()
    while i < size and 0x30 <= buf[i] <= 0x39:
        digits.append(buf[i])
        i += 1
        if len(digits) > 10:
            return Bad("a literal's length is a number up to 4294967295", i)
    if i >= size:
        return Incomplete(size + 1)
    if not digits:
        return Bad("a literal is {N+} or {N}, then CRLF", i)
    if buf[i] == 0x2B:  # "+"
        i += 1
        if i >= size:
            return Incomplete(size + 1)
    if buf[i] != 0x7D:
        return Bad("a literal is {N+} or {N}, then CRLF", i)
    i += 1
    if i >= size:
        return Incomplete(size + 1)
    end = _line_end(buf, i)
    if end is None:
        return Incomplete(size + 1)
    if end < 0 or buf[i] not in (0x0D, 0x0A):
        return Bad("a literal's length is followed by CRLF", i)
    length = int(digits)
    if length > MAX_NUMBER:
        return Bad("a literal's length is a number up to 4294967295", pos)
    return length, end


def parse_string_line(
    buf: bytes | bytearray, *, max_line_bytes: int, max_literal_bytes: int
) -> Parsed:
    """A line holding one string: a client's answer to a SASL challenge (RFC 5804 §2.1).
    The same as a command of one token, which must be a string."""
    parsed = parse_command(buf, max_line_bytes=max_line_bytes, max_literal_bytes=max_literal_bytes)
    if isinstance(parsed, Command) and (
        len(parsed.tokens) != 1 or isinstance(parsed.tokens[0], Atom)
    ):
        return Bad("an answer to a challenge is one string", parsed.end - 1)  # its LF
    return parsed
