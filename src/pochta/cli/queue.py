"""`pochta queue`: show and manage the mail queue, like postqueue(1) -p/-f and postsuper(1).

Works on the spool directly, with or without a running server: every change is one atomic
rename under the message's lock (see ``pochta.queue.spool``), so it is safe while the server
delivers. How a running server learns about a change: it scans ``incoming/`` every second, so
``flush`` (deferred → incoming), ``release`` and ``requeue`` take effect within a second; no
signal or pid file is involved. ``hold`` and ``delete`` need nothing from the server: a held
or deleted message is simply no longer where the scheduler looks. ``requeue`` also reads the
tables and the directory the config names: it routes the message afresh before it moves it
(``reroute``), so a table that does not load makes it fail, saying which.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import click
import msgspec

from pochta.cleanup.verdict import Verdict
from pochta.cli.common import fail, load_cli_settings
from pochta.config.settings import Settings
from pochta.logs import configure_logging, get_logger
from pochta.mime.headers import split_message
from pochta.queue.base import STATES, MessageQueue, QueueEntry, QueueState, SpoolError
from pochta.queue.envelope import Envelope, EnvelopeError, Recipient
from pochta.queue.spool import Spool

# Postfix's postqueue -p marks: "*" active, "!" on hold; ours adds "#" for corrupt.
log = get_logger("queue")

STATE_MARKS = {"active": "*", "hold": "!", "corrupt": "#"}
ALL = "ALL"


def _spool(ctx: click.Context) -> MessageQueue:
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
    sender, then each recipient still to be delivered, under the reason it waits for in
    parentheses (its last reply, and the remote server that gave it), with its status,
    attempts and next try.
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


# postqueue -p with long queue ids (postfix/src/postqueue/showq_compat.c, L_SENDER_FORMAT):
# id and mark in 17 columns, size in 8, arrival in 19, then the sender; recipients start
# under the sender, and a "(reason)" line ends at column 78.
_ID_WIDTH = 17
_RECIPIENT_INDENT = " " * (_ID_WIDTH + 1 + 8 + 1 + 19 + 1)
_REASON_END = 76
_ARRIVAL = "%a %b %d %H:%M:%S"
_WHEN = "%Y-%m-%d %H:%M:%S"


def _reason(r: Recipient) -> str:
    """Why a recipient is still queued: its last reply, and who gave it (Postfix writes
    "host mx.example.org[192.0.2.1] said: ...")."""
    if not r.reply:
        return ""
    return f"host {r.remote_mta} said: {r.reply}" if r.remote_mta else r.reply


def _status(r: Recipient, when: str = _WHEN, now: float | None = None) -> str:
    """``deferred, 2 attempts, next try ...`` ("" for a recipient not tried yet); with
    ``now``, how long until the next try too."""
    if r.status == "pending" and not r.attempts:
        return ""
    status: str = r.status
    if r.attempts:
        status += f", {r.attempts} attempt{'s' if r.attempts != 1 else ''}"
    if r.status == "deferred" and r.next_attempt:
        status += f", next try {_local(r.next_attempt, when)}"
        if now is not None:
            status += f" ({_until(r.next_attempt, now)})"
    if r.status == "delivered" and r.delivered_at:
        status += f", at {_local(r.delivered_at, when)}"
    return status


def _render_list(entries: list[QueueEntry]) -> str:
    if not entries:
        return "Mail queue is empty\n"
    lines = [
        f"{'-Queue ID-':<{_ID_WIDTH}} {'--Size--':>8} {'---Arrival Time----':<19} "
        "-Sender/Recipient-------"
    ]
    total = 0
    for entry in entries:
        mark = STATE_MARKS.get(entry.state, "")
        envelope = entry.envelope
        if envelope is None:
            lines.append(f"{entry.queue_id}{mark}  ({entry.state}: {entry.error})")
            lines.append("")
            continue
        total += envelope.size
        arrival = _local(envelope.arrival, _ARRIVAL)
        sender = envelope.sender or "<>"
        head = f"{entry.queue_id}{mark}"
        lines.append(f"{head:<{_ID_WIDTH}} {envelope.size:>8} {arrival:<19} {sender}")
        # showq_compat.c: a "(reason)" line when the reason changes from one recipient to the
        # next, "(reason unavailable)" when a recipient has none after one that had one.
        shown = ""
        for r in envelope.pending_recipients():  # postqueue lists what is still to do
            reason = _reason(r)
            if reason != shown:
                text = reason or "reason unavailable"
                lines.append(f"{' ' * max(0, _REASON_END - len(text))}({text})")
                shown = reason
            status = _status(r)
            lines.append(f"{_RECIPIENT_INDENT}{r.address}" + (f"  [{status}]" if status else ""))
        lines.append("")
    requests = len(entries)
    lines.append(
        f"-- {(total + 1023) // 1024} Kbytes in {requests} Request{'s' if requests != 1 else ''}."
    )
    return "\n".join(lines) + "\n"


def _until(timestamp: float, now: float) -> str:
    seconds = int(timestamp - now)
    if seconds <= 0:
        return "due now"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"in {hours}h {minutes:02d}m"
    return f"in {minutes}m {secs:02d}s" if minutes else f"in {secs}s"


def _render_recipients(envelope: Envelope, now: float) -> list[str]:
    """Each recipient with what the queue knows of it, for ``show``."""
    when = _WHEN + " %z"
    lines = ["recipients:"]
    for r in envelope.recipients:
        lines.append(f"  {r.address}")
        if r.original and r.original != r.address:
            lines.append(f"    original: {r.original}")
        status = _status(r, when, now) or "pending, not tried yet"
        lines.append(f"    status: {status}")
        if r.reply:
            lines.append(f"    last reply: {r.reply}")
        if r.remote_mta:
            lines.append(f"    remote MTA: {r.remote_mta}")
        if r.destination:
            lines.append(f"    route: {r.destination}")
    return lines


def header_section(content: bytes) -> bytes:
    """The header fields of ``content`` as they came (folding and line ends kept), without
    the empty line and the body: where the block ends is mime.headers' rule (RFC 5322 §2.2)."""
    return b"".join(field.raw for field in split_message(content).headers)


