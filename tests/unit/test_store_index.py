"""The per-account SQLite index on its own: schema, counters, UID lists, expunge records,
and the uidlist file format it leans on."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pochta.store.base import WouldBlock
from pochta.store.index import (
    DELETED,
    QUICK_WAL_BYTES,
    SCHEMA_VERSION,
    SEEN,
    AccountIndex,
    IndexDamaged,
    MessageRow,
)
from pochta.store.maildir import read_uidlist, uidlist_header, uidlist_line
from pochta.store.quota import QuotaUsage, evaluate_quota, format_bytes


@pytest.fixture
def index(tmp_path: Path) -> Iterator[AccountIndex]:
    idx = AccountIndex(tmp_path / "pochta-index.sqlite3")
    idx.migrate()
    yield idx
    idx.close()


def row(uid: int, *, size: int = 100, flags: int = 0, key: str | None = None) -> MessageRow:
    return MessageRow(
        uid=uid,
        filename=f"{uid}.M1P1Q{uid}.host,S={size},W={size}",
        info=None,
        flags=flags,
        keywords="",
        internal_date=1e9,
        size=size,
        modseq=uid + 1,
        dedupe_key=key,
    )


def test_schema_is_wal_and_versioned(index: AccountIndex) -> None:
    conn = index.conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    index.migrate()  # idempotent
    assert AccountIndex.quota(conn) == (0, 0)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}").connection.close()
    idx = AccountIndex(path)
    with pytest.raises(Exception, match="newer than this pochta"):
        idx.migrate()
    idx.close()


def test_damaged_file_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    idx = AccountIndex(path)
    with pytest.raises(IndexDamaged):
        idx.migrate()
    idx.close()


def test_folders_messages_and_counters(index: AccountIndex) -> None:
    with index.write() as conn:
        inbox = AccountIndex.add_folder(conn, "INBOX", uidvalidity=7)
        trash = AccountIndex.add_folder(conn, "Trash", uidvalidity=8, special_use="\\Trash")
        for uid in (1, 2, 3):
            AccountIndex.insert_message(conn, inbox.id, row(uid, flags=SEEN if uid == 1 else 0))
            AccountIndex.add_quota(conn, 100, 1)
        AccountIndex.insert_message(conn, trash.id, row(1, size=50, key="q1 bob"))
        AccountIndex.add_quota(conn, 50, 1)
    conn = index.conn()
    assert [f.name for f in AccountIndex.folders(conn)] == ["INBOX", "Trash"]
    assert AccountIndex.folder_stats(conn) == {inbox.id: (3, 2, 300), trash.id: (1, 1, 50)}
    assert AccountIndex.quota(conn) == (350, 4)
    assert [m.uid for m in AccountIndex.messages_by_uid(conn, inbox.id, [3, 9, 1, 3])] == [1, 3]
    found = AccountIndex.find_dedupe(conn, "q1 bob")
    assert found is not None
    assert (found[0].name, found[1].uid) == ("Trash", 1)
    assert AccountIndex.find_dedupe(conn, "nope") is None
    with pytest.raises(sqlite3.IntegrityError), index.write() as c:
        AccountIndex.insert_message(c, inbox.id, row(2))  # (folder, uid) is unique
    with index.write() as c:
        AccountIndex.recount_quota(c)
    assert AccountIndex.quota(conn) == (350, 4)


def test_delete_records_expunged_with_modseq(index: AccountIndex) -> None:
    with index.write() as conn:
        inbox = AccountIndex.add_folder(conn, "INBOX", uidvalidity=7)
        for uid in (1, 2, 3, 4):
            AccountIndex.insert_message(conn, inbox.id, row(uid, flags=DELETED))
        modseq = inbox.next_modseq()
        AccountIndex.delete_messages(conn, inbox, [2, 3], modseq)
        later = inbox.next_modseq()
        AccountIndex.delete_messages(conn, inbox, [4], later)
        AccountIndex.save_folder(conn, inbox)
    conn = index.conn()
    assert [m.uid for m in AccountIndex.messages(conn, inbox.id)] == [1]
    assert AccountIndex.expunged_since(conn, inbox.id, 0) == [2, 3, 4]
    assert AccountIndex.expunged_since(conn, inbox.id, modseq) == [4]
    folder = AccountIndex.folder(conn, "INBOX")
    assert folder is not None
    assert folder.highestmodseq == later == 3


def test_remove_folder_returns_what_it_held(index: AccountIndex) -> None:
    with index.write() as conn:
        f = AccountIndex.add_folder(conn, "Old", uidvalidity=1)
        AccountIndex.insert_message(conn, f.id, row(1, size=10))
        AccountIndex.insert_message(conn, f.id, row(2, size=20))
        assert AccountIndex.remove_folder(conn, f.id) == (30, 2)
        assert AccountIndex.folder(conn, "Old") is None


def test_uidvalidity_memory_only_grows(index: AccountIndex) -> None:
    with index.write() as conn:
        assert AccountIndex.last_uidvalidity(conn) == 0
        AccountIndex.note_uidvalidity(conn, 500)
        AccountIndex.note_uidvalidity(conn, 100)
        assert AccountIndex.last_uidvalidity(conn) == 500


def test_subscriptions(index: AccountIndex) -> None:
    with index.write() as conn:
        assert AccountIndex.set_subscribed(conn, "A", True)
        assert not AccountIndex.set_subscribed(conn, "A", True)
        assert AccountIndex.set_subscribed(conn, "B", True)
        assert AccountIndex.set_subscribed(conn, "A", False)
        assert AccountIndex.subscriptions(conn) == ["B"]


def test_write_rolls_back_on_error(index: AccountIndex) -> None:
    def failing_change() -> None:
        with index.write() as conn:
            AccountIndex.add_folder(conn, "INBOX", uidvalidity=1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_change()
    assert AccountIndex.folders(index.conn()) == []


def test_closed_index_refuses(tmp_path: Path) -> None:
    idx = AccountIndex(tmp_path / "i.sqlite3")
    idx.migrate()
    idx.close()
    with pytest.raises(Exception, match="closed"):
        idx.conn()


# -- the uidlist file (dovecot-uidlist v3 format) --


def test_uidlist_round_trip_and_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "pochta-uidlist"
    text = (
        uidlist_header(1234, 1)
        + uidlist_line(1, "100.M1P1Q1.h,S=1,W=1", None)
        + uidlist_line(2, "100.M1P1Q2.h,S=1,W=1", "Q7 bob@example.test")
        + uidlist_line(9, "100.M1P1Q1.h,S=1,W=1", None)  # a later line wins
        + "10 :100.M1P1Q3.h,S"  # torn by a crash: no newline
    )
    path.write_text(text)
    parsed = read_uidlist(path)
    assert parsed is not None
    assert parsed.uidvalidity == 1234
    assert parsed.uidnext == 10
    assert parsed.entries == {
        "100.M1P1Q1.h,S=1,W=1": (9, None),
        "100.M1P1Q2.h,S=1,W=1": (2, "Q7 bob@example.test"),
    }
    assert read_uidlist(tmp_path / "missing") is None
    (tmp_path / "bad").write_text("garbage header\n")
    assert read_uidlist(tmp_path / "bad") is None


# -- quota decisions --


@pytest.mark.parametrize(
    ("used", "limit", "incoming", "ok", "permanent"),
    [
        (0, 0, 10**12, True, False),  # unlimited
        (900, 1000, 100, True, False),  # exactly full
        (901, 1000, 100, False, False),  # 452 4.2.2
        (0, 1000, 1001, False, True),  # 552 5.2.2: can never fit
    ],
)
def test_evaluate_quota(used: int, limit: int, incoming: int, ok: bool, permanent: bool) -> None:
    check = evaluate_quota(
        QuotaUsage(used, 1), limit_bytes=limit, limit_messages=0, incoming_size=incoming
    )
    assert (check.ok, check.permanent) == (ok, permanent)
    assert bool(check.reason) != ok


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536 * 1024, 3 << 30)] == [
        "0B",
        "1023B",
        "1.0K",
        "1.5M",
        "3.0G",
    ]


def _open_new_index(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()  # every process at once, on a file none of them has set up yet
    try:
        index = AccountIndex(Path(path))
        index.migrate()
        index.conn().execute("SELECT 1")
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(repr(exc))


def test_processes_opening_a_new_index_at_once_all_get_it(tmp_path: Path) -> None:
    """The first delivery and the first login of an account, in two processes, open its new
    index together; neither may fail with "database is locked" (the switch to WAL)."""
    context = multiprocessing.get_context("spawn")
    failures = []
    for round_ in range(10):
        path = str(tmp_path / f"index-{round_}.sqlite3")
        barrier, results = context.Barrier(4), context.Queue()
        workers = [
            context.Process(target=_open_new_index, args=(path, barrier, results)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        failures += [r for r in (results.get(timeout=5) for _ in workers) if r != "ok"]
    assert failures == []


def test_folder_keywords_stay_when_no_message_carries_them(index: AccountIndex) -> None:
    """Issue 12 point 6: FLAGS lists every keyword ever set in the folder (as Dovecot)."""
    with index.write() as conn:
        inbox = AccountIndex.add_folder(conn, "INBOX", uidvalidity=1)
        other = AccountIndex.add_folder(conn, "Other", uidvalidity=2)
        m = row(1)
        m.keywords = "$Label1 $project"
        AccountIndex.insert_message(conn, inbox.id, m)
        m.keywords = "$Label1 $Project $Zeta"  # $Project: the same keyword, other spelling
        AccountIndex.update_message(conn, inbox.id, m)
        m.keywords = ""
        AccountIndex.update_message(conn, inbox.id, m)
    with index.read() as conn:
        assert AccountIndex.folder_keywords(conn, inbox.id) == ["$Label1", "$project", "$Zeta"]
        assert AccountIndex.folder_keywords(conn, other.id) == []
    with index.write() as conn:
        AccountIndex.remove_folder(conn, inbox.id)
    with index.read() as conn:
        assert conn.execute("SELECT count(*) FROM keywords").fetchone()[0] == 0


def _old_index(path: Path, version: int, *, uidnext: int) -> sqlite3.Connection:
    """An index made by a pochta of schema ``version``, with an INBOX (id 1)."""
    from pochta.store import index as index_module

    conn = sqlite3.connect(path, isolation_level=None)
    for step in index_module._MIGRATIONS[:version]:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version:d}")
    conn.execute(
        "INSERT INTO folders (id, name, uidvalidity, uidnext, highestmodseq, created) "
        "VALUES (1, 'INBOX', 1, ?, ?, 0)",
        (uidnext, uidnext),
    )
    return conn


def test_upgrade_fills_folder_keywords_from_the_messages(tmp_path: Path) -> None:
    """An index of schema version 2 gets the keywords its messages carry."""
    path = tmp_path / "old.sqlite3"
    conn = _old_index(path, 2, uidnext=3)
    for uid, keywords in ((1, "$A $b"), (2, "")):
        conn.execute(
            "INSERT INTO messages (folder_id, uid, filename, keywords, internal_date, size, "
            "modseq) VALUES (1, ?, ?, ?, 0, 1, 1)",
            (uid, f"f{uid}", keywords),
        )
    conn.close()
    idx = AccountIndex(path)
    try:
        idx.migrate()
        with idx.read() as c:
            assert AccountIndex.folder_keywords(c, 1) == ["$A", "$b"]
    finally:
        idx.close()


def test_expunges_since_a_modseq_come_from_their_index(tmp_path: Path) -> None:
    """The change check after each command asks for the expunges above the session's MODSEQ:
    SQLite reads them from expunged_by_modseq, not every expunge the folder ever had; an
    index of schema version 4 gets that index."""
    path = tmp_path / "v4.sqlite3"
    conn = _old_index(path, 4, uidnext=1001)
    conn.executemany(
        "INSERT INTO expunged (folder_id, uid, modseq) VALUES (1, ?, ?)",
        [(uid, 1001 - uid) for uid in range(1, 1001)],  # the highest UIDs went first
    )
    conn.close()
    idx = AccountIndex(path)
    try:
        idx.migrate()
        with idx.read() as c:
            steps = 0

            def step() -> int:
                nonlocal steps
                steps += 1
                return 0

            c.set_progress_handler(step, 1)  # counts SQLite's VM instructions
            assert AccountIndex.expunged_since(c, 1, 997) == [1, 2, 3]
            assert AccountIndex.expunged_since(c, 1, 1000) == []
            c.set_progress_handler(None, 1)
        # A walk over the 1,000 expunges (the plan ORDER BY uid chose) took 8,026; this 34.
        assert steps < 300
        with idx.read() as c:
            indexes = {
                r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        assert {"expunged_by_modseq", "messages_deleted"} <= indexes
    finally:
        idx.close()


def test_a_write_now_never_waits_and_leaves_the_connection_as_it_was(
    index: AccountIndex,
) -> None:
    """``write_now`` (a change that may be lost in a crash, made on an event loop): another
    connection holding the write lock makes it WouldBlock at once rather than wait; after
    it, the connection waits, syncs and checkpoints as before."""
    with index.write() as conn:
        folder = AccountIndex.add_folder(conn, "INBOX", uidvalidity=1)
    other = sqlite3.connect(index.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(WouldBlock), index.write_now(4096) as conn:
        raise AssertionError("began while another connection writes")
    other.execute("ROLLBACK")
    other.close()
    with index.write_now(4096) as conn:
        AccountIndex.set_recent_claimed(conn, folder.id, 7)
    conn = index.conn()
    assert AccountIndex.recent_claimed(conn, folder.id) == 7
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000


def test_writes_without_a_checkpoint_give_way_to_a_durable_one(index: AccountIndex) -> None:
    """Once ``write_now`` commits (no checkpoint) have added QUICK_WAL_BYTES to the WAL, the
    next one says WouldBlock, so the change goes to a durable write, whose auto-checkpoint
    keeps the WAL bounded; after that durable write, quick ones go on."""
    with index.write() as conn:
        folder = AccountIndex.add_folder(conn, "INBOX", uidvalidity=1)
    blob = b"x" * 100_000
    written = 0
    for uid in range(1, 200):
        try:
            with index.write_now(len(blob)) as conn:
                AccountIndex.set_recent_claimed(conn, folder.id, uid)
        except WouldBlock:
            break
        written += len(blob)
    assert QUICK_WAL_BYTES - len(blob) < written <= QUICK_WAL_BYTES
    with index.write() as conn:
        AccountIndex.set_recent_claimed(conn, folder.id, 1000)
    with index.write_now(len(blob)) as conn:
        AccountIndex.set_recent_claimed(conn, folder.id, 1001)
    assert AccountIndex.recent_claimed(index.conn(), folder.id) == 1001
