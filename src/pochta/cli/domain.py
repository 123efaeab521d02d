"""`pochta domain`: the mail domains this server hosts (Postfix virtual_mailbox_domains)."""

from __future__ import annotations

from pathlib import Path

import click

from pochta.cli.common import fail, opened_directory, reports_errors
from pochta.config.settings import Settings
from pochta.directory.addresses import normalize_address, normalize_domain
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import DkimSelector, Domain
from pochta.mailauth.dkim_keys import DkimKeyError, add_domain_keys

# The report addresses `pochta dns` publishes (rua=) and the alias targets that store what
# arrives there (resolve/classes.ReportDest, reports/inbox.py).
REPORT_ALIASES = (("dmarc-reports", "report:dmarc"), ("tlsrpt", "report:tls"))


def add_report_aliases(directory: Directory, name: str) -> list[str]:
    """Create the missing report aliases of domain ``name``; the lines made. An address
    that is already an account or an alias is left as the admin set it."""
    made = []
    for local, target in REPORT_ALIASES:
        source = f"{local}@{name}"
        if directory.get_alias(source) is not None or directory.get_account(source) is not None:
            continue
        directory.add_alias(source, [target])
        made.append(f"{source} -> {target}")
    return made


def local_class_reason(settings: Settings, name: str) -> str | None:
    """Why ``name`` is in the local address class (Postfix mydestination: the host name and
    ``[local] domains``), or None when it is not."""
    from pochta.tables.domain_list import local_domains

    if name == normalize_domain(settings.server.hostname):
        return "the host name (server.hostname)"
    local = local_domains(settings.local.domains)
    if name in local:
        return "a [local] domains name"
    return None


def alias_file_hint(settings: Settings) -> str:
    """Where a local alias line goes: the first alias_maps file, or how to name one."""
    files = [spec.split(":", 1)[-1] for spec in settings.tables.alias_maps]
    if files:
        return f"{files[0]} (an alias_maps file; then reload)"
    return (
        "an aliases(5) file, then name it (pochta config set tables.alias_maps "
        "/etc/pochta/aliases; then reload)"
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}{'es' if word[-1] == 's' else 's'}"


@click.group()
def domain() -> None:
    """Add, list and remove the mail domains this server hosts."""


@domain.command("add")
@click.argument("name", metavar="DOMAIN")
@click.option("--catchall", metavar="ADDR", default="", help="Receives mail for unknown users.")
@click.option(
    "--no-dkim", is_flag=True, help="Do not make DKIM keys (make them later: pochta dkim keygen)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Host the host name or a [local] domains name anyway (its alias_maps aliases stop).",
)
@click.pass_context
@reports_errors
def add(ctx: click.Context, name: str, catchall: str, no_dkim: bool, force: bool) -> None:
    """Host DOMAIN: accept its mail, let accounts be created in it, and make its DKIM keys
    (RSA 2048 and Ed25519, as pochta init does). The host name and the [local] domains names
    are refused without --force: they are the local address class, served by alias_maps.
    --force is for a host name whose every address is to be a mailbox here (a one-name
    server without alias files); its signing-only entry then becomes a mail domain and
    keeps its keys."""
    name = normalize_domain(name)
    catchall = normalize_address(catchall) if catchall else ""
    selectors: list[DkimSelector] = []
    with opened_directory(ctx, create=True) as (settings, directory):
        why = local_class_reason(settings, name)
        if why is not None and not force:
            # postconf(5) mydestination and virtual_mailbox_domains: one class per domain.
            # The resolver puts hosted domains first, so hosting it would silently switch
            # off its alias_maps aliases (postmaster, root, "|command" recipes).
            fail(
                f"{name} is {why}: the local address class, whose addresses come from "
                'alias_maps files (postmaster, root, "|command" aliases such as '
                "docs/recipes/round-robin.md), not from the directory; hosting it would "
                "switch those aliases off. For postmaster mail: pochta config set "
                "server.postmaster you@example.org; for other local aliases add lines to "
                f"{alias_file_hint(settings)}; for mailboxes use a hosted domain. To host "
                f"{name} anyway (every address a mailbox here, no alias files): "
                f"pochta domain add {name} --force"
            )
        existing = directory.get_domain(name)
        if existing is not None and existing.signing_only:
            host = normalize_domain(settings.server.hostname)
            _promote(directory, settings.dkim_dir, existing, catchall, no_dkim, host)
            return
        directory.add_domain(name, catchall=catchall)
        if not no_dkim:
            try:
                selectors = add_domain_keys(directory, name, settings.dkim_dir)
            except (DkimKeyError, DirectoryError, OSError) as exc:
                # All or nothing: a domain without keys would send unsigned mail unnoticed.
                directory.remove_domain(name, force=True)
                fail(
                    f"domain {name} not added: its DKIM keys could not be made in "
                    f"{settings.dkim_dir}: {exc} (run as root or as the server's user, "
                    "or add it with --no-dkim and make keys later: pochta dkim keygen "
                    f"{name})"
                )
        aliases = add_report_aliases(directory, name)
    click.echo(f"added domain {name}" + (f" (catch-all -> {catchall})" if catchall else ""))
    if why is not None:
        click.echo(
            f"  {name} is {why}: mail for it now goes to its accounts and aliases, no longer "
            "to alias_maps (add root, postmaster... as accounts or aliases)"
        )
    for line in aliases:
        click.echo(f"  report alias {line}")
    for sel in selectors:
        click.echo(f"  DKIM key {sel.selector} ({sel.algorithm}) {sel.key_path}")
    if no_dkim:
        click.echo(
            f"  no DKIM keys: its mail goes out unsigned; make them with: pochta dkim keygen {name}"
        )
    click.echo(f"next: pochta user add postmaster@{name}; pochta dns {name}")
    click.echo(f"  (pochta dns {name} prints the DNS records to publish, DKIM included)")


