"""``test_multiscript [paths]``: run scripts in sequence and carry out what they decided.

Pigeonhole does this with Dovecot's multi-script rules (src/testsuite/testsuite-script.c
``testsuite_script_multiscript``: compile each script, run it while the one before left the
keep in force, then execute the combined result; true when every script compiled and the
execution succeeded). Here the same sequence goes through pochta's own delivery code,
``SieveDelivery.plan`` (the per-script run, the "next script only while the keep is in
force" rule, a failed script keeps the message) and ``plan_results`` (how the results
combine), so the suite checks pochta's multi-script semantics against Dovecot's. The
``Plan`` is then carried out into the fake mail store and the captured SMTP messages the
way ``deliver/mailbox.py`` and ``SieveDelivery.side_effects`` carry it out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any, Literal, cast

from pochta.deliver.sieve_delivery import Copy, DeliveryInfo, Plan, SieveDelivery, plan_results
from pochta.sieve import script as interpreter
from pochta.sieve.actions import SieveResult
from pochta.sieve.errors import SieveError
from pochta.sieve.repository import StoredScript
from pochta.sieve.vacation import build_reply
from tests.sieve.pigeonhole.execute import reject_notice
from tests.sieve.pigeonhole.world import TESTSUITE_USER, CapturedMessage

if TYPE_CHECKING:
    from pochta.sieve.context import ScriptLoader
    from pochta.sieve.state import SieveState
    from tests.sieve.pigeonhole.testsuite import Suite

__all__ = ["plan_action_names", "run_multiscript"]

_INBOX = "INBOX"


@dataclass(slots=True)
class _Source:
    """The ScriptSource delivery reads: the listed scripts, in order."""

    scripts: list[StoredScript]
    include_loader: ScriptLoader

    def delivery_scripts(self, account: str) -> list[StoredScript]:
        return list(self.scripts)

    def loader(self, account: str) -> ScriptLoader:
        return self.include_loader


class _NoState:
    """No duplicate memory in the testsuite (Pigeonhole sets duplicate_check to NULL)."""

    def duplicates_for(self, account: str) -> None:
        return None


def _scopes(n: int) -> list[Literal["before", "personal", "after"]]:
    if n == 1:
        return ["personal"]
    return ["before"] * (n - 2) + ["personal", "after"]


def run_multiscript(suite: Suite, paths: list[str]) -> bool:
    """Run ``paths`` (relative to the .svtest file) as delivery would; execute the plan."""
    from tests.sieve.pigeonhole.testsuite import compile_logged

    suite.errors = []
    ok = True
    stored: list[StoredScript] = []
    for rel, scope in zip(paths, _scopes(len(paths)), strict=True):
        try:
            text = (suite.directory / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            # As Pigeonhole: a script that cannot be opened ends the sequence; the scripts
            # before it still count.
            suite.errors.append(f"{rel}: script not found ({e})")
            ok = False
            break
        stored.append(StoredScript(name=rel, text=text, scope=scope))
    failures: list[str] = []
    limits = suite.config.limits

    def compile_script(text: str, *, name: str, **kwargs: Any) -> interpreter.Script:
        script, log = compile_logged(text, name, limits, suite.loader)
        if script is None:
            suite.errors.extend(log)
            failures.append(name)
            raise SieveError(log[0] if log else f"{name}: does not compile")
        return script

    def run_script(script: interpreter.Script, context: Any, **kwargs: Any) -> Any:
        try:
            return interpreter.run_script(script, context, **kwargs)
        except SieveError as e:
            suite.errors.append(f"{script.name}: {e}")
            failures.append(script.name)
            raise

    delivery = SieveDelivery(
        _Source(stored, suite.loader),
        cast("SieveState", _NoState()),
        lambda: cast("Any", None),  # the plan is carried out here, not through the door
        hostname="testsuite.example.org",
        limits=limits,
        mailbox_exists=lambda account, name: suite.store.exists(name),
        compile_script=compile_script,
        run_script=run_script,
    )
    envelope = suite.envelope
    info = DeliveryInfo(
        queue_id="testsuite",
        sender=envelope.sender,
        recipient=envelope.recipient,
        account=TESTSUITE_USER,
        original_recipient=envelope.original_recipient,
        auth_user=envelope.auth_user,
    )
    plan = asyncio.run(delivery.plan(info, suite.message, _INBOX)) if stored else None
    if plan is None:  # no script: delivered as without Sieve
        plan = Plan()
        plan.copies.append(Copy(_INBOX))
    _carry_out(suite, plan)
    return ok and not failures


def _carry_out(suite: Suite, plan: Plan) -> None:
    message = suite.message
    envelope = suite.envelope
    if plan.reject is not None:
        # deliver/mailbox.py: a reject replaces delivery (nothing is stored).
        if envelope.sender:
            notice = reject_notice(envelope, plan.reject.reason, message)
            suite.outbox.append(CapturedMessage("", envelope.sender, notice))
        return
    for copy in plan.copies:
        folder = copy.folder
        if not suite.store.exists(folder):
            if copy.explicit and not copy.create:
                folder = _INBOX  # deliver/mailbox.py: a missing folder without :create
            else:
                suite.store.create(folder)
        content = copy.content if copy.content is not None else message
        suite.store.append(folder, content, copy.flags)
    for redirect in plan.redirects:
        suite.outbox.append(CapturedMessage(envelope.sender, redirect.address, message))
    for vacation in plan.vacations:
        if not vacation.from_address:  # RFC 5230 §4.8, as SieveDelivery._vacations
            vacation = replace(vacation, from_address=TESTSUITE_USER)
        reply = build_reply(
            vacation,
            message,
            date=datetime.now(UTC),
            message_id=make_msgid(domain=TESTSUITE_USER.partition("@")[2]),
        )
        suite.outbox.append(CapturedMessage("", vacation.to.strip().strip("<>"), reply))


def plan_action_names(results: list[SieveResult]) -> list[str]:
    """The action names ``test_result_action`` sees for several scripts' results in one
    (``test_script_run :append_result``), combined as delivery combines them
    (``plan_results``): a copy filed by a fileinto is "store", one the keep (explicit or
    implicit) also asked for is "keep" (the same folder twice is one copy, RFC 5228
    §2.10.3); then redirects, vacations and the reject that the plan keeps."""
    plan = plan_results(results, _INBOX)
    names = ["store" if copy.explicit else "keep" for copy in plan.copies]
    names.extend("redirect" for _ in plan.redirects)
    names.extend("vacation" for _ in plan.vacations)
    if plan.reject is not None:
        names.append("reject")
    return names
