"""Live search results: RFC 5267 §4.3 UPDATE contexts (CONTEXT=SEARCH, CONTEXT=SORT).

A SEARCH or SORT with ``RETURN (UPDATE)`` leaves a context in the session: its result, as
UIDs in the requested order (mailbox order for SEARCH, the sort order for SORT), and a way to
compute it again. When the selected folder changes (a delivery, another session's or this
session's flag change, an expunge), the session asks every context for its result again and
tells the client the difference in untagged ``ESEARCH (TAG "t") ADDTO (...)`` and
``REMOVEFROM (...)`` responses, until CANCELUPDATE names the tag or the folder is closed.

Ordering (RFC 5267 §4.3.3, §4.3.4): a REMOVEFROM naming messages that are being expunged goes
out before their EXPUNGE (or VANISHED), numbered as the client still numbers them; an ADDTO
naming new messages goes out after their EXISTS. So :meth:`LiveContexts.expunging` runs just
before the session writes EXPUNGE responses, and :meth:`LiveContexts.refresh` after the
EXISTS and FETCH responses of the command (imap_selected.py calls both).

Positions: a SEARCH context sends position 0 (§4.3.3: the client keeps mailbox order); a SORT
context sends the 1-based position in the sorted result, removals from the highest position
down and additions from the lowest up, so that every position holds when the client applies
the pairs in order. Sort keys never change for a message (dates, sizes and header fields are
fixed once a message exists), so the messages that stay keep their relative order.

Limits (§4.3.1 lets a server refuse with ``* NO [NOUPDATE "tag"]``): a session holds at most
``MAX_LIVE_CONTEXTS`` (10) contexts, of which at most ``MAX_SORTED_CONTEXTS`` (2) are SORT
contexts, which keep what SORT read of each matching message (subject, addresses, dates).
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass

from pochta.access.imap_errors import Bad, No
from pochta.access.imap_search import ordered_set_text
from pochta.access.imap_selected import SelectedMailbox
from pochta.access.mailbox_view import MailboxView
from pochta.logs import get_logger
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command
from pochta.store import StoreError

log = get_logger("imap")

# RFC 5267 §4.3.1: "Servers MUST provide at least one updating context per client, and
# SHOULD provide more". Ten per session; sorted ones cost more (they hold the sort fields).
MAX_LIVE_CONTEXTS = 10
MAX_SORTED_CONTEXTS = 2

# Computes a context's result now: UIDs of the live messages, in the requested order.
Evaluate = Callable[[], Awaitable[list[int]]]


@dataclass(slots=True)
class LiveContext:
    tag: bytes  # the searching command's tag, rendered as it goes in (TAG ...)
    uid: bool  # UID SEARCH / UID SORT: results are UIDs, else sequence numbers
    ordered: bool  # SORT (positions count) or SEARCH (mailbox order, position 0)
    evaluate: Evaluate
    result: list[int]  # UIDs in the requested order, as the client last learnt them


class LiveContexts:
    """The UPDATE contexts of one session's selected folder and the client's numbering of
    the folder's messages (the UIDs in sequence order as the client knows them: between a
    change and its EXPUNGE responses the view's numbering runs ahead of the client's)."""

    def __init__(self, numbering: list[int]) -> None:
        self.contexts: dict[bytes, LiveContext] = {}
        self.numbering = list(numbering)
        self.stale = False

    def __bool__(self) -> bool:
        return bool(self.contexts)

    def __contains__(self, tag: bytes) -> bool:
        return tag in self.contexts

    def refusal(self, *, ordered: bool) -> str | None:
        """Why a new context cannot be kept (RFC 5267 §4.3.1), or None."""
        if len(self.contexts) >= MAX_LIVE_CONTEXTS:
            return f"Too many contexts (at most {MAX_LIVE_CONTEXTS}); CANCELUPDATE one first"
        if ordered and sum(c.ordered for c in self.contexts.values()) >= MAX_SORTED_CONTEXTS:
            return (
                f"Too many SORT contexts (at most {MAX_SORTED_CONTEXTS}); "
                "CANCELUPDATE one or use SEARCH"
            )
        return None

    def add(self, context: LiveContext) -> None:
        self.contexts[context.tag] = context

    def cancel(self, tag: bytes) -> bool:
        return self.contexts.pop(tag, None) is not None

    # -- changes ----------------------------------------------------------------------------

    def expunging(self, live: Container[int], *, changed: bool = True) -> bytes:
        """REMOVEFROM for the results that are no longer ``live``, to be written before the
        EXPUNGE / VANISHED responses that remove them (RFC 5267 §4.3.4: "MUST be sent prior
        to the expunge notification itself"), numbered as the client still numbers them.
        ``changed``: the folder changed otherwise too (the next refresh evaluates again)."""
        self.stale = self.stale or changed
        gone = {u for u in self.numbering if u not in live}
        if not gone:
            return b""
        self.stale = True
        out = bytearray()
        for context in self.contexts.values():
            keep = [u for u in context.result if u not in gone]
            if len(keep) != len(context.result):
                out += self._difference(context, keep)
                context.result = keep
        self.numbering = [u for u in self.numbering if u not in gone]
        return bytes(out)

    async def refresh(self, numbering: list[int]) -> bytes:
        """Evaluate every context again (once something changed) and return the ESEARCH
        responses that bring the client's results up to date; ``numbering`` is the view's
        numbering, which the client now shares (its EXISTS and EXPUNGE have gone out)."""
        if not self.stale:
            return b""  # no change since: neither the results nor the numbering moved
        self.stale = False
        self.numbering = list(numbering)
        out = bytearray()
        for context in list(self.contexts.values()):
            try:
                now = await context.evaluate()
            except (No, StoreError) as exc:
                # The store failed: try again at the next change, the result kept as it was.
                log.warning("context_refresh_failed", error=str(exc))
                self.stale = True
                continue
            out += self._difference(context, now)
            context.result = now
        return bytes(out)

    def _difference(self, context: LiveContext, now: list[int]) -> bytes:
        """REMOVEFROM then ADDTO taking ``context.result`` to ``now`` (RFC 5267 §4.3.3-4)."""
        before = context.result
        present = set(now)
        was = set(before)
        removed = [i for i, u in enumerate(before) if u not in present]
        added = [i for i, u in enumerate(now) if u not in was]
        if context.ordered and [u for u in before if u in present] != [u for u in now if u in was]:
            # Cannot happen while sort keys are fixed; should it, say the whole result again.
            removed, added = list(range(len(before))), list(range(len(now)))
        out = b""
        if removed:
            if context.ordered:
                # Highest position first: each position still holds when the client gets to it.
                runs = _runs(removed)
                pairs = [(start + 1, [before[i] for i in run]) for start, run in reversed(runs)]
            else:
                pairs = [(0, sorted(before[i] for i in removed))]
            out += self._line(context, b"REMOVEFROM", pairs)
        if added:
            if context.ordered:
                # Lowest position first: the later pairs' positions count the earlier ones.
                pairs = [(start + 1, [now[i] for i in run]) for start, run in _runs(added)]
            else:
                pairs = [(0, sorted(now[i] for i in added))]
            out += self._line(context, b"ADDTO", pairs)
        return out

    def _line(self, context: LiveContext, item: bytes, pairs: list[tuple[int, list[int]]]) -> bytes:
        body = b" ".join(
            b"%d %s" % (position, ordered_set_text(self._numbers(context, uids)).encode())
            for position, uids in pairs
        )
        uid = b" UID" if context.uid else b""
        return b"* ESEARCH (TAG " + context.tag + b")" + uid + b" " + item + b" (" + body + b")\r\n"

    def _numbers(self, context: LiveContext, uids: list[int]) -> list[int]:
        if context.uid:
            return uids
        return [bisect.bisect_left(self.numbering, u) + 1 for u in uids]


def _runs(indexes: list[int]) -> list[tuple[int, list[int]]]:
    """Ascending indexes grouped into runs of consecutive ones: [(first, [indexes])]."""
    runs: list[tuple[int, list[int]]] = []
    for i in indexes:
        if runs and runs[-1][1][-1] == i - 1:
            runs[-1][1].append(i)
        else:
            runs.append((i, [i]))
    return runs


def pin_key(key: C.Key, view: MailboxView) -> C.Key:
    """The search key with its sets bound now and sequence numbers turned into the UIDs
    they name now: RFC 5267 §4.3, "any message sequence numbers used in the search program
    are evaluated at the time the command is received"."""
    bound = C.bind_sets(key, exists=view.exists, max_uid=view.uids[-1] if view.uids else 0)
    return _pin(bound, view)


def _pin(key: C.Key, view: MailboxView) -> C.Key:
    kind = key[0]
    if kind == "seq":
        numbers = key[1]
        assert isinstance(numbers, list)
        return ("uid", [view.uid_at(n) for n in numbers if 1 <= n <= view.exists])
    if kind == "and":
        subs = key[1]
        assert isinstance(subs, list)
        return ("and", [_pin(k, view) for k in subs])
    if kind in ("or", "not"):
        return (kind, *(_pin(k, view) for k in key[1:] if isinstance(k, tuple)))
    return key


class ContextCommands(SelectedMailbox):
    """CANCELUPDATE (RFC 5267 §4.3.5); the contexts themselves are made by SEARCH and SORT
    (imap_messages.py) and kept up to date by the selected folder's updates."""

    async def cmd_cancelupdate(self, cmd: Command) -> str:
        if self.view is None:
            raise Bad("Select a mailbox first")  # RFC 5267 §5: command-select
        tags = [C.astring(t) for t in cmd.args]
        if not tags:
            raise Bad("CANCELUPDATE needs the tag of a search")
        contexts = self.contexts
        unknown = [t for t in tags if contexts is None or C.render(t) not in contexts]
        if unknown:
            raise Bad(f"No search with UPDATE has the tag {unknown[0][:60]}")
        assert contexts is not None
        for tag in tags:
            contexts.cancel(C.render(tag))
        return "CANCELUPDATE completed"
