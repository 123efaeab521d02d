"""The Bayes token statistics in the directory database (spam/bayes_store.py) and the
trainer over it (spam/training.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.directory.sqlite import SqliteDirectory
from pochta.spam.bayes import Counts, token_hashes
from pochta.spam.bayes_store import GLOBAL, BayesStore
from pochta.spam.message import ScanMessage
from pochta.spam.training import Trainer, Unreadable, transfer_signal

SPAM = b"From: x@spam.example\r\nSubject: win money\r\nMessage-ID: <1@spam>\r\n\r\ncasino prize\r\n"
HAM = b"From: y@ham.example\r\nSubject: agenda\r\nMessage-ID: <2@ham>\r\n\r\nproject review\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BayesStore]:
    directory = SqliteDirectory(tmp_path / "directory.sqlite")  # the tables live beside it
    directory.close()
    s = BayesStore(tmp_path / "directory.sqlite")
    yield s
    s.close()


def test_tables_in_the_directory_database_in_wal_mode(store: BayesStore, tmp_path: Path) -> None:
    Trainer(store).learn(SPAM, spam=True)
    conn = sqlite3.connect(tmp_path / "directory.sqlite")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"bayes_scopes", "bayes_tokens", "bayes_learned", "accounts"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_learn_counts_tokens_and_messages(store: BayesStore) -> None:
    trainer = Trainer(store)
    assert trainer.learn(SPAM, spam=True) == "learned"
    assert trainer.learn(HAM, spam=False) == "learned"
    assert store.scope_counts(GLOBAL) == Counts(1, 1)
    tokens = token_hashes(ScanMessage(SPAM))
    counts = store.token_counts(GLOBAL, tokens)
    assert set(counts) == set(tokens)
    assert all(spam == 1 for spam, _ in counts.values())


def test_learning_twice_does_nothing(store: BayesStore) -> None:
    trainer = Trainer(store)
    trainer.learn(SPAM, spam=True)
    before = store.token_counts(GLOBAL, token_hashes(ScanMessage(SPAM)))
    assert trainer.learn(SPAM, spam=True) == "known"
    assert store.scope_counts(GLOBAL) == Counts(1, 0)
    assert store.token_counts(GLOBAL, token_hashes(ScanMessage(SPAM))) == before


def test_learning_as_the_other_class_moves_it(store: BayesStore) -> None:
    trainer = Trainer(store)
    trainer.learn(SPAM, spam=True)
    assert trainer.learn(SPAM, spam=False) == "moved"
    assert store.scope_counts(GLOBAL) == Counts(0, 1)
    counts = store.token_counts(GLOBAL, token_hashes(ScanMessage(SPAM)))
    assert counts
    assert all(c == (0, 1) for c in counts.values())
    assert trainer.learn(SPAM, spam=False) == "known"


def test_a_delivered_copy_is_the_same_message(store: BayesStore) -> None:
    trainer = Trainer(store)
    trainer.learn(SPAM, spam=True)
    delivered = b"Return-Path: <x@spam.example>\r\nDelivered-To: a@example.org\r\n" + SPAM
    assert trainer.learn(delivered, spam=True) == "known"


def test_user_learns_go_to_the_user_and_the_global_scope(store: BayesStore) -> None:
    Trainer(store).learn(SPAM, spam=True, user="Alice@Example.org")
    assert store.scope_counts("alice@example.org") == Counts(1, 0)
    assert store.scope_counts(GLOBAL) == Counts(1, 0)
    Trainer(store, learn_global=False).learn(HAM, spam=False, user="bob@example.org")
    assert store.scope_counts("bob@example.org") == Counts(0, 1)
    assert store.scope_counts(GLOBAL) == Counts(1, 0)
    # One user's statistics are not another's.
    bob = store.token_counts("bob@example.org", token_hashes(ScanMessage(SPAM)))
    assert all(spam == 0 for spam, _ in bob.values())


def test_not_a_message_is_unreadable(store: BayesStore) -> None:
    with pytest.raises(Unreadable):
        Trainer(store).learn(b"   \r\n", spam=True)


def test_transfer_signals() -> None:
    assert transfer_signal("other", "junk") is True
    assert transfer_signal("junk", "other") is False
    assert transfer_signal("junk", "trash") is None
    assert transfer_signal("other", "trash") is None
    assert transfer_signal("junk", "junk") is None
