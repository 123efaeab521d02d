"""pochta.durable: the one atomic, durable file write (write aside, fsync, rename, fsync the
directory), checked by counting the fsyncs it makes and by making its writes fail."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from pochta import durable


class FsyncLog:
    """Wraps os.fsync: records what each call fsynced (a directory or a file, by path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dirs: list[Path] = []
        self.files: list[Path] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.dirs.append(target)
            else:
                self.files.append(target)
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_atomic_writes_the_content_and_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = FsyncLog(monkeypatch)
    target = tmp_path / "file"
    durable.write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert fsyncs.dirs == [tmp_path]
    assert len(fsyncs.files) == 1  # the temporary file, before its rename
    durable.write_atomic(target, b"two" * 100_000, mode=0o644)
    assert target.read_bytes() == b"two" * 100_000
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert fsyncs.dirs == [tmp_path, tmp_path]
    assert _leftovers(tmp_path) == []


def test_write_atomic_can_leave_the_directory_fsync_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = FsyncLog(monkeypatch)
    durable.write_atomic(tmp_path / "a", b"x", sync_directory=False)
    assert (fsyncs.dirs, len(fsyncs.files)) == ([], 1)
    durable.write_atomic(tmp_path / "b", b"x", sync=False)
    assert (fsyncs.dirs, len(fsyncs.files)) == ([], 1)
    durable.fsync_directory(tmp_path)
    assert fsyncs.dirs == [tmp_path]


def test_write_atomic_makes_parents_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "key.pem"
    with pytest.raises(FileNotFoundError):
        durable.write_atomic(target, b"k")
    durable.write_atomic(target, b"k", make_parents=True)
    assert target.read_bytes() == b"k"


def test_write_atomic_sets_the_owner_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []

    def fchown(fd: int, uid: int, gid: int) -> None:
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), uid, gid))

    monkeypatch.setattr(os, "fchown", fchown)
    target = tmp_path / "config.toml"
    durable.write_atomic(target, b"x", mode=0o640, owner=(0, 123))
    assert len(calls) == 1
    assert calls[0][1:] == (0, 123)
    assert calls[0][0] != str(target)  # the temporary file, never the visible one


def _full_disk(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """os.write writes ``after`` bytes, then fails as a full disk does."""
    real = os.write
    budget = [after]

    def write(fd: int, data: bytes | memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[: budget[0]]))
        budget[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    _full_disk(monkeypatch, after=10)
    with pytest.raises(OSError, match="No space left on device") as raised:
        durable.write_atomic(target, b"new" * 1000)
    # The errno stays (callers test it) and the message names the file.
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(target)
    assert str(target) in str(raised.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_fsync_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error") as raised:
        durable.write_atomic(tmp_path / "file", b"data")
    assert raised.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(fd: int, data: bytes | memoryview) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(KeyboardInterrupt):
        durable.write_atomic(tmp_path / "file", b"data")
    assert list(tmp_path.iterdir()) == []


def test_write_new_file_refuses_an_existing_name_and_cleans_up_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "msg"
    durable.write_new_file(target, b"hello", mtime=1_000_000.0)
    assert target.read_bytes() == b"hello"
    assert target.stat().st_mtime == 1_000_000.0
    with pytest.raises(FileExistsError):
        durable.write_new_file(target, b"again")
    assert target.read_bytes() == b"hello"
    _full_disk(monkeypatch, after=3)
    with pytest.raises(OSError, match="No space left on device") as raised:
        durable.write_new_file(tmp_path / "other", b"a longer message")
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["msg"]
