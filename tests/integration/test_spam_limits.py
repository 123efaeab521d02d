"""Greylisting and rate limits with a real server and real clients (smtplib, `pochta queue`).

Greylisting runs in mode "always" with ``delay_seconds = 1`` (the setting's minimum, meant
for tests): the test waits a second and a half before retrying, it never touches the
server's clock and asserts no time.
"""

from __future__ import annotations

import json
import smtplib
import time

import pytest

from tests.factories import make_message
from tests.harness import (
    DOMAIN,
    PochtaEnv,
    client_tls,
    mailbox_files,
    serve,
    set_key,
    wait_files,
    wait_until,
)

PASSWORD = "correct horse battery staple"


def _message(to: str, subject: str, sender: str = "carol@example.org") -> bytes:
    return make_message(to, subject, "Hello there.\n", sender=sender).as_bytes()


def test_greylisting_always_first_rcpt_451_retry_passes(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    set_key(env.config_path, "greylist", "enabled", "true")  # make_pochta_env: off
    set_key(env.config_path, "greylist", "mode", '"always"')
    set_key(env.config_path, "greylist", "delay_seconds", "1")
    sender, to = "alice@sender.example", f"bob@{DOMAIN}"
    with serve(env.config_path) as server:
        with (
            smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c,
            pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
        ):
            c.sendmail(sender, [to], _message(to, "first try"))
        code, text = refused.value.recipients[to]
        assert code == 451
        assert text.startswith(b"4.7.1 Greylisted")
        assert server.wait_for("greylisted")["outcome"] == "new"
        time.sleep(1.5)  # the client's queue waits past delay_seconds before it retries
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
            assert c.sendmail(sender, [to], _message(to, "retry")) == {}
        files = wait_files(env, "bob", 1)
        assert len(files) == 1
        assert b"Subject: retry" in files[0].read_bytes()
        # An authenticated session is never greylisted, even from a new sender.
        with smtplib.SMTP("127.0.0.1", env.ports["submission"], timeout=10) as c:
            c.starttls(context=client_tls())
            c.login(to, PASSWORD)
            assert c.sendmail(to, [to], _message(to, "from bob himself", to)) == {}
        assert len(wait_files(env, "bob", 2)) == 2


GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def test_greylisting_by_score_defers_suspicious_mail_until_its_retry(
    pochta_env: PochtaEnv,
) -> None:
    """Mode "score" (the default): only a message whose score reaches [spam]
    greylist_score is greylisted, at the end of DATA; ham from a new triplet is not."""
    env = pochta_env
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    set_key(env.config_path, "greylist", "enabled", "true")  # make_pochta_env: off
    set_key(env.config_path, "greylist", "delay_seconds", "1")
    # GTUBE scored 4.5 (+ MISSING_DATE 1): above greylist_score (4), below junk_score (6).
    set_key(env.config_path, "spam", "scores", "{ GTUBE = 4.5 }")
    to = f"bob@{DOMAIN}"
    suspicious = make_message(to, "suspicious", f"{GTUBE}\n", sender="eve@sender.example")
    with serve(env.config_path) as server:
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
            assert c.sendmail("alice@sender.example", [to], _message(to, "ham")) == {}
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail("eve@sender.example", [to], suspicious.as_bytes())
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.7.1 Greylisted")
        assert server.wait_for("greylisted")["sender"] == "eve@sender.example"
        time.sleep(1.5)  # the client's queue waits past delay_seconds before it retries
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
            assert c.sendmail("eve@sender.example", [to], suspicious.as_bytes()) == {}
        files = wait_files(env, "bob", 2)
        subjects = sorted(b"Subject: suspicious" in f.read_bytes() for f in files)
        assert subjects == [False, True]  # both in INBOX: the retry passed


def _queue_entries(env: PochtaEnv) -> list[dict[str, object]]:
    proc = env.run("queue", "list", "--json", check=True)
    entries: list[dict[str, object]] = json.loads(proc.stdout)
    return entries


def test_user_over_limit_gets_250_and_mail_is_held_until_released(
    pochta_env: PochtaEnv,
) -> None:
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    env.add_user(f"carol@{DOMAIN}", PASSWORD)
    set_key(env.config_path, "rate_limits", "messages_per_user_per_hour", "2")
    alice, bob, carol = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol"))
    with serve(env.config_path) as server:
        with smtplib.SMTP("127.0.0.1", env.ports["submission"], timeout=10) as c:
            c.starttls(context=client_tls())
            c.login(alice, PASSWORD)
            # Two recipients: the whole hour's allowance, delivered.
            assert c.sendmail(alice, [bob, carol], _message(bob, "within the limit", alice)) == {}
            # Over it: still 250, the client sees nothing wrong, and nothing is lost.
            code, _ = c.docmd("MAIL", f"FROM:<{alice}>")
            assert code == 250
            assert c.rcpt(bob)[0] == 250
            code, reply = c.data(_message(bob, "over the limit", alice))
        assert code == 250, reply
        held_id = reply.decode().rsplit(" ", 1)[-1]
        assert len(wait_files(env, "bob", 1)) == 1
        assert len(wait_files(env, "carol", 1)) == 1
        hold = server.wait_for("rate_limit_hold")
        assert hold["user"] == alice
        assert (hold["count"], hold["limit"]) == ("3", "2")
        assert hold["queue_id"] == held_id
        alert = server.wait_for("rate_limit_exceeded")
        assert alert["level"] == "error"
        entries = _queue_entries(env)
        assert [(e["queue_id"], e["state"]) for e in entries] == [(held_id, "hold")]
        listing = env.run("queue", "list", check=True).stdout
        assert f"{held_id}!" in listing  # postqueue -p's mark for a held message
        assert len(mailbox_files(env, "bob")) == 1  # still held: not delivered

        env.run("queue", "release", held_id, check=True)
        files = wait_files(env, "bob", 2)
        assert len(files) == 2
        assert any(b"Subject: over the limit" in f.read_bytes() for f in files)
        assert wait_until(lambda: _queue_entries(env) == [])


def test_client_and_recipient_limits_on_the_mx(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    env.add_user(f"carol@{DOMAIN}", PASSWORD)
    set_key(env.config_path, "rate_limits", "exempt_networks", "[]")  # count loopback too
    set_key(env.config_path, "rate_limits", "messages_per_ip_per_hour", "3")
    set_key(env.config_path, "rate_limits", "messages_per_recipient_per_hour", "1")
    bob, carol = f"bob@{DOMAIN}", f"carol@{DOMAIN}"
    with serve(env.config_path):
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
            assert c.sendmail("a@sender.example", [bob], _message(bob, "one")) == {}
            # bob has had his one message this hour: 451 4.7.1 at RCPT, carol still gets hers.
            refused = c.sendmail("a@sender.example", [bob, carol], _message(carol, "two"))
            assert refused[bob][0] == 451
            assert refused[bob][1].startswith(b"4.7.1 Rate limit exceeded")
            # The client's third message this hour; the fourth is refused at MAIL FROM.
            c.docmd("RSET")
            assert c.docmd("MAIL", "FROM:<a@sender.example>")[0] == 250
            c.docmd("RSET")
            code, text = c.docmd("MAIL", "FROM:<a@sender.example>")
            assert code == 451
            assert text.startswith(b"4.7.1 Rate limit exceeded")
        assert len(wait_files(env, "bob", 1)) == 1
        assert len(wait_files(env, "carol", 1)) == 1
