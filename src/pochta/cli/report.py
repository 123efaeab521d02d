"""`pochta report`: aggregate reports (DMARC, RFC 7489 §7) received and sent.

``report dmarc`` summarises the DMARC aggregate reports other receivers sent us (stored by
the ``report:dmarc`` alias target), or with ``--ours`` what this server saw itself;
``report send`` builds and queues the reports due now, as the master's job does every
``[reports] interval_hours``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import click

from pochta.cli.common import opened_directory, reports_errors
from pochta.cli.report_tls import register as register_tls


@click.group()
def report() -> None:
    """Aggregate reports: summaries of the reports received, and sending ours now."""


@dataclass(slots=True)
class _Source:
    messages: int = 0
    passed: int = 0
    failed: int = 0
    spf_unaligned: int = 0
    dkim_unaligned: int = 0
    orgs: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)

    def add(self, count: int, spf_ok: bool, dkim_ok: bool, org: str, domain: str) -> None:
        self.messages += count
        if spf_ok or dkim_ok:  # RFC 7489 §4.2: DMARC passes with either aligned pass
            self.passed += count
        else:
            self.failed += count
        if not spf_ok:
            self.spf_unaligned += count
        if not dkim_ok:
            self.dkim_unaligned += count
        if org:
            self.orgs.add(org)
        if domain:
            self.domains.add(domain)


@report.command("dmarc")
@click.option("--domain", "domain", metavar="D", default=None, help="Only this From domain.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650))
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option("--ours", is_flag=True, help="What this server evaluated, not received reports.")
@click.pass_context
@reports_errors
def dmarc_summary(
    ctx: click.Context, domain: str | None, days: int, as_json: bool, ours: bool
) -> None:
    """Per source IP: messages, DMARC pass/fail, SPF and DKIM alignment failures, and the
    organisations that reported it."""
    from pochta.directory.addresses import normalize_domain
    from pochta.reports.store import evaluations_between, open_reports_db, received_records

    name = normalize_domain(domain) if domain else None
    since = time.time() - days * 86400
    with opened_directory(ctx) as (settings, _directory):
        conn = open_reports_db(settings)
        try:
            sources: dict[str, _Source] = {}
            if ours:
                for ev in evaluations_between(conn, since, time.time() + 1):
                    if name is not None and name not in (ev.header_from, ev.policy_domain):
                        continue
                    sources.setdefault(ev.source_ip, _Source()).add(
                        1, ev.spf_aligned, ev.dkim_aligned, "", ev.header_from
                    )
            else:
                for org, rec in received_records(conn, since=since, domain=name):
                    sources.setdefault(rec.source_ip, _Source()).add(
                        rec.count, rec.spf == "pass", rec.dkim == "pass", org, rec.header_from
                    )
        finally:
            conn.close()
    rows = sorted(sources.items(), key=lambda item: (-item[1].messages, item[0]))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "source": "ours" if ours else "received",
                    "days": days,
                    "domain": name,
                    "sources": [
                        {
                            "source_ip": ip,
                            "messages": s.messages,
                            "pass": s.passed,
                            "fail": s.failed,
                            "spf_alignment_fail": s.spf_unaligned,
                            "dkim_alignment_fail": s.dkim_unaligned,
                            "orgs": sorted(s.orgs),
                            "domains": sorted(s.domains),
                        }
                        for ip, s in rows
                    ],
                },
                indent=2,
            )
        )
        return
    if not rows:
        what = "evaluations" if ours else "received DMARC reports"
        click.echo(f"no {what} in the last {days} days" + (f" for {name}" if name else ""))
        return
    click.echo(
        f"{'source ip':<40} {'messages':>8} {'pass':>6} {'fail':>6} {'spf!':>6} "
        f"{'dkim!':>6}  reported by"
    )
    for ip, s in rows:
        click.echo(
            f"{ip:<40} {s.messages:>8} {s.passed:>6} {s.failed:>6} {s.spf_unaligned:>6} "
            f"{s.dkim_unaligned:>6}  {', '.join(sorted(s.orgs)) or '-'}"
        )
    spf_bad = [ip for ip, s in rows if s.spf_unaligned]
    dkim_bad = [ip for ip, s in rows if s.dkim_unaligned]
    click.echo(f"SPF not aligned from: {', '.join(spf_bad) or 'none'}")
    click.echo(f"DKIM not aligned from: {', '.join(dkim_bad) or 'none'}")


@report.command("send")
@click.option("--dmarc", "dmarc_only", is_flag=True, help="Only the DMARC reports.")
@click.option("--tls", "tls_only", is_flag=True, help="Only the TLS reports.")
@click.pass_context
@reports_errors
def send(ctx: click.Context, dmarc_only: bool, tls_only: bool) -> None:
    """Build the reports due now (DMARC since the last run, TLS for each whole UTC day of
    the last week not reported yet) and queue them through the maildrop, like pochta
    sendmail: the running server picks them up, signs and sends them."""
    from pochta.dns.async_resolver import make_async_resolver
    from pochta.server.report_job import run_reports

    both = not (dmarc_only or tls_only)
    with opened_directory(ctx) as (settings, directory):
        run = asyncio.run(
            run_reports(
                settings,
                directory,
                make_async_resolver(settings.dns),
                dmarc_reports=both or dmarc_only,
                tls_reports=both or tls_only,
            )
        )
    if (both or dmarc_only) and not run.dmarc:
        click.echo("no DMARC reports due")
    for r in run.dmarc:
        if r.problem:
            click.echo(f"not sent: {r.domain} to {r.rua}: {r.problem}")
        else:
            click.echo(f"queued: {r.domain} to {r.rua} ({r.filename}, report id {r.report_id})")
    if (both or tls_only) and not run.tls:
        click.echo("no TLS reports due")
    for t in run.tls:
        to = ", ".join([*t.queued, *t.posted]) or "nobody"
        click.echo(f"TLS report {t.report_id}: {t.domain} to {to}")
        for problem in t.problems:
            click.echo(f"  not sent: {problem}")


register_tls(report)
