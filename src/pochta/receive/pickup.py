"""pickup: mail from ``pochta sendmail`` into the queue, through the door (Postfix pickup(8)).

``pochta sendmail`` writes each message into ``<spool_dir>/maildrop/`` (format and
permissions: ``receive/maildrop.py``) and returns, whether or not the server runs. This
stage runs in the master process only. It scans maildrop/ at start, then every
``interval`` seconds (a poll: no inotify, nothing to miss when the server was down), and for
each complete file (a name without a dot):

1. reads and checks it: the format, the message size (``smtp.max_message_bytes``), the
   recipient count (``smtp.max_recipients``), the address syntax, and that the uid it names
   is its owner's (root and the server's user may write for others). A file that fails goes
   to ``maildrop-corrupt/`` with a log line; pickup goes on with the next.
2. runs it through the door's cleanup as a local submission: ``Received: by HOST (pochta,
   from userid UID)``, ``Message-ID:`` and ``Date:`` when missing, canonical maps, and the
   filters (DKIM signing);
3. queues it through the door (alias expansion, then the durable write), and only then
   removes the maildrop file. A crash in between gives at worst a duplicate, never a loss.

A message cleanup refuses for good (5xx) is queued with every recipient already bounced, so
the queue manager returns it to the sender as any bounce (a message from ``<>`` is logged
and removed). A temporary refusal (4xx, e.g. a DKIM key that cannot be read) leaves the file
where it is; it is tried again after ``retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from pochta.cleanup.door import Door
from pochta.cleanup.pipeline import CleanupInput
from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.queue.envelope import Envelope, Recipient
from pochta.receive.maildrop import (
    CORRUPT_DIR,
    MAGIC,
    MAX_ENVELOPE_BYTES,
    Drop,
    MaildropError,
    address_problem,
    decode,
    ensure_maildrop,
)

__all__ = ["Pickup"]

log = get_logger("pickup")

SCAN_INTERVAL_SECONDS = 0.5
RETRY_SECONDS = 60.0
# A ``NAME.tmp`` is a file ``pochta sendmail`` is writing; the command reads the whole message
# before it writes, so one older than this was left by a sendmail that died mid-write.
STALE_TMP_SECONDS = 3600.0


class Pickup:
    """The pickup stage; ``start`` once (in the master), ``stop`` before the queue stops."""

    def __init__(
        self,
        settings: Settings,
        door: Callable[[], Door],
        *,
        interval: float = SCAN_INTERVAL_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._door = door
        self._interval = interval
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self.maildrop = settings.spool_dir / "maildrop"
        self.corrupt = settings.spool_dir / CORRUPT_DIR
        self._retry_at: dict[str, float] = {}  # name -> when to try a 4xx-refused file again
        self._task: asyncio.Task[None] | None = None
        self._server_uid = os.getuid()

    async def start(self) -> None:
        try:
            ensure_maildrop(self._settings.spool_dir)
        except OSError as exc:  # the server still runs; sendmail reports what is wrong
            log.error(
                "maildrop_unusable",
                path=str(self.maildrop),
                error=exc.strerror or str(exc),
                hint=f"run as root: chown {os.getuid()} {self.maildrop} && "
                f"chmod 1733 {self.maildrop}",
            )
        self._task = asyncio.create_task(self._run(), name="pickup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad turn stop pickup
                log.exception("pickup_scan_failed", maildrop=str(self.maildrop))
            await asyncio.sleep(self._interval)

    async def scan(self) -> int:
        """One pass over maildrop/, oldest first; returns how many files were queued."""
        try:
            listed = os.listdir(self.maildrop)
        except FileNotFoundError:
            return 0
        names = [n for n in listed if "." not in n]
        self._sweep([n for n in listed if n.endswith(".tmp")])
        dated = []
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                dated.append((os.stat(self.maildrop / name).st_mtime_ns, name))
        now = self._clock()
        queued = 0
        for _, name in sorted(dated):
            if self._retry_at.get(name, 0.0) > now:
                continue
            self._retry_at.pop(name, None)
            try:
                if await self._pick(name):
                    queued += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a full disk: this file waits, the others go on
                self._retry_at[name] = self._clock() + self._retry_seconds
                log.warning("pickup_failed", file=name, error=str(exc) or type(exc).__name__)
        return queued

    def _sweep(self, partial: list[str]) -> None:
        """Remove ``.tmp`` files older than STALE_TMP_SECONDS (a sendmail died writing)."""
        too_old = self._wall_clock() - STALE_TMP_SECONDS
        for name in partial:
            path = self.maildrop / name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < too_old:
                    path.unlink()
                    log.warning("maildrop_partial_removed", file=name)

    async def _pick(self, name: str) -> bool:
        path = self.maildrop / name
        limit = self._settings.smtp.max_message_bytes
        try:
            uid, data = await asyncio.to_thread(_read, path, limit)
        except FileNotFoundError:
            return False
        try:
            drop, content = decode(data, max_message_bytes=limit)
            _check(drop, uid, self._server_uid, self._settings.smtp.max_recipients)
        except MaildropError as exc:
            self._quarantine(path, str(exc))
            return False
        door = self._door()
        queue_id = door.new_queue_id()
        arrival = time.time()
        info = CleanupInput(
            sender=drop.sender,
            recipients=drop.recipients,
            protocol="local",
            queue_id=queue_id,
            submission=True,  # a local user's mail: Message-ID, Date, DKIM (RFC 6409 §8)
            arrival=arrival,
            local_uid=drop.uid,
        )
        result = await door.clean(content, info)
        notify = tuple(drop.notify)
        envelope = Envelope(
            queue_id=queue_id,
            sender=result.sender,
            recipients=[
                Recipient(address=a, original=o, notify=notify)
                for a, o in zip(result.recipients, drop.recipients, strict=True)
            ],
            arrival=arrival,
            size=len(result.content),
            ret=drop.ret,
            envid=drop.envid,
            # RFC 6531 §3.4: SMTPUTF8 when an envelope address is not ASCII.
            smtputf8=not all(a.isascii() for a in (drop.sender, *drop.recipients)),
            body=drop.body or ("7BIT" if content.isascii() else "8BITMIME"),
            protocol="sendmail",
            verdict=result.verdict,
        )
        reply = result.reply
        if reply is not None and not result.accepted:
            if reply.code < 500:
                self._retry_at[name] = self._clock() + self._retry_seconds
                log.warning("pickup_deferred", file=name, uid=drop.uid, reply=str(reply))
                return False
            if not drop.sender:  # RFC 5321 §4.5.5: nothing goes back to <>
                log.warning("pickup_refused", file=name, uid=drop.uid, reply=str(reply))
                await asyncio.to_thread(path.unlink, missing_ok=True)
                return False
            # Queued only to be bounced: the queue manager sends the notice to the sender.
            for rcpt in envelope.recipients:
                rcpt.status, rcpt.reply = "bounced", str(reply)
            envelope.size = len(content)
            queued = await door.submit(envelope, content)
            log.info("pickup_refused", file=name, uid=drop.uid, queue_id=queued, reply=str(reply))
        elif result.verdict.action == "discard":
            # header_checks DISCARD or a milter's: accepted and dropped, never queued.
            reason = result.verdict.reason
            log.info("discarded", file=name, uid=drop.uid, queue_id=queue_id, reason=reason)
        else:
            queued = await door.submit(envelope, result.content)
            log.info("pickup", file=name, uid=drop.uid, queue_id=queued)
        # The queue file is durable (the door returned): now the maildrop file may go.
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return True

    def _quarantine(self, path: Path, reason: str) -> None:
        """A bad file: into maildrop-corrupt/ (removed when that cannot be done)."""
        log.warning("pickup_corrupt", file=path.name, reason=reason)
        try:
            self.corrupt.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, self.corrupt / path.name)
        except OSError as exc:
            log.error("pickup_corrupt_removed", file=path.name, error=str(exc))
            with contextlib.suppress(OSError):
                path.unlink()


def _read(path: Path, max_message_bytes: int) -> tuple[int, bytes]:
    """(owner uid, content) of a maildrop file, read no further than the format allows."""
    limit = len(MAGIC) + MAX_ENVELOPE_BYTES + 1 + (max_message_bytes or 2**40) + 1
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        return st.st_uid, f.read(limit)


def _check(drop: Drop, owner: int, server_uid: int, max_recipients: int) -> None:
    """MaildropError unless the envelope is one pickup may queue."""
    if owner not in (0, server_uid) and owner != drop.uid:
        raise MaildropError(f"written by uid {owner} but claims uid {drop.uid}")
    if not drop.recipients:
        raise MaildropError("no recipients")
    if max_recipients and len(drop.recipients) > max_recipients:
        raise MaildropError(
            f"{len(drop.recipients)} recipients, more than smtp.max_recipients ({max_recipients})"
        )
    for address in (drop.sender, *drop.recipients) if drop.sender else drop.recipients:
        problem = address_problem(address)
        if problem:
            raise MaildropError(problem)
    notify = {n.upper() for n in drop.notify}
    # RFC 3461 §4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY.
    if not notify <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"} or (
        "NEVER" in notify and len(notify) > 1
    ):
        raise MaildropError(f"bad NOTIFY {','.join(drop.notify)!r}")
