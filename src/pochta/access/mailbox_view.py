"""What one IMAP session believes a selected folder holds, and how it catches up.

RFC 9051 §2.3.1.2 and §7.5: message sequence numbers are per session, and may change only
when the server tells the client so — EXPUNGE (or VANISHED with QRESYNC, RFC 7162 §3.2.10)
for removals, EXISTS for arrivals. A :class:`MailboxView` holds the session's UID list and
each message's flags and MODSEQ, and turns a :class:`~pochta.store.FolderChanges` from the
store into the untagged updates to send.

RFC 9051 §7.5.1: an untagged EXPUNGE must not be sent while answering FETCH, STORE or
SEARCH (the client could not map the numbers) — UID FETCH/STORE/SEARCH are fine. So removals
seen at such a moment stay *pending*: the messages keep their numbers (and read as gone) until
a command that allows EXPUNGE runs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from pochta.store import FolderChanges, MessageInfo


@dataclass(slots=True)
class ViewUpdate:
    """Untagged updates, in the order to send them."""

    expunged: list[int] = field(default_factory=list)  # sequence numbers, each as of its turn
    vanished: list[int] = field(default_factory=list)  # UIDs (QRESYNC clients)
    exists: int | None = None  # the new message count, when it grew
    flags: list[tuple[int, MessageInfo]] = field(default_factory=list)  # (seq, new state)
    # Keywords of the folder and of the new and changed messages: announced in FLAGS before
    # the EXISTS and FETCH that may show them (RFC 9051 §7.3.5).
    keywords: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.expunged or self.vanished or self.exists is not None or self.flags)


class MailboxView:
    def __init__(self, name: str, changes: FolderChanges) -> None:
        self.name = name
        self.uidvalidity = changes.uidvalidity
        self.uidnext = changes.uidnext
        self.highestmodseq = changes.highestmodseq
        self.uids: list[int] = [m.uid for m in changes.changed]
        self.info: dict[int, MessageInfo] = {m.uid: m for m in changes.changed}
        self.pending_expunge: set[int] = set()
        # RFC 3501 §2.3.2 \Recent: messages this session is the first to see.
        self.recent: set[int] = set()

    # -- numbers --------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def seqs_of(self, uids: list[int]) -> list[int]:
        """The sequence numbers of ``uids``, each of which must be in the view (a SEARCH
        result): one bisection each, no method call per UID."""
        shown, find = self.uids, bisect.bisect_left
        return [find(shown, uid) + 1 for uid in uids]

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    def is_live(self, uid: int) -> bool:
        """In the view and not expunged behind the client's back."""
        return uid in self.info and uid not in self.pending_expunge

    # -- catching up ----------------------------------------------------------------------

    def apply(
        self, changes: FolderChanges, *, allow_expunge: bool, use_vanished: bool = False
    ) -> ViewUpdate:
        """Take in what changed since ``self.highestmodseq``. ``changes.complete`` must be
        True (else call :meth:`resync`)."""
        update = ViewUpdate(keywords=set(changes.keywords))
        for uid in changes.vanished:
            if uid in self.info:
                self.pending_expunge.add(uid)
        if allow_expunge:
            self._flush_expunges(update, use_vanished)
        for m in changes.changed:
            old = self.info.get(m.uid)
            if old is None:
                if m.uid > (self.uids[-1] if self.uids else 0):
                    self.uids.append(m.uid)
                    self.info[m.uid] = m
                    update.exists = len(self.uids)
                    update.keywords |= m.keywords
                continue  # an older UID we do not show: expunged meanwhile (or pending)
            if m.uid in self.pending_expunge:
                continue
            if (old.flags, old.keywords, old.modseq) != (m.flags, m.keywords, m.modseq):
                self.info[m.uid] = m
                seq = self.seq_of(m.uid)
                assert seq is not None
                update.flags.append((seq, m))
                update.keywords |= m.keywords
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        return update

    def resync(
        self,
        current: list[MessageInfo],
        changes: FolderChanges,
        *,
        allow_expunge: bool,
        use_vanished: bool = False,
    ) -> ViewUpdate:
        """Catch up from a full listing when the expunge record does not reach back."""
        present = {m.uid for m in current}
        gone = [uid for uid in self.uids if uid not in present]
        full = FolderChanges(
            uidvalidity=changes.uidvalidity,
            uidnext=changes.uidnext,
            highestmodseq=changes.highestmodseq,
            changed=tuple(current),
            vanished=tuple(gone),
            complete=True,
            keywords=changes.keywords,
        )
        return self.apply(full, allow_expunge=allow_expunge, use_vanished=use_vanished)

    def flush_expunges(self, *, use_vanished: bool = False) -> ViewUpdate:
        update = ViewUpdate()
        self._flush_expunges(update, use_vanished)
        return update

    def _flush_expunges(self, update: ViewUpdate, use_vanished: bool) -> None:
        if not self.pending_expunge:
            return
        gone = sorted(self.pending_expunge)
        self.pending_expunge.clear()
        if use_vanished:
            update.vanished.extend(gone)
        else:
            # Highest first: each EXPUNGE then leaves the numbers of the others unchanged.
            for uid in reversed(gone):
                seq = self.seq_of(uid)
                if seq is not None:
                    update.expunged.append(seq)
        keep = [uid for uid in self.uids if uid not in set(gone)]
        self.uids = keep
        for uid in gone:
            self.info.pop(uid, None)
            self.recent.discard(uid)

    def note_own_change(self, m: MessageInfo) -> None:
        """A change this session made and reported itself (STORE): not to be echoed."""
        if m.uid in self.info and m.uid not in self.pending_expunge:
            self.info[m.uid] = m

    def note_own_expunge(self, uids: list[int]) -> list[int]:
        """EXPUNGE/MOVE by this session: drop ``uids``; returns their sequence numbers in
        the order the EXPUNGE responses go out (each valid at its turn)."""
        gone = sorted(set(uids) & set(self.info))
        out = []
        for uid in reversed(gone):
            seq = self.seq_of(uid)
            if seq is not None:
                out.append(seq)
        drop = set(gone)
        self.uids = [uid for uid in self.uids if uid not in drop]
        for uid in gone:
            self.info.pop(uid, None)
            self.pending_expunge.discard(uid)
            self.recent.discard(uid)  # or a later "* n RECENT" counts messages that are gone
        return out
