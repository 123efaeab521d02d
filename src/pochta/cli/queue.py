"""`pochta queue`: show and manage the mail queue, like postqueue(1) -p/-f and postsuper(1).

Works on the spool directly, with or without a running server: every change is one atomic
rename under the message's lock (see ``pochta.queue.spool``), so it is safe while the server
delivers. How a running server learns about a change: it scans ``incoming/`` every second, so
``flush`` (deferred → incoming), ``release`` and ``requeue`` take effect within a second; no
signal or pid file is involved. ``hold`` and ``delete`` need nothing from the server: a held
or deleted message is simply no longer where the scheduler looks.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime

import click
import msgspec

from pochta.cli.common import fail, load_cli_settings
from pochta.logs import configure_logging
from pochta.queue.envelope import Envelope
from pochta.queue.spool import STATES, QueueEntry, QueueState, Spool, SpoolError

# Postfix's postqueue -p marks: "*" active, "!" on hold; ours adds "#" for corrupt.
STATE_MARKS = {"active": "*", "hold": "!", "corrupt": "#"}
ALL = "ALL"


def _spool(ctx: click.Context) -> Spool:
    settings = load_cli_settings(ctx, check_files=False)
    # Admin commands log only problems, on stderr; what they did is printed on stdout.
    configure_logging(settings.server.log_format, "warning")
    return Spool(settings.spool_dir, io_threads=4, create=False)


@click.group()
def queue() -> None:
    """Show and manage the mail queue (postqueue -p, postqueue -f, postsuper).

    Queue states: incoming (waiting for a first try), active (being delivered), deferred
    (waiting for a retry), hold (kept back by an admin), corrupt (unreadable). A running
    server notices flush, release and requeue within a second.
    """


@queue.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: every message.")
@click.option("--state", type=click.Choice(STATES), help="Only messages in this state.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool, state: QueueState | None) -> None:
    """List queued messages, like `postqueue -p` (mailq).

    Each message shows its id (* active, ! on hold, # corrupt), size, arrival time and
    sender, then each recipient not yet delivered with its status, attempts, next try and
    last reply.
    """
    spool = _spool(ctx)
    try:
        entries = asyncio.run(spool.list(state))
    finally:
        spool.close()
    if as_json:
        click.echo(msgspec.json.encode(entries).decode())
        return
    click.echo(_render_list(entries), nl=False)


def _local(timestamp: float, fmt: str) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().strftime(fmt)


def _render_list(entries: list[QueueEntry]) -> str:
    if not entries:
        return "Mail queue is empty\n"
    lines = [f"{'-Queue ID-':<16} {'--Size--':>8} {'----Arrival Time----':<20}  -Sender/Recipient-"]
    total = 0
    for entry in entries:
        mark = STATE_MARKS.get(entry.state, " ")
        envelope = entry.envelope
        if envelope is None:
            lines.append(f"{entry.queue_id}{mark}  ({entry.state}: {entry.error})")
            lines.append("")
            continue
        total += envelope.size
        arrival = _local(envelope.arrival, "%a %b %d %H:%M:%S")
        sender = envelope.sender or "<>"
        lines.append(f"{entry.queue_id}{mark:<1}{envelope.size:>9} {arrival:<20}  {sender}")
        pad = " " * 48
        for r in envelope.recipients:
            status: str = r.status
            if r.attempts:
                status += f", {r.attempts} attempt{'s' if r.attempts != 1 else ''}"
            if r.status == "deferred" and r.next_attempt:
                status += f", next try {_local(r.next_attempt, '%Y-%m-%d %H:%M:%S')}"
            lines.append(f"{pad}{r.address}  [{status}]")
            if r.reply and r.status != "delivered":
                lines.append(f"{pad}  ({r.reply})")
        lines.append("")
    requests = len(entries)
    lines.append(
        f"-- {(total + 1023) // 1024} Kbytes in {requests} Request{'s' if requests != 1 else ''}."
    )
    return "\n".join(lines) + "\n"


@queue.command()
@click.argument("queue_id")
@click.option("--content", is_flag=True, help="Print the whole message, not only its headers.")
@click.pass_context
def show(ctx: click.Context, queue_id: str, content: bool) -> None:
    """Show the envelope of one message and the headers of its content (like postcat -q)."""
    spool = _spool(ctx)

    async def load() -> tuple[QueueState, Envelope, bytes]:
        state, envelope = await spool.load_with_state(queue_id)
        return state, envelope, await spool.read_content(queue_id)

    try:
        state, envelope, data = asyncio.run(load())
    except (SpoolError, ValueError) as exc:
        fail(str(exc))
    finally:
        spool.close()
    click.echo(f"state: {state}")
    click.echo(f"arrival: {_local(envelope.arrival, '%Y-%m-%d %H:%M:%S %z')}")
    click.echo("envelope:")
    click.echo(msgspec.json.format(msgspec.json.encode(envelope), indent=2).decode())
    click.echo("")
    if not content:
        end = data.find(b"\r\n\r\n")
        data = data if end < 0 else data[: end + 2]
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@queue.command()
@click.pass_context
def flush(ctx: click.Context) -> None:
    """Retry every deferred message now (postqueue -f).

    Deferred messages are moved to incoming/; a running server starts them within a second.
    """
    spool = _spool(ctx)
    try:
        moved = asyncio.run(spool.flush())
    except (SpoolError, OSError) as exc:
        fail(str(exc))
    finally:
        spool.close()
    click.echo(f"{moved} deferred message{'s' if moved != 1 else ''} made due now")


def _each(
    ctx: click.Context,
    queue_ids: tuple[str, ...],
    action: Callable[[Spool, str], Awaitable[None]],
    all_states: tuple[QueueState, ...],
    done: str,
) -> None:
    """Apply ``action`` to each id (or to every message in ``all_states`` for ALL)."""
    if not queue_ids:
        fail("name at least one queue id, or ALL")
    spool = _spool(ctx)
    errors: list[str] = []

    async def run() -> int:
        ids: list[str] = []
        for queue_id in queue_ids:
            if queue_id == ALL:
                for state in all_states:
                    ids.extend(await spool.ids(state))
            else:
                ids.append(queue_id)
        count = 0
        for queue_id in dict.fromkeys(ids):
            try:
                await action(spool, queue_id)
            except SpoolError as exc:
                if ALL not in queue_ids:
                    errors.append(str(exc))
                continue
            count += 1
        return count

    try:
        count = asyncio.run(run())
    except OSError as exc:
        fail(str(exc))
    finally:
        spool.close()
    if count or not errors:
        click.echo(f"{done}: {count} message{'s' if count != 1 else ''}")
    for error in errors[:-1]:
        click.echo(f"pochta: error: {error}", err=True)
    if errors:
        fail(errors[-1])


IDS = click.argument("queue_ids", nargs=-1, metavar="ID...|ALL")


@queue.command()
@IDS
@click.pass_context
def hold(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Keep messages from delivery until released (postsuper -h)."""
    _each(ctx, queue_ids, Spool.hold, ("incoming", "deferred"), "Placed on hold")


@queue.command()
@IDS
@click.pass_context
def release(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Release held messages; they are tried at once (postsuper -H)."""
    _each(ctx, queue_ids, Spool.release, ("hold",), "Released from hold")


@queue.command()
@IDS
@click.pass_context
def requeue(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Try messages again now, routed afresh; also from hold and corrupt (postsuper -r)."""
    _each(ctx, queue_ids, Spool.requeue, ("deferred", "hold"), "Requeued")


@queue.command()
@IDS
@click.pass_context
def delete(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Remove messages from the queue, in any state (postsuper -d). No bounce is sent."""

    async def remove(spool: Spool, queue_id: str) -> None:
        await spool.delete(queue_id, reason="deleted by admin")

    _each(ctx, queue_ids, remove, STATES, "Deleted")
