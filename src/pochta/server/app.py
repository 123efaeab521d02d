"""``pochta serve``: one asyncio process that runs every listener.

Start-up order (each step logged):

1. bind every configured listener whose service exists (as root, so ports < 1024 work);
   a failure is one line naming the listener and the address, exit code 1;
2. drop privileges to ``server.run_as_user`` (privileges.py);
3. open the directory (as the unprivileged user, so its -wal/-shm files belong to it);
4. start accepting, log ``ready``.

The master writes ``server.pid_file`` after binding (refusing to start while it names a live
``pochta serve``; a stale one is replaced) and removes it on exit; it and ``server.log_file``
are given to ``run_as_user`` at the drop.

Signals: SIGTERM/SIGINT stop gracefully (stop accepting, give open connections
``SHUTDOWN_GRACE_SECONDS``, cancel the rest, log ``shutdown``, exit 0). SIGHUP reopens
``server.log_file`` under its name (logrotate), then reloads the
config file, reopens the directory and keeps listeners and connections; a config with
problems is refused and the old one stays (``reload_failed``). Listener addresses and the
user to run as need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import os
import pkgutil
import signal
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from pochta import __version__
from pochta.config.listen import ListenAddress, parse_listen
from pochta.config.settings import LISTENER_NAMES, Settings
from pochta.directory.base import Directory
from pochta.durable import write_atomic
from pochta.logs import configure_logging, get_logger, reopen_log_file
from pochta.mailauth.srs import ensure_secret_file
from pochta.netaddr import in_networks
from pochta.runtime import Refusal
from pochta.server.connections import OpenCounts
from pochta.server.metrics import Metrics
from pochta.server.privileges import PrivilegeError, drop_privileges
from pochta.server.services import MAIL_LISTENERS, SERVICES, Service, ServiceFactory
from pochta.server.workers import (
    RELOAD,
    STOP,
    MasterLink,
    WorkerPool,
    worker_command,
    worker_count,
)
from pochta.tables import TableError
from pochta.tables.configured import ConfiguredTables

if TYPE_CHECKING:
    from pochta.server.mail import MailSystem

log = get_logger("server")

# Open connections get this long to finish after SIGTERM before they are cancelled.
SHUTDOWN_GRACE_SECONDS = 10.0
LISTEN_BACKLOG = 511
STREAM_LIMIT = 2**16  # asyncio's StreamReader default, as start_server uses

# Imported before the privilege drop: after it, the interpreter may no longer be able to read
# its own library (a Python under /root, a chroot later). Services import theirs in their
# factories, which run before the drop too.
PRELOAD_MODULES = (
    "pochta.config.load",
    "pochta.config.check",
    "pochta.checks",
    "pochta.tables.spec",
    "pochta.directory.open",
    "pochta.directory.sqlite",
    "encodings.idna",
    "stringprep",
    "unicodedata",
    "concurrent.futures.thread",
    "pochta.server.mail",
    "pochta.receive.smtp_service",
    "pochta.access.imap",
    "email.policy",
    "email.contentmanager",
    "email.headerregistry",
    "quopri",
    "zlib",
)

# Settings that only take effect at start-up; a reload keeps the running values.
# Listeners whose connections the master shares with worker processes (server/workers.py).
WORKER_LISTENERS = ("imap", "imaps", "smtp", "submission", "submissions")
SMTP_LISTENERS = ("smtp", "submission", "submissions", "lmtp")
RESTART_ONLY_SERVER_KEYS = ("data_dir", "run_as_user", "run_as_group", "processes")
# How long a worker's LOGOUT waits for the master to confirm the session's release before it
# answers anyway (Server.sessions_closed); the master answers within one turn of its loop.
SESSION_RELEASE_WAIT_SECONDS = 5.0


class StartupError(Exception):
    """The server cannot start; ``str()`` is one line that says what to do."""


@dataclass(slots=True)
class _Slot:
    """One connection's place in the connection counts; given back once, at the answer to
    QUIT/LOGOUT (``Server.connection_quit``) or when the connection ends."""

    give_back: Callable[[], None] | None

    def release(self) -> None:
        give_back, self.give_back = self.give_back, None
        if give_back is not None:
            give_back()


def _service_listeners(listener: str) -> tuple[str, ...]:
    """The listeners counted together for the connection limits: IMAP's two and POP3's two
    (one service each, as Dovecot's imap-login and pop3-login); each SMTP listener on its own
    (a service each in Postfix's master.cf: MX mail and users' submissions do not compete)."""
    for group in (("imap", "imaps"), ("pop3", "pop3s")):
        if listener in group:
            return group
    return (listener,)


@dataclass(slots=True)
class Listener:
    """One bound listener."""

    name: str
    address: ListenAddress  # unix paths resolved under data_dir
    service: Service
    server: asyncio.Server

    @property
    def sockname(self) -> str:
        """The address actually bound (port 0 becomes the chosen port)."""
        if self.address.is_unix or not self.server.sockets:
            return str(self.address)
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(ListenAddress(host=host, port=port))


def bind_error_message(name: str, address: ListenAddress, exc: OSError) -> str:
    """The one-line error for a listener that cannot be bound, with what to do about it."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if isinstance(exc, socket.gaierror):
        reason = exc.strerror or str(exc)
        hint = "use an IP address of this host, or 0.0.0.0 for all"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = (
            "check the permissions of the socket's directory"
            if address.is_unix
            else "run as root or choose a port above 1023"
        )
    elif exc.errno == errno.EADDRINUSE:
        hint = (
            "another server is running on this socket; stop it or choose another path"
            if address.is_unix
            else "another program listens there (see: ss -ltnp); stop it or choose another port"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "use an IP address of this host, or 0.0.0.0 for all"
    elif exc.errno == errno.ENOENT and address.is_unix:
        hint = "create the socket's directory or choose another path"
    else:
        hint = f'fix listen.{name} or switch it off with listen.{name} = ""'
    return f"listen.{name}: cannot bind {address}: {reason}; {hint}"


def _open_directory(settings: Settings) -> Directory:
    from pochta.directory.open import open_directory

    return open_directory(settings)


def _remove_stale_unix_socket(path: Path) -> None:
    """Remove a socket file left by a crashed server; refuse to steal a live one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
        except OSError:
            return  # let bind report it
    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


def _preload_modules() -> None:
    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    "example.org".encode("idna")  # the codec also loads lazily
    # Mail names every charset: a codec is imported when first used, which fails once the
    # interpreter's directory is out of reach. Load them all now (some 120 small modules).
    import encodings

    for info in pkgutil.iter_modules(encodings.__path__):
        with contextlib.suppress(ImportError, LookupError):
            importlib.import_module(f"encodings.{info.name}")


def _live_pochta(pid: int) -> bool:
    """Whether process ``pid`` runs and is a ``pochta serve`` (a PID reused by another
    program after a crash leaves a stale file, which is replaced)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # alive and not inspectable: assume the worst
    return any(b"pochta" in a for a in argv) and b"serve" in argv


def _refuse_a_running_pochta(path: Path) -> None:
    """StartupError when ``path`` names a live ``pochta serve``; a stale file is left to be
    replaced once the listeners are bound."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"cannot read the PID file {path}: {exc.strerror}") from None
    if text.isdigit() and _live_pochta(int(text)):
        raise StartupError(
            f"pochta already runs as process {text} (PID file {path}); stop it first "
            f"(kill {text}) or give this one its own data_dir or server.pid_file"
        )
    log.info("pid_file_stale", path=str(path), content=text[:20])


def _remove_pid_file(path: Path) -> None:
    """Remove our PID file on the way out (only if it still names us)."""
    try:
        if path.read_text(encoding="ascii", errors="replace").strip() == str(os.getpid()):
            path.unlink()
    except OSError as exc:
        log.warning("pid_file_not_removed", path=str(path), error=exc.strerror)


def _unlink_socket(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@dataclass
class _State:
    """What changes while running; kept apart so __init__ stays trivial."""

    listeners: dict[str, Listener] = field(default_factory=dict)
    connections: set[asyncio.Task[None]] = field(default_factory=set)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # The master's sockets of WORKER_LISTENERS, accepted from directly when workers exist.
    accepting: list[socket.socket] = field(default_factory=list)
    # Each open connection's place in the counts (see Server.connection_quit).
    slots: dict[asyncio.Task[None], _Slot] = field(default_factory=dict)


class Server:
    """The running server: listeners, the current settings and directory, metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        services: dict[str, ServiceFactory] | None = None,
        worker_services: list[str] | None = None,
        worker_link: int | None = None,
    ):
        self.settings = settings
        # An IMAP worker process (see server/workers.py) gets its listening sockets and its
        # link to the master from the master; the master has the pool instead.
        self._worker_services: dict[str, Service] = {}
        self._worker_service_names = worker_services
        self._worker_link = worker_link
        self._pool: WorkerPool | None = None
        self._master: MasterLink | None = None
        self._sessions = OpenCounts()  # sessions of this process, per key (see sessions())
        # Connections this process serves: per "listener NUL client IP", and per listener.
        self._open_per_ip = OpenCounts()
        self._open_total = OpenCounts()
        self.metrics = Metrics()
        self.services = SERVICES if services is None else services
        # Set when SIGTERM/SIGINT arrives: services close idle connections at once.
        self.stopping = asyncio.Event()
        # Called after a successful reload, with the server (tables etc. hook in here).
        self.reload_hooks: list[Callable[[Server], None]] = []
        self._directory: Directory | None = None
        self._tables: ConfiguredTables | None = None
        # The queue, store and delivery (built after the privilege drop); None until then.
        self.mail: MailSystem | None = None
        self._state = _State()
        self._reload_lock = asyncio.Lock()
        self._pid_written = False

    # -- what services use ---------------------------------------------------------------

    @property
    def directory(self) -> Directory:
        """The current directory; replaced (not mutated) on reload."""
        if self._directory is None:
            raise RuntimeError("the directory is not open yet")
        return self._directory

    @property
    def tables(self) -> ConfiguredTables:
        """The lookup tables named in [tables]; replaced as a whole on reload."""
        if self._tables is None:
            raise RuntimeError("the tables are not open yet")
        return self._tables

    @property
    def listeners(self) -> dict[str, Listener]:
        return self._state.listeners

    def on_reload(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after each successful reload, the new settings in place."""
        self.reload_hooks.append(lambda _server: hook())

    # -- life cycle ----------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; StartupError when start-up fails. Returns 0."""
        loop = asyncio.get_running_loop()
        log.info(
            "starting",
            role="worker" if self._worker_link is not None else "master",
            version=__version__,
            pid=os.getpid(),
            config=self.settings.config_path,
            data_dir=str(self.settings.data_dir),
            hostname=self.settings.server.hostname,
        )
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        pid_file = self._pid_file()
        if pid_file is not None:
            _refuse_a_running_pochta(pid_file)
        try:
            await self.bind()
            if pid_file is not None:
                self._write_pid_file(pid_file)
            if self._worker_link is None:
                self._ensure_srs_secret()  # before the workers, which read it
                self._spawn_workers()  # as root still: workers load the TLS key themselves
            _preload_modules()
            self._drop_privileges()
            self._directory = self._open_directory_or_fail(self.settings)
            self._tables = self._open_tables_or_fail(self.settings)
            if self._worker_services or any(name in MAIL_LISTENERS for name in self.listeners):
                from pochta.server.mail import MailSystem

                self.mail = MailSystem(self, master=self._worker_link is None)
                self.reload_hooks.append(self.mail.reload)
                shards = self._pool.shard_count if self._pool is not None else 1
                await self.mail.start(shard_count=shards)
                self._link_processes(loop)
            loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            for name, listener in self.listeners.items():
                if self._pool is None or name not in WORKER_LISTENERS:
                    await listener.server.start_serving()
            if self._worker_link is None:
                log.info("ready", listeners=len(self.listeners), pid=os.getpid(), role="master")
            else:
                services = ",".join(self._worker_services)
                log.info("ready", pid=os.getpid(), role="worker", services=services)
            await self.stopping.wait()
            await self._drain()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self._close()
            if pid_file is not None and self._pid_written:
                _remove_pid_file(pid_file)
        log.info("shutdown")
        return 0

    def stop(self, reason: str = "stop") -> None:
        """Begin a graceful stop (what SIGTERM does)."""
        if not self.stopping.is_set():
            log.info("stopping", signal=reason, connections=len(self._state.connections))
            self.stopping.set()

    def _spawn_workers(self) -> None:
        count = worker_count(self.settings.server.processes)
        names = [name for name in self.listeners if name in WORKER_LISTENERS]
        if not count or not names or not self.settings.config_path:
            return
        self._pool = WorkerPool(worker_command(self.settings.config_path), names, count)
        self._pool.spawn_all()

    def _link_processes(self, loop: asyncio.AbstractEventLoop) -> None:
        """Carry store changes and the delivery shards between this process and the others
        (server/workers.py)."""
        mail = self.mail
        assert mail is not None
        assert mail.changes is not None
        hub = mail.changes
        if self._worker_link is not None:
            master = self._master = MasterLink(self._worker_link)

            def serve(name: str, ip: str, sock: socket.socket) -> None:
                service = self._worker_services.get(name)
                if service is None:
                    sock.close()
                    master.connection_closed(name, ip)
                    return
                self._adopt(name, service, sock, lambda: master.connection_closed(name, ip))

            def command(what: bytes) -> None:
                if what == STOP:
                    self.stop("master")
                else:
                    self._on_sighup()

            def deliver(index: int, count: int) -> None:
                self._background(mail.start_delivery(index, count))

            master.start(
                loop, hub.wake_remote, lambda: self.stop("master_lost"), serve, command, deliver
            )
            hub.relay_to(master)  # this worker's changes go to the master, which wakes the rest
            mail.to_master = master.queued
        elif self._pool is not None:
            pool = self._pool

            def worker_ready(index: int) -> None:
                mail.queue.give_shard(index + 1)
                pool.hand_shard(index)

            def worker_exited(index: int) -> None:
                self._background(mail.take_back_shard(index + 1))

            pool.start(
                loop,
                hub.wake_remote,
                self._sessions.get_count,
                worker_ready,
                worker_exited,
                mail.queue.adopt,
            )
            self._accept_here()
            hub.relay_to(pool)  # the master's changes go to every worker

    def _make_worker_services(self, names: list[str]) -> None:
        """A worker's services: no sockets of its own; the master passes connections."""
        for name in names:
            factory = self.services.get(name)
            if factory is None or name not in WORKER_LISTENERS:
                raise StartupError(f"listen.{name}: not a listener worker processes serve")
            service = factory(self, name)
            if getattr(service, "tls", None) is None:
                # The master had TLS when it started us; serving without would drop STARTTLS.
                raise StartupError(f"listen.{name}: the TLS certificate cannot be loaded here")
            self._worker_services[name] = service

    def _accept_here(self) -> None:
        """Master with workers: accept IMAP connections ourselves and balance them."""
        loop = asyncio.get_running_loop()
        for name, listener in self.listeners.items():
            if name not in WORKER_LISTENERS:
                continue
            for ts in listener.server.sockets:
                raw = socket.socket(fileno=os.dup(ts.fileno()))
                raw.setblocking(False)
                raw.listen(LISTEN_BACKLOG)  # start_serving would have; we accept instead
                self._state.accepting.append(raw)
                loop.add_reader(raw.fileno(), self._accept_ready, name, listener.service, raw)

    def _accept_ready(self, name: str, service: Service, raw: socket.socket) -> None:
        pool = self._pool
        assert pool is not None
        for _ in range(64):
            try:
                conn, peer = raw.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept_failed", listener=name, error=str(exc))
                return
            ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
            # A worker tells of a QUIT before it answers it: read what the workers said, so a
            # client that reconnects right after QUIT finds its old connection gone.
            pool.poll()
            # Over a limit: served here, where the service refuses it (421, BYE, -ERR).
            # While a worker is up the master keeps no connection: the workers serve them.
            if self.refusal(name, ip, accepted=False) is None and pool.hand_off(name, ip, conn):
                conn.close()
                continue
            self._adopt(name, service, conn)

    def sessions(self, key: str) -> int:
        """Open sessions counted under `key` (e.g. one account's IMAP sessions) in every
        process; in a worker, as the master last reported them. The links are read first,
        so a release another process confirmed (``sessions_closed``) is counted here."""
        here = self._sessions.counts.get(key, 0)
        if self._master is not None:
            self._master.poll()
            return max(here, self._master.totals.get(key, 0))
        if self._pool is None:
            return here
        self._pool.poll()
        return here + self._pool.sessions(key)

    def session_opened(self, key: str) -> None:
        self._sessions.add(key)
        self._tell_sessions(key, opened=True)

    def session_closed(self, key: str) -> None:
        self._sessions.remove(key)
        self._tell_sessions(key, opened=False)

    async def sessions_closed(self, *keys: str) -> None:
        """End sessions counted under `keys` and return once every process counts them no
        more (a worker waits, at most SESSION_RELEASE_WAIT_SECONDS, for the master's word
        that it has the release and has sent the new totals to every worker; the master
        and a single process have them at once)."""
        for key in keys:
            self.session_closed(key)
        if self._master is None or not keys:
            return
        if not await self._master.synced(SESSION_RELEASE_WAIT_SECONDS):
            log.warning(
                "session_release_unconfirmed",
                keys=",".join(keys),
                waited_seconds=SESSION_RELEASE_WAIT_SECONDS,
                detail="the master did not confirm in time; a login right after may be "
                "refused [LIMIT] until it does",
            )

    def _tell_sessions(self, key: str, *, opened: bool) -> None:
        if self._master is not None:
            self._master.session(key, opened=opened)
        elif self._pool is not None:
            self._pool.push_total(key)

    def _limits(self, listener: str) -> tuple[int, int, list[str]]:
        """(max_connections, max_connections_per_ip, networks exempt from the per-IP limit)
        of `listener`; 0 is no limit (as in Postfix)."""
        s = self.settings
        if listener in ("imap", "imaps"):
            return s.imap.max_connections, s.imap.max_connections_per_ip, []
        if listener in ("pop3", "pop3s"):
            return s.pop3.max_connections, s.pop3.max_connections_per_ip, []
        if listener == "managesieve":
            ms = s.managesieve
            return ms.max_connections, ms.max_connections_per_ip, []
        if listener in SMTP_LISTENERS:
            smtp = s.smtp
            return (
                smtp.max_connections,
                smtp.max_connections_per_ip,
                smtp.connection_limit_exceptions,
            )
        return 0, 0, []

    def refusal(self, listener: str, ip: str, *, accepted: bool = True) -> Refusal | None:
        """Whether a connection from `ip` on `listener` is over a limit, counted over every
        process: "total" (the listener's max_connections), "per_ip", or None (serve it).
        `accepted`: the connection is already counted (a service asks, from its handle)."""
        total, per_ip, exempt = self._limits(listener)
        new = 0 if accepted else 1
        if total and self.open_on(listener) + new > total:
            return "total"
        if per_ip and self.open_from(listener, ip) + new > per_ip and not in_networks(ip, exempt):
            return "per_ip"
        return None

    def open_from(self, listener: str, ip: str) -> int:
        """Connections from `ip` on `listener`'s service in every process (per-IP limit)."""
        pool = self._pool
        return sum(
            self._open_per_ip.get_count(f"{name}\0{ip}")
            + (pool.open_from(name, ip) if pool is not None else 0)
            for name in _service_listeners(listener)
        )

    def open_on(self, listener: str) -> int:
        """Connections on `listener`'s service in every process (for max_connections)."""
        pool = self._pool
        return sum(
            self._open_total.get_count(name) + (pool.open_on(name) if pool is not None else 0)
            for name in _service_listeners(listener)
        )

    def connection_quit(self) -> None:
        """Called by a session as it answers QUIT (SMTP 221, POP3 +OK, IMAP BYE to LOGOUT),
        before the answer is written: from now on its connection no longer counts toward the
        limits, even if the socket lingers, so a client that reconnects at once is not
        refused (a worker tells the master right away, server/workers.py)."""
        task = asyncio.current_task()
        slot = self._state.slots.get(task) if task is not None else None
        if slot is not None:
            slot.release()

    def _count(self, listener: str, ip: str, on_close: Callable[[], None] | None) -> _Slot:
        key = f"{listener}\0{ip}"
        self._open_per_ip.add(key)
        self._open_total.add(listener)

        def give_back() -> None:
            self._open_per_ip.remove(key)
            self._open_total.remove(listener)
            if on_close is not None:
                on_close()

        return _Slot(give_back)

    def _adopt(
        self,
        name: str,
        service: Service,
        sock: socket.socket,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """Serve a connection accepted elsewhere (our accept loop, or the master's)."""
        loop = asyncio.get_running_loop()

        async def adopt() -> None:
            reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)

            def connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
                return self._serve_connection(name, service, r, w, on_close)

            protocol = asyncio.StreamReaderProtocol(reader, connected, loop=loop)
            try:
                await loop.connect_accepted_socket(lambda: protocol, sock, ssl=service.ssl_context)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                log.debug("handshake_failed", listener=name, error=str(exc))
                sock.close()
                if on_close is not None:
                    on_close()

        self._background(adopt())

    async def bind(self) -> None:
        """Bind every configured listener that has a service; StartupError on failure."""
        if self._worker_service_names is not None:
            self._make_worker_services(self._worker_service_names)
            return
        data_dir = self.settings.data_dir
        for name in LISTENER_NAMES:
            value: str = getattr(self.settings.listen, name)
            if not value:
                continue
            try:
                address = parse_listen(value).resolve(data_dir)
            except ValueError as exc:
                raise StartupError(f"listen.{name}: {exc}") from None
            factory = self.services.get(name)
            if factory is None:
                # Never accept connections we cannot serve.
                log.warning(
                    "listener_unavailable",
                    listener=name,
                    address=str(address),
                    reason="service not implemented yet",
                )
                continue
            service = factory(self, name)
            try:
                server = await self._bind_one(name, address, service)
            except OSError as exc:
                raise StartupError(bind_error_message(name, address, exc)) from None
            listener = Listener(name=name, address=address, service=service, server=server)
            self._state.listeners[name] = listener
            log.info(
                "listener_bound",
                listener=name,
                address=listener.sockname,
                tls="yes" if service.ssl_context is not None else "no",
            )

    async def _bind_one(
        self, name: str, address: ListenAddress, service: Service
    ) -> asyncio.Server:
        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_connection(name, service, reader, writer)

        if address.is_unix:
            path = Path(address.path)
            _remove_stale_unix_socket(path)
            return await asyncio.start_unix_server(
                on_connection, path=str(path), ssl=service.ssl_context, start_serving=False
            )
        return await asyncio.start_server(
            on_connection,
            host=address.host,
            port=address.port,
            ssl=service.ssl_context,
            reuse_address=True,
            start_serving=False,
        )

    def _pid_file(self) -> Path | None:
        """``[server] pid_file`` of the master process (workers write none)."""
        name = self.settings.server.pid_file
        if not name or self._worker_link is not None:
            return None
        return self.settings.path(name)

    def _write_pid_file(self, path: Path) -> None:
        """After binding (so a second server fails on its ports or here, never half-way),
        before the privilege drop, which gives the file to run_as_user (it removes it)."""
        try:
            write_atomic(path, f"{os.getpid()}\n".encode(), mode=0o644)
        except OSError as exc:
            raise StartupError(
                f"cannot write the PID file {path}: {exc.strerror}; fix server.pid_file or "
                "its directory (or set it empty for none)"
            ) from None
        self._pid_written = True
        log.info("pid_file_written", path=str(path), pid=os.getpid())

    def _ensure_srs_secret(self) -> None:
        """Installs older than SRS have no secrets file: make one (given to run_as_user with
        the other paths at the privilege drop)."""
        srs = self.settings.srs
        if not srs.enabled:
            return
        path = self.settings.path(srs.secret_file)
        try:
            if ensure_secret_file(path):
                log.info("srs_secret_created", path=str(path))
        except OSError as exc:
            raise StartupError(f"cannot write the SRS secret file {path}: {exc}") from None

    def _writable_paths(self) -> list[Path]:
        """What the server writes under data_dir: given to run_as_user when started as root."""
        data_dir = self.settings.data_dir
        db = self.settings.directory_db
        spool = self.settings.spool_dir
        paths = [data_dir, spool, spool / "maildrop", spool / "maildrop-corrupt"]
        paths += [self.settings.mail_dir, db]
        if db.parent != data_dir and db.parent.is_relative_to(data_dir):
            # directory.sqlite_path in a folder of data_dir: SQLite makes its -wal and -shm
            # files there, so the user needs that folder too (pochta check refuses a folder
            # outside data_dir that the user cannot write: config/check.py).
            paths.append(db.parent)
        paths += [db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
        paths += [Path(x.address.path) for x in self.listeners.values() if x.address.is_unix]
        # Made as root before the drop; the server's user appends to, reopens and removes them.
        for name in (self.settings.server.log_file, self.settings.server.pid_file):
            if name and self.settings.path(name).exists():
                paths.append(self.settings.path(name))
        srs_secret = self.settings.path(self.settings.srs.secret_file)
        if srs_secret.exists():  # read by MailSystem after the drop (mode 0600)
            paths.append(srs_secret)
        # DKIM keys (DOMAIN/SELECTOR.key, made by root with mode 0600): the signer reads them.
        keys = self.settings.dkim_dir
        if keys.is_dir():
            paths.append(keys)
            for domain_dir in sorted(p for p in keys.iterdir() if p.is_dir()):
                paths += [domain_dir, *sorted(domain_dir.glob("*.key"))]
        return paths

    def _drop_privileges(self) -> None:
        server = self.settings.server
        try:
            drop_privileges(
                server.run_as_user,
                server.run_as_group,
                chown=self._writable_paths(),
                readable=[Path(self.settings.config_path)] if self.settings.config_path else [],
            )
        except PrivilegeError as exc:
            raise StartupError(str(exc)) from None

    def _open_tables_or_fail(self, settings: Settings) -> ConfiguredTables:
        try:
            tables = ConfiguredTables.open(settings)
        except TableError as exc:
            raise StartupError(f"tables: {exc}") from None
        for warning in tables.warnings:
            log.warning("table_warning", detail=warning)
        return tables

    def _open_directory_or_fail(self, settings: Settings) -> Directory:
        try:
            return _open_directory(settings)
        except Exception as exc:  # start-up boundary: any failure is one line for the admin
            raise StartupError(
                f"directory: cannot open {settings.directory_db}: {exc}; "
                "check the file and its permissions, or run pochta init"
            ) from None

    async def _serve_connection(
        self,
        name: str,
        service: Service,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._state.connections.add(task)
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"  # unix socket: local
        slot = self._state.slots[task] = self._count(name, ip, on_close)
        self.metrics.connections_total.labels(name).inc()
        gauge = self.metrics.connections_open.labels(name)
        gauge.inc()
        try:
            await service.handle(reader, writer)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("connection_lost", listener=name, error=type(exc).__name__)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception:
            log.exception("connection_failed", listener=name)
        finally:
            gauge.dec()
            self._state.connections.discard(task)
            self._state.slots.pop(task, None)
            slot.release()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _drain(self) -> None:
        """Stop accepting; give open connections time to finish, then cancel them."""
        if self._pool is not None:
            self._pool.tell_all(STOP)  # workers drain at the same time
        self._stop_accepting()
        for listener in self.listeners.values():
            listener.server.close()
        pending = set(self._state.connections)
        if not pending:
            return
        log.info("draining", connections=len(pending), grace_seconds=SHUTDOWN_GRACE_SECONDS)
        _, pending = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_SECONDS)
        if pending:
            log.warning("connections_cancelled", connections=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=2.0)

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for raw in self._state.accepting:
            loop.remove_reader(raw.fileno())
            raw.close()
        self._state.accepting.clear()

    async def _close(self) -> None:
        self._stop_accepting()
        if self._pool is not None:
            await self._pool.stop()
        if self._master is not None:
            self._master.close()
        for listener in self.listeners.values():
            listener.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 1.0)
            if listener.address.is_unix:
                _unlink_socket(listener.address.path)
        for task in list(self._state.background):
            task.cancel()
        if self.mail is not None:
            with contextlib.suppress(Exception):
                await self.mail.stop()
            self.mail = None
        if self._directory is not None:
            self._directory.close()
            self._directory = None

    # -- reload (SIGHUP) -----------------------------------------------------------------

    def _on_sighup(self) -> None:
        if self._pool is not None:
            self._pool.tell_all(RELOAD)
        self._background(self.reload())

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task of this server's (kept until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._state.background.add(task)
        task.add_done_callback(self._state.background.discard)

    async def reload(self) -> None:
        """Re-read the config file and reopen the directory; keep the old on any problem."""
        from pochta.checks import load_checked_settings
        from pochta.config.load import ConfigError

        async with self._reload_lock:
            path = self.settings.config_path
            # First, so the reload's own lines go to the new file after logrotate moved the
            # old one (its postrotate sends SIGHUP, as for syslogd).
            problem = reopen_log_file()
            if problem is not None:
                log.warning("log_file_reopen_failed", detail=problem)
            log.info("reload", config=path)
            try:
                # The table files are read below, keeping the last good version of each
                # (ConfiguredTables.open with previous=): a table being edited must not
                # make the whole reload fail.
                new = await asyncio.to_thread(load_checked_settings, path, check_tables=False)
            except ConfigError as exc:
                self._reload_failed([str(p) for p in exc.problems])
                return
            except Exception as exc:  # a reload must never bring the server down
                self._reload_failed([f"{type(exc).__name__}: {exc}"])
                return
            new = self._keep_restart_only(new)
            try:
                directory = _open_directory(new)
            except Exception as exc:
                self._reload_failed([f"directory: cannot open {new.directory_db}: {exc}"])
                return
            try:
                tables = await asyncio.to_thread(ConfiguredTables.open, new, previous=self._tables)
            except TableError as exc:  # a table the running config did not name
                directory.close()
                self._reload_failed([f"tables: {exc}"])
                return
            old_directory, self._directory = self._directory, directory
            self._tables = tables
            for warning in tables.warnings:
                log.warning("table_warning", detail=warning)
            for problem in tables.kept:
                log.warning("table_kept", detail=problem, hint="fix the file and reload again")
            old_settings, self.settings = self.settings, new
            if old_directory is not None:
                old_directory.close()
            logging_before = (
                old_settings.server.log_format,
                old_settings.server.log_level,
                old_settings.server.log_file,
            )
            logging_now = (new.server.log_format, new.server.log_level, new.server.log_file)
            if logging_before != logging_now:
                log_file = new.path(new.server.log_file) if new.server.log_file else None
                try:
                    configure_logging(new.server.log_format, new.server.log_level, file=log_file)
                except OSError as exc:
                    log.warning(
                        "log_file_open_failed",
                        path=str(log_file),
                        error=exc.strerror,
                        action="kept the log where it was",
                    )
            for hook in self.reload_hooks:
                try:
                    hook(self)
                except Exception:
                    log.exception("reload_hook_failed", hook=getattr(hook, "__name__", "?"))
            self.metrics.reloads_total.labels("ok").inc()
            log.info("reloaded", config=path)

    def _reload_failed(self, problems: list[str]) -> None:
        self.metrics.reloads_total.labels("failed").inc()
        log.error(
            "reload_failed",
            problems=" | ".join(problems),
            action="kept the running configuration",
        )

    def _keep_restart_only(self, new: Settings) -> Settings:
        """Log and undo the changes a reload cannot apply (they need a restart)."""
        old = self.settings
        for name in LISTENER_NAMES:
            before, after = getattr(old.listen, name), getattr(new.listen, name)
            if before != after:
                log.warning(
                    "reload_listener_change_ignored",
                    listener=name,
                    running=before,
                    configured=after,
                    hint="restart pochta to apply",
                )
        kept: dict[str, str] = {}
        for key in RESTART_ONLY_SERVER_KEYS:
            before, after = getattr(old.server, key), getattr(new.server, key)
            if before != after:
                log.warning(
                    "reload_setting_change_ignored",
                    key=f"server.{key}",
                    running=before,
                    configured=after,
                    hint="restart pochta to apply",
                )
                kept[key] = before
        server = msgspec.structs.replace(new.server, **kept) if kept else new.server
        return msgspec.structs.replace(new, listen=old.listen, server=server)
