"""``reports.db``: one SQLite database in the data dir for every kind of report.

Written from several processes (cleanup runs where the SMTP session runs, maybe a worker;
the report agent where the message is delivered) and read by the CLI, so: WAL (readers never
wait for the writer), a busy timeout (writers take turns instead of failing), and
``synchronous=NORMAL``: these are statistics, a commit is one WAL append with no fsync, and a
power cut may lose the last ones but never corrupts the file (SQLite "WAL mode" docs). One
INSERT per checked message.

Each module keeps its own tables: it calls :func:`ensure_schema` with its name, a version and
its CREATE statements; the version is kept in ``schema_versions`` (the TLS-RPT tables do the
same in ``reports/tls_store.py``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pochta.config.settings import Settings
from pochta.logs import get_logger

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DB_NAME",
    "DmarcEvaluation",
    "EvaluationRecorder",
    "ReceivedRecord",
    "ReceivedReport",
    "connect_reports_db",
    "ensure_schema",
    "forget_evaluations_before",
    "open_reports_db",
    "reports_db_path",
]

log = get_logger("reports")

DB_NAME = "reports.db"
BUSY_TIMEOUT_MS = 5000


def reports_db_path(settings: Settings) -> Path:
    return settings.data_dir / DB_NAME


def open_reports_db(settings: Settings) -> sqlite3.Connection:
    """A new connection to the data dir's ``reports.db`` (:func:`connect_reports_db`)."""
    return connect_reports_db(reports_db_path(settings))


def connect_reports_db(path: Path) -> sqlite3.Connection:
    """A new connection to ``reports.db`` at ``path`` (created if missing) in WAL mode with a
    busy timeout, the DMARC tables in place. One per thread; close it when done."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # statistics: no fsync per commit (above)
    ensure_schema(conn, "dmarc", DMARC_SCHEMA_VERSION, DMARC_SCHEMA)
    return conn


def forget_evaluations_before(conn: sqlite3.Connection, before: float) -> int:
    """Remove the DMARC evaluations older than ``before``; how many were removed."""
    return conn.execute("DELETE FROM dmarc_evaluations WHERE time < ?", (before,)).rowcount


def ensure_schema(
    conn: sqlite3.Connection, module: str, version: int, statements: Sequence[str]
) -> None:
    """Create ``module``'s tables once (``CREATE ... IF NOT EXISTS``), recording ``version``."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions (module TEXT PRIMARY KEY, version INTEGER)"
    )
    row = conn.execute("SELECT version FROM schema_versions WHERE module = ?", (module,)).fetchone()
    if row is not None and int(row[0]) >= version:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT OR REPLACE INTO schema_versions (module, version) VALUES (?, ?)",
            (module, version),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


