"""The Sieve lexer (RFC 5228 §8.1, §2.2–§2.4): script text to tokens with line and column.

Tokens: identifiers (lower-cased: RFC 5228 §8.1 identifiers are case-insensitive), tags
(``:name``), numbers with their K/M/G quantifier applied (§2.4.1), strings (quoted, §2.4.2,
and ``text:`` multi-line, §8.1), and the punctuation ``[ ] { } ( ) , ;``. Comments (``#``
to the end of the line, ``/* ... */``) and white space are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pochta.sieve.errors import SieveError

__all__ = ["MAX_NUMBER", "Token", "TokenKind", "decode_script", "tokenize"]

TokenKind = Literal["identifier", "tag", "number", "string", "punct", "eof"]

# RFC 5228 §2.4.1: implementations must support at least 2^31; we hold 63 bits like Pigeonhole.
MAX_NUMBER = 2**63 - 1
_QUANTIFIERS = {"k": 1024, "m": 1024**2, "g": 1024**3}  # RFC 5228 §2.4.1
_PUNCT = "[]{}(),;"
_ID_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_ID_CHARS = _ID_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: str | int  # str for all but numbers; a string's value is its decoded text
    line: int
    column: int
    multiline: bool = False  # a ``text:`` string

    def describe(self) -> str:
        if self.kind == "eof":
            return "the end of the script"
        if self.kind == "string":
            return "a string"
        if self.kind == "number":
            return f"number {self.value}"
        if self.kind == "tag":
            return f"tag ':{self.value}'"
        if self.kind == "identifier":
            return f"'{self.value}'"
        return f"'{self.value}'"


def decode_script(data: bytes) -> str:
    """The script's text: RFC 5228 §1 scripts are UTF-8; anything else is an error."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SieveError("the script is not valid UTF-8", line, column) from None


def tokenize(text: str) -> list[Token]:
    """Every token of ``text`` and a final ``eof`` token; SieveError at the first bad one."""
    return _Lexer(text).run()


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text

    def run(self) -> list[Token]:
        text = self.text
        n = len(text)
        out: list[Token] = []
        line, line_start = 1, 0
        i = 0
        while True:
            # white space and comments
            while i < n:
                c = text[i]
                if c == "\n":
                    line += 1
                    line_start = i + 1
                    i += 1
                elif c in " \t\r":
                    i += 1
                elif c == "#":  # RFC 5228 §2.3 hash comment, to the end of the line
                    j = text.find("\n", i)
                    i = n if j < 0 else j
                elif text.startswith("/*", i):  # RFC 5228 §2.3 bracketed comment, not nested
                    j = text.find("*/", i + 2)
                    if j < 0:
                        raise SieveError(
                            "unterminated comment: '/*' without '*/'", line, i - line_start + 1
                        )
                    line += text.count("\n", i, j)
                    k = text.rfind("\n", i, j)
                    if k >= 0:
                        line_start = k + 1
                    i = j + 2
                else:
                    break
            col = i - line_start + 1
            if i >= n:
                out.append(Token("eof", "", line, col))
                return out
            c = text[i]
            if c in _PUNCT:
                out.append(Token("punct", c, line, col))
                i += 1
            elif c in _ID_START:
                j = i + 1
                while j < n and text[j] in _ID_CHARS:
                    j += 1
                word = text[i:j].lower()
                if word == "text" and j < n and text[j] == ":":
                    start_line = line
                    value, i, line, line_start = self.multiline(j + 1, line, line_start)
                    out.append(Token("string", value, start_line, col, multiline=True))
                    continue
                out.append(Token("identifier", word, line, col))
                i = j
            elif c == ":":
                j = i + 1
                if j >= n or text[j] not in _ID_START:
                    raise SieveError("expected a tag name after ':' (a letter or '_')", line, col)
                j += 1
                while j < n and text[j] in _ID_CHARS:
                    j += 1
                out.append(Token("tag", text[i + 1 : j].lower(), line, col))
                i = j
            elif c in _DIGITS:
                j = i
                while j < n and text[j] in _DIGITS:
                    j += 1
                number = int(text[i:j])
                if j < n and text[j].lower() in _QUANTIFIERS:
                    number *= _QUANTIFIERS[text[j].lower()]
                    j += 1
                if j < n and text[j] in _ID_CHARS:
                    raise SieveError(
                        f"bad number {text[i : j + 1]!r}: digits may be followed only by K, M or G",
                        line,
                        col,
                    )
                if number > MAX_NUMBER:
                    raise SieveError(f"number {text[i:j]} is too large", line, col)
                out.append(Token("number", number, line, col))
                i = j
            elif c == '"':
                value, j = self.quoted(i, line, col)
                out.append(Token("string", value, line, col))
                nl = text.count("\n", i, j)
                if nl:
                    line += nl
                    line_start = text.rfind("\n", i, j) + 1
                i = j
            else:
                raise SieveError(f"unexpected character {c!r}", line, col)

    def quoted(self, i: int, line: int, col: int) -> tuple[str, int]:
        """RFC 5228 §2.4.2: ``\\\\`` is a backslash, ``\\"`` a quote, any other backslash is
        dropped (the character after it stays)."""
        text = self.text
        n = len(text)
        parts: list[str] = []
        j = i + 1
        start = j
        while True:
            if j >= n:
                raise SieveError("unterminated string: a '\"' is missing", line, col)
            c = text[j]
            if c == '"':
                parts.append(text[start:j])
                return "".join(parts), j + 1
            if c == "\\":
                parts.append(text[start:j])
                if j + 1 >= n:
                    raise SieveError("unterminated string: a '\"' is missing", line, col)
                parts.append(text[j + 1])
                j += 2
                start = j
                continue
            j += 1

    def multiline(self, i: int, line: int, line_start: int) -> tuple[str, int, int, int]:
        """RFC 5228 §8.1 multi-line: ``text:`` then only white space or a hash comment up to
        the line end; lines up to one holding only ``.``; ``..`` at a line start is ``.``."""
        text = self.text
        n = len(text)
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "#":
            k = text.find("\n", j)
            j = n if k < 0 else k
        if j < n and text[j] == "\r":
            j += 1
        if j >= n or text[j] != "\n":
            raise SieveError(
                "after 'text:' only white space or a '#' comment may follow on the line",
                line,
                j - line_start + 1,
            )
        j += 1
        line += 1
        line_start = j
        lines: list[str] = []
        while True:
            if j >= n:
                raise SieveError(
                    "unterminated multi-line string: a line holding only '.' is missing",
                    line,
                    1,
                )
            k = text.find("\n", j)
            end = n if k < 0 else k + 1
            raw = text[j:end]
            body = raw.rstrip("\n").rstrip("\r")
            if body == ".":
                j = end
                line += 1
                line_start = end
                return "".join(lines), j, line, line_start
            if raw.startswith(".."):  # dot-stuffing
                raw = raw[1:]
            lines.append(raw)
            j = end
            line += 1
            line_start = end
