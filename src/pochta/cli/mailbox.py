"""`pochta mailbox`: look into and repair an account's mailbox (like `doveadm mailbox`,
`doveadm quota get`, `doveadm force-resync`).

These commands open the same files as a running server; the store's locks (SQLite's write
lock on the account index) keep them from stepping on each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from pochta.cli.common import fail, opened_directory, reports_errors
from pochta.cli.user import format_size
from pochta.directory.addresses import normalize_address
from pochta.directory.base import DirectoryError
from pochta.directory.model import Account
from pochta.store import MaildirMaintenance, MailStore, StoreError, open_store
from pochta.store.quota import format_bytes


@contextmanager
def _opened_mailbox(ctx: click.Context, address: str) -> Iterator[tuple[Account, MailStore, int]]:
    """(account, store, message limit) of an account that exists in the directory."""
    with opened_directory(ctx) as (settings, directory):
        account = directory.get_account(address)
        if account is None:
            raise DirectoryError(f"no account {address}; list accounts with: pochta user list")
        message_limit = settings.store.default_message_limit
        store = open_store(settings)
    try:
        yield account, store, message_limit
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()


def maildir_maintenance(store: MailStore, command: str) -> MaildirMaintenance:
    """The store's Maildir repairs; else exit 1 saying this store has none."""
    if not isinstance(store, MaildirMaintenance):
        fail(
            f"this store ({type(store).__name__}) has no Maildir files and index to repair; "
            f"pochta mailbox {command} works on the Maildir store only"
        )
    return store


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@click.group()
def mailbox() -> None:
    """Look into and repair mailboxes: folders, quota, index."""


@mailbox.command("list")
@click.argument("address")
@click.pass_context
@reports_errors
def list_(ctx: click.Context, address: str) -> None:
    """One line per folder of ADDRESS: messages, unseen, size, special-use role."""
    address = normalize_address(address)
    with _opened_mailbox(ctx, address) as (_, store, _limit):
        folders = store.list_folders(address)
    width = max(len(f.name) for f in folders)
    for f in folders:
        click.echo(
            f"{f.name:<{width}} messages={f.messages} unseen={f.unseen} "
            f"size={format_bytes(f.size)} role={f.special_use or '-'}"
            f"{'' if f.subscribed else ' unsubscribed'}"
        )


@mailbox.command("quota")
@click.argument("address")
@click.pass_context
@reports_errors
def quota(ctx: click.Context, address: str) -> None:
    """What ADDRESS uses against its quota (RFC 9208 STORAGE and MESSAGE)."""
    address = normalize_address(address)
    with _opened_mailbox(ctx, address) as (account, store, message_limit):
        usage = store.quota_usage(address)
    limit = account.quota_bytes
    storage = f"storage  {format_bytes(usage.bytes)} of {format_size(limit)}"
    if limit:
        storage += f" ({100 * usage.bytes / limit:.1f}%)"
    click.echo(storage)
    messages = f"messages {usage.messages} of {message_limit or 'unlimited'}"
    if message_limit:
        messages += f" ({100 * usage.messages / message_limit:.1f}%)"
    click.echo(messages)


@mailbox.command("sync")
@click.argument("address")
@click.pass_context
@reports_errors
def sync(ctx: click.Context, address: str) -> None:
    """Rescan the Maildir of ADDRESS: adopt files and folders put there by hand or by another
    program, forget those that were removed."""
    address = normalize_address(address)
    with _opened_mailbox(ctx, address) as (_, store, _limit):
        reports = store.sync(address)
    adopted = sum(r.adopted for r in reports)
    vanished = sum(r.vanished for r in reports)
    flags = sum(r.flags_changed for r in reports)
    for r in reports:
        if r.adopted or r.vanished or r.flags_changed:
            click.echo(
                f"{r.folder}: adopted {r.adopted}, vanished {r.vanished}, "
                f"flags changed {r.flags_changed}"
            )
    click.echo(
        f"synced {address}: adopted {_count(adopted, 'message')}, "
        f"{vanished} vanished, {flags} with changed flags"
    )


@mailbox.command("reindex")
@click.argument("address")
@click.pass_context
@reports_errors
def reindex(ctx: click.Context, address: str) -> None:
    """Rebuild the index of ADDRESS from its Maildir (UIDs kept where the uidlist has them)."""
    address = normalize_address(address)
    with _opened_mailbox(ctx, address) as (_, store, _limit):
        report = maildir_maintenance(store, "reindex").reindex(address)
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(
        f"reindexed {address}: {_count(report.folders, 'folder')}, "
        f"{_count(report.messages, 'message')} ({report.kept_uids} kept their UID, "
        f"{report.new_uids} got a new one)"
    )
    if report.new_uidvalidity:
        click.echo(
            "new UIDVALIDITY (mail clients download these folders again): "
            + ", ".join(report.new_uidvalidity)
        )
