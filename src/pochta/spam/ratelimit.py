"""Rate limits per client address, recipient and authenticated user (``[rate_limits]``).

Postfix's anvil(8) counts per client in one process's memory; ours are counters in
``spam.db`` (spam/store.py), so the SMTP sessions of every worker process count together.
A counter is a fixed window per key (``ip:ADDR``, ``rcpt:ADDR``, ``user:LOGIN``): it starts at
the key's first event and lasts ``window_seconds`` (an hour); the first event after that
starts a new window at 0. Each count is one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``
statement, atomic in SQLite, so two processes adding at once both see their own sum and the
one that crosses the limit is known (``Count.crossed``).

- :class:`ClientRateLimit` (a ``receive/policy.py`` Policy): messages per client address on
  the smtp (MX) listener, counted at MAIL FROM; past ``messages_per_ip_per_hour`` MAIL FROM
  gets ``451 4.7.1`` (RFC 5321 §4.2.5: the client tries again later).
- :class:`RecipientRateLimit` (a Policy): messages per recipient from unauthenticated
  clients, counted at RCPT TO; past ``messages_per_recipient_per_hour`` that RCPT gets 451.
- :class:`UserRateLimit`: recipients per authenticated user, counted when the message is
  queued (``cleanup/door.py`` asks it). Past ``messages_per_user_per_hour`` the message is
  still accepted (250) but queued ON HOLD (Postfix's hold queue): a stolen password cannot
  make the server a spam cannon, and a real user who sends much loses nothing: an admin looks
  at it and runs ``pochta queue release ID``. Each held message logs one warning
  (``rate_limit_hold``); the first one of a window logs an error (``rate_limit_exceeded``).

Refused attempts count too (as anvil counts them): a client hammering past its limit stays
refused until its window ends. Loopback is not counted by default (``exempt_networks``):
programs on this host (a webmail, a monitoring probe) are not spam sources, as Postfix's
``smtpd_client_event_limit_exceptions`` defaults to ``$mynetworks``. A limit of 0 is no limit.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pochta.config.settings import RateLimitSettings
from pochta.logs import get_logger
from pochta.netaddr import client_address, in_networks
from pochta.protocols.smtp.replies import Reply
from pochta.receive.policy import PolicyRequest
from pochta.spam.store import connect_spam_db, ensure_schema

__all__ = [
    "RATE_LIMITED",
    "ClientRateLimit",
    "Count",
    "RateCounter",
    "RecipientRateLimit",
    "UserRateLimit",
]

log = get_logger("spam.ratelimit")

WINDOW_SECONDS = 3600
# One DELETE of ended windows per this many counts (per process): cheap, and the table stays
# the size of one window's keys.
CLEANUP_EVERY = 1000

# RFC 3463 §3.8 X.7.1: delivery not authorized; 4xx: try again later (RFC 5321 §4.2.5).
RATE_LIMITED = Reply(451, "4.7.1", "Rate limit exceeded; try again later")
RECIPIENT_RATE_LIMITED = Reply(
    451, "4.7.1", "Rate limit exceeded for this recipient; try again later"
)

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rate_counters (
        key TEXT PRIMARY KEY,
        window_start REAL NOT NULL,
        count INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS rate_counters_window ON rate_counters (window_start)",
)

# Atomic: a window that ended restarts at this event; else the count grows. Every right-hand
# side reads the row as it was (SQL UPDATE semantics).
_ADD = """
INSERT INTO rate_counters (key, window_start, count) VALUES (:key, :now, :n)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN window_start <= :now - :window THEN :n ELSE count + :n END,
    window_start = CASE WHEN window_start <= :now - :window THEN :now ELSE window_start END
RETURNING count, window_start
"""


@dataclass(frozen=True, slots=True)
class Count:
    """A key's count in its window after adding ``added``."""

    count: int
    added: int
    window_start: float

    def over(self, limit: int) -> bool:
        """Past ``limit`` (0: no limit)."""
        return limit > 0 and self.count > limit

    def crossed(self, limit: int) -> bool:
        """This addition took the count past ``limit``: the first excess of the window."""
        return self.over(limit) and self.count - self.added <= limit