DMARC_SCHEMA_VERSION = 1
DMARC_SCHEMA = (
    # One row per DMARC evaluation of an inbound message (cleanup/auth_filter.py).
    """CREATE TABLE IF NOT EXISTS dmarc_evaluations (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        source_ip TEXT NOT NULL,
        header_from TEXT NOT NULL,
        envelope_from TEXT NOT NULL,
        spf_domain TEXT NOT NULL,
        spf_result TEXT NOT NULL,
        dkim TEXT NOT NULL,          -- JSON [[d, s, result], ...]
        dmarc_result TEXT NOT NULL,
        spf_aligned INTEGER NOT NULL,
        dkim_aligned INTEGER NOT NULL,
        policy_domain TEXT NOT NULL,
        p TEXT NOT NULL, sp TEXT NOT NULL, pct INTEGER NOT NULL,
        adkim TEXT NOT NULL, aspf TEXT NOT NULL, np TEXT NOT NULL,
        rua TEXT NOT NULL,           -- JSON [[uri, max_bytes or null], ...]
        disposition TEXT NOT NULL,
        override TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dmarc_evaluations_by_time ON dmarc_evaluations(time)",
    # Aggregate reports others sent us (reports/inbox.py).
    """CREATE TABLE IF NOT EXISTS dmarc_reports (
        id INTEGER PRIMARY KEY,
        received REAL NOT NULL,
        org_name TEXT NOT NULL,
        email TEXT NOT NULL,
        report_id TEXT NOT NULL,
        begin INTEGER NOT NULL,
        end INTEGER NOT NULL,
        domain TEXT NOT NULL,
        policy TEXT NOT NULL,        -- JSON of policy_published
        UNIQUE (org_name, report_id)
    )""",
    """CREATE TABLE IF NOT EXISTS dmarc_report_records (
        report INTEGER NOT NULL REFERENCES dmarc_reports(id) ON DELETE CASCADE,
        source_ip TEXT NOT NULL,
        count INTEGER NOT NULL,
        disposition TEXT NOT NULL,
        dkim TEXT NOT NULL,          -- policy_evaluated: pass/fail (alignment)
        spf TEXT NOT NULL,
        header_from TEXT NOT NULL,
        auth TEXT NOT NULL           -- JSON of auth_results
    )""",
    "CREATE INDEX IF NOT EXISTS dmarc_report_records_by_report ON dmarc_report_records(report)",
    # Reports we sent (reports/dmarc_send.py): the next period starts where the last ended.
    """CREATE TABLE IF NOT EXISTS dmarc_sent (
        id INTEGER PRIMARY KEY,
        sent REAL NOT NULL,
        domain TEXT NOT NULL,
        report_id TEXT NOT NULL,
        begin REAL NOT NULL,
        end REAL NOT NULL,         -- the next period starts here
        rua TEXT NOT NULL,
        outcome TEXT NOT NULL        -- "queued", or why not
    )""",
    "CREATE INDEX IF NOT EXISTS dmarc_sent_by_domain ON dmarc_sent(domain, end)",
)


@dataclass(frozen=True, slots=True)
class DmarcEvaluation:
    """What one inbound DMARC evaluation found (RFC 7489 Appendix C ``record`` material).

    ``dkim`` is one (d, selector, result) per signature; ``rua`` the record's aggregate
    report URIs with their ``!size`` limit in octets (None: no limit); ``override`` why the
    disposition applied differs from the policy (RFC 7489 Appendix C PolicyOverrideType:
    ``forwarded``, ``sampled_out``, ``trusted_forwarder``, ``local_policy``...)."""

    time: float
    source_ip: str
    header_from: str
    envelope_from: str
    spf_domain: str
    spf_result: str
    dkim: tuple[tuple[str, str, str], ...]
    dmarc_result: str
    spf_aligned: bool
    dkim_aligned: bool
    policy_domain: str = ""
    p: str = ""
    sp: str = ""
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    np: str = ""
    rua: tuple[tuple[str, int | None], ...] = ()
    disposition: str = "none"
    override: str = ""


def insert_evaluation(conn: sqlite3.Connection, ev: DmarcEvaluation) -> None:
    conn.execute(
        "INSERT INTO dmarc_evaluations (time, source_ip, header_from, envelope_from, "
        "spf_domain, spf_result, dkim, dmarc_result, spf_aligned, dkim_aligned, "
        "policy_domain, p, sp, pct, adkim, aspf, np, rua, disposition, override) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.time,
            ev.source_ip,
            ev.header_from,
            ev.envelope_from,
            ev.spf_domain,
            ev.spf_result,
            json.dumps([list(d) for d in ev.dkim]),
            ev.dmarc_result,
            int(ev.spf_aligned),
            int(ev.dkim_aligned),
            ev.policy_domain,
            ev.p,
            ev.sp,
            ev.pct,
            ev.adkim,
            ev.aspf,
            ev.np,
            json.dumps([list(u) for u in ev.rua]),
            ev.disposition,
            ev.override,
        ),
    )


def evaluations_between(
    conn: sqlite3.Connection, begin: float, end: float, domain: str | None = None
) -> list[DmarcEvaluation]:
    """The evaluations with ``begin <= time < end`` (of ``domain``'s policy when given)."""
    sql = "SELECT * FROM dmarc_evaluations WHERE time >= ? AND time < ?"
    args: list[object] = [begin, end]
    if domain is not None:
        sql += " AND policy_domain = ?"
        args.append(domain)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(sql + " ORDER BY id", args).fetchall()
    finally:
        conn.row_factory = None
    return [
        DmarcEvaluation(
            time=r["time"],
            source_ip=r["source_ip"],
            header_from=r["header_from"],
            envelope_from=r["envelope_from"],
            spf_domain=r["spf_domain"],
            spf_result=r["spf_result"],
            dkim=tuple((str(d), str(s), str(res)) for d, s, res in json.loads(r["dkim"])),
            dmarc_result=r["dmarc_result"],
            spf_aligned=bool(r["spf_aligned"]),
            dkim_aligned=bool(r["dkim_aligned"]),
            policy_domain=r["policy_domain"],
            p=r["p"],
            sp=r["sp"],
            pct=r["pct"],
            adkim=r["adkim"],
            aspf=r["aspf"],
            np=r["np"],
            rua=tuple((str(u), None if n is None else int(n)) for u, n in json.loads(r["rua"])),
            disposition=r["disposition"],
            override=r["override"],
        )
        for r in rows
    ]


class EvaluationRecorder:
    """The recorder ``cleanup/auth_filter.AuthFilter`` calls once per evaluated message.

    On the event loop the evaluations are kept in memory and written together, in one
    transaction, when ``BATCH`` have gathered or ``FLUSH_SECONDS`` after the first of them
    (one INSERT and commit per message cost more than the DMARC check itself); without a
    running loop each is written at once. :meth:`flush` writes what is kept (the server
    calls it at stop). A database error is logged, never raised: statistics must not cost a
    message; a crash loses at most the last second of them.
    """

    BATCH = 200
    FLUSH_SECONDS = 1.0

    def __init__(self, settings: Settings, *, path: Path | None = None) -> None:
        self._settings = settings
        self._path = path
        self._local = threading.local()
        self._pending: list[DmarcEvaluation] = []
        self._timer: asyncio.TimerHandle | None = None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            path = self._path or reports_db_path(self._settings)
            conn = connect_reports_db(path)
            self._local.conn = conn
        return conn

    def __call__(self, evaluation: DmarcEvaluation) -> None:
        self._pending.append(evaluation)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(self._pending) >= self.BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write the evaluations kept so far, in one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                for evaluation in pending:
                    insert_evaluation(conn, evaluation)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            log.warning("dmarc_evaluation_not_recorded", error=str(exc), count=len(pending))


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """One ``record`` row of a received aggregate report (RFC 7489 Appendix C)."""

    source_ip: str
    count: int
    disposition: str
    dkim: str  # policy_evaluated dkim: pass/fail (aligned)
    spf: str  # policy_evaluated spf: pass/fail (aligned)
    header_from: str
    auth: dict[str, list[dict[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """A parsed aggregate report (report_metadata, policy_published, records)."""

    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    domain: str
    policy: dict[str, str]
    records: tuple[ReceivedRecord, ...]


def store_report(conn: sqlite3.Connection, report: ReceivedReport, *, now: float) -> bool:
    """Keep ``report``; False when the same org already sent this report id (a resend)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT OR IGNORE INTO dmarc_reports (received, org_name, email, report_id, begin, "
            "end, domain, policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now,
                report.org_name,
                report.email,
                report.report_id,
                report.begin,
                report.end,
                report.domain,
                json.dumps(report.policy),
            ),
        )
        if cur.rowcount == 0:
            conn.execute("ROLLBACK")
            return False
        report_row = cur.lastrowid
        conn.executemany(
            "INSERT INTO dmarc_report_records (report, source_ip, count, disposition, dkim, "
            "spf, header_from, auth) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    report_row,
                    r.source_ip,
                    r.count,
                    r.disposition,
                    r.dkim,
                    r.spf,
                    r.header_from,
                    json.dumps(r.auth),
                )
                for r in report.records
            ],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def received_records(
    conn: sqlite3.Connection, *, since: float, domain: str | None = None
) -> list[tuple[str, ReceivedRecord]]:
    """(org_name, record) of the received reports whose period ends after ``since``."""
    sql = (
        "SELECT r.org_name, c.source_ip, c.count, c.disposition, c.dkim, c.spf, "
        "c.header_from, c.auth FROM dmarc_report_records AS c "
        "JOIN dmarc_reports AS r ON r.id = c.report WHERE r.end >= ?"
    )
    args: list[object] = [int(since)]
    if domain is not None:
        sql += " AND (r.domain = ? OR c.header_from = ?)"
        args += [domain, domain]
    return [
        (org, ReceivedRecord(ip, int(n), disp, dkim, spf, hfrom, json.loads(auth)))
        for org, ip, n, disp, dkim, spf, hfrom, auth in conn.execute(sql, args)
    ]


def log_sent(
    conn: sqlite3.Connection,
    *,
    domain: str,
    report_id: str,
    begin: float,
    end: float,
    rua: str,
    outcome: str,
    now: float | None = None,
) -> None:
    conn.execute(
        "INSERT INTO dmarc_sent (sent, domain, report_id, begin, end, rua, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (time.time() if now is None else now, domain, report_id, begin, end, rua, outcome),
    )


def last_sent_end(conn: sqlite3.Connection, domain: str) -> float | None:
    """Where the last report period of ``domain`` ended (its next one starts there)."""
    row = conn.execute("SELECT max(end) FROM dmarc_sent WHERE domain = ?", (domain,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def as_dict(evaluation: DmarcEvaluation) -> dict[str, object]:
    return asdict(evaluation)
