"""NOTIFY (RFC 5465): changes pushed to the client without IDLE and without polling.

NOTIFY SET names the folders (selected, selected-delayed, inboxes, personal, subscribed,
subtree, mailboxes; grammar in ``protocols/imap/notify.py``) and the events the client wants
for them. The session then follows the account on the change bus (``ChangeBus.follow``: the
names of the folders that changed, merged) and, whenever it is between commands, in IDLE, or
at the end of a command, turns what changed into responses:

- the selected folder: the usual EXISTS, EXPUNGE (or VANISHED) and FETCH of its view
  (``imap_selected.py``), followed for MessageNew by a FETCH of the attributes the client
  asked for (§5.2); with SELECTED the expunges go out at once (the client uses UIDs only,
  §5.3), with SELECTED-DELAYED they wait for a command that may carry them (§6.1.2, RFC
  9051 §7.5.1), as without NOTIFY;
- other folders: STATUS when messages came, went or changed flags (§5.1-§5.3); LIST when a
  folder was created, deleted or renamed (§5.4, OLDNAME) or (un)subscribed (§5.5).

What changed is found by comparing the store's folder list (``MailStore.list_folders``: the
counts, UIDNEXT, HIGHESTMODSEQ and subscription of each folder) with the one the session last
told the client about: the bus carries wake-ups only, so a change made in another process
reads the same, and a merged or repeated wake-up costs one list, never a wrong response.

The bound: a session holds at most ``imap.notify_max_pending_folders`` changed folders waiting
(while it runs a command or waits for a slow client); one more and the feed overflows: the
client gets ``OK [NOTIFICATIONOVERFLOW]`` and the session behaves as after NOTIFY NONE (§5.8).
A NOTIFY SET naming more than ``MAX_MAILBOX_NAMES`` mailboxes is refused the same way (§3.1).

Deviations: from §5, as Dovecot, the rules that MessageNew and MessageExpunge come together
and FlagChange needs both hold for the selected mailbox only (they keep its sequence numbers
sound; a STATUS of fewer items about another folder is harmless, and imaptest's notify test
asks OK for (MessageExpunge) alone). §5 asks (SHOULD) to leave out the events this client
caused in other folders: a wake-up does not say who made the change, so they are reported
too; a repeated STATUS is harmless, a lost one is not. A folder matched by several groups
gets the events of all of them, as Dovecot.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pochta.access.imap_errors import No
from pochta.access.imap_fetch import FetchFailed, fetch_messages
from pochta.access.imap_list import list_entries
from pochta.access.imap_selected import SelectedMailbox
from pochta.access.mailbox_view import MailboxView
from pochta.logs import get_logger
from pochta.protocols.imap import commands as C
from pochta.protocols.imap import notify as N
from pochta.protocols.imap.core import Command
from pochta.protocols.imap.session_state import Mode
from pochta.protocols.imap.values import Atom, IMAPValue
from pochta.runtime import FolderFeed
from pochta.store import HIERARCHY_SEPARATOR, FolderInfo

log = get_logger("imap")

# RFC 5465 §3.1: a NOTIFY that would be too costly may be refused with NOTIFICATIONOVERFLOW;
# this many mailbox names over its subtree and mailboxes groups (Dovecot: 100 a namespace).
MAX_MAILBOX_NAMES = 100
# Commands whose own new messages in the selected folder get no MessageNew FETCH (§5.2).
_OWN_ADDITIONS = frozenset({"APPEND", "COPY", "UID COPY"})
# The rules _updates_after applies to a push between commands: "NOTIFY" may carry
# expunges (SELECTED, §6.1.1); "FETCH" may not (SELECTED-DELAYED, §6.1.2: as during FETCH,
# RFC 9051 §7.5.1, they wait for NOOP, IDLE or another command that allows them).
_PUSH_IMMEDIATE = "NOTIFY"
_PUSH_DELAYED = "FETCH"


@dataclass(slots=True)
class _Watch:
    """One event group for other folders, with the names in the store's words."""

    kind: str
    names: tuple[str, ...]
    events: frozenset[str]

    def matches(self, name: str, subscribed: bool) -> bool:
        if self.kind in ("personal", "inboxes"):
            # RFC 5465 §6.3: a server that cannot tell where mail is delivered treats
            # inboxes as personal; Sieve and +extensions may deliver to any folder.
            return True
        if self.kind == "subscribed":
            return subscribed  # §6.4: the subscriptions as they are now
        if self.kind == "subtree":
            # §6.5: the mailbox and all below it.
            return any(name == n or name.startswith(n + HIERARCHY_SEPARATOR) for n in self.names)
        return name in self.names  # §6.6 mailboxes: no wildcards