def _render_verdict(verdict: Verdict) -> list[str]:
    """What cleanup's filters found (cleanup/verdict.py), for ``show``."""
    lines = [f"verdict: {verdict.action}, score {verdict.score:g}"]
    if verdict.reason:
        lines.append(f"  reason: {verdict.reason}")
    if verdict.folder:
        lines.append(f"  folder: {verdict.folder}")
    for found in verdict.auth:  # RFC 8601 §2.2 resinfo, as in Authentication-Results
        lines.append(f"  auth: {found.render()}")
    for symbol in verdict.symbols:
        text = f"  symbol: {symbol.name} ({symbol.score:g})"
        if symbol.description:
            text += f" {symbol.description}"
        if symbol.options:
            text += f" [{', '.join(symbol.options)}]"
        lines.append(text)
    return lines


@queue.command()
@click.argument("queue_id")
@click.option("--content", is_flag=True, help="Print the whole message, not only its headers.")
@click.pass_context
def show(ctx: click.Context, queue_id: str, content: bool) -> None:
    """Show one message: each recipient's status, attempts, next try, last reply and the
    server that gave it; then the envelope and the headers of its content (like postcat -q)."""
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
    click.echo(f"sender: {envelope.sender or '<>'}")
    click.echo(f"size: {envelope.size} bytes")
    click.echo("\n".join(_render_recipients(envelope, time.time())))
    click.echo("\n".join(_render_verdict(envelope.verdict)))
    click.echo("envelope:")
    click.echo(msgspec.json.format(msgspec.json.encode(envelope), indent=2).decode())
    click.echo("")
    if not content:
        data = header_section(data)
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
    action: Callable[[MessageQueue, str], Awaitable[None]],
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


# The actions of one id. Not ``MessageQueue.hold`` and the like: those are the Protocol's
# empty declarations, which do nothing on a Spool.
async def _hold(queue: MessageQueue, queue_id: str) -> None:
    await queue.hold(queue_id)


async def _release(queue: MessageQueue, queue_id: str) -> None:
    await queue.release(queue_id)


Expand = Callable[[list[Recipient]], tuple[list[Recipient], list[tuple[str, str]]]]


def reroute(envelope: Envelope, canonical: Callable[[str], str], expand: Expand) -> None:
    """Route the recipients still to deliver afresh, as postsuper(1) -r does (the message
    goes through cleanup(8) again: canonical and virtual mapping, then the address class).

    Each address as it was before alias expansion (``Recipient.original``; every branch of
    an alias names it) is rewritten by the recipient canonical maps and expanded again by
    the door's ``expand``, over the tables and directory as they are now. The new branches
    replace the old pending ones and keep their ``orcpt`` and ``notify`` (RFC 3461 §4.1,
    §4.2: the DSN still names the original recipient); a branch already delivered is not
    delivered again; a branch that is now refused is bounced (status ``bounced`` with the
    refusal, so the queue manager sends the DSN naming it). Recipients already final stay
    as they are."""
    pending = envelope.pending_recipients()
    if not pending:
        return
    final = [r for r in envelope.recipients if r.is_final]
    delivered = {(r.address.casefold(), r.destination) for r in final if r.status == "delivered"}
    sources: dict[str, Recipient] = {}
    for rcpt in pending:
        sources.setdefault(rcpt.original or rcpt.address, rcpt)
    fresh: list[Recipient] = []
    seen: set[tuple[str, str]] = set(delivered)
    for source, first in sources.items():
        probe = Recipient(address=canonical(source), orcpt=first.orcpt, notify=first.notify)
        expanded, failed = expand([probe])
        for rcpt in expanded:
            key = (rcpt.address.casefold(), rcpt.destination)
            if key not in seen:
                seen.add(key)
                fresh.append(rcpt)
        for address, reply in failed:
            fresh.append(
                Recipient(
                    address=address,
                    original=probe.address,
                    orcpt=first.orcpt,
                    notify=first.notify,
                    status="bounced",
                    reply=reply,
                )
            )
    envelope.recipients = [*final, *fresh]


