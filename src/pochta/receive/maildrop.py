"""The maildrop: how ``pochta sendmail`` hands a message to the server (Postfix maildrop/).

``<spool_dir>/maildrop/`` is mode 1733, owned by the server's user: every local user may
create files there, nobody but the server may list it, and the sticky bit keeps users from
removing each other's files. A file is written under a random, unguessable name (128 bits)
as ``NAME.tmp``, fsync'd, then renamed to ``NAME``: the pickup stage (``receive/pickup.py``)
only reads names without a dot, so it never sees a half-written file. Like Postfix's, the
file is readable (0644): its name is the secret, since nobody can list the directory.

The file format, version 1 (one of our own; bytes)::

    POCHTA-MAILDROP 1 LF
    JSON object LF          (the envelope: see Drop; at most MAX_ENVELOPE_BYTES)
    the message, CRLF line ends, exactly ``size`` octets

A file that does not follow it (wrong magic or version, bad JSON, a size that does not match,
more than the limits) is refused by :func:`decode` with :class:`MaildropError`; pickup moves
it to ``maildrop-corrupt/``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Literal

import msgspec

__all__ = [
    "CORRUPT_DIR",
    "MAGIC",
    "MAILDROP_DIR",
    "MAILDROP_MODE",
    "MAX_ADDRESS_LENGTH",
    "MAX_ENVELOPE_BYTES",
    "Drop",
    "MaildropError",
    "address_problem",
    "decode",
    "encode",
    "ensure_maildrop",
    "write_drop",
]

MAILDROP_DIR = "maildrop"
CORRUPT_DIR = "maildrop-corrupt"
MAILDROP_MODE = 0o1733  # sticky, rwx for the owner, wx for the others: write, never list
MAGIC = b"POCHTA-MAILDROP 1\n"
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
"""Longest envelope line: far above what smtp.max_recipients addresses of 254 octets need."""
_NAME_BYTES = 16  # 128 random bits: a name nobody can guess


class MaildropError(ValueError):
    """A maildrop file that does not follow the format; the text says what is wrong."""


class Drop(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The envelope of one ``pochta sendmail`` message."""

    sender: str  # "" for the null sender
    recipients: list[str]
    notify: list[str] = []  # RFC 3461 NOTIFY, for every recipient
    ret: Literal["FULL", "HDRS", ""] = ""  # RFC 3461 RET
    envid: str = ""  # RFC 3461 ENVID
    body: Literal["7BIT", "8BITMIME", ""] = ""  # RFC 6152 BODY
    uid: int  # the writer's uid (pickup checks it against the file's owner)
    size: int  # octets of the message that follows


def encode(drop: Drop, content: bytes) -> bytes:
    """The file's bytes; ``drop.size`` must be ``len(content)``."""
    if drop.size != len(content):
        raise ValueError(f"Drop.size is {drop.size}, the message {len(content)} octets")
    return MAGIC + msgspec.json.encode(drop) + b"\n" + content


def decode(data: bytes, *, max_message_bytes: int = 0) -> tuple[Drop, bytes]:
    """(envelope, message) of a maildrop file, or MaildropError saying what is wrong.
    ``max_message_bytes`` (0: no limit) bounds the message."""
    if not data.startswith(MAGIC):
        head = data[: len(MAGIC)].split(b"\n")[0][:40]
        raise MaildropError(f"not a version 1 maildrop file (starts with {head!r})")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_ENVELOPE_BYTES + 1)
    if end < 0:
        raise MaildropError(f"no envelope line within {MAX_ENVELOPE_BYTES} octets")
    try:
        drop = msgspec.json.decode(data[len(MAGIC) : end], type=Drop)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MaildropError(f"bad envelope: {exc}") from None
    content = data[end + 1 :]
    if len(content) != drop.size:
        raise MaildropError(f"message is {len(content)} octets, the envelope says {drop.size}")
    if max_message_bytes and len(content) > max_message_bytes:
        raise MaildropError(
            f"message is {len(content)} octets, more than smtp.max_message_bytes "
            f"({max_message_bytes})"
        )
    return drop, content


def ensure_maildrop(spool_dir: Path, owner: tuple[int, int] | None = None) -> Path:
    """Create ``maildrop/`` (mode 1733) and ``maildrop-corrupt/`` (0700) under the spool,
    owned by ``owner`` (uid, gid) when given (as root), and let every user pass through the
    spool directory (o+x, no listing) to reach maildrop/. Returns the maildrop path."""
    spool_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    st = spool_dir.stat()
    if st.st_mode & 0o011 != 0o011:
        # Traverse only (no listing), as Postfix's queue directory: users reach maildrop/.
        os.chmod(spool_dir, (st.st_mode & 0o7777) | 0o011)  # noqa: S103
    maildrop = spool_dir / MAILDROP_DIR
    corrupt = spool_dir / CORRUPT_DIR
    for path, mode in ((maildrop, MAILDROP_MODE), (corrupt, 0o700)):
        path.mkdir(exist_ok=True)
        if (path.stat().st_mode & 0o7777) != mode:
            os.chmod(path, mode)  # mkdir's mode is cut by the umask, and drops the sticky bit
        if owner is not None and (path.stat().st_uid, path.stat().st_gid) != owner:
            os.chown(path, *owner)
    return maildrop


def write_drop(maildrop: Path, data: bytes) -> Path:
    """Write ``data`` durably under a new random name; returns the final path. OSError on
    failure (nothing is left behind)."""
    name = secrets.token_hex(_NAME_BYTES)
    tmp = maildrop / f"{name}.tmp"
    final = maildrop / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(maildrop)
    return final


def _fsync_dir(path: Path) -> None:
    """Make the rename durable. A user who is not the owner cannot open maildrop/ (no read
    permission, by design): then the file's own fsync is all we can do, and the server's
    pickup makes the queue file durable before it removes this one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# RFC 5321 §4.5.3.1.3: a path is at most 256 octets, i.e. an address 254.
MAX_ADDRESS_LENGTH = 254
_BAD_ADDRESS = re.compile(r"[\s<>()\[\]\\,;:\"\x00-\x1f\x7f]")


def address_problem(address: str) -> str:
    """Why ``address`` (local@domain) cannot be an envelope address; "" when it can."""
    if not address or _BAD_ADDRESS.search(address):
        return f"bad address {address!r}"
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > MAX_ADDRESS_LENGTH:
        return f"bad address {address!r}"
    return ""
