"""The on_final hook: DSNs queued in a real spool, the null sender, the rate limit, and one
pass through the real QueueManager."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage, Message
from typing import Any

import pytest
from structlog.testing import capture_logs

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.config.settings import QueueSettings
from pochta.deliver.notices import Notices, TokenBucket
from pochta.queue.envelope import Envelope, Recipient, new_queue_id
from pochta.queue.scheduler import Attempt, QueueManager
from pochta.queue.spool import Spool
from tests.factories import make_envelope

T0 = 1_750_000_000.0
HOST = "mail.example.org"
POSTMASTER = f"postmaster@{HOST}"
CONTENT = b"Message-ID: <m1@example.org>\r\nSubject: test\r\n\r\nbody\r\n"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Time passes only when someone waits."""
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class PassDoor:
    """The door's surface Notices uses: cleanup adds one header, submit queues as is (no
    resolver to expand with here); what went through is kept for the tests."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.cleaned: list[CleanupInput] = []

    def new_queue_id(self) -> str:
        return new_queue_id()

    async def clean(self, content: bytes, info: CleanupInput) -> CleanupResult:
        self.cleaned.append(info)
        return CleanupResult(b"X-Cleaned: yes\r\n" + content, info.sender, list(info.recipients))

    async def submit(self, envelope: Envelope, content: bytes) -> str:
        return await self.spool.enqueue(envelope, content)


def notices(spool: Spool, clock: FakeClock, per_minute: int = 120, **kwargs: Any) -> Notices:
    door = PassDoor(spool)
    return Notices(
        spool,
        lambda: door,  # type: ignore[arg-type, return-value]
        HOST,
        POSTMASTER,
        per_minute,
        clock,
        sleep=clock.sleep,
        **kwargs,
    )


async def queue_original(
    spool: Spool, sender: str = "alice@example.org", *rcpts: str, **params: Any
) -> Envelope:
    recipients = [Recipient(r) for r in (rcpts or ("bob@example.com",))]
    env = make_envelope(*recipients, sender=sender, arrival=T0, **params)
    await spool.enqueue(env, CONTENT)
    return env


def failed(env: Envelope) -> list[Recipient]:
    for r in env.recipients:
        r.status, r.reply, r.attempts = "bounced", "550 5.1.1 No such user", 1
    return env.recipients


async def queued_notices(spool: Spool, original: str = "") -> list[tuple[Envelope, bytes]]:
    out = []
    for queue_id in await spool.ids("incoming"):
        if queue_id == original:
            continue
        out.append((await spool.load(queue_id), await spool.read_content(queue_id)))
    return out


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def part(msg: Message, index: int) -> Message:
    payload = msg.get_payload(index)
    assert isinstance(payload, Message)
    return payload


async def test_a_bounce_is_queued_from_the_null_sender_to_the_sender(
    spool: Spool, clock: FakeClock
) -> None:
    env = await queue_original(spool)
    clock.now = T0 + 120
    with capture_logs() as logs:
        await notices(spool, clock)(env, failed(env), "bounce")
    [(dsn_env, content)] = await queued_notices(spool, env.queue_id)
    assert dsn_env.sender == ""  # RFC 3461 §6.2
    assert [(r.address, r.destination) for r in dsn_env.recipients] == [("alice@example.org", "")]
    assert dsn_env.protocol == "dsn"
    assert dsn_env.arrival == T0 + 120
    assert dsn_env.size == len(content)
    assert not dsn_env.smtputf8
    assert dsn_env.body == "7BIT"
    msg = parse(content)
    assert msg.get_content_type() == "multipart/report"
    assert msg["To"] == "alice@example.org"
    assert msg["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
    assert msg["Date"].datetime.timestamp() == T0 + 120
    assert CONTENT in content  # the whole original comes back in a bounce
    queued = [e for e in logs if e["event"] == "dsn_queued"]
    assert queued == [
        {
            "event": "dsn_queued",
            "log_level": "info",
            "logger": "deliver",
            "queue_id": env.queue_id,
            "dsn_queue_id": dsn_env.queue_id,
            "kind": "bounce",
            "to": "alice@example.org",
            "recipients": 1,
        }
    ]


async def test_delay_notice_says_until_when(spool: Spool, clock: FakeClock) -> None:
    env = await queue_original(spool)
    env.recipients[0].status = "deferred"
    env.recipients[0].reply = "451 4.4.1 timeout"
    env.recipients[0].attempts = 4
    hook = notices(spool, clock, maximal_lifetime_seconds=432000)
    await hook(env, env.recipients, "delay")
    [(_, content)] = await queued_notices(spool, env.queue_id)
    assert b"Will-Retry-Until: Fri, 20 Jun 2025 15:06:40 +0000" in content
    assert b"Subject: Delayed Mail (still being retried)" in content


async def test_no_delay_or_success_notice_for_the_null_sender(
    spool: Spool, clock: FakeClock
) -> None:
    env = await queue_original(spool, "")
    hook = notices(spool, clock)
    with capture_logs() as logs:
        await hook(env, env.recipients, "delay")
        await hook(env, env.recipients, "success")
    assert await queued_notices(spool, env.queue_id) == []
    assert [e["event"] for e in logs] == ["dsn_skipped", "dsn_skipped"]


async def test_a_failed_null_sender_message_is_a_double_bounce_to_the_postmaster(
    spool: Spool, clock: FakeClock
) -> None:
    env = await queue_original(spool, "", "gone@example.com")
    with capture_logs() as logs:
        await notices(spool, clock)(env, failed(env), "bounce")
    [(dsn_env, content)] = await queued_notices(spool, env.queue_id)
    assert dsn_env.sender == ""
    assert [r.address for r in dsn_env.recipients] == [POSTMASTER]
    msg = parse(content)
    assert msg["To"] == POSTMASTER
    assert msg["Subject"].startswith("Postmaster Copy")
    assert msg["Auto-Submitted"] == "auto-generated"
    returned = part(msg, 2)
    assert returned.get_content_type() == "text/rfc822-headers"  # header only
    assert b"body\r\n" not in content.split(b"text/rfc822-headers")[1]
    assert [e["kind"] for e in logs if e["event"] == "dsn_queued"] == ["double-bounce"]


async def test_a_failed_double_bounce_is_dropped_not_looped(spool: Spool, clock: FakeClock) -> None:
    env = await queue_original(spool, "", POSTMASTER, protocol="dsn")
    with capture_logs() as logs:
        await notices(spool, clock)(env, failed(env), "bounce")
    assert await queued_notices(spool, env.queue_id) == []
    assert [e["event"] for e in logs] == ["dsn_dropped"]
    assert logs[0]["log_level"] == "warning"


async def test_missing_original_still_gives_a_notice(spool: Spool, clock: FakeClock) -> None:
    env = await queue_original(spool)
    await spool.delete(env.queue_id)
    with capture_logs() as logs:
        await notices(spool, clock)(env, failed(env), "bounce")
    [(_, content)] = await queued_notices(spool)
    msg = parse(content)
    assert [part(msg, i).get_content_type() for i in range(2)] == [
        "text/plain",
        "message/delivery-status",
    ]
    assert len(msg.get_payload()) == 2
    assert "dsn_content_unavailable" in [e["event"] for e in logs]


async def test_smtputf8_notice_needs_smtputf8(spool: Spool, clock: FakeClock) -> None:
    env = await queue_original(spool, "алиса@пример.рф", "bob@example.com", smtputf8=True)
    await notices(spool, clock)(env, failed(env), "bounce")
    [(dsn_env, content)] = await queued_notices(spool, env.queue_id)
    assert dsn_env.smtputf8
    assert dsn_env.body == "8BITMIME"
    assert dsn_env.recipients[0].address == "алиса@пример.рф"
    assert b"message/global-delivery-status" in content


# -- the rate limit ----------------------------------------------------------------------------


async def test_rate_limit_waits_for_a_token_and_loses_nothing(
    spool: Spool, clock: FakeClock
) -> None:
    hook = notices(spool, clock, per_minute=2)
    originals = [await queue_original(spool) for _ in range(4)]
    with capture_logs() as logs:
        await asyncio.gather(*(hook(env, failed(env), "bounce") for env in originals))
    ids = {e.queue_id for e in originals}
    assert len(await queued_notices(spool)) - len(ids) == 4  # all four queued
    # Two tokens at once, then one every 30 s.
    assert clock.slept == [30.0, 30.0]
    assert clock.now == T0 + 60
    waits = [e["wait"] for e in logs if e["event"] == "dsn_rate_limited"]
    assert waits == [30.0, 30.0]


async def test_token_bucket_refills_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(6, clock, clock.sleep)  # one token every 10 s, six at most
    assert [await bucket.take() for _ in range(6)] == [0.0] * 6
    assert await bucket.take() == pytest.approx(10.0)
    clock.now += 3600  # a long quiet time refills only up to the capacity
    assert [await bucket.take() for _ in range(6)] == [0.0] * 6
    assert await bucket.take() == pytest.approx(10.0)
    clock.now -= 1000  # a clock set back gives no tokens and breaks nothing
    assert await bucket.take() == pytest.approx(10.0)


async def test_zero_means_no_limit_and_negative_is_refused() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, clock, clock.sleep)
    assert [await bucket.take() for _ in range(1000)] == [0.0] * 1000
    with pytest.raises(ValueError, match="bounces_per_minute"):
        TokenBucket(-1, clock, clock.sleep)


async def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="host name"):
        Notices(None, None, "", POSTMASTER, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="postmaster"):
        Notices(None, None, HOST, "", 1)  # type: ignore[arg-type]


# -- end to end through the queue manager --------------------------------------------------------


async def test_queue_manager_bounce_ends_up_as_a_dsn_in_the_spool(
    spool: Spool, clock: FakeClock
) -> None:
    delivered_to: list[tuple[str, str]] = []

    def route(envelope: Envelope) -> dict[str, list[Recipient]]:
        groups: dict[str, list[Recipient]] = {}
        for r in envelope.recipients:
            r.destination = "smtp:" + r.address.rpartition("@")[2]
            groups.setdefault(r.destination, []).append(r)
        return groups

    async def deliver(envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        out = []
        for r in recipients:
            if r.address.startswith("nobody@"):
                out.append(Attempt(r.address, "bounced", "550 5.1.1 No such user", "mx.one.test"))
            else:
                delivered_to.append((envelope.sender, r.address))
                out.append(Attempt(r.address, "delivered", "250 2.0.0 Ok"))
        return out

    queue_settings = QueueSettings(delay_warning_seconds=0)
    hook = notices(spool, clock, maximal_lifetime_seconds=queue_settings.maximal_lifetime_seconds)
    qm = QueueManager(spool, queue_settings, deliver, route, clock=clock, on_final=hook, jitter=0)
    original = await spool.enqueue(
        make_envelope("nobody@one.test", sender="alice@example.org", arrival=clock.now), CONTENT
    )
    assert await qm.run_once() == 1
    assert await spool.locate(original) is None  # bounced: removed after on_final returned
    [dsn_id] = await spool.ids("incoming")
    dsn_env = await spool.load(dsn_id)
    assert (dsn_env.sender, [r.address for r in dsn_env.recipients]) == ("", ["alice@example.org"])
    content = await spool.read_content(dsn_id)
    msg = parse(content)
    status = part(part(msg, 1), 1)
    assert status["Final-Recipient"] == "rfc822; nobody@one.test"
    assert status["Status"] == "5.1.1"
    assert status["Remote-MTA"] == "dns; mx.one.test"
    assert status["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    # It went in through the door: cleaned as a local submission (so the DKIM filter signs).
    assert content.startswith(b"X-Cleaned: yes\r\n")
    # The DSN is an ordinary queued message: the next pass delivers it, from <>.
    assert await qm.run_once() == 1
    assert delivered_to == [("", "alice@example.org")]
    assert await spool.ids("incoming") == []
