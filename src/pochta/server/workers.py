"""Worker processes: more CPUs for SMTP and IMAP, one set of listening sockets, one truth.

Python runs one CPU per process, so ``pochta serve`` (the master) can start extra processes
for SMTP, submission and IMAP sessions. The master alone accepts their connections and
passes each socket (SCM_RIGHTS) to the worker holding the fewest, so the load is even and
the connection limits (per listener and per client IP) count every process; it serves a
connection itself only when no worker is up. Every process has the same :class:`MailStore`;
SQLite write transactions serialise their writes across processes, and the store's on-disk
check notices what another process changed.

Every process delivers, too: the queue is split into shards, one per process (the master is
shard 0, worker ``i`` shard ``i + 1``), by the last digits of the queue id. The queue
keeps the shards and answers which ids are whose (``MessageQueue.configure_shards``,
``mine``, ``shard_of``, ``requeue_active_shard`` in ``queue/base.py``); this module only
carries which process has which. A process gives the mail it queues ids of its own shard,
so what a worker receives for other hosts it also delivers, with the content still in
memory. Mail a worker receives for local mailboxes only goes to the master instead (``Q``):
the worker's CPU stays with its sessions and one process writes the deliveries into the
mailboxes, which bench/smtp_bench.sh measured as faster at 4 KiB and 100 KiB. Mail queued
by ``pochta sendmail`` or moved by ``pochta queue`` falls in any shard and is found by the
scans of incoming/ and deferred/, which each process makes for its shards. A message is
claimed by renaming it into active/ under its lock, so two processes never deliver it at
once. Each process keeps to its share of the per-destination concurrency limit.

The master recovers the spool before anyone delivers: it starts with every shard and hands
shard ``i + 1`` to worker ``i`` once that worker is ready (``G``). When a worker dies, the
master takes its shard back and moves the messages that worker left in active/ (its shard,
not being delivered by the master) back to incoming/, where they are tried again at once,
as after a crash of the whole server (the mailbox agent's dedupe key keeps a mailbox from
getting a second copy); the restarted worker gets its shard again.

What must cross processes is the wake-up: an IDLE session in one process has to hear of a
delivery made by the master or a STORE made in a sibling. Each worker is linked to the
master by a ``SOCK_SEQPACKET`` socket pair (ordered, reliable, one message per change):

* ``C`` address NUL folder: that folder of that account changed;
* ``*``: anything may have changed (sent after a full send buffer dropped messages);
* ``A`` listener NUL client IP, with a socket (master to worker): serve this connection;
* ``X`` listener NUL client IP (worker to master): a connection passed to it has ended, or
  is about to get its answer to QUIT/LOGOUT (then it no longer counts toward the limits; the
  master reads the links before it judges each new connection);
* ``G`` index "/" count (master to worker): deliver the messages of shard index of count;
* ``Q`` queue id (worker to master): a message for local mailboxes only, for the master to
  deliver;
* ``S`` ("+" or "-") key (worker to master): a session counted under key (an account's
  IMAP sessions) began or ended; ``N`` key NUL total (master to workers): the count of all
  processes, so each can apply the per-account limit;
* ``W`` token (worker to master) and ``K`` token (master to that worker): a barrier. The
  master reads a link in order, so when it reads ``W`` it has applied everything the worker
  sent before and sent the new totals (``N``) to every worker; its ``K`` says so. A worker
  ending sessions at LOGOUT waits for ``K`` before it answers (``MasterLink.synced``), and
  a worker judges a login against the limits after reading what its link holds
  (``MasterLink.poll``): a client that read LOGOUT's OK and logs in again, on any worker, is
  judged on counts without its old session;
* ``R`` (worker to master): ready for connections;
* ``H`` and ``T`` (master to worker): reload (SIGHUP) and stop (SIGTERM). Messages rather
  than signals, because a worker may still be root while the master already is not.

A worker sends its own changes to the master; the master wakes its sessions and forwards the
message to the other workers, and sends its own changes to every worker. A worker whose
link reads EOF has lost its master and stops; a worker link that reads EOF in the master
has that worker's sessions and connections forgotten at once (the worker is gone). The
master starts workers before it drops privileges (they load the TLS key and drop
themselves), restarts one that exits with a delay, and stops them with SIGTERM when it
stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pochta.logs import get_logger
from pochta.queue.envelope import is_queue_id

log = get_logger("server")

WAKE_ALL = b"*"
RELOAD = b"H"
STOP = b"T"
READY = b"R"
MAX_MESSAGE = 4096
RESTART_DELAY_SECONDS = 5.0
STOP_GRACE_SECONDS = 12.0

# Called on the event loop for a change another process made: (address, folder), or
# (None, None) for "anything may have changed" (``pochta.runtime.ChangeBus.wake_remote``).
RemoteChange = Callable[[str | None, str | None], None]


def change_message(address: str, folder: str) -> bytes:
    return b"C" + address.lower().encode() + b"\0" + folder.encode()


def parse_message(data: bytes) -> tuple[str | None, str | None] | None:
    """(address, folder) of a change message, (None, None) for WAKE_ALL, None if unknown."""
    if data == WAKE_ALL:
        return None, None
    if data[:1] != b"C":
        return None
    address, sep, folder = data[1:].partition(b"\0")
    if not sep:
        return None
    try:
        return address.decode(), folder.decode()
    except UnicodeDecodeError:
        return None


class Link:
    """One end of a master-worker socket pair. ``send`` works from any thread.

    When the send buffer is full, a store change (``C``) is replaced by one WAKE_ALL, which
    says "anything may have changed"; every other message (connection and session counts,
    hand-offs, shards) counts, so it waits in order and goes out at the next chance (``retry``,
    on a timer, or the next ``send``). Dropping one would leave a count wrong for good."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._lock = threading.Lock()
        self._overflow = False
        self._pending: collections.deque[bytes] = collections.deque()

    def send(self, data: bytes) -> None:
        with self._lock:
            try:
                self._flush()
            except OSError:
                return  # the peer is gone; its supervisor deals with that
            if self._overflow or self._pending:
                self._defer(data)  # keep the order: this one goes after those
                return
            try:
                self.sock.send(data)
            except BlockingIOError:
                self._defer(data)
            except OSError:
                pass

    def _defer(self, data: bytes) -> None:
        if data[:1] == b"C" or data == WAKE_ALL:
            self._overflow = True
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        """Send the pending WAKE_ALL and messages, in order, as far as the buffer takes them;
        raises OSError (not BlockingIOError) when the peer is gone."""
        try:
            if self._overflow:
                self.sock.send(WAKE_ALL)
                self._overflow = False
            while self._pending:
                self.sock.send(self._pending[0])
                self._pending.popleft()
        except BlockingIOError:
            pass

    @property
    def pending(self) -> int:
        """Messages waiting for room in the send buffer (WAKE_ALL counts as one)."""
        return len(self._pending) + int(self._overflow)

    def retry(self) -> None:
        """Send what is pending, if anything (called on a timer)."""
        with self._lock:
            try:
                self._flush()
            except OSError:
                self._overflow = False
                self._pending.clear()

    def send_socket(self, data: bytes, fd: int) -> bool:
        """Pass a connection's socket; False when it cannot go now (serve it here)."""
        with self._lock:
            try:
                socket.send_fds(self.sock, [data], [fd])
            except OSError:
                return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One message and the sockets it carries; None when nothing is waiting."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
    except BlockingIOError:
        return None
    except OSError:
        return b"", []
    return data, fds


