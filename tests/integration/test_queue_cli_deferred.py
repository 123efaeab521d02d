"""`pochta queue list` / `show` for deferred mail: the postqueue -p layout, and for each
recipient its last reply, attempts, next try and the remote MTA that answered."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.spool import Spool
from tests.factories import make_envelope
from tests.harness import PochtaEnv

ARRIVAL = 1_700_000_000.0  # Tue Nov 14 22:13:20 2023 UTC
REFUSED = "451 4.4.1 Connection refused"
GREYLISTED = "450 4.7.1 Greylisted, try again in 5 minutes"
CONTENT = b"Subject: queued\r\n\r\n" + b"x" * 2000 + b"\r\n"


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the CLI prints local times; make them predictable


def utc_time(timestamp: float, fmt: str) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime(fmt)


def queue_message(env: PochtaEnv, envelope: Envelope, state: str = "deferred") -> str:
    async def run() -> str:
        spool = Spool(env.data_dir / "queue")
        try:
            recipients = envelope.recipients
            queue_id = await spool.enqueue(envelope, CONTENT)
            envelope.recipients = recipients
            envelope.arrival = ARRIVAL
            await spool.update_envelope(queue_id, envelope)
            if state != "incoming":
                await spool.move(queue_id, state)  # type: ignore[arg-type]
            return queue_id
        finally:
            spool.close()

    return asyncio.run(run())


def deferred(address: str, reply: str, remote: str, next_try: float, attempts: int) -> Recipient:
    return Recipient(
        address,
        status="deferred",
        reply=reply,
        remote_mta=remote,
        attempts=attempts,
        next_attempt=next_try,
        destination=f"smtp:{address.rpartition('@')[2]}",
    )


def test_list_looks_like_postqueue(pochta_env: PochtaEnv) -> None:
    next_try = time.time() + 600
    envelope = make_envelope(
        deferred("bob@example.org", REFUSED, "mx.example.org", next_try, 2),
        deferred("carol@example.org", REFUSED, "mx.example.org", next_try, 2),
        deferred("dave@example.net", GREYLISTED, "mx.example.net", next_try, 1),
        Recipient("erin@example.com"),  # not tried yet
        Recipient("done@example.org", status="delivered", reply="250 2.0.0 Ok", attempts=1),
        sender="alice@example.test",
        arrival=ARRIVAL,
    )
    queue_id = queue_message(pochta_env, envelope)
    out = pochta_env.run("queue", "list", check=True).stdout
    when = utc_time(next_try, "%Y-%m-%d %H:%M:%S")
    indent = " " * 47

    def reason(text: str) -> str:
        return " " * max(0, 76 - len(text)) + f"({text})"

    size = len(CONTENT)
    assert out.splitlines() == [
        "-Queue ID-        --Size-- ---Arrival Time---- -Sender/Recipient-------",
        f"{queue_id}   {size:>8} Tue Nov 14 22:13:20 alice@example.test",
        # one reason line for two recipients that share it (showq_compat.c)
        reason(f"host mx.example.org said: {REFUSED}"),
        f"{indent}bob@example.org  [deferred, 2 attempts, next try {when}]",
        f"{indent}carol@example.org  [deferred, 2 attempts, next try {when}]",
        reason(f"host mx.example.net said: {GREYLISTED}"),
        f"{indent}dave@example.net  [deferred, 1 attempt, next try {when}]",
        reason("reason unavailable"),
        f"{indent}erin@example.com",
        "",
        "-- 2 Kbytes in 1 Request.",
    ]
    assert "done@example.org" not in out  # delivered: no longer in postqueue's list


def test_list_marks_and_our_own_replies(pochta_env: PochtaEnv) -> None:
    """A reply we made up ourselves has no remote MTA; held mail is marked with !."""
    envelope = make_envelope(
        Recipient("x@example.org", status="deferred", reply="451 4.3.0 temporary failure"),
        sender="",
        arrival=ARRIVAL,
    )
    queue_id = queue_message(pochta_env, envelope, state="hold")
    lines = pochta_env.run("queue", "list", check=True).stdout.splitlines()
    assert lines[1].startswith(f"{queue_id}!  ")
    assert lines[1].endswith(" <>")  # the null sender
    reason = "451 4.3.0 temporary failure"
    assert lines[2] == " " * (76 - len(reason)) + f"({reason})"  # ends in column 78
    assert len(lines[2]) == 78
    assert lines[3].endswith("x@example.org  [deferred]")


def test_show_gives_each_recipients_state(pochta_env: PochtaEnv) -> None:
    next_try = time.time() + 3600 + 120
    delivered_at = ARRIVAL + 5
    envelope = make_envelope(
        deferred("bob@example.org", REFUSED, "mx.example.org", next_try, 3),
        Recipient(
            "carol@example.test",
            original="team@example.test",
            status="delivered",
            reply="250 2.0.0 delivered to carol@example.test INBOX uid 1",
            attempts=1,
            delivered_at=delivered_at,
            destination="mailbox:carol@example.test",
        ),
        Recipient("new@example.org"),
        sender="alice@example.test",
        arrival=ARRIVAL,
    )
    queue_id = queue_message(pochta_env, envelope)
    out = pochta_env.run("queue", "show", queue_id, check=True).stdout
    when = utc_time(next_try, "%Y-%m-%d %H:%M:%S +0000")
    head, _, rest = out.partition("envelope:\n")
    assert head.splitlines() == [
        "state: deferred",
        "arrival: 2023-11-14 22:13:20 +0000",
        "sender: alice@example.test",
        f"size: {len(CONTENT)} bytes",
        "recipients:",
        "  bob@example.org",
        f"    status: deferred, 3 attempts, next try {when} (in 1h 01m)",
        f"    last reply: {REFUSED}",
        "    remote MTA: mx.example.org",
        "    route: smtp:example.org",
        "  carol@example.test",
        "    original: team@example.test",
        "    status: delivered, 1 attempt, at 2023-11-14 22:13:25 +0000",
        "    last reply: 250 2.0.0 delivered to carol@example.test INBOX uid 1",
        "    route: mailbox:carol@example.test",
        "  new@example.org",
        "    status: pending, not tried yet",
        "verdict: accept, score 0",  # what cleanup's filters found: nothing here
    ]
    document, _, headers = rest.partition("\n\n")
    recorded = json.loads(document)
    assert recorded["recipients"][0]["remote_mta"] == "mx.example.org"
    assert headers == "Subject: queued\n"  # (text mode reads CRLF as LF)


def test_json_list_keeps_remote_mta(pochta_env: PochtaEnv) -> None:
    envelope = make_envelope(
        deferred("bob@example.org", REFUSED, "mx.example.org", time.time() + 60, 1),
        sender="alice@example.test",
        arrival=ARRIVAL,
    )
    queue_message(pochta_env, envelope)
    proc = pochta_env.run("queue", "list", "--json", check=True)
    [entry] = json.loads(proc.stdout)
    [rcpt] = entry["envelope"]["recipients"]
    assert (rcpt["remote_mta"], rcpt["reply"], rcpt["attempts"]) == ("mx.example.org", REFUSED, 1)


def test_due_now_when_the_next_try_has_passed(pochta_env: PochtaEnv) -> None:
    envelope = make_envelope(
        deferred("bob@example.org", REFUSED, "", time.time() - 30, 4),
        sender="alice@example.test",
        arrival=ARRIVAL,
    )
    queue_id = queue_message(pochta_env, envelope)
    out = pochta_env.run("queue", "show", queue_id, check=True).stdout
    assert "(due now)" in out
    assert "remote MTA" not in out
