"""Group commit: many concurrent queue writes share one fsync per directory.

A queue write is durable only once the directory entry that names it is on disk: after
``rename(2)`` the directory must be fsynced (POSIX leaves the entry in the page cache until
then; see fsync(2), "Calling fsync() does not necessarily ensure that the entry in the
directory containing the file has also reached disk"). One fsync of a directory makes every
rename done in it so far durable, so there is no need for one fsync per message.

How the batch forms, as a flat combiner does: a writer renames its file in an I/O thread and,
still in that thread, calls ``commit_if_idle(dirs)``. When no directory fsync is running and
nobody waits for one, it fsyncs its directories itself, there and then: a lone writer pays
no hand-off to another thread, no event-loop turn and no waiting for company (one thread
hop per message, the one that wrote the file). Otherwise it returns False and the writer
awaits ``sync_dirs(dirs)`` on the event loop: a single committer task collects the
directories of every waiting writer; once the running fsync is over it takes the whole set,
fsyncs each directory once (in its own thread, so the event loop keeps running) and wakes
every writer of that batch. Writers that arrive while an fsync runs form the next batch. So
under load the batch grows by itself — the longer an fsync takes, the more writers share the
next one — and an idle queue pays no waiting at all (``window_seconds`` = 0: the committer
only yields once to the loop, so writers of the same loop turn join). This is the group
commit of databases (PostgreSQL's ``commit_delay``, InnoDB's binlog group commit), with the
leader-does-the-work shortcut of a flat combiner (Hendler et al., "Flat Combining", 2010).

The counters (``dir_fsyncs``, ``file_fsyncs``, ``batches``, ``alone``) are what the tests and
``bench/queue_enqueue.py`` read to show that N concurrent enqueues take far fewer than N
directory fsyncs, and that a lone one takes its own at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pochta.durable import fsync_directory


class FsyncCounters:
    """Thread-safe counts of fsync calls, for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.file_fsyncs = 0
        self.dir_fsyncs = 0
        self.batches = 0
        self.alone = 0  # batches a lone writer fsynced in its own thread (commit_if_idle)

    def fsync_file(self, fd: int, *, data_only: bool = False) -> None:
        """fsync one open file (data and metadata; ``data_only``: fdatasync, which leaves
        out the times but not the size) and count it."""
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
        with self._lock:
            self.file_fsyncs += 1

    def fsync_dir(self, path: Path) -> None:
        """fsync one directory (its entries: creates, renames, unlinks) and count it."""
        fsync_directory(path)
        with self._lock:
            self.dir_fsyncs += 1


class GroupCommitter:
    """Shares directory fsyncs between concurrent writers (see the module docstring).

    ``window_seconds`` > 0 makes the committer wait that long before each batch it collects
    on the event loop, trading latency for bigger batches; 0 (the default) batches only what
    arrives while the previous fsync runs, which is what a fast disk wants. A lone writer
    never waits for the window: it commits at once in its own thread (``commit_if_idle``).
    """

    def __init__(self, counters: FsyncCounters, *, window_seconds: float = 0.0) -> None:
        self.counters = counters
        self.window_seconds = window_seconds
        # One thread of its own: a directory fsync never waits behind file writes.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pochta-commit")
        # Guards _dirs, _waiters and _busy: the I/O threads read them (commit_if_idle).
        self._lock = threading.Lock()
        self._busy = False  # a directory fsync runs (a lone writer's or a batch)
        self._dirs: set[Path] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def commit_if_idle(self, dirs: Iterable[Path]) -> bool:
        """In a writer's I/O thread, after its rename: fsync ``dirs`` here and now when no
        directory fsync runs and no writer waits for one, and return True (durable). Return
        False when there is company: then the writer joins the next batch (``sync_dirs``).

        Raises the ``OSError`` of a failed fsync: the caller must then not acknowledge.
        """
        wanted = sorted(set(dirs))
        if not wanted:
            return True
        with self._lock:
            if self._busy or self._waiters:
                return False
            self._busy = True
        try:
            self._fsync_all(wanted, alone=True)
        finally:
            with self._lock:
                self._busy = False
                company = bool(self._waiters)
            if company:  # writers came while we synced: their batch may start now
                self._wake_committer()
        return True

    async def sync_dirs(self, dirs: Iterable[Path]) -> None:
        """Return once every directory in ``dirs`` was fsynced after this call began.

        Raises the ``OSError`` of a failed fsync: the caller must then not acknowledge.
        """
        wanted = set(dirs)
        if not wanted:
            return
        loop = asyncio.get_running_loop()
        self._bind(loop)
        assert self._wakeup is not None
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._dirs |= wanted
            self._waiters.append(future)
        self._wakeup.set()
        await future

    def _wake_committer(self) -> None:
        """From an I/O thread: let the committer task look for a batch again."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wakeup.set)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)start the committer on the running loop (a CLI may run several loops in turn)."""
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        self._loop = loop
        self._wakeup = asyncio.Event()
        with self._lock:
            self._dirs = set()
            self._waiters = []
        self._task = loop.create_task(self._run(loop, self._wakeup), name="pochta-group-commit")

    async def _run(self, loop: asyncio.AbstractEventLoop, wakeup: asyncio.Event) -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            # Let writers of this loop turn (or of the window) join the batch.
            await asyncio.sleep(self.window_seconds)
            with self._lock:
                if self._busy:
                    # A lone writer's fsync runs in its thread; it wakes us when it is over,
                    # and whoever came meanwhile goes into one batch then.
                    continue
                dirs, waiters = self._dirs, self._waiters
                self._dirs, self._waiters = set(), []
                if not waiters:
                    continue
                self._busy = True
            try:
                await loop.run_in_executor(self._executor, self._fsync_all, sorted(dirs))
            except OSError as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            finally:
                # Writers that came during the fsync have set ``wakeup``: the next batch.
                with self._lock:
                    self._busy = False

    def _fsync_all(self, dirs: list[Path], *, alone: bool = False) -> None:
        for path in dirs:
            self.counters.fsync_dir(path)
        with self.counters._lock:
            self.counters.batches += 1
            if alone:
                self.counters.alone += 1

    def close(self) -> None:
        """Stop the committer task and its thread (pending writers get CancelledError)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
        self._task = None
        self._executor.shutdown(wait=False)
