"""`pochta serve`: run the mail server in the foreground (logs on stderr, one line per event)."""

from __future__ import annotations

import asyncio

import click

from pochta.cli.common import fail, load_cli_settings
from pochta.logs import configure_logging


@click.command("serve")
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run every configured listener until SIGTERM; SIGHUP reloads the config.

    Listeners are bound first (as root for ports below 1024), then the process switches to
    server.run_as_user. Logs go to stderr in server.log_format (logfmt or json).
    """
    settings = load_cli_settings(ctx)
    configure_logging(settings.server.log_format, settings.server.log_level)

    from pochta.server.app import Server, StartupError

    try:
        code = asyncio.run(Server(settings).run())
    except StartupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        code = 130
    ctx.exit(code)
