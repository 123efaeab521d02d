"""The Maildir store: every interface method, crash safety, UID rules, and the std-lib
``mailbox.Maildir`` reader (what mutt sees) as an oracle for the files."""

from __future__ import annotations

import contextlib
import mailbox
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pochta.store import (
    INBOX,
    ChangeKind,
    FlagMode,
    FolderExists,
    NoSuchFolder,
    NoSuchMessage,
    StoreError,
    StoreUnavailable,
    open_store,
)
from pochta.store.base import StoreFull
from pochta.store.index import INDEX_FILE, AccountIndex
from pochta.store.maildir import (
    TMP_MAX_AGE_SECONDS,
    UIDLIST_FILE,
    MaildirStore,
    append_lines,
    check_folder_name,
    decode_folder_name,
    encode_folder_name,
    info_with_flags,
    read_uidlist,
)
from tests.factories import make_settings

ADDRESS = "bob@example.test"
HOST = "mail.example.test"
MESSAGE = b"From: a@example.org\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n"
# <secs>.M<usecs>P<pid>Q<counter>.<host>,S=<size>,W=<vsize>[:2,<flags>]
NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^,:/]+),S=(\d+),W=(\d+)(?::2,([A-Za-z]*))?$")


def msg(n: int, body: bytes = b"") -> bytes:
    return b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n) + body


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MaildirStore]:
    s = MaildirStore(tmp_path / "mail", hostname=HOST)
    yield s
    s.close()


def root(store: MaildirStore, address: str = ADDRESS) -> Path:
    return store.account_root(address)


def maildir(store: MaildirStore, folder: str = INBOX) -> mailbox.Maildir:
    md = mailbox.Maildir(root(store), factory=None, create=False)
    return md if folder == INBOX else md.get_folder(folder)


def message_files(path: Path) -> dict[str, Path]:
    """base name -> file, of new/ and cur/."""
    found = {}
    for sub in ("new", "cur"):
        for f in (path / sub).iterdir():
            found[f.name.partition(":")[0]] = f
    return found


# -- names --


