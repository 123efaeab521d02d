"""Sendmail/Postfix alias files, aliases(5), as postalias(1) and local(8) read them.

An entry is ``name: value1, value2, ...`` on one logical line (continuation lines start
with whitespace, ``#`` comment lines and blank lines are ignored: the line discipline of
:mod:`pochta.tables.source`). Names are local (no ``@`` or ``%``, postalias(1) refuses
them) and case-folded. Each value is one target (aliases(5) "ALIAS FORMAT"):

- ``|command args`` or ``"|command args, with commas"``: pipe the message to a command;
- ``/file/name``: append to a file;
- ``:include:/file/name``: read more targets from a file, expanded lazily by
  :func:`expand_includes` / :func:`expand_alias` (local(8) "ALIAS EXPANSION");
- anything else is an address.

Values are separated by commas outside double quotes; inside quotes a backslash escapes
the next character. A later duplicate name is ignored with a warning, the first one wins
(postalias(1) without ``-r``). Where postalias only warns and skips a malformed line
("need name:value pair", "name must be local"), we refuse the file with file and line:
a silently missing alias loses mail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pochta.tables.postfix_text import fold_key
from pochta.tables.source import (
    WHITESPACE,
    TableError,
    check_line,
    check_size,
    is_ignored,
    is_utf8,
    logical_lines,
    read_source,
)

__all__ = [
    "AddressTarget",
    "AliasTable",
    "CommandTarget",
    "FileTarget",
    "IncludeTarget",
    "TableError",
    "Target",
    "expand_alias",
    "expand_alias_sources",
    "expand_includes",
    "load_aliases",
    "parse_aliases",
    "parse_include_file",
    "parse_targets",
    "render_aliases",
    "render_target",
]

INCLUDE_PREFIX = ":include:"

# One alias value item: quoted strings (backslash escapes one character) and other text, up
# to an unquoted comma. The alternatives start with different characters: no backtracking.
_ITEM = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^",])*', re.DOTALL)
_SPACE = re.compile(f"[{re.escape(WHITESPACE)}]")
DEFAULT_MAX_INCLUDE_DEPTH = 10


@dataclass(frozen=True, slots=True)
class AddressTarget:
    """Deliver to another address (local or remote)."""

    address: str


@dataclass(frozen=True, slots=True)
class CommandTarget:
    """Pipe the message to a shell command (the text after ``|``)."""

    command: str


@dataclass(frozen=True, slots=True)
class FileTarget:
    """Append the message to a file (an absolute path)."""

    path: str


@dataclass(frozen=True, slots=True)
class IncludeTarget:
    """Read more targets from a file (``:include:/path``); not yet expanded."""

    path: str


Target = AddressTarget | CommandTarget | FileTarget | IncludeTarget


@dataclass(frozen=True, slots=True)
class AliasTable:
    """A parsed aliases file: ``entries`` maps each case-folded name to its targets."""

    path: str
    entries: dict[str, tuple[Target, ...]]
    warnings: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def get(self, name: str, /) -> tuple[Target, ...] | None:
        """The targets of alias ``name`` (case-insensitive), or None: ``postalias -q``."""
        return self.entries.get(fold_key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and fold_key(name) in self.entries

    def __len__(self) -> int:
        return len(self.entries)


# -- parsing -------------------------------------------------------------------------------


def parse_aliases(text: str | bytes, source: str) -> AliasTable:
    """Parse aliases(5) source; ``source`` names it in messages. Raises TableError."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    warnings: list[str] = []
    entries: dict[str, tuple[Target, ...]] = {}
    lines: dict[str, int] = {}
    for line in logical_lines(text, source, warnings):
        where = f"{source}:{line.lineno}"
        name, value = split_alias(line.text, where)
        targets = parse_targets(value, where)
        if not targets:
            raise TableError(
                f"{where}: alias {name!r} has no targets; write '{name}: address, ...'"
            )
        if name in entries:
            warnings.append(
                f"{where}: duplicate entry {name!r}, ignored; the entry on line "
                f"{lines[name]} is used"
            )
            continue
        entries[name] = targets
        lines[name] = line.lineno
    return AliasTable(source, entries, tuple(warnings), lines)


