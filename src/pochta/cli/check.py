"""`pochta check`: validate the whole config and list every problem with its key path."""

from __future__ import annotations

import click

from pochta.cli.common import config_path, load_cli_settings
from pochta.config.settings import LISTENER_NAMES


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
