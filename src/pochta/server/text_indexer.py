"""Full-text indexing after delivery, off the delivery path.

Extracting the text of a message and adding its trigrams to the FTS5 index costs more CPU
than storing the message, so deliveries and APPENDs store without it and this indexer
catches up: a folder that received mail is indexed once it has been quiet for
QUIET_SECONDS (at the latest MAX_DELAY_SECONDS after its first new message), in one
thread at a lower CPU priority. A search never waits for it: SEARCH indexes whatever is
still missing before it answers (MailStore.search_text).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pochta.logs import get_logger
from pochta.store import ChangeKind, MailStore, StoreError

log = get_logger("store")

QUIET_SECONDS = 2.0
MAX_DELAY_SECONDS = 30.0
NICE = 10  # added to this thread's nice value (Linux: per thread)


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


class TextIndexer:
    def __init__(self, store: MailStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        # (address, folder) -> (first change, last change), monotonic seconds
        self._pending: dict[tuple[str, str], tuple[float, float]] = {}
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pochta-fts", initializer=_lower_priority
        )
        self._unsubscribe = store.subscribe_changes(self._on_change)
        self._task = loop.create_task(self._run(), name="pochta-fts")

    def _on_change(self, address: str, folder: str, kind: ChangeKind) -> None:
        if kind is ChangeKind.NEW:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                self._loop.call_soon_threadsafe(self._note, address, folder)

    def _note(self, address: str, folder: str) -> None:
        now = time.monotonic()
        first, _ = self._pending.get((address, folder), (now, now))
        self._pending[(address, folder)] = (first, now)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(QUIET_SECONDS / 2)
            now = time.monotonic()
            due = [
                key
                for key, (first, last) in self._pending.items()
                if now - last >= QUIET_SECONDS or now - first >= MAX_DELAY_SECONDS
            ]
            for key in due:
                del self._pending[key]
                try:
                    await self._loop.run_in_executor(self._executor, self._index, key[0], key[1])
                except StoreError as exc:
                    log.warning("fts_index_failed", user=key[0], folder=key[1], error=str(exc))

    def _index(self, address: str, folder: str) -> None:
        started = time.monotonic()
        count = self._store.index_pending(address, folder)
        if count:
            log.debug(
                "fts_indexed",
                user=address,
                folder=folder,
                messages=count,
                seconds=round(time.monotonic() - started, 3),
            )

    async def close(self) -> None:
        self._unsubscribe()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._executor.shutdown(wait=True, cancel_futures=True)