def _promote(
    directory: Directory,
    keys_dir: Path,
    existing: Domain,
    catchall: str,
    no_dkim: bool,
    hostname: str,
) -> None:
    """``domain add`` of the host name's signing-only entry: it becomes a mail domain and
    keeps its DKIM selectors (its keys sign on, its published records stay valid). Keys are
    made first, if it has none, so a failure leaves the entry as it was."""
    name = existing.name
    made: list[DkimSelector] = []
    if not existing.dkim and not no_dkim:
        try:
            made = add_domain_keys(directory, name, keys_dir)
        except (DkimKeyError, DirectoryError, OSError) as exc:
            fail(
                f"domain {name} not added: its DKIM keys could not be made in {keys_dir}: "
                f"{exc} (run as root or as the server's user, or add it with --no-dkim)"
            )
    directory.add_domain(name, catchall=catchall)
    aliases = add_report_aliases(directory, name)
    click.echo(f"added domain {name}" + (f" (catch-all -> {catchall})" if catchall else ""))
    for line in aliases:
        click.echo(f"  report alias {line}")
    if existing.dkim:
        kept = ", ".join(s.selector for s in existing.dkim)
        click.echo(f"  it held the host name's DKIM keys (signing-only); they are kept: {kept}")
    for sel in made:
        click.echo(f"  DKIM key {sel.selector} ({sel.algorithm}) {sel.key_path}")
    if not existing.dkim and no_dkim:
        click.echo(
            f"  no DKIM keys: its mail goes out unsigned; make them with: pochta dkim keygen {name}"
        )
    if name == hostname:
        # The resolver puts directory domains before local names (resolve/resolver.py).
        click.echo(
            f"  {name} is the host name: mail for it now goes to its accounts and aliases, "
            "no longer to local users (add root, postmaster... as accounts or aliases)"
        )
    click.echo(f"next: pochta user add postmaster@{name}; pochta dns {name}")


