"""Rate limits (spam/ratelimit.py): windowed counters in spam.db, the policies, the user
limit the door asks, on an injected clock."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from pochta.cleanup.door import Door
from pochta.config.settings import RateLimitSettings
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.spool import Spool
from pochta.receive.policy import PolicyRequest
from pochta.resolve.classes import RemoteDest, Resolution
from pochta.spam.ratelimit import (
    RATE_LIMITED,
    ClientRateLimit,
    RateCounter,
    RecipientRateLimit,
    UserRateLimit,
)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_window_counts_then_restarts(tmp_path: Path) -> None:
    clock = Clock()
    counter = RateCounter(tmp_path / "spam.db", window_seconds=3600, clock=clock)
    assert counter.add("ip:a").count == 1
    clock.now += 3599
    assert counter.add("ip:a", 2).count == 3
    assert counter.add("ip:b").count == 1  # keys apart
    clock.now += 1  # the window of ip:a (started at its first event) is over
    count = counter.add("ip:a")
    assert (count.count, count.window_start) == (1, clock.now)


def test_crossed_only_once_per_window(tmp_path: Path) -> None:
    counter = RateCounter(tmp_path / "spam.db", clock=Clock())
    crossings = [counter.add("user:u", 2).crossed(5) for _ in range(5)]  # 2 4 6 8 10
    assert crossings == [False, False, True, False, False]
    assert not counter.add("user:v", 5).over(0)  # 0: no limit


def _hammer(path: str, key: str, times: int) -> None:
    counter = RateCounter(Path(path))
    for _ in range(times):
        counter.add(key)


def test_two_connections_count_together(tmp_path: Path) -> None:
    """Two counters (two connections, as two worker processes) interleave adds."""
    clock = Clock()
    a = RateCounter(tmp_path / "spam.db", clock=clock)
    b = RateCounter(tmp_path / "spam.db", clock=clock)
    seen = [(a if n % 2 else b).add("ip:x").count for n in range(10)]
    assert seen == list(range(1, 11))


def test_concurrent_processes_lose_no_count(tmp_path: Path) -> None:
    path = tmp_path / "spam.db"
    RateCounter(path).add("warm", 1)  # the schema exists before the race
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(path), "ip:y", 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert RateCounter(path).add("ip:y", 0).count == 400


def _request(**fields: object) -> PolicyRequest:
    base: dict[str, object] = {
        "stage": "mail",
        "listener": "smtp",
        "client_ip": "198.51.100.7",
        "client_hostname": "",
        "helo": "mx.example.org",
        "auth_user": "",
        "sender": "a@example.org",
        "recipient": "",
    }
    base.update(fields)
    return PolicyRequest(**base)  # type: ignore[arg-type]


def test_client_limit_at_mail_from(tmp_path: Path) -> None:
    clock = Clock()
    settings = RateLimitSettings(messages_per_ip_per_hour=3)
    policy = ClientRateLimit(settings, RateCounter(tmp_path / "spam.db", clock=clock))
    replies = [asyncio.run(policy(_request())) for _ in range(4)]
    assert replies == [None, None, None, RATE_LIMITED]
    assert str(RATE_LIMITED).startswith("451 4.7.1 Rate limit exceeded")
    # Another address, the submission listener, an authenticated session, RCPT: not counted.
    assert asyncio.run(policy(_request(client_ip="198.51.100.8"))) is None
    assert asyncio.run(policy(_request(listener="submission"))) is None
    assert asyncio.run(policy(_request(auth_user="u@example.test"))) is None
    assert asyncio.run(policy(_request(stage="rcpt", recipient="b@example.test"))) is None
    # An IPv4-mapped address is the same client.
    assert asyncio.run(policy(_request(client_ip="::ffff:198.51.100.7"))) == RATE_LIMITED
    clock.now += 3600
    assert asyncio.run(policy(_request())) is None  # a new hour


def test_loopback_exempt_by_default(tmp_path: Path) -> None:
    counter = RateCounter(tmp_path / "spam.db", clock=Clock())
    policy = ClientRateLimit(RateLimitSettings(messages_per_ip_per_hour=1), counter)
    assert [asyncio.run(policy(_request(client_ip="127.0.0.1"))) for _ in range(3)] == [None] * 3
    strict = ClientRateLimit(
        RateLimitSettings(messages_per_ip_per_hour=1, exempt_networks=[]), counter
    )
    replies = [asyncio.run(strict(_request(client_ip="127.0.0.1"))) for _ in range(2)]
    assert replies == [None, RATE_LIMITED]


def test_zero_is_unlimited(tmp_path: Path) -> None:
    counter = RateCounter(tmp_path / "spam.db", clock=Clock())
    settings = RateLimitSettings(
        messages_per_ip_per_hour=0, messages_per_recipient_per_hour=0, messages_per_user_per_hour=0
    )
    ip, rcpt = ClientRateLimit(settings, counter), RecipientRateLimit(settings, counter)
    user = UserRateLimit(settings, counter)
    for _ in range(5):
        assert asyncio.run(ip(_request())) is None
        assert asyncio.run(rcpt(_request(stage="rcpt", recipient="b@example.test"))) is None
        assert user.hold("u@example.test", 1000) is False


def test_recipient_limit_at_rcpt(tmp_path: Path) -> None:
    counter = RateCounter(tmp_path / "spam.db", clock=Clock())
    policy = RecipientRateLimit(RateLimitSettings(messages_per_recipient_per_hour=2), counter)
    rcpt = _request(stage="rcpt", recipient="Bob@Example.test")
    replies = [asyncio.run(policy(rcpt)) for _ in range(3)]
    assert [r is None for r in replies] == [True, True, False]
    assert replies[2] is not None
    assert str(replies[2]).startswith("451 4.7.1")
    # Recipient keys ignore case; another recipient has its own count.
    assert asyncio.run(policy(_request(stage="rcpt", recipient="bob@example.test"))) is not None
    assert asyncio.run(policy(_request(stage="rcpt", recipient="carol@example.test"))) is None
    # Authenticated mail is limited per user instead.
    authenticated = _request(stage="rcpt", recipient="bob@example.test", auth_user="u")
    assert asyncio.run(policy(authenticated)) is None
    assert asyncio.run(policy(_request(stage="mail"))) is None


def test_user_limit_counts_recipients_and_alerts_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counter = RateCounter(tmp_path / "spam.db", clock=Clock())
    limit = UserRateLimit(RateLimitSettings(messages_per_user_per_hour=5), counter)
    assert limit.hold("u@example.test", 3, queue_id="Q1") is False
    assert limit.hold("u@example.test", 2, queue_id="Q2") is False  # 5: at the limit
    assert limit.hold("u@example.test", 1, queue_id="Q3") is True
    assert limit.hold("U@example.test", 4, queue_id="Q4") is True
    assert limit.hold("other@example.test", 5) is False
    out = capsys.readouterr().out
    assert out.count("rate_limit_exceeded") == 1
    assert out.count("rate_limit_hold") == 2
    assert "queue_id=Q3" in out
    assert "count=6" in out
    assert "limit=5" in out
    assert "user=u@example.test" in out


class _Resolver:
    def resolve(self, address: str) -> Resolution:
        return Resolution(address, (RemoteDest(address, "smtp:example.org"),))


def test_door_holds_a_users_excess(tmp_path: Path) -> None:
    """cleanup/door.py: past the user's limit the message is queued in hold/, not incoming/,
    and a released one is tried like any other; mail without a login is never counted."""
    counter = RateCounter(tmp_path / "spam.db", clock=Clock())
    limit = UserRateLimit(RateLimitSettings(messages_per_user_per_hour=2), counter)

    async def run() -> list[str | None]:
        spool = Spool(tmp_path / "spool")
        door = Door(spool, lambda: None, _Resolver, outbound_limit=lambda: limit)  # type: ignore[arg-type, return-value]
        states: list[str | None] = []
        try:
            for user, rcpts in (("u", 2), ("u", 1), ("", 5), ("v", 1)):
                envelope = Envelope(
                    queue_id="",
                    sender="u@example.test",
                    recipients=[Recipient(address=f"r{n}@example.org") for n in range(rcpts)],
                    arrival=0.0,
                    size=0,
                    auth_user=user,
                )
                queue_id = await door.submit(envelope, b"Subject: x\r\n\r\nhi\r\n")
                states.append(await spool.locate(queue_id))
            await spool.release(queue_id_held := (await spool.ids("hold"))[0])
            states.append(await spool.locate(queue_id_held))
        finally:
            spool.close()
        return states

    assert asyncio.run(run()) == ["incoming", "hold", "incoming", "incoming", "incoming"]
