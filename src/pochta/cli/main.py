"""The `pochta` command: one entry point, subcommands loaded when used."""

from __future__ import annotations

from typing import Any

import click

from pochta import __version__
from pochta.cli.lazy import LazyGroup

# name -> "module:attribute". Loading on use keeps `pochta table query` from importing the
# TLS and hashing stacks, and lets each subcommand live in its own module.
SUBCOMMANDS: dict[str, str] = {
    "init": "pochta.cli.init:init",
    "check": "pochta.cli.check:check",
    "serve": "pochta.cli.serve:serve",
    "domain": "pochta.cli.domain:domain",
    "user": "pochta.cli.user:user",
    "alias": "pochta.cli.alias:alias",
    "dkim": "pochta.cli.dkim:dkim",
    "dns": "pochta.cli.dns:dns_command",
    "table": "pochta.cli.table:table",
    "auth": "pochta.cli.auth:auth",
    "queue": "pochta.cli.queue:queue",
    "sendmail": "pochta.cli.sendmail:sendmail",
    "mailbox": "pochta.cli.mailbox:mailbox",
    "report": "pochta.cli.report:report",
    "spam": "pochta.cli.spam:spam",
    "quarantine": "pochta.cli.quarantine:quarantine",
    "sieve": "pochta.cli.sieve:sieve",
    "route": "pochta.cli.route:route",
    "config": "pochta.cli.config:config",
}


@click.group(
    cls=LazyGroup, lazy=SUBCOMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--config",
    "-c",
    metavar="FILE",
    envvar="POCHTA_CONFIG",
    help="Config file (default: $POCHTA_CONFIG, else /etc/pochta/pochta.toml).",
)
@click.version_option(__version__, prog_name="pochta")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """pochta: an all-in-one mail server (SMTP, IMAP, POP3, SPF/DKIM/DMARC, spam filtering,
    Sieve and ManageSieve)."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


def main(argv: Any = None) -> None:
    cli.main(args=argv, prog_name="pochta")
