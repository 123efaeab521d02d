"""The local mailbox agent (Postfix virtual(8) / Dovecot LMTP): one recipient, one mailbox.

Per recipient it prepends Return-Path (RFC 5321 §4.4: added by the final delivery) and
Delivered-To (loop detection, as Postfix and Dovecot do), checks the quota, and stores the
message with a dedupe key of queue id + recipient, so a delivery repeated after a crash finds
the first copy instead of making a second one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pochta.directory.base import Directory
from pochta.logs import get_logger
from pochta.mime.headers import leading_fields
from pochta.protocols.smtp.replies import Reply
from pochta.store.base import MailStore, StoreError, StoreFull

log = get_logger("deliver.mailbox")

# RFC 5321 §6.3 / Postfix: a message that already carries Delivered-To for this recipient is
# looping back to it.
MAX_DELIVERED_TO_SCAN_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class MailboxResult:
    recipient: str
    reply: Reply

    @property
    def outcome(self) -> str:
        if self.reply.is_positive:
            return "delivered"
        return "deferred" if self.reply.is_transient else "bounced"


def delivered_to_loop(content: bytes, account: str) -> bool:
    """Whether a Delivered-To field of the header block (its first
    MAX_DELIVERED_TO_SCAN_BYTES; ``mime.headers`` decides where it ends, RFC 5322 §2.2)
    names ``account``, compared without case."""
    needle = account.lower()
    return any(
        field.key == "delivered-to" and field.text.lower() == needle
        for field in leading_fields(content, MAX_DELIVERED_TO_SCAN_BYTES)
    )


def delivery_headers(sender: str, account: str) -> bytes:
    # RFC 5321 §4.4: Return-Path carries the envelope sender, <> for the null sender.
    return f"Return-Path: <{sender}>\r\nDelivered-To: {account}\r\n".encode()


class MailboxAgent:
    def __init__(self, store: MailStore, directory: Directory, *, default_message_limit: int = 0):
        self.store = store
        self.directory = directory
        self.default_message_limit = default_message_limit

    def quota_reply(self, account: str, size: int) -> Reply | None:
        """None when ``size`` more bytes fit; else 452 4.2.2 or, if it can never fit, 552 5.2.2."""
        acct = self.directory.get_account(account)
        if acct is None:
            return Reply(550, "5.1.1", f"<{account}>: no such user here")
        if acct.quota_bytes <= 0 and self.default_message_limit <= 0:
            return None
        check = self.store.check_quota(account, acct.quota_bytes, self.default_message_limit, size)
        if check.ok:
            return None
        if check.permanent:
            return Reply(552, "5.2.2", f"<{account}>: message is larger than the whole quota")
        return Reply(452, "4.2.2", f"<{account}>: mailbox full")

    async def deliver(
        self,
        *,
        queue_id: str,
        sender: str,
        recipient: str,
        account: str,
        content: bytes,
        folder: str = "INBOX",
    ) -> MailboxResult:
        if delivered_to_loop(content, account):
            reply = Reply(554, "5.4.6", f"<{account}>: mail forwarding loop (Delivered-To)")
            return MailboxResult(recipient, reply)
        message = delivery_headers(sender, account) + content
        over = self.quota_reply(account, len(message))
        if over is not None:
            return MailboxResult(recipient, over)
        try:
            done = await asyncio.to_thread(
                self.store.deliver,
                account,
                message,
                folder=folder,
                dedupe_key=f"{queue_id}/{recipient}",
            )
        except StoreFull as exc:  # the disk of the mailboxes is full: try again later
            log.warning("mailbox_write_failed", queue_id=queue_id, account=account, error=str(exc))
            # RFC 3463 §3.4: X.3.1 mail system full.
            return MailboxResult(recipient, Reply(452, "4.3.1", "mailbox storage full, try later"))
        except StoreError as exc:  # StoreUnavailable and the rest: try again later
            log.error("mailbox_write_failed", queue_id=queue_id, account=account, error=str(exc))
            return MailboxResult(recipient, Reply(451, "4.3.0", "mailbox temporarily unavailable"))
        text = f"delivered to {account} {done.folder} uid {done.uid}"
        if done.duplicate:
            text += " (already delivered)"
        return MailboxResult(recipient, Reply(250, "2.0.0", text))
