"""IMAP commands on folders (RFC 9051 §6.3; RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS,
RFC 3502 MULTIAPPEND, RFC 4469 CATENATE, RFC 9208 QUOTA, RFC 5161 ENABLE).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from pochta.access.binary_content import encode_binary_parts, needs_encoding
from pochta.access.imap_errors import Bad, No
from pochta.access.imap_list import canonical_pattern, list_entries
from pochta.access.imap_selected import SelectedMailbox
from pochta.access.imap_session import SYSTEM_FLAGS
from pochta.access.imap_urlauth import BadUrl, badurl_code, catenate
from pochta.logs import get_logger
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command
from pochta.protocols.imap.values import Atom, IMAPValue
from pochta.store import (
    INBOX,
    Delivered,
    FlagMode,
    FolderExists,
    FolderInfo,
    NoSuchFolder,
    StoreError,
)

if TYPE_CHECKING:
    pass

log = get_logger("imap")

READ_CHUNK = 65536
T = TypeVar("T")


class FolderCommands(SelectedMailbox):
    """The authenticated-state commands on folders: ENABLE, NAMESPACE, CREATE, DELETE,
    RENAME, (UN)SUBSCRIBE, LIST, LSUB, STATUS, APPEND, GETQUOTA(ROOT)."""

    async def cmd_enable(self, cmd: Command) -> str:
        # RFC 5161
        done = []
        for cap in C.enable_args(cmd).capabilities:
            upper = cap.upper()
            if upper in ("CONDSTORE", "QRESYNC", "IMAP4REV2", "UTF8=ACCEPT") and (
                upper not in self.enabled
            ):
                self.enabled.add(upper)
                if upper == "QRESYNC":
                    self.enabled.add("CONDSTORE")
                done.append(Atom(cap))
        self.untagged(Atom("ENABLED"), *done)
        return "ENABLE completed"

    async def cmd_namespace(self, cmd: Command) -> str:
        # RFC 2342: one personal namespace, no others.
        self.untagged(Atom("NAMESPACE"), [["", "."]], None, None)
        return "NAMESPACE completed"

    async def cmd_create(self, cmd: Command) -> str:
        args = C.create_args(cmd)
        wire, special = args.mailbox, args.special_use
        name = self.folder_name(wire).rstrip(".")
        if name.upper() == INBOX:
            raise No("INBOX exists already", "ALREADYEXISTS")
        if special and len(special) > 1:
            raise No("One special use per folder", "USEATTR")
        try:
            await self.blocking(
                self.store.create_folder,
                self.user,
                name,
                special_use=special[0] if special else None,
            )
        except FolderExists as exc:
            raise No(str(exc), "ALREADYEXISTS") from exc
        return "CREATE completed"

    async def cmd_delete(self, cmd: Command) -> str:
        name = self.folder_name(C.mailbox_arg(cmd))
        if name == INBOX:
            raise No("INBOX cannot be deleted", "CANNOT")
        if self.view is not None and self.view.name == name:
            self._close_view()
        await self.blocking(self.store.delete_folder, self.user, name)
        return "DELETE completed"

    async def cmd_rename(self, cmd: Command) -> str:
        args = C.rename_args(cmd)
        old, new = args.old, args.new
        try:
            await self.blocking(
                self.store.rename_folder, self.user, self.folder_name(old), self.folder_name(new)
            )
        except FolderExists as exc:
            raise No(str(exc), "ALREADYEXISTS") from exc
        return "RENAME completed"

    async def cmd_subscribe(self, cmd: Command) -> str:
        await self.blocking(self.store.subscribe, self.user, self.folder_name(C.mailbox_arg(cmd)))
        return "SUBSCRIBE completed"

    async def cmd_unsubscribe(self, cmd: Command) -> str:
        await self.blocking(self.store.unsubscribe, self.user, self.folder_name(C.mailbox_arg(cmd)))
        return "UNSUBSCRIBE completed"

    async def cmd_list(self, cmd: Command) -> str:
        args = C.list_args(cmd)
        if not args.patterns or args.patterns == [""]:
            # RFC 9051 §6.3.9: the empty pattern asks for the separator and root.
            self.untagged(Atom("LIST"), [Atom("\\Noselect")], ".", "")
            return "LIST completed"
        folders, subs = await self.reading(
            self._folders_and_subscriptions, counts=bool(args.status_items)
        )
        patterns = [
            self.folder_name(canonical_pattern(args.reference, p))
            if "*" not in p and "%" not in p
            else (
                canonical_pattern(args.reference, p)
                if self.utf8
                else C.decode_mailbox_loose(canonical_pattern(args.reference, p))
            )
            for p in args.patterns
        ]
        options = args.options
        entries = list_entries(folders, subs, patterns, options)
        for entry in entries:
            extra: list[IMAPValue] = []
            if entry.child_info:
                extra = [["CHILDINFO", ["SUBSCRIBED"]]]
            self.untagged(
                Atom("LIST"),
                [Atom(a) for a in entry.attributes],
                ".",
                self.wire_name(entry.name),
                *extra,
            )
            if args.status_items and entry.folder is not None:
                self._status_response(entry.folder, args.status_items)
        return "LIST completed"

    async def cmd_lsub(self, cmd: Command) -> str:
        args = C.list_args(cmd)
        folders, subs = await self.reading(self._folders_and_subscriptions)
        patterns = [canonical_pattern(args.reference, p) for p in args.patterns]
        for entry in list_entries(folders, subs, patterns, C.ListOptions(lsub=True)):
            attrs = [a for a in entry.attributes if a in ("\\Noselect",)]
            self.untagged(Atom("LSUB"), [Atom(a) for a in attrs], ".", self.wire_name(entry.name))
        return "LSUB completed"

    def _folders_and_subscriptions(
        self, *, quick: bool = False, counts: bool = False
    ) -> tuple[list[FolderInfo], list[str]]:
        """The folders (with their counts when ``counts``: LIST-STATUS) and subscriptions."""
        assert self.user is not None
        return (
            self.store.list_folders(self.user, quick=quick, counts=counts),
            self.store.list_subscriptions(self.user, quick=quick),
        )

    async def cmd_status(self, cmd: Command) -> str:
        args = C.status_args(cmd)
        wire, items = args.mailbox, args.items
        name = self.folder_name(wire)
        assert self.user is not None
        try:
            # One index read on the loop: the folder's row and counts (SQL does the counting).
            status = await self.reading(self.store.folder_status, self.user, name)
        except NoSuchFolder:
            raise No(f"No mailbox {wire}", "NONEXISTENT") from None
        self._status_response(status.folder, items, status.deleted, status.recent)
        return "STATUS completed"

    def _status_response(
        self,
        folder: FolderInfo,
        items: Iterable[str],
        deleted: int | None = None,
        recent: int | None = None,
    ) -> None:
        values: list[IMAPValue] = []
        for item in items:
            item = item.upper()
            value: int | None = {
                "MESSAGES": folder.messages,
                "UIDNEXT": folder.uidnext,
                "UIDVALIDITY": folder.uidvalidity,
                "UNSEEN": folder.unseen,
                "SIZE": folder.size,
                "RECENT": recent if recent is not None else 0,
                "HIGHESTMODSEQ": folder.highestmodseq,
                "DELETED": deleted,
                "APPENDLIMIT": self._append_limit(),
            }.get(item)
            if value is None:
                continue
            values += [Atom(item), value]
        self.untagged(Atom("STATUS"), self.wire_name(folder.name), values)

    async def cmd_append(self, cmd: Command) -> str:
        args = C.append_args(cmd)
        wire, parsed = args.mailbox, args.messages
        name = self.folder_name(wire)
        uids: list[int] = []
        uidvalidity = 0
        for flags, _, data in parsed:  # everything is checked before anything is stored
            if isinstance(data, bytes) and len(data) > self._append_limit():
                raise No("Message too large", "TOOBIG")
            bad = [f for f in flags if f.startswith("\\") and f not in SYSTEM_FLAGS]
            if bad:
                raise Bad(f"Flag {bad[0]} cannot be set")
        messages = [(f, w, d) for f, w, d in parsed if isinstance(d, bytes)]
        if len(messages) < len(parsed):
            messages = await self._catenated(wire, name, parsed)
        total: int | None = sum(len(data) for _, _, data in messages)
        try:
            for flags, when, data in messages:
                done = await self.blocking(self._append_one, name, flags, when, data, total)
                total = None  # the quota is checked once, for all of them
                uids.append(done.uid)
                uidvalidity = done.uidvalidity
        except NoSuchFolder as exc:
            raise No(f"No mailbox {wire}", "TRYCREATE") from exc
        except (StoreError, No):
            # RFC 3502 §4: MULTIAPPEND is all or nothing; take back what went in.
            if uids:
                await self._take_back(name, uids)
            raise
        code = f"APPENDUID {uidvalidity} {C.uid_set_text(uids)}"
        await self._updates_after("APPEND", cmd)
        self.send(C.tagged(cmd.tag, "OK", "APPEND completed", code))
        return None  # type: ignore[return-value]

    def _append_one(
        self,
        name: str,
        flags: list[str],
        when: dt.datetime | None,
        data: bytes,
        quota_size: int | None,
    ) -> Delivered:
        """One message of an APPEND in one thread trip: the quota check for ``quota_size``
        octets (RFC 9208 §4.3, before the first one), the re-encoding of binary parts, and
        the store's append."""
        assert self.user is not None
        if quota_size is not None and self.mail.mailbox.quota_reply(self.user, quota_size):
            raise _over_quota()
        if needs_encoding(data):
            data = encode_binary_parts(data)
        return self.store.append(
            self.user,
            name,
            data,
            flags=frozenset(flags),
            internal_date=when.timestamp() if when is not None else None,
        )

    async def _catenated(
        self,
        wire: str,
        name: str,
        parsed: list[C.AppendMessage],
    ) -> list[tuple[list[str], dt.datetime | None, bytes]]:
        """RFC 4469 §5: each CATENATE joined into one message before anything is stored
        (all or nothing, as MULTIAPPEND); the URLs read in a thread."""
        assert self.user is not None
        folders = await self.blocking(self.store.list_folders, self.user)
        if not any(f.name == name for f in folders):
            # RFC 4469 §5: TRYCREATE as for APPEND, before any URL is looked at.
            raise No(f"No mailbox {wire}", "TRYCREATE")
        out: list[tuple[list[str], dt.datetime | None, bytes]] = []
        for flags, when, data in parsed:
            if not isinstance(data, bytes):
                try:
                    data = await self.blocking(
                        catenate, self.store, data, user=self.user, now=time.time()
                    )
                except BadUrl as exc:
                    raise No(
                        "The URL names no message you may read", badurl_code(exc.url)
                    ) from None
                if len(data) > self._append_limit():
                    # RFC 4469 §6: TOOBIG, the joined message is larger than APPENDLIMIT.
                    raise No("Message too large once joined", "TOOBIG")
            out.append((flags, when, data))
        return out

    async def _check_quota(self, size: int) -> None:
        """RFC 9208 §4.3 (OVERQUOTA): APPEND and COPY refused when the mail would not fit."""
        assert self.user is not None
        reply = await self.blocking(self.mail.mailbox.quota_reply, self.user, size)
        if reply is not None:
            raise _over_quota()

    async def _take_back(self, folder: str, uids: list[int]) -> None:
        assert self.user is not None
        try:
            await asyncio.to_thread(
                self.store.store_flags,
                self.user,
                folder,
                uids,
                FlagMode.ADD,
                frozenset({"\\Deleted"}),
            )
            await asyncio.to_thread(self.store.expunge, self.user, folder, uids)
        except StoreError as exc:
            log.error("append_rollback_failed", user=self.user, folder=folder, error=str(exc))

    async def cmd_getquotaroot(self, cmd: Command) -> str:
        # RFC 9208 §4.3.2: one quota root "" per account, for every folder.
        name = self.folder_name(C.mailbox_arg(cmd))
        folders = await self.blocking(self.store.list_folders, self.user)
        if not any(f.name == name for f in folders):
            raise No(f"No mailbox {name}", "NONEXISTENT")
        self.untagged(Atom("QUOTAROOT"), self.wire_name(name), "")
        await self._quota_response()
        return "GETQUOTAROOT completed"

    async def cmd_getquota(self, cmd: Command) -> str:
        if C.quota_root_arg(cmd) != "":
            raise No("No such quota root", "NONEXISTENT")
        await self._quota_response()
        return "GETQUOTA completed"

    async def _quota_response(self) -> None:
        assert self.user is not None
        account = self.server.directory.get_account(self.user)
        usage = await self.blocking(self.store.quota_usage, self.user)
        resources: list[IMAPValue] = []
        if account is not None and account.quota_bytes > 0:
            # RFC 9208 §5.1: STORAGE in units of 1024 octets.
            resources += [
                Atom("STORAGE"),
                (usage.bytes + 1023) // 1024,
                account.quota_bytes // 1024,
            ]
        limit = self.server.settings.store.default_message_limit
        if limit > 0:
            resources += [Atom("MESSAGE"), usage.messages, limit]
        self.untagged(Atom("QUOTA"), "", resources)


def _over_quota() -> No:
    """RFC 9208 §4.3: APPEND or COPY refused, the mail would not fit."""
    return No("Quota exceeded: delete some mail first", "OVERQUOTA")
