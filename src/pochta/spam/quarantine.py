"""The quarantine: spam held out of the queue until an admin releases or deletes it.

A message whose score reaches ``[spam] reject_score`` with ``reject_action = "quarantine"``
(the default) is not queued and not refused: the door (``cleanup/door.py``) writes it here
and the client gets 250, so a real message scored wrongly is never lost, and never bounced
to a forged sender. ``pochta quarantine list|show|release|delete`` (``cli/quarantine.py``)
works on the files.

One file per message, ``DATA_DIR/quarantine/QUEUEID`` (the queue id the session gave it,
unique across processes), written whole with ``durable.write_atomic`` (temporary file,
fsync, rename, directory fsync) before the 250 goes out. Format, version 1 (bytes)::

    POCHTA-QUARANTINE 1 LF
    JSON object LF     (QuarantineEntry: the envelope, score, symbols, time)
    the message, exactly ``size`` octets, as cleanup left it (X-Spam-* fields on top)

Several processes write here (the SMTP sessions run in workers); each file is written by
one, under a name nobody else uses, so there is no lock. Listing reads only the first line
of each file.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Literal

import msgspec

from pochta.cleanup.verdict import Symbol
from pochta.durable import write_atomic
from pochta.mime.headers import HeaderLimitError, leading_fields
from pochta.queue.envelope import Envelope, is_queue_id
from pochta.spam.message import decode_header_text

__all__ = [
    "MAGIC",
    "QUARANTINE_DIR",
    "QuarantineEntry",
    "QuarantineError",
    "QuarantineStore",
    "UnknownQuarantineId",
    "entry_of",
]

QUARANTINE_DIR = "quarantine"
MAGIC = b"POCHTA-QUARANTINE 1\n"
MAX_ENTRY_BYTES = 4 * 1024 * 1024  # the JSON line: recipients and symbols, far below this


class QuarantineError(Exception):
    """A quarantine file that cannot be read as one; the text says which and why."""


class UnknownQuarantineId(QuarantineError, KeyError):
    """No quarantined message has this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown quarantine id"


class QuarantineEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What is kept beside the message: its envelope and why it is here."""

    queue_id: str
    sender: str  # envelope MAIL FROM, "" for the null sender
    recipients: list[str]  # envelope recipients after canonical maps, before alias expansion
    time: float  # Unix time it was quarantined
    score: float
    symbols: list[Symbol] = []
    reason: str = ""
    size: int = 0  # octets of the message that follows the entry
    client_ip: str = ""
    client_helo: str = ""
    # RFC 3461 DSN parameters and RFC 6152 BODY, kept for the release.
    ret: Literal["FULL", "HDRS", ""] = ""
    envid: str = ""
    notify: list[str] = []
    body: Literal["7BIT", "8BITMIME", "BINARYMIME", ""] = ""
    subject: str = ""  # the Subject, decoded and cut, for the list


def entry_of(
    envelope: Envelope, content: bytes, *, now: float, subject: str = ""
) -> QuarantineEntry:
    """The entry of a message the door quarantines (its verdict has the score)."""
    pending = [r for r in envelope.recipients if not r.is_final]
    notify = list(pending[0].notify) if pending else []
    return QuarantineEntry(
        queue_id=envelope.queue_id,
        sender=envelope.sender,
        recipients=[r.address for r in pending],
        time=now,
        score=round(envelope.verdict.score, 2),
        symbols=list(envelope.verdict.symbols),
        reason=envelope.verdict.reason,
        size=len(content),
        client_ip=envelope.client_ip,
        client_helo=envelope.client_helo,
        ret=envelope.ret,
        envid=envelope.envid,
        notify=notify,
        body=envelope.body,
        subject=subject[:200],
    )


class QuarantineStore:
    """The files of ``directory`` (``DATA_DIR/quarantine``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, queue_id: str) -> Path:
        """The file of ``queue_id``; UnknownQuarantineId for a text that is no queue id."""
        if not is_queue_id(queue_id):
            raise UnknownQuarantineId(
                f"{queue_id!r} is not a quarantine id (see: pochta quarantine list)"
            )
        return self.directory / queue_id

    async def keep(self, envelope: Envelope, content: bytes) -> Path:
        """The door's call: the message and its entry written durably (in a thread, the
        fsyncs off the event loop); returns the path. OSError when it cannot be written."""
        entry = entry_of(envelope, content, now=time.time(), subject=_subject(content))
        return await asyncio.to_thread(self.hold, entry, content)

    def hold(self, entry: QuarantineEntry, content: bytes) -> Path:
        """Write the message durably (blocking: call it in a thread); returns its path."""
        if entry.size != len(content):
            raise ValueError(f"entry.size is {entry.size}, the message {len(content)} octets")
        path = self.path_of(entry.queue_id)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, MAGIC + msgspec.json.encode(entry) + b"\n" + content)
        return path

    def ids(self) -> list[str]:
        """The ids held, oldest queue id first (queue ids begin with their time)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_queue_id(n))

    def entries(self) -> list[QuarantineEntry]:
        """Every entry, oldest first; a file that cannot be read is left out."""
        found = []
        for queue_id in self.ids():
            try:
                found.append(self.entry(queue_id))
            except (QuarantineError, OSError):
                continue
        return sorted(found, key=lambda e: (e.time, e.queue_id))

    def entry(self, queue_id: str) -> QuarantineEntry:
        """The entry of ``queue_id`` (only its first line is read)."""
        path = self.path_of(queue_id)
        try:
            with open(path, "rb") as f:
                head = f.read(len(MAGIC))
                line = f.readline(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            raise self._unknown(queue_id) from None
        return _decode_entry(path, head, line)

    def read(self, queue_id: str) -> tuple[QuarantineEntry, bytes]:
        """The entry and the message of ``queue_id``."""
        path = self.path_of(queue_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise self._unknown(queue_id) from None
        if not data.startswith(MAGIC):
            raise QuarantineError(f"{path}: not a version 1 quarantine file")
        end = data.find(b"\n", len(MAGIC))
        if end < 0:
            raise QuarantineError(f"{path}: no entry line")
        entry = _decode_entry(path, data[: len(MAGIC)], data[len(MAGIC) : end + 1])
        content = data[end + 1 :]
        if len(content) != entry.size:
            raise QuarantineError(
                f"{path}: the message is {len(content)} octets, the entry says {entry.size}"
            )
        return entry, content

    def remove(self, queue_id: str) -> None:
        """Remove ``queue_id`` for good."""
        try:
            self.path_of(queue_id).unlink()
        except FileNotFoundError:
            raise self._unknown(queue_id) from None

    def _unknown(self, queue_id: str) -> UnknownQuarantineId:
        return UnknownQuarantineId(
            f"no quarantined message {queue_id} in {self.directory} (see: pochta quarantine list)"
        )


def _subject(content: bytes) -> str:
    """The Subject, RFC 2047 decoded, for ``pochta quarantine list``; "" when none."""
    try:
        fields = leading_fields(content, 256 * 1024)
    except HeaderLimitError:
        return ""
    for field in fields:
        if field.key == "subject":
            text = " ".join(decode_header_text(field.text).split())
            return text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    return ""


def _decode_entry(path: Path, head: bytes, line: bytes) -> QuarantineEntry:
    if head != MAGIC:
        raise QuarantineError(f"{path}: not a version 1 quarantine file")
    if not line.endswith(b"\n"):
        raise QuarantineError(f"{path}: no entry line within {MAX_ENTRY_BYTES} octets")
    try:
        return msgspec.json.decode(line, type=QuarantineEntry)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise QuarantineError(f"{path}: bad entry: {exc}") from None