def load_aliases(path: str | os.PathLike[str]) -> AliasTable:
    """Read and parse the aliases file at ``path`` (files over 64 MiB are refused)."""
    name = os.fspath(path)
    return parse_aliases(read_source(name), name)


def split_alias(text: str, where: str) -> tuple[str, str]:
    """Split ``name: value`` at the first colon; check the name (postalias(1) rules)."""
    colon = text.find(":")
    if colon < 0:
        raise TableError(f"{where}: need 'name: value'; put a ':' after the alias name")
    name = text[:colon].rstrip(WHITESPACE)
    if not name:
        raise TableError(f"{where}: alias name is empty; write 'name: value'")
    if any(char in WHITESPACE for char in name) or "," in name or '"' in name:
        raise TableError(
            f"{where}: alias name {name!r} has spaces, commas or quotes; write one word "
            "before the ':'"
        )
    if "@" in name or "%" in name:
        raise TableError(
            f"{where}: alias name {name!r} must be local; drop the @domain "
            "(use a virtual alias map for other domains)"
        )
    return fold_key(name), text[colon + 1 :]


def parse_targets(value: str, where: str) -> tuple[Target, ...]:
    """The targets in a comma-separated alias value; empty items are skipped."""
    targets: list[Target] = []
    for item in split_items(value, where):
        stripped = item.strip(WHITESPACE)
        if stripped:
            targets.append(classify(stripped, where))
    return tuple(targets)


def split_items(value: str, where: str) -> list[str]:
    """Split at commas outside double quotes (a backslash in quotes escapes one char)."""
    if '"' not in value:
        return value.split(",")
    items: list[str] = []
    start = 0
    while True:
        match = _ITEM.match(value, start)  # `*`: always matches, maybe empty
        end = match.end() if match else start
        items.append(value[start:end])
        if end == len(value):
            return items
        if value[end] != ",":
            raise TableError(f'{where}: unterminated double quote; close it with a second "')
        start = end + 1


def classify(item: str, where: str) -> Target:
    """Turn one trimmed value into a target (aliases(5) "ALIAS FORMAT")."""
    if _is_one_quoted_string(item):
        return _classify_text(_unquote(item), item, where, quoted=True)
    return _classify_text(item, item, where, quoted=False)


def _classify_text(text: str, original: str, where: str, *, quoted: bool) -> Target:
    if text.startswith("|"):
        if not text[1:].strip(WHITESPACE):
            raise TableError(f"{where}: empty command after '|'; write '\"|/path/to/command\"'")
        return CommandTarget(text[1:])
    if text[: len(INCLUDE_PREFIX)].casefold() == INCLUDE_PREFIX:
        return IncludeTarget(_include_path(text[len(INCLUDE_PREFIX) :], where))
    if text.startswith("/"):
        return FileTarget(text)
    return AddressTarget(original if quoted else _address(text, where))


def _include_path(path: str, where: str) -> str:
    """local(8) refuses relative ``:include:`` paths; we refuse them when the file is read."""
    path = path.strip(WHITESPACE)
    if not path.startswith("/"):
        raise TableError(
            f"{where}: ':include:{path}' needs an absolute path; write ':include:/path/to/file'"
        )
    return path


def _address(text: str, where: str) -> str:
    """An unquoted address; whitespace outside quotes means a missing comma."""
    if _has_unquoted_space(text):
        raise TableError(
            f"{where}: {text!r} has spaces; separate targets with commas, or quote a command "
            'as "|command args"'
        )
    return text


def _has_unquoted_space(text: str) -> bool:
    if '"' not in text:
        return _SPACE.search(text) is not None
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in WHITESPACE and not quoted:
            return True
    return False


def _is_one_quoted_string(item: str) -> bool:
    """True for ``"..."`` where the only unescaped quotes are the first and the last."""
    if len(item) < 2 or item[0] != '"' or item[-1] != '"':
        return False
    escaped = False
    for char in item[1:-1]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return False
    return not escaped


