"""The master's report job: every ``[reports] interval_hours``, the DMARC aggregate reports
due (``reports/dmarc_send.py``) and the TLS reports of the last whole UTC days
(``reports/tls_sender.py``; RFC 8460 §4.1: a report SHOULD cover a day, 00:00-24:00 UTC),
queued through the maildrop like ``pochta sendmail`` mail: the pickup runs them through the
door (Message-ID, Date, DKIM signature) in this same process. ``pochta report send`` runs the
same :func:`run_reports` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.asyncresolver

from pochta.config.settings import Settings
from pochta.directory.base import Directory
from pochta.logs import get_logger
from pochta.mailauth import dmarc
from pochta.receive.maildrop import MAILDROP_DIR, Drop, encode, write_drop
from pochta.reports.dmarc_send import OutgoingReport, send_dmarc_reports
from pochta.reports.store import EvaluationRecorder, forget_evaluations_before, open_reports_db
from pochta.reports.tls_sender import TlsReportSent, send_tls_reports
from pochta.reports.tls_store import forget_sessions_before, open_tls_db
from pochta.tables.domain_list import local_domains

__all__ = ["ReportJob", "ReportRun", "maildrop_writer", "our_domains", "run_reports"]

log = get_logger("reports")


def maildrop_writer(settings: Settings) -> Callable[[str, list[str], bytes], None]:
    """Queue a message as ``pochta sendmail`` does: one file in the spool's maildrop/."""
    maildrop = settings.spool_dir / MAILDROP_DIR

    def drop(sender: str, recipients: list[str], content: bytes) -> None:
        envelope = Drop(sender=sender, recipients=recipients, uid=os.getuid(), size=len(content))
        write_drop(maildrop, encode(envelope, content))

    return drop


def our_domains(settings: Settings, directory: Directory) -> Callable[[str], bool]:
    """Whether a domain is ours: hosted, the host name, or a ``[local] domains`` name."""
    hostname = settings.server.hostname.rstrip(".").lower()
    local = local_domains(settings.local.domains)

    def ours(domain: str) -> bool:
        if domain == hostname or domain in local:
            return True
        record = directory.get_domain(domain)
        return record is not None and not record.signing_only

    return ours


DAY = 86_400
RECORDING_DELAY = EvaluationRecorder.FLUSH_SECONDS + 1.0
TLS_DAYS_BACK = 7  # whole days not reported yet (a server that was down) are caught up


@dataclass(slots=True)
class ReportRun:
    """What one run queued: the DMARC reports and the TLS reports (one per domain and day)."""

    dmarc: list[OutgoingReport] = field(default_factory=list)
    tls: list[TlsReportSent] = field(default_factory=list)
    forgotten: int = 0  # per-message rows older than [reports] keep_days, removed


async def run_reports(
    settings: Settings,
    directory: Directory,
    resolver: dns.asyncresolver.Resolver,
    *,
    now: float | None = None,
    dmarc_reports: bool = True,
    tls_reports: bool = True,
) -> ReportRun:
    """One run: the reports due now, queued into maildrop/."""
    when = time.time() if now is None else now
    drop = maildrop_writer(settings)
    run = ReportRun()
    conn = open_tls_db(settings)  # both kinds' tables
    try:
        # The per-message rows are kept [reports] keep_days (a week of TLS days is reported).
        oldest = when - max(settings.reports.keep_days, TLS_DAYS_BACK + 1) * DAY
        run.forgotten = forget_evaluations_before(conn, oldest) + forget_sessions_before(
            conn, oldest
        )
    finally:
        conn.close()
    if dmarc_reports:
        conn = open_reports_db(settings)
        try:
            run.dmarc.extend(
                await send_dmarc_reports(
                    settings,
                    conn,
                    lookup=dmarc.resolver_txt_lookup(resolver),
                    # The evaluations of the last moments may still be in a recorder's
                    # batch (reports/store.py): they belong to the next period.
                    now=when - RECORDING_DELAY,
                    ours=our_domains(settings, directory),
                    drop=drop,
                )
            )
        finally:
            conn.close()
    if tls_reports:
        conn = open_tls_db(settings)
        today = int(when // DAY) * DAY
        try:
            for start in range(today - TLS_DAYS_BACK * DAY, today, DAY):
                run.tls.extend(
                    await send_tls_reports(
                        conn,
                        drop,
                        hostname=settings.server.hostname,
                        start=start,
                        end=start + DAY,
                        resolver=resolver,
                        organization=settings.reports.organization,
                        contact=settings.reports.contact,
                        clock=lambda: when,
                    )
                )
        finally:
            conn.close()
    return run


class ReportJob:
    """Runs :func:`run_reports` every ``reports.interval_hours`` in the master (the first
    run one interval after start), for the kinds switched on (``reports.dmarc_send``,
    ``reports.tls_send``). Settings, directory and resolver are read at each run (a reload
    may have replaced them)."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        directory: Callable[[], Directory],
        resolver: Callable[[], dns.asyncresolver.Resolver],
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._resolver = resolver
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="report-job")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings().reports.interval_hours * 3600)
            settings = self._settings()
            kinds = settings.reports
            if not (kinds.dmarc_send or kinds.tls_send):
                continue
            try:
                run = await run_reports(
                    settings,
                    self._directory(),
                    self._resolver(),
                    dmarc_reports=kinds.dmarc_send,
                    tls_reports=kinds.tls_send,
                )
            except Exception as exc:
                log.error("report_job_failed", error=str(exc))
                continue
            log.info(
                "report_job",
                dmarc_reports=len(run.dmarc),
                tls_reports=len(run.tls),
                rows_removed=run.forgotten,
            )
