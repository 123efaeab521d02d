"""What a session sees of the running server: the interfaces, not the server.

The SMTP, LMTP, IMAP, POP3 and HTTP sessions (``receive/``, ``access/``, ``web/``) are made
by ``server/`` and used to import it back for its types: a cycle, and no session could be
built without the whole runtime. They now take the protocols below; ``server.app.Server``
satisfies :class:`SessionRuntime` (and :class:`WebRuntime`), ``server.mail.MailSystem``
satisfies :class:`MailRuntime`, and mypy proves both where ``server/services.py`` hands the
real objects to the sessions. A test passes a small fake instead (tests/unit/test_runtime.py).

This module imports nothing of pochta at run time (tests/unit/test_imports.py); the types it
names come from the kernel and from the data types of the stages, under TYPE_CHECKING.

A service reads ``settings`` and ``directory`` at each use and never keeps them: both are
replaced on reload (SIGHUP); so are ``authenticator``, ``resolver`` and ``mailbox``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from pochta.cleanup.pipeline import CleanupInput, CleanupResult
    from pochta.cleanup.verdict import Verdict
    from pochta.config.settings import Settings
    from pochta.deliver.mailbox import MailboxResult
    from pochta.directory.authenticator import AuthResult
    from pochta.directory.base import Directory
    from pochta.directory.sasl import Mechanism, Step
    from pochta.directory.sasl_exchange import Outcome, Resolve, SaslExchange, SendChallenge
    from pochta.protocols.smtp.replies import Reply
    from pochta.queue.envelope import Envelope, Recipient
    from pochta.receive.policy import Policy
    from pochta.resolve.classes import Resolution
    from pochta.store import MailStore

# Why a connection is refused: the listener's max_connections, or max_connections_per_ip.
Refusal = Literal["total", "per_ip"]

# The folder argument of ChangeBus.watch that means "any folder of the account".
ANY_FOLDER = ""


class FolderFeed(Protocol):
    """Which folders of one account changed since the last ``take``: names only, merged, at
    most a limit of them waiting (past it: ``overflowed``, RFC 5465 §5.8)."""

    @property
    def ready(self) -> asyncio.Event:
        """Set when something is waiting to be taken."""
        ...

    @property
    def overflowed(self) -> bool: ...

    def take(self) -> frozenset[str] | None:
        """The changed folders (None: any folder may have changed); clears the feed."""
        ...

    def close(self) -> None: ...


class ChangeBus(Protocol):
    """Store changes as wake-ups (IMAP IDLE, RFC 2177): never data, only "look again".

    Sessions ``watch``; whoever sees a change ``publish``es it (the store's change listener,
    from any thread) and the bus carries it to the watchers of every process; a change made
    in another process arrives through ``wake_remote`` (on the event loop). The first
    implementation is ``access.change_hub.ChangeHub`` with the master-worker socket relay
    (``server/workers.py``); a PostgreSQL LISTEN/NOTIFY relay can replace the socket one
    without a session noticing."""

    def watch(
        self, address: str, folder: str = ANY_FOLDER, *, owner: object | None = None
    ) -> tuple[asyncio.Event, Callable[[], None]]:
        """An event set at each change of ``folder`` of the account (``ANY_FOLDER``: any of
        its folders), and the function that ends the watch. ``owner``: the watcher's token
        (the store's ``CHANGE_ORIGIN``); the flag changes and expunges it made itself do
        not set the event."""
        ...

    def follow(self, address: str, limit: int) -> FolderFeed:
        """The folders of the account changed from now on (IMAP NOTIFY, RFC 5465), at most
        ``limit`` of them waiting before the feed overflows."""
        ...

    def publish(self, address: str, folder: str, *, origin: object | None = None) -> None:
        """A change this process made (any thread): wake the watchers here and elsewhere,
        but not the one ``origin`` owns."""
        ...

    def wake_remote(self, address: str | None, folder: str | None) -> None:
        """A change another process made (on the loop); None: anything may have changed."""
        ...


class ChangeRelay(Protocol):
    """Carries this process's changes to the other processes (the socket link to the
    master, or the master's links to its workers); what they send back comes in through
    ``ChangeBus.wake_remote``."""

    def send_change(self, address: str, folder: str) -> None:
        """Tell the other processes (from any thread; never blocks)."""
        ...


class Door(Protocol):
    """The one way into the queue (``cleanup/door.py``, Postfix cleanup(8))."""

    def new_queue_id(self) -> str:
        """A queue id of this process's shard (the mail it queues, it delivers)."""
        ...

    async def clean(self, content: bytes, info: CleanupInput) -> CleanupResult:
        """The cleanup pipeline: trace and Message-ID headers, canonical maps, filters."""
        ...

    def canonical_recipient(self, address: str) -> str:
        """The envelope recipient as cleanup's canonical maps rewrite it."""
        ...

    def expand(self, recipients: list[Recipient]) -> tuple[list[Recipient], list[tuple[str, str]]]:
        """Virtual aliases: one recipient per final destination, and the failed branches."""
        ...

    async def submit(self, envelope: Envelope, content: bytes) -> str:
        """Expand, then queue durably; the queue id once it is on disk (only then 250).
        ReplyError when the door refuses the message (forwarding only to a forged sender)."""
        ...


class FreeSpace(Protocol):
    """Free bytes of the spool's file system (``queue.spool.FreeSpace``)."""

    @property
    def path(self) -> Path: ...

    def free_bytes(self) -> int: ...

    def shortfall(self, needed_bytes: int) -> int:
        """How many bytes are missing for ``needed_bytes`` to be free (0: enough)."""
        ...


class SpoolSpace(Protocol):
    """What SMTP asks of the spool: its room (queue.min_free_bytes at MAIL FROM)."""

    @property
    def free_space(self) -> FreeSpace: ...


class Login(Protocol):
    """Passwords and SASL steps checked against the directory, with failure counting and
    the tarpit (``directory.authenticator.Authenticator``)."""

    async def check_password(
        self, ip: str, username: str, password: str, *, mechanism: str = "PLAIN"
    ) -> AuthResult: ...

    async def resolve_step(self, ip: str, mech: Mechanism, step: Step) -> Step: ...

    async def settle(
        self, ip: str, exchange: SaslExchange, action: Resolve | SendChallenge | Outcome
    ) -> SendChallenge | Outcome: ...


class RecipientResolver(Protocol):
    """Address classes and who may send as whom (``resolve.resolver.Resolver``)."""

    def check_recipient(
        self,
        address: str,
        *,
        authenticated: bool,
        client_is_local: bool = False,
        quota_check: Callable[[str], Reply | None] | None = None,
    ) -> Reply | None: ...

    def resolve(self, address: str) -> Resolution: ...

    def is_ours(self, domain: str) -> bool: ...

    def sender_allowed(self, account: str, sender: str) -> bool: ...


class MailboxDelivery(Protocol):
    """Local delivery (``deliver.mailbox.MailboxAgent``): LMTP, and the quota at RCPT and
    APPEND."""

    def quota_reply(self, account: str, size: int) -> Reply | None: ...

    async def deliver(
        self,
        *,
        queue_id: str,
        sender: str,
        recipient: str,
        account: str,
        content: bytes,
        verdict_folder: str = "",
        extension: str = "",
        verdict: Verdict | None = None,
        original_recipient: str = "",
        client_ip: str = "",
        client_host: str = "",
        auth_user: str = "",
        lmtp: bool = False,
    ) -> MailboxResult: ...

    async def deliver_table_mailbox(
        self, *, queue_id: str, sender: str, recipient: str, path: str, content: bytes
    ) -> MailboxResult: ...


class SpamTrainer(Protocol):
    """Learns from what IMAP users say is junk (``spam/training.MailboxTrainer``). Both
    calls return at once: the learning happens on a thread of its own."""

    def messages_moved(self, account: str, source: str, target: str, uids: Sequence[int]) -> None:
        """MOVE or COPY of ``uids`` (their UIDs in ``target``) out of ``source``."""
        ...

    def keywords_added(
        self, account: str, folder: str, uids: Sequence[int], keywords: Iterable[str]
    ) -> None:
        """STORE that added ``keywords`` ($Junk, $NotJunk, ...) to ``uids`` of ``folder``."""
        ...


class MailRuntime(Protocol):
    """The mail system of this process (``server.mail.MailSystem``)."""

    @property
    def store(self) -> MailStore: ...

    @property
    def authenticator(self) -> Login: ...

    @property
    def resolver(self) -> RecipientResolver: ...

    @property
    def mailbox(self) -> MailboxDelivery: ...

    @property
    def door(self) -> Door: ...

    @property
    def spool(self) -> SpoolSpace: ...

    @property
    def changes(self) -> ChangeBus | None:
        """None until the mail system runs on its event loop."""
        ...

    @property
    def policies(self) -> list[Policy]:
        """Asked at MAIL FROM and RCPT TO after the built-in checks (receive/policy.py)."""
        ...

    @property
    def spam_trainer(self) -> SpamTrainer | None:
        """Bayes learning from IMAP Junk moves and flags; None when Bayes is off."""
        ...


class Metrics(Protocol):
    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        ...


class WebRuntime(Protocol):
    """What the HTTP listener uses (``server.app.Server``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def directory(self) -> Directory: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the server stops: sessions close idle connections at once."""
        ...

    def on_reload(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after each successful reload (SIGHUP), the new settings in place
        (the TLS listeners load their certificates again: ``tls/streams.py``)."""
        ...


class SessionRuntime(WebRuntime, Protocol):
    """What the SMTP, LMTP, IMAP and POP3 services use (``server.app.Server``): the mail
    system, and the connection and session counts over every process."""

    @property
    def mail(self) -> MailRuntime | None:
        """None in a process that runs no mail listener."""
        ...

    def refusal(self, listener: str, ip: str, *, accepted: bool = True) -> Refusal | None:
        """Whether this connection is over a limit (asked as the service starts)."""
        ...

    def connection_quit(self) -> None:
        """Called as a session answers QUIT/LOGOUT, before the answer is written: its
        connection no longer counts toward the limits."""
        ...

    def sessions(self, key: str) -> int:
        """Open sessions counted under ``key`` (an account's IMAP sessions), every process."""
        ...

    def session_opened(self, key: str) -> None: ...

    def session_closed(self, key: str) -> None: ...

    async def sessions_closed(self, *keys: str) -> None:
        """``session_closed`` for each key, returning once every process counts them no
        more (LOGOUT waits for this before its OK: a client logging in again at once must
        not find its old session counted)."""
        ...