@dataclass(slots=True)
class NotifyState:
    spec: N.NotifySet
    feed: FolderFeed
    watches: list[_Watch]
    known: dict[str, FolderInfo] = field(default_factory=dict)
    subscriptions: frozenset[str] = frozenset()
    # One catch-up at a time (in IDLE the reader and the IDLE loop may both start one).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class NotifyCommands(SelectedMailbox):
    """NOTIFY SET / NOTIFY NONE, and the pushes they ask for."""

    _notify: NotifyState | None = None

    async def cmd_notify(self, cmd: Command) -> str:
        try:
            spec = N.notify_args(cmd)
        except N.UnsupportedEvents:
            # RFC 5465 §3.1: NO, not BAD, with BADEVENT listing the events we support.
            supported = " ".join(N.SUPPORTED_EVENTS)
            raise No("Unsupported NOTIFY events", f"BADEVENT ({supported})") from None
        self._notify_off()
        if spec is None:
            return "NOTIFY completed"  # NOTIFY NONE
        if sum(len(g.mailboxes) for g in spec.groups) > MAX_MAILBOX_NAMES:
            raise No(
                f"Name at most {MAX_MAILBOX_NAMES} mailboxes, or use subtree or personal",
                "NOTIFICATIONOVERFLOW",
            )
        hub = self.mail.changes
        assert self.user is not None
        if hub is None:
            raise No("Notifications are not available now", "UNAVAILABLE")
        watches = [
            _Watch(g.filter, tuple(self.folder_name(m) for m in g.mailboxes), g.events)
            for g in spec.others
            if g.events
        ]
        feed = hub.follow(self.user, self.server.settings.imap.notify_max_pending_folders)
        state = NotifyState(spec, feed, watches)
        try:
            folders, subs = await self.blocking(self._folder_snapshot)
        except BaseException:
            feed.close()
            raise
        state.known = folders
        state.subscriptions = subs
        self._notify = state
        if spec.status:
            # §3.1: a STATUS for each watched folder (not the selected one) before the OK.
            for name, folder in folders.items():
                events = self._events_for(state, name, name in subs)
                if events and not self._is_selected(name):
                    self._send_status(folder, _initial_items(events))
        # §3.1: a successful NOTIFY SET is also a NOOP for the selected mailbox.
        await self._updates_after("NOOP", cmd)
        return "NOTIFY completed"

    def _notify_off(self) -> None:
        state, self._notify = self._notify, None
        if state is not None:
            state.feed.close()

    def _folder_snapshot(self) -> tuple[dict[str, FolderInfo], frozenset[str]]:
        assert self.user is not None
        folders = self.store.list_folders(self.user)
        subs = frozenset(self.store.list_subscriptions(self.user))
        return {f.name: f for f in folders}, subs

    def _is_selected(self, name: str) -> bool:
        return self.view is not None and self.view.name == name

    def _events_for(self, state: NotifyState, name: str, subscribed: bool) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for watch in state.watches:
            if watch.matches(name, subscribed):
                out |= watch.events
        return out

    def _send_status(self, folder: FolderInfo, items: list[str]) -> None:
        values: list[IMAPValue] = []
        for item in items:
            value = {
                "MESSAGES": folder.messages,
                "UIDNEXT": folder.uidnext,
                "UIDVALIDITY": folder.uidvalidity,
                "UNSEEN": folder.unseen,
                "HIGHESTMODSEQ": folder.highestmodseq,
            }[item]
            values += [Atom(item), value]
        self.untagged(Atom("STATUS"), self.wire_name(folder.name), values)

    # -- the hooks: after each command, and while waiting for the next ---------------------

    async def _updates_after(self, name: str, cmd: Command | None) -> None:
        view = self.view
        top = view.uids[-1] if view is not None and view.uids else 0
        await super()._updates_after(name, cmd)
        if self._notify is None:
            return
        if view is not None and view is self.view and name not in _OWN_ADDITIONS:
            await self._fetch_new(view, top)
        await self._notify_catch_up()

    def pending_pushes(self) -> list[asyncio.Event]:
        """RFC 5465 §1: between commands and in IDLE (not while a command is still being
        read), the account's folder feed wakes the loop, and so do the selected folder's
        changes when NOTIFY asked for them (IDLE adds those itself while idling)."""
        pushes = super().pending_pushes()
        state = self._notify
        if state is None or self.parser.in_command:
            return pushes
        pushes.append(state.feed.ready)
        selected = state.spec.selected
        dirty = self._dirty
        if selected is not None and selected.events and dirty is not None and dirty not in pushes:
            pushes.append(dirty)
        return pushes

    async def push_updates(self) -> None:
        idling = self.state.mode is Mode.IDLE
        await super().push_updates()  # IDLE: the selected folder's updates
        state = self._notify
        if state is None:
            return
        dirty = self._dirty
        selected = state.spec.selected
        if not idling and dirty is not None and dirty.is_set() and selected is not None:
            delayed = selected.filter == "selected-delayed"
            # _updates_after (above) also catches up on the other folders.
            await self._updates_after(_PUSH_DELAYED if delayed else _PUSH_IMMEDIATE, None)
        elif state.feed.ready.is_set():
            await self._notify_catch_up()

    # -- what changed -----------------------------------------------------------------------

    async def _fetch_new(self, view: MailboxView, top: int) -> None:
        """§5.2: EXISTS is followed by a FETCH of the attributes asked with MessageNew."""
        state = self._notify
        assert state is not None
        assert self.user is not None
        selected = state.spec.selected
        if selected is None or not selected.fetch or N.MESSAGE_NEW not in selected.events:
            return
        uids = [u for u in view.uids if u > top]
        if not uids:
            return
        user, folder, store = self.user, view.name, self.store
        items = list(selected.fetch)
        want_cache = any(
            i.top_header or i.kind in ("ENVELOPE", "BODYSTRUCTURE", "BODY") for i in items
        )
        cached = (
            await self.blocking(store.cached_structures, user, folder, uids) if want_cache else {}
        )
        try:
            # Never sets \Seen: a notification is not the client reading the message.
            result = await self.blocking(
                fetch_messages,
                view,
                uids,
                items,
                read=store.message_reader(user, folder),
                cached=cached,
                with_uid=True,
                with_modseq=self.condstore,
                show_recent=not self.rev2,
            )
        except FetchFailed as exc:
            log.warning("notify_fetch_failed", user=user, folder=folder, error=exc.text)
            return
        for line in result.responses:
            self.send(line)

    async def _notify_catch_up(self) -> None:
        state = self._notify
        if state is None:
            return
        async with state.lock:
            await self._catch_up(state)

    async def _catch_up(self, state: NotifyState) -> None:
        if state.feed.overflowed:
            # RFC 5465 §5.8: tell the client, then behave as after NOTIFY NONE.
            log.info("notify_overflow", client=self.ip, user=self.user)
            self._notify_off()
            self.send(
                b"* OK [NOTIFICATIONOVERFLOW] Too many changes waiting; NOTIFY is off, "
                b"send NOTIFY SET again and resynchronise\r\n"
            )
            return
        if not state.feed.ready.is_set():
            return
        changed = state.feed.take()
        if changed is not None and not changed:
            return
        now, subs = await self.blocking(self._folder_snapshot)
        if self._notify is not state:
            return  # NOTIFY changed meanwhile
        self._names_changed(state, now, subs)
        for name, folder in now.items():
            old = state.known.get(name)
            if old is None or self._is_selected(name):
                continue  # new (LIST says so), or the view reports it
            if changed is not None and name not in changed and old == folder:
                continue
            events = self._events_for(state, name, name in subs)
            items = _changed_items(old, folder, events, self.condstore, self.qresync)
            if items:
                self._send_status(folder, items)
        state.known = now
        state.subscriptions = subs

    def _names_changed(
        self, state: NotifyState, now: dict[str, FolderInfo], subs: frozenset[str]
    ) -> None:
        """§5.4 MailboxName and §5.5 SubscriptionChange: a LIST per name affected."""
        old = state.known
        gone = sorted(n for n in old if n not in now)
        new = sorted(n for n in now if n not in old)
        renamed = _renames(old, now, gone, new)

        def wants(name: str, event: str) -> bool:
            return event in self._events_for(state, name, name in subs)

        for old_name, new_name in renamed.items():
            if wants(new_name, N.MAILBOX_NAME) or wants(old_name, N.MAILBOX_NAME):
                # §5.4: the new name, with the old one as OLDNAME (RFC 5258 extended data).
                self._send_list(now, subs, new_name, [["OLDNAME", [self.wire_name(old_name)]]])
        for name in gone:
            if name not in renamed and wants(name, N.MAILBOX_NAME):
                # §5.4: a name that no longer exists is \NonExistent.
                self.untagged(Atom("LIST"), [Atom("\\NonExistent")], ".", self.wire_name(name))
        targets = set(renamed.values())
        for name in new:
            if name not in targets and wants(name, N.MAILBOX_NAME):
                self._send_list(now, subs, name)
        for name in sorted(subs ^ state.subscriptions):
            if name in now and name not in targets and wants(name, N.SUBSCRIPTION_CHANGE):
                # §5.5: \Subscribed if and only if it is subscribed now.
                self._send_list(now, subs, name)

    def _send_list(
        self,
        now: dict[str, FolderInfo],
        subs: frozenset[str],
        name: str,
        extra: list[IMAPValue] | None = None,
    ) -> None:
        options = C.ListOptions(return_subscribed=True)
        entries = list_entries(list(now.values()), sorted(subs), [name], options)
        attrs = next((e.attributes for e in entries if e.name == name), [])
        self.untagged(
            Atom("LIST"), [Atom(a) for a in attrs], ".", self.wire_name(name), *(extra or [])
        )


