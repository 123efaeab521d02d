"""The selected-mailbox state of an IMAP session (RFC 9051 §3.3, §6.3.2, §7.5; RFC 7162
CONDSTORE/QRESYNC; RFC 2177 IDLE).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from pochta.access.imap_errors import Bad, Closed, No
from pochta.access.imap_session import SYSTEM_FLAGS, SessionBase
from pochta.access.mailbox_view import MailboxView, ViewUpdate
from pochta.logs import get_logger
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command
from pochta.protocols.imap.session_state import IdleDone, Mode
from pochta.protocols.imap.values import Atom, IMAPValue
from pochta.store import (
    MessageInfo,
    NoSuchFolder,
    StoreError,
    WouldBlock,
)

if TYPE_CHECKING:
    from pochta.access.imap_context import LiveContexts

log = get_logger("imap")

READ_CHUNK = 65536
T = TypeVar("T")


class SelectedMailbox(SessionBase):
    """SELECT/EXAMINE, the selected folder's view kept in step with other sessions and
    deliveries (untagged EXISTS, EXPUNGE/VANISHED, FETCH FLAGS), CLOSE/UNSELECT, IDLE."""

    # RFC 5267 §4.3: SEARCH/SORT results kept up to date (imap_context.py), None if none.
    contexts: LiveContexts | None = None

    # -- selecting --------------------------------------------------------------------------

    async def cmd_select(self, cmd: Command) -> str:
        return await self._select(cmd, readonly=False)

    async def cmd_examine(self, cmd: Command) -> str:
        return await self._select(cmd, readonly=True)

    async def _select(self, cmd: Command, *, readonly: bool) -> str:
        args = C.select_args(cmd)
        if args.qresync is not None and not self.qresync:
            raise Bad("Enable QRESYNC first")
        if self.view is not None:
            self._close_view()
            # RFC 9051 §6.3.2 (IMAP4rev2) and RFC 7162 §3.2 (QRESYNC): the CLOSED code
            # marks where the previous mailbox's responses end.
            if self.qresync or self.rev2:
                self.untagged(Atom("OK"), b"[CLOSED] Previous mailbox closed")
        name = self.folder_name(args.mailbox)
        assert self.user is not None
        try:
            changes = await self.blocking(self.store.folder_changes, self.user, name, 0)
        except NoSuchFolder as exc:
            raise No(f"No mailbox {args.mailbox}", "NONEXISTENT") from exc
        if args.condstore:
            self.enabled.add("CONDSTORE")
        view = MailboxView(name, changes)
        self.view = view
        self.readonly = readonly
        self._recent_asked = 0
        await self._claim_recent(claim=not readonly)
        self._watch(name)
        # Every keyword ever set in the folder, not only those messages carry now: the
        # list a client learnt must not shrink (Dovecot keeps them all too).
        keywords = sorted(
            set(changes.keywords) | {k for m in view.info.values() for k in m.keywords}
        )
        self._keywords = set(keywords)
        flags: list[IMAPValue] = [*(Atom(f) for f in SYSTEM_FLAGS), *(Atom(k) for k in keywords)]
        self.untagged(Atom("FLAGS"), flags)
        self.untagged(view.exists, Atom("EXISTS"))
        if not self.rev2:
            self.untagged(len(view.recent), Atom("RECENT"))
        if self.rev2:
            self.untagged(Atom("LIST"), [], ".", self.wire_name(name))
        permanent: list[IMAPValue] = [] if readonly else [*flags, Atom("\\*")]
        self._ok_code("PERMANENTFLAGS " + C.render_text(permanent), "Flags permitted")
        self._ok_code(f"UIDVALIDITY {view.uidvalidity}", "UIDs valid")
        self._ok_code(f"UIDNEXT {view.uidnext}", "Predicted next UID")
        if not self.rev2:
            unseen = next(
                (i + 1 for i, uid in enumerate(view.uids) if "\\Seen" not in view.info[uid].flags),
                None,
            )
            if unseen is not None:
                self._ok_code(f"UNSEEN {unseen}", "First unseen")
        if self.condstore:
            self._ok_code(f"HIGHESTMODSEQ {view.highestmodseq}", "Highest")
        if args.qresync is not None:
            await self._qresync(args.qresync)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        self.send(
            C.tagged(
                cmd.tag, "OK", "SELECT completed" if not readonly else "EXAMINE completed", mode
            )
        )
        return None  # type: ignore[return-value]

    def _condstore_on(self) -> None:
        """RFC 7162 §3.1: the first command that uses CONDSTORE enables it, and the client
        learns the selected folder's HIGHESTMODSEQ."""
        if self.condstore:
            return
        self.enabled.add("CONDSTORE")
        if self.view is not None:
            self._ok_code(f"HIGHESTMODSEQ {self.view.highestmodseq}", "Highest")

    def _ok_code(self, code: str, text: str) -> None:
        self.send(b"* OK [" + code.encode("utf-8") + b"] " + text.encode() + b"\r\n")

    async def _qresync(self, params: C.QResync) -> None:
        """RFC 7162 §3.2.5: tell what changed since the client's MODSEQ, when its UIDVALIDITY
        is still right."""
        view = self.view
        assert view is not None
        assert self.user is not None
        uidvalidity, modseq, known = params.uidvalidity, params.modseq, params.known_uids
        if uidvalidity != view.uidvalidity:
            return
        changes = await self.blocking(self.store.folder_changes, self.user, view.name, modseq)
        vanished = list(changes.vanished)
        if not changes.complete:
            present = set(view.uids)
            candidates = (
                known.resolve(view.uidnext) if known is not None else range(1, view.uidnext)
            )
            vanished = [u for u in candidates if u not in present]
        elif known is not None:
            allowed = set(known.resolve(view.uidnext))
            vanished = [u for u in vanished if u in allowed]
        if vanished:
            self.send(b"* VANISHED (EARLIER) " + C.uid_set_text(vanished).encode() + b"\r\n")
        for m in changes.changed:
            seq = view.seq_of(m.uid)
            if seq is not None:
                self._flags_fetch(seq, m, with_uid=True)

    def _close_view(self) -> None:
        self.view = None
        self.contexts = None  # RFC 5267 §4.3: updates cease when the mailbox is closed
        self._stop_watching()

    def _watch(self, name: str) -> None:
        self._stop_watching()
        hub = self.mail.changes
        if hub is not None and self.user is not None:
            self._dirty, self._unwatch = hub.watch(self.user, name, owner=self.change_origin)

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        self._unwatch = None
        self._dirty = None

    async def cmd_close(self, cmd: Command) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        if not self.readonly:
            # RFC 9051 §6.4.1: expunge silently.
            await self.writing(self.store.expunge, self.user, view.name, None)
        self._close_view()
        return "CLOSE completed"

    async def cmd_unselect(self, cmd: Command) -> str:
        self._close_view()
        return "UNSELECT completed"

    async def cmd_check(self, cmd: Command) -> str:
        return "CHECK completed"

    # -- untagged updates -------------------------------------------------------------------

    async def _updates_after(self, name: str, cmd: Command | None) -> None:
        """Tell the client what changed in the selected folder (RFC 9051 §7.5.1: no
        EXPUNGE during FETCH, STORE, SEARCH; their UID forms allow it), then what that
        changed in its live search results (RFC 5267 §4.3)."""
        await self._view_updates_after(name, cmd)
        if self.contexts and self.view is not None:
            self.send(await self.contexts.refresh(self.view.uids))

    async def _view_updates_after(self, name: str, cmd: Command | None) -> None:
        view = self.view
        if view is None or self.user is None:
            return
        # Our own changes to the selected folder are reported at once, not when the
        # store's notification reaches the loop.
        force = name in (
            "NOOP",
            "CHECK",
            "IDLE",
            "SELECT",
            "EXAMINE",
            "APPEND",
            "COPY",
            "UID COPY",
        )
        if not force and (self._dirty is None or not self._dirty.is_set()):
            if view.pending_expunge and name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD"):
                self._send_update(view.flush_expunges(use_vanished=self.qresync))
            return
        if self._dirty is not None:
            self._dirty.clear()
        allow = name not in ("FETCH", "STORE", "SEARCH", "SORT", "THREAD")
        try:
            try:
                # Usually one index read: cheaper here than a trip to a thread.
                changes = self.store.folder_changes(
                    self.user, view.name, view.highestmodseq, quick=True
                )
            except WouldBlock:
                changes = await asyncio.to_thread(
                    self.store.folder_changes, self.user, view.name, view.highestmodseq
                )
        except NoSuchFolder:
            self.send(b"* BYE The selected mailbox was deleted\r\n")
            raise Closed from None
        except StoreError:
            return
        if changes.uidvalidity != view.uidvalidity:
            self.send(b"* BYE The mailbox was rebuilt; please reselect it\r\n")
            raise Closed
        if changes.complete:
            update = view.apply(changes, allow_expunge=allow, use_vanished=self.qresync)
        else:
            current = await asyncio.to_thread(self.store.list_messages, self.user, view.name)
            update = view.resync(current, changes, allow_expunge=allow, use_vanished=self.qresync)
        if update.exists is not None:
            with contextlib.suppress(StoreError):
                await self._claim_recent(claim=not self.readonly)
        self._send_update(update)

    def _send_update(self, update: ViewUpdate) -> None:
        # RFC 9051 §7.3.5: FLAGS (and PERMANENTFLAGS) name a new keyword before any EXISTS
        # or FETCH shows a message carrying it.
        self._announce_keywords(update.keywords)
        view = self.view
        if self.contexts and view is not None:  # RFC 5267 §4.3.4: before the EXPUNGE
            changed = bool(update) or bool(view.pending_expunge)
            self.send(self.contexts.expunging(view.info, changed=changed))
        for seq in update.expunged:
            self.untagged(seq, Atom("EXPUNGE"))
        if update.vanished:
            self.send(b"* VANISHED " + C.uid_set_text(update.vanished).encode() + b"\r\n")
        if update.exists is not None:
            view = self.view
            assert view is not None
            self.untagged(update.exists, Atom("EXISTS"))
            if not self.rev2:
                self.untagged(len(view.recent), Atom("RECENT"))
        for seq, m in update.flags:
            self._flags_fetch(seq, m, with_uid=True)

    def _announce_keywords(self, keywords: Iterable[str]) -> None:
        """RFC 9051 §7.3.5: a keyword new to the folder is announced in FLAGS first."""
        new = set(keywords) - self._keywords
        if not new:
            return
        self._keywords |= new
        flags: list[IMAPValue] = [
            *(Atom(f) for f in SYSTEM_FLAGS),
            *(Atom(k) for k in sorted(self._keywords)),
        ]
        self.untagged(Atom("FLAGS"), flags)
        if not self.readonly:
            self._ok_code("PERMANENTFLAGS " + C.render_text([*flags, Atom("\\*")]), "Flags")

    def _flag_list(self, m: MessageInfo) -> list[IMAPValue]:
        view = self.view
        names = sorted(m.flags | m.keywords)
        if view is not None and m.uid in view.recent and not self.rev2:
            names.append("\\Recent")
        return [Atom(f) for f in names]

    async def _claim_recent(self, *, claim: bool) -> None:
        r"""RFC 3501 §2.3.2: a message is \Recent in the first session that sees it (EXAMINE
        sees without claiming). The claim is the store's, so it holds across processes and
        restarts."""
        view = self.view
        assert view is not None
        assert self.user is not None
        if self.rev2 or not view.uids or view.uids[-1] <= self._recent_asked:
            return  # IMAP4rev2 has no \Recent (RFC 9051 §2.3.2); or nothing new
        top = self._recent_asked = view.uids[-1]
        try:
            # On the loop: a read, and for the first session to see a message the claim's
            # write (no fsync); a thread only when that write would wait for the lock.
            claimed = self.store.claim_recent(self.user, view.name, top, claim=claim, quick=True)
        except WouldBlock:
            claimed = await asyncio.to_thread(
                self.store.claim_recent, self.user, view.name, top, claim=claim
            )
        view.recent.update(view.uids[bisect.bisect_right(view.uids, claimed) :])

    def _flags_fetch(self, seq: int, m: MessageInfo, *, with_uid: bool) -> None:
        self._announce_keywords(m.keywords)
        items: list[IMAPValue] = []
        if with_uid:
            items += [Atom("UID"), m.uid]
        items += [Atom("FLAGS"), self._flag_list(m)]
        if self.condstore:
            items += [Atom("MODSEQ"), [m.modseq]]
        self.untagged(seq, Atom("FETCH"), items)

    # -- IDLE (RFC 2177) --------------------------------------------------------------------

    async def cmd_idle(self, cmd: Command) -> str | None:
        self.send(b"+ idling\r\n")
        await self._updates_after("IDLE", cmd)
        # RFC 2177 §3: the command stays open; the loop reads DONE (IdleDone, answered by
        # idle_done), wakes on the folder's changes (pending_pushes) and ends IDLE at the
        # timeout (session_state.py).
        self.state.idle(cmd, self.clock(), self.server.settings.imap.idle_timeout_seconds)
        return None

    async def idle_done(self, event: IdleDone) -> str:
        if not event.valid:
            raise Bad("Expected DONE")
        return "IDLE terminated"

    def pending_pushes(self) -> list[asyncio.Event]:
        pushes = super().pending_pushes()
        if self.state.mode is Mode.IDLE and self._dirty is not None:
            pushes.append(self._dirty)  # RFC 2177 §3: changes go out while idling
        return pushes

    async def push_updates(self) -> None:
        await super().push_updates()
        command = self.state.command
        if self.state.mode is Mode.IDLE and command is not None:
            await self._updates_after("IDLE", command)

    # -- the view's numbers ------------------------------------------------------------------

    def uids_of(self, seqset: C.SeqSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names in the view (ascending; unknown ones dropped)."""
        view = self.view
        assert view is not None
        if not view.uids:
            return []
        if uid:
            wanted = C.resolve_set(seqset, view.uids[-1])
            return [u for u in sorted(set(wanted)) if u in view.info]
        largest = view.exists
        out = []
        for seq in sorted(set(C.resolve_set(seqset, largest))):
            if 1 <= seq <= largest:
                out.append(view.uid_at(seq))
            else:
                raise Bad("Invalid message sequence number")
        return out

    def _writable(self) -> None:
        if self.readonly:
            raise No("Mailbox is read-only", "READ-ONLY")

    def _report_own_expunge(self, uids: list[int]) -> None:
        view = self.view
        assert view is not None
        if self.contexts:  # RFC 5267 §4.3.4: REMOVEFROM before the EXPUNGE / VANISHED
            self.send(self.contexts.expunging(set(view.info).difference(uids)))
        if self.qresync:
            present = [u for u in uids if u in view.info]
            view.note_own_expunge(present)
            if present:
                self.send(b"* VANISHED " + C.uid_set_text(present).encode() + b"\r\n")
            return
        for seq in view.note_own_expunge(uids):
            self.untagged(seq, Atom("EXPUNGE"))
