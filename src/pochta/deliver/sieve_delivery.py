"""Sieve at local delivery (Dovecot Pigeonhole's role in its LDA/LMTP): run the scripts, then
carry out what they decided.

Per recipient :meth:`SieveDelivery.plan` takes the account's scripts from the
``ScriptSource`` in order before / personal / after (Dovecot's sieve_before, the active
script, sieve_after), compiles each once per version (a cache keyed by account, scope, name
and ``version``, whose entry also notes the scripts it included and is compiled again when
one of them changed), and runs them on a thread with a ``MessageContext`` of the message, its
envelope and the environment (RFC 5183: domain, host, remote-ip, remote-host, location
"MDA", phase "during"), the spam filter's verdict for spamtest (RFC 5235) and
``directory.recipient_delimiter`` for subaddress (RFC 5233). virustest always finds "not
tested" (RFC 5235 §3.3, status 0): pochta has no virus scanner, and virustest is left
untested here. Multi-script rules as Dovecot's (Pigeonhole tests/multiscript): the actions of
all the scripts run accumulate, the next script runs only while the keep is still in force
(the implicit keep, or an explicit keep), and it sees the message as the scripts before
edited it (RFC 5293) and starts with the flags they left (RFC 5232 §3). The outcome is a
:class:`Plan`:

- copies: keep and fileinto, one per folder (the same folder twice is one copy, RFC 5228
  §2.10.3), with their flags (RFC 5232) and content (RFC 5293 editheader);
- redirects (RFC 5228 §4.2), at most ``[sieve] max_redirects`` for the message and never
  to the recipient itself;
- vacation replies (RFC 5230), each once per period per (account, handle, sender);
- a reject (RFC 5429), which replaces delivery; a discard (RFC 5228 §4.4).

Nothing is lost: a script that does not compile, fails while running or runs out of time
(``max_run_seconds``) is logged with the account and the script's name, no further script
runs, and the message is kept in the default folder (RFC 5228 §2.10.6), as are the actions
the earlier scripts decided.

The mailbox agent (deliver/mailbox.py) stores the copies; :meth:`SieveDelivery.side_effects`
sends redirects and vacation replies through the door (cleanup/door.py): redirects with the
original envelope sender and verdict, so the door seals forwarded MX mail with ARC and the
remote agent rewrites the sender with SRS; replies from the null sender (RFC 3834 §3.3).
Each is queued exactly once per delivery, whenever the process dies (``_submit_once``): its
queue id is derived from the delivery's queue id, the recipient and the action
(``Door.derived_queue_id``), it is queued into hold/, remembered in ``sieve.db``
(sieve/state.py), and only then released; a retry finds it held, remembered, or not queued
at all, and never queues a second one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pochta.cleanup.verdict import Verdict
from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply
from pochta.queue.envelope import Envelope as QueueEnvelope
from pochta.queue.envelope import Recipient
from pochta.sieve import script as interpreter
from pochta.sieve.actions import (
    Action,
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from pochta.sieve.context import Envelope, MessageContext, ScriptLoader, SpamInfo
from pochta.sieve.errors import SieveError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.repository import ScriptSource, StoredScript
from pochta.sieve.state import SieveState
from pochta.sieve.vacation import build_reply, may_answer

__all__ = [
    "Copy",
    "DeliveryInfo",
    "Plan",
    "SieveDelivery",
    "plan_results",
]

log = get_logger("deliver.sieve")

CompileFn = Callable[..., Any]  # compile_script(text, *, name, limits, loader) -> Script
RunFn = Callable[..., SieveResult]  # run_script(script, context, *, limits) -> SieveResult

# How many compiled scripts the cache holds (a few per active account).
COMPILE_CACHE_SIZE = 2048
# The outer limit on one delivery's scripts when the interpreter's own clock did not stop
# them: max_run_seconds per script plus this.
RUN_GRACE_SECONDS = 1.0
# The longest reject reason put into an SMTP/LMTP reply line (RFC 5321 §4.5.3.1.5: 512
# octets a reply line, code included).
MAX_REASON_CHARS = 400


class QueueDoor(Protocol):
    """What redirects and vacation replies need of ``cleanup.door.Door``."""

    def derived_queue_id(self, origin: str, salt: str) -> str: ...

    async def locate(self, queue_id: str) -> str | None: ...

    async def release(self, queue_id: str) -> None: ...

    async def submit(
        self, envelope: QueueEnvelope, content: bytes, *, hold: bool = False
    ) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryInfo:
    """One recipient's delivery: the envelope and where it came from."""

    queue_id: str
    sender: str
    recipient: str  # the address delivered to (after alias expansion)
    account: str
    original_recipient: str = ""  # the RCPT TO address, when an alias changed it
    extension: str = ""
    verdict: Verdict = field(default_factory=Verdict)
    client_ip: str = ""
    client_host: str = ""  # the client's verified host name (RFC 5183 remote-host), or ""
    auth_user: str = ""
    lmtp: bool = False


