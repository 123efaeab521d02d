"""`pochta auth`: check credentials the way the servers do, like `doveadm auth test`.

The check goes through the same Authenticator as SMTP AUTH and IMAP LOGIN (normalised user
name, hash schemes, disabled accounts and domains) but changes nothing: no rehash, no SCRAM
keys added, no tarpit wait.
"""

from __future__ import annotations

import asyncio

import click

from pochta.cli.common import fail, load_cli_settings, open_directory, read_password
from pochta.directory.model import Account

# The address the CLI's checks are counted under (not an IP: the tracker keeps it as is).
CLI_CLIENT = "cli"


@click.group()
def auth() -> None:
    """Test authentication against the directory."""


@auth.command("test")
@click.argument("address")
@click.argument("password", required=False)
@click.option("--password-stdin", is_flag=True, help="Read the password as one line of stdin.")
@click.pass_context
def test(ctx: click.Context, address: str, password: str | None, password_stdin: bool) -> None:
    """Check ADDRESS's password; exit 0 when it is accepted, 1 when not.

    Without PASSWORD, prompts for it (hidden) or reads --password-stdin. A PASSWORD on the
    command line shows in `ps` and the shell history: prefer the prompt.
    """
    if password is not None and password_stdin:
        fail("give the password either as an argument or with --password-stdin, not both")
    if password is None:
        password = read_password(password_stdin, confirm=False)

    from pochta.directory.authenticator import Authenticator
    from pochta.logs import configure_logging

    settings = load_cli_settings(ctx)
    # Our own lines say what happened; keep the auth_failed event off stdout.
    configure_logging(level="warning")
    directory = open_directory(settings)
    try:
        authenticator = Authenticator(
            directory,
            settings.auth,
            settings.directory.recipient_delimiter,
            sleep=None,
            upgrade=False,
        )
        result = asyncio.run(authenticator.check_password(CLI_CLIENT, address, password))
    finally:
        directory.close()

    if not result.ok or result.account is None:
        click.echo(f"passdb: {address} auth failed")
        click.echo(f"reason: {result.reason}")
        ctx.exit(1)
    click.echo(f"passdb: {address} auth succeeded")
    click.echo("extra fields:")
    for line in _fields(result.account):
        click.echo(f"  {line}")


def _fields(account: Account) -> list[str]:
    from pochta.directory.passwords import parse_scheme

    scheme = parse_scheme(account.password_hash)[0] or "unknown"
    return [
        f"user={account.address}",
        f"quota_bytes={account.quota_bytes}" + (" (unlimited)" if not account.quota_bytes else ""),
        f"enabled={'yes' if account.enabled else 'no'}",
        f"scheme={scheme}",
        f"scram_sha256={'yes' if account.scram_sha256 else 'no'}",
    ]
