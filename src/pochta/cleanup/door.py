"""The door: the one way into the queue (Postfix cleanup(8) writes every queue file).

Every message that enters the queue passes here: the SMTP, submission and LMTP listeners
(``receive/smtp_service.py``), the pickup of ``pochta sendmail`` mail
(``receive/pickup.py``) and the delivery status notices (``deliver/notices.py``). Each one

1. takes a queue id of this process's shard (:meth:`Door.new_queue_id`),
2. runs the message through :class:`~pochta.cleanup.pipeline.Cleanup` (:meth:`Door.clean`:
   ``Received:``, ``Message-ID:``/``Date:`` for submissions, canonical maps, the filters,
   DKIM signing last),
3. and queues the result (:meth:`Door.submit`): virtual alias expansion
   (:meth:`Door.expand`, one queued recipient per final destination, as Postfix's cleanup
   does it before the queue), then the durable write; the id is returned once it is on disk.

Forwarded mail (issue 14): MX mail that went through the inbound checks (its verdict has
our DMARC result) and that alias expansion sends to another host is

- refused with ``550 5.7.1`` (:data:`BACKSCATTER`, raised as ``ReplyError``: the session
  answers it at the end of DATA) when it has no local recipient and its sender fails both
  SPF and DMARC: accepting it would only make a bounce to a forged sender later (backscatter);
- otherwise sealed with one ARC set (RFC 8617 §5.1, ``mailauth/arc_seal.py``) when
  ``srs.seal_forwarded`` is on; a message that cannot be sealed is queued unsealed, with a
  log line saying why. Its envelope sender is rewritten with SRS only on the way out
  (``deliver/remote.py``): the queued sender stays the original one, so our own DSNs go
  to it.

Quarantined mail (issue 15): a message whose verdict action is ``quarantine`` (the spam
filter, ``cleanup/spam_filter.py``, at or above ``spam.reject_score``) is not queued:
:meth:`Door.submit` writes it, with its envelope, score and symbols, into the quarantine
(``spam/quarantine.QuarantineStore``, durably, before the session's 250), logs
``quarantined`` with the queue id, score and symbols, and returns its id.

In a worker process, mail for local mailboxes only is handed to the master, which delivers
it (``to_master``, set by the server; see ``server/workers.py``).

Outbound rate limit (issue 15): the mail of an authenticated user past its
``[rate_limits] messages_per_user_per_hour`` (``OutboundLimit``, ``spam/ratelimit.py``)
is accepted and queued straight into hold (Postfix's hold queue): never lost, never sent
until an admin runs ``pochta queue release ID``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from pochta.cleanup.pipeline import Cleanup, CleanupInput, CleanupResult
from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply, ReplyError
from pochta.queue.base import MessageQueue, QueueState
from pochta.queue.envelope import Envelope, Recipient, derived_queue_id
from pochta.resolve.classes import (
    DiscardDest,
    FileDest,
    MailboxDest,
    PipeDest,
    Rejection,
    RelayDest,
    RemoteDest,
    ReportDest,
    Resolution,
    UnixDest,
)

__all__ = [
    "BACKSCATTER",
    "Destination",
    "Door",
    "OutboundLimit",
    "Quarantine",
    "Sealer",
    "destination_string",
]

log = get_logger("cleanup")


class AddressResolver(Protocol):
    """What the door asks of the address resolver (``resolve/resolver.Resolver``)."""

    def resolve(self, address: str) -> Resolution: ...


class Sealer(Protocol):
    """The ARC sealer (``mailauth/arc_seal.ArcSealer``): the content with one ARC set
    prepended, or an exception saying why none could be added."""

    async def seal(self, content: bytes, *, queue_id: str = "") -> bytes: ...


BACKSCATTER = Reply(
    550,
    "5.7.1",
    "Message refused: it would be forwarded to another host only, and its sender fails SPF "
    "and DMARC (a bounce would go to a forged address)",
)


class Quarantine(Protocol):
    """The quarantine (``spam/quarantine.QuarantineStore``): the message kept durably out of
    the queue; returns where. OSError when it cannot be written."""

    async def keep(self, envelope: Envelope, content: bytes) -> object: ...


class OutboundLimit(Protocol):
    """The per-user rate limit (``spam/ratelimit.UserRateLimit``): counts a message's
    recipients for an authenticated user; True when it is over the limit (hold it)."""

    def hold(self, user: str, recipients: int, *, queue_id: str = "") -> bool: ...


class HandOff(Protocol):
    """The queue manager of this process (``queue/scheduler.QueueManager``): a message handed
    to the master is not this process's to deliver."""

    def hand_off(self, queue_id: str) -> None: ...


Destination = (
    MailboxDest | RemoteDest | RelayDest | PipeDest | FileDest | UnixDest | DiscardDest | ReportDest
)