@domain.command("report-aliases")
@click.argument("names", metavar="[DOMAIN]...", nargs=-1)
@click.pass_context
@reports_errors
def report_aliases(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Create the missing report aliases (dmarc-reports@D -> report:dmarc, tlsrpt@D ->
    report:tls) of each DOMAIN, or of every hosted domain: for domains added before pochta
    made them."""
    with opened_directory(ctx) as (_, directory):
        wanted = [normalize_domain(n) for n in names] or [
            d.name for d in directory.list_domains() if not d.signing_only
        ]
        made = [line for name in wanted for line in add_report_aliases(directory, name)]
    for line in made:
        click.echo(f"added {line}")
    if not made:
        click.echo("every report alias is there already")


@domain.command("list")
@click.pass_context
@reports_errors
def list_(ctx: click.Context) -> None:
    """One line per domain: name, state, accounts, aliases, DKIM selectors. The state of
    the host name's entry that only holds DKIM keys is ``signing-only``."""
    with opened_directory(ctx) as (_, directory):
        for d in directory.list_domains():
            accounts = directory.count_accounts(d.name)
            aliases = len(directory.list_aliases(d.name))
            dkim = ",".join(s.selector + ("" if s.active else "(inactive)") for s in d.dkim)
            state = "enabled" if d.enabled else "disabled"
            fields = [
                d.name,
                "signing-only" if d.signing_only else state,
                f"accounts={accounts}",
                f"aliases={aliases}",
                f"dkim={dkim or '-'}",
            ]
            if d.catchall:
                fields.append(f"catchall={d.catchall}")
            click.echo(" ".join(fields))


@domain.command("remove")
@click.argument("name", metavar="DOMAIN")
@click.option("--force", is_flag=True, help="Also remove its accounts, aliases and DKIM selectors.")
@click.pass_context
@reports_errors
def remove(ctx: click.Context, name: str, force: bool) -> None:
    """Stop hosting DOMAIN (refused while it has accounts or aliases, unless --force)."""
    name = normalize_domain(name)
    with opened_directory(ctx) as (settings, directory):
        accounts = directory.count_accounts(name)
        aliases = len(directory.list_aliases(name))
        directory.remove_domain(name, force=force)
        mail = settings.data_dir / "mail" / name
        keys = settings.dkim_dir / name
    parts = [_plural(n, w) for n, w in ((accounts, "account"), (aliases, "alias")) if n]
    click.echo(f"removed domain {name}" + (f" with {' and '.join(parts)}" if parts else ""))
    if mail.exists():
        click.echo(f"its mailboxes were kept in {mail}; delete them with: rm -r {mail}")
    if keys.exists():
        click.echo(f"its DKIM keys were kept in {keys}; delete them with: rm -r {keys}")


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    name = normalize_domain(name)
    with opened_directory(ctx) as (_, directory):
        directory.set_domain(name, enabled=enabled)
    click.echo(f"{'enabled' if enabled else 'disabled'} domain {name}")


@domain.command("set")
@click.argument("name", metavar="DOMAIN")
@click.option(
    "--catchall",
    metavar="ADDR",
    default=None,
    help="Receives mail for the domain's unknown users (Postfix's @DOMAIN virtual alias).",
)
@click.option("--no-catchall", is_flag=True, help="Remove the catch-all: unknown users get 550.")
@click.pass_context
@reports_errors
def set_(ctx: click.Context, name: str, catchall: str | None, no_catchall: bool) -> None:
    """Change a hosted DOMAIN: set its catch-all address or remove it."""
    name = normalize_domain(name)
    if catchall is not None and no_catchall:
        fail("give either --catchall ADDR or --no-catchall, not both")
    if catchall is None and not no_catchall:
        fail(
            "nothing to change; give --catchall ADDR or --no-catchall "
            f"(pochta domain set {name} --catchall you@{name})"
        )
    set_catchall(ctx, name, "" if no_catchall else normalize_address(catchall or ""))


def set_catchall(ctx: click.Context, name: str, address: str) -> None:
    """Set (or with ``""`` remove) the catch-all of hosted domain ``name``; one line says
    what it was and what it is now. ``domain set`` and ``alias add|remove @DOMAIN`` use it."""
    with opened_directory(ctx) as (_, directory):
        before = directory.get_domain(name)
        result = directory.set_domain(name, catchall=address)
    old = before.catchall if before is not None else ""
    if result.catchall:
        was = f" (was {old})" if old and old != result.catchall else ""
        click.echo(f"catch-all of {name} -> {result.catchall}{was}")
    elif old:
        click.echo(f"removed the catch-all of {name} (was {old}); unknown users get 550")
    else:
        click.echo(f"{name} has no catch-all")


@domain.command("show")
@click.argument("name", metavar="DOMAIN")
@click.pass_context
@reports_errors
def show(ctx: click.Context, name: str) -> None:
    """Everything about one DOMAIN: state, catch-all, accounts, aliases, DKIM selectors."""
    name = normalize_domain(name)
    with opened_directory(ctx) as (_, directory):
        d = directory.get_domain(name)
        if d is None:
            fail(f"domain {name} is not hosted here; add it with: pochta domain add {name}")
        accounts = directory.count_accounts(name)
        aliases = len(directory.list_aliases(name))
    state = "signing-only" if d.signing_only else ("enabled" if d.enabled else "disabled")
    click.echo(f"domain    {d.name}")
    click.echo(f"state     {state}")
    click.echo(f"catchall  {d.catchall or '-'}")
    click.echo(f"accounts  {accounts}")
    click.echo(f"aliases   {aliases}")
    dkim = ", ".join(s.selector + ("" if s.active else " (inactive)") for s in d.dkim)
    click.echo(f"dkim      {dkim or '-'}")


@domain.command("enable")
@click.argument("name", metavar="DOMAIN")
@click.pass_context
@reports_errors
def enable(ctx: click.Context, name: str) -> None:
    """Accept mail for DOMAIN again."""
    _set_enabled(ctx, name, True)


@domain.command("disable")
@click.argument("name", metavar="DOMAIN")
@click.pass_context
@reports_errors
def disable(ctx: click.Context, name: str) -> None:
    """Keep DOMAIN and its accounts but stop accepting mail for it."""
    _set_enabled(ctx, name, False)