@dataclass(slots=True)
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    link: Link | None = None
    started: float = 0.0
    restart_at: float = 0.0
    stopped: bool = False
    reader_fd: int = -1
    ready: bool = False
    sessions: dict[str, int] = field(default_factory=dict)  # key -> its open sessions
    # Connections passed to it, per (listener, client IP).
    open_per_ip: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def open(self) -> int:
        return sum(self.open_per_ip.values())


class WorkerPool:
    """The master's side: start, link, supervise and stop the worker processes."""

    def __init__(self, argv: list[str], services: list[str], count: int) -> None:
        self._argv = argv  # the command up to (without) the worker options
        self._services = services
        self._workers = [_Worker(i) for i in range(count)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_remote: RemoteChange | None = None
        self._on_ready: Callable[[int], None] | None = None
        self._on_exit: Callable[[int], None] | None = None
        self._on_queued: Callable[[str], None] | None = None
        self._local_sessions: Callable[[str], int] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None]

    def spawn_all(self) -> None:
        """Start every worker (before the privilege drop, so they can read the TLS key)."""
        for worker in self._workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args = [*self._argv, "--worker-link", str(theirs.fileno())]
        for name in self._services:
            args += ["--worker-service", name]
        try:
            worker.process = subprocess.Popen(args, pass_fds=[theirs.fileno()], close_fds=True)
        except OSError as exc:
            ours.close()
            log.error("worker_spawn_failed", worker=worker.index, error=str(exc))
            worker.restart_at = time.monotonic() + RESTART_DELAY_SECONDS
            return
        finally:
            theirs.close()
        worker.link = Link(ours)
        worker.started = time.monotonic()
        log.info("worker_started", worker=worker.index, pid=worker.process.pid)
        if self._loop is not None:
            self._watch(worker)

    @property
    def shard_count(self) -> int:
        """Delivering processes: the workers and the master."""
        return len(self._workers) + 1

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_remote: RemoteChange,
        local_sessions: Callable[[str], int],
        on_ready: Callable[[int], None],
        on_exit: Callable[[int], None],
        on_queued: Callable[[str], None],
    ) -> None:
        """Begin reading the links and supervising (on the running loop). ``on_ready`` and
        ``on_exit`` get a worker's index when it is ready and when it has exited;
        ``on_queued`` the id of a message a worker queued for the master to deliver."""
        self._loop = loop
        self._on_remote = on_remote
        self._local_sessions = local_sessions
        self._on_ready = on_ready
        self._on_exit = on_exit
        self._on_queued = on_queued
        for worker in self._workers:
            if worker.link is not None:
                self._watch(worker)
        self._supervisor = loop.create_task(self._supervise())

    def _watch(self, worker: _Worker) -> None:
        assert self._loop is not None
        assert worker.link is not None
        link = worker.link
        worker.reader_fd = link.sock.fileno()
        self._loop.add_reader(worker.reader_fd, self._read, worker, link)

    def _read(self, worker: _Worker, link: Link) -> None:
        for _ in range(64):
            got = _receive(link.sock)
            if got is None:
                return
            data, fds = got
            for fd in fds:  # workers send none; never leak one
                os.close(fd)
            if not data:  # the worker is gone: the supervisor restarts it
                self._unwatch(worker)
                self._forget(worker)
                return
            if data == READY:
                worker.ready = True
                if self._on_ready is not None:
                    self._on_ready(worker.index)
                continue
            if data[:1] == b"X":
                listener, _, ip = data[1:].decode("ascii", "replace").partition("\0")
                key = (listener, ip)
                left = worker.open_per_ip.get(key, 0) - 1
                if left > 0:
                    worker.open_per_ip[key] = left
                else:
                    worker.open_per_ip.pop(key, None)
                continue
            if data[:1] == b"S" and len(data) > 2:
                name = data[2:].decode("utf-8", "replace")
                count = worker.sessions.get(name, 0) + (1 if data[1:2] == b"+" else -1)
                if count > 0:
                    worker.sessions[name] = count
                else:
                    worker.sessions.pop(name, None)
                self.push_total(name)
                continue
            if data[:1] == b"W":
                # Everything this worker sent before is applied and its totals are sent.
                link.send(b"K" + data[1:])
                continue
            if data[:1] == b"Q":
                queue_id = data[1:].decode("ascii", "replace")
                if self._on_queued is not None and is_queue_id(queue_id):
                    self._on_queued(queue_id)
                continue
            parsed = parse_message(data)
            if parsed is None:
                continue
            if self._on_remote is not None:
                self._on_remote(*parsed)
            for other in self._workers:
                if other is not worker and other.link is not None:
                    other.link.send(data)

    def _unwatch(self, worker: _Worker) -> None:
        if self._loop is not None and worker.reader_fd >= 0:
            self._loop.remove_reader(worker.reader_fd)
        worker.reader_fd = -1

    def _forget(self, worker: _Worker) -> None:
        """A worker is gone: its connections and sessions no longer count."""
        worker.open_per_ip.clear()
        gone, worker.sessions = list(worker.sessions), {}
        for key in gone:
            self.push_total(key)

    def sessions(self, key: str) -> int:
        """Sessions counted under `key` in the workers."""
        return sum(w.sessions.get(key, 0) for w in self._workers)

    def push_total(self, key: str) -> None:
        total = self.sessions(key) + (self._local_sessions(key) if self._local_sessions else 0)
        data = b"N" + key.encode() + b"\0" + str(total).encode()
        for worker in self._workers:
            if worker.link is not None:
                worker.link.send(data)
        log.debug("sessions_counted", key=key, total=total)

    def open_from(self, listener: str, ip: str) -> int:
        """Connections from `ip` on `listener` that the workers serve."""
        return sum(w.open_per_ip.get((listener, ip), 0) for w in self._workers)

    def open_on(self, listener: str) -> int:
        """Connections on `listener` that the workers serve."""
        return sum(
            n for w in self._workers for (name, _), n in w.open_per_ip.items() if name == listener
        )

    def poll(self) -> None:
        """Read what the workers have sent so far, now rather than at the loop's next turn:
        the master calls this before it judges a new connection against the limits, so an
        ``X`` a worker sent before answering QUIT is counted (see ``connection_closed``)."""
        for worker in self._workers:
            if worker.link is not None and worker.reader_fd >= 0:
                self._read(worker, worker.link)

    def hand_off(self, listener: str, ip: str, sock: socket.socket) -> bool:
        """Pass an accepted connection to the least busy worker. True when it went (the
        caller closes `sock`); False when no worker can take it now (the caller serves it)."""
        live = [w for w in self._workers if w.ready and w.link is not None and w.reader_fd >= 0]
        if not live:
            return False
        target = min(live, key=lambda w: w.open)
        assert target.link is not None
        data = b"A" + listener.encode() + b"\0" + ip.encode()
        if not target.link.send_socket(data, sock.fileno()):
            return False
        key = (listener, ip)
        target.open_per_ip[key] = target.open_per_ip.get(key, 0) + 1
        return True

    def send_change(self, address: str, folder: str) -> None:
        """A change made in the master (any thread): tell every worker (the master's
        ``pochta.runtime.ChangeRelay``)."""
        data = change_message(address, folder)
        for worker in self._workers:
            if worker.link is not None:
                worker.link.send(data)

    def hand_shard(self, index: int) -> None:
        """Tell worker ``index`` to deliver its shard (``index + 1``)."""
        link = self._workers[index].link
        if link is not None:
            link.send(b"G%d/%d" % (index + 1, self.shard_count))

    def tell_all(self, command: bytes) -> None:
        """RELOAD or STOP to every worker."""
        for worker in self._workers:
            if worker.link is not None:
                worker.link.send(command)

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for worker in self._workers:
                if worker.link is not None:
                    worker.link.retry()
                proc = worker.process
                if proc is not None and proc.poll() is not None:
                    log.error(
                        "worker_exited",
                        worker=worker.index,
                        pid=proc.pid,
                        code=proc.returncode,
                        restart_in=RESTART_DELAY_SECONDS,
                    )
                    self._unwatch(worker)
                    if worker.link is not None:
                        worker.link.close()
                        worker.link = None
                    worker.process = None
                    worker.ready = False
                    self._forget(worker)
                    worker.restart_at = now + RESTART_DELAY_SECONDS
                    if self._on_exit is not None:
                        self._on_exit(worker.index)
                elif proc is None and now >= worker.restart_at and not self._stopping:
                    self._spawn(worker)

    async def stop(self) -> None:
        """SIGTERM every worker and wait for them (they drain their connections)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        self.tell_all(STOP)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in self._workers:
            proc = worker.process
            if proc is None:
                continue
            try:
                await asyncio.to_thread(proc.wait, max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(proc.wait, 2.0)
            self._unwatch(worker)
            if worker.link is not None:
                worker.link.close()
                worker.link = None


class MasterLink:
    """The worker's side: its changes go to the master, the master's come back."""

    def __init__(self, fd: int) -> None:
        self.link = Link(socket.socket(fileno=fd))
        self._loop: asyncio.AbstractEventLoop | None = None
        self.totals: dict[str, int] = {}  # key -> sessions in every process, from the master
        self._retry: asyncio.Task[None] | None = None
        self._read: Callable[[], None] | None = None
        self._barriers: dict[int, asyncio.Future[None]] = {}  # W token -> its K
        self._next_barrier = 0

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        on_remote: RemoteChange,
        on_lost: Callable[[], None],
        on_connection: Callable[[str, str, socket.socket], None],
        on_command: Callable[[bytes], None],
        on_shard: Callable[[int, int], None],
    ) -> None:
        self._loop = loop

        def read() -> None:
            if self._read is None:  # the master is lost: nothing more to read
                return
            for _ in range(64):
                got = _receive(self.link.sock)
                if got is None:
                    return
                data, fds = got
                if data[:1] == b"A" and len(fds) == 1:
                    name, _, ip = data[1:].partition(b"\0")
                    on_connection(name.decode(), ip.decode(), socket.socket(fileno=fds[0]))
                    continue
                for fd in fds:
                    os.close(fd)
                if data in (RELOAD, STOP):
                    on_command(data)
                    continue
                if data[:1] == b"G":
                    index, _, count = data[1:].decode("ascii", "replace").partition("/")
                    if index.isdigit() and count.isdigit() and int(index) < int(count):
                        on_shard(int(index), int(count))
                    continue
                if data[:1] == b"N":
                    key, _, total = data[1:].decode("utf-8", "replace").rpartition("\0")
                    if total.isdigit() and int(total):
                        self.totals[key] = int(total)
                    else:
                        self.totals.pop(key, None)
                    continue
                if data[:1] == b"K":
                    token = data[1:].decode("ascii", "replace")
                    waiter = self._barriers.pop(int(token), None) if token.isdigit() else None
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                    continue
                if not data:
                    loop.remove_reader(self.link.sock.fileno())
                    self._read = None
                    log.error("master_lost", pid=os.getpid())
                    on_lost()
                    return
                parsed = parse_message(data)
                if parsed is not None:
                    on_remote(*parsed)

        self._read = read
        loop.add_reader(self.link.sock.fileno(), read)
        self.link.send(READY)
        self._retry = loop.create_task(self._retry_loop())

    def poll(self) -> None:
        """Read what the master has sent so far, now rather than at the loop's next turn: a
        session calls this (through ``Server.sessions``) before it judges a login against
        the limits, so totals the master sent before a client could log in again are in."""
        if self._read is not None:
            self._read()

    async def synced(self, wait_seconds: float) -> bool:
        """Wait until the master has applied everything this worker sent before (``W``,
        answered by ``K``), at most ``wait_seconds``; False when it did not answer in
        time (the master is busy or gone)."""
        if self._loop is None or self._read is None:
            return False
        token = self._next_barrier
        self._next_barrier += 1
        waiter = self._loop.create_future()
        self._barriers[token] = waiter
        self.link.send(b"W%d" % token)
        try:
            await asyncio.wait_for(waiter, wait_seconds)
        except TimeoutError:
            return False
        finally:
            self._barriers.pop(token, None)
        return True

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.link.retry()

    def send_change(self, address: str, folder: str) -> None:
        """A change made in this worker (any thread): tell the master, which wakes its
        sessions and tells the other workers (the worker's ``pochta.runtime.ChangeRelay``)."""
        self.link.send(change_message(address, folder))

    def connection_closed(self, listener: str, ip: str) -> None:
        """A connection passed to us ended, or answered QUIT (sent before the answer, so the
        master has it before the client can connect again)."""
        self.link.send(b"X" + listener.encode() + b"\0" + ip.encode())

    def session(self, key: str, *, opened: bool) -> None:
        self.link.send(b"S" + (b"+" if opened else b"-") + key.encode())

    def queued(self, queue_id: str) -> None:
        """A message this worker queued for the master to deliver."""
        self.link.send(b"Q" + queue_id.encode())

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.link.sock.fileno())
        self.link.close()


def worker_command(config_path: str) -> list[str]:
    """How the master starts a worker: this interpreter, this package, the same config."""
    return [sys.executable, "-m", "pochta", "--config", config_path, "serve"]


def worker_count(configured: int) -> int:
    """Worker processes for ``server.processes`` (the master included): 0 means one worker
    per CPU, 1 none (the master serves every connection itself)."""
    if configured > 0:
        return configured - 1
    return os.cpu_count() or 1
