"""From envelope recipients to delivery agents.

Virtual alias expansion happens before the queue (as in Postfix, where cleanup(8) expands
virtual aliases), so each queued recipient already names one final destination in
``Recipient.destination``: ``mailbox:ACCOUNT[/EXTENSION]``, ``smtp:DOMAIN``, ``relay:...``,
``lmtp:...``, ``pipe:...``, ``file:...``, ``discard:``. ``route`` groups by it; ``deliver``
runs the agent for one group.
"""

from __future__ import annotations

from collections.abc import Callable

from pochta.deliver.mailbox import MailboxAgent
from pochta.logs import get_logger
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt
from pochta.queue.spool import Spool
from pochta.resolve.classes import (
    DiscardDest,
    FileDest,
    MailboxDest,
    PipeDest,
    RelayDest,
    RemoteDest,
    UnixDest,
)

log = get_logger("deliver")

Destination = MailboxDest | RemoteDest | RelayDest | PipeDest | FileDest | UnixDest | DiscardDest

# Until the outbound agents exist (smtp, relay, lmtp, pipe: the outbound issue), mail for
# them waits in the queue and is retried on the normal schedule; nothing is dropped.
NO_AGENT = "451 4.3.5 No delivery agent for {kind} in this version of pochta; kept in queue"


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


def route(envelope: Envelope) -> dict[str, list[Recipient]]:
    groups: dict[str, list[Recipient]] = {}
    for rcpt in envelope.pending_recipients():
        groups.setdefault(rcpt.destination or "unrouted:", []).append(rcpt)
    return groups


class Deliverer:
    """The queue manager's DeliverFn: one destination group at a time."""

    def __init__(self, spool: Spool, mailbox: Callable[[], MailboxAgent]) -> None:
        self.spool = spool
        self._mailbox = mailbox  # read at each use: the directory is swapped on reload

    async def __call__(self, envelope: Envelope, recipients: list[Recipient]) -> list[Attempt]:
        kind, _, _target = recipients[0].destination.partition(":")
        if kind == "discard":
            return [Attempt(r.address, "delivered", "250 2.0.0 discarded") for r in recipients]
        if kind != "mailbox":
            reply = NO_AGENT.format(kind=kind or "an unrouted recipient")
            return [Attempt(r.address, "deferred", reply) for r in recipients]
        content = await self.spool.read_content(envelope.queue_id)
        agent = self._mailbox()
        attempts = []
        for rcpt in recipients:
            account, _, _extension = rcpt.destination.partition(":")[2].partition("/")
            result = await agent.deliver(
                queue_id=envelope.queue_id,
                sender=envelope.sender,
                recipient=rcpt.address,
                account=account,
                content=content,
            )
            attempts.append(Attempt(rcpt.address, result.outcome, str(result.reply)))  # type: ignore[arg-type]
        return attempts
