"""Reports mailed to us: ``ingest(kind, message)`` stores what a ``report:KIND`` alias
target receives (``deliver/report.py`` calls it).

``INGESTERS`` maps each kind to its reader: ``dmarc`` (RFC 7489 §7.2 aggregate reports) and
``tls`` (RFC 8460 reports, ``reports/tls_store.py``). A message that cannot be read is kept whole
under ``DATA_DIR/reports/bad/`` and logged: never bounced, since a bounce to the (often
unattended, sometimes forged) report sender would be backscatter.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pochta.config.settings import Settings
from pochta.durable import write_atomic
from pochta.logs import get_logger
from pochta.mailauth.tls_report import TlsReportError
from pochta.reports.attachments import ReportFormatError, report_documents
from pochta.reports.dmarc_xml import parse_report
from pochta.reports.store import open_reports_db, store_report
from pochta.reports.tls_store import ensure_tls_schema, ingest_tls_report

__all__ = ["BAD_DIR", "INGESTERS", "Ingested", "Ingester", "ingest"]

log = get_logger("reports")

BAD_DIR = Path("reports") / "bad"


@dataclass(frozen=True, slots=True)
class Ingested:
    """What became of one report message: ``stored`` (new), ``duplicate`` or ``bad``
    (kept in ``path``), with a line for the log and the delivery reply."""

    outcome: str
    detail: str
    path: str = ""


Ingester = Callable[[sqlite3.Connection, bytes, float], str]
"""Reads one report message into the database; returns a summary or raises
ReportFormatError. (A duplicate returns a summary starting with "duplicate".)"""


def _ingest_dmarc(conn: sqlite3.Connection, message: bytes, now: float) -> str:
    summaries = []
    for document in report_documents(message):
        report = parse_report(document)
        new = store_report(conn, report, now=now)
        what = f"{report.org_name} report {report.report_id} for {report.domain}"
        summaries.append(("" if new else "duplicate ") + what + f" ({len(report.records)} rows)")
    return "; ".join(summaries)


def _ingest_tls(conn: sqlite3.Connection, message: bytes, now: float) -> str:
    ensure_tls_schema(conn)
    try:
        return ingest_tls_report(conn, message, now=now)
    except TlsReportError as exc:
        raise ReportFormatError(str(exc)) from exc


INGESTERS: dict[str, Ingester] = {"dmarc": _ingest_dmarc, "tls": _ingest_tls}


def ingest(
    kind: str,
    message: bytes,
    *,
    settings: Settings,
    queue_id: str = "",
    now: Callable[[], float] = time.time,
) -> Ingested:
    """Store the report in ``message``; a message that cannot be read is kept in
    ``reports/bad/``. OSError and sqlite3.Error (disk, locks) propagate: the caller retries."""
    reader = INGESTERS.get(kind)
    if reader is None:
        return _keep_bad(settings, kind, message, f"no reader for report kind {kind!r}", queue_id)
    conn = open_reports_db(settings)
    try:
        summary = reader(conn, message, now())
    except ReportFormatError as exc:
        return _keep_bad(settings, kind, message, str(exc), queue_id)
    finally:
        conn.close()
    outcome = "duplicate" if summary.startswith("duplicate") else "stored"
    log.info("report_" + outcome, kind=kind, queue_id=queue_id, report=summary)
    return Ingested(outcome, summary)


def _keep_bad(settings: Settings, kind: str, message: bytes, why: str, queue_id: str) -> Ingested:
    folder = settings.data_dir / BAD_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{kind}-{int(time.time())}-{queue_id or secrets.token_hex(4)}.eml"
    path = folder / name
    write_atomic(path, message, mode=0o600)
    log.warning("report_unreadable", kind=kind, queue_id=queue_id, reason=why, kept=str(path))
    return Ingested("bad", f"unreadable {kind} report kept in {path}: {why}", str(path))
