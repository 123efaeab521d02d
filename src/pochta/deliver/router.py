"""From envelope recipients to delivery agents.

Virtual alias expansion happens before the queue (as in Postfix, where cleanup(8) expands
virtual aliases), so each queued recipient already names one final destination in
``Recipient.destination``: ``mailbox:ACCOUNT[/EXTENSION]``, ``smtp:DOMAIN``, ``relay:...``,
``lmtp:...``, ``pipe:...``, ``file:...``, ``discard:``. ``route`` groups by it; ``deliver``
runs the agent for one group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pochta.deliver.mailbox import MailboxAgent
from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply
from pochta.queue.base import MessageQueue
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt
from pochta.resolve.classes import (
    DiscardDest,
    FileDest,
    MailboxDest,
    PipeDest,
    Rejection,
    RelayDest,
    RemoteDest,
    UnixDest,
)
from pochta.resolve.resolver import Resolver
from pochta.resolve.transport import TransportError, parse_transport

if TYPE_CHECKING:
    from pochta.deliver.pipe import PipeAgent
    from pochta.deliver.remote import RemoteAgent

log = get_logger("deliver")

# Transports that the smtp/lmtp client agent (remote.py) serves.
REMOTE_KINDS = frozenset({"smtp", "relay", "lmtp"})

Destination = MailboxDest | RemoteDest | RelayDest | PipeDest | FileDest | UnixDest | DiscardDest

# A destination no agent here serves (file:, unix:, or a transport name pochta does not
# know): the mail waits in the queue and is retried on the normal schedule; nothing is dropped.
NO_AGENT = "451 4.3.5 No delivery agent for {kind} in this version of pochta; kept in queue"
BAD_ROUTE = "451 4.3.5 Cannot use the route {route!r}: {why}; kept in queue"


def destination_string(dest: Destination) -> str:
    """The text stored in ``Recipient.destination`` for a resolved destination."""
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
    return "discard:"


class Router:
    """The queue manager's RouteFn. Mail from the SMTP listeners arrives expanded (one
    destination per recipient); mail that skipped the listeners (``pochta sendmail``) is
    resolved here, on its first attempt, and the result is kept in the envelope."""

    def __init__(self, resolver: Callable[[], Resolver]) -> None:
        self._resolver = resolver

    def __call__(self, envelope: Envelope) -> dict[str, list[Recipient]]:
        groups: dict[str, list[Recipient]] = {}
        for rcpt in envelope.pending_recipients():
            if not rcpt.destination:
                rcpt.destination = self._destination(rcpt.address)
            groups.setdefault(rcpt.destination, []).append(rcpt)
        return groups

    def _destination(self, address: str) -> str:
        resolution = self._resolver().resolve(address)
        deliverable = resolution.deliverable
        if len(deliverable) == 1 and not isinstance(deliverable[0], Rejection):
            return destination_string(deliverable[0])
        if deliverable:
            return f"expand:{address}"  # an alias with several targets: see Deliverer
        reply = resolution.rejected or Reply(550, "5.1.1", "No such user here")
        return f"reject:{reply}"


class Deliverer:
    """The queue manager's DeliverFn: one destination group at a time."""

    def __init__(
        self,
        spool: MessageQueue,
        mailbox: Callable[[], MailboxAgent],
        resolver: Callable[[], Resolver],
        *,
        remote: Callable[[], RemoteAgent] | None = None,
        pipe: Callable[[], PipeAgent] | None = None,
        sign_outgoing: Callable[[Envelope, bytes], Awaitable[bytes | Reply]] | None = None,
    ) -> None:
        self.spool = spool
        # Read at each use: the directory and tables are swapped on reload.
        self._mailbox = mailbox
        self._resolver = resolver
        self._remote = remote
        self._pipe = pipe
        # Mail that skipped the SMTP listeners (``pochta sendmail``) is DKIM-signed here,
        # when it leaves: the command runs as any local user, who cannot read the keys.
        self._sign_outgoing = sign_outgoing

    async def __call__(self, envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        kind, _, target = recipients[0].destination.partition(":")
        if kind == "discard":
            return [Attempt(r.address, "delivered", "250 2.0.0 discarded") for r in recipients]
        if kind == "reject":
            return [Attempt(r.address, "bounced", target) for r in recipients]
        if kind == "expand":
            return [await self._expand(envelope, r) for r in recipients]
        if kind in REMOTE_KINDS and self._remote is not None:
            return await self._deliver_remote(envelope, recipients)
        if kind == "pipe" and self._pipe is not None:
            return await self._deliver_pipe(envelope, recipients, target)
        if kind != "mailbox":
            reply = NO_AGENT.format(kind=kind or "an unrouted recipient")
            return [Attempt(r.address, "deferred", reply) for r in recipients]
        content = await self.spool.read_content(envelope.queue_id)
        agent = self._mailbox()
        attempts = []
        for rcpt in recipients:
            account, _, extension = rcpt.destination.partition(":")[2].partition("/")
            result = await agent.deliver(
                queue_id=envelope.queue_id,
                sender=envelope.sender,
                recipient=rcpt.address,
                account=account,
                content=content,
                verdict_folder=envelope.verdict.delivery_folder,
                extension=extension,
            )
            attempts.append(Attempt(rcpt.address, result.outcome, str(result.reply)))  # type: ignore[arg-type]
        return attempts

    async def _deliver_remote(
        self, envelope: Envelope, recipients: list[Recipient]
    ) -> list[Attempt]:
        """smtp / relay / lmtp: the whole group (one destination) in one transaction."""
        assert self._remote is not None
        destination = recipients[0].destination
        try:
            transport = parse_transport(destination)
        except TransportError as exc:
            reply = BAD_ROUTE.format(route=destination, why=exc)
            return [Attempt(r.address, "deferred", reply) for r in recipients]
        if not transport.nexthop:  # "smtp:" = the recipient's domain (transport(5))
            transport = transport.with_nexthop(recipients[0].address.rpartition("@")[2])
        content = await self.spool.read_content(envelope.queue_id)
        if self._sign_outgoing is not None and transport.kind != "lmtp":
            signed = await self._sign_outgoing(envelope, content)
            if isinstance(signed, Reply):
                return [Attempt(r.address, "deferred", str(signed)) for r in recipients]
            content = signed
        return await self._remote().deliver(envelope, recipients, content, transport)

    async def _deliver_pipe(
        self, envelope: Envelope, recipients: list[Recipient], target: str
    ) -> list[Attempt]:
        """pipe:USER:COMMAND, one run of the command per recipient (local(8))."""
        assert self._pipe is not None
        user, _, command = target.partition(":")
        content = await self.spool.read_content(envelope.queue_id)
        agent = self._pipe()
        return [await agent.deliver(envelope, r, content, command, user) for r in recipients]

    async def _expand(self, envelope: Envelope, rcpt: Recipient) -> Attempt:
        """An alias with several targets, met after the queue (``pochta sendmail``): deliver
        to each; the mailbox agent's dedupe key makes a retry skip the targets already done."""
        content: bytes | None = None
        worst: Attempt | None = None
        for dest in self._resolver().resolve(rcpt.address).deliverable:
            if not isinstance(dest, MailboxDest):
                kind = destination_string(dest).partition(":")[0]  # type: ignore[arg-type]
                worst = worst or Attempt(rcpt.address, "deferred", NO_AGENT.format(kind=kind))
                continue
            if content is None:
                content = await self.spool.read_content(envelope.queue_id)
            result = await self._mailbox().deliver(
                queue_id=envelope.queue_id,
                sender=envelope.sender,
                recipient=dest.account,
                account=dest.account,
                content=content,
            )
            if result.outcome != "delivered" and (worst is None or worst.outcome != "deferred"):
                worst = Attempt(rcpt.address, result.outcome, str(result.reply))  # type: ignore[arg-type]
        return worst or Attempt(rcpt.address, "delivered", "250 2.0.0 delivered to every target")
