"""The queue manager's ``on_final`` hook: write delivery status notifications and queue them.

``Notices`` is the ``FinalFn`` of ``queue/scheduler.py``. For each call (the recipients have
already been filtered by NOTIFY, ``_wants_dsn``) it reads the original message from the
spool, builds the notice with ``dsn.build_dsn`` and queues it like any other message, so it
is delivered (and retried) by the same queue: Postfix's bounce(8) does the same through
cleanup(8).

Rules, in the order they apply:

- A notice is never sent to the null sender ``<>`` (RFC 5321 §4.5.5, RFC 3464 §1): a
  message from ``<>`` is itself a notice, and answering it could loop. When such a message
  fails, the postmaster gets a "double bounce" instead (Postfix's 2bounce_notice_recipient),
  with the header of the message only. A delay or success notice for a ``<>`` message is
  not sent at all. When the double bounce to the postmaster fails in its turn, it is dropped
  with a warning in the log: there is nobody left to tell.
- The notice is queued with the null sender (RFC 3461 §6.2, RFC 5321 §4.5.5), so that a
  notice about the notice never comes back here as a notice; its one recipient is the
  original sender. It enters the queue through the door (``cleanup/door.py``), like every
  message: cleanup adds ``Received:``, the DKIM filter signs it (as MAILER-DAEMON of the host
  name, with the key of the hosted domain the host name belongs to), and the door expands
  the recipient (an alias of a local sender is followed). Protocol ``dsn`` (``pochta
  queue`` shows where it came from), SMTPUTF8 when it is an RFC 6533 notice, 8BITMIME when
  it carries 8-bit text.
- Rate limit: a token bucket holds ``bounces_per_minute`` tokens and refills at that rate.
  An empty bucket makes the call wait for a token rather than drop the notice: the queue
  manager keeps the original message until ``on_final`` returns, so nothing is lost, and a
  flood of bounces (a spam run to dead addresses) is spread out instead of sent at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pochta.cleanup.door import Door
from pochta.cleanup.pipeline import CleanupInput
from pochta.deliver.dsn import DEFAULT_RETURN_LIMIT_BYTES, build_dsn, is_international
from pochta.logs import get_logger
from pochta.queue.base import MessageQueue, SpoolError
from pochta.queue.envelope import Envelope, EnvelopeError, Recipient
from pochta.queue.scheduler import FinalKind

log = get_logger("deliver")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """``per_minute`` tokens at most, refilled continuously at ``per_minute`` a minute;
    ``take`` waits (FIFO) until a token is there. ``per_minute`` 0 means no limit."""

    def __init__(self, per_minute: int, clock: Clock, sleep: Sleep = asyncio.sleep) -> None:
        if per_minute < 0:
            raise ValueError(f"bounces_per_minute must be 0 (no limit) or more, not {per_minute}")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens a second
        self.tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)  # a clock set back refills nothing
        self._updated = now
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)

    async def take(self) -> float:
        """Take one token; returns how many seconds it waited for it."""
        if self.rate <= 0:
            return 0.0
        waited = 0.0
        async with self._lock:  # one waiter at a time: tokens go out in call order
            while True:
                self._refill()
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return waited
                wait = (1.0 - self.tokens) / self.rate
                await self._sleep(wait)
                waited += wait


class NoticeRefused(Exception):
    """Cleanup refused a notice (a DKIM key that cannot be read: 451): it is tried again."""


class Notices:
    """The ``FinalFn`` that turns bounces, delays and successes into queued DSNs.

    ``hostname`` is the Reporting-MTA and the domain of MAILER-DAEMON; ``postmaster`` gets
    double bounces and is named in every notice for help. ``maximal_lifetime_seconds``
    (QueueSettings) gives the Will-Retry-Until of delay notices; None leaves it out.
    """

    def __init__(
        self,
        spool: MessageQueue,
        door: Callable[[], Door],
        hostname: str,
        postmaster: str,
        bounces_per_minute: int,
        clock: Clock = time.time,
        *,
        maximal_lifetime_seconds: float | None = None,
        return_limit_bytes: int = DEFAULT_RETURN_LIMIT_BYTES,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not hostname:
            raise ValueError("Notices needs the server's host name (server.hostname)")
        if not postmaster:
            raise ValueError("Notices needs a postmaster address for double bounces")
        self.spool = spool
        self._door = door
        self.hostname = hostname
        self.postmaster = postmaster
        self.from_address = f"MAILER-DAEMON@{hostname}"
        self.maximal_lifetime_seconds = maximal_lifetime_seconds
        self.return_limit_bytes = return_limit_bytes
        self._clock = clock
        self._bucket = TokenBucket(bounces_per_minute, clock, sleep)

    async def __call__(
        self, envelope: Envelope, recipients: list[Recipient], kind: FinalKind
    ) -> None:
        if not recipients:
            return
        to = envelope.sender
        postmaster_copy = False
        if not to:
            # RFC 5321 §4.5.5 / RFC 3464 §1: never a notice to <>.
            if kind != "bounce":
                log.info("dsn_skipped", queue_id=envelope.queue_id, kind=kind, reason="null sender")
                return
            if envelope.protocol == "dsn" and all(
                r.address.lower() == self.postmaster.lower() for r in recipients
            ):
                # Our own notice to the postmaster failed: a third notice would go to the
                # same place (Postfix discards mail to double-bounce the same way).
                log.warning(
                    "dsn_dropped",
                    queue_id=envelope.queue_id,
                    kind=kind,
                    to=self.postmaster,
                    reason=f"a notice to {self.postmaster} could not be delivered; see where "
                    "postmaster mail goes with: pochta check; send it to a mailbox that works "
                    "with: pochta config set server.postmaster you@example.org (then reload; "
                    "an alias_maps line for postmaster comes first)",
                )
                return
            to, postmaster_copy = self.postmaster, True  # Postfix 2bounce

        content = await self._content(envelope)
        waited = await self._bucket.take()
        if waited > 0:
            log.info("dsn_rate_limited", queue_id=envelope.queue_id, kind=kind, wait=waited)
        now = self._clock()
        will_retry_until = None
        if kind == "delay" and self.maximal_lifetime_seconds is not None:
            will_retry_until = envelope.arrival + self.maximal_lifetime_seconds
        message = build_dsn(
            envelope,
            recipients,
            kind,
            content,
            reporting_mta=self.hostname,
            from_address=self.from_address,
            now=now,
            will_retry_until=will_retry_until,
            to=to,
            postmaster=self.postmaster,
            postmaster_copy=postmaster_copy,
            return_limit_bytes=self.return_limit_bytes,
        )
        door = self._door()
        dsn_queue_id = door.new_queue_id()
        cleaned = await door.clean(
            message,
            CleanupInput(
                sender="",  # RFC 3461 §6.2: a DSN goes out with the null reverse-path
                recipients=[to],
                protocol="local",
                queue_id=dsn_queue_id,
                submission=True,  # signed by the DKIM filter, as Postfix's bounce(8) mail
                arrival=now,
            ),
        )
        if not cleaned.accepted:
            # The queue manager keeps the original and tries again (scheduler._notify).
            raise NoticeRefused(f"cleanup refused the notice: {cleaned.reply}")
        notice = Envelope(
            queue_id=dsn_queue_id,
            sender="",
            recipients=[Recipient(address=a) for a in cleaned.recipients],
            arrival=now,
            size=len(cleaned.content),
            smtputf8=is_international(envelope, recipients, content, to),
            body="7BIT" if cleaned.content.isascii() else "8BITMIME",
            protocol="dsn",
            verdict=cleaned.verdict,
        )
        dsn_queue_id = await door.submit(notice, cleaned.content)
        log.info(
            "dsn_queued",
            queue_id=envelope.queue_id,
            dsn_queue_id=dsn_queue_id,
            kind="double-bounce" if postmaster_copy else kind,
            to=to,
            recipients=len(recipients),
        )

    async def _content(self, envelope: Envelope) -> bytes:
        """The original message; b"" when it cannot be read (the notice goes out without
        it, as Postfix's does: "Undelivered message unavailable")."""
        try:
            return await self.spool.read_content(envelope.queue_id)
        except (SpoolError, EnvelopeError, OSError) as exc:
            log.warning("dsn_content_unavailable", queue_id=envelope.queue_id, error=str(exc))
            return b""
