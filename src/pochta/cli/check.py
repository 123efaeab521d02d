"""`pochta check`: validate the whole config and list every problem with its key path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pochta.cli.common import config_path, load_cli_settings
from pochta.config.settings import LISTENER_NAMES, Settings

if TYPE_CHECKING:
    from pochta.directory.model import Domain


@click.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the config file; print every problem and exit 1 if there is any."""
    settings = load_cli_settings(ctx, check_tables=True)
    click.echo(f"{config_path(ctx)}: OK")
    click.echo(f"  hostname   {settings.server.hostname}")
    click.echo(f"  data_dir   {settings.data_dir}")
    _print_listeners(settings)
    _print_postmaster(settings)
    domains = _hosted_domains(settings)
    _warn_domains_without_dkim(domains)
    _warn_domains_in_two_classes(settings, [d.name for d in domains if not d.signing_only])
    _warn_uncovered_names(settings, [d.name for d in domains if d.enabled and not d.signing_only])


def _print_listeners(settings: Settings) -> None:
    """One line per listener ("listen.smtp  127.0.0.1:25", or "off"); scripts (the demo
    banner) read them. Every listener has its service (tests/unit/test_services.py)."""
    for name in LISTENER_NAMES:
        value = getattr(settings.listen, name)
        click.echo(f"  listen.{name:<12} {value or 'off'}")


def _print_postmaster(settings: Settings) -> None:
    """Where postmaster mail goes (RFC 5321 §4.5.1): the admin line, then one line per name
    we take mail for, as the resolver routes it; a warning when there is nowhere yet."""
    from pochta.cli.common import open_directory
    from pochta.cli.route import destination_text
    from pochta.resolve import Resolver
    from pochta.tables.configured import ConfiguredTables

    if not settings.directory_db.exists():
        click.echo("  postmaster   -> (no directory)")
        click.echo(
            f"warning: no directory database at {settings.directory_db} "
            "(directory.sqlite_path): no domain is hosted and serve would make an empty one; "
            "fix the path, or make one with pochta init",
            err=True,
        )
        return
    directory = open_directory(settings)
    try:
        resolver = Resolver(directory, ConfiguredTables.open(settings), settings)
        admin = resolver.postmaster_admin()
        if admin is None:
            domains = [d.name for d in directory.list_domains() if not d.signing_only]
            example = f"you@{domains[0]}" if domains else "you@example.org"
            click.echo("  postmaster   -> nowhere yet")
            click.echo(
                "warning: mail for postmaster has nowhere to go (server.postmaster is empty and "
                "there is no account yet), so it is answered 451 until there is; set [server] "
                f'postmaster = "you@example.org" or add an account: pochta user add {example}',
                err=True,
            )
            return
        click.echo(f"  postmaster   -> {admin[0]} ({admin[1]})")
        names = [settings.server.hostname, *(d.name for d in directory.list_domains())]
        for name in dict.fromkeys(n.lower() for n in names):
            resolution = resolver.resolve(f"postmaster@{name}")
            where = ", ".join(destination_text(d, brief=True) for d in resolution.destinations)
            click.echo(f"    postmaster@{name} -> {where}")
    finally:
        directory.close()


def _hosted_domains(settings: Settings) -> list[Domain]:
    """The directory's domains; none (with a warning) when it cannot be read."""
    from pochta.directory.open import open_directory

    if not settings.directory_db.exists():
        return []  # no directory yet: nothing is hosted
    try:
        directory = open_directory(settings)
        try:
            return directory.list_domains()
        finally:
            directory.close()
    except Exception as exc:  # a check reports; the directory's own commands say more
        click.echo(
            f"warning: cannot read the directory {settings.directory_db} to check DKIM keys "
            f"and certificate names: {exc}",
            err=True,
        )
        return []


def _warn_domains_without_dkim(domains: list[Domain]) -> None:
    """A ``warning:`` line per hosted domain without an active DKIM key. A warning, not a
    problem: its mail still flows, unsigned, so the exit status stays 0."""
    from pochta.dns.records import dkim_key_warning

    for domain in domains:
        if warning := dkim_key_warning(domain.name, domain.dkim):
            click.echo(f"warning: {warning}", err=True)


def _warn_uncovered_names(settings: Settings, domains: list[str]) -> None:
    """A ``warning:`` line per name no certificate covers (host name, mta-sts.DOMAIN,
    autoconfig.DOMAIN, autodiscover.DOMAIN) and one for a self-signed host certificate
    (``pochta.checks.certificate_warnings``). Warnings: TLS still works, so exit status 0."""
    from pochta.checks import certificate_warnings

    for warning in certificate_warnings(settings, domains):
        click.echo(f"warning: {warning}", err=True)


def _warn_domains_in_two_classes(settings: Settings, hosted: list[str]) -> None:
    """A ``warning:`` line per domain in more than one address class, saying which class
    wins and why (``pochta.checks.domain_class_warnings``; Postfix ADDRESS_CLASS_README)."""
    from pochta.checks import domain_class_warnings
    from pochta.tables.configured import ConfiguredTables

    tables = ConfiguredTables.open(settings)  # the files were checked by load_cli_settings
    for warning in domain_class_warnings(settings, tables, hosted):
        click.echo(f"warning: {warning}", err=True)
