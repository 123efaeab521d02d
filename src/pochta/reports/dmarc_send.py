"""Sending DMARC aggregate reports (RFC 7489 §7.2): the job the master runs every
``[reports] interval_hours`` and ``pochta report send`` runs once.

For each policy domain with evaluations since its last report (``dmarc_sent``; the first
report starts at its oldest evaluation) whose record has a ``mailto:`` ``rua``:

1. the evaluations are grouped into ``record`` rows and written as the Appendix C document,
   gzipped, named ``receiver!policy-domain!begin!end.xml.gz`` (§7.2.1.1);
2. each ``rua`` address outside the policy domain's organizational domain must agree to
   receive them (§7.1: TXT ``v=DMARC1`` at ``DOMAIN._report._dmarc.RUA-DOMAIN``), else it is
   skipped;
3. a report larger than the URI's ``!size`` is not sent to it (§6.4);
4. the mail (From ``dmarc-reports@HOST``, Subject ``Report Domain: D Submitter: S
   Report-ID: <id>``, §7.2.1.1) is handed to ``drop`` (the maildrop: the pickup runs it
   through the door like any local submission, so it is DKIM-signed);
5. every address tried is logged in ``dmarc_sent`` with its outcome, and the next period
   of the domain starts at this one's end.

No reports about our own domains (hosted or the host name): their mail reaches us by
submission, and a report from us to us about us would only loop.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import gzip
import math
import secrets
import sqlite3
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.mailauth.dmarc import (
    DnsTemporaryError,
    NoSuchDomain,
    TxtLookup,
    is_dmarc_record,
    organizational_domain,
)
from pochta.reports.dmarc_xml import ReportMetadata, build_report, group_records
from pochta.reports.store import evaluations_between, last_sent_end, log_sent

__all__ = [
    "OutgoingReport",
    "build_dmarc_reports",
    "external_destination_allowed",
    "report_sender",
    "send_dmarc_reports",
]

log = get_logger("reports")

Drop = Callable[[str, list[str], bytes], None]
"""Queue one message: (envelope sender, recipients, content)."""


@dataclass(frozen=True, slots=True)
class OutgoingReport:
    domain: str
    report_id: str
    begin: int
    end: int
    rua: str  # the mailto address
    filename: str
    content: bytes  # the whole message
    problem: str = ""  # why it is not sent ("" = send it)


def report_sender(settings: Settings) -> str:
    return f"dmarc-reports@{settings.server.hostname.rstrip('.').lower()}"


async def external_destination_allowed(domain: str, rua_domain: str, lookup: TxtLookup) -> str:
    """RFC 7489 §7.1: "" when ``rua_domain`` may receive ``domain``'s reports, else why not."""
    if organizational_domain(domain) == organizational_domain(rua_domain):
        return ""
    name = f"{domain}._report._dmarc.{rua_domain}"
    try:
        answers = await lookup(name)
    except NoSuchDomain:
        answers = []
    except DnsTemporaryError as exc:
        return f"§7.1 check of {name} failed: {exc}"
    if any(is_dmarc_record(a) for a in answers):
        return ""
    return f"external destination not authorised: no v=DMARC1 TXT at {name} (RFC 7489 §7.1)"


def _mailto(uri: str) -> str:
    """The address of a ``mailto:`` URI (RFC 6068), "" for other schemes."""
    if not uri.lower().startswith("mailto:"):
        return ""
    return urllib.parse.unquote(uri[7:].split("?", 1)[0]).strip()


def _message(
    settings: Settings, domain: str, report_id: str, to: str, filename: str, gz: bytes
) -> bytes:
    host = settings.server.hostname.rstrip(".").lower()
    msg = EmailMessage()
    msg["From"] = report_sender(settings)
    msg["To"] = to
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=host)
    # RFC 7489 §7.2.1.1: the Subject names the domain, the submitter and the report id.
    msg["Subject"] = f"Report Domain: {domain} Submitter: {host} Report-ID: <{report_id}>"
    msg.set_content(f"DMARC aggregate report for {domain} from {host} (RFC 7489 §7.2).\n")
    # RFC 7489 §7.2.1.1: the gzipped document as application/gzip.
    msg.add_attachment(gz, maintype="application", subtype="gzip", filename=filename)
    # Lines up to 998 octets (RFC 5322 §2.1.1): the Subject stays on one line.
    return msg.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))