def test_folder_names_rfc3501_example() -> None:
    # RFC 3501 §5.1.3's own example.
    assert encode_folder_name("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_folder_name("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_folder_name("Tom & Jerry") == "Tom &- Jerry"
    assert decode_folder_name("&-") == "&"
    for bad in ("&Jjo", "&AGE-", "caf\xe9", "&U,B!-"):
        with pytest.raises(ValueError):  # noqa: PT011
            decode_folder_name(bad)


@given(st.text(min_size=1, max_size=40))
def test_folder_name_round_trip(name: str) -> None:
    encoded = encode_folder_name(name)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert decode_folder_name(encoded) == name


def test_folder_name_checks() -> None:
    assert check_folder_name("inbox") == INBOX
    assert check_folder_name("Archive.2026") == "Archive.2026"
    for bad in ("", "a/b", ".a", "a.", "a..b", "a*", "a%", "bad\x01"):
        with pytest.raises(StoreError):
            check_folder_name(bad)


def test_info_letters_sorted_and_foreign_letters_kept() -> None:
    from pochta.store.index import DELETED, SEEN

    assert info_with_flags(SEEN | DELETED) == "2,ST"
    # P (passed) and Dovecot keyword letters survive our renames, as do ",extra" fields.
    assert info_with_flags(SEEN, "2,PTa,x") == "2,PSa,x"


def test_address_cannot_escape_the_mail_dir(store: MaildirStore) -> None:
    for bad in ("../x@example.test", "a/b@example.test", "x@..", "noat", ".x@example.test"):
        with pytest.raises(StoreError):
            store.deliver(bad, MESSAGE)


# -- delivery --


def test_deliver_writes_maildir_file_and_index(store: MaildirStore) -> None:
    got = store.deliver(ADDRESS, MESSAGE, internal_date=1_700_000_000.5)
    assert (got.folder, got.uid, got.size, got.duplicate) == (INBOX, 1, len(MESSAGE), False)
    files = list((root(store) / "new").iterdir())
    assert len(files) == 1
    m = NAME.match(files[0].name)
    assert m is not None, files[0].name
    assert m.group(5) == HOST
    data = files[0].read_bytes()
    assert b"\r" not in data  # LF on disk, as mutt and Dovecot keep Maildir files
    assert int(m.group(6)) == len(data)
    assert int(m.group(7)) == len(MESSAGE)
    assert files[0].stat().st_mtime == pytest.approx(1_700_000_000.5)  # INTERNALDATE
    assert store.fetch_message(ADDRESS, INBOX, 1) == MESSAGE
    assert store.message_path(ADDRESS, INBOX, 1) == str(files[0])
    [info] = store.list_messages(ADDRESS, INBOX)
    assert (info.uid, info.size, info.flags, info.internal_date) == (
        1,
        len(MESSAGE),
        frozenset(),
        1_700_000_000.5,
    )
    assert not list((root(store) / "tmp").iterdir())
    with pytest.raises(NoSuchMessage):
        store.fetch_message(ADDRESS, INBOX, 2)


def test_deliver_with_flags_goes_to_cur(store: MaildirStore) -> None:
    store.deliver(ADDRESS, MESSAGE, flags=frozenset({"\\seen", "\\Flagged", "$Label1"}))
    [f] = list((root(store) / "cur").iterdir())
    assert f.name.endswith(":2,FS")
    [info] = store.list_messages(ADDRESS, INBOX)
    assert info.flags == {"\\Seen", "\\Flagged"}
    assert info.keywords == {"$Label1"}
    with pytest.raises(StoreError, match="Recent"):
        store.deliver(ADDRESS, MESSAGE, flags=frozenset({"\\Recent"}))
    with pytest.raises(StoreError, match="keyword"):
        store.deliver(ADDRESS, MESSAGE, flags=frozenset({"bad keyword"}))


def test_bare_lf_and_crlf_come_back_as_crlf(store: MaildirStore) -> None:
    store.deliver(ADDRESS, b"Subject: x\n\nbare\nlf\n")
    assert store.fetch_message(ADDRESS, INBOX, 1) == b"Subject: x\r\n\r\nbare\r\nlf\r\n"
    assert store.list_messages(ADDRESS, INBOX)[0].size == len(b"Subject: x\r\n\r\nbare\r\nlf\r\n")


def test_dedupe_key_makes_delivery_idempotent(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    first = store.deliver(ADDRESS, MESSAGE, dedupe_key="Q1ABC bob@example.test")
    again = store.deliver(ADDRESS, MESSAGE, dedupe_key="Q1ABC bob@example.test")
    assert again.duplicate
    assert (again.uid, again.uidvalidity) == (first.uid, first.uidvalidity)
    # Still a duplicate after the user moved it, from another process, into another folder.
    store.move(ADDRESS, INBOX, [first.uid], "Archive")
    store.close()
    store = MaildirStore(tmp_path, hostname=HOST)
    later = store.deliver(ADDRESS, MESSAGE, folder="Junk", dedupe_key="Q1ABC bob@example.test")
    assert later.duplicate
    assert later.folder == "Archive"
    assert store.quota_usage(ADDRESS).messages == 1
    other = store.deliver(ADDRESS, MESSAGE, dedupe_key="Q1ABC alice@example.test")
    assert not other.duplicate
    store.close()


def test_special_folders_created_with_roles_and_subscribed(store: MaildirStore) -> None:
    store.deliver(ADDRESS, MESSAGE)
    folders = {f.name: f for f in store.list_folders(ADDRESS)}
    assert next(iter(folders)) == INBOX
    assert {n: f.special_use for n, f in folders.items()} == {
        INBOX: None,
        "Archive": "\\Archive",
        "Drafts": "\\Drafts",
        "Junk": "\\Junk",
        "Sent": "\\Sent",
        "Trash": "\\Trash",
    }
    assert all(f.subscribed for f in folders.values())
    assert (root(store) / ".Sent" / "maildirfolder").exists()
    subs = (root(store) / "subscriptions").read_text().splitlines()
    assert sorted(subs) == sorted(folders)
    assert len({f.uidvalidity for f in folders.values()}) == len(folders)


def test_deliver_creates_missing_folder(store: MaildirStore) -> None:
    got = store.deliver(ADDRESS, MESSAGE, folder="Lists.Python")
    assert (got.folder, got.uid) == ("Lists.Python", 1)
    assert (root(store) / ".Lists.Python" / "new").is_dir()
    with pytest.raises(NoSuchFolder):
        store.append(ADDRESS, "Nowhere", MESSAGE)
    appended = store.append(ADDRESS, "Lists.Python", MESSAGE, flags=frozenset({"\\Seen"}))
    assert appended.uid == 2
    assert appended.uidvalidity == got.uidvalidity


def test_concurrent_deliveries_share_commits(store: MaildirStore) -> None:
    seen: list[tuple[str, str, ChangeKind]] = []
    store.subscribe_changes(lambda a, f, k: seen.append((a, f, k)))
    results = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(25):
            r = store.deliver(ADDRESS, msg(n * 100 + i), dedupe_key=f"k{n}-{i}")
            with lock:
                results.append(r.uid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 101))
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == list(range(1, 101))
    assert store.quota_usage(ADDRESS).messages == 100
    assert (ADDRESS, INBOX, ChangeKind.NEW) in seen


# -- UIDs and UIDVALIDITY --


def test_uids_never_reused_and_uidvalidity_stable(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    validity = store.list_folders(ADDRESS)[0].uidvalidity
    store.store_flags(ADDRESS, INBOX, [2, 3], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert store.expunge(ADDRESS, INBOX) == [2, 3]
    assert store.deliver(ADDRESS, msg(4)).uid == 4
    store.close()
    store = MaildirStore(tmp_path, hostname=HOST)
    assert store.list_folders(ADDRESS)[0].uidvalidity == validity
    assert store.deliver(ADDRESS, msg(5)).uid == 5
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 4, 5]
    store.close()


# -- folders --


def test_create_delete_recreate_gets_new_uidvalidity(store: MaildirStore) -> None:
    store.create_folder(ADDRESS, "Projects")
    with pytest.raises(FolderExists):
        store.create_folder(ADDRESS, "Projects")
    before = next(f for f in store.list_folders(ADDRESS) if f.name == "Projects")
    store.deliver(ADDRESS, MESSAGE, folder="Projects")
    store.delete_folder(ADDRESS, "Projects")
    assert not (root(store) / ".Projects").exists()
    assert store.quota_usage(ADDRESS).messages == 0
    store.create_folder(ADDRESS, "Projects")
    after = next(f for f in store.list_folders(ADDRESS) if f.name == "Projects")
    assert after.uidvalidity > before.uidvalidity  # RFC 3501 §2.3.1.1
    assert after.uidnext == 1
    with pytest.raises(StoreError, match="INBOX"):
        store.delete_folder(ADDRESS, "inbox")
    with pytest.raises(NoSuchFolder):
        store.delete_folder(ADDRESS, "Nope")
    store.create_folder(ADDRESS, "Everything", special_use="\\All")
    assert {f.name: f.special_use for f in store.list_folders(ADDRESS)}["Everything"] == "\\All"
    with pytest.raises(StoreError):
        store.create_folder(ADDRESS, "X", special_use="\\Bogus")


def test_unicode_folder_directory_is_modified_utf7(store: MaildirStore) -> None:
    store.create_folder(ADDRESS, "Входящие.Работа")
    assert (root(store) / ".&BBIERQQ+BDQETwRJBDgENQ-.&BCAEMAQxBD4EQgQw-").is_dir()
    assert "Входящие.Работа" in [f.name for f in store.list_folders(ADDRESS)]


def test_rename_moves_inferiors_and_subscriptions(store: MaildirStore) -> None:
    store.deliver(ADDRESS, MESSAGE, folder="Work")
    store.deliver(ADDRESS, MESSAGE, folder="Work.2025")
    store.subscribe(ADDRESS, "Work.2025")
    store.rename_folder(ADDRESS, "Work", "Job")
    names = [f.name for f in store.list_folders(ADDRESS)]
    assert "Job" in names
    assert "Job.2025" in names
    assert "Work" not in names
    assert (root(store) / ".Job.2025" / "cur").is_dir()
    assert store.fetch_message(ADDRESS, "Job.2025", 1) == MESSAGE
    assert "Job.2025" in store.list_subscriptions(ADDRESS)
    assert "Work.2025" not in store.list_subscriptions(ADDRESS)
    with pytest.raises(FolderExists):
        store.rename_folder(ADDRESS, "Job", "Sent")
    with pytest.raises(StoreError):
        store.rename_folder(ADDRESS, "Job", "Job.inner")
    with pytest.raises(NoSuchFolder):
        store.rename_folder(ADDRESS, "Nope", "Other")


def test_rename_inbox_moves_messages_and_leaves_it_empty(store: MaildirStore) -> None:
    # RFC 3501 §6.3.5.
    store.deliver(ADDRESS, msg(1), flags=frozenset({"\\Seen"}))
    store.deliver(ADDRESS, msg(2))
    store.create_folder(ADDRESS, "INBOX.Child")
    store.rename_folder(ADDRESS, INBOX, "Old mail")
    folders = {f.name: f for f in store.list_folders(ADDRESS)}
    assert folders[INBOX].messages == 0
    assert folders["Old mail"].messages == 2
    assert "INBOX.Child" in folders
    assert store.fetch_message(ADDRESS, "Old mail", 1) == msg(1)
    assert store.list_messages(ADDRESS, "Old mail")[0].flags == {"\\Seen"}
    assert store.deliver(ADDRESS, msg(3)).uid == 3  # INBOX's UIDs go on


def test_subscriptions_outlive_the_folder(store: MaildirStore) -> None:
    store.create_folder(ADDRESS, "Temp")
    store.subscribe(ADDRESS, "Temp")
    store.delete_folder(ADDRESS, "Temp")
    assert "Temp" in store.list_subscriptions(ADDRESS)  # RFC 9051 §6.3.9
    store.unsubscribe(ADDRESS, "Temp")
    store.unsubscribe(ADDRESS, "Junk")
    assert "Temp" not in store.list_subscriptions(ADDRESS)
    assert "Junk" not in (root(store) / "subscriptions").read_text().splitlines()


# -- flags --


def test_store_flags_modes_and_modseq(store: MaildirStore) -> None:
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    start = store.list_folders(ADDRESS)[0].highestmodseq
    r = store.store_flags(ADDRESS, INBOX, [1, 2, 9], FlagMode.ADD, frozenset({"\\Seen", "$A"}))
    assert [u.uid for u in r.updated] == [1, 2]
    assert r.failed == ()
    modseq = r.updated[0].modseq
    assert modseq > start
    assert all(u.modseq == modseq for u in r.updated)
    assert store.list_folders(ADDRESS)[0].highestmodseq == modseq
    # No change: the MODSEQ stays.
    again = store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, frozenset({"\\SEEN", "$a"}))
    assert again.updated == ()
    r = store.store_flags(ADDRESS, INBOX, [1], FlagMode.REMOVE, frozenset({"$a"}))
    assert r.updated[0].keywords == frozenset()
    assert r.updated[0].flags == {"\\Seen"}
    r = store.store_flags(ADDRESS, INBOX, [2], FlagMode.REPLACE, frozenset({"\\Answered"}))
    assert r.updated[0].flags == {"\\Answered"}
    assert r.updated[0].keywords == frozenset()
    infos = {m.uid: m for m in store.list_messages(ADDRESS, INBOX)}
    assert infos[1].flags == {"\\Seen"}
    assert infos[2].flags == {"\\Answered"}
    assert infos[3].modseq < modseq
    # The file name carries the flags, once the renames are done (flush).
    store.flush(ADDRESS)
    files = list((root(store) / "cur").iterdir())
    assert sorted(f.name.rpartition(",")[2] for f in files) == ["R", "S"]
    assert sorted(m.get_flags() for m in maildir(store)) == ["", "R", "S"]


def test_unchanged_since(store: MaildirStore) -> None:
    # RFC 7162 §3.1.3.
    store.deliver(ADDRESS, msg(1))
    store.deliver(ADDRESS, msg(2))
    seen = store.list_folders(ADDRESS)[0].highestmodseq
    store.store_flags(ADDRESS, INBOX, [2], FlagMode.ADD, frozenset({"\\Flagged"}))
    r = store.store_flags(
        ADDRESS, INBOX, [1, 2], FlagMode.ADD, frozenset({"\\Seen"}), unchanged_since=seen
    )
    assert [u.uid for u in r.updated] == [1]
    assert r.failed == (2,)
    assert store.list_messages(ADDRESS, INBOX)[1].flags == {"\\Flagged"}


# -- copy, move, expunge --


def test_copy_keeps_flags_and_links_the_file(store: MaildirStore) -> None:
    store.deliver(ADDRESS, msg(1), flags=frozenset({"\\Seen", "$Work"}), internal_date=1e9)
    store.deliver(ADDRESS, msg(2))
    result = store.copy(ADDRESS, INBOX, [2, 1, 7], "Archive")
    archive = next(f for f in store.list_folders(ADDRESS) if f.name == "Archive")
    assert result.uidvalidity == archive.uidvalidity
    assert result.pairs == ((1, 1), (2, 2))  # COPYUID, RFC 4315 §3
    copied = store.list_messages(ADDRESS, "Archive")
    assert copied[0].flags == {"\\Seen"}
    assert copied[0].keywords == {"$Work"}
    assert copied[0].internal_date == 1e9
    src = Path(store.message_path(ADDRESS, INBOX, 1))
    dst = Path(store.message_path(ADDRESS, "Archive", 1))
    assert os.path.samefile(src, dst)  # a hard link, not a second copy
    assert store.quota_usage(ADDRESS).messages == 4
    with pytest.raises(NoSuchFolder):
        store.copy(ADDRESS, INBOX, [1], "Nope")


def test_move_is_one_transaction_and_records_expunged(store: MaildirStore) -> None:
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    before = store.quota_usage(ADDRESS)
    result = store.move(ADDRESS, INBOX, [1, 3], "Trash")
    assert result.pairs == ((1, 1), (3, 2))
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [2]
    assert store.fetch_message(ADDRESS, "Trash", 2) == msg(2)
    assert store.quota_usage(ADDRESS) == before
    index = AccountIndex(root(store) / INDEX_FILE)
    conn = index.conn()
    inbox = AccountIndex.folder(conn, INBOX)
    assert inbox is not None
    assert AccountIndex.expunged_since(conn, inbox.id, 0) == [1, 3]
    index.close()
    assert len(list(maildir(store, "Trash").keys())) == 2


def test_expunge_only_deleted(store: MaildirStore) -> None:
    for i in range(4):
        store.deliver(ADDRESS, msg(i))
    store.store_flags(ADDRESS, INBOX, [1, 2, 3], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert store.expunge(ADDRESS, INBOX, {2, 3, 4}) == [2, 3]  # UID EXPUNGE, RFC 4315 §2.1
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 4]
    assert store.expunge(ADDRESS, INBOX) == [1]
    assert store.expunge(ADDRESS, INBOX) == []
    store.flush(ADDRESS)
    assert len(message_files(root(store))) == 1
    assert store.quota_usage(ADDRESS).messages == 1


# -- quota --


def test_quota_checks(store: MaildirStore) -> None:
    store.deliver(ADDRESS, b"x" * 1000)
    usage = store.quota_usage(ADDRESS)
    assert (usage.bytes, usage.messages) == (1000, 1)
    assert store.check_quota(ADDRESS, 0, 0, 10**9).ok
    assert store.check_quota(ADDRESS, 2000, 0, 1000).ok  # exactly full is allowed
    full = store.check_quota(ADDRESS, 2000, 0, 1001)
    assert not full.ok
    assert not full.permanent
    assert (full.smtp_code, full.enhanced_code) == (452, "4.2.2")
    never = store.check_quota(ADDRESS, 2000, 0, 2001)
    assert never.permanent
    assert (never.smtp_code, never.enhanced_code) == (552, "5.2.2")
    assert "larger than the mailbox quota" in never.reason
    assert not store.check_quota(ADDRESS, 0, 1, 10).ok


# -- crash safety and rescans --

CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from pochta.store.index import AccountIndex
    from pochta.store.maildir import MaildirStore

    store = MaildirStore(Path(sys.argv[1]), hostname="mail.example.test")
    store.deliver("bob@example.test", b"Subject: first\\r\\n\\r\\nx\\r\\n")

    def die(*args, **kwargs):
        os._exit(3)  # the process dies: file linked into new/, index row not committed

    AccountIndex.insert_message = staticmethod(die)
    store.deliver("bob@example.test", b"Subject: crash\\r\\n\\r\\ny\\r\\n", dedupe_key="Q9 bob")
    """
)


def test_crash_between_rename_and_commit(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)], capture_output=True, check=False
    )
    assert proc.returncode == 3, proc.stderr
    inbox = tmp_path / "example.test" / "bob"
    assert len(list((inbox / "new").iterdir())) == 2  # the file is there, its row is not
    index = AccountIndex(inbox / INDEX_FILE)
    assert AccountIndex.quota(index.conn()) == (len(b"Subject: first\r\n\r\nx\r\n"), 1)
    index.close()

    store = MaildirStore(tmp_path, hostname=HOST)
    # The queue retries the delivery it never got an answer for: found, not written twice.
    retry = store.deliver(ADDRESS, b"Subject: crash\r\n\r\ny\r\n", dedupe_key="Q9 bob")
    assert retry.duplicate
    assert retry.uid == 2
    assert store.sync_folder(ADDRESS, INBOX).adopted == 0  # adopted exactly once
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 2]
    assert store.fetch_message(ADDRESS, INBOX, 2) == b"Subject: crash\r\n\r\ny\r\n"
    assert store.quota_usage(ADDRESS).messages == 2
    assert len(list((inbox / "new").iterdir())) == 2
    assert store.deliver(ADDRESS, MESSAGE).uid == 3
    store.close()


def test_failed_batch_leaves_no_file(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.deliver(ADDRESS, msg(1))

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(AccountIndex, "insert_message", staticmethod(boom))
    with pytest.raises(StoreUnavailable, match="No space left"):  # temporary: 451 4.3.0
        store.deliver(ADDRESS, msg(2), dedupe_key="K")
    monkeypatch.undo()
    monkeypatch.setattr("pochta.store.maildir.write_file", boom)
    with pytest.raises(StoreUnavailable, match="No space left"):
        store.deliver(ADDRESS, msg(2), dedupe_key="K")
    monkeypatch.undo()
    assert len(message_files(root(store))) == 1
    assert store.sync_folder(ADDRESS, INBOX).adopted == 0
    assert not store.deliver(ADDRESS, msg(2), dedupe_key="K").duplicate


def test_sync_adopts_dropped_files_and_forgets_removed_ones(store: MaildirStore) -> None:
    store.deliver(ADDRESS, msg(1))
    store.deliver(ADDRESS, msg(2))
    r = root(store)
    (r / "new" / "1600000000.hand.made").write_bytes(b"Subject: by hand\n\nhi\n")
    (r / "cur" / "1600000001.mutt:2,S").write_bytes(b"Subject: mutt\n\nread\n")
    report = store.sync_folder(ADDRESS, INBOX)
    assert (report.adopted, report.vanished) == (2, 0)
    assert store.sync_folder(ADDRESS, INBOX).adopted == 0
    infos = store.list_messages(ADDRESS, INBOX)
    assert [m.uid for m in infos] == [1, 2, 3, 4]
    assert infos[3].flags == {"\\Seen"}
    assert store.fetch_message(ADDRESS, INBOX, 3) == b"Subject: by hand\r\n\r\nhi\r\n"
    # mutt marks message 1 read (new/ -> cur/ with :2,S) and deletes message 2.
    first = Path(store.message_path(ADDRESS, INBOX, 1))
    first.rename(r / "cur" / (first.name + ":2,S"))
    Path(store.message_path(ADDRESS, INBOX, 2)).unlink()
    report = store.sync_folder(ADDRESS, INBOX)
    assert (report.adopted, report.vanished, report.flags_changed) == (0, 1, 1)
    assert store.list_messages(ADDRESS, INBOX)[0].flags == {"\\Seen"}
    assert store.quota_usage(ADDRESS).messages == 3
    assert store.deliver(ADDRESS, msg(5)).uid == 5


def test_list_messages_notices_foreign_changes(store: MaildirStore) -> None:
    store.deliver(ADDRESS, msg(1))
    (root(store) / "new" / "1600000000.dropped").write_bytes(b"Subject: x\n\n")
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 2]


def test_fetch_follows_a_foreign_rename(store: MaildirStore) -> None:
    store.deliver(ADDRESS, msg(1))
    path = Path(store.message_path(ADDRESS, INBOX, 1))
    path.rename(root(store) / "cur" / (path.name + ":2,FS"))
    assert store.fetch_message(ADDRESS, INBOX, 1) == msg(1)
    assert store.list_messages(ADDRESS, INBOX)[0].flags == {"\\Seen", "\\Flagged"}


def test_account_sync_adopts_and_forgets_folders(store: MaildirStore) -> None:
    store.deliver(ADDRESS, MESSAGE)
    r = root(store)
    (r / ".Imported" / "cur").mkdir(parents=True)
    (r / ".Imported" / "new").mkdir()
    (r / ".Imported" / "cur" / "1500000000.old:2,RS").write_bytes(b"Subject: old\n\n")
    import shutil

    shutil.rmtree(r / ".Junk")
    reports = {rep.folder: rep for rep in store.sync(ADDRESS)}
    names = [f.name for f in store.list_folders(ADDRESS)]
    assert "Imported" in names
    assert "Junk" not in names
    assert reports["Imported"].adopted == 1
    assert store.list_messages(ADDRESS, "Imported")[0].flags == {"\\Answered", "\\Seen"}


# -- reindex --


def _drop_index(store: MaildirStore) -> None:
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root(store) / INDEX_FILE}{suffix}").unlink(missing_ok=True)


def test_reindex_keeps_uids_from_the_uidlist(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    for i in range(4):
        store.deliver(ADDRESS, msg(i), dedupe_key=f"k{i}")
    store.deliver(ADDRESS, msg(9), folder="Archive")
    store.store_flags(ADDRESS, INBOX, [2], FlagMode.ADD, frozenset({"\\Deleted", "\\Seen"}))
    store.expunge(ADDRESS, INBOX)
    store.store_flags(ADDRESS, INBOX, [3], FlagMode.ADD, frozenset({"\\Flagged"}))
    before = {f.name: f for f in store.list_folders(ADDRESS)}
    _drop_index(store)

    store = MaildirStore(tmp_path, hostname=HOST)
    report = store.reindex(ADDRESS)
    assert (report.messages, report.kept_uids, report.new_uids) == (4, 4, 0)
    assert report.new_uidvalidity == ()
    after = {f.name: f for f in store.list_folders(ADDRESS)}
    assert after[INBOX].uidvalidity == before[INBOX].uidvalidity
    assert after[INBOX].uidnext == 5
    assert after[INBOX].highestmodseq > before[INBOX].highestmodseq  # RFC 7162 §3.1.1
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 3, 4]
    assert store.list_messages(ADDRESS, INBOX)[1].flags == {"\\Flagged"}
    assert store.deliver(ADDRESS, msg(2), dedupe_key="k2").duplicate  # keys survive too
    assert store.deliver(ADDRESS, msg(5)).uid == 5
    store.close()


def test_reindex_with_the_old_index_keeps_keywords(store: MaildirStore) -> None:
    store.deliver(ADDRESS, msg(1), flags=frozenset({"$Important"}))
    report = store.reindex(ADDRESS)
    assert report.kept_uids == 1
    assert store.list_messages(ADDRESS, INBOX)[0].keywords == {"$Important"}


def test_reindex_without_uidlist_gets_new_uidvalidity(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    store.deliver(ADDRESS, msg(1))
    store.deliver(ADDRESS, msg(2))
    old_validity = store.list_folders(ADDRESS)[0].uidvalidity
    _drop_index(store)
    (root(store) / UIDLIST_FILE).unlink()
    store = MaildirStore(tmp_path, hostname=HOST)
    report = store.reindex(ADDRESS)
    assert report.new_uidvalidity == (INBOX,)
    assert report.new_uids == 2
    assert store.list_folders(ADDRESS)[0].uidvalidity > old_validity  # RFC 3501 §2.3.1.1
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 2]
    assert store.fetch_message(ADDRESS, INBOX, 2) == msg(2)
    # The new uidlist is written: a second loss keeps these UIDs.
    assert read_uidlist(root(store) / UIDLIST_FILE) is not None
    store.close()


def test_lost_index_is_rebuilt_on_open(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    validity = store.list_folders(ADDRESS)[0].uidvalidity
    _drop_index(store)
    store = MaildirStore(tmp_path, hostname=HOST)
    assert store.list_folders(ADDRESS)[0].uidvalidity == validity
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 2, 3]
    store.close()


def test_damaged_index_is_moved_aside(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    store.deliver(ADDRESS, msg(1))
    _drop_index(store)
    (root(store) / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    store = MaildirStore(tmp_path, hostname=HOST)
    with pytest.raises(StoreError, match="pochta mailbox reindex"):
        store.list_folders(ADDRESS)
    report = store.reindex(ADDRESS)
    assert any("could not be read" in n for n in report.notes)
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1]
    store.close()


def test_reindex_reads_dovecot_uidlist(tmp_path: Path) -> None:
    # A Maildir moved over from Dovecot keeps its UIDs and UIDVALIDITY.
    r = tmp_path / "example.test" / "bob"
    for sub in ("cur", "new", "tmp"):
        (r / sub).mkdir(parents=True)
    (r / "cur" / "1276528487.M364837P9451.kurkku,S=12,W=14:2,S").write_bytes(b"Subject: a\n\n")
    (r / "new" / "1276533073.M242911P3632.kurkku").write_bytes(b"Subject: b\n\n")
    (r / "dovecot-uidlist").write_text(
        "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
        "25006 :1276528487.M364837P9451.kurkku,S=12,W=14:2,\n"
        "25017 W14 :1276533073.M242911P3632.kurkku\n"
    )
    store = MaildirStore(tmp_path, hostname=HOST)
    folders = store.list_folders(ADDRESS)
    assert (folders[0].uidvalidity, folders[0].uidnext) == (1275660208, 25022)
    infos = store.list_messages(ADDRESS, INBOX)
    assert [(m.uid, m.flags) for m in infos] == [(25006, {"\\Seen"}), (25017, frozenset())]
    store.close()


# -- accounts --


def test_purge_and_lru(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST, max_open_accounts=2)
    addresses = [f"user{i}@example.test" for i in range(5)]
    for round_ in range(2):
        for a in addresses:
            assert store.deliver(a, msg(round_)).uid == round_ + 1
    assert store.purge_account(addresses[0])
    assert not store.account_root(addresses[0]).exists()
    assert not store.purge_account(addresses[0])
    assert store.deliver(addresses[0], msg(1)).uid == 1
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.deliver(addresses[0], msg(1))


def test_change_listener(store: MaildirStore) -> None:
    events: list[tuple[str, str, ChangeKind]] = []
    remove = store.subscribe_changes(lambda a, f, k: events.append((a, f, k)))
    store.subscribe_changes(lambda a, f, k: 1 / 0)  # a broken listener harms no one
    store.deliver(ADDRESS, MESSAGE)
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.expunge(ADDRESS, INBOX)
    store.create_folder(ADDRESS, "New")
    assert [(f, k) for _, f, k in events if f in (INBOX, "New")] == [
        (INBOX, ChangeKind.NEW),
        (INBOX, ChangeKind.FLAGS),
        (INBOX, ChangeKind.EXPUNGE),
        ("New", ChangeKind.FOLDERS),
    ]
    remove()
    store.deliver(ADDRESS, MESSAGE)
    assert events[-1][1] == "New"


def test_open_store_uses_the_settings(tmp_path: Path) -> None:
    settings = make_settings({"server.hostname": HOST, "server.data_dir": str(tmp_path)})
    store = open_store(settings)
    assert isinstance(store, MaildirStore)
    store.deliver(ADDRESS, MESSAGE)
    assert (tmp_path / "mail" / "example.test" / "bob" / "new").is_dir()
    store.close()


# -- the std-lib Maildir reader as an oracle (mutt, Dovecot read the same way) --


def test_stdlib_maildir_sees_the_same_messages(store: MaildirStore) -> None:
    for i in range(5):
        store.deliver(ADDRESS, msg(i), folder=INBOX if i % 2 else "Archive.2026")
    store.store_flags(ADDRESS, INBOX, [1], FlagMode.ADD, frozenset({"\\Seen", "\\Answered"}))
    store.store_flags(ADDRESS, "Archive.2026", [2], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.move(ADDRESS, "Archive.2026", [1], "Sent")
    store.flush(ADDRESS)  # what a tool reading the files directly does first
    md = mailbox.Maildir(root(store), factory=None, create=False)
    assert sorted(md.list_folders()) == sorted(
        f.name for f in store.list_folders(ADDRESS) if f.name != INBOX
    )
    for info in store.list_folders(ADDRESS):
        folder = md if info.name == INBOX else md.get_folder(info.name)
        ours = {
            store.fetch_message(ADDRESS, info.name, m.uid).replace(b"\r\n", b"\n"): "".join(
                sorted(
                    {"\\Seen": "S", "\\Answered": "R", "\\Deleted": "T", "\\Flagged": "F"}[f]
                    for f in m.flags
                )
            )
            for m in store.list_messages(ADDRESS, info.name)
        }
        theirs = {folder.get_bytes(k): folder.get_message(k).get_flags() for k in folder.keys()}  # noqa: SIM118 - a Maildir iterates messages
        assert ours == theirs, info.name


# -- a random walk: the index always matches the files, the quota always matches the sums --


class StoreMachine(RuleBasedStateMachine):
    FOLDERS = (INBOX, "Archive", "Trash")

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.store = self.open()
        self.highest_uid: dict[str, int] = {}
        self.count = 0

    def open(self) -> MaildirStore:
        return MaildirStore(
            Path(self.tmp.name), hostname=HOST, durable=False, flush_delay_seconds=None
        )

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    @rule()
    def crash_and_restart(self) -> None:
        """A stop without close: the renames and unlinks still owed are in the index, and
        the next opening does them (the index is the truth)."""
        self.store = self.open()

    def uids(self, folder: str) -> list[int]:
        return [m.uid for m in self.store.list_messages(ADDRESS, folder)]

    def note_uid(self, folder: str, uid: int) -> None:
        assert uid > self.highest_uid.get(folder, 0), "UIDs must grow and never be reused"
        self.highest_uid[folder] = uid

    @rule(folder=st.sampled_from(FOLDERS), seen=st.booleans(), size=st.integers(0, 300))
    def deliver(self, folder: str, seen: bool, size: int) -> None:
        self.count += 1
        flags = frozenset({"\\Seen"}) if seen else frozenset()
        got = self.store.deliver(
            ADDRESS, msg(self.count, b"x\n" * size), folder=folder, flags=flags
        )
        self.note_uid(folder, got.uid)

    @precondition(lambda self: self.count > 0)
    @rule(
        folder=st.sampled_from(FOLDERS),
        mode=st.sampled_from(list(FlagMode)),
        flags=st.sets(st.sampled_from(["\\Seen", "\\Deleted", "\\Flagged", "$K"])),
        pick=st.integers(0, 1000),
    )
    def store_flags(self, folder: str, mode: FlagMode, flags: set[str], pick: int) -> None:
        uids = self.uids(folder)
        if uids:
            chosen = uids[pick % len(uids) :][:3]
            self.store.store_flags(ADDRESS, folder, chosen, mode, frozenset(flags))

    @precondition(lambda self: self.count > 0)
    @rule(
        source=st.sampled_from(FOLDERS),
        dest=st.sampled_from(FOLDERS),
        copy=st.booleans(),
        pick=st.integers(0, 1000),
    )
    def transfer(self, source: str, dest: str, copy: bool, pick: int) -> None:
        uids = self.uids(source)
        if not uids:
            return
        chosen = uids[pick % len(uids) :][:2]
        op = self.store.copy if copy else self.store.move
        result = op(ADDRESS, source, chosen, dest)
        assert [p[0] for p in result.pairs] == chosen
        for _, new_uid in result.pairs:
            self.note_uid(dest, new_uid)

    @rule(folder=st.sampled_from(FOLDERS))
    def expunge(self, folder: str) -> None:
        deleted = [
            m.uid for m in self.store.list_messages(ADDRESS, folder) if "\\Deleted" in m.flags
        ]
        assert self.store.expunge(ADDRESS, folder) == deleted

    @invariant()
    def index_matches_files(self) -> None:
        if self.count == 0:
            return
        total_bytes = total_messages = 0
        self.store.flush(ADDRESS)  # the files follow the index once flushed
        r = self.store.account_root(ADDRESS)
        letters = {"\\Seen": "S", "\\Deleted": "T", "\\Flagged": "F", "\\Answered": "R"}
        for info in self.store.list_folders(ADDRESS):
            path = r if info.name == INBOX else r / f".{info.name}"
            files = message_files(path)
            messages = self.store.list_messages(ADDRESS, info.name)
            assert len(files) == len(messages) == info.messages
            for m in messages:
                f = Path(self.store.message_path(ADDRESS, info.name, m.uid))
                expected = "".join(sorted(letters[x] for x in m.flags))
                assert f.name.partition(":2,")[2] == expected
                assert len(f.read_bytes().replace(b"\n", b"\r\n")) == m.size
            assert info.unseen == sum("\\Seen" not in m.flags for m in messages)
            assert info.size == sum(m.size for m in messages)
            total_bytes += info.size
            total_messages += info.messages
        usage = self.store.quota_usage(ADDRESS)
        assert (usage.bytes, usage.messages) == (total_bytes, total_messages)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)


# -- a full disk (issue 12): reads go on, nothing half-written stays -------------------------


class SmallDisk:
    """A small tmpfs of its own (root only), to be filled for real with a filler file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write the filler until the file system says ENOSPC (whatever size is left)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * chunk)
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """Mount a tmpfs of ``size`` at ``path`` (created) for the block; skips unless root."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs, and mounting one needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "fs") as d:
        yield d


def test_full_disk_reopened_index_is_still_read(disk: SmallDisk) -> None:
    """No connection holds the index (a restart, an evicted account): the -shm file of its
    WAL cannot be made on the full disk, yet SELECT's calls answer from the index."""
    store = MaildirStore(disk.path / "mail", hostname=HOST)
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    store.claim_recent(ADDRESS, INBOX, 1, claim=True)
    store.close()
    disk.fill()
    store = MaildirStore(disk.path / "mail", hostname=HOST)
    changes = store.folder_changes(ADDRESS, INBOX, 0)
    assert [m.uid for m in changes.changed] == [1, 2, 3]
    # The \Recent claim cannot be recorded: the answer is what the index has.
    assert store.claim_recent(ADDRESS, INBOX, 3, claim=True) == 1
    assert store.fetch_message(ADDRESS, INBOX, 2) == msg(1)
    assert store.list_folders(ADDRESS)[0].name == INBOX
    assert store.quota_usage(ADDRESS).messages == 3
    with pytest.raises(StoreFull, match="no space left"):
        store.deliver(ADDRESS, msg(9))
    store.close()
    disk.free()
    store = MaildirStore(disk.path / "mail", hostname=HOST)
    assert store.deliver(ADDRESS, msg(4)).uid == 4
    assert store.claim_recent(ADDRESS, INBOX, 4, claim=True) == 1
    store.close()


