"""One SQLite connection per thread, all closable from any thread.

The directory and the per-account mailbox indexes are read from the event loop and written
from worker threads; a sqlite3 connection must not be shared between threads while in use,
so each thread opens its own, and ``close`` (from whichever thread) closes them all.
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable


class TrackedConnection(sqlite3.Connection):
    """A subclass only so that connections can be held in a WeakSet: pass it as the
    ``factory`` of ``sqlite3.connect``."""


class ThreadConnections:
    def __init__(
        self,
        connect: Callable[[], TrackedConnection],
        closed_error: Callable[[], Exception],
    ) -> None:
        self._connect = connect
        self._closed_error = closed_error
        self._local = threading.local()
        self._connections: weakref.WeakSet[TrackedConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> TrackedConnection:
        """This thread's connection, opened on first use; ``closed_error()`` after close."""
        conn: TrackedConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise self._closed_error()
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.add(conn)
        return conn

    def close(self) -> None:
        self._closed = True
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            conn.close()
        self._local = threading.local()
