"""FETCH without a thread (issue 18 point 1): the store's ``quick`` reads answer on the event
loop or say WouldBlock, the structure cache holds rendered ENVELOPE/BODYSTRUCTURE (older
blobs are still read and stored again), and BODY[] is served without parsing the message."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from pochta.access import imap_fetch
from pochta.access.imap_fetch import fetch_messages
from pochta.access.imap_mime import body_structure, envelope, parse_structure
from pochta.access.mailbox_view import MailboxView
from pochta.protocols.imap import commands as C
from pochta.store import INBOX, WouldBlock
from pochta.store.maildir import MaildirStore

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
    upgraded = fetch({uid: old})  # version 1 (IMAP values): rendered, and stored again
    assert upgraded.responses == [line]
    assert upgraded.new_cache == {uid: current}

    broken = fetch({uid: b"\x93not msgpack"}, read=lambda u: MESSAGE)  # unreadable: computed
    assert broken.responses == [line]
    store.close()


def test_body_and_rfc822_whole_are_served_without_a_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    uid = store.deliver(ADDRESS, MESSAGE).uid
    view = _view(store)
    parses: list[int] = []
    real = parse_structure

    def counting(raw: bytes):  # type: ignore[no-untyped-def]
        parses.append(len(raw))
        return real(raw)

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
