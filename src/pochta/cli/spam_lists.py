"""``pochta spam allow`` and ``pochta spam block``: the sender allow and block lists, global,
per hosted domain or per user, and the never-filtered recipients (spam/lists.py)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import click

from pochta.cli.common import fail, opened_directory, reports_errors
from pochta.directory.addresses import AddressError, normalize_address, normalize_domain
from pochta.directory.base import Directory
from pochta.spam.lists import (
    GLOBAL,
    ListError,
    ListKind,
    SpamLists,
    parse_recipient_pattern,
    parse_sender_pattern,
)

PATTERN_HELP = (
    "PATTERN is user@domain (that address), @domain (that domain only) or domain (it and its "
    "subdomains), matched against the envelope sender and the From address."
)


@contextlib.contextmanager
def _opened(ctx: click.Context) -> Iterator[tuple[Directory, SpamLists]]:
    with opened_directory(ctx) as (settings, directory):
        try:
            lists = SpamLists(settings.directory_db)
        except (sqlite3.Error, OSError) as exc:
            fail(f"cannot open the spam lists in {settings.directory_db}: {exc}")
        try:
            yield directory, lists
        finally:
            lists.close()


def _scope(directory: Directory, value: str | None) -> str:
    """The canonical scope of ``--for``: GLOBAL, a hosted domain or an existing user."""
    if value is None:
        return GLOBAL
    try:
        if "@" in value:
            address = normalize_address(value)
            if directory.get_account(address) is None and directory.get_alias(address) is None:
                fail(
                    f"--for {value}: no account or alias {address} here; name one "
                    "(pochta user list, pochta alias list) or a hosted domain"
                )
            return address
        domain = normalize_domain(value)
    except AddressError as exc:
        fail(f"--for {value}: {exc}")
    found = directory.get_domain(domain)
    if found is None or found.signing_only:
        fail(f"--for {value}: {domain} is not a hosted domain (pochta domain list)")
    return domain


def _check_recipient(directory: Directory, pattern: str) -> None:
    """A recipient entry must be in a hosted domain (``user@`` is in all of them)."""
    domain = pattern.rpartition("@")[2]
    if not domain:
        return
    found = directory.get_domain(domain)
    if found is None or found.signing_only:
        fail(f"{pattern}: {domain} is not a hosted domain; mail to it never reaches the filter")


def _list_group(kind: ListKind, verb: str, help_text: str) -> click.Group:
    recipient_option = kind == "allow"

    @click.group(name=kind, help=help_text)
    def group() -> None:
        pass

    def parse(directory: Directory, pattern: str, recipient: bool) -> tuple[ListKind, str]:
        try:
            if recipient:
                canonical = parse_recipient_pattern(pattern)
                _check_recipient(directory, canonical)
                return "recipient", canonical
            return kind, parse_sender_pattern(pattern)
        except ListError as exc:
            fail(str(exc))

    def scope_of(directory: Directory, for_: str | None, recipient: bool) -> str:
        if recipient and for_ is not None:
            fail("--recipient entries are global; leave out --for")
        return _scope(directory, for_)

    for_option = click.option(
        "--for",
        "for_",
        metavar="USER@DOMAIN|DOMAIN",
        help="The list of one user or one hosted domain (default: the global list).",
    )

    def with_recipient(f: click.decorators.FC) -> click.decorators.FC:
        if not recipient_option:
            return f
        return click.option(
            "--recipient",
            is_flag=True,
            help="PATTERN is a recipient (user@domain, or user@ in every domain) whose mail "
            "is never filtered, e.g. abuse@.",
        )(f)

    @group.command("add", help=f"{verb} mail from PATTERN. {PATTERN_HELP}")
    @for_option
    @with_recipient
    @click.argument("pattern")
    @click.pass_context
    @reports_errors
    def add(ctx: click.Context, for_: str | None, pattern: str, recipient: bool = False) -> None:
        with _opened(ctx) as (directory, lists):
            which, canonical = parse(directory, pattern, recipient)
            scope = scope_of(directory, for_, recipient)
            added = lists.add(which, scope, canonical)
        where = scope or "global"
        click.echo(f"{'added' if added else 'already listed'}: {which} {canonical} ({where})")

    @group.command("remove", help=f"Remove PATTERN from the {kind} list.")
    @for_option
    @with_recipient
    @click.argument("pattern")
    @click.pass_context
    @reports_errors
    def remove(ctx: click.Context, for_: str | None, pattern: str, recipient: bool = False) -> None:
        with _opened(ctx) as (directory, lists):
            which, canonical = parse(directory, pattern, recipient)
            scope = scope_of(directory, for_, recipient)
            removed = lists.remove(which, scope, canonical)
        if not removed:
            fail(
                f"{canonical} is not on the {which} list of {scope or 'the server (global)'}; "
                f"see pochta spam {kind} list"
            )
        click.echo(f"removed: {which} {canonical} ({scope or 'global'})")

    @group.command("list", help=f"One line per entry of the {kind} list: SCOPE PATTERN.")
    @for_option
    @with_recipient
    @click.pass_context
    @reports_errors
    def list_(ctx: click.Context, for_: str | None, recipient: bool = False) -> None:
        with _opened(ctx) as (directory, lists):
            scope = None if for_ is None else scope_of(directory, for_, recipient)
            which: ListKind = "recipient" if recipient else kind
            entries = lists.entries(which, scope)
        for entry in entries:
            click.echo(f"{entry.scope or 'global'}\t{entry.pattern}")

    return group


allow = _list_group(
    "allow",
    "Allow",
    "Senders whose mail is not treated as spam (score [spam_lists] allow_score), and with "
    "--recipient the recipients whose mail is never filtered.",
)
block = _list_group(
    "block",
    "Block",
    "Senders whose mail is treated as spam (score [spam_lists] block_score).",
)
