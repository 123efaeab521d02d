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
    _print_listeners(settings)


def _print_listeners(settings: Settings) -> None:
    """One line per listener this version serves ("listen.smtp  127.0.0.1:25", or "off");
    scripts (the demo banner) read them. A listener configured for a service that does not
    exist yet gets a warning, not a line: nothing will listen there."""
    from pochta.server.services import SERVICES

    for name in LISTENER_NAMES:
        value = getattr(settings.listen, name)
        if name in SERVICES:
            click.echo(f"  listen.{name:<12} {value or 'off'}")
        elif value:
            click.echo(
                f"warning: listen.{name} = {value!r}: this version of pochta does not serve "
                f'{name} yet, so nothing will listen there; set it to ""',
                err=True,
            )
