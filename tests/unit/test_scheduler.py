"""The queue manager with a fake clock, a fake router and a fake delivery agent."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pochta.config.settings import QueueSettings
from pochta.queue import scheduler
from pochta.queue.envelope import Envelope, Recipient, queue_shard
from pochta.queue.scheduler import (
    DELIVER_FAILED,
    NO_RESULT,
    NOT_ROUTED,
    ROUTE_FAILED,
    Attempt,
    FinalFn,
    FinalKind,
    QueueManager,
    destination_key,
)
from pochta.queue.spool import QueueState, Spool
from tests.factories import make_envelope

T0 = 1_750_000_000.0
CONTENT = b"Subject: test\r\n\r\nbody\r\n"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def route_by_domain(envelope: Envelope) -> dict[str, list[Recipient]]:
    """Like the router: fill destination, group by it."""
    groups: dict[str, list[Recipient]] = defaultdict(list)
    for recipient in envelope.recipients:
        recipient.destination = "smtp:" + recipient.address.rpartition("@")[2]
        groups[recipient.destination].append(recipient)
    return dict(groups)


@dataclass
class FakeAgent:
    """Answers per address from ``replies`` (default 250); records every call."""

    replies: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    delay: float = 0.0
    running: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    running_total: int = 0
    peak_total: int = 0

    async def __call__(self, envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        key = destination_key(recipients[0].destination)
        self.calls.append((envelope.queue_id, [r.address for r in recipients]))
        self.running[key] += 1
        self.running_total += 1
        self.peak[key] = max(self.peak[key], self.running[key])
        self.peak_total = max(self.peak_total, self.running_total)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            out = []
            for r in recipients:
                reply = self.replies.get(r.address, "250 2.0.0 Ok")
                outcome: Any = {"2": "delivered", "4": "deferred", "5": "bounced"}[reply[0]]
                out.append(Attempt(r.address, outcome, reply))
            return out
        finally:
            self.running[key] -= 1
            self.running_total -= 1


@dataclass
class Finals:
    calls: list[tuple[str, list[str], FinalKind, list[str]]] = field(default_factory=list)

    def __call__(self, envelope: Envelope, recipients: list[Recipient], kind: FinalKind) -> None:
        self.calls.append(
            (
                envelope.queue_id,
                [r.address for r in recipients],
                kind,
                [r.status for r in recipients],
            )
        )


def settings(**changes: int) -> QueueSettings:
    base: dict[str, int] = {
        "minimal_backoff_seconds": 300,
        "maximal_backoff_seconds": 4000,
        "maximal_lifetime_seconds": 432000,
        "delay_warning_seconds": 0,
        "destination_concurrency": 20,
    }
    base.update(changes)
    return QueueSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def finals() -> Finals:
    return Finals()


def manager(
    spool: Spool,
    agent: FakeAgent,
    clock: FakeClock,
    finals: FinalFn | None = None,
    **kwargs: Any,
) -> QueueManager:
    queue_settings = kwargs.pop("queue_settings", settings())
    return QueueManager(
        spool,
        queue_settings,
        agent,
        kwargs.pop("route", route_by_domain),
        clock=clock,
        on_final=finals,
        jitter=kwargs.pop("jitter", 0.0),
        **kwargs,
    )


async def enqueue(spool: Spool, clock: FakeClock, *recipients: str, **params: Any) -> str:
    rcpts = [Recipient(r, **params) for r in recipients]
    envelope = make_envelope(*rcpts, sender="sender@example.org", arrival=clock.now)
    return await spool.enqueue(envelope, CONTENT)


async def on_disk(spool: Spool, queue_id: str) -> Envelope:
    return await spool.load(queue_id)


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- outcomes ------------------------------------------------------------------------------


async def test_success_removes_the_message(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    qm = manager(spool, agent, clock, finals)
    queue_id = await enqueue(spool, clock, "a@one.test", "b@one.test", "c@two.test")
    with capture_logs() as logs:
        assert await qm.run_once() == 1
    assert sorted(agent.calls) == [
        (queue_id, ["a@one.test", "b@one.test"]),
        (queue_id, ["c@two.test"]),
    ]
    assert await spool.locate(queue_id) is None
    # The file is kept for reuse, marked free: it is no message any more.
    assert [p.parent.name for p in spool.root.glob(f"*/{queue_id}")] == ["pool"]
    assert (spool.root / "pool" / queue_id).read_bytes()[:1] == b"#"
    delivered = events(logs, "delivered")
    assert {e["to"] for e in delivered} == {"a@one.test", "b@one.test", "c@two.test"}
    assert all(e["queue_id"] == queue_id and e["reply"] == "250 2.0.0 Ok" for e in delivered)
    assert delivered[0]["relay"].startswith("smtp:")
    assert events(logs, "removed")[0]["queue_id"] == queue_id
    assert finals.calls == []  # no NOTIFY=SUCCESS asked
    assert await qm.run_once() == 0


async def test_temporary_failures_back_off_on_the_exact_schedule(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    agent.replies["a@one.test"] = "451 4.4.1 Connection refused"
    qm = manager(spool, agent, clock)
    queue_id = await enqueue(spool, clock, "a@one.test")
    waits = []
    with capture_logs() as logs:
        for attempt in range(1, 8):
            assert await qm.run_once() == 1
            envelope = await on_disk(spool, queue_id)
            assert await spool.locate(queue_id) == "deferred"
            recipient = envelope.recipients[0]
            assert recipient.status == "deferred"
            assert recipient.attempts == attempt
            assert recipient.reply == "451 4.4.1 Connection refused"
            waits.append(recipient.next_attempt - clock.now)
            assert qm.next_due() == recipient.next_attempt
            clock.now = recipient.next_attempt - 1
            assert await qm.run_once() == 0  # not yet due
            clock.now = recipient.next_attempt
    # Postfix defaults: minimal_backoff 300 s, doubled per attempt, at most 4000 s.
    assert waits == [300, 600, 1200, 2400, 4000, 4000, 4000]
    deferred = events(logs, "deferred")
    assert len(deferred) == 7
    assert deferred[0]["reply"] == "451 4.4.1 Connection refused"
    assert deferred[0]["next_attempt"] == "2025-06-15T15:11:40Z"  # T0 + 300 s
    assert deferred[0]["wait"] == 300


async def test_jitter_only_lengthens_and_stays_under_the_maximum(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    agent.replies["a@one.test"] = "421 4.3.2 busy"
    qm = manager(spool, agent, clock, jitter=0.1, rng=lambda: 0.999)
    queue_id = await enqueue(spool, clock, "a@one.test")
    await qm.run_once()
    wait = (await on_disk(spool, queue_id)).recipients[0].next_attempt - clock.now
    assert 300 < wait < 330


async def test_permanent_failure_bounces_and_calls_on_final(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    agent.replies["nobody@one.test"] = "550 5.1.1 No such user"
    qm = manager(spool, agent, clock, finals)
    queue_id = await enqueue(spool, clock, "nobody@one.test")
    with capture_logs() as logs:
        await qm.run_once()
    assert finals.calls == [(queue_id, ["nobody@one.test"], "bounce", ["bounced"])]
    assert await spool.locate(queue_id) is None
    assert events(logs, "bounced")[0]["reply"] == "550 5.1.1 No such user"
    assert events(logs, "dsn")[0]["kind"] == "bounce"


async def test_mixed_outcomes_retry_only_the_deferred(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    agent.replies["later@two.test"] = "450 4.2.1 Mailbox busy"
    agent.replies["gone@three.test"] = "550 5.1.1 No such user"
    qm = manager(spool, agent, clock, finals)
    queue_id = await enqueue(spool, clock, "ok@one.test", "later@two.test", "gone@three.test")
    await qm.run_once()
    envelope = await on_disk(spool, queue_id)
    assert [r.status for r in envelope.recipients] == ["delivered", "deferred", "bounced"]
    assert envelope.recipients[0].delivered_at == clock.now
    assert finals.calls == [(queue_id, ["gone@three.test"], "bounce", ["bounced"])]
    assert await spool.locate(queue_id) == "deferred"

    agent.calls.clear()
    del agent.replies["later@two.test"]
    clock.now += 300
    await qm.run_once()
    assert agent.calls == [(queue_id, ["later@two.test"])]  # never the delivered or bounced
    assert await spool.locate(queue_id) is None
    assert len(finals.calls) == 1


async def test_lifetime_expiry_bounces_the_still_deferred(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    agent.replies["slow@one.test"] = "451 4.4.1 Connection timed out"
    qm = manager(
        spool, agent, clock, finals, queue_settings=settings(maximal_lifetime_seconds=1000)
    )
    queue_id = await enqueue(spool, clock, "slow@one.test")
    with capture_logs() as logs:
        for expected_attempts in (1, 2, 3):  # at T0, T0+300, T0+900: still young
            await qm.run_once()
            envelope = await on_disk(spool, queue_id)
            assert envelope.recipients[0].attempts == expected_attempts
            clock.now = envelope.recipients[0].next_attempt
        assert clock.now == T0 + 2100  # past the 1000 s lifetime
        await qm.run_once()
    assert await spool.locate(queue_id) is None
    assert finals.calls == [(queue_id, ["slow@one.test"], "bounce", ["expired"])]
    expired = events(logs, "expired")
    assert len(expired) == 1
    assert expired[0]["reply"] == "451 4.4.1 Connection timed out"


async def test_delay_warning_is_sent_once(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    agent.replies["slow@one.test"] = "451 4.4.1 Connection timed out"
    qm = manager(spool, agent, clock, finals, queue_settings=settings(delay_warning_seconds=500))
    queue_id = await enqueue(spool, clock, "slow@one.test")
    kinds_after = []
    for _ in range(5):  # T0, +300, +900, +2100, +4500
        await qm.run_once()
        kinds_after.append([kind for _, _, kind, _ in finals.calls])
        envelope = await on_disk(spool, queue_id)
        clock.now = envelope.recipients[0].next_attempt
    assert kinds_after == [[], [], ["delay"], ["delay"], ["delay"]]
    assert envelope.warned_delay
    assert finals.calls[0] == (queue_id, ["slow@one.test"], "delay", ["deferred"])


async def test_notify_decides_which_dsns_are_asked_for(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    agent.replies["never@one.test"] = "550 5.1.1 No such user"
    qm = manager(spool, agent, clock, finals)
    never = await enqueue(spool, clock, "never@one.test", notify=("NEVER",))
    success = await enqueue(spool, clock, "yes@one.test", notify=("SUCCESS", "FAILURE"))
    await qm.run_once()
    # RFC 3461 §4.1: NEVER suppresses the bounce; SUCCESS asks for a success DSN.
    assert finals.calls == [(success, ["yes@one.test"], "success", ["delivered"])]
    assert await spool.locate(never) is None


async def test_failures_of_route_and_deliver_defer(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    def broken_route(envelope: Envelope) -> dict[str, list[Recipient]]:
        raise RuntimeError("directory unavailable")

    qm = manager(spool, agent, clock, route=broken_route)
    queue_id = await enqueue(spool, clock, "a@one.test")
    await qm.run_once()
    assert (await on_disk(spool, queue_id)).recipients[0].reply == ROUTE_FAILED
    assert agent.calls == []

    async def broken_agent(envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        raise OSError("agent crashed")

    qm2 = QueueManager(spool, settings(), broken_agent, route_by_domain, clock=clock, jitter=0)
    queue_id2 = await enqueue(spool, clock, "b@one.test")
    await qm2.run_once()
    assert (await on_disk(spool, queue_id2)).recipients[0].reply == DELIVER_FAILED

    async def forgetful(envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        return [Attempt(recipients[0].address, "delivered", "250 ok")]

    async def half_router(envelope: Envelope) -> dict[str, list[Recipient]]:
        groups = route_by_domain(envelope)
        return {k: v for k, v in groups.items() if k != "smtp:lost.test"}

    qm3 = QueueManager(spool, settings(), forgetful, half_router, clock=clock, jitter=0)
    queue_id3 = await enqueue(spool, clock, "c@one.test", "d@one.test", "e@lost.test")
    await qm3.run_once()
    replies = [(r.status, r.reply) for r in (await on_disk(spool, queue_id3)).recipients]
    assert replies == [("delivered", "250 ok"), ("deferred", NO_RESULT), ("deferred", NOT_ROUTED)]


# -- concurrency ---------------------------------------------------------------------------


async def test_destination_concurrency_is_never_exceeded(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    agent.delay = 0.02
    qm = manager(spool, agent, clock, queue_settings=settings(destination_concurrency=3))
    for i in range(15):
        await enqueue(spool, clock, f"u{i}@busy.test")
    for i in range(5):
        await enqueue(spool, clock, f"u{i}@other.test")
    assert await qm.run_once() == 20
    assert agent.peak["smtp:busy.test"] == 3
    assert agent.peak["smtp:other.test"] == 3
    assert len(agent.calls) == 20
    assert await spool.ids("incoming") == []


async def test_global_concurrency_cap(spool: Spool, agent: FakeAgent, clock: FakeClock) -> None:
    agent.delay = 0.02
    qm = manager(spool, agent, clock, max_concurrency=4)
    for i in range(12):
        await enqueue(spool, clock, f"u@d{i}.test")
    await qm.run_once()
    assert agent.peak_total == 4
    assert len(agent.calls) == 12


async def test_active_message_limit_leaves_the_rest_in_incoming(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    qm = manager(spool, agent, clock, max_active_messages=3)
    agent.delay = 0.2  # the first three are still active while the dispatcher looks for more
    for i in range(7):
        await enqueue(spool, clock, f"u{i}@one.test")
    assert await qm.run_once() == 3
    assert agent.peak_total == 3
    assert len(await spool.ids("incoming")) == 4
    assert await qm.run_once() == 3
    assert await qm.run_once() == 1


async def test_a_bounce_is_kept_until_its_notice_is_written(
    spool: Spool, agent: FakeAgent, clock: FakeClock, finals: Finals
) -> None:
    """The DSN writer fails (disk full): the message stays with its notice owed, and the next
    attempt writes the notice once, for the bounced recipient only, then removes it."""
    agent.replies["gone@one.test"] = "550 5.1.1 No such user"
    agent.replies["later@two.test"] = "451 4.3.0 Try later"
    broken = {"left": 1}

    def flaky(envelope: Envelope, recipients: list[Recipient], kind: FinalKind) -> None:
        if broken["left"]:
            broken["left"] -= 1
            raise OSError(28, "No space left on device")
        finals(envelope, recipients, kind)

    qm = manager(spool, agent, clock, flaky)
    queue_id = await enqueue(spool, clock, "gone@one.test", "later@two.test")
    await qm.run_once()
    assert finals.calls == []
    assert await spool.locate(queue_id) == "deferred"
    assert not (await on_disk(spool, queue_id)).recipients[0].notified

    agent.replies["later@two.test"] = "451 4.3.0 Still later"
    clock.now += 4000
    await qm.scan_deferred()
    await qm.run_once()
    assert finals.calls == [(queue_id, ["gone@one.test"], "bounce", ["bounced"])]
    assert (await on_disk(spool, queue_id)).recipients[0].notified

    del agent.replies["later@two.test"]
    clock.now += 5000
    await qm.scan_deferred()
    await qm.run_once()
    assert await spool.locate(queue_id) is None
    assert len(finals.calls) == 1  # the bounce was not written twice


def test_destination_key() -> None:
    assert destination_key("smtp:Example.ORG") == "smtp:example.org"
    assert destination_key("mailbox:alice@example.test") == "mailbox:example.test"
    assert destination_key("relay:[10.0.0.1]:25") == "relay:[10.0.0.1]:25"
    assert destination_key("lmtp:unix:/run/dovecot/lmtp") == "lmtp:unix:/run/dovecot/lmtp"
    assert destination_key("pipe:/usr/bin/procmail -a user@x") == "pipe:/usr/bin/procmail -a user@x"
    assert destination_key("plain") == "plain"


# -- admin actions -------------------------------------------------------------------------


async def test_hold_and_release(spool: Spool, agent: FakeAgent, clock: FakeClock) -> None:
    qm = manager(spool, agent, clock)
    queue_id = await enqueue(spool, clock, "a@one.test")
    await spool.hold(queue_id)
    assert await qm.run_once() == 0
    assert agent.calls == []
    await spool.release(queue_id)
    assert await qm.run_once() == 1
    assert await spool.locate(queue_id) is None


async def test_flush_makes_deferred_mail_due_now(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    agent.replies["a@one.test"] = "451 4.4.1 try later"
    qm = manager(spool, agent, clock)
    queue_id = await enqueue(spool, clock, "a@one.test")
    await qm.run_once()
    assert await qm.run_once() == 0
    del agent.replies["a@one.test"]
    assert await qm.flush() == 1
    assert await qm.run_once() == 1  # without the clock moving
    assert await spool.locate(queue_id) is None
    assert await qm.run_once() == 0  # the stale timetable entry is ignored


async def test_deleted_while_being_delivered(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        started.set()
        await release.wait()
        return [Attempt(r.address, "deferred", "451 later") for r in recipients]

    qm = QueueManager(spool, settings(), slow, route_by_domain, clock=clock)
    queue_id = await enqueue(spool, clock, "a@one.test")
    run = asyncio.create_task(qm.run_once())
    await started.wait()
    await spool.delete(queue_id)  # postsuper -d of an active message
    release.set()
    with capture_logs() as logs:
        await run
    assert await spool.locate(queue_id) is None
    assert events(logs, "gone")[0]["queue_id"] == queue_id


# -- crash safety and the background loop ----------------------------------------------------


async def test_each_attempt_is_recorded_before_the_next_and_survives_a_crash(
    tmp_path: Path, clock: FakeClock
) -> None:
    spool = Spool(tmp_path / "queue")
    fast_done, never = asyncio.Event(), asyncio.Event()
    calls: list[list[str]] = []

    async def agent(envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        calls.append([r.address for r in recipients])
        if recipients[0].address.endswith("@slow.test"):
            await never.wait()  # cut off by the "crash"
        return [Attempt(r.address, "delivered", "250 ok") for r in recipients]

    qm = QueueManager(spool, settings(), agent, route_by_domain, clock=clock)
    await qm.start()
    queue_id = await enqueue(spool, clock, "a@fast.test", "b@slow.test")
    for _ in range(200):
        envelope = await on_disk(spool, queue_id)
        if envelope.recipients[0].status == "delivered":
            fast_done.set()
            break
        await asyncio.sleep(0.01)
    assert fast_done.is_set(), "the fast group's result was not recorded while the slow one ran"
    assert await spool.locate(queue_id) == "active"
    await qm.stop(grace_seconds=0.01)  # the crash: the slow attempt is cut off
    spool.close()

    spool2 = Spool(tmp_path / "queue")
    calls.clear()
    never.set()
    qm2 = QueueManager(spool2, settings(), agent, route_by_domain, clock=clock)
    await qm2.spool.recover()
    assert await spool2.locate(queue_id) == "incoming"
    await qm2.run_once()
    assert calls == [["b@slow.test"]]  # the delivered recipient is not tried again
    assert await spool2.locate(queue_id) is None
    spool2.close()


async def test_background_loop_picks_up_enqueues_and_other_processes(
    spool: Spool, agent: FakeAgent
) -> None:
    qm = QueueManager(
        spool, settings(), agent, route_by_domain, scan_interval_seconds=0.05, jitter=0
    )
    await qm.start()
    try:
        now = time.time()
        mine = await spool.enqueue(
            make_envelope("a@one.test", sender="s@example.org", arrival=now), CONTENT
        )
        # Written by another Spool object (like `pochta sendmail`): no wake, found by the scan.
        other = Spool(spool.root)
        theirs = await other.enqueue(
            make_envelope("b@one.test", sender="s@example.org", arrival=now), CONTENT
        )
        other.close()
        for _ in range(100):
            if len(agent.calls) == 2 and qm.active_count == 0:
                break
            await asyncio.sleep(0.02)
        assert {c[0] for c in agent.calls} == {mine, theirs}
        await qm.wait_idle()
        assert await spool.ids("incoming") == []
    finally:
        await qm.stop()


async def test_a_backlog_is_listed_once_not_at_every_free_slot(
    spool: Spool, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more in incoming/ than may be active, each slot that comes free takes the next
    message of the listing it has; incoming/ is not listed again until that is used up."""
    other = Spool(spool.root, remember_fresh=False)  # queued while the server was down
    queued = [
        await other.enqueue(
            make_envelope(f"u{i}@one.test", sender="s@example.org", arrival=time.time()), CONTENT
        )
        for i in range(40)
    ]
    other.close()
    listings = 0
    real_ids = spool.ids

    async def counting_ids(state: QueueState) -> list[str]:
        nonlocal listings
        listings += state == "incoming"
        return await real_ids(state)

    monkeypatch.setattr(spool, "ids", counting_ids)
    agent.delay = 0.005
    qm = QueueManager(
        spool,
        settings(),
        agent,
        route_by_domain,
        scan_interval_seconds=10.0,
        max_active_messages=4,
        jitter=0,
    )
    await qm.start()
    try:
        for _ in range(200):
            if len(agent.calls) == 40 and qm.active_count == 0:
                break
            await asyncio.sleep(0.02)
        assert sorted(c[0] for c in agent.calls) == sorted(queued)  # each once, in order
        assert [c[0] for c in agent.calls][:4] == queued[:4]
        assert agent.peak_total <= 4
        assert listings <= 2
    finally:
        await qm.stop()


