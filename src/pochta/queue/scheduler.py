"""The queue manager: decides which queued message is tried when (Postfix qmgr(8)).

Who does what::

    incoming/ ──claim──> active/ ──route()──> groups by destination
                                   │            │ per-destination slot + global slot
                                   │            └──deliver(envelope, recipients) -> [Attempt]
                                   │ envelope updated (atomically, durably) after each group
                                   ├── every recipient final ──> removed (+ on_final DSNs)
                                   └── some deferred ──> deferred/ until the earliest next try

``route`` (the resolve stage: address classes, transport maps) fills ``Recipient.destination``
and groups the recipients; ``deliver`` (the delivery agents) tries one group and reports one
``Attempt`` per recipient. Both are given to the ``QueueManager``; so is ``on_final``, which
writes the delivery status notifications (RFC 3464) — bounces, delay warnings and success
notices.

When messages are picked up: a message in ``incoming/`` is due at once. ``wake()`` (called
by ``enqueue`` (queue/base.py) through its listener, with the new queue id) starts the delivery of
that message at once without listing the directory; besides, ``incoming/`` is listed every
``scan_interval_seconds`` (1 s) and after any other wake, which is how messages written by other
processes — ``pochta sendmail``, ``pochta queue flush/release/requeue`` — are noticed: no
signal or pid file is needed, and nothing is lost when the server is down (it scans at
start). Deferred messages wait in an in-memory timetable (a heap of earliest ``next_attempt``
per message), filled at start from ``deferred/`` and rescanned every
``deferred_scan_interval_seconds`` (Postfix's queue_run_delay, 300 s) for files moved there
by others. When a deferred message comes due, every recipient not yet final is tried (as
Postfix does: the message, not the recipient, is the unit of retry).

Concurrency (Postfix's default_process_limit and default_destination_concurrency_limit): at
most ``max_concurrency`` deliver calls run at once, and at most
``settings.destination_concurrency`` per destination key (``destination_key``: the transport
and the domain or next hop of ``Recipient.destination``). A group first waits for its
destination's slot, then for a global one, so a slow destination never holds global slots
while it waits. At most ``max_active_messages`` messages are in ``active/`` at once (Postfix
qmgr_message_active_limit); the rest wait in ``incoming/``.

Several processes (server/workers.py): each runs a queue manager over the same spool and
schedules only the messages of its shards (the queue's ``mine``, queue/base.py): its
scans of incoming/ and deferred/ skip the rest. Claiming (a rename into active/ under the
message's lock) keeps two processes from delivering one message at once. Each keeps to its
share of ``destination_concurrency``: the limit divided by the number of processes,
rounded up (20 over 3 processes: 7 each, 21 at most in all).

Final states: 2xx → delivered; 5xx → bounced (RFC 5321 §4.2.1: permanent); 4xx → deferred
with the backoff of ``backoff.py``, unless the message is older than
``maximal_lifetime_seconds``, in which case the recipient expires and is bounced (Postfix
maximal_queue_lifetime: "when delivery fails with a temporary error, and the time in the
queue has reached the maximal_queue_lifetime limit"). A delay warning goes out once, at the
first deferral after ``delay_warning_seconds`` (Postfix delay_warning_time).

Crash safety: the envelope is rewritten (atomically, durably) after each deliver call
returns, before anything else happens for that message, so a recipient recorded as delivered
is never tried again. A crash during a deliver call leaves the message in ``active/``;
recovery moves it back to ``incoming/`` and the recipients not yet recorded are tried again
(the mailbox agent dedupes on queue id + recipient; a remote SMTP server may see a duplicate,
as with Postfix — RFC 1047).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import inspect
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import msgspec

from pochta.config.settings import QueueSettings
from pochta.logs import get_logger
from pochta.queue.backoff import DEFAULT_JITTER, backoff_delay
from pochta.queue.base import MessageQueue, SpoolError, SpoolFull, UnknownMessage
from pochta.queue.envelope import Envelope, Recipient

log = get_logger("queue")

Outcome = Literal["delivered", "deferred", "bounced"]
FinalKind = Literal["bounce", "delay", "success"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt did for one recipient; ``reply`` includes the code
    ("250 2.0.0 Ok", "451 4.4.1 Connection refused", "550 5.1.1 No such user")."""

    recipient_address: str
    outcome: Outcome
    reply: str
    # The server that gave the reply, "mx.example.org" (RFC 3464 §2.3.5 Remote-MTA);
    # "" when the reply is our own.
    remote_mta: str = ""


