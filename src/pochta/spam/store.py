"""``spam.db``: the spam filter's shared state in the data directory.

Greylisting triplets, rate-limit counters and the quarantine index are written from
whichever process runs the SMTP session or cleanup (server/workers.py), so they live in one
SQLite file in WAL mode with a busy timeout, like ``reports.db`` (reports/store.py). Each
module keeps its own tables: it calls :func:`~pochta.reports.store.ensure_schema` with its
name, a version and its ``CREATE ... IF NOT EXISTS`` statements on the connections it opens.
The Bayes token statistics and the allow/block lists are account data and live in the
directory database instead (spam/bayes_store.py, spam/lists.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pochta.config.settings import Settings
from pochta.reports.store import ensure_schema

__all__ = ["BUSY_TIMEOUT_MS", "DB_NAME", "connect_spam_db", "ensure_schema", "spam_db_path"]

DB_NAME = "spam.db"
BUSY_TIMEOUT_MS = 5000


def spam_db_path(settings: Settings) -> Path:
    return settings.data_dir / DB_NAME


def connect_spam_db(path: Path) -> sqlite3.Connection:
    """A new connection to ``spam.db`` at ``path`` (created if missing), WAL mode, busy
    timeout, autocommit (``BEGIN IMMEDIATE`` for read-modify-write). One per thread."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn
