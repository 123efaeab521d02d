"""SqliteDirectory: every method, every refusal, case, schema, reopen and threads."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pochta.directory.base import DirectoryError
from pochta.directory.model import Account, DkimSelector
from pochta.directory.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteDirectory

HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "directory.sqlite3"


@pytest.fixture
def directory(db_path: Path) -> Iterator[SqliteDirectory]:
    d = SqliteDirectory(db_path)
    d.add_domain("example.org")
    yield d
    d.close()


def selector(name: str, *, active: bool = True) -> DkimSelector:
    return DkimSelector(
        selector=name,
        algorithm="ed25519-sha256",
        key_path=f"/keys/{name}.key",
        public_key_b64="MCowBQYDK2VwAyEA",
        active=active,
    )


# -- schema --


def test_creates_file_schema_and_pragmas(db_path: Path) -> None:
    d = SqliteDirectory(db_path)
    assert db_path.exists()
    assert d.schema_version() == SCHEMA_VERSION
    conn = d._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"domains", "dkim_selectors", "accounts", "alias_targets"} <= tables
    d.close()


def test_lookups_use_indexes(directory: SqliteDirectory) -> None:
    conn = directory._conn()

    def plan(sql: str) -> str:
        return " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, ("x",)))

    account = plan("SELECT * FROM accounts WHERE address = ?")
    assert account.startswith("SEARCH")
    assert "PRIMARY KEY" in account
    by_source = plan("SELECT target FROM alias_targets WHERE source = ?")
    assert by_source.startswith("SEARCH")
    assert "INDEX" in by_source
    by_target = plan("SELECT source FROM alias_targets WHERE target = ?")
    assert by_target.startswith("SEARCH")
    assert "alias_targets_by_target" in by_target


def test_reopen_keeps_data(db_path: Path) -> None:
    d = SqliteDirectory(db_path)
    d.add_domain("example.org", catchall="all@example.org")
    d.add_account("bob@example.org", password_hash=HASH, quota_bytes=5)
    d.add_alias("info@example.org", ["bob@example.org"])
    d.close()
    again = SqliteDirectory(db_path)
    assert again.schema_version() == SCHEMA_VERSION
    account = again.get_account("bob@example.org")
    assert account is not None
    assert account.quota_bytes == 5
    domain = again.get_domain("example.org")
    assert domain is not None
    assert domain.catchall == "all@example.org"
    assert again.get_alias("info@example.org") is not None
    again.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    SqliteDirectory(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(DirectoryError, match=re.escape("newer than this pochta understands")):
        SqliteDirectory(db_path)


def test_schema_1_database_is_migrated_on_open(db_path: Path) -> None:
    """A directory written by pochta before signing-only rows (schema 1) gets the column on
    open; its domains stay mail domains, with their accounts, aliases and keys."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    for statement in _MIGRATIONS[0]:  # the first schema, as pochta wrote it
        conn.execute(statement)
    conn.execute(
        "INSERT INTO domains (name, enabled, catchall, created) VALUES (?, 1, '', 5)",
        ("example.org",),
    )
    conn.execute(
        "INSERT INTO dkim_selectors (domain, selector, algorithm, key_path, public_key_b64, "
        "active, created) VALUES ('example.org', 'ed-1', 'ed25519-sha256', '/k', 'AA', 1, 5)"
    )
    conn.execute(
        "INSERT INTO accounts (address, local_part, domain, password_hash, created) "
        "VALUES ('bob@example.org', 'bob', 'example.org', ?, 5)",
        (HASH,),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    d = SqliteDirectory(db_path)
    assert d.schema_version() == SCHEMA_VERSION == 2
    domain = d.get_domain("example.org")
    assert domain is not None
    assert domain.signing_only is False
    assert [s.selector for s in domain.dkim] == ["ed-1"]
    assert d.get_account("bob@example.org") is not None
    d.add_alias("info@example.org", ["bob@example.org"])  # still a mail domain
    host = d.add_domain("mx.provider.test", signing_only=True)
    assert host.signing_only
    d.close()
    again = SqliteDirectory(db_path)
    assert [(x.name, x.signing_only) for x in again.list_domains()] == [
        ("example.org", False),
        ("mx.provider.test", True),
    ]
    again.close()


def test_closed_directory_refuses(db_path: Path) -> None:
    d = SqliteDirectory(db_path)
    d.close()
    with pytest.raises(DirectoryError, match=re.escape("closed")):
        d.get_account("bob@example.org")


def test_unopenable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DirectoryError, match=re.escape("cannot create")):
        SqliteDirectory(blocker / "dir" / "db.sqlite3")


