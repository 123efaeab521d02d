"""The store's IMAP support: change feeds (CONDSTORE/QRESYNC), the full-text index, and the
structure cache, on the Maildir backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.store import FlagMode, StoreError
from pochta.store.maildir import MaildirStore

HOST = "mx.example.test"
USER = "ann@example.test"


def split_text(stored: bytes) -> tuple[str, str]:
    """A plain test extractor: header block and body, as text."""
    text = stored.replace(b"\r\n", b"\n").decode("utf-8", "replace")
    head, _, body = text.partition("\n\n")
    return head, body


def message(subject: str, body: str) -> bytes:
    return f"From: bob@example.org\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MaildirStore]:
    s = MaildirStore(tmp_path / "mail", hostname=HOST, text_extractor=split_text)
    yield s
    s.close()


def test_folder_changes_report_new_changed_and_vanished(store: MaildirStore) -> None:
    a = store.deliver(USER, message("one", "first"))
    b = store.deliver(USER, message("two", "second"))
    start = store.folder_changes(USER, "INBOX", 0)
    assert [m.uid for m in start.changed] == [a.uid, b.uid]
    assert start.vanished == ()
    assert start.complete
    since = start.highestmodseq
    assert store.folder_changes(USER, "INBOX", since).changed == ()

    store.store_flags(USER, "INBOX", [a.uid], FlagMode.ADD, frozenset({"\\Deleted"}))
    c = store.deliver(USER, message("three", "third"))
    changes = store.folder_changes(USER, "INBOX", since)
    assert [m.uid for m in changes.changed] == [a.uid, c.uid]
    assert "\\Deleted" in changes.changed[0].flags
    assert changes.highestmodseq > since

    since = changes.highestmodseq
    assert store.expunge(USER, "INBOX") == [a.uid]
    after = store.folder_changes(USER, "INBOX", since)
    assert after.vanished == (a.uid,)
    assert after.changed == ()
    assert after.uidnext == c.uid + 1


def test_text_search_is_a_casefolded_substring_match(store: MaildirStore) -> None:
    a = store.deliver(USER, message("Trip to Zanzibar", "Meet at the ÉCOLE at noon"))
    b = store.deliver(USER, message("Lunch", "zanzibar spices, no school"))
    assert store.search_text(USER, "INBOX", "ZANZIB", headers=True, body=True) == {a.uid, b.uid}
    assert store.search_text(USER, "INBOX", "zanzib", headers=True, body=False) == {a.uid}
    assert store.search_text(USER, "INBOX", "zanzib", headers=False, body=True) == {b.uid}
    assert store.search_text(USER, "INBOX", "école", headers=False, body=True) == {a.uid}
    # Shorter than a trigram: scanned, same semantics.
    assert store.search_text(USER, "INBOX", "NO", headers=False, body=True) == {a.uid, b.uid}
    assert store.search_text(USER, "INBOX", "qq", headers=True, body=True) == set()
    assert store.search_text(USER, "INBOX", 'say "hi"', headers=True, body=True) == set()


def test_copy_carries_the_text_and_expunge_drops_it(store: MaildirStore) -> None:
    store.create_folder(USER, "Archive.2026")
    a = store.deliver(USER, message("Budget", "the numbers for kilimanjaro"))
    copied = store.copy(USER, "INBOX", [a.uid], "Archive.2026")
    ((_, new_uid),) = copied.pairs
    assert store.search_text(USER, "Archive.2026", "kilimanjaro", headers=True, body=True) == {
        new_uid
    }
    store.store_flags(USER, "INBOX", [a.uid], FlagMode.ADD, frozenset({"\\Deleted"}))
    store.expunge(USER, "INBOX")
    assert store.search_text(USER, "INBOX", "kilimanjaro", headers=True, body=True) == set()
    moved = store.move(USER, "Archive.2026", [new_uid], "INBOX")
    ((_, back),) = moved.pairs
    assert store.search_text(USER, "INBOX", "kilimanjaro", headers=True, body=True) == {back}


def test_mail_delivered_before_the_index_is_indexed_at_the_first_search(tmp_path: Path) -> None:
    plain = MaildirStore(tmp_path / "mail", hostname=HOST)
    a = plain.deliver(USER, message("Old", "delivered by a store without an extractor"))
    with pytest.raises(StoreError, match="full-text"):
        plain.search_text(USER, "INBOX", "extractor", headers=True, body=True)
    plain.close()
    store = MaildirStore(tmp_path / "mail", hostname=HOST, text_extractor=split_text)
    assert store.search_text(USER, "INBOX", "EXTRACTOR", headers=False, body=True) == {a.uid}
    store.close()


def test_structure_cache_round_trip(store: MaildirStore) -> None:
    a = store.deliver(USER, message("one", "x"))
    b = store.deliver(USER, message("two", "y"))
    assert store.cached_structures(USER, "INBOX", [a.uid, b.uid]) == {}
    store.cache_structures(USER, "INBOX", {a.uid: b"\x93blob"})
    assert store.cached_structures(USER, "INBOX", [a.uid, b.uid]) == {a.uid: b"\x93blob"}


def test_deferred_index_is_filled_by_index_pending_or_by_the_search(tmp_path: Path) -> None:
    s = MaildirStore(
        tmp_path / "mail", hostname=HOST, text_extractor=split_text, index_at_delivery=False
    )
    try:
        s.deliver(USER, message("one", "zanzibar first"))
        s.deliver(USER, message("two", "zanzibar second"))
        assert s.index_pending(USER, "INBOX") == 2
        assert s.index_pending(USER, "INBOX") == 0  # nothing left
        third = s.deliver(USER, message("three", "zanzibar third"))
        # Not indexed yet: the search indexes it before it answers.
        found = s.search_text(USER, "INBOX", "zanzibar", headers=False, body=True)
        assert len(found) == 3
        assert third.uid in found
        assert s.index_pending(USER, "INBOX") == 0
    finally:
        s.close()
