"""``pochta quarantine list|show|release|delete``: the spam the filter kept out of the queue.

Works on ``DATA_DIR/quarantine/`` directly (``spam/quarantine.py``), with or without a
running server. ``release`` hands each message back the way ``pochta sendmail`` queues
mail: one file into the spool's ``maildrop/`` (``receive/maildrop.py``) with the original
envelope sender and recipients, which the server's pickup runs through the door as local
mail (aliases expanded, ``Received:`` added; the spam filter scans only MX mail, so the
message is not scanned again). The quarantine file is removed only once the maildrop file
is durable: a crash in between gives at worst a second copy, never a loss.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

import click
import msgspec

from pochta.cli.common import fail, load_cli_settings
from pochta.config.settings import Settings
from pochta.logs import configure_logging
from pochta.spam.quarantine import (
    QUARANTINE_DIR,
    QuarantineEntry,
    QuarantineError,
    QuarantineStore,
)

__all__ = ["quarantine"]


def _settings(ctx: click.Context) -> Settings:
    settings = load_cli_settings(ctx, check_files=False)
    configure_logging(settings.server.log_format, "warning")
    return settings


def _store(settings: Settings) -> QuarantineStore:
    return QuarantineStore(settings.data_dir / QUARANTINE_DIR)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def quarantine() -> None:
    """The messages the spam filter quarantined ([spam] reject_action = "quarantine"):
    list them, show one, release it to its recipients, or delete it."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: every entry.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List quarantined messages, oldest first: id, time, score, sender, recipients."""
    entries = _store(_settings(ctx)).entries()
    if as_json:
        click.echo(json.dumps([msgspec.to_builtins(e) for e in entries], ensure_ascii=False))
        return
    if not entries:
        click.echo("Quarantine is empty")
        return
    for e in entries:
        sender = e.sender or "<>"
        click.echo(
            f"{e.queue_id}  {_when(e.time)}  score={e.score:.2f}  {sender} -> "
            f"{', '.join(e.recipients)}  {e.subject!r}"
        )
    click.echo(f"-- {len(entries)} message{'s' if len(entries) != 1 else ''}")


@quarantine.command("show")
@click.argument("queue_id", metavar="ID")
@click.option("--raw", is_flag=True, help="Print the message itself, as kept, and nothing else.")
@click.pass_context
def show(ctx: click.Context, queue_id: str, raw: bool) -> None:
    """Show one quarantined message: its envelope, score and symbols, then its header."""
    try:
        entry, content = _store(_settings(ctx)).read(queue_id)
    except QuarantineError as exc:
        fail(str(exc))
    if raw:
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return
    _describe(entry)
    end = content.find(b"\r\n\r\n")
    end = content.find(b"\n\n") if end < 0 else end
    click.echo("")
    click.echo(content[: end if end >= 0 else len(content)].decode("utf-8", "replace"))


def _describe(entry: QuarantineEntry) -> None:
    click.echo(f"id: {entry.queue_id}")
    click.echo(f"quarantined: {_when(entry.time)}")
    click.echo(f"sender: {entry.sender or '<>'}")
    click.echo(f"recipients: {', '.join(entry.recipients)}")
    if entry.client_ip:
        click.echo(f"client: {entry.client_ip} (HELO {entry.client_helo})")
    click.echo(f"size: {entry.size}")
    click.echo(f"score: {entry.score:.2f}")
    for s in sorted(entry.symbols, key=lambda s: (-s.score, s.name)):
        options = f" [{', '.join(s.options)}]" if s.options else ""
        click.echo(f"  {s.name}({s.score:.2f}) {s.description}{options}")


@quarantine.command("release")
@click.argument("queue_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def release(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Deliver quarantined messages to their original recipients (not scanned again), then
    remove them from the quarantine. The running server's pickup queues them."""
    from pochta.receive.maildrop import MAILDROP_DIR, Drop, encode, write_drop

    settings = _settings(ctx)
    store = _store(settings)
    maildrop = settings.spool_dir / MAILDROP_DIR
    failed = False
    for queue_id in queue_ids:
        try:
            entry, content = store.read(queue_id)
        except QuarantineError as exc:
            click.echo(f"pochta: error: {exc}", err=True)
            failed = True
            continue
        drop = Drop(
            sender=entry.sender,
            recipients=entry.recipients,
            notify=entry.notify,
            ret=entry.ret,
            envid=entry.envid,
            body="" if entry.body == "BINARYMIME" else entry.body,  # pickup has no BDAT
            uid=os.getuid(),
            size=len(content),
        )
        try:
            write_drop(maildrop, encode(drop, content))
        except OSError as exc:
            hint = "" if maildrop.is_dir() else " (pochta serve makes it: start it once)"
            click.echo(
                f"pochta: error: {queue_id} not released: {maildrop}: {exc.strerror or exc}{hint}",
                err=True,
            )
            failed = True
            continue
        store.remove(queue_id)  # only now: the maildrop file is durable
        click.echo(f"{queue_id}: released to {', '.join(entry.recipients)}")
    if failed:
        sys.exit(1)


@quarantine.command("delete")
@click.argument("queue_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def delete(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Remove quarantined messages for good."""
    store = _store(_settings(ctx))
    failed = False
    for queue_id in queue_ids:
        try:
            store.remove(queue_id)
        except QuarantineError as exc:
            click.echo(f"pochta: error: {exc}", err=True)
            failed = True
            continue
        click.echo(f"{queue_id}: deleted")
    if failed:
        sys.exit(1)
