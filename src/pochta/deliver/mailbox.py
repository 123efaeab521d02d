"""The local mailbox agent (Postfix virtual(8) / Dovecot LMTP): one recipient, one mailbox.

Per recipient it prepends Return-Path (RFC 5321 §4.4: added by the final delivery) and
Delivered-To (loop detection, as Postfix and Dovecot do), checks the quota, and stores the
message with a dedupe key of queue id + recipient, so a delivery repeated after a crash finds
the first copy instead of making a second one (the key is looked up in the whole account,
so a retry that would choose another folder still finds the first copy).

The folder (:meth:`MailboxAgent.folder_for`):

1. the folder of the message's verdict (``Verdict.delivery_folder``, e.g. "Junk" from the
   spam filter), created when missing, as Dovecot's ``lda_mailbox_autocreate = yes``;
2. else, with ``delivery.save_to_detail_mailbox``, the folder named by the address extension
   (``user+lists@`` -> "lists"), as Dovecot's ``lmtp_save_to_detail_mailbox``, but only when
   the account has it: Dovecot would create it only with lda_mailbox_autocreate, and we
   never let a sender make folders by choosing an address, so a detail with no folder goes
   to INBOX;
3. else INBOX.

A verdict folder the store refuses (a bad name) falls back to INBOX: the message is
delivered, and the log says why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pochta.directory.base import Directory
from pochta.logs import get_logger
from pochta.mime.headers import leading_fields
from pochta.protocols.smtp.replies import Reply
from pochta.store.base import INBOX, MailStore, StoreError, StoreFull, StoreUnavailable

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
    def __init__(
        self,
        store: MailStore,
        directory: Directory,
        *,
        default_message_limit: int = 0,
        save_to_detail_mailbox: bool = False,
    ):
        self.store = store
        self.directory = directory
        self.default_message_limit = default_message_limit
        self.save_to_detail_mailbox = save_to_detail_mailbox

    def folder_for(self, account: str, verdict_folder: str, extension: str) -> str:
        """The folder to deliver into (see the module docstring for the order)."""
        if verdict_folder:
            return verdict_folder
        if not (self.save_to_detail_mailbox and extension):
            return INBOX
        # Dovecot's lmtp_save_to_detail_mailbox: the detail names the folder as written.
        try:
            folders = self.store.list_folders(account)
        except StoreUnavailable:
            raise
        except StoreError:  # an account not made on disk yet has only INBOX to come
            return INBOX
        return extension if any(f.name == extension for f in folders) else INBOX

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
        verdict_folder: str = "",
        extension: str = "",
    ) -> MailboxResult:
        """Deliver one copy to ``account``; ``verdict_folder`` and ``extension`` choose the
        folder (:meth:`folder_for`)."""
        if delivered_to_loop(content, account):
            reply = Reply(554, "5.4.6", f"<{account}>: mail forwarding loop (Delivered-To)")
            return MailboxResult(recipient, reply)
        message = delivery_headers(sender, account) + content
        over = self.quota_reply(account, len(message))
        if over is not None:
            return MailboxResult(recipient, over)
        dedupe_key = f"{queue_id}/{recipient}"
        try:
            folder = await asyncio.to_thread(self.folder_for, account, verdict_folder, extension)
            try:
                done = await asyncio.to_thread(
                    self.store.deliver, account, message, folder=folder, dedupe_key=dedupe_key
                )
            except (StoreFull, StoreUnavailable):
                raise
            except StoreError as exc:
                if folder == INBOX:
                    raise
                log.warning(
                    "folder_refused",
                    queue_id=queue_id,
                    account=account,
                    folder=folder,
                    error=str(exc),
                )
                done = await asyncio.to_thread(
                    self.store.deliver, account, message, folder=INBOX, dedupe_key=dedupe_key
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