# -- domains --


def test_add_get_list_domain(directory: SqliteDirectory) -> None:
    added = directory.add_domain("b.example", catchall="Catch@B.example")
    assert added.name == "b.example"
    assert added.catchall == "catch@b.example"
    assert added.created > 0
    got = directory.get_domain("B.EXAMPLE")
    assert got is not None
    assert got.name == "b.example"
    assert got.enabled
    assert [d.name for d in directory.list_domains()] == ["b.example", "example.org"]
    assert directory.get_domain("nothere.example") is None


def test_duplicate_domain(directory: SqliteDirectory) -> None:
    with pytest.raises(DirectoryError, match=r"^domain example.org already exists$"):
        directory.add_domain("Example.ORG")


@pytest.mark.parametrize("address", ["a/b@example.org", "/abs@example.org", "a\x01@example.org"])
def test_account_that_cannot_name_a_mailbox_is_refused(
    directory: SqliteDirectory, address: str
) -> None:
    # The local part names MAIL_DIR/DOMAIN/LOCALPART: every way in refuses it.
    with pytest.raises(DirectoryError, match=r"cannot be a mailbox.*letters, digits"):
        directory.add_account(address, password_hash="h")
    account = Account(address=address, password_hash="h")
    with pytest.raises(DirectoryError, match=r"cannot be a mailbox.*letters, digits"):
        directory.add_accounts_bulk([account])
    assert directory.list_accounts() == []


@pytest.mark.parametrize("name", ["a/b.example", "../example.org", "x.example/..", "nodots"])
def test_domain_that_cannot_name_a_directory_is_refused(
    directory: SqliteDirectory, name: str
) -> None:
    with pytest.raises(DirectoryError):
        directory.add_domain(name)
    assert [d.name for d in directory.list_domains()] == ["example.org"]


def test_set_domain(directory: SqliteDirectory) -> None:
    d = directory.set_domain("example.org", enabled=False, catchall="x@example.org")
    assert not d.enabled
    assert d.catchall == "x@example.org"
    d = directory.set_domain("example.org", catchall="")
    assert not d.enabled
    assert d.catchall == ""
    d = directory.set_domain("example.org", enabled=True)
    assert d.enabled
    with pytest.raises(DirectoryError, match=re.escape("domain nothere.org is not hosted here")):
        directory.set_domain("nothere.org", enabled=True)


def test_remove_empty_domain(directory: SqliteDirectory) -> None:
    directory.remove_domain("example.org")
    assert directory.get_domain("example.org") is None
    with pytest.raises(DirectoryError) as exc:
        directory.remove_domain("example.org")
    assert str(exc.value) == (
        "domain example.org is not hosted here; add it with: pochta domain add example.org"
    )


def test_remove_domain_refused_then_forced(directory: SqliteDirectory) -> None:
    for name in ("a", "b", "c"):
        directory.add_account(f"{name}@example.org", password_hash=HASH)
    directory.add_alias("info@example.org", ["a@example.org", "b@example.org"])
    directory.add_dkim_selector("example.org", selector("s1"))
    with pytest.raises(DirectoryError) as exc:
        directory.remove_domain("example.org")
    assert str(exc.value) == (
        "domain example.org has 3 accounts and 1 alias; remove them first or use --force"
    )
    assert directory.count_accounts("example.org") == 3
    directory.remove_domain("example.org", force=True)
    assert directory.get_domain("example.org") is None
    assert directory.count_accounts() == 0
    assert directory.list_aliases() == []
    conn = directory._conn()
    assert conn.execute("SELECT count(*) FROM dkim_selectors").fetchone()[0] == 0
    # The domain can be added again from scratch.
    directory.add_domain("example.org")
    assert directory.get_domain("example.org") is not None


def test_remove_domain_message_singular_and_aliases_only(directory: SqliteDirectory) -> None:
    directory.add_alias("x@example.org", ["y@elsewhere.example"])
    directory.add_alias("z@example.org", ["y@elsewhere.example"])
    with pytest.raises(DirectoryError, match=r"has 2 aliases; remove them first or use --force"):
        directory.remove_domain("example.org")
    directory.remove_alias("x@example.org")
    directory.remove_alias("z@example.org")
    directory.add_account("one@example.org", password_hash=HASH)
    with pytest.raises(DirectoryError, match=r"has 1 account; remove them first"):
        directory.remove_domain("example.org")


