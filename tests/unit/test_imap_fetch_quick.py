"""FETCH without a thread (issue 18 point 1): the store's ``quick`` reads answer on the event
loop or say WouldBlock, the structure cache holds rendered ENVELOPE/BODYSTRUCTURE (older
blobs are still read and stored again), and BODY[] is served without parsing the message."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.access import imap_fetch, imap_mime
from pochta.access.imap_fetch import fetch_messages
from pochta.access.imap_mime import (
    MAX_DEPTH,
    body_structure,
    envelope,
    fetch_section,
    parse_structure,
)
from pochta.access.mailbox_view import MailboxView
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.fetch_items import FetchItem
from pochta.store import (
    INBOX,
    FlagMode,
    FolderChanges,
    MessageInfo,
    NoSuchMessage,
    StoreFlagsResult,
    WouldBlock,
)
from pochta.store.index import INDEX_FILE, AccountIndex
from pochta.store.maildir import QUICK_STORE_MAX, MaildirStore, read_file, to_wire

ADDRESS = "bob@example.test"
HOST = "mail.example.test"
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.test\r\nSubject: quick\r\n"
    b"Message-ID: <q1@example.org>\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
)


def _store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", hostname=HOST, flush_delay_seconds=None)


def _no_read(uid: int) -> bytes:
    raise AssertionError(f"message {uid} was read although the cache had it")


def test_quick_reads_would_block_until_the_account_is_open(tmp_path: Path) -> None:
    first = _store(tmp_path)
    uid = first.deliver(ADDRESS, MESSAGE).uid
    first.close()
    store = _store(tmp_path)  # a new process: the account is not open here yet
    with pytest.raises(WouldBlock):
        store.fetch_message(ADDRESS, INBOX, uid, quick=True)
    with pytest.raises(WouldBlock):
        store.cached_structures(ADDRESS, INBOX, [uid], quick=True)
    slow = store.fetch_message(ADDRESS, INBOX, uid)  # opens the account
    assert store.fetch_message(ADDRESS, INBOX, uid, quick=True) == slow == MESSAGE
    assert store.cached_structures(ADDRESS, INBOX, [uid], quick=True) == {}
    store.close()


def test_a_file_moved_by_another_program_needs_the_thread(tmp_path: Path) -> None:
    store = _store(tmp_path)
    uid = store.deliver(ADDRESS, MESSAGE).uid
    assert store.fetch_message(ADDRESS, INBOX, uid, quick=True) == MESSAGE
    inbox = store.account_root(ADDRESS)
    (name,) = os.listdir(inbox / "new")
    # mutt marks it read: new/NAME -> cur/NAME:2,S, which only a rescan finds.
    os.rename(inbox / "new" / name, inbox / "cur" / f"{name}:2,S")
    with pytest.raises(WouldBlock):
        store.fetch_message(ADDRESS, INBOX, uid, quick=True)
    assert store.fetch_message(ADDRESS, INBOX, uid) == MESSAGE
    assert store.fetch_message(ADDRESS, INBOX, uid, quick=True) == MESSAGE
    store.close()


def _view(store: MaildirStore) -> MailboxView:
    return MailboxView(INBOX, store.folder_changes(ADDRESS, INBOX, 0))


def test_the_structure_cache_holds_rendered_bytes_and_upgrades_old_blobs(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    uid = store.deliver(ADDRESS, MESSAGE).uid
    view = _view(store)
    items = [C.fetch_item("ENVELOPE"), C.fetch_item("BODYSTRUCTURE")]

    def fetch(cached: dict[int, bytes], read=_no_read):  # type: ignore[no-untyped-def]
        return fetch_messages(
            view, [uid], items, read=read, cached=cached, with_uid=True, with_modseq=False
        )

    computed = fetch({}, read=lambda u: store.fetch_message(ADDRESS, INBOX, u))
    (line,) = computed.responses
    assert b'ENVELOPE (NIL "quick" (("Alice" NIL "alice" "example.org"))' in line
    current = computed.new_cache[uid]
    assert msgspec.msgpack.decode(current)[0] == imap_fetch.CACHE_VERSION

    again = fetch({uid: current})  # the current version: no file read, nothing to store
    assert again.responses == [line]
    assert again.new_cache == {}

    part = parse_structure(MESSAGE)
    old = msgspec.msgpack.encode(
        [
            1,
            envelope(part),
            body_structure(part, False, MESSAGE),
            body_structure(part, True, MESSAGE),
        ]
    )
    served = fetch({uid: old})  # version 1 (IMAP values): rendered, no file read
    assert served.responses == [line]
    assert served.new_cache == {}
    broken = fetch({uid: b"\x93not msgpack"}, read=lambda u: MESSAGE)  # unreadable: computed
    assert broken.responses == [line]
    items.append(C.fetch_item("BODY.PEEK[HEADER.FIELDS (SUBJECT)]"))
    read = lambda u: store.fetch_message(ADDRESS, INBOX, u)  # noqa: E731
    with_header = fetch({}, read=read)
    for older in (old, msgspec.msgpack.encode([2, *msgspec.msgpack.decode(current)[1:4]])):
        # It has no header block: the message is read, and the blob stored in this version.
        upgraded = fetch({uid: older}, read=read)
        assert upgraded.responses == with_header.responses
        assert upgraded.new_cache == {uid: current}

    store.close()


def test_body_and_rfc822_whole_are_served_without_a_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    uid = store.deliver(ADDRESS, MESSAGE).uid
    view = _view(store)
    parses: list[int] = []
    real = parse_structure

    def counting(raw: bytes, depth: int = 0):  # type: ignore[no-untyped-def]
        parses.append(len(raw))
        return real(raw, depth=depth)

    monkeypatch.setattr(imap_fetch, "parse_structure", counting)

    def fetch(*texts: str) -> bytes:
        result = fetch_messages(
            view,
            [uid],
            [C.fetch_item(t) for t in texts],
            read=lambda u: MESSAGE,
            cached={},
            with_uid=False,
            with_modseq=False,
        )
        return result.responses[0]

    literal = b"{%d}\r\n" % len(MESSAGE) + MESSAGE
    assert fetch("BODY.PEEK[]", "RFC822") == (
        b"* 1 FETCH (BODY[] " + literal + b" RFC822 " + literal + b")\r\n"
    )
    assert parses == []
    assert b"BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: quick\r\n\r\n" in fetch(
        "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"
    )
    assert parses == [len(MESSAGE)]
    store.close()


_HEADER_LINE = st.tuples(
    st.sampled_from(["Subject", "From", "X-Long", "Content-Type", "To"]),
    st.lists(st.text(alphabet="abc xyz;=\t", min_size=0, max_size=12), min_size=1, max_size=3),
)


@given(
    headers=st.lists(_HEADER_LINE, max_size=6),
    multipart=st.booleans(),
    body=st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
)
def test_top_level_sections_read_without_the_mime_tree_are_the_same(
    headers: list[tuple[str, list[str]]], multipart: bool, body: bytes
) -> None:
    """HEADER, HEADER.FIELDS and TEXT of the top level, from the shallow parse FETCH now
    makes, equal what the full parse of the MIME tree gives; folded fields unfold alike."""
    head = b"".join(
        name.encode() + b": " + "\r\n ".join(pieces).encode() + b"\r\n" for name, pieces in headers
    )
    if multipart:
        head += b"Content-Type: multipart/mixed; boundary=XX\r\n"
        body = b"--XX\r\nContent-Type: text/plain\r\n\r\n" + body + b"\r\n--XX--\r\n"
    raw = head + b"\r\n" + body
    full = parse_structure(raw)
    shallow = parse_structure(raw, depth=MAX_DEPTH)
    assert shallow.fields == full.fields
    for unfolded in (value for _, value, _, _ in full.fields):
        assert b"\r\n" not in unfolded
    for text, fields in (("HEADER", ()), ("TEXT", ()), ("HEADER.FIELDS", ("SUBJECT", "X-LONG"))):
        assert fetch_section(raw, shallow, (), text, fields) == fetch_section(
            raw, full, (), text, fields
        )


def test_status_and_list_reads_are_quick_until_they_need_the_disk(tmp_path: Path) -> None:
    """STATUS and LIST read on the event loop (``quick``): WouldBlock while the account is not
    open here, when a folder changed on disk needs a rescan, and for a \\Recent claim that
    would have to write."""
    first = _store(tmp_path)
    uid = first.deliver(ADDRESS, MESSAGE).uid
    first.close()
    store = _store(tmp_path)
    for call in (
        lambda: store.list_folders(ADDRESS, quick=True),
        lambda: store.list_subscriptions(ADDRESS, quick=True),
        lambda: store.list_messages(ADDRESS, INBOX, quick=True),
        lambda: store.claim_recent(ADDRESS, INBOX, 0, claim=False, quick=True),
    ):
        with pytest.raises(WouldBlock):
            call()
    assert store.list_folders(ADDRESS)[0].name == INBOX  # opens the account
    assert store.list_folders(ADDRESS, quick=True) == store.list_folders(ADDRESS)
    assert store.list_subscriptions(ADDRESS, quick=True) == store.list_subscriptions(ADDRESS)
    assert [m.uid for m in store.list_messages(ADDRESS, INBOX, quick=True)] == [uid]
    assert store.claim_recent(ADDRESS, INBOX, 0, claim=False, quick=True) == 0
    other = sqlite3.connect(store.account_root(ADDRESS) / INDEX_FILE, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writes: the claim would wait
    with pytest.raises(WouldBlock):
        store.claim_recent(ADDRESS, INBOX, uid, claim=True, quick=True)
    other.execute("ROLLBACK")
    other.close()
    assert store.claim_recent(ADDRESS, INBOX, uid, claim=True, quick=True) == 0  # claimed now
    assert store.claim_recent(ADDRESS, INBOX, uid, claim=True, quick=True) == uid
    assert store.claim_recent(ADDRESS, INBOX, uid, claim=True) == uid

    inbox = store.account_root(ADDRESS)
    (tmp_path / "other").write_bytes(b"Subject: dropped in by another program\r\n\r\nx\r\n")
    os.rename(tmp_path / "other", inbox / "new" / "1700000000.M1P1.elsewhere")
    os.utime(inbox / "new", ns=(0, 2_000_000_000_000_000_000))  # the dir's mtime moved on
    with pytest.raises(WouldBlock):
        store.list_messages(ADDRESS, INBOX, quick=True)
    assert len(store.list_messages(ADDRESS, INBOX)) == 2  # the thread's call rescans
    assert len(store.list_messages(ADDRESS, INBOX, quick=True)) == 2
    store.close()


def test_a_reader_asks_the_index_once_per_run_and_sees_an_expunge_made_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``message_reader`` (one FETCH's run of messages): one PRAGMA data_version for the run
    once the names are cached, not one per message; a reader made after another process
    expunged a message does not serve it, although its file waits for the flush."""
    store = _store(tmp_path)
    uids = [store.deliver(ADDRESS, MESSAGE + b"%d\r\n" % n).uid for n in range(20)]
    store.message_reader(ADDRESS, INBOX)(uids[0])  # opens the account, caches the names
    checks = 0
    real = MaildirStore._data_version

    def counted(account: object, *, open_probe: bool) -> int | None:
        nonlocal checks
        checks += 1
        return real(account, open_probe=open_probe)  # type: ignore[arg-type]

    monkeypatch.setattr(MaildirStore, "_data_version", staticmethod(counted))
    read = store.message_reader(ADDRESS, INBOX, quick=True)
    assert [read(u) for u in uids] == [MESSAGE + b"%d\r\n" % n for n in range(20)]
    assert checks == 1
    checks = 0
    assert [store.fetch_message(ADDRESS, INBOX, u, quick=True) for u in uids[:5]]
    assert checks == 5  # one per call without a reader

    other = MaildirStore(tmp_path / "mail", hostname=HOST, flush_delay_seconds=3600)
    store_flags_and_expunge(other, uids[3])
    read = store.message_reader(ADDRESS, INBOX)
    assert read(uids[2]) == MESSAGE + b"2\r\n"
    with pytest.raises(NoSuchMessage):
        read(uids[3])
    other.close()
    store.close()


