"""The POP3 listeners (110 with STLS, 995 with implicit TLS): one loop per connection,
read → feed → act → write, over the account's INBOX in the mailbox store.

The protocol lives in ``pochta.protocols.pop3``; this module decides: who may log in (the
Authenticator, with its tarpit), which maildrop they get (a snapshot of INBOX, locked for the
session), what RETR and TOP send, and what QUIT changes in the store.

Choices, for the reader who changes this file:

* **Locking.** RFC 1939 §4: after login the server takes an exclusive-access lock on the
  maildrop. A second session for the same account, on either listener, gets
  ``-ERR [IN-USE]`` (RFC 2449 §8.1.2) and may retry later. The lock lives in this process
  only: that is enough, because ``pochta serve`` holds the spool's master lock, so one server
  runs per data directory. IMAP sessions are not locked out (Dovecot does not either): the
  store's UIDs keep them apart, and a message an IMAP client expunged meanwhile answers RETR
  with "-ERR ... removed by another client".
* **The maildrop** is a snapshot of INBOX taken at login in one store read
  (``folder_changes`` from MODSEQ 0 gives UIDVALIDITY and every message together). Sizes are
  RFC822.SIZE, the octets RETR sends (CRLF line ends). Unique-ids are ``maildrop.unique_id``:
  Dovecot's default format from the message UID and the folder's UIDVALIDITY.
* **UPDATE** (QUIT after login, RFC 1939 §6): the messages marked with DELE are flagged
  \\Deleted and exactly those UIDs are expunged (``expunge(uids=...)``, RFC 4315 §2.1), so
  messages an IMAP client flagged \\Deleted stay where they are. When the expunge fails, the
  flags we added are taken back and the client gets "-ERR"; nothing is removed. A dropped
  connection, an idle timeout or a server stop applies nothing (RFC 1939 §3).
* **\\Seen.** Like Dovecot (``pop3_no_flag_updates = no``), messages sent with RETR and not
  deleted are flagged \\Seen at QUIT, so an IMAP client on the same account sees them as read.
  TOP marks nothing (fetchmail and others use it to peek), and a session that does not reach
  QUIT marks nothing.
* Store calls block on disk: they run in threads (``asyncio.to_thread``). The session awaits
  each before it reads on, so a pipelining client (RFC 2449 §6.6) gets its answers in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from pochta.protocols.pop3 import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    Event,
    Login,
    Maildrop,
    MaildropMessage,
    POP3ServerConnection,
    Retrieve,
    StartTLS,
    Update,
    unique_id,
)
from pochta.protocols.pop3 import responses as R
from pochta.store import INBOX, FlagMode, MailStore, NoSuchFolder, NoSuchMessage, StoreError
from pochta.tls.streams import reloadable_tls_context, upgrade_to_tls

if TYPE_CHECKING:
    from pochta.runtime import MailRuntime, SessionRuntime

log = get_logger("pop3")

READ_CHUNK = 65536
# What AUTH offers (the CAPA SASL line), strongest first; the same as SMTP AUTH and IMAP.
MECHANISMS = ("SCRAM-SHA-256", "PLAIN", "LOGIN")
DELETED = frozenset({"\\Deleted"})
SEEN = frozenset({"\\Seen"})


class MaildropLocks:
    """The accounts that have a POP3 session in the TRANSACTION state (RFC 1939 §4)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, account: str) -> bool:
        """Take the account's lock; False when another session holds it."""
        key = account.lower()
        if key in self._held:
            return False
        self._held.add(key)
        return True

    def release(self, account: str) -> None:
        self._held.discard(account.lower())

    def held(self, account: str) -> bool:
        return account.lower() in self._held


@dataclass(slots=True)
class _Shared:
    """What the pop3 and pop3s listeners of one server share."""

    locks: MaildropLocks = field(default_factory=MaildropLocks)


# One per running Server: its two POP3 listeners are two service objects.
_SHARED: weakref.WeakKeyDictionary[SessionRuntime, _Shared] = weakref.WeakKeyDictionary()


