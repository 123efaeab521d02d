"""IMAP commands on the selected folder's messages (RFC 9051 §6.4; RFC 6851 MOVE, RFC 4315
UIDPLUS, RFC 5256 SORT/THREAD, RFC 4731 ESEARCH, RFC 7162 CONDSTORE/QRESYNC).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from pochta.access.imap_context import Evaluate, LiveContext, LiveContexts, pin_key
from pochta.access.imap_errors import Bad, No
from pochta.access.imap_fetch import (
    CacheEntry,
    FetchFailed,
    FetchResult,
    cache_serves,
    decode_cache,
    fetch_messages,
    fetch_metadata,
    only_metadata,
)
from pochta.access.imap_folders import FolderCommands
from pochta.access.imap_headers import header_fields, raw_fields
from pochta.access.imap_search import SearchContext, esearch_parts, evaluate
from pochta.access.imap_session import SYSTEM_FLAGS
from pochta.access.mailbox_view import MailboxView
from pochta.logs import get_logger
from pochta.mime.sort_thread import (
    SortInfo,
    parse_sent_date,
    render_threads,
    sort_messages,
    thread_orderedsubject,
    thread_references,
)
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command
from pochta.protocols.imap.fetch_items import FetchItem
from pochta.protocols.imap.render import render
from pochta.protocols.imap.search_return import ReturnOptions
from pochta.store import (
    FlagMode,
    FlagUpdate,
    MessageInfo,
    NoSuchFolder,
    StoreError,
    StoreUnavailable,
    WouldBlock,
)

if TYPE_CHECKING:
    pass

log = get_logger("imap")

READ_CHUNK = 65536
# A FETCH chunk whose messages add up to no more than this is read on the event loop
# (page-cache reads of this size take well under a millisecond); larger ones in a thread.
INLINE_READ_BYTES = 256 * 1024
T = TypeVar("T")


class MessageCommands(FolderCommands):
    """The selected-state commands on messages: STORE, COPY, MOVE, EXPUNGE, FETCH,
    SEARCH, SORT, THREAD, and their UID forms."""

    async def cmd_store(self, cmd: Command) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        self._writable()
        args = C.store_args(cmd)
        if args.unchanged_since is not None:
            self._condstore_on()
        uids = self.uids_of(args.seqset, uid=args.uid)
        bad = [f for f in args.flags if f.startswith("\\") and f not in SYSTEM_FLAGS]
        if bad:
            raise Bad(f"Flag {bad[0]} cannot be stored")
        mode = {"+": FlagMode.ADD, "-": FlagMode.REMOVE, "": FlagMode.REPLACE}[args.sign]
        result = await self.writing(
            self.store.store_flags,
            self.user,
            view.name,
            uids,
            mode,
            frozenset(args.flags),
            unchanged_since=args.unchanged_since,
        )
        changed = {u.uid for u in result.updated}
        if changed and self.contexts:
            self.contexts.stale = True  # RFC 5267 §4.3: the results may change with flags
        trainer = self.mail.spam_trainer
        if trainer is not None and mode is not FlagMode.REMOVE and changed:
            # Thunderbird and Apple Mail mark junk / not junk with these keywords.
            marks = [f for f in args.flags if f.lower() in ("$junk", "$notjunk")]
            if marks:
                user, folder, learn = self.user, view.name, sorted(changed)
                self._after_answer.append(
                    lambda: trainer.keywords_added(user, folder, learn, marks)
                )
        for update in result.updated:
            old = view.info.get(update.uid)
            if old is None:
                continue
            info = _updated(old, update)
            view.note_own_change(info)
            seq = view.seq_of(update.uid)
            if seq is None:
                continue
            # RFC 7162 §3.1.4: with CONDSTORE the FETCH goes out even for .SILENT.
            if not args.silent or (self.condstore and args.unchanged_since is not None):
                self._flags_fetch(seq, info, with_uid=args.uid)
        if args.unchanged_since is not None and not args.silent:
            # Unchanged messages that passed the test: their flags as they are.
            for uid in uids:
                if uid not in changed and uid not in result.failed and uid in view.info:
                    seq = view.seq_of(uid)
                    if seq is not None:
                        self._flags_fetch(seq, view.info[uid], with_uid=args.uid)
        if result.failed:
            failed = (
                C.uid_set_text(result.failed)
                if args.uid
                else C.uid_set_text([view.seq_of(u) or 0 for u in result.failed])
            )
            self.send(C.tagged(cmd.tag, "OK", "Conditional STORE failed", f"MODIFIED {failed}"))
            await self._updates_after(C.command_name(cmd), cmd)
            return None  # type: ignore[return-value]
        return "STORE completed"

    async def cmd_copy(self, cmd: Command) -> str:
        return await self._transfer(cmd, move=False)

    async def cmd_move(self, cmd: Command) -> str:
        return await self._transfer(cmd, move=True)

    async def _transfer(self, cmd: Command, *, move: bool) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        if move:
            self._writable()
        args = C.copy_args(cmd)
        uids = self.uids_of(args.seqset, uid=args.uid)
        target = self.folder_name(args.mailbox)
        func = self.store.move if move else self.store.copy
        if not move:
            await self._check_quota(sum(view.info[u].size for u in uids))
        try:
            result = await self.blocking(func, self.user, view.name, uids, target)
        except NoSuchFolder as exc:
            raise No(f"No mailbox {args.mailbox}", "TRYCREATE") from exc
        trainer = self.mail.spam_trainer
        if trainer is not None and result.pairs:
            # Into Junk: spam; out of Junk (not into Trash): ham (spam/training.py decides).
            user, source, copies = self.user, view.name, [b for _, b in result.pairs]
            self._after_answer.append(lambda: trainer.messages_moved(user, source, target, copies))
        code = None
        if result.pairs:
            code = (
                f"COPYUID {result.uidvalidity} {C.uid_set_text([a for a, _ in result.pairs])} "
                f"{C.uid_set_text([b for _, b in result.pairs])}"
            )
        verb = "MOVE" if move else "COPY"
        if not move:
            await self._updates_after(C.command_name(cmd), cmd)
            self.send(C.tagged(cmd.tag, "OK", f"{verb} completed", code))
            return None  # type: ignore[return-value]
        # RFC 6851 §4.3: COPYUID in an untagged OK, then the expunges, then the tagged OK.
        if code is not None:
            self._ok_code(code, "Moved")
        gone = [a for a, _ in result.pairs]
        self._report_own_expunge(gone)
        return f"{verb} completed"

    async def cmd_expunge(self, cmd: Command) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        self._writable()
        uid_filter = None
        if C.is_uid(cmd):
            uid_filter = self.uids_of(C.expunge_set(cmd), uid=True)
        gone = await self.writing(self.store.expunge, self.user, view.name, uid_filter)
        self._report_own_expunge(list(gone))
        return "EXPUNGE completed"

    async def cmd_fetch(self, cmd: Command) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        args = C.fetch_args(cmd)
        uids = self.uids_of(args.seqset, uid=args.uid)
        if args.changed_since is not None or any(i.kind == "MODSEQ" for i in args.items):
            self._condstore_on()
        if args.changed_since is not None:
            uids = [u for u in uids if view.info[u].modseq > args.changed_since]
        if args.vanished:
            # RFC 7162 §3.2.6: UID FETCH ... (CHANGEDSINCE n VANISHED)
            if not (args.uid and self.qresync and args.changed_since is not None):
                raise Bad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
            changes = await self.blocking(
                self.store.folder_changes, self.user, view.name, args.changed_since
            )
            wanted = set(self.uids_of(args.seqset, uid=True)) | set(changes.vanished)
            gone = [u for u in changes.vanished if u in wanted and u not in view.info]
            if gone:
                self.send(b"* VANISHED (EARLIER) " + C.uid_set_text(gone).encode() + b"\r\n")
        items = args.items
        fresh: dict[int, MessageInfo] = {}
        if not self.readonly and any(i.sets_seen for i in items):
            unseen = [u for u in uids if "\\Seen" not in view.info[u].flags]
            if unseen:
                seen = await self.writing(
                    self.store.store_flags,
                    self.user,
                    view.name,
                    unseen,
                    FlagMode.ADD,
                    frozenset({"\\Seen"}),
                )
                for update in seen.updated:
                    old = view.info[update.uid]
                    info = _updated(old, update)
                    view.note_own_change(info)
                    fresh[update.uid] = info
                if fresh and self.contexts:
                    self.contexts.stale = True  # \Seen set: results may change (RFC 5267)
                if fresh and not any(i.kind == "FLAGS" for i in items):
                    items = [*items, FetchItem("FLAGS", name="FLAGS")]
        user, folder = self.user, view.name
        store = self.store
        with_modseq = self.condstore and args.changed_since is not None
        metadata = only_metadata(items)  # FLAGS and the like: no store call at all
        want_structure = any(i.kind in ("ENVELOPE", "BODYSTRUCTURE", "BODY") for i in items)
        want_header = any(i.top_header for i in items)
        expunged: list[int] = []  # read as gone: another session expunged them
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            if metadata:
                for line in fetch_metadata(
                    view,
                    chunk,
                    items,
                    with_uid=args.uid,
                    with_modseq=with_modseq,
                    infos=fresh,
                    show_recent=not self.rev2,
                ).responses:
                    self.send(line)
                await self.flush()
                continue
            blobs = (
                await self.reading(store.cached_structures, user, folder, chunk)
                if want_structure or want_header
                else {}
            )
            cached = {uid: decode_cache(blob) for uid, blob in blobs.items()}
            reads = any(i.needs_message and not i.top_header for i in items) or (
                (want_structure or want_header)
                and not all(cache_serves(cached.get(u), header=want_header) for u in chunk)
            )

            def render_chunk(
                read: Callable[[int], bytes],
                chunk: list[int] = chunk,
                cached: dict[int, CacheEntry | None] = cached,
            ) -> FetchResult:
                return fetch_messages(
                    view,
                    chunk,
                    items,
                    read=read,
                    cached=cached,
                    with_uid=args.uid,
                    with_modseq=with_modseq,
                    show_recent=not self.rev2,
                    infos=fresh,
                )

            try:
                result = await self._fetch_chunk(render_chunk, chunk, reads=reads)
            except FetchFailed as exc:
                raise No(exc.text, exc.code) from exc
            expunged += result.gone
            for line in result.responses:
                self.send(line)
            if result.new_cache:
                with contextlib.suppress(StoreError):
                    try:
                        store.cache_structures(user, folder, result.new_cache, quick=True)
                    except WouldBlock:
                        await asyncio.to_thread(
                            store.cache_structures, user, folder, result.new_cache
                        )
            await self.flush()
        if expunged or view.pending_expunge.intersection(uids):
            # Expunged by another session, not yet told to this one (no EXPUNGE may go out
            # during FETCH, RFC 9051 §7.5.1). RFC 2180 §4.1.2: the others' data is sent and
            # the expunged ones are left out; RFC 9051 §7.1 / RFC 5530 §3: OK [EXPUNGEISSUED]
            # says so, even when every message asked for is gone: as Dovecot (cmd-fetch.c,
            # never NO to FETCH), since clients (and imaptest) take a NO as a failed command.
            await self._updates_after(C.command_name(cmd), cmd)
            self.send(
                C.tagged(
                    cmd.tag,
                    "OK",
                    "FETCH completed; some messages were expunged by another session",
                    "EXPUNGEISSUED",
                )
            )
            return None  # type: ignore[return-value]
        return "FETCH completed"

    async def _fetch_chunk(
        self,
        render: Callable[[Callable[[int], bytes]], FetchResult],
        uids: list[int],
        *,
        reads: bool,
    ) -> FetchResult:
        """Render a FETCH chunk: on the event loop when it reads no file or only small ones
        (INLINE_READ_BYTES in all; the store answers ``quick``), else, or when the store
        would block, in a thread."""
        view = self.view
        assert view is not None
        assert self.user is not None
        user, folder, store = self.user, view.name, self.store
        if not reads:
            return render(_no_read)
        size = sum(view.info[u].size for u in uids if u in view.info)
        if size <= INLINE_READ_BYTES:
            try:
                return render(store.message_reader(user, folder, quick=True))
            except WouldBlock:
                pass
            except StoreUnavailable as exc:
                raise self._unavailable(exc) from exc
        result: FetchResult = await self.blocking(render, store.message_reader(user, folder))
        return result

    async def cmd_search(self, cmd: Command) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        args = C.search_args(cmd)
        if args.charset and args.charset.upper() not in ("UTF-8", "US-ASCII"):
            raise No(
                "Only UTF-8 and US-ASCII searches are supported", "BADCHARSET (UTF-8 US-ASCII)"
            )
        if C.key_uses_modseq(args.key):
            self._condstore_on()
        returns = args.returns
        if returns is not None and returns.update:
            self._check_context_tag(cmd.tag)
        uids = await self._search(args.key)
        numbers = uids if args.uid else view.seqs_of(uids)
        if returns is not None:
            parts = esearch_parts(numbers, returns, ordered=False)
            modseq = _esearch_modseq(view, uids, returns)
            if self.condstore and C.key_uses_modseq(args.key) and modseq:
                parts.append(f"MODSEQ {modseq}")
            self._esearch(cmd.tag, args.uid, parts)
            if returns.update:
                pinned = pin_key(args.key, view)
                self._keep_context(
                    cmd.tag,
                    uid=args.uid,
                    ordered=False,
                    result=uids,
                    evaluate=lambda: self._search(pinned),
                )
        else:
            line = b"* SEARCH" + _number_list(numbers)
            if self.condstore and C.key_uses_modseq(args.key) and uids:
                line += b" (MODSEQ %d)" % max(view.info[u].modseq for u in uids)
            self.send(line + b"\r\n")
        return "SEARCH completed"

    def _esearch(self, tag: str, uid: bool, parts: list[str]) -> None:
        """``* ESEARCH (TAG "t") [UID] items`` (RFC 4731 §3.1; RFC 5267 §3 for SORT)."""
        head = b"* ESEARCH (TAG " + render(tag) + b")" + (b" UID" if uid else b"")
        self.send(head + b"".join(b" " + p.encode() for p in parts) + b"\r\n")

    def _check_context_tag(self, tag: str) -> None:
        # RFC 5267 §4.3: a tag still naming an UPDATE context "SHALL result in ... BAD".
        if self.contexts is not None and render(tag) in self.contexts:
            raise Bad(f"Tag {tag[:60]} names a search with UPDATE still in effect; use another tag")

    def _keep_context(
        self, tag: str, *, uid: bool, ordered: bool, result: list[int], evaluate: Evaluate
    ) -> None:
        """Keep a SEARCH/SORT result up to date (RFC 5267 §4.3), or say why not: an untagged
        NO [NOUPDATE "tag"] (§4.3.1) while the other return options stand."""
        view = self.view
        assert view is not None
        contexts = self.contexts
        if contexts is None:
            contexts = self.contexts = LiveContexts(view.uids)
        refused = contexts.refusal(ordered=ordered)
        if refused is not None:
            self.send(b"* NO [NOUPDATE " + render(tag) + b"] " + refused.encode() + b"\r\n")
            return
        contexts.numbering = list(view.uids)  # the client's numbering, at a command's end
        contexts.add(LiveContext(render(tag), uid, ordered, evaluate, list(result)))

    async def _search(self, key: C.Key) -> list[int]:
        view = self.view
        assert view is not None
        assert self.user is not None
        user, folder, store = self.user, view.name, self.store

        def full_text(needle: str, headers: bool, body: bool) -> set[int]:
            return store.search_text(user, folder, needle, headers=headers, body=body)

        def headers(uids: list[int]) -> dict[int, dict[str, list[str]]]:
            out = {}
            for uid in uids:
                try:
                    raw = store.fetch_message(user, folder, uid)
                except StoreError:
                    continue
                out[uid] = header_fields(raw)
            return out

        def needs_disk(*_args: Any) -> Any:
            raise WouldBlock("the search reads the index or the messages")

        bound = C.bind_sets(key, exists=view.exists, max_uid=view.uids[-1] if view.uids else 0)
        try:
            # Flags, sizes, dates, sets: answered from the view here, without a thread.
            return evaluate(bound, SearchContext(view, needs_disk, needs_disk))
        except WouldBlock:
            pass
        found: list[int] = await self.blocking(
            evaluate, bound, SearchContext(view, full_text, headers)
        )
        return found

    async def cmd_sort(self, cmd: Command) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        args = C.sort_args(cmd)
        returns = args.returns
        if returns is not None and returns.update:
            self._check_context_tag(cmd.tag)
        uids = await self._search(args.key)
        infos = await self.blocking(self._sort_infos, uids)
        ordered = sort_messages(infos, args.criteria)
        numbers = [i.uid if args.uid else i.seq for i in ordered]
        if returns is None:
            self.send(b"* SORT" + _number_list(numbers) + b"\r\n")
            return "SORT completed"
        # RFC 5267 §3: SORT RETURN (...) answers ESEARCH, in the sort order.
        self._esearch(cmd.tag, args.uid, esearch_parts(numbers, returns, ordered=True))
        if returns.update:
            self._keep_context(
                cmd.tag,
                uid=args.uid,
                ordered=True,
                result=[i.uid for i in ordered],
                evaluate=self._sorted_results(pin_key(args.key, view), args.criteria, infos),
            )
        return "SORT completed"

    def _sorted_results(
        self, key: C.Key, criteria: list[tuple[str, bool]], infos: list[SortInfo]
    ) -> Evaluate:
        """A SORT context's result, computed again: the search, then the sort over what SORT
        read of each message, kept between runs (it never changes) for the current
        results only."""
        cache = {i.uid: i for i in infos}

        async def evaluate() -> list[int]:
            found = await self._search(key)
            missing = [u for u in found if u not in cache]
            if missing:
                for info in await self.blocking(self._sort_infos, missing):
                    cache[info.uid] = info
            wanted = set(found)
            for uid in [u for u in cache if u not in wanted]:
                del cache[uid]
            # Ties go by sequence number (RFC 5256 §3): mailbox order, as ``found`` is.
            now = [replace(cache[u], seq=n) for n, u in enumerate(found, 1) if u in cache]
            return [i.uid for i in sort_messages(now, criteria)]

        return evaluate

    async def cmd_thread(self, cmd: Command) -> str:
        args = C.thread_args(cmd)
        algorithm = _THREAD_ALGORITHMS.get(args.algorithm.upper())
        if algorithm is None:
            raise C.BadArgs(f"Unknown threading algorithm {args.algorithm}")
        uids = await self._search(args.key)
        infos = await self.blocking(self._sort_infos, uids)
        threads = algorithm(infos)
        self.send(b"* THREAD " + render_threads(threads, args.uid) + b"\r\n")
        return "THREAD completed"

    def _sort_infos(self, uids: list[int]) -> list[SortInfo]:
        """What SORT and THREAD read of each message: first occurrence of each field."""
        view = self.view
        assert view is not None
        assert self.user is not None
        out = []
        for uid in uids:
            try:
                raw = self.store.fetch_message(self.user, view.name, uid)
            except StoreError:
                continue
            fields: dict[str, str] = {}
            for name, value in raw_fields(raw):
                if name in _SORT_FIELDS and name not in fields:
                    fields[name] = value.decode("utf-8", "replace")
            info = view.info[uid]
            out.append(
                SortInfo(
                    seq=view.seq_of(uid) or 0,
                    uid=uid,
                    arrival=info.internal_date,
                    date=parse_sent_date(fields["date"]) if "date" in fields else None,
                    size=info.size,
                    subject=fields.get("subject", ""),
                    from_=fields.get("from", ""),
                    to=fields.get("to", ""),
                    cc=fields.get("cc", ""),
                    message_id=fields.get("message-id", ""),
                    in_reply_to=fields.get("in-reply-to", ""),
                    references=fields.get("references", ""),
                )
            )
        return out

    cmd_uid_fetch = cmd_fetch
    cmd_uid_search = cmd_search
    cmd_uid_sort = cmd_sort
    cmd_uid_thread = cmd_thread
    cmd_uid_expunge = cmd_expunge
    cmd_uid_store = cmd_store
    cmd_uid_copy = cmd_copy
    cmd_uid_move = cmd_move


_SORT_FIELDS = frozenset(
    {"date", "subject", "from", "to", "cc", "message-id", "in-reply-to", "references"}
)
_THREAD_ALGORITHMS = {
    "ORDEREDSUBJECT": thread_orderedsubject,
    "REFERENCES": thread_references,
}


def _no_read(uid: int) -> bytes:  # pragma: no cover - fetch_messages reads nothing then
    raise AssertionError("this FETCH needs no message file")


def _esearch_modseq(view: MailboxView, uids: list[int], returns: ReturnOptions) -> int:
    """RFC 7162 §3.1.5: the highest MODSEQ of the messages the ESEARCH result returns
    (only the MIN/MAX message or the PARTIAL ones when just those are asked for); 0 when
    it returns none."""
    if not uids:
        return 0
    if returns.all or returns.count:
        returned = uids
    else:
        returned = [min(uids)] if returns.min else []
        if returns.max:
            returned.append(max(uids))
        if returns.partial is not None:
            returned += returns.partial.pick(uids)
    return max((view.info[u].modseq for u in returned), default=0)


def _updated(old: MessageInfo, update: FlagUpdate) -> MessageInfo:
    return MessageInfo(
        update.uid, update.flags, update.keywords, old.internal_date, old.size, update.modseq
    )


def _number_list(numbers: list[int]) -> bytes:
    """`` 1 2 5``: a SEARCH or SORT result (RFC 9051 §7.3.5), formatted by one ``%`` in C
    (twice as fast as joining str() of each number, which costs most of a large SEARCH)."""
    return (b" %d" * len(numbers)) % tuple(numbers)
