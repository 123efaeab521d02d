"""FETCH data (RFC 9051 §6.4.5 and §7.5.2, BINARY RFC 3516, MODSEQ RFC 7162).

``FetchItem`` is the normalised form of one requested item (the command adapter builds it
from the parser's AST). ``fetch_messages`` runs on the event loop when it reads no file or
only small ones, else in a worker thread: it reads each message once, computes its
structure once (or takes ENVELOPE/BODYSTRUCTURE, rendered, from the store's cache), and
returns the rendered untagged FETCH responses plus the cache entries it computed.
``fetch_metadata`` answers a FETCH of only what the session's view holds (FLAGS, UID,
INTERNALDATE, RFC822.SIZE, MODSEQ) in one pass, with no store call.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Callable, Mapping
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
    header_end,
    header_part,
    parse_structure,
    select_fields,
)
from pochta.access.mailbox_view import MailboxView
from pochta.protocols.imap.fetch_items import META, FetchItem
from pochta.protocols.imap.render import format_internaldate, render
from pochta.protocols.imap.values import Atom
from pochta.store import MessageInfo, NoSuchMessage


class FetchFailed(Exception):
    """A FETCH that cannot be answered (NO with a response code)."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


_FIELDS_TEXTS = ("HEADER.FIELDS", "HEADER.FIELDS.NOT")  # sections that pick fields


@dataclass(slots=True)
class FetchResult:
    responses: list[bytes] = field(default_factory=list)
    new_cache: dict[int, bytes] = field(default_factory=dict)
    # UIDs another session expunged before they could be read: left out of the responses
    # (RFC 2180 §4.1.2), reported with EXPUNGEISSUED (RFC 9051 §7.1).
    gone: list[int] = field(default_factory=list)