_ORDER = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


def _initial_items(events: frozenset[str]) -> list[str]:
    """RFC 5465 §3.1: what the STATUS of NOTIFY SET STATUS holds for the events asked."""
    items = {"UNSEEN"}
    if N.MESSAGE_NEW in events:
        items |= {"MESSAGES", "UIDNEXT", "UIDVALIDITY"}
    if N.MESSAGE_EXPUNGE in events:
        items.add("MESSAGES")
    if N.FLAG_CHANGE in events:
        items |= {"UIDVALIDITY", "HIGHESTMODSEQ"}
    return [i for i in _ORDER if i in items]


def _changed_items(
    old: FolderInfo, new: FolderInfo, events: frozenset[str], condstore: bool, qresync: bool
) -> list[str]:
    """The STATUS items that tell what changed in a folder that is not selected."""
    if not events & N.MESSAGE_EVENTS:
        return []
    items: set[str] = set()
    if new.uidvalidity != old.uidvalidity:
        # §5.1: the client must learn of a new UIDVALIDITY.
        items |= {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"}
    arrived = new.uidnext - old.uidnext
    expunged = old.messages + arrived - new.messages
    if arrived > 0 and N.MESSAGE_NEW in events:
        # §5.2: STATUS (UIDNEXT MESSAGES), and HIGHESTMODSEQ with CONDSTORE.
        items |= {"MESSAGES", "UIDNEXT", "UNSEEN"}
        if condstore:
            items.add("HIGHESTMODSEQ")
    if expunged > 0 and N.MESSAGE_EXPUNGE in events:
        # §5.3: STATUS (UIDNEXT MESSAGES), and HIGHESTMODSEQ with QRESYNC.
        items |= {"MESSAGES", "UIDNEXT", "UNSEEN"}
        if qresync:
            items.add("HIGHESTMODSEQ")
    flags = new.highestmodseq != old.highestmodseq and arrived <= 0 and expunged <= 0
    if flags and N.FLAG_CHANGE in events:
        # §5.1: at least UIDVALIDITY and HIGHESTMODSEQ.
        items |= {"UIDVALIDITY", "HIGHESTMODSEQ", "UNSEEN"}
    return [i for i in _ORDER if i in items]


def _renames(
    old: dict[str, FolderInfo], now: dict[str, FolderInfo], gone: list[str], new: list[str]
) -> dict[str, str]:
    """Old name → new name, for the names gone whose folder came back under a new one: a
    rename keeps the folder's UIDVALIDITY (its index goes along), a new folder gets its own."""
    by_validity = {now[n].uidvalidity: n for n in new}
    out = {}
    for name in gone:
        moved = by_validity.get(old[name].uidvalidity)
        if moved is not None:
            out[name] = moved
    return out
