"""Greylisting (RFC 6647): a first message from an unknown (client, sender, recipient) is
refused with ``451 4.7.1``; a real MTA queues it and retries (RFC 5321 §4.5.4.1), most
spam software does not.

The triplet (RFC 6647 §2.2, greylisting at the SMTP command level, as postgrey does it):

- the client's network, not its address: IPv4 /24, IPv6 /64 (postgrey's ``--lookup-by-
  subnet``), because a big sender retries from another host of its farm;
- the envelope sender, reduced so one sender keeps one key across its messages: lower
  case, the ``+extension`` dropped, SRS (SRS0/SRS1) undone to the original address, BATV
  and PRVS tags (``prvs=TAG=user``, ``btv1==TAG==user``, ``msprvs1=TAG=user``) removed, and
  numbers in the local part replaced by ``#`` (VERP, as postgrey's sender substitutions);
- each recipient.

States of a triplet (one row in ``spam.db``, table ``greylist``):

====================  =========================================================
no row                recorded (``first_seen`` = now), refused
seen, too early       before ``delay_seconds``: refused, ``first_seen`` kept
seen, in the window   between ``delay_seconds`` and ``retry_window_hours``: passes,
                      becomes *passed*
seen, window over     after ``retry_window_hours``: a new first attempt (refused)
passed                passes while its last message is younger than ``keep_days``,
                      which each message renews; older: a new first attempt
====================  =========================================================

RFC 6647 §4 asks that the delays be configurable and that known-good senders are not
delayed again and again; here:

- a triplet that passed is remembered for ``keep_days`` after its last message;
- a client network whose mail passed ``auto_allow_after`` times (counted at most once an
  hour, as postgrey's auto-whitelist-clients) skips greylisting until ``keep_days`` after its
  last message (table ``greylist_clients``);
- ``[greylist] allow`` lists networks and sender domains that are never greylisted.

A message to several recipients passes only when every triplet passes; all are recorded at
once, so the client's retry passes them all together. Rows whose time is over are removed
by one DELETE every ``CLEANUP_EVERY`` writes of this process.

Two ways to use it (``[greylist] mode``): "score" (default): the scanner
(``spam/scanner.py``) calls :meth:`Greylist.admit` for a message whose score reaches
``[spam] greylist_score`` and answers 451 at the end of DATA when it says False; "always":
:class:`GreylistPolicy`, a ``receive/policy.py`` Policy, asks at every RCPT TO on the smtp
listener. Authenticated sessions are never greylisted. Every clock is injected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pochta.config.settings import GreylistSettings
from pochta.logs import get_logger
from pochta.netaddr import client_address, in_networks
from pochta.protocols.smtp.replies import Reply
from pochta.receive.policy import PolicyRequest
from pochta.spam.store import connect_spam_db, ensure_schema

__all__ = ["GREYLISTED", "Greylist", "GreylistPolicy", "client_network", "reduce_sender"]

log = get_logger("spam.greylist")

# RFC 6647 §4 (a 4xx reply, RFC 5321 §4.2.5: the client keeps the message and retries);
# RFC 3463 §3.8 X.7.1: delivery not authorized, message refused (for now).
GREYLISTED = Reply(451, "4.7.1", "Greylisted: please try again later")

CLEANUP_EVERY = 1000
AUTO_ALLOW_INTERVAL_SECONDS = 3600  # a network's passes count at most once an hour (postgrey)

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS greylist (
        network TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        passed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (network, sender, recipient)
    )""",
    "CREATE INDEX IF NOT EXISTS greylist_last_seen ON greylist (last_seen)",
    """CREATE TABLE IF NOT EXISTS greylist_clients (
        network TEXT PRIMARY KEY,
        passes INTEGER NOT NULL,
        last_counted REAL NOT NULL,
        last_seen REAL NOT NULL
    )""",
)

Outcome = Literal["new", "early", "passed", "known", "expired"]


def client_network(ip: str) -> str:
    """The network a client is greylisted by: IPv4 /24, IPv6 /64 (an IPv4-mapped IPv6
    address counts as IPv4); a string that is no address is its own key."""
    addr = client_address(ip)
    if addr is None:
        return ip.lower()
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