# Try the recipients (one destination's group) of a message; one Attempt per recipient.
DeliverFn = Callable[[Envelope, list[Recipient]], Awaitable[list[Attempt]]]
# Fill Recipient.destination for each recipient of the envelope given (only those due now)
# and group them: {destination: [recipients]}. May be a plain function or a coroutine.
RouteFn = Callable[[Envelope], dict[str, list[Recipient]] | Awaitable[dict[str, list[Recipient]]]]
# Write a DSN (RFC 3464) for these recipients: kind "bounce" (failed or expired),
# "delay" (still trying) or "success" (delivered, NOTIFY=SUCCESS). Plain or coroutine.
FinalFn = Callable[[Envelope, list[Recipient], FinalKind], Awaitable[None] | None]

# How long mail queued here for another process (hand_off) is left to it.
HANDED_GRACE_SECONDS = 30.0

# Replies the queue manager makes up itself (RFC 3463 §3.4, §3.5: 4.3.0 system errors).
ROUTE_FAILED = "451 4.3.0 Routing failed, will retry"
DELIVER_FAILED = "451 4.3.0 Delivery agent failed, will retry"
NO_RESULT = "451 4.3.0 Delivery agent gave no result for this recipient, will retry"
NOT_ROUTED = "451 4.3.0 Recipient was not routed, will retry"


def destination_key(destination: str) -> str:
    """The key that per-destination concurrency is counted by.

    "smtp:Example.org" → "smtp:example.org"; "mailbox:alice@example.test" →
    "mailbox:example.test" (the domain part: all mailboxes of a domain share the limit);
    "relay:[host]:25" and "lmtp:unix:/path" stay as they are. Like Postfix, the transport is
    part of the key (transport_destination_concurrency_limit is per transport).
    """
    transport, sep, nexthop = destination.partition(":")
    if not sep:
        return destination.lower()
    if "@" in nexthop and not nexthop.startswith("[") and not any(c in nexthop for c in " /"):
        nexthop = nexthop.rpartition("@")[2]
    return f"{transport}:{nexthop}".lower()


