"""SPF at MAIL FROM (RFC 7208), as a recipient policy (receive/policy.py).

For mail from the smtp (MX) listener only (submission clients are authenticated; LMTP and
pickup never ask policies). At MAIL FROM the policy checks the MAIL FROM identity, or the
HELO identity for the null reverse-path (RFC 7208 §2.4), once per transaction, and keeps
the :class:`~pochta.mailauth.spf.SpfResult` in the request's ``Findings``; the session hands
it to cleanup (``CleanupInput.spf``), where ``cleanup/auth_filter.py`` records it and gives
it to DMARC. It refuses only when ``mailauth.spf_reject`` is on and the result is ``fail``:
550 5.7.23 (RFC 7372 §3.2), with the domain's explanation (RFC 7208 §6.2). Every other result,
a temporary DNS error included, lets the command pass (RFC 7208 §8.6: temperror may defer,
we leave the choice to DMARC and the verdict).
"""

from __future__ import annotations

from pochta.logs import get_logger
from pochta.mailauth.spf import SpfDns, SpfResult, check_helo, check_spf
from pochta.protocols.smtp.replies import Reply
from pochta.receive.policy import PolicyRequest

__all__ = ["MX_LISTENER", "SpfPolicy"]

log = get_logger("smtpd.spf")

MX_LISTENER = "smtp"
"""The listener whose mail is checked (``listen.smtp``)."""


class SpfPolicy:
    """A recipient ``Policy``: SPF for MAIL FROM (see the module docstring)."""

    def __init__(self, *, dns: SpfDns, receiver: str, reject: bool, timeout_seconds: float) -> None:
        self._dns = dns
        self._receiver = receiver
        self._reject = reject
        self._timeout = timeout_seconds

    async def __call__(self, request: PolicyRequest) -> Reply | None:
        if request.listener != MX_LISTENER or request.auth_user or request.stage != "mail":
            return None
        found = request.findings.spf
        if found is None:
            found = await self._check(request)
            request.findings.spf = found
            log.info(
                "spf",
                client=request.client_ip,
                sender=request.sender or "<>",
                helo=request.helo,
                result=found.result,
                domain=found.domain,
            )
        if self._reject and found.result == "fail":
            # RFC 7372 §3.2: 550 5.7.23 "SPF validation failed"; RFC 7208 §8.4 the explanation.
            why = found.explanation or found.reason
            return Reply(550, "5.7.23", _one_line(f"SPF validation failed: {why}"))
        return None

    async def _check(self, request: PolicyRequest) -> SpfResult:
        if not request.sender:
            # RFC 7208 §2.4: the null reverse-path: the HELO identity is checked.
            return await check_helo(
                request.client_ip,
                request.helo,
                dns=self._dns,
                receiver=self._receiver,
                timeout_seconds=self._timeout,
            )
        return await check_spf(
            request.client_ip,
            request.sender,
            request.helo,
            dns=self._dns,
            receiver=self._receiver,
            timeout_seconds=self._timeout,
        )


def _one_line(text: str) -> str:
    """Printable ASCII only, at most 200 characters: safe as one reply line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200].strip()
