"""The spool: durable enqueue, group commit, atomic status updates, state changes, recovery.

The last test is a real crash: a child process enqueues 200 messages concurrently and is
killed with SIGKILL at a random moment; after recovery every message whose enqueue had
returned is there exactly once and parses.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pochta.cleanup.verdict import AuthResult, Symbol, Verdict
from pochta.queue.base import FreeSpaceGauge, MessageQueue
from pochta.queue.envelope import (
    ENVELOPE_VERSION,
    QUEUE_ID_LENGTH,
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    is_queue_id,
    new_queue_id,
    queue_id_time,
    queue_shard,
)
from pochta.queue.spool import (
    STATES,
    FreeSpace,
    MessageBusy,
    Spool,
    SpoolError,
    SpoolFull,
    UnknownMessage,
    WrongState,
    required_free_bytes,
)
from tests.factories import make_envelope
from tests.unit.test_maildir_store import small_disk

CONTENT = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


SENDER = "a@example.org"
RCPT = "b@example.test"
spool_envelope = partial(make_envelope, sender=SENDER)  # queue_id "": the spool fills it in


def files(path: Path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.fixture
def hold_lock() -> Iterator[list[int]]:
    """Open descriptors holding flocks for a test, closed at the end."""
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def cut(path: Path, nbytes: int) -> None:
    os.truncate(path, path.stat().st_size - nbytes)


def lock_file(path: Path, fds: list[int]) -> None:
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)


# -- envelope and queue ids ----------------------------------------------------------------


def test_queue_ids_sort_by_time_and_are_file_name_safe() -> None:
    ids = [new_queue_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # one process: the time part never goes backwards
    for queue_id in ids[:50]:
        assert len(queue_id) == QUEUE_ID_LENGTH >= 12
        assert queue_id.isalnum()
        assert queue_id.isascii()
        assert is_queue_id(queue_id)
    early, late = new_queue_id(1_700_000_000.0), new_queue_id(1_700_000_000.5)
    assert early < late
    assert queue_id_time(early) == pytest.approx(1_700_000_000.0)
    assert not is_queue_id("../etc/passwd")
    assert not is_queue_id("short")


@given(
    st.integers(min_value=1, max_value=3844).flatmap(
        lambda count: st.tuples(st.integers(0, count - 1), st.just(count))
    )
)
def test_a_queue_id_falls_in_the_shard_asked_for(shard: tuple[int, int]) -> None:
    """Each delivering process gives its mail ids of its own shard (server/workers.py)."""
    index, count = shard
    for _ in range(20):
        queue_id = new_queue_id(shard=shard)
        assert is_queue_id(queue_id)
        assert queue_shard(queue_id, count) == index
        assert queue_shard(queue_id, 1) == 0


def test_queue_ids_of_no_shard_spread_over_every_shard() -> None:
    seen = Counter(queue_shard(new_queue_id(), 3) for _ in range(3000))
    assert set(seen) == {0, 1, 2}
    assert min(seen.values()) > 800


async def test_spool_ids_fall_in_its_shard_and_requeue_active(spool: Spool) -> None:
    spool.configure_shards(3, (2,))
    ids = [await spool.enqueue(spool_envelope(RCPT), CONTENT) for _ in range(4)]
    assert {queue_shard(q, 3) for q in ids} == {2}
    for queue_id in ids:
        assert await spool.claim(queue_id, "incoming") is not None
    assert await spool.requeue_active(ids[:2], "worker exited") == 2
    assert [await spool.locate(q) for q in ids] == ["incoming", "incoming", "active", "active"]
    assert await spool.requeue_active([ids[0]], "again") == 0  # not in active/ any more


def test_envelope_round_trip_and_version() -> None:
    envelope = spool_envelope("x@example.test", "y@example.test")
    envelope.queue_id = new_queue_id()
    envelope.recipients[0].notify = ("SUCCESS", "FAILURE")
    envelope.ret = "HDRS"
    data = encode_envelope(envelope)
    assert data.endswith(b"\n")
    assert data.count(b"\n") == 1
    assert decode_envelope(data) == envelope
    assert envelope.version == ENVELOPE_VERSION

    # Forward compatible: unknown fields (from a newer minor change) are ignored...
    as_dict = msgspec.json.decode(data)
    as_dict["future_field"] = 1
    assert decode_envelope(msgspec.json.encode(as_dict)) == envelope
    # ...but a newer format version is refused, not guessed at.
    as_dict["version"] = ENVELOPE_VERSION + 1
    with pytest.raises(EnvelopeError, match="newer"):
        decode_envelope(msgspec.json.encode(as_dict))
    with pytest.raises(EnvelopeError):
        decode_envelope(b"\x00garbage")
    with pytest.raises(EnvelopeError):
        decode_envelope(b'{"queue_id": "x"}')


# -- enqueue -------------------------------------------------------------------------------


def split_file(path: Path) -> tuple[Envelope, bytes]:
    line, content = path.read_bytes().split(b"\n", 1)
    return decode_envelope(line + b"\n"), content


async def test_enqueue_writes_one_file_with_envelope_and_content(spool: Spool) -> None:
    envelope = spool_envelope("b@example.test", "c@example.test")
    with capture_logs() as logs:
        queue_id = await spool.enqueue(envelope, CONTENT)
    assert is_queue_id(queue_id)
    assert envelope.queue_id == queue_id
    assert envelope.size == len(CONTENT)
    assert files(spool.root / "incoming") == [queue_id]
    assert files(spool.root / "tmp") == []
    assert files(spool.root / "status") == []
    on_disk, content = split_file(spool.root / "incoming" / queue_id)
    assert on_disk == envelope
    assert content == CONTENT
    assert await spool.load(queue_id) == envelope
    assert await spool.read_content(queue_id) == CONTENT
    assert (spool.root / "incoming" / queue_id).stat().st_mode & 0o777 == 0o600
    # one file fsynced, and its directory
    assert spool.counters.file_fsyncs == 1
    assert spool.counters.dir_fsyncs == 1
    assert [entry["event"] for entry in logs] == ["queued"]
    assert logs[0]["queue_id"] == queue_id
    assert logs[0]["nrcpt"] == 2


async def test_enqueue_wakes_listeners(spool: Spool) -> None:
    seen: list[str] = []
    spool.add_listener(seen.append)
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    assert seen == [queue_id]


async def test_enqueue_with_a_given_id_refuses_a_duplicate(spool: Spool) -> None:
    envelope = spool_envelope(RCPT)
    envelope.queue_id = new_queue_id()
    await spool.enqueue(envelope, CONTENT)
    again = spool_envelope(RCPT)
    again.queue_id = envelope.queue_id
    with pytest.raises(SpoolError, match="exists already"):
        await spool.enqueue(again, b"other")
    assert split_file(spool.root / "incoming" / envelope.queue_id)[1] == CONTENT
    await spool.move(envelope.queue_id, "hold")
    with pytest.raises(SpoolError, match="exists already"):  # in any state
        await spool.enqueue(again, b"other")
    assert files(spool.root / "incoming") == []
    assert files(spool.root / "tmp") == []


async def test_group_commit_shares_directory_fsyncs(spool: Spool) -> None:
    n = 100
    ids = await asyncio.gather(*(spool.enqueue(spool_envelope(RCPT), CONTENT) for _ in range(n)))
    assert len(set(ids)) == n
    assert len(files(spool.root / "incoming")) == n
    assert spool.counters.file_fsyncs == n  # one file each: not shareable
    # One directory per batch (incoming/), far fewer batches than messages.
    assert spool.counters.dir_fsyncs == spool.counters.batches
    assert spool.counters.dir_fsyncs <= n // 2, spool.counters.dir_fsyncs


async def test_a_sequential_enqueue_gets_its_own_fsync(spool: Spool) -> None:
    for i in range(3):
        await spool.enqueue(spool_envelope(RCPT), CONTENT)
        assert spool.counters.batches == i + 1


async def test_failed_directory_fsync_is_not_acknowledged(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool.counters, "fsync_dir", broken)
    with pytest.raises(OSError, match="Input/output"):
        await spool.enqueue(spool_envelope(RCPT), CONTENT)
    # Taken back, so the client's retry is no duplicate.
    assert files(spool.root / "incoming") == []
    assert files(spool.root / "tmp") == []


async def test_spool_survives_several_event_loops(tmp_path: Path) -> None:
    """The CLI runs one asyncio.run per command; the committer restarts on each loop."""
    s = Spool(tmp_path / "q")

    async def once() -> str:
        return await s.enqueue(spool_envelope(RCPT), CONTENT)

    first = await once()
    second = await asyncio.get_running_loop().run_in_executor(None, asyncio.run, once())
    assert sorted(files(s.root / "incoming")) == sorted([first, second])
    s.close()


# -- updates and state changes -------------------------------------------------------------


async def test_update_envelope_goes_to_a_status_file_never_the_message(spool: Spool) -> None:
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    path = spool.root / "incoming" / queue_id
    before = path.stat()
    envelope = await spool.load(queue_id)
    envelope.recipients[0].status = "delivered"
    envelope.recipients[0].reply = "250 2.0.0 Ok"
    await spool.update_envelope(queue_id, envelope)
    status_first = (spool.root / "status" / queue_id).stat()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert (await spool.load(queue_id)).recipients[0].status == "delivered"
    envelope.recipients[0].reply = "250 2.0.0 again"
    await spool.update_envelope(queue_id, envelope)
    # a new file renamed over the old one
    assert (spool.root / "status" / queue_id).stat().st_ino != status_first.st_ino
    assert (await spool.load(queue_id)).recipients[0].reply == "250 2.0.0 again"
    # The status follows the message through moves; the content is unchanged.
    await spool.move(queue_id, "deferred")
    assert (await spool.load(queue_id)).recipients[0].reply == "250 2.0.0 again"
    assert split_file(spool.root / "deferred" / queue_id)[1] == CONTENT
    assert files(spool.root / "tmp") == []

    await spool.delete(queue_id)
    assert files(spool.root / "status") == []
    with pytest.raises(UnknownMessage):
        await spool.update_envelope(queue_id, envelope)
    assert files(spool.root / "status") == []  # not recreated by the update


async def test_states_hold_release_requeue_delete(spool: Spool) -> None:
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    with capture_logs() as logs:
        await spool.hold(queue_id)
        assert await spool.locate(queue_id) == "hold"
        with pytest.raises(WrongState, match="on hold"):
            await spool.hold(queue_id)
        await spool.release(queue_id)
        assert await spool.locate(queue_id) == "incoming"
        await spool.move(queue_id, "deferred")
        await spool.requeue(queue_id)
        assert await spool.locate(queue_id) == "incoming"
        await spool.delete(queue_id)
    assert await spool.locate(queue_id) is None
    assert not any(spool.root.glob(f"*/{queue_id}"))
    assert [e["event"] for e in logs] == ["held", "released", "requeued", "removed"]
    for action in (spool.hold, spool.release, spool.requeue, spool.delete):
        with pytest.raises(UnknownMessage, match=f"no message {queue_id}"):
            await action(queue_id)


async def test_active_message_cannot_be_held_but_can_be_deleted(spool: Spool) -> None:
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    assert await spool.claim(queue_id, "incoming") is not None
    assert await spool.locate(queue_id) == "active"
    with pytest.raises(WrongState, match="being delivered"):
        await spool.hold(queue_id)
    with pytest.raises(WrongState):
        await spool.release(queue_id)
    await spool.delete(queue_id)
    assert await spool.locate(queue_id) is None


async def test_a_locked_message_is_busy(spool: Spool, hold_lock: list[int]) -> None:
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    lock_file(spool.root / "incoming" / queue_id, hold_lock)  # another process changing it
    with pytest.raises(MessageBusy):
        await spool.move(queue_id, "hold", wait_seconds=0.05)
    assert await spool.claim(queue_id, "incoming") is None  # the scheduler skips it
    assert await spool.locate(queue_id) == "incoming"


async def test_the_lock_moves_with_the_file(spool: Spool, hold_lock: list[int]) -> None:
    """A lock taken on the file in incoming/ still holds once the file is in deferred/."""
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    fd = os.open(spool.root / "incoming" / queue_id, os.O_RDONLY)
    hold_lock.append(fd)
    os.rename(spool.root / "incoming" / queue_id, spool.root / "deferred" / queue_id)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(MessageBusy):
        await spool.delete(queue_id, wait_seconds=0.05)
    fcntl.flock(fd, fcntl.LOCK_UN)
    await spool.delete(queue_id, wait_seconds=0.05)
    assert await spool.locate(queue_id) is None


async def test_claim_moves_to_active_and_sorts_out_corrupt(spool: Spool) -> None:
    good = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    bad = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    (spool.root / "incoming" / bad).write_bytes(b"not json\n")
    short = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    cut(spool.root / "incoming" / short, 3)  # cut short, as by a lost write
    envelope = await spool.claim(good, "incoming")
    assert envelope is not None
    assert envelope.queue_id == good
    assert await spool.locate(good) == "active"
    assert await spool.claim(good, "incoming") is None  # already claimed
    with capture_logs() as logs:
        assert await spool.claim(bad, "incoming") is None
    assert await spool.locate(bad) == "corrupt"
    assert logs[0]["event"] == "corrupt"
    assert logs[0]["queue_id"] == bad
    with capture_logs() as logs:
        assert await spool.claim(short, "incoming") is None
    assert await spool.locate(short) == "corrupt"
    assert "the envelope says" in logs[0]["reason"]


async def test_list_and_flush(spool: Spool) -> None:
    a = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    b = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    c = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    await spool.move(b, "deferred")
    await spool.move(c, "deferred")
    (spool.root / "corrupt" / new_queue_id()).write_bytes(b"{")
    entries = await spool.list()
    assert [(e.queue_id, e.state) for e in entries if e.state != "corrupt"] == [
        (a, "incoming"),
        (b, "deferred"),
        (c, "deferred"),
    ]
    broken = [e for e in entries if e.state == "corrupt"]
    assert len(broken) == 1
    assert broken[0].envelope is None
    assert broken[0].error
    assert [e.queue_id for e in await spool.list("deferred")] == [b, c]
    assert await spool.flush() == 2
    assert await spool.ids("incoming") == [a, b, c]
    assert await spool.ids("deferred") == []


async def test_files_take_the_spool_owner_when_run_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    root = tmp_path / "queue"
    root.mkdir()
    os.chown(root, 4242, 4243)
    s = Spool(root)
    queue_id = await s.enqueue(spool_envelope(RCPT), CONTENT)
    await s.update_envelope(queue_id, await s.load(queue_id))
    for path in (root / "incoming", root / "incoming" / queue_id, root / "status" / queue_id):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4243), path
    s.close()


# -- recovery ------------------------------------------------------------------------------


async def test_recovery_cleans_up_after_a_crash(spool: Spool, hold_lock: list[int]) -> None:
    root = spool.root
    delivered_half = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    await spool.claim(delivered_half, "incoming")  # was being delivered at the crash
    fine = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    await spool.update_envelope(fine, await spool.load(fine))
    await spool.move(fine, "deferred")
    broken = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    await spool.move(broken, "deferred")
    (root / "deferred" / broken).write_bytes(b'{"queue_id": 1}\n')
    cut_short = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    cut(root / "incoming" / cut_short, 1)
    (root / "incoming" / "README").write_text("not a message")

    # Left by a dead writer: a half-written file in tmp/, the status file of a message whose
    # removal was cut off.
    half = new_queue_id()
    (root / "tmp" / f"{half}.123.0").write_bytes(b'{"queue_')
    orphan = new_queue_id()
    (root / "status" / orphan).write_bytes(b"{}\n")
    # And a writer that is alive (a concurrent `pochta sendmail`): its file is locked.
    alive = new_queue_id()
    (root / "tmp" / f"{alive}.456.0").write_bytes(b"{")
    lock_file(root / "tmp" / f"{alive}.456.0", hold_lock)

    with capture_logs() as logs:
        report = await spool.recover()
    assert report.tmp_removed == 1
    assert report.active_requeued == 1
    assert report.orphans_removed == 1
    assert report.corrupt == 3  # broken, cut_short, README
    assert await spool.locate(delivered_half) == "incoming"
    assert await spool.locate(fine) == "deferred"
    assert (root / "status" / fine).exists()
    assert await spool.locate(broken) == "corrupt"
    assert await spool.locate(cut_short) == "corrupt"
    assert (root / "corrupt" / "README").exists()
    assert files(root / "tmp") == [f"{alive}.456.0"]
    assert files(root / "status") == [fine]
    corrupt_lines = [e for e in logs if e["event"] == "corrupt"]
    assert {e["queue_id"] for e in corrupt_lines} == {broken, cut_short, "README"}
    assert any(e["event"] == "requeued" and e["queue_id"] == delivered_half for e in logs)


# -- recycled queue files --------------------------------------------------------------------


async def test_a_delivered_message_file_is_recycled(spool: Spool) -> None:
    root = spool.root
    first = await spool.enqueue(spool_envelope(RCPT), CONTENT * 3)
    inode = (root / "incoming" / first).stat().st_ino
    await spool.delete(first, reason="done", durable=False)
    assert files(root / "pool") == [first]
    assert (root / "pool" / first).read_bytes()[:1] == b"#"  # free: no message any more

    dir_fsyncs = spool.counters.dir_fsyncs
    second = await spool.enqueue(spool_envelope("c@example.test"), CONTENT)
    # Written over the recycled file, durable with no directory fsync.
    assert spool.counters.dir_fsyncs == dir_fsyncs
    assert files(root / "pool") == []
    assert (root / "incoming" / second).stat().st_ino == inode
    assert (await spool.load(second)).recipients[0].address == "c@example.test"
    assert (root / "incoming" / second).read_bytes().endswith(b"\n" + CONTENT)  # truncated

    # An admin's removal is durable and removes the file.
    await spool.delete(second)
    assert files(root / "pool") == []


async def test_claim_keeps_the_content_read_from_disk(tmp_path: Path) -> None:
    """A message queued by another process (here: another Spool) is read whole at claim,
    so the delivery that follows does not read the file again."""
    writer = Spool(tmp_path / "queue", remember_fresh=False)
    queue_id = await writer.enqueue(spool_envelope(RCPT), CONTENT)
    writer.close()
    spool = Spool(tmp_path / "queue")
    try:
        assert await spool.claim(queue_id, "incoming") is not None
        os.truncate(spool.root / "active" / queue_id, 0)  # the disk can no longer give it
        assert await spool.read_content(queue_id) == CONTENT
        await spool.delete(queue_id, reason="done", durable=False)
        with pytest.raises(UnknownMessage):
            await spool.read_content(queue_id)  # forgotten with the message
    finally:
        spool.close()


async def test_scheduler_removal_waits_for_a_busy_file(spool: Spool, hold_lock: list[int]) -> None:
    """The removal after delivery takes the general way when another process holds the
    file: it waits for the lock, and removes the status file too."""
    queue_id = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    envelope = await spool.claim(queue_id, "incoming")
    assert envelope is not None
    await spool.update_envelope(queue_id, envelope)
    assert (spool.root / "status" / queue_id).exists()
    lock_file(spool.root / "active" / queue_id, hold_lock)
    with pytest.raises(MessageBusy):
        await spool.delete(queue_id, reason="done", durable=False, wait_seconds=0.05)
    assert await spool.locate(queue_id) == "active"
    os.close(hold_lock.pop())
    await spool.delete(queue_id, reason="done", durable=False, wait_seconds=0.05)
    assert await spool.locate(queue_id) is None
    assert not (spool.root / "status" / queue_id).exists()
    assert files(spool.root / "pool") == [queue_id]


async def test_recovery_adopts_complete_messages_found_in_the_pool(
    spool: Spool, hold_lock: list[int]
) -> None:
    root, pool = spool.root, spool.root / "pool"
    # Queued in a recycled file, but the crash lost its link into incoming/.
    lost_link = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    os.rename(root / "incoming" / lost_link, pool / "A")
    before = (pool / "A").read_bytes()
    # An overwrite the crash cut short: the right length, but not the content it was
    # queued with (old bytes under a new envelope).
    torn = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    data = bytearray((root / "incoming" / torn).read_bytes())
    data[-3] ^= 0x20
    os.unlink(root / "incoming" / torn)
    (pool / "B").write_bytes(bytes(data))
    # Enqueues before recovery (`pochta sendmail` while the server is down) never write over
    # a pool file that holds a message.
    assert (pool / "A").read_bytes() == before
    # Linked into incoming/, the pool name's removal lost.
    linked = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    os.link(root / "incoming" / linked, pool / "C")
    # One a live writer holds, and a free file.
    busy = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    os.rename(root / "incoming" / busy, pool / "E")
    lock_file(pool / "E", hold_lock)
    (pool / "D").write_bytes(b'#"queue_id": "x"}\n')

    with capture_logs() as logs:
        report = await spool.recover()
    assert report.adopted == 1
    assert report.corrupt == 0
    assert await spool.locate(lost_link) == "incoming"
    assert await spool.read_content(lost_link) == CONTENT
    assert await spool.locate(torn) is None
    assert (pool / "B").read_bytes()[:1] == b"#"
    assert await spool.locate(linked) == "incoming"
    assert files(pool) == ["B", "D", "E"]
    assert [e["queue_id"] for e in logs if e["event"] == "adopted"] == [lost_link]


async def test_only_one_process_schedules_a_spool(spool: Spool) -> None:
    await spool.recover()
    other = Spool(spool.root)
    with pytest.raises(SpoolError, match="another pochta server"):
        await other.recover()
    other.close()
    spool.close()
    again = Spool(spool.root)
    await again.recover()  # the lock went with the first owner
    again.close()


# -- a real crash --------------------------------------------------------------------------

CHILD = r"""
import asyncio, sys, time
from pochta.logs import configure_logging
from pochta.queue import Envelope, Recipient, Spool

