"""The group commit of loop-side changes (access/quick_sync.py): every request waiting is
served by one sync per account, a failed sync fails its waiters, and the thread goes away
when idle."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pochta.access import quick_sync
from pochta.access.quick_sync import QuickWriteSync
from pochta.store import StoreUnavailable


class HeldStore:
    """``sync_quick_writes`` as a store has it: records each call; the first one waits until
    released, so that requests pile up behind it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.first = threading.Event()
        self.broken: set[str] = set()

    def sync_quick_writes(self, address: str) -> None:
        self.calls.append(address)
        if not self.first.is_set():
            self.first.set()
            self.release.wait(10)
        if address in self.broken:
            raise StoreUnavailable(f"cannot sync {address}")
        if address == "bug@example.org":
            raise RuntimeError("a bug")


async def test_waiting_requests_share_one_sync_per_account() -> None:
    store = HeldStore()
    syncer = QuickWriteSync(store, asyncio.get_running_loop())  # type: ignore[arg-type]
    first = asyncio.create_task(syncer.sync("a@example.org"))
    await asyncio.to_thread(store.first.wait, 10)
    # While the first sync runs, five sessions of two accounts ask: one sync each.
    later = [
        asyncio.create_task(syncer.sync(address))
        for address in ("a@example.org", "b@example.org", "a@example.org", "a@example.org")
    ]
    await asyncio.sleep(0)
    assert not first.done()
    store.release.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 10)
    assert store.calls == ["a@example.org", "a@example.org", "b@example.org"]


async def test_a_failed_sync_fails_only_its_waiters() -> None:
    store = HeldStore()
    store.broken.add("b@example.org")
    syncer = QuickWriteSync(store, asyncio.get_running_loop())  # type: ignore[arg-type]
    first = asyncio.create_task(syncer.sync("a@example.org"))
    await asyncio.to_thread(store.first.wait, 10)
    good = asyncio.create_task(syncer.sync("a@example.org"))
    bad = asyncio.create_task(syncer.sync("b@example.org"))
    await asyncio.sleep(0)
    store.release.set()
    await asyncio.wait_for(asyncio.gather(first, good), 10)
    with pytest.raises(StoreUnavailable, match=r"cannot sync b@example\.org"):
        await asyncio.wait_for(bad, 10)
    # Anything else the store raises fails its waiters too, and the thread goes on.
    with pytest.raises(StoreUnavailable, match="a bug"):
        await asyncio.wait_for(syncer.sync("bug@example.org"), 10)
    await asyncio.wait_for(syncer.sync("a@example.org"), 10)


async def test_the_thread_ends_when_idle_and_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quick_sync, "IDLE_SECONDS", 0.01)
    store = HeldStore()
    store.first.set()  # nothing is held
    syncer = QuickWriteSync(store, asyncio.get_running_loop())  # type: ignore[arg-type]
    await asyncio.wait_for(syncer.sync("a@example.org"), 10)
    thread = syncer._thread
    if thread is not None:
        await asyncio.to_thread(thread.join, 10)
    assert syncer._thread is None
    await asyncio.wait_for(syncer.sync("a@example.org"), 10)
    assert store.calls == ["a@example.org", "a@example.org"]
