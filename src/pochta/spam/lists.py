"""Allow and block lists of senders, per user, per hosted domain and global; recipients whose
mail is never filtered.

A **sender entry** names a pattern, matched against the envelope sender (MAIL FROM) and the
From address of a message (either one matching counts):

- ``user@example.net``: that address;
- ``@example.net``: any address of that domain exactly;
- ``example.net``: that domain and every subdomain (``mail.example.net``).

Each entry belongs to a list (``allow`` or ``block``) and a scope: one user (an account or
alias address: the recipient's own list), one hosted domain (its recipients' list), or
global. For each recipient of a message the most specific scope that has a matching entry
decides (user, then the recipient's domain, then global), and within it the most specific
pattern (address, then ``@domain``, then the longest domain); on a tie allow wins, so an
entry never loses mail by accident. So a user's own allow entry beats the domain's block
entry, and ``block example.net`` with ``allow boss@example.net`` lets the boss through. The
symbols are ``USER_ALLOWLIST``/``USER_BLOCKLIST``, ``DOMAIN_...`` and ``GLOBAL_...``, with the
scores of ``[spam_lists]`` (default -20 and +20: enough to decide alone). The verdict is per
message, so with several recipients each one's decision adds its symbol (a symbol counts
once).

A **recipient entry** (``pochta spam allow add --recipient abuse@example.org``, or
``abuse@`` for that local part in every domain) protects mail *to* that address: it gets
``RCPT_ALLOWLIST`` (default -100), so it is never acted on: complaints to abuse@ and
postmaster@ quote spam and must still arrive (RFC 2142 mailboxes).

Sender addresses come from the message and are forged easily; an allow entry is a statement
of trust an admin or user makes knowingly (as in Rspamd's multimap and SpamAssassin's
``whitelist_from``), it does not check SPF or DKIM.

The entries are account data, so they live in the directory database (``directory.sqlite3``)
in their own table, made by :func:`~pochta.reports.store.ensure_schema` (``CREATE TABLE IF
NOT EXISTS``); the scanner's lookup is one indexed SELECT, run on the event loop (WAL
readers never wait for a writer).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pochta.cleanup.verdict import Symbol
from pochta.directory.addresses import (
    AddressError,
    normalize_address,
    normalize_domain,
    strip_extension,
)
from pochta.reports.store import ensure_schema
from pochta.spam.check import ScanInput
from pochta.sqlite_connections import ThreadConnections, TrackedConnection

__all__ = [
    "GLOBAL",
    "ListEntry",
    "ListError",
    "ListKind",
    "ListSymbols",
    "SpamLists",
    "parse_recipient_pattern",
    "parse_sender_pattern",
]

ListKind = Literal["allow", "block", "recipient"]
GLOBAL = ""
"""The scope of global entries."""

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spam_lists (
        list TEXT NOT NULL,     -- 'allow', 'block' (senders) or 'recipient' (never filtered)
        scope TEXT NOT NULL COLLATE NOCASE,   -- '' global, 'example.org', 'bob@example.org'
        pattern TEXT NOT NULL COLLATE NOCASE, -- 'a@example.net', '@example.net', 'example.net'
        added REAL NOT NULL,
        PRIMARY KEY (list, scope, pattern)
    )""",
    "CREATE INDEX IF NOT EXISTS spam_lists_pattern ON spam_lists (pattern)",
)
BUSY_TIMEOUT_MS = 5000
MAX_DOMAIN_LABELS = 127
"""Labels of a domain at most (RFC 1035 §2.3.4: 255 octets); bounds the suffixes looked up."""


