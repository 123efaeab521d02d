"""RFC 5230 ``vacation`` and RFC 6131 ``vacation-seconds``: answer the sender, at most once
per period. The interpreter decides whether the message may be answered at all
(``sieve/vacation.py`` ``may_answer``: not ``<>``, lists, automatic mail, mail that does not
name the user) and builds the ``Vacation`` action; the delivery side keeps the
once-per-sender-per-period state and sends the reply made by ``vacation.build_reply``.

The period (``:days`` × 86400 or ``:seconds``) is kept within ``[sieve]``
vacation_min/max_period_seconds; without either, vacation_default_period_seconds. A
vacation does not cancel the implicit keep (RFC 5230 §4.7).
"""

from __future__ import annotations

from pochta.sieve import vacation
from pochta.sieve.actions import Vacation
from pochta.sieve.address import header_addresses
from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec

__all__: list[str] = []

_DAY_SECONDS = 86400


def _valid_from(text: str) -> bool:
    """RFC 5230 §4.3: :from must be a valid address (a mailbox, display name allowed)."""
    found = header_addresses(text)
    return len(found) == 1 and bool(found[0].local) and bool(found[0].domain)


def _asked_period(call: Call) -> int | None:
    days = call.tags.get("days")
    if isinstance(days, int):
        return days * _DAY_SECONDS  # RFC 5230 §4.1
    seconds = call.tags.get("seconds")
    if isinstance(seconds, int):
        return seconds  # RFC 6131 §2
    return None


def _vacation(run: Run, call: Call) -> None:
    envelope = run.context.envelope
    addresses = call.tags.get("addresses")
    ours = run.expand_all(addresses) if isinstance(addresses, tuple) else []
    why_not = vacation.may_answer(run.message, envelope, ours)
    if why_not is not None:
        run.warnings.append(f"vacation does not answer: {why_not}")
        return
    reason = run.expand(call.string(0))
    given_subject = call.tags.get("subject")
    subject_arg = run.expand(given_subject) if isinstance(given_subject, str) else ""
    subject = subject_arg or vacation.reply_subject(run.message)  # RFC 5230 §4.7
    given_from = call.tags.get("from")
    from_address = run.expand(given_from).strip() if isinstance(given_from, str) else ""
    if from_address and not _valid_from(from_address):
        run.warnings.append(f"vacation :from {from_address!r} is no address; the recipient's used")
        from_address = ""
    from_address = from_address or envelope.recipient  # RFC 5230 §4.8
    mime = "mime" in call.tags
    given_handle = call.tags.get("handle")
    handle = (
        run.expand(given_handle)
        if isinstance(given_handle, str)
        # RFC 5230 §4.2: the same reply is the same vacation
        else vacation.default_handle(reason, subject_arg, from_address, mime)
    )
    limits = run.limits
    period = vacation.period_seconds(
        _asked_period(call),
        default=limits.vacation_default_period_seconds,
        minimum=limits.vacation_min_period_seconds,
        maximum=limits.vacation_max_period_seconds,
    )
    in_reply_to, references = vacation.reply_references(run.message)
    run.add_action(
        Vacation(
            to=envelope.sender.strip().strip("<>"),  # RFC 5230 §4.5: the return path
            reason=reason,
            subject=subject,
            from_address=from_address,
            handle=handle,
            period_seconds=period,
            mime=mime,
            in_reply_to=in_reply_to,
            references=references,
            content=run.content(),
        ),
        cancels_keep=False,
    )


def _check(call: Call, state: CompileState) -> Call | None:
    given_from = call.tags.get("from")
    variables = "variables" in state.required
    if isinstance(given_from, str) and not (variables and "${" in given_from):
        if not _valid_from(given_from):
            # RFC 5230 §4.3: :from must be a valid RFC 5322 address
            raise call.error(f"':from' needs an address like \"me@example.com\", not '{given_from}'")
    for tag in ("days", "seconds"):
        value = call.tags.get(tag)
        if isinstance(value, int) and value < 0:
            raise call.error(f"':{tag}' cannot be negative")
    return None


REGISTRY.add_capability(Capability("vacation"))
REGISTRY.add_capability(Capability("vacation-seconds"))
REGISTRY.add_command(
    CommandSpec(
        name="vacation",
        capability="vacation",
        positional=("string",),
        tags=(
            TagSpec("days", arg="number", group="period"),
            TagSpec("seconds", arg="number", group="period", capability="vacation-seconds"),
            TagSpec("subject", arg="string"),
            TagSpec("from", arg="string"),
            TagSpec("addresses", arg="string-list"),
            TagSpec("mime"),
            TagSpec("handle", arg="string"),
        ),
        handler=_vacation,
        validate=_check,
    )
)