async def build_dmarc_reports(
    settings: Settings,
    conn: sqlite3.Connection,
    *,
    lookup: TxtLookup,
    now: float,
    ours: Callable[[str], bool],
) -> list[OutgoingReport]:
    """The reports due now (see the module docstring), not yet queued or logged."""
    host = settings.server.hostname.rstrip(".").lower()
    domains = [
        str(d)
        for (d,) in conn.execute(
            "SELECT DISTINCT policy_domain FROM dmarc_evaluations "
            "WHERE policy_domain != '' AND rua != '[]' AND time < ?",
            (now,),
        )
    ]
    out: list[OutgoingReport] = []
    for domain in sorted(domains):
        if ours(domain):
            continue  # no reports about our own mail (module docstring)
        start = last_sent_end(conn, domain)
        if start is None:
            row = conn.execute(
                "SELECT min(time) FROM dmarc_evaluations WHERE policy_domain = ?", (domain,)
            ).fetchone()
            start = float(row[0])
        evaluations = evaluations_between(conn, start, now, domain)
        if not evaluations:
            continue
        # The policy as last seen with a rua (the record may have changed in the period).
        latest = next((e for e in reversed(evaluations) if e.rua), evaluations[-1])
        begin, end = int(start), math.ceil(now)  # Appendix C date_range: whole seconds
        report_id = f"{end}.{secrets.token_hex(6)}@{host}"
        meta = ReportMetadata(
            org_name=settings.reports.organization or host,
            email=settings.reports.contact or f"postmaster@{host}",
            report_id=report_id,
            begin=begin,
            end=end,
        )
        document = build_report(meta, latest, group_records(evaluations))
        gz = gzip.compress(document, mtime=0)
        # RFC 7489 §7.2.1.1: receiver "!" policy-domain "!" begin "!" end ".xml.gz".
        filename = f"{host}!{domain}!{begin}!{end}.xml.gz"
        for uri, max_bytes in latest.rua:
            address = _mailto(uri)
            if not address:
                out.append(
                    OutgoingReport(
                        domain,
                        report_id,
                        begin,
                        end,
                        uri,
                        filename,
                        b"",
                        f"unsupported URI scheme in {uri} (only mailto:)",
                    )
                )
                continue
            content = _message(settings, domain, report_id, address, filename, gz)
            problem = await external_destination_allowed(
                domain, address.rpartition("@")[2].lower(), lookup
            )
            if not problem and max_bytes is not None and len(content) > max_bytes:
                # RFC 7489 §6.4 "!size": a report larger than the limit is not sent there.
                problem = f"report of {len(content)} octets over the limit {max_bytes} of {uri}"
            out.append(
                OutgoingReport(domain, report_id, begin, end, address, filename, content, problem)
            )
    return out


async def send_dmarc_reports(
    settings: Settings,
    conn: sqlite3.Connection,
    *,
    lookup: TxtLookup,
    now: float,
    ours: Callable[[str], bool],
    drop: Drop,
) -> list[OutgoingReport]:
    """Build the reports due, queue those that may go (``drop``), log every one."""
    reports = await build_dmarc_reports(settings, conn, lookup=lookup, now=now, ours=ours)
    sender = report_sender(settings)
    for report in reports:
        outcome = "queued"
        if report.problem:
            outcome = report.problem
            log.warning(
                "dmarc_report_not_sent", domain=report.domain, rua=report.rua, reason=report.problem
            )
        else:
            drop(sender, [report.rua], report.content)
            log.info(
                "dmarc_report_queued",
                domain=report.domain,
                rua=report.rua,
                report_id=report.report_id,
                begin=report.begin,
                end=report.end,
            )
        log_sent(
            conn,
            domain=report.domain,
            report_id=report.report_id,
            begin=report.begin,
            end=now,
            rua=report.rua,
            outcome=outcome,
            now=now,
        )
    return reports
