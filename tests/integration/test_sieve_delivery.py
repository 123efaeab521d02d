"""Sieve at local delivery through a real pochta (issue 16): scripts written with the
ScriptStore, mail sent with smtplib (MX and LMTP), results read over IMAP, from the Maildir
and from the log.

The redirect test runs the server in this process with ``check_incoming`` on, a loopback
zone server and an aiosmtpd sink as the relayhost (as tests/integration/test_forwarding.py).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest

from pochta.config.load import load_settings
from pochta.sieve.context import MessageContext
from pochta.sieve.script import CAPABILITIES
from pochta.sieve.scripts import ScriptStore
from tests.dnsserver import ZoneServer
from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    ServeProcess,
    dsn_status_text,
    maildir_files,
    serve,
    serving_in_process,
    set_key,
    wait_files,
    wait_maildir,
)
from tests.integration.test_forwarding import host_dnsfunc
from tests.integration.test_remote_agent import Sink, SinkController, free_port

PASSWORD = "sieve-test-pw"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"

FILTER = """require ["fileinto", "reject", "mailbox"];
if header :contains "subject" "file me" {
    fileinto :create "Work";
} elsif header :contains "subject" "missing folder" {
    fileinto "Missing";
} elsif header :contains "subject" "drop me" {
    discard;
} elsif header :contains "subject" "refuse me" {
    reject "Alice does not take this mail.";
}
"""

VACATION = """require "vacation";
vacation :days 7 :subject "Away" "I am away until Monday.";
"""


def write_script(env: PochtaEnv, account: str, name: str, text: str) -> None:
    store = ScriptStore.from_settings(load_settings(env.config_path))
    store.put(account, name, text)
    store.set_active(account, name)


def send(env: PochtaEnv, sender: str, to: str, subject: str, extra: str = "") -> None:
    content = (
        f"From: <{sender or 'daemon@example.org'}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@client.test>\r\n{extra}\r\nHello.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as client:
        client.sendmail(sender, [to], content.encode())


def folder_files(env: PochtaEnv, local: str, folder: str) -> list[Path]:
    return maildir_files(env.data_dir / "mail" / DOMAIN / local / f".{folder}")


@pytest.fixture
def server(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    for user in (ALICE, BOB, CAROL):
        pochta_env.add_user(user, PASSWORD)
    set_key(pochta_env.config_path, "server", "processes", "1")
    with serve(pochta_env.config_path) as proc:
        yield pochta_env, proc


def imap_folder(env: PochtaEnv, folder: str) -> list[str]:
    """The FLAGS of every message of ``folder`` of Alice, over IMAP."""
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    try:
        c.login(ALICE, PASSWORD)
        typ, data = c.select(folder)
        assert typ == "OK", data
        count = int(data[0] or b"0")
        if not count:
            return []
        typ, fetched = c.fetch(f"1:{count}", "(FLAGS)")
        assert typ == "OK"
        return [f.decode() for f in fetched if isinstance(f, bytes)]
    finally:
        c.logout()


def test_fileinto_discard_and_reject(server: tuple[PochtaEnv, ServeProcess]) -> None:
    env, proc = server
    write_script(env, ALICE, "filter", FILTER)
    send(env, BOB, ALICE, "please file me")
    send(env, BOB, ALICE, "drop me now")
    send(env, BOB, ALICE, "refuse me please")
    send(env, BOB, ALICE, "to a missing folder")  # fileinto without :create: INBOX
    send(env, BOB, ALICE, "just hello")
    assert len(wait_files(env, "alice", 2)) == 2
    proc.wait_for("sieve_discard")
    proc.wait_for("sieve_fileinto_failed")
    assert len(imap_folder(env, "Work")) == 1
    assert len(imap_folder(env, "INBOX")) == 2
    # The reject: the sender gets a DSN with 5.7.1 and the script's reason.
    [dsn] = wait_files(env, "bob", 1)
    status = dsn_status_text(dsn)
    assert "Status: 5.7.1" in status
    # The script's reason, in the part for a person (RFC 3464 §2: text/plain first).
    report = email.message_from_bytes(dsn.read_bytes(), policy=email.policy.default)
    text = next(p for p in report.walk() if p.get_content_type() == "text/plain")
    assert "Alice does not take this mail." in text.get_content()
    assert len(mailbox_all(env, "alice")) == 3  # INBOX 2 + Work 1: the dropped one nowhere


@pytest.mark.skipif(
    "imap4flags" not in CAPABILITIES, reason="the interpreter has no imap4flags yet"
)
def test_fileinto_with_flags(server: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = server
    write_script(
        env,
        ALICE,
        "flags",
        'require ["fileinto", "imap4flags", "mailbox"];\n'
        'fileinto :create :flags ["\\\\Flagged", "$Work"] "Work";\n',
    )
    send(env, BOB, ALICE, "flag me")
    wait_maildir(env.data_dir / "mail" / DOMAIN / "alice" / ".Work", 1, 15)
    [flags] = imap_folder(env, "Work")
    assert "\\Flagged" in flags
    assert "$Work" in flags


def mailbox_all(env: PochtaEnv, local: str) -> list[Path]:
    root = env.data_dir / "mail" / DOMAIN / local
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]


@pytest.mark.skipif("vacation" not in CAPABILITIES, reason="the interpreter has no vacation yet")
def test_vacation_once_per_period_not_to_bulk_or_null(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, proc = server
    write_script(env, ALICE, "away", VACATION)
    send(env, BOB, ALICE, "first")
    send(env, BOB, ALICE, "second")  # same sender within the period: no second reply
    send(env, CAROL, ALICE, "bulk", extra="Precedence: bulk\r\n")
    send(env, "", ALICE, "from the null sender")
    assert len(wait_files(env, "alice", 4)) == 4
    replies = wait_files(env, "bob", 1)
    assert len(replies) == 1, [p.read_bytes()[:400] for p in replies]
    text = replies[0].read_bytes()
    assert b"Auto-Submitted: auto-replied" in text
    assert b"Subject: Away" in text
    assert b"Return-Path: <>" in text  # RFC 3834 §3.3: sent from the null sender
    # The second message from Bob: skipped, and logged (bulk and <> may already be left
    # out by the interpreter, RFC 5230 §4.6).
    proc.wait_for("sieve_vacation_skipped")
    # One reply was sent in all; the decisions are logged before each delivery's 250.
    assert len(proc.events("sieve_vacation")) == 1
    send(env, BOB, BOB, "marker")
    assert len(wait_files(env, "bob", 2)) == 2
    assert mailbox_all(env, "carol") == []


def test_broken_script_delivers_to_inbox(server: tuple[PochtaEnv, ServeProcess]) -> None:
    env, proc = server
    write_script(env, ALICE, "broken", 'require "fileinto";\nif frop { fileinto "X"; }\n')
    send(env, BOB, ALICE, "still delivered")
    assert len(wait_files(env, "alice", 1)) == 1
    failed = proc.wait_for("sieve_failed")
    assert failed.get("account") == ALICE
    assert failed.get("script") == "broken"


def test_lmtp_ereject(server: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = server
    write_script(env, ALICE, "no", 'require "ereject";\nereject "No mail for Alice over LMTP.";\n')
    path = str(env.data_dir / "lmtp.sock")
    with smtplib.LMTP(path, timeout=10) as client:
        client.ehlo("client.test")
        code, _ = client.mail(BOB)
        assert code == 250
        assert client.rcpt(ALICE)[0] == 250
        assert client.rcpt(BOB)[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(b"Subject: hi\r\n\r\nHello.\r\n.\r\n")
        first = client.getreply()
        second = client.getreply()
    assert first[0] == 550
    assert first[1].startswith(b"5.7.1 No mail for Alice over LMTP.")
    assert second[0] == 250
    assert mailbox_all(env, "alice") == []


ZONE = """
good.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.good.test. 60 IN TXT "v=DMARC1; p=none"
"""


async def test_redirect_leaves_with_srs_and_arc(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    write_script(env, ALICE, "fwd", 'redirect "friend@outside.test";\n')
    sink = Sink()
    with ZoneServer(ZONE, origin=".") as zone:
        port = free_port("127.0.0.1")
        controller = SinkController(
            sink, hostname="127.0.0.1", port=port, server_hostname="sink.test"
        )
        controller.start()
        try:
            set_key(env.config_path, "server", "processes", "1")
            set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
            set_key(env.config_path, "dns", "timeout_seconds", "2.0")
            set_key(env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{port}"')
            set_key(env.config_path, "mailauth", "check_incoming", "true")
            async with serving_in_process(env.config_path) as server:
                await asyncio.to_thread(send, env, "someone@good.test", ALICE, "forward me")
                assert await asyncio.to_thread(sink.wait_for_messages, 1)
                got = sink.messages[0]
                dnsfunc = host_dnsfunc(server)
        finally:
            controller.stop()
    assert got.rcpt_tos == ["friend@outside.test"]
    local, _, domain = got.mail_from.rpartition("@")
    assert domain == HOSTNAME
    assert local.startswith("SRS0=")
    assert local.endswith("=good.test=someone")
    assert got.content.startswith(b"ARC-Seal: i=1;")
    # The final recipient can trust what we found (RFC 8617): the chain verifies with our
    # published key, and its ARC-Authentication-Results say SPF and DMARC passed here,
    # which the SRS sender and the From domain can no longer show at the next hop.
    cv, _results, reason = dkim.arc_verify(got.content, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    aar = email.message_from_bytes(got.content)["ARC-Authentication-Results"]
    assert "spf=pass" in aar, aar
    assert "dmarc=pass" in aar, aar
    assert f"Delivered-To: {ALICE}".encode() in got.content
    # Redirected, not kept (the redirect is queued before the delivery ends): no copy here.
    assert mailbox_all(env, "alice") == []


def test_before_script_then_personal_while_keep_in_force(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = server
    store = ScriptStore.from_settings(load_settings(env.config_path))
    store.put_global(
        DOMAIN,
        "before",
        'require ["fileinto", "mailbox"];\n'
        'if header :contains "subject" "stop" { fileinto :create "Stopped"; } else { keep; }\n',
    )
    write_script(env, ALICE, "mine", 'require ["fileinto", "mailbox"];\nfileinto :create "Mine";\n')
    send(env, BOB, ALICE, "stop here")  # the before script filed it: no keep, no more scripts
    send(env, BOB, ALICE, "go on")  # kept by the before script, filed by the personal one too
    assert len(wait_files(env, "alice", 1)) == 1
    mine = wait_maildir(env.data_dir / "mail" / DOMAIN / "alice" / ".Mine", 1, 15)
    stopped = wait_maildir(env.data_dir / "mail" / DOMAIN / "alice" / ".Stopped", 1, 15)
    assert b"Subject: go on" in mine[0].read_bytes()
    assert b"Subject: stop here" in stopped[0].read_bytes()
    assert len(mailbox_all(env, "alice")) == 3


async def test_subaddress_context_has_the_directory_recipient_delimiter(
    pochta_env: PochtaEnv,
) -> None:
    """RFC 5233: the scripts see ``directory.recipient_delimiter`` (here "-") as the
    subaddress separator. The server runs in this process; the real interpreter runs, and
    the context of each run is noted on its way in."""
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "directory", "recipient_delimiter", '"-"')
    write_script(env, ALICE, "keep", "keep;\n")
    seen: list[MessageContext] = []
    async with serving_in_process(env.config_path) as running:
        assert running.mail is not None
        sieve = running.mail.mailbox.sieve
        assert sieve is not None
        real_run = sieve._run

        def noting_run(script: object, context: MessageContext, **kw: object) -> object:
            seen.append(context)
            return real_run(script, context, **kw)

        sieve._run = noting_run
        await asyncio.to_thread(send, env, BOB, f"alice-lists@{DOMAIN}", "a list message")
        await asyncio.to_thread(wait_files, env, "alice", 1)
    assert [c.recipient_delimiter for c in seen] == ["-"]


def test_remote_host_is_the_verified_name_not_the_helo(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    """RFC 5183 §4.7: remote-host is the client's host name "if available": the name pochta
    verified at connect (logged as client_name, "unknown" when none), never the HELO name
    the client chose."""
    env, proc = server
    write_script(
        env,
        ALICE,
        "env",
        'require ["environment", "variables", "editheader"];\n'
        'if environment :matches "remote-host" "*" { addheader "X-Remote-Host" "[${1}]"; }\n',
    )
    content = f"From: <{BOB}>\r\nTo: <{ALICE}>\r\nSubject: where from\r\n\r\nHi.\r\n"
    with smtplib.SMTP(
        "127.0.0.1", env.ports["smtp"], local_hostname="helo.chosen.test", timeout=10
    ) as client:
        client.sendmail(BOB, [ALICE], content.encode())
    [path] = wait_files(env, "alice", 1)
    named = str(proc.wait_for("connect").get("client_name", "unknown"))
    expected = "" if named == "unknown" else named
    assert f"X-Remote-Host: [{expected}]".encode() in path.read_bytes()
