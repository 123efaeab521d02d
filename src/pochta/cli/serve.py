"""`pochta serve`: run the mail server in the foreground (logs on stderr, one line per event)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pochta.cli.common import fail, load_cli_settings
from pochta.logs import configure_logging


@click.command("serve")
@click.option("--worker-service", "worker_services", multiple=True, hidden=True)
@click.option("--worker-link", type=int, default=None, hidden=True)
@click.pass_context
def serve(ctx: click.Context, worker_services: tuple[str, ...], worker_link: int | None) -> None:
    """Run every configured listener until SIGTERM; SIGHUP reloads the config.

    Listeners are bound first (as root for ports below 1024), then the process switches to
    server.run_as_user. Logs go to stderr in server.log_format (logfmt or json), or to
    server.log_file (reopened on SIGHUP, for logrotate); server.pid_file names the process.
    """
    settings = load_cli_settings(ctx, check_tables=True)
    log_file = settings.server.log_file
    try:
        configure_logging(
            settings.server.log_format,
            settings.server.log_level,
            file=settings.path(log_file) if log_file else None,
        )
    except OSError as exc:
        fail(
            f"cannot open the log file {settings.path(log_file)}: {exc.strerror}; fix "
            "server.log_file or its directory (or set it empty to log to stderr)"
        )

    from pochta.server.app import Server, StartupError

    try:
        code = asyncio.run(Server(settings, **_worker_options(worker_services, worker_link)).run())
    except StartupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        code = 130
    ctx.exit(code)


def _worker_options(services: tuple[str, ...], link: int | None) -> dict[str, Any]:
    """How the master starts an IMAP worker (server/workers.py): the services it runs and
    its link to the master, an inherited file descriptor."""
    if link is None:
        return {}
    return {"worker_services": list(services), "worker_link": link}