def _unquote(item: str) -> str:
    out: list[str] = []
    escaped = False
    for char in item[1:-1]:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


# -- rendering -----------------------------------------------------------------------------


def render_target(target: Target) -> str:
    """One target in aliases(5) syntax; commands are always quoted, files and includes when
    they need it. Raises ValueError when the target would not read back as itself."""
    match target:
        case CommandTarget(command):
            text = _quote("|" + command)
        case IncludeTarget(path):
            text = _maybe_quote(INCLUDE_PREFIX + path)
        case FileTarget(path):
            text = _maybe_quote(path)
        case AddressTarget(address):
            text = address
    if "\n" in text or "\0" in text:
        raise ValueError(f"{target!r} cannot be written in an aliases file")
    try:
        back = parse_targets(text, "render")
    except TableError:
        back = ()
    if back != (target,):
        raise ValueError(f"{target!r} cannot be written in an aliases file")
    return text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _maybe_quote(text: str) -> str:
    plain = text.strip(WHITESPACE) == text and not any(c in text for c in ',"\\\n')
    return text if plain else _quote(text)


def render_aliases(entries: Mapping[str, Sequence[Target]]) -> str:
    """Write ``entries`` as aliases(5) source, ``name: target, target`` per line, in order.

    Raises ValueError for a name or target that would not read back as itself.
    """
    out: list[str] = []
    for name, targets in entries.items():
        line = f"{name}: {', '.join(render_target(t) for t in targets)}\n"
        try:
            back = parse_aliases(line, "render").entries
        except TableError:
            back = {}
        if back != {name: tuple(targets)}:
            raise ValueError(f"alias {name!r} cannot be written in an aliases file")
        out.append(line)
    return "".join(out)


# -- :include: expansion ---------------------------------------------------------------------


def parse_include_file(text: str | bytes, source: str) -> tuple[Target, ...]:
    """Targets listed in a ``:include:`` file, separated by commas or line breaks.

    Each line stands alone (an indented line is not a continuation here); blank lines and
    ``#`` comment lines are ignored. Raises TableError naming ``source`` and the line.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    check_size(source, len(text))
    targets: list[Target] = []
    for index, line in enumerate(text.split("\n")):
        where = f"{source}:{index + 1}"
        check_line(source, index + 1, line)
        if is_ignored(line):
            continue
        if not is_utf8(line):
            raise TableError(f"{where}: non-UTF-8 input; save the file as UTF-8")
        targets.extend(parse_targets(line, where))
    return tuple(targets)


@dataclass(slots=True)
class _Expander:
    """State of one expansion run: include files read so far, limits and policy."""

    max_depth: int
    allow_commands: bool
    allow_files: bool
    cache: dict[str, tuple[Target, ...]] = field(default_factory=dict)

    def expand(self, targets: Iterable[Target], where: str, chain: tuple[str, ...]) -> list[Target]:
        out: list[Target] = []
        for target in targets:
            if isinstance(target, IncludeTarget):
                out.extend(self.include(target.path, where, chain))
            else:
                self.check_allowed(target, where, chain)
                out.append(target)
        return out

    def include(self, path: str, where: str, chain: tuple[str, ...]) -> list[Target]:
        real = os.path.realpath(path)
        if real in chain:
            loop = " -> ".join((*chain[chain.index(real) :], real))
            raise TableError(f"{where}: :include: loop {loop}; remove one of these includes")
        if len(chain) >= self.max_depth:
            raise TableError(
                f"{where}: :include: files nested deeper than {self.max_depth} at {path}; "
                "flatten the includes"
            )
        if real not in self.cache:
            self.cache[real] = parse_include_file(read_source(path), path)
        return self.expand(self.cache[real], f"{where} (via {path})", (*chain, real))

    def check_allowed(self, target: Target, where: str, chain: tuple[str, ...]) -> None:
        """local(8): allow_mail_to_commands / allow_mail_to_files default to "alias,
        forward", so commands and files listed in ``:include:`` files are refused."""
        if not chain:
            return
        if isinstance(target, CommandTarget) and not self.allow_commands:
            raise TableError(
                f"{where}: command {target.command!r} in {chain[-1]} is not allowed in "
                ":include: files; move it into the aliases file"
            )
        if isinstance(target, FileTarget) and not self.allow_files:
            raise TableError(
                f"{where}: file {target.path!r} in {chain[-1]} is not allowed in :include: "
                "files; move it into the aliases file"
            )


