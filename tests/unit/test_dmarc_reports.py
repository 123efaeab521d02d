"""DMARC aggregate reports (RFC 7489 §7.1, §7.2, Appendix C): the XML built and parsed, the
attachments (gzip, zip, plain) with their size caps, the §7.1 external-destination check,
the grouping of evaluations into records, the report:KIND alias target and the report job."""

from __future__ import annotations

import asyncio
import gzip
import io
import sqlite3
import xml.etree.ElementTree as ET
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from pochta.cleanup.door import destination_string
from pochta.directory.sqlite import SqliteDirectory
from pochta.mailauth.dmarc import NoSuchDomain
from pochta.reports import attachments
from pochta.reports.attachments import ReportFormatError, decompress, report_documents
from pochta.reports.dmarc_send import external_destination_allowed, send_dmarc_reports
from pochta.reports.dmarc_xml import ReportMetadata, build_report, group_records, parse_report
from pochta.reports.inbox import ingest
from pochta.reports.store import (
    DmarcEvaluation,
    EvaluationRecorder,
    open_reports_db,
    received_records,
)
from pochta.resolve import ReportDest
from pochta.resolve.resolver import Resolver
from pochta.tables.configured import ConfiguredTables
from tests.factories import make_settings

# A report as Google sends them (trimmed; the element order and values are theirs).
GOOGLE = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <extra_contact_info>https://support.google.com/a/answer/2466580</extra_contact_info>
    <report_id>12754893627340928475</report_id>
    <date_range><begin>1700006400</begin><end>1700092799</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><adkim>r</adkim><aspf>r</aspf>
    <p>quarantine</p><sp>quarantine</sp><pct>100</pct><np>quarantine</np>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.10</source_ip><count>12</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><result>pass</result><selector>r1</selector></dkim>
      <spf><domain>example.test</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>203.0.113.7</source_ip><count>3</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim><spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>example.test</header_from></identifiers>
    <auth_results><spf><domain>spam.test</domain><result>fail</result></spf></auth_results>
  </record>
</feedback>
"""

# Microsoft's: DMARCbis-style namespace, version element, envelope_to.
MICROSOFT = b"""<?xml version="1.0"?>
<feedback xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <version>1.0</version>
  <report_metadata>
    <org_name>Enterprise Outlook</org_name>
    <email>dmarcreport@microsoft.com</email>
    <report_id>a1b2c3d4e5f60718293a4b5c6d7e8f90</report_id>
    <date_range><begin>1700006400</begin><end>1700092800</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.test</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p>
    <sp>quarantine</sp><pct>100</pct><fo>0</fo>
  </policy_published>
  <record>
    <row>
      <source_ip>198.51.100.5</source_ip><count>1</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers><envelope_to>outlook.com</envelope_to><envelope_from>bounce.example.test</envelope_from>
      <header_from>example.test</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.test</domain><selector>r1</selector><result>pass</result></dkim>
      <spf><domain>bounce.example.test</domain><scope>mfrom</scope><result>softfail</result></spf>
    </auth_results>
  </record>
