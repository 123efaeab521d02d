"""Postfix text lookup tables, read the way postmap(1) and texthash read them.

Format (postmap(1) "INPUT FILE FORMAT", dict_thash in ``postfix/src/util/dict_thash.c``):
each logical line (see :mod:`pochta.tables.source`) is ``key whitespace value``. The key
ends at the first whitespace character; the value is the rest, trimmed at both ends, with
its inner whitespace kept. Keys are case-folded (postmap's default; ``-f`` turns it off).
A later duplicate key is ignored with a warning ("duplicate entry"), the first one wins.

One deviation: postmap only warns about a key without a value and skips the line; we
refuse the table (``TableError`` with file and line), because a silently dropped entry in
a virtual or transport map misroutes mail.

This module also implements the search orders in which Postfix queries such tables for an
address (virtual(5), mail_addr_find(3)) and for a domain (transport(5)).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from pochta.tables.source import WHITESPACE, LogicalLine, TableError, logical_lines, read_source

__all__ = [
    "AddressMatch",
    "Lookup",
    "PostfixTable",
    "TableError",
    "address_lookup_keys",
    "domain_lookup_keys",
    "fold_key",
    "load_postfix_table",
    "lookup_address",
    "lookup_domain",
    "match_address",
    "parse_postfix_table",
    "render_postfix_table",
]

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


class Lookup(Protocol[V_co]):
    """Anything answering one key: a table, a TableSet, a dict."""

    def get(self, key: str, /) -> V_co | None: ...


def fold_key(key: str) -> str:
    """Case-fold a lookup key, as postmap does by default (postmap(1) ``-f``)."""
    return key.casefold()


@dataclass(frozen=True, slots=True)
class PostfixTable:
    """A parsed text table: ``entries`` maps each case-folded key to its value."""

    path: str
    entries: dict[str, str]
    warnings: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str, /) -> str | None:
        """The value for ``key`` (case-insensitive), or None: ``postmap -q KEY``."""
        return self.entries.get(fold_key(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and fold_key(key) in self.entries

    def __len__(self) -> int:
        return len(self.entries)


def parse_postfix_table(text: str | bytes, source: str) -> PostfixTable:
    """Parse postmap(1) text-table source; ``source`` names it in messages.

    Raises TableError for a key without a value, a NUL character, a line over 1 MiB or a
    text over 64 MiB. Bytes that are not UTF-8 make their logical line be skipped with a
    warning (as Postfix does with ``smtputf8_enable = yes``).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    warnings: list[str] = []
    entries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for line in logical_lines(text, source, warnings):
        key, value = split_entry(line, source)
        if key.endswith(":"):
            # dict_thash.c warns the same way: a "key: value" record is a sign of an aliases file.
            warnings.append(
                f"{source}:{line.lineno}: record is in 'key: value' format; is this an aliases "
                "file? Drop the ':' or open it as an aliases table"
            )
        if key in entries:
            warnings.append(
                f"{source}:{line.lineno}: duplicate entry {key!r}, ignored; the entry on line "
                f"{lines[key]} is used"
            )
            continue
        entries[key] = value
        lines[key] = line.lineno
    return PostfixTable(source, entries, tuple(warnings), lines)


def split_entry(line: LogicalLine, source: str) -> tuple[str, str]:
    """postmap(1): split on the first whitespace, trim the value; the key is case-folded."""
    text = line.text
    end = _first_space(text)
    key, value = text[:end], text[end:].strip(WHITESPACE)
    if not value:
        raise TableError(
            f"{source}:{line.lineno}: key {key!r} has no value; write 'key whitespace value' "
            f"on one line, e.g. '{key} VALUE'"
        )
    return fold_key(key), value


def _first_space(text: str) -> int:
    """Index of the first C-locale whitespace character in ``text``, or ``len(text)``."""
    for index, char in enumerate(text):
        if char in WHITESPACE:
            return index
    return len(text)


def load_postfix_table(path: str | os.PathLike[str]) -> PostfixTable:
    """Read and parse the text table at ``path`` (files over 64 MiB are refused)."""
    name = os.fspath(path)
    return parse_postfix_table(read_source(name), name)


def render_postfix_table(entries: Mapping[str, str]) -> str:
    """Write ``entries`` as postmap(1) source, one ``key value`` line each, in order.

    Raises ValueError for an entry that would not read back as itself: an empty key, a key
    with whitespace or starting with ``#``, a key that is not case-folded, an empty value,
    a value with surrounding whitespace, a line break or a NUL.
    """
    out: list[str] = []
    for key, value in entries.items():
        _check_renderable(key, value)
        out.append(f"{key} {value}\n")
    return "".join(out)


def _check_renderable(key: str, value: str) -> None:
    if not key or key.startswith("#") or _first_space(key) != len(key) or "\0" in key:
        raise ValueError(f"key {key!r} cannot be written: it must be non-empty, without spaces")
    if fold_key(key) != key:
        raise ValueError(f"key {key!r} cannot be written: it is not case-folded")
    if not value or value.strip(WHITESPACE) != value or "\n" in value or "\0" in value:
        raise ValueError(f"value {value!r} for {key!r} cannot be written on one line")


# -- search orders ---------------------------------------------------------------------------

# split_addr(3): these local parts are never split at the recipient delimiter.
UNSPLIT_LOCAL_PARTS = frozenset({"postmaster", "mailer-daemon", "double-bounce"})


@dataclass(frozen=True, slots=True)
class AddressMatch(Generic[V]):
    """Which key answered an address lookup, its value, and the extension that was cut
    off to find it (with its delimiter, e.g. ``"+news"``; None when nothing was cut)."""

    key: str
    value: V
    extension: str | None


