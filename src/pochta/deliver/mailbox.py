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

With ``[sieve] enabled`` (``sieve``, deliver/sieve_delivery.py) the account's scripts decide
instead: the folder above is their default mailbox (keep), and the agent stores each copy
they ask for (fileinto, with flags), refuses (reject), drops (discard) or has the redirects
and vacation replies sent. The first copy has the dedupe key queue id + recipient, each
further one that key + "/" + its folder, so a retry finds every copy made before.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from pochta.cleanup.verdict import Verdict
from pochta.deliver import local_write
from pochta.deliver.sieve_delivery import DeliveryInfo, Plan, SieveDelivery, reject_reply
from pochta.directory.base import Directory
from pochta.logs import get_logger
from pochta.mime.headers import leading_fields
from pochta.protocols.smtp.replies import Reply
from pochta.resolve.classes import table_mailbox_problem
from pochta.sieve.repository import StoredScript
from pochta.store.base import (
    INBOX,
    Delivered,
    MailStore,
    StoreError,
    StoreFull,
    StoreUnavailable,
)

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


@dataclass(frozen=True, slots=True)
class _Chosen:
    """What :meth:`MailboxAgent._choose_and_store` did in its thread: the folder and the
    scripts; ``stored`` when it stored the message, ``failed`` when the store refused it,
    neither when the scripts are to decide."""

    folder: str
    scripts: list[StoredScript] | Exception
    stored: Delivered | None = None
    failed: StoreError | None = None


