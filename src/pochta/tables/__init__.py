"""Lookup tables: Postfix text tables (postmap(1) syntax) and aliases(5) files.

Config names a table as ``TYPE:PATH`` (``texthash:``, ``hash:``, ``btree:``, ``lmdb:``,
``cdb:``, ``regexp:``, ``pcre:`` or a bare path); :func:`open_table` reads it,
:class:`TableSet` asks several in order and reloads them on SIGHUP. Lookups follow
Postfix's search orders: :func:`lookup_address` (virtual(5)) and :func:`lookup_domain`
(transport(5)).
"""

from pochta.tables.aliases_file import (
    AddressTarget,
    AliasTable,
    CommandTarget,
    FileTarget,
    IncludeTarget,
    Target,
    expand_alias,
    expand_includes,
    load_aliases,
    parse_aliases,
    render_aliases,
    render_target,
)
from pochta.tables.postfix_text import (
    AddressMatch,
    Lookup,
    PostfixTable,
    load_postfix_table,
    lookup_address,
    lookup_domain,
    match_address,
    parse_postfix_table,
    render_postfix_table,
)
from pochta.tables.regexp import RegexpTable, load_regexp_table, parse_regexp_table
from pochta.tables.source import TableError
from pochta.tables.spec import (
    SUPPORTED_TYPES,
    Table,
    TableKind,
    TableSet,
    TableSpec,
    open_table,
    open_table_set,
    parse_table_spec,
)

__all__ = [
    "SUPPORTED_TYPES",
    "AddressMatch",
    "AddressTarget",
    "AliasTable",
    "CommandTarget",
    "FileTarget",
    "IncludeTarget",
    "Lookup",
    "PostfixTable",
    "RegexpTable",
    "Table",
    "TableError",
    "TableKind",
    "TableSet",
    "TableSpec",
    "Target",
    "expand_alias",
    "expand_includes",
    "load_aliases",
    "load_postfix_table",
    "load_regexp_table",
    "lookup_address",
    "lookup_domain",
    "match_address",
    "open_table",
    "open_table_set",
    "parse_aliases",
    "parse_postfix_table",
    "parse_regexp_table",
    "parse_table_spec",
    "render_aliases",
    "render_postfix_table",
    "render_target",
]
