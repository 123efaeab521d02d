"""The sans-IO IMAP command reader (RFC 9051 §2.2 and §9, RFC 3501 §9, LITERAL+ RFC 7888).

Bytes go in with ``feed``; ``next_event`` hands out, in order: a ``ContinuationRequest``
when a synchronizing literal ``{n}`` was announced (the server then sends ``+``), a
``Command`` (tag, name, arguments as a token tree), a ``CommandError`` for a command that
cannot be read (answered with BAD, or NO [TOOBIG] when ``too_big``), or a ``RawLine`` when
the session asked for one with ``expect_line`` (AUTHENTICATE answers, IDLE's DONE: the
session's continuation states in ``session_state.py`` ask for it and read it).

A command is read whole — its lines and the literals between them — before it is tokenised.
Tokens: ``str`` for atoms, ``Quoted`` for quoted strings, ``bytes`` for literals, ``list`` for
parenthesised lists. Atoms may hold a bracketed part with spaces and parentheses inside
(``BODY[HEADER.FIELDS (FROM)]<0.10>``), as the FETCH grammar needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class Quoted(str):
    """A quoted string (distinct from an atom: NIL quoted is a string, not NIL)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    pass


@dataclass(frozen=True, slots=True)
class CommandError:
    tag: str
    text: str
    too_big: bool = False
    # The stream cannot be read on (a non-synchronizing literal refused before login): the
    # session answers, says BYE and closes; the parser reads nothing more.
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class RawLine:
    line: bytes


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str  # upper case; "UID FETCH" for the UID forms
    args: list[object]


_LITERAL = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r\n\Z")
# The longest literal marker _LITERAL matches, without its CRLF: "~{" 20 digits "+}".
_MARKER_TAIL = 25
_TAG = re.compile(r"[\x21-\x7e]+")
_TAG_BAD = set('(){%*"\\+')


class TokenError(ValueError):
    pass


