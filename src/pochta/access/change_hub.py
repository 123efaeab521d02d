"""Store changes to waiting IMAP sessions (IDLE, RFC 2177; NOOP polling needs none).

``ChangeHub`` is the first implementation of ``pochta.runtime.ChangeBus``. The store calls
its change listeners from whichever thread committed the change (a delivery thread, another
session's STORE); the hub subscribes one and ``publish``es each change: it hands the wake-up
to the event loop, which sets the events of the sessions watching that account and folder,
and gives it to the relay (``ChangeRelay``), which carries it to the other processes. Their
changes come back through ``wake_remote``. The relay today is the master-worker socket link
(``server/workers.py``: ``MasterLink`` in a worker, ``WorkerPool`` in the master); another
(PostgreSQL LISTEN/NOTIFY) can take its place through ``relay_to`` without a session
noticing.

A session then asks the store what changed (``folder_changes``): the hub carries wake-ups
only, never data, so a lost or merged wake-up costs nothing but a moment. A session's own
STOREs and EXPUNGEs wake everyone but itself: it reported them in its answer, and a read of
the index for them would find nothing new (``watch``'s ``owner``, the store's
``CHANGE_ORIGIN``).

A NOTIFY session (RFC 5465) watches a whole account and must know which folders changed:
it ``follow``s the account and gets a ``FolderFeed``, the names of the folders changed since it
last looked, merged (ten deliveries to one folder are one entry). The feed is bounded: past
``limit`` different folders waiting it stops recording and says ``overflowed``; the session
then sends ``OK [NOTIFICATIONOVERFLOW]`` and ends its NOTIFY (RFC 5465 §5.8). A change from
another process that names no folder makes the feed say "any folder" (``take`` returns None).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from pochta.runtime import ANY_FOLDER, ChangeRelay
from pochta.store import CHANGE_ORIGIN, ChangeKind, MailStore

# The changes a session reports itself in its answers (STORE's FETCH, EXPUNGE's EXPUNGE).
_REPORTED_BY_ORIGIN = frozenset({ChangeKind.FLAGS, ChangeKind.EXPUNGE})


class ChangeHub:
    def __init__(
        self,
        store: MailStore,
        loop: asyncio.AbstractEventLoop,
        relay: ChangeRelay | None = None,
    ) -> None:
        self._loop = loop
        # The loop's thread (the hub is made on it): a change made there needs no self-pipe.
        self._loop_thread = threading.get_ident()
        self._relay = relay
        # Each watcher's event, with its owner (None: woken by every change).
        self._watchers: dict[tuple[str, str], dict[asyncio.Event, object | None]] = {}
        self._feeds: dict[str, set[FolderFeed]] = {}
        self._unsubscribe = store.subscribe_changes(self._on_change)

    def relay_to(self, relay: ChangeRelay | None) -> None:
        """Carry this process's changes to the others through ``relay`` (None: no others)."""
        self._relay = relay

    def watch(
        self, address: str, folder: str = ANY_FOLDER, *, owner: object | None = None
    ) -> tuple[asyncio.Event, Callable[[], None]]:
        """An event set at each change of ``folder`` (any folder: ``ANY_FOLDER``) of the
        account, and the function that stops the watch. ``owner``: the watcher's
        CHANGE_ORIGIN token; its own flag changes and expunges do not set the event."""
        key = (address.lower(), folder)
        event = asyncio.Event()
        self._watchers.setdefault(key, {})[event] = owner

        def stop() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(event, None)
                if not watchers:
                    del self._watchers[key]

        return event, stop

    def follow(self, address: str, limit: int) -> FolderFeed:
        """The folders of the account that change from now on, at most ``limit`` of them
        waiting (``FolderFeed``); ``FolderFeed.close`` ends it."""
        key = address.lower()
        feeds = self._feeds.setdefault(key, set())

        def stop(feed: FolderFeed) -> None:
            mine = self._feeds.get(key)
            if mine is not None:
                mine.discard(feed)
                if not mine:
                    del self._feeds[key]

        feed = FolderFeed(limit, stop)
        feeds.add(feed)
        return feed

    def close(self) -> None:
        self._unsubscribe()
        self._relay = None

    def _on_change(self, address: str, folder: str, kind: ChangeKind) -> None:
        origin = CHANGE_ORIGIN.get() if kind in _REPORTED_BY_ORIGIN else None
        self.publish(address, folder, origin=origin)

    def publish(self, address: str, folder: str, *, origin: object | None = None) -> None:
        """A change made in this process (any thread): wake the sessions here, on the loop,
        but not the watcher that ``origin`` owns; and tell the other processes."""
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._wake, address.lower(), folder, origin)  # a quick change
        else:
            # A closed loop (RuntimeError): the server is stopping.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake, address.lower(), folder, origin)
        relay = self._relay
        if relay is not None:
            relay.send_change(address, folder)

    def wake_remote(self, address: str | None, folder: str | None) -> None:
        """A change made by another process (on the loop); None: anything may have changed."""
        if address is None or folder is None:
            for watchers in self._watchers.values():
                for event in watchers:
                    event.set()
            for feeds in self._feeds.values():
                for feed in feeds:
                    feed.add(None)
            return
        self._wake(address.lower(), folder)

    def _wake(self, address: str, folder: str, origin: object | None = None) -> None:
        for key in ((address, folder), (address, ANY_FOLDER)):
            for event, owner in self._watchers.get(key, {}).items():
                if origin is None or owner is not origin:
                    event.set()
        for feed in self._feeds.get(address, ()):
            feed.add(folder)


class FolderFeed:
    """The folders of one account changed since the last ``take`` (``runtime.FolderFeed``).

    Bounded: it holds at most ``limit`` different names; one more and it drops them and
    reports ``overflowed`` until taken (the client fell behind, RFC 5465 §5.8)."""

    def __init__(self, limit: int, stop: Callable[[FolderFeed], None]) -> None:
        self.ready = asyncio.Event()
        self._limit = limit
        self._stop = stop
        self._folders: set[str] = set()
        self._anything = False
        self._overflowed = False

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def add(self, folder: str | None) -> None:
        """A change of ``folder`` (on the loop); None: any folder may have changed."""
        if folder is None:
            self._anything = True
            self._folders.clear()
        elif not (self._anything or self._overflowed or folder in self._folders):
            if len(self._folders) >= self._limit:
                self._overflowed = True
                self._folders.clear()
            else:
                self._folders.add(folder)
        self.ready.set()

    def take(self) -> frozenset[str] | None:
        """The folders changed since the last take (None: any may have); starts afresh,
        the overflow mark included."""
        taken = None if self._anything else frozenset(self._folders)
        self._folders.clear()
        self._anything = self._overflowed = False
        self.ready.clear()
        return taken

    def close(self) -> None:
        self._stop(self)