def destination_string(dest: Destination) -> str:
    """The text stored in ``Recipient.destination`` for a resolved destination."""
    if isinstance(dest, MailboxDest) and dest.mailbox_path:
        return f"virtual:{dest.mailbox_path}"  # virtual_mailbox_maps: the path (virtual(8))
    if isinstance(dest, MailboxDest):
        return f"mailbox:{dest.account}" + (f"/{dest.extension}" if dest.extension else "")
    if isinstance(dest, RemoteDest | RelayDest):
        return str(dest.route)
    if isinstance(dest, PipeDest):
        return f"pipe:{dest.user}:{dest.command}"
    if isinstance(dest, FileDest):
        return f"file:{dest.user}:{dest.path}"
    if isinstance(dest, UnixDest):
        return f"unix:{dest.user}"
    if isinstance(dest, ReportDest):
        return f"report:{dest.kind}"
    return "discard:"


class Door:
    """The one way into the queue; see the module docstring.

    ``cleanup`` and ``resolver`` are read at each use (they are rebuilt on reload);
    ``queue`` is this process's queue manager (told of mail handed to the master).
    """

    def __init__(
        self,
        spool: MessageQueue,
        cleanup: Callable[[], Cleanup],
        resolver: Callable[[], AddressResolver],
        queue: HandOff | None = None,
        sealer: Callable[[], Sealer | None] | None = None,
        quarantine: Callable[[], Quarantine | None] | None = None,
        outbound_limit: Callable[[], OutboundLimit | None] | None = None,
    ) -> None:
        self.spool = spool
        self._sealer = sealer
        self._quarantine = quarantine
        self._outbound_limit = outbound_limit
        self._cleanup = cleanup
        self._resolver = resolver
        self._queue = queue
        # A worker: how to hand a queued message to the master (set by the server).
        self.to_master: Callable[[str], None] | None = None

    def new_queue_id(self) -> str:
        """An id of this process's shard: the mail it queues is delivered here."""
        return self.spool.new_queue_id()

    def derived_queue_id(self, origin: str, salt: str) -> str:
        """The same id for the same ``origin`` and ``salt`` (``queue.envelope``), in this
        process's shard: what a delivery queues can be found when it is tried again."""
        count = self.spool.shard_count
        shard = (self.spool.shard_of(self.spool.new_queue_id()), count) if count > 1 else None
        return derived_queue_id(origin, salt, shard)

    async def locate(self, queue_id: str) -> QueueState | None:
        """Where the message ``queue_id`` is in the queue, None when it is not there."""
        return await self.spool.locate(queue_id)

    async def release(self, queue_id: str) -> None:
        """A message submitted with ``hold``, out of hold/ and delivered."""
        await self.spool.release(queue_id)

    async def clean(self, content: bytes, info: CleanupInput) -> CleanupResult:
        """Cleanup's steps and filters (:meth:`Cleanup.process`)."""
        return await self._cleanup().process(content, info)

    def canonical_recipient(self, address: str) -> str:
        """``address`` through recipient_canonical_maps, then canonical_maps: the mapping
        cleanup applies to the envelope recipient (:mod:`.canonical`), for the RCPT TO
        check to judge the address that will be delivered to."""
        return self._cleanup().canonical.recipient(address)

    def expand(self, recipients: list[Recipient]) -> tuple[list[Recipient], list[tuple[str, str]]]:
        """Virtual alias expansion before the queue (Postfix cleanup(8) does it there too):
        one queued Recipient per final destination, ``original`` keeping the RCPT address.
        Returns the recipients and the (address, reply) of branches that cannot be delivered.
        """
        out: list[Recipient] = []
        failed: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        resolver = self._resolver()
        for rcpt in recipients:
            resolution = resolver.resolve(rcpt.address)
            for rej in resolution.rejections:
                failed.append((rej.address or rcpt.address, str(rej.reply)))
            for dest in resolution.deliverable:
                if isinstance(dest, Rejection):  # pragma: no cover - deliverable has none
                    continue
                where = destination_string(dest)
                if isinstance(dest, MailboxDest) and not dest.mailbox_path:
                    address = dest.account
                elif isinstance(dest, RemoteDest | RelayDest):
                    address = dest.address
                else:
                    address = rcpt.address
                key = (address, where)
                if key in seen:
                    continue
                seen.add(key)
                out.append(
                    Recipient(
                        address=address,
                        original=rcpt.address,
                        orcpt=rcpt.orcpt,
                        notify=rcpt.notify,
                        destination=where,
                    )
                )
        return out, failed

    async def submit(self, envelope: Envelope, content: bytes, *, hold: bool = False) -> str:
        """Expand the recipients still to deliver, then queue durably; returns the queue id
        once it is on disk. Recipients already final (a refused message queued only to be
        bounced, see ``receive/pickup.py``) are kept as they are. A message whose verdict
        says ``quarantine`` (the spam filter, ``cleanup/spam_filter.py``) is written into the
        quarantine instead, durably too, and its id returned the same way. ``hold``: into
        hold/, delivered only after :meth:`release` (Sieve's side effects: queued, recorded,
        then released, deliver/sieve_delivery.py)."""
        if envelope.verdict.action == "quarantine":
            quarantine = self._quarantine() if self._quarantine is not None else None
            if quarantine is not None:
                return await self._keep(quarantine, envelope, content)
            # No quarantine here (not wired): queued as any message, nothing is lost.
            log.warning("quarantine_unavailable", queue_id=envelope.queue_id)
        held = self._over_outbound_limit(envelope)  # before expansion: RCPTs count
        final = [r for r in envelope.recipients if r.is_final]
        recipients, failed = self.expand([r for r in envelope.recipients if not r.is_final])
        for address, reply in failed:
            # Accepted at RCPT (some branch was deliverable); the rest is a bounce later.
            recipients.append(
                Recipient(address=address, status="bounced", reply=reply, destination="")
            )
            log.warning("alias_branch_failed", to=address, reply=reply)
        envelope.recipients = [*recipients, *final]
        content = await self._forwarded(envelope, content)
        if not envelope.arrival:
            envelope.arrival = time.time()
        # header_checks/body_checks HOLD (cleanup/content_checks.py): into hold/ as well.
        if held or hold or envelope.verdict.action == "hold":
            return await self.spool.enqueue(envelope, content, hold=True)
        if self.to_master is not None and _mailboxes_only(envelope.recipients):
            # Mail for local mailboxes only is delivered by the master, not by this worker:
            # the worker's CPU stays with its sessions, and deliveries into a mailbox come
            # from one process (no SQLite write lock passed between processes). Measured
            # with bench/smtp_bench.sh: more mail accepted per second, at 4 KiB and 100 KiB.
            preset = envelope.queue_id
            if preset and self._queue is not None:  # before it is in incoming/
                self._queue.hand_off(preset)
            queue_id = await self.spool.enqueue(envelope, content, here=False)
            if not preset and self._queue is not None:
                self._queue.hand_off(queue_id)
            self.to_master(queue_id)
            return queue_id
        return await self.spool.enqueue(envelope, content)

    async def _keep(self, quarantine: Quarantine, envelope: Envelope, content: bytes) -> str:
        """The message into the quarantine (the session answers 250 once this returns)."""
        where = await quarantine.keep(envelope, content)
        verdict = envelope.verdict
        log.info(
            "quarantined",
            queue_id=envelope.queue_id,
            client=envelope.client_ip,
            sender=envelope.sender or "<>",
            nrcpt=len(envelope.recipients),
            score=f"{verdict.score:.2f}",
            symbols=", ".join(f"{s.name}({s.score:.2f})" for s in verdict.symbols),
            path=str(where),
        )
        return envelope.queue_id

    def _over_outbound_limit(self, envelope: Envelope) -> bool:
        """An authenticated user's mail past the per-user rate limit: hold it (module
        docstring). Counted as the message is queued (a message refused earlier does not
        count), per recipient given at RCPT TO, before alias expansion."""
        limit = self._outbound_limit() if self._outbound_limit is not None else None
        if limit is None or not envelope.auth_user:
            return False
        pending = sum(1 for r in envelope.recipients if not r.is_final)
        return limit.hold(envelope.auth_user, pending, queue_id=envelope.queue_id)

    async def _forwarded(self, envelope: Envelope, content: bytes) -> bytes:
        """The backscatter rule and the ARC seal (see the module docstring)."""
        verdict = envelope.verdict
        if not verdict.result_of("dmarc"):
            return content  # not MX mail checked by cleanup/auth_filter.py
        pending = [r for r in envelope.recipients if not r.is_final]
        remote = [r for r in pending if _is_remote(r)]
        if not remote:
            return content
        if (
            len(remote) == len(pending)
            and verdict.result_of("spf") == "fail"
            and verdict.result_of("dmarc") == "fail"
        ):
            log.info(
                "rejected",
                queue_id=envelope.queue_id,
                client=envelope.client_ip,
                stage="data",
                sender=envelope.sender or "<>",
                reply=str(BACKSCATTER),
            )
            raise ReplyError(BACKSCATTER)
        sealer = self._sealer() if self._sealer is not None else None
        if sealer is None:
            return content
        try:
            return await sealer.seal(content, queue_id=envelope.queue_id)
        except Exception as exc:
            log.warning("arc_not_sealed", queue_id=envelope.queue_id, reason=str(exc)[:200])
            return content


def _is_remote(rcpt: Recipient) -> bool:
    """Whether a recipient still to deliver goes to another host (smtp, relay, lmtp)."""
    # destination_string of RemoteDest/RelayDest: their route, "smtp:", "relay:" or "lmtp:"
    # (resolve/transport.py NETWORK_KINDS; the door takes only data types from resolve/).
    return not rcpt.is_final and rcpt.destination.partition(":")[0] in ("smtp", "relay", "lmtp")


def _mailboxes_only(recipients: list[Recipient]) -> bool:
    """Whether every recipient still to deliver goes to a local mailbox."""
    pending = [r for r in recipients if not r.is_final]
    return bool(pending) and all(r.destination.startswith("mailbox:") for r in pending)