def shared_state(server: SessionRuntime) -> _Shared:
    state = _SHARED.get(server)
    if state is None:
        state = _SHARED[server] = _Shared()
    return state


class POP3Service:
    """One listener: pop3 (STLS offered) or pop3s (implicit TLS, RFC 8314)."""

    def __init__(self, server: SessionRuntime, listener: str, *, implicit_tls: bool) -> None:
        self.server = server
        self.name = listener
        # Loaded now, before the privilege drop: the key file is root's.
        self.tls = reloadable_tls_context(server)
        if implicit_tls and self.tls is None:
            raise RuntimeError(f"listen.{listener} needs a TLS certificate; see tls.cert_file")
        self.ssl_context = self.tls if implicit_tls else None
        self.shared = shared_state(server)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"  # unix socket: local
        # pop3.max_connections and max_connections_per_ip (server/app.py).
        refused = self.server.refusal(self.name, ip)
        if refused is not None:
            response = R.TOO_MANY_CONNECTIONS if refused == "per_ip" else R.SERVER_BUSY
            writer.write(response.encode())  # RFC 3206 §4: [SYS/TEMP], try again later
            await writer.drain()
            log.warning("too_many_connections", listener=self.name, client=ip, limit=refused)
            return
        await _Session(self, reader, writer, ip).run()


