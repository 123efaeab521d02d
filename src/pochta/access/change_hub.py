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
only, never data, so a lost or merged wake-up costs nothing but a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from pochta.runtime import ANY_FOLDER, ChangeRelay
from pochta.store import ChangeKind, MailStore


class ChangeHub:
    def __init__(
        self,
        store: MailStore,
        loop: asyncio.AbstractEventLoop,
        relay: ChangeRelay | None = None,
    ) -> None:
        self._loop = loop
        self._relay = relay
        self._watchers: dict[tuple[str, str], set[asyncio.Event]] = {}
        self._unsubscribe = store.subscribe_changes(self._on_change)

    def relay_to(self, relay: ChangeRelay | None) -> None:
        """Carry this process's changes to the others through ``relay`` (None: no others)."""
        self._relay = relay

    def watch(
        self, address: str, folder: str = ANY_FOLDER
    ) -> tuple[asyncio.Event, Callable[[], None]]:
        """An event set at each change of ``folder`` (any folder: ``ANY_FOLDER``) of the
        account, and the function that stops the watch."""
        key = (address.lower(), folder)
        event = asyncio.Event()
        self._watchers.setdefault(key, set()).add(event)

        def stop() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]

        return event, stop

    def close(self) -> None:
        self._unsubscribe()
        self._relay = None

    def _on_change(self, address: str, folder: str, kind: ChangeKind) -> None:
        self.publish(address, folder)

    def publish(self, address: str, folder: str) -> None:
        """A change made in this process (any thread): wake the sessions here, on the loop,
        and tell the other processes."""
        # A closed loop (RuntimeError): the server is stopping.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake, address.lower(), folder)
        relay = self._relay
        if relay is not None:
            relay.send_change(address, folder)

    def wake_remote(self, address: str | None, folder: str | None) -> None:
        """A change made by another process (on the loop); None: anything may have changed."""
        if address is None or folder is None:
            for watchers in self._watchers.values():
                for event in watchers:
                    event.set()
            return
        self._wake(address.lower(), folder)

    def _wake(self, address: str, folder: str) -> None:
        for key in ((address, folder), (address, ANY_FOLDER)):
            for event in self._watchers.get(key, ()):
                event.set()
