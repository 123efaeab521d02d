"""The queue's interface: what the scheduler, the delivery agents, the notices, the receivers
and ``pochta queue`` ask of a queue, whatever keeps it.

``Spool`` (spool.py, files in Postfix's queue directories) is the first implementation; a
cluster backend (a PostgreSQL queue) implements the same ``MessageQueue``. The types every
implementation shares live here too: the states a message is in, the errors, what ``list``
and ``recover`` return.

Shards: several processes may deliver from one queue (server/workers.py). The queue knows
how many there are and which of them this process schedules: ``configure_shards`` says so
once (the server, from the pool of processes), then ``mine``, ``shard_of``, ``take_shard`` /
``give_shard`` (a process died / came back) and ``requeue_active_shard`` (what a dead
process left being delivered) answer from it, so that neither the scheduler nor the server
computes a shard from a queue id. New queue ids (``new_queue_id``, ``enqueue``) fall in this
process's own shard.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, Protocol, get_args, runtime_checkable

import msgspec

from pochta.queue.envelope import Envelope

QueueState = Literal["incoming", "active", "deferred", "hold", "corrupt"]
STATES: tuple[QueueState, ...] = get_args(QueueState)


class SpoolError(Exception):
    """A queue operation that cannot be done; the message says why and what to do."""


class UnknownMessage(SpoolError):
    def __init__(self, queue_id: str) -> None:
        super().__init__(f"no message {queue_id} in the queue")
        self.queue_id = queue_id


class MessageBusy(SpoolError):
    """Another process holds the message's lock (delivery, enqueue, an admin command)."""

    def __init__(self, queue_id: str) -> None:
        super().__init__(f"message {queue_id} is being changed by another process; try again")
        self.queue_id = queue_id


class SpoolFull(OSError, SpoolError):
    """The spool's file system (or its disk quota) is full: the message was not written.

    An ``OSError`` (ENOSPC) as before, so callers that catch ``OSError`` keep working, and a
    ``SpoolError`` with a message that says what to do. Callers log it as one line: a full
    disk is the operator's matter, not a bug with a traceback."""

    def __init__(self, path: Path | str, queue_id: str = "") -> None:
        what = f"message {queue_id} not written" if queue_id else "nothing written"
        super().__init__(
            errno.ENOSPC,
            f"no space left on device in the queue, {what}; free space on that file system",
            str(path),
        )
        self.queue_id = queue_id
        self.path = str(path)


class WrongState(SpoolError):
    def __init__(self, queue_id: str, state: QueueState, action: str) -> None:
        hint = {
            "active": "it is being delivered now; try again when the attempt ends",
            "hold": "it is on hold; release it first",
            "corrupt": "it is corrupt; requeue or delete it",
        }.get(state, f"it is in {state}")
        super().__init__(f"cannot {action} message {queue_id}: {hint}")
        self.queue_id = queue_id
        self.state = state


class QueueEntry(msgspec.Struct):
    """One message as ``list`` sees it. ``envelope`` is None when its file does not parse
    (always so in ``corrupt/`` when the file is broken); ``error`` then says why."""

    queue_id: str
    state: QueueState
    envelope: Envelope | None
    error: str = ""


class RecoveryReport(msgspec.Struct):
    tmp_removed: int = 0
    active_requeued: int = 0
    corrupt: int = 0
    orphans_removed: int = 0  # status files left by a removal that a crash cut short
    adopted: int = 0  # complete messages found in pool/ (queued, but the link was lost)


@runtime_checkable
class FreeSpaceGauge(Protocol):
    """Free bytes where the queue writes, as MAIL FROM checks them (queue.min_free_bytes)."""

    path: Path

    def free_bytes(self) -> int: ...

    def shortfall(self, needed_bytes: int) -> int:
        """How many bytes are missing for ``needed_bytes`` to be free (0: enough)."""
        ...


