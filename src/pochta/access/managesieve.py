"""The ManageSieve listener (RFC 5804, port 4190, STARTTLS): one loop per connection,
read → feed → act → write, over the script store (``sieve/scripts.py``).

The protocol lives in ``pochta.protocols.managesieve``; this module decides: who may log in
(the Authenticator, with its failure counting and tarpit, over the shared SASL exchange),
whether a script compiles (the interpreter's compiler, an injected ``Interpreter``), and what
the store does.

Choices, for the reader who changes this file:

* **Compile first.** PUTSCRIPT and CHECKSCRIPT compile the script before anything is written
  (RFC 5804 §2.6: the server MUST check the script); a compile error is answered NO with its
  line and column in the text, so a client can show it. The script's quota is asked after
  that (NO (QUOTA/MAXSCRIPTS) or NO (QUOTA/MAXSIZE)).
* **The store blocks** (files, fsync): every call runs in a thread and the session awaits
  it before it reads on, so a pipelining client gets its answers in order. The compiler runs
  in a thread too: a large script should not hold the other sessions.
* **Login only under TLS**, like IMAP here: the SASL capability is empty and AUTHENTICATE
  answers NO (ENCRYPT-NEEDED) until STARTTLS, except from loopback when
  ``managesieve.allow_plaintext_on_loopback`` is on (a webmail on the same host).
* **Final SASL data** (SCRAM's server signature) goes in ``OK (SASL "...")`` (RFC 5804 §2.1),
  not in one more challenge.
* The session runs in the master process (ManageSieve is not one of the worker listeners:
  a handful of connections a day).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pochta.directory.sasl import server_mechanism
from pochta.directory.sasl_exchange import (
    Authenticated,
    Failed,
    Resolve,
    SaslExchange,
    SendChallenge,
)
from pochta.logs import get_logger
from pochta.netaddr import is_loopback
from pochta.protocols.managesieve import (
    NEED_DATA,
    Authenticate,
    AuthResponse,
    Capabilities,
    CheckScript,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    ManageSieveServerConnection,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    Unauthenticate,
)
from pochta.protocols.managesieve import responses as R
from pochta.quick_ack import ack_now
from pochta.sieve.errors import SieveError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import CAPABILITIES, compile_script
from pochta.sieve.scripts import (
    ScriptNameError,
    ScriptNotFound,
    ScriptQuotaError,
    ScriptStore,
    ScriptStoreError,
)
from pochta.tls.streams import reloadable_tls_context, upgrade_to_tls

if TYPE_CHECKING:
    from pochta.config.settings import Settings
    from pochta.runtime import MailRuntime, SessionRuntime

log = get_logger("managesieve")

READ_CHUNK = 65536
# What AUTHENTICATE offers, strongest first; the same as SMTP AUTH, IMAP and POP3.
MECHANISMS = ("SCRAM-SHA-256", "PLAIN", "LOGIN")
LITERAL_MARGIN = 4096  # a script literal may be this much larger than [sieve] max_script_bytes


@dataclass(frozen=True, slots=True)
class Interpreter:
    """What the service needs of the Sieve interpreter: the extensions ``require`` accepts
    (the SIEVE capability) and a check that compiles a script, returning its warnings or
    raising ``SieveError`` (message, line, column)."""

    extensions: tuple[str, ...]
    check: Callable[[str, str, SieveLimits], Sequence[str]]  # (text, name, limits)


def _compile(text: str, name: str, limits: SieveLimits) -> Sequence[str]:
    """The interpreter's compiler: no warnings of its own yet (SieveError on an error)."""
    compile_script(text, name=name, limits=limits)
    return ()


def default_interpreter() -> Interpreter:
    """The interpreter of ``pochta.sieve.script`` (tests put a fake in its place)."""
    return Interpreter(CAPABILITIES, _compile)


class ManageSieveService:
    """The managesieve listener: STARTTLS offered (RFC 5804 §2.2), no implicit TLS."""

    def __init__(
        self, server: SessionRuntime, listener: str, *, interpreter: Interpreter | None = None
    ) -> None:
        self.server = server
        self.name = listener
        # Loaded now, before the privilege drop: the key file is root's.
        self.tls = reloadable_tls_context(server)
        self.ssl_context: ssl.SSLContext | None = None  # STARTTLS only (RFC 5804 §2.2)
        self.interpreter = interpreter if interpreter is not None else default_interpreter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"  # unix socket: local
        # managesieve.max_connections and max_connections_per_ip (server/app.py).
        refused = self.server.refusal(self.name, ip)
        if refused is not None:
            response = R.TOO_MANY_CONNECTIONS if refused == "per_ip" else R.SERVER_BUSY
            writer.write(response.encode())  # RFC 5804 §1.3: BYE (TRYLATER)
            await writer.drain()
            log.warning("too_many_connections", listener=self.name, client=ip, limit=refused)
            return
        await _Session(self, reader, writer, ip).run()


def _quota_code(problem: str) -> str:
    """The response code of a ``ScriptStore.space_problem`` text (RFC 5804 §1.3)."""
    return R.QUOTA_MAXSCRIPTS if "scripts per account" in problem else R.QUOTA_MAXSIZE