class ListError(ValueError):
    """A pattern or scope the lists refuse; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class ListEntry:
    list: ListKind
    scope: str  # GLOBAL, a hosted domain or a user's address
    pattern: str
    added: float


def parse_sender_pattern(text: str) -> str:
    """The canonical form of a sender pattern (``user@domain``, ``@domain`` or ``domain``),
    or ListError saying what is allowed."""
    value = text.strip()
    try:
        if value.startswith("@"):
            return "@" + normalize_domain(value[1:])
        if "@" in value:
            return normalize_address(value)
        return normalize_domain(value)
    except AddressError as exc:
        raise ListError(
            f"{text!r} is not a sender pattern ({exc}); use user@domain, @domain (that "
            "domain only) or domain (with its subdomains)"
        ) from None


def parse_recipient_pattern(text: str) -> str:
    """The canonical form of a recipient entry: ``user@domain``, or ``user@`` for that local
    part in every domain; ListError otherwise."""
    value = text.strip()
    try:
        if value.endswith("@") and value.count("@") == 1:
            local = normalize_address(value + "example.org").rpartition("@")[0]
            return local + "@"
        return normalize_address(value)
    except AddressError as exc:
        raise ListError(
            f"{text!r} is not a recipient ({exc}); use user@domain, or user@ for that local "
            "part in every domain (abuse@, postmaster@)"
        ) from None


def sender_candidates(address: str) -> dict[str, int]:
    """Every pattern that matches ``address``, with its specificity (higher is more
    specific): the address, ``@domain``, then the domain and each parent domain."""
    local, at, domain = address.strip().lower().rpartition("@")
    domain = domain.rstrip(".")
    if not domain or len(address) > 512:
        return {}
    out: dict[str, int] = {}
    labels = domain.split(".")[-MAX_DOMAIN_LABELS:]
    for i in range(len(labels)):
        out[".".join(labels[i:])] = len(labels) - i  # a longer suffix is more specific
    out["@" + domain] = 1000
    if at and local:
        out[f"{local}@{domain}"] = 2000
    return out


class SpamLists:
    """The lists in the directory database at ``path``: one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = ThreadConnections(self._connect, lambda: ListError("the lists are closed"))
        ensure_schema(self._conn(), "spam_lists", SCHEMA_VERSION, SCHEMA)

    def _connect(self) -> TrackedConnection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # autocommit; ensure_schema issues its own BEGIN
            check_same_thread=False,  # only so that close() may close it from any thread
            factory=TrackedConnection,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # as the directory: admin changes
        return conn

    def _conn(self) -> TrackedConnection:
        return self._pool.get()

    def close(self) -> None:
        self._pool.close()

    def add(self, kind: ListKind, scope: str, pattern: str) -> bool:
        """Add an entry (patterns already canonical); False when it was there."""
        cursor = self._conn().execute(
            "INSERT OR IGNORE INTO spam_lists (list, scope, pattern, added) VALUES (?, ?, ?, ?)",
            (kind, scope.lower(), pattern.lower(), time.time()),
        )
        return cursor.rowcount > 0

    def remove(self, kind: ListKind, scope: str, pattern: str) -> bool:
        """Remove an entry; False when there was none."""
        cursor = self._conn().execute(
            "DELETE FROM spam_lists WHERE list = ? AND scope = ? AND pattern = ?",
            (kind, scope, pattern),
        )
        return cursor.rowcount > 0

    def entries(self, kind: ListKind, scope: str | None = None) -> list[ListEntry]:
        """The entries of one list, of one scope or all, sorted by scope then pattern."""
        sql = "SELECT list, scope, pattern, added FROM spam_lists WHERE list = ?"
        args: tuple[str, ...] = (kind,)
        if scope is not None:
            sql += " AND scope = ?"
            args = (kind, scope)
        rows = self._conn().execute(sql + " ORDER BY scope, pattern", args).fetchall()
        return [ListEntry(r[0], r[1], r[2], float(r[3])) for r in rows]

    def matching(self, patterns: Iterable[str]) -> list[ListEntry]:
        """Every entry (any list, any scope) whose pattern is one of ``patterns``."""
        wanted = sorted({p.lower() for p in patterns})
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        sql = f"SELECT list, scope, pattern, added FROM spam_lists WHERE pattern IN ({marks})"  # noqa: S608 - only "?" marks
        rows = self._conn().execute(sql, wanted).fetchall()
        return [ListEntry(r[0], r[1], r[2], float(r[3])) for r in rows]


