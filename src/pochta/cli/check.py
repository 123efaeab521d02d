"""`pochta check`: validate the whole config and list every problem with its key path."""

from __future__ import annotations

import click

from pochta.cli.common import config_path, load_cli_settings
from pochta.config.settings import LISTENER_NAMES, Settings


@click.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the config file; print every problem and exit 1 if there is any."""
    settings = load_cli_settings(ctx)
    click.echo(f"{config_path(ctx)}: OK")
    click.echo(f"  hostname   {settings.server.hostname}")
    click.echo(f"  data_dir   {settings.data_dir}")
    for name in LISTENER_NAMES:
        value = getattr(settings.listen, name)
        click.echo(f"  listen.{name:<12} {value or 'off'}")
    _warn_domains_without_dkim(settings)


def _warn_domains_without_dkim(settings: Settings) -> None:
    """A ``warning:`` line per hosted domain without an active DKIM key. A warning, not a
    problem: its mail still flows, unsigned, so the exit status stays 0."""
    from pochta.directory.open import open_directory
    from pochta.dns.records import dkim_key_warning

    if not settings.directory_db.exists():
        return  # no directory yet: nothing is hosted
    try:
        directory = open_directory(settings)
        try:
            domains = directory.list_domains()
        finally:
            directory.close()
    except Exception as exc:  # a check reports; the directory's own commands say more
        click.echo(
            f"warning: cannot read the directory {settings.directory_db} to check DKIM keys: {exc}"
        )
        return
    for domain in domains:
        if warning := dkim_key_warning(domain.name, domain.dkim):
            click.echo(f"warning: {warning}")
