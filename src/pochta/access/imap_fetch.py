"""FETCH data (RFC 9051 §6.4.5 and §7.5.2, BINARY RFC 3516, MODSEQ RFC 7162).

``FetchItem`` is the normalised form of one requested item (the command adapter builds it
from the parser's AST). ``fetch_messages`` runs on the event loop when it reads no file or
only small ones, else in a worker thread: it reads each message once, computes its
structure once (or takes ENVELOPE/BODYSTRUCTURE, rendered, from the store's cache), and
returns the rendered untagged FETCH responses plus the cache entries it computed.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from pochta.access.imap_mime import (
    MAX_DEPTH,
    Part,
    UnknownTransferEncoding,
    body_structure,
    envelope,
    fetch_binary,
    fetch_section,
    parse_structure,
)
from pochta.access.mailbox_view import MailboxView
from pochta.protocols.imap.fetch_items import FetchItem
from pochta.protocols.imap.render import format_internaldate, render
from pochta.protocols.imap.values import Atom
from pochta.store import MessageInfo, NoSuchMessage


class FetchFailed(Exception):
    """A FETCH that cannot be answered (NO with a response code)."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(slots=True)
class FetchResult:
    responses: list[bytes] = field(default_factory=list)
    new_cache: dict[int, bytes] = field(default_factory=dict)
    # UIDs another session expunged before they could be read: left out of the responses
    # (RFC 2180 §4.1.2), reported with EXPUNGEISSUED (RFC 9051 §7.1).
    gone: list[int] = field(default_factory=list)


_cache_encoder = msgspec.msgpack.Encoder()
_cache_decoder = msgspec.msgpack.Decoder()
# 2: ENVELOPE, BODY and BODYSTRUCTURE as rendered bytes (a FETCH copies them out);
# 1: as IMAP values, rendered at each FETCH (still read).
CACHE_VERSION = 2


def _cached(blob: bytes | None) -> tuple[tuple[bytes, bytes, bytes], bool] | None:
    """ENVELOPE, BODY and BODYSTRUCTURE as rendered, from a cache blob, and whether the
    blob is of an older version (to be stored again in this one)."""
    if not blob:
        return None
    try:
        version, env, body, bodystructure = _cache_decoder.decode(blob)
        if version == CACHE_VERSION and all(type(v) is bytes for v in (env, body, bodystructure)):
            return (env, body, bodystructure), False
        if version == 1:
            return (render(env), render(body), render(bodystructure)), True
    except (msgspec.DecodeError, ValueError, TypeError):
        return None
    return None


