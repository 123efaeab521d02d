"""Resolver: Postfix address classes over the real SQLite directory and real table files."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pochta.config.settings import (
    TablesSettings,
)
from pochta.directory.model import Account
from pochta.directory.sqlite import SqliteDirectory
from pochta.protocols.smtp.replies import RELAY_DENIED, UNKNOWN_USER, Reply
from pochta.resolve import (
    DiscardDest,
    DomainClass,
    FileDest,
    MailboxDest,
    PipeDest,
    Rejection,
    RelayDest,
    RemoteDest,
    Resolver,
    UnixDest,
    parse_address,
    split_addresses,
)
from pochta.resolve.resolver import (
    ADMIN_CACHE_SECONDS,
    ALIAS_LOOP,
    ALIAS_TEMPFAIL,
    ALIAS_TOO_MANY,
    BAD_ADDRESS,
    CONFIG_ERROR,
    DOMAIN_DISABLED,
    MAILBOX_DISABLED,
    NO_POSTMASTER_YET,
    RELAY_UNKNOWN,
    VIRTUAL_ALIAS_UNKNOWN,
)
from pochta.tables.configured import ConfiguredTables
from tests.factories import make_settings

HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
HOST = "mail.example.test"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[SqliteDirectory]:
    d = SqliteDirectory(tmp_path / "d.sqlite3")
    d.add_domain("example.org")
    for user in ("alice", "bob", "carol"):
        d.add_account(f"{user}@example.org", password_hash=HASH)
    yield d
    d.close()


MakeResolver = Callable[..., Resolver]


@pytest.fixture
def make(tmp_path: Path, directory: SqliteDirectory) -> MakeResolver:
    """make(virtual_alias="text", alias="text", transport="text", ..., settings kwargs)."""

    def build(
        *,
        virtual_alias: str | None = None,
        virtual_mailbox: str | None = None,
        relay_recipients: str | None = None,
        transport: str | None = None,
        aliases: str | None = None,
        virtual_mailbox_domains: tuple[str, ...] = (),
        relay_domains: tuple[str, ...] = (),
        unix: bool = False,
        delimiter: str = "+",
        postmaster: str = "",
    ) -> Resolver:
        def table(name: str, text: str | None, kind: str = "texthash") -> list[str]:
            if text is None:
                return []
            path = tmp_path / name
            path.write_text(text)
            return [f"{kind}:{path}"]

        tables = TablesSettings(
            virtual_alias_maps=table("virtual", virtual_alias),
            virtual_mailbox_maps=table("vmailbox", virtual_mailbox),
            relay_recipient_maps=table("relay_recipients", relay_recipients),
            transport_maps=table("transport", transport),
            alias_maps=table("aliases", aliases, "hash"),
            virtual_mailbox_domains=list(virtual_mailbox_domains),
            relay_domains=list(relay_domains),
        )
        settings = make_settings(
            {
                "server.hostname": HOST,
                "server.postmaster": postmaster,
                "tables": tables,
                "directory.recipient_delimiter": delimiter,
                "local.domains": ["localhost"],
                "local.deliver_to_unix_accounts": unix,
            }
        )
        return Resolver(directory, ConfiguredTables.open(tables), settings)

    return build


def dests(resolver: Resolver, address: str) -> tuple[object, ...]:
    return resolver.resolve(address).destinations


def reject(reply: Reply, address: str) -> tuple[Rejection]:
    return (Rejection(reply, address),)


# -- parsing -------------------------------------------------------------------------------


def test_parse_address_normalises_case_idn_and_keeps_quoted_local_parts() -> None:
    assert parse_address("<Alice@Example.ORG.>", HOST).text == "alice@example.org"
    assert parse_address("x@BÜCHER.example", HOST).text == "x@xn--bcher-kva.example"
    assert parse_address('"Foo Bar"@Example.org', HOST).text == '"Foo Bar"@example.org'
    assert parse_address("Postmaster", HOST).text == f"postmaster@{HOST}"
    assert parse_address("@relay.example:joe@example.org", HOST).text == "joe@example.org"
    # RFC 6531: UTF-8 local parts pass through (lower-cased like every local part).
    assert parse_address("Пользователь@example.org", HOST).local == "пользователь"


def test_split_addresses_reads_commas_spaces_and_quotes() -> None:
    assert split_addresses('a@x, b@y  c@z,"d e"@w,<f@v>') == [
        "a@x",
        "b@y",
        "c@z",
        '"d e"@w',
        "f@v",
    ]


def test_bad_addresses_are_553(make: MakeResolver) -> None:
    r = make()
    for bad in ("", "<>", "@example.org", "a@", "a\r\nb@example.org"):
        assert r.resolve(bad).rejected == BAD_ADDRESS, bad
        assert r.check_recipient(bad, authenticated=True) == BAD_ADDRESS


# -- virtual mailbox class (the directory) -------------------------------------------------


def test_account_is_a_mailbox_in_any_case(make: MakeResolver) -> None:
    r = make()
    assert dests(r, "alice@example.org") == (MailboxDest("alice@example.org"),)
    assert dests(r, "<ALICE@Example.Org>") == (MailboxDest("alice@example.org"),)
    assert r.domain_class("EXAMPLE.org") is DomainClass.VIRTUAL_MAILBOX


def test_plus_address_keeps_the_extension(make: MakeResolver) -> None:
    r = make()
    assert dests(r, "alice+news@example.org") == (MailboxDest("alice@example.org", "news"),)
    assert dests(r, "alice+a+b@example.org") == (MailboxDest("alice@example.org", "a+b"),)


def test_several_delimiters_and_no_delimiter(make: MakeResolver) -> None:
    assert dests(make(delimiter="+-"), "alice-x@example.org") == (
        MailboxDest("alice@example.org", "x"),
    )
    off = make(delimiter="")
    assert dests(off, "alice+x@example.org") == reject(UNKNOWN_USER, "alice+x@example.org")


def test_unknown_user_disabled_account_and_disabled_domain(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    r = make()
    assert dests(r, "nobody@example.org") == reject(UNKNOWN_USER, "nobody@example.org")
    directory.update_account("bob@example.org", enabled=False)
    assert dests(r, "bob@example.org") == reject(MAILBOX_DISABLED, "bob@example.org")
    directory.set_domain("example.org", enabled=False)
    assert dests(r, "alice@example.org") == reject(DOMAIN_DISABLED, "alice@example.org")
    # A disabled domain is still ours: no relay to it, no relay-denied either.
    assert r.check_recipient("alice@example.org", authenticated=False) == DOMAIN_DISABLED


def test_idn_domain_in_the_directory(make: MakeResolver, directory: SqliteDirectory) -> None:
    directory.add_domain("xn--bcher-kva.example")
    directory.add_account("ute@xn--bcher-kva.example", password_hash=HASH)
    assert dests(make(), "Ute@Bücher.example") == (MailboxDest("ute@xn--bcher-kva.example"),)


# -- virtual aliases -----------------------------------------------------------------------


def test_directory_alias_to_accounts_and_outside(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_alias("team@example.org", ["alice@example.org", "friend@gmail.test"])
    assert dests(make(), "team@example.org") == (
        MailboxDest("alice@example.org"),
        RemoteDest("friend@gmail.test", "smtp:gmail.test"),
    )


def test_alias_extension_propagates_to_targets(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_alias("sales@example.org", ["bob@example.org", "out@gmail.test"])
    assert dests(make(), "sales+eu@example.org") == (
        MailboxDest("bob@example.org", "eu"),
        RemoteDest("out+eu@gmail.test", "smtp:gmail.test"),
    )


def test_alias_with_the_extension_in_its_key_wins(make: MakeResolver) -> None:
    r = make(virtual_alias="alice+spam@example.org carol@example.org\n")
    assert dests(r, "alice+spam@example.org") == (MailboxDest("carol@example.org"),)
    assert dests(r, "alice+ham@example.org") == (MailboxDest("alice@example.org", "ham"),)


def test_directory_alias_is_asked_before_the_table_for_the_same_key(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_alias("info@example.org", ["bob@example.org"])
    r = make(virtual_alias="info@example.org carol@example.org\n")
    assert dests(r, "info@example.org") == (MailboxDest("bob@example.org"),)


def test_table_alias_overrides_an_account_like_postfix(make: MakeResolver) -> None:
    r = make(virtual_alias="bob@example.org carol@example.org\n")
    assert dests(r, "bob@example.org") == (MailboxDest("carol@example.org"),)


def test_address_expanding_to_itself_is_delivered_to_itself(make: MakeResolver) -> None:
    r = make(virtual_alias="alice@example.org alice@example.org, bob@example.org\n")
    assert dests(r, "alice@example.org") == (
        MailboxDest("alice@example.org"),
        MailboxDest("bob@example.org"),
    )


def test_self_expansion_reached_again_through_another_alias(make: MakeResolver) -> None:
    text = (
        "a@example.org a@example.org, b@example.org\n"
        "b@example.org a@example.org, carol@example.org\n"
    )
    r = make(virtual_alias=text)
    found = dests(r, "a@example.org")
    # a is no account: its own branch is unknown, b's branch reaches a again (not expanded)
    # and carol.
    assert MailboxDest("carol@example.org") in found
    assert Rejection(UNKNOWN_USER, "a@example.org") in found
    assert len(found) == 2


def test_alias_cycle_is_a_loop(make: MakeResolver) -> None:
    r = make(virtual_alias="x@example.org y@example.org\ny@example.org x@example.org\n")
    assert dests(r, "x@example.org") == reject(ALIAS_LOOP, "x@example.org")
    assert r.check_recipient("x@example.org", authenticated=False) == ALIAS_LOOP


def test_alias_depth_limit(make: MakeResolver) -> None:
    chain = "".join(f"a{i}@example.org a{i + 1}@example.org\n" for i in range(30))
    r = make(virtual_alias=chain + "a30@example.org alice@example.org\n")
    assert dests(r, "a25@example.org") == (MailboxDest("alice@example.org"),)
    assert dests(r, "a0@example.org") == reject(ALIAS_LOOP, "a0@example.org")


def test_alias_fan_out_limit(make: MakeResolver) -> None:
    many = ", ".join(f"u{i}@far.test" for i in range(1001))
    fine = ", ".join(f"u{i}@far.test" for i in range(1000))
    r = make(virtual_alias=f"big@example.org {many}\nok@example.org {fine}\n")
    assert dests(r, "big@example.org") == reject(ALIAS_TOO_MANY, "big@example.org")
    assert len(dests(r, "ok@example.org")) == 1000


def test_duplicates_are_removed(make: MakeResolver, directory: SqliteDirectory) -> None:
    directory.add_alias("all@example.org", ["alice@example.org", "staff@example.org"])
    directory.add_alias("staff@example.org", ["alice@example.org", "bob@example.org"])
    assert dests(make(), "all@example.org") == (
        MailboxDest("alice@example.org"),
        MailboxDest("bob@example.org"),
    )


def test_at_otherdomain_target_keeps_the_user(make: MakeResolver) -> None:
    r = make(virtual_alias="@old.example.org @example.org\nold.example.org virtual\n")
    assert dests(r, "alice@old.example.org") == (MailboxDest("alice@example.org"),)
    assert dests(r, "alice+x@old.example.org") == (MailboxDest("alice@example.org", "x"),)


def test_table_wildcard_is_a_catchall_not_an_override(make: MakeResolver) -> None:
    r = make(virtual_alias="@example.org carol@example.org\n")
    assert dests(r, "alice@example.org") == (MailboxDest("alice@example.org"),)
    assert dests(r, "whoever@example.org") == (MailboxDest("carol@example.org"),)


def test_empty_alias_value_is_a_configuration_error(make: MakeResolver) -> None:
    r = make(virtual_alias="e@example.org ,\n")
    assert dests(r, "e@example.org") == reject(CONFIG_ERROR, "e@example.org")


# -- catch-all and postmaster --------------------------------------------------------------


def test_domain_catchall_only_for_unknown_local_parts(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.set_domain("example.org", catchall="carol@example.org")
    directory.add_alias("info@example.org", ["bob@example.org"])
    r = make()
    assert dests(r, "random@example.org") == (MailboxDest("carol@example.org"),)
    assert dests(r, "alice+x@example.org") == (MailboxDest("alice@example.org", "x"),)
    assert dests(r, "info@example.org") == (MailboxDest("bob@example.org"),)


def test_catchall_to_an_unknown_address_is_refused_not_looped(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.set_domain("example.org", catchall="gone@example.org")
    assert dests(make(), "x@example.org") == reject(UNKNOWN_USER, "gone@example.org")


def test_postmaster_of_a_hosted_domain_falls_back_to_alias_maps(make: MakeResolver) -> None:
    r = make(aliases="postmaster: root\nroot: alice@example.org\n")
    assert dests(r, "postmaster@example.org") == (MailboxDest("alice@example.org"),)
    assert dests(r, "Postmaster") == (MailboxDest("alice@example.org"),)


def test_postmaster_account_or_alias_wins(make: MakeResolver, directory: SqliteDirectory) -> None:
    directory.add_alias("postmaster@example.org", ["bob@example.org"])
    r = make(aliases="postmaster: carol@example.org\n")
    assert dests(r, "postmaster@example.org") == (MailboxDest("bob@example.org"),)


# Issue 12 point 3: RFC 5321 §4.5.1, postmaster is accepted with no setup.
POSTMASTER_FORMS = ["postmaster", "<Postmaster>", f"POSTMASTER@{HOST}", "PostMaster@Example.ORG"]


@pytest.mark.parametrize("form", POSTMASTER_FORMS)
def test_postmaster_goes_to_the_first_account_when_nothing_is_set(
    make: MakeResolver, form: str
) -> None:
    r = make()
    assert r.postmaster_admin() == ("alice@example.org", "the first account of example.org")
    assert dests(r, form) == (MailboxDest("alice@example.org"),)
    assert r.check_recipient(form, authenticated=False) is None


def test_postmaster_admin_lookup_is_kept_a_while(
    tmp_path: Path, directory: SqliteDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first account is found by listing accounts: once per ADMIN_CACHE_SECONDS, not per
    # RCPT TO:<postmaster> (counted on an injected clock).
    listed: list[str | None] = []
    real = directory.list_accounts

    def counting(domain: str | None = None) -> list[Account]:
        listed.append(domain)
        return real(domain)

    monkeypatch.setattr(directory, "list_accounts", counting)
    now = [1000.0]
    settings = make_settings({"server.hostname": HOST})
    tables = TablesSettings()
    r = Resolver(directory, ConfiguredTables.open(tables), settings, clock=lambda: now[0])
    for _ in range(5):
        assert dests(r, "postmaster@example.org") == (MailboxDest("alice@example.org"),)
    assert listed == ["example.org"]
    now[0] += ADMIN_CACHE_SECONDS
    assert dests(r, "postmaster") == (MailboxDest("alice@example.org"),)
    assert listed == ["example.org", "example.org"]


@pytest.mark.parametrize("form", POSTMASTER_FORMS)
def test_postmaster_goes_to_the_configured_admin(make: MakeResolver, form: str) -> None:
    r = make(postmaster="boss@elsewhere.example")
    assert r.postmaster_admin() == ("boss@elsewhere.example", "server.postmaster")
    assert dests(r, form) == (RemoteDest("boss@elsewhere.example", "smtp:elsewhere.example"),)
    assert r.check_recipient(form, authenticated=False) is None


def test_postmaster_alias_of_that_domain_wins_over_the_admin(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_alias("postmaster@example.org", ["bob@example.org"])
    r = make(postmaster="carol@example.org", virtual_alias=f"postmaster@{HOST} bob@example.org\n")
    assert dests(r, "postmaster@example.org") == (MailboxDest("bob@example.org"),)
    assert dests(r, f"postmaster@{HOST}") == (MailboxDest("bob@example.org"),)
    assert dests(r, "postmaster") == (MailboxDest("bob@example.org"),)
    assert dests(r, "postmaster@localhost") == (MailboxDest("carol@example.org"),)


def test_postmaster_admin_comes_before_the_catchall(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.set_domain("example.org", catchall="carol@example.org")
    assert dests(make(), "postmaster@example.org") == (MailboxDest("alice@example.org"),)


def test_postmaster_admin_is_the_first_account_of_the_first_domain(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_domain("later.example")
    directory.add_account("aaron@later.example", password_hash=HASH)
    assert make().postmaster_admin() == ("alice@example.org", "the first account of example.org")


def test_postmaster_with_nowhere_to_go_waits_451_with_a_warning(tmp_path: Path) -> None:
    empty = SqliteDirectory(tmp_path / "empty.sqlite3")
    try:
        empty.add_domain("fresh.example")
        tables = TablesSettings()
        settings = make_settings({"server.hostname": HOST})
        r = Resolver(empty, ConfiguredTables.open(tables), settings)
        assert r.postmaster_admin() is None
        with capture_logs() as logs:
            assert dests(r, "postmaster@fresh.example") == reject(
                NO_POSTMASTER_YET, "postmaster@fresh.example"
            )
            assert dests(r, "postmaster") == reject(NO_POSTMASTER_YET, f"postmaster@{HOST}")
            dests(r, "postmaster@fresh.example")
        assert NO_POSTMASTER_YET.code == 451  # never refused for good
        warnings = [e for e in logs if e["event"] == "no_postmaster"]
        assert len(warnings) == 2  # once per domain
        assert "pochta config set server.postmaster" in warnings[0]["hint"]
        empty.add_account("first@fresh.example", password_hash=HASH)
        assert dests(r, "postmaster@fresh.example") == (MailboxDest("first@fresh.example"),)
    finally:
        empty.close()


def test_postmaster_admin_pointing_at_itself_does_not_loop(make: MakeResolver) -> None:
    r = make(postmaster="postmaster@example.org")
    assert dests(r, "postmaster@example.org") == reject(NO_POSTMASTER_YET, "postmaster@example.org")


# -- local class ---------------------------------------------------------------------------


def owner_of(path: Path) -> str:
    uid = os.stat(path).st_uid
    return "nobody" if uid == 0 else pwd.getpwuid(uid).pw_name


def test_local_aliases_pipes_files_and_addresses(make: MakeResolver, tmp_path: Path) -> None:
    r = make(
        aliases=(
            'root: alice@example.org, "|/usr/bin/procmail -a x", /var/log/root.mbox\nabuse: root\n'
        )
    )
    user = owner_of(tmp_path / "aliases")
    expected = (
        MailboxDest("alice@example.org"),
        PipeDest("/usr/bin/procmail -a x", user),
        FileDest("/var/log/root.mbox", user),
    )
    assert dests(r, f"root@{HOST}") == expected
    assert dests(r, "ROOT@localhost") == expected
    assert dests(r, f"abuse@{HOST}") == expected
    assert r.domain_class("localhost") is DomainClass.LOCAL


def test_local_alias_with_and_without_extension(make: MakeResolver) -> None:
    r = make(aliases="root: alice@example.org\nroot+cron: bob@example.org\n")
    assert dests(r, f"root+cron@{HOST}") == (MailboxDest("bob@example.org"),)
    # local(8) does not propagate the extension into alias targets.
    assert dests(r, f"root+x@{HOST}") == (MailboxDest("alice@example.org"),)


def test_local_include_files(make: MakeResolver, tmp_path: Path) -> None:
    members = tmp_path / "staff.list"
    members.write_text("alice@example.org\nbob@example.org, carol@example.org\n")
    r = make(aliases=f"staff: :include:{members}\n")
    assert dests(r, f"staff@{HOST}") == (
        MailboxDest("alice@example.org"),
        MailboxDest("bob@example.org"),
        MailboxDest("carol@example.org"),
    )


def test_unreadable_include_defers(make: MakeResolver, tmp_path: Path) -> None:
    r = make(aliases=f"staff: :include:{tmp_path / 'missing.list'}\n")
    with capture_logs() as logs:
        assert dests(r, f"staff@{HOST}") == reject(ALIAS_TEMPFAIL, f"staff@{HOST}")
    assert logs[0]["event"] == "alias_include_failed"


def test_unknown_local_user_and_unix_accounts(make: MakeResolver) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name if os.getuid() != 0 else "daemon"
    assert dests(make(), f"{me}@{HOST}") == reject(UNKNOWN_USER, f"{me}@{HOST}")
    assert dests(make(unix=True), f"{me}+x@{HOST}") == (UnixDest(me, "x"),)
    assert dests(make(unix=True), f"no-such-unix-user-9@{HOST}") == reject(
        UNKNOWN_USER, f"no-such-unix-user-9@{HOST}"
    )


def test_local_alias_to_itself_is_the_unix_account(make: MakeResolver) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name if os.getuid() != 0 else "daemon"
    r = make(aliases=f"{me}: {me}, bob@example.org\n", unix=True)
    assert dests(r, f"{me}@{HOST}") == (UnixDest(me), MailboxDest("bob@example.org"))


def test_virtual_alias_maps_see_bare_local_parts_for_local_domains(make: MakeResolver) -> None:
    r = make(virtual_alias="webmaster carol@example.org\n")
    assert dests(r, f"webmaster@{HOST}") == (MailboxDest("carol@example.org"),)
    assert dests(r, "webmaster@example.org") == reject(UNKNOWN_USER, "webmaster@example.org")


def test_directory_domain_wins_over_a_local_name(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_domain(HOST)
    directory.add_account(f"dave@{HOST}", password_hash=HASH)
    r = make(aliases="root: alice@example.org\n")
    assert dests(r, f"dave@{HOST}") == (MailboxDest(f"dave@{HOST}"),)
    assert dests(r, f"root@{HOST}") == reject(UNKNOWN_USER, f"root@{HOST}")


# -- virtual_mailbox_domains / maps, virtual alias domains ---------------------------------


def test_table_mailboxes(make: MakeResolver) -> None:
    r = make(
        virtual_mailbox="u@vm.test vm.test/u/\n@vm2.test vm2.test/all/\n",
        virtual_mailbox_domains=("vm.test", "vm2.test"),
    )
    assert dests(r, "u+x@vm.test") == (MailboxDest("u@vm.test", "x", "vm.test/u/"),)
    assert dests(r, "other@vm.test") == reject(UNKNOWN_USER, "other@vm.test")
    assert dests(r, "any@vm2.test") == (MailboxDest("@vm2.test", "", "vm2.test/all/"),)


def test_table_mailboxes_follow_transport_maps(make: MakeResolver) -> None:
    r = make(
        virtual_mailbox="u@vm.test x\nv@vm2.test y\n",
        virtual_mailbox_domains=("vm.test", "vm2.test"),
        transport="vm.test lmtp:unix:/run/dovecot/lmtp\nvm2.test virtual:\n",
    )
    assert dests(r, "u@vm.test") == (RemoteDest("u@vm.test", "lmtp:unix:/run/dovecot/lmtp"),)
    assert dests(r, "v@vm2.test") == (MailboxDest("v@vm2.test", "", "y"),)


def test_virtual_alias_domain(make: MakeResolver) -> None:
    r = make(
        virtual_alias=(
            "va.test anything\ninfo@va.test alice@example.org\npostmaster@va.test bob@example.org\n"
        )
    )
    assert r.domain_class("va.test") is DomainClass.VIRTUAL_ALIAS
    assert dests(r, "info@va.test") == (MailboxDest("alice@example.org"),)
    assert dests(r, "x@va.test") == reject(VIRTUAL_ALIAS_UNKNOWN, "x@va.test")
    assert r.check_recipient("x@va.test", authenticated=False) == VIRTUAL_ALIAS_UNKNOWN


# -- relay and default classes -------------------------------------------------------------


def test_relay_domains_and_relay_recipient_maps(make: MakeResolver) -> None:
    open_relay = make(relay_domains=("relay.test", ".sub.relay.test"))
    assert dests(open_relay, "x@relay.test") == (RelayDest("x@relay.test", "relay:relay.test"),)
    assert dests(open_relay, "x@a.sub.relay.test") == (
        RelayDest("x@a.sub.relay.test", "relay:a.sub.relay.test"),
    )
    assert open_relay.check_recipient("x@relay.test", authenticated=False) is None
    checked = make(relay_domains=("relay.test",), relay_recipients="known@relay.test OK\n")
    assert checked.check_recipient("known+t@relay.test", authenticated=False) is None
    assert checked.check_recipient("who@relay.test", authenticated=False) == RELAY_UNKNOWN


def test_relay_domain_with_a_transport(make: MakeResolver) -> None:
    r = make(relay_domains=("relay.test",), transport="relay.test relay:[10.0.0.5]:2525\n")
    assert dests(r, "x@relay.test") == (RelayDest("x@relay.test", "relay:[10.0.0.5]:2525"),)


def test_default_class_goes_by_smtp_to_the_domain(make: MakeResolver) -> None:
    r = make()
    assert dests(r, "x@Far.TEST") == (RemoteDest("x@far.test", "smtp:far.test"),)
    assert dests(r, '"Odd Name"@far.test') == (RemoteDest('"Odd Name"@far.test', "smtp:far.test"),)
    assert dests(r, "пользователь@far.test") == (
        RemoteDest("пользователь@far.test", "smtp:far.test"),
    )
    assert dests(r, "x@[192.0.2.1]") == (RemoteDest("x@[192.0.2.1]", "smtp:[192.0.2.1]"),)
    assert r.domain_class("far.test") is DomainClass.DEFAULT
    remote = dests(r, "x@far.test")[0]
    assert isinstance(remote, RemoteDest)
    assert remote.route.mx_lookup
    assert remote.route.effective_port == 25


def test_transport_maps_search_order_and_special_transports(make: MakeResolver) -> None:
    r = make(
        transport=(
            "vip@far.test smtp:[vip-mx.far.test]\n"
            "far.test relay:[gw.far.test]:2525\n"
            ".sub.test smtp:[mx.sub.test]\n"
            "nohop.test smtp:\n"
            "errors.test error:5.7.1 We do not talk to them\n"
            "later.test retry:4.4.1 Try later\n"
            "plain-error.test error:\n"
            "void.test discard:\n"
            "custom.test myservice:foo\n"
            "broken.test smtp:[oops\n"
            "lmtp.test lmtp:[127.0.0.1]:24\n"
        )
    )
    assert dests(r, "vip+x@far.test") == (RemoteDest("vip+x@far.test", "smtp:[vip-mx.far.test]"),)
    assert dests(r, "x@far.test") == (RemoteDest("x@far.test", "relay:[gw.far.test]:2525"),)
    assert dests(r, "x@a.b.sub.test") == (RemoteDest("x@a.b.sub.test", "smtp:[mx.sub.test]"),)
    assert dests(r, "x@sub.test") == (RemoteDest("x@sub.test", "smtp:sub.test"),)
    assert dests(r, "x@nohop.test") == (RemoteDest("x@nohop.test", "smtp:nohop.test"),)
    assert dests(r, "x@errors.test") == reject(
        Reply(550, "5.7.1", "We do not talk to them"), "x@errors.test"
    )
    assert dests(r, "x@later.test") == reject(Reply(450, "4.4.1", "Try later"), "x@later.test")
    assert dests(r, "x@plain-error.test") == reject(
        Reply(550, "5.0.0", "Recipient address rejected"), "x@plain-error.test"
    )
    assert dests(r, "x@void.test") == (DiscardDest(),)
    assert dests(r, "x@lmtp.test") == (RemoteDest("x@lmtp.test", "lmtp:[127.0.0.1]:24"),)
    with capture_logs() as logs:
        assert dests(r, "x@custom.test") == reject(CONFIG_ERROR, "x@custom.test")
        assert dests(r, "x@broken.test") == reject(CONFIG_ERROR, "x@broken.test")
    assert [e["event"] for e in logs] == ["unknown_transport", "bad_transport"]


def test_transport_wildcard(make: MakeResolver) -> None:
    r = make(transport="* smtp:[smarthost.test]:587\n")
    assert dests(r, "x@far.test") == (RemoteDest("x@far.test", "smtp:[smarthost.test]:587"),)
    # Directory accounts never consult transport_maps.
    assert dests(r, "alice@example.org") == (MailboxDest("alice@example.org"),)


# -- RCPT TO checks ------------------------------------------------------------------------


def test_check_recipient_relay_rules(make: MakeResolver) -> None:
    r = make()
    assert r.check_recipient("x@far.test", authenticated=False) == RELAY_DENIED
    assert r.check_recipient("x@far.test", authenticated=True) is None
    assert r.check_recipient("x@far.test", authenticated=False, client_is_local=True) is None
    assert r.check_recipient("alice@example.org", authenticated=False) is None
    assert r.check_recipient("nobody@example.org", authenticated=True) == UNKNOWN_USER
    assert not r.is_ours("far.test")
    assert r.is_ours("example.org")


def test_relay_check_uses_the_address_as_given_not_its_expansion(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_alias("fwd@example.org", ["someone@far.test"])
    assert make().check_recipient("fwd@example.org", authenticated=False) is None


def test_check_recipient_quota_hook(make: MakeResolver, directory: SqliteDirectory) -> None:
    full = Reply(552, "5.2.2", "Mailbox full")
    directory.add_alias("team@example.org", ["alice@example.org", "bob@example.org"])
    r = make()

    def quota(account: str) -> Reply | None:
        return full if account == "alice@example.org" else None

    assert r.check_recipient("alice@example.org", authenticated=False, quota_check=quota) == full
    assert r.check_recipient("bob@example.org", authenticated=False, quota_check=quota) is None
    # One full member does not refuse the whole alias.
    assert r.check_recipient("team@example.org", authenticated=False, quota_check=quota) is None


def test_partly_undeliverable_alias_is_accepted_and_logged(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_alias("team@example.org", ["alice@example.org", "left@example.org"])
    directory.add_alias("gone@example.org", ["left@example.org"])
    r = make()
    with capture_logs() as logs:
        assert r.check_recipient("team@example.org", authenticated=False) is None
    assert logs[0]["event"] == "alias_partly_undeliverable"
    assert r.check_recipient("gone@example.org", authenticated=False) == UNKNOWN_USER


# -- sender ownership (submission) ---------------------------------------------------------


def test_owned_addresses_and_sender_allowed(make: MakeResolver, directory: SqliteDirectory) -> None:
    directory.add_alias("sales@example.org", ["alice@example.org", "bob@example.org"])
    directory.add_alias("ceo@example.org", ["bob@example.org"])
    directory.set_domain("example.org", catchall="alice@example.org")
    r = make(
        virtual_alias=(
            "info@example.org alice@example.org\n"
            "@example.org alice@example.org\n"
            "shadow@example.org alice@example.org\n"
        )
    )
    directory.add_alias("shadow@example.org", ["carol@example.org"])
    assert r.owned_addresses("alice@example.org") == {
        "alice@example.org",
        "sales@example.org",
        "info@example.org",
    }
    ok = r.sender_allowed
    assert ok("alice@example.org", "alice@example.org")
    assert ok("alice@example.org", "Alice+Lists@Example.org")
    assert ok("alice@example.org", "sales@example.org")
    assert ok("alice@example.org", "sales+x@example.org")
    assert ok("alice@example.org", "info@example.org")
    assert ok("alice@example.org", "")
    assert ok("alice@example.org", "<>")
    assert not ok("alice@example.org", "ceo@example.org")
    assert not ok("alice@example.org", "bob@example.org")
    assert not ok("alice@example.org", "shadow@example.org")  # the directory alias shadows
    assert not ok("alice@example.org", "anything@example.org")  # catch-alls grant nothing
    assert not ok("alice@example.org", "alice@far.test")
    assert not ok("alice@example.org", "@@")


# Issue 13 point 2: the host name's signing-only row (its DKIM keys) is no mail domain.


def test_signing_only_row_of_the_host_name_stays_in_the_local_class(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    directory.add_domain(HOST, signing_only=True)
    r = make(aliases="root: bob@example.org\n")
    assert r.domain_class(HOST) is DomainClass.LOCAL
    assert dests(r, f"root@{HOST}") == (MailboxDest("bob@example.org"),)
    assert dests(r, f"postmaster@{HOST}") == (MailboxDest("alice@example.org"),)
    assert dests(r, f"nobody@{HOST}") == reject(UNKNOWN_USER, f"nobody@{HOST}")
    assert r.check_recipient(f"root@{HOST}", authenticated=False) is None
    # The admin is still the first account of the first mail domain.
    assert r.postmaster_admin() == ("alice@example.org", "the first account of example.org")


def test_signing_only_row_of_another_name_is_not_ours(
    make: MakeResolver, directory: SqliteDirectory
) -> None:
    """A signing-only row left for a former host name: its mail goes out like anyone's."""
    directory.add_domain("old-mx.provider.test", signing_only=True)
    r = make()
    assert r.domain_class("old-mx.provider.test") is DomainClass.DEFAULT
    assert not r.is_ours("old-mx.provider.test")
    assert dests(r, "x@old-mx.provider.test") == (
        RemoteDest("x@old-mx.provider.test", "smtp:old-mx.provider.test"),
    )
    assert r.check_recipient("x@old-mx.provider.test", authenticated=False) == RELAY_DENIED
