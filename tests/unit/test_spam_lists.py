"""spam/lists.py and `pochta spam allow|block`: patterns, scopes, precedence, the symbols,
and the commands (click's CliRunner on a data dir made by the real `pochta init`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import dns.asyncresolver
import pytest
from click.testing import CliRunner, Result

from pochta.cli.main import cli
from pochta.spam.check import ScanInput
from pochta.spam.lists import (
    ListError,
    ListSymbols,
    SpamLists,
    parse_recipient_pattern,
    parse_sender_pattern,
)
from pochta.spam.message import ScanMessage
from tests.harness import DOMAIN, PochtaEnv, make_pochta_env


@pytest.fixture
def lists(tmp_path: Path) -> Iterator[SpamLists]:
    found = SpamLists(tmp_path / "directory.sqlite3")
    yield found
    found.close()


def symbols(
    lists: SpamLists,
    *,
    sender: str = "someone@example.net",
    from_: str = "someone@example.net",
    recipients: tuple[str, ...] = ("bob@example.org",),
) -> dict[str, float]:
    message = ScanMessage(f"From: {from_}\r\nSubject: x\r\n\r\nhi\r\n".encode())
    check = ListSymbols(lists)
    scan = ScanInput(message=message, sender=sender, recipients=recipients)
    return {s.name: s.score for s in asyncio.run(check(scan))}


# -- patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Bob@Example.NET", "bob@example.net"),
        ("@Example.net", "@example.net"),
        ("example.net.", "example.net"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_sender_patterns(text: str, canonical: str) -> None:
    assert parse_sender_pattern(text) == canonical


@pytest.mark.parametrize("text", ["", "@", "localhost", "a b@example.net", "@-bad-.example", "x@"])
def test_bad_sender_patterns_say_what_is_allowed(text: str) -> None:
    with pytest.raises(ListError, match=r"use user@domain, @domain"):
        parse_sender_pattern(text)


def test_recipient_patterns() -> None:
    assert parse_recipient_pattern("Abuse@Example.org") == "abuse@example.org"
    assert parse_recipient_pattern("abuse@") == "abuse@"
    with pytest.raises(ListError, match="user@ for that local part"):
        parse_recipient_pattern("example.org")


# -- matching and precedence -----------------------------------------------------------------


def test_no_entries_no_symbols(lists: SpamLists) -> None:
    assert symbols(lists) == {}


@pytest.mark.parametrize(
    "pattern", ["someone@example.net", "@example.net", "example.net", "net.example.net"]
)
def test_global_block_by_address_domain_and_parent_domain(lists: SpamLists, pattern: str) -> None:
    lists.add("block", "", parse_sender_pattern(pattern))
    expected = {} if pattern == "net.example.net" else {"GLOBAL_BLOCKLIST": 20.0}
    assert symbols(lists) == expected


def test_domain_pattern_covers_subdomains_but_at_domain_does_not(lists: SpamLists) -> None:
    lists.add("block", "", "example.net")
    assert symbols(lists, sender="x@mail.example.net", from_="x@mail.example.net") == {
        "GLOBAL_BLOCKLIST": 20.0
    }
    lists.remove("block", "", "example.net")
    lists.add("block", "", "@example.net")
    assert symbols(lists, sender="x@mail.example.net", from_="x@mail.example.net") == {}


def test_envelope_sender_or_from_address_matches(lists: SpamLists) -> None:
    lists.add("allow", "", "friend@example.com")
    assert symbols(lists, sender="friend@example.com") == {"GLOBAL_ALLOWLIST": -20.0}
    assert symbols(lists, from_="friend@example.com") == {"GLOBAL_ALLOWLIST": -20.0}
    assert symbols(lists, sender="", from_="other@example.com") == {}


def test_an_undecodable_from_address_matches_nothing_and_does_not_fail(
    lists: SpamLists,
) -> None:
    """A From field with bytes that are not UTF-8 (old 8-bit mail) reads as surrogate
    escapes; the check skips that address instead of failing on it."""
    lists.add("allow", "", "friend@example.com")
    message = ScanMessage(b"From: \xa4\xa4@example.com\r\nSubject: x\r\n\r\nhi\r\n")
    scan = ScanInput(message=message, sender="friend@example.com", recipients=["bob@example.org"])
    assert {s.name for s in asyncio.run(ListSymbols(lists)(scan))} == {"GLOBAL_ALLOWLIST"}


def test_user_scope_beats_domain_and_global(lists: SpamLists) -> None:
    lists.add("block", "", "example.net")
    lists.add("block", "example.org", "example.net")
    lists.add("allow", "bob@example.org", "someone@example.net")
    assert symbols(lists) == {"USER_ALLOWLIST": -20.0}
    # another user of the domain gets the domain's decision
    assert symbols(lists, recipients=("carol@example.org",)) == {"DOMAIN_BLOCKLIST": 20.0}
    # a recipient of another domain the global one
    assert symbols(lists, recipients=("dan@other.test",)) == {"GLOBAL_BLOCKLIST": 20.0}


def test_user_list_reached_through_a_plus_address(lists: SpamLists) -> None:
    lists.add("block", "bob@example.org", "@example.net")
    assert symbols(lists, recipients=("Bob+news@example.org",)) == {"USER_BLOCKLIST": 20.0}


def test_most_specific_pattern_wins_and_allow_wins_a_tie(lists: SpamLists) -> None:
    lists.add("block", "", "example.net")
    lists.add("allow", "", "boss@example.net")
    assert symbols(lists, sender="boss@example.net", from_="boss@example.net") == {
        "GLOBAL_ALLOWLIST": -20.0
    }
    assert symbols(lists, sender="intern@example.net", from_="intern@example.net") == {
        "GLOBAL_BLOCKLIST": 20.0
    }
    lists.add("allow", "", "example.net")  # the same pattern on both lists
    assert symbols(lists, sender="intern@example.net", from_="intern@example.net") == {
        "GLOBAL_ALLOWLIST": -20.0
    }


def test_each_recipient_decides_for_itself(lists: SpamLists) -> None:
    lists.add("allow", "bob@example.org", "example.net")
    lists.add("block", "carol@example.org", "example.net")
    found = symbols(lists, recipients=("bob@example.org", "carol@example.org"))
    assert found == {"USER_ALLOWLIST": -20.0, "USER_BLOCKLIST": 20.0}


def test_recipient_allow_entry_is_never_filtered(lists: SpamLists) -> None:
    lists.add("block", "", "example.net")
    lists.add("recipient", "", "abuse@example.org")
    assert symbols(lists, recipients=("abuse@example.org",)) == {"RCPT_ALLOWLIST": -100.0}
    assert symbols(lists, recipients=("bob@example.org",)) == {"GLOBAL_BLOCKLIST": 20.0}


def test_recipient_local_part_in_every_domain(lists: SpamLists) -> None:
    lists.add("recipient", "", "postmaster@")
    assert symbols(lists, recipients=("postmaster@other.test",)) == {"RCPT_ALLOWLIST": -100.0}
    assert symbols(lists, recipients=("post@other.test",)) == {}


def test_the_table_lives_beside_the_directory_and_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "directory.sqlite3"
    first = SpamLists(db)
    assert first.add("allow", "", "example.net")
    assert not first.add("allow", "", "example.net")
    first.close()
    again = SpamLists(db)
    assert [e.pattern for e in again.entries("allow")] == ["example.net"]
    assert again.remove("allow", "", "example.net")
    assert not again.remove("allow", "", "example.net")
    again.close()


# -- the commands ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> PochtaEnv:
    made = make_pochta_env(tmp_path_factory.mktemp("lists") / "data")
    made.add_user(f"bob@{DOMAIN}", "correct horse battery")
    return made


def run(env: PochtaEnv, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(env.config_path), "spam", *args])


def test_cli_add_list_remove(env: PochtaEnv) -> None:
    added = run(env, "block", "add", "Spammer.Example")
    assert added.exit_code == 0, added.output
    assert "added: block spammer.example (global)" in added.output
    again = run(env, "block", "add", "spammer.example")
    assert "already listed" in again.output
    user = run(env, "allow", "add", "--for", f"Bob@{DOMAIN}", "friend@spammer.example")
    assert user.exit_code == 0, user.output
    domain = run(env, "allow", "add", "--for", DOMAIN, "@partner.example")
    assert domain.exit_code == 0, domain.output
    listed = run(env, "allow", "list")
    assert listed.output.splitlines() == [
        f"bob@{DOMAIN}\tfriend@spammer.example",
        f"{DOMAIN}\t@partner.example",
    ]
    assert run(env, "allow", "list", "--for", DOMAIN).output.splitlines() == [
        f"{DOMAIN}\t@partner.example"
    ]
    assert run(env, "block", "list").output.splitlines() == ["global\tspammer.example"]
    removed = run(env, "block", "remove", "spammer.example")
    assert removed.exit_code == 0
    assert "removed" in removed.output
    assert run(env, "block", "list").output == ""
    # what the commands wrote, the check reads
    lists = SpamLists(env.data_dir / "directory.sqlite3")
    try:
        found = symbols(lists, sender="friend@spammer.example", recipients=(f"bob@{DOMAIN}",))
    finally:
        lists.close()
    assert found == {"USER_ALLOWLIST": -20.0}


def test_cli_recipient_entries(env: PochtaEnv) -> None:
    added = run(env, "allow", "add", "--recipient", f"abuse@{DOMAIN}")
    assert added.exit_code == 0, added.output
    assert run(env, "allow", "add", "--recipient", "postmaster@").exit_code == 0
    assert run(env, "allow", "list", "--recipient").output.splitlines() == [
        f"global\tabuse@{DOMAIN}",
        "global\tpostmaster@",
    ]
    foreign = run(env, "allow", "add", "--recipient", "abuse@elsewhere.example")
    assert foreign.exit_code == 1
    assert "elsewhere.example is not a hosted domain" in foreign.output
    assert run(env, "block", "add", "--recipient", "x@y.example").exit_code == 2  # no such option


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["allow", "add", "not a pattern"], "is not a sender pattern"),
        (["block", "add", "localhost"], "not a fully qualified domain name"),
        (["allow", "add", "--for", "nobody.example", "x.example"], "not a hosted domain"),
        (["allow", "add", "--for", f"ghost@{DOMAIN}", "x.example"], "no account or alias"),
        (["block", "add", "--for", "bad domain", "x.example"], "--for bad domain"),
        (["block", "remove", "never.example"], "is not on the block list"),
    ],
)
def test_cli_errors_say_what_to_fix(env: PochtaEnv, args: list[str], message: str) -> None:
    found = run(env, *args)
    assert found.exit_code == 1
    assert message in found.output
    assert found.output.startswith("pochta: error: ")


def test_real_command(env: PochtaEnv) -> None:
    proc = env.run("spam", "block", "add", "--for", DOMAIN, "bulk.example")
    assert proc.returncode == 0, proc.stderr
    listed = env.run("spam", "block", "list", "--for", DOMAIN)
    assert listed.stdout.splitlines() == [f"{DOMAIN}\tbulk.example"]
    bad = env.run("spam", "block", "add", "@")
    assert bad.returncode == 1
    assert "pochta: error:" in bad.stderr
    assert "use user@domain" in bad.stderr


# -- build_checks ----------------------------------------------------------------------------


def test_build_checks_has_the_symbol_checks_and_reads_the_lists(env: PochtaEnv) -> None:
    from pochta.checks import load_checked_settings
    from pochta.directory.open import open_directory
    from pochta.spam.setup import build_checks

    assert run(env, "block", "add", "--for", f"bob@{DOMAIN}", "pest.example").exit_code == 0
    settings = load_checked_settings(str(env.config_path), check_files=False)
    directory = open_directory(settings)
    try:
        resolver = dns.asyncresolver.Resolver(configure=False)  # never asked by these checks
        checks = build_checks(settings, directory=directory, dns_resolver=resolver)
        names = {c.name for c in checks}
        assert {"auth", "client", "header_heuristics", "mime_heuristics", "lists"} <= names
        message = ScanMessage(b"From: x@pest.example\r\n\r\nhi\r\n")
        scan = ScanInput(message=message, sender="x@pest.example", recipients=(f"bob@{DOMAIN}",))
        lists_check = next(c for c in checks if c.name == "lists")
        found = asyncio.run(lists_check(scan))
        assert [s.name for s in found] == ["USER_BLOCKLIST"]
    finally:
        directory.close()


def test_hosted_domains_are_read_once_per_interval(env: PochtaEnv) -> None:
    from pochta.checks import load_checked_settings
    from pochta.directory.open import open_directory
    from pochta.spam.setup import hosted_domains

    settings = load_checked_settings(str(env.config_path), check_files=False)
    directory = open_directory(settings)
    now = [0.0]
    try:
        domains = hosted_domains(directory, seconds=30, clock=lambda: now[0])
        assert domains() == (DOMAIN,)
        directory.add_domain("new.example")
        assert domains() == (DOMAIN,)  # cached
        now[0] = 31.0
        assert set(domains()) == {DOMAIN, "new.example"}
    finally:
        directory.remove_domain("new.example", force=True)
        directory.close()
