"""`pochta alias`: virtual aliases, address -> addresses (Postfix virtual_alias_maps)."""

from __future__ import annotations

import click

from pochta.cli.common import fail, opened_directory, reports_errors
from pochta.cli.domain import alias_file_hint, local_class_reason, set_catchall
from pochta.directory.addresses import normalize_address, normalize_domain
from pochta.resolve.classes import report_target


def _catchall_domain(source: str) -> str | None:
    """The domain of a catch-all source ``@DOMAIN`` (Postfix virtual(5): "@domain address"
    matches every user of the domain without an entry of its own), else None."""
    return normalize_domain(source[1:]) if source.startswith("@") else None


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
    ``report:dmarc`` or ``report:tls`` stores the mail as an aggregate report (pochta report).
    SOURCE ``@DOMAIN`` sets the catch-all of a hosted domain (one TARGET), as ``pochta domain
    set DOMAIN --catchall TARGET`` does."""
    domain = _catchall_domain(source)
    if domain is not None:
        if len(targets) != 1:
            fail(
                f"a catch-all takes one address; to reach several, alias one to them first: "
                f"pochta alias add all@{domain} {' '.join(targets)}; "
                f"then pochta alias add @{domain} all@{domain}"
            )
        set_catchall(ctx, domain, normalize_address(targets[0]))
        return
    source = normalize_address(source)
    wanted = [_target(t) for t in targets]
    with opened_directory(ctx) as (settings, directory):
        local, _, name = source.partition("@")
        hosted = directory.get_domain(name)
        why = local_class_reason(settings, name)
        if why is not None and (hosted is None or hosted.signing_only):
            # aliases(5) and local(8): the local class's aliases are alias_maps entries.
            postmaster = (
                f"for postmaster mail, pochta config set server.postmaster {wanted[0]}; or "
                if local == "postmaster"
                else ""
            )
            fail(
                f"{name} is {why}, the local address class: its aliases live in alias_maps "
                f"files, not in the directory; {postmaster}add the line "
                f"'{local}: {', '.join(wanted)}' to {alias_file_hint(settings)}"
            )
        result = directory.add_alias(source, wanted)
    click.echo(f"{result.source} -> {', '.join(result.targets)}")


@alias.command("list")
@click.argument("domain", required=False)
@click.pass_context
@reports_errors
def list_(ctx: click.Context, domain: str | None) -> None:
    """One line per alias: SOURCE -> TARGET, TARGET; a domain's catch-all as @DOMAIN -> TARGET."""
    name = normalize_domain(domain) if domain else None
    with opened_directory(ctx) as (_, directory):
        for a in directory.list_aliases(name):
            click.echo(f"{a.source} -> {', '.join(a.targets)}")
        for d in directory.list_domains():
            if d.catchall and name in (None, d.name):
                click.echo(f"@{d.name} -> {d.catchall}")


@alias.command("remove")
@click.argument("source")
@click.argument("target", required=False)
@click.pass_context
@reports_errors
def remove(ctx: click.Context, source: str, target: str | None) -> None:
    """Remove the alias SOURCE, or only its TARGET. SOURCE ``@DOMAIN`` removes the domain's
    catch-all (as ``pochta domain set DOMAIN --no-catchall``)."""
    domain = _catchall_domain(source)
    if domain is not None:
        with opened_directory(ctx) as (_, directory):
            record = directory.get_domain(domain)
        current = record.catchall if record is not None else ""
        if target is not None and current and normalize_address(target) != current:
            fail(f"the catch-all of {domain} is {current}, not {normalize_address(target)}")
        set_catchall(ctx, domain, "")
        return
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
