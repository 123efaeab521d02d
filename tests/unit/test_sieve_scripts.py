"""sieve/scripts.py: the scripts on disk, their names, quotas and the active one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pochta.sieve.scripts import (
    ScriptNameError,
    ScriptNotFound,
    ScriptQuotaError,
    ScriptStore,
    ScriptStoreError,
)

ACCOUNT = "Alice@Example.org"


def make(tmp_path: Path, **limits: int) -> ScriptStore:
    return ScriptStore(tmp_path / "sieve", tmp_path / "global", **limits)


def test_put_list_get_activate(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put(ACCOUNT, "vacation", 'vacation "away";')
    store.put(ACCOUNT, "lists", "keep;")
    assert store.scripts(ACCOUNT) == [("lists", False), ("vacation", False)]
    store.set_active(ACCOUNT, "lists")
    assert store.scripts("alice@example.org") == [("lists", True), ("vacation", False)]
    assert store.get(ACCOUNT, "vacation") == 'vacation "away";'
    assert [s.name for s in store.delivery_scripts(ACCOUNT)] == ["lists"]
    store.set_active(ACCOUNT, None)
    assert store.delivery_scripts(ACCOUNT) == []


def test_names_cannot_escape_their_directory(tmp_path: Path) -> None:
    store = make(tmp_path)
    for name in ("../../etc/passwd", ".active", "a/b", "ünïcode name"):
        store.put(ACCOUNT, name, "keep;")
    names = [n for n, _ in store.scripts(ACCOUNT)]
    assert sorted(names) == sorted(["../../etc/passwd", ".active", "a/b", "ünïcode name"])
    assert store.active(ACCOUNT) is None  # the script named ".active" is not the marker
    for path in (tmp_path / "sieve").rglob("*"):
        assert path.resolve().is_relative_to((tmp_path / "sieve").resolve())
    with pytest.raises(ScriptNameError):
        store.put(ACCOUNT, "bad\nname", "keep;")
    with pytest.raises(ScriptNameError):
        store.put(ACCOUNT, "", "keep;")


def test_quotas_count_a_replaced_script_once(tmp_path: Path) -> None:
    store = make(tmp_path, max_scripts=2, max_storage_bytes=20, max_script_bytes=15)
    store.put(ACCOUNT, "a", "x" * 10)
    store.put(ACCOUNT, "a", "y" * 12)  # a replacement, not a second script
    with pytest.raises(ScriptQuotaError, match="octets in all"):
        store.put(ACCOUNT, "b", "z" * 9)
    with pytest.raises(ScriptQuotaError, match="larger than 15"):
        store.put(ACCOUNT, "b", "z" * 16)
    store.put(ACCOUNT, "b", "z" * 8)
    assert store.space_problem(ACCOUNT, "c", 0) == "at most 2 scripts per account"


def test_delete_and_rename_keep_the_rules(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put(ACCOUNT, "a", "keep;")
    store.put(ACCOUNT, "b", "discard;")
    store.set_active(ACCOUNT, "a")
    with pytest.raises(ScriptStoreError, match="active"):
        store.delete(ACCOUNT, "a")
    with pytest.raises(ScriptStoreError, match="exists already"):
        store.rename(ACCOUNT, "a", "b")
    store.rename(ACCOUNT, "a", "c")
    assert store.active(ACCOUNT) == "c"
    store.delete(ACCOUNT, "b")
    with pytest.raises(ScriptNotFound):
        store.get(ACCOUNT, "b")
    with pytest.raises(ScriptNotFound):
        store.set_active(ACCOUNT, "b")


def test_global_scripts_run_around_the_personal_one(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put_global("example.org", "before", 'fileinto "Before";')
    store.put_global("example.org", "after", "keep;")
    store.put(ACCOUNT, "mine", "discard;")
    store.set_active(ACCOUNT, "mine")
    scripts = store.delivery_scripts(ACCOUNT)
    assert [(s.scope, s.text) for s in scripts] == [
        ("before", 'fileinto "Before";'),
        ("personal", "discard;"),
        ("after", "keep;"),
    ]
    assert store.delivery_scripts("bob@other.example") == []
    first = scripts[0].version
    store.put_global("example.org", "before", 'fileinto "Changed";')
    assert store.delivery_scripts(ACCOUNT)[0].version != first
    store.put_global("example.org", "after", None)
    assert [s.scope for s in store.delivery_scripts(ACCOUNT)] == ["before", "personal"]


def test_loader_reads_personal_and_global_includes(tmp_path: Path) -> None:
    store = make(tmp_path)
    store.put(ACCOUNT, "common", "keep;")
    (tmp_path / "global" / "include").mkdir(parents=True)
    (tmp_path / "global" / "include" / "spam.sieve").write_text('fileinto "Junk";')
    loader = store.loader(ACCOUNT)
    assert loader.load("common", "personal") == "keep;"
    assert loader.load("spam", "global") == 'fileinto "Junk";'
    assert loader.load("missing", "personal") is None
    assert loader.load("../x", "global") is None