@dataclass(frozen=True, slots=True)
class Copy:
    """One message to store: ``folder``, its flags and the content (None: as received)."""

    folder: str
    flags: frozenset[str] = frozenset()
    content: bytes | None = None
    create: bool = True  # keep's default folder is made as the plain delivery makes it
    explicit: bool = False  # a fileinto (a missing folder without :create falls back)


@dataclass(slots=True)
class Plan:
    """What delivery carries out for one recipient (see the module docstring)."""

    copies: list[Copy] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    vacations: list[Vacation] = field(default_factory=list)
    reject: Reject | None = None
    discarded: bool = False
    duplicate_ids: list[tuple[str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)  # the names of the scripts run

    def add_copy(self, copy: Copy) -> None:
        """One copy per folder (RFC 5228 §2.10.3: the same folder twice is filed once);
        the flags of both are kept."""
        for i, have in enumerate(self.copies):
            if _same_folder(have.folder, copy.folder):
                self.copies[i] = Copy(
                    have.folder,
                    have.flags | copy.flags,
                    have.content,
                    have.create or copy.create,
                    have.explicit and copy.explicit,
                )
                return
        self.copies.append(copy)


def _same_folder(a: str, b: str) -> bool:
    # RFC 3501 §5.1: INBOX is case-insensitive, every other name is as written.
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def plan_results(
    results: Sequence[SieveResult],
    default_mailbox: str,
    *,
    failed: bool = False,
) -> Plan:
    """The plan of the results of the scripts that ran, in order (pure: the unit tests feed it
    hand-made results; the caller runs a script only while the keep of the one before is in
    force). ``failed``: the script after ``results`` could not be compiled or run; its
    decisions are dropped and the message is kept."""
    plan = Plan()
    for result in results:
        for action in result.actions:
            _plan_action(plan, action, default_mailbox)
        plan.duplicate_ids.extend(result.duplicate_ids)
    if failed or not results:
        # RFC 5228 §2.10.6: a script that fails is as if it had kept the message (the
        # implicit keep), and what it had decided is cancelled.
        plan.add_copy(Copy(default_mailbox))
    elif results[-1].implicit_keep:
        last = results[-1]
        # RFC 5232 §3 / RFC 5293 §5: the implicit keep with the flags and content at the end.
        plan.add_copy(Copy(default_mailbox, last.keep_flags, last.final_content))
    if plan.copies and plan.reject is not None:
        # Dovecot: a reject after a script filed the message is dropped ("already
        # delivered"); the message is stored, not refused.
        plan.errors.append(f"reject dropped: the message is already filed ({plan.reject.reason!r})")
        plan.reject = None
    return plan


def _received_as(result: SieveResult, message: bytes) -> SieveResult:
    """``result`` of a script that was given ``message`` (an earlier script's edit): its
    actions' and keep's "as received" (content None) made that message."""
    actions = tuple(
        dataclasses.replace(a, content=message)
        if not isinstance(a, (Reject, Discard)) and a.content is None
        else a
        for a in result.actions
    )
    return dataclasses.replace(
        result, actions=actions, final_content=result.final_content or message
    )


def _plan_action(plan: Plan, action: Action, default_mailbox: str) -> None:
    if isinstance(action, Keep):
        plan.add_copy(Copy(default_mailbox, action.flags, action.content))
    elif isinstance(action, FileInto):
        plan.add_copy(
            Copy(action.mailbox, action.flags, action.content, action.create, explicit=True)
        )
    elif isinstance(action, Redirect):
        if not any(r.address.lower() == action.address.lower() for r in plan.redirects):
            plan.redirects.append(action)
    elif isinstance(action, Vacation):
        if not plan.vacations:  # RFC 5230 §4: one vacation action per run
            plan.vacations.append(action)
    elif isinstance(action, Reject):
        if plan.reject is None:  # Pigeonhole multiscript "Graceful Conflicts": the first
            plan.reject = action
    elif isinstance(action, Discard):
        plan.discarded = True


_Location = Literal["personal", "global"]


class _RecordingLoader:
    """The account's include loader, noting each script a compile read and a digest of its
    text (None: there was no such script), so the cache can tell when one changed."""

    def __init__(self, inner: ScriptLoader) -> None:
        self.inner = inner
        self.seen: dict[tuple[str, _Location], str | None] = {}

    def load(self, name: str, location: _Location) -> str | None:
        text = self.inner.load(name, location)
        self.seen[(name, location)] = _digest(text)
        return text


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Cached:
    compiled: object  # a Script, or the SieveError its compile raised
    includes: tuple[tuple[tuple[str, _Location], str | None], ...]  # (name, location), digest


class _CompileCache:
    """Compiled scripts (or their compile errors) by (account, scope, name, version).

    A compiled script holds the scripts it includes (RFC 6609; read by the loader when it
    is compiled), so an entry also notes each included script's digest, and is compiled
    again when one of them changed, appeared or went away since (checked at each use: the
    includes are read, not compiled)."""

    def __init__(self, size: int = COMPILE_CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, str, str], _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self.compiles = 0  # how many times a script was compiled (tests count them)

    def get(
        self,
        account: str,
        stored: StoredScript,
        loader: ScriptLoader,
        compile_one: Callable[[ScriptLoader], object],
    ) -> object:
        version = stored.version or hashlib.sha256(stored.text.encode()).hexdigest()
        key = (account.lower(), stored.scope, stored.name, version)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
        if cached is not None and all(
            _digest(loader.load(name, location)) == digest
            for (name, location), digest in cached.includes
        ):
            return cached.compiled
        recording = _RecordingLoader(loader)
        try:
            compiled: object = compile_one(recording)
        except SieveError as exc:
            compiled = exc
        with self._lock:
            self.compiles += 1
            self._items[key] = _Cached(compiled, tuple(recording.seen.items()))
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return compiled


class SieveDelivery:
    """Sieve for local delivery; see the module docstring."""

    def __init__(
        self,
        source: ScriptSource,
        state: SieveState,
        door: Callable[[], QueueDoor],
        *,
        hostname: str,
        limits: SieveLimits | None = None,
        spam_junk_score: float = 6.0,
        spam_max_score: float = 15.0,  # 0 (the setting's "never"): 15, Rspamd's reject
        recipient_delimiter: str = "+",  # directory.recipient_delimiter (RFC 5233 subaddress)
        mailbox_exists: Callable[[str, str], bool] | None = None,
        compile_script: CompileFn = interpreter.compile_script,
        run_script: RunFn = interpreter.run_script,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.state = state
        self._door = door
        self.hostname = hostname.rstrip(".")
        self.limits = limits if limits is not None else SieveLimits()
        self.spam_junk_score = spam_junk_score
        self.spam_max_score = spam_max_score if spam_max_score > 0 else 15.0
        self.recipient_delimiter = recipient_delimiter
        self._mailbox_exists = mailbox_exists
        self._compile = compile_script
        self._run = run_script
        self._clock = clock
        self.cache = _CompileCache()

    # -- deciding --

    async def plan(
        self,
        info: DeliveryInfo,
        content: bytes,
        default_mailbox: str,
        *,
        scripts: list[StoredScript] | Exception | None = None,
    ) -> Plan | None:
        """Run the account's scripts (on a thread); None when it has none (deliver as
        without Sieve). ``scripts``: what ``delivery_scripts`` gave or raised, when the
        caller asked already (deliver/mailbox.py asks on its own trip to a thread). Never
        raises for a script's fault: see the module docstring."""
        try:
            if scripts is None:
                scripts = await asyncio.to_thread(self.source.delivery_scripts, info.account)
            if isinstance(scripts, Exception):
                raise scripts
        except Exception as exc:  # the scripts' disk: the message is kept, not lost
            log.error(
                "sieve_failed",
                queue_id=info.queue_id,
                account=info.account,
                script="",
                error=f"cannot read the scripts: {exc}; kept in {default_mailbox}",
            )
            return Plan(copies=[Copy(default_mailbox)], errors=["scripts unreadable"])
        if not scripts:
            return None
        budget = self.limits.max_run_seconds * len(scripts) + RUN_GRACE_SECONDS
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._plan_sync, info, content, default_mailbox, scripts),
                timeout=budget,
            )
        except TimeoutError:
            # The interpreter's own clock should have stopped it; the thread is left to end.
            log.error(
                "sieve_failed",
                queue_id=info.queue_id,
                account=info.account,
                script=",".join(s.name for s in scripts),
                error=f"the scripts ran longer than {budget:g} s; kept in {default_mailbox}",
            )
            plan = Plan(copies=[Copy(default_mailbox)])
            plan.errors.append("out of time")
            return plan

    def _plan_sync(
        self,
        info: DeliveryInfo,
        content: bytes,
        default_mailbox: str,
        scripts: list[StoredScript],
    ) -> Plan:
        first = self._context(info, content, default_mailbox)
        context = first
        loader = self.source.loader(info.account)
        results: list[SieveResult] = []
        failed = False
        names: list[str] = []
        carried: bytes | None = None  # the message as the scripts before edited it
        for stored in scripts:
            names.append(stored.name)

            def compile_one(loader: ScriptLoader, stored: StoredScript = stored) -> object:
                return self._compile(
                    stored.text, name=stored.name, limits=self.limits, loader=loader
                )

            try:
                compiled = self.cache.get(info.account, stored, loader, compile_one)
                if isinstance(compiled, SieveError):
                    raise compiled
                result = self._run(compiled, context, limits=self.limits)
            except SieveError as exc:  # SieveRuntimeError too: a limit, an include, time
                log.error(
                    "sieve_failed",
                    queue_id=info.queue_id,
                    account=info.account,
                    script=stored.name,
                    scope=stored.scope,
                    error=str(exc),
                    hint="fix the script; the message was kept in " + default_mailbox,
                )
                failed = True
                break
            except Exception as exc:  # a defect of the interpreter must not lose mail
                log.exception(
                    "sieve_failed",
                    queue_id=info.queue_id,
                    account=info.account,
                    script=stored.name,
                    scope=stored.scope,
                    error=repr(exc),
                )
                failed = True
                break
            for warning in result.warnings:
                log.warning(
                    "sieve_warning",
                    queue_id=info.queue_id,
                    account=info.account,
                    script=stored.name,
                    warning=warning,
                )
            if carried is not None:
                result = _received_as(result, carried)
            results.append(result)
            # Dovecot's multi-script rule: the next script sees the message as edited so far
            # (RFC 5293) and starts with the flags this one left (RFC 5232 §3).
            carried = result.final_content or carried
            context = dataclasses.replace(
                first, message=carried or first.message, flags=result.keep_flags
            )
            keep = result.implicit_keep or any(isinstance(a, Keep) for a in result.actions)
            if not keep:
                break  # Dovecot: the next script runs only while the keep is in force
        plan = plan_results(results, default_mailbox, failed=failed)
        plan.scripts = names
        return plan

    def _context(self, info: DeliveryInfo, content: bytes, default_mailbox: str) -> MessageContext:
        verdict = info.verdict
        tested = bool(verdict.symbols)
        domain = info.account.rpartition("@")[2]
        environment = {
            # RFC 5183 §4.
            "domain": domain,
            "host": self.hostname,
            "location": "MDA",
            "phase": "during",
            "remote-ip": info.client_ip,
            # The client's verified name (receive/client_name.py), "" when unknown; never
            # the HELO name, which the client chooses.
            "remote-host": info.client_host,
            "name": "pochta",
        }
        exists = self._mailbox_exists
        account = info.account

        def mailbox_exists(name: str) -> bool:
            if name.upper() == "INBOX":
                return True
            return exists(account, name) if exists is not None else False

        return MessageContext(
            message=content,
            envelope=Envelope(
                sender=info.sender,
                recipient=info.recipient,
                original_recipient=info.original_recipient,
                auth_user=info.auth_user,
            ),
            environment=environment,
            spam=SpamInfo(
                tested=tested,
                score=verdict.score,
                junk_score=self.spam_junk_score,
                max_score=self.spam_max_score,
            ),
            recipient_delimiter=self.recipient_delimiter,
            mailbox_exists=mailbox_exists,
            duplicates=self.state.duplicates_for(info.account),
            loader=self.source.loader(info.account),
            default_mailbox=default_mailbox,
            clock=self._clock,
        )

    def _vacation_period(self, seconds: int) -> int:
        """The script's period brought into [sieve] vacation_min/max_period_seconds (RFC
        6131 §2; a max of 0: none), the default when the script gave none."""
        limits = self.limits
        period = seconds if seconds > 0 else limits.vacation_default_period_seconds
        if limits.vacation_max_period_seconds > 0:
            period = min(period, limits.vacation_max_period_seconds)
        return max(period, limits.vacation_min_period_seconds)

    # -- after the copies are stored --

    async def record_duplicates(self, info: DeliveryInfo, plan: Plan) -> None:
        """RFC 7352 §3: the ids are recorded once the message is delivered."""
        for duplicate_id, seconds in plan.duplicate_ids:
            period = seconds or self.limits.duplicate_default_period_seconds
            await asyncio.to_thread(self.state.record_duplicate, info.account, duplicate_id, period)

    async def side_effects(self, info: DeliveryInfo, plan: Plan, content: bytes) -> Reply | None:
        """Submit the redirects and vacation replies; None when all went (or had gone
        before), else a 451 reply: the delivery is tried again, the copies already stored
        are found by their dedupe key and what was sent is not sent again."""
        try:
            await self._redirects(info, plan, content)
            await self._vacations(info, plan, content)
        except Exception as exc:  # the queue is full or unreadable: try again later
            log.error(
                "sieve_side_effect_failed",
                queue_id=info.queue_id,
                account=info.account,
                error=str(exc),
            )
            return Reply(451, "4.3.0", "could not queue the Sieve redirect or reply, try later")
        return None

    async def _redirects(self, info: DeliveryInfo, plan: Plan, content: bytes) -> None:
        own = {a.lower() for a in (info.account, info.recipient, info.original_recipient) if a}
        sent = 0
        for redirect in plan.redirects:
            address = redirect.address.strip().strip("<>")
            if address.lower() in own:
                log.info(
                    "sieve_redirect_skipped",
                    queue_id=info.queue_id,
                    account=info.account,
                    to=address,
                    reason="a redirect to the recipient itself",
                )
                continue
            if sent >= self.limits.max_redirects:
                # Dovecot's sieve_max_redirects: the rest are dropped, and logged.
                log.warning(
                    "sieve_redirect_skipped",
                    queue_id=info.queue_id,
                    account=info.account,
                    to=address,
                    reason=f"more than [sieve] max_redirects = {self.limits.max_redirects}",
                )
                continue
            sent += 1
            key = f"redirect:{address.lower()}"
            body = redirect.content if redirect.content is not None else content
            # The Delivered-To of this mailbox stays on the copy: a redirect that comes back
            # here is a loop (deliver/mailbox.py delivered_to_loop).
            message = f"Delivered-To: {info.account}\r\n".encode() + body
            envelope = QueueEnvelope(
                queue_id="",
                sender=info.sender,  # RFC 5228 §4.2: the envelope sender is kept
                recipients=[Recipient(address=address)],
                arrival=0.0,
                size=len(message),
                verdict=info.verdict,  # so the door seals checked MX mail with ARC
                protocol="ESMTP",
            )
            queued, now = await self._submit_once(info, key, envelope, message)
            if not now:
                log.info("sieve_redirect_done_before", queue_id=info.queue_id, to=address)
                continue
            log.info(
                "sieve_redirect",
                queue_id=info.queue_id,
                account=info.account,
                to=address,
                new_queue_id=queued,
            )

    async def _submit_once(
        self,
        info: DeliveryInfo,
        key: str,
        envelope: QueueEnvelope,
        content: bytes,
        *,
        before: Callable[[], Awaitable[bool]] | None = None,
        undo: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[str, bool]:
        """Queue one side effect exactly once per (queue id, recipient, ``key``), whenever
        the process dies: its queue id is derived from those (``Door.derived_queue_id``),
        it is queued into hold/, recorded in sieve.db, and only then released. So a retry
        finds it held (queued, not recorded: record and release it), recorded (release it
        if still held), or nowhere (never queued: a message cannot leave hold/ before it is
        recorded). Returns the id and whether it was queued by this call. ``before``: asked
        only when it must be queued now; False: it is not (the vacation period's claim);
        ``undo``: called when queueing it failed (the claim given back)."""
        door = self._door()
        queue_id = door.derived_queue_id(info.queue_id, f"{info.recipient}\0{key}")
        done = await asyncio.to_thread(
            self.state.side_effect_done, info.queue_id, info.recipient, key
        )
        where = await door.locate(queue_id)
        if done:
            if where == "hold":  # recorded, but the process died before the release
                await door.release(queue_id)
            return queue_id, False
        if where is None:
            if before is not None and not await before():
                return queue_id, False
            envelope.queue_id = queue_id
            try:
                await door.submit(envelope, content, hold=True)
            except BaseException:
                if undo is not None:
                    await undo()
                raise
        await asyncio.to_thread(self.state.record_side_effect, info.queue_id, info.recipient, key)
        if where in (None, "hold"):
            await door.release(queue_id)
        return queue_id, True

    async def _vacations(self, info: DeliveryInfo, plan: Plan, content: bytes) -> None:
        for vacation in plan.vacations:
            to = vacation.to.strip().strip("<>")
            # RFC 5230 §4.5/§4.6, RFC 3834 §2 (sieve/vacation.py); the interpreter asked
            # too, this is the last word before anything is sent.
            envelope_seen = Envelope(
                sender=info.sender,
                recipient=info.recipient,
                original_recipient=info.original_recipient,
            )
            why = may_answer(content, envelope_seen, (info.account,))
            if why is not None:
                log.info(
                    "sieve_vacation_skipped",
                    queue_id=info.queue_id,
                    account=info.account,
                    reason=why,
                )
                continue
            key = f"vacation:{vacation.handle}"
            period = self._vacation_period(vacation.period_seconds)
            if not vacation.from_address:  # RFC 5230 §4.8: else the recipient's address
                vacation = dataclasses.replace(vacation, from_address=info.account)
            reply = build_reply(
                vacation,
                content,
                date=datetime.now(UTC),
                message_id=f"<{uuid.uuid4().hex}@{self.hostname}>",
            )
            envelope = QueueEnvelope(
                queue_id="",
                sender="",  # RFC 3834 §3.3: the reply's return path is null
                recipients=[Recipient(address=to)],
                arrival=0.0,
                size=len(reply),
                protocol="ESMTP",
            )
            claimed: list[bool] = []

            async def claim(
                handle: str = vacation.handle,
                to: str = to,
                period: int = period,
                claimed: list[bool] = claimed,
            ) -> bool:
                ok = await asyncio.to_thread(
                    self.state.claim_vacation, info.account, handle, to, period
                )
                claimed.append(ok)
                return ok

            async def unclaim(handle: str = vacation.handle, to: str = to) -> None:
                await asyncio.to_thread(self.state.release_vacation, info.account, handle, to)

            queued, now = await self._submit_once(
                info, key, envelope, reply, before=claim, undo=unclaim
            )
            if claimed == [False]:
                log.info(
                    "sieve_vacation_skipped",
                    queue_id=info.queue_id,
                    account=info.account,
                    to=to,
                    reason="already answered within the period (RFC 5230 §4.2)",
                )
                continue
            if not now:
                continue
            log.info(
                "sieve_vacation",
                queue_id=info.queue_id,
                account=info.account,
                to=to,
                new_queue_id=queued,
                period=period,
            )


def reject_reply(reject: Reject) -> Reply:
    """The refusal a reject or ereject makes: 550 5.7.1 with the script's reason (RFC 5429
    §2.1: ereject refuses in the protocol where it can, LMTP; in the queue both become a
    bounce and the queue's DSN, RFC 3464, carries the reason: §2.1 allows a DSN for reject)."""
    text = " ".join(reject.reason.split()) or "rejected by the recipient's Sieve script"
    text = text.encode("ascii", "replace").decode("ascii")[:MAX_REASON_CHARS]
    return Reply(550, "5.7.1", text)
