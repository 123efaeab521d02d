"""`pochta queue requeue` routes afresh, as postsuper -r does (issue 17 point 5): with a
real `pochta serve`, smtplib, and an aliases(5) file whose pipe target fails temporarily
(exit 75, EX_TEMPFAIL) until the admin changes it.
"""

from __future__ import annotations

import json
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    ServeProcess,
    dsn_status_text,
    serve,
    set_key,
    wait_files,
    wait_until,
)
from tests.integration.test_cli_queue import make_message

SUPPORT = f"support@{HOSTNAME}"
ORCPT = f"rfc822;help@{DOMAIN}"


@pytest.fixture
def deferred(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess, Path, str]]:
    """A message from alice to support@HOST, whose alias pipes into a command that exits
    75: deferred. Yields the env, the server, the aliases file and the queue id."""
    pochta_env.add_user(f"alice@{DOMAIN}", "alice's password")
    pochta_env.add_user(f"bob@{DOMAIN}", "bob's password")
    aliases = pochta_env.data_dir / "aliases"
    aliases.write_text('# aliases(5)\nsupport: "|exit 75"\n')
    aliases.chmod(0o644)
    set_key(pochta_env.config_path, "tables", "alias_maps", f'["{aliases}"]')
    with serve(pochta_env.config_path) as server:
        with smtplib.SMTP("127.0.0.1", pochta_env.ports["smtp"], timeout=10) as c:
            c.ehlo()
            c.mail(f"alice@{DOMAIN}")
            assert c.rcpt(SUPPORT, [f"ORCPT={ORCPT}", "NOTIFY=FAILURE"])[0] == 250
            code, _ = c.data(
                f"From: alice@{DOMAIN}\r\nTo: {SUPPORT}\r\nSubject: help\r\n\r\nplease\r\n".encode()
            )
            assert code == 250
        record = server.wait_for("deferred")
        assert "pipe:" in record["relay"]
        # Logged before the move: requeue refuses a message still being delivered.
        spooled = pochta_env.data_dir / "queue" / "deferred" / record["queue_id"]
        assert wait_until(spooled.exists), "the message did not reach deferred/"
        yield pochta_env, server, aliases, record["queue_id"]


def queued(env: PochtaEnv) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(env.run("queue", "list", "--json", check=True).stdout)
    return result


def test_requeue_takes_the_alias_as_it_is_now(
    deferred: tuple[PochtaEnv, ServeProcess, Path, str],
) -> None:
    env, server, aliases, queue_id = deferred
    aliases.write_text(f"# aliases(5)\nsupport: bob@{DOMAIN}\n")
    proc = env.run("queue", "requeue", queue_id, check=True)
    assert proc.stdout == "Requeued: 1 message\n"
    (path,) = wait_files(env, "bob", 1)
    text = path.read_bytes()
    assert b"Subject: help" in text
    assert f"Delivered-To: bob@{DOMAIN}".encode() in text
    record = server.wait_for("delivered")
    assert record["queue_id"] == queue_id
    assert record["orig_to"] == SUPPORT
    assert len(server.events("deferred")) == 1  # the old command was not run again


def test_requeue_without_a_server_rewrites_the_route_and_keeps_orcpt(
    deferred: tuple[PochtaEnv, ServeProcess, Path, str],
) -> None:
    env, server, aliases, queue_id = deferred
    server.signal(signal.SIGKILL)
    server.wait_exit()
    aliases.write_text(f'# aliases(5)\nsupport: bob@{DOMAIN}, "|exit 75"\n')
    env.run("queue", "requeue", queue_id, check=True)
    (entry,) = queued(env)
    assert entry["state"] == "incoming"
    recipients = entry["envelope"]["recipients"]
    assert {(r["address"], r["destination"].split(":")[0]) for r in recipients} == {
        (f"bob@{DOMAIN}", "mailbox"),
        (SUPPORT, "pipe"),
    }
    for r in recipients:
        assert r["original"] == SUPPORT
        assert r["orcpt"] == ORCPT
        assert r["notify"] == ["FAILURE"]
        assert r["status"] == "pending"


def test_requeue_bounces_a_recipient_that_no_longer_exists(
    deferred: tuple[PochtaEnv, ServeProcess, Path, str],
) -> None:
    env, _, aliases, queue_id = deferred
    aliases.write_text("# aliases(5): support is gone\n")
    env.run("queue", "requeue", queue_id, check=True)
    (path,) = wait_files(env, "alice", 1)  # the DSN, to the sender
    status = dsn_status_text(path)
    assert f"Final-Recipient: rfc822; {SUPPORT}" in status or SUPPORT in status
    assert f"Original-Recipient: rfc822; help@{DOMAIN}" in status
    assert "Status: 5.1.1" in status
    assert queued(env) == []


def test_requeue_from_hold(deferred: tuple[PochtaEnv, ServeProcess, Path, str]) -> None:
    env, _, aliases, queue_id = deferred
    env.run("queue", "hold", queue_id, check=True)
    aliases.write_text(f"support: bob@{DOMAIN}\n")
    env.run("queue", "requeue", queue_id, check=True)
    (path,) = wait_files(env, "bob", 1)
    assert b"Subject: help" in path.read_bytes()


def test_requeue_from_corrupt_routes_a_readable_envelope(pochta_env: PochtaEnv) -> None:
    """postsuper -r also for corrupt/ (after an admin repaired the file): a readable
    envelope is routed afresh like any other; no server needed."""
    queue_id = make_message(pochta_env, f"info@{DOMAIN}", state="corrupt")
    pochta_env.add_user(f"bob@{DOMAIN}", "bob's password")
    virtual = pochta_env.data_dir / "virtual"
    virtual.write_text(f"info@{DOMAIN}    bob@{DOMAIN}\n")  # virtual(5), postmap source
    set_key(pochta_env.config_path, "tables", "virtual_alias_maps", f'["hash:{virtual}"]')
    pochta_env.run("queue", "requeue", queue_id, check=True)
    (entry,) = queued(pochta_env)
    assert entry["state"] == "incoming"
    (rcpt,) = entry["envelope"]["recipients"]
    assert (rcpt["address"], rcpt["destination"]) == (f"bob@{DOMAIN}", f"mailbox:bob@{DOMAIN}")
    assert rcpt["original"] == f"info@{DOMAIN}"
