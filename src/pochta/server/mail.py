"""The mail system inside ``pochta serve``: spool, queue manager, store, resolver, cleanup.

Built after the privilege drop (so every file it creates belongs to run_as_user), started
before ``ready``, stopped after the listeners close. On SIGHUP the resolver and cleanup are
rebuilt from the new directory and tables; spool, store and queue manager stay.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pochta.access.change_hub import ChangeHub
from pochta.access.imap_mime import search_text
from pochta.cleanup.pipeline import Cleanup, CleanupInput, CleanupResult, Filter
from pochta.deliver.mailbox import MailboxAgent
from pochta.deliver.notices import Notices
from pochta.deliver.pipe import PipeAgent
from pochta.deliver.remote import RemoteAgent
from pochta.deliver.router import Deliverer, Router, destination_string
from pochta.deliver.sts_dane_policy import StsDanePolicy
from pochta.directory.auth_failures import FailureTracker
from pochta.directory.authenticator import Authenticator
from pochta.dns.async_resolver import make_async_resolver
from pochta.logs import get_logger
from pochta.mailauth.dkim_sign import DkimSigner
from pochta.protocols.smtp.replies import Reply
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import QueueManager
from pochta.queue.spool import Spool
from pochta.receive.policy import Policy
from pochta.resolve.classes import MailboxDest, Rejection, RelayDest, RemoteDest
from pochta.resolve.resolver import Resolver
from pochta.server.text_indexer import TextIndexer
from pochta.store import open_store

if TYPE_CHECKING:
    from pochta.server.app import Server

log = get_logger("mail")


class MailSystem:
    """Everything mail in one process. Every process of the server delivers: the master
    recovers the spool and starts its queue manager in ``start``; a worker (``master``
    False) starts its own when the master says which shard is its (``start_delivery``;
    server/workers.py)."""

    def __init__(self, server: Server, *, master: bool = True) -> None:
        self.server = server
        self._master = master
        settings = server.settings
        self.tracker = FailureTracker(
            window_seconds=settings.auth.failure_window_seconds,
            threshold=settings.auth.failure_threshold,
            max_delay=settings.auth.tarpit_max_seconds,
        )
        # Full-text indexing happens after delivery, in TextIndexer (server/text_indexer.py).
        self.store = open_store(settings, text_extractor=search_text, index_at_delivery=False)
        self.indexer: TextIndexer | None = None
        self.changes: ChangeHub | None = None  # made in start(), on the running loop
        self.spool = Spool(settings.spool_dir)
        dns_resolver = make_async_resolver(settings.dns)
        policy = StsDanePolicy(settings, dns_resolver)
        self.remote = RemoteAgent(
            settings, resolver=dns_resolver, policy=policy, dane_check_for=policy.dane_check
        )
        postmaster = f"postmaster@{settings.server.hostname.rstrip('.')}"
        self.queue = QueueManager(
            self.spool,
            settings.queue,
            Deliverer(
                self.spool,
                lambda: self.mailbox,
                lambda: self.resolver,
                remote=lambda: self.remote,
                pipe=lambda: self.pipe,
                sign_outgoing=self._sign_local_submission,
            ),
            Router(lambda: self.resolver),
            on_final=Notices(
                self.spool,
                settings.server.hostname,
                postmaster,
                settings.delivery.bounces_per_minute,
                maximal_lifetime_seconds=settings.queue.maximal_lifetime_seconds,
            ),
        )
        self._delivering = False
        self.door = _Door(self)
        # A worker: how to hand a queued message to the master (set by the server).
        self.to_master: Callable[[str], None] | None = None
        self._build()

    def _build(self) -> None:
        s = self.server.settings
        self.resolver = Resolver(self.server.directory, self.server.tables, s)
        filters: list[Filter] = []
        self.signer = DkimSigner(self.server.directory, s) if s.dkim.sign else None
        if self.signer is not None:
            # Last filter: the DKIM signature is the last change to the header (dkim_sign.py).
            filters.append(self.signer.filter)
        self.cleanup = Cleanup(s, self.server.tables, filters=filters)
        self.authenticator = Authenticator(
            self.server.directory, s.auth, s.directory.recipient_delimiter, tracker=self.tracker
        )
        self.mailbox = MailboxAgent(
            self.store,
            self.server.directory,
            default_message_limit=s.store.default_message_limit,
            save_to_detail_mailbox=s.delivery.save_to_detail_mailbox,
        )
        # The recipient policies asked at MAIL FROM and RCPT TO (receive/policy.py), in
        # order. None yet: SPF, greylisting and rate limits are added here.
        self.policies: list[Policy] = []
        self.pipe = PipeAgent.from_settings(s)

    async def _sign_local_submission(self, envelope: Envelope, content: bytes) -> bytes | Reply:
        """DKIM-sign mail queued by ``pochta sendmail`` as it leaves (a local submission that
        did not pass cleanup's signer); other mail is signed already, or not ours to sign."""
        if self.signer is None or envelope.protocol != "sendmail":
            return content
        recipients = [r.address for r in envelope.recipients]
        result = await self.signer.filter(
            CleanupResult(content, envelope.sender, recipients),
            CleanupInput(
                envelope.sender,
                recipients,
                protocol="sendmail",
                queue_id=envelope.queue_id,
                submission=True,
                arrival=envelope.arrival,
            ),
        )
        return result if isinstance(result, Reply) else result.content

    def reload(self, _server: Server | None = None) -> None:
        self._build()

    async def start(self, *, shard_count: int = 1) -> None:
        """Start this process's part; the master also recovers the spool and starts
        delivering, as shard 0 of ``shard_count`` and, until their workers are up, every
        other shard (server/workers.py)."""
        self.changes = ChangeHub(self.store, asyncio.get_running_loop())
        self.indexer = TextIndexer(self.store, asyncio.get_running_loop())
        if self._master:
            self.spool.acquire_master_lock()
            self.queue.configure_shards(shard_count, range(shard_count))  # own shard: 0
            await self.queue.start()
            self._delivering = True

    async def start_delivery(self, index: int, count: int) -> None:
        """A worker: deliver the messages of shard ``index`` of ``count`` (the master has
        recovered the spool by now); the ids of the mail this process queues fall in it."""
        if self._delivering:
            return
        self._delivering = True
        self.queue.configure_shards(count, (index,))
        await self.queue.start(recover=False)
        log.info("delivering", shard=index, shards=count, pid=os.getpid())

    async def take_back_shard(self, index: int) -> None:
        """The master, when the worker delivering shard ``index`` has died: deliver that
        shard here until the worker is back, and try again at once what it left in active/
        (the queue chooses those: ``QueueManager.take_back_shard``)."""
        moved = await self.queue.take_back_shard(index, "worker exited")
        if moved:
            log.warning("worker_mail_requeued", shard=index, messages=moved)

    async def stop(self) -> None:
        if self.changes is not None:
            self.changes.close()
        if self.indexer is not None:
            await self.indexer.close()
        if self._delivering:
            await self.queue.stop()
        await self.remote.close()
        self.spool.close()
        self.store.close()

    def expand(self, recipients: list[Recipient]) -> tuple[list[Recipient], list[tuple[str, str]]]:
        """Virtual alias expansion before the queue (Postfix cleanup(8) does it there too):
        one queued Recipient per final destination, ``original`` keeping the RCPT address.
        Returns the recipients and the (address, reply) of branches that cannot be delivered.
        """
        out: list[Recipient] = []
        failed: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for rcpt in recipients:
            resolution = self.resolver.resolve(rcpt.address)
            for rej in resolution.rejections:
                failed.append((rej.address or rcpt.address, str(rej.reply)))
            for dest in resolution.deliverable:
                if isinstance(dest, Rejection):  # pragma: no cover - deliverable has none
                    continue
                where = destination_string(dest)
                if isinstance(dest, MailboxDest):
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

    async def submit(self, envelope: Envelope, content: bytes) -> str:
        """Expand, then queue durably; returns the queue id once it is on disk."""
        recipients, failed = self.expand(envelope.recipients)
        for address, reply in failed:
            # Accepted at RCPT (some branch was deliverable); the rest is a bounce later.
            recipients.append(
                Recipient(address=address, status="bounced", reply=reply, destination="")
            )
            log.warning("alias_branch_failed", to=address, reply=reply)
        envelope.recipients = recipients
        if not envelope.arrival:
            envelope.arrival = time.time()
        if self.to_master is not None and _mailboxes_only(recipients):
            # Mail for local mailboxes only is delivered by the master, not by this worker:
            # the worker's CPU stays with its sessions, and deliveries into a mailbox come
            # from one process (no SQLite write lock passed between processes). Measured
            # with bench/smtp_bench.sh: more mail accepted per second, at 4 KiB and 100 KiB.
            preset = envelope.queue_id
            if preset:  # before it is in incoming/, where our own scans look
                self.queue.hand_off(preset)
            queue_id = await self.spool.enqueue(envelope, content, here=False)
            if not preset:
                self.queue.hand_off(queue_id)
            self.to_master(queue_id)
            return queue_id
        return await self.spool.enqueue(envelope, content)


class _Door:
    """The door into the queue the sessions use (``pochta.runtime.Door``), over what exists
    today: ``cleanup.process``, ``expand`` and ``submit`` of the MailSystem (read at each
    call: cleanup is rebuilt on reload). cleanup/door.py's ``Door`` replaces it."""

    def __init__(self, mail: MailSystem) -> None:
        self._mail = mail

    def new_queue_id(self) -> str:
        return self._mail.spool.new_queue_id()

    async def clean(self, content: bytes, info: CleanupInput) -> CleanupResult:
        return await self._mail.cleanup.process(content, info)

    def expand(self, recipients: list[Recipient]) -> tuple[list[Recipient], list[tuple[str, str]]]:
        return self._mail.expand(recipients)

    async def submit(self, envelope: Envelope, content: bytes) -> str:
        return await self._mail.submit(envelope, content)


def _mailboxes_only(recipients: list[Recipient]) -> bool:
    """Whether every recipient still to deliver goes to a local mailbox."""
    pending = [r for r in recipients if not r.is_final]
    return bool(pending) and all(r.destination.startswith("mailbox:") for r in pending)
