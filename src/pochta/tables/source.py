"""Reading table source files: size limits, decoding, and Postfix "logical lines".

Both text formats we read (postmap(1) tables and aliases(5) files) share one line
discipline, the one Postfix implements in ``readlline()`` (vdukhovni/postfix
``postfix/src/util/readlline.c``) and documents in postmap(1) "INPUT FILE FORMAT":

- empty lines, whitespace-only lines, and lines whose first non-whitespace character is
  ``#`` are ignored; a ``#`` anywhere else is ordinary text;
- a logical line starts with non-whitespace text; a physical line that starts with
  whitespace continues it. Ignored lines in between do not end the logical line;
- the pieces are joined as they are, newline removed, the continuation's leading
  whitespace kept;
- continuation text with no logical line before it is ignored with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

MAX_FILE_BYTES = 64 * 1024 * 1024
"""A table source larger than this is refused (64 MiB)."""

MAX_LINE_CHARS = 1024 * 1024
"""A physical or logical line longer than this is refused (1 MiB)."""

WHITESPACE = " \t\n\v\f\r"
"""C ``isspace()`` in the C locale, which is what Postfix splits and trims on."""


class TableError(Exception):
    """A table cannot be used. The message reads ``FILE:LINE: what is wrong; what to write``."""


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One logical line and the number of the physical line it starts on (1-based)."""

    lineno: int
    text: str


def read_source(path: str | os.PathLike[str]) -> str:
    """The text of a table source file, refusing files over ``MAX_FILE_BYTES``.

    Bytes that are not UTF-8 are kept as surrogate escapes, so that the parser can skip just
    the logical lines that hold them (with a warning), as Postfix does with non-UTF-8 input.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            check_size(name, size)
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TableError(f"{name}: cannot read: {reason}; check the path and permissions") from exc
    check_size(name, len(data))
    return data.decode("utf-8", errors="surrogateescape")


def check_size(source: str, size: int) -> None:
    """Refuse a source of ``size`` bytes (or characters) over ``MAX_FILE_BYTES``."""
    if size > MAX_FILE_BYTES:
        raise TableError(
            f"{source}: file is {size} bytes, over the {MAX_FILE_BYTES // (1024 * 1024)} MiB "
            "limit; split it into several tables"
        )


def is_utf8(text: str) -> bool:
    """False when ``text`` holds surrogate escapes, i.e. came from bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_ignored(line: str) -> bool:
    """readlline(3): an empty, whitespace-only or ``#`` comment line is skipped."""
    stripped = line.lstrip(WHITESPACE)
    return not stripped or stripped.startswith("#")


def check_line(source: str, lineno: int, line: str) -> None:
    """Refuse lines over ``MAX_LINE_CHARS`` and NUL characters, which Postfix cannot see past."""
    if len(line) > MAX_LINE_CHARS:
        raise TableError(
            f"{source}:{lineno}: line is longer than 1 MiB; split the entry or use an SQL table"
        )
    if "\0" in line:
        raise TableError(
            f"{source}:{lineno}: line contains a NUL character; remove it (if this is a "
            "binary .db/.lmdb/.cdb file, name the text source file instead)"
        )


def logical_lines(text: str, source: str, warnings: list[str]) -> Iterator[LogicalLine]:
    """Postfix logical lines of ``text`` (see the module docstring for the rules).

    Warnings (orphan continuation text, non-UTF-8 lines) are appended to ``warnings``.
    """
    check_size(source, len(text))
    start = 0
    parts: list[str] = []
    length = 0
    for index, line in enumerate(text.split("\n")):
        lineno = index + 1
        check_line(source, lineno, line)
        if is_ignored(line):
            continue
        if line[0] in WHITESPACE and parts:
            parts.append(line)
            length += len(line)
            if length > MAX_LINE_CHARS:
                raise TableError(
                    f"{source}:{start}: logical line is longer than 1 MiB; "
                    "split the entry or use an SQL table"
                )
            continue
        if parts:
            yield from _finish(source, start, "".join(parts), warnings)
        start, parts, length = lineno, [line], len(line)
    if parts:
        yield from _finish(source, start, "".join(parts), warnings)


def _finish(source: str, lineno: int, text: str, warnings: list[str]) -> Iterator[LogicalLine]:
    """Yield a complete logical line, or warn and drop it (readlline(3) and dict_thash)."""
    if text[0] in WHITESPACE:
        warnings.append(
            f"{source}:{lineno}: continuation line without a line to continue, ignored; "
            "remove the leading whitespace"
        )
    elif not is_utf8(text):
        warnings.append(f"{source}:{lineno}: non-UTF-8 input, ignored; save the file as UTF-8")
    else:
        yield LogicalLine(lineno, text)
