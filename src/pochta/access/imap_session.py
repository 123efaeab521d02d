"""The state and plumbing of one IMAP session (RFC 9051 §3 states), shared by the command
modules: the output buffer and its flush (with COMPRESS=DEFLATE), the parser events and the
timers that bound each read, store calls run in threads, the capabilities, and folder names
on the wire (modified UTF-7 unless UTF8=ACCEPT).
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pochta.access.imap_errors import Closed, No
from pochta.access.imap_timers import SessionTimers
from pochta.access.mailbox_view import MailboxView
from pochta.logs import get_logger
from pochta.netaddr import is_loopback
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.values import IMAPValue
from pochta.store import (
    INBOX,
    MailStore,
    StoreUnavailable,
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
        self.ip = ip
        s = self.server.settings.imap
        self.parser = C.new_parser(s)
        self.timers = SessionTimers(s, time.monotonic())
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
        self._logout = False
        self._counted_account: str | None = None
        self._counted_userip: str | None = None
        self._auth_failures = 0  # failed LOGIN/AUTHENTICATE on this connection
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

    async def _read(self, wait: float) -> bytes:
        data = await asyncio.wait_for(self.reader.read(READ_CHUNK), wait)
        if self._inflate is not None and data:
            data = self._inflate.decompress(data)
        return data

    async def next_event(self) -> Any:
        """The next parser event, reading (and flushing what we have to say) as needed.
        Reads wait as long as the idle, login and command clocks allow (imap_timers.py)."""
        while True:
            event = self.parser.next_event()
            if event is not None:
                if not isinstance(event, C.ContinuationRequest):
                    self.timers.command_done()
                return event
            await self.flush()
            wait = self.timers.next_wait(
                time.monotonic(),
                logged_in=self.user is not None,
                in_command=self.parser.in_command,
                literal_octets=self.parser.literal_octets,
            )
            try:
                data = await self._read(wait.seconds)
            except TimeoutError:
                log.info("timeout", client=self.ip, user=self.user, reason=wait.bye)
                self.send(b"* BYE " + wait.bye.encode() + b"\r\n")
                raise Closed from None
            if not data:
                raise Closed
            self.parser.feed(data)

    async def blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store call in a thread; store failures become NO answers."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except StoreUnavailable as exc:
            log.error("store_failed", user=self.user, error=str(exc))
            raise No("Server error, try again later", "UNAVAILABLE") from exc

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
