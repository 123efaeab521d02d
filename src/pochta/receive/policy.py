"""The recipient policy hook: checks that may refuse a sender at MAIL FROM or a recipient at
RCPT TO (Postfix's smtpd_sender_restrictions / smtpd_recipient_restrictions with
check_policy_service, in-process).

A policy is an async callable taking a :class:`PolicyRequest` and returning None (no
objection) or a 4xx/5xx :class:`Reply`: a 4xx defers (greylisting, rate limits: the client
tries again later, RFC 5321 §4.2.5), a 5xx rejects (SPF fail at MAIL FROM). The SMTP,
submission and submissions listeners ask every policy of ``MailSystem.policies`` in order
(server/mail.py builds the list); the first refusal is the answer. The built-in checks come
first: at RCPT TO a policy sees only recipients the server would accept, so greylisting never
runs for unknown users. LMTP does not ask: its client is a trusted MTA that has already
decided.

A policy may leave what it found for cleanup in the request's :class:`Findings`: the session
makes one per transaction (at MAIL FROM), hands the same object to every request of that
transaction, and gives it to cleanup with the message (the SPF result of
``receive/spf_policy.py`` reaches ``CleanupInput.spf`` this way, computed once).

A policy that raises, or answers a positive reply, is a bug in it: the client gets
451 4.3.5 (Postfix's answer when a policy service fails) and the mail is tried again later,
never lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pochta.logs import get_logger
from pochta.mailauth.spf import SpfResult
from pochta.protocols.smtp.replies import Reply

__all__ = ["POLICY_FAILED", "Findings", "Policy", "PolicyRequest", "check_policies"]

log = get_logger("smtpd.policy")

# RFC 3463 §3.4 X.3.5: system incorrectly configured (Postfix: "Server configuration problem").
POLICY_FAILED = Reply(451, "4.3.5", "Server configuration problem; try again later")


@dataclass(slots=True)
class Findings:
    """What the policies found during one SMTP transaction, kept by the session until the
    message goes to cleanup (a new one at each MAIL FROM)."""

    spf: SpfResult | None = None  # SPF of MAIL FROM (HELO for the null sender), once


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest:
    """What the session knows when it asks (Postfix policy delegation attributes)."""

    stage: Literal["mail", "rcpt"]  # protocol_state: MAIL or RCPT
    listener: str  # "smtp", "submission", "submissions"
    client_ip: str  # client_address
    client_hostname: str  # forward-confirmed reverse name (client_name), "" when unknown
    helo: str  # helo_name, "" before HELO/EHLO
    auth_user: str  # sasl_username, "" when not authenticated
    sender: str  # MAIL FROM address, "" for the null sender
    recipient: str = ""  # RCPT TO address (stage "rcpt"); "" at MAIL FROM
    findings: Findings = field(default_factory=Findings)  # this transaction's, shared


Policy = Callable[[PolicyRequest], Awaitable[Reply | None]]
"""One check: None to let the command pass, or a 4xx/5xx Reply to refuse it."""


async def check_policies(policies: Sequence[Policy], request: PolicyRequest) -> Reply | None:
    """Ask each policy in order; the first refusal is returned (None: all agreed)."""
    for policy in policies:
        try:
            reply = await policy(request)
        except Exception:
            log.exception("policy_failed", policy=_name(policy), stage=request.stage)
            return POLICY_FAILED
        if reply is None:
            continue
        if reply.code < 400:
            log.error("policy_failed", policy=_name(policy), reply=str(reply), reason="positive")
            return POLICY_FAILED
        return reply
    return None


def _name(policy: Policy) -> str:
    return getattr(policy, "__qualname__", None) or type(policy).__qualname__
