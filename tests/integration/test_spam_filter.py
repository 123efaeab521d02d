"""The spam filter through a real server (issue 15, points 1 and 2): GTUBE over smtplib is
quarantined by default (250, not in the INBOX, in `pochta quarantine list`, delivered by
`release`), refused with 550 5.7.1 when reject_action is "reject", and a score between
junk_score and reject_score lands in Junk, read over IMAP. Forged X-Spam-* fields are
replaced by ours. `pochta spam score` prints the verdict of a file as JSON.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
from email.utils import formatdate
from pathlib import Path

import pytest

from tests.harness import (
    DOMAIN,
    PochtaEnv,
    ServeProcess,
    mailbox_files,
    serve,
    set_key,
    wait_maildir,
)

BOB = f"bob@{DOMAIN}"
PASSWORD = "secret-pw-1"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
SENDER = "sender@client.test"


def message(subject: str, body: str, extra: str = "") -> bytes:
    return (
        f"{extra}From: <{SENDER}>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n"
        f"Date: {formatdate()}\r\n\r\n{body}\r\n"
    ).encode()


def send(env: PochtaEnv, content: bytes) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=30) as client:
        return client.sendmail(SENDER, [BOB], content)


def prepared(env: PochtaEnv, **spam: str) -> PochtaEnv:
    env.add_user(BOB, PASSWORD)
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "auth", "allow_plaintext_on_loopback", "true")
    for key, value in spam.items():
        set_key(env.config_path, "spam", key, value)
    return env


def log_of(server: ServeProcess) -> str:
    return "\n".join(server.lines)


def header_values(content: bytes, name: str) -> list[str]:
    """The values of ``name`` in the header, unfolded (the store writes LF line ends)."""
    text = content.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    unfolded = text.replace("\n ", " ").replace("\n\t", " ")
    prefix = name.lower() + ":"
    return [
        line.split(":", 1)[1].strip()
        for line in unfolded.split("\n")
        if line.lower().startswith(prefix)
    ]


def test_gtube_is_quarantined_listed_and_released_to_the_inbox(pochta_env: PochtaEnv) -> None:
    env = prepared(pochta_env)
    inbox = env.data_dir / "mail" / DOMAIN / "bob"
    with serve(env.config_path) as server:
        # Ham first, with forged X-Spam fields: delivered with ours only.
        forged = "X-Spam-Status: No, score=-50.00 required=6.00\r\nX-Spam-Flag: NO\r\n"
        assert send(env, message("hello", "Just a note.", extra=forged)) == {}
        [ham] = wait_maildir(inbox, 1, 15, lambda: log_of(server))
        content = ham.read_bytes()
        assert header_values(content, "X-Spam-Status") == ["No, score=0.00 required=6.00"]
        assert header_values(content, "X-Spam-Flag") == []
        assert header_values(content, "X-Spam-Score") == ["0.00"]

        assert send(env, message("buy now", f"Cheap! {GTUBE}")) == {}  # 250: accepted
        quarantined = server.wait_for("quarantined")
        queue_id = quarantined["queue_id"]
        assert quarantined["score"] == "1000.00"
        assert quarantined["symbols"] == "GTUBE(1000.00)"
        assert len(mailbox_files(env, "bob")) == 1  # not delivered

        listed = env.run("quarantine", "list", check=True).stdout
        assert queue_id in listed
        assert "score=1000.00" in listed
        assert f"{SENDER} -> {BOB}" in listed
        shown = env.run("quarantine", "show", queue_id, check=True).stdout
        assert "GTUBE(1000.00)" in shown
        assert "X-Spam-Status: Yes, score=1000.00 required=6.00" in shown

        released = env.run("quarantine", "release", queue_id, check=True).stdout
        assert released.strip() == f"{queue_id}: released to {BOB}"
        files = wait_maildir(inbox, 2, 15, lambda: log_of(server))
        spam = next(f.read_bytes() for f in files if f != ham)
        assert GTUBE.encode() in spam
        assert header_values(spam, "X-Spam-Score") == ["1000.00"]  # scanned once, not again
        assert "Quarantine is empty" in env.run("quarantine", "list", check=True).stdout

    gone = env.run("quarantine", "release", queue_id)
    assert gone.returncode == 1
    assert gone.stderr.strip() == (
        f"pochta: error: no quarantined message {queue_id} in {env.data_dir / 'quarantine'} "
        "(see: pochta quarantine list)"
    )
    bad = env.run("quarantine", "delete", "nonsense")
    assert bad.returncode == 1
    assert "'nonsense' is not a quarantine id" in bad.stderr


def test_reject_action_reject_answers_550_5_7_1(pochta_env: PochtaEnv) -> None:
    env = prepared(pochta_env, reject_action='"reject"')
    with serve(env.config_path) as server:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(env, message("buy now", f"Cheap! {GTUBE}"))
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.decode() == "5.7.1 Spam message rejected"
        line = server.wait_for("spam_rejected")
        assert line["queue_id"]
        assert (line["score"], line["symbols"]) == ("1000.00", "GTUBE(1000.00)")
    assert mailbox_files(env, "bob") == []
    assert not (env.data_dir / "quarantine").exists() or not any(
        (env.data_dir / "quarantine").iterdir()
    )


def test_a_score_between_junk_and_reject_lands_in_junk(pochta_env: PochtaEnv) -> None:
    env = prepared(pochta_env, scores="{ GTUBE = 7.0 }")
    with serve(env.config_path) as server:
        assert send(env, message("junk it", f"Cheap! {GTUBE}")) == {}
        junk = env.data_dir / "mail" / DOMAIN / "bob" / ".Junk"
        wait_maildir(junk, 1, 15, lambda: log_of(server))
        client = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
        try:
            client.login(BOB, PASSWORD)
            assert client.select("INBOX")[1] == [b"0"]
            typ, count = client.select("Junk")
            assert (typ, count) == ("OK", [b"1"])
            typ, data = client.fetch("1", "(BODY.PEEK[HEADER])")
            assert typ == "OK"
            item = data[0]
            assert isinstance(item, tuple)
            header = item[1]
        finally:
            client.logout()
    assert header_values(header, "X-Spam-Status") == ["Yes, score=7.00 required=6.00"]
    assert header_values(header, "X-Spam-Symbols") == ["GTUBE(7.00)"]
    assert header_values(header, "Subject") == ["junk it"]


def test_spam_score_prints_the_verdict_as_json(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    spam = tmp_path / "spam.eml"
    spam.write_bytes(message("buy now", f"Cheap! {GTUBE}"))
    ham = tmp_path / "ham.eml"
    ham.write_bytes(message("hello", "Just a note."))
    proc = pochta_env.run("spam", "score", str(spam), check=True)
    verdict = json.loads(proc.stdout)
    assert verdict["score"] == 1000.0
    assert verdict["action"] == "quarantine"
    assert verdict["is_spam"] is True
    assert verdict["symbols"]["GTUBE"]["score"] == 1000.0
    assert verdict["symbols"]["GTUBE"]["description"] == "GTUBE test string in the body"
    assert verdict["symbols"]["GTUBE"]["options"] == []

    many = pochta_env.run("spam", "score", str(ham), str(spam), "-", input="Subject: x\n\nhi\n")
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    assert [(v["file"], v["action"], v["is_spam"]) for v in lines] == [
        (str(ham), "no action", False),
        (str(spam), "quarantine", True),
        ("-", "no action", False),
    ]
    missing = pochta_env.run("spam", "score", "--json-lines", str(tmp_path / "none.eml"))
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"].startswith("cannot read")