@dataclass(frozen=True, slots=True)
class _Scores:
    allow: float
    block: float
    recipient: float


class ListSymbols:
    """The check: ``RCPT_ALLOWLIST``, or per recipient the deciding sender entry's symbol."""

    name = "lists"
    waits = False  # one indexed SELECT (decide): WAL readers never wait for a writer

    def __init__(
        self,
        lists: SpamLists,
        *,
        allow_score: float = -20.0,
        block_score: float = 20.0,
        recipient_score: float = -100.0,
        recipient_delimiter: str = "+",
    ) -> None:
        self._lists = lists
        self._scores = _Scores(allow_score, block_score, recipient_score)
        self._delimiter = recipient_delimiter

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        author = scan.message.author
        # An address with bytes that are not UTF-8 (surrogate escapes) matches no entry.
        senders = [s for s in (scan.sender, author.address if author else "") if s and _is_text(s)]
        recipients = [self._base(r) for r in scan.recipients if _is_text(r)]
        return self.decide(senders, recipients)

    def _base(self, recipient: str) -> str:
        """The recipient without its ``+tag`` (directory.recipient_delimiter), lower case."""
        local, _, domain = recipient.strip().lower().rpartition("@")
        if self._delimiter and local:
            local = strip_extension(local, self._delimiter)
        return f"{local}@{domain}" if local else domain

    def decide(self, senders: Sequence[str], recipients: Sequence[str]) -> list[Symbol]:
        """The symbols for a message from ``senders`` to ``recipients``: one indexed
        SELECT of the patterns (SpamLists.matching), quick enough for the event loop."""
        candidates: dict[str, int] = {}
        for sender in senders:
            for pattern, rank in sender_candidates(sender).items():
                candidates[pattern] = max(rank, candidates.get(pattern, 0))
        rcpt_patterns = {r for r in recipients} | {r.rpartition("@")[0] + "@" for r in recipients}
        found = self._lists.matching([*candidates, *rcpt_patterns])
        protected = [
            e.pattern for e in found if e.list == "recipient" and e.pattern in rcpt_patterns
        ]
        if protected:
            return [
                Symbol(
                    name="RCPT_ALLOWLIST",
                    score=self._scores.recipient,
                    description="A recipient is on the never-filtered list",
                    options=tuple(sorted(set(protected))),
                )
            ]
        senders_found = [
            e for e in found if e.list in ("allow", "block") and e.pattern in candidates
        ]
        symbols: dict[str, Symbol] = {}
        for recipient in recipients:
            symbol = self._for_recipient(recipient, senders_found, candidates)
            if symbol is not None and symbol.name not in symbols:
                symbols[symbol.name] = symbol
        return list(symbols.values())

    def _for_recipient(
        self, recipient: str, entries: list[ListEntry], rank: dict[str, int]
    ) -> Symbol | None:
        domain = recipient.rpartition("@")[2]
        for scope, prefix in ((recipient, "USER"), (domain, "DOMAIN"), (GLOBAL, "GLOBAL")):
            if scope != GLOBAL and not scope:
                continue
            here = [e for e in entries if e.scope == scope]
            if not here:
                continue
            # The most specific pattern; on a tie allow (sorts before block) wins.
            best = max(here, key=lambda e: (rank[e.pattern], e.list == "allow"))
            allow = best.list == "allow"
            return Symbol(
                name=f"{prefix}_{'ALLOWLIST' if allow else 'BLOCKLIST'}",
                score=self._scores.allow if allow else self._scores.block,
                description=f"Sender on the {'allow' if allow else 'block'} list of "
                + (scope or "the server"),
                options=(best.pattern, scope or "global"),
            )
        return None


def _is_text(address: str) -> bool:
    """Whether ``address`` is valid Unicode (no surrogate escapes of undecodable bytes)."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
