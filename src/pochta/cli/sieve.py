"""``pochta sieve``: the accounts' Sieve scripts and the administrator's global ones, on disk
(``sieve/scripts.py``), with or without a running server (it reads them at each delivery).

    pochta sieve list ADDRESS
    pochta sieve get ADDRESS NAME
    pochta sieve put ADDRESS NAME FILE|-        compiled first; an error exits 1
    pochta sieve activate ADDRESS NAME
    pochta sieve deactivate ADDRESS
    pochta sieve delete ADDRESS NAME
    pochta sieve rename ADDRESS OLD NEW
    pochta sieve check FILE|-
    pochta sieve global put|get|delete DOMAIN before|after [FILE|-]
    pochta sieve global include put|get|delete NAME [FILE|-]

Every script is compiled before it is stored, as ManageSieve's PUTSCRIPT does (the same
compiler, ``access/managesieve.default_interpreter``): an error is printed with its line and
column and nothing is written. The account (or the domain) must exist in the directory.
"""

from __future__ import annotations

import sys
from typing import cast

import click

from pochta.cli.common import fail, load_cli_settings, open_directory
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError, normalize_address
from pochta.logs import configure_logging
from pochta.sieve.errors import SieveError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.scripts import GlobalScope, ScriptStore, ScriptStoreError

__all__ = ["sieve"]

SCOPES = click.Choice(["before", "after"])


def _settings(ctx: click.Context) -> Settings:
    settings = load_cli_settings(ctx, check_files=False)
    configure_logging(settings.server.log_format, "warning")
    return settings


def _store(settings: Settings) -> ScriptStore:
    return ScriptStore.from_settings(settings)


def _account(ctx: click.Context, address: str) -> tuple[Settings, str]:
    """The settings and the canonical address of an existing account."""
    settings = _settings(ctx)
    try:
        canonical = normalize_address(address)
    except AddressError as exc:
        fail(str(exc))
    directory = open_directory(settings)
    try:
        account = directory.get_account(canonical)
    finally:
        directory.close()
    if account is None:
        fail(f"no account {canonical}; add it first: pochta user add {canonical}")
    return settings, account.address


def _domain(ctx: click.Context, domain: str) -> tuple[Settings, str]:
    settings = _settings(ctx)
    name = domain.lower().rstrip(".")
    directory = open_directory(settings)
    try:
        found = directory.get_domain(name)
    finally:
        directory.close()
    if found is None:
        fail(f"no domain {name}; add it first: pochta domain add {name}")
    return settings, name


def _read(source: str) -> str:
    """A script from a file, or from stdin for "-"; UTF-8 (RFC 5228 §2.2)."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(source, "rb") as f:
                data = f.read()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{_label(source)} is not UTF-8 (octet {exc.start + 1}); Sieve scripts are UTF-8")


def _label(source: str) -> str:
    return "stdin" if source == "-" else source


def _compile(settings: Settings, text: str, source: str, name: str = "") -> None:
    """Compile ``text``; on error print it with line and column and exit 1."""
    from pochta.access.managesieve import default_interpreter

    interpreter = default_interpreter()
    try:
        warnings = interpreter.check(text, name, SieveLimits.from_settings(settings.sieve))
    except SieveError as exc:
        fail(f"{_label(source)}: {exc}")
    for warning in warnings:
        click.echo(f"pochta: warning: {_label(source)}: {warning}", err=True)


@click.group()
def sieve() -> None:
    """Sieve scripts (RFC 5228): the accounts' own (what ManageSieve manages) and the
    administrator's per-domain before/after scripts and global includes."""


@sieve.command("list")
@click.argument("address")
@click.pass_context
def list_command(ctx: click.Context, address: str) -> None:
    """The account's scripts, the active one marked."""
    settings, account = _account(ctx, address)
    scripts = _store(settings).scripts(account)
    if not scripts:
        click.echo(f"{account} has no scripts")
        return
    for name, active in scripts:
        click.echo(f"{name}  (active)" if active else name)


@sieve.command("get")
@click.argument("address")
@click.argument("name")
@click.pass_context
def get_command(ctx: click.Context, address: str, name: str) -> None:
    """Print a script, as stored."""
    settings, account = _account(ctx, address)
    try:
        text = _store(settings).get(account, name)
    except ScriptStoreError as exc:
        fail(f"{account}: {exc}")
    click.echo(text, nl=False)


@sieve.command("put")
@click.argument("address")
@click.argument("name")
@click.argument("source", metavar="FILE|-")
@click.option("--activate", is_flag=True, help="Make it the active script too.")
@click.pass_context
def put_command(ctx: click.Context, address: str, name: str, source: str, activate: bool) -> None:
    """Store (or replace) a script, once it compiles."""
    settings, account = _account(ctx, address)
    text = _read(source)
    _compile(settings, text, source, name)
    store = _store(settings)
    try:
        store.put(account, name, text)
        if activate:
            store.set_active(account, name)
    except ScriptStoreError as exc:
        fail(f"{account}: {exc}")
    click.echo(f"Stored {name!r} for {account}" + (" (active)" if activate else ""))


