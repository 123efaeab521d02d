"""Group commit for the changes IMAP sessions make on the event loop.

A STORE or EXPUNGE is written on the loop when the index is free (``quick``), without an
fsync: a thread trip for the write costs more CPU than the write itself. Before the session
answers, the change must be on disk: it asks :class:`QuickWriteSync`, whose one thread takes
every request waiting, makes each account's changes durable once
(``MailStore.sync_quick_writes``: one fdatasync of the account's index journal, what a commit
at synchronous=FULL does) and wakes all the waiting sessions with one call to the loop. So
sessions that change mail at the same moment share the sync, and no session waits for a
window to fill: a lone request is synced at once.
"""

from __future__ import annotations

import asyncio
import threading

from pochta.logs import get_logger
from pochta.store import MailStore, StoreError, StoreUnavailable

log = get_logger("imap")

# The thread ends after this long without a request; the next one starts it again.
IDLE_SECONDS = 30.0


class QuickWriteSync:
    """Makes the store's quick changes durable for the sessions of one event loop."""

    def __init__(self, store: MailStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._cond = threading.Condition()
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._thread: threading.Thread | None = None

    async def sync(self, address: str) -> None:
        """Return once the account's quick changes made before this call are durable;
        StoreUnavailable when the disk refused."""
        future: asyncio.Future[None] = self._loop.create_future()
        with self._cond:
            self._waiting.append((address, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pochta-quick-sync", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        await future

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._waiting:
                    self._cond.wait(IDLE_SECONDS)
                if not self._waiting:
                    self._thread = None
                    return
                batch, self._waiting = self._waiting, []
            failed: dict[str, StoreError] = {}
            for address in dict.fromkeys(address for address, _ in batch):
                try:
                    self._store.sync_quick_writes(address)
                except StoreError as exc:
                    failed[address] = exc
                except Exception as exc:
                    # Not the store's promise, but the waiters must not wait for ever.
                    log.exception("quick_sync_failed", user=address)
                    failed[address] = StoreUnavailable(f"syncing {address}: {exc}")
            try:
                self._loop.call_soon_threadsafe(_settle, batch, failed)
            except RuntimeError:  # the loop is closed: the server is stopping
                with self._cond:
                    self._thread = None
                return


def _settle(batch: list[tuple[str, asyncio.Future[None]]], failed: dict[str, StoreError]) -> None:
    for address, future in batch:
        if future.done():  # the session went away meanwhile
            continue
        error = failed.get(address)
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