# SRS0=HHH=TT=orig-domain=orig-local@srs-domain; SRS1=HHH=first-srs-domain==HHH=TT=dom=local@...
_SRS0 = re.compile(r"^srs0[=+-][^=]+=[^=]+=([^=]+)=(.+)$", re.IGNORECASE)
_SRS1 = re.compile(r"^srs1[=+-][^=]+=[^=]+==[^=]+=[^=]+=([^=]+)=(.+)$", re.IGNORECASE)
# BATV (draft-levine-smtp-batv): prvs=TAG=local; btv1==TAG==local; Microsoft's msprvs1=TAG=local.
_BATV = re.compile(r"^(?:prvs|msprvs1)=[^=]+=(.+)$|^btv1==[^=]+==(.+)$", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d+\b")


def reduce_sender(sender: str) -> str:
    """The sender as greylisting keys it (module docstring); "" for the null sender."""
    address = sender.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    for pattern in (_SRS1, _SRS0):
        match = pattern.match(local)
        if match:
            domain, local = match.group(1), match.group(2)
            break
    match = _BATV.match(local)
    if match:
        local = match.group(1) or match.group(2)
    local = local.split("+", 1)[0]  # the +extension (VERP and subaddresses)
    local = _NUMBER.sub("#", local)  # numbers of VERP addresses (postgrey)
    return f"{local}@{domain}"


class Greylist:
    """The triplet store and its rules (module docstring). One SQLite connection per thread
    and process; the work runs in the default executor, off the event loop."""

    def __init__(
        self,
        settings: GreylistSettings,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.path = path
        self._clock = clock
        self._local = threading.local()
        self._writes = 0
        self._lock = threading.Lock()
        self._networks = [e for e in settings.allow if _is_network(e)]
        self._domains = tuple(e.lower().strip(".") for e in settings.allow if not _is_network(e))

    async def admit(self, client_ip: str, sender: str, recipients: Sequence[str]) -> bool:
        """True: the message may pass; False: answer 451 4.7.1 (:data:`GREYLISTED`)."""
        if self.allowed(client_ip, sender):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.admit_sync, client_ip, sender, recipients)

    def allowed(self, client_ip: str, sender: str) -> bool:
        """``[greylist] allow``: a listed client network or sender domain."""
        if self._networks and in_networks(client_ip, self._networks):
            return True
        domain = sender.rpartition("@")[2].lower()
        return bool(domain) and any(
            domain == allowed or domain.endswith("." + allowed) for allowed in self._domains
        )

    def admit_sync(self, client_ip: str, sender: str, recipients: Sequence[str]) -> bool:
        """:meth:`admit` in the calling thread."""
        now = self._clock()
        network = client_network(client_ip)
        reduced = reduce_sender(sender)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._auto_allowed(conn, network, now):
                conn.execute("COMMIT")
                log.debug("greylist_pass", network=network, reason="auto_allow")
                return True
            outcomes = [
                self._triplet(conn, network, reduced, rcpt.lower(), now) for rcpt in recipients
            ]
            admitted = all(o in ("passed", "known") for o in outcomes)
            if admitted and self.settings.auto_allow_after:
                self._count_pass(conn, network, now)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._maybe_cleanup(conn, now)
        if admitted:
            log.info("greylist_pass", client=client_ip, sender=sender or "<>", network=network)
        else:
            log.info(
                "greylisted",
                client=client_ip,
                sender=sender or "<>",
                network=network,
                outcome=",".join(sorted(set(outcomes))),
            )
        return admitted

    # -- the state machine ---------------------------------------------------------------------

    def _triplet(
        self, conn: sqlite3.Connection, network: str, sender: str, recipient: str, now: float
    ) -> Outcome:
        key = (network, sender, recipient)
        row = conn.execute(
            "SELECT first_seen, last_seen, passed FROM greylist "
            "WHERE network = ? AND sender = ? AND recipient = ?",
            key,
        ).fetchone()
        s = self.settings
        if row is None:
            outcome: Outcome = "new"
        else:
            first_seen, last_seen, passed = float(row[0]), float(row[1]), bool(row[2])
            if passed:
                if now - last_seen <= s.keep_days * 86400:
                    conn.execute(
                        "UPDATE greylist SET last_seen = ? "
                        "WHERE network = ? AND sender = ? AND recipient = ?",
                        (now, *key),
                    )
                    return "known"
                outcome = "expired"  # not seen for keep_days: greylisted afresh
            elif now - first_seen < s.delay_seconds:
                return "early"  # RFC 6647 §4: a retry before the delay does not pass
            elif now - first_seen <= s.retry_window_hours * 3600:
                conn.execute(
                    "UPDATE greylist SET passed = 1, last_seen = ? "
                    "WHERE network = ? AND sender = ? AND recipient = ?",
                    (now, *key),
                )
                return "passed"
            else:
                outcome = "expired"  # the retry came after the window: a new first attempt
        conn.execute(
            "INSERT OR REPLACE INTO greylist "
            "(network, sender, recipient, first_seen, last_seen, passed) VALUES (?, ?, ?, ?, ?, 0)",
            (*key, now, now),
        )
        self._writes += 1
        return outcome

    def _auto_allowed(self, conn: sqlite3.Connection, network: str, now: float) -> bool:
        """postgrey's auto-whitelist-clients: the network passed ``auto_allow_after`` times."""
        threshold = self.settings.auto_allow_after
        if threshold == 0:
            return False
        row = conn.execute(
            "SELECT passes, last_seen FROM greylist_clients WHERE network = ?", (network,)
        ).fetchone()
        if row is None or int(row[0]) < threshold:
            return False
        if now - float(row[1]) > self.settings.keep_days * 86400:
            conn.execute("DELETE FROM greylist_clients WHERE network = ?", (network,))
            return False
        conn.execute("UPDATE greylist_clients SET last_seen = ? WHERE network = ?", (now, network))
        return True

    def _count_pass(self, conn: sqlite3.Connection, network: str, now: float) -> None:
        conn.execute(
            "INSERT INTO greylist_clients (network, passes, last_counted, last_seen) "
            "VALUES (:network, 1, :now, :now) ON CONFLICT (network) DO UPDATE SET "
            "passes = CASE WHEN last_counted <= :now - :interval THEN passes + 1 ELSE passes END,"
            " last_counted = CASE WHEN last_counted <= :now - :interval THEN :now "
            "ELSE last_counted END, last_seen = :now",
            {"network": network, "now": now, "interval": AUTO_ALLOW_INTERVAL_SECONDS},
        )

    def _maybe_cleanup(self, conn: sqlite3.Connection, now: float) -> None:
        """One DELETE of rows whose time is over per ``CLEANUP_EVERY`` writes."""
        with self._lock:
            due = self._writes >= CLEANUP_EVERY
            if due:
                self._writes = 0
        if due:
            self.expire(conn, now)

    def expire(self, conn: sqlite3.Connection | None = None, now: float | None = None) -> int:
        """Remove the rows whose time is over; how many triplets went."""
        conn = conn or self._conn()
        now = self._clock() if now is None else now
        s = self.settings
        cursor = conn.execute(
            "DELETE FROM greylist WHERE (passed = 0 AND first_seen < ?) "
            "OR (passed = 1 AND last_seen < ?)",
            (now - s.retry_window_hours * 3600, now - s.keep_days * 86400),
        )
        conn.execute(
            "DELETE FROM greylist_clients WHERE last_seen < ?", (now - s.keep_days * 86400,)
        )
        return cursor.rowcount

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = connect_spam_db(self.path)
            ensure_schema(conn, "greylist", SCHEMA_VERSION, SCHEMA)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


class GreylistPolicy:
    """``[greylist] mode = "always"``: every new triplet at RCPT TO on the smtp listener
    (classic greylisting); authenticated sessions never."""

    def __init__(self, greylist: Greylist) -> None:
        self.greylist = greylist

    async def __call__(self, request: PolicyRequest) -> Reply | None:
        if request.stage != "rcpt" or request.listener != "smtp" or request.auth_user:
            return None
        if await self.greylist.admit(request.client_ip, request.sender, [request.recipient]):
            return None
        return GREYLISTED
