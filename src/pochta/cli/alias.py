"""`pochta alias`: virtual aliases, address -> addresses (Postfix virtual_alias_maps)."""

from __future__ import annotations

import click

from pochta.cli.common import opened_directory, reports_errors
from pochta.directory.addresses import normalize_address, normalize_domain
from pochta.resolve.classes import report_target


def _target(text: str) -> str:
    """An address, or ``report:KIND`` (store the mail as a report: report:dmarc, report:tls)."""
    report = report_target(text)
    return f"report:{report.kind}" if report is not None else normalize_address(text)


@click.group()
def alias() -> None:
    """Forward mail for an address to other addresses (local or external)."""


@alias.command("add")
@click.argument("source")
@click.argument("targets", metavar="TARGET...", nargs=-1, required=True)
@click.pass_context
@reports_errors
def add(ctx: click.Context, source: str, targets: tuple[str, ...]) -> None:
    """Deliver mail for SOURCE to each TARGET (added to the alias if it exists). A TARGET
    ``report:dmarc`` or ``report:tls`` stores the mail as an aggregate report (pochta report)."""
    source = normalize_address(source)
    wanted = [_target(t) for t in targets]
    with opened_directory(ctx) as (_, directory):
        result = directory.add_alias(source, wanted)
    click.echo(f"{result.source} -> {', '.join(result.targets)}")


@alias.command("list")
@click.argument("domain", required=False)
@click.pass_context
@reports_errors
def list_(ctx: click.Context, domain: str | None) -> None:
    """One line per alias: SOURCE -> TARGET, TARGET."""
    name = normalize_domain(domain) if domain else None
    with opened_directory(ctx) as (_, directory):
        for a in directory.list_aliases(name):
            click.echo(f"{a.source} -> {', '.join(a.targets)}")


@alias.command("remove")
@click.argument("source")
@click.argument("target", required=False)
@click.pass_context
@reports_errors
def remove(ctx: click.Context, source: str, target: str | None) -> None:
    """Remove the alias SOURCE, or only its TARGET."""
    source = normalize_address(source)
    target = _target(target) if target else None
    with opened_directory(ctx) as (_, directory):
        directory.remove_alias(source, target)
        rest = directory.get_alias(source)
    if target is None:
        click.echo(f"removed alias {source}")
    elif rest is None:
        click.echo(f"removed {target} from {source}; it had no other target, so the alias is gone")
    else:
        click.echo(f"removed {target} from {source}; now {source} -> {', '.join(rest.targets)}")
