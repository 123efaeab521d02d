"""`pochta user`: mail accounts (Dovecot's passdb/userdb, Postfix's virtual_mailbox_maps).

Passwords are never taken from the command line (they would show in `ps` and the shell
history): a hidden prompt, or one line on stdin with --password-stdin.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import click

from pochta.cli.common import fail, opened_directory, read_password, reports_errors
from pochta.cli.domain import alias_file_hint, local_class_reason
from pochta.config.settings import Settings
from pochta.directory.addresses import check_mailbox_address, normalize_address, normalize_domain
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.passwd_file import KIB, import_passwd_file, parse_size

_UNITS = (("T", KIB**4), ("G", KIB**3), ("M", KIB**2), ("K", KIB))


def parse_quota(value: str) -> int:
    """Bytes of a --quota / SIZE argument: ``2G``, ``500M``, ``0`` or ``unlimited`` (= 0)."""
    if value.strip().lower() in ("unlimited", "none"):
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        fail(f"quota {exc}; 0 or 'unlimited' means no limit")


def format_size(size: int) -> str:
    """``2G`` when exact in a binary unit, else ``1.5G``; 0 is ``unlimited``."""
    if size == 0:
        return "unlimited"
    for unit, factor in _UNITS:
        if size >= factor:
            return f"{size // factor}{unit}" if size % factor == 0 else f"{size / factor:.1f}{unit}"
    return f"{size}B"


def mailbox_path(settings: Settings, address: str) -> Path:
    """DATA/mail/DOMAIN/LOCALPART, where the store keeps the account's Maildir."""
    local, _, domain = address.rpartition("@")
    return settings.mail_dir / domain / local


def _hashes(password: str) -> tuple[str, str]:
    from pochta.directory.passwords import hash_password, make_scram_sha256

    return hash_password(password), make_scram_sha256(password)


def _require_account(directory: Directory, address: str) -> None:
    if directory.get_account(address) is not None:
        return
    found = directory.get_alias(address)
    if found is not None:
        raise DirectoryError(
            f"{address} is an alias (-> {', '.join(found.targets)}), not an account; "
            "see: pochta alias list"
        )
    raise DirectoryError(f"no account {address}; list accounts with: pochta user list")


@click.group()
def user() -> None:
    """Add, change and remove mail accounts."""


@user.command("add")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password as one line of stdin.")
@click.option("--quota", metavar="SIZE", help="Mailbox size limit: 2G, 500M, 0 = unlimited.")
@click.option("--disabled", is_flag=True, help="Create the account without letting it log in.")
@click.pass_context
@reports_errors
def add(
    ctx: click.Context, address: str, password_stdin: bool, quota: str | None, disabled: bool
) -> None:
    """Create the account ADDRESS (its domain must be hosted)."""
    address = check_mailbox_address(address)  # before asking for a password
    quota_bytes = parse_quota(quota) if quota is not None else None
    with opened_directory(ctx) as (settings, directory):
        # Refuse before asking for a password that would be thrown away.
        local, _, domain = address.rpartition("@")
        found = directory.get_domain(domain)
        why = local_class_reason(settings, domain)
        if (found is None or found.signing_only) and why is not None:
            # Postfix ADDRESS_CLASS_README: the local class has Unix accounts and alias_maps
            # aliases, not virtual mailboxes (a hosted directory domain comes first).
            raise DirectoryError(
                f"{domain} is {why}, the local address class: its users are alias_maps "
                f"aliases (or Unix accounts with [local] deliver_to_unix_accounts), not "
                f"accounts; create the account in a hosted domain (pochta user add "
                f"{local}@YOUR-DOMAIN) and add the line '{local}: {local}@YOUR-DOMAIN' to "
                f"{alias_file_hint(settings)}"
            )
        if found is None or found.signing_only:
            raise DirectoryError(
                f"domain {domain} is not hosted here; add it with: pochta domain add {domain}"
            )
        if directory.get_account(address) is not None:
            raise DirectoryError(f"account {address} already exists")
        if quota_bytes is None:
            quota_bytes = settings.directory.default_quota_bytes
        password_hash, scram = _hashes(read_password(password_stdin, confirm=True))
        account = directory.add_account(
            address,
            password_hash=password_hash,
            scram_sha256=scram,
            quota_bytes=quota_bytes,
            enabled=not disabled,
        )
    state = "" if account.enabled else ", disabled"
    click.echo(f"added user {account.address} (quota {format_size(account.quota_bytes)}{state})")


@user.command("list")
@click.argument("domain", required=False)
@click.pass_context
@reports_errors
def list_(ctx: click.Context, domain: str | None) -> None:
    """One line per account: address, quota, state."""
    name = normalize_domain(domain) if domain else None
    with opened_directory(ctx) as (_, directory):
        if name is not None and directory.get_domain(name) is None:
            raise DirectoryError(f"domain {name} is not hosted here; see: pochta domain list")
        for a in directory.list_accounts(name):
            state = "enabled" if a.enabled else "disabled"
            click.echo(f"{a.address} quota={format_size(a.quota_bytes)} {state}")


@user.command("passwd")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password as one line of stdin.")
@click.pass_context
@reports_errors
def passwd(ctx: click.Context, address: str, password_stdin: bool) -> None:
    """Set a new password for ADDRESS."""
    address = normalize_address(address)
    with opened_directory(ctx) as (_, directory):
        _require_account(directory, address)
        password_hash, scram = _hashes(read_password(password_stdin, confirm=True))
        directory.update_account(address, password_hash=password_hash, scram_sha256=scram)
    click.echo(f"changed the password of {address}")


