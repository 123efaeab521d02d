"""The tables the config names in [tables] (and the [local] domains list), opened together and
swapped as one on reload.

A reload (``ConfiguredTables.open(..., previous=old)``) keeps the last good version of a table
that no longer parses, and says so in ``kept`` (file and line of the error); a table the
previous config did not name has no good version, so its error still fails the reload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pochta.config.settings import Settings, TablesSettings
from pochta.tables.aliases_file import Target
from pochta.tables.domain_list import DomainList
from pochta.tables.source import TableError
from pochta.tables.spec import Table, TableSet, open_table, open_table_set

# The [tables] keys that hold lookup tables (postmap(1) format), in the order of the config.
MAP_KEYS = (
    "virtual_alias_maps",
    "virtual_mailbox_maps",
    "relay_recipient_maps",
    "transport_maps",
    "canonical_maps",
    "sender_canonical_maps",
    "recipient_canonical_maps",
)


@dataclass(frozen=True, slots=True)
class ConfiguredTables:
    """One TableSet per [tables] map key, one DomainList per domain list."""

    virtual_alias_maps: TableSet[str]
    virtual_mailbox_maps: TableSet[str]
    relay_recipient_maps: TableSet[str]
    transport_maps: TableSet[str]
    canonical_maps: TableSet[str]
    sender_canonical_maps: TableSet[str]
    recipient_canonical_maps: TableSet[str]
    alias_maps: TableSet[tuple[Target, ...]]
    # postconf(5) virtual_mailbox_domains: a string list (exact names).
    virtual_mailbox_domains: DomainList
    # postconf(5) relay_domains, in parent_domain_matches_subdomains by default (Postfix 3.7).
    relay_domains: DomainList
    # postconf(5) mydestination: a string list; server.hostname is added by the resolver.
    local_domains: DomainList = field(
        default_factory=lambda: DomainList((), parent_style=False, setting="local.domains")
    )
    # Tables that failed to parse on a reload and kept their last good version (messages).
    kept: tuple[str, ...] = ()

    @classmethod
    def open(
        cls,
        settings: TablesSettings | Settings,
        *,
        previous: ConfiguredTables | None = None,
    ) -> ConfiguredTables:
        """Read every named file now; TableError names the first that fails (and has no
        last good version in ``previous``). Given the whole Settings, [local] domains is
        read too; given only [tables], the local list is empty."""
        tables = settings.tables if isinstance(settings, Settings) else settings
        local: Sequence[str] = settings.local.domains if isinstance(settings, Settings) else ()
        kept: list[str] = []
        sets: dict[str, TableSet[str]] = {}
        for key in MAP_KEYS:
            old = getattr(previous, key) if previous is not None else None
            sets[key] = open_table_set(getattr(tables, key), kind="map", previous=old)
            kept.extend(sets[key].kept)
        aliases = open_table_set(
            tables.alias_maps,
            kind="aliases",
            previous=previous.alias_maps if previous is not None else None,
        )
        kept.extend(aliases.kept)

        def domain_list(name: str, specs: Sequence[str], *, parent_style: bool) -> DomainList:
            old = getattr(previous, name) if previous is not None else None
            return DomainList(
                specs,
                parent_style=parent_style,
                setting="local.domains" if name == "local_domains" else f"tables.{name}",
                open_table=_keeping(old.tables if old is not None else {}, kept),
            )

        return cls(
            **sets,
            alias_maps=aliases,
            virtual_mailbox_domains=domain_list(
                "virtual_mailbox_domains", tables.virtual_mailbox_domains, parent_style=False
            ),
            relay_domains=domain_list("relay_domains", tables.relay_domains, parent_style=True),
            local_domains=domain_list("local_domains", local, parent_style=False),
            kept=tuple(kept),
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        sets = tuple(getattr(self, key) for key in MAP_KEYS)
        lists = (self.virtual_mailbox_domains, self.relay_domains, self.local_domains)
        return (
            tuple(w for s in sets for w in s.warnings)
            + self.alias_maps.warnings
            + tuple(w for d in lists for w in d.warnings)
        )


def _keeping(old: dict[str, Table[str]], kept: list[str]) -> Callable[[str], Table[str]]:
    def opener(spec: str) -> Table[str]:
        try:
            return open_table(spec, kind="map")
        except TableError as exc:
            if spec not in old:
                raise
            kept.append(f"{exc}; keeping the previous contents")
            return old[spec]

    return opener
