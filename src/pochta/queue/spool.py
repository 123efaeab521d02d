"""The spool: queued messages on disk, Postfix's queue directories (qmgr(8), postsuper(1)).

Layout under ``queue.spool_dir``::

    incoming/ID   a message waiting for its first (or a flushed) attempt
    active/ID     a message whose delivery runs now
    deferred/ID   a message waiting for a retry (per-recipient next_attempt)
    hold/ID       a message an admin put on hold (never tried until released)
    corrupt/ID    a message file that does not parse, or whose content is cut short
    status/ID     the envelope as the last delivery attempt left it (only once one has)
    tmp/          files being written; whatever is left here after a crash is half-written
    pool/         queue files of delivered messages, kept to be written over by new ones
    master.lock   locked (flock) by the one server process that schedules deliveries

One file per message, like Postfix's queue files: its first line is the envelope (one line
of JSON, ``envelope.py``), the rest is the raw message (RFC 5322, CRLF), written once and
never rewritten. The directory the file is in *is* the message's state, so a state change
(incoming → active → deferred) is one ``rename(2)``, atomic: a message is in exactly one
state at every instant, also across a crash. The envelope's ``size`` is the length of the
content, so a file cut short is seen by its size alone.

The envelope changes after a delivery attempt (per-recipient status, reply, next try). Those
changes go to ``status/ID``, written aside, fsynced and renamed into place (Postfix keeps them
in its defer logs and in records patched in place), so a multi-megabyte message is never
copied for a retry. Where ``status/ID`` exists it is the envelope; the first line of the
message file is then only the envelope as received. A message delivered at its first attempt
never gets one: enqueue, claim and removal touch one file, which is what makes the queue
fast on file systems where creating an inode is costly.

Durability (DESIGN.md "Durability before acknowledgement"): ``enqueue`` writes the file in
``tmp/``, fsyncs it, renames it into ``incoming/`` (the commit point: before it, recovery sees
a half-written file and removes it), and returns only after ``incoming/`` was fsynced: by
the writing I/O thread itself when no other directory fsync runs (a lone message: one thread
hop in all), else shared with concurrent enqueues by the group committer
(``group_commit.py``). File data is written and fsynced in a small thread pool, so the event
loop never waits for a disk flush; the scheduler's claim and removal of a message, a few
system calls on one file, run on the event loop itself (CLAIM_READ_MAX).

Recycled queue files (``pool/``): creating and removing an inode for every message is the
most costly part of a queue on ext4 (inode allocation scans the recently freed inodes of its
group), and the directory fsync is half of the latency before 250. So the scheduler does not
remove the file of a delivered message of at most ``POOL_FILE_MAX`` bytes: it overwrites the
file's first byte with ``#`` (a free file; an envelope line starts with ``{``) and renames it
into ``pool/``. ``enqueue`` takes a free file from there (flock, as every writer), writes the
new envelope and content over it, truncates it to their length and fdatasyncs it: that alone
makes the message durable, because recovery looks in ``pool/`` too. The envelope line carries
the content's CRC-32, and a pool file whose envelope parses, whose length is right and whose
content matches the CRC is a queued message: recovery moves it into ``incoming/`` unless its
id is there already. A file whose overwrite was cut off by a crash fails that test (the
length or the CRC) and stays free; it was never acknowledged. The link into ``incoming/`` and
the removal of the pool name are then made without a directory fsync. A delivered message
whose ``#`` a crash lost comes back and is tried again, as when the unlink of a delivered
message is lost (removals are not fsynced, as in Postfix): the dedupe key keeps it out of the
mailboxes that have it.

Locking between processes: the server's scheduler, ``pochta queue`` and ``pochta sendmail``
can touch the same spool at once. Every change of a message's state or status is made while
holding ``flock(LOCK_EX)`` on its message file (a lock belongs to the inode, so it moves with
the file), after finding where the file is now, so two processes never both move or rewrite
one message. Writers lock the files they are creating, so recovery removes only files whose
writer is dead.

Recovery (``recover``, at server start, like Postfix's qmgr/postsuper -s): half-written files
in ``tmp/`` are removed; messages in ``active/`` (their delivery was cut off) go back to
``incoming/`` and are tried again (the mailbox agent is idempotent through the dedupe key,
queue id + recipient, and recipients recorded as delivered are never retried); files that do
not parse or are cut short go to ``corrupt/`` with a log line; status files whose message is
gone (a removal cut off half way) are removed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import itertools
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec

from pochta.durable import owner_for_new_files
from pochta.logs import get_logger
from pochta.queue.base import (
    STATES,
    MessageBusy,
    QueueEntry,
    QueueState,
    RecoveryReport,
    SpoolError,
    SpoolFull,
    UnknownMessage,
    WrongState,
    required_free_bytes,
)
from pochta.queue.envelope import (
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    is_queue_id,
    new_queue_id,
    queue_shard,
)
from pochta.queue.group_commit import FsyncCounters, GroupCommitter

__all__ = [  # the shared types are queue/base.py's; importers of spool keep finding them here
    "MAX_ENVELOPE_BYTES",
    "STATES",
    "FreeSpace",
    "MessageBusy",
    "QueueEntry",
    "QueueState",
    "RecoveryReport",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "UnknownMessage",
    "WrongState",
    "is_no_space",
    "required_free_bytes",
]


STATUS_DIR = "status"
TMP_DIR = "tmp"
POOL_DIR = "pool"
# Recycled queue files: at most this many kept, each at most this large (larger files are
# removed: their blocks are better freed than kept for 4 KiB messages).
POOL_FILES_MAX = 1024
POOL_FILE_MAX = 1024 * 1024
# The first byte of a free pool file (an envelope line starts with "{").
FREE_MARK = b"#"
MASTER_LOCK = "master.lock"

# How long an admin command waits for a message that another process is changing.
ADMIN_LOCK_WAIT_SECONDS = 5.0
# The envelope line of a message file: 1000 recipients with DSN parameters fit many times.
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
# Contents of messages queued by this process, kept so that their first delivery attempt
# need not read them back from the disk (bounded; evicted oldest first).
FRESH_CACHE_BYTES = 32 * 1024 * 1024
# The scheduler claims and removes messages on the event loop itself: a few system calls on
# one file cost less than a hand-off to a thread and back (which, with the GIL passed to and
# fro, costs dozens of futex calls). A claimed file of at most this size is read whole, so
# that the delivery agent need not read it again.
CLAIM_READ_MAX = 256 * 1024

log = get_logger("queue")
T = TypeVar("T")


def is_no_space(exc: BaseException) -> bool:
    """An OSError that says the disk (or the disk quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class FreeSpace:
    """Free bytes of a file system as an unprivileged writer sees them (statvfs
    ``f_bavail``), asked at most once per ``cache_seconds`` of ``clock``, so that a busy
    server does not make a statvfs call per SMTP command. ``statvfs`` and ``clock`` are
    injectable for tests."""

    def __init__(
        self,
        path: Path | str,
        *,
        cache_seconds: float = 1.0,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.cache_seconds = cache_seconds
        self._statvfs = statvfs
        self._clock = clock
        self._checked_at: float | None = None
        self._free = 0

    def free_bytes(self) -> int:
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self.cache_seconds:
            st = self._statvfs(self.path)
            self._free = st.f_bavail * st.f_frsize
            self._checked_at = now
        return self._free

    def shortfall(self, needed_bytes: int) -> int:
        """How many bytes are missing for ``needed_bytes`` to be free (0: enough)."""
        return max(0, needed_bytes - self.free_bytes())


def _read_head(fd: int) -> tuple[bytes, int]:
    """The envelope line of an open message file and the file's size."""
    size = os.fstat(fd).st_size
    chunk = os.pread(fd, min(size, 65536), 0)
    end = chunk.find(b"\n")
    if end < 0 and len(chunk) < size:
        chunk = os.pread(fd, min(size, MAX_ENVELOPE_BYTES + 1), 0)
        end = chunk.find(b"\n")
    if end < 0:
        raise EnvelopeError("no envelope line at the start of the file")
    return chunk[: end + 1], size


class Spool:
    """A queue directory. Async methods run their file work in a small thread pool.

    ``io_threads`` bounds the threads writing and fsyncing files (Postfix has no such knob;
    its cleanup processes are the bound). ``commit_window_seconds`` is the group committer's
    extra wait (see ``group_commit.py``).
    """

    def __init__(
        self,
        root: Path | str,
        *,
        io_threads: int = 4,
        commit_window_seconds: float = 0.0,
        create: bool = True,
        remember_fresh: bool = True,
    ) -> None:
        self.root = Path(root)
        # Keep new contents in memory for the queue manager of this process (none in a worker).
        self._remember_fresh = remember_fresh
        self.counters = FsyncCounters()
        self._owner = owner_for_new_files(self.root)
        if create:
            self.ensure_dirs()
        self._executor = ThreadPoolExecutor(
            max_workers=io_threads, thread_name_prefix="pochta-spool"
        )
        self._committer = GroupCommitter(self.counters, window_seconds=commit_window_seconds)
        # What MAIL FROM checks before taking a message (queue.min_free_bytes).
        self.free_space = FreeSpace(self.root)
        self._listeners: list[Callable[[str], None]] = []
        self._tmp_counter = itertools.count()
        self._master_fd: int | None = None
        self._fresh: dict[str, bytes] = {}
        self._fresh_bytes = 0
        self._pool_names: list[str] = []  # free pool files to try, refilled from listdir
        self._pool_size = 0  # files in pool/ as last counted, plus those added since
        self._pool_counted = 0.0
        # Shards (queue/base.py): how many processes deliver from this spool, which of them
        # this process schedules, and the one its new queue ids fall in.
        self._shard_count = 1
        self._shards: set[int] = {0}
        self._own_shard = 0

    # -- shards (see queue/base.py and server/workers.py) -------------------------------------

    @property
    def shard_count(self) -> int:
        return self._shard_count

    @property
    def shards(self) -> frozenset[int]:
        return frozenset(self._shards)

    @property
    def shard(self) -> tuple[int, int] | None:
        """(own shard, count) when several processes deliver, else None."""
        return (self._own_shard, self._shard_count) if self._shard_count > 1 else None

    def configure_shards(
        self, count: int, shards: Iterable[int], *, own: int | None = None
    ) -> None:
        """``count`` processes deliver from this spool, this one the messages of ``shards``;
        the ids of the mail it queues fall in ``own`` (default: the lowest of ``shards``)."""
        self._shard_count = max(1, count)
        self._shards = set(shards)
        self._own_shard = min(self._shards, default=0) if own is None else own

    def shard_of(self, queue_id: str) -> int:
        """The shard of ``queue_id``: its last two digits modulo the count (``queue_shard``)."""
        return queue_shard(queue_id, self._shard_count)

    def mine(self, queue_id: str) -> bool:
        """Whether this process schedules ``queue_id`` (its shard is one of ours)."""
        return self._shard_count == 1 or self.shard_of(queue_id) in self._shards

    def take_shard(self, index: int) -> None:
        """Schedule the messages of shard ``index`` too (its process is down)."""
        self._shards.add(index)

    def give_shard(self, index: int) -> None:
        """Stop taking new messages of shard ``index`` (its process is up again); those
        being delivered here finish here."""
        self._shards.discard(index)

    def new_queue_id(self) -> str:
        """A new queue id in this process's own shard (``queue_shard``), so the mail it
        queues is delivered by this process."""
        return new_queue_id(shard=self.shard)

    async def requeue_active_shard(
        self, index: int, reason: str, *, busy: Callable[[str], bool]
    ) -> int:
        """What the dead process of shard ``index`` left in active/, back into incoming/,
        but for the ids ``busy`` (this process delivers them). The ids are chosen before
        the first ``await``, on the event loop, so nothing that this process claims meanwhile
        is among them (it claims only from incoming/ and deferred/). How many were moved."""
        left = [
            queue_id
            for queue_id in self.ids_sync("active")
            if self.shard_of(queue_id) == index and not busy(queue_id)
        ]
        if not left:
            return 0
        return await self.requeue_active(left, reason)

    # -- paths ---------------------------------------------------------------------------------

    def state_dir(self, state: QueueState) -> Path:
        return self.root / state

    def message_path(self, state: QueueState, queue_id: str) -> Path:
        """The file of ``queue_id`` while it is in ``state``."""
        return self.root / state / queue_id

    def status_path(self, queue_id: str) -> Path:
        return self.root / STATUS_DIR / queue_id

    def ensure_dirs(self) -> None:
        """Create the spool's directories (mode 0700; owned like the spool when run as root)."""
        for name in (*STATES, STATUS_DIR, TMP_DIR, POOL_DIR):
            path = self.root / name
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                if self._owner is not None:
                    os.chown(path, *self._owner)
        if self._owner is not None and self.root.stat().st_uid != self._owner[0]:
            os.chown(self.root, *self._owner)

    def exists(self) -> bool:
        return (self.root / "incoming").is_dir()

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(queue_id)`` after each successful enqueue (the scheduler's wake)."""
        self._listeners.append(callback)

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- the cache of fresh contents (event loop thread only) ----------------------------------

    def _remember(self, queue_id: str, content: bytes) -> None:
        if not self._remember_fresh or len(content) > FRESH_CACHE_BYTES // 8:
            return
        self._fresh[queue_id] = content
        self._fresh_bytes += len(content)
        while self._fresh_bytes > FRESH_CACHE_BYTES:
            self._forget(next(iter(self._fresh)))

    def _forget(self, queue_id: str) -> None:
        content = self._fresh.pop(queue_id, None)
        if content is not None:
            self._fresh_bytes -= len(content)

    # -- enqueue -------------------------------------------------------------------------------

    async def enqueue(
        self, envelope: Envelope, content: bytes, *, here: bool = True, hold: bool = False
    ) -> str:
        """Store a new message durably and return its queue id; only then may 250 be sent.

        Fills ``envelope.queue_id`` when empty (a new id) and sets ``envelope.size``. Raises
        ``SpoolFull`` (disk full: an OSError too; answer 452 4.3.1), another ``OSError`` (I/O
        error) or ``SpoolError``: the caller answers 451 then.
        ``here`` False: another process delivers it, so neither the listeners (this process's
        queue manager) hear of it nor is its content kept in memory.
        ``hold``: into hold/ instead of incoming/ (Postfix's cleanup HOLD), so no scheduler
        ever claims it before an admin releases it; never into a recycled pool file, whose
        recovery would put it in incoming/.
        """
        envelope.size = len(content)
        state: QueueState = "hold" if hold else "incoming"
        queue_id, durable = await self._run(self._enqueue_sync, envelope, content, state)
        if not durable:  # others were committing: join their next batch (group_commit.py)
            try:
                await self._committer.sync_dirs([self.state_dir(state)])
            except OSError:
                # Not acknowledged: take it back so the client's retry is no duplicate.
                with contextlib.suppress(OSError):
                    os.unlink(self.message_path(state, queue_id))
                raise
        if hold:
            here = False  # nobody delivers it until it is released
            log.info("held", queue_id=queue_id)
        if here:
            self._remember(queue_id, content)
        fields: dict[str, object] = {"client": envelope.client_ip} if envelope.client_ip else {}
        if envelope.auth_user:
            fields["sasl_username"] = envelope.auth_user
        log.info(
            "queued",
            queue_id=queue_id,
            sender=envelope.sender or "<>",
            nrcpt=len(envelope.recipients),
            size=envelope.size,
            protocol=envelope.protocol,
            **fields,
        )
        for listener in self._listeners if here else ():
            listener(queue_id)
        return queue_id

    def _enqueue_sync(
        self, envelope: Envelope, content: bytes, state: QueueState = "incoming"
    ) -> tuple[str, bool]:
        """Write the message; returns its id and whether it is durable already: written
        into a recycled file, or its directory fsynced here because no other writer was
        committing (``GroupCommitter.commit_if_idle``: a lone message takes no second thread
        hop). A full disk raises SpoolFull (nothing of the message is left behind)."""
        try:
            queue_id, recycled = self._enqueue_file(envelope, content, state)
            if recycled:  # durable once written (see the module docstring)
                return queue_id, True
            try:
                return queue_id, self._committer.commit_if_idle([self.state_dir(state)])
            except OSError:
                # Not acknowledged: take it back so the client's retry is no duplicate.
                with contextlib.suppress(OSError):
                    os.unlink(self.message_path(state, queue_id))
                raise
        except OSError as exc:
            if is_no_space(exc) and not isinstance(exc, SpoolFull):
                raise SpoolFull(exc.filename or self.root, envelope.queue_id) from None
            raise

    def _enqueue_file(
        self, envelope: Envelope, content: bytes, state: QueueState = "incoming"
    ) -> tuple[str, bool]:
        envelope.crc32 = zlib.crc32(content)
        fixed_id = bool(envelope.queue_id)
        for _ in range(10):
            if not fixed_id:
                envelope.queue_id = self.new_queue_id()
            queue_id = envelope.queue_id
            if not is_queue_id(queue_id):
                raise SpoolError(f"queue id {queue_id!r} is not valid")
            if fixed_id and self.locate_sync(queue_id) is not None:
                raise SpoolError(f"message {queue_id} exists already")
            parts = (encode_envelope(envelope), content)
            # Written and synced, locked while we write: recovery leaves a file alone while
            # its writer lives.
            taken = self._take_pool_file() if state == "incoming" else None
            if taken is None:
                path, fd = self._write_tmp(queue_id, *parts)
            else:
                path, fd = taken
                try:
                    self._overwrite(fd, *parts)
                except BaseException as exc:
                    _mark_free(fd)
                    os.close(fd)
                    if is_no_space(exc):
                        raise SpoolFull(path, queue_id) from None
                    raise
            try:
                # The commit point (once the directory is synced, or at once for a recycled
                # file). link(), unlike rename(), never replaces a message with this id.
                os.link(path, self.message_path(state, queue_id))
            except BaseException as exc:
                if taken is not None:
                    _mark_free(fd)  # stays in pool/, free again
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                os.close(fd)
                if not isinstance(exc, FileExistsError):
                    raise
                if fixed_id:
                    raise SpoolError(f"message {queue_id} exists already") from None
                continue
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)
            return queue_id, taken is not None
        # 10 clashes of 9e8 random values within one microsecond
        raise SpoolError("could not find a free queue id")  # pragma: no cover

    def _take_pool_file(self) -> tuple[Path, int] | None:
        """A free recycled file, open for writing and locked; None when pool/ has none."""
        pool = self.root / POOL_DIR
        for _ in range(16):
            if not self._pool_names:
                try:
                    names = os.listdir(pool)
                except FileNotFoundError:
                    return None
                if not names:
                    return None
                # Several processes take from one pool: each tries the files in its own order.
                random.shuffle(names)
                self._pool_names = names
            try:
                name = self._pool_names.pop()
            except IndexError:  # another thread of ours emptied it meanwhile
                continue
            path = pool / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue  # taken by another process meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Still in pool/ now that we hold it (not taken and let go meanwhile), and
                # free? (After a crash, before recovery, it may hold a queued message.)
                if os.stat(path).st_ino == os.fstat(fd).st_ino and os.pread(fd, 1, 0) == FREE_MARK:
                    return path, fd
            except OSError:
                pass
            os.close(fd)
        return None

    def _overwrite(self, fd: int, *parts: bytes) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        total = 0
        for part in parts:
            _write_all(fd, part)
            total += len(part)
        os.ftruncate(fd, total)
        # The inode's size is flushed with the data; its times need not be.
        self.counters.fsync_file(fd, data_only=True)

    def _write_tmp(self, queue_id: str, *parts: bytes) -> tuple[Path, int]:
        """Write ``parts`` to a new locked file in tmp/ and fsync it; the caller moves the file
        into place and closes the descriptor."""
        path = self.root / TMP_DIR / f"{queue_id}.{os.getpid()}.{next(self._tmp_counter)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if is_no_space(exc):
                raise SpoolFull(path, queue_id) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._chown(fd)
            for part in parts:
                _write_all(fd, part)
            self.counters.fsync_file(fd)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            if is_no_space(exc):
                raise SpoolFull(path, queue_id) from None
            raise
        return path, fd

    def _chown(self, fd: int) -> None:
        if self._owner is not None:
            os.fchown(fd, *self._owner)

    # -- reading -------------------------------------------------------------------------------

    def locate_sync(self, queue_id: str) -> QueueState | None:
        """Where the file of ``queue_id`` is now (None: not in the queue)."""
        if not is_queue_id(queue_id):
            return None
        for state in STATES:
            if os.path.exists(self.message_path(state, queue_id)):
                return state
        return None

    async def locate(self, queue_id: str) -> QueueState | None:
        return await self._run(self.locate_sync, queue_id)

    def _read_envelope(self, state: QueueState, queue_id: str) -> Envelope:
        """The envelope of a message: its status file if it has one, else the file's first
        line. Raises ``EnvelopeError`` for a file that does not parse or is cut short."""
        fd = os.open(self.message_path(state, queue_id), os.O_RDONLY | os.O_CLOEXEC)
        try:
            head, size = _read_head(fd)
        finally:
            os.close(fd)
        return self._checked_envelope(queue_id, head, size)

    def _checked_envelope(self, queue_id: str, head: bytes, size: int) -> Envelope:
        """The envelope of a message file whose first line is ``head`` and whose size is
        ``size``: its status file if it has one, else ``head`` (checked against the size)."""
        envelope = decode_envelope(head)
        if envelope.queue_id != queue_id:
            raise EnvelopeError(f"file {queue_id} holds the message {envelope.queue_id}")
        if size - len(head) != envelope.size:
            raise EnvelopeError(
                f"the content is {size - len(head)} bytes, the envelope says {envelope.size}"
            )
        try:
            status = self.status_path(queue_id).read_bytes()
        except FileNotFoundError:
            return envelope
        envelope = decode_envelope(status)
        if envelope.queue_id != queue_id:
            raise EnvelopeError(f"status file {queue_id} is that of {envelope.queue_id}")
        return envelope

    def _load_sync(self, queue_id: str) -> tuple[QueueState, Envelope]:
        for _ in range(5):  # the file may move between locating and reading it
            state = self.locate_sync(queue_id)
            if state is None:
                break
            try:
                return state, self._read_envelope(state, queue_id)
            except FileNotFoundError:
                continue
        raise UnknownMessage(queue_id)

    async def load(self, queue_id: str) -> Envelope:
        """The envelope of ``queue_id``.

        Raises ``UnknownMessage``, or ``EnvelopeError`` when the file does not parse.
        """
        _, envelope = await self._run(self._load_sync, queue_id)
        return envelope

    async def load_with_state(self, queue_id: str) -> tuple[QueueState, Envelope]:
        return await self._run(self._load_sync, queue_id)

    def _content_sync(self, queue_id: str) -> bytes:
        for _ in range(5):
            state = self.locate_sync(queue_id)
            if state is None:
                break
            try:
                data = self.message_path(state, queue_id).read_bytes()
            except FileNotFoundError:
                continue
            end = data.find(b"\n")
            if end < 0:
                raise EnvelopeError("no envelope line at the start of the file")
            return data[end + 1 :]
        raise UnknownMessage(queue_id)

    async def read_content(self, queue_id: str) -> bytes:
        """The raw message of ``queue_id`` (from memory when this process queued it)."""
        cached = self._fresh.get(queue_id)
        if cached is not None:
            return cached
        return await self._run(self._content_sync, queue_id)

    def ids_sync(self, state: QueueState) -> builtins.list[str]:
        """Queue ids in one state directory, oldest first."""
        try:
            names = os.listdir(self.state_dir(state))
        except FileNotFoundError:
            return []
        return sorted(name for name in names if is_queue_id(name))

    async def ids(self, state: QueueState) -> builtins.list[str]:
        return await self._run(self.ids_sync, state)

    def _list_sync(self, state: QueueState | None) -> builtins.list[QueueEntry]:
        entries = []
        for st in STATES if state is None else (state,):
            for queue_id in self.ids_sync(st):
                try:
                    envelope: Envelope | None = self._read_envelope(st, queue_id)
                    error = ""
                except FileNotFoundError:
                    continue  # moved or removed since the listing
                except (EnvelopeError, OSError) as exc:
                    envelope, error = None, str(exc)
                entries.append(QueueEntry(queue_id, st, envelope, error))
        return entries

    # -- locking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, queue_id: str, wait_seconds: float) -> Iterator[QueueState]:
        """Hold the message's lock (flock on its file) for one change; yields where the file
        is once the lock is held (it cannot move while we hold it)."""
        if not is_queue_id(queue_id):
            raise UnknownMessage(queue_id)
        for _ in range(5):
            state = self.locate_sync(queue_id)
            if state is None:
                break
            try:
                fd = os.open(self.message_path(state, queue_id), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # moved between locating and opening
            try:
                deadline = time.monotonic() + wait_seconds
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise MessageBusy(queue_id) from None
                        time.sleep(0.02)
                # It may have moved (or gone) while we waited for the lock.
                now = self.locate_sync(queue_id)
                if now is None:
                    break
                try:
                    same = os.stat(self.message_path(now, queue_id)).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue
                yield now
                return
            finally:
                os.close(fd)
        raise UnknownMessage(queue_id)

    # -- state changes -------------------------------------------------------------------------

    def _move_sync(
        self,
        queue_id: str,
        to: QueueState,
        allowed_from: Iterable[QueueState],
        action: str,
        wait_seconds: float,
    ) -> QueueState:
        with self._locked(queue_id, wait_seconds) as state:
            if state not in allowed_from:
                raise WrongState(queue_id, state, action)
            if state != to:
                os.rename(self.message_path(state, queue_id), self.message_path(to, queue_id))
            return state

    async def move(
        self,
        queue_id: str,
        state: QueueState,
        *,
        allowed_from: Iterable[QueueState] = STATES,
        wait_seconds: float = ADMIN_LOCK_WAIT_SECONDS,
        durable: bool = True,
        action: str = "",
    ) -> QueueState:
        """Move a message to ``state``; returns the state it was in.

        Raises ``UnknownMessage``, ``WrongState`` (not in ``allowed_from``; ``action`` names
        the operation in its message) or ``MessageBusy``. ``durable``: fsync both directories
        before returning (group commit).
        """
        action = action or f"move to {state}"
        previous = await self._run(
            self._move_sync, queue_id, state, tuple(allowed_from), action, wait_seconds
        )
        if state != "incoming" and state != "active":
            self._forget(queue_id)
        if durable and previous != state:
            await self._committer.sync_dirs([self.state_dir(previous), self.state_dir(state)])
        return previous

    async def hold(self, queue_id: str) -> None:
        """postsuper -h: keep the message from delivery until released."""
        await self.move(queue_id, "hold", allowed_from=("incoming", "deferred"), action="hold")
        log.info("held", queue_id=queue_id)

    async def release(self, queue_id: str) -> None:
        """postsuper -H: release a held message. Deviation from Postfix, which releases into
        deferred/ until the next queue run: ours goes to incoming/ and is tried at once."""
        await self.move(queue_id, "incoming", allowed_from=("hold",), action="release")
        log.info("released", queue_id=queue_id)

    async def requeue(self, queue_id: str) -> None:
        """postsuper -r: try the message again now (also from hold and corrupt, for after
        an admin fixed the cause). Only the move: ``pochta queue requeue`` routes the
        envelope afresh before it moves the message (cli/queue.py)."""
        previous = await self.move(
            queue_id,
            "incoming",
            allowed_from=("incoming", "deferred", "hold", "corrupt"),
            action="requeue",
        )
        log.info("requeued", queue_id=queue_id, previous=previous)

    async def flush(self) -> int:
        """postqueue -f: every deferred message goes to incoming/, where it is due at once.

        Messages busy in another process are skipped (they are being handled anyway).
        """
        moved = 0
        for queue_id in await self.ids("deferred"):
            try:
                await self.move(
                    queue_id,
                    "incoming",
                    allowed_from=("deferred",),
                    wait_seconds=0.5,
                    durable=False,
                )
            except SpoolError:
                continue
            moved += 1
        if moved:
            await self._committer.sync_dirs(
                [self.state_dir("deferred"), self.state_dir("incoming")]
            )
        return moved

    def _update_sync(self, queue_id: str, data: bytes, wait_seconds: float) -> QueueState:
        with self._locked(queue_id, wait_seconds) as state:
            tmp_path, tmp_fd = self._write_tmp(queue_id, data)
            try:
                os.rename(tmp_path, self.status_path(queue_id))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_path)
                raise
            finally:
                os.close(tmp_fd)
            return state

    async def update_envelope(
        self, queue_id: str, envelope: Envelope, *, wait_seconds: float = ADMIN_LOCK_WAIT_SECONDS
    ) -> None:
        """Replace the envelope atomically (its status file: write aside, fsync, rename, fsync
        the directory), wherever the message is now. The message file is not touched.
        Raises ``UnknownMessage`` when the message is gone (deleted meanwhile)."""
        if envelope.queue_id != queue_id:
            raise SpoolError(f"envelope of {envelope.queue_id} given for {queue_id}")
        data = encode_envelope(envelope)
        await self._run(self._update_sync, queue_id, data, wait_seconds)
        await self._committer.sync_dirs([self.root / STATUS_DIR])

    def _remove_sync(self, queue_id: str, wait_seconds: float, recycle: bool) -> QueueState:
        with self._locked(queue_id, wait_seconds) as state:
            path = self.message_path(state, queue_id)
            if not (recycle and self._recycle(path, queue_id)):
                os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.status_path(queue_id))
            return state

    def _remove_active_now(self, queue_id: str) -> QueueState | None:
        """The scheduler's removal of a message it delivered, done on the event loop: the file
        is in active/ and nobody else holds it, as a rule. None when that is not so (then the
        caller takes the general way, which finds the file and waits for its lock)."""
        fd = self._open_locked("active", queue_id, os.O_RDWR)
        if fd is None:
            return None
        try:
            path = self.message_path("active", queue_id)
            if not self._recycle(path, queue_id, fd):
                os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.status_path(queue_id))
        finally:
            os.close(fd)
        return "active"

    def _recycle(self, path: Path, queue_id: str, fd: int | None = None) -> bool:
        """Mark a removed message's file free and move it into pool/ (caller holds its lock;
        ``fd``: the file open for writing, if the caller has it); False when the pool is full
        or the file too large: remove it then."""
        now = time.monotonic()
        pool = self.root / POOL_DIR
        try:
            if now - self._pool_counted > 5.0:
                self._pool_size = len(os.listdir(pool))
                self._pool_counted = now
            size = os.fstat(fd).st_size if fd is not None else path.stat().st_size
            if self._pool_size >= POOL_FILES_MAX or size > POOL_FILE_MAX:
                return False
            # Not _mark_free: a file that could not be marked must not go into pool/, where
            # recovery would take it for a queued message.
            if fd is not None:
                os.pwrite(fd, FREE_MARK, 0)
            else:
                own = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.pwrite(own, FREE_MARK, 0)
                finally:
                    os.close(own)
            os.rename(path, pool / queue_id)
        except OSError:
            return False
        self._pool_size += 1
        return True

    async def delete(
        self,
        queue_id: str,
        *,
        reason: str = "deleted",
        wait_seconds: float = ADMIN_LOCK_WAIT_SECONDS,
        durable: bool = True,
    ) -> None:
        """Remove a message (postsuper -d), in any state. A delivery running for it finds it
        gone when it records its result, and drops it.

        ``durable``: fsync the directory before returning, so that an admin's removal holds
        across a power loss. The scheduler removing a delivered message does without, as
        Postfix does: should the file come back, the next attempt finds every mailbox
        recipient delivered already (dedupe key). Such a removal also recycles the file
        (``pool/``, see the module docstring); a durable one removes it.
        """
        self._forget(queue_id)
        fast = None if durable else self._remove_active_now(queue_id)
        if fast is None:
            state = await self._run(self._remove_sync, queue_id, wait_seconds, not durable)
        else:
            state = fast
        if durable:
            await self._committer.sync_dirs([self.state_dir(state)])
        log.info("removed", queue_id=queue_id, state=state, reason=reason)

    # -- for the scheduler ---------------------------------------------------------------------

    def _open_locked(self, state: QueueState, queue_id: str, flags: int) -> int | None:
        """The message's file in ``state``, opened and locked (without waiting); None when it
        is not there or another process holds it."""
        if not is_queue_id(queue_id):
            return None
        path = self.message_path(state, queue_id)
        try:
            fd = os.open(path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Still at that path now that we hold it (not moved away meanwhile)?
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except OSError:  # busy (BlockingIOError), or moved (FileNotFoundError)
            pass
        os.close(fd)
        return None

    def claim_now(self, queue_id: str, from_state: QueueState) -> Envelope | None:
        """``claim`` done on the calling thread (the event loop: see CLAIM_READ_MAX)."""
        fd = self._open_locked(from_state, queue_id, os.O_RDONLY)
        if fd is None:
            self._forget(queue_id)
            return None
        try:
            try:
                size = os.fstat(fd).st_size
                if size <= CLAIM_READ_MAX and queue_id not in self._fresh:
                    data = os.pread(fd, size, 0)
                    end = data.find(b"\n")
                    if end < 0:
                        raise EnvelopeError("no envelope line at the start of the file")
                    head = data[: end + 1]
                    envelope = self._checked_envelope(queue_id, head, len(data))
                    self._remember(queue_id, data[end + 1 :])
                else:
                    head, size = _read_head(fd)
                    envelope = self._checked_envelope(queue_id, head, size)
            except (EnvelopeError, OSError) as exc:
                self._forget(queue_id)
                self._to_corrupt(from_state, queue_id, str(exc))
                return None
            os.rename(
                self.message_path(from_state, queue_id), self.message_path("active", queue_id)
            )
            return envelope
        finally:
            os.close(fd)

    async def claim(self, queue_id: str, from_state: QueueState) -> Envelope | None:
        """Move a message from ``from_state`` to active/ for delivery and return its envelope;
        None when it is gone, busy in another process, or corrupt (then moved to corrupt/).

        Not made durable: after a crash the message is in ``from_state`` or in active/, and
        recovery puts active/ back into incoming/ — the same either way. Runs on the event
        loop (``claim_now``); a content of at most CLAIM_READ_MAX bytes is kept in memory for
        the delivery that follows.
        """
        return self.claim_now(queue_id, from_state)

    def _to_corrupt(self, state: QueueState, queue_id: str, why: str) -> None:
        os.rename(self.message_path(state, queue_id), self.message_path("corrupt", queue_id))
        log.error("corrupt", queue_id=queue_id, state=state, reason=why)

    # -- recovery ------------------------------------------------------------------------------

    def acquire_master_lock(self) -> None:
        """Become the one process that schedules this spool (held until ``close``)."""
        if self._master_fd is not None:
            return
        path = self.root / MASTER_LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(
                f"another pochta server is using the queue in {self.root} ({path} is locked); "
                "stop it first or give this one its own queue.spool_dir"
            ) from None
        self._chown(fd)
        self._master_fd = fd

    def _requeue_active_sync(self, queue_ids: Iterable[str], reason: str) -> int:
        moved = 0
        for queue_id in queue_ids:
            try:
                self._move_sync(
                    queue_id, "incoming", ("active",), "requeue", ADMIN_LOCK_WAIT_SECONDS
                )
            except SpoolError:
                continue
            moved += 1
            log.info("requeued", queue_id=queue_id, previous="active", reason=reason)
        return moved

    async def requeue_active(self, queue_ids: Iterable[str], reason: str) -> int:
        """Move these messages from active/ back to incoming/: their delivery was cut off
        (a worker process died). Returns how many were moved."""
        moved = await self._run(self._requeue_active_sync, list(queue_ids), reason)
        if moved:
            await self._committer.sync_dirs([self.state_dir("active"), self.state_dir("incoming")])
        return moved

    def _recover_sync(self) -> RecoveryReport:
        self.ensure_dirs()
        self.acquire_master_lock()
        report = RecoveryReport()

        tmp = self.root / TMP_DIR
        for name in sorted(os.listdir(tmp)):
            if _unlink_if_unlocked(tmp / name):
                report.tmp_removed += 1
                log.info("tmp_removed", file=name, reason="half-written at a crash")

        report.active_requeued = self._requeue_active_sync(
            self.ids_sync("active"), "crash recovery"
        )

        present: set[str] = set()
        for state in STATES:
            directory = self.state_dir(state)
            for name in sorted(os.listdir(directory)):
                present.add(name)
                if state == "corrupt":
                    continue
                why = ""
                if not is_queue_id(name):
                    why = "file name is not a queue id"
                else:
                    try:
                        self._read_envelope(state, name)
                    except FileNotFoundError:
                        continue
                    except (EnvelopeError, OSError) as exc:
                        why = str(exc)
                if why:
                    with contextlib.suppress(FileNotFoundError):
                        self._to_corrupt(state, name, why)
                        report.corrupt += 1

        self._recover_pool(report)

        status = self.root / STATUS_DIR
        for name in sorted(os.listdir(status)):
            # A removal cut off between the message and its status file.
            if name not in present and self.locate_sync(name) is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(status / name)
                    report.orphans_removed += 1
                    log.info("orphan_removed", queue_id=name, reason="message file gone")

        for directory in (tmp, status, self.root / POOL_DIR, *(self.state_dir(s) for s in STATES)):
            self.counters.fsync_dir(directory)
        return report

    def _recover_pool(self, report: RecoveryReport) -> None:
        """Queued messages in recycled files whose link into incoming/ a crash lost."""
        pool = self.root / POOL_DIR
        for name in sorted(os.listdir(pool)):
            path = pool / name
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer (pochta sendmail) has it
                if os.pread(fd, 1, 0) != b"{":
                    continue  # free
                envelope = _complete_message(fd)
                if envelope is None:
                    _mark_free(fd)  # an overwrite cut short: never acknowledged
                    continue
                queue_id = envelope.queue_id
                state = self.locate_sync(queue_id)
                if state is None:
                    os.rename(path, self.message_path("incoming", queue_id))
                    report.adopted += 1
                    log.info("adopted", queue_id=queue_id, file=name, reason="crash recovery")
                elif os.stat(self.message_path(state, queue_id)).st_ino == os.fstat(fd).st_ino:
                    os.unlink(path)  # linked into place; only the pool name was left
                else:
                    _mark_free(fd)
            finally:
                os.close(fd)

    async def recover(self) -> RecoveryReport:
        """Bring the spool to a clean state after a crash (see the module docstring).

        Takes the master lock: call it once, in the process that runs the scheduler.
        """
        report = await self._run(self._recover_sync)
        log.info("queue_recovered", spool=str(self.root), **msgspec.structs.asdict(report))
        return report

    def close(self) -> None:
        self._committer.close()
        self._executor.shutdown(wait=True)
        if self._master_fd is not None:
            os.close(self._master_fd)
            self._master_fd = None

    # Last, so that ``list`` in the annotations above is the builtin.
    async def list(self, state: QueueState | None = None) -> builtins.list[QueueEntry]:
        """Every message (or those in one state), oldest first within each state."""
        return await self._run(self._list_sync, state)


def _mark_free(fd: int) -> None:
    """Make a recycled file free (its envelope line no longer parses)."""
    with contextlib.suppress(OSError):
        os.pwrite(fd, FREE_MARK, 0)


def _complete_message(fd: int) -> Envelope | None:
    """The envelope of a file holding a whole message (right length, content matching the
    envelope's CRC-32), else None."""
    try:
        head, size = _read_head(fd)
        envelope = decode_envelope(head)
    except (EnvelopeError, OSError):
        return None
    if envelope.crc32 is None or size - len(head) != envelope.size:
        return None
    content = os.pread(fd, envelope.size, len(head))
    if len(content) != envelope.size or zlib.crc32(content) != envelope.crc32:
        return None
    return envelope


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_if_unlocked(path: Path) -> bool:
    """Remove ``path`` if no live process holds its flock (its writer died)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)
