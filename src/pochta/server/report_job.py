"""The master's report job: every ``[reports] interval_hours``, the DMARC aggregate reports
due (``reports/dmarc_send.py``), queued through the maildrop like ``pochta sendmail`` mail:
the pickup runs them through the door (Message-ID, Date, DKIM signature) in this same
process. ``pochta report send`` runs the same :func:`run_reports` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import dns.asyncresolver

from pochta.config.settings import Settings
from pochta.directory.base import Directory
from pochta.logs import get_logger
from pochta.mailauth import dmarc
from pochta.receive.maildrop import MAILDROP_DIR, Drop, encode, write_drop
from pochta.reports.dmarc_send import OutgoingReport, send_dmarc_reports
from pochta.reports.store import open_reports_db

__all__ = ["ReportJob", "maildrop_writer", "our_domains", "run_reports"]

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
    local = {settings.server.hostname.rstrip(".").lower()}
    local.update(d.rstrip(".").lower() for d in settings.local.domains)

    def ours(domain: str) -> bool:
        if domain in local:
            return True
        record = directory.get_domain(domain)
        return record is not None and not record.signing_only

    return ours


async def run_reports(
    settings: Settings,
    directory: Directory,
    resolver: dns.asyncresolver.Resolver,
    *,
    now: float | None = None,
) -> list[OutgoingReport]:
    """One run: the DMARC reports due now, queued into maildrop/."""
    conn = open_reports_db(settings)
    try:
        return await send_dmarc_reports(
            settings,
            conn,
            lookup=dmarc.resolver_txt_lookup(resolver),
            now=time.time() if now is None else now,
            ours=our_domains(settings, directory),
            drop=maildrop_writer(settings),
        )
    finally:
        conn.close()


class ReportJob:
    """Runs :func:`run_reports` every ``reports.interval_hours`` in the master (the first
    run one interval after start), when ``reports.dmarc_send`` is on."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        directory: Callable[[], Directory],
        resolver: dns.asyncresolver.Resolver,
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
            if not settings.reports.dmarc_send:
                continue
            directory = self._directory()
            try:
                reports = await run_reports(settings, directory, self._resolver)
            except Exception as exc:
                log.error("report_job_failed", error=str(exc))
                continue
            log.info("report_job", reports=len(reports))
