"""Maildir-only repairs (message_path, sync_folder, reindex) are not part of ``MailStore``:
another backend need not have them, and ``pochta mailbox reindex`` says so clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pochta.cli.mailbox import maildir_maintenance
from pochta.store import MaildirMaintenance, MailStore
from pochta.store.maildir import MaildirStore

MAILDIR_ONLY = ("message_path", "sync_folder", "reindex")


def _bare_store() -> MailStore:
    """A MailStore with every method it must have, and nothing else (as a database backend)."""

    def stub(*_args: Any, **_kwargs: Any) -> None:
        return None

    bare = type("BareStore", (MailStore,), dict.fromkeys(MailStore.__abstractmethods__, stub))
    store: MailStore = bare()
    return store


def test_the_mailstore_interface_has_no_maildir_repairs() -> None:
    assert not [name for name in MAILDIR_ONLY if hasattr(MailStore, name)]
    assert not isinstance(_bare_store(), MaildirMaintenance)


def test_the_maildir_store_has_them(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "mail", hostname="mail.example.test")
    try:
        assert isinstance(store, MaildirMaintenance)
        assert maildir_maintenance(store, "reindex") is store
    finally:
        store.close()


def test_reindex_on_a_store_without_them_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        maildir_maintenance(_bare_store(), "reindex")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "pochta: error: this store (BareStore) has no Maildir files and index to repair; "
        "pochta mailbox reindex works on the Maildir store only\n"
    )