def test_remove_domain_leaves_other_domains(directory: SqliteDirectory) -> None:
    directory.add_domain("other.example")
    directory.add_account("bob@other.example", password_hash=HASH)
    directory.add_account("bob@example.org", password_hash=HASH)
    directory.remove_domain("example.org", force=True)
    assert directory.get_account("bob@other.example") is not None


def test_signing_only_row_holds_keys_but_no_mail(directory: SqliteDirectory) -> None:
    host = directory.add_domain("MX.Provider.test", signing_only=True)
    assert (host.name, host.signing_only, host.dkim) == ("mx.provider.test", True, ())
    directory.add_dkim_selector("mx.provider.test", selector("ed-1"))
    found = directory.get_domain("mx.provider.test")
    assert found is not None
    assert found.signing_only
    assert [s.selector for s in found.dkim] == ["ed-1"]
    listed = {d.name: d for d in directory.list_domains()}
    assert listed["mx.provider.test"].signing_only
    assert not listed["example.org"].signing_only
    no_mail = re.escape(
        "domain mx.provider.test only holds the DKIM keys of the host name (signing-only), it "
        "is not a mail domain; host it first with: pochta domain add mx.provider.test"
    )
    with pytest.raises(DirectoryError, match=no_mail):
        directory.add_account("root@mx.provider.test", password_hash=HASH)
    with pytest.raises(DirectoryError, match=no_mail):
        directory.add_accounts_bulk([Account(address="a@mx.provider.test", password_hash=HASH)])
    with pytest.raises(DirectoryError, match=no_mail):
        directory.add_alias("root@mx.provider.test", ["bob@example.org"])
    with pytest.raises(DirectoryError, match=no_mail):
        directory.set_domain("mx.provider.test", enabled=False)
    with pytest.raises(DirectoryError, match="no catch-all"):
        directory.add_domain("other.test", catchall="x@example.org", signing_only=True)
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_domain("mx.provider.test", signing_only=True)
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_domain("example.org", signing_only=True)


def test_adding_a_signing_only_row_as_a_domain_hosts_it_with_its_keys(
    directory: SqliteDirectory,
) -> None:
    directory.add_domain("mx.provider.test", signing_only=True)
    directory.add_dkim_selector("mx.provider.test", selector("ed-1"))
    hosted = directory.add_domain("mx.provider.test", catchall="all@example.org")
    assert not hosted.signing_only
    assert hosted.catchall == "all@example.org"
    assert [s.selector for s in hosted.dkim] == ["ed-1"]
    assert directory.get_domain("mx.provider.test") == hosted
    directory.add_account("root@mx.provider.test", password_hash=HASH)
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_domain("mx.provider.test")


def test_removing_a_signing_only_row_drops_its_selectors(directory: SqliteDirectory) -> None:
    directory.add_domain("mx.provider.test", signing_only=True)
    directory.add_dkim_selector("mx.provider.test", selector("ed-1"))
    directory.remove_domain("mx.provider.test")
    assert directory.get_domain("mx.provider.test") is None
    directory.add_domain("mx.provider.test", signing_only=True)
    found = directory.get_domain("mx.provider.test")
    assert found is not None
    assert found.dkim == ()


# -- DKIM selectors --


def test_dkim_selectors(directory: SqliteDirectory) -> None:
    directory.add_dkim_selector("example.org", selector("s1"))
    directory.add_dkim_selector("example.org", selector("s2", active=False))
    d = directory.get_domain("example.org")
    assert d is not None
    assert [(s.selector, s.active) for s in d.dkim] == [("s1", True), ("s2", False)]
    assert d.dkim[0].key_path == "/keys/s1.key"
    assert d.dkim[0].created > 0
    assert [s.selector for s in directory.list_domains()[0].dkim] == ["s1", "s2"]
    directory.set_dkim_selector_active("example.org", "s1", False)
    directory.set_dkim_selector_active("example.org", "s2", True)
    d = directory.get_domain("example.org")
    assert d is not None
    assert [s.active for s in d.dkim] == [False, True]
    directory.remove_dkim_selector("example.org", "s1")
    d = directory.get_domain("example.org")
    assert d is not None
    assert [s.selector for s in d.dkim] == ["s2"]