@user.command("remove")
@click.argument("address")
@click.option("--purge", is_flag=True, help="Also delete the mailbox and all its mail.")
@click.pass_context
@reports_errors
def remove(ctx: click.Context, address: str, purge: bool) -> None:
    """Remove the account ADDRESS; its mailbox is kept unless --purge."""
    address = normalize_address(address)
    with opened_directory(ctx) as (settings, directory):
        _require_account(directory, address)
        mailbox = mailbox_path(settings, address)
        mail_root = settings.mail_dir.resolve()
        resolved = mailbox.resolve()
        if purge and (resolved == mail_root or not resolved.is_relative_to(mail_root)):
            raise DirectoryError(f"refusing to delete {mailbox}: it is not under {mail_root}")
        directory.remove_account(address)
        pointing = [a.source for a in directory.aliases_targeting(address)]
    if pointing:
        click.echo(
            f"note: {', '.join(pointing)} still forward to {address}; "
            "change them with: pochta alias remove SOURCE TARGET"
        )
    if not purge:
        if mailbox.exists():
            click.echo(
                f"removed user {address}; its mailbox was kept in {mailbox} "
                f"(delete it with: rm -r {mailbox})"
            )
        else:
            click.echo(f"removed user {address} (it had no mailbox yet)")
        return
    if not mailbox.exists():
        click.echo(f"removed user {address} (it had no mailbox yet)")
        return
    try:
        shutil.rmtree(mailbox)
    except OSError as exc:
        fail(f"removed user {address} but could not delete {mailbox}: {exc}")
    click.echo(f"removed user {address} and deleted its mailbox {mailbox}")


@user.command("info")
@click.argument("address")
@click.pass_context
@reports_errors
def info(ctx: click.Context, address: str) -> None:
    """Everything pochta knows about ADDRESS (like `doveadm user`)."""
    from pochta.directory.passwords import parse_scheme

    address = normalize_address(address)
    with opened_directory(ctx) as (settings, directory):
        _require_account(directory, address)
        account = directory.get_account(address)
        assert account is not None
        pointing = directory.aliases_targeting(address)
    scheme = parse_scheme(account.password_hash)[0] or "unknown"
    created = datetime.datetime.fromtimestamp(account.created, tz=datetime.UTC)
    delimiter = settings.directory.recipient_delimiter
    if delimiter:
        local, _, domain = address.rpartition("@")
        plus = f"{delimiter} ({local}{delimiter[0]}tag@{domain} reaches {address})"
    else:
        plus = "off"
    quota = format_size(account.quota_bytes)
    if account.quota_bytes:
        quota += f" ({account.quota_bytes} bytes)"
    rows = [
        ("address", account.address),
        ("home", str(mailbox_path(settings, address))),
        ("quota", quota),
        ("enabled", "yes" if account.enabled else "no"),
        ("password", scheme),
        ("scram", "yes" if account.scram_sha256 else "no"),
        ("created", created.isoformat()),
        ("aliases", ", ".join(a.source for a in pointing) or "-"),
        ("delimiter", plus),
    ]
    for key, value in rows:
        click.echo(f"{key:<10} {value}")


@user.command("quota")
@click.argument("address")
@click.argument("size")
@click.pass_context
@reports_errors
def quota(ctx: click.Context, address: str, size: str) -> None:
    """Set the mailbox size limit of ADDRESS (2G, 500M, 0 = unlimited)."""
    address = normalize_address(address)
    quota_bytes = parse_quota(size)
    with opened_directory(ctx) as (_, directory):
        _require_account(directory, address)
        directory.update_account(address, quota_bytes=quota_bytes)
    click.echo(f"quota of {address} is now {format_size(quota_bytes)}")


def _set_enabled(ctx: click.Context, address: str, enabled: bool) -> None:
    address = normalize_address(address)
    with opened_directory(ctx) as (_, directory):
        _require_account(directory, address)
        directory.update_account(address, enabled=enabled)
    click.echo(f"{'enabled' if enabled else 'disabled'} user {address}")


@user.command("enable")
@click.argument("address")
@click.pass_context
@reports_errors
def enable(ctx: click.Context, address: str) -> None:
    """Let ADDRESS log in and receive mail again."""
    _set_enabled(ctx, address, True)


@user.command("disable")
@click.argument("address")
@click.pass_context
@reports_errors
def disable(ctx: click.Context, address: str) -> None:
    """Keep ADDRESS and its mail but refuse its logins and its incoming mail."""
    _set_enabled(ctx, address, False)


@user.command("import-passwd-file")
@click.argument("file", metavar="FILE")
@click.option("--domain", "domain", required=True, help="Domain of user names without @domain.")
@click.option("--skip-existing", is_flag=True, help="Leave accounts that exist as they are.")
@click.pass_context
@reports_errors
def import_passwd(ctx: click.Context, file: str, domain: str, skip_existing: bool) -> None:
    """Import the accounts of a Dovecot passwd-file (hashes kept, rehashed at first login)."""
    with opened_directory(ctx) as (settings, directory):
        report = import_passwd_file(
            directory,
            Path(file),
            domain,
            skip_existing=skip_existing,
            default_quota_bytes=settings.directory.default_quota_bytes,
        )
    summary = f"imported {_count(len(report.created), 'account')} from {file}"
    if report.skipped:
        summary += f", skipped {len(report.skipped)} that already existed"
    click.echo(summary)
    if report.errors:
        for error in report.errors:
            click.echo(f"pochta: error: {error}", err=True)
        fail(
            f"{_count(len(report.errors), 'line')} of {file} could not be imported; "
            "fix them and run the import again with --skip-existing"
        )


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _register_import() -> None:
    from pochta.cli.user_import import import_

    user.add_command(import_)


_register_import()