def store_flags_and_expunge(store: MaildirStore, uid: int) -> None:
    store.store_flags(ADDRESS, INBOX, [uid], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert store.expunge(ADDRESS, INBOX) == [uid]


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=600_000))
def test_read_file_reads_the_whole_file(pattern: bytes, size: int) -> None:
    """Any size, across read_file's 256 KiB reads (up to 600,000 octets)."""
    data = (pattern * (size // len(pattern) + 1))[:size]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m")
        Path(path).write_bytes(data)
        assert read_file(path) == data


def test_to_wire_gives_crlf_line_ends_from_either_kind() -> None:
    assert to_wire(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"
    assert to_wire(b"") == b""


def _one_message(size: int) -> FolderChanges:
    info = MessageInfo(
        uid=1, flags=frozenset(), keywords=frozenset(), internal_date=1e9, size=size, modseq=1
    )
    return FolderChanges(
        uidvalidity=1, uidnext=2, highestmodseq=1, changed=(info,), vanished=(), complete=True
    )


HEADER_ITEMS = [
    "RFC822.HEADER",
    "BODY.PEEK[HEADER]",
    "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]",
    "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
    "BODY.PEEK[HEADER.FIELDS (X-MISSING)]<1.5>",
    "BODY.PEEK[HEADER]<0.7>",
]
_line = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@given(
    fields=st.lists(
        st.tuples(st.sampled_from(["Subject", "From", "X-A", "subject"]), _line, st.booleans()),
        max_size=6,
    ),
    body=st.sampled_from([b"", b"body\r\n", b"\r\nafter a blank line\r\n"]),
    blank=st.booleans(),
    item=st.sampled_from(HEADER_ITEMS),
    pad=st.sampled_from([0, 9000]),
)
def test_header_items_from_the_cache_are_the_octets_of_the_message(
    fields: list[tuple[str, str, bool]], body: bytes, blank: bool, item: str, pad: int
) -> None:
    """BODY[HEADER...] and RFC822.HEADER (RFC 9051 §6.4.5) answered from the cached header
    block, with no read, are what the message itself gives; a header over HEADER_CACHE_MAX
    is not kept, so the message is read each time."""
    header = b"".join(
        f"{name}: {value}\r\n".encode() + (b"\tfolded\r\n" if folded else b"")
        for name, value, folded in fields
    )
    header += b"X-Pad: " + b"x" * pad + b"\r\n" if pad else b""
    message = header + (b"\r\n" + body if blank else b"")
    view = MailboxView(INBOX, _one_message(len(message)))
    items = [C.fetch_item(item)]

    def fetch(
        cached: dict[int, bytes], read: Callable[[int], bytes] = _no_read
    ) -> imap_fetch.FetchResult:
        return fetch_messages(
            view, [1], items, read=read, cached=cached, with_uid=False, with_modseq=False
        )

    first = fetch({}, read=lambda u: message)
    blob = first.new_cache[1]
    if len(header) + (2 if blank else 0) <= imap_fetch.HEADER_CACHE_MAX:
        assert fetch({1: blob}).responses == first.responses
        assert imap_fetch.cache_serves(imap_fetch.decode_cache(blob), header=True)
    else:
        assert not imap_fetch.cache_serves(imap_fetch.decode_cache(blob), header=True)
        again = fetch({1: blob}, read=lambda u: message)
        assert again.responses == first.responses
        assert again.new_cache == {}  # a current blob: not stored again


def test_a_whole_header_from_the_cache_parses_no_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC822.HEADER and BODY[HEADER] are the cached block as it is: its fields are split
    only for HEADER.FIELDS (.NOT)."""
    view = MailboxView(INBOX, _one_message(len(MESSAGE)))

    def fetch(
        names: list[str], cached: dict[int, bytes], read: Callable[[int], bytes] = _no_read
    ) -> imap_fetch.FetchResult:
        items = [C.fetch_item(name) for name in names]
        return fetch_messages(
            view, [1], items, read=read, cached=cached, with_uid=False, with_modseq=False
        )

    blob = fetch(["BODY.PEEK[HEADER]"], {}, read=lambda u: MESSAGE).new_cache[1]
    splits: list[int] = []
    real = imap_mime._fields

    def counted(raw: bytes, start: int, stop: int) -> list[tuple[str, bytes, int, int]]:
        splits.append(stop - start)
        return real(raw, start, stop)

    monkeypatch.setattr(imap_mime, "_fields", counted)
    odd = MESSAGE.replace(b"Subject", b"a line that is no field\r\nSubject")
    odd_blob = fetch(["BODY.PEEK[HEADER]"], {}, read=lambda u: odd).new_cache[1]
    for names, cached, parsed in (
        (["RFC822.HEADER"], blob, 0),
        (["BODY.PEEK[HEADER]<0.7>"], blob, 0),
        # HEADER.FIELDS (.NOT) are cut by a pattern from a header of fields only ...
        (["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"], blob, 0),
        (["BODY.PEEK[HEADER]", "BODY.PEEK[HEADER.FIELDS.NOT (TO)]"], blob, 0),
        # ... and split from any other.
        (["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"], odd_blob, 1),
        (["BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "BODY.PEEK[HEADER.FIELDS (TO)]"], odd_blob, 1),
    ):
        splits.clear()
        result = fetch(names, {1: cached})
        assert len(splits) == parsed, names
        assert result.responses[0].startswith(b"* 1 FETCH (")


_FIELD_NAMES = ["Subject", "SUBJECT", "From", "To", "To-X", "X.Y", "k", "K"]
_HEADER_LINE = st.one_of(
    st.tuples(st.sampled_from(_FIELD_NAMES), st.sampled_from([": ", ":", " : ", "\t:"]), _line).map(
        lambda t: "".join(t).encode() + b"\r\n"
    ),  # a field
    st.sampled_from([b" folded\r\n", b"\tfolded: too\r\n"]),  # folds the field before
    st.sampled_from([b"no colon here\r\n", b"To\rX: bare CR\r\n", b"A: bare\nLF\r\n"]),
    st.sampled_from([b"Subject: no CRLF", b"\r\n", b": no name\r\n"]),
)
_ASKED = st.lists(
    st.sampled_from(
        ["subject", "FROM", "to", "to-x", "x.y", "X-Missing", "\u212a", "to:", "from x", "é"]
    ),
    min_size=1,
    max_size=4,
)


@given(lines=st.lists(_HEADER_LINE, max_size=8), asked=_ASKED, exclude=st.booleans())
def test_fields_cut_by_a_pattern_are_the_fields_split_one_by_one(
    lines: list[bytes], asked: list[str], exclude: bool
) -> None:
    """``select_fields`` gives the octets ``fetch_section`` gives from the split fields, or
    None, for any header: folded fields, lines that are no field, bare CR or LF, a last line
    without CRLF, names asked in any case, names that are no field name (the Kelvin sign
    lowers to an ASCII "k")."""
    header = b"".join(lines)
    text = "HEADER.FIELDS.NOT" if exclude else "HEADER.FIELDS"
    split = fetch_section(header, imap_mime.header_part(header), (), text, tuple(asked))
    cut = imap_mime.select_fields(header, tuple(asked), exclude=exclude)
    assert cut is None or cut == split


@given(
    fields=st.lists(
        st.tuples(st.sampled_from(_FIELD_NAMES), _line, st.booleans()), min_size=1, max_size=8
    ),
    blank=st.booleans(),
    asked=_ASKED,
    exclude=st.booleans(),
)
def test_a_header_of_fields_only_is_cut_by_the_pattern(
    fields: list[tuple[str, str, bool]], blank: bool, asked: list[str], exclude: bool
) -> None:
    """Every header whose lines are all fields or folds, ended by CRLF, takes the pattern's
    path (it never falls back), with the same octets as the split."""
    header = b"".join(
        f"{name}: {value}\r\n".encode() + (b" folded\r\n" if folded else b"")
        for name, value, folded in fields
    ) + (b"\r\n" if blank else b"")
    text = "HEADER.FIELDS.NOT" if exclude else "HEADER.FIELDS"
    split = fetch_section(header, imap_mime.header_part(header), (), text, tuple(asked))
    assert imap_mime.select_fields(header, tuple(asked), exclude=exclude) == split


def test_an_expunge_of_nothing_is_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXPUNGE, UID EXPUNGE and CLOSE with nothing flagged \\Deleted (among the UIDs) answer
    on the event loop from the messages_deleted index, with no write; anything to remove
    is removed there too, in a commit without an fsync that ``sync_quick_writes`` makes
    durable (one fdatasync of the index's journal); while the index is being written, the
    quick call WouldBlock and the thread's call removes it."""
    store = _store(tmp_path)
    uids = [store.deliver(ADDRESS, MESSAGE).uid for _ in range(300)]
    store.list_messages(ADDRESS, INBOX)  # opens the account
    index = store._accounts[ADDRESS].index
    assert store.expunge(ADDRESS, INBOX, quick=True) == []
    store.store_flags(ADDRESS, INBOX, uids[7:9], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert store.expunge(ADDRESS, INBOX, uids[:5], quick=True) == []
    assert not store.quick_writes_pending(ADDRESS)
    durable = index.commits
    assert store.expunge(ADDRESS, INBOX, uids[5:8], quick=True) == [uids[7]]
    assert index.commits == durable  # no fsync yet
    assert store.quick_writes_pending(ADDRESS)
    synced: list[str] = []
    real_sync = os.fdatasync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_sync(fd)

    monkeypatch.setattr("pochta.store.index.os.fdatasync", recorded)
    store.sync_quick_writes(ADDRESS)
    assert synced == [f"{index.path}-wal"]
    assert not store.quick_writes_pending(ADDRESS)
    store.sync_quick_writes(ADDRESS)  # nothing new: no fsync
    assert len(synced) == 1
    account = store._accounts[ADDRESS]
    with account.write_lock, pytest.raises(WouldBlock):  # a thread's batch is being written
        store.expunge(ADDRESS, INBOX, quick=True)
    assert store.expunge(ADDRESS, INBOX) == [uids[8]]
    assert store.expunge(ADDRESS, INBOX, quick=True) == []

    conn = sqlite3.connect(store.account_root(ADDRESS) / INDEX_FILE)
    assert AccountIndex.has_deleted(conn, 1, None) is False  # the schema is read
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(step, 1)
    assert AccountIndex.has_deleted(conn, 1, None) is False
    conn.close()
    assert steps < 50  # the index of \Deleted messages, not a walk over the 300
    store.close()


def test_a_quick_store_writes_only_a_change(tmp_path: Path) -> None:
    """STORE of flags a message has already (or -FLAGS of ones it lacks) answers on the event
    loop with no write and no MODSEQ; a change, UNCHANGEDSINCE included, is written there
    with one MODSEQ per operation and no fsync (pending until ``sync_quick_writes``); a
    large set needs the thread's call."""
    store = _store(tmp_path)
    uids = [store.deliver(ADDRESS, MESSAGE).uid for _ in range(3)]
    store.store_flags(ADDRESS, INBOX, uids[:2], FlagMode.ADD, frozenset({"\\Seen", "$Work"}))
    index = store._accounts[ADDRESS].index
    before = {m.uid: m.modseq for m in store.list_messages(ADDRESS, INBOX)}
    for mode, flags, among in (
        (FlagMode.ADD, {"\\Seen"}, uids[:2]),
        (FlagMode.ADD, {"$work"}, uids[:2]),  # keywords compare case-insensitively
        (FlagMode.REMOVE, {"\\Flagged", "$Other"}, uids),
        (FlagMode.REPLACE, {"\\Seen", "$Work"}, uids[:2]),
    ):
        result = store.store_flags(ADDRESS, INBOX, among, mode, frozenset(flags), quick=True)
        assert result == StoreFlagsResult(())
    assert {m.uid: m.modseq for m in store.list_messages(ADDRESS, INBOX)} == before
    assert not store.quick_writes_pending(ADDRESS)
    durable = index.commits
    top = max(before.values())
    result = store.store_flags(
        ADDRESS, INBOX, uids, FlagMode.ADD, frozenset({"\\Seen"}), quick=True
    )
    assert [(u.uid, u.modseq) for u in result.updated] == [(uids[2], top + 1)]
    assert index.commits == durable
    assert store.quick_writes_pending(ADDRESS)
    late = store.store_flags(
        ADDRESS,
        INBOX,
        [uids[0], uids[2]],
        FlagMode.ADD,
        frozenset({"\\Flagged"}),
        unchanged_since=before[uids[0]],
        quick=True,
    )
    assert late.failed == (uids[2],)  # changed after the client looked (RFC 7162 §3.1.3)
    assert [(u.uid, u.modseq) for u in late.updated] == [(uids[0], top + 2)]
    store.sync_quick_writes(ADDRESS)
    assert not store.quick_writes_pending(ADDRESS)
    flags = {m.uid: m.flags for m in store.list_messages(ADDRESS, INBOX)}
    assert flags[uids[0]] == {"\\Seen", "\\Flagged"}
    with pytest.raises(WouldBlock):
        store.store_flags(
            ADDRESS,
            INBOX,
            list(range(1, QUICK_STORE_MAX + 2)),
            FlagMode.ADD,
            frozenset({"\\Seen"}),
            quick=True,
        )
    store.close()


def test_sessions_woken_by_one_change_share_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a change, every session of the folder asks what changed since the same MODSEQ:
    the first one reads the index, the others get its answer from memory until anyone
    writes again; a session asking from elsewhere reads."""
    store = _store(tmp_path)
    uids = [store.deliver(ADDRESS, MESSAGE).uid for _ in range(3)]
    since = store.folder_changes(ADDRESS, INBOX, 0).highestmodseq
    reads: list[int] = []
    real = AccountIndex.summaries

    def counted(conn: sqlite3.Connection, folder_id: int, modseq: int = -1) -> list:  # type: ignore[type-arg]
        reads.append(modseq)
        return real(conn, folder_id, modseq)

    monkeypatch.setattr(AccountIndex, "summaries", staticmethod(counted))
    store.store_flags(ADDRESS, INBOX, uids[1:2], FlagMode.ADD, frozenset({"\\Flagged"}))
    first = store.folder_changes(ADDRESS, INBOX, since, quick=True)
    assert [m.uid for m in first.changed] == [uids[1]]
    assert reads == [since]
    for _ in range(5):  # the other sessions
        assert store.folder_changes(ADDRESS, INBOX, since, quick=True) == first
    assert reads == [since]
    later = store.folder_changes(ADDRESS, INBOX, first.highestmodseq, quick=True)
    assert later.changed == ()  # from the newest MODSEQ: nothing, from memory
    assert store.folder_changes(ADDRESS, INBOX, since - 1, quick=True).changed != ()
    assert reads == [since, since - 1]
    # A session a step behind the read's MODSEQ gets the newer part of it.
    newer = store.folder_changes(ADDRESS, INBOX, since, quick=True)
    assert newer.changed == first.changed
    assert reads == [since, since - 1]
    store.store_flags(ADDRESS, INBOX, uids[:1], FlagMode.ADD, frozenset({"\\Flagged"}))
    again = store.folder_changes(ADDRESS, INBOX, since - 1, quick=True)
    assert [m.uid for m in again.changed] == uids  # the third was delivered at `since`
    assert reads == [since, since - 1, since - 1]
    store.close()


_CHANGE = st.one_of(
    st.tuples(st.just("flag"), st.integers(0, 5), st.sampled_from(["\\Flagged", "$A"])),
    st.tuples(st.just("deliver"), st.just(0), st.just("")),
    st.tuples(st.just("expunge"), st.integers(0, 5), st.just("")),
)


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(_CHANGE, st.integers(0, 12)), min_size=1, max_size=8))
def test_changes_from_memory_are_what_the_index_says(
    steps: list[tuple[tuple[str, int, str], int]],
) -> None:
    """Whatever was read last and from where, an answer of ``changes_if_cached`` from any
    MODSEQ is the answer a read of the index gives."""
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp))
        uids = [store.deliver(ADDRESS, MESSAGE).uid for _ in range(3)]
        store.folder_changes(ADDRESS, INBOX, 0)  # a SELECT: opens the data_version probe
        hits = 0
        for (kind, pick, flag), read_from in steps:
            if kind == "deliver":
                uids.append(store.deliver(ADDRESS, MESSAGE).uid)
            elif uids:
                uid = uids[pick % len(uids)]
                if kind == "flag":
                    store.store_flags(ADDRESS, INBOX, [uid], FlagMode.ADD, frozenset({flag}))
                else:
                    store.store_flags(ADDRESS, INBOX, [uid], FlagMode.ADD, frozenset({"\\Deleted"}))
                    store.expunge(ADDRESS, INBOX, [uid])
                    uids.remove(uid)
            top = store.folder_changes(ADDRESS, INBOX, read_from, quick=True).highestmodseq
            for ask_from in range(top + 2):
                cached = store.changes_if_cached(ADDRESS, INBOX, ask_from)
                if cached is not None:
                    hits += 1
                    assert cached == store.folder_changes(ADDRESS, INBOX, ask_from), ask_from
        assert hits  # from the newest MODSEQ at least
        store.close()


def test_a_listing_from_nothing_reads_no_expunges(tmp_path: Path) -> None:
    """``folder_changes`` from MODSEQ 0 (a SELECT) lists every message and no vanished UIDs:
    the caller knew none. Its cost then does not grow with every expunge the folder had."""
    store = _store(tmp_path)
    uids = [store.deliver(ADDRESS, MESSAGE).uid for _ in range(4)]
    store.store_flags(ADDRESS, INBOX, uids[:3], FlagMode.ADD, frozenset({"\\Deleted"}))
    assert store.expunge(ADDRESS, INBOX) == uids[:3]
    whole = store.folder_changes(ADDRESS, INBOX, 0)
    assert [m.uid for m in whole.changed] == uids[3:]
    assert whole.vanished == ()
    assert whole.complete
    assert store.folder_changes(ADDRESS, INBOX, 1).vanished == tuple(uids[:3])
    store.close()


_META_ITEMS = [
    FetchItem(kind, name=kind) for kind in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ")
]
_FLAG_SETS = st.frozensets(st.sampled_from(["\\Seen", "\\Flagged", "\\Deleted", "\\Answered"]))


@given(
    stored=st.lists(
        st.tuples(_FLAG_SETS, st.frozensets(st.sampled_from(["$Forwarded", "$Junk"]))),
        max_size=30,
    ),
    asked=st.lists(st.integers(1, 40), max_size=40),
    items=st.lists(st.sampled_from(_META_ITEMS), min_size=1, max_size=6),
    with_uid=st.booleans(),
    with_modseq=st.booleans(),
    show_recent=st.booleans(),
    recent=st.sets(st.integers(1, 40)),
    newer=st.dictionaries(st.integers(1, 40), _FLAG_SETS, max_size=5),
)
def test_a_fetch_of_what_the_view_holds_answers_as_the_general_path(
    stored: list[tuple[frozenset[str], frozenset[str]]],
    asked: list[int],
    items: list[FetchItem],
    with_uid: bool,
    with_modseq: bool,
    show_recent: bool,
    recent: set[int],
    newer: dict[int, frozenset[str]],
) -> None:
    """FLAGS, UID, INTERNALDATE, RFC822.SIZE and MODSEQ in any order and number (the
    one-pass path, ``fetch_metadata``) give the bytes the per-message path gives: the same
    sequence numbers, the UIDs not in the view left out, UID first and MODSEQ last when
    the command adds them, \\Recent only where shown, and flag states newer than the view."""
    # Every other UID: the view's sequence numbers are not its UIDs.
    infos = [
        MessageInfo(
            uid=2 * n + 1,
            flags=flags,
            keywords=keywords,
            internal_date=1.7e9 + 3600.5 * n,
            size=100 + n,
            modseq=5 + n,
        )
        for n, (flags, keywords) in enumerate(stored)
    ]
    changes = FolderChanges(
        uidvalidity=7,
        uidnext=2 * len(stored) + 1,
        highestmodseq=99,
        changed=tuple(infos),
        vanished=(),
        complete=True,
    )
    view = MailboxView(INBOX, changes)
    view.recent = recent
    fresh = {
        uid: MessageInfo(uid, flags, frozenset(), 1.7e9, 1, 100)
        for uid, flags in newer.items()
        if uid in view.info
    }
    assert imap_fetch.only_metadata(items)
    quick = imap_fetch.fetch_metadata(
        view,
        asked,
        items,
        with_uid=with_uid,
        with_modseq=with_modseq,
        infos=fresh,
        show_recent=show_recent,
    )
    general = fetch_messages(
        view,
        asked,
        items,
        read=_no_read,
        cached={},
        with_uid=with_uid,
        with_modseq=with_modseq,
        infos=fresh,
        show_recent=show_recent,
    )
    assert quick.responses == general.responses
    assert quick.new_cache == {}
    assert quick.gone == []
    shown = [uid for uid in asked if uid in view.info]
    assert len(quick.responses) == len(shown)
