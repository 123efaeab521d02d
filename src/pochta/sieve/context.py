"""What a Sieve run reads: the message, its envelope and the world around it.

The delivery side (``deliver/sieve_delivery.py``) builds a ``MessageContext`` for each
recipient; the Pigeonhole test harness builds its own. Nothing here does I/O itself: the
callables and protocols are handed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

__all__ = [
    "DuplicateTracker",
    "Envelope",
    "MessageContext",
    "ScriptLoader",
    "SpamInfo",
    "VirusInfo",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """The SMTP envelope of the message for this recipient (RFC 5228 §5.4 ``envelope``)."""

    sender: str  # MAIL FROM, "" for the null sender <>
    recipient: str  # RCPT TO as it reached this mailbox (after alias expansion)
    original_recipient: str = ""  # the address the sender used, when an alias changed it
    auth_user: str = ""  # RFC 5228 §5.4 "auth": the authenticated submitter, if any


@dataclass(frozen=True, slots=True, kw_only=True)
class SpamInfo:
    """The spam filter's verdict, for spamtest (RFC 5235): its score and the thresholds
    that give it meaning. ``tested`` False means no filter looked at the message."""

    tested: bool = False
    score: float = 0.0
    junk_score: float = 6.0  # from here on the message is spam
    max_score: float = 15.0  # the score read as "certainly spam" (spamtest 10, 100%)


@dataclass(frozen=True, slots=True, kw_only=True)
class VirusInfo:
    """A virus scanner's verdict, for virustest (RFC 5235 §3.3): ``status`` 0 = not tested
    (pochta has no scanner of its own), 1 = no virus found ... 5 = a virus that could not be
    removed, as the RFC numbers them."""

    status: int = 0


class DuplicateTracker(Protocol):
    """The duplicate test's memory (RFC 7352): ids recorded by earlier deliveries to this
    user. Recording happens after delivery, from ``SieveResult.duplicate_ids``."""

    def seen(self, duplicate_id: str) -> bool: ...


class ScriptLoader(Protocol):
    """Finds the scripts ``include`` names (RFC 6609 §3.2): the text, or None when there is
    no such script."""

    def load(self, name: str, location: Literal["personal", "global"]) -> str | None: ...


def _inbox_only(name: str) -> bool:
    return name.upper() == "INBOX"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageContext:
    """One message for one recipient, as a script sees it."""

    message: bytes  # the message as it will be delivered (header and body, CRLF or LF)
    envelope: Envelope
    environment: Mapping[str, str] = field(default_factory=dict)  # RFC 5183 items
    spam: SpamInfo = SpamInfo()
    virus: VirusInfo = VirusInfo()
    recipient_delimiter: str = "+"  # directory.recipient_delimiter: subaddress's separators
    mailbox_exists: Callable[[str], bool] = _inbox_only  # RFC 5490 §3.1 mailboxexists
    duplicates: DuplicateTracker | None = None
    loader: ScriptLoader | None = None  # for include at run time
    now: Callable[[], datetime] = _utc_now  # currentdate (RFC 5260 §5), an aware datetime
    clock: Callable[[], float] = time.monotonic  # for [sieve] max_run_seconds
    default_mailbox: str = "INBOX"  # where keep files (the verdict's folder, e.g. Junk)
    # RFC 5232 §3: the internal flags variable at the start; a script after another in one
    # delivery starts with the flags the one before left (Dovecot's multi-script rule).
    flags: frozenset[str] = frozenset()
