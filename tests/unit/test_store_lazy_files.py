"""Flags and expunges are index metadata: a STORE or EXPUNGE commits its rows (one commit
shared by concurrent callers, no directory fsync) and the Maildir file names follow later
(issue 18 point 1). The traps: a rescan must not read back stale names, a crash leaves the
work in the index, another program's rename is judged by which change is newer, and tools
see a flushed state."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.store import INBOX, FlagMode, NoSuchMessage
from pochta.store import maildir as maildir_module
from pochta.store.index import AccountIndex
from pochta.store.maildir import MaildirStore

ADDRESS = "bob@example.test"
HOST = "mail.example.test"
SEEN = frozenset({"\\Seen"})


def msg(n: int) -> bytes:
    return b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n)


def files(store: MaildirStore, folder_dir: str = "") -> dict[str, str]:
    """base name -> "new" or the info after ":" of every message file."""
    path = store.account_root(ADDRESS) / folder_dir if folder_dir else store.account_root(ADDRESS)
    found: dict[str, str] = {}
    for sub in ("new", "cur"):
        for f in (path / sub).iterdir():
            base, _, info = f.name.partition(":")
            found[base] = "new" if sub == "new" else info
    return found


class Counts:
    """Commits of the account index and directory fsyncs, counted where the store calls
    them (works on any version of the store: it wraps AccountIndex.write and fsync_dir)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commits = 0
        self.dir_fsyncs = 0
        real_write = AccountIndex.write
        real_fsync_dir = maildir_module.fsync_dir

        @contextlib.contextmanager
        def write(index: AccountIndex) -> Iterator[object]:
            with real_write(index) as conn:
                yield conn
            self.commits += 1

        def fsync_dir(path: Path | str) -> None:
            self.dir_fsyncs += 1
            real_fsync_dir(path)

        monkeypatch.setattr(AccountIndex, "write", write)
        monkeypatch.setattr(maildir_module, "fsync_dir", fsync_dir)

    def reset(self) -> None:
        self.commits = self.dir_fsyncs = 0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MaildirStore]:
    s = MaildirStore(tmp_path / "mail", hostname=HOST)
    yield s
    s.close()