configure_logging("logfmt", "error")

def content(i):
    return (f"Subject: message {i}\r\n\r\n" + "x" * 4000 + "\r\n").encode()

async def one(spool, i):
    envelope = Envelope("", f"s{i}@example.org", [Recipient(f"r{i}@example.test")], time.time(), 0)
    queue_id = await spool.enqueue(envelope, content(i))
    sys.stdout.write(f"{i} {queue_id}\n")
    sys.stdout.flush()

async def main():
    spool = Spool(sys.argv[1])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(one(spool, i) for i in range(200)))
    sys.stdout.write("done\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def expected_content(i: int) -> bytes:
    return (f"Subject: message {i}\r\n\r\n" + "x" * 4000 + "\r\n").encode()


def run_and_kill(root: Path, seed: int) -> dict[str, int]:
    """Run the child, SIGKILL it at a random moment; the ids it printed, by message index."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    # Anywhere from "nothing acknowledged yet" to "all done" (200 enqueues take ~50-300 ms).
    time.sleep(random.Random(seed).uniform(0.0, 0.15) if seed else 0.0)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    acknowledged: dict[str, int] = {}
    for line in out.decode().splitlines():
        if line != "done":
            index, queue_id = line.split()
            acknowledged[queue_id] = int(index)
    return acknowledged


@pytest.mark.parametrize("recycled", [False, True], ids=["new-files", "recycled-files"])
@pytest.mark.parametrize("seed", range(6))
async def test_kill_9_loses_no_acknowledged_message(
    tmp_path: Path, seed: int, recycled: bool
) -> None:
    root = tmp_path / "queue"
    if recycled:  # a pool of free files from delivered messages, for the child to write over
        spool = Spool(root)
        old = [
            await spool.enqueue(spool_envelope(RCPT), CONTENT * (1 + i % 120)) for i in range(150)
        ]
        for queue_id in old:
            await spool.delete(queue_id, reason="done", durable=False)
        spool.close()
        assert len(files(root / "pool")) == 150
    acknowledged = await asyncio.to_thread(run_and_kill, root, seed)

    spool = Spool(root)
    report = await spool.recover()
    assert report.corrupt == 0
    for queue_id, index in acknowledged.items():
        places = [s for s in STATES if (root / s / queue_id).exists()]
        assert places == ["incoming"], (queue_id, places)
        envelope = await spool.load(queue_id)
        assert envelope.queue_id == queue_id
        assert envelope.recipients[0].address == f"r{index}@example.test"
        assert await spool.read_content(queue_id) == expected_content(index)
    # Nothing half-done is left.
    incoming = set(files(root / "incoming"))
    assert incoming >= set(acknowledged)
    assert files(root / "tmp") == []
    assert files(root / "active") == []
    for queue_id in incoming:  # unacknowledged but complete ones parse too
        await spool.load(queue_id)
    for name in files(root / "pool"):  # what is left in the pool is free
        assert (root / "pool" / name).read_bytes()[:1] == b"#", name
    spool.close()


# -- a full disk (issue 12) -------------------------------------------------------------------


def test_required_free_bytes_follows_postfix_queue_minfree() -> None:
    # Postfix 2.1+: 1.5 x message_size_limit even when queue_minfree is 0.
    assert required_free_bytes(min_free_bytes=0, max_message_bytes=1000) == 1500
    assert required_free_bytes(min_free_bytes=5000, max_message_bytes=1000) == 5000
    # SIZE= (RFC 1870): min_free + SIZE, and twice SIZE.
    assert required_free_bytes(min_free_bytes=5000, max_message_bytes=1000, size=900) == 5900
    assert required_free_bytes(min_free_bytes=0, max_message_bytes=1000, size=900) == 1800
    assert required_free_bytes(min_free_bytes=0, max_message_bytes=0) == 0


class _FakeStatvfs:
    def __init__(self, free_blocks: int) -> None:
        self.free_blocks = free_blocks
        self.calls = 0

    def __call__(self, path: Path) -> os.statvfs_result:
        self.calls += 1
        # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
        b = self.free_blocks
        return os.statvfs_result((4096, 1024, 10**6, b + 50, b, 1000, 900, 900, 0, 255))


def test_free_space_is_asked_once_per_cache_period(tmp_path: Path) -> None:
    now = [100.0]
    statvfs = _FakeStatvfs(free_blocks=10)
    space = FreeSpace(tmp_path, statvfs=statvfs, clock=lambda: now[0], cache_seconds=1.0)
    assert space.free_bytes() == 10 * 1024  # f_bavail x f_frsize: what a non-root user gets
    assert space.shortfall(10 * 1024) == 0
    assert space.shortfall(15 * 1024) == 5 * 1024
    for _ in range(100):  # a busy server: one statvfs per second, not per MAIL FROM
        space.shortfall(1)
    assert statvfs.calls == 1
    statvfs.free_blocks = 0
    now[0] += 0.5
    assert space.free_bytes() == 10 * 1024  # still the cached value
    now[0] += 0.5
    assert space.free_bytes() == 0
    assert statvfs.calls == 2


def test_spool_free_space_reads_the_spool_file_system(spool: Spool) -> None:
    st = os.statvfs(spool.root)
    assert spool.free_space.path == spool.root
    assert abs(spool.free_space.free_bytes() - st.f_bavail * st.f_frsize) < 64 << 20


async def test_enqueue_on_a_full_disk_is_spool_full_and_leaves_nothing(tmp_path: Path) -> None:
    with small_disk(tmp_path / "fs", "2m") as disk:
        spool = Spool(disk.path / "queue")
        try:
            kept = await spool.enqueue(spool_envelope(RCPT), CONTENT)
            disk.fill()
            with pytest.raises(SpoolFull) as caught:
                await spool.enqueue(spool_envelope(RCPT), CONTENT + b"x" * 65536)
            assert isinstance(caught.value, OSError)  # callers that catch OSError still do
            assert "no space left on device" in str(caught.value)
            assert caught.value.path.startswith(str(spool.root / "tmp"))
            assert files(spool.root / "tmp") == []
            assert files(spool.root / "incoming") == [kept]
            # A status update (after a delivery attempt) on the full disk: SpoolFull too.
            envelope = await spool.load(kept)
            envelope.recipients[0].status = "deferred"
            envelope.recipients[0].reply = "451 4.3.0 later " + "x" * 100000
            with pytest.raises(SpoolFull, match=kept):
                await spool.update_envelope(kept, envelope)
            assert files(spool.root / "tmp") == []
            disk.free()
            await spool.enqueue(spool_envelope(RCPT), CONTENT)
            assert len(files(spool.root / "incoming")) == 2
        finally:
            spool.close()


def test_the_spool_is_a_message_queue(spool: Spool) -> None:
    """queue/base.py's interface: what the scheduler, agents, notices and CLI are typed against."""
    assert isinstance(spool, MessageQueue)
    assert isinstance(spool.free_space, FreeSpaceGauge)


async def test_the_spool_keeps_the_shards(spool: Spool) -> None:
    """Which process delivers which message is the queue's answer, not the server's."""
    assert (spool.shard_count, spool.shards, spool.shard) == (1, {0}, None)
    assert all(spool.mine(new_queue_id()) for _ in range(50))  # one process: everything
    spool.configure_shards(3, range(3))  # the master, until its workers are up
    assert spool.shard == (0, 3)  # new ids fall in the master's own shard
    assert {spool.shard_of(spool.new_queue_id()) for _ in range(20)} == {0}
    spool.configure_shards(3, (0,))
    theirs = [q for q in (new_queue_id() for _ in range(200)) if spool.shard_of(q) == 2]
    assert theirs
    assert not any(spool.mine(q) for q in theirs)
    spool.take_shard(2)  # its worker died
    assert spool.shards == {0, 2}
    assert all(spool.mine(q) for q in theirs)
    spool.give_shard(2)  # ... and is back
    assert not any(spool.mine(q) for q in theirs)


async def test_requeue_active_shard_takes_only_that_shard_and_not_the_busy(spool: Spool) -> None:
    """A dead worker's mail left in active/ goes back to incoming/; the master's own active
    mail of other shards, and what the master is delivering itself, stay."""
    worker = Spool(spool.root, remember_fresh=False)
    worker.configure_shards(3, (1,))
    left = [await worker.enqueue(spool_envelope(RCPT), CONTENT) for _ in range(3)]
    worker.close()
    spool.configure_shards(3, (0,))
    own = await spool.enqueue(spool_envelope(RCPT), CONTENT)
    for queue_id in (*left, own):
        assert await spool.claim(queue_id, "incoming") is not None
    busy = {left[0]}  # in flight here already (taken over, claimed again meanwhile)
    moved = await spool.requeue_active_shard(1, "worker exited", busy=busy.__contains__)
    assert moved == 2
    assert [await spool.locate(q) for q in left] == ["active", "incoming", "incoming"]
    assert await spool.locate(own) == "active"
    assert await spool.requeue_active_shard(2, "worker exited", busy=busy.__contains__) == 0


def test_envelope_keeps_the_verdict_and_reads_old_files_without_it() -> None:
    envelope = make_envelope("y@example.test", sender="x@example.test")
    envelope.queue_id = new_queue_id()
    envelope.verdict = (
        Verdict()
        .with_auth(AuthResult(method="dmarc", result="pass", properties={"header.from": "x.test"}))
        .with_symbol(Symbol(name="BAYES_HAM", score=-3.0, options=("99%",)))
        .with_action("folder", "low trust", "Junk")
    )
    data = encode_envelope(envelope)
    assert decode_envelope(data).verdict == envelope.verdict
    # An envelope written before the verdict existed (no "verdict" key) still loads.
    old = msgspec.json.decode(data)
    del old["verdict"]
    assert decode_envelope(msgspec.json.encode(old)).verdict == Verdict()
