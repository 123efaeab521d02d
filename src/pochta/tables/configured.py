"""The tables the config names in [tables], opened together and swapped as one on reload."""

from __future__ import annotations

from dataclasses import dataclass

from pochta.config.settings import TablesSettings
from pochta.tables.aliases_file import Target
from pochta.tables.spec import TableSet, open_table_set


@dataclass(frozen=True, slots=True)
class ConfiguredTables:
    """One TableSet per [tables] key (domain lists stay plain lists of names)."""

    virtual_alias_maps: TableSet[str]
    virtual_mailbox_maps: TableSet[str]
    relay_recipient_maps: TableSet[str]
    transport_maps: TableSet[str]
    canonical_maps: TableSet[str]
    sender_canonical_maps: TableSet[str]
    recipient_canonical_maps: TableSet[str]
    alias_maps: TableSet[tuple[Target, ...]]
    virtual_mailbox_domains: tuple[str, ...]
    relay_domains: tuple[str, ...]

    @classmethod
    def open(cls, settings: TablesSettings) -> ConfiguredTables:
        """Read every named file now; TableError names the first that fails."""
        return cls(
            virtual_alias_maps=open_table_set(settings.virtual_alias_maps, kind="map"),
            virtual_mailbox_maps=open_table_set(settings.virtual_mailbox_maps, kind="map"),
            relay_recipient_maps=open_table_set(settings.relay_recipient_maps, kind="map"),
            transport_maps=open_table_set(settings.transport_maps, kind="map"),
            canonical_maps=open_table_set(settings.canonical_maps, kind="map"),
            sender_canonical_maps=open_table_set(settings.sender_canonical_maps, kind="map"),
            recipient_canonical_maps=open_table_set(settings.recipient_canonical_maps, kind="map"),
            alias_maps=open_table_set(settings.alias_maps, kind="aliases"),
            virtual_mailbox_domains=tuple(settings.virtual_mailbox_domains),
            relay_domains=tuple(settings.relay_domains),
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        sets = (
            self.virtual_alias_maps,
            self.virtual_mailbox_maps,
            self.relay_recipient_maps,
            self.transport_maps,
            self.canonical_maps,
            self.sender_canonical_maps,
            self.recipient_canonical_maps,
        )
        return tuple(w for s in sets for w in s.warnings) + self.alias_maps.warnings
