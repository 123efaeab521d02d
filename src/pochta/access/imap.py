"""The IMAP listeners (143 with STARTTLS, 993 with implicit TLS): one loop per connection,
read → parse → act → write, over the mailbox store.

The grammar lives in ``pochta.protocols.imap``; this module decides what each command does
in each state (RFC 9051 §3: not authenticated, authenticated, selected, logout), keeps the
selected folder's view (``mailbox_view.py``) in step with other sessions and deliveries, and
writes the answers. Store calls block on disk, so they run in threads (``asyncio.to_thread``);
the session awaits each before it reads the next command, which keeps the replies of a
pipelining client in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from pochta import __version__
from pochta.access import imap_commands as C
from pochta.access.binary_content import encode_binary_parts, needs_encoding
from pochta.access.imap_fetch import FetchFailed, fetch_messages
from pochta.access.imap_headers import header_fields, raw_fields
from pochta.access.imap_items import FetchItem
from pochta.access.imap_list import ListOptions, canonical_pattern, list_entries
from pochta.access.imap_search import Key, SearchContext, esearch_parts, evaluate
from pochta.access.imap_timers import SessionTimers
from pochta.access.mailbox_view import MailboxView, ViewUpdate
from pochta.directory.sasl import server_mechanism
from pochta.directory.sasl_exchange import (
    Authenticated,
    BadBase64,
    Cancelled,
    Failed,
    Resolve,
    SaslExchange,
    SendChallenge,
)
from pochta.logs import get_logger
from pochta.mime.sort_thread import (
    SortInfo,
    parse_sent_date,
    render_threads,
    sort_messages,
    thread_orderedsubject,
    thread_references,
)
from pochta.netaddr import is_loopback
from pochta.protocols.imap.render import render
from pochta.protocols.imap.values import Atom, IMAPValue
from pochta.store import (
    INBOX,
    FlagMode,
    FlagUpdate,
    FolderExists,
    FolderInfo,
    MailStore,
    MessageInfo,
    NoSuchFolder,
    StoreError,
    StoreUnavailable,
    WouldBlock,
)
from pochta.tls.streams import reloadable_tls_context, upgrade_to_tls

if TYPE_CHECKING:
    from pochta.runtime import MailRuntime, SessionRuntime

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
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
)


class Bad(Exception):
    """Answer the command with BAD (a protocol error: wrong state, wrong arguments)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class No(Exception):
    """Answer the command with NO (refused or failed), with an optional response code."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class IMAPService:
    def __init__(self, server: SessionRuntime, listener: str, *, implicit_tls: bool) -> None:
        self.server = server
        self.name = listener
        self.tls = reloadable_tls_context(server)
        if implicit_tls and self.tls is None:
            raise RuntimeError(f"listen.{listener} needs a TLS certificate; see tls.cert_file")
        self.ssl_context = self.tls if implicit_tls else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        # imap.max_connections and max_connections_per_ip, over every process (server/app.py).
        refused = self.server.refusal(self.name, ip)
        if refused is not None:
            # RFC 9051 §7.1.5: BYE as the greeting, the server will not serve this client;
            # RFC 5530 §3 UNAVAILABLE: a temporary failure, try again later.
            why = "from your address" if refused == "per_ip" else "try again later"
            writer.write(f"* BYE [UNAVAILABLE] Too many connections, {why}\r\n".encode())
            await writer.drain()
            log.warning("too_many_connections", listener=self.name, client=ip, limit=refused)
            return
        await Session(self, reader, writer, ip).run()


class _Closed(Exception):
    """The client went away (EOF) or the session ended."""


class Session:
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
                raise _Closed from None
            if not data:
                raise _Closed
            self.parser.feed(data)

    async def blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store call in a thread; store failures become NO answers."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except StoreUnavailable as exc:
            log.error("store_failed", user=self.user, error=str(exc))
            raise No("Server error, try again later", "UNAVAILABLE") from exc

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("connect", listener=self.service.name, client=self.ip)
        self.send(
            b"* OK [CAPABILITY " + " ".join(self.capabilities()).encode() + b"] pochta ready\r\n"
        )
        try:
            while not self._logout:
                event = await self.next_event()
                await self.dispatch(event)
            await self.flush()
        except (_Closed, ConnectionError, ssl.SSLError):
            with contextlib.suppress(Exception):
                await self.flush()
        finally:
            self._stop_watching()
            self._release_sessions()
            log.info("disconnect", listener=self.service.name, client=self.ip, user=self.user)

    async def dispatch(self, event: Any) -> None:
        if isinstance(event, C.ContinuationRequest):
            self.send(b"+ Ready for literal data\r\n")
            return
        if isinstance(event, C.CommandError):
            if event.fatal:
                self.send(C.tagged(event.tag, "BAD", event.text))
                self.send(b"* BYE " + event.text.encode() + b"; closing the connection\r\n")
                log.info("refused", client=self.ip, reason=event.text)
                raise _Closed
            if event.too_big:
                self.send(C.tagged(event.tag, "NO", event.text, "TOOBIG"))
            else:
                self.send(C.tagged(event.tag, "BAD", event.text))
            return
        if isinstance(event, C.RawLine):
            self.send(b"* BAD Unexpected continuation line\r\n")
            return
        cmd = event
        name = C.command_name(cmd)
        handler: Callable[[Any], Awaitable[str | None]] | None = getattr(
            self, "cmd_" + name.lower().replace(" ", "_"), None
        )
        tag = cmd.tag
        if handler is None:
            self.send(C.tagged(tag, "BAD", f"{name} is not supported"))
            return
        try:
            state_error = self._check_state(name)
            if state_error:
                raise Bad(state_error)
            text = await handler(cmd)
            if text is not None:
                await self._updates_after(name, cmd)
                self.send(C.tagged(tag, "OK", text))
        except Bad as exc:
            self.send(C.tagged(tag, "BAD", exc.text, exc.code))
        except C.BadArgs as exc:
            self.send(C.tagged(tag, "BAD", str(exc)))
        except No as exc:
            self.send(C.tagged(tag, "NO", exc.text, exc.code))
            if exc.code == "AUTHENTICATIONFAILED":
                self._auth_failed()
        except StoreError as exc:
            self.send(C.tagged(tag, "NO", str(exc), _store_code(exc)))
        if self._after_answer:
            await self._answer_then_learn()

    async def _answer_then_learn(self) -> None:
        """Send the answer, then hand the learning to the trainer's thread: the client
        never waits for the Bayes statistics."""
        jobs, self._after_answer = self._after_answer, []
        try:
            await self.flush()
        finally:
            for job in jobs:
                job()

    NOT_AUTH_ONLY = frozenset({"LOGIN", "AUTHENTICATE", "STARTTLS"})
    # COMPRESS (RFC 4978 §3) only after login, as Dovecot: before it, an anonymous client
    # would get a deflate stream's memory for nothing.
    ANY_STATE = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "ID"})
    SELECTED_ONLY = frozenset(
        {
            "CHECK",
            "CLOSE",
            "UNSELECT",
            "EXPUNGE",
            "SEARCH",
            "FETCH",
            "STORE",
            "COPY",
            "MOVE",
            "SORT",
            "THREAD",
        }
    )

    def _check_state(self, name: str) -> str | None:
        base = name.removeprefix("UID ")
        if base in self.ANY_STATE:
            return None
        if self.user is None:
            return None if base in self.NOT_AUTH_ONLY else "Log in first"
        if base in self.NOT_AUTH_ONLY:
            return "Already logged in"
        if base in self.SELECTED_ONLY and self.view is None:
            return "Select a mailbox first"
        return None

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

    # -- any state --------------------------------------------------------------------------

    async def cmd_capability(self, cmd: Any) -> str:
        self.untagged(Atom("CAPABILITY"), *[Atom(c) for c in self.capabilities()])
        return "CAPABILITY completed"

    async def cmd_noop(self, cmd: Any) -> str:
        return "NOOP completed"

    def _counted(self) -> list[str]:
        """The keys this session counts under (once each: released at LOGOUT, else when the
        connection ends)."""
        keys = [k for k in (self._counted_account, self._counted_userip) if k is not None]
        self._counted_account = self._counted_userip = None
        return keys

    def _release_sessions(self) -> None:
        """The connection ended: this session no longer counts against the account's and
        the account-from-this-address limits."""
        for key in self._counted():
            self.server.session_closed(key)

    async def cmd_logout(self, cmd: Any) -> str | None:
        self.server.connection_quit()  # before the BYE goes out: no longer counted (app.py)
        # The same for the session limits, and confirmed by every process before the OK: a
        # client that logs in again as soon as it reads the OK, on any worker process, must
        # not find its old session still counted (server/workers.py, W and K).
        await self.server.sessions_closed(*self._counted())
        self.send(b"* BYE pochta logging out\r\n")
        self.send(C.tagged(cmd.tag, "OK", "LOGOUT completed"))
        self._logout = True
        return None

    async def cmd_id(self, cmd: Any) -> str:
        # RFC 2971: the client's ID is logged; ours says little (no version leak needed,
        # but it helps support).
        params = C.id_params(cmd)
        if params:
            log.info("client_id", client=self.ip, **{k[:32]: v[:128] for k, v in params.items()})
        self.untagged(Atom("ID"), ["name", "pochta", "version", __version__])
        return "ID completed"

    async def cmd_compress(self, cmd: Any) -> str | None:
        # RFC 4978 §3
        if C.compress_mechanism(cmd).upper() != "DEFLATE":
            raise Bad("Unknown compression mechanism")
        if self._deflate is not None:
            raise No("Compression is active already", "COMPRESSIONACTIVE")
        self.send(C.tagged(cmd.tag, "OK", "DEFLATE active"))
        await self.flush()
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        # Anything the parser holds arrived before; what is still in the stream is
        # compressed and goes through the inflater on the next read.
        return None

    # -- not authenticated --------------------------------------------------------------------

    async def cmd_starttls(self, cmd: Any) -> str | None:
        tls = self.service.tls
        if tls is None or self.tls_active:
            raise Bad("TLS is not available here")
        self.send(C.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
        await self.flush()
        # RFC 9051 §6.2.1 / CVE-2011-0411: nothing sent before the handshake counts.
        self.parser = C.new_parser(self.server.settings.imap)
        if not await upgrade_to_tls(self.reader, self.writer, tls, self.ip, log):
            raise _Closed
        self.tls_active = True
        return None

    def _auth_failed(self) -> None:
        """Count a failed LOGIN/AUTHENTICATE (its NO is already queued); after
        imap.max_auth_failures of them the connection ends, as Dovecot's imap-login does
        ("Disconnected (auth failed, N attempts)"): a guesser must reconnect, and meets the
        tarpit and the connection limits again."""
        self._auth_failures += 1
        if self._auth_failures >= self.server.settings.imap.max_auth_failures:
            log.info("auth_failures_closed", client=self.ip, failures=self._auth_failures)
            self.send(b"* BYE Too many authentication failures; closing the connection\r\n")
            raise _Closed

    async def cmd_login(self, cmd: Any) -> str:
        if not self.plaintext_ok():
            raise No("Use STARTTLS first", "PRIVACYREQUIRED")
        user, password = C.login_args(cmd)
        result = await self.mail.authenticator.check_password(self.ip, user, password)
        if not result.ok or result.account is None:
            log.info("auth_failed", client=self.ip, mechanism="LOGIN", reason=result.reason)
            raise No("Authentication failed", "AUTHENTICATIONFAILED")
        await self._logged_in(result.account.address)
        return "LOGIN completed"

    async def cmd_authenticate(self, cmd: Any) -> str:
        if not self.plaintext_ok():
            raise No("Use STARTTLS first", "PRIVACYREQUIRED")
        mechanism, initial = C.authenticate_args(cmd)
        try:
            sasl = SaslExchange(server_mechanism(mechanism))
        except ValueError:
            raise No("Unsupported authentication mechanism", "CANNOT") from None
        action: Resolve | SendChallenge | Authenticated | Failed | Cancelled | BadBase64
        action = sasl.start(initial)
        while True:
            if isinstance(action, Resolve):
                action = await self.mail.authenticator.settle(self.ip, sasl, action)
            elif isinstance(action, SendChallenge):
                self.send(b"+ " + base64.b64encode(action.data) + b"\r\n")  # RFC 9051 §6.2.2
                self.parser.expect_line()
                action = sasl.answer_line(C.raw_line(await self.next_event()))
            else:
                break
        if isinstance(action, Cancelled):
            raise Bad("Authentication cancelled")  # RFC 9051 §6.2.2: "*" gets a tagged BAD
        if isinstance(action, BadBase64):
            raise Bad("Invalid base64")  # RFC 9051 §6.2.2: so does invalid base64
        if isinstance(action, Failed):
            log.info(
                "auth_failed", client=self.ip, mechanism=sasl.mechanism.name, reason=action.reason
            )
            raise No("Authentication failed", "AUTHENTICATIONFAILED")
        await self._logged_in(action.success.authcid)
        return "AUTHENTICATE completed"

    async def _logged_in(self, address: str) -> None:
        s = self.server.settings.imap
        key = f"imap:{address.lower()}"
        userip = f"imap-userip:{self.ip}/{address.lower()}"
        # Counted over every process (server/workers.py); 0 is no limit. RFC 9051 §7.1: LIMIT.
        limit = s.max_connections_per_account
        if limit and self.server.sessions(key) >= limit:
            log.warning("too_many_sessions", client=self.ip, user=address)
            raise No("Too many sessions for this account", "LIMIT")
        # Dovecot's mail_max_userip_connections: sessions of one account from one address.
        limit = s.max_userip_connections
        if limit and self.server.sessions(userip) >= limit:
            log.warning("too_many_sessions", client=self.ip, user=address, limit="userip")
            raise No("Too many sessions for this account from your address", "LIMIT")
        self.server.session_opened(key)
        self._counted_account = key
        self.server.session_opened(userip)
        self._counted_userip = userip
        self.user = address
        self.parser.authenticated = True  # the limits after login (APPEND, larger literals)
        log.info("login", client=self.ip, user=address, tls=self.tls_active)
        self.untagged(Atom("CAPABILITY"), *[Atom(c) for c in self.capabilities()])

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

    async def cmd_enable(self, cmd: Any) -> str:
        # RFC 5161
        done = []
        for cap in C.enable_args(cmd):
            upper = cap.upper()
            if upper in ("CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT") and (
                upper not in self.enabled
            ):
                self.enabled.add(upper)
                if upper == "QRESYNC":
                    self.enabled.add("CONDSTORE")
                done.append(Atom(cap))
        self.untagged(Atom("ENABLED"), *done)
        return "ENABLE completed"

    async def cmd_namespace(self, cmd: Any) -> str:
        # RFC 2342: one personal namespace, no others.
        self.untagged(Atom("NAMESPACE"), [["", "."]], None, None)
        return "NAMESPACE completed"

    async def cmd_create(self, cmd: Any) -> str:
        wire, special = C.create_args(cmd)
        name = self.folder_name(wire).rstrip(".")
        if name.upper() == INBOX:
            raise No("INBOX exists already", "ALREADYEXISTS")
        if special and len(special) > 1:
            raise No("One special use per folder", "USEATTR")
        try:
            await self.blocking(
                self.store.create_folder,
                self.user,
                name,
                special_use=special[0] if special else None,
            )
        except FolderExists as exc:
            raise No(str(exc), "ALREADYEXISTS") from exc
        return "CREATE completed"

    async def cmd_delete(self, cmd: Any) -> str:
        name = self.folder_name(C.mailbox_arg(cmd))
        if name == INBOX:
            raise No("INBOX cannot be deleted", "CANNOT")
        if self.view is not None and self.view.name == name:
            self._close_view()
        await self.blocking(self.store.delete_folder, self.user, name)
        return "DELETE completed"

    async def cmd_rename(self, cmd: Any) -> str:
        old, new = C.rename_args(cmd)
        try:
            await self.blocking(
                self.store.rename_folder, self.user, self.folder_name(old), self.folder_name(new)
            )
        except FolderExists as exc:
            raise No(str(exc), "ALREADYEXISTS") from exc
        return "RENAME completed"

    async def cmd_subscribe(self, cmd: Any) -> str:
        await self.blocking(self.store.subscribe, self.user, self.folder_name(C.mailbox_arg(cmd)))
        return "SUBSCRIBE completed"

    async def cmd_unsubscribe(self, cmd: Any) -> str:
        await self.blocking(self.store.unsubscribe, self.user, self.folder_name(C.mailbox_arg(cmd)))
        return "UNSUBSCRIBE completed"

    async def cmd_list(self, cmd: Any) -> str:
        args = C.list_args(cmd)
        if not args.patterns or args.patterns == [""]:
            # RFC 9051 §6.3.9: the empty pattern asks for the separator and root.
            self.untagged(Atom("LIST"), [Atom("\\Noselect")], ".", "")
            return "LIST completed"
        folders, subs = await self.blocking(self._folders_and_subscriptions)
        patterns = [
            self.folder_name(canonical_pattern(args.reference, p))
            if "*" not in p and "%" not in p
            else (
                canonical_pattern(args.reference, p)
                if self.utf8
                else C.decode_mailbox_loose(canonical_pattern(args.reference, p))
            )
            for p in args.patterns
        ]
        options = args.options
        entries = list_entries(folders, subs, patterns, options)
        for entry in entries:
            extra: list[IMAPValue] = []
            if entry.child_info:
                extra = [["CHILDINFO", ["SUBSCRIBED"]]]
            self.untagged(
                Atom("LIST"),
                [Atom(a) for a in entry.attributes],
                ".",
                self.wire_name(entry.name),
                *extra,
            )
            if args.status_items and entry.folder is not None:
                self._status_response(entry.folder, args.status_items)
        return "LIST completed"

    async def cmd_lsub(self, cmd: Any) -> str:
        args = C.list_args(cmd)
        folders, subs = await self.blocking(self._folders_and_subscriptions)
        patterns = [canonical_pattern(args.reference, p) for p in args.patterns]
        for entry in list_entries(folders, subs, patterns, ListOptions(lsub=True)):
            attrs = [a for a in entry.attributes if a in ("\\Noselect",)]
            self.untagged(Atom("LSUB"), [Atom(a) for a in attrs], ".", self.wire_name(entry.name))
        return "LSUB completed"

    def _folders_and_subscriptions(self) -> tuple[list[FolderInfo], list[str]]:
        assert self.user is not None
        return self.store.list_folders(self.user), self.store.list_subscriptions(self.user)

    async def cmd_status(self, cmd: Any) -> str:
        wire, items = C.status_args(cmd)
        name = self.folder_name(wire)
        folders = await self.blocking(self.store.list_folders, self.user)
        folder = next((f for f in folders if f.name == name), None)
        if folder is None:
            raise No(f"No mailbox {wire}", "NONEXISTENT")
        deleted = recent = None
        if "DELETED" in items or "RECENT" in items:
            messages = await self.blocking(self.store.list_messages, self.user, name)
            deleted = sum(1 for m in messages if "\\Deleted" in m.flags)
            claimed = await self.blocking(self.store.claim_recent, self.user, name, 0, claim=False)
            recent = sum(1 for m in messages if m.uid > claimed)
        self._status_response(folder, items, deleted, recent)
        return "STATUS completed"

    def _status_response(
        self,
        folder: FolderInfo,
        items: Iterable[str],
        deleted: int | None = None,
        recent: int | None = None,
    ) -> None:
        values: list[IMAPValue] = []
        for item in items:
            item = item.upper()
            value: int | None = {
                "MESSAGES": folder.messages,
                "UIDNEXT": folder.uidnext,
                "UIDVALIDITY": folder.uidvalidity,
                "UNSEEN": folder.unseen,
                "SIZE": folder.size,
                "RECENT": recent if recent is not None else 0,
                "HIGHESTMODSEQ": folder.highestmodseq,
                "DELETED": deleted,
                "APPENDLIMIT": self._append_limit(),
            }.get(item)
            if value is None:
                continue
            values += [Atom(item), value]
        self.untagged(Atom("STATUS"), self.wire_name(folder.name), values)

    async def cmd_append(self, cmd: Any) -> str:
        wire, messages = C.append_args(cmd)
        name = self.folder_name(wire)
        uids: list[int] = []
        uidvalidity = 0
        for flags, _, data in messages:  # everything is checked before anything is stored
            if len(data) > self._append_limit():
                raise No("Message too large", "TOOBIG")
            bad = [f for f in flags if f.startswith("\\") and f not in SYSTEM_FLAGS]
            if bad:
                raise Bad(f"Flag {bad[0]} cannot be set")
        await self._check_quota(sum(len(data) for _, _, data in messages))
        try:
            for flags, when, data in messages:
                if needs_encoding(data):
                    data = await self.blocking(encode_binary_parts, data)
                done = await self.blocking(
                    self.store.append,
                    self.user,
                    name,
                    data,
                    flags=frozenset(flags),
                    internal_date=when.timestamp() if when is not None else None,
                )
                uids.append(done.uid)
                uidvalidity = done.uidvalidity
        except NoSuchFolder as exc:
            raise No(f"No mailbox {wire}", "TRYCREATE") from exc
        except (StoreError, No):
            # RFC 3502 §4: MULTIAPPEND is all or nothing; take back what went in.
            if uids:
                await self._take_back(name, uids)
            raise
        code = f"APPENDUID {uidvalidity} {C.uid_set_text(uids)}"
        await self._updates_after("APPEND", cmd)
        self.send(C.tagged(cmd.tag, "OK", "APPEND completed", code))
        return None  # type: ignore[return-value]

    async def _check_quota(self, size: int) -> None:
        """RFC 9208 §4.3 (OVERQUOTA): APPEND and COPY refused when the mail would not fit."""
        assert self.user is not None
        reply = await self.blocking(self.mail.mailbox.quota_reply, self.user, size)
        if reply is not None:
            raise No("Quota exceeded: delete some mail first", "OVERQUOTA")

    async def _take_back(self, folder: str, uids: list[int]) -> None:
        assert self.user is not None
        try:
            await asyncio.to_thread(
                self.store.store_flags,
                self.user,
                folder,
                uids,
                FlagMode.ADD,
                frozenset({"\\Deleted"}),
            )
            await asyncio.to_thread(self.store.expunge, self.user, folder, uids)
        except StoreError as exc:
            log.error("append_rollback_failed", user=self.user, folder=folder, error=str(exc))

    async def cmd_getquotaroot(self, cmd: Any) -> str:
        # RFC 9208 §4.3.2: one quota root "" per account, for every folder.
        name = self.folder_name(C.mailbox_arg(cmd))
        folders = await self.blocking(self.store.list_folders, self.user)
        if not any(f.name == name for f in folders):
            raise No(f"No mailbox {name}", "NONEXISTENT")
        self.untagged(Atom("QUOTAROOT"), self.wire_name(name), "")
        await self._quota_response()
        return "GETQUOTAROOT completed"

    async def cmd_getquota(self, cmd: Any) -> str:
        if C.quota_root_arg(cmd) != "":
            raise No("No such quota root", "NONEXISTENT")
        await self._quota_response()
        return "GETQUOTA completed"

    async def _quota_response(self) -> None:
        assert self.user is not None
        account = self.server.directory.get_account(self.user)
        usage = await self.blocking(self.store.quota_usage, self.user)
        resources: list[IMAPValue] = []
        if account is not None and account.quota_bytes > 0:
            # RFC 9208 §5.1: STORAGE in units of 1024 octets.
            resources += [
                Atom("STORAGE"),
                (usage.bytes + 1023) // 1024,
                account.quota_bytes // 1024,
            ]
        limit = self.server.settings.store.default_message_limit
        if limit > 0:
            resources += [Atom("MESSAGE"), usage.messages, limit]
        self.untagged(Atom("QUOTA"), "", resources)

    # -- selecting --------------------------------------------------------------------------

    async def cmd_select(self, cmd: Any) -> str:
        return await self._select(cmd, readonly=False)

    async def cmd_examine(self, cmd: Any) -> str:
        return await self._select(cmd, readonly=True)

    async def _select(self, cmd: Any, *, readonly: bool) -> str:
        args = C.select_args(cmd)
        if args.qresync is not None and not self.qresync:
            raise Bad("Enable QRESYNC first")
        if self.view is not None:
            self._close_view()
            # RFC 9051 §6.3.2 (IMAP4rev2) and RFC 7162 §3.2 (QRESYNC): the CLOSED code
            # marks where the previous mailbox's responses end.
            if self.qresync or self.rev2:
                self.untagged(Atom("OK"), b"[CLOSED] Previous mailbox closed")
        name = self.folder_name(args.mailbox)
        assert self.user is not None
        try:
            changes = await self.blocking(self.store.folder_changes, self.user, name, 0)
        except NoSuchFolder as exc:
            raise No(f"No mailbox {args.mailbox}", "NONEXISTENT") from exc
        if args.condstore:
            self.enabled.add("CONDSTORE")
        view = MailboxView(name, changes)
        self.view = view
        self.readonly = readonly
        self._recent_asked = 0
        await self._claim_recent(claim=not readonly)
        self._watch(name)
        # Every keyword ever set in the folder, not only those messages carry now: the
        # list a client learnt must not shrink (Dovecot keeps them all too).
        keywords = sorted(
            set(changes.keywords) | {k for m in view.info.values() for k in m.keywords}
        )
        self._keywords = set(keywords)
        flags: list[IMAPValue] = [*(Atom(f) for f in SYSTEM_FLAGS), *(Atom(k) for k in keywords)]
        self.untagged(Atom("FLAGS"), flags)
        self.untagged(view.exists, Atom("EXISTS"))
        if not self.rev2:
            self.untagged(len(view.recent), Atom("RECENT"))
        if self.rev2:
            self.untagged(Atom("LIST"), [], ".", self.wire_name(name))
        permanent: list[IMAPValue] = [] if readonly else [*flags, Atom("\\*")]
        self._ok_code("PERMANENTFLAGS " + C.render_text(permanent), "Flags permitted")
        self._ok_code(f"UIDVALIDITY {view.uidvalidity}", "UIDs valid")
        self._ok_code(f"UIDNEXT {view.uidnext}", "Predicted next UID")
        if not self.rev2:
            unseen = next(
                (i + 1 for i, uid in enumerate(view.uids) if "\\Seen" not in view.info[uid].flags),
                None,
            )
            if unseen is not None:
                self._ok_code(f"UNSEEN {unseen}", "First unseen")
        if self.condstore:
            self._ok_code(f"HIGHESTMODSEQ {view.highestmodseq}", "Highest")
        if args.qresync is not None:
            await self._qresync(args.qresync)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.send(
            C.tagged(
                cmd.tag, "OK", "SELECT completed" if not readonly else "EXAMINE completed", mode
            )
        )
        return None  # type: ignore[return-value]

    def _condstore_on(self) -> None:
        """RFC 7162 §3.1: the first command that uses CONDSTORE enables it, and the client
        learns the selected folder's HIGHESTMODSEQ."""
        if self.condstore:
            return
        self.enabled.add("CONDSTORE")
        if self.view is not None:
            self._ok_code(f"HIGHESTMODSEQ {self.view.highestmodseq}", "Highest")

    def _ok_code(self, code: str, text: str) -> None:
        self.send(b"* OK [" + code.encode("utf-8") + b"] " + text.encode() + b"\r\n")

    async def _qresync(self, params: Any) -> None:
        """RFC 7162 §3.2.5: tell what changed since the client's MODSEQ, when its UIDVALIDITY
        is still right."""
        view = self.view
        assert view is not None
        assert self.user is not None
        uidvalidity, modseq, known = params.uidvalidity, params.modseq, params.known_uids
        if uidvalidity != view.uidvalidity:
            return
        changes = await self.blocking(self.store.folder_changes, self.user, view.name, modseq)
        vanished = list(changes.vanished)
        if not changes.complete:
            present = set(view.uids)
            candidates = (
                known.resolve(view.uidnext) if known is not None else range(1, view.uidnext)
            )
            vanished = [u for u in candidates if u not in present]
        elif known is not None:
            allowed = set(known.resolve(view.uidnext))
            vanished = [u for u in vanished if u in allowed]
        if vanished:
            self.send(b"* VANISHED (EARLIER) " + C.uid_set_text(vanished).encode() + b"\r\n")
        for m in changes.changed:
            seq = view.seq_of(m.uid)
            if seq is not None:
                self._flags_fetch(seq, m, with_uid=True)

    def _close_view(self) -> None:
        self.view = None
        self._stop_watching()

    def _watch(self, name: str) -> None:
        self._stop_watching()
        hub = self.mail.changes
        if hub is not None and self.user is not None:
            self._dirty, self._unwatch = hub.watch(self.user, name)

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        self._unwatch = None
        self._dirty = None

    async def cmd_close(self, cmd: Any) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        if not self.readonly:
            # RFC 9051 §6.4.1: expunge silently.
            await self.blocking(self.store.expunge, self.user, view.name, None)
        self._close_view()
        return "CLOSE completed"

    async def cmd_unselect(self, cmd: Any) -> str:
        self._close_view()
        return "UNSELECT completed"

    async def cmd_check(self, cmd: Any) -> str:
        return "CHECK completed"

    # -- untagged updates -------------------------------------------------------------------

    async def _updates_after(self, name: str, cmd: Any) -> None:
        """Tell the client what changed in the selected folder (RFC 9051 §7.5.1: no
        EXPUNGE during FETCH, STORE, SEARCH; their UID forms allow it)."""
        view = self.view
        if view is None or self.user is None:
            return
        # Our own changes to the selected folder are reported at once, not when the
        # store's notification reaches the loop.
        force = name in (
            "NOOP",
            "CHECK",
            "IDLE",
            "SELECT",
            "EXAMINE",
            "APPEND",
            "COPY",
            "UID COPY",
        )
        if not force and (self._dirty is None or not self._dirty.is_set()):
            if view.pending_expunge and name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD"):
                self._send_update(view.flush_expunges(use_vanished=self.qresync))
            return
        if self._dirty is not None:
            self._dirty.clear()
        allow = name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD")
        try:
            try:
                # Usually one index read: cheaper here than a trip to a thread.
                changes = self.store.folder_changes(
                    self.user, view.name, view.highestmodseq, quick=True
                )
            except WouldBlock:
                changes = await asyncio.to_thread(
                    self.store.folder_changes, self.user, view.name, view.highestmodseq
                )
        except NoSuchFolder:
            self.send(b"* BYE The selected mailbox was deleted\r\n")
            raise _Closed from None
        except StoreError:
            return
        if changes.uidvalidity != view.uidvalidity:
            self.send(b"* BYE The mailbox was rebuilt; please reselect it\r\n")
            raise _Closed
        if changes.complete:
            update = view.apply(changes, allow_expunge=allow, use_vanished=self.qresync)
        else:
            current = await asyncio.to_thread(self.store.list_messages, self.user, view.name)
            update = view.resync(current, changes, allow_expunge=allow, use_vanished=self.qresync)
        if update.exists is not None:
            with contextlib.suppress(StoreError):
                await self._claim_recent(claim=not self.readonly)
        self._send_update(update)

    def _send_update(self, update: ViewUpdate) -> None:
        # RFC 9051 §7.3.5: FLAGS (and PERMANENTFLAGS) name a new keyword before any EXISTS
        # or FETCH shows a message carrying it.
        self._announce_keywords(update.keywords)
        for seq in update.expunged:
            self.untagged(seq, Atom("EXPUNGE"))
        if update.vanished:
            self.send(b"* VANISHED " + C.uid_set_text(update.vanished).encode() + b"\r\n")
        if update.exists is not None:
            view = self.view
            assert view is not None
            self.untagged(update.exists, Atom("EXISTS"))
            if not self.rev2:
                self.untagged(len(view.recent), Atom("RECENT"))
        for seq, m in update.flags:
            self._flags_fetch(seq, m, with_uid=True)

    def _announce_keywords(self, keywords: Iterable[str]) -> None:
        """RFC 9051 §7.3.5: a keyword new to the folder is announced in FLAGS first."""
        new = set(keywords) - self._keywords
        if not new:
            return
        self._keywords |= new
        flags: list[IMAPValue] = [
            *(Atom(f) for f in SYSTEM_FLAGS),
            *(Atom(k) for k in sorted(self._keywords)),
        ]
        self.untagged(Atom("FLAGS"), flags)
        if not self.readonly:
            self._ok_code("PERMANENTFLAGS " + C.render_text([*flags, Atom("\\*")]), "Flags")

    def _flag_list(self, m: MessageInfo) -> list[IMAPValue]:
        view = self.view
        names = sorted(m.flags | m.keywords)
        if view is not None and m.uid in view.recent and not self.rev2:
            names.append("\\Recent")
        return [Atom(f) for f in names]

    async def _claim_recent(self, *, claim: bool) -> None:
        r"""RFC 3501 §2.3.2: a message is \Recent in the first session that sees it (EXAMINE
        sees without claiming). The claim is the store's, so it holds across processes and
        restarts."""
        view = self.view
        assert view is not None
        assert self.user is not None
        if self.rev2 or not view.uids or view.uids[-1] <= self._recent_asked:
            return  # IMAP4rev2 has no \Recent (RFC 9051 §2.3.2); or nothing new
        top = self._recent_asked = view.uids[-1]
        claimed = await asyncio.to_thread(
            self.store.claim_recent, self.user, view.name, top, claim=claim
        )
        view.recent.update(u for u in view.uids if u > claimed)

    def _flags_fetch(self, seq: int, m: MessageInfo, *, with_uid: bool) -> None:
        self._announce_keywords(m.keywords)
        items: list[IMAPValue] = []
        if with_uid:
            items += [Atom("UID"), m.uid]
        items += [Atom("FLAGS"), self._flag_list(m)]
        if self.condstore:
            items += [Atom("MODSEQ"), [m.modseq]]
        self.untagged(seq, Atom("FETCH"), items)

    # -- IDLE (RFC 2177) --------------------------------------------------------------------

    async def cmd_idle(self, cmd: Any) -> str:
        self.send(b"+ idling\r\n")
        await self._updates_after("IDLE", cmd)
        await self.flush()
        self.parser.expect_line()
        timeout = self.server.settings.imap.idle_timeout_seconds
        deadline = time.monotonic() + timeout
        reader = asyncio.ensure_future(self.next_event())
        try:
            while True:
                waiters: set[asyncio.Future[Any]] = {reader}
                dirty = None
                if self._dirty is not None:
                    dirty = asyncio.ensure_future(self._dirty.wait())
                    waiters.add(dirty)
                left = deadline - time.monotonic()
                if left <= 0:
                    self.send(b"* BYE Autologout; idle for too long\r\n")
                    raise _Closed
                done, _ = await asyncio.wait(
                    waiters, timeout=min(left, 120), return_when=asyncio.FIRST_COMPLETED
                )
                if dirty is not None and not dirty.done():
                    dirty.cancel()
                if reader in done:
                    event = reader.result()
                    break
                if dirty is not None and dirty in done:
                    await self._updates_after("IDLE", cmd)
                    await self.flush()
                elif not done:
                    # A keep-alive for NAT boxes; RFC 2177 suggests re-IDLE every 29 min.
                    self.send(b"* OK Still here\r\n")
                    await self.flush()
        finally:
            if not reader.done():
                reader.cancel()
        if C.raw_line(event).upper() != b"DONE":
            raise Bad("Expected DONE")
        return "IDLE terminated"

    # -- selected: messages -----------------------------------------------------------------

    def uids_of(self, seqset: Any, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names in the view (ascending; unknown ones dropped)."""
        view = self.view
        assert view is not None
        if not view.uids:
            return []
        if uid:
            wanted = C.resolve_set(seqset, view.uids[-1])
            return [u for u in sorted(set(wanted)) if u in view.info]
        largest = view.exists
        out = []
        for seq in sorted(set(C.resolve_set(seqset, largest))):
            if 1 <= seq <= largest:
                out.append(view.uid_at(seq))
            else:
                raise Bad("Invalid message sequence number")
        return out

    def _writable(self) -> None:
        if self.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")

    async def cmd_store(self, cmd: Any) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        self._writable()
        args = C.store_args(cmd)
        if args.unchanged_since is not None:
            self._condstore_on()
        uids = self.uids_of(args.seqset, uid=args.uid)
        bad = [f for f in args.flags if f.startswith("\\") and f not in SYSTEM_FLAGS]
        if bad:
            raise Bad(f"Flag {bad[0]} cannot be stored")
        mode = {"+": FlagMode.ADD, "-": FlagMode.REMOVE, "": FlagMode.REPLACE}[args.sign]
        result = await self.blocking(
            self.store.store_flags,
            self.user,
            view.name,
            uids,
            mode,
            frozenset(args.flags),
            unchanged_since=args.unchanged_since,
        )
        changed = {u.uid for u in result.updated}
        trainer = self.mail.spam_trainer
        if trainer is not None and mode is not FlagMode.REMOVE and changed:
            # Thunderbird and Apple Mail mark junk / not junk with these keywords.
            marks = [f for f in args.flags if f.lower() in ("$junk", "$notjunk")]
            if marks:
                user, folder, learn = self.user, view.name, sorted(changed)
                self._after_answer.append(
                    lambda: trainer.keywords_added(user, folder, learn, marks)
                )
        for update in result.updated:
            old = view.info.get(update.uid)
            if old is None:
                continue
            info = _updated(old, update)
            view.note_own_change(info)
            seq = view.seq_of(update.uid)
            if seq is None:
                continue
            # RFC 7162 §3.1.4: with CONDSTORE the FETCH goes out even for .SILENT.
            if not args.silent or (self.condstore and args.unchanged_since is not None):
                self._flags_fetch(seq, info, with_uid=args.uid)
        if args.unchanged_since is not None and not args.silent:
            # Unchanged messages that passed the test: their flags as they are.
            for uid in uids:
                if uid not in changed and uid not in result.failed and uid in view.info:
                    seq = view.seq_of(uid)
                    if seq is not None:
                        self._flags_fetch(seq, view.info[uid], with_uid=args.uid)
        if result.failed:
            failed = (
                C.uid_set_text(result.failed)
                if args.uid
                else C.uid_set_text([view.seq_of(u) or 0 for u in result.failed])
            )
            self.send(C.tagged(cmd.tag, "OK", "Conditional STORE failed", f"MODIFIED {failed}"))
            await self._updates_after(C.command_name(cmd), cmd)
            return None  # type: ignore[return-value]
        return "STORE completed"

    async def cmd_copy(self, cmd: Any) -> str:
        return await self._transfer(cmd, move=False)

    async def cmd_move(self, cmd: Any) -> str:
        return await self._transfer(cmd, move=True)

    async def _transfer(self, cmd: Any, *, move: bool) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        if move:
            self._writable()
        args = C.copy_args(cmd)
        uids = self.uids_of(args.seqset, uid=args.uid)
        target = self.folder_name(args.mailbox)
        func = self.store.move if move else self.store.copy
        if not move:
            await self._check_quota(sum(view.info[u].size for u in uids))
        try:
            result = await self.blocking(func, self.user, view.name, uids, target)
        except NoSuchFolder as exc:
            raise No(f"No mailbox {args.mailbox}", "TRYCREATE") from exc
        trainer = self.mail.spam_trainer
        if trainer is not None and result.pairs:
            # Into Junk: spam; out of Junk (not into Trash): ham (spam/training.py decides).
            user, source, copies = self.user, view.name, [b for _, b in result.pairs]
            self._after_answer.append(lambda: trainer.messages_moved(user, source, target, copies))
        code = None
        if result.pairs:
            code = (
                f"COPYUID {result.uidvalidity} {C.uid_set_text([a for a, _ in result.pairs])} "
                f"{C.uid_set_text([b for _, b in result.pairs])}"
            )
        verb = "MOVE" if move else "COPY"
        if not move:
            await self._updates_after(C.command_name(cmd), cmd)
            self.send(C.tagged(cmd.tag, "OK", f"{verb} completed", code))
            return None  # type: ignore[return-value]
        # RFC 6851 §4.3: COPYUID in an untagged OK, then the expunges, then the tagged OK.
        if code is not None:
            self._ok_code(code, "Moved")
        gone = [a for a, _ in result.pairs]
        self._report_own_expunge(gone)
        return f"{verb} completed"

    def _report_own_expunge(self, uids: list[int]) -> None:
        view = self.view
        assert view is not None
        if self.qresync:
            present = [u for u in uids if u in view.info]
            view.note_own_expunge(present)
            if present:
                self.send(b"* VANISHED " + C.uid_set_text(present).encode() + b"\r\n")
            return
        for seq in view.note_own_expunge(uids):
            self.untagged(seq, Atom("EXPUNGE"))

    async def cmd_expunge(self, cmd: Any) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        self._writable()
        uid_filter = None
        if C.is_uid(cmd):
            uid_filter = self.uids_of(C.expunge_set(cmd), uid=True)
        gone = await self.blocking(self.store.expunge, self.user, view.name, uid_filter)
        self._report_own_expunge(list(gone))
        return "EXPUNGE completed"

    async def cmd_fetch(self, cmd: Any) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        args = C.fetch_args(cmd)
        uids = self.uids_of(args.seqset, uid=args.uid)
        if args.changed_since is not None or any(i.kind == "MODSEQ" for i in args.items):
            self._condstore_on()
        if args.changed_since is not None:
            uids = [u for u in uids if view.info[u].modseq > args.changed_since]
        if args.vanished:
            # RFC 7162 §3.2.6: UID FETCH ... (CHANGEDSINCE n VANISHED)
            if not (args.uid and self.qresync and args.changed_since is not None):
                raise Bad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
            changes = await self.blocking(
                self.store.folder_changes, self.user, view.name, args.changed_since
            )
            wanted = set(self.uids_of(args.seqset, uid=True)) | set(changes.vanished)
            gone = [u for u in changes.vanished if u in wanted and u not in view.info]
            if gone:
                self.send(b"* VANISHED (EARLIER) " + C.uid_set_text(gone).encode() + b"\r\n")
        items = args.items
        fresh: dict[int, MessageInfo] = {}
        if not self.readonly and any(i.sets_seen for i in items):
            unseen = [u for u in uids if "\\Seen" not in view.info[u].flags]
            if unseen:
                result = await self.blocking(
                    self.store.store_flags,
                    self.user,
                    view.name,
                    unseen,
                    FlagMode.ADD,
                    frozenset({"\\Seen"}),
                )
                for update in result.updated:
                    old = view.info[update.uid]
                    info = _updated(old, update)
                    view.note_own_change(info)
                    fresh[update.uid] = info
                if fresh and not any(i.kind == "FLAGS" for i in items):
                    items = [*items, FetchItem("FLAGS", name="FLAGS")]
        user, folder = self.user, view.name
        store = self.store
        want_structure = any(i.kind in ("ENVELOPE", "BODYSTRUCTURE", "BODY") for i in items)
        expunged: list[int] = []  # read as gone: another session expunged them
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            cached = (
                await self.blocking(store.cached_structures, user, folder, chunk)
                if want_structure
                else {}
            )
            run = (
                self.blocking
                if want_structure or any(i.needs_message for i in items)
                else _inline  # FLAGS, UID, INTERNALDATE, ...: from the view, no disk
            )
            try:
                result = await run(
                    fetch_messages,
                    view,
                    chunk,
                    items,
                    read=lambda uid: store.fetch_message(user, folder, uid),
                    cached=cached,
                    with_uid=args.uid,
                    with_modseq=self.condstore and args.changed_since is not None,
                    show_recent=not self.rev2,
                    infos=fresh,
                )
            except FetchFailed as exc:
                raise No(exc.text, exc.code) from exc
            expunged += result.gone
            for line in result.responses:
                self.send(line)
            if result.new_cache:
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(store.cache_structures, user, folder, result.new_cache)
            await self.flush()
        if expunged or view.pending_expunge.intersection(uids):
            # Expunged by another session, not yet told to this one (no EXPUNGE may go out
            # during FETCH, RFC 9051 §7.5.1). RFC 2180 §4.1.2: the others' data is sent and
            # the expunged ones are left out; RFC 9051 §7.1 / RFC 5530 §3: OK [EXPUNGEISSUED]
            # says so, even when every message asked for is gone: as Dovecot (cmd-fetch.c,
            # never NO to FETCH), since clients (and imaptest) take a NO as a failed command.
            await self._updates_after(C.command_name(cmd), cmd)
            self.send(
                C.tagged(
                    cmd.tag,
                    "OK",
                    "FETCH completed; some messages were expunged by another session",
                    "EXPUNGEISSUED",
                )
            )
            return None  # type: ignore[return-value]
        return "FETCH completed"

    async def cmd_search(self, cmd: Any) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        args = C.search_args(cmd)
        if args.charset and args.charset.upper() not in ("UTF-8", "US-ASCII"):
            raise No(
                "Only UTF-8 and US-ASCII searches are supported", "BADCHARSET (UTF-8 US-ASCII)"
            )
        if C.key_uses_modseq(args.key):
            self._condstore_on()
        uids = await self._search(args.key)
        numbers = uids if args.uid else [view.seq_of(u) or 0 for u in uids]
        if args.returns is not None:
            parts = esearch_parts(numbers, args.returns, C.uid_set_text)
            if self.condstore and C.key_uses_modseq(args.key) and uids:
                parts.append(f"MODSEQ {_esearch_modseq(view, uids, args.returns)}")
            head = b"* ESEARCH (TAG " + render(cmd.tag) + b")"
            if args.uid:
                head += b" UID"
            self.send(head + b"".join(b" " + p.encode() for p in parts) + b"\r\n")
        else:
            line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
            if self.condstore and C.key_uses_modseq(args.key) and uids:
                line += b" (MODSEQ %d)" % max(view.info[u].modseq for u in uids)
            self.send(line + b"\r\n")
        return "SEARCH completed"

    async def _search(self, key: Key) -> list[int]:
        view = self.view
        assert view is not None
        assert self.user is not None
        user, folder, store = self.user, view.name, self.store

        def full_text(needle: str, headers: bool, body: bool) -> set[int]:
            return store.search_text(user, folder, needle, headers=headers, body=body)

        def headers(uids: list[int]) -> dict[int, dict[str, list[str]]]:
            out = {}
            for uid in uids:
                try:
                    raw = store.fetch_message(user, folder, uid)
                except StoreError:
                    continue
                out[uid] = header_fields(raw)
            return out

        def needs_disk(*_args: Any) -> Any:
            raise WouldBlock("the search reads the index or the messages")

        bound = C.bind_sets(key, exists=view.exists, max_uid=view.uids[-1] if view.uids else 0)
        try:
            # Flags, sizes, dates, sets: answered from the view here, without a thread.
            return evaluate(bound, SearchContext(view, needs_disk, needs_disk))
        except WouldBlock:
            pass
        found: list[int] = await self.blocking(
            evaluate, bound, SearchContext(view, full_text, headers)
        )
        return found

    async def cmd_sort(self, cmd: Any) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        args = C.sort_args(cmd)
        uids = await self._search(args.key)
        infos = await self.blocking(self._sort_infos, uids)
        ordered = sort_messages(infos, args.criteria)
        numbers = [i.uid if args.uid else i.seq for i in ordered]
        self.send(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
        return "SORT completed"

    async def cmd_thread(self, cmd: Any) -> str:
        args = C.thread_args(cmd)
        algorithm = _THREAD_ALGORITHMS.get(args.algorithm.upper())
        if algorithm is None:
            raise C.BadArgs(f"Unknown threading algorithm {args.algorithm}")
        uids = await self._search(args.key)
        infos = await self.blocking(self._sort_infos, uids)
        threads = algorithm(infos)
        self.send(b"* THREAD " + render_threads(threads, args.uid) + b"\r\n")
        return "THREAD completed"

    def _sort_infos(self, uids: list[int]) -> list[SortInfo]:
        """What SORT and THREAD read of each message: first occurrence of each field."""
        view = self.view
        assert view is not None
        assert self.user is not None
        out = []
        for uid in uids:
            try:
                raw = self.store.fetch_message(self.user, view.name, uid)
            except StoreError:
                continue
            fields: dict[str, str] = {}
            for name, value in raw_fields(raw):
                if name in _SORT_FIELDS and name not in fields:
                    fields[name] = value.decode("utf-8", "replace")
            info = view.info[uid]
            out.append(
                SortInfo(
                    seq=view.seq_of(uid) or 0,
                    uid=uid,
                    arrival=info.internal_date,
                    date=parse_sent_date(fields["date"]) if "date" in fields else None,
                    size=info.size,
                    subject=fields.get("subject", ""),
                    from_=fields.get("from", ""),
                    to=fields.get("to", ""),
                    cc=fields.get("cc", ""),
                    message_id=fields.get("message-id", ""),
                    in_reply_to=fields.get("in-reply-to", ""),
                    references=fields.get("references", ""),
                )
            )
        return out

    cmd_uid_fetch = cmd_fetch
    cmd_uid_search = cmd_search
    cmd_uid_sort = cmd_sort
    cmd_uid_thread = cmd_thread
    cmd_uid_expunge = cmd_expunge
    cmd_uid_store = cmd_store
    cmd_uid_copy = cmd_copy
    cmd_uid_move = cmd_move


_SORT_FIELDS = frozenset(
    {"date", "subject", "from", "to", "cc", "message-id", "in-reply-to", "references"}
)
_THREAD_ALGORITHMS = {
    "ORDEREDSUBJECT": thread_orderedsubject,
    "REFERENCES": thread_references,
}


async def _inline(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


def _esearch_modseq(view: MailboxView, uids: list[int], returns: Iterable[str]) -> int:
    """RFC 7162 §3.1.5: the highest MODSEQ of the messages the ESEARCH result returns
    (only the MIN/MAX message when just those are asked for)."""
    wanted = {r.upper() for r in returns} or {"ALL"}
    if wanted & {"ALL", "COUNT"}:
        returned = uids
    else:
        returned = [min(uids)] if "MIN" in wanted else []
        if "MAX" in wanted:
            returned.append(max(uids))
    return max(view.info[u].modseq for u in returned) if returned else 0


def _updated(old: MessageInfo, update: FlagUpdate) -> MessageInfo:
    return MessageInfo(
        update.uid, update.flags, update.keywords, old.internal_date, old.size, update.modseq
    )


def _store_code(exc: StoreError) -> str | None:
    if isinstance(exc, NoSuchFolder):
        return "NONEXISTENT"
    if isinstance(exc, FolderExists):
        return "ALREADYEXISTS"
    if isinstance(exc, StoreUnavailable):
        return "UNAVAILABLE"
    return "CANNOT"


def imap(server: SessionRuntime, listener: str) -> IMAPService:
    return IMAPService(server, listener, implicit_tls=False)


def imaps(server: SessionRuntime, listener: str) -> IMAPService:
    return IMAPService(server, listener, implicit_tls=True)
