"""The mail system inside ``pochta serve``: spool, queue manager, store, resolver, cleanup,
the door into the queue (cleanup/door.py) and, in the master, the pickup of maildrop/.

Built after the privilege drop (so every file it creates belongs to run_as_user), started
before ``ready``, stopped after the listeners close. On SIGHUP the resolver and cleanup are
rebuilt from the new directory and tables, and when ``[dns]`` or ``[delivery]`` changed, the
DNS resolver and the outbound agent too (the old agent finishes its deliveries and closes its
cached connections); spool, store and queue manager stay.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from pochta.access.change_hub import ChangeHub
from pochta.access.imap_mime import search_text
from pochta.cleanup.auth_filter import AuthFilter
from pochta.cleanup.dkim_filter import DkimFilter
from pochta.cleanup.door import Door
from pochta.cleanup.milter_filter import MilterFilter
from pochta.cleanup.pipeline import Cleanup, Filter
from pochta.cleanup.rspamd_filter import RspamdFilter
from pochta.cleanup.spam_filter import SpamFilter
from pochta.deliver.file import FileAgent
from pochta.deliver.mailbox import MailboxAgent
from pochta.deliver.notices import Notices
from pochta.deliver.pipe import PipeAgent
from pochta.deliver.remote import RemoteAgent
from pochta.deliver.report import ReportAgent
from pochta.deliver.router import Deliverer, Router
from pochta.deliver.sieve_delivery import SieveDelivery
from pochta.deliver.sts_dane_policy import StsDanePolicy
from pochta.directory.auth_failures import FailureTracker
from pochta.directory.authenticator import Authenticator
from pochta.dns.async_resolver import make_async_resolver
from pochta.logs import get_logger
from pochta.mailauth import dkim_verify, dmarc
from pochta.mailauth.arc_seal import ArcSealer
from pochta.mailauth.dkim_sign import DkimSigner
from pochta.mailauth.spf import DnspythonSpfDns
from pochta.mailauth.srs import SrsCodec, SrsRewriter, read_secrets
from pochta.queue.scheduler import QueueManager
from pochta.queue.spool import Spool
from pochta.receive.pickup import Pickup
from pochta.receive.policy import Policy
from pochta.receive.spf_policy import SpfPolicy
from pochta.reports.store import EvaluationRecorder
from pochta.reports.tls_store import TlsRecorder, open_tls_db
from pochta.resolve.resolver import DomainClass, Resolver
from pochta.server.report_job import ReportJob
from pochta.server.text_indexer import TextIndexer
from pochta.sieve.limits import SieveLimits
from pochta.sieve.scripts import ScriptStore
from pochta.sieve.state import SieveState
from pochta.spam.greylist import Greylist, GreylistPolicy
from pochta.spam.quarantine import QUARANTINE_DIR, QuarantineStore
from pochta.spam.ratelimit import (
    ClientRateLimit,
    RateCounter,
    RecipientRateLimit,
    UserRateLimit,
)
from pochta.spam.rspamd import RspamdClient
from pochta.spam.scanner import Scanner
from pochta.spam.setup import build_checks
from pochta.spam.store import spam_db_path
from pochta.spam.training import MailboxTrainer, mailbox_trainer
from pochta.store import open_store

if TYPE_CHECKING:
    from pochta.config.settings import Settings
    from pochta.server.app import Server

log = get_logger("mail")

# Domains whose senders leave unchanged (not SRS): ours (Postfix+postsrsd exclude them too).
_HOSTED = frozenset({DomainClass.VIRTUAL_MAILBOX, DomainClass.LOCAL, DomainClass.VIRTUAL_ALIAS})


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
        # Bayes learning from IMAP Junk moves and $Junk/$NotJunk (spam/training.py).
        self.spam_trainer: MailboxTrainer | None = mailbox_trainer(settings, self.store)
        self.spool = Spool(settings.spool_dir)
        self.quarantine = QuarantineStore(settings.data_dir / QUARANTINE_DIR)
        self._closing: set[asyncio.Task[None]] = set()
        # TLS-RPT (RFC 8460): one row per new session to an MX host, in reports.db.
        self.tls_recorder = TlsRecorder(lambda: open_tls_db(settings))
        # Each DMARC evaluation of MX mail, written in batches (reports/store.py).
        self.recorder = EvaluationRecorder(settings)
        self._network: tuple[object, ...] | None = None
        self._build_network()
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
                report=lambda: self.report,
                file=lambda: self.file,
            ),
            Router(lambda: self.door, self.spool),
            on_final=Notices(
                self.spool,
                lambda: self.door,
                settings.server.hostname,
                postmaster,
                settings.delivery.bounces_per_minute,
                maximal_lifetime_seconds=settings.queue.maximal_lifetime_seconds,
            ),
        )
        self._delivering = False
        self.pickup: Pickup | None = None  # the master's, made in start()
        self.report_job: ReportJob | None = None  # the master's, made in start()
        self._sieve_state: SieveState | None = None  # sieve.db, opened by _build when on
        self._build()
        # The one way into the queue (cleanup/door.py): listeners, pickup and notices.
        self.door = Door(
            self.spool,
            lambda: self.cleanup,
            lambda: self.resolver,
            self.queue,
            sealer=lambda: self.sealer,
            quarantine=lambda: self.quarantine,  # spam over reject_score (spam/quarantine.py)
            outbound_limit=lambda: self.user_rate_limit,  # holds a user's excess (issue 15)
        )

    def _envelope_sender(self, sender: str, queue_id: str) -> str:
        """The MAIL FROM of outgoing mail: SRS for senders not hosted here (mailauth/srs.py)."""
        return self.srs.envelope_sender(sender, queue_id) if self.srs is not None else sender

    def _hosted(self, domain: str) -> bool:
        return self.resolver.domain_class(domain) in _HOSTED

    def _srs_codec(self) -> SrsCodec | None:
        return srs_codec(self.server.settings)

    @property
    def to_master(self) -> Callable[[str], None] | None:
        """A worker: how to hand a queued message to the master (set by the server)."""
        return self.door.to_master

    @to_master.setter
    def to_master(self, hand_over: Callable[[str], None] | None) -> None:
        self.door.to_master = hand_over

    def _build_network(self) -> None:
        """The one cached DNS resolver of this process (delivery and the inbound checks) and
        the outbound agent, made again when ``[dns]`` or ``[delivery]`` changed."""
        s = self.server.settings
        if self._network == (s.dns, s.delivery, s.reports.tls_send):
            return
        old = getattr(self, "remote", None)
        self._network = (s.dns, s.delivery, s.reports.tls_send)
        self.dns_resolver = make_async_resolver(s.dns)
        policy = StsDanePolicy(s, self.dns_resolver)
        self.remote = RemoteAgent(
            s,
            resolver=self.dns_resolver,
            policy=policy,
            dane_check_for=policy.dane_check,
            tls_outcome=self.tls_recorder if s.reports.tls_send else None,
            sender_rewrite=self._envelope_sender,
        )
        if old is not None:
            # Deliveries under way keep the old agent; closed, it quits their sessions
            # when they end instead of caching them.
            task = asyncio.get_running_loop().create_task(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            log.info("network_settings_reloaded")

    def _build(self) -> None:
        s = self.server.settings
        self._build_network()
        codec = self._srs_codec()
        self.resolver = Resolver(self.server.directory, self.server.tables, s, srs=codec)
        self.srs = SrsRewriter(codec, self._hosted) if codec is not None else None
        # The ARC seal of forwarded MX mail (cleanup/door.py), with the host name's key.
        self.sealer: ArcSealer | None = None
        if s.srs.seal_forwarded and s.mailauth.check_incoming:
            self.sealer = ArcSealer(
                DkimSigner(self.server.directory, s.dkim_dir), s.server.hostname
            )
        filters: list[Filter] = []
        policies: list[Policy] = []
        if s.mailauth.check_incoming:
            # First filter: SPF/DKIM/DMARC of MX mail, before anything signs (auth_filter.py).
            filters.append(
                AuthFilter(
                    hostname=s.server.hostname,
                    dkim_lookup=dkim_verify.resolver_txt_lookup(self.dns_resolver),
                    dmarc_lookup=dmarc.resolver_txt_lookup(self.dns_resolver),
                    reject_action=s.mailauth.dmarc_reject_action,
                    allow=s.mailauth.dmarc_allow,
                    timeout_seconds=s.mailauth.timeout_seconds,
                    trusted_arc_sealers=s.mailauth.trusted_arc_sealers,
                    record=self.recorder,  # into reports.db, for the DMARC reports
                )
            )
            # SPF of MAIL FROM, once per transaction, for the filter (spf_policy.py).
            policies.append(
                SpfPolicy(
                    dns=DnspythonSpfDns(self.dns_resolver),
                    receiver=s.server.hostname,
                    reject=s.mailauth.spf_reject,
                    timeout_seconds=s.mailauth.timeout_seconds,
                )
            )
        # Rate limits (spam/ratelimit.py): per client address at MAIL FROM and per recipient
        # at RCPT TO as policies; per authenticated user in the door, which holds the excess.
        self.user_rate_limit: UserRateLimit | None = None
        if s.rate_limits.enabled:
            counter = RateCounter(spam_db_path(s))
            policies.append(ClientRateLimit(s.rate_limits, counter))
            policies.append(RecipientRateLimit(s.rate_limits, counter))
            self.user_rate_limit = UserRateLimit(s.rate_limits, counter)
        # Greylisting (spam/greylist.py): the scanner asks it for suspicious mail ("score");
        # in mode "always" every new triplet at RCPT TO, after the rate limits.
        self.greylist = Greylist(s.greylist, spam_db_path(s)) if s.greylist.enabled else None
        if self.greylist is not None and s.greylist.mode == "always":
            policies.append(GreylistPolicy(self.greylist))
        if s.rspamd.url:
            # An external Rspamd over /checkv2 (cleanup/rspamd_filter.py); MX mail only.
            filters.append(
                RspamdFilter(
                    RspamdClient(s.rspamd.url, timeout_seconds=s.rspamd.timeout_seconds),
                    hostname=s.server.hostname,
                    reject_action=s.rspamd.reject_action,
                    failure_action=s.rspamd.failure_action,
                )
            )
        if s.milter.servers:
            # External milters, in order (cleanup/milter_filter.py): after Rspamd, so a
            # signing milter sees the final header; pochta's own spam filter comes next.
            filters.append(MilterFilter.from_settings(s))
        if s.spam.enabled and not s.rspamd.url:
            # pochta's own spam scanner of MX mail (off when Rspamd decides), after the auth
            # results its checks read and before the signer (cleanup/spam_filter.py);
            # quarantined mail goes to self.quarantine.
            checks = build_checks(
                s, directory=self.server.directory, dns_resolver=self.dns_resolver
            )
            # Greylisting of suspicious mail (mode "score"): the scanner asks the gate.
            gate = self.greylist if s.greylist.mode == "score" else None
            filters.append(SpamFilter(Scanner(checks, s.spam), greylist=gate))
        if s.dkim.sign:
            # Last filter: the DKIM signature is the last change to the header (dkim_filter.py).
            filters.append(DkimFilter(DkimSigner(self.server.directory, s.dkim_dir)))
        self.cleanup = Cleanup(s, self.server.tables, filters=filters)
        self.authenticator = Authenticator(
            self.server.directory, s.auth, s.directory.recipient_delimiter, tracker=self.tracker
        )
        self.mailbox = MailboxAgent(
            self.store,
            self.server.directory,
            default_message_limit=s.store.default_message_limit,
            save_to_detail_mailbox=s.delivery.save_to_detail_mailbox,
            mail_dir=s.mail_dir,  # virtual_mailbox_maps paths (virtual(8))
            hostname=s.server.hostname,
        )
        # Sieve at local delivery (deliver/sieve_delivery.py): the scripts of [sieve], the
        # vacation and duplicate memory in sieve.db, redirects and replies through the door.
        if s.sieve.enabled:
            if self._sieve_state is None:
                self._sieve_state = SieveState.in_data_dir(s.data_dir)
            self.mailbox.sieve = SieveDelivery(
                ScriptStore.from_settings(s),
                self._sieve_state,
                lambda: self.door,
                hostname=s.server.hostname,
                limits=SieveLimits.from_settings(s.sieve),
                spam_junk_score=s.spam.junk_score,
                spam_max_score=s.spam.reject_score,
                recipient_delimiter=s.directory.recipient_delimiter,
                mailbox_exists=self.mailbox.folder_exists,
            )
        # The recipient policies asked at MAIL FROM and RCPT TO (receive/policy.py), in
        # order: SPF, the rate limits, greylisting in mode "always" (above).
        self.policies: list[Policy] = policies
        self.pipe = PipeAgent.from_settings(s)
        self.file = FileAgent.from_settings(s)  # /file targets, Unix accounts (deliver/file.py)
        self.report = ReportAgent(s)  # report:KIND alias targets (deliver/report.py)

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
            # pochta sendmail's maildrop/ into the queue, through the door (one process).
            self.pickup = Pickup(self.server.settings, lambda: self.door)
            await self.pickup.start()
            # RFC 7489 §7.2 aggregate reports, every [reports] interval_hours (report_job.py).
            self.report_job = ReportJob(
                lambda: self.server.settings,
                lambda: self.server.directory,
                lambda: self.dns_resolver,
            )
            self.report_job.start()

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
        if self.report_job is not None:
            await self.report_job.stop()
        if self.pickup is not None:
            await self.pickup.stop()
        if self.changes is not None:
            self.changes.close()
        if self.indexer is not None:
            await self.indexer.close()
        if self._delivering:
            await self.queue.stop()
        await self.remote.close()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
        self.tls_recorder.close()
        self.recorder.flush()
        if self.spam_trainer is not None:
            await asyncio.to_thread(self.spam_trainer.close)  # finishes the queued learns
        self.spool.close()
        self.store.close()


def srs_codec(s: Settings) -> SrsCodec | None:
    """The SRS codec from ``[srs]`` and its secrets file, None when off or unreadable (the
    server's, and ``pochta queue requeue``'s to resolve bounces to our SRS addresses)."""
    if not s.srs.enabled:
        return None
    path = s.path(s.srs.secret_file)
    try:
        secrets = read_secrets(path)
    except (OSError, ValueError) as exc:
        log.error(
            "srs_disabled",
            path=str(path),
            error=str(exc),
            hint="restore the file (one secret a line) or remove it: serve makes a new one",
        )
        return None
    domain = (s.srs.domain or s.server.hostname).rstrip(".").lower()
    return SrsCodec(domain, secrets, max_age_days=s.srs.max_age_days)