class _Session:
    def __init__(
        self,
        service: ManageSieveService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ip: str,
    ) -> None:
        self.service = service
        self.server = service.server
        self.reader = reader
        self.writer = writer
        self.ip = ip
        settings = self.server.settings
        s = settings.managesieve
        self.conn = ManageSieveServerConnection(
            Capabilities(
                sieve=service.interpreter.extensions,
                mechanisms=MECHANISMS,
                max_redirects=settings.sieve.max_redirects,  # RFC 5804 §1.7 MAXREDIRECTS
            ),
            tls_available=service.tls is not None,
            plaintext_login=s.allow_plaintext_on_loopback and is_loopback(ip),
            max_line_bytes=s.max_line_bytes,
            max_literal_bytes=settings.sieve.max_script_bytes + LITERAL_MARGIN,
            max_auth_failures=s.max_auth_failures,
        )
        self.sasl: SaslExchange | None = None
        self.user: str | None = None

    @property
    def settings(self) -> Settings:
        return self.server.settings  # read at each use: swapped on reload

    @property
    def mail(self) -> MailRuntime:
        mail = self.server.mail
        assert mail is not None
        return mail

    def store(self) -> ScriptStore:
        return ScriptStore.from_settings(self.settings)

    async def run(self) -> None:
        log.info("connect", listener=self.service.name, client=self.ip)
        self.conn.greet()
        try:
            await self._flush()
            while not self.conn.closed:
                if self.conn.in_command:
                    # The rest of a command is to come: ACK what came now (quick_ack.py), or
                    # a PUTSCRIPT whose last CRLF came in a second write waits 40 ms.
                    ack_now(self.writer.get_extra_info("socket"))
                data = await self._read()
                if data is None:
                    break
                self.conn.receive_data(data)
                while True:
                    event = self.conn.next_event()
                    if event is NEED_DATA:
                        break
                    assert isinstance(event, Event)
                    await self._act(event)
                    await self._flush()
                await self._flush()
            await self._flush()
        finally:
            log.info("disconnect", listener=self.service.name, client=self.ip, user=self.user)

    async def _read(self) -> bytes | None:
        """The next bytes (b"" at EOF); None when idle too long or the server stops (the core
        has then said BYE)."""
        wait = self.settings.managesieve.idle_timeout_seconds
        read = asyncio.ensure_future(self.reader.read(READ_CHUNK))
        stop = asyncio.ensure_future(self.server.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {read, stop}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
            if not read.done():
                read.cancel()
        if read in done:
            return read.result()
        if stop in done:
            self.conn.shutdown()
        else:
            log.info("timeout", client=self.ip, user=self.user)
            self.conn.timeout()
        await self._flush()
        return None

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    # -- events ----------------------------------------------------------------------------

    async def _act(self, event: Event) -> None:
        if not event.needs_reply:
            if isinstance(event, Unauthenticate):
                log.info("unauthenticate", client=self.ip, user=self.user)
                self.user = None
            else:  # Logout: the OK is queued; stop counting before it goes out
                self.server.connection_quit()
            return
        if isinstance(event, StartTLS):
            await self._starttls()
        elif isinstance(event, Authenticate):
            await self._authenticate(event)
        elif isinstance(event, AuthResponse):
            await self._auth_response(event)
        else:
            try:
                await self._script_command(event)
            except (ScriptNameError, ScriptQuotaError) as exc:
                self.conn.respond(R.no(str(exc)))
            except OSError as exc:
                log.error("store_failed", client=self.ip, user=self.user, error=str(exc))
                self.conn.respond(R.no("The scripts cannot be reached now", R.TRYLATER))

    async def _starttls(self) -> None:
        tls = self.service.tls
        if tls is None or self.conn.tls_active:
            self.conn.respond(R.TLS_UNAVAILABLE)
            return
        self.conn.start_tls()
        await self._flush()
        if not await upgrade_to_tls(self.reader, self.writer, tls, self.ip, log):
            self.conn.receive_data(b"")  # closes: the session cannot go on
            return
        self.conn.tls_started()

    # -- AUTHENTICATE (RFC 5804 §2.1) ------------------------------------------------------

    async def _authenticate(self, event: Authenticate) -> None:
        try:
            self.sasl = SaslExchange(server_mechanism(event.mechanism))
        except ValueError:
            self.sasl = None
            self.conn.respond(R.UNKNOWN_MECHANISM)
            return
        await self._auth_step(self.sasl.start(event.initial_response))

    async def _auth_response(self, event: AuthResponse) -> None:
        if self.sasl is None or self.sasl.finished:
            self.conn.respond(R.AUTH_FAILED)
            return
        await self._auth_step(self.sasl.answer(event.data))

    async def _auth_step(self, action: Resolve | SendChallenge | Authenticated | Failed) -> None:
        sasl = self.sasl
        assert sasl is not None
        action = await self.mail.authenticator.settle(self.ip, sasl, action)
        final: bytes | None = None
        if isinstance(action, SendChallenge) and sasl.final_data_pending:
            # RFC 5804 §2.1: the additional data with success goes in OK (SASL "...").
            final = action.data
            answered = sasl.answer(b"")
            assert isinstance(answered, Authenticated)
            action = answered
        if isinstance(action, SendChallenge):
            self.conn.auth_challenge(action.data)
        elif isinstance(action, Authenticated):
            self.sasl = None
            self.user = action.success.authcid
            self.conn.authenticated(self.user, final)
            log.info(
                "login",
                client=self.ip,
                user=self.user,
                mechanism=sasl.mechanism.name,
                tls=self.conn.tls_active,
            )
        else:
            log.info(
                "auth_failed", client=self.ip, mechanism=sasl.mechanism.name, reason=action.reason
            )
            self.sasl = None
            self.conn.respond(R.AUTH_FAILED)

    # -- the scripts (RFC 5804 §2.5-§2.12) ---------------------------------------------------

    async def _compile(self, text: str, name: str) -> R.Response | None:
        """NO with the compile error (line and column), OK (WARNINGS) or None (clean)."""
        limits = SieveLimits.from_settings(self.settings.sieve)
        try:
            warnings = await asyncio.to_thread(self.service.interpreter.check, text, name, limits)
        except SieveError as exc:
            return R.no(f"{name or 'script'}: {exc}")  # str(): "line L, column C: message"
        if warnings:
            return R.ok("; ".join(warnings), R.WARNINGS)  # RFC 5804 §1.3
        return None

    async def _script_command(self, event: Event) -> None:
        user = self.user
        assert user is not None
        store = self.store()
        if isinstance(event, ListScripts):
            self.conn.script_list(await asyncio.to_thread(store.scripts, user))
        elif isinstance(event, GetScript):
            try:
                text = await asyncio.to_thread(store.get, user, event.name)
            except ScriptNotFound as exc:
                self.conn.respond(R.no(str(exc), R.NONEXISTENT))
                return
            self.conn.script(text)
        elif isinstance(event, HaveSpace):
            problem = await asyncio.to_thread(store.space_problem, user, event.name, event.size)
            if problem:
                self.conn.respond(R.no(problem, _quota_code(problem)))
            else:
                self.conn.respond(R.ok("Putscript would succeed"))
        elif isinstance(event, CheckScript):
            result = await self._compile(event.script, "")
            self.conn.respond(result or R.ok("Script is valid"))
        elif isinstance(event, PutScript):
            await self._putscript(store, user, event)
        elif isinstance(event, SetActive):
            try:
                await asyncio.to_thread(store.set_active, user, event.name or None)
            except ScriptNotFound as exc:
                self.conn.respond(R.no(str(exc), R.NONEXISTENT))
                return
            log.info("setactive", client=self.ip, user=user, script=event.name)
            self.conn.respond(R.ok("Setactive completed"))
        elif isinstance(event, DeleteScript):
            await self._deletescript(store, user, event)
        elif isinstance(event, RenameScript):
            await self._renamescript(store, user, event)
        else:  # pragma: no cover - every event that needs a reply is handled
            self.conn.respond(R.UNKNOWN_COMMAND)

    async def _putscript(self, store: ScriptStore, user: str, event: PutScript) -> None:
        result = await self._compile(event.script, event.name)
        if result is not None and not result.ok:
            self.conn.respond(result)
            return
        try:
            await asyncio.to_thread(store.put, user, event.name, event.script)
        except ScriptQuotaError as exc:
            self.conn.respond(R.no(str(exc), _quota_code(str(exc))))
            return
        log.info("putscript", client=self.ip, user=user, script=event.name)
        self.conn.respond(result or R.ok("Putscript completed"))

    async def _deletescript(self, store: ScriptStore, user: str, event: DeleteScript) -> None:
        if await asyncio.to_thread(store.active, user) == event.name:
            # RFC 5804 §2.10: the active script cannot be deleted.
            self.conn.respond(R.no(f"{event.name!r} is the active script", R.ACTIVE))
            return
        try:
            await asyncio.to_thread(store.delete, user, event.name)
        except ScriptNotFound as exc:
            self.conn.respond(R.no(str(exc), R.NONEXISTENT))
            return
        except ScriptStoreError as exc:  # made active meanwhile
            self.conn.respond(R.no(str(exc), R.ACTIVE))
            return
        log.info("deletescript", client=self.ip, user=user, script=event.name)
        self.conn.respond(R.ok("Deletescript completed"))

    async def _renamescript(self, store: ScriptStore, user: str, event: RenameScript) -> None:
        try:
            await asyncio.to_thread(store.rename, user, event.old, event.new)
        except ScriptNotFound as exc:
            self.conn.respond(R.no(str(exc), R.NONEXISTENT))  # RFC 5804 §2.11.1
            return
        except ScriptNameError:
            raise
        except ScriptStoreError as exc:
            self.conn.respond(R.no(str(exc), R.ALREADYEXISTS))  # RFC 5804 §2.11.1
            return
        log.info("renamescript", client=self.ip, user=user, old=event.old, new=event.new)
        self.conn.respond(R.ok("Renamescript completed"))


def managesieve(server: SessionRuntime, listener: str) -> ManageSieveService:
    return ManageSieveService(server, listener)
