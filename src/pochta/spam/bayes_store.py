"""The Bayes token statistics, in the directory database (account data, like the accounts).

Three tables of their own (``CREATE ... IF NOT EXISTS`` through
:func:`~pochta.spam.store.ensure_schema`, module ``bayes``), per *scope*: ``""`` is the
global statistics, an account address a user's:

- ``bayes_scopes``: the scope's id and its learned spam and ham messages;
- ``bayes_tokens``: per scope and token (a signed 64-bit hash, ``spam/bayes.token_hash``)
  the spam and ham messages it was seen in, WITHOUT ROWID (the key is the row);
- ``bayes_learned``: per scope the SHA-256 digest of every learned message and its class,
  so learning the same message again does nothing and learning it as the other class moves
  it (its tokens unlearned from the first class, then learned), as ``sa-learn`` does.

A learn is one ``BEGIN IMMEDIATE`` transaction over every scope it touches, so another
process (SMTP workers classify, the IMAP sessions and ``pochta spam learn`` learn) never
sees half of it. Reads for a classification are one SELECT per scope (the tokens as a JSON
array through ``json_each``). The connections are WAL with a busy timeout and
``synchronous = NORMAL`` (statistics: a power cut may lose the last learns, never corrupt
them); one per thread (``sqlite_connections.ThreadConnections``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pochta.spam.bayes import Counts
from pochta.spam.store import BUSY_TIMEOUT_MS, ensure_schema
from pochta.sqlite_connections import ThreadConnections, TrackedConnection

__all__ = ["GLOBAL", "BayesStore", "BayesStoreError", "LearnOutcome"]

GLOBAL = ""
"""The scope of the global statistics."""

LearnOutcome = Literal["learned", "known", "moved"]

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bayes_scopes (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spam INTEGER NOT NULL DEFAULT 0,
        ham INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS bayes_tokens (
        scope INTEGER NOT NULL,
        token INTEGER NOT NULL,
        spam INTEGER NOT NULL DEFAULT 0,
        ham INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, token)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS bayes_learned (
        scope INTEGER NOT NULL,
        digest BLOB NOT NULL,
        spam INTEGER NOT NULL,
        PRIMARY KEY (scope, digest)
    ) WITHOUT ROWID""",
)

_ADD = (
    "INSERT INTO bayes_tokens (scope, token, spam, ham) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (scope, token) DO UPDATE SET "
    "spam = max(0, spam + excluded.spam), ham = max(0, ham + excluded.ham)"
)


class BayesStoreError(Exception):
    """The statistics could not be read or written; the message says why."""


class BayesStore:
    """The token statistics in the SQLite file at ``path`` (the directory database)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = ThreadConnections(
            self._connect, lambda: BayesStoreError("the Bayes statistics are closed")
        )
        self._ready = False

    def _connect(self) -> TrackedConnection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,  # only so that close() may close it from any thread
                factory=TrackedConnection,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            if not self._ready:
                ensure_schema(conn, "bayes", SCHEMA_VERSION, SCHEMA)
                self._ready = True
        except sqlite3.Error as exc:
            raise BayesStoreError(
                f"cannot open the Bayes statistics in {self.path}: {exc}; check the path "
                "(directory.sqlite_path) and its permissions"
            ) from None
        return conn

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._pool.get()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise BayesStoreError(
                f"the Bayes statistics in {self.path} are busy ({exc}); try again"
            ) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reads --------------------------------------------------------------------------

    def scope_counts(self, scope: str) -> Counts:
        """The spam and ham messages learned in ``scope`` (0, 0 when never learned)."""
        row = (
            self._pool.get()
            .execute("SELECT spam, ham FROM bayes_scopes WHERE name = ?", (scope,))
            .fetchone()
        )
        return Counts(int(row[0]), int(row[1])) if row else Counts(0, 0)

    def token_counts(self, scope: str, tokens: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Token -> (spam, ham) for the ``tokens`` known in ``scope``: one SELECT."""
        rows = (
            self._pool.get()
            .execute(
                "SELECT t.token, t.spam, t.ham FROM bayes_tokens t "
                "JOIN bayes_scopes s ON s.id = t.scope "
                "WHERE s.name = ? AND t.token IN (SELECT value FROM json_each(?))",
                (scope, json.dumps(list(tokens))),
            )
            .fetchall()
        )
        return {int(t): (int(s), int(h)) for t, s, h in rows}

    def scopes(self) -> list[tuple[str, Counts]]:
        """Every scope with its counts, the global one first."""
        rows = self._pool.get().execute("SELECT name, spam, ham FROM bayes_scopes ORDER BY name")
        return [(str(n), Counts(int(s), int(h))) for n, s, h in rows]

    # -- writes -------------------------------------------------------------------------

    def learn(
        self, scopes: Sequence[str], digest: bytes, tokens: Sequence[int], *, spam: bool
    ) -> LearnOutcome:
        """Learn a message (``digest``, ``tokens``) as spam or ham in every scope, in one
        transaction. The outcome is the first scope's: ``known`` when it was already
        learned as this class, ``moved`` when it was learned as the other one (unlearned
        from it first), else ``learned``."""
        outcomes: list[LearnOutcome] = []
        with self._write() as conn:
            for scope in scopes:
                outcomes.append(self._learn_one(conn, scope, digest, tokens, spam))
        return outcomes[0] if outcomes else "known"

    @staticmethod
    def _scope_id(conn: sqlite3.Connection, scope: str) -> int:
        conn.execute("INSERT OR IGNORE INTO bayes_scopes (name) VALUES (?)", (scope,))
        row = conn.execute("SELECT id FROM bayes_scopes WHERE name = ?", (scope,)).fetchone()
        return int(row[0])

    def _learn_one(
        self, conn: sqlite3.Connection, scope: str, digest: bytes, tokens: Sequence[int], spam: bool
    ) -> LearnOutcome:
        scope_id = self._scope_id(conn, scope)
        row = conn.execute(
            "SELECT spam FROM bayes_learned WHERE scope = ? AND digest = ?", (scope_id, digest)
        ).fetchone()
        outcome: LearnOutcome = "learned"
        if row is not None:
            if bool(row[0]) == spam:
                return "known"
            # sa-learn's "forget" of the other class, then the learn below.
            self._add(conn, scope_id, tokens, spam=not spam, step=-1)
            outcome = "moved"
        self._add(conn, scope_id, tokens, spam=spam, step=1)
        conn.execute(
            "INSERT OR REPLACE INTO bayes_learned (scope, digest, spam) VALUES (?, ?, ?)",
            (scope_id, digest, int(spam)),
        )
        return outcome

    @staticmethod
    def _add(
        conn: sqlite3.Connection, scope_id: int, tokens: Sequence[int], *, spam: bool, step: int
    ) -> None:
        ds, dh = (step, 0) if spam else (0, step)
        conn.executemany(_ADD, ((scope_id, t, ds, dh) for t in tokens))
        if step < 0:
            conn.execute(
                "DELETE FROM bayes_tokens WHERE scope = ? AND spam = 0 AND ham = 0 "
                "AND token IN (SELECT value FROM json_each(?))",
                (scope_id, json.dumps(list(tokens))),
            )
        conn.execute(
            "UPDATE bayes_scopes SET spam = max(0, spam + ?), ham = max(0, ham + ?) WHERE id = ?",
            (ds, dh, scope_id),
        )