def test_full_disk_open_index_serves_what_it_has(disk: SmallDisk) -> None:
    """The index is open (a running server) and another program drops a file into new/ on
    the full disk: the rescan cannot record it, so the folder is served as the index has it,
    and the file is adopted once there is room."""
    store = MaildirStore(disk.path / "mail", hostname=HOST)
    for i in range(3):
        store.deliver(ADDRESS, msg(i))
    aside = root(store) / "tmp" / "1600000000.foreign"
    aside.write_bytes(b"Subject: foreign\n\nhi\n")
    disk.fill()
    aside.rename(root(store) / "new" / aside.name)  # a rename needs no room
    changes = store.folder_changes(ADDRESS, INBOX, 0)
    assert [m.uid for m in changes.changed] == [1, 2, 3]
    assert store.claim_recent(ADDRESS, INBOX, 3, claim=True) == 0
    assert store.fetch_message(ADDRESS, INBOX, 3) == msg(2)
    uidlist = root(store) / UIDLIST_FILE
    assert read_uidlist(uidlist) is not None
    disk.free()
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1, 2, 3, 4]
    assert store.fetch_message(ADDRESS, INBOX, 4) == b"Subject: foreign\r\n\r\nhi\r\n"
    store.close()


def test_new_index_on_a_full_disk_is_a_clear_unavailable(disk: SmallDisk) -> None:
    store = MaildirStore(disk.path / "mail", hostname=HOST)
    disk.fill()
    with pytest.raises(StoreFull, match="cannot be created: no space left on device; free space"):
        store.list_folders(ADDRESS)
    store.close()


