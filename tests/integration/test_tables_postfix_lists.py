"""Issue 17, points 1, 6 and 9, against a real pochta and real table files written the way
Postfix's guides write them: domain lists as postconf(5) reads them, a malformed table that
only the commands reading it notice (and a reload that keeps its last good version), and the
warning for a domain in two address classes."""

from __future__ import annotations

import signal
import smtplib
import threading
import time
from pathlib import Path

from tests.harness import PochtaEnv, serve, set_key, smtp_send, wait_files

# STANDARD_CONFIGURATION_README / ADDRESS_CLASS_README: a postmap(1) source, "key value".
RELAY_TABLE = "# relayed domains\nrelay.example   OK\n"
# A "/file/name" domain list: names separated by whitespace or commas, # comments.
RELAY_NAMES = "# backup MX for\nbackup.example\nthird.example, fourth.example\n"


def rcpt_reply(env: PochtaEnv, address: str) -> int:
    """The reply code to RCPT TO:<address> on the MX port, from a client that did not log in."""
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        s.ehlo("client.example")
        s.mail("sender@client.example")
        code, _ = s.rcpt(address)
        return code


def test_relay_domains_as_table_and_file_pass_check_and_relay(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    table = tmp_path / "relay_domains"
    table.write_text(RELAY_TABLE)
    names = tmp_path / "relay_names"
    names.write_text(RELAY_NAMES)
    set_key(pochta_env.config_path, "tables", "relay_domains", f'["lmdb:{table}", "{names}"]')
    checked = pochta_env.run("check")
    assert checked.returncode == 0, checked.stderr
    with serve(pochta_env.config_path):
        assert rcpt_reply(pochta_env, "x@far.example") == 554  # not ours: relay denied
        assert rcpt_reply(pochta_env, "x@relay.example") == 250  # the table
        assert rcpt_reply(pochta_env, "x@sub.relay.example") == 250  # parent style
        assert rcpt_reply(pochta_env, "x@backup.example") == 250  # the file of names
        assert rcpt_reply(pochta_env, "x@fourth.example") == 250


def test_check_refuses_domain_lists_it_cannot_read(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    names_only = tmp_path / "relay_domains"
    names_only.write_text("relay.example\n")
    set_key(
        pochta_env.config_path,
        "tables",
        "relay_domains",
        f'["hash:{names_only}", "foo:/etc/postfix/x", "!"]',
    )
    set_key(pochta_env.config_path, "local", "domains", f'["localhost", "{tmp_path}/missing"]')
    checked = pochta_env.run("check")
    assert checked.returncode == 1
    err = checked.stderr
    assert "tables.relay_domains[0]" in err
    assert "name it without 'TYPE:': '/path/to/file'" in err  # the fix for a names-only file
    assert "tables.relay_domains[1]" in err
    assert "unsupported table type 'foo'" in err
    assert "tables.relay_domains[2]" in err
    assert "no pattern after '!'" in err
    assert "local.domains[1]" in err
    assert "cannot read" in err


def test_user_add_works_while_a_table_is_malformed(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    virtual = tmp_path / "virtual"
    virtual.write_text("info@example.test alice@example.test\nbroken@example.test\n")
    set_key(pochta_env.config_path, "tables", "virtual_alias_maps", f'["hash:{virtual}"]')
    added = pochta_env.run(
        "user", "add", "bob@example.test", "--password-stdin", input="pw12345678\n"
    )
    assert added.returncode == 0, added.stderr
    listed = pochta_env.run("user", "list")
    assert listed.returncode == 0, listed.stderr
    checked = pochta_env.run("check")  # the command that reads the table still reports it
    assert checked.returncode == 1
    assert f"tables.virtual_alias_maps[0]: {virtual}:2:" in checked.stderr


def test_user_add_while_a_table_is_rewritten_in_place(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    """The race of the issue: an editor truncates the file and writes it again."""
    virtual = tmp_path / "virtual"
    virtual.write_text("info@example.test alice@example.test\n")
    set_key(pochta_env.config_path, "tables", "virtual_alias_maps", f'["hash:{virtual}"]')
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            with virtual.open("w") as out:  # truncate, then the entry in two writes
                out.write("info@example.test")
                out.flush()
                time.sleep(0.005)
                out.write(" alice@example.test\n")

    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        for n in range(4):
            added = pochta_env.run(
                "user", "add", f"user{n}@example.test", "--password-stdin", input="pw12345678\n"
            )
            assert added.returncode == 0, added.stderr
    finally:
        stop.set()
        writer.join(5)


def test_sighup_keeps_the_last_good_table_and_applies_the_rest(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    pochta_env.add_user("alice@example.test", "pw12345678")
    virtual = tmp_path / "virtual"
    virtual.write_text("info@example.test alice@example.test\n")
    set_key(pochta_env.config_path, "tables", "virtual_alias_maps", f'["hash:{virtual}"]')
    with serve(pochta_env.config_path) as server:
        smtp_send(pochta_env, "info@example.test", "before")
        assert len(wait_files(pochta_env, "alice", 1)) == 1
        assert rcpt_reply(pochta_env, "x@relay.example") == 554
        # The table is being edited (a line without its value yet) and the config changes.
        virtual.write_text("info@example.test alice@example.test\nsales@example.test\n")
        set_key(pochta_env.config_path, "tables", "relay_domains", '["relay.example"]')
        server.signal(signal.SIGHUP)
        kept = server.wait_for("table_kept")
        assert f"{virtual}:2:" in kept["detail"]
        assert "keeping the previous contents" in kept["detail"]
        server.wait_for("reloaded")
        assert not server.events("reload_failed")
        smtp_send(pochta_env, "info@example.test", "after")  # the old table still routes it
        assert len(wait_files(pochta_env, "alice", 2)) == 2
        assert rcpt_reply(pochta_env, "x@relay.example") == 250  # the rest was applied


def test_check_warns_about_a_domain_in_two_classes(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    table = tmp_path / "relay_domains"
    table.write_text("vm.example OK\nrelay.example OK\n")
    set_key(pochta_env.config_path, "tables", "relay_domains", f'["example.test", "hash:{table}"]')
    set_key(pochta_env.config_path, "tables", "virtual_mailbox_domains", '["vm.example"]')
    checked = pochta_env.run("check")
    assert checked.returncode == 0, checked.stderr
    warnings = [x for x in checked.stderr.splitlines() if "more than one address class" in x]
    assert len(warnings) == 2, checked.stderr
    hosted = next(w for w in warnings if w.startswith("warning: example.test "))
    assert "pochta treats it as hosted" in hosted
    assert "[tables] relay_domains" in hosted
    vm = next(w for w in warnings if w.startswith("warning: vm.example "))
    assert "pochta treats it as virtual_mailbox_domains" in vm
    assert "ADDRESS_CLASS_README" in vm