def _dedupe(targets: Iterable[Target]) -> tuple[Target, ...]:
    """Drop repeated targets, keeping the first (local(8) delivers once per recipient)."""
    return tuple(dict.fromkeys(targets))


def expand_alias(
    table: AliasTable,
    name: str,
    *,
    max_depth: int = DEFAULT_MAX_INCLUDE_DEPTH,
    allow_commands_in_includes: bool = False,
    allow_files_in_includes: bool = False,
) -> tuple[Target, ...] | None:
    """The targets of alias ``name`` with every ``:include:`` read and replaced, or None.

    Included files may include others, up to ``max_depth`` levels; an include loop or a
    deeper nesting is a TableError, as is an unreadable file. Commands and files found in
    included files are refused unless allowed (local(8) allow_mail_to_commands and
    allow_mail_to_files default to "alias, forward", which leaves out include files).
    """
    targets = table.get(name)
    if targets is None:
        return None
    expander = _Expander(max_depth, allow_commands_in_includes, allow_files_in_includes)
    return _expand_one(expander, table, fold_key(name), targets)


TargetSource = str
"""Where a target was written: ``"alias"`` (the aliases file) or ``"include"`` (a
``:include:`` file), the words of local(8) allow_mail_to_commands / allow_mail_to_files."""


def expand_alias_sources(
    table: AliasTable, name: str, *, max_depth: int = DEFAULT_MAX_INCLUDE_DEPTH
) -> tuple[tuple[Target, TargetSource], ...] | None:
    """Like :func:`expand_alias`, with every command and file allowed, each target paired
    with where it was written, so the caller applies local(8) "DELIVERY RIGHTS" per target
    (a target refused there is refused alone, not the whole alias). None: no such alias."""
    targets = table.get(name)
    if targets is None:
        return None
    expander = _Expander(max_depth, allow_commands=True, allow_files=True)
    where = f"{table.path}:{table.lines.get(fold_key(name), 0)}: alias {fold_key(name)!r}"
    out: dict[tuple[Target, TargetSource], None] = {}
    for target in targets:
        if isinstance(target, IncludeTarget):
            for found in expander.include(target.path, where, ()):
                out.setdefault((found, "include"), None)
        else:
            out.setdefault((target, "alias"), None)
    return tuple(out)


def _expand_one(
    expander: _Expander, table: AliasTable, name: str, targets: tuple[Target, ...]
) -> tuple[Target, ...]:
    where = f"{table.path}:{table.lines.get(name, 0)}: alias {name!r}"
    return _dedupe(expander.expand(targets, where, ()))


def expand_includes(
    table: AliasTable,
    *,
    max_depth: int = DEFAULT_MAX_INCLUDE_DEPTH,
    allow_commands_in_includes: bool = False,
    allow_files_in_includes: bool = False,
) -> AliasTable:
    """A copy of ``table`` with every ``:include:`` expanded (see :func:`expand_alias`).

    Each included file is read once per call. An alias whose include files list no
    targets expands to nothing and adds a warning.
    """
    expander = _Expander(max_depth, allow_commands_in_includes, allow_files_in_includes)
    entries: dict[str, tuple[Target, ...]] = {}
    warnings = list(table.warnings)
    for name, targets in table.entries.items():
        expanded = _expand_one(expander, table, name, targets)
        if not expanded:
            warnings.append(
                f"{table.path}:{table.lines.get(name, 0)}: alias {name!r} expands to no "
                "targets; its :include: files are empty"
            )
        entries[name] = expanded
    return AliasTable(table.path, entries, tuple(warnings), dict(table.lines))