_cache_encoder = msgspec.msgpack.Encoder()
_cache_decoder = msgspec.msgpack.Decoder()
# 3: as 2, and the message's header block (up to HEADER_CACHE_MAX octets; nil above it), so
#    BODY[HEADER.FIELDS (...)] — what clients fetch to list a folder — opens no file;
# 2: ENVELOPE, BODY and BODYSTRUCTURE as rendered bytes (a FETCH copies them out);
# 1: as IMAP values, rendered at each FETCH.
# Older versions are still read, and stored again in this one when the message is read.
CACHE_VERSION = 3
HEADER_CACHE_MAX = 8192


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A decoded cache blob: ENVELOPE, BODY and BODYSTRUCTURE as rendered; the header block
    (None: too large to keep, or a blob of an older version); ``current``: of this version."""

    structure: tuple[bytes, bytes, bytes]
    header: bytes | None
    current: bool


def decode_cache(blob: bytes | CacheEntry | None) -> CacheEntry | None:
    """A cache blob decoded (an entry is passed through); None when there is none or it
    cannot be read (then the message is read and the blob computed again)."""
    if blob is None or isinstance(blob, CacheEntry):
        return blob
    if not blob:
        return None
    try:
        fields = _cache_decoder.decode(blob)
        version = fields[0]
        if version == 1 and len(fields) == 4:
            env, body, bodystructure = fields[1:4]
            return CacheEntry((render(env), render(body), render(bodystructure)), None, False)
        env, body, bodystructure = fields[1:4]
        if type(env) is not bytes or type(body) is not bytes or type(bodystructure) is not bytes:
            return None
        if version == CACHE_VERSION and len(fields) == 5:
            header = fields[4]
            if header is None or type(header) is bytes:
                return CacheEntry((env, body, bodystructure), header, True)
        elif version == 2 and len(fields) == 4:
            return CacheEntry((env, body, bodystructure), None, False)
    except (msgspec.DecodeError, ValueError, TypeError, IndexError):
        return None
    return None


def cache_serves(entry: CacheEntry | None, *, header: bool) -> bool:
    """Whether this entry answers the structure items, and the header items when
    ``header``, with no read of the message."""
    if entry is None:
        return False
    return not header or (entry.current and entry.header is not None)


def _cache_blob(structure: tuple[bytes, bytes, bytes], raw: bytes, body_start: int) -> bytes:
    header = raw[:body_start] if body_start <= HEADER_CACHE_MAX else None
    return _cache_encoder.encode([CACHE_VERSION, *structure, header])


def fetch_messages(
    view: MailboxView,
    uids: list[int],
    items: list[FetchItem],
    *,
    read: Callable[[int], bytes],
    cached: Mapping[int, bytes | CacheEntry | None],
    with_uid: bool,
    with_modseq: bool,
    infos: dict[int, MessageInfo] | None = None,
    show_recent: bool = False,
) -> FetchResult:
    """Render ``* n FETCH (...)`` for each UID. ``read(uid)`` returns the message (CRLF),
    ``cached`` the store's structure blobs (or their ``decode_cache`` entries), ``infos``
    flag states newer than the view's.
    A message is read only for what its cache blob lacks."""
    result = FetchResult()
    names = {i.kind for i in items}
    need_structure = bool(names & {"ENVELOPE", "BODYSTRUCTURE", "BODY"})
    need_header = any(i.top_header for i in items)
    need_message = any(i.needs_message and not i.top_header for i in items)
    deep = any(i.needs_message and not _top_level(i) for i in items)
    newer = infos or {}
    for uid in uids:
        seq = view.seq_of(uid)
        info = newer.get(uid) or view.info.get(uid)
        if seq is None or info is None:
            continue
        raw: bytes | None = None
        part: Part | None = None
        entry = decode_cache(cached.get(uid)) if need_structure or need_header else None
        structure = entry.structure if entry is not None else None
        header = entry.header if entry is not None else None
        if need_message or (need_structure and entry is None) or (need_header and header is None):
            try:
                raw = read(uid)
            except NoSuchMessage:
                result.gone.append(uid)
                continue
            if structure is None and (need_structure or need_header):
                part = parse_structure(raw)
                structure = (
                    render(envelope(part)),
                    render(body_structure(part, False, raw)),
                    render(body_structure(part, True, raw)),
                )
                result.new_cache[uid] = _cache_blob(structure, raw, part.body_start)
            elif structure is not None and entry is not None and not entry.current:
                result.new_cache[uid] = _cache_blob(structure, raw, header_end(raw))
        cut: Part | None = None  # the cached header block, its fields split when cut_split
        cut_split = False
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
            elif raw is None:
                # A header item answered from the cached header block: the same octets as
                # the message's, parsed alone (its header is all of it).
                assert item.top_header
                assert header is not None
                data = _selected_fields(item, header)
                if data is None:
                    with_fields = item.text in _FIELDS_TEXTS  # split only for these
                    if cut is None or (with_fields and not cut_split):
                        cut, cut_split = header_part(header, fields=with_fields), with_fields
                    data = _content(item, header, cut)
                add(item.name.encode("ascii") + b" " + data)
            else:
                if part is None and not _whole_message(item):
                    # Only for a part, a header or BINARY; the top header or text alone
                    # needs no walk of the MIME tree.
                    part = parse_structure(raw, depth=0 if deep else MAX_DEPTH)
                add(item.name.encode("ascii") + b" " + _content(item, raw, part))
        if with_modseq and "MODSEQ" not in names:
            add(b"MODSEQ (%d)" % info.modseq)
        result.responses.append(b"* %d FETCH (" % seq + b" ".join(fields) + b")\r\n")
    return result


def only_metadata(items: list[FetchItem]) -> bool:
    """Whether a FETCH asks only for what the view holds (FLAGS, UID, INTERNALDATE,
    RFC822.SIZE, MODSEQ): :func:`fetch_metadata` answers it."""
    return all(i.kind in META for i in items)


def fetch_metadata(
    view: MailboxView,
    uids: list[int],
    items: list[FetchItem],
    *,
    with_uid: bool,
    with_modseq: bool,
    infos: Mapping[int, MessageInfo],
    show_recent: bool = False,
) -> FetchResult:
    """:func:`fetch_messages` for items the view holds (:func:`only_metadata`): no cache
    and no message, one pass over the UIDs (what clients send to learn the flags of a whole
    folder), the items in the same order: UID first when UID FETCH did not name it (RFC
    9051 §6.4.9), MODSEQ last when CHANGEDSINCE did not (RFC 7162 §3.1.4.1)."""
    kinds = [i.kind for i in items]
    if with_uid and "UID" not in kinds:
        kinds.insert(0, "UID")
    if with_modseq and "MODSEQ" not in kinds:
        kinds.append("MODSEQ")
    result = FetchResult()
    out = result.responses.append
    shown, known, recent = view.uids, view.info, view.recent
    count, find = len(shown), bisect.bisect_left
    only_flags = kinds == ["UID", "FLAGS"]
    for uid in uids:
        index = find(shown, uid)
        if index == count or shown[index] != uid:
            continue
        info = infos.get(uid) or known.get(uid)
        if info is None:
            continue
        if only_flags:  # UID FETCH n:m (FLAGS), the usual resynchronisation
            flags = _flags_item(info.flags, info.keywords, show_recent and uid in recent)
            out(b"* %d FETCH (UID %d %s)\r\n" % (index + 1, uid, flags))
            continue
        fields = []
        for kind in kinds:
            if kind == "FLAGS":
                fields.append(_flags_item(info.flags, info.keywords, show_recent and uid in recent))
            elif kind == "UID":
                fields.append(b"UID %d" % uid)
            elif kind == "INTERNALDATE":
                fields.append(_internaldate_item(info.internal_date))
            elif kind == "RFC822.SIZE":
                fields.append(b"RFC822.SIZE %d" % info.size)
            else:
                fields.append(b"MODSEQ (%d)" % info.modseq)
        out(b"* %d FETCH (" % (index + 1) + b" ".join(fields) + b")\r\n")
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
    return _rendered(item, data)


def _selected_fields(item: FetchItem, header: bytes) -> bytes | None:
    """BODY[HEADER.FIELDS (...)] or its .NOT of the top header, cut from the header block
    without splitting it into fields (``imap_mime.select_fields``); None for any other item
    and for a header that needs the general path."""
    if item.kind != "SECTION" or item.part or item.text not in _FIELDS_TEXTS:
        return None
    data = select_fields(header, item.fields, exclude=item.text == "HEADER.FIELDS.NOT")
    return None if data is None else _rendered(item, data)


def _rendered(item: FetchItem, data: bytes | None) -> bytes:
    """A section's octets as the response gives them: NIL, the <origin.count> part of them
    (RFC 9051 §6.4.5), a literal or a quoted string."""
    if data is None:
        return b"NIL"
    if item.partial is not None:
        origin, count = item.partial
        data = data[origin : origin + count]
    return render(data, binary=item.kind == "BINARY")