def test_failed_write_leaves_no_partial_file_in_tmp(disk: SmallDisk) -> None:
    store = MaildirStore(disk.path / "mail", hostname=HOST)
    store.deliver(ADDRESS, msg(1))
    tmp = root(store) / "tmp"
    big = msg(2, b"x" * (8 << 20))  # larger than the whole disk
    with pytest.raises(StoreFull):
        store.deliver(ADDRESS, big)
    assert list(tmp.iterdir()) == []
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1]
    store.close()


def test_failed_uidlist_append_leaves_no_torn_line(disk: SmallDisk) -> None:
    path = disk.path / "uidlist"
    path.write_bytes(b"3 V1 N1\n")  # the rest of its page is free room
    disk.fill()
    with pytest.raises(OSError, match="No space"):
        append_lines(path, "1 :" + "x" * 10000 + "\n")
    assert path.read_bytes() == b"3 V1 N1\n"


def test_stale_tmp_files_of_every_folder_are_swept_at_open(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, hostname=HOST)
    store.deliver(ADDRESS, msg(1))
    store.close()
    now = 2_000_000_000.0
    stale = root(store) / "tmp" / "1.stale"
    stale_sent = root(store) / ".Sent" / "tmp" / "2.stale"
    fresh = root(store) / "tmp" / "3.fresh"
    for path, age in ((stale, TMP_MAX_AGE_SECONDS + 1), (stale_sent, 40 * 3600), (fresh, 3600)):
        path.write_bytes(b"half")
        os.utime(path, (now - age, now - age))
    store = MaildirStore(tmp_path, hostname=HOST, clock=lambda: now)
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX)] == [1]
    assert not stale.exists()
    assert not stale_sent.exists()
    assert fresh.exists()
    store.close()


