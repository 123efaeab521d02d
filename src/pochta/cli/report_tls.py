"""`pochta report tls`: what other senders' TLS reports (RFC 8460) say about our domains.

Reads the reports kept in ``reports.db`` by ``reports/tls_store.ingest_tls_report`` and
prints, per policy domain and reporting organization, the successful and failed sessions
and the failure types with their counts and MX hosts. ``register(group)`` attaches the
command to the ``pochta report`` group (``cli/report.py``).
"""

from __future__ import annotations

import json
import sqlite3
import time

import click

from pochta.cli.common import fail, load_cli_settings
from pochta.reports.tls_store import open_tls_db, received_summary

DAY_SECONDS = 86_400


@click.command("tls")
@click.option("--domain", default=None, help="Only reports about this policy domain.")
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=7,
    show_default=True,
    help="Reports whose period ended in the last N days.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_context
def tls(ctx: click.Context, domain: str | None, days: int, as_json: bool) -> None:
    """Summarise the TLS reports (RFC 8460) received about our domains."""
    settings = load_cli_settings(ctx, check_files=False)
    try:
        conn = open_tls_db(settings)
    except (OSError, sqlite3.Error) as exc:
        fail(f"cannot open the reports database under {settings.data_dir}: {exc}")
    try:
        rows = received_summary(conn, since=time.time() - days * DAY_SECONDS, domain=domain)
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    if not rows:
        where = f" about {domain}" if domain else ""
        click.echo(f"No TLS reports{where} in the last {days} days.")
        return
    for row in rows:
        click.echo(
            f"{row.policy_domain}  from {row.organization}: {row.reports} reports, "
            f"{row.successful} successful, {row.failed} failed sessions"
        )
        for result_type, (count, hosts) in sorted(row.failures.items()):
            shown = ", ".join(hosts) or "-"
            click.echo(f"  {result_type}: {count} sessions (MX {shown})")


def register(group: click.Group) -> None:
    """Attach ``tls`` to the ``pochta report`` group."""
    group.add_command(tls)
