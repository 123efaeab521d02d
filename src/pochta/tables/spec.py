"""Naming tables in the config as Postfix does: ``TYPE:PATH``, and sets of tables.

Postfix's indexed types (hash, btree, lmdb, cdb) are built by postmap from a text source
file; we read that source file directly and keep no binary database. ``hash:/etc/aliases``
and ``hash:/etc/aliases.db`` both read ``/etc/aliases``. A bare path means ``texthash``.
``regexp:`` and ``pcre:`` name pattern tables (:mod:`pochta.tables.regexp`).

A :class:`TableSet` answers from the first of several tables that has the key, like a
Postfix parameter listing several maps (``virtual_alias_maps = hash:a, hash:b``), and can
re-read its files on SIGHUP without losing the tables that no longer parse.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar, cast, overload

from pochta.tables.aliases_file import AliasTable, Target, load_aliases
from pochta.tables.postfix_text import PostfixTable, load_postfix_table
from pochta.tables.regexp import RegexpTable, load_regexp_table
from pochta.tables.source import TableError

__all__ = [
    "SUPPORTED_TYPES",
    "Table",
    "TableKind",
    "TableSet",
    "TableSpec",
    "open_table",
    "open_table_set",
    "parse_table_spec",
]

TableKind = Literal["map", "aliases"]

# Type -> suffix that postmap/postalias add to the source path for the binary file.
SUPPORTED_TYPES: dict[str, str] = {
    "texthash": "",
    "hash": ".db",
    "btree": ".db",
    "lmdb": ".lmdb",
    "cdb": ".cdb",
    # Pattern tables (regexp_table(5), pcre_table(5)): read as they are, no postmap step.
    "regexp": "",
    "pcre": "",
}
DEFAULT_TYPE = "texthash"

_SPEC = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(.*)", re.DOTALL)

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class Table(Protocol[V_co]):
    """What a TableSet holds: a parsed table with its path and load warnings."""

    @property
    def path(self) -> str: ...

    @property
    def warnings(self) -> tuple[str, ...]: ...

    def get(self, key: str, /) -> V_co | None: ...


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A parsed ``TYPE:PATH``: ``text_path`` is the text file we actually read."""

    spec: str
    type: str
    path: str
    text_path: str


def parse_table_spec(spec: str) -> TableSpec:
    """Split ``TYPE:PATH`` (or a bare path, meaning texthash) and find the text source.

    Raises TableError for an empty path or an unsupported type; the message lists the
    supported types.
    """
    match = _SPEC.fullmatch(spec)
    kind, path = (match.group(1).lower(), match.group(2)) if match else (DEFAULT_TYPE, spec)
    if kind not in SUPPORTED_TYPES:
        raise TableError(
            f"{spec}: unsupported table type {kind!r}; use one of "
            f"{', '.join(SUPPORTED_TYPES)} followed by ':' and the path of the text file, "
            "or a bare path"
        )
    if not path:
        raise TableError(f"{spec}: no file named; write '{kind}:/path/to/file'")
    return TableSpec(spec, kind, path, _text_source(path, SUPPORTED_TYPES[kind]))


def _text_source(path: str, suffix: str) -> str:
    """``PATH`` minus the binary suffix when the text source without it exists."""
    if suffix and path.endswith(suffix):
        source = path[: -len(suffix)]
        if source and (os.path.exists(source) or not os.path.exists(path)):
            return source
    return path


@overload
def open_table(spec: str, *, kind: Literal["map"]) -> PostfixTable | RegexpTable: ...
@overload
def open_table(spec: str, *, kind: Literal["aliases"]) -> AliasTable: ...
@overload
def open_table(spec: str, *, kind: TableKind) -> PostfixTable | RegexpTable | AliasTable: ...
def open_table(spec: str, *, kind: TableKind) -> PostfixTable | RegexpTable | AliasTable:
    """Open the table named by ``spec`` as a lookup map or an aliases file."""
    parsed = parse_table_spec(spec)
    source = parsed.text_path
    if parsed.type in ("regexp", "pcre"):
        if kind == "aliases":
            raise TableError(f"{spec}: an aliases file is a text table; name it hash:PATH")
        return load_regexp_table(source, "pcre" if parsed.type == "pcre" else "regexp")
    if kind == "aliases":
        return load_aliases(source)
    return load_postfix_table(source)


