"""What a Sieve run decides: the actions, in the order the script took them.

The interpreter only decides; the delivery side (``deliver/sieve_delivery.py``) carries the
actions out. Each action that delivers or sends a message carries ``content``: the message
as the script had edited it when it took the action (RFC 5293 §5, editheader), or None when
it is the message as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Action",
    "Discard",
    "FileInto",
    "Keep",
    "Redirect",
    "Reject",
    "SieveResult",
    "Vacation",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Keep:
    """Deliver to the default folder (RFC 5228 §4.3), with these IMAP flags (RFC 5232 §5:
    the internal variable's value at the time, or the ``:flags`` argument)."""

    flags: frozenset[str] = frozenset()
    content: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileInto:
    """Deliver into ``mailbox`` (RFC 5228 §4.1; its name as written, UTF-8), creating it
    first when ``create`` (RFC 5490 §3.2)."""

    mailbox: str
    flags: frozenset[str] = frozenset()
    create: bool = False
    content: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """Send the message on to ``address`` (RFC 5228 §4.2), the envelope sender kept."""

    address: str
    content: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Refuse the message with ``reason`` (RFC 5429): ``extended`` is ereject (§2.1),
    which must be refused in the protocol when it can be; reject may send a notice."""

    reason: str
    extended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Discard:
    """Drop the message silently (RFC 5228 §4.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Vacation:
    """Answer the sender once per ``period_seconds`` (RFC 5230, 6131). The interpreter has
    already checked that ``to`` is a sender that may be answered as far as the message
    alone tells (RFC 5230 §4.5 and §4.6: not ``<>``, not a list, not an auto-reply, our
    address in a recipient field); the delivery side checks the period with its state and
    sends."""

    to: str  # the envelope sender (RFC 5230 §4.5: the reply goes to the return path)
    reason: str  # the body, or a whole MIME entity when ``mime``
    subject: str  # already made: the :subject, else "Auto: " + the original Subject (§4.7)
    from_address: str = ""  # :from, else the recipient's address (§4.8)
    handle: str  # §4.2: :handle, else made from the arguments that define the reply
    period_seconds: int
    mime: bool = False
    in_reply_to: str = ""  # the original Message-ID (§5.1)
    references: str = ""  # the original References + Message-ID (§5.1)
    content: bytes | None = None


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation


@dataclass(frozen=True, slots=True, kw_only=True)
class SieveResult:
    """Every action of one run, in order. ``implicit_keep`` says whether the implicit keep
    is still in force at the end (RFC 5228 §2.10.2): the delivery side then keeps the
    message (with ``keep_flags``, RFC 5232 §3 on the implicit keep, and ``final_content``,
    the message as last edited). ``duplicate_ids`` are the duplicate tests' ids to record once
    the message is delivered (RFC 7352 §3). ``warnings`` go to the log."""

    actions: tuple[Action, ...] = ()
    implicit_keep: bool = True
    keep_flags: frozenset[str] = frozenset()
    final_content: bytes | None = None
    duplicate_ids: tuple[tuple[str, int], ...] = ()  # (id, period in seconds)
    warnings: tuple[str, ...] = field(default_factory=tuple)