async def test_processes_deliver_their_own_shards_and_share_the_destination_limit(
    spool: Spool, clock: FakeClock
) -> None:
    """Two queue managers on one spool (two processes): each claims the messages of its
    shard, incoming and deferred, and keeps to half of the per-destination limit."""
    other = Spool(spool.root, remember_fresh=False)  # pochta sendmail: ids in any shard
    queued = [await enqueue(other, clock, f"u{i}@one.test") for i in range(24)]
    other.close()
    agents = [FakeAgent(delay=0.01), FakeAgent(delay=0.01)]
    # Each process has its own Spool over the one directory; the shards are the Spool's.
    spools = [spool, Spool(spool.root)]
    managers = [
        manager(spools[i], agents[i], clock, queue_settings=settings(destination_concurrency=4))
        for i in range(2)
    ]
    for i, qm in enumerate(managers):
        qm.configure_shards(2, (i,))
    await asyncio.gather(*(qm.run_once() for qm in managers))
    spools[1].close()
    for i in range(2):
        delivered = {call[0] for call in agents[i].calls}
        assert delivered == {q for q in queued if queue_shard(q, 2) == i}
        assert agents[i].peak["smtp:one.test"] <= 2
    assert len(agents[0].calls) + len(agents[1].calls) == len(queued)


