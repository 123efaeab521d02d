"""The resolver's domain classes from Postfix-style domain lists: relay_domains as a table or
a file of names, [local] domains (mydestination) with a table, and the reload that keeps the
last good version of a table that no longer parses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.checks import check_settings
from pochta.config.settings import TablesSettings
from pochta.directory.sqlite import SqliteDirectory
from pochta.resolve import DomainClass, RelayDest, Resolver
from pochta.tables import SUPPORTED_TYPES, TableError
from pochta.tables.configured import MAP_KEYS, ConfiguredTables
from tests.factories import make_settings

PATTERN_TYPES = ("regexp", "pcre")
HOST = "mail.example.test"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[SqliteDirectory]:
    d = SqliteDirectory(tmp_path / "d.sqlite3")
    d.add_domain("example.org")
    yield d
    d.close()


def resolver(directory: SqliteDirectory, tables: TablesSettings, **more: object) -> Resolver:
    settings = make_settings({"server.hostname": HOST, "tables": tables, **more})
    return Resolver(directory, ConfiguredTables.open(settings), settings)


@pytest.mark.parametrize("kind", ["hash", "lmdb", "cdb", "texthash"])
def test_relay_domains_table_makes_the_relay_class(
    tmp_path: Path, directory: SqliteDirectory, kind: str
) -> None:
    source = tmp_path / "relay_domains"
    source.write_text("relay.example OK\n")
    r = resolver(directory, TablesSettings(relay_domains=[f"{kind}:{source}"]))
    assert r.domain_class("relay.example") is DomainClass.RELAY
    assert r.domain_class("sub.relay.example") is DomainClass.RELAY  # parent style
    assert r.resolve("x@relay.example").destinations == (
        RelayDest("x@relay.example", "relay:relay.example"),
    )
    assert r.domain_class("far.example") is DomainClass.DEFAULT


def test_relay_domains_file_of_names(tmp_path: Path, directory: SqliteDirectory) -> None:
    names = tmp_path / "relay_domains"
    names.write_text("relay.example\nsecond.example\n")
    r = resolver(directory, TablesSettings(relay_domains=[str(names)]))
    assert r.domain_class("second.example") is DomainClass.RELAY


def test_virtual_mailbox_domains_table(tmp_path: Path, directory: SqliteDirectory) -> None:
    source = tmp_path / "vdomains"
    source.write_text("vm.example OK\n")
    r = resolver(directory, TablesSettings(virtual_mailbox_domains=[f"hash:{source}"]))
    assert r.domain_class("vm.example") is DomainClass.VIRTUAL_MAILBOX
    assert r.domain_class("a.vm.example") is DomainClass.DEFAULT  # string list: exact


def test_local_domains_take_a_table(tmp_path: Path, directory: SqliteDirectory) -> None:
    source = tmp_path / "mydestination"
    source.write_text("local.example OK\n")
    r = resolver(directory, TablesSettings(), **{"local.domains": ["localhost", f"hash:{source}"]})
    assert r.domain_class("local.example") is DomainClass.LOCAL
    assert r.domain_class("localhost") is DomainClass.LOCAL


def test_reopen_keeps_the_last_good_version_of_a_broken_table(tmp_path: Path) -> None:
    virtual = tmp_path / "virtual"
    virtual.write_text("old@example.org alice@example.org\n")
    relay = tmp_path / "relay_domains"
    relay.write_text("relay.example OK\n")
    settings = make_settings(
        {
            "server.hostname": HOST,
            "tables": TablesSettings(
                virtual_alias_maps=[f"hash:{virtual}"], relay_domains=[f"hash:{relay}"]
            ),
        }
    )
    first = ConfiguredTables.open(settings)
    virtual.write_text("old@example.org alice@example.org\nbroken@example.org\n")
    relay.write_text("relay.example\n")
    again = ConfiguredTables.open(settings, previous=first)
    assert again.virtual_alias_maps.get("old@example.org") == "alice@example.org"
    assert again.relay_domains.contains("relay.example")
    assert len(again.kept) == 2
    assert f"{virtual}:2:" in again.kept[0]
    assert "keeping the previous contents" in again.kept[0]
    assert f"{relay}:1:" in again.kept[1]
    # Without a previous version (a table the running config did not name) it still fails.
    with pytest.raises(TableError):
        ConfiguredTables.open(settings)


@pytest.mark.parametrize("key", [*MAP_KEYS, "alias_maps"])
def test_every_maps_key_takes_several_tables_of_every_type(tmp_path: Path, key: str) -> None:
    source = tmp_path / "map"
    source.write_text("team: b@example.org\n" if key == "alias_maps" else "k v\n")
    patterns = tmp_path / "patterns"
    patterns.write_text("/^k$/ v\n")
    # Pattern tables (regexp_table(5), pcre_table(5)) serve lookup maps, not aliases(5).
    kinds = [k for k in SUPPORTED_TYPES if k not in PATTERN_TYPES]
    specs = [f"{kind}:{source}" for kind in kinds] + [str(source)]
    if key != "alias_maps":
        specs += [f"{kind}:{patterns}" for kind in PATTERN_TYPES]
    settings = make_settings({"server.hostname": HOST, f"tables.{key}": specs})
    assert [p for p in check_settings(settings) if p.key.startswith("tables.")] == []
    opened = ConfiguredTables.open(settings)
    assert len(getattr(opened, key).tables) == len(specs)