def test_dkim_selector_refusals(directory: SqliteDirectory) -> None:
    directory.add_dkim_selector("example.org", selector("s1"))
    with pytest.raises(DirectoryError, match=re.escape("already has the DKIM selector s1")):
        directory.add_dkim_selector("example.org", selector("s1"))
    with pytest.raises(DirectoryError, match=re.escape("domain nothere.org is not hosted here")):
        directory.add_dkim_selector("nothere.org", selector("s1"))
    with pytest.raises(DirectoryError, match=re.escape("has no DKIM selector nope")):
        directory.set_dkim_selector_active("example.org", "nope", True)
    with pytest.raises(DirectoryError, match=re.escape("has no DKIM selector nope")):
        directory.remove_dkim_selector("example.org", "nope")
    with pytest.raises(DirectoryError, match=re.escape("not hosted")):
        directory.remove_dkim_selector("nothere.org", "s1")


# -- accounts --


def test_add_and_get_account(directory: SqliteDirectory) -> None:
    a = directory.add_account(
        "bob@example.org", password_hash=HASH, scram_sha256="4096,s,k,v", quota_bytes=1 << 30
    )
    assert a.address == "bob@example.org"
    assert a.created > 0
    got = directory.get_account("bob@example.org")
    assert got == a
    assert got.local_part == "bob"
    assert got.domain == "example.org"
    assert directory.get_account("nobody@example.org") is None


def test_case_insensitive(directory: SqliteDirectory) -> None:
    directory.add_account("Bob@Example.ORG", password_hash=HASH)
    for spelling in ("bob@example.org", "Bob@Example.ORG", "BOB@EXAMPLE.ORG"):
        got = directory.get_account(spelling)
        assert got is not None
        assert got.address == "bob@example.org"
    with pytest.raises(DirectoryError, match=re.escape("account bob@example.org already exists")):
        directory.add_account("BOB@example.org", password_hash=HASH)
    directory.add_alias("Info@EXAMPLE.org", ["BOB@example.org"])
    alias = directory.get_alias("INFO@example.ORG")
    assert alias is not None
    assert alias.targets == ("bob@example.org",)
    assert [a.source for a in directory.aliases_targeting("Bob@Example.Org")] == [
        "info@example.org"
    ]
    assert directory.count_accounts("EXAMPLE.ORG") == 1
    assert len(directory.list_accounts("Example.Org")) == 1


def test_case_insensitive_even_when_stored_raw(directory: SqliteDirectory) -> None:
    # A row written by hand (or an older tool) in mixed case is still found: COLLATE NOCASE.
    directory._conn().execute(
        "INSERT INTO accounts (address, local_part, domain, password_hash, created) "
        "VALUES ('Carol@Example.ORG', 'Carol', 'Example.ORG', ?, 1)",
        (HASH,),
    )
    assert directory.get_account("carol@example.org") is not None


def test_add_account_refusals(directory: SqliteDirectory) -> None:
    with pytest.raises(DirectoryError) as exc:
        directory.add_account("bob@nothere.org", password_hash=HASH)
    assert str(exc.value) == (
        "domain nothere.org is not hosted here; add it with: pochta domain add nothere.org"
    )
    directory.add_account("bob@example.org", password_hash=HASH)
    with pytest.raises(DirectoryError, match=r"^account bob@example.org already exists$"):
        directory.add_account("bob@example.org", password_hash=HASH)
    directory.add_alias("info@example.org", ["bob@example.org"])
    with pytest.raises(DirectoryError) as exc:
        directory.add_account("info@example.org", password_hash=HASH)
    assert str(exc.value) == (
        "info@example.org is an alias (-> bob@example.org); "
        "remove it first with: pochta alias remove info@example.org"
    )
    with pytest.raises(DirectoryError, match=re.escape("is not an address")):
        directory.add_account("no-at-sign", password_hash=HASH)
    with pytest.raises(DirectoryError, match=re.escape("quota cannot be negative")):
        directory.add_account("neg@example.org", password_hash=HASH, quota_bytes=-1)


def test_list_and_count_accounts(directory: SqliteDirectory) -> None:
    directory.add_domain("b.example")
    directory.add_account("zed@example.org", password_hash=HASH)
    directory.add_account("amy@example.org", password_hash=HASH)
    directory.add_account("bob@b.example", password_hash=HASH)
    assert [a.address for a in directory.list_accounts()] == [
        "bob@b.example",
        "amy@example.org",
        "zed@example.org",
    ]
    assert [a.address for a in directory.list_accounts("example.org")] == [
        "amy@example.org",
        "zed@example.org",
    ]
    assert directory.list_accounts("nothere.org") == []
    assert directory.count_accounts() == 3
    assert directory.count_accounts("b.example") == 1


