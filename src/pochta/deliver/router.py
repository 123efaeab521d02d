"""From envelope recipients to delivery agents.

Virtual alias expansion happens before the queue (as in Postfix, where cleanup(8) expands
virtual aliases), so each queued recipient already names one final destination in
``Recipient.destination``: ``mailbox:ACCOUNT[/EXTENSION]``, ``virtual:PATH`` (a
virtual_mailbox_maps mailbox, PATH under ``[store] mail_dir``), ``smtp:DOMAIN``,
``relay:...``, ``lmtp:...``, ``pipe:USER:COMMAND``, ``file:USER:PATH``, ``unix:USER``,
``report:KIND``, ``discard:``.
``route`` groups by it; ``deliver`` runs the agent for one group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from pochta.cleanup.door import Door
from pochta.deliver.mailbox import MailboxAgent
from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply
from pochta.queue.base import MessageQueue
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt
from pochta.resolve.resolver import Resolver
from pochta.resolve.transport import TransportError, parse_transport

if TYPE_CHECKING:
    from pochta.deliver.file import FileAgent
    from pochta.deliver.pipe import PipeAgent
    from pochta.deliver.remote import RemoteAgent
    from pochta.deliver.report import ReportAgent

log = get_logger("deliver")

# Transports that the smtp/lmtp client agent (remote.py) serves.
REMOTE_KINDS = frozenset({"smtp", "relay", "lmtp"})

# A destination no agent here serves (a transport name pochta does not know, or an agent
# this process was built without): the mail waits in the queue and is retried on the
# normal schedule; nothing is dropped.
NO_AGENT = "451 4.3.5 No delivery agent for {kind} in this version of pochta; kept in queue"
BAD_ROUTE = "451 4.3.5 Cannot use the route {route!r}: {why}; kept in queue"
# Compatibility: a recipient queued unexpanded by an older version, whose alias has several
# targets, is queued again through the door as a message of its own.
REQUEUED = "requeued"


class Router:
    """The queue manager's RouteFn. Every message enters the queue through the door
    (cleanup/door.py), which expands its recipients: each names one destination.

    Compatibility with spools written by older versions, where ``pochta sendmail`` and the
    notices queued recipients unexpanded (destination ``""``, or ``expand:ADDRESS`` once
    routed): such a recipient is expanded here, through the door, at its first attempt.
    With one destination it keeps it (the envelope records it); with several, a copy of the
    message for that recipient alone is queued again through the door, and this recipient
    is done (``requeued:QUEUEID``)."""

    def __init__(self, door: Callable[[], Door], spool: MessageQueue) -> None:
        self._door = door
        self.spool = spool

    async def __call__(self, envelope: Envelope) -> dict[str, list[Recipient]]:
        groups: dict[str, list[Recipient]] = {}
        for rcpt in envelope.pending_recipients():
            if not rcpt.destination or rcpt.destination.startswith("expand:"):
                rcpt.destination = await self._legacy(envelope, rcpt)
            groups.setdefault(rcpt.destination, []).append(rcpt)
        return groups

    async def _legacy(self, envelope: Envelope, rcpt: Recipient) -> str:
        door = self._door()
        address = rcpt.destination.removeprefix("expand:") or rcpt.address
        probe = Recipient(address=address, orcpt=rcpt.orcpt, notify=rcpt.notify)
        expanded, failed = door.expand([probe])
        if len(expanded) == 1 and not failed:
            return expanded[0].destination
        if not expanded:
            reply = failed[0][1] if failed else str(Reply(550, "5.1.1", "No such user here"))
            return f"reject:{reply}"
        content = await self.spool.read_content(envelope.queue_id)
        copy = msgspec.structs.replace(
            envelope, queue_id=door.new_queue_id(), recipients=[probe], size=len(content)
        )
        queue_id = await door.submit(copy, content)
        log.info("legacy_recipient_requeued", queue_id=envelope.queue_id, to=address, new=queue_id)
        return f"{REQUEUED}:{queue_id}"


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
        report: Callable[[], ReportAgent] | None = None,
        file: Callable[[], FileAgent] | None = None,
    ) -> None:
        self.spool = spool
        # Read at each use: the directory and tables are swapped on reload.
        self._mailbox = mailbox
        self._resolver = resolver
        self._remote = remote
        self._pipe = pipe
        self._report = report
        self._file = file

    async def __call__(self, envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        kind, _, target = recipients[0].destination.partition(":")
        if kind == "discard":
            return [Attempt(r.address, "delivered", "250 2.0.0 discarded") for r in recipients]
        if kind == "reject":
            return [Attempt(r.address, "bounced", target) for r in recipients]
        if kind == REQUEUED:  # compatibility, see Router
            reply = f"250 2.0.0 alias expanded, queued as {target}"
            return [Attempt(r.address, "delivered", reply) for r in recipients]
        if kind in REMOTE_KINDS and self._remote is not None:
            return await self._deliver_remote(envelope, recipients)
        if kind == "pipe" and self._pipe is not None:
            return await self._deliver_pipe(envelope, recipients, target)
        if kind in ("file", "unix") and self._file is not None:
            return await self._deliver_file(envelope, recipients, kind, target)
        if kind == "virtual":
            return await self._deliver_table_mailbox(envelope, recipients, target)
        if kind == "report" and self._report is not None:
            content = await self.spool.read_content(envelope.queue_id)
            return await self._report().deliver(envelope, recipients, content, target)
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
                verdict=envelope.verdict,
                original_recipient=rcpt.original,
                client_ip=envelope.client_ip,
                client_host=envelope.client_hostname,
                auth_user=envelope.auth_user,
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

    async def _deliver_file(
        self, envelope: Envelope, recipients: list[Recipient], kind: str, target: str
    ) -> list[Attempt]:
        """file:USER:PATH and unix:USER, one write per recipient (local(8))."""
        assert self._file is not None
        content = await self.spool.read_content(envelope.queue_id)
        agent = self._file()
        if kind == "unix":
            return [await agent.deliver_unix(envelope, r, content, target) for r in recipients]
        user, _, path = target.partition(":")
        return [await agent.deliver_file(envelope, r, content, path, user) for r in recipients]

    async def _deliver_table_mailbox(
        self, envelope: Envelope, recipients: list[Recipient], path: str
    ) -> list[Attempt]:
        """virtual:PATH, a virtual_mailbox_maps mailbox (deliver/mailbox.py)."""
        content = await self.spool.read_content(envelope.queue_id)
        agent = self._mailbox()
        attempts = []
        for rcpt in recipients:
            result = await agent.deliver_table_mailbox(
                queue_id=envelope.queue_id,
                sender=envelope.sender,
                recipient=rcpt.address,
                path=path,
                content=content,
            )
            attempts.append(Attempt(rcpt.address, result.outcome, str(result.reply)))  # type: ignore[arg-type]
        return attempts