def _wants_dsn(recipient: Recipient, kind: FinalKind) -> bool:
    """RFC 3461 §4.1: NOTIFY=NEVER asks for none; otherwise the kind must be asked for.
    Without NOTIFY, failures and delays are reported (the MTA's choice, §4.1) and success
    is not."""
    notify = {n.upper() for n in recipient.notify}
    if "NEVER" in notify:
        return False
    if kind == "success":
        return "SUCCESS" in notify
    wanted = "FAILURE" if kind == "bounce" else "DELAY"
    return not notify or wanted in notify


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _DestinationSlots:
    """One semaphore per destination key, dropped when nobody uses it."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        entry = self._slots.get(key)
        if entry is None:
            entry = (asyncio.Semaphore(self.limit), [0])
            self._slots[key] = entry
        semaphore, users = entry
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._slots[key]


@dataclass
class _Pass:
    """What changed in one attempt of one message (for DSNs at its end)."""

    delivered: list[Recipient]
    failed: list[Recipient]  # bounced or expired in this pass


def _all_delivered(envelope: Envelope, result: _Pass) -> bool:
    return not result.failed and all(r.status == "delivered" for r in envelope.recipients)


class QueueManager:
    """Delivers what is in the spool (see the module docstring).

    Background use: ``await start()`` (recovers the spool, loads the deferred timetable, scans
    on wake and every second) and ``await stop()``. Step-by-step use (tests, tools):
    ``await run_once()`` claims everything due now and returns when those attempts ended.
    """

    def __init__(
        self,
        spool: MessageQueue,
        settings: QueueSettings,
        deliver: DeliverFn,
        route: RouteFn,
        *,
        clock: Callable[[], float] = time.time,
        on_final: FinalFn | None = None,
        max_concurrency: int = 100,
        max_active_messages: int = 1000,
        scan_interval_seconds: float = 1.0,
        deferred_scan_interval_seconds: float = 300.0,
        jitter: float = DEFAULT_JITTER,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.spool = spool
        self.settings = settings
        self._deliver = deliver
        self._route = route
        self._clock = clock
        self._on_final = on_final
        self.max_active_messages = max(1, max_active_messages)
        self.scan_interval_seconds = scan_interval_seconds
        self.deferred_scan_interval_seconds = deferred_scan_interval_seconds
        self._jitter = jitter
        self._rng = rng
        self._global = asyncio.Semaphore(max(1, max_concurrency))
        # Several processes deliver from one queue: each schedules the messages of its
        # shards (the queue knows which: queue/base.py), and its per-destination limit is its
        # share. One process, one shard, until configure_shards says otherwise.
        self._destinations = self._share_of_destinations()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._due: dict[str, float] = {}  # deferred queue id -> when it is due
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._fresh: list[str] = []  # queued by this process since the last dispatch
        self._adopted: list[str] = []  # handed to this process by another one (adopt)
        self._handed: dict[str, float] = {}  # queued here for another process (hand_off)
        # incoming/ as last listed, less what was taken since (oldest first): with a
        # backlog, a slot coming free takes the next of these without listing again.
        self._listed: collections.deque[str] = collections.deque()
        self._full_scan = True  # list incoming/ at the next dispatch
        self._backlog = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._listening = False

    # -- control -------------------------------------------------------------------------------

    async def start(self, *, recover: bool = True) -> None:
        """Recover the spool (crash leftovers), load the deferred queue, start scheduling."""
        if recover:
            await self.spool.recover()
        await self.scan_deferred()
        if not self._listening:
            self.spool.add_listener(self.notify_queued)
            self._listening = True
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pochta-qmgr")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking messages; let running attempts finish for ``grace_seconds``, then cancel
        them (their messages stay in active/ and are tried again after the next start)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        running = list(self._inflight.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def configure_shards(self, count: int, shards: Iterable[int]) -> None:
        """Before ``start``: ``count`` processes deliver from this queue, this one the
        messages of ``shards`` (the queue keeps them); each gets its share of the
        per-destination limit."""
        self.spool.configure_shards(count, shards)
        self._destinations = self._share_of_destinations()

    def _share_of_destinations(self) -> _DestinationSlots:
        count = self.spool.shard_count
        return _DestinationSlots(-(-self.settings.destination_concurrency // count))  # ceil

    @property
    def shard_count(self) -> int:
        return self.spool.shard_count

    def mine(self, queue_id: str) -> bool:
        """Whether this process schedules ``queue_id`` (the queue knows its shards)."""
        return self.spool.mine(queue_id)

    @property
    def shards(self) -> frozenset[int]:
        return self.spool.shards

    def take_shard(self, index: int) -> None:
        """Schedule the messages of shard ``index`` too (its process is down)."""
        self.spool.take_shard(index)
        self.wake()

    def give_shard(self, index: int) -> None:
        """Stop taking new messages of shard ``index`` (its process is up again); those
        being delivered here finish here."""
        self.spool.give_shard(index)

    async def take_back_shard(self, index: int, reason: str) -> int:
        """Deliver shard ``index`` here (its process died): take it, try again at once what
        that process left in active/ (none of what this one delivers), and load its deferred
        mail into this timetable. How many messages were put back from active/."""
        self.take_shard(index)
        moved = await self.spool.requeue_active_shard(index, reason, busy=self.in_flight)
        if moved:
            self.wake()
        await self.scan_deferred()
        return moved

    def in_flight(self, queue_id: str) -> bool:
        return queue_id in self._inflight

    def wake(self) -> None:
        """Scan incoming/ now (a message was flushed or released, or a slot came free)."""
        if not self._stopping:
            self._full_scan = True
            self._wake.set()

    def notify_queued(self, queue_id: str) -> None:
        """``queue_id`` was queued by this process (the spool's listener): start it without
        a scan."""
        if not self._stopping:
            self._fresh.append(queue_id)
            self._wake.set()

    def hand_off(self, queue_id: str) -> None:
        """This process queued ``queue_id`` for another one to deliver (``adopt`` there):
        its scans leave it alone for HANDED_GRACE_SECONDS, then take it after all (the news
        was lost on the way, or the other process is that far behind)."""
        self._handed[queue_id] = time.monotonic()

    def adopt(self, queue_id: str) -> None:
        """Another process queued ``queue_id`` for this one to deliver, whatever its shard
        (a worker's mail for local mailboxes, server/workers.py): start it without a scan."""
        if not self._stopping:
            self._adopted.append(queue_id)
            self._wake.set()

    async def flush(self) -> int:
        """postqueue -f: make every deferred message due now; returns how many."""
        moved = await self.spool.flush()
        self.wake()
        return moved

    async def run_once(self) -> int:
        """Start every message due now and wait until those attempts end; returns how many."""
        tasks = await self._dispatch()
        if tasks:
            await asyncio.wait(tasks)
        return len(tasks)

    async def wait_idle(self) -> None:
        """Wait until no message is being delivered."""
        while self._inflight:
            await asyncio.wait(list(self._inflight.values()))

    @property
    def active_count(self) -> int:
        return len(self._inflight)

    def next_due(self) -> float | None:
        """When the earliest deferred message is due (None: nothing deferred)."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale entry
        return self._heap[0][0] if self._heap else None

    async def scan_deferred(self) -> int:
        """Add messages in deferred/ that the timetable does not know; returns how many."""
        ids = [q for q in await self.spool.ids("deferred") if self.mine(q)]
        present = set(ids)
        for queue_id in [q for q in self._due if q not in present]:
            del self._due[queue_id]
        added = 0
        for queue_id in ids:
            if queue_id in self._due or queue_id in self._inflight:
                continue
            try:
                envelope = await self.spool.load(queue_id)
            except (SpoolError, ValueError, OSError):
                continue  # gone meanwhile, or corrupt: claiming will deal with it
            pending = [r.next_attempt for r in envelope.pending_recipients()]
            self._schedule(queue_id, min(pending) if pending else self._clock())
            added += 1
        return added

    # -- the loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        last_deferred_scan = last_scan = time.monotonic()
        while not self._stopping:
            self._wake.clear()
            try:
                full = self._full_scan or time.monotonic() - last_scan >= self.scan_interval_seconds
                if full:
                    last_scan = time.monotonic()
                await self._dispatch(full=full)
                if time.monotonic() - last_deferred_scan >= self.deferred_scan_interval_seconds:
                    last_deferred_scan = time.monotonic()
                    await self.scan_deferred()
            except Exception:
                log.exception("queue_scan_failed")
            timeout = self.scan_interval_seconds
            due = self.next_due()
            if due is not None and not self._backlog:  # when full, a finished message wakes us
                timeout = min(timeout, max(0.0, due - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _schedule(self, queue_id: str, due: float) -> None:
        earliest = self.next_due()
        self._due[queue_id] = due
        heapq.heappush(self._heap, (due, queue_id))
        if earliest is None or due < earliest:
            self.wake()  # the loop may be sleeping past this: let it recompute its timeout

    def _room(self) -> bool:
        if len(self._inflight) < self.max_active_messages:
            return True
        self._backlog = True
        return False

    async def _dispatch(self, *, full: bool = True) -> list[asyncio.Task[None]]:
        """Claim what is due: all of incoming/ (``full``) or what this process queued since
        the last dispatch, then deferred messages whose time has come."""
        started: list[asyncio.Task[None]] = []
        self._backlog = False
        if full and not self._listed:
            # (While a listing is still being worked through, a new one would list the
            # same backlog again: messages queued since wait until it is done, as in
            # Postfix's qmgr, except those of this process, which come through _fresh.)
            self._full_scan = False
            self._listed.extend(q for q in await self.spool.ids("incoming") if self.mine(q))
        adopted, fresh = collections.deque(self._adopted), collections.deque(self._fresh)
        self._adopted, self._fresh = [], []
        cutoff = time.monotonic() - HANDED_GRACE_SECONDS
        while self._handed and next(iter(self._handed.values())) < cutoff:
            del self._handed[next(iter(self._handed))]  # (oldest first: insertion order)
        for source in (adopted, fresh, self._listed):
            while source and not self._stopping:
                if not self._room():
                    # Their turn comes when a slot is free.
                    self._adopted.extend(adopted)
                    self._fresh.extend(fresh)
                    return started
                queue_id = source.popleft()
                if queue_id in self._inflight:
                    continue
                if source is not adopted and (not self.mine(queue_id) or queue_id in self._handed):
                    continue  # (a shard given away since, mail queued before we had one, or
                    # mail handed to another process)
                envelope = await self.spool.claim(queue_id, "incoming")
                if envelope is not None:
                    started.append(self._start(queue_id, envelope))
        now = self._clock()
        while not self._stopping and self._heap and self._heap[0][0] <= now and self._room():
            due, queue_id = heapq.heappop(self._heap)
            if self._due.get(queue_id) != due:
                continue  # stale: rescheduled, or moved away
            del self._due[queue_id]
            if queue_id in self._inflight or not self.mine(queue_id):
                continue  # (another process took its shard over meanwhile)
            envelope = await self.spool.claim(queue_id, "deferred")
            if envelope is not None:
                started.append(self._start(queue_id, envelope))
            elif await self.spool.locate(queue_id) == "deferred":
                # Busy in another process for a moment (an admin command): look again soon.
                self._schedule(queue_id, now + self.scan_interval_seconds)
        return started

    def _start(self, queue_id: str, envelope: Envelope) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(
            self._process(queue_id, envelope), name=f"pochta-deliver-{queue_id}"
        )
        self._inflight[queue_id] = task
        self._due.pop(queue_id, None)  # claimed from incoming/ (flushed): its old slot is void
        return task

    # -- one message ---------------------------------------------------------------------------

    async def _process(self, queue_id: str, envelope: Envelope) -> None:
        try:
            await self._attempt(queue_id, envelope)
        except UnknownMessage:
            log.info("gone", queue_id=queue_id, reason="removed while being delivered")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, SpoolFull):  # the operator's matter: one line, no traceback
                log.warning("queue_error", queue_id=queue_id, path=exc.path, error=exc.strerror)
            else:
                log.exception("queue_error", queue_id=queue_id)
            # Keep the message out of active/ so it is not stuck until the next restart.
            with contextlib.suppress(Exception):
                await self.spool.move(queue_id, "deferred", allowed_from=("active",))
                self._schedule(queue_id, self._clock() + self.settings.minimal_backoff_seconds)
        finally:
            self._inflight.pop(queue_id, None)
            if self._backlog:
                self._wake.set()  # a slot came free: take the next one (no new listing)

    async def _attempt(self, queue_id: str, envelope: Envelope) -> None:
        todo = envelope.pending_recipients()
        if not todo:  # only notices may be owed (their writer failed last time)
            await self._finish(queue_id, envelope, _Pass(delivered=[], failed=[]))
            return
        result = _Pass(delivered=[], failed=[])
        lock = asyncio.Lock()  # one envelope update at a time
        view = msgspec.structs.replace(envelope, recipients=todo)
        try:
            routed = self._route(view)
            groups = await routed if inspect.isawaitable(routed) else routed
        except Exception as exc:
            log.warning("route_failed", queue_id=queue_id, error=str(exc))
            await self._record(queue_id, envelope, todo, {}, lock, result, default=ROUTE_FAILED)
        else:
            assigned, leftovers = _match_groups(todo, groups)
            jobs = [
                self._deliver_group(queue_id, envelope, key, members, lock, result)
                for key, members in assigned.items()
            ]
            if leftovers:
                jobs.append(
                    self._record(queue_id, envelope, leftovers, {}, lock, result, NOT_ROUTED)
                )
            outcomes = await asyncio.gather(*jobs, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        await self._finish(queue_id, envelope, result)

    async def _deliver_group(
        self,
        queue_id: str,
        envelope: Envelope,
        key: str,
        members: list[Recipient],
        lock: asyncio.Lock,
        result: _Pass,
    ) -> None:
        slot_key = destination_key(members[0].destination or key)
        attempts: dict[str, Attempt] = {}
        default = NO_RESULT
        async with self._destinations.slot(slot_key), self._global:
            try:
                for attempt in await self._deliver(envelope, members):
                    attempts.setdefault(attempt.recipient_address, attempt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "deliver_failed", queue_id=queue_id, destination=slot_key, error=str(exc)
                )
                default = DELIVER_FAILED
        await self._record(queue_id, envelope, members, attempts, lock, result, default)

    async def _record(
        self,
        queue_id: str,
        envelope: Envelope,
        members: list[Recipient],
        attempts: dict[str, Attempt],
        lock: asyncio.Lock,
        result: _Pass,
        default: str,
    ) -> None:
        """Apply one group's outcomes and make them durable before anything else."""
        async with lock:
            now = self._clock()
            for recipient in members:
                attempt = attempts.get(recipient.address)
                if attempt is None:
                    attempt = Attempt(recipient.address, "deferred", default)
                self._apply(queue_id, envelope, recipient, attempt, now, result)
            if _all_delivered(envelope, result):
                # Every recipient is delivered and the message is removed next, so the
                # envelope is not made durable first. A crash in between repeats the
                # deliveries: the mailbox agent finds its first copy (dedupe key), a remote
                # server may get a duplicate (RFC 1047), as with Postfix, whose agents mark
                # delivered recipients in the queue file without an fsync.
                return
            await self.spool.update_envelope(queue_id, envelope)

    def _apply(
        self,
        queue_id: str,
        envelope: Envelope,
        recipient: Recipient,
        attempt: Attempt,
        now: float,
        result: _Pass,
    ) -> None:
        recipient.attempts += 1
        recipient.reply = attempt.reply
        recipient.remote_mta = attempt.remote_mta
        # Postfix's delivery log line: to=, orig_to=, relay=, delay=, status (our event name).
        fields: dict[str, object] = {"queue_id": queue_id, "to": recipient.address}
        if recipient.original and recipient.original != recipient.address:
            fields["orig_to"] = recipient.original
        if recipient.destination:
            fields["relay"] = recipient.destination
        if attempt.remote_mta:
            fields["remote_mta"] = attempt.remote_mta
        fields.update(
            delay=round(now - envelope.arrival, 3), attempts=recipient.attempts, reply=attempt.reply
        )
        if attempt.outcome == "delivered":
            recipient.status = "delivered"
            recipient.delivered_at = now
            recipient.next_attempt = 0.0
            result.delivered.append(recipient)
            log.info("delivered", **fields)
        elif attempt.outcome == "bounced":
            # RFC 5321 §4.2.1: a 5yz reply is permanent; no retry.
            recipient.status = "bounced"
            recipient.next_attempt = 0.0
            result.failed.append(recipient)
            log.info("bounced", **fields)
        elif now >= envelope.arrival + self.settings.maximal_lifetime_seconds:
            # Postfix maximal_queue_lifetime: a temporary failure of a message this old is
            # final (RFC 5321 §4.5.4.1: give up after at least 4-5 days).
            recipient.status = "expired"
            recipient.next_attempt = 0.0
            result.failed.append(recipient)
            log.info("expired", **fields)
        else:
            recipient.status = "deferred"
            wait = backoff_delay(
                recipient.attempts,
                self.settings.minimal_backoff_seconds,
                self.settings.maximal_backoff_seconds,
                jitter=self._jitter,
                rng=self._rng,
            )
            recipient.next_attempt = now + wait
            log.info(
                "deferred", **fields, next_attempt=_iso(recipient.next_attempt), wait=round(wait)
            )

    async def _finish(self, queue_id: str, envelope: Envelope, result: _Pass) -> None:
        now = self._clock()
        remaining = envelope.pending_recipients()
        warn_after = self.settings.delay_warning_seconds
        warned_now = False
        if (
            remaining
            and warn_after > 0
            and not envelope.warned_delay
            and now - envelope.arrival >= warn_after
        ):
            envelope.warned_delay = warned_now = True  # once (Postfix delay_warning_time)
            await self._notify(envelope, [r for r in remaining if _wants_dsn(r, "delay")], "delay")
        # Final notices owed, from this pass or from one whose DSN writer failed.
        failed = [r for r in envelope.recipients if r.status in ("bounced", "expired")]
        delivered = [r for r in envelope.recipients if r.status == "delivered"]
        failed = [r for r in failed if not r.notified]
        delivered = [r for r in delivered if not r.notified]
        try:
            await self._notify(
                envelope, [r for r in failed if _wants_dsn(r, "bounce")], "bounce", strict=True
            )
            await self._notify(
                envelope,
                [r for r in delivered if _wants_dsn(r, "success")],
                "success",
                strict=True,
            )
        except Exception:
            # Nothing is lost: the message stays (deferred, see _process) with the notices
            # still owed, and the next attempt writes them before it removes the message.
            await self.spool.update_envelope(queue_id, envelope)
            raise
        for recipient in (*failed, *delivered):
            recipient.notified = True
        if not remaining:
            await self.spool.delete(queue_id, reason="done", durable=False)
            return
        if warned_now or failed or delivered:
            await self.spool.update_envelope(queue_id, envelope)
        await self.spool.move(queue_id, "deferred", allowed_from=("active",))
        self._schedule(queue_id, min(r.next_attempt for r in remaining))

    async def _notify(
        self,
        envelope: Envelope,
        recipients: list[Recipient],
        kind: FinalKind,
        *,
        strict: bool = False,
    ) -> None:
        """Hand recipients to the DSN writer (RFC 3464). Its failure is logged, and raised
        again when ``strict`` (final notices: the message is kept until they are written)."""
        if not recipients:
            return
        log.info(
            "dsn",
            queue_id=envelope.queue_id,
            kind=kind,
            sender=envelope.sender or "<>",
            recipients=",".join(r.address for r in recipients),
        )
        if self._on_final is None:
            return
        try:
            outcome = self._on_final(envelope, recipients, kind)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            if isinstance(exc, SpoolFull):
                log.warning("dsn_failed", queue_id=envelope.queue_id, kind=kind, error=exc.strerror)
            else:
                log.exception("dsn_failed", queue_id=envelope.queue_id, kind=kind)
            if strict:
                raise


def _match_groups(
    todo: list[Recipient], groups: dict[str, list[Recipient]]
) -> tuple[dict[str, list[Recipient]], list[Recipient]]:
    """Map the router's groups onto the envelope's own Recipient objects (by identity, else
    by address); each recipient is tried once per pass. Returns (groups, not routed)."""
    by_address: dict[str, list[Recipient]] = {}
    for recipient in todo:
        by_address.setdefault(recipient.address, []).append(recipient)
    taken: set[int] = set()
    assigned: dict[str, list[Recipient]] = {}
    for key, members in groups.items():
        mine: list[Recipient] = []
        for member in members:
            own = member if any(member is r for r in todo) else None
            if own is None:
                own = next(
                    (r for r in by_address.get(member.address, []) if id(r) not in taken), None
                )
                if own is not None and member.destination and not own.destination:
                    own.destination = member.destination
            if own is None or id(own) in taken:
                continue
            taken.add(id(own))
            mine.append(own)
        if mine:
            assigned[key] = mine
    leftovers = [r for r in todo if id(r) not in taken]
    return assigned, leftovers