</feedback>
"""


def report_mail(attachment: bytes, ctype: str, filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc-support@google.com"
    msg["To"] = "dmarc-reports@example.test"
    msg["Subject"] = "Report domain: example.test Submitter: google.com Report-ID: 1"
    msg.set_content("This is an aggregate report from google.com.\n")
    maintype, _, subtype = ctype.partition("/")
    msg.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


def evaluation(**overrides: object) -> DmarcEvaluation:
    base: dict[str, object] = {
        "time": 1_700_000_000.0,
        "source_ip": "192.0.2.1",
        "header_from": "sender.test",
        "envelope_from": "bounce@sender.test",
        "spf_domain": "sender.test",
        "spf_result": "pass",
        "dkim": (("sender.test", "s1", "pass"),),
        "dmarc_result": "pass",
        "spf_aligned": True,
        "dkim_aligned": True,
        "policy_domain": "sender.test",
        "p": "reject",
        "sp": "reject",
        "pct": 100,
        "rua": (("mailto:agg@sender.test", None),),
    }
    base.update(overrides)
    return DmarcEvaluation(**base)  # type: ignore[arg-type]


# -- parsing -------------------------------------------------------------------------------


def test_google_report_gzip_parses() -> None:
    message = report_mail(
        gzip.compress(GOOGLE), "application/gzip", "google.com!example.test!1!2.xml.gz"
    )
    [document] = report_documents(message)
    report = parse_report(document)
    assert (report.org_name, report.report_id) == ("google.com", "12754893627340928475")
    assert (report.begin, report.end, report.domain) == (1700006400, 1700092799, "example.test")
    assert report.policy["p"] == "quarantine"
    assert [(r.source_ip, r.count, r.disposition, r.dkim, r.spf) for r in report.records] == [
        ("192.0.2.10", 12, "none", "pass", "pass"),
        ("203.0.113.7", 3, "quarantine", "fail", "fail"),
    ]
    assert report.records[0].auth["dkim"] == [
        {"domain": "example.test", "result": "pass", "selector": "r1"}
    ]


def test_microsoft_report_zip_parses() -> None:
    message = report_mail(zipped("report.xml", MICROSOFT), "application/zip", "r.zip")
    [document] = report_documents(message)
    report = parse_report(document)
    assert report.org_name == "Enterprise Outlook"
    [record] = report.records
    assert (record.source_ip, record.dkim, record.spf, record.header_from) == (
        "198.51.100.5",
        "pass",
        "fail",
        "example.test",
    )


def test_mislabelled_gzip_is_found_by_its_magic() -> None:
    message = report_mail(gzip.compress(GOOGLE), "application/octet-stream", "x.xml.gz")
    assert parse_report(report_documents(message)[0]).org_name == "google.com"


def test_dmarcbis_namespace_is_accepted() -> None:
    doc = GOOGLE.replace(b"<feedback>", b'<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">')
    assert parse_report(doc).report_id == "12754893627340928475"


def test_gzip_bomb_is_refused_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (2 * 1024 * 1024))  # ~2 KiB in, 2 MiB out
    assert len(bomb) < 10_000
    with pytest.raises(ReportFormatError, match="larger than 1048576"):
        decompress(bomb, limit=1024 * 1024)
    assert len(decompress(bomb, limit=4 * 1024 * 1024)) == 2 * 1024 * 1024


def test_zip_bomb_and_member_count_are_refused() -> None:
    with pytest.raises(ReportFormatError, match="over 1048576"):
        decompress(zipped("a.xml", b"\0" * (2 * 1024 * 1024)), limit=1024 * 1024)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(attachments.MAX_ZIP_MEMBERS + 1):
            z.writestr(f"{i}.xml", b"<feedback/>")
    with pytest.raises(ReportFormatError, match="members"):
        decompress(buf.getvalue())


def test_entity_declarations_are_refused() -> None:
    laughs = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><feedback>&lol2;</feedback>"""
    with pytest.raises(ReportFormatError, match="DOCTYPE"):
        parse_report(laughs)


def test_other_xml_is_refused_with_the_reason() -> None:
    with pytest.raises(ReportFormatError, match="not <feedback>"):
        parse_report(b"<html/>")
    with pytest.raises(ReportFormatError, match="no gzip, zip, XML or JSON attachment"):
        report_documents(b"From: a@b\r\nSubject: hi\r\n\r\njust text\r\n")


# -- building ------------------------------------------------------------------------------


def test_grouping_counts_identical_results_per_source_ip() -> None:
    rows = group_records(
        [
            evaluation(),
            evaluation(time=1_700_000_100.0),
            evaluation(source_ip="192.0.2.2"),
            evaluation(spf_aligned=False, spf_result="fail"),
        ]
    )
    assert [(r.source_ip, r.count, r.spf_aligned) for r in rows] == [
        ("192.0.2.1", 2, True),
        ("192.0.2.2", 1, True),
        ("192.0.2.1", 1, False),
    ]


# RFC 7489 Appendix C: the sequence of each complex type, in order.
APPENDIX_C = {
    "feedback": ["version", "report_metadata", "policy_published", "record"],
    "report_metadata": ["org_name", "email", "extra_contact_info", "report_id", "date_range"],
    "date_range": ["begin", "end"],
    "policy_published": ["domain", "adkim", "aspf", "p", "sp", "pct"],
    "record": ["row", "identifiers", "auth_results"],
    "row": ["source_ip", "count", "policy_evaluated"],
    "policy_evaluated": ["disposition", "dkim", "spf", "reason"],
    "reason": ["type", "comment"],
    "identifiers": ["envelope_to", "envelope_from", "header_from"],
    "auth_results": ["dkim", "spf"],
    "dkim": ["domain", "selector", "result", "human_result"],
    "spf": ["domain", "scope", "result"],
}
REQUIRED = {
    "feedback": {"report_metadata", "policy_published", "record"},
    "report_metadata": {"org_name", "email", "report_id", "date_range"},
    "policy_published": {"domain", "p", "sp", "pct"},
    "row": {"source_ip", "count", "policy_evaluated"},
    "policy_evaluated": {"disposition", "dkim", "spf"},
    "identifiers": {"header_from"},
    "auth_results": {"spf"},
}


