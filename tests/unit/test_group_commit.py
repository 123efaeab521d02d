"""Group commit as a flat combiner: a lone queue write fsyncs its directory at once, in the
I/O thread that wrote it (no second thread, no waiting for company); concurrent writes still
share one directory fsync. Everything is counted (fsyncs, batches, thread hand-offs), never
timed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.group_commit import FsyncCounters, GroupCommitter
from pochta.queue.spool import Spool

CONTENT = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


def envelope() -> Envelope:
    return Envelope("", "a@example.org", [Recipient("b@example.test")], 0.0, 0)


def count_submits(executor: Executor, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every function handed to ``executor`` (each one a thread hop)."""
    seen: list[str] = []
    submit = executor.submit

    def counting(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(executor, "submit", counting)
    return seen


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "queue")
    yield s
    s.close()


async def test_a_lone_enqueue_takes_one_thread_hop_and_fsyncs_at_once(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    io_hops = count_submits(spool._executor, monkeypatch)
    commit_hops = count_submits(spool._committer._executor, monkeypatch)
    file_threads: list[int] = []
    dir_threads: list[int] = []
    fsync_file, fsync_dir = spool.counters.fsync_file, spool.counters.fsync_dir

    def file_fsync(fd: int, *, data_only: bool = False) -> None:
        file_threads.append(threading.get_ident())
        fsync_file(fd, data_only=data_only)

    def dir_fsync(path: Path) -> None:
        dir_threads.append(threading.get_ident())
        fsync_dir(path)

    monkeypatch.setattr(spool.counters, "fsync_file", file_fsync)
    monkeypatch.setattr(spool.counters, "fsync_dir", dir_fsync)

    for n in range(1, 4):  # one message after the other, as over one SMTP connection
        queue_id = await spool.enqueue(envelope(), CONTENT)
        assert (spool.root / "incoming" / queue_id).exists()
        # Per message: one file fsync and one directory fsync, a batch of its own...
        assert spool.counters.file_fsyncs == n
        assert spool.counters.dir_fsyncs == n
        assert spool.counters.batches == n
        # ...made in the one I/O thread that wrote the file: no hand-off to the committer.
        assert io_hops == ["_enqueue_sync"] * n
        assert commit_hops == []
        assert dir_threads[-1] == file_threads[-1]
        assert spool.counters.alone == n


async def test_concurrent_enqueues_still_share_directory_fsyncs(spool: Spool) -> None:
    n = 50
    ids = await asyncio.gather(*(spool.enqueue(envelope(), CONTENT) for _ in range(n)))
    assert len(set(ids)) == n
    assert spool.counters.file_fsyncs == n
    assert spool.counters.dir_fsyncs == spool.counters.batches  # incoming/ once per batch
    assert spool.counters.dir_fsyncs <= n // 2, spool.counters.dir_fsyncs


async def test_writers_that_come_during_a_lone_fsync_share_the_next_one(tmp_path: Path) -> None:
    """The first writer fsyncs alone; the nine that come meanwhile wait and share one fsync
    once it is over, and a writer that finds them waiting joins them instead of going alone."""
    counters = FsyncCounters()
    entered, release = threading.Event(), threading.Event()
    fsync_dir = counters.fsync_dir
    synced: list[Path] = []

    def slow_dir_fsync(path: Path) -> None:
        synced.append(path)
        if len(synced) == 1:  # the lone writer's fsync stays in progress until released
            entered.set()
            assert release.wait(30)
        fsync_dir(path)

    counters.fsync_dir = slow_dir_fsync  # type: ignore[method-assign]
    committer = GroupCommitter(counters)
    loop = asyncio.get_running_loop()
    try:
        lone = loop.run_in_executor(None, committer.commit_if_idle, [tmp_path])
        assert await loop.run_in_executor(None, entered.wait, 30)
        waiting = [asyncio.ensure_future(committer.sync_dirs([tmp_path])) for _ in range(9)]
        await asyncio.sleep(0)  # each registered its wait
        # Company is waiting: a new writer joins the batch instead of going alone.
        assert await loop.run_in_executor(None, committer.commit_if_idle, [tmp_path]) is False
        assert counters.dir_fsyncs == 0
        release.set()
        assert await lone is True
        await asyncio.gather(*waiting)
        assert counters.dir_fsyncs == 2  # the lone writer's, and one for the nine
        assert counters.batches == 2
        assert counters.alone == 1
        assert synced == [tmp_path, tmp_path]
    finally:
        release.set()
        committer.close()


async def test_a_failed_lone_fsync_is_not_acknowledged(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool.counters, "fsync_dir", broken)
    with pytest.raises(OSError, match="Input/output"):
        await spool.enqueue(envelope(), CONTENT)
    # Taken back, so the client's retry is no duplicate.
    assert list((spool.root / "incoming").iterdir()) == []
    assert list((spool.root / "tmp").iterdir()) == []