def test_sweep_leaves_an_append_in_flight_with_an_old_internaldate(tmp_path: Path) -> None:
    """An APPEND writes its tmp/ file with the INTERNALDATE the client gave as mtime (a year
    ago, for mail moved from elsewhere): another process opening the account meanwhile must
    not take it for a stale leftover (seen under bench/imap_bench.sh's populate: two
    APPENDs answered NO with "No such file or directory" at the start)."""
    store = MaildirStore(tmp_path, hostname=HOST)
    store.deliver(ADDRESS, msg(1))
    store.close()
    in_flight = root(store) / "tmp" / "4.in-flight"
    in_flight.write_bytes(b"being appended")
    year_ago = time.time() - 365 * 24 * 3600
    os.utime(in_flight, (year_ago, year_ago))
    other = MaildirStore(tmp_path, hostname=HOST)  # another process opens the account
    try:
        assert [m.uid for m in other.list_messages(ADDRESS, INBOX)] == [1]
        assert in_flight.exists()
    finally:
        other.close()


def test_expunge_history_is_cut_and_older_resyncs_say_incomplete(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expunged table keeps a folder's last EXPUNGED_HISTORY MODSEQs (the older half
    goes when it holds more): a resync from within them is complete and exact, one from
    before them says it is not complete (QRESYNC then answers from the client's UIDs)."""
    from pochta.store import index as index_module

    monkeypatch.setattr(index_module, "EXPUNGED_HISTORY", 8)
    uids = [store.deliver(ADDRESS, msg(i)).uid for i in range(30)]
    start = store.folder_changes(ADDRESS, INBOX, 0).highestmodseq
    marks: list[tuple[int, int]] = []  # (MODSEQ before the expunge, the UID expunged)
    for uid in uids[:20]:
        store.store_flags(ADDRESS, INBOX, [uid], FlagMode.ADD, frozenset({"\\Deleted"}))
        before = store.folder_changes(ADDRESS, INBOX, 0).highestmodseq
        assert store.expunge(ADDRESS, INBOX, [uid]) == [uid]
        marks.append((before, uid))
    index = AccountIndex(root(store) / INDEX_FILE)
    conn = index.conn()
    inbox = AccountIndex.folder(conn, INBOX)
    assert inbox is not None
    kept = conn.execute("SELECT count(*) FROM expunged WHERE folder_id = ?", (inbox.id,))
    assert kept.fetchone()[0] <= 8  # 40 changes, 20 expunges: the older ones are gone
    assert inbox.expunged_since > start
    index.close()
    old = store.folder_changes(ADDRESS, INBOX, start)
    assert not old.complete
    for before, _uid in marks:
        changes = store.folder_changes(ADDRESS, INBOX, before)
        if before < inbox.expunged_since:
            assert not changes.complete
            continue
        assert changes.complete
        assert list(changes.vanished) == [u for m, u in marks if m >= before]
