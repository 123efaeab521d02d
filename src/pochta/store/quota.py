"""Quota: what an account uses, and whether one more message fits.

The counters themselves live with the backend (the Maildir store keeps them in the account
index, changed in the same transaction as the messages). This module only decides, so the
SMTP server (at RCPT, RFC 1870 SIZE known), the delivery agent (at delivery) and IMAP
(APPEND, COPY) give the same answer with the same words.

Sizes are RFC 5322 octets with CRLF line ends (IMAP RFC822.SIZE, SMTP SIZE): what the user
sees, not what the files take on disk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """What an account holds: total message octets (CRLF) and number of messages."""

    bytes: int
    messages: int


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    """Whether a message of a given size may be added. ``permanent`` refusals will never fit
    (the message alone is larger than the whole quota); the others may fit after the user
    deletes mail."""

    ok: bool
    permanent: bool
    reason: str

    @property
    def smtp_code(self) -> int:
        """RFC 5321 §4.2.2 reply code: 552 when it can never fit, 452 when it may fit later."""
        if self.ok:
            return 250
        return 552 if self.permanent else 452

    @property
    def enhanced_code(self) -> str:
        """RFC 3463 §3.3: X.2.2 "Mailbox full"."""
        if self.ok:
            return "2.0.0"
        return "5.2.2" if self.permanent else "4.2.2"


OK = QuotaCheck(ok=True, permanent=False, reason="")


def format_bytes(size: int) -> str:
    """A short human size: 512B, 4.0K, 1.5M, 2.0G (binary units)."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{size}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def evaluate_quota(
    usage: QuotaUsage, *, limit_bytes: int, limit_messages: int, incoming_size: int
) -> QuotaCheck:
    """May a message of ``incoming_size`` octets be added to an account using ``usage``?

    A limit of 0 means unlimited. Reaching the limit exactly is allowed (like Dovecot).
    """
    if limit_bytes > 0 and incoming_size > limit_bytes:
        # RFC 5321 §4.5.3.1.10 / RFC 3463 §3.3: 552 5.2.2, the message can never be delivered
        # to this mailbox, so the sender should not retry.
        return QuotaCheck(
            ok=False,
            permanent=True,
            reason=(
                f"message of {format_bytes(incoming_size)} is larger than the mailbox quota "
                f"of {format_bytes(limit_bytes)}"
            ),
        )
    if limit_bytes > 0 and usage.bytes + incoming_size > limit_bytes:
        # RFC 5321 §4.2.2 452 / RFC 3463 §3.3 4.2.2: full now, may have room later.
        return QuotaCheck(
            ok=False,
            permanent=False,
            reason=(
                f"mailbox full: {format_bytes(usage.bytes)} of {format_bytes(limit_bytes)} "
                f"used, the message needs {format_bytes(incoming_size)}"
            ),
        )
    if limit_messages > 0 and usage.messages + 1 > limit_messages:
        return QuotaCheck(
            ok=False,
            permanent=False,
            reason=f"mailbox full: {usage.messages} of {limit_messages} messages",
        )
    return OK
