"""``test_result_execute``: carry out a result the way delivery would, into the fake mail
store and the captured SMTP messages (README §3).

This stands in for the delivery side (H2's ``deliver/sieve_delivery.py``) so the suite can
read back what a run did: keep and fileinto store, redirect and the reject notice are
captured as SMTP, vacation uses ``pochta.sieve.vacation`` when it exists (H5) and is
otherwise not executable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, make_msgid

from pochta.sieve.actions import (
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from pochta.sieve.context import Envelope
from pochta.store.base import StoreError
from pochta.store.maildir import check_folder_name
from tests.sieve.pigeonhole.world import TESTSUITE_USER, CapturedMessage, MailStore

__all__ = ["Execution", "action_names", "execute_result", "reject_notice"]


def action_names(result: SieveResult) -> list[str]:
    """The names ``test_result_action`` matches, Dovecot's: keep, store (fileinto),
    redirect, reject, vacation, discard; the implicit keep last when it is still in force."""
    names: list[str] = []
    for action in result.actions:
        if isinstance(action, Keep):
            names.append("keep")
        elif isinstance(action, FileInto):
            names.append("store")
        elif isinstance(action, Redirect):
            names.append("redirect")
        elif isinstance(action, Reject):
            names.append("reject")
        elif isinstance(action, Vacation):
            names.append("vacation")
        elif isinstance(action, Discard):
            names.append("discard")
    if result.implicit_keep:
        names.append("keep")
    return names


@dataclass(slots=True)
class Execution:
    ok: bool = True
    errors: list[str] = field(default_factory=list)


def reject_notice(envelope: Envelope, reason: str, original: bytes) -> bytes:
    # Stand-in for delivery's reject notice (RFC 5429 §2.1: an MDN-like refusal to the
    # envelope sender, from the postmaster, sent with the null sender).
    head = (
        f"From: Postmaster <postmaster@example.org>\r\n"
        f"To: <{envelope.sender}>\r\n"
        f"Subject: Automatically rejected mail\r\n"
        f"Date: {formatdate()}\r\n"
        f"Message-ID: {make_msgid(domain='example.org')}\r\n"
        f"Auto-Submitted: auto-replied (rejected)\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n"
        f"Your message to <{envelope.recipient}> was automatically rejected:\r\n"
        f"{reason}\r\n"
    )
    return head.encode("utf-8") + b"\r\n" + original


def _vacation_builder() -> Callable[..., bytes] | None:
    try:
        module = importlib.import_module("pochta.sieve.vacation")
    except ImportError:
        return None
    builder = getattr(module, "build_reply", None)
    return builder if callable(builder) else None


def execute_result(
    result: SieveResult,
    *,
    message: bytes,
    envelope: Envelope,
    store: MailStore,
    outbox: list[CapturedMessage],
) -> Execution:
    out = Execution()
    for action in result.actions:
        content = getattr(action, "content", None) or message
        if isinstance(action, Keep):
            store.append("INBOX", content, action.flags)
        elif isinstance(action, FileInto):
            # The store's own refusals, in the words of a store (Dovecot's mail storage,
            # pochta's delivery log): the mailbox, and why.
            try:
                check_folder_name(action.mailbox)  # pochta's Maildir store's name rules
            except StoreError as e:
                out.ok = False
                out.errors.append(
                    f"failed to store into mailbox {action.mailbox!r}: invalid name ({e})"
                )
                continue
            if not store.exists(action.mailbox):
                if not action.create:
                    out.ok = False
                    out.errors.append(
                        f"failed to store into mailbox {action.mailbox!r}: it does not exist "
                        "(fileinto without :create)"
                    )
                    continue
                store.create(action.mailbox)
            store.append(action.mailbox, content, action.flags)
        elif isinstance(action, Redirect):
            # RFC 5228 §4.2: the envelope sender is kept.
            outbox.append(CapturedMessage(envelope.sender, action.address, content))
        elif isinstance(action, Reject):
            if envelope.sender:  # RFC 5429 §2.1: never to the null sender
                notice = reject_notice(envelope, action.reason, message)
                outbox.append(CapturedMessage("", envelope.sender, notice))
        elif isinstance(action, Vacation):
            builder = _vacation_builder()
            if builder is None:
                out.ok = False
                out.errors.append("vacation: pochta.sieve.vacation.build_reply not built yet")
                continue
            reply = builder(
                action,
                message,
                date=datetime.now(UTC),
                message_id=make_msgid(domain=TESTSUITE_USER.partition("@")[2]),
            )
            # RFC 5230 §5.1: the reply goes out with the null sender.
            outbox.append(CapturedMessage("", action.to, reply))
    if result.implicit_keep:
        store.append("INBOX", result.final_content or message, result.keep_flags)
    elif not out.ok and not any(isinstance(a, Keep) for a in result.actions):
        # RFC 5228 §2.10.6: when an action fails, the implicit keep is carried out, with
        # the message as received (as Dovecot: no editheader changes).
        store.append("INBOX", message)
    return out
