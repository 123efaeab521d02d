"""Issue 16 end to end: a user's script uploaded with a real ManageSieve client, then real
SMTP mail delivered by it, read back with real clients.

sievelib's ``managesieve.Client`` in its default configuration (STARTTLS, verifying the
server's certificate against the test CA, as tests/integration/test_managesieve.py) uploads
and activates the script; smtplib sends to the MX port of a real ``pochta serve``
(a subprocess, with the real interpreter); imaplib reads the folders and flags, and the
Maildirs show the DSN and the vacation reply that came back to the local senders.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib
import time
from collections.abc import Iterator

import pytest
from sievelib.managesieve import Client

from tests.harness import (
    DOMAIN,
    PochtaEnv,
    ServeProcess,
    dsn_status_text,
    serve,
    set_key,
    wait_files,
    wait_maildir,
)
from tests.integration.test_managesieve import sievelib_trusts

PASSWORD = "sieve-e2e-pw"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
DAVE = f"dave@{DOMAIN}"

SCRIPT = """require ["fileinto", "imap4flags", "reject", "vacation", "mailbox"];
if header :contains "subject" "work" {
    fileinto :create :flags ["\\\\Flagged", "$Work"] "Work";
} elsif header :contains "subject" "refuse" {
    reject "Alice does not take this mail.";
} elsif header :contains "subject" "away" {
    vacation :days 1 :subject "Alice is away" "I am away until Monday.";
}
"""

# Thunderbird's and Roundcube's Sieve editors upload what the user typed: here a typo on
# line 3 ("fileinot").
TYPO = 'require ["fileinto"];\nif header :contains "subject" "x" {\n    fileinot "X";\n}\n'


@pytest.fixture
def server(
    pochta_env: PochtaEnv, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    env = pochta_env
    for user in (ALICE, BOB, CAROL, DAVE):
        env.add_user(user, PASSWORD)
    set_key(env.config_path, "server", "processes", "1")
    # The test connects from 127.0.0.1: login only after STARTTLS there too.
    set_key(env.config_path, "managesieve", "allow_plaintext_on_loopback", "false")

    sievelib_trusts(env, monkeypatch)
    with serve(env.config_path) as proc:
        yield env, proc


def managesieve(env: PochtaEnv) -> Client:
    c = Client("127.0.0.1", env.ports["managesieve"])
    assert c.connect(ALICE, PASSWORD, starttls=True), c.errmsg
    return c


def send(env: PochtaEnv, sender: str, subject: str, extra: str = "") -> None:
    content = (
        f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@client.test>\r\n{extra}\r\nHello Alice.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as client:
        client.sendmail(sender, [ALICE], content.encode())


def imap_messages(env: PochtaEnv, folder: str) -> list[tuple[str, str]]:
    """(subject, FLAGS) of each message of Alice's ``folder``, over IMAP."""
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    try:
        c.login(ALICE, PASSWORD)
        typ, data = c.select(folder, readonly=True)
        assert typ == "OK", data
        count = int(data[0] or b"0")
        out: list[tuple[str, str]] = []
        for n in range(1, count + 1):
            typ, fetched = c.fetch(str(n), "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            assert typ == "OK"
            head, header = fetched[0]  # type: ignore[misc]
            subject = header.decode().strip().removeprefix("Subject: ")
            out.append((subject, head.decode()))
        return out
    finally:
        c.logout()


def subjects(env: PochtaEnv, folder: str) -> list[str]:
    return sorted(s for s, _ in imap_messages(env, folder))


def test_script_from_managesieve_files_rejects_answers_and_keeps(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, proc = server
    c = managesieve(env)
    assert "vacation" in c.get_sieve_capabilities()
    assert c.putscript("main", SCRIPT), c.errmsg
    assert c.setactive("main"), c.errmsg
    assert c.listscripts() == ("main", [])
    c.logout()

    send(env, BOB, "work: the report")  # fileinto Work with two flags
    send(env, BOB, "refuse this")  # reject: Bob gets a DSN
    send(env, CAROL, "away? first")  # vacation: Carol gets one reply
    send(env, CAROL, "away? second")  # the same sender within :days 1: no reply
    send(env, DAVE, "away? bulk", extra="Precedence: bulk\r\n")  # RFC 5230 §4.6: none
    send(env, DAVE, "nothing matches")  # INBOX

    work = wait_maildir(env.data_dir / "mail" / DOMAIN / "alice" / ".Work", 1, 15)
    assert len(work) == 1
    [(subject, flags)] = imap_messages(env, "Work")
    assert subject == "work: the report"
    assert "\\Flagged" in flags
    assert "$Work" in flags

    # The three "away" messages and the unmatched one are kept in INBOX; the refused one
    # is not.
    assert len(wait_files(env, "alice", 4)) == 4
    assert subjects(env, "INBOX") == [
        "away? bulk",
        "away? first",
        "away? second",
        "nothing matches",
    ]

    # The reject: Bob's DSN says 5.7.1 with the script's reason.
    [dsn] = wait_files(env, "bob", 1)
    assert "Status: 5.7.1" in dsn_status_text(dsn)
    report = email.message_from_bytes(dsn.read_bytes(), policy=email.policy.default)
    text = next(p for p in report.walk() if p.get_content_type() == "text/plain")
    assert "Alice does not take this mail." in text.get_content()

    # One vacation reply, to Carol, from the null sender; none to the bulk message.
    [reply] = wait_files(env, "carol", 1)
    raw = reply.read_bytes()
    assert b"Subject: Alice is away" in raw
    assert b"Auto-Submitted: auto-replied" in raw
    assert b"Return-Path: <>" in raw
    # Everything queued before the last 250 is delivered by now: a marker to each sender
    # goes behind the replies in the same queue.
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as client:
        client.sendmail(BOB, [CAROL, DAVE], b"Subject: marker\r\n\r\nmarker\r\n")
    assert len(wait_files(env, "carol", 2)) == 2
    assert len(wait_files(env, "dave", 1)) == 1
    assert b"Subject: marker" in wait_files(env, "dave", 1)[0].read_bytes()
    assert len(proc.events("sieve_vacation")) == 1


def test_editor_flow_syntax_error_checkscript_and_deactivate(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = server
    c = managesieve(env)
    # PUTSCRIPT of a script with a syntax error: NO, naming the line.
    assert not c.putscript("typo", TYPO)
    assert c.errmsg.startswith(b"typo: line 3, column 5:"), c.errmsg
    assert c.listscripts() == (None, [])  # nothing was stored
    # CHECKSCRIPT (RFC 5804 §2.12): the same verdict without storing.
    assert not c.checkscript(TYPO)
    assert b"line 3" in c.errmsg, c.errmsg
    assert c.checkscript(SCRIPT), c.errmsg
    assert c.putscript("main", SCRIPT), c.errmsg
    assert c.setactive("main"), c.errmsg
    c.logout()

    send(env, BOB, "work while active")
    wait_maildir(env.data_dir / "mail" / DOMAIN / "alice" / ".Work", 1, 15)

    # SETACTIVE "" (RFC 5804 §2.8): no script is active; mail goes to INBOX again.
    c = managesieve(env)
    assert c.setactive(""), c.errmsg
    assert c.listscripts() == (None, ["main"])
    c.logout()
    send(env, BOB, "work after deactivation")
    assert len(wait_files(env, "alice", 1)) == 1
    assert subjects(env, "INBOX") == ["work after deactivation"]
    assert subjects(env, "Work") == ["work while active"]
