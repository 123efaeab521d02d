"""How long an IMAP session waits for its client, and what it says when the wait runs out.

Sans-IO: the session passes the time (``time.monotonic()``), tests pass any clock. Three
clocks run, and the next read waits for the first of them:

- **idle** (``idle_timeout_seconds``): restarts at every read. RFC 9051 §5.4: at least 30
  minutes between commands.
- **login** (``login_timeout_seconds``): from the connection until a login succeeds. Bytes do
  not restart it, so a client that trickles one byte every few seconds is closed all the same
  (Dovecot closes unauthenticated clients after about a minute).
- **command** (``command_timeout_seconds``): from the first octet of a command until the
  parser has it whole. Every literal the command announces adds the time to send it at
  ``min_literal_bytes_per_second``: a 50 MB APPEND on a slow line is not cut off, a command
  line trickled forever is. Each command (or continuation line) starts it afresh, so a
  pipelining client is not penalised for sending many.
"""

from __future__ import annotations

from dataclasses import dataclass

from pochta.config.settings import IMAPSettings


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float  # how long the next read may take (0: the time is up)
    bye: str  # the BYE text when it does not arrive in time


class SessionTimers:
    def __init__(self, settings: IMAPSettings, connected_at: float) -> None:
        self.idle_seconds = settings.idle_timeout_seconds
        self.login_seconds = settings.login_timeout_seconds
        self.command_seconds = settings.command_timeout_seconds
        self.literal_rate = settings.min_literal_bytes_per_second
        self.connected_at = connected_at
        self._command_started: float | None = None

    def command_done(self) -> None:
        """The parser handed out a command (or a line): the next one starts its own clock."""
        self._command_started = None

    def next_wait(
        self, now: float, *, logged_in: bool, in_command: bool, literal_octets: int
    ) -> Wait:
        """The wait for the next read. ``in_command``: part of a command has arrived;
        ``literal_octets``: what its literals announced so far."""
        if not in_command:
            self._command_started = None
        elif self._command_started is None:
            self._command_started = now
        waits = [Wait(float(self.idle_seconds), "Autologout; idle for too long")]
        if not logged_in:
            left = self.connected_at + self.login_seconds - now
            waits.append(Wait(left, f"Log in within {self.login_seconds} seconds of connecting"))
        if self._command_started is not None:
            allowed = self.command_seconds + literal_octets / self.literal_rate
            left = self._command_started + allowed - now
            waits.append(Wait(left, "Command took too long to arrive"))
        first = min(waits, key=lambda w: w.seconds)
        return Wait(max(first.seconds, 0.0), first.bye)