def split_extension(local_part: str, delimiters: str) -> tuple[str, str | None]:
    """Split ``user+ext`` into ``("user", "+ext")`` like Postfix split_addr(3).

    The split is at the first of any ``delimiters`` character (recipient_delimiter may list
    several). Not split: postmaster, mailer-daemon, double-bounce; with ``-`` among the
    delimiters also ``owner-*`` and ``*-request`` (owner_request_special = yes); and no
    split that would leave an empty user part.
    """
    if not delimiters or local_part.casefold() in UNSPLIT_LOCAL_PARTS:
        return local_part, None
    lowered = local_part.casefold()
    if "-" in delimiters and (
        lowered.startswith("owner-") or (len(lowered) > 8 and lowered.endswith("-request"))
    ):
        return local_part, None
    for index, char in enumerate(local_part):
        if char in delimiters:
            if index == 0:
                return local_part, None
            return local_part[:index], local_part[index:]
    return local_part, None


def address_lookup_keys(
    address: str, recipient_delimiter: str = "+", *, local_part_lookup: bool = False
) -> Iterator[tuple[str, str | None]]:
    """The keys ``lookup_address`` tries, in order, each with the extension it drops.

    virtual(5) "TABLE FORMAT" and "ADDRESS EXTENSION", mail_addr_find(3):

    1. ``user+ext@domain`` (the address as given);
    2. ``user@domain`` (extension removed);
    3. ``user+ext`` then ``user``, only when the domain is local (myorigin, mydestination,
       inet_interfaces, proxy_interfaces): ``local_part_lookup=True``;
    4. ``@domain``.

    An address without ``@`` is looked up as itself, then without its extension. The domain
    starts at the last ``@``. Keys that repeat an earlier key are not tried twice.
    """
    at = address.rfind("@")
    local, domain = (address, None) if at < 0 else (address[:at], address[at:])
    user, extension = split_extension(local, recipient_delimiter)
    candidates: list[tuple[str, str | None]] = [(address, None)]
    if extension is not None:
        candidates.append((user + (domain or ""), extension))
    if domain is not None and local_part_lookup:
        candidates.append((local, None))
        if extension is not None:
            candidates.append((user, extension))
    if domain is not None:
        candidates.append((domain, None))
    seen: set[str] = set()
    for key, dropped in candidates:
        if key not in seen:
            seen.add(key)
            yield key, dropped


def match_address(
    table: Lookup[V],
    address: str,
    recipient_delimiter: str = "+",
    *,
    local_part_lookup: bool = False,
) -> AddressMatch[V] | None:
    """Like :func:`lookup_address`, but say which key matched and what extension was cut."""
    for key, extension in address_lookup_keys(
        address, recipient_delimiter, local_part_lookup=local_part_lookup
    ):
        # maps_find(3): only the whole address is asked of pattern tables (regexp:, pcre:);
        # a TableSet's get_fixed skips them for the partial keys.
        get_fixed = getattr(table, "get_fixed", None)
        value = table.get(key) if key == address or get_fixed is None else get_fixed(key)
        if value is not None:
            return AddressMatch(key, value, extension)
    return None


def lookup_address(
    table: Lookup[V],
    address: str,
    recipient_delimiter: str = "+",
    *,
    local_part_lookup: bool = False,
) -> V | None:
    """Look ``address`` up in a virtual-style map, in Postfix's order.

    virtual(5), section "TABLE FORMAT" with "ADDRESS EXTENSION" (and mail_addr_find(3)):
    ``user+ext@domain``, ``user@domain``, ``user+ext``, ``user``, ``@domain``; the two bare
    local-part forms only when ``local_part_lookup`` is set (the domain is one of ours:
    myorigin, mydestination, inet_interfaces or proxy_interfaces). ``recipient_delimiter``
    is a set of characters; the local part is split at the first one found (split_addr(3)).
    Each key pattern is tried in the whole ``table`` (which may be a TableSet) before the
    next pattern, as Postfix does with a list of maps.
    """
    found = match_address(table, address, recipient_delimiter, local_part_lookup=local_part_lookup)
    return None if found is None else found.value


def domain_lookup_keys(domain: str, *, parent_matches_subdomains: bool = False) -> Iterator[str]:
    """The keys ``lookup_domain`` tries, in order (transport(5) "TABLE SEARCH ORDER").

    ``a.b.example`` tries ``a.b.example``, then ``.b.example`` and ``.example``; with
    ``parent_matches_subdomains`` (``transport_maps`` listed in Postfix's
    parent_domain_matches_subdomains) the parents are tried without the leading dot:
    ``b.example``, ``example``. The walk is the one in ``postfix/src/trivial-rewrite/
    transport.c``: each step moves to the next dot after the first character.
    """
    name = domain
    while name:
        yield name
        dot = name.find(".", 1)
        if dot < 0:
            return
        name = name[dot + 1 :] if parent_matches_subdomains else name[dot:]


def lookup_domain(
    table: Lookup[V],
    domain: str,
    *,
    parent_matches_subdomains: bool = False,
    wildcard: bool = False,
) -> V | None:
    """Look ``domain`` up in a transport-style map (transport(5) "TABLE SEARCH ORDER").

    Tries ``domain``, then each parent as ``.parent`` (or as ``parent`` with
    ``parent_matches_subdomains``), then, with ``wildcard``, the special ``*`` key that
    transport(5) defines as matching any address.
    """
    for key in domain_lookup_keys(domain, parent_matches_subdomains=parent_matches_subdomains):
        value = table.get(key)
        if value is not None:
            return value
    return table.get("*") if wildcard else None
