"""Writing one message into a local file or Maildir, as Postfix local(8) and virtual(8) do.

This module is the part of the file, Unix-account and table-mailbox deliveries that touches
the disk. It imports only the standard library, on purpose: when the server runs as root,
``deliver/file.py`` runs it as a program of its own (``python -I -c SOURCE``, the source of
this file) under the target user's uid and gid, with the bytes to write on stdin, so the
kernel checks that user's rights (local(8) "DELIVERY RIGHTS"), and a Python interpreter
found by any user is all it needs. Run in-process it writes as the server.

- **mbox** (local(8) "EXTERNAL FILE DELIVERY", ``mailbox_delivery_lock = fcntl, dotlock``):
  the ``PATH.lock`` dotlock first (created with O_EXCL; when the directory does not let us
  create it, fcntl alone, as Postfix's MBOX_DOT_LOCK_MAY_FAIL for files; a lock older than
  ``STALE_LOCK_SECONDS`` is removed, Postfix stale_lock_time), then an exclusive fcntl lock
  on the file; the message is appended, fsynced, and on any failure the file is truncated
  back to its length before the write, so a reader never finds half a message
  (Postfix mail_copy: "truncate the file back to its original length"). The file must be a
  regular file with one link and no execute bit (local(8): no mail to executables), opened
  without following a symlink.
- **Maildir** (a path ending in ``/``): ``tmp/``, ``new/``, ``cur/`` made when missing, the
  message written to ``tmp/``, fsynced, linked into ``new/``, the directory fsynced.

``format_mbox`` makes the bytes one mbox delivery appends: the ``From SENDER DATE`` line,
LF line ends, ``>`` before body lines that start with ``From `` (mboxo, as Postfix's
MAIL_COPY_QUOTE) and a blank line after (MAIL_COPY_BLANK).

As a program: ``python -I -c SOURCE mbox|maildir PATH [HOST]`` with the bytes on stdin;
exit status 0 when written, else 1 with one line ``X.Y.Z text`` (RFC 3463) on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import stat
import sys
import time

__all__ = [
    "LOCK_WAIT_SECONDS",
    "STALE_LOCK_SECONDS",
    "WriteError",
    "append_mbox",
    "format_mbox",
    "main",
    "write_maildir",
]

LOCK_WAIT_SECONDS = 60.0  # how long a delivery waits for either lock before it defers
STALE_LOCK_SECONDS = 500.0  # Postfix stale_lock_time: an older PATH.lock is removed
_LOCK_POLL_SECONDS = 0.05
_COUNTER = itertools.count(1)


class WriteError(Exception):
    """A delivery that failed; ``status`` is its RFC 3463 code (4.x.x: try again)."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text

    @property
    def temporary(self) -> bool:
        return self.status.startswith("4.")


def _os_status(exc: OSError) -> str:
    """Postfix mbox_dsn(): a full disk or a lock that did not come passes (4.x.x); a quota
    is for good (5.2.2); the rest is 5.2.0 (mailbox status, RFC 3463 §3.3)."""
    if exc.errno in (errno.ENOSPC,):
        return "4.3.1"  # RFC 3463 §3.4: mail system full
    if exc.errno in (errno.EAGAIN, errno.ESTALE, errno.EINTR, errno.ENOLCK):
        return "4.2.0"
    if exc.errno == errno.EDQUOT:
        return "5.2.2"
    return "5.2.0"


def _failed(exc: OSError, what: str) -> WriteError:
    return WriteError(_os_status(exc), f"cannot {what}: {exc.strerror or exc}")


def format_mbox(sender: str, message: bytes, when: float | None = None) -> bytes:
    """One mbox entry for ``message`` (header and body, CRLF or LF line ends)."""
    # local(8) / mail_copy(3): the null sender is written as MAILER-DAEMON.
    who = sender.strip() or "MAILER-DAEMON"
    who = "".join(c if c.isprintable() and not c.isspace() else "_" for c in who)
    date = time.asctime(time.localtime(time.time() if when is None else when))
    out = [f"From {who} {date}\n".encode()]
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        # mboxo quoting, as Postfix's MAIL_COPY_QUOTE: a line that a reader would take for
        # the start of the next message gets a ">".
        out.append(b">" + line + b"\n" if line.startswith(b"From ") else line + b"\n")
    out.append(b"\n")  # MAIL_COPY_BLANK: a blank line ends the entry
    return b"".join(out)