class TableSet(Generic[V]):
    """Several tables for one purpose, asked in order; reloadable as a whole.

    Readers see either the old or the new list of tables, never a mix: ``reload`` builds
    the new list, then swaps it in with one assignment.
    """

    def __init__(
        self,
        specs: Sequence[str],
        loader: Callable[[str], Table[V]],
        *,
        previous: TableSet[V] | None = None,
    ) -> None:
        """Open every table now; the first that fails raises TableError, unless
        ``previous`` (the set this one replaces on a reload) has a table of the same spec:
        then that last good version is kept and the error is in ``kept``."""
        self.specs = tuple(specs)
        self._loader = loader
        self._lock = threading.Lock()
        old = dict(zip(previous.specs, previous.tables, strict=True)) if previous else {}
        kept: list[str] = []
        tables: list[Table[V]] = []
        for spec in self.specs:
            try:
                tables.append(loader(spec))
            except TableError as exc:
                if spec not in old:
                    raise
                kept.append(f"{exc}; keeping the previous contents")
                tables.append(old[spec])
        self._tables: tuple[Table[V], ...] = tuple(tables)
        self.kept: tuple[str, ...] = tuple(kept)

    @property
    def tables(self) -> tuple[Table[V], ...]:
        return self._tables

    @property
    def warnings(self) -> tuple[str, ...]:
        """The load warnings of every table, in order."""
        return tuple(w for table in self._tables for w in table.warnings)

    def lookup(self, key: str) -> V | None:
        """The value from the first table that has ``key``, or None."""
        for table in self._tables:
            value = table.get(key)
            if value is not None:
                return value
        return None

    def get(self, key: str, /) -> V | None:
        """Same as :meth:`lookup`, so a TableSet can go wherever a table goes."""
        return self.lookup(key)

    def get_fixed(self, key: str, /) -> V | None:
        """:meth:`lookup` of a partial key (an address without its extension, ``@domain``):
        pattern tables (regexp:, pcre:) are asked the whole key only and skipped here, as
        Postfix's maps_find(3) does with ``DICT_FLAG_FIXED``."""
        for table in self._tables:
            if getattr(table, "pattern", False):
                continue
            value = table.get(key)
            if value is not None:
                return value
        return None

    @property
    def fixed(self) -> FixedLookup[V]:
        """This set as a lookup of partial keys only (:meth:`get_fixed` as ``get``), for
        search orders such as transport(5)'s parent domains."""
        return FixedLookup(self)

    def reload(self) -> list[str]:
        """Re-read every file (on SIGHUP). A table that fails keeps its old contents;
        the returned list holds one error message per failed table (empty: all fine)."""
        with self._lock:
            errors: list[str] = []
            fresh: list[Table[V]] = []
            for spec, old in zip(self.specs, self._tables, strict=True):
                try:
                    fresh.append(self._loader(spec))
                except TableError as exc:
                    errors.append(f"{exc}; keeping the previous contents")
                    fresh.append(old)
            self._tables = tuple(fresh)
            return errors


@dataclass(frozen=True, slots=True)
class FixedLookup(Generic[V]):
    """A TableSet whose ``get`` skips the pattern tables (see :meth:`TableSet.fixed`)."""

    tables: TableSet[V]

    def get(self, key: str, /) -> V | None:
        return self.tables.get_fixed(key)


def _open_map(spec: str) -> PostfixTable | RegexpTable:
    return open_table(spec, kind="map")


def _open_aliases(spec: str) -> AliasTable:
    return open_table(spec, kind="aliases")


@overload
def open_table_set(
    specs: Sequence[str], *, kind: Literal["map"], previous: TableSet[str] | None = None
) -> TableSet[str]: ...
@overload
def open_table_set(
    specs: Sequence[str],
    *,
    kind: Literal["aliases"],
    previous: TableSet[tuple[Target, ...]] | None = None,
) -> TableSet[tuple[Target, ...]]: ...
def open_table_set(
    specs: Sequence[str],
    *,
    kind: TableKind,
    previous: TableSet[str] | TableSet[tuple[Target, ...]] | None = None,
) -> TableSet[str] | TableSet[tuple[Target, ...]]:
    """Open several tables of one kind as a TableSet (raises TableError on the first bad
    one that ``previous``, the set it replaces on a reload, has no last good version of)."""
    if kind == "aliases":
        old_aliases = cast("TableSet[tuple[Target, ...]] | None", previous)
        return TableSet(specs, _open_aliases, previous=old_aliases)
    return TableSet(specs, _open_map, previous=cast("TableSet[str] | None", previous))