def test_update_account(directory: SqliteDirectory) -> None:
    directory.add_account("bob@example.org", password_hash=HASH)
    a = directory.update_account(
        "bob@example.org", password_hash="{PLAIN}x", scram_sha256="1,2,3,4", quota_bytes=7
    )
    assert (a.password_hash, a.scram_sha256, a.quota_bytes, a.enabled) == (
        "{PLAIN}x",
        "1,2,3,4",
        7,
        True,
    )
    a = directory.update_account("BOB@example.org", enabled=False)
    assert not a.enabled
    assert a.quota_bytes == 7
    assert directory.update_account("bob@example.org") == a  # no change, still found
    with pytest.raises(
        DirectoryError,
        match=r"^no account nobody@example.org; list accounts with: pochta user list$",
    ):
        directory.update_account("nobody@example.org", enabled=True)
    with pytest.raises(DirectoryError, match=re.escape("no account")):
        directory.update_account("nobody@example.org")
    with pytest.raises(DirectoryError, match=re.escape("quota cannot be negative")):
        directory.update_account("bob@example.org", quota_bytes=-5)


def test_remove_account(directory: SqliteDirectory) -> None:
    directory.add_account("bob@example.org", password_hash=HASH)
    directory.remove_account("Bob@example.org")
    assert directory.get_account("bob@example.org") is None
    with pytest.raises(DirectoryError, match=re.escape("no account bob@example.org")):
        directory.remove_account("bob@example.org")


def test_add_accounts_bulk(directory: SqliteDirectory) -> None:
    n = directory.add_accounts_bulk(
        Account(address=f"U{i}@Example.org", password_hash=HASH, quota_bytes=i) for i in range(50)
    )
    assert n == 50
    assert directory.count_accounts("example.org") == 50
    got = directory.get_account("u7@example.org")
    assert got is not None
    assert got.quota_bytes == 7
    assert got.created > 0


def test_add_accounts_bulk_is_all_or_nothing(directory: SqliteDirectory) -> None:
    directory.add_account("taken@example.org", password_hash=HASH)
    batch = [
        Account(address="new1@example.org", password_hash=HASH),
        Account(address="taken@example.org", password_hash=HASH),
    ]
    with pytest.raises(DirectoryError, match=re.escape("account taken@example.org already exists")):
        directory.add_accounts_bulk(batch)
    assert directory.get_account("new1@example.org") is None
    with pytest.raises(DirectoryError, match=re.escape("domain nothere.org is not hosted here")):
        directory.add_accounts_bulk([Account(address="x@nothere.org", password_hash=HASH)])
    directory.add_alias("info@example.org", ["taken@example.org"])
    with pytest.raises(DirectoryError, match=re.escape("info@example.org is an alias")):
        directory.add_accounts_bulk([Account(address="info@example.org", password_hash=HASH)])
    assert directory.get_account("info@example.org") is None
    with pytest.raises(DirectoryError, match=re.escape("quota cannot be negative")):
        directory.add_accounts_bulk(
            [Account(address="q@example.org", password_hash=HASH, quota_bytes=-1)]
        )


# -- aliases --


def test_alias_add_get_list(directory: SqliteDirectory) -> None:
    a = directory.add_alias("info@example.org", ["b@example.org", "ext@gmail.example"])
    assert a.targets == ("b@example.org", "ext@gmail.example")
    # Adding appends new targets in order and ignores ones already there.
    a = directory.add_alias("info@example.org", ["c@example.org", "b@example.org"])
    assert a.targets == ("b@example.org", "ext@gmail.example", "c@example.org")
    assert directory.get_alias("info@example.org") == a
    assert directory.get_alias("nobody@example.org") is None
    directory.add_domain("b.example")
    directory.add_alias("sales@b.example", ["x@example.org", "x@example.org"])
    assert [(x.source, x.targets) for x in directory.list_aliases()] == [
        ("sales@b.example", ("x@example.org",)),
        ("info@example.org", ("b@example.org", "ext@gmail.example", "c@example.org")),
    ]
    assert [x.source for x in directory.list_aliases("b.example")] == ["sales@b.example"]


