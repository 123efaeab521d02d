"""Small builders for the Sieve unit tests."""

from __future__ import annotations

from pochta.sieve.actions import SieveResult
from pochta.sieve.context import Envelope, MessageContext
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import DEFAULT_LIMITS, compile_script, run_script

DEFAULT_MESSAGE = (
    b"From: sender@example.com\r\nTo: recipient@example.org\r\nSubject: Frop!\r\n\r\nFriep!\r\n"
)


def context(
    message: bytes = DEFAULT_MESSAGE,
    *,
    sender: str = "sender@example.com",
    recipient: str = "recipient@example.org",
    **kwargs: object,
) -> MessageContext:
    return MessageContext(
        message=message,
        envelope=Envelope(sender=sender, recipient=recipient),
        **kwargs,  # type: ignore[arg-type]
    )


def run(
    text: str,
    message: bytes = DEFAULT_MESSAGE,
    *,
    limits: SieveLimits = DEFAULT_LIMITS,
    **kwargs: object,
) -> SieveResult:
    return run_script(
        compile_script(text, limits=limits), context(message, **kwargs), limits=limits
    )
