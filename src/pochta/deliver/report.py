"""The report agent: a ``report:KIND`` destination (an alias target such as
``dmarc-reports@D -> report:dmarc``) is read as a report and stored, not put in a mailbox.

``reports/inbox.ingest`` does the reading; it runs in a thread (parsing and the SQLite write
stay off the event loop). Every outcome the sender could cause is final and silent: a report
that does not parse is kept in ``reports/bad/`` and counted as delivered, never bounced
(RFC 7489 §7.2 report senders are robots; a bounce would be backscatter). Only a local
failure (disk full, database locked past its timeout) defers, so nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt
from pochta.reports.inbox import Ingested, ingest

__all__ = ["ReportAgent"]

log = get_logger("deliver")

Ingest = Callable[..., Ingested]


class ReportAgent:
    def __init__(self, settings: Settings, *, ingest_fn: Ingest = ingest) -> None:
        self._settings = settings
        self._ingest = ingest_fn

    async def deliver(
        self, envelope: Envelope, recipients: list[Recipient], content: bytes, kind: str
    ) -> list[Attempt]:
        """One ingest for the group (its recipients share the destination ``report:KIND``)."""
        try:
            found = await asyncio.to_thread(
                self._ingest,
                kind,
                content,
                settings=self._settings,
                queue_id=envelope.queue_id,
            )
        except (OSError, sqlite3.Error) as exc:
            log.warning(
                "report_store_failed", queue_id=envelope.queue_id, kind=kind, error=str(exc)
            )
            reply = f"451 4.3.0 Could not store the {kind} report: {exc}; kept in queue"
            return [Attempt(r.address, "deferred", reply) for r in recipients]
        reply = f"250 2.0.0 {kind} report {found.outcome}"
        return [Attempt(r.address, "delivered", reply) for r in recipients]