class Rerouter:
    """What ``requeue`` routes with: the settings' tables and directory opened now, the
    door's canonical mapping and alias expansion over them (cleanup/door.py), the same
    functions the server queues with."""

    def __init__(self, settings: Settings) -> None:
        from pochta.cleanup.door import Door
        from pochta.cleanup.pipeline import Cleanup
        from pochta.cli.common import open_directory
        from pochta.resolve.resolver import Resolver
        from pochta.server.mail import srs_codec
        from pochta.tables import TableError
        from pochta.tables.configured import ConfiguredTables

        try:
            tables = ConfiguredTables.open(settings.tables)
        except TableError as exc:
            fail(f"cannot route afresh: {exc}; fix the table, then requeue again")
        self.directory = open_directory(settings)
        resolver = Resolver(self.directory, tables, settings, srs=srs_codec(settings))
        cleanup = Cleanup(settings, tables)
        self.door = Door(Spool(settings.spool_dir, create=False), lambda: cleanup, lambda: resolver)

    def __call__(self, envelope: Envelope) -> None:
        reroute(envelope, self.door.canonical_recipient, self.door.expand)

    def close(self) -> None:
        self.directory.close()
        self.door.spool.close()


async def _requeue(queue: MessageQueue, queue_id: str, route: Callable[[Envelope], None]) -> None:
    """postsuper -r: into hold/ first (under the message's lock; no scheduler takes a held
    message), route the envelope afresh there, then into incoming/, where a running server
    finds it within a second. A file whose envelope does not parse (from corrupt/) goes to
    incoming/ as it is: the queue manager checks it again."""
    previous = await queue.move(
        queue_id,
        "hold",
        allowed_from=("incoming", "deferred", "hold", "corrupt"),
        action="requeue",
    )
    try:
        envelope = await queue.load(queue_id)
    except EnvelopeError as exc:
        log.warning("requeued_unrouted", queue_id=queue_id, reason=str(exc))
    else:
        try:
            route(envelope)
            await queue.update_envelope(queue_id, envelope)
        except BaseException:
            await queue.move(queue_id, previous, allowed_from=("hold",), action="requeue")
            raise
    await queue.move(queue_id, "incoming", allowed_from=("hold",), action="requeue")
    log.info("requeued", queue_id=queue_id, previous=previous, rerouted=True)


IDS = click.argument("queue_ids", nargs=-1, metavar="ID...|ALL")


@queue.command()
@IDS
@click.pass_context
def hold(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Keep messages from delivery until released (postsuper -h)."""
    _each(ctx, queue_ids, _hold, ("incoming", "deferred"), "Placed on hold")


@queue.command()
@IDS
@click.pass_context
def release(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Release held messages; they are tried at once (postsuper -H)."""
    _each(ctx, queue_ids, _release, ("hold",), "Released from hold")


@queue.command()
@IDS
@click.pass_context
def requeue(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Try messages again now, routed afresh; also from hold and corrupt (postsuper -r).

    The recipients still to deliver are resolved again from the address they were sent
    to, with the canonical maps, aliases, tables and accounts as they are now; one that no
    longer exists is bounced (a DSN goes to the sender).
    """
    if not queue_ids:
        fail("name at least one queue id, or ALL")
    route = Rerouter(load_cli_settings(ctx, check_files=False))

    async def action(spool: MessageQueue, queue_id: str) -> None:
        await _requeue(spool, queue_id, route)

    try:
        _each(ctx, queue_ids, action, ("deferred", "hold"), "Requeued")
    finally:
        route.close()


@queue.command()
@IDS
@click.pass_context
def delete(ctx: click.Context, queue_ids: tuple[str, ...]) -> None:
    """Remove messages from the queue, in any state (postsuper -d). No bounce is sent."""

    async def remove(spool: MessageQueue, queue_id: str) -> None:
        await spool.delete(queue_id, reason="deleted by admin")

    _each(ctx, queue_ids, remove, STATES, "Deleted")
