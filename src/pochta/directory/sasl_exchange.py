"""The SASL exchange loop, once for SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH (sans-IO).

RFC 4422 §3 describes one exchange for every protocol: an optional initial response,
challenges answered by the client, a "*" that cancels (§3.5), and the server's "additional
data with success" (§3.6), sent as one more challenge that the client answers with an empty
response. Only the framing differs: SMTP sends ``334 base64`` (RFC 4954 §4), IMAP and POP3
``+ base64`` (RFC 9051 §6.2.2, RFC 5034 §4), each with its own cancel, error and final replies.
That framing stays in each protocol; this module is the rest::

    exchange = SaslExchange(server_mechanism(name))
    action = exchange.start(initial_response)          # a Resolve
    while True:
        if isinstance(action, Resolve):
            step = await authenticator.resolve_step(ip, exchange.mechanism, action.step)
            action = exchange.resolved(step)
        elif isinstance(action, SendChallenge):
            send the protocol's continuation with base64(action.data); read a line
            action = exchange.answer_line(line)    # or answer(decoded) if the core decoded
        else:
            break    # Authenticated, Failed, Cancelled or BadBase64: the protocol's reply

No method raises and none awaits: the caller does the I/O and the authenticator's work
(``Authenticator.resolve_step``: password checks, SCRAM keys, counting and the tarpit).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pochta.directory.sasl import Challenge, Failure, Mechanism, Step, Success

__all__ = [
    "Authenticated",
    "BadBase64",
    "Cancelled",
    "Failed",
    "Resolve",
    "SaslExchange",
    "SendChallenge",
    "decode_response",
]

NOT_EMPTY_AFTER_SUCCESS = "response to the final challenge was not empty"


@dataclass(frozen=True, slots=True)
class Resolve:
    """Give ``step`` to ``Authenticator.resolve_step`` and its result to ``resolved``."""

    step: Step


@dataclass(frozen=True, slots=True)
class SendChallenge:
    """Send ``data`` base64-encoded in the protocol's continuation, then read the answer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The exchange succeeded: ``success.authcid`` is the (canonical) account."""

    success: Success


@dataclass(frozen=True, slots=True)
class Failed:
    """The credentials or the exchange were wrong; ``reason`` is for the log."""

    reason: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The client answered "*" (RFC 4422 §3.5)."""


@dataclass(frozen=True, slots=True)
class BadBase64:
    """The client's answer was not base64 (RFC 4954 §4, RFC 9051 §6.2.2, RFC 5034 §4)."""


Outcome = Authenticated | Failed
Answer = Resolve | Authenticated | Failed


def decode_response(line: bytes) -> bytes | Cancelled | BadBase64:
    """A client's answer line to a challenge, without its CRLF: "*" cancels (RFC 4422 §3.5),
    otherwise base64 (the empty line is the empty response)."""
    if line == b"*":
        return Cancelled()
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return BadBase64()


class SaslExchange:
    """One exchange with one mechanism; use once."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self._success: Success | None = None  # sent its final data; waits for the empty answer
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once the exchange has an outcome (success, failure, cancel or bad base64)."""
        return self._finished

    @property
    def final_data_pending(self) -> bool:
        """The last SendChallenge carried the additional data with success (RFC 4422 §3.6):
        a protocol that sends it with its success reply instead (ManageSieve's ``OK (SASL
        ...)``, RFC 5804 §2.1) calls ``answer(b"")`` for the outcome."""
        return self._success is not None

    def start(self, initial_response: bytes | None) -> Resolve:
        """Begin, with the decoded initial response (None: none sent; b"": the empty one)."""
        return Resolve(self.mechanism.start(initial_response))

    def resolved(self, step: Step) -> SendChallenge | Outcome:
        """What to do with a step that ``Authenticator.resolve_step`` returned."""
        if self._finished:
            return Failed("exchange already finished")
        if isinstance(step, Challenge):
            return SendChallenge(step.data)
        if isinstance(step, Success):
            if step.final_data:
                # RFC 4422 §3.6: additional data with success goes out as a challenge.
                self._success = step
                return SendChallenge(step.final_data)
            self._finished = True
            return Authenticated(step)
        self._finished = True
        return Failed(step.reason if isinstance(step, Failure) else "failed")

    def answer(self, data: bytes) -> Answer:
        """The client's decoded answer to the last SendChallenge."""
        if self._finished:
            return Failed("exchange already finished")
        if self._success is not None:
            success, self._success = self._success, None
            self._finished = True
            if data:
                # RFC 4422 §3.6: the client answers the additional data with an empty
                # response (RFC 4954 §4, RFC 9051 §6.2.2, RFC 5034 §4); anything else fails.
                return Failed(NOT_EMPTY_AFTER_SUCCESS)
            return Authenticated(success)
        return Resolve(self.mechanism.respond(data))

    def answer_line(self, line: bytes) -> Answer | Cancelled | BadBase64:
        """The client's raw answer line (no CRLF): "*", base64, or neither."""
        if self._finished:
            return Failed("exchange already finished")
        decoded = decode_response(line)
        if isinstance(decoded, Cancelled | BadBase64):
            self._finished = True
            self._success = None
            return decoded
        return self.answer(decoded)