def test_alias_refusals(directory: SqliteDirectory) -> None:
    with pytest.raises(DirectoryError, match=re.escape("domain nothere.org is not hosted here")):
        directory.add_alias("info@nothere.org", ["b@example.org"])
    directory.add_account("bob@example.org", password_hash=HASH)
    with pytest.raises(DirectoryError) as exc:
        directory.add_alias("bob@example.org", ["x@example.org"])
    assert str(exc.value) == (
        "bob@example.org is an account; an alias cannot have the same address "
        "(remove the account first with: pochta user remove bob@example.org)"
    )
    with pytest.raises(DirectoryError, match=re.escape("cannot point to itself")):
        directory.add_alias("loop@example.org", ["Loop@example.org"])
    with pytest.raises(DirectoryError, match=re.escape("needs at least one target")):
        directory.add_alias("empty@example.org", [])


def test_aliases_targeting(directory: SqliteDirectory) -> None:
    directory.add_alias("info@example.org", ["bob@example.org", "amy@example.org"])
    directory.add_alias("sales@example.org", ["bob@example.org"])
    directory.add_alias("other@example.org", ["amy@example.org"])
    found = directory.aliases_targeting("bob@example.org")
    assert [(a.source, a.targets) for a in found] == [
        ("info@example.org", ("bob@example.org", "amy@example.org")),
        ("sales@example.org", ("bob@example.org",)),
    ]
    assert directory.aliases_targeting("nobody@example.org") == []


def test_remove_alias(directory: SqliteDirectory) -> None:
    directory.add_alias("info@example.org", ["a@example.org", "b@example.org"])
    directory.remove_alias("info@example.org", "A@example.org")
    alias = directory.get_alias("info@example.org")
    assert alias is not None
    assert alias.targets == ("b@example.org",)
    with pytest.raises(DirectoryError, match=r"alias info@example.org has no target a@example.org"):
        directory.remove_alias("info@example.org", "a@example.org")
    directory.remove_alias("info@example.org")
    assert directory.get_alias("info@example.org") is None
    with pytest.raises(
        DirectoryError, match=r"^no alias info@example.org; list aliases with: pochta alias list$"
    ):
        directory.remove_alias("info@example.org")
    with pytest.raises(DirectoryError, match=re.escape("no alias info@example.org")):
        directory.remove_alias("info@example.org", "b@example.org")


def test_alias_removed_by_last_target_frees_address(directory: SqliteDirectory) -> None:
    directory.add_alias("info@example.org", ["a@example.org"])
    directory.remove_alias("info@example.org", "a@example.org")
    directory.add_account("info@example.org", password_hash=HASH)


# -- threads --


def test_connections_are_per_thread(directory: SqliteDirectory) -> None:
    seen: list[object] = []

    def grab() -> None:
        seen.append(directory._conn())

    t = threading.Thread(target=grab)
    t.start()
    t.join()
    assert seen[0] is not directory._conn()


def test_lookups_and_updates_from_many_threads(directory: SqliteDirectory) -> None:
    directory.add_accounts_bulk(
        Account(address=f"u{i}@example.org", password_hash=HASH) for i in range(200)
    )

    def write(i: int) -> None:
        directory.update_account(f"u{i}@example.org", quota_bytes=i + 1)
        directory.add_alias(f"a{i}@example.org", [f"u{i}@example.org"])

    def read(i: int) -> bool:
        return directory.get_account(f"U{i % 200}@example.org") is not None

    with ThreadPoolExecutor(max_workers=8) as pool:
        writes = [pool.submit(write, i) for i in range(100)]
        reads = list(pool.map(read, range(2000)))
        for w in writes:
            w.result()
    assert all(reads)
    assert len(directory.list_aliases()) == 100
    got = directory.get_account("u99@example.org")
    assert got is not None
    assert got.quota_bytes == 100


def test_two_instances_on_one_file(db_path: Path) -> None:
    # The CLI and a running server each open the file: changes are seen by the other.
    server = SqliteDirectory(db_path)
    cli = SqliteDirectory(db_path)
    cli.add_domain("example.org")
    cli.add_account("bob@example.org", password_hash=HASH)
    assert server.get_account("bob@example.org") is not None
    with pytest.raises(DirectoryError, match=re.escape("already exists")):
        server.add_account("bob@example.org", password_hash=HASH)
    server.close()
    cli.close()


def test_close_from_another_thread(db_path: Path) -> None:
    d = SqliteDirectory(db_path)
    d.add_domain("example.org")
    t = threading.Thread(target=d.close)
    t.start()
    t.join()
    with pytest.raises(DirectoryError, match=re.escape("closed")):
        d.list_domains()
