"""The queue: durable spool, group commit, scheduler (qmgr) and retry backoff.

``Spool`` (spool.py) stores messages and their envelopes; ``QueueManager`` (scheduler.py)
tries them through the ``route`` and ``deliver`` functions of the later stages and retries on
the schedule of ``backoff.py``. See ``spool.py`` for the on-disk layout and its reasons.
"""

from pochta.queue.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    EnvelopeError,
    Recipient,
    RecipientStatus,
    new_queue_id,
)
from pochta.queue.scheduler import (
    Attempt,
    DeliverFn,
    FinalFn,
    FinalKind,
    QueueManager,
    RouteFn,
    destination_key,
)
from pochta.queue.spool import (
    STATES,
    MessageBusy,
    QueueEntry,
    QueueState,
    RecoveryReport,
    Spool,
    SpoolError,
    UnknownMessage,
    WrongState,
)

__all__ = [
    "ENVELOPE_VERSION",
    "STATES",
    "Attempt",
    "DeliverFn",
    "Envelope",
    "EnvelopeError",
    "FinalFn",
    "FinalKind",
    "MessageBusy",
    "QueueEntry",
    "QueueManager",
    "QueueState",
    "Recipient",
    "RecipientStatus",
    "RecoveryReport",
    "RouteFn",
    "Spool",
    "SpoolError",
    "UnknownMessage",
    "WrongState",
    "destination_key",
    "new_queue_id",
]
