"""``sieve.db``: what Sieve at delivery remembers between messages.

Three tables in one SQLite file in the data directory, WAL mode with a busy timeout like
``spam.db`` (spam/store.py) and ``reports.db``, one connection per thread (delivery runs
its database work on threads):

- ``vacation``: (account, handle, sender) -> until: RFC 5230 §4.2, a sender answered is not
  answered again for the same handle before ``until`` (Unix time);
- ``duplicates``: (account, id) -> until: RFC 7352 §3, the ids the duplicate test has seen;
- ``side_effects``: (queue id, recipient, action) -> until: the redirects and vacation replies
  already queued for one delivery, so a delivery retried after a crash does not send them
  twice (recorded while the message is still held in the queue, deliver/sieve_delivery.py
  ``_submit_once``; the stored copies are made idempotent by the store's dedupe key).

Expired rows are purged as rows are written (at most once a minute).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pochta.reports.store import ensure_schema

__all__ = ["DB_NAME", "SIDE_EFFECT_KEEP_SECONDS", "SieveState", "StateDuplicates"]

DB_NAME = "sieve.db"
BUSY_TIMEOUT_MS = 5000
# How long a (queue id, recipient, action) is remembered: longer than any queue lifetime
# (queue.maximal_lifetime_seconds is at most a few days in practice).
SIDE_EFFECT_KEEP_SECONDS = 30 * 86400
PURGE_EVERY_SECONDS = 60.0

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vacation (
        account TEXT NOT NULL,
        handle TEXT NOT NULL,
        sender TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (account, handle, sender)
    )""",
    """CREATE TABLE IF NOT EXISTS duplicates (
        account TEXT NOT NULL,
        id TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (account, id)
    )""",
    """CREATE TABLE IF NOT EXISTS side_effects (
        queue_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        action TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (queue_id, recipient, action)
    )""",
    "CREATE INDEX IF NOT EXISTS vacation_until ON vacation (until)",
    "CREATE INDEX IF NOT EXISTS duplicates_until ON duplicates (until)",
    "CREATE INDEX IF NOT EXISTS side_effects_until ON side_effects (until)",
)


class SieveState:
    """The vacation, duplicate and side-effect memory in ``path`` (created if missing).
    ``clock`` gives Unix time (injected by tests)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._local = threading.local()
        self._purged = 0.0
        self._connect()  # the schema now: a broken path fails at start, not at delivery

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SieveState:
        return cls(data_dir / DB_NAME)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            ensure_schema(conn, "sieve", SCHEMA_VERSION, SCHEMA)
            self._local.conn = conn
        return conn

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._purged < PURGE_EVERY_SECONDS:
            return
        self._purged = now
        for table in ("vacation", "duplicates", "side_effects"):
            conn.execute(f"DELETE FROM {table} WHERE until <= ?", (now,))  # noqa: S608

    # -- vacation (RFC 5230 §4.2) --

    def vacation_answered(self, account: str, handle: str, sender: str) -> bool:
        """Whether ``sender`` was answered for ``handle`` and the period is not over."""
        row = (
            self._connect()
            .execute(
                "SELECT until FROM vacation WHERE account = ? AND handle = ? AND sender = ?",
                (account.lower(), handle, sender.lower()),
            )
            .fetchone()
        )
        return row is not None and float(row[0]) > self.clock()

    def claim_vacation(self, account: str, handle: str, sender: str, period: float) -> bool:
        """Record that ``sender`` is being answered for ``handle`` until now + ``period``,
        unless it was answered and the period is not over: False then. One transaction, so
        two messages delivered at once from the same sender get one reply between them."""
        now = self.clock()
        conn = self._connect()
        key = (account.lower(), handle, sender.lower())
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "SELECT until FROM vacation WHERE account = ? AND handle = ? AND sender = ?", key
            ).fetchone()
            if row is not None and float(row[0]) > now:
                conn.execute("COMMIT")
                return False
            conn.execute(
                "INSERT OR REPLACE INTO vacation (account, handle, sender, until) "
                "VALUES (?, ?, ?, ?)",
                (*key, now + period),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._purge(conn, now)
        return True

    def release_vacation(self, account: str, handle: str, sender: str) -> None:
        """Forget a claim whose reply could not be queued (it is tried again)."""
        self._connect().execute(
            "DELETE FROM vacation WHERE account = ? AND handle = ? AND sender = ?",
            (account.lower(), handle, sender.lower()),
        )

    def record_vacation(self, account: str, handle: str, sender: str, period: float) -> None:
        now = self.clock()
        conn = self._connect()
        conn.execute(
            "INSERT OR REPLACE INTO vacation (account, handle, sender, until) VALUES (?, ?, ?, ?)",
            (account.lower(), handle, sender.lower(), now + period),
        )
        self._purge(conn, now)

    # -- duplicate (RFC 7352) --

    def duplicate_seen(self, account: str, duplicate_id: str) -> bool:
        row = (
            self._connect()
            .execute(
                "SELECT until FROM duplicates WHERE account = ? AND id = ?",
                (account.lower(), duplicate_id),
            )
            .fetchone()
        )
        return row is not None and float(row[0]) > self.clock()

    def record_duplicate(self, account: str, duplicate_id: str, period: float) -> None:
        now = self.clock()
        conn = self._connect()
        conn.execute(
            "INSERT OR REPLACE INTO duplicates (account, id, until) VALUES (?, ?, ?)",
            (account.lower(), duplicate_id, now + period),
        )
        self._purge(conn, now)

    def duplicates_for(self, account: str) -> StateDuplicates:
        """The duplicate test's tracker for one account (``context.DuplicateTracker``)."""
        return StateDuplicates(self, account)

    # -- side effects already submitted for a delivery --

    def side_effect_done(self, queue_id: str, recipient: str, action: str) -> bool:
        row = (
            self._connect()
            .execute(
                "SELECT 1 FROM side_effects WHERE queue_id = ? AND recipient = ? AND action = ?",
                (queue_id, recipient.lower(), action),
            )
            .fetchone()
        )
        return row is not None

    def record_side_effect(self, queue_id: str, recipient: str, action: str) -> None:
        now = self.clock()
        conn = self._connect()
        conn.execute(
            "INSERT OR REPLACE INTO side_effects (queue_id, recipient, action, until) "
            "VALUES (?, ?, ?, ?)",
            (queue_id, recipient.lower(), action, now + SIDE_EFFECT_KEEP_SECONDS),
        )
        self._purge(conn, now)

    def purge(self) -> None:
        """Drop every expired row now."""
        self._purged = 0.0
        self._purge(self._connect(), self.clock())


class StateDuplicates:
    """``DuplicateTracker`` over :class:`SieveState` for one account."""

    def __init__(self, state: SieveState, account: str) -> None:
        self.state = state
        self.account = account

    def seen(self, duplicate_id: str) -> bool:
        return self.state.duplicate_seen(self.account, duplicate_id)