@runtime_checkable
class MessageQueue(Protocol):
    """The calls the rest of pochta makes on the queue (see the module docstring).

    Every change of a message's state is atomic and holds across a crash; ``enqueue``
    returns only once the message is durable (then 250 may be sent). Errors: ``SpoolError``
    and its kinds (``UnknownMessage``, ``MessageBusy``, ``WrongState``, ``SpoolFull``).
    """

    @property
    def free_space(self) -> FreeSpaceGauge: ...

    # -- taking mail in (receivers, notices, pochta sendmail) ---------------------------------

    def new_queue_id(self) -> str:
        """A new queue id, in this process's own shard."""
        ...

    async def enqueue(
        self, envelope: Envelope, content: bytes, *, here: bool = True, hold: bool = False
    ) -> str:
        """Store a new message durably; its queue id. ``here`` False: another process
        delivers it (this one's listeners are not told). ``hold``: straight into the hold
        state (Postfix's cleanup HOLD action), never tried until an admin releases it."""
        ...

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(queue_id)`` after each enqueue made here (the scheduler's wake)."""
        ...

    # -- reading -----------------------------------------------------------------------------

    async def read_content(self, queue_id: str) -> bytes: ...

    async def load(self, queue_id: str) -> Envelope: ...

    async def load_with_state(self, queue_id: str) -> tuple[QueueState, Envelope]: ...

    async def locate(self, queue_id: str) -> QueueState | None: ...

    async def ids(self, state: QueueState) -> list[str]: ...

    async def list(self, state: QueueState | None = None) -> list[QueueEntry]: ...

    # -- delivery (the scheduler): claim, then defer, bounce or finish ------------------------

    async def claim(self, queue_id: str, from_state: QueueState) -> Envelope | None:
        """Move a message to active/ for one delivery attempt; None when it is gone, busy
        in another process, or corrupt."""
        ...

    async def update_envelope(
        self, queue_id: str, envelope: Envelope, *, wait_seconds: float = ...
    ) -> None:
        """Record the result of an attempt (per-recipient status, next try)."""
        ...

    async def move(
        self,
        queue_id: str,
        state: QueueState,
        *,
        allowed_from: Iterable[QueueState] = ...,
        wait_seconds: float = ...,
        durable: bool = ...,
        action: str = ...,
    ) -> QueueState:
        """Defer (active to deferred) or any other state change; the state it was in."""
        ...

    async def delete(
        self,
        queue_id: str,
        *,
        reason: str = ...,
        wait_seconds: float = ...,
        durable: bool = ...,
    ) -> None:
        """Finish (delivered or bounced, ``durable=False``) or remove (an admin)."""
        ...

    async def recover(self) -> RecoveryReport:
        """At server start, in the one process that schedules first: crash leftovers."""
        ...

    # -- the admin's commands (pochta queue) --------------------------------------------------

    async def hold(self, queue_id: str) -> None: ...

    async def release(self, queue_id: str) -> None: ...

    async def requeue(self, queue_id: str) -> None: ...

    async def flush(self) -> int:
        """Make every deferred message due now (postqueue -f); how many."""
        ...

    def close(self) -> None: ...

    # -- shards: which process delivers which message -----------------------------------------

    @property
    def shard_count(self) -> int:
        """How many processes deliver from this queue (1: this one delivers everything)."""
        ...

    @property
    def shards(self) -> frozenset[int]:
        """The shards this process schedules."""
        ...

    def configure_shards(
        self, count: int, shards: Iterable[int], *, own: int | None = None
    ) -> None:
        """Before delivering: ``count`` processes deliver, this one the messages of
        ``shards``; new ids fall in ``own`` (default: the lowest of ``shards``)."""
        ...

    def shard_of(self, queue_id: str) -> int: ...

    def mine(self, queue_id: str) -> bool:
        """Whether this process schedules ``queue_id``."""
        ...

    def take_shard(self, index: int) -> None:
        """Schedule the messages of shard ``index`` too (its process is down)."""
        ...

    def give_shard(self, index: int) -> None:
        """Stop taking new messages of shard ``index`` (its process is up again)."""
        ...

    async def requeue_active_shard(
        self, index: int, reason: str, *, busy: Callable[[str], bool]
    ) -> int:
        """Put back into incoming/ what shard ``index``'s dead process left being delivered,
        but for the ids ``busy`` says this process delivers; how many."""
        ...


def required_free_bytes(*, min_free_bytes: int, max_message_bytes: int, size: int = 0) -> int:
    """Free bytes the spool's file system must have to accept MAIL FROM (Postfix
    queue_minfree, smtpd_check.c): ``min_free_bytes``; 1.5 x the largest message accepted
    (Postfix 2.1 and later: a message of the size limit must fit, with room to spare); and
    for a SIZE= announced at MAIL (RFC 1870 §6.1), ``min_free_bytes`` + SIZE and twice SIZE."""
    return max(
        min_free_bytes,
        (3 * max_message_bytes) // 2,
        min_free_bytes + size,
        2 * size,
    )
