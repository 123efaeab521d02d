"""The per-account SQLite index of the Maildir store.

One database per account, ``MAIL_DIR/DOMAIN/LOCALPART/pochta-index.sqlite3``, holds every
folder of the account, so that MOVE, COPY and the quota counters change in one transaction.
It plays the part of Dovecot's dovecot.index* files: UIDs, MODSEQs, flags, keywords, the
quota counters and (filled by IMAP later) envelope and bodystructure caches.

Design notes:

- **The files are the truth for content; the index for UIDs and MODSEQs.** A row is committed
  after its file is in place; a rescan adopts files whose row never committed (see
  ``MaildirStore.sync_folder``). ``synchronous=FULL``: a committed UID is never handed out
  again, even after a power failure.
- **One connection per thread** (``threading.local``), WAL so readers never wait for the
  writer, ``BEGIN IMMEDIATE`` for every write so two writers (threads or processes) serialise
  at the start of the transaction instead of failing at commit.
- **Schema versions** in ``PRAGMA user_version``, like the directory: ``_MIGRATIONS[i]`` takes
  the schema from version i to i + 1.
- **Flags first, file names later.** ``messages.info`` is the name the file has on disk
  now; ``flags`` and ``keywords`` are the truth. A STORE or EXPUNGE commits its rows and a
  ``file_work`` row; the rename or unlink follows in a later batch (``maildir.py``).
- Keywords are kept only here (Dovecot also maps up to 26 of them to filename letters a-z
  with a dovecot-keywords file; we do not write those letters, see ``maildir.py``). The
  ``keywords`` table lists every keyword ever set in a folder, for IMAP's FLAGS.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pochta.sqlite_connections import ThreadConnections, TrackedConnection
from pochta.store.base import StoreError, StoreFull, StoreUnavailable, WouldBlock

INDEX_FILE = "pochta-index.sqlite3"

# Bits of messages.flags (RFC 3501 §2.3.2 system flags).
SEEN = 1
ANSWERED = 2
FLAGGED = 4
DELETED = 8
DRAFT = 16

FLAG_BITS: dict[str, int] = {
    "\\Seen": SEEN,
    "\\Answered": ANSWERED,
    "\\Flagged": FLAGGED,
    "\\Deleted": DELETED,
    "\\Draft": DRAFT,
}

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE meta (
            key TEXT NOT NULL PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE folders (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            uidvalidity INTEGER NOT NULL,
            uidnext INTEGER NOT NULL,
            highestmodseq INTEGER NOT NULL,
            special_use TEXT,
            subscribed INTEGER NOT NULL DEFAULT 0,
            created INTEGER NOT NULL,
            -- the lowest MODSEQ from which `expunged` is complete (QRESYNC, RFC 7162 §3.2.5)
            expunged_since INTEGER NOT NULL DEFAULT 0,
            -- max(mtime_ns of new/, cur/) after our last change: a different value means
            -- another program (or a crashed one of ours) changed the folder: rescan
            seen_mtime_ns INTEGER NOT NULL DEFAULT 0,
            -- size of pochta-uidlist after our last change: each delivery appends its line
            -- before the file goes into new/, so a larger file means a crash mid-delivery
            uidlist_size INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE messages (
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            filename TEXT NOT NULL,
            info TEXT,
            flags INTEGER NOT NULL DEFAULT 0,
            keywords TEXT NOT NULL DEFAULT '',
            internal_date REAL NOT NULL,
            size INTEGER NOT NULL,
            modseq INTEGER NOT NULL,
            envelope TEXT,
            bodystructure TEXT,
            dedupe_key TEXT,
            UNIQUE (folder_id, uid)
        )""",
        "CREATE UNIQUE INDEX messages_by_filename ON messages(folder_id, filename)",
        "CREATE INDEX messages_by_modseq ON messages(folder_id, modseq)",
        "CREATE INDEX messages_by_dedupe ON messages(dedupe_key) WHERE dedupe_key IS NOT NULL",
        """CREATE TABLE expunged (
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            modseq INTEGER NOT NULL,
            PRIMARY KEY (folder_id, uid)
        ) WITHOUT ROWID""",
        # RFC 9051 §6.3.9: subscriptions are names, kept when the folder goes away.
        "CREATE TABLE subscriptions (name TEXT NOT NULL PRIMARY KEY) WITHOUT ROWID",
        """CREATE TABLE quota (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            bytes INTEGER NOT NULL,
            messages INTEGER NOT NULL
        )""",
        "INSERT INTO quota (id, bytes, messages) VALUES (1, 0, 0)",
    ),
    (
        # Full-text search (IMAP SEARCH TEXT/BODY): one row per message, rowid = the
        # messages rowid, casefolded text. The trigram tokenizer answers substring queries
        # of 3 characters and more from the index, which is IMAP's substring semantics
        # (RFC 9051 §6.4.4); shorter needles scan the stored text.
        "CREATE VIRTUAL TABLE fts USING fts5(headers, body, tokenize = 'trigram')",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            DELETE FROM fts WHERE rowid = old.rowid;
        END""",
    ),
    (
        # Every keyword ever set in a folder (Dovecot keeps them in the index header too):
        # IMAP's FLAGS and PERMANENTFLAGS list them all, also once no message carries one,
        # so a client's list never shrinks (RFC 9051 §7.3.5, §7.1 PERMANENTFLAGS).
        # Keywords compare case-insensitively (RFC 9051 §2.3.2); the first spelling stays.
        """CREATE TABLE keywords (
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            keyword TEXT NOT NULL COLLATE NOCASE,
            PRIMARY KEY (folder_id, keyword)
        ) WITHOUT ROWID""",
        # The keywords of messages already indexed (a flag-keyword is an atom: no '"', no
        # '\\', RFC 3501 §9, so the space-separated list is safely turned into JSON).
        """INSERT OR IGNORE INTO keywords (folder_id, keyword)
            SELECT m.folder_id, k.value FROM messages AS m,
                json_each('["' || replace(m.keywords, ' ', '","') || '"]') AS k
            WHERE m.keywords != ''""",
    ),
    (
        # The file work that follows a committed flag change or expunge lazily (see the
        # module docstring of maildir.py): `uid` set: rename the file of that message to the
        # name its flags give; `uid` NULL: unlink the file `filename` (+ ":" `info` in cur/,
        # new/ when `info` is NULL). `since_ns`: when our change was committed (wall clock),
        # to tell whose change is newer when another program renamed the file meanwhile.
        """CREATE TABLE file_work (
            folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
            filename TEXT NOT NULL,
            uid INTEGER,
            info TEXT,
            since_ns INTEGER NOT NULL,
            PRIMARY KEY (folder_id, filename)
        ) WITHOUT ROWID""",
    ),
    (
        # The change check after each command asks what was expunged since the session's
        # MODSEQ (folder_changes): without this index SQLite read every expunge the folder
        # ever had (337 µs per check once 2,455 had piled up).
        "CREATE INDEX expunged_by_modseq ON expunged(folder_id, modseq)",
        # EXPUNGE and CLOSE ask first whether anything is flagged \\Deleted (has_deleted):
        # on the event loop, so from an index of the few such messages, not the folder.
        "CREATE INDEX messages_deleted ON messages(folder_id, uid) WHERE flags & 8 != 0",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)
# What commits without a checkpoint (``write_now``) may add to the WAL before a durable
# write must checkpoint it: SQLite's own auto-checkpoint size (1,000 pages of 4 KiB).
QUICK_WAL_BYTES = 4_096_000
# One page of the index: what a small commit adds to the WAL at least (its size estimate).
WAL_PAGE_BYTES = 4096

EXPUNGED_HISTORY = 100_000
"""How many of its last MODSEQs a folder keeps the expunges of, for QRESYNC's VANISHED
(EARLIER) (RFC 7162 §3.2.5.2), so the table does not grow for ever. A client further
behind is sent every UID it knows that is gone."""

_FOLDER_COLUMNS = (
    "id, name, uidvalidity, uidnext, highestmodseq, special_use, created, expunged_since, "
    "seen_mtime_ns, uidlist_size"
)
_MESSAGE_COLUMNS = "uid, filename, info, flags, keywords, internal_date, size, modseq, dedupe_key"
_SUMMARY_COLUMNS = "uid, flags, keywords, internal_date, size, modseq"


@dataclass(slots=True)
class FolderRow:
    """A folders row; mutable so one transaction can advance uidnext/modseq and save once."""

    id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None
    created: int
    expunged_since: int
    seen_mtime_ns: int
    uidlist_size: int

    def next_modseq(self) -> int:
        """RFC 7162 §3.1.1: a change gets a MODSEQ above every earlier one of the folder."""
        self.highestmodseq += 1
        return self.highestmodseq


@dataclass(slots=True)
class MessageRow:
    uid: int
    filename: str  # Maildir base name, without the ":2,..." info
    info: str | None  # what follows ":" in cur/ ("2,FS"); None while the file is in new/
    flags: int
    keywords: str  # space-separated, sorted
    internal_date: float
    size: int
    modseq: int
    dedupe_key: str | None = None


def _folder(row: Sequence[Any]) -> FolderRow:
    return FolderRow(*row)


def _message(row: Sequence[Any]) -> MessageRow:
    return MessageRow(*row)


class IndexDamaged(StoreUnavailable):
    """The index file is not a readable SQLite database; ``reindex`` rebuilds it."""


class IndexNotWritable(StoreFull):
    """The index cannot be written now (its disk is full); what it holds can still be read.

    Readers (IMAP SELECT, FETCH) serve what the index has and leave its updates (new UIDs for
    files found on disk, the \\Recent claim, caches) for later."""


# Extended result codes that mean "the disk is full" when opening or writing: SQLITE_FULL,
# and the I/O errors of growing a file (the -shm file is grown when the first connection
# opens a WAL database).
_NO_SPACE_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR_SHMSIZE,
        sqlite3.SQLITE_IOERR_WRITE,
        sqlite3.SQLITE_IOERR_TRUNCATE,
    }
)


def is_no_space(exc: BaseException) -> bool:
    """An SQLite or OS error that says the disk is full (or the disk quota is used up)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code in _NO_SPACE_CODES or (code is not None and code & 0xFF == sqlite3.SQLITE_FULL)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_damage(exc: sqlite3.Error) -> bool:
    """A corrupt file, as opposed to a busy or locked one."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


# How long to wait for another process that holds a new index file while it sets it up.
WAL_SWITCH_WAIT_SECONDS = 10.0


def _set_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (a no-op once it is: the mode is kept in the file).

    Switching needs the file to itself, and SQLite answers "database is locked" at once,
    without its busy timeout, while another process is doing the same to a new file (two
    processes opening one account's index at its first delivery and first login). So that
    case is retried here, for up to WAL_SWITCH_WAIT_SECONDS.
    """
    deadline = time.monotonic() + WAL_SWITCH_WAIT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class AccountIndex:
    """The index database of one account. Thread-safe: one connection per thread."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self._synchronous = "FULL" if durable else "OFF"
        # Write transactions committed through this object (each one fsync of the WAL at
        # synchronous=FULL): what the group-commit tests count.
        self.commits = 0
        # About how much the commits of ``write_now`` (no checkpoint) added to the WAL since
        # the last durable commit, whose auto-checkpoint keeps the WAL to some 4 MB.
        self.quick_bytes = 0
        self._pool = ThreadConnections(
            self._connect, lambda: StoreError(f"the mailbox index {self.path} is closed")
        )
        # write_now's connections, set up for it once: no waiting for the lock, no fsync,
        # no checkpoint at commit.
        self._quick_pool = ThreadConnections(
            self._connect_quick, lambda: StoreError(f"the mailbox index {self.path} is closed")
        )

    # -- connections and transactions --

    def _connect(self) -> TrackedConnection:
        try:
            return self._open()
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise IndexDamaged(f"the mailbox index {self.path} is damaged ({exc})") from None
            if is_no_space(exc):
                raise IndexNotWritable(
                    f"cannot open the mailbox index {self.path}: no space left on device ({exc})"
                ) from None
            raise StoreUnavailable(f"cannot open the mailbox index {self.path}: {exc}") from None

    def _connect_quick(self) -> TrackedConnection:
        conn = self._connect()
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            if self._synchronous == "FULL":
                conn.execute("PRAGMA synchronous = NORMAL")  # WAL: no fsync at commit
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> TrackedConnection:
        conn = sqlite3.connect(
            self.path,
            timeout=30.0,
            isolation_level=None,  # explicit BEGIN/COMMIT
            check_same_thread=False,  # only so that close() may close it from any thread
            factory=TrackedConnection,
            cached_statements=128,
        )
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            _set_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_frozen(self) -> sqlite3.Connection:
        """A read-only connection that needs no space: ``immutable=1`` reads the database
        file without the -shm file that a WAL database needs (and that a full disk cannot
        grow). Used only while the normal open fails for want of space: that happens when no
        connection has the index open, so its WAL was checkpointed into the file at the last
        close. Not kept: the next call tries the normal open again."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise IndexNotWritable(
                f"the mailbox index {self.path} cannot be created: no space left on device; "
                "free space on that file system"
            )
        uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise IndexNotWritable(
                f"cannot read the mailbox index {self.path} on a full disk: {exc}"
            ) from None
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection; on a full disk where the index cannot be opened for
        writing, a read-only one (writes through it fail with IndexNotWritable)."""
        try:
            return self._pool.get()
        except IndexNotWritable:
            return self._open_frozen()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its start. A disk too
        full for it raises IndexNotWritable (a StoreUnavailable): nothing was changed."""
        conn = self._pool.get()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_no_space(exc):
                raise self._not_writable(exc) from None
            raise StoreUnavailable(
                f"the mailbox index {self.path} is busy ({exc}); try again"
            ) from None
        try:
            yield conn
            conn.execute("COMMIT")
            self.commits += 1
            self.quick_bytes = 0
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if is_no_space(exc) and isinstance(exc, sqlite3.Error):
                raise self._not_writable(exc) from exc
            raise

    @contextlib.contextmanager
    def write_now(self, size: int) -> Iterator[sqlite3.Connection]:
        """A write transaction for a change that may be lost in a crash (it is made again),
        on a caller that must not wait (an event loop): begun only when SQLite's write lock
        is free, else WouldBlock; committed without an fsync and without a checkpoint (a
        later durable commit or checkpoint of any connection syncs it). ``size``: about
        the octets it writes; once such commits have added QUICK_WAL_BYTES since the last
        durable one, WouldBlock too, so the next goes to a thread's durable write, whose
        auto-checkpoint keeps the WAL bounded. Nothing is written when it raises."""
        if self.quick_bytes + size > QUICK_WAL_BYTES:
            raise WouldBlock(f"the mailbox index {self.path} is due for a checkpoint")
        conn = self._quick_pool.get()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise WouldBlock(f"the mailbox index {self.path} is being written") from None
            raise
        try:
            yield conn
            conn.execute("COMMIT")
            self.quick_bytes += size
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def sync_journal(self) -> None:
        """fdatasync the write-ahead log: what a commit at synchronous=FULL does, for the
        commits of ``write_now`` before this call. A WAL that is gone was checkpointed into
        the database, which SQLite synced then."""
        if self._synchronous != "FULL":
            return
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _not_writable(self, exc: BaseException) -> IndexNotWritable:
        return IndexNotWritable(
            f"the mailbox index {self.path} cannot be written: no space left on device ({exc})"
        )

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def migrate(self) -> None:
        try:
            # The usual case takes no write lock, so an index on a full disk still opens.
            with self.read() as conn:
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
                    return
            self._migrate()
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise IndexDamaged(f"the mailbox index {self.path} is damaged ({exc})") from None
            raise

    def _migrate(self) -> None:
        with self.write() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the mailbox index {self.path} has schema version {version}, newer than "
                    f"this pochta understands ({SCHEMA_VERSION}); upgrade pochta"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    def close(self) -> None:
        self._quick_pool.close()
        self._pool.close()

    # -- account-level values --

    @staticmethod
    def last_uidvalidity(conn: sqlite3.Connection) -> int:
        """The highest UIDVALIDITY this account has handed out (0: none yet)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_uidvalidity'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def note_uidvalidity(conn: sqlite3.Connection, value: int) -> None:
        """Remember a UIDVALIDITY read from disk so new ones are above it."""
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('last_uidvalidity', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            (value,),
        )

    @staticmethod
    def recent_claimed(conn: sqlite3.Connection, folder_id: int) -> int:
        """The highest UID of the folder some session has shown as \\Recent (0: none)."""
        row = conn.execute(
            "SELECT value FROM meta WHERE key = ?", (f"recent:{folder_id:d}",)
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def set_recent_claimed(conn: sqlite3.Connection, folder_id: int, uid: int) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            (f"recent:{folder_id:d}", uid),
        )

    @staticmethod
    def quota(conn: sqlite3.Connection) -> tuple[int, int]:
        row = conn.execute("SELECT bytes, messages FROM quota WHERE id = 1").fetchone()
        return int(row[0]), int(row[1])

    @staticmethod
    def add_quota(conn: sqlite3.Connection, octets: int, messages: int) -> None:
        if octets or messages:
            conn.execute(
                "UPDATE quota SET bytes = bytes + ?, messages = messages + ? WHERE id = 1",
                (octets, messages),
            )

    @staticmethod
    def recount_quota(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE quota SET bytes = (SELECT coalesce(sum(size), 0) FROM messages), "
            "messages = (SELECT count(*) FROM messages) WHERE id = 1"
        )

    # -- folders --

    @staticmethod
    def folders(conn: sqlite3.Connection) -> list[FolderRow]:
        rows = conn.execute(f"SELECT {_FOLDER_COLUMNS} FROM folders ORDER BY name").fetchall()  # noqa: S608 - constant columns
        return [_folder(r) for r in rows]

    @staticmethod
    def folder(conn: sqlite3.Connection, name: str) -> FolderRow | None:
        row = conn.execute(
            f"SELECT {_FOLDER_COLUMNS} FROM folders WHERE name = ?",  # noqa: S608 - constant
            (name,),
        ).fetchone()
        return _folder(row) if row else None

    @staticmethod
    def add_folder(
        conn: sqlite3.Connection,
        name: str,
        *,
        uidvalidity: int,
        uidnext: int = 1,
        highestmodseq: int = 1,
        special_use: str | None = None,
        created: int | None = None,
    ) -> FolderRow:
        created = int(time.time()) if created is None else created
        cursor = conn.execute(
            "INSERT INTO folders (name, uidvalidity, uidnext, highestmodseq, special_use, "
            "created, expunged_since) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, uidvalidity, uidnext, highestmodseq, special_use, created, highestmodseq),
        )
        assert cursor.lastrowid is not None
        return FolderRow(
            id=cursor.lastrowid,
            name=name,
            uidvalidity=uidvalidity,
            uidnext=uidnext,
            highestmodseq=highestmodseq,
            special_use=special_use,
            created=created,
            expunged_since=highestmodseq,
            seen_mtime_ns=0,
            uidlist_size=0,
        )

    @staticmethod
    def save_folder(conn: sqlite3.Connection, folder: FolderRow) -> None:
        conn.execute(
            "UPDATE folders SET name = ?, uidnext = ?, highestmodseq = ?, special_use = ?, "
            "expunged_since = ?, seen_mtime_ns = ?, uidlist_size = ? WHERE id = ?",
            (
                folder.name,
                folder.uidnext,
                folder.highestmodseq,
                folder.special_use,
                folder.expunged_since,
                folder.seen_mtime_ns,
                folder.uidlist_size,
                folder.id,
            ),
        )

    @staticmethod
    def remove_folder(conn: sqlite3.Connection, folder_id: int) -> tuple[int, int]:
        """Delete a folder with its messages; returns the (octets, messages) it held."""
        octets, count = conn.execute(
            "SELECT coalesce(sum(size), 0), count(*) FROM messages WHERE folder_id = ?",
            (folder_id,),
        ).fetchone()
        conn.execute("DELETE FROM messages WHERE folder_id = ?", (folder_id,))
        conn.execute("DELETE FROM expunged WHERE folder_id = ?", (folder_id,))
        conn.execute("DELETE FROM file_work WHERE folder_id = ?", (folder_id,))
        conn.execute("DELETE FROM folders WHERE id = ?", (folder_id,))
        conn.execute("DELETE FROM meta WHERE key = ?", (f"recent:{folder_id:d}",))
        return int(octets), int(count)

    @staticmethod
    def folder_stats(conn: sqlite3.Connection) -> dict[int, tuple[int, int, int]]:
        """folder id -> (messages, unseen, octets)."""
        rows = conn.execute(
            "SELECT folder_id, count(*), sum((flags & ?) = 0), coalesce(sum(size), 0) "
            "FROM messages GROUP BY folder_id",
            (SEEN,),
        ).fetchall()
        return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    @staticmethod
    def folder_counts(
        conn: sqlite3.Connection, folder_id: int, above_uid: int
    ) -> tuple[int, int, int, int, int]:
        """(messages, unseen, octets, flagged \\Deleted, UIDs above ``above_uid``) of one
        folder, in one pass over its rows."""
        row = conn.execute(
            "SELECT count(*), coalesce(sum((flags & ?) = 0), 0), coalesce(sum(size), 0), "
            "coalesce(sum((flags & ?) != 0), 0), coalesce(sum(uid > ?), 0) "
            "FROM messages WHERE folder_id = ?",
            (SEEN, DELETED, above_uid, folder_id),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])

    @staticmethod
    def is_subscribed(conn: sqlite3.Connection, name: str) -> bool:
        return (
            conn.execute("SELECT 1 FROM subscriptions WHERE name = ?", (name,)).fetchone()
            is not None
        )

    # -- subscriptions --

    @staticmethod
    def subscriptions(conn: sqlite3.Connection) -> list[str]:
        return [r[0] for r in conn.execute("SELECT name FROM subscriptions ORDER BY name")]

    @staticmethod
    def set_subscribed(conn: sqlite3.Connection, name: str, subscribed: bool) -> bool:
        """Returns whether anything changed."""
        if subscribed:
            cursor = conn.execute(
                "INSERT INTO subscriptions (name) VALUES (?) ON CONFLICT DO NOTHING", (name,)
            )
        else:
            cursor = conn.execute("DELETE FROM subscriptions WHERE name = ?", (name,))
        return cursor.rowcount > 0

    # -- messages --

    @staticmethod
    def messages(conn: sqlite3.Connection, folder_id: int) -> list[MessageRow]:
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id = ? ORDER BY uid",  # noqa: S608
            (folder_id,),
        ).fetchall()
        return [_message(r) for r in rows]

    @staticmethod
    def summaries(
        conn: sqlite3.Connection, folder_id: int, modseq: int = -1
    ) -> list[tuple[int, int, str, float, int, int]]:
        """(uid, flags, keywords, internal_date, size, modseq) of the messages whose MODSEQ
        is above ``modseq`` (all of them by default), ascending UID: only what IMAP's view
        and POP3 need, so a listing of a large folder reads no file names or cached
        structures. One query for both: the MODSEQ index with a sort read 10,000 rows
        faster than the UID order did."""
        return conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM messages "  # noqa: S608
            "WHERE folder_id = ? AND modseq > ? ORDER BY uid",
            (folder_id, modseq),
        ).fetchall()

    @staticmethod
    def message(conn: sqlite3.Connection, folder_id: int, uid: int) -> MessageRow | None:
        row = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id = ? AND uid = ?",  # noqa: S608
            (folder_id, uid),
        ).fetchone()
        return _message(row) if row else None

    @staticmethod
    def message_names(
        conn: sqlite3.Connection, folder_id: int, first_uid: int, end_uid: int
    ) -> list[tuple[int, str, str | None]]:
        """(uid, filename, info) of the messages with first_uid <= uid < end_uid."""
        return [
            (int(r[0]), str(r[1]), r[2])
            for r in conn.execute(
                "SELECT uid, filename, info FROM messages WHERE folder_id = ? AND uid >= ? "
                "AND uid < ?",
                (folder_id, first_uid, end_uid),
            )
        ]

    @staticmethod
    def has_deleted(conn: sqlite3.Connection, folder_id: int, uids: Iterable[int] | None) -> bool:
        """Whether a message of the folder (among ``uids``) is flagged \\Deleted."""
        if uids is None:
            row = conn.execute(
                "SELECT 1 FROM messages WHERE folder_id = ? AND flags & 8 != 0 LIMIT 1",
                (folder_id,),
            ).fetchone()
            return row is not None
        return any(m.flags & DELETED for m in AccountIndex.messages_by_uid(conn, folder_id, uids))

    @staticmethod
    def messages_by_uid(
        conn: sqlite3.Connection, folder_id: int, uids: Iterable[int]
    ) -> list[MessageRow]:
        """The rows among ``uids`` that exist, ascending. The UID list travels as one JSON
        parameter (json_each), so no SQL is built from input."""
        rows = conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id = ? "  # noqa: S608
            "AND uid IN (SELECT value FROM json_each(?)) ORDER BY uid",
            (folder_id, json.dumps(sorted(set(uids)))),
        ).fetchall()
        return [_message(r) for r in rows]

    @staticmethod
    def find_dedupe(conn: sqlite3.Connection, key: str) -> tuple[FolderRow, MessageRow] | None:
        row = conn.execute(
            "SELECT folder_id, uid FROM messages WHERE dedupe_key = ? LIMIT 1", (key,)
        ).fetchone()
        if row is None:
            return None
        folder = conn.execute(
            f"SELECT {_FOLDER_COLUMNS} FROM folders WHERE id = ?",  # noqa: S608
            (row[0],),
        ).fetchone()
        message = AccountIndex.message(conn, int(row[0]), int(row[1]))
        assert message is not None
        return _folder(folder), message

    @staticmethod
    def insert_message(conn: sqlite3.Connection, folder_id: int, m: MessageRow) -> int:
        """Insert a row; returns its rowid (the key of its full-text row)."""
        cursor = conn.execute(
            "INSERT INTO messages (folder_id, uid, filename, info, flags, keywords, "
            "internal_date, size, modseq, dedupe_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                folder_id,
                m.uid,
                m.filename,
                m.info,
                m.flags,
                m.keywords,
                m.internal_date,
                m.size,
                m.modseq,
                m.dedupe_key,
            ),
        )
        rowid = int(cursor.lastrowid or 0)
        AccountIndex.define_keywords(conn, folder_id, m.keywords)
        return rowid

    @staticmethod
    def update_message(conn: sqlite3.Connection, folder_id: int, m: MessageRow) -> None:
        conn.execute(
            "UPDATE messages SET info = ?, flags = ?, keywords = ?, modseq = ? "
            "WHERE folder_id = ? AND uid = ?",
            (m.info, m.flags, m.keywords, m.modseq, folder_id, m.uid),
        )
        AccountIndex.define_keywords(conn, folder_id, m.keywords)

    # -- file work that follows the index lazily --

    @staticmethod
    def add_rename(
        conn: sqlite3.Connection, folder_id: int, filename: str, uid: int, since_ns: int
    ) -> None:
        """The file of message ``uid`` is to get the name its flags give."""
        conn.execute(
            "INSERT INTO file_work (folder_id, filename, uid, info, since_ns) "
            "VALUES (?, ?, ?, NULL, ?) ON CONFLICT (folder_id, filename) DO UPDATE SET "
            "uid = excluded.uid, since_ns = excluded.since_ns",
            (folder_id, filename, uid, since_ns),
        )

    @staticmethod
    def add_unlinks(
        conn: sqlite3.Connection,
        folder_id: int,
        files: Iterable[tuple[str, str | None]],
        since_ns: int,
    ) -> None:
        """The files (base name, info on disk) of expunged messages are to go."""
        conn.executemany(
            "INSERT INTO file_work (folder_id, filename, uid, info, since_ns) "
            "VALUES (?, ?, NULL, ?, ?) ON CONFLICT (folder_id, filename) DO UPDATE SET "
            "uid = NULL, info = excluded.info, since_ns = excluded.since_ns",
            [(folder_id, base, info, since_ns) for base, info in files],
        )

    @staticmethod
    def file_work(
        conn: sqlite3.Connection, folder_id: int
    ) -> list[tuple[str, int | None, str | None, int]]:
        """(filename, uid or None, info, since_ns) of the folder's pending file work."""
        return [
            (str(r[0]), r[1], r[2], int(r[3]))
            for r in conn.execute(
                "SELECT filename, uid, info, since_ns FROM file_work WHERE folder_id = ? "
                "ORDER BY filename",
                (folder_id,),
            )
        ]

    @staticmethod
    def folders_with_file_work(conn: sqlite3.Connection) -> set[int]:
        return {int(r[0]) for r in conn.execute("SELECT DISTINCT folder_id FROM file_work")}

    @staticmethod
    def drop_file_work(conn: sqlite3.Connection, folder_id: int, filenames: Iterable[str]) -> None:
        conn.executemany(
            "DELETE FROM file_work WHERE folder_id = ? AND filename = ?",
            [(folder_id, name) for name in filenames],
        )

    # -- the folder's keywords --

    @staticmethod
    def define_keywords(conn: sqlite3.Connection, folder_id: int, keywords: str) -> None:
        """Add the keywords of a space-separated list to the folder's keywords (kept when
        no message carries them any more)."""
        names = keywords.split()
        if names:
            conn.executemany(
                "INSERT INTO keywords (folder_id, keyword) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(folder_id, name) for name in names],
            )

    @staticmethod
    def folder_keywords(conn: sqlite3.Connection, folder_id: int) -> list[str]:
        """Every keyword ever set in the folder, in case-insensitive order."""
        return [
            str(r[0])
            for r in conn.execute(
                "SELECT keyword FROM keywords WHERE folder_id = ? ORDER BY keyword", (folder_id,)
            )
        ]

    @staticmethod
    def delete_messages(
        conn: sqlite3.Connection, folder: FolderRow, uids: Sequence[int], modseq: int
    ) -> None:
        """Remove rows and record them in `expunged` with the MODSEQ of the expunge
        (RFC 7162 §3.2.5.2: VANISHED (EARLIER) answers from this table). The table keeps
        the folder's last EXPUNGED_HISTORY MODSEQs: when it holds more, the older half goes
        and ``folder.expunged_since`` (saved by the caller) says from where it is complete;
        a client asking from before that is answered from the UIDs it knows."""
        folder_id = folder.id
        conn.executemany(
            "DELETE FROM messages WHERE folder_id = ? AND uid = ?",
            [(folder_id, uid) for uid in uids],
        )
        conn.executemany(
            "INSERT INTO expunged (folder_id, uid, modseq) VALUES (?, ?, ?) "
            "ON CONFLICT (folder_id, uid) DO UPDATE SET modseq = excluded.modseq",
            [(folder_id, uid, modseq) for uid in uids],
        )
        if modseq - folder.expunged_since > EXPUNGED_HISTORY:
            cut = modseq - EXPUNGED_HISTORY // 2
            conn.execute(
                "DELETE FROM expunged WHERE folder_id = ? AND modseq <= ?", (folder_id, cut)
            )
            folder.expunged_since = cut

    @staticmethod
    def expunged_since(conn: sqlite3.Connection, folder_id: int, modseq: int) -> list[int]:
        """UIDs expunged with a MODSEQ above ``modseq`` (for QRESYNC), ascending. Sorted
        here: with ORDER BY uid SQLite walks the primary key, every expunge the folder ever
        had, rather than the few above ``modseq`` in expunged_by_modseq."""
        return sorted(
            int(r[0])
            for r in conn.execute(
                "SELECT uid FROM expunged WHERE folder_id = ? AND modseq > ?",
                (folder_id, modseq),
            )
        )

    # -- full-text search --

    @staticmethod
    def unindexed(conn: sqlite3.Connection, folder_id: int) -> list[tuple[int, MessageRow]]:
        """(rowid, row) of the folder's messages that have no full-text row yet. FTS5 keeps
        one row per document in its shadow table fts_docsize: looking there is ~25x faster
        than joining the virtual table."""
        rows = conn.execute(
            f"SELECT rowid, {_MESSAGE_COLUMNS} FROM messages "  # noqa: S608
            "WHERE folder_id = ? AND rowid NOT IN (SELECT id FROM fts_docsize) ORDER BY uid",
            (folder_id,),
        ).fetchall()
        return [(int(r[0]), _message(r[1:])) for r in rows]

    @staticmethod
    def rowid(conn: sqlite3.Connection, folder_id: int, uid: int) -> int | None:
        row = conn.execute(
            "SELECT rowid FROM messages WHERE folder_id = ? AND uid = ?", (folder_id, uid)
        ).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def needs_text(conn: sqlite3.Connection, rowid: int) -> bool:
        """The message row exists and has no full-text row yet."""
        row = conn.execute(
            "SELECT 1 FROM messages WHERE rowid = ? AND rowid NOT IN "
            "(SELECT id FROM fts_docsize WHERE id = ?)",
            (rowid, rowid),
        ).fetchone()
        return row is not None

    @staticmethod
    def put_text(conn: sqlite3.Connection, rowid: int, headers: str, body: str) -> None:
        conn.execute("DELETE FROM fts WHERE rowid = ?", (rowid,))
        conn.execute(
            "INSERT INTO fts (rowid, headers, body) VALUES (?, ?, ?)", (rowid, headers, body)
        )

    @staticmethod
    def copy_text(conn: sqlite3.Connection, from_rowid: int, to_rowid: int) -> None:
        conn.execute(
            "INSERT INTO fts (rowid, headers, body) SELECT ?, headers, body FROM fts "
            "WHERE rowid = ?",
            (to_rowid, from_rowid),
        )

    @staticmethod
    def search_text(
        conn: sqlite3.Connection, folder_id: int, needle: str, *, headers: bool, body: bool
    ) -> set[int]:
        """UIDs whose casefolded headers and/or body contain ``needle`` (casefolded by the
        caller). Three characters and more go through the trigram index."""
        columns = [c for c, on in (("headers", headers), ("body", body)) if on]
        if not columns or not needle:
            return {
                int(r[0])
                for r in conn.execute("SELECT uid FROM messages WHERE folder_id = ?", (folder_id,))
            }
        if len(needle) >= 3:
            phrase = '"' + needle.replace('"', '""') + '"'
            query = phrase if len(columns) == 2 else f"{columns[0]} : {phrase}"
            # The index answers first; a join lets SQLite probe fts once per message instead.
            rows = conn.execute(
                "SELECT uid FROM messages WHERE folder_id = ? AND rowid IN "
                "(SELECT rowid FROM fts WHERE fts MATCH ?)",
                (folder_id, query),
            )
        else:
            test = " OR ".join(f"instr(fts.{c}, ?) > 0" for c in columns)
            rows = conn.execute(
                "SELECT m.uid FROM fts JOIN messages m ON m.rowid = fts.rowid "  # noqa: S608
                f"WHERE m.folder_id = ? AND ({test})",
                (folder_id, *([needle] * len(columns))),
            )
        return {int(r[0]) for r in rows}

    # -- cached IMAP structure (ENVELOPE, BODYSTRUCTURE) --

    @staticmethod
    def cached_structures(
        conn: sqlite3.Connection, folder_id: int, uids: Iterable[int]
    ) -> dict[int, bytes]:
        rows = conn.execute(
            "SELECT uid, bodystructure FROM messages WHERE folder_id = ? AND "
            "bodystructure IS NOT NULL AND uid IN (SELECT value FROM json_each(?))",
            (folder_id, json.dumps(sorted(set(uids)))),
        ).fetchall()
        return {int(r[0]): bytes(r[1]) for r in rows}

    @staticmethod
    def cache_structures(conn: sqlite3.Connection, folder_id: int, items: dict[int, bytes]) -> None:
        conn.executemany(
            "UPDATE messages SET bodystructure = ? WHERE folder_id = ? AND uid = ?",
            [(blob, folder_id, uid) for uid, blob in items.items()],
        )

    @staticmethod
    def wipe(conn: sqlite3.Connection) -> None:
        """Empty every table but meta (reindex rebuilds them)."""
        for table in ("messages", "expunged", "folders", "subscriptions", "fts", "file_work"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - constant table names
        conn.execute("UPDATE quota SET bytes = 0, messages = 0 WHERE id = 1")
