"""reports/tls_store.py and tls_sender.py: sessions recorded and read back, reports received,
stored once and summarised, reports sent to mailto and https rua (fake door and POST)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pochta.mailauth.tls_report import (
    TlsOutcome,
    TlsReportError,
    build_report,
    parse_report,
    report_from_mail,
    report_mail,
    sts_policy_string,
)
from pochta.reports.tls_sender import send_tls_reports
from pochta.reports.tls_store import (
    TlsRecorder,
    connect_tls_db,
    ingest_tls_report,
    received_summary,
    sessions_between,
)

T0 = 1_714_521_600.0  # 2024-05-01T00:00:00Z
STS = sts_policy_string("enforce", ["mx.example.net"])


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return connect_tls_db(tmp_path / "reports.db")


def test_recorder_writes_one_row_per_session(conn: sqlite3.Connection, tmp_path: Path) -> None:
    now = [T0 + 10]
    recorder = TlsRecorder(lambda: connect_tls_db(tmp_path / "reports.db"), clock=lambda: now[0])
    recorder(TlsOutcome("Example.NET.", "sts", STS, "mx.example.net", "192.0.2.1"))
    recorder(
        TlsOutcome(
            "example.net",
            "sts",
            STS,
            "mx.example.net",
            "192.0.2.1",
            "",
            "certificate-expired",
            "451 4.7.5 ... certificate has expired",
        )
    )
    now[0] = T0 + 90_000  # the next day
    recorder(TlsOutcome("example.org", "no-policy-found", (), "mx.example.org", "192.0.2.2"))
    recorder.close()
    found = sessions_between(conn, T0, T0 + 86_400)
    assert list(found) == ["example.net"]
    assert [o.result_type for o in found["example.net"]] == ["", "certificate-expired"]
    assert found["example.net"][0].policy_string == STS
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_recorder_never_raises(tmp_path: Path) -> None:
    def broken() -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    TlsRecorder(broken)(TlsOutcome("example.net", "sts", STS, "mx", "192.0.2.1"))


def _received(org: str, report_id: str, failures: int) -> bytes:
    outcomes = [TlsOutcome("ours.example", "sts", STS, "mx.ours.example", "198.51.100.1")] * 4
    outcomes += [
        TlsOutcome(
            "ours.example",
            "sts",
            STS,
            "mx.ours.example",
            "198.51.100.1",
            "203.0.113.9",
            "certificate-expired",
        )
    ] * failures
    report = build_report(
        outcomes,
        organization=org,
        contact=f"tls@{org}",
        report_id=report_id,
        start=dt.datetime.fromtimestamp(T0, dt.UTC),
        end=dt.datetime.fromtimestamp(T0 + 86_400, dt.UTC),
    )
    return report_mail(
        report,
        policy_domain="ours.example",
        submitter=org,
        from_address=f"noreply@{org}",
        to=["tlsrpt@ours.example"],
        boundary="xyz",
    )


def test_ingest_stores_once_and_summarises(conn: sqlite3.Connection) -> None:
    line = ingest_tls_report(conn, _received("google.com", "r1", 2), now=T0 + 90_000)
    assert "'r1' from 'google.com' about ours.example" in line
    assert "4 successful, 2 failed" in line
    assert "(stored)" in line
    again = ingest_tls_report(conn, _received("google.com", "r1", 2), now=T0 + 90_001)
    assert "duplicate" in again
    ingest_tls_report(conn, _received("google.com", "r2", 1), now=T0 + 90_002)
    ingest_tls_report(conn, _received("outlook.com", "r1", 0), now=T0 + 90_003)
    rows = received_summary(conn, since=T0)
    by_org = {r.organization: r for r in rows}
    assert by_org["google.com"].reports == 2
    assert (by_org["google.com"].successful, by_org["google.com"].failed) == (8, 3)
    assert by_org["google.com"].failures == {"certificate-expired": (3, ["mx.ours.example"])}
    assert by_org["outlook.com"].failures == {}
    assert received_summary(conn, since=T0, domain="other.example") == []
    assert received_summary(conn, since=T0 + 200_000) == []


def test_ingest_refuses_a_message_without_a_report(conn: sqlite3.Connection) -> None:
    with pytest.raises(TlsReportError, match="no application/tlsrpt"):
        ingest_tls_report(conn, b"Subject: hi\r\n\r\nno report here\r\n")


def test_send_reports_to_mailto_and_https_once(conn: sqlite3.Connection) -> None:
    recorder = TlsRecorder(lambda: conn, clock=lambda: T0 + 100)
    recorder(TlsOutcome("example.net", "sts", STS, "mx.example.net", "192.0.2.1"))
    recorder(TlsOutcome("quiet.example", "no-policy-found", (), "mx.quiet.example", "192.0.2.3"))
    records = {
        "_smtp._tls.example.net": [
            b"v=TLSRPTv1; rua=mailto:tls@example.net,https://r.example.net/post"
        ],
        "_smtp._tls.quiet.example": [],
    }

    async def lookup(name: str) -> list[bytes]:
        return records[name]

    posts: list[tuple[str, bytes]] = []

    async def post(url: str, body: bytes) -> int:
        posts.append((url, body))
        return 200

    dropped: list[tuple[str, list[str], bytes]] = []
    run: Any = lambda: send_tls_reports(  # noqa: E731
        conn,
        lambda sender, rcpts, content: dropped.append((sender, rcpts, content)),
        hostname="mail.example.org",
        start=T0,
        end=T0 + 86_400,  # type: ignore[arg-type]
        txt_lookup=lookup,
        post=post,
        clock=lambda: T0 + 86_500,
    )
    (sent,) = asyncio.run(run())
    assert sent.domain == "example.net"
    assert sent.queued == ("tls@example.net",)
    assert sent.posted == ("https://r.example.net/post",)
    ((sender, recipients, content),) = dropped
    assert sender == ""
    assert recipients == ["tls@example.net"]
    report = parse_report(report_from_mail(content))
    assert report.policies[0].summary.total_successful_session_count == 1
    assert parse_report(posts[0][1]) == report
    assert asyncio.run(run()) == []  # the period is reported once
