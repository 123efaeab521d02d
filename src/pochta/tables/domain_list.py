"""Domain lists as Postfix reads them: ``relay_domains``, ``virtual_mailbox_domains``,
``mydestination`` (pochta's ``[local] domains``).

postconf(5) describes the value of these settings as a list of "host or domain names,
"/file/name" or "type:table" patterns, separated by commas and/or whitespace"; Postfix
matches it with match_list(3) (``postfix/src/util/match_list.c``, ``match_ops.c``):

- the patterns are tried in order and the first that matches decides;
- ``!pattern`` negates: a name it matches is *not* in the list (match_list(3));
- ``/file/name`` is replaced by the file's patterns (read as logical lines, so ``#``
  comments and continuation lines work; a ``!`` before it negates each of them);
- ``type:table`` matches when the name is a key of the table (the value is ignored);
- anything else is a domain name, compared case-insensitively.

Two kinds of list, as in Postfix 3.7 (``trivial-rewrite/resolve.c``, ``resolve_local.c``):

- **parent style** (``relay_domains``, because it is in the default
  ``parent_domain_matches_subdomains``; domain_list(3) with MATCH_FLAG_PARENT): ``example.org``
  matches itself and every subdomain; a table is asked for ``a.b.example.org``, then
  ``b.example.org``, then ``example.org`` (match_hostname);
- **exact** (``virtual_mailbox_domains`` and ``mydestination``: string_list(3),
  match_string): a name matches only itself; a table is asked for the whole name only.

Deviation from Postfix: a literal ``.example.org`` matches every subdomain of example.org
(not the domain itself) in both kinds of list. Postfix's string lists never match it and its
parent-style lists match it only when relay_domains is taken out of
parent_domain_matches_subdomains; pochta keeps one meaning so that no entry it accepts is
silently dead.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pochta.tables.postfix_text import PostfixTable
from pochta.tables.source import TableError, logical_lines, read_source
from pochta.tables.spec import SUPPORTED_TYPES, Table, open_table, parse_table_spec

__all__ = ["DomainList", "domain_list_tokens", "local_domains"]

# match_list.c: patterns are separated by commas and/or whitespace (CHARS_COMMA_SP).
_SEPARATORS = re.compile(r"[,\s]+")
# match_ops.c MATCH_DICTIONARY: "type:table" unless it starts with "[".
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:.+", re.DOTALL)


def domain_list_tokens(value: str) -> list[str]:
    """The patterns of one config value, as match_list(3) splits a main.cf value."""
    return [t for t in _SEPARATORS.split(value) if t]


@dataclass(frozen=True, slots=True)
class _Pattern:
    """One pattern after ``/file`` expansion: a name or a table, maybe negated."""

    negated: bool
    name: str | None = None  # a case-folded domain name, or ".parent"
    table: Table[str] | None = None
    fixed: bool = True  # a fixed-string table (hash, lmdb, ...): parents are looked up too


TableOpener = Callable[[str], Table[str]]


class DomainList:
    """A Postfix domain list; ``contains(domain)`` answers as Postfix's match list does.

    ``setting`` names the list in messages (e.g. ``tables.relay_domains``). Raises
    TableError (naming the pattern and saying what to write) for a table or file that
    cannot be read, an unsupported type, or ``!`` without a pattern. ``open_table`` opens a
    ``type:table`` pattern (a reload passes one that falls back to the last good version).
    """

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        parent_style: bool,
        setting: str = "",
        open_table: TableOpener | None = None,
    ) -> None:
        self.specs = tuple(patterns)
        self.parent_style = parent_style
        self.setting = setting
        self._open = open_table or _open_map
        self.tables: dict[str, Table[str]] = {}
        self._patterns = tuple(self._parse(patterns, negated=False, source=setting, depth=0))

    @property
    def warnings(self) -> tuple[str, ...]:
        """The load warnings of the tables it names."""
        return tuple(w for table in self.tables.values() for w in table.warnings)

    def _parse(
        self, values: Sequence[str], *, negated: bool, source: str, depth: int
    ) -> Iterator[_Pattern]:
        for value in values:
            for token in domain_list_tokens(value):
                neg, item = negated, token
                while item.startswith("!"):  # match_list.c: each "!" flips the result
                    neg, item = not neg, item[1:]
                if not item:
                    raise TableError(
                        f"{source}: {token!r}: no pattern after '!'; write '!example.org'"
                    )
                if item.startswith("/"):  # postconf(5): "/file/name" is replaced by its contents
                    yield from self._file(item, negated=neg, depth=depth)
                elif _TABLE.fullmatch(item) and not item.startswith("["):
                    yield self._table(item, negated=neg)
                else:
                    yield _Pattern(neg, name=_fold(item))

    def _file(self, path: str, *, negated: bool, depth: int) -> Iterator[_Pattern]:
        if depth >= 10:
            raise TableError(f"{path}: files of domain names nested too deep; flatten them")
        warnings: list[str] = []
        lines = [line.text for line in logical_lines(read_source(path), path, warnings)]
        yield from self._parse(lines, negated=negated, source=path, depth=depth + 1)

    def _table(self, spec: str, *, negated: bool) -> _Pattern:
        parsed = parse_table_spec(spec)
        table = self._open(spec)
        self.tables[spec] = table
        # match_ops.c match_hostname: parent domains are looked up only in fixed-string
        # tables (DICT_FLAG_FIXED), not in regexp/pcre tables.
        return _Pattern(negated, table=table, fixed=parsed.type in SUPPORTED_TYPES)

    def contains(self, domain: str) -> bool:
        """True when ``domain`` is in the list: the first matching pattern decides (a ``!``
        pattern that matches means no)."""
        name = _fold(domain)
        if not name:
            return False
        for pattern in self._patterns:
            if self._matches(pattern, name):
                return not pattern.negated
        return False

    def listed_names(self) -> Iterator[str]:
        """The names the list names outright: its literal names and the keys of its
        fixed-string tables (not ``.parent`` patterns, negated ones or regexp tables)."""
        for pattern in self._patterns:
            if pattern.negated:
                continue
            if pattern.name is not None and not pattern.name.startswith("."):
                yield pattern.name
            elif pattern.fixed and isinstance(pattern.table, PostfixTable):
                yield from (k for k in pattern.table.entries if not k.startswith("."))

    def __contains__(self, domain: object) -> bool:
        return isinstance(domain, str) and self.contains(domain)

    def _matches(self, pattern: _Pattern, name: str) -> bool:
        if pattern.table is not None:
            keys = _table_keys(name, self.parent_style) if pattern.fixed else (name,)
            return any(pattern.table.get(key) is not None for key in keys)
        entry = pattern.name or ""
        if name == entry:
            return True
        if entry.startswith("."):  # deviation (module docstring): subdomains, in every list
            return name.endswith(entry) and len(name) > len(entry)
        # match_ops.c match_hostname with MATCH_FLAG_PARENT: a parent domain matches.
        return self.parent_style and name.endswith("." + entry)

    def __repr__(self) -> str:
        return f"DomainList({list(self.specs)!r}, parent_style={self.parent_style})"


def _table_keys(name: str, parent_style: bool) -> list[str]:
    """match_ops.c match_hostname: ``a.b.example``, then its parents: ``b.example``,
    ``example`` (parent style) or ``.b.example``, ``.example`` (exact lists ask only the
    whole name: string_list(3) match_string)."""
    if not parent_style:
        return [name]
    keys = [name]
    rest = name
    while (dot := rest.find(".", 1)) >= 0:
        rest = rest[dot + 1 :]
        keys.append(rest)
    return keys


def _fold(name: str) -> str:
    """Case-fold a name, drop one trailing dot (resolve_local.c strips it too) and write an
    IDN in its A-label form (RFC 5890), as the resolver writes the names it asks about."""
    folded = name.strip().lower()
    folded = folded[:-1] if folded.endswith(".") and not folded.endswith("..") else folded
    if not folded.isascii():
        with contextlib.suppress(UnicodeError):
            folded = folded.encode("idna").decode("ascii")
    return folded


def _open_map(spec: str) -> Table[str]:
    return open_table(spec, kind="map")


def local_domains(patterns: Sequence[str]) -> DomainList | frozenset[str]:
    """``[local] domains`` (Postfix mydestination) for the parts that only ask "is this
    name local?" or "which names?" (the CLI, the report job, the spam filter's HELO checks):
    the DomainList, or, when one of its tables or files cannot be read (``pochta check`` and
    the server's reload report that), its literal names, so they still count."""
    try:
        return DomainList(patterns, parent_style=False, setting="local.domains")
    except TableError:
        return frozenset(
            p.strip().rstrip(".").lower() for p in patterns if ":" not in p and "/" not in p
        )