class MailboxAgent:
    def __init__(
        self,
        store: MailStore,
        directory: Directory,
        *,
        default_message_limit: int = 0,
        save_to_detail_mailbox: bool = False,
        sieve: SieveDelivery | None = None,
        mail_dir: Path | None = None,
        hostname: str = "localhost",
    ):
        self.store = store
        # The root of virtual_mailbox_maps paths (virtual(8) virtual_mailbox_base).
        self.mail_dir = mail_dir
        self.hostname = hostname
        self.directory = directory
        self.default_message_limit = default_message_limit
        self.save_to_detail_mailbox = save_to_detail_mailbox
        self.sieve = sieve

    def folder_exists(self, account: str, name: str) -> bool:
        """Whether ``account`` has the folder ``name`` (Sieve's mailboxexists, fileinto)."""
        if name.upper() == INBOX:
            return True
        try:
            return any(f.name == name for f in self.store.list_folders(account))
        except StoreUnavailable:
            raise
        except StoreError:
            return False

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

    def _folder_and_scripts(
        self, account: str, verdict_folder: str, extension: str
    ) -> tuple[str, list[StoredScript] | Exception]:
        """The folder delivery picks (:meth:`folder_for`) and, with Sieve, the account's
        scripts, or the error reading them (the plan then keeps the message)."""
        folder = self.folder_for(account, verdict_folder, extension)
        if self.sieve is None:
            return folder, []
        try:
            return folder, self.sieve.source.delivery_scripts(account)
        except Exception as exc:  # the scripts' disk: the plan says so and keeps the message
            return folder, exc

    def _choose_and_store(
        self, account: str, verdict_folder: str, extension: str, message: bytes, dedupe_key: str
    ) -> _Chosen:
        """In a thread: :meth:`_folder_and_scripts`, and when no script is to run, the
        message stored in that folder as well, so the usual delivery (no Sieve script) takes
        one trip to a thread, not two. A store error is returned, not raised: the caller
        decides whether INBOX is tried instead."""
        folder, scripts = self._folder_and_scripts(account, verdict_folder, extension)
        if self.sieve is not None and scripts:  # the scripts (or their error) decide
            return _Chosen(folder, scripts)
        try:
            done = self.store.deliver(account, message, folder=folder, dedupe_key=dedupe_key)
        except StoreError as exc:
            return _Chosen(folder, scripts, failed=exc)
        return _Chosen(folder, scripts, stored=done)

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
        verdict: Verdict | None = None,
        original_recipient: str = "",
        client_ip: str = "",
        client_host: str = "",
        auth_user: str = "",
        lmtp: bool = False,
    ) -> MailboxResult:
        """Deliver one copy to ``account``; ``verdict_folder`` and ``extension`` choose the
        folder (:meth:`folder_for`). With Sieve, the scripts decide (module docstring); the
        rest of the arguments are what they see of the envelope and the client."""
        if delivered_to_loop(content, account):
            reply = Reply(554, "5.4.6", f"<{account}>: mail forwarding loop (Delivered-To)")
            return MailboxResult(recipient, reply)
        message = delivery_headers(sender, account) + content
        over = self.quota_reply(account, len(message))
        if over is not None:
            return MailboxResult(recipient, over)
        dedupe_key = f"{queue_id}/{recipient}"
        try:
            # One trip to a thread for the folder, the account's scripts and, when there is
            # no script, the store: delivery with Sieve on and no script costs what it costs
            # with Sieve off.
            chosen = await asyncio.to_thread(
                self._choose_and_store, account, verdict_folder, extension, message, dedupe_key
            )
        except StoreError as exc:
            log.error("mailbox_write_failed", queue_id=queue_id, account=account, error=str(exc))
            return MailboxResult(recipient, Reply(451, "4.3.0", "mailbox temporarily unavailable"))
        folder, scripts = chosen.folder, chosen.scripts
        if self.sieve is not None and chosen.stored is None and chosen.failed is None:
            # The scripts decide.
            info = DeliveryInfo(
                queue_id=queue_id,
                sender=sender,
                recipient=recipient,
                account=account,
                original_recipient=original_recipient,
                extension=extension,
                verdict=verdict if verdict is not None else Verdict(),
                client_ip=client_ip,
                client_host=client_host,
                auth_user=auth_user,
                lmtp=lmtp,
            )
            plan = await self.sieve.plan(info, content, folder, scripts=scripts)
            if plan is not None:
                return await self._deliver_plan(self.sieve, info, plan, content)
        try:
            try:
                if chosen.failed is not None:
                    raise chosen.failed
                done = chosen.stored
                if done is None:  # the scripts only kept the message: stored now
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

    async def deliver_table_mailbox(
        self, *, queue_id: str, sender: str, recipient: str, path: str, content: bytes
    ) -> MailboxResult:
        """A virtual_mailbox_maps mailbox (no directory account): ``path`` under ``mail_dir``,
        a Maildir when it ends in ``/``, else an mbox file, as Postfix virtual(8) writes
        them, as the server's user (virtual_uid_maps: ours). No quota applies (Postfix's
        virtual_mailbox_limit is the message size limit, checked at SMTP already), no Sieve
        (no account to hold scripts), no index: the mail is read from the files."""
        problem = table_mailbox_problem(path)
        if self.mail_dir is None or problem is not None:
            # The resolver refuses such a value at RCPT; a queue file older than the fix
            # waits here until the table is corrected.
            log.error(
                "table_mailbox_unusable",
                queue_id=queue_id,
                recipient=recipient,
                path=path,
                error=problem or "no mail_dir",
            )
            return MailboxResult(recipient, Reply(451, "4.3.5", "mailbox configuration error"))
        if delivered_to_loop(content, recipient):
            reply = Reply(554, "5.4.6", f"<{recipient}>: mail forwarding loop (Delivered-To)")
            return MailboxResult(recipient, reply)
        message = delivery_headers(sender, recipient) + content
        target = os.path.join(self.mail_dir, path)
        try:
            if path.endswith("/"):
                await asyncio.to_thread(local_write.write_maildir, target, message, self.hostname)
            else:
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                entry = local_write.format_mbox(sender, message)
                await asyncio.to_thread(local_write.append_mbox, target, entry)
        except (local_write.WriteError, OSError) as exc:
            if isinstance(exc, OSError):
                exc = local_write.WriteError("4.3.0", f"cannot create the directory: {exc}")
            log.error("mailbox_write_failed", queue_id=queue_id, path=target, error=str(exc))
            code = 451 if exc.temporary else 550
            return MailboxResult(recipient, Reply(code, exc.status, "mailbox write failed"))
        log.info("table_mailbox_delivered", queue_id=queue_id, recipient=recipient, path=target)
        return MailboxResult(recipient, Reply(250, "2.0.0", f"delivered to {recipient}"))

    async def _deliver_plan(
        self, sieve: SieveDelivery, info: DeliveryInfo, plan: Plan, content: bytes
    ) -> MailboxResult:
        """Carry out what the scripts decided (deliver/sieve_delivery.py)."""
        queue_id, account, recipient = info.queue_id, info.account, info.recipient
        for error in plan.errors:
            log.warning("sieve_conflict", queue_id=queue_id, account=account, note=error)
        if plan.reject is not None:
            reply = reject_reply(plan.reject)
            log.info(
                "sieve_reject",
                queue_id=queue_id,
                account=account,
                extended=plan.reject.extended,
                reply=str(reply),
            )
            return MailboxResult(recipient, reply)
        headers = delivery_headers(info.sender, account)
        if plan.copies:
            # Every copy counts against the quota (fileinto + keep stores the message twice):
            # the sum must fit, as Dovecot checks each save.
            total = sum(
                len(headers) + len(c.content if c.content is not None else content)
                for c in plan.copies
            )
            over = self.quota_reply(account, total)
            if over is not None:
                log.info(
                    "sieve_over_quota",
                    queue_id=queue_id,
                    account=account,
                    copies=len(plan.copies),
                    size=total,
                    reply=str(over),
                )
                return MailboxResult(recipient, over)
        stored: list[str] = []
        try:
            for n, copy in enumerate(plan.copies):
                message = headers + (copy.content if copy.content is not None else content)
                key = (
                    f"{queue_id}/{recipient}" if n == 0 else f"{queue_id}/{recipient}/{copy.folder}"
                )
                folder = copy.folder
                if copy.explicit and not copy.create:
                    exists = await asyncio.to_thread(self.folder_exists, account, folder)
                    if not exists:
                        # RFC 5228 §4.1 leaves it to us; Dovecot (lda_mailbox_autocreate=no)
                        # files into INBOX and logs the error.
                        log.warning(
                            "sieve_fileinto_failed",
                            queue_id=queue_id,
                            account=account,
                            folder=folder,
                            error="no such folder (fileinto :create makes it); kept in INBOX",
                        )
                        folder = INBOX
                done = await self._store_copy(queue_id, account, message, folder, copy.flags, key)
                stored.append(done.folder)
                log.info(
                    "sieve_fileinto" if copy.explicit else "sieve_keep",
                    queue_id=queue_id,
                    account=account,
                    folder=done.folder,
                    uid=done.uid,
                    flags=" ".join(sorted(copy.flags)),
                    duplicate=done.duplicate,
                )
        except StoreFull as exc:
            log.warning("mailbox_write_failed", queue_id=queue_id, account=account, error=str(exc))
            return MailboxResult(recipient, Reply(452, "4.3.1", "mailbox storage full, try later"))
        except StoreError as exc:
            log.error("mailbox_write_failed", queue_id=queue_id, account=account, error=str(exc))
            return MailboxResult(recipient, Reply(451, "4.3.0", "mailbox temporarily unavailable"))
        await sieve.record_duplicates(info, plan)
        failure = await sieve.side_effects(info, plan, content)
        if failure is not None:
            return MailboxResult(recipient, failure)
        if stored:
            text = f"delivered to {account} {', '.join(stored)} by Sieve"
        elif plan.redirects:
            text = "redirected by Sieve"
        else:
            log.info("sieve_discard", queue_id=queue_id, account=account)
            text = "discarded by Sieve"
        return MailboxResult(recipient, Reply(250, "2.0.0", text))

    async def _store_copy(
        self,
        queue_id: str,
        account: str,
        message: bytes,
        folder: str,
        flags: frozenset[str],
        key: str,
    ) -> Delivered:
        """One copy into ``folder``; a folder (or flag) the store refuses falls back to
        INBOX, logged, so the message is not lost."""
        try:
            return await asyncio.to_thread(
                self.store.deliver, account, message, folder=folder, flags=flags, dedupe_key=key
            )
        except (StoreFull, StoreUnavailable):
            raise
        except StoreError as exc:
            if folder == INBOX and not flags:
                raise
            log.warning(
                "sieve_fileinto_failed",
                queue_id=queue_id,
                account=account,
                folder=folder,
                error=str(exc),
            )
            return await asyncio.to_thread(
                self.store.deliver, account, message, folder=INBOX, dedupe_key=key
            )
