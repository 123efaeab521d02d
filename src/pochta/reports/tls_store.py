"""TLS-RPT (RFC 8460) in the reports database: the sessions we open, the reports we get.

Three sets of tables in ``reports.db`` (SQLite, WAL, busy timeout: delivery runs in the
master and in the workers, so several processes write; each insert is one short
transaction):

- ``tls_sessions``: one row per new outbound session to a recipient domain's MX host
  (``TlsRecorder``, the ``tls_outcome`` hook of ``deliver/remote.py``): the policy domain,
  the policy type and string (RFC 8460 §4.4), the MX host and IP, and "" for success or the
  §4.3 result type. ``sessions_between`` reads them back for ``reports/tls_sender.py``, and
  ``tls_sent`` remembers which (domain, period) was reported, so a report is sent once.
- ``tls_received`` + ``tls_received_policies`` + ``tls_received_failures``: the reports
  other senders send about our domains (``ingest_tls_report``), one row per report (the same
  organization and report-id twice is stored once), per policy, per failure line.
- ``received_summary`` adds them up for ``pochta report tls``.

Opening the database is the shared ``reports/store.open_reports_db(settings)``; until it is
merged, ``open_tls_db`` here opens the same file the same way (see its docstring).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.mailauth.tls_report import (
    TlsOutcome,
    TlsReport,
    TlsReportError,
    parse_report,
    report_from_mail,
)
from pochta.reports.store import connect_reports_db, ensure_schema, reports_db_path

log = get_logger("reports")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tls_sessions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    policy_domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy_string TEXT NOT NULL,
    mx_host TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    sending_ip TEXT NOT NULL,
    result_type TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tls_sessions_at ON tls_sessions (at, policy_domain);
CREATE TABLE IF NOT EXISTS tls_sent (
    policy_domain TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    report_id TEXT NOT NULL,
    sent_at REAL NOT NULL,
    destinations TEXT NOT NULL,
    PRIMARY KEY (policy_domain, start)
);
CREATE TABLE IF NOT EXISTS tls_received (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    organization TEXT NOT NULL,
    report_id TEXT NOT NULL,
    contact TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    UNIQUE (organization, report_id)
);
CREATE TABLE IF NOT EXISTS tls_received_policies (
    id INTEGER PRIMARY KEY,
    report INTEGER NOT NULL REFERENCES tls_received (id) ON DELETE CASCADE,
    policy_domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    successful INTEGER NOT NULL,
    failed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tls_received_policies_domain
    ON tls_received_policies (policy_domain);
CREATE TABLE IF NOT EXISTS tls_received_failures (
    policy INTEGER NOT NULL REFERENCES tls_received_policies (id) ON DELETE CASCADE,
    result_type TEXT NOT NULL,
    mx_host TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    sending_ip TEXT NOT NULL,
    count INTEGER NOT NULL
);
"""


TLS_SCHEMA_VERSION = 1


def ensure_tls_schema(conn: sqlite3.Connection) -> None:
    """Create the TLS-RPT tables when missing (idempotent; ``reports/store.ensure_schema``)."""
    statements = [part.strip() for part in _SCHEMA.split(";") if part.strip()]
    ensure_schema(conn, "tls", TLS_SCHEMA_VERSION, statements)


def open_tls_db(settings: Settings) -> sqlite3.Connection:
    """``DATA_DIR/reports.db`` with the TLS-RPT tables (:func:`connect_tls_db`)."""
    return connect_tls_db(reports_db_path(settings))


def connect_tls_db(path: Path) -> sqlite3.Connection:
    """``reports.db`` at ``path`` (``reports/store.connect_reports_db``: WAL, busy timeout)
    with the TLS-RPT tables."""
    conn = connect_reports_db(path)
    conn.execute("PRAGMA foreign_keys = ON")
    ensure_tls_schema(conn)
    return conn


# -- recording outbound sessions ---------------------------------------------------------------