def _dotlock(path: str, deadline: float) -> str | None:
    """Create ``PATH.lock``; None when the directory does not let us (fcntl alone then)."""
    lock = path + ".lock"
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            try:
                age = time.time() - os.lstat(lock).st_mtime
            except FileNotFoundError:
                continue
            if age > STALE_LOCK_SECONDS:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            if time.monotonic() > deadline:
                raise WriteError("4.2.0", "cannot lock the file: its .lock file stays") from None
            time.sleep(_LOCK_POLL_SECONDS)
            continue
        except (PermissionError, OSError) as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None  # MBOX_DOT_LOCK_MAY_FAIL: the fcntl lock still serialises us
            raise _failed(exc, "create the .lock file") from None
        os.close(fd)
        return lock


def _open_mbox(path: str) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WriteError("5.2.0", "the file is a symbolic link; not delivering") from None
        raise _failed(exc, "open the file") from None
    info = os.fstat(fd)
    problem = ""
    if not stat.S_ISREG(info.st_mode):
        problem = "the destination is not a regular file"
    elif info.st_nlink != 1:
        problem = "the file has more than one hard link"
    elif info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        problem = "the file is executable"  # local(8): no mail to executable files
    if problem:
        os.close(fd)
        raise WriteError("5.7.1" if "executable" in problem else "5.2.0", problem)
    os.set_blocking(fd, True)
    return fd


def _fcntl_lock(fd: int, deadline: float) -> None:
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise _failed(exc, "lock the file") from None
        if time.monotonic() > deadline:
            raise WriteError("4.2.0", "cannot lock the file: another program holds it")
        time.sleep(_LOCK_POLL_SECONDS)


def append_mbox(path: str, entry: bytes, *, lock_wait_seconds: float = LOCK_WAIT_SECONDS) -> None:
    """Append ``entry`` (``format_mbox``) to the mbox file ``path`` under both locks."""
    deadline = time.monotonic() + lock_wait_seconds
    lock = _dotlock(path, deadline)
    try:
        fd = _open_mbox(path)
        try:
            _fcntl_lock(fd, deadline)
            start = os.fstat(fd).st_size
            try:
                view = memoryview(entry)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                # Postfix mail_copy: on a failed write the file goes back to its old length.
                try:
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError:
                    pass
                raise _failed(exc, "write the file") from None
        finally:
            os.close(fd)  # also drops the fcntl lock
    finally:
        if lock is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_maildir(directory: str, message: bytes, host: str) -> str:
    """Deliver ``message`` into the Maildir ``directory`` (made when missing); its file name
    in ``new/``."""
    host = host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    data = message.replace(b"\r\n", b"\n")
    try:
        for sub in ("", "tmp", "new", "cur"):
            os.makedirs(os.path.join(directory, sub), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _failed(exc, "create the Maildir") from None
    now = time.time_ns()
    secs, nanos = divmod(now, 1_000_000_000)
    name = f"{secs}.M{nanos // 1000}P{os.getpid()}Q{next(_COUNTER)}.{host},S={len(data)}"
    tmp = os.path.join(directory, "tmp", name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, os.path.join(directory, "new", name))
        _fsync_dir(os.path.join(directory, "new"))
    except OSError as exc:
        raise _failed(exc, "write the Maildir file") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return name


def main(argv: list[str]) -> int:
    """``mbox PATH`` or ``maildir PATH HOST``, the bytes on stdin (see the docstring)."""
    try:
        if len(argv) < 2 or argv[0] not in ("mbox", "maildir"):
            raise WriteError("4.3.5", "usage: mbox PATH | maildir PATH HOST")
        data = sys.stdin.buffer.read()
        if argv[0] == "mbox":
            append_mbox(argv[1], data)
        else:
            write_maildir(argv[1], data, argv[2] if len(argv) > 2 else "localhost")
    except WriteError as exc:
        sys.stderr.write(f"{exc.status} {exc.text}\n")
        return 1
    except Exception as exc:  # anything else: the caller defers and logs it
        sys.stderr.write(f"4.3.0 {type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