def fetch_messages(
    view: MailboxView,
    uids: list[int],
    items: list[FetchItem],
    *,
    read: Callable[[int], bytes],
    cached: dict[int, bytes],
    with_uid: bool,
    with_modseq: bool,
    infos: dict[int, MessageInfo] | None = None,
    show_recent: bool = False,
) -> FetchResult:
    """Render ``* n FETCH (...)`` for each UID. ``read(uid)`` returns the message (CRLF),
    ``cached`` the store's structure blobs, ``infos`` flag states newer than the view's."""
    result = FetchResult()
    names = {i.kind for i in items}
    need_structure = bool(names & {"ENVELOPE", "BODYSTRUCTURE", "BODY"})
    need_message = any(i.needs_message for i in items)
    deep = any(i.needs_message and not _top_level(i) for i in items)
    newer = infos or {}
    for uid in uids:
        seq = view.seq_of(uid)
        info = newer.get(uid) or view.info.get(uid)
        if seq is None or info is None:
            continue
        raw: bytes | None = None
        part: Part | None = None
        structure: tuple[bytes, bytes, bytes] | None = None
        if need_structure:
            found = _cached(cached.get(uid))
            if found is not None:
                structure, stale = found
                if stale:
                    result.new_cache[uid] = _cache_encoder.encode([CACHE_VERSION, *structure])
        if need_message or (need_structure and structure is None):
            try:
                raw = read(uid)
            except NoSuchMessage:
                result.gone.append(uid)
                continue
            if need_structure and structure is None:
                part = parse_structure(raw)
                structure = (
                    render(envelope(part)),
                    render(body_structure(part, False, raw)),
                    render(body_structure(part, True, raw)),
                )
                result.new_cache[uid] = _cache_encoder.encode([CACHE_VERSION, *structure])
        fields: list[bytes] = []
        add = fields.append
        if with_uid and "UID" not in names:
            add(b"UID %d" % uid)
        for item in items:
            kind = item.kind
            if kind == "UID":
                add(b"UID %d" % uid)
            elif kind == "FLAGS":
                add(_flags_item(info.flags, info.keywords, show_recent and uid in view.recent))
            elif kind == "INTERNALDATE":
                add(_internaldate_item(info.internal_date))
            elif kind == "RFC822.SIZE":
                add(b"RFC822.SIZE %d" % info.size)
            elif kind == "MODSEQ":
                add(b"MODSEQ (%d)" % info.modseq)
            elif kind == "ENVELOPE":
                assert structure is not None
                add(b"ENVELOPE " + structure[0])
            elif kind == "BODY":
                assert structure is not None
                add(b"BODY " + structure[1])
            elif kind == "BODYSTRUCTURE":
                assert structure is not None
                add(b"BODYSTRUCTURE " + structure[2])
            else:
                assert raw is not None
                if part is None and not _whole_message(item):
                    # Only for a part, a header or BINARY; the top header or text alone
                    # needs no walk of the MIME tree.
                    part = parse_structure(raw, depth=0 if deep else MAX_DEPTH)
                add(item.name.encode("ascii") + b" " + _content(item, raw, part))
        if with_modseq and "MODSEQ" not in names:
            add(b"MODSEQ (%d)" % info.modseq)
        result.responses.append(b"* %d FETCH (" % seq + b" ".join(fields) + b")\r\n")
    return result


@functools.lru_cache(maxsize=512)
def _flags_item(flags: frozenset[str], keywords: frozenset[str], recent: bool) -> bytes:
    """``FLAGS (...)``: a mailbox has few distinct flag sets, so each is rendered once."""
    names = sorted(flags | keywords)
    if recent:
        names.append("\\Recent")
    return b"FLAGS " + render([Atom(f) for f in names])


@functools.lru_cache(maxsize=4096)
def _internaldate_item(when: float) -> bytes:
    moment = dt.datetime.fromtimestamp(when, dt.UTC)
    return b"INTERNALDATE " + render(format_internaldate(moment))


def _top_level(item: FetchItem) -> bool:
    """The whole message, or its top header or text (RFC 9051 §6.4.5): no MIME tree."""
    if item.kind in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        return True
    return item.kind == "SECTION" and not item.part and item.text != "MIME"


def _whole_message(item: FetchItem) -> bool:
    """RFC822 and BODY[] (RFC 9051 §6.4.5): the message as it is, no parse needed."""
    return item.kind == "RFC822" or (item.kind == "SECTION" and not item.part and not item.text)


def _content(item: FetchItem, raw: bytes, part: Part | None) -> bytes:
    kind = item.kind
    data: bytes | None
    if _whole_message(item):
        data = raw
    elif part is None:  # pragma: no cover - fetch_messages parses for every other kind
        raise ValueError(kind)
    elif kind == "RFC822.HEADER":
        data = fetch_section(raw, part, (), "HEADER")
    elif kind == "RFC822.TEXT":
        data = fetch_section(raw, part, (), "TEXT")
    elif kind == "SECTION":
        data = fetch_section(raw, part, item.part, item.text, item.fields)
    elif kind in ("BINARY", "BINARY.SIZE"):
        try:
            data = fetch_binary(raw, part, item.part)
        except UnknownTransferEncoding as exc:
            raise FetchFailed(str(exc), "UNKNOWN-CTE") from exc
        if kind == "BINARY.SIZE":
            return b"%d" % len(data)
    else:  # pragma: no cover - the adapter builds only the kinds above
        raise ValueError(kind)
    if data is None:
        return b"NIL"
    if item.partial is not None:
        origin, count = item.partial
        data = data[origin : origin + count]
    return render(data, binary=kind == "BINARY")