def record_outcome(conn: sqlite3.Connection, outcome: TlsOutcome, at: float) -> None:
    """One row for one session (one autocommit insert)."""
    conn.execute(
        "INSERT INTO tls_sessions (at, policy_domain, policy_type, policy_string, mx_host,"
        " receiving_ip, sending_ip, result_type, detail) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            at,
            outcome.policy_domain.lower().rstrip("."),
            outcome.policy_type,
            json.dumps(list(outcome.policy_string)),
            outcome.mx_host,
            outcome.receiving_ip,
            outcome.sending_ip,
            outcome.result_type,
            outcome.detail[:500],
        ),
    )


class TlsRecorder:
    """The ``tls_outcome`` callable given to ``RemoteAgent``: opens the database on first use
    (in the process that delivers, after any fork) and writes one row per call. A database
    error is logged, never raised: a report row is not worth a delivery."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connect = connect
        self._clock = clock
        self._conn: sqlite3.Connection | None = None

    def __call__(self, outcome: TlsOutcome) -> None:
        try:
            if self._conn is None:
                self._conn = self._connect()
            record_outcome(self._conn, outcome, self._clock())
        except sqlite3.Error as exc:
            log.warning("tls_outcome_not_recorded", domain=outcome.policy_domain, error=str(exc))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def sessions_between(
    conn: sqlite3.Connection, start: float, end: float
) -> dict[str, list[TlsOutcome]]:
    """The recorded sessions with ``start <= at < end``, per policy domain."""
    found: dict[str, list[TlsOutcome]] = {}
    rows = conn.execute(
        "SELECT policy_domain, policy_type, policy_string, mx_host, receiving_ip, sending_ip,"
        " result_type, detail FROM tls_sessions WHERE at >= ? AND at < ? ORDER BY id",
        (start, end),
    )
    for domain, ptype, pstring, mx, rip, sip, rtype, detail in rows:
        found.setdefault(domain, []).append(
            TlsOutcome(domain, ptype, tuple(json.loads(pstring)), mx, rip, sip, rtype, detail)
        )
    return found


def already_sent(conn: sqlite3.Connection, domain: str, start: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM tls_sent WHERE policy_domain = ? AND start = ?", (domain, start)
    ).fetchone()
    return row is not None


def mark_sent(
    conn: sqlite3.Connection,
    domain: str,
    start: float,
    end: float,
    report_id: str,
    destinations: list[str],
    at: float,
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO tls_sent VALUES (?,?,?,?,?,?)",
        (domain, start, end, report_id, at, json.dumps(destinations)),
    )


def forget_sessions_before(conn: sqlite3.Connection, before: float) -> int:
    """Delete session rows older than ``before`` (after they were reported)."""
    return conn.execute("DELETE FROM tls_sessions WHERE at < ?", (before,)).rowcount


# -- received reports --------------------------------------------------------------------------


def store_report(conn: sqlite3.Connection, report: TlsReport, received_at: float) -> bool:
    """Keep a parsed report; False when this organization's report-id is already kept."""
    with _transaction(conn):
        cursor = conn.execute(
            "INSERT OR IGNORE INTO tls_received (received_at, organization, report_id, contact,"
            " start, end) VALUES (?,?,?,?,?,?)",
            (
                received_at,
                report.organization_name,
                report.report_id,
                report.contact_info,
                report.date_range.start_datetime.timestamp(),
                report.date_range.end_datetime.timestamp(),
            ),
        )
        if cursor.rowcount == 0:
            return False
        report_row = cursor.lastrowid
        for entry in report.policies:
            p = conn.execute(
                "INSERT INTO tls_received_policies (report, policy_domain, policy_type,"
                " successful, failed) VALUES (?,?,?,?,?)",
                (
                    report_row,
                    entry.policy.policy_domain.lower().rstrip("."),
                    entry.policy.policy_type,
                    entry.summary.total_successful_session_count,
                    entry.summary.total_failure_session_count,
                ),
            )
            conn.executemany(
                "INSERT INTO tls_received_failures VALUES (?,?,?,?,?,?)",
                [
                    (
                        p.lastrowid,
                        f.result_type,
                        f.receiving_mx_hostname,
                        f.receiving_ip,
                        f.sending_mta_ip,
                        f.failed_session_count,
                    )
                    for f in entry.failure_details
                ],
            )
    return True