@sieve.command("activate")
@click.argument("address")
@click.argument("name")
@click.pass_context
def activate_command(ctx: click.Context, address: str, name: str) -> None:
    """Make a script the active one (the one delivery runs)."""
    settings, account = _account(ctx, address)
    try:
        _store(settings).set_active(account, name)
    except ScriptStoreError as exc:
        fail(f"{account}: {exc}")
    click.echo(f"{name!r} is the active script of {account}")


@sieve.command("deactivate")
@click.argument("address")
@click.pass_context
def deactivate_command(ctx: click.Context, address: str) -> None:
    """Make no script active (delivery then runs only the global ones)."""
    settings, account = _account(ctx, address)
    _store(settings).set_active(account, None)
    click.echo(f"{account} has no active script")


@sieve.command("delete")
@click.argument("address")
@click.argument("name")
@click.pass_context
def delete_command(ctx: click.Context, address: str, name: str) -> None:
    """Delete a script (not the active one: deactivate it first)."""
    settings, account = _account(ctx, address)
    try:
        _store(settings).delete(account, name)
    except ScriptStoreError as exc:
        fail(f"{account}: {exc}")
    click.echo(f"Deleted {name!r} of {account}")


@sieve.command("rename")
@click.argument("address")
@click.argument("old")
@click.argument("new")
@click.pass_context
def rename_command(ctx: click.Context, address: str, old: str, new: str) -> None:
    """Rename a script (an active one stays active)."""
    settings, account = _account(ctx, address)
    try:
        _store(settings).rename(account, old, new)
    except ScriptStoreError as exc:
        fail(f"{account}: {exc}")
    click.echo(f"Renamed {old!r} to {new!r} for {account}")


@sieve.command("check")
@click.argument("source", metavar="FILE|-")
@click.pass_context
def check_command(ctx: click.Context, source: str) -> None:
    """Compile a script and say whether it is good; stores nothing."""
    settings = _settings(ctx)
    _compile(settings, _read(source), source)
    click.echo(f"{_label(source)}: OK")


# -- the administrator's scripts --------------------------------------------------------


@sieve.group("global")
def global_group() -> None:
    """Per-domain scripts run before and after every account's own (Dovecot's sieve_before
    and sieve_after), and the scripts `include :global` reads."""


@global_group.command("put")
@click.argument("domain")
@click.argument("scope", type=SCOPES)
@click.argument("source", metavar="FILE|-")
@click.pass_context
def global_put(ctx: click.Context, domain: str, scope: str, source: str) -> None:
    """Set DOMAIN's before or after script, once it compiles."""
    settings, name = _domain(ctx, domain)
    text = _read(source)
    _compile(settings, text, source, scope)
    try:
        _store(settings).put_global(name, cast(GlobalScope, scope), text)
    except ScriptStoreError as exc:
        fail(f"{name}: {exc}")
    click.echo(f"Stored the {scope} script of {name}")


@global_group.command("get")
@click.argument("domain")
@click.argument("scope", type=SCOPES)
@click.pass_context
def global_get(ctx: click.Context, domain: str, scope: str) -> None:
    """Print DOMAIN's before or after script."""
    settings, name = _domain(ctx, domain)
    text = _store(settings).get_global(name, cast(GlobalScope, scope))
    if text is None:
        fail(f"{name} has no {scope} script")
    click.echo(text, nl=False)


@global_group.command("delete")
@click.argument("domain")
@click.argument("scope", type=SCOPES)
@click.pass_context
def global_delete(ctx: click.Context, domain: str, scope: str) -> None:
    """Remove DOMAIN's before or after script."""
    settings, name = _domain(ctx, domain)
    store = _store(settings)
    if store.get_global(name, cast(GlobalScope, scope)) is None:
        fail(f"{name} has no {scope} script")
    store.put_global(name, cast(GlobalScope, scope), None)
    click.echo(f"Removed the {scope} script of {name}")


@global_group.group("include")
def include_group() -> None:
    """The scripts `include :global "NAME"` reads (RFC 6609)."""


@include_group.command("put")
@click.argument("name")
@click.argument("source", metavar="FILE|-")
@click.pass_context
def include_put(ctx: click.Context, name: str, source: str) -> None:
    """Store a global script, once it compiles."""
    settings = _settings(ctx)
    text = _read(source)
    _compile(settings, text, source, name)
    try:
        _store(settings).put_global_include(name, text)
    except ScriptStoreError as exc:
        fail(str(exc))
    click.echo(f"Stored the global script {name!r}")


@include_group.command("get")
@click.argument("name")
@click.pass_context
def include_get(ctx: click.Context, name: str) -> None:
    """Print a global script."""
    settings = _settings(ctx)
    try:
        text = _store(settings).get_global_include(name)
    except ScriptStoreError as exc:
        fail(str(exc))
    click.echo(text, nl=False)


@include_group.command("delete")
@click.argument("name")
@click.pass_context
def include_delete(ctx: click.Context, name: str) -> None:
    """Remove a global script."""
    settings = _settings(ctx)
    try:
        _store(settings).put_global_include(name, None)
    except ScriptStoreError as exc:
        fail(str(exc))
    click.echo(f"Removed the global script {name!r}")
