"""The state and plumbing of one IMAP session (RFC 9051 §3 states), shared by the command
modules: the output buffer and its flush (with COMPRESS=DEFLATE), the parser events and the
timers that bound each read, store calls run in threads, the capabilities, and folder names
on the wire (modified UTF-7 unless UTF8=ACCEPT).

The loop waits for the client and, at the same time, for the wake sources of
``pending_pushes`` (while idling, the selected folder's change event; NOTIFY adds its own):
``next_event`` returns ``PushDue`` when one fires, and the loop calls ``push_updates``.
A read that a wake interrupted is kept and awaited again, so no input is ever lost.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pochta.access.imap_errors import Closed, No
from pochta.access.imap_timers import SessionTimers
from pochta.access.mailbox_view import MailboxView
from pochta.directory.sasl_exchange import SaslExchange
from pochta.logs import get_logger
from pochta.netaddr import is_loopback
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command, CommandError, CommandParser, RawLine
from pochta.protocols.imap.session_state import (
    AuthenticateLine,
    IdleDone,
    IdleExpired,
    IdleKeepalive,
    SessionState,
)
from pochta.protocols.imap.values import IMAPValue
from pochta.quick_ack import ack_now
from pochta.store import (
    INBOX,
    MailStore,
    StoreUnavailable,
    WouldBlock,
)

if TYPE_CHECKING:
    from pochta.access.imap import IMAPService
    from pochta.runtime import MailRuntime

log = get_logger("imap")

READ_CHUNK = 65536
T = TypeVar("T")


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# Capabilities of every state; the listener adds STARTTLS / LOGINDISABLED / AUTH= as fits.
BASE_CAPABILITIES = (
    "IMAP4rev1",
    "IMAP4rev2",
    "LITERAL+",
    "SASL-IR",
    "ENABLE",
    "ID",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "ESEARCH",
    "CONDSTORE",
    "QRESYNC",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "QUOTA=RES-MESSAGE",
    "STATUS=SIZE",
    "MULTIAPPEND",
    "CATENATE",
    "URLAUTH",
    "URLAUTH=BINARY",
    "BINARY",
    "UTF8=ACCEPT",
    "COMPRESS=DEFLATE",
    "SORT",
    "SORT=DISPLAY",
    "ESORT",
    "CONTEXT=SEARCH",
    "CONTEXT=SORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "NOTIFY",
)


@dataclass(frozen=True, slots=True)
class PushDue:
    """A wake source of ``pending_pushes`` fired while the loop waited for the client."""


# What the connection loop acts on: the parser's events as the continuation state reads them
# (protocols/imap/session_state.py), and the pushes.
SessionEvent = (
    Command | C.ContinuationRequest | CommandError | RawLine | AuthenticateLine | IdleDone | PushDue
)


class SessionBase:
    """One IMAP connection's state and plumbing: what the command modules share (the
    connection loop in ``imap.py``; the selected mailbox in ``imap_selected.py``; folders in
    ``imap_folders.py``; messages in ``imap_messages.py``)."""

    def __init__(
        self,
        service: IMAPService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ip: str,
    ) -> None:
        self.service = service
        self.server = service.server
        self.reader = reader
        self.writer = writer
        self._socket = writer.get_extra_info("socket")
        self.ip = ip
        s = self.server.settings.imap
        self.clock: Callable[[], float] = time.monotonic
        # The continuation state (AUTHENTICATE, IDLE) over the command parser.
        self.state = SessionState(C.new_parser(s))
        self.timers = SessionTimers(s, self.clock())
        self.tls_active = service.ssl_context is not None
        self.user: str | None = None
        self.view: MailboxView | None = None
        self.readonly = False
        self.enabled: set[str] = set()
        self.out = bytearray()
        self._deflate: Any = None
        self._inflate: Any = None
        self._dirty: asyncio.Event | None = None
        self._unwatch: Callable[[], None] | None = None
        # This session's CHANGE_ORIGIN token (set in ``run``): its own STOREs and EXPUNGEs
        # do not set ``_dirty``, for it reports them itself.
        self.change_origin = object()
        self._logout = False
        self._counted_account: str | None = None
        self._counted_userip: str | None = None
        self._auth_failures = 0  # failed LOGIN/AUTHENTICATE on this connection
        self._sasl: SaslExchange | None = None  # the AUTHENTICATE exchange in progress
        # A read that a push interrupted: awaited again by the next wait, so nothing is lost.
        self._read_task: asyncio.Future[bytes] | None = None
        self._keywords: set[str] = set()  # announced in FLAGS for the selected folder
        self._recent_asked = 0  # the highest UID of the selected folder asked about \Recent
        # Work to start once the answer is out (Bayes learning of Junk moves and flags).
        self._after_answer: list[Callable[[], None]] = []

    # -- plumbing -------------------------------------------------------------------------

    @property
    def mail(self) -> MailRuntime:
        mail = self.server.mail
        assert mail is not None
        return mail

    @property
    def store(self) -> MailStore:
        return self.mail.store

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    def send(self, data: bytes) -> None:
        self.out += data

    def untagged(self, *items: IMAPValue | bytes) -> None:
        self.send(C.untagged(*items))

    async def flush(self) -> None:
        if not self.out:
            return
        data = bytes(self.out)
        self.out.clear()
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)
        await self.writer.drain()

    @property
    def parser(self) -> CommandParser:
        return self.state.parser

    @parser.setter
    def parser(self, parser: CommandParser) -> None:
        self.state.reset(parser)

    async def _read_raw(self) -> bytes:
        data = await self.reader.read(READ_CHUNK)
        if self._inflate is not None and data:
            data = self._inflate.decompress(data)
        return data

    async def _read(self, wait: float) -> bytes | None:
        """The client's next bytes (b"": it closed), or None when a wake source of
        ``pending_pushes`` fired first. TimeoutError after ``wait`` seconds."""
        sources = self.pending_pushes()
        if any(source.is_set() for source in sources):
            return None
        if not sources and self._read_task is None:
            async with asyncio.timeout(wait):  # no task of its own, as wait_for makes
                return await self._read_raw()
        if self._read_task is None:
            self._read_task = asyncio.ensure_future(self._read_raw())
        read = self._read_task
        wakes = [asyncio.ensure_future(source.wait()) for source in sources]
        waiters: set[asyncio.Future[Any]] = {read, *wakes}
        try:
            done, _ = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wake in wakes:
                wake.cancel()
        if read in done:
            self._read_task = None
            return read.result()
        if done:
            return None
        raise TimeoutError

    def cancel_read(self) -> None:
        """At the end of the session: drop a read still pending after a push."""
        if self._read_task is not None:
            self._read_task.cancel()
            self._read_task = None

    async def next_event(self) -> SessionEvent:
        """The next event, reading (and flushing what we have to say) as needed. Reads wait
        as long as the idle, login and command clocks allow (imap_timers.py), and IDLE's
        own timers (session_state.py); a wake source of ``pending_pushes`` gives ``PushDue``."""
        while True:
            event = self.state.next_event()
            if event is not None:
                if not isinstance(event, C.ContinuationRequest):
                    self.timers.command_done()
                return event
            now = self.clock()
            due = self.state.timer_event(now)
            if isinstance(due, IdleExpired):
                # RFC 2177 §3: the server may log out a client idle for too long.
                log.info("timeout", client=self.ip, user=self.user, reason="idle")
                self.send(b"* BYE Autologout; idle for too long\r\n")
                raise Closed
            if isinstance(due, IdleKeepalive):
                self.send(b"* OK Still here\r\n")
            await self.flush()
            wait = self.timers.next_wait(
                now,
                logged_in=self.user is not None,
                in_command=self.parser.in_command,
                literal_octets=self.parser.literal_octets,
            )
            timer = self.state.seconds_to_timer(now)
            seconds = wait.seconds if timer is None else min(wait.seconds, timer)
            if self.parser.in_command:
                # The rest of a command is to come (a literal, the CRLF after one): ACK what
                # came now, or a client that wrote it in two writes waits 40 ms for the
                # kernel's delayed ACK (quick_ack.py).
                ack_now(self._socket)
            try:
                data = await self._read(seconds)
            except TimeoutError:
                if timer is not None and timer <= wait.seconds:
                    continue  # IDLE's keep-alive or end: timer_event says which
                log.info("timeout", client=self.ip, user=self.user, reason=wait.bye)
                self.send(b"* BYE " + wait.bye.encode() + b"\r\n")
                raise Closed from None
            if data is None:
                return PushDue()
            if not data:
                raise Closed
            self.parser.feed(data)

    # -- pushes: what wakes the loop besides the client ---------------------------------------

    def pending_pushes(self) -> list[asyncio.Event]:
        """The events that wake the loop while it waits for the client; when one is set,
        ``next_event`` returns ``PushDue`` and the loop calls ``push_updates``. IDLE
        (imap_selected.py) gives the selected folder's change event while idling; NOTIFY
        (RFC 5465) extends the list with its own, between commands too."""
        return []

    async def push_updates(self) -> None:
        """Send what the fired wake sources have to say, and clear them (the loop flushes)."""

    async def blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store call in a thread; store failures become NO answers."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc

    async def reading(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store read that takes ``quick``: made here on the event loop, where the data
        is one index read or one small file away (no thread hand-off, which costs more
        than such a read), and again in a thread when the store says it would block
        (:class:`WouldBlock`: an account to open, a folder to rescan)."""
        try:
            return func(*args, quick=True, **kwargs)
        except WouldBlock:
            return await self.blocking(func, *args, **kwargs)  # type: ignore[no-any-return]
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc

    async def writing(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store change that takes ``quick`` (STORE, EXPUNGE): made here on the event
        loop when the index is free, and durable before this returns (the group commit of
        ``quick_sync.py``); in a thread when the store says it would block."""
        assert self.user is not None
        try:
            result = func(*args, quick=True, **kwargs)
        except WouldBlock:
            return await self.blocking(func, *args, **kwargs)  # type: ignore[no-any-return]
        except StoreUnavailable as exc:
            raise self._unavailable(exc) from exc
        if self.store.quick_writes_pending(self.user):
            try:
                await self.service.quick_sync().sync(self.user)
            except StoreUnavailable as exc:
                raise self._unavailable(exc) from exc
        return result

    def _unavailable(self, exc: StoreUnavailable) -> No:
        log.error("store_failed", user=self.user, error=str(exc))
        return No("Server error, try again later", "UNAVAILABLE")

    # -- capabilities -----------------------------------------------------------------------

    def plaintext_ok(self) -> bool:
        if self.tls_active:
            return True
        return self.server.settings.imap.allow_plaintext_on_loopback and is_loopback(self.ip)

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        caps.insert(caps.index("MULTIAPPEND") + 1, f"APPENDLIMIT={self._append_limit()}")
        if self.user is None:
            if not self.tls_active and self.service.tls is not None:
                caps.append("STARTTLS")
            if self.plaintext_ok():
                caps += ["AUTH=PLAIN", "AUTH=LOGIN", "AUTH=SCRAM-SHA-256"]
            else:
                caps.append("LOGINDISABLED")
        return caps

    def _append_limit(self) -> int:
        return self.server.settings.imap.max_literal_bytes

    # -- authenticated: folders -------------------------------------------------------------

    def wire_name(self, name: str) -> str:
        """A folder name as the client sees it (modified UTF-7 unless UTF8=ACCEPT)."""
        return name if self.utf8 else C.encode_mailbox(name)

    def folder_name(self, wire: str) -> str:
        """The client's mailbox name in the store's words."""
        if wire.upper() == INBOX:
            return INBOX
        if not self.utf8:
            try:
                wire = C.decode_mailbox(wire)
            except ValueError:
                raise No("Invalid mailbox name (modified UTF-7)", "CANNOT") from None
        if wire.upper().startswith(INBOX + "."):
            wire = INBOX + wire[len(INBOX) :]
        return wire