def test_one_store_is_one_commit_and_no_directory_fsync(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    counts = Counts(monkeypatch)
    store.store_flags(ADDRESS, INBOX, [1, 2], FlagMode.ADD, SEEN)
    assert (counts.commits, counts.dir_fsyncs) == (1, 0)
    counts.reset()
    store.store_flags(ADDRESS, INBOX, [3], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert store.expunge(ADDRESS, INBOX) == [3]
    assert (counts.commits, counts.dir_fsyncs) == (2, 0)


def test_concurrent_stores_share_one_commit(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N sessions of one account STORE at once: one transaction, one commit fsync, and no
    directory fsync (flat combining, as deliveries do)."""
    n = 6
    for i in range(n):
        store.deliver(ADDRESS, msg(i))
    account = store._accounts[ADDRESS]
    counts = Counts(monkeypatch)
    errors: list[BaseException] = []

    def one(uid: int) -> None:
        try:
            store.store_flags(ADDRESS, INBOX, [uid], FlagMode.ADD, SEEN)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(uid,)) for uid in range(1, n + 1)]
    with account.write_lock:  # another writer holds the account: the STOREs queue up
        for t in threads:
            t.start()
        for _ in range(1000):
            if len(account.pending) == n:
                break
            time.sleep(0.01)
    for t in threads:
        t.join()
    assert errors == []
    assert (counts.commits, counts.dir_fsyncs) == (1, 0)
    assert all(m.flags == SEEN for m in store.list_messages(ADDRESS, INBOX))
    # Each STORE still got its own MODSEQ (RFC 7162 §3.1.1: one per operation).
    assert len({m.modseq for m in store.list_messages(ADDRESS, INBOX)}) == n


def test_names_follow_at_flush_with_one_directory_fsync(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    store.store_flags(ADDRESS, INBOX, [1, 2], FlagMode.ADD, SEEN)
    store.store_flags(ADDRESS, INBOX, [3], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.expunge(ADDRESS, INBOX)
    assert sorted(files(store).values()) == ["new", "new", "new"]  # not yet
    counts = Counts(monkeypatch)
    store.flush(ADDRESS)
    assert sorted(files(store).values()) == ["2,S", "2,S"]
    # One commit; new/ (renames out, the unlink) and cur/ (renames in) fsynced once each.
    assert (counts.commits, counts.dir_fsyncs) == (1, 2)
    # The message is read from wherever its file is, before and after.
    assert store.fetch_message(ADDRESS, INBOX, 1).startswith(b"Subject: message 0")


def test_quiet_account_is_flushed_by_the_store(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "mail", hostname=HOST, flush_delay_seconds=0.01)
    try:
        store.deliver(ADDRESS, msg(1))
        store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, SEEN)
        for _ in range(1000):
            if list(files(store).values()) == ["2,S"]:
                break
            time.sleep(0.01)
        assert list(files(store).values()) == ["2,S"]
    finally:
        store.close()


def test_close_flushes(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "mail", hostname=HOST, flush_delay_seconds=None)
    store.deliver(ADDRESS, msg(1))
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, SEEN)
    store.close()
    assert list(files(store).values()) == ["2,S"]


def test_crash_with_pending_work_is_finished_at_open(tmp_path: Path) -> None:
    """(b) The pending renames and unlinks are in the index: a process that stops without
    flushing leaves them there, and the next opening does them."""
    first = MaildirStore(tmp_path / "mail", hostname=HOST, flush_delay_seconds=None)
    for i in range(3):
        first.deliver(ADDRESS, msg(i))
    first.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, frozenset({"\\Flagged", "$Work"}))
    first.store_flags(ADDRESS, INBOX, [2], FlagMode.ADD, frozenset({"\\Deleted"}))
    first.expunge(ADDRESS, INBOX)
    assert sorted(files(first).values()) == ["new", "new", "new"]
    # `first` is dropped without close (a crash); a new process opens the account.
    second = MaildirStore(tmp_path / "mail", hostname=HOST, flush_delay_seconds=None)
    try:
        got = {m.uid: (m.flags, m.keywords) for m in second.list_messages(ADDRESS, INBOX)}
        assert got == {
            1: (frozenset({"\\Flagged"}), frozenset({"$Work"})),
            3: (frozenset(), frozenset()),
        }
        assert sorted(files(second).values()) == ["2,F", "new"]
        assert second.quota_usage(ADDRESS).messages == 2
    finally:
        second.close()


def test_rescan_does_not_read_back_stale_names(store: MaildirStore) -> None:
    """(a) A rescan (the folder changed on disk: a file dropped in by hand) must neither
    take the old flags from a name not renamed yet nor adopt a file whose unlink is
    pending."""
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, SEEN)
    store.store_flags(ADDRESS, INBOX, [2], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.expunge(ADDRESS, INBOX)
    new = store.account_root(ADDRESS) / "new"
    (new / "1700000000.M1P1Q1.elsewhere").write_bytes(b"Subject: by hand\n\nhi\n")
    report = store.sync_folder(ADDRESS, INBOX)
    assert (report.adopted, report.vanished, report.flags_changed) == (1, 0, 0)
    got = {m.uid: m.flags for m in store.list_messages(ADDRESS, INBOX)}
    assert got == {1: SEEN, 3: frozenset(), 4: frozenset()}
    assert sorted(files(store).values()) == ["2,S", "new", "new"]


def _by_base(store: MaildirStore, uid: int) -> str:
    return Path(store.message_path(ADDRESS, INBOX, uid)).name.partition(":")[0]


def test_outside_rename_after_our_store_wins(store: MaildirStore) -> None:
    """(c) mutt renames the file after our STORE and before the flush: its change is the
    newer one, so its flags win; the file is never lost."""
    store.deliver(ADDRESS, msg(1))
    base = _by_base(store, 1)
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, SEEN)  # pending: new/ -> :2,S
    root = store.account_root(ADDRESS)
    time.sleep(0.05)  # the other program's rename is later than our commit on the file clock
    os.rename(root / "new" / base, root / "cur" / f"{base}:2,F")
    store.flush(ADDRESS)
    assert files(store) == {base: "2,F"}
    (m,) = store.list_messages(ADDRESS, INBOX)
    assert m.flags == frozenset({"\\Flagged"})


def test_outside_rename_before_our_store_loses(store: MaildirStore) -> None:
    """(c) The other program renamed the file before our STORE, but we had not seen it yet
    (no rescan between): our change is newer, our flags go on its name, and the letters
    that are not IMAP flags (P, Dovecot keyword letters) stay."""
    store.deliver(ADDRESS, msg(1))
    base = _by_base(store, 1)
    root = store.account_root(ADDRESS)
    before = {sub: os.stat(root / sub).st_mtime_ns for sub in ("new", "cur")}
    os.rename(root / "new" / base, root / "cur" / f"{base}:2,FP")
    for sub, mtime in before.items():  # hide the rename from the rescan check
        os.utime(root / sub, ns=(mtime, mtime))
    time.sleep(0.05)
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, SEEN)
    store.flush(ADDRESS)
    assert files(store) == {base: "2,PS"}
    (m,) = store.list_messages(ADDRESS, INBOX)
    assert m.flags == SEEN
    assert store.fetch_message(ADDRESS, INBOX, 1).startswith(b"Subject: message 1")


def test_outside_change_after_expunge_keeps_the_file(store: MaildirStore) -> None:
    """(c) for an EXPUNGE: another program renamed the file after our expunge: the file
    stays and comes back as a new message (never lost); before it, it is removed."""
    store.deliver(ADDRESS, msg(1))
    base = _by_base(store, 1)
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.expunge(ADDRESS, INBOX)
    root = store.account_root(ADDRESS)
    time.sleep(0.05)
    os.rename(root / "new" / base, root / "cur" / f"{base}:2,F")
    store.flush(ADDRESS)
    assert files(store) == {base: "2,F"}
    (m,) = store.list_messages(ADDRESS, INBOX)
    assert (m.uid, m.flags) == (2, frozenset({"\\Flagged"}))


def test_copy_and_move_see_the_flushed_names(store: MaildirStore) -> None:
    store.deliver(ADDRESS, msg(1))
    store.deliver(ADDRESS, msg(2))
    store.store_flags(ADDRESS, INBOX, [1, 2], FlagMode.ADD, SEEN)
    store.copy(ADDRESS, INBOX, [1], "Archive")
    store.move(ADDRESS, INBOX, [2], "Archive")
    store.flush(ADDRESS)
    assert sorted(files(store, ".Archive").values()) == ["2,S", "2,S"]
    assert list(files(store).values()) == ["2,S"]
    archived = store.list_messages(ADDRESS, "Archive")
    assert [m.flags for m in archived] == [SEEN, SEEN]
    assert store.fetch_message(ADDRESS, "Archive", archived[1].uid).startswith(
        b"Subject: message 2"
    )


def test_reindex_keeps_flags_still_owed_to_the_names(store: MaildirStore) -> None:
    """(d) reindex reads the files: it flushes first, so flags stored but not renamed yet
    are not lost."""
    store.deliver(ADDRESS, msg(1))
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, frozenset({"\\Answered"}))
    other = MaildirStore(store.mail_dir, hostname=HOST, flush_delay_seconds=None)
    try:
        other.reindex(ADDRESS)
    finally:
        other.close()
    reopened = MaildirStore(store.mail_dir, hostname=HOST, flush_delay_seconds=None)
    try:
        (m,) = reopened.list_messages(ADDRESS, INBOX)
        assert m.flags == frozenset({"\\Answered"})
    finally:
        reopened.close()


# -- reads from memory (issue 18 point 2) --


def test_nothing_changed_is_answered_without_an_index_read(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-command check of an IMAP session (``folder_changes`` quick, or
    ``changes_if_cached``) opens no index transaction when nothing changed; a commit by
    another process, a STORE of ours, or a file dropped in by hand sends it to the disk."""
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    first = store.folder_changes(ADDRESS, INBOX, 0)
    reads = 0
    real_read = AccountIndex.read

    @contextlib.contextmanager
    def read(index: AccountIndex) -> Iterator[object]:
        nonlocal reads
        reads += 1
        with real_read(index) as conn:
            yield conn

    monkeypatch.setattr(AccountIndex, "read", read)
    top = first.highestmodseq
    again = store.folder_changes(ADDRESS, INBOX, top, quick=True)
    assert reads == 0
    assert (again.changed, again.vanished, again.uidnext, again.highestmodseq) == ((), (), 4, top)
    assert store.changes_if_cached(ADDRESS, INBOX, top) == again
    # Another process (another store on the same files) commits a STORE.
    other = MaildirStore(store.mail_dir, hostname=HOST, flush_delay_seconds=None)
    try:
        other.store_flags(ADDRESS, INBOX, [2], FlagMode.ADD, SEEN)
    finally:
        other.close()
    assert store.changes_if_cached(ADDRESS, INBOX, top) is None
    fresh = store.folder_changes(ADDRESS, INBOX, top, quick=True)
    assert [(m.uid, m.flags) for m in fresh.changed] == [(2, SEEN)]
    top = fresh.highestmodseq
    assert store.changes_if_cached(ADDRESS, INBOX, top) is not None
    # A STORE of this process.
    store.store_flags(ADDRESS, INBOX, [3], FlagMode.ADD, SEEN)
    assert store.changes_if_cached(ADDRESS, INBOX, top) is None
    top = store.folder_changes(ADDRESS, INBOX, top).highestmodseq
    assert store.changes_if_cached(ADDRESS, INBOX, top) is not None
    # Another program drops a file into new/.
    (store.account_root(ADDRESS) / "new" / "1700000000.M1P1Q1.elsewhere").write_bytes(
        b"Subject: by hand\n\nhi\n"
    )
    assert store.changes_if_cached(ADDRESS, INBOX, top) is None
    assert [m.uid for m in store.folder_changes(ADDRESS, INBOX, top).changed] == [4]
    # Not open in this process, or a folder never read: the caller goes to a thread.
    assert store.changes_if_cached("nobody@example.test", INBOX, 1) is None
    assert store.changes_if_cached(ADDRESS, "Archive", 1) is None


def test_recent_claim_writes_only_when_there_is_something_to_claim(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each IMAP command after new mail asks for the \\Recent claim; when an earlier session
    has claimed up to there already, no write transaction (no commit fsync) is made."""
    for i in range(2):
        store.deliver(ADDRESS, msg(i))
    counts = Counts(monkeypatch)
    assert store.claim_recent(ADDRESS, INBOX, 2, claim=True) == 0
    assert counts.commits == 1
    counts.reset()
    assert store.claim_recent(ADDRESS, INBOX, 2, claim=True) == 2
    assert store.claim_recent(ADDRESS, INBOX, 1, claim=True) == 2
    assert counts.commits == 0
    store.deliver(ADDRESS, msg(3))
    counts.reset()
    assert store.claim_recent(ADDRESS, INBOX, 3, claim=True) == 2
    assert counts.commits == 1


def test_fetch_opens_known_files_without_an_index_read(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FETCH of a run of messages: the first one reads the names of the next ones from the
    index, the others open their file at once; a name gone stale (another process renamed
    the file) is found out by the open failing, and the index is asked again."""
    for i in range(4):
        store.deliver(ADDRESS, msg(i))
    reads = 0
    real_read = AccountIndex.read

    @contextlib.contextmanager
    def read(index: AccountIndex) -> Iterator[object]:
        nonlocal reads
        reads += 1
        with real_read(index) as conn:
            yield conn

    monkeypatch.setattr(AccountIndex, "read", read)
    bodies = [store.fetch_message(ADDRESS, INBOX, uid) for uid in (1, 2, 3, 4)]
    assert [b.split(b"\r\n")[0] for b in bodies] == [b"Subject: message %d" % i for i in range(4)]
    assert reads == 1
    other = MaildirStore(store.mail_dir, hostname=HOST, flush_delay_seconds=None)
    try:
        other.store_flags(ADDRESS, INBOX, [2], FlagMode.ADD, SEEN)
        other.flush(ADDRESS)
    finally:
        other.close()
    assert store.fetch_message(ADDRESS, INBOX, 2) == bodies[1]
    assert store.fetch_message(ADDRESS, INBOX, 2) == bodies[1]
    # An expunge of this process forgets the name at once.
    store.store_flags(ADDRESS, INBOX, [3], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.expunge(ADDRESS, INBOX)
    with pytest.raises(NoSuchMessage):
        store.fetch_message(ADDRESS, INBOX, 3)
    # An expunge of another process: its file is still there (the unlink waits for the
    # flush), but the message is gone (RFC 9051 §7.1 EXPUNGEISSUED for the session).
    assert store.fetch_message(ADDRESS, INBOX, 4) == bodies[3]
    other = MaildirStore(store.mail_dir, hostname=HOST, flush_delay_seconds=None)
    try:
        other.store_flags(ADDRESS, INBOX, [4], FlagMode.ADD, frozenset({"\\Deleted"}))
        other.expunge(ADDRESS, INBOX)
        with pytest.raises(NoSuchMessage):
            store.fetch_message(ADDRESS, INBOX, 4)
    finally:
        other.close()


# -- the background full-text indexing and the writers (issue 18 point 4: APPEND) --


def _split_text(raw: bytes) -> tuple[str, str]:
    head, _, body = raw.partition(b"\n\n")
    return head.decode(), body.decode()


def _unindexed_store(root: Path, count: int, body_bytes: int) -> MaildirStore:
    store = MaildirStore(
        root,
        hostname=HOST,
        text_extractor=_split_text,
        index_at_delivery=False,
    )
    for i in range(count):
        store.append(ADDRESS, INBOX, msg(i) + b"word " * (body_bytes // 5))
    return store


def test_background_indexing_writes_in_small_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An APPEND that comes while the indexer catches up waits for one chunk of FTS work,
    not for a whole batch: the text goes in in transactions of bounded size."""
    store = _unindexed_store(tmp_path / "mail", 40, 20_000)
    try:
        monkeypatch.setattr(maildir_module, "TEXT_CHUNK_BYTES", 50_000, raising=False)
        counts = Counts(monkeypatch)
        assert store.index_pending(ADDRESS, INBOX) == 40
        assert counts.commits >= 10  # 40 x 20 kB of text in chunks of 50 kB
        assert store.search_text(ADDRESS, INBOX, "message 39", headers=True, body=False) == {40}
    finally:
        store.close()


def test_background_indexing_leaves_an_account_another_process_indexes(tmp_path: Path) -> None:
    """Two workers that both took APPENDs for one account do not both extract and index the
    same messages: the second skips while the first holds the account's indexing lock. A
    search still indexes what is missing before it answers."""
    import fcntl

    store = _unindexed_store(tmp_path / "mail", 3, 100)
    try:
        lock = store.account_root(ADDRESS) / "pochta-fts.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # "another process" indexes this account
            assert store.index_pending(ADDRESS, INBOX) == 0
            assert store.search_text(ADDRESS, INBOX, "message 2", headers=True, body=False) == {3}
        finally:
            os.close(fd)
        assert store.index_pending(ADDRESS, INBOX) == 0  # the search did them all
    finally:
        store.close()