class _Session:
    def __init__(
        self,
        service: POP3Service,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ip: str,
    ) -> None:
        self.service = service
        self.server = service.server
        self.reader = reader
        self.writer = writer
        self.ip = ip
        tls_active = service.ssl_context is not None
        self.conn = POP3ServerConnection(
            tls_active=tls_active,
            tls_available=service.tls is not None and not tls_active,
            plaintext_login=(
                self.server.settings.pop3.allow_plaintext_on_loopback and is_loopback(ip)
            ),
            auth_mechanisms=MECHANISMS,
            max_auth_failures=self.server.settings.pop3.max_auth_failures,
        )
        self.user: str | None = None  # the account whose maildrop this session locked
        self.sasl: SaslExchange | None = None  # the AUTH exchange under way
        self.retrieved = 0  # RETR commands answered with the message
        self.deleted: int | None = None  # messages removed at QUIT (None: no UPDATE)
        self.clock = time.monotonic  # for the login and command-line timers
        self.connected = self.clock()
        self.line_started: float | None = None  # first byte of a command line not yet ended

    @property
    def mail(self) -> MailRuntime:
        mail = self.server.mail
        assert mail is not None
        return mail

    @property
    def store(self) -> MailStore:
        return self.mail.store

    async def run(self) -> None:
        log.info("connect", listener=self.service.name, client=self.ip)
        self.conn.greet()
        try:
            await self._flush()
            while not self.conn.closed:
                data = await self._read()
                if data is None:
                    break  # idle timeout or server stop: the core has closed
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
            if self.user is not None:
                self.service.shared.locks.release(self.user)
            log.info(
                "disconnect",
                listener=self.service.name,
                client=self.ip,
                user=self.user,
                retrieved=self.retrieved,
                deleted=self.deleted,
            )

    def _timer(self) -> tuple[str, float]:
        """The timer that runs out first and the seconds left on it: the idle timer (reset by
        every read), the login timer (from the connect until the TRANSACTION state) and the
        command-line timer (from the first byte of a line to its end). Bytes trickling in
        reset only the first, so they cannot hold a connection open for ever."""
        s = self.server.settings.pop3
        now = self.clock()
        timers = {"idle": float(s.idle_timeout_seconds)}
        if self.user is None:
            timers["login"] = s.login_timeout_seconds - (now - self.connected)
        if self.line_started is not None:
            timers["command"] = s.command_timeout_seconds - (now - self.line_started)
        timer = min(timers, key=timers.__getitem__)
        return timer, max(timers[timer], 0.0)

    async def _read(self) -> bytes | None:
        """The next bytes from the client (b"" at EOF); None when a timer ran out or the
        server is stopping (the core has then closed, RFC 1939 §3)."""
        timer, wait = self._timer()
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
            data = read.result()
            if not data or data.endswith(b"\n"):
                self.line_started = None  # every line has ended
            elif self.line_started is None:
                self.line_started = self.clock()
            return data
        if stop in done:
            self.conn.shutdown()
        else:
            log.info("timeout", client=self.ip, user=self.user, timer=timer)
            if timer == "login":
                self.conn.timeout(R.LOGIN_TIMEOUT)
            elif timer == "command":
                self.conn.timeout(R.COMMAND_TIMEOUT)
            else:
                self.conn.timeout()  # RFC 1939 §3: the autologout timer, no response
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
            # Quit before login: the core said goodbye; before that goes out, the connection
            # stops counting toward the connection limits (server/app.py).
            self.server.connection_quit()
            return
        if isinstance(event, StartTLS):
            await self._starttls()
        elif isinstance(event, Login):
            await self._login(event)
        elif isinstance(event, AuthStart):
            await self._auth_start(event)
        elif isinstance(event, AuthResponse):
            await self._auth_response(event)
        elif isinstance(event, Retrieve):
            await self._retrieve(event)
        elif isinstance(event, Update):
            await self._update(event)
        else:  # pragma: no cover - every event that needs a reply is handled above
            self.conn.reject(R.UNKNOWN_COMMAND)

    async def _starttls(self) -> None:
        tls = self.service.tls
        if tls is None or self.conn.tls_active:
            self.conn.reject(R.TLS_UNAVAILABLE)
            return
        self.conn.start_tls()
        await self._flush()
        if not await upgrade_to_tls(self.reader, self.writer, tls, self.ip, log):
            self.conn.receive_data(b"")  # closes: the session cannot go on
            return
        self.conn.tls_started()

    # -- login: USER/PASS (RFC 1939 §7) and AUTH (RFC 5034) ---------------------------------

    async def _login(self, event: Login) -> None:
        result = await self.mail.authenticator.check_password(
            self.ip, event.username, event.password, mechanism="USER"
        )
        if not result.ok or result.account is None:
            log.info("auth_failed", client=self.ip, mechanism="USER", reason=result.reason)
            self.conn.reject(R.AUTH_FAILED)  # RFC 3206 §5: [AUTH]
            return
        await self._open(result.account.address, "USER")

    async def _auth_start(self, event: AuthStart) -> None:
        try:
            self.sasl = SaslExchange(server_mechanism(event.mechanism))
        except ValueError:
            self.sasl = None
            self.conn.reject(R.UNKNOWN_MECHANISM)
            return
        await self._auth_step(self.sasl.start(event.initial_response))

    async def _auth_response(self, event: AuthResponse) -> None:
        # The core answered "*" and bad base64 itself (RFC 5034 §4).
        if self.sasl is None or self.sasl.finished:
            self.conn.reject(R.AUTH_FAILED)
            return
        await self._auth_step(self.sasl.answer(event.data))

    async def _auth_step(self, action: Resolve | SendChallenge | Authenticated | Failed) -> None:
        sasl = self.sasl
        assert sasl is not None
        action = await self.mail.authenticator.settle(self.ip, sasl, action)
        if isinstance(action, SendChallenge):
            self.conn.auth_challenge(action.data)  # RFC 5034 §4: "+ " base64
        elif isinstance(action, Authenticated):
            await self._open(action.success.authcid, sasl.mechanism.name)
        elif isinstance(action, Failed):
            self._auth_failed(action.reason)

    def _auth_failed(self, reason: str) -> None:
        mechanism = self.sasl.mechanism.name if self.sasl else "SASL"
        log.info("auth_failed", client=self.ip, mechanism=mechanism, reason=reason)
        self.sasl = None
        self.conn.reject(R.AUTH_FAILED)  # RFC 3206 §5: [AUTH]

    async def _open(self, address: str, mechanism: str) -> None:
        """Lock and list the maildrop of a client that proved who it is (RFC 1939 §4)."""
        self.sasl = None
        locks = self.service.shared.locks
        if not locks.acquire(address):
            log.info("in_use", client=self.ip, user=address)
            self.conn.reject(R.IN_USE_RESPONSE)  # RFC 2449 §8.1.2
            return
        try:
            maildrop = await asyncio.to_thread(self._snapshot, address)
        except StoreError as exc:
            locks.release(address)
            log.error("maildrop_failed", client=self.ip, user=address, error=str(exc))
            self.conn.reject(R.MAILDROP_UNAVAILABLE)  # RFC 3206 §4: [SYS/TEMP]
            return
        self.user = address
        self.conn.open_maildrop(maildrop)
        log.info(
            "login",
            client=self.ip,
            user=address,
            mechanism=mechanism,
            tls=self.conn.tls_active,
            messages=maildrop.count,
            octets=maildrop.octets,
        )

    def _snapshot(self, address: str) -> Maildrop:
        """INBOX as the session will see it (in a thread)."""
        try:
            # One read: UIDVALIDITY and every message (MODSEQ > 0), ascending UID.
            folder = self.store.folder_changes(address, INBOX, 0)
        except NoSuchFolder:
            return Maildrop([])
        return Maildrop(
            [
                MaildropMessage(m.uid, m.size, unique_id(folder.uidvalidity, m.uid))
                for m in folder.changed
            ]
        )

    # -- TRANSACTION and UPDATE -------------------------------------------------------------

    async def _retrieve(self, event: Retrieve) -> None:
        assert self.user is not None
        try:
            content = await asyncio.to_thread(self.store.fetch_message, self.user, INBOX, event.uid)
        except NoSuchMessage:
            self.conn.reject(R.MESSAGE_GONE)
            return
        except StoreError as exc:
            log.error("retrieve_failed", client=self.ip, user=self.user, error=str(exc))
            self.conn.reject(R.MESSAGE_UNAVAILABLE)  # RFC 3206 §4: [SYS/TEMP]
            return
        self.conn.send_message(content)
        if event.lines is None:
            self.retrieved += 1

    async def _update(self, event: Update) -> None:
        assert self.user is not None
        try:
            removed = await asyncio.to_thread(
                apply_update, self.store, self.user, event.deleted, event.retrieved
            )
        except StoreError as exc:
            log.error(
                "update_failed",
                client=self.ip,
                user=self.user,
                marked=len(event.deleted),
                error=str(exc),
            )
            self.conn.reject(R.UPDATE_FAILED)  # RFC 1939 §6
            return
        self.deleted = len(removed)
        self.server.connection_quit()  # before the +OK goes out (server/app.py)
        self.conn.update_done()
        log.info(
            "quit",
            client=self.ip,
            user=self.user,
            retrieved=self.retrieved,
            deleted=len(removed),
            marked=len(event.deleted),
        )


