"""`pochta route ADDRESS...`: where mail for an address goes, without sending any.

The answer the running server would give now (Exim's ``-bt``; Postfix's ``sendmail -bv``
without the report mail): the recipient canonical maps first (cleanup(8) rewrites before
anything routes), then the address class of the domain (Postfix ADDRESS_CLASS_README) and
every final destination after aliases, catch-alls and transport_maps, or the refusal a
client would get at RCPT. It reads the directory, the config and the tables; SRS addresses
are shown as they are (their secrets stay with the server).
"""

from __future__ import annotations

import sys

import click

from pochta.cli.common import fail, load_cli_settings, open_directory
from pochta.resolve.classes import (
    DiscardDest,
    FileDest,
    MailboxDest,
    PipeDest,
    Rejection,
    RelayDest,
    RemoteDest,
    ReportDest,
    UnixDest,
)

__all__ = ["destination_text", "route"]


def destination_text(dest: object, *, brief: bool = False) -> str:
    """One destination as ``pochta route`` prints it; ``brief`` (``pochta check``'s
    postmaster lines): mailboxes and remote addresses as the bare address."""
    if brief and isinstance(dest, MailboxDest | RemoteDest | RelayDest):
        return dest.account if isinstance(dest, MailboxDest) else dest.address
    if isinstance(dest, MailboxDest):
        where = f" (Maildir {dest.mailbox_path})" if dest.mailbox_path else ""
        detail = f" +{dest.extension}" if dest.extension else ""
        return f"mailbox {dest.account}{detail}{where}"
    if isinstance(dest, RemoteDest | RelayDest):
        return f"{dest.address} via {dest.transport}"
    if isinstance(dest, PipeDest):
        return f'command "|{dest.command}" as {dest.user}'
    if isinstance(dest, FileDest):
        return f"file {dest.path} as {dest.user}"
    if isinstance(dest, UnixDest):
        return f"Unix user {dest.user}"
    if isinstance(dest, DiscardDest):
        return "discarded"
    if isinstance(dest, ReportDest):
        return f"report:{dest.kind} (stored in reports.db: pochta report {dest.kind})"
    if isinstance(dest, Rejection):
        return f"refused: {dest.reply}"
    return str(dest)


@click.command()
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
@click.pass_context
def route(ctx: click.Context, addresses: tuple[str, ...]) -> None:
    """Show where mail for each ADDRESS goes: its address class and every final
    destination, as the server would route it now (nothing is sent). Exit 1 when an
    address would be refused."""
    from pochta.cleanup.canonical import CanonicalMaps
    from pochta.resolve import Resolver
    from pochta.resolve.resolver import AddressError, parse_address
    from pochta.tables import TableError
    from pochta.tables.configured import ConfiguredTables

    settings = load_cli_settings(ctx)
    try:
        tables = ConfiguredTables.open(settings.tables)
    except TableError as exc:
        fail(f"tables: {exc}")
    hostname = settings.server.hostname.rstrip(".").lower()
    canonical = CanonicalMaps.from_settings(settings, tables)
    directory = open_directory(settings)
    refused = False
    try:
        resolver = Resolver(directory, tables, settings)
        for address in addresses:
            try:
                parsed = parse_address(address, hostname)
            except AddressError as exc:
                click.echo(f"{address}: refused: bad address ({exc})")
                refused = True
                continue
            rewritten = canonical.recipient(parsed.text)
            line = parsed.text
            if rewritten != parsed.text:
                line += f" -> {rewritten} (canonical)"
            domain = rewritten.rpartition("@")[2] or hostname
            cls = resolver.domain_class(domain)
            relay_note = (
                " (sent on for logged-in or local clients only)" if cls.name == "DEFAULT" else ""
            )
            click.echo(f"{line}: {cls.value} class{relay_note}")
            resolution = resolver.resolve(rewritten)
            for dest in resolution.destinations:
                click.echo(f"  -> {destination_text(dest)}")
            refused = refused or resolution.rejected is not None
    finally:
        directory.close()
    sys.exit(1 if refused else 0)