class CommandParser:
    """Limits (all in octets but ``max_depth`` and ``max_literals``):

    - ``max_literal``: one APPEND message; ``max_append``: all messages of one (MULTI)APPEND
      together (both answered NO [TOOBIG]).
    - ``max_command``: a command's lines plus its other literals (BAD).
    - ``max_literal_before_login``: any literal while ``authenticated`` is False. Before
      login a synchronizing literal above it, and every APPEND literal, is refused without
      "+"; a non-synchronizing one above it cannot be skipped safely: fatal.
    """

    def __init__(
        self,
        *,
        max_literal: int = 50 * 2**20,
        max_command: int = 65536,
        max_depth: int = 32,
        max_literals: int = 10000,
        max_append: int | None = None,
        max_literal_before_login: int = 8192,
        authenticated: bool = True,
    ) -> None:
        self.max_literal = max_literal
        self.max_command = max_command
        self.max_depth = max_depth
        self.max_literals = max_literals
        self.max_append = max_literal * 2 if max_append is None else max_append
        self.max_literal_before_login = max_literal_before_login
        self.authenticated = authenticated  # the session sets it at login
        self._buf = bytearray()
        self._parts: list[bytes] = []  # the command so far (lines and literal data)
        self._size = 0
        self._append_size = 0  # APPEND literals of the command so far
        self._announced = 0  # octets of every literal the command announced so far
        self._literal_left = 0
        self._literals = 0
        self._skip = 0  # literal bytes of a refused command still to discard
        self._skipping_line = False  # discard up to the next CRLF (after a refused command)
        self._want_line = False
        self._error_tag = "*"
        self._dead = False  # after a fatal error

    def feed(self, data: bytes) -> None:
        if not self._dead:
            self._buf += data

    @property
    def in_command(self) -> bool:
        """Part of a command (or of a refused one still being discarded) has arrived."""
        return bool(
            self._buf or self._parts or self._literal_left or self._skip or self._skipping_line
        )

    @property
    def buffered_octets(self) -> int:
        """Octets held: unread input and the command read so far."""
        return len(self._buf) + sum(len(part) for part in self._parts)

    @property
    def literal_octets(self) -> int:
        """Octets of the literals the command being read has announced so far."""
        return self._announced

    def expect_line(self) -> None:
        self._want_line = True

    def next_event(self) -> Command | ContinuationRequest | CommandError | RawLine | None:
        while True:
            if self._dead:
                return None
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return None
                self._announced = 0
                self._skipping_line = True
            if self._skipping_line:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    # Keep what may be the start of the line's literal marker and its CR, so
                    # that a {N+} cut by the reads is still seen (RFC 7888 §4).
                    if len(self._buf) > _MARKER_TAIL + 1:
                        del self._buf[: -(_MARKER_TAIL + 1)]
                    return None
                line = bytes(self._buf[: end + 2])
                del self._buf[: end + 2]
                m = _LITERAL.search(line)
                if m and m.group(3):  # a LITERAL+ of the refused command: its data follows
                    n = int(m.group(2))
                    if not self.authenticated and n > self.max_literal_before_login:
                        return self._fatal("Literal too large before login")
                    self._skip = n
                    continue
                self._skipping_line = False
                continue
            if self._want_line and not self._parts:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > self.max_command:
                        self._buf.clear()
                        self._want_line = False
                        return CommandError("*", "Line too long")
                    return None
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                self._want_line = False
                return RawLine(line)
            if self._literal_left:
                take = min(self._literal_left, len(self._buf))
                if take:
                    self._parts.append(bytes(self._buf[:take]))
                    del self._buf[:take]
                    self._literal_left -= take
                if self._literal_left:
                    return None
                continue
            end = self._buf.find(b"\r\n")
            if end < 0:
                if self._size + len(self._buf) > self.max_command:
                    if not self._parts:  # the reply carries this line's tag, if readable
                        self._error_tag = self._long_line_tag(self._buf)
                    # The skipping state reads the rest of the line; it keeps what may be
                    # the start of a literal marker, so a {N+} cut by the reads is seen.
                    self._reset()
                    del self._buf[: -(_MARKER_TAIL + 1)]
                    self._skipping_line = True
                    return CommandError(self._error_tag, "Command line too long")
                return None
            line = bytes(self._buf[: end + 2])
            del self._buf[: end + 2]
            if not self._parts:
                self._error_tag = _guess_tag(line)
            if self._size + len(line) > self.max_command:
                if not self._parts:  # as above, so the answer does not depend on the reads
                    self._error_tag = self._long_line_tag(line)
                # As when the line arrives in pieces: refused, then its end is read by the
                # skipping state, which discards the data of a LITERAL+ that follows unasked.
                self._reset()
                self._skipping_line = True
                self._buf[0:0] = line[-(_MARKER_TAIL + 2) :]
                return CommandError(self._error_tag, "Command line too long")
            m = _LITERAL.search(line)
            if m is None:
                self._parts.append(line)
                return self._finish()
            n = int(m.group(2))
            plus = bool(m.group(3))
            self._literals += 1
            self._size += len(line)
            self._announced += n
            is_append = _is_append(self._parts, line)
            refused = self._check_literal(n, plus=plus, is_append=is_append)
            if refused is not None:
                return refused
            if self._literals > self.max_literals:
                return self._drop(n, plus=plus, text="Too many literals")
            self._parts.append(line)
            if is_append:  # APPEND's messages count against max_literal and max_append
                self._append_size += n
            else:
                self._size += n
            self._literal_left = n
            if not plus and n > 0 and len(self._buf) < n:
                return ContinuationRequest()
            continue

    def _long_line_tag(self, data: bytes | bytearray) -> str:
        """The tag of a first line longer than max_command, read from what any way of
        reading it has seen: its first min(_TAG_PEEK, max_command) octets."""
        return _guess_tag(bytes(data[: min(_TAG_PEEK, self.max_command)]), whole=False)

    def _check_literal(self, n: int, *, plus: bool, is_append: bool) -> CommandError | None:
        """Refuse a literal ``{n}`` (``plus``: ``{n+}``) the limits do not allow, before any
        "+" is sent and without reading its data into the command."""
        if not self.authenticated:
            if n > self.max_literal_before_login:
                if plus:
                    # RFC 7888 §4: the data of a non-synchronizing literal follows unasked;
                    # skipping megabytes for an anonymous client is not worth it: close.
                    return self._fatal("Literal too large before login")
                return self._drop(n, plus=False, text="Literal too large before login")
            if is_append:
                # RFC 9051 §6.3.12: APPEND is valid in the authenticated and selected states
                # only; refused before the "+" so that no message is sent for nothing.
                return self._drop(n, plus=plus, text="Log in first")
        if is_append:
            if n > self.max_literal:
                return self._drop(n, plus=plus, text="Literal too large", too_big=True)
            if self._append_size + n > self.max_append:
                # RFC 3502 §4: MULTIAPPEND is all or nothing, so all of it is held at once.
                text = "Messages too large together; append them one by one"
                return self._drop(n, plus=plus, text=text, too_big=True)
        elif n > self.max_command or self._size + n > self.max_command:
            return self._drop(n, plus=plus, text="Command too long")
        return None

    def _drop(self, n: int, *, plus: bool, text: str, too_big: bool = False) -> CommandError:
        """Refuse the command at a literal: a synchronizing one gets no "+" (the client
        reads the tagged answer instead); a non-synchronizing one's data is discarded."""
        self._reset()
        if plus:
            self._skip = n
            self._announced = n  # the command timer allows for the data still to come
        else:
            self._skipping_line = False
        return CommandError(self._error_tag, text, too_big=too_big)

    def _fatal(self, text: str) -> CommandError:
        self._reset()
        self._buf.clear()
        self._skip = 0
        self._skipping_line = False
        self._dead = True
        return CommandError(self._error_tag, text, fatal=True)

    def _reset(self) -> None:
        self._parts.clear()
        self._size = 0
        self._append_size = 0
        self._announced = 0
        self._literals = 0

    def _finish(self) -> Command | CommandError:
        raw = b"".join(self._parts)
        self._reset()
        try:
            return parse_command(raw, self.max_depth)
        except TokenError as exc:
            return CommandError(self._error_tag, str(exc))


# How far into an over-long first line to look for its tag.
_TAG_PEEK = 1024