def apply_update(
    store: MailStore, user: str, deleted: Sequence[int], retrieved: Sequence[int]
) -> list[int]:
    """RFC 1939 §6, in a thread: remove the messages ``deleted`` (UIDs in INBOX), all or none
    (StoreError when none could be); then flag the ``retrieved`` ones \\Seen. Returns the UIDs
    removed."""
    removed: list[int] = []
    if deleted:
        flagged = store.store_flags(user, INBOX, deleted, FlagMode.ADD, DELETED)
        try:
            # RFC 4315 §2.1 (UID EXPUNGE): exactly these UIDs, in one store transaction.
            removed = store.expunge(user, INBOX, deleted)
        except StoreError:
            # Nothing may be deleted: take back the flags this session added.
            added = [u.uid for u in flagged.updated]
            with contextlib.suppress(StoreError):
                store.store_flags(user, INBOX, added, FlagMode.REMOVE, DELETED)
            raise
    if retrieved:
        try:
            store.store_flags(user, INBOX, retrieved, FlagMode.ADD, SEEN)
        except StoreError as exc:  # the deletions stand; \Seen is a courtesy
            log.warning("seen_failed", user=user, error=str(exc))
    return removed


def pop3(server: SessionRuntime, listener: str) -> POP3Service:
    return POP3Service(server, listener, implicit_tls=False)


def pop3s(server: SessionRuntime, listener: str) -> POP3Service:
    return POP3Service(server, listener, implicit_tls=True)