def _check_shape(element: ET.Element, parent: str = "") -> None:
    tag = element.tag
    children = [c.tag for c in element]
    if tag in ("dkim", "spf") and parent == "policy_evaluated":
        assert element.text in ("pass", "fail")  # DMARCResultType
        assert not children
        return
    if tag not in APPENDIX_C:
        assert not children, f"{tag} should be a simple element"
        return
    order = APPENDIX_C[tag]
    assert all(c in order for c in children), (tag, children)
    positions = [order.index(c) for c in children]
    assert positions == sorted(positions), f"{tag}: {children} out of Appendix C order"
    assert REQUIRED.get(tag, set()) <= set(children), (tag, children)
    for child in element:
        _check_shape(child, tag)


def test_built_report_has_the_appendix_c_shape() -> None:
    meta = ReportMetadata("mail.example.test", "postmaster@mail.example.test", "r1", 10, 20)
    rows = group_records(
        [
            evaluation(),
            evaluation(
                source_ip="203.0.113.9",
                dkim=(),
                spf_result="fail",
                spf_aligned=False,
                dkim_aligned=False,
                dmarc_result="fail",
                disposition="quarantine",
                override="local_policy",
            ),
        ]
    )
    document = build_report(meta, evaluation(), rows)
    root = ET.fromstring(document)  # noqa: S314 - our own document
    _check_shape(root)
    assert root.findtext("policy_published/p") == "reject"
    # And it parses back.
    back = parse_report(document)
    assert back.report_id == "r1"
    assert [(r.source_ip, r.dkim, r.spf, r.disposition) for r in back.records] == [
        ("192.0.2.1", "pass", "pass", "none"),
        ("203.0.113.9", "fail", "fail", "quarantine"),
    ]


# -- §7.1 external destinations --------------------------------------------------------------


def lookup_from(zone: dict[str, list[bytes]]):  # type: ignore[no-untyped-def]
    asked: list[str] = []

    async def lookup(name: str) -> list[bytes]:
        asked.append(name)
        if name not in zone:
            raise NoSuchDomain(name)
        return zone[name]

    return lookup, asked


async def test_same_organizational_domain_needs_no_authorisation() -> None:
    lookup, asked = lookup_from({})
    assert await external_destination_allowed("mail.sender.test", "sender.test", lookup) == ""
    assert asked == []


async def test_external_destination_needs_its_report_record() -> None:
    lookup, asked = lookup_from({"sender.test._report._dmarc.collector.test": [b"v=DMARC1"]})
    assert await external_destination_allowed("sender.test", "collector.test", lookup) == ""
    assert asked == ["sender.test._report._dmarc.collector.test"]
    refused = await external_destination_allowed("other.test", "collector.test", lookup)
    assert "other.test._report._dmarc.collector.test" in refused
    assert "§7.1" in refused


# -- the job ---------------------------------------------------------------------------------


async def test_send_builds_one_gzip_report_per_domain_and_honours_the_limits(
    tmp_path: Path,
) -> None:
    settings = make_settings({"server.data_dir": str(tmp_path)})
    record = EvaluationRecorder(settings)
    record(evaluation())
    record(evaluation(source_ip="192.0.2.2", time=1_700_000_001.0))
    record(
        evaluation(
            header_from="ext.test",
            policy_domain="ext.test",
            rua=(("mailto:agg@collector.test", None), ("mailto:small@ext.test", 1024)),
        )
    )
    record(evaluation(header_from="example.org", policy_domain="example.org"))  # ours
    record(evaluation(header_from="norua.test", policy_domain="norua.test", rua=()))
    record.flush()  # on the event loop the recorder writes in batches
    lookup, _ = lookup_from({})
    dropped: list[tuple[str, list[str], bytes]] = []
    conn = open_reports_db(settings)
    reports = await send_dmarc_reports(
        settings,
        conn,
        lookup=lookup,
        now=1_700_000_500.0,
        ours=lambda d: d == "example.org",
        drop=lambda s, r, c: dropped.append((s, r, c)),
    )
    assert [(r.domain, r.rua, bool(r.problem)) for r in reports] == [
        ("ext.test", "agg@collector.test", True),  # §7.1: collector.test did not agree
        ("ext.test", "small@ext.test", True),  # !1k: too large
        ("sender.test", "agg@sender.test", False),
    ]
    [(sender, rcpts, content)] = dropped
    assert (sender, rcpts) == ("dmarc-reports@mail.example.test", ["agg@sender.test"])
    # §7.2.1.1: Subject and filename.
    assert b"Subject: Report Domain: sender.test Submitter: mail.example.test Report-ID: <" in (
        content
    )
    name = "mail.example.test!sender.test!1700000000!1700000500.xml.gz"
    assert name.encode() in content
    document = report_documents(content)[0]
    back = parse_report(document)
    assert back.domain == "sender.test"
    assert sorted((r.source_ip, r.count) for r in back.records) == [
        ("192.0.2.1", 1),
        ("192.0.2.2", 1),
    ]
    # The next run starts where this one ended: nothing due.
    again = await send_dmarc_reports(
        settings,
        conn,
        lookup=lookup,
        now=1_700_000_600.0,
        ours=lambda d: False,
        drop=lambda s, r, c: dropped.append((s, r, c)),
    )
    # (example.org, no longer "ours", reports to sender.test, which did not agree: §7.1.)
    assert [(r.domain, bool(r.problem)) for r in again] == [("example.org", True)]
    assert len(dropped) == 1
    conn.close()


