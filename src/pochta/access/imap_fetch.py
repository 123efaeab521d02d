"""FETCH data (RFC 9051 §6.4.5 and §7.5.2, BINARY RFC 3516, MODSEQ RFC 7162).

``FetchItem`` is the normalised form of one requested item (the command adapter builds it
from the parser's AST). ``fetch_messages`` runs in a worker thread: it reads each message
once, computes its structure once (or takes ENVELOPE/BODYSTRUCTURE from the store's cache),
and returns the rendered untagged FETCH responses plus the cache entries it computed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from pochta.access.imap_mime import (
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
from pochta.protocols.imap.values import Atom, IMAPValue
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
CACHE_VERSION = 1


def _cached(blob: bytes | None) -> tuple[IMAPValue, IMAPValue, IMAPValue] | None:
    if not blob:
        return None
    try:
        version, env, body, bodystructure = _cache_decoder.decode(blob)
    except (msgspec.DecodeError, ValueError, TypeError):
        return None
    if version != CACHE_VERSION:
        return None
    return env, body, bodystructure


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
    for uid in uids:
        seq = view.seq_of(uid)
        info = (infos or {}).get(uid) or view.info.get(uid)
        if seq is None or info is None:
            continue
        raw: bytes | None = None
        part: Part | None = None
        structure = None
        if need_structure:
            structure = _cached(cached.get(uid))
        if need_message or (need_structure and structure is None):
            try:
                raw = read(uid)
            except NoSuchMessage:
                result.gone.append(uid)
                continue
            part = parse_structure(raw)
            if need_structure and structure is None:
                env = envelope(part)
                structure = (
                    env,
                    body_structure(part, False, raw),
                    body_structure(part, True, raw),
                )
                result.new_cache[uid] = _cache_encoder.encode(
                    [CACHE_VERSION, env, structure[1], structure[2]]
                )
        fields: list[bytes] = []

        def add(name: str, value: bytes, fields: list[bytes] = fields) -> None:
            fields.append(name.encode("ascii") + b" " + value)

        if with_uid and "UID" not in names:
            add("UID", b"%d" % uid)
        for item in items:
            kind = item.kind
            if kind == "UID":
                add("UID", b"%d" % uid)
            elif kind == "FLAGS":
                flag_names = sorted(info.flags | info.keywords)
                if show_recent and uid in view.recent:
                    flag_names.append("\\Recent")
                add("FLAGS", render([Atom(f) for f in flag_names]))
            elif kind == "INTERNALDATE":
                when = dt.datetime.fromtimestamp(info.internal_date, dt.UTC)
                add("INTERNALDATE", render(format_internaldate(when)))
            elif kind == "RFC822.SIZE":
                add("RFC822.SIZE", b"%d" % info.size)
            elif kind == "MODSEQ":
                add("MODSEQ", b"(%d)" % info.modseq)
            elif kind == "ENVELOPE":
                assert structure is not None
                add("ENVELOPE", render(structure[0]))
            elif kind == "BODY":
                assert structure is not None
                add("BODY", render(structure[1]))
            elif kind == "BODYSTRUCTURE":
                assert structure is not None
                add("BODYSTRUCTURE", render(structure[2]))
            else:
                assert raw is not None
                assert part is not None
                add(item.name, _content(item, raw, part))
        if with_modseq and "MODSEQ" not in names:
            add("MODSEQ", b"(%d)" % info.modseq)
        result.responses.append(b"* %d FETCH (" % seq + b" ".join(fields) + b")\r\n")
    return result


def _content(item: FetchItem, raw: bytes, part: Part) -> bytes:
    kind = item.kind
    data: bytes | None
    if kind == "RFC822":
        data = raw
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