def _transaction(conn: sqlite3.Connection) -> _TxContext:
    return _TxContext(conn)


class _TxContext:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def ingest_tls_report(
    conn: sqlite3.Connection, message_bytes: bytes, *, now: float | None = None
) -> str:
    """Read a received TLS report (the tlsrpt part of a multipart/report mail, RFC 8460
    §5.3, or a bare gzip/JSON report), keep it, and return one line for the log.
    ``TlsReportError`` says why a message is not a usable report."""
    report = parse_report(report_from_mail(message_bytes))
    received_at = time.time() if now is None else now
    new = store_report(conn, report, received_at)
    ok = sum(p.summary.total_successful_session_count for p in report.policies)
    failed = sum(p.summary.total_failure_session_count for p in report.policies)
    domains = ",".join(sorted({p.policy.policy_domain for p in report.policies})) or "-"
    state = "stored" if new else "duplicate, ignored"
    return (
        f"tls report {report.report_id!r} from {report.organization_name!r} about {domains}: "
        f"{len(report.policies)} policies, {ok} successful, {failed} failed sessions ({state})"
    )


@dataclass
class DomainSummary:
    """What ``pochta report tls`` prints for one policy domain and reporting organization."""

    policy_domain: str
    organization: str
    reports: int = 0
    successful: int = 0
    failed: int = 0
    # result type -> (sessions, MX hosts)
    failures: dict[str, tuple[int, list[str]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "policy_domain": self.policy_domain,
            "organization": self.organization,
            "reports": self.reports,
            "successful": self.successful,
            "failed": self.failed,
            "failures": {
                k: {"sessions": n, "mx_hosts": hosts} for k, (n, hosts) in self.failures.items()
            },
        }


def received_summary(
    conn: sqlite3.Connection, *, since: float, domain: str | None = None
) -> list[DomainSummary]:
    """The received reports whose period ends after ``since``, per policy domain and
    reporting organization (optionally one domain)."""
    wanted = domain.lower().rstrip(".") if domain else ""
    summaries: dict[tuple[str, str], DomainSummary] = {}
    reports: dict[tuple[str, str], set[int]] = {}
    for pid, rid, pdomain, org, ok, failed in conn.execute(
        "SELECT p.id, r.id, p.policy_domain, r.organization, p.successful, p.failed"
        " FROM tls_received_policies p JOIN tls_received r ON r.id = p.report"
        " WHERE r.end > ? AND (? = '' OR p.policy_domain = ?)"
        " ORDER BY p.policy_domain, r.organization",
        (since, wanted, wanted),
    ):
        key = (pdomain, org)
        s = summaries.setdefault(key, DomainSummary(pdomain, org))
        reports.setdefault(key, set()).add(rid)
        s.successful += ok
        s.failed += failed
        for rtype, mx, count in conn.execute(
            "SELECT result_type, mx_host, count FROM tls_received_failures WHERE policy = ?",
            (pid,),
        ):
            n, hosts = s.failures.get(rtype, (0, []))
            if mx and mx not in hosts:
                hosts = [*hosts, mx]
            s.failures[rtype] = (n + count, hosts)
    for key, s in summaries.items():
        s.reports = len(reports[key])
    return list(summaries.values())


__all__ = [
    "DomainSummary",
    "TlsRecorder",
    "TlsReportError",
    "already_sent",
    "ensure_tls_schema",
    "forget_sessions_before",
    "ingest_tls_report",
    "mark_sent",
    "open_tls_db",
    "received_summary",
    "record_outcome",
    "sessions_between",
    "store_report",
]
