"""Send the TLS reports (RFC 8460) of one period to the domains that ask for them.

``send_tls_reports`` is called by the daily job in the master and by ``pochta report send
--tls``. For each recipient domain with sessions recorded in [start, end)
(``reports/tls_store.py``) and not reported yet for that period:

1. look up ``_smtp._tls.DOMAIN`` TXT (RFC 8460 §3) over the one dnspython resolver
   (``pochta.dns.async_resolver``); no record, or more than one, means no report (§3);
2. build the report (``mailauth/tls_report.build_report``, §4);
3. ``mailto:`` rua: one message to every such address (§5.3) from the null sender, handed
   to ``drop`` (``server/report_job.maildrop_writer``: the maildrop, as the DMARC reports
   and ``pochta sendmail``), whose pickup runs it through the door as a local submission:
   cleanup adds Message-ID and Date and the DKIM filter signs it (§5.3: the report MUST be
   DKIM-signed). ``https:`` rua: POST of the gzip report with
   ``Content-Type: application/tlsrpt+gzip`` (§5.4; httpx, already used by MTA-STS);
4. remember the domain and period as sent (``tls_sent``), whatever a destination said: a
   destination that failed is named in the log and the result, not retried every run (§5.3:
   reports are best effort; a mail that cannot be delivered bounces to the postmaster).
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncresolver
import httpx

from pochta.logs import get_logger
from pochta.mailauth.dkim_verify import DnsTemporaryError, TxtLookup, resolver_txt_lookup
from pochta.mailauth.tls_report import (
    MEDIA_TYPE_GZIP,
    TlsReport,
    TlsReportError,
    build_report,
    parse_tlsrpt_record,
    report_gzip,
    report_mail,
)
from pochta.reports.tls_store import already_sent, mark_sent, sessions_between

log = get_logger("reports")

HTTPS_TIMEOUT_SECONDS = 60.0
# POST(url, gzip bytes) -> HTTP status; httpx in production, a fake in tests.
HttpsPost = Callable[[str, bytes], Awaitable[int]]
# Queue a message: (sender, recipients, content); OSError when it cannot be written.
Drop = Callable[[str, list[str], bytes], None]


@dataclass(frozen=True, slots=True)
class TlsReportSent:
    """What happened to one domain's report: the addresses mailed, URLs posted to, and the
    destinations that failed with why."""

    domain: str
    report_id: str
    queued: tuple[str, ...] = ()
    posted: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


async def httpx_post(url: str, body: bytes) -> int:
    """RFC 8460 §5.4: POST the gzip report; the status code says whether it was taken."""
    async with httpx.AsyncClient(timeout=HTTPS_TIMEOUT_SECONDS, follow_redirects=False) as client:
        response = await client.post(url, content=body, headers={"Content-Type": MEDIA_TYPE_GZIP})
        return response.status_code


async def send_tls_reports(
    conn: sqlite3.Connection,
    drop: Drop,
    *,
    hostname: str,
    start: float,
    end: float,
    resolver: dns.asyncresolver.Resolver | None = None,
    txt_lookup: TxtLookup | None = None,
    organization: str = "",
    contact: str = "",
    post: HttpsPost = httpx_post,
    clock: Callable[[], float] = time.time,
) -> list[TlsReportSent]:
    """Report the sessions of [``start``, ``end``) (seconds since the epoch, UTC) to every
    domain that publishes a TLSRPT record (see the module docstring). ``hostname`` is the
    submitter (and the organization and contact when not given); the lookup is
    ``txt_lookup`` or else over ``resolver``."""
    if txt_lookup is None:
        if resolver is None:
            raise ValueError("send_tls_reports needs a resolver or a txt_lookup")
        txt_lookup = resolver_txt_lookup(resolver)
    submitter = hostname.lower().rstrip(".")
    organization = organization or submitter
    contact = contact or f"postmaster@{submitter}"
    begin = dt.datetime.fromtimestamp(start, dt.UTC)
    finish = dt.datetime.fromtimestamp(end, dt.UTC)
    sent: list[TlsReportSent] = []
    for domain, outcomes in sorted(sessions_between(conn, start, end).items()):
        if already_sent(conn, domain, start):
            continue
        try:
            texts = await txt_lookup(f"_smtp._tls.{domain}")
        except DnsTemporaryError as exc:
            # Not marked as sent: the next run tries again.
            log.warning("tls_report_dns_failed", domain=domain, error=str(exc))
            continue
        try:
            record = parse_tlsrpt_record([t.decode("utf-8", "replace") for t in texts])
        except TlsReportError as exc:
            log.info("tls_report_not_wanted", domain=domain, reason=str(exc))
            continue
        # RFC 8460 §4.4 report-id: unique per report; like the §5.3 example, with the period.
        report_id = f"{begin:%Y-%m-%dT%H.%M.%SZ}+{domain}@{submitter}"
        report = build_report(
            outcomes,
            organization=organization,
            contact=contact,
            report_id=report_id,
            start=begin,
            end=finish,
        )
        queued: list[str] = []
        posted: list[str] = []
        problems: list[str] = []
        if record.mailto:
            try:
                _queue_mail(drop, report, domain, submitter, record.mailto)
                queued.extend(record.mailto)
            except OSError as exc:
                problems.append(f"mailto {','.join(record.mailto)}: {exc}")
        body = report_gzip(report) if record.https else b""
        for url in record.https:
            try:
                status = await post(url, body)
            except (TimeoutError, httpx.HTTPError, OSError) as exc:
                problems.append(f"{url}: {exc.__class__.__name__}: {exc}")
                continue
            if 200 <= status < 300:
                posted.append(url)
            else:
                problems.append(f"{url}: HTTP status {status}")
        mark_sent(conn, domain, start, end, report_id, [*record.mailto, *record.https], clock())
        result = TlsReportSent(domain, report_id, tuple(queued), tuple(posted), tuple(problems))
        log.info(
            "tls_report_sent",
            domain=domain,
            report_id=report_id,
            queued=",".join(queued),
            posted=",".join(posted),
            problems="; ".join(problems),
        )
        sent.append(result)
    return sent


def _queue_mail(
    drop: Drop, report: TlsReport, domain: str, submitter: str, to: tuple[str, ...]
) -> None:
    message = report_mail(
        report,
        policy_domain=domain,
        submitter=submitter,
        from_address=f"noreply-tlsrpt@{submitter}",
        to=to,
        boundary=f"tlsrpt-{secrets.token_hex(12)}",
    )
    # The null sender, like a notice: a report that cannot be delivered is not bounced back.
    drop("", list(to), message)
