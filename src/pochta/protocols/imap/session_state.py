"""The IMAP session's continuation states (sans-IO): what the next line from the client means.

An IMAP server reads commands, except after it sent a "+" continuation for a command that
goes on over several lines: AUTHENTICATE (RFC 9051 §6.2.2: each "+ challenge" is answered
by one line) and IDLE (RFC 2177 §3: "+ idling", then the client's DONE). The handler of such
a command starts the exchange and returns; this object remembers the command, and the
connection loop reads on: the next line comes out as an event of the exchange, not as a
command. Like SMTP's ``State.AUTH`` (protocols/smtp/server.py), the session never awaits
a read inside a handler, so the exchanges can be driven and tested without sockets.

No sockets, no asyncio, no clock: the glue passes ``now`` (``time.monotonic()``).

    state = SessionState(parser)
    event = state.next_event()          # None: feed the parser more bytes
    state.challenge(cmd)                # after sending "+ base64" for AUTHENTICATE
    state.idle(cmd, now, timeout)       # after sending "+ idling" for IDLE
    state.timer_event(now)              # IdleKeepalive / IdleExpired when due
    state.seconds_to_timer(now)         # how long a read may wait for the IDLE timers
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from pochta.protocols.imap.core import (
    Command,
    CommandError,
    CommandParser,
    ContinuationRequest,
    RawLine,
)


class Mode(enum.Enum):
    COMMAND = "command"  # the next line is a command (tag, name, arguments)
    AUTHENTICATE = "authenticate"  # "+ challenge" was sent; the next line is the answer
    IDLE = "idle"  # "+ idling" was sent; the next line must be DONE


# -- The state table (STYLE.md §2): what a line means in each mode, and where it leads --
#
#   COMMAND       a command line         -> Command            (stays; the handler may move on)
#   COMMAND       challenge(cmd)         -> AUTHENTICATE       (RFC 9051 §6.2.2)
#   COMMAND       idle(cmd, now, t)      -> IDLE               (RFC 2177 §3)
#   AUTHENTICATE  any line               -> AuthenticateLine   -> COMMAND (challenge() again
#                                            for the next step: the exchange decides)
#   IDLE          "DONE" (any case)      -> IdleDone(valid)    -> COMMAND (RFC 2177 §3)
#   IDLE          any other line         -> IdleDone(invalid)  -> COMMAND (answered BAD)
#   IDLE          now >= deadline        -> IdleExpired        -> COMMAND (the glue says BYE)
#   IDLE          every KEEPALIVE s      -> IdleKeepalive      (stays; "* OK Still here")
#   AUTHENTICATE,
#   IDLE          an unreadable line     -> CommandError with the command's tag -> COMMAND
#                 (too long: the parser drops it; the exchange ends with BAD)
_NEXT: Final[dict[Mode, frozenset[Mode]]] = {
    Mode.COMMAND: frozenset({Mode.AUTHENTICATE, Mode.IDLE}),
    Mode.AUTHENTICATE: frozenset({Mode.COMMAND}),
    Mode.IDLE: frozenset({Mode.COMMAND}),
}

# RFC 2177 §3 asks clients to re-issue IDLE at least every 29 minutes; NAT boxes forget a
# silent connection sooner, so an idling session says something every 2 minutes.
IDLE_KEEPALIVE_SECONDS: Final = 120.0


@dataclass(frozen=True, slots=True)
class AuthenticateLine:
    """The client's answer to an AUTHENTICATE challenge (RFC 9051 §6.2.2): base64, "*" to
    cancel, or anything else (invalid base64), without its CRLF."""

    command: Command
    line: bytes


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The line that ends IDLE. ``valid``: it was DONE (RFC 2177 §3, case-insensitive as
    every IMAP keyword); any other line also ends IDLE, with a tagged BAD."""

    command: Command
    valid: bool


@dataclass(frozen=True, slots=True)
class IdleKeepalive:
    """Time for an untagged "* OK" to keep an idling connection alive through NAT."""


@dataclass(frozen=True, slots=True)
class IdleExpired:
    """IDLE lasted ``idle_timeout_seconds``: RFC 2177 §3 / RFC 9051 §5.4, the server may
    log the client out (BYE); the session ends."""

    command: Command


StateEvent = (
    Command | ContinuationRequest | CommandError | RawLine | AuthenticateLine | IdleDone | None
)


class LocalProtocolError(RuntimeError):
    """The glue moved the state wrongly (a challenge outside COMMAND...): our bug."""


class SessionState:
    """Which continuation the session is in, over the command parser (``core.py``)."""

    def __init__(self, parser: CommandParser) -> None:
        self.parser = parser
        self.mode = Mode.COMMAND
        self.command: Command | None = None  # the AUTHENTICATE or IDLE in progress
        self._deadline = 0.0
        self._keepalive_at = 0.0

    def _enter(self, mode: Mode, command: Command | None) -> None:
        if mode not in _NEXT[self.mode]:
            raise LocalProtocolError(f"{self.mode.value} -> {mode.value}")
        self.mode = mode
        self.command = command

    def challenge(self, command: Command) -> None:
        """A "+ challenge" for ``command`` (AUTHENTICATE) went out: the next line answers it."""
        self._enter(Mode.AUTHENTICATE, command)
        self.parser.expect_line()

    def idle(self, command: Command, now: float, timeout_seconds: float) -> None:
        """ "+ idling" for ``command`` went out: wait for DONE until ``now + timeout_seconds``."""
        self._enter(Mode.IDLE, command)
        self._deadline = now + timeout_seconds
        self._keepalive_at = now + IDLE_KEEPALIVE_SECONDS
        self.parser.expect_line()

    def reset(self, parser: CommandParser) -> None:
        """A new parser (STARTTLS: RFC 9051 §6.2.1, nothing read before the handshake counts)."""
        self.parser = parser
        self.mode = Mode.COMMAND
        self.command = None

    def next_event(self) -> StateEvent:
        """The next event of the parser, read in the light of the mode; None: feed more."""
        event = self.parser.next_event()
        if self.mode is Mode.COMMAND or event is None or isinstance(event, ContinuationRequest):
            return event
        command = self.command
        assert command is not None
        mode, self.mode, self.command = self.mode, Mode.COMMAND, None
        if isinstance(event, CommandError):
            # The answer line could not be read (too long): the exchange ends with BAD, tagged
            # as the command it belongs to (RFC 9051 §7.1: the tagged response ends it).
            return CommandError(command.tag, event.text, event.too_big, event.fatal)
        if not isinstance(event, RawLine):  # expect_line() makes the parser give a line
            raise LocalProtocolError(f"a {type(event).__name__} while in {mode.value}")
        if mode is Mode.AUTHENTICATE:
            return AuthenticateLine(command, event.line.strip())
        return IdleDone(command, event.line.strip().upper() == b"DONE")  # RFC 2177 §3

    def seconds_to_timer(self, now: float) -> float | None:
        """How long until ``timer_event`` has something (None: no timer runs)."""
        if self.mode is not Mode.IDLE:
            return None
        return max(0.0, min(self._deadline, self._keepalive_at) - now)

    def timer_event(self, now: float) -> IdleKeepalive | IdleExpired | None:
        """The IDLE timer that is due at ``now``, if any."""
        if self.mode is not Mode.IDLE:
            return None
        if now >= self._deadline:
            command = self.command
            assert command is not None
            self.mode, self.command = Mode.COMMAND, None
            return IdleExpired(command)
        if now >= self._keepalive_at:
            self._keepalive_at = now + IDLE_KEEPALIVE_SECONDS
            return IdleKeepalive()
        return None
