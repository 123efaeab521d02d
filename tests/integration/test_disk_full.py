"""A real full disk (issue 12): `pochta serve` with its data dir on a small tmpfs, filled
for real. Reading (IMAP) goes on, new mail gets 452 4.3.1 at MAIL FROM (Postfix
queue_minfree), a write that runs out of room is one log line, nothing accepted is lost, and
mail flows again once there is room."""

from __future__ import annotations

import imaplib
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import make_message
from tests.harness import (
    DOMAIN,
    PochtaEnv,
    ServeProcess,
    maildir_files,
    make_pochta_env,
    serve,
    set_key,
    wait_maildir,
)
from tests.unit.test_maildir_store import SmallDisk, small_disk

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"
WAIT_SECONDS = 20.0


@pytest.fixture
def full_disk_server(tmp_path: Path) -> Iterator[tuple[PochtaEnv, ServeProcess, SmallDisk]]:
    with small_disk(tmp_path / "fs", "48m") as disk:
        env = make_pochta_env(disk.path / "data")
        # Room for the 1.5 x max_message_bytes rule on a small disk.
        set_key(env.config_path, "smtp", "max_message_bytes", "1000000")
        env.add_user(ALICE, PASSWORD)
        with serve(env.config_path) as server:
            yield env, server, disk


def inbox(env: PochtaEnv) -> Path:
    return env.data_dir / "mail" / DOMAIN / "alice"


def test_full_disk_reads_go_on_and_new_mail_waits(
    full_disk_server: tuple[PochtaEnv, ServeProcess, SmallDisk],
) -> None:
    env, server, disk = full_disk_server
    for i in range(3):
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
            s.send_message(make_message(ALICE, f"before {i}"))
    wait_maildir(inbox(env), 3, WAIT_SECONDS, lambda: "\n".join(server.lines))

    # A client passed MAIL FROM with room to spare; then the disk fills before its DATA.
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        s.ehlo()
        assert s.mail("carol@example.org")[0] == 250
        assert s.rcpt(ALICE)[0] == 250
        disk.fill()
        big = make_message(ALICE, "too late", "y" * 70 + "\n").as_bytes().replace(b"\n", b"\r\n")
        code, reply = s.data(big + (b"y" * 70 + b"\r\n") * 6000)
    assert (code, reply[:5]) == (452, b"4.3.1"), reply
    failed = server.wait_for("queue_write_failed")
    assert failed["error"] == "no space left on device"
    assert failed["path"].startswith(str(env.data_dir / "queue" / ""))  # tmp/ or pool/
    assert len(server.events("queue_write_failed")) == 1

    # Reading goes on: LOGIN, SELECT (which would write the \Recent claim), FETCH.
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    assert c.login(ALICE, PASSWORD)[0] == "OK"
    typ, data = c.select("INBOX")
    assert (typ, data) == ("OK", [b"3"]), data
    typ, fetched = c.fetch("1:3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    subjects = sorted(part[1].strip() for part in fetched if isinstance(part, tuple))
    assert subjects == [b"Subject: before 0", b"Subject: before 1", b"Subject: before 2"]
    c.logout()

    # New mail is refused at MAIL FROM, before its data is sent (the free space is looked
    # up at most once a second, so the first MAIL may still see the old figure).
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
            s.ehlo()
            code, reply = s.mail("carol@example.org", ["SIZE=1000"])
        if code != 250 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (code, reply) == (452, b"4.3.1 Insufficient system storage")
    refused = server.wait_for("rejected")  # (the log is read in a thread: wait for it)
    assert (refused["stage"], refused["reason"]) == ("mail", "insufficient_storage")
    assert len(maildir_files(inbox(env))) == 3  # nothing lost, nothing half-written
    assert list((inbox(env) / "tmp").iterdir()) == []
    assert list((env.data_dir / "queue" / "tmp").iterdir()) == []

    # Room again: mail flows.
    disk.free()
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
            try:
                s.send_message(make_message(ALICE, "after"))
                break
            except smtplib.SMTPSenderRefused:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.2)
    wait_maildir(inbox(env), 4, WAIT_SECONDS, lambda: "\n".join(server.lines))
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    c.login(ALICE, PASSWORD)
    assert c.select("INBOX") == ("OK", [b"4"])
    c.logout()
    log = "\n".join(server.lines)
    assert "Traceback" not in log, log