async def test_a_shard_taken_over_and_given_back(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    qm = manager(spool, agent, clock)
    qm.configure_shards(3, (0,))
    other = Spool(spool.root, remember_fresh=False)
    other.configure_shards(3, (2,))
    theirs = await enqueue(other, clock, "a@one.test")
    other.close()
    assert not qm.mine(theirs)
    assert await qm.run_once() == 0  # shard 2 belongs to a worker
    qm.take_shard(2)  # ... which died
    assert qm.shards == {0, 2}
    assert await qm.run_once() == 1
    assert [c[0] for c in agent.calls] == [theirs]
    qm.give_shard(2)
    assert qm.shards == {0}
    assert not qm.mine(theirs)


async def test_adopted_mail_is_delivered_whatever_its_shard(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    """A worker hands the master mail for local mailboxes (adopt): the master delivers it
    although its id is in the worker's shard; the worker's own spool did not announce it."""
    qm = manager(spool, agent, clock)
    qm.configure_shards(3, (0,))
    worker = Spool(spool.root)
    worker.configure_shards(3, (1,))
    heard: list[str] = []
    worker.add_listener(heard.append)
    queue_id = await worker.enqueue(
        make_envelope("a@one.test", sender="s@example.org", arrival=clock.now),
        CONTENT,
        here=False,
    )
    worker.close()
    assert heard == []
    assert not qm.mine(queue_id)
    # The worker's own queue manager leaves it to the master for a while.
    worker_spool = Spool(spool.root)
    worker_qm = manager(worker_spool, agent, clock)
    worker_qm.configure_shards(3, (1,))
    worker_qm.hand_off(queue_id)
    assert worker_qm.mine(queue_id)
    assert await worker_qm.run_once() == 0
    assert await qm.run_once() == 0  # found by the scan, but not its shard
    qm.adopt(queue_id)
    assert await qm.run_once() == 1
    assert [c[0] for c in agent.calls] == [queue_id]
    worker_spool.close()


async def test_mail_handed_off_is_taken_back_after_the_grace_time(
    spool: Spool, agent: FakeAgent, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_id = await enqueue(spool, clock, "a@one.test")
    qm = manager(spool, agent, clock)
    qm.hand_off(queue_id)
    assert await qm.run_once() == 0
    monkeypatch.setattr(scheduler, "HANDED_GRACE_SECONDS", 0.0)
    assert await qm.run_once() == 1  # the other process never took it


async def test_start_loads_the_deferred_queue(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    agent.replies["a@one.test"] = "451 4.4.1 later"
    qm = manager(spool, agent, clock)
    queue_id = await enqueue(spool, clock, "a@one.test")
    await qm.run_once()
    due = (await on_disk(spool, queue_id)).recipients[0].next_attempt

    restarted = manager(spool, agent, clock)  # a new process: empty timetable
    assert await restarted.scan_deferred() == 1
    assert restarted.next_due() == due
    del agent.replies["a@one.test"]
    clock.now = due
    assert await restarted.run_once() == 1
    assert await spool.locate(queue_id) is None


async def test_background_loop_retries_when_due(spool: Spool, agent: FakeAgent) -> None:
    # The loop sleeps until the deferred message is due, not until the next scan: the scan
    # interval is an hour, so only the timetable can bring the retry within the test's bound.
    # The retry's time is read from the manager's own clock, recorded by the agent, and
    # compared with the due time the spool holds: no wall-clock duration is asserted.
    agent.replies["a@one.test"] = "451 4.4.1 try later"
    quick = settings(minimal_backoff_seconds=1, maximal_backoff_seconds=1)
    qm = QueueManager(spool, quick, agent, route_by_domain, scan_interval_seconds=3600, jitter=0)
    called_at: list[float] = []
    real_call = agent.__call__

    async def timed(envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        called_at.append(time.time())  # QueueManager's default clock
        return await real_call(envelope, recipients)

    await qm.start()
    try:
        qm._deliver = timed  # type: ignore[method-assign]
        envelope = make_envelope("a@one.test", sender="s@example.org", arrival=time.time())
        queue_id = await spool.enqueue(envelope, CONTENT)
        for _ in range(2000):
            if called_at and qm.active_count == 0:
                break
            await asyncio.sleep(0.01)
        assert await spool.locate(queue_id) == "deferred"
        due = (await on_disk(spool, queue_id)).recipients[0].next_attempt
        del agent.replies["a@one.test"]
        for _ in range(2000):
            if await spool.locate(queue_id) is None:
                break
            await asyncio.sleep(0.01)
        assert await spool.locate(queue_id) is None
        assert len(agent.calls) == 2
        assert called_at[1] >= due  # retried when due, never before
    finally:
        await qm.stop()


async def test_take_back_shard_requeues_what_the_dead_worker_left(
    spool: Spool, agent: FakeAgent, clock: FakeClock
) -> None:
    """The master takes a dead worker's shard: what it left in active/ is delivered at once
    by the master; the master asks the queue for those ids (server/mail.py take_back_shard)."""
    qm = manager(spool, agent, clock)
    qm.configure_shards(3, (0,))
    worker = Spool(spool.root, remember_fresh=False)
    worker.configure_shards(3, (1,))
    left = [await enqueue(worker, clock, f"u{i}@one.test") for i in range(3)]
    for queue_id in left:
        assert await worker.claim(queue_id, "incoming") is not None
    worker.close()
    assert await qm.run_once() == 0  # the worker's, and being delivered there
    assert await qm.take_back_shard(1, "worker exited") == 3
    assert qm.shards == {0, 1}
    assert await qm.run_once() == 3
    assert sorted(c[0] for c in agent.calls) == sorted(left)
