"""The IMAP listeners (143 with STARTTLS, 993 with implicit TLS): one loop per connection,
read → parse → act → write, over the mailbox store.

The grammar lives in ``pochta.protocols.imap``; this module runs the connection (the loop,
the state checks of RFC 9051 §3, authentication); the commands live in ``imap_folders.py``,
``imap_selected.py`` (the selected folder's view, kept in step with other sessions and
deliveries) and ``imap_messages.py``, over the state in ``imap_session.py``. Store calls
block on disk, so they run in threads; the session awaits each before it reads the next
command, which keeps the replies of a pipelining client in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from pochta import __version__
from pochta.access.imap_context import ContextCommands
from pochta.access.imap_errors import Bad, Closed, No, store_code
from pochta.access.imap_messages import MessageCommands
from pochta.access.imap_notify import NotifyCommands
from pochta.access.imap_session import BASE_CAPABILITIES, SYSTEM_FLAGS, PushDue, SessionEvent
from pochta.access.imap_urlauth import UrlAuthCommands
from pochta.access.quick_sync import QuickWriteSync
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
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command
from pochta.protocols.imap.session_state import AuthenticateLine, IdleDone
from pochta.protocols.imap.values import Atom
from pochta.store import CHANGE_ORIGIN, StoreError
from pochta.tls.streams import reloadable_tls_context, upgrade_to_tls

if TYPE_CHECKING:
    from pochta.runtime import SessionRuntime

log = get_logger("imap")

READ_CHUNK = 65536
T = TypeVar("T")


class IMAPService:
    def __init__(self, server: SessionRuntime, listener: str, *, implicit_tls: bool) -> None:
        self.server = server
        self.name = listener
        self.tls = reloadable_tls_context(server)
        if implicit_tls and self.tls is None:
            raise RuntimeError(f"listen.{listener} needs a TLS certificate; see tls.cert_file")
        self.ssl_context = self.tls if implicit_tls else None
        self._quick_sync: QuickWriteSync | None = None

    def quick_sync(self) -> QuickWriteSync:
        """The group commit of this process's sessions' loop-side changes (quick_sync.py)."""
        if self._quick_sync is None:
            mail = self.server.mail
            assert mail is not None
            self._quick_sync = QuickWriteSync(mail.store, asyncio.get_running_loop())
        return self._quick_sync

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


class Session(MessageCommands, UrlAuthCommands, NotifyCommands, ContextCommands):
    """One IMAP connection: the read → parse → act → write loop, the state checks, and the
    commands of any state and of the not-authenticated state (STARTTLS, LOGIN,
    AUTHENTICATE, COMPRESS)."""

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        CHANGE_ORIGIN.set(self.change_origin)  # this connection's task and its threads
        log.info("connect", listener=self.service.name, client=self.ip)
        self.send(
            b"* OK [CAPABILITY " + " ".join(self.capabilities()).encode() + b"] pochta ready\r\n"
        )
        try:
            while not self._logout:
                event = await self.next_event()
                await self.dispatch(event)
            await self.flush()
        except (Closed, ConnectionError, ssl.SSLError):
            with contextlib.suppress(Exception):
                await self.flush()
        finally:
            self.cancel_read()
            self._stop_watching()
            self._notify_off()
            self._release_sessions()
            log.info("disconnect", listener=self.service.name, client=self.ip, user=self.user)

    async def dispatch(self, event: SessionEvent) -> None:
        if isinstance(event, PushDue):
            await self.push_updates()
            return
        if isinstance(event, C.ContinuationRequest):
            self.send(b"+ Ready for literal data\r\n")
            return
        if isinstance(event, C.CommandError):
            if event.fatal:
                self.send(C.tagged(event.tag, "BAD", event.text))
                self.send(b"* BYE " + event.text.encode() + b"; closing the connection\r\n")
                log.info("refused", client=self.ip, reason=event.text)
                raise Closed
            if event.too_big:
                self.send(C.tagged(event.tag, "NO", event.text, "TOOBIG"))
            else:
                self.send(C.tagged(event.tag, "BAD", event.text))
            return
        if isinstance(event, C.RawLine):
            self.send(b"* BAD Unexpected continuation line\r\n")
            return
        # The continuations (session_state.py): the command goes on with this line.
        if isinstance(event, AuthenticateLine):
            await self._complete(event.command, self._authenticate_answer(event))
            return
        if isinstance(event, IdleDone):
            await self._complete(event.command, self.idle_done(event))
            return
        await self._complete(event, self._command(event))

    async def _command(self, cmd: Command) -> str | None:
        name = C.command_name(cmd)
        handler: Callable[[Command], Awaitable[str | None]] | None = getattr(
            self, "cmd_" + name.lower().replace(" ", "_"), None
        )
        if handler is None:
            raise Bad(f"{name} is not supported")
        state_error = self._check_state(name)
        if state_error:
            raise Bad(state_error)
        return await handler(cmd)

    async def _complete(self, cmd: Command, step: Awaitable[str | None]) -> None:
        """Run a command's step and answer it: OK with the text it returns (after the
        selected folder's updates), nothing when it returns None (it answered itself, or
        a continuation goes on), BAD/NO for what it raises."""
        tag = cmd.tag
        try:
            text = await step
            if text is not None:
                await self._updates_after(C.command_name(cmd), cmd)
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
            self.send(C.tagged(tag, "NO", str(exc), store_code(exc)))
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

    # -- any state --------------------------------------------------------------------------

    async def cmd_capability(self, cmd: Command) -> str:
        self.untagged(Atom("CAPABILITY"), *[Atom(c) for c in self.capabilities()])
        return "CAPABILITY completed"

    async def cmd_noop(self, cmd: Command) -> str:
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

    async def cmd_logout(self, cmd: Command) -> str | None:
        self.server.connection_quit()  # before the BYE goes out: no longer counted (app.py)
        # The same for the session limits, and confirmed by every process before the OK: a
        # client that logs in again as soon as it reads the OK, on any worker process, must
        # not find its old session still counted (server/workers.py, W and K).
        await self.server.sessions_closed(*self._counted())
        self.send(b"* BYE pochta logging out\r\n")
        self.send(C.tagged(cmd.tag, "OK", "LOGOUT completed"))
        self._logout = True
        return None

    async def cmd_id(self, cmd: Command) -> str:
        # RFC 2971: the client's ID is logged; ours says little (no version leak needed,
        # but it helps support).
        params = C.id_params(cmd)
        if params:
            log.info("client_id", client=self.ip, **{k[:32]: v[:128] for k, v in params.items()})
        self.untagged(Atom("ID"), ["name", "pochta", "version", __version__])
        return "ID completed"

    async def cmd_compress(self, cmd: Command) -> str | None:
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

    async def cmd_starttls(self, cmd: Command) -> str | None:
        tls = self.service.tls
        if tls is None or self.tls_active:
            raise Bad("TLS is not available here")
        self.send(C.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
        await self.flush()
        # RFC 9051 §6.2.1 / CVE-2011-0411: nothing sent before the handshake counts.
        self.parser = C.new_parser(self.server.settings.imap)
        if not await upgrade_to_tls(self.reader, self.writer, tls, self.ip, log):
            raise Closed
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
            raise Closed

    async def cmd_login(self, cmd: Command) -> str:
        if not self.plaintext_ok():
            raise No("Use STARTTLS first", "PRIVACYREQUIRED")
        args = C.login_args(cmd)
        result = await self.mail.authenticator.check_password(self.ip, args.user, args.password)
        if not result.ok or result.account is None:
            log.info("auth_failed", client=self.ip, mechanism="LOGIN", reason=result.reason)
            raise No("Authentication failed", "AUTHENTICATIONFAILED")
        await self._logged_in(result.account.address)
        return "LOGIN completed"

    async def cmd_authenticate(self, cmd: Command) -> str | None:
        if not self.plaintext_ok():
            raise No("Use STARTTLS first", "PRIVACYREQUIRED")
        args = C.authenticate_args(cmd)
        try:
            self._sasl = SaslExchange(server_mechanism(args.mechanism))
        except ValueError:
            raise No("Unsupported authentication mechanism", "CANNOT") from None
        return await self._authenticate_step(cmd, self._sasl.start(args.initial_response))

    async def _authenticate_answer(self, event: AuthenticateLine) -> str | None:
        """The client's line after our "+ challenge" (the loop's AUTHENTICATE state)."""
        sasl = self._sasl
        assert sasl is not None
        return await self._authenticate_step(event.command, sasl.answer_line(event.line))

    async def _authenticate_step(
        self,
        cmd: Command,
        action: Resolve | SendChallenge | Authenticated | Failed | Cancelled | BadBase64,
    ) -> str | None:
        """Carry the exchange on to a challenge (sent; the state waits for the answer line
        and the command stays open) or to its outcome (the tagged answer)."""
        sasl = self._sasl
        assert sasl is not None
        while isinstance(action, Resolve):
            action = await self.mail.authenticator.settle(self.ip, sasl, action)
        if isinstance(action, SendChallenge):
            self.send(b"+ " + base64.b64encode(action.data) + b"\r\n")  # RFC 9051 §6.2.2
            self.state.challenge(cmd)
            return None
        self._sasl = None
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


def imap(server: SessionRuntime, listener: str) -> IMAPService:
    return IMAPService(server, listener, implicit_tls=False)


def imaps(server: SessionRuntime, listener: str) -> IMAPService:
    return IMAPService(server, listener, implicit_tls=True)


__all__ = [
    "BASE_CAPABILITIES",
    "SYSTEM_FLAGS",
    "Bad",
    "IMAPService",
    "No",
    "Session",
    "imap",
    "imaps",
]
