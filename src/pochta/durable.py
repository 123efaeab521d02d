"""Durable file writes: the one place that knows how a file reaches the disk whole.

A reader must see the old content or the new, never a part, and what we acknowledged must
survive a crash. So a file is written aside (a new temporary file in the same directory,
created with ``O_EXCL`` and mode 0600 before any byte goes in, so a secret is never readable
by others), fsynced, renamed over its name, and then the directory is fsynced: POSIX leaves
the new directory entry in the page cache until then (fsync(2): "Calling fsync() does not
necessarily ensure that the entry in the directory containing the file has also reached
disk"). Any error removes the temporary file; an error without a file name (ENOSPC from
``write``) is raised again with the path, so the log line says where the disk is full.

The parts are public for writers that batch: the queue's group commit renames many files and
then calls :func:`fsync_directory` once per directory; the Maildir store creates its tmp/
files with :func:`write_new_file` and links them into new/ itself.

Imports nothing of pochta: every stage may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_directory(path: Path | str) -> None:
    """fsync one directory, so the creates, renames and unlinks done in it are on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _with_path(exc: OSError, path: Path) -> OSError:
    """``exc`` with ``path`` as its file name when it had none (``os.write`` gives ENOSPC
    without one); the errno, and so the subclass, stays, for callers that test it."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_new_file(
    path: Path, data: bytes, *, mode: int = 0o600, mtime: float | None = None, sync: bool = True
) -> None:
    """Create ``path`` (it must not exist: ``O_EXCL``) with ``data``, fsynced when ``sync``.

    ``mtime`` sets the file's modification time. On any error the partial file is removed
    before the error is raised: nothing half-written stays behind.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        _write_all(fd, data)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        if sync:
            os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(exc, OSError):
            raise _with_path(exc, path) from exc
        raise
    os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    make_parents: bool = False,
    sync: bool = True,
    sync_directory: bool = True,
) -> None:
    """Give ``path`` the content ``data`` so a reader sees the old file or the new one.

    The temporary file (``.NAME.RANDOM.tmp`` beside ``path``) is created 0600, then given
    ``mode`` and ``owner`` (uid, gid) before the rename, so the file never appears with the
    wrong ones. ``sync``: fsync the file; ``sync_directory``: then fsync the directory (leave
    it to a caller that fsyncs the directory once for several files). ``make_parents``:
    create missing parent directories first. On any error the temporary file is removed.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            if mode != 0o600:
                os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _with_path(exc, path) from exc
        raise
    if sync and sync_directory:
        fsync_directory(path.parent)


def owner_for_new_files(path: Path) -> tuple[int, int] | None:
    """The owner a file created at ``path`` must get: run as root over a tree the server's
    user owns (the nearest existing ancestor is not root's), that user, so the server reads
    and moves the file after dropping privileges; else None (keep ours)."""
    if os.geteuid() != 0:
        return None
    while not path.exists():
        if path.parent == path:
            return None
        path = path.parent
    st = path.stat()
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)