# -- inbox -----------------------------------------------------------------------------------


def test_ingest_stores_a_report_once_and_keeps_a_bad_one(tmp_path: Path) -> None:
    settings = make_settings({"server.data_dir": str(tmp_path)})
    message = report_mail(gzip.compress(GOOGLE), "application/gzip", "g.xml.gz")
    assert ingest("dmarc", message, settings=settings).outcome == "stored"
    assert ingest("dmarc", message, settings=settings).outcome == "duplicate"
    conn = open_reports_db(settings)
    rows = received_records(conn, since=0)
    conn.close()
    assert sorted((org, r.source_ip, r.count) for org, r in rows) == [
        ("google.com", "192.0.2.10", 12),
        ("google.com", "203.0.113.7", 3),
    ]
    bad = ingest("dmarc", b"Subject: junk\r\n\r\nnot a report\r\n", settings=settings)
    assert bad.outcome == "bad"
    assert Path(bad.path).parent == tmp_path / "reports" / "bad"
    assert Path(bad.path).read_bytes() == b"Subject: junk\r\n\r\nnot a report\r\n"


def test_reports_db_is_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    settings = make_settings({"server.data_dir": str(tmp_path)})
    conn = open_reports_db(settings)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    conn.close()
    assert isinstance(conn, sqlite3.Connection)


# -- the alias target ------------------------------------------------------------------------


def test_report_alias_target_resolves_to_a_report_destination(tmp_path: Path) -> None:
    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    directory.add_domain("example.org")
    directory.add_account("me@example.org", password_hash="{PLAIN}x")
    directory.add_alias("dmarc-reports@example.org", ["report:dmarc", "me@example.org"])
    settings = make_settings({"server.data_dir": str(tmp_path)})
    resolver = Resolver(directory, ConfiguredTables.open(settings.tables), settings)
    found = resolver.resolve("dmarc-reports+x@example.org")
    assert ReportDest("dmarc") in found.destinations
    assert [destination_string(d) for d in found.deliverable] == [  # type: ignore[arg-type]
        "report:dmarc",
        "mailbox:me@example.org/x",
    ]
    directory.close()


async def test_recorder_writes_in_batches_on_the_event_loop(tmp_path: Path) -> None:
    """One transaction per batch, not one commit per message: kept until BATCH gathered
    or the timer (FLUSH_SECONDS) fires, and written whole by flush()."""
    settings = make_settings({"server.data_dir": str(tmp_path)})
    record = EvaluationRecorder(settings)
    conn = open_reports_db(settings)

    def rows() -> int:
        return int(conn.execute("SELECT count(*) FROM dmarc_evaluations").fetchone()[0])

    for i in range(3):
        record(evaluation(time=1_700_000_000.0 + i))
    assert rows() == 0  # kept, the timer is set
    record.flush()
    assert rows() == 3
    for i in range(EvaluationRecorder.BATCH):
        record(evaluation(time=1_700_001_000.0 + i))
    assert rows() == 3 + EvaluationRecorder.BATCH  # a full batch is written at once
    record(evaluation())
    await asyncio.sleep(EvaluationRecorder.FLUSH_SECONDS * 1.5)  # the timer writes the rest
    assert rows() == 4 + EvaluationRecorder.BATCH
    conn.close()


def test_check_names_a_report_destination_as_the_admin_writes_it() -> None:
    from pochta.cli.route import destination_text
    from pochta.resolve.classes import ReportDest

    assert destination_text(ReportDest("dmarc")) == (
        "report:dmarc (stored in reports.db: pochta report dmarc)"
    )