class RateCounter:
    """Windowed counters in ``spam.db``; one connection per thread and process, opened on
    first use. Each call is one tiny autocommit statement (run on the event loop)."""

    def __init__(
        self,
        path: Path,
        *,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.window_seconds = window_seconds
        self._clock = clock
        self._local = threading.local()
        self._writes = 0

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = connect_spam_db(self.path)  # a forked child never reuses its parent's
            ensure_schema(conn, "ratelimit", SCHEMA_VERSION, SCHEMA)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def add(self, key: str, n: int = 1) -> Count:
        """Add ``n`` events to ``key``'s window; the count after it."""
        now = self._clock()
        conn = self._conn()
        row = conn.execute(
            _ADD, {"key": key, "now": now, "n": n, "window": self.window_seconds}
        ).fetchone()
        self._writes += 1
        if self._writes % CLEANUP_EVERY == 0:
            conn.execute(
                "DELETE FROM rate_counters WHERE window_start <= ?", (now - self.window_seconds,)
            )
        return Count(count=int(row[0]), added=n, window_start=float(row[1]))

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _exempt(settings: RateLimitSettings, ip: str) -> bool:
    return not ip or in_networks(ip, settings.exempt_networks)


class ClientRateLimit:
    """Messages per client address on the MX, at MAIL FROM (module docstring)."""

    def __init__(self, settings: RateLimitSettings, counter: RateCounter) -> None:
        self.settings = settings
        self.counter = counter

    async def __call__(self, request: PolicyRequest) -> Reply | None:
        limit = self.settings.messages_per_ip_per_hour
        if (
            request.stage != "mail"
            or request.listener != "smtp"
            or request.auth_user
            or limit == 0
            or _exempt(self.settings, request.client_ip)
        ):
            return None
        addr = client_address(request.client_ip)
        count = self.counter.add(f"ip:{addr if addr is not None else request.client_ip}")
        if not count.over(limit):
            return None
        if count.crossed(limit):
            log.warning("rate_limit_client", client=request.client_ip, limit=limit)
        return RATE_LIMITED


class RecipientRateLimit:
    """Messages per recipient from unauthenticated clients, at RCPT TO (module docstring)."""

    def __init__(self, settings: RateLimitSettings, counter: RateCounter) -> None:
        self.settings = settings
        self.counter = counter

    async def __call__(self, request: PolicyRequest) -> Reply | None:
        limit = self.settings.messages_per_recipient_per_hour
        if (
            request.stage != "rcpt"
            or request.auth_user
            or limit == 0
            or _exempt(self.settings, request.client_ip)
        ):
            return None
        count = self.counter.add(f"rcpt:{request.recipient.lower()}")
        if not count.over(limit):
            return None
        if count.crossed(limit):
            log.warning("rate_limit_recipient", to=request.recipient, limit=limit)
        return RECIPIENT_RATE_LIMITED


class UserRateLimit:
    """Recipients per authenticated user; the door holds the excess (module docstring).
    Implements ``cleanup/door.OutboundLimit``."""

    def __init__(self, settings: RateLimitSettings, counter: RateCounter) -> None:
        self.settings = settings
        self.counter = counter

    def hold(self, user: str, recipients: int, *, queue_id: str = "") -> bool:
        """Count ``recipients`` for ``user``; True: queue this message on hold."""
        limit = self.settings.messages_per_user_per_hour
        if not user or limit == 0 or recipients <= 0:
            return False
        count = self.counter.add(f"user:{user.lower()}", recipients)
        if not count.over(limit):
            return False
        if count.crossed(limit):
            log.error(
                "rate_limit_exceeded",
                user=user,
                count=count.count,
                limit=limit,
                window_start=int(count.window_start),
                hint=(
                    "this user's further mail this hour is held: check the account (stolen "
                    "password?), then `pochta queue list --state hold` and `pochta queue "
                    "release ID` or `pochta queue delete ID`"
                ),
            )
        log.warning("rate_limit_hold", queue_id=queue_id, user=user, count=count.count, limit=limit)
        return True
