"""regexp: tables in virtual_alias_maps: the resolver asks them the whole address only
(virtual(5) "REGULAR EXPRESSION TABLES"; maps_find(3) DICT_FLAG_FIXED for partial keys)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.config.settings import TablesSettings
from pochta.directory.sqlite import SqliteDirectory
from pochta.resolve.classes import MailboxDest, Rejection, RemoteDest
from pochta.resolve.resolver import Resolver
from pochta.tables.configured import ConfiguredTables
from tests.factories import make_settings
from tests.unit.test_resolver import HASH, HOST

VIRTUAL = r"""/^sales@example\.org$/        bob@example.org
/^@example\.org$/              carol@example.org
/^info-([a-z]+)@example\.org$/  $1@example.org
"""


@pytest.fixture
def resolver(tmp_path: Path) -> Iterator[Resolver]:
    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    directory.add_domain("example.org")
    for user in ("alice", "bob", "carol"):
        directory.add_account(f"{user}@example.org", password_hash=HASH)
    path = tmp_path / "virtual.regexp"
    path.write_text(VIRTUAL)
    tables = TablesSettings(virtual_alias_maps=[f"regexp:{path}"])
    settings = make_settings({"server.hostname": HOST, "tables": tables})
    yield Resolver(directory, ConfiguredTables.open(tables), settings)
    directory.close()


def test_whole_address_matches(resolver: Resolver) -> None:
    assert resolver.resolve("sales@example.org").destinations == (MailboxDest("bob@example.org"),)
    assert resolver.resolve("info-alice@example.org").destinations == (
        MailboxDest("alice@example.org"),
    )


def test_no_partial_keys_of_a_pattern_table(resolver: Resolver) -> None:
    # Postfix asks only "sales+eu@example.org": not "sales@example.org", not "@example.org".
    (extension,) = resolver.resolve("sales+eu@example.org").destinations
    assert isinstance(extension, Rejection)
    (nobody,) = resolver.resolve("nobody@example.org").destinations
    assert isinstance(nobody, Rejection)


def test_transport_pattern_sees_the_whole_address(tmp_path: Path) -> None:
    # transport(5) REGULAR EXPRESSION TABLES: not asked the domain, nor user@domain for
    # user+ext@domain; the whole address only.
    path = tmp_path / "transport.regexp"
    path.write_text("/^vip@far\\.test$/ smtp:[vip-mx.far.test]\n/^far\\.test$/ error:5.1.1 no\n")
    tables = TablesSettings(transport_maps=[f"regexp:{path}"])
    settings = make_settings({"server.hostname": HOST, "tables": tables})
    directory = SqliteDirectory(tmp_path / "t.sqlite3")
    try:
        routed = Resolver(directory, ConfiguredTables.open(tables), settings)
        assert routed.resolve("vip@far.test").destinations == (
            RemoteDest("vip@far.test", "smtp:[vip-mx.far.test]"),
        )
        assert routed.resolve("vip+x@far.test").destinations == (
            RemoteDest("vip+x@far.test", "smtp:far.test"),
        )
        assert routed.resolve("other@far.test").destinations == (
            RemoteDest("other@far.test", "smtp:far.test"),
        )
    finally:
        directory.close()