def _guess_tag(line: bytes, *, whole: bool = True) -> str:
    """The tag at the start of ``line``, or "*" when there is none to read. ``whole``: the
    line is complete (a tag may end at its CRLF); else the tag must end at a space."""
    head, space, _ = line.partition(b" ")
    if not space and not whole:
        return "*"
    head = head.strip()
    try:
        tag = head.decode("ascii")
    except UnicodeDecodeError:
        return "*"
    if tag and _TAG.fullmatch(tag) and not (_TAG_BAD & set(tag)):
        return tag
    return "*"


def _is_append(parts: list[bytes], line: bytes) -> bool:
    first = parts[0] if parts else line
    words = first.split(b" ", 3)
    return len(words) >= 2 and words[1].upper() == b"APPEND"


# -- tokens ---------------------------------------------------------------------------------

# Atoms whose "[...]" may hold spaces and parentheses: FETCH sections (RFC 9051 §9).
_SECTION_PREFIXES = frozenset({b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE"})
_ATOM_STOP = set(b' (){"\r\n') | set(range(0, 0x20)) | {0x7F}


def parse_command(raw: bytes, max_depth: int = 32) -> Command:
    """Tokenise one whole command (lines and literals, CRLF at the end)."""
    if not raw.endswith(b"\r\n"):
        raise TokenError("Missing CRLF")
    tokens = _Tokenizer(raw[:-2], max_depth).tokens()
    if len(tokens) < 2 or not isinstance(tokens[0], str) or isinstance(tokens[0], Quoted):
        raise TokenError("Missing command")
    tag = tokens[0]
    if not _TAG.fullmatch(tag) or _TAG_BAD & set(tag):
        raise TokenError("Invalid tag")
    name_token = tokens[1]
    if not isinstance(name_token, str) or isinstance(name_token, Quoted):
        raise TokenError("Missing command name")
    name = name_token.upper()
    args = tokens[2:]
    if name == "UID":
        if not args or not isinstance(args[0], str):
            raise TokenError("UID needs a command")
        name = "UID " + str(args[0]).upper()
        args = args[1:]
    return Command(tag, name, args)


class _Tokenizer:
    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def tokens(self) -> list[object]:
        out = self._list(0, top=True)
        return out

    def _list(self, depth: int, *, top: bool = False) -> list[object]:
        if depth > self.max_depth:
            raise TokenError("Lists nested too deeply")
        out: list[object] = []
        data = self.data
        while True:
            if self.pos >= len(data):
                if top:
                    return out
                raise TokenError("Missing )")
            ch = data[self.pos]
            if ch == 0x20:
                self.pos += 1
                continue
            if ch == 0x29:  # )
                if top:
                    raise TokenError("Unexpected )")
                self.pos += 1
                return out
            if ch == 0x28:  # (
                self.pos += 1
                out.append(self._list(depth + 1))
            elif ch == 0x22:  # "
                out.append(self._quoted())
            elif ch == 0x7B or (ch == 0x7E and data[self.pos + 1 : self.pos + 2] == b"{"):
                out.append(self._literal())
            else:
                out.append(self._atom())

    def _quoted(self) -> Quoted:
        data = self.data
        self.pos += 1
        out = bytearray()
        while self.pos < len(data):
            ch = data[self.pos]
            if ch == 0x5C:  # backslash
                nxt = data[self.pos + 1 : self.pos + 2]
                if nxt not in (b"\\", b'"'):
                    raise TokenError("Invalid escape in quoted string")
                out += nxt
                self.pos += 2
                continue
            if ch == 0x22:
                self.pos += 1
                try:
                    return Quoted(out.decode("utf-8"))
                except UnicodeDecodeError:
                    raise TokenError("Quoted string is not UTF-8") from None
            if ch in (0x0D, 0x0A, 0x00):
                raise TokenError("CR, LF or NUL in a quoted string")
            out.append(ch)
            self.pos += 1
        raise TokenError("Unterminated quoted string")

    def _literal(self) -> bytes:
        data = self.data
        m = re.compile(rb"~?\{(\d{1,20})\+?\}\r\n").match(data, self.pos)
        if m is None:
            raise TokenError("Invalid literal")
        n = int(m.group(1))
        start = m.end()
        if start + n > len(data):
            raise TokenError("Literal cut short")
        self.pos = start + n
        return bytes(data[start : start + n])

    def _atom(self) -> str:
        data = self.data
        start = self.pos
        depth = 0
        while self.pos < len(data):
            ch = data[self.pos]
            if ch == 0x5B and data[start : self.pos].upper() in _SECTION_PREFIXES:  # [
                depth += 1
            elif ch == 0x5D and depth:  # ]
                depth -= 1
            elif depth == 0 and ch in _ATOM_STOP:
                break
            elif depth and ch in (0x0D, 0x0A):
                raise TokenError("Line break inside brackets")
            self.pos += 1
        if depth:
            raise TokenError("Missing ]")
        if self.pos == start:
            raise TokenError(f"Unexpected character {chr(data[start])!r}")
        try:
            return data[start : self.pos].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError("8-bit characters in an atom") from None
