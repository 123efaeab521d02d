"""SORT and THREAD (RFC 5256, with DISPLAYFROM/DISPLAYTO of RFC 5957) as pure functions.

The session describes each message as a `SortInfo` (raw header values, sizes, dates) and
gets back an order (`sort_messages`) or a forest of `Thread` nodes (`thread_orderedsubject`,
`thread_references`), which `render_threads` writes as the THREAD response data (RFC 5256 §4).

Strings are compared through `collation_key`: exactly i;ascii-casemap, the RFC 5256 baseline,
for ASCII text, and an approximation of i;unicode-casemap (RFC 5051, the collation of RFC 5255
I18NLEVEL=1) for the rest. Every tree walk is iterative: a reply chain can be deeper than
Python's recursion limit.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from itertools import pairwise

from pochta.mime.addresses import Address, parse_address_list
from pochta.mime.base_subject import collation_key, decode_encoded_words, extract_base_subject

__all__ = [
    "SORT_KEYS",
    "SortInfo",
    "Thread",
    "parse_sent_date",
    "render_threads",
    "sort_messages",
    "thread_orderedsubject",
    "thread_references",
]

# Deviation from RFC 5256 §3 (REFERENCES): only the last MAX_REFERENCES message IDs of a
# References field are used, to bound the work one message can cause (every link is checked
# for loops). The last IDs hold the nearest ancestors, the parent among them.
MAX_REFERENCES = 1000


@dataclass(frozen=True, slots=True)
class SortInfo:
    """What SORT and THREAD need to know about one message.

    Header values are raw (unfolded or not, RFC 2047 encoded words allowed); "" when the
    field is absent.
    """

    seq: int  # message sequence number; ties are broken by it (RFC 5256 §3)
    uid: int
    arrival: float  # INTERNALDATE, unix seconds
    date: float | None  # Date: in unix seconds (UTC), None when missing or unparsable
    size: int  # RFC822.SIZE in octets
    subject: str
    from_: str
    to: str
    cc: str
    message_id: str
    in_reply_to: str
    references: str

    @property
    def sent(self) -> float:
        """RFC 5256 §2.2: the sent date, or INTERNALDATE when Date: is missing or invalid."""
        return self.arrival if self.date is None else self.date


@dataclass(frozen=True, slots=True)
class Thread:
    """A node of a THREAD result: a message, or a dummy (`info` None) that only groups."""

    info: SortInfo | None
    children: tuple[Thread, ...] = ()


def parse_sent_date(value: str) -> float | None:
    """RFC 5256 §2.2: a Date: value as unix seconds (UTC), or None if it does not parse.

    A date without a usable time zone ("-0000") counts as UTC (RFC 5256 §2.2).
    """
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# -- SORT (RFC 5256 §3, RFC 5957 §3-§4) --------------------------------------------------


def _first_address(value: str) -> Address | None:
    """The first entry of the address list in a header value, or None when it has none.

    Parsed like ENVELOPE (pochta.mime.addresses, after Dovecot): for a group this is the
    group start, whose addr-mailbox is the group's name (RFC 9051 §7.5.2).
    """
    first = parse_address_list(value, limit=1)
    return first[0] if first else None


def _mailbox_key(value: str) -> str:
    # RFC 5256 §3 FROM/TO/CC: the [IMAP] addr-mailbox of the first address; a missing field
    # or address sorts as the empty string. A group's first entry is its start, whose
    # addr-mailbox holds the group name (RFC 9051 §7.5.2), as in Dovecot.
    addr = _first_address(value)
    return collation_key(addr.mailbox or "") if addr is not None else ""


def _display_key(value: str) -> str:
    # RFC 5957 §3: the display-name (RFC 2047 decoded) if non-empty, else the addr-spec
    # (addr-mailbox "@" addr-host), else the addr-mailbox, else the empty string. A group
    # sorts by its name (the addr-mailbox of its start entry), as in Dovecot.
    addr = _first_address(value)
    if addr is None:
        return ""
    display = decode_encoded_words(addr.name or "").strip()
    if display:
        return collation_key(display)
    if addr.mailbox and addr.domain:
        return collation_key(f"{addr.mailbox}@{addr.domain}")
    return collation_key(addr.mailbox or "")


# Each key is (number, text) so that every criterion sorts with one key type.
_SortKey = tuple[float, str]

_SORT_KEYS: dict[str, Callable[[SortInfo], _SortKey]] = {
    # RFC 5256 §3: internal date and time of the message.
    "ARRIVAL": lambda i: (i.arrival, ""),
    # RFC 5256 §3: [IMAP] addr-mailbox of the first "cc" address.
    "CC": lambda i: (0.0, _mailbox_key(i.cc)),
    # RFC 5256 §3 and §2.2: the sent date.
    "DATE": lambda i: (i.sent, ""),
    # RFC 5256 §3: [IMAP] addr-mailbox of the first "From" address.
    "FROM": lambda i: (0.0, _mailbox_key(i.from_)),
    # RFC 5256 §3: [IMAP] size of the message in octets.
    "SIZE": lambda i: (float(i.size), ""),
    # RFC 5256 §3: the base subject text (§2.1).
    "SUBJECT": lambda i: (0.0, collation_key(extract_base_subject(i.subject)[0])),
    # RFC 5256 §3: [IMAP] addr-mailbox of the first "To" address.
    "TO": lambda i: (0.0, _mailbox_key(i.to)),
    # RFC 5957 §4: display value of the first "From" address.
    "DISPLAYFROM": lambda i: (0.0, _display_key(i.from_)),
    # RFC 5957 §4: display value of the first "To" address.
    "DISPLAYTO": lambda i: (0.0, _display_key(i.to)),
}

SORT_KEYS = frozenset(_SORT_KEYS)


def sort_messages(
    infos: Iterable[SortInfo], criteria: Sequence[tuple[str, bool]]
) -> list[SortInfo]:
    """RFC 5256 §3 SORT: `infos` ordered by `criteria`, each (key name, REVERSE).

    Keys are those of SORT_KEYS (case-insensitive). REVERSE reverses only its own key;
    messages equal under every criterion stay in sequence-number order, never reversed
    (RFC 5256 §3). Raises ValueError for an unknown key name.
    """
    out = sorted(infos, key=lambda i: i.seq)
    # Stable sorts, last criterion first: the first criterion ends up the primary key.
    # Python's sort stays stable with reverse=True, so ties keep sequence order.
    for name, reverse in reversed(criteria):
        key = _SORT_KEYS.get(name.upper())
        if key is None:
            known = " ".join(sorted(SORT_KEYS))
            raise ValueError(f"unknown SORT key {name!r} (known: {known})")
        out.sort(key=key, reverse=reverse)
    return out


# -- THREAD (RFC 5256 §3) ----------------------------------------------------------------

_ANGLE_ID = re.compile(r"<([^<>]*)>")


def _normal_msg_id(inner: str) -> str | None:
    """The normal form of the text between "<" and ">" of a msg-id, or None if invalid.

    RFC 5256 §3 (REFERENCES): msg-ids MUST be normalised so that quoting does not matter:
    <"01KF8JCEOCBS0045PS"@xxx.yyy.com> is <01KF8JCEOCBS0045PS@xxx.yyy.com>. Quotes and
    quoted-pair backslashes are removed, and comments and white space (CFWS, RFC 5322 §3.2.2)
    outside quotes. Valid means id-left "@" id-right, both non-empty (RFC 5322 §3.6.4).
    """
    out: list[str] = []
    quoted = False
    depth = 0
    i = 0
    while i < len(inner):
        c = inner[i]
        i += 1
        if quoted:
            if c == "\\" and i < len(inner):
                out.append(inner[i])
                i += 1
            elif c == '"':
                quoted = False
            else:
                out.append(c)
        elif depth:
            if c == "\\":
                i += 1
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
        elif c == '"':
            quoted = True
        elif c == "(":
            depth = 1
        elif c not in " \t\r\n":
            out.append(c)
    ident = "".join(out)
    left, at, right = ident.rpartition("@")
    return ident if at and left and right else None


def _msg_ids(value: str) -> list[str]:
    """The valid msg-ids of a header value, normalised, in order."""
    return [n for m in _ANGLE_ID.finditer(value) if (n := _normal_msg_id(m.group(1)))]


def _references(info: SortInfo) -> list[str]:
    """RFC 5256 §3 (REFERENCES): the message's references.

    The valid IDs of References:; if there are none, the first valid ID of In-Reply-To:.
    """
    refs = _msg_ids(info.references)
    if refs:
        return refs[-MAX_REFERENCES:]
    return _msg_ids(info.in_reply_to)[:1]


class _Node:
    """A mutable thread node while threading; `info` None for a dummy message."""

    __slots__ = ("children", "info", "parent", "reply", "subject")

    def __init__(self, info: SortInfo | None) -> None:
        self.info = info
        self.parent: _Node | None = None
        self.children: list[_Node] = []
        if info is None:
            self.subject = ""
            self.reply = False
        else:
            base, self.reply = extract_base_subject(info.subject)
            self.subject = collation_key(base)


def _link(parent: _Node, child: _Node) -> None:
    child.parent = parent
    parent.children.append(child)


def _unlink(child: _Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def _would_loop(parent: _Node, child: _Node) -> bool:
    """Making `parent` the parent of `child` would close a loop: `parent` is `child` or one
    of its descendants (RFC 5256 §3 REFERENCES steps 1.A and 1.B).

    Walks up from `parent` and through the subtree of `child` in turns and stops when either
    walk ends, so the cost is twice the smaller of the two: a long reply chain is cheap when
    the new child has few descendants, as it usually has.
    """
    up: _Node | None = parent
    down = [child]
    while True:
        if up is None:
            return False  # `child` is not an ancestor of `parent`
        if up is child:
            return True
        up = up.parent
        if not down:
            return False  # the whole subtree of `child` seen without `parent`
        node = down.pop()
        if node is parent:
            return True
        down.extend(node.children)


def _post_order(roots: Iterable[_Node]) -> list[_Node]:
    """Every node under `roots`, each after all of its descendants."""
    order: list[_Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def _first_message(node: _Node) -> _Node | None:
    """The node itself, or for a dummy its first child (recursively)."""
    current: _Node | None = node
    while current is not None and current.info is None:
        current = current.children[0] if current.children else None
    return current


def _sent_key(node: _Node) -> tuple[float, int]:
    """RFC 5256 §2.2 sent date, ties by sequence number; a dummy sorts as its first child
    (RFC 5256 §3 REFERENCES steps 4 and 6)."""
    first = _first_message(node)
    if first is None or first.info is None:
        return math.inf, 0
    return first.info.sent, first.info.seq


def _thread_subject(node: _Node) -> str:
    """RFC 5256 §3 REFERENCES step 5.B.1: the base subject of the message, or of the first
    child of a dummy (as a collation key)."""
    first = _first_message(node)
    return "" if first is None else first.subject


def _freeze(roots: Sequence[_Node]) -> list[Thread]:
    built: dict[_Node, Thread] = {}
    for node in _post_order(roots):
        built[node] = Thread(node.info, tuple(built[c] for c in node.children))
    return [built[r] for r in roots]


def thread_orderedsubject(infos: Iterable[SortInfo]) -> list[Thread]:
    """RFC 5256 §3 THREAD=ORDEREDSUBJECT ("poor man's threading").

    Messages are sorted by base subject, then sent date; each run of one base subject is a
    thread whose first message is the parent of all the others (no grandchildren). Threads
    are ordered by the sent date of their first message.
    """
    nodes = [_Node(i) for i in infos]
    nodes.sort(key=lambda n: (n.subject, *_sent_key(n)))
    threads: list[Thread] = []
    start = 0
    while start < len(nodes):
        end = start + 1
        while end < len(nodes) and nodes[end].subject == nodes[start].subject:
            end += 1
        first, rest = nodes[start], nodes[start + 1 : end]
        threads.append(Thread(first.info, tuple(Thread(n.info) for n in rest)))
        start = end
    threads.sort(key=lambda t: (t.info.sent, t.info.seq) if t.info else (math.inf, 0))
    return threads


def thread_references(infos: Iterable[SortInfo]) -> list[Thread]:
    """RFC 5256 §3 THREAD=REFERENCES: threads from References/In-Reply-To, then subjects.

    Steps (1) to (6) of the RFC are marked in the code. Message-ID comparison is
    case-sensitive; subject comparison goes through `collation_key`.
    """
    by_seq = sorted(infos, key=lambda i: i.seq)
    messages = [_Node(i) for i in by_seq]
    # (1.A) The ID table. A message without a valid Message-ID, or with one already taken by
    # a lower sequence number, gets a unique ID: it is left out of the table, so nothing can
    # refer to it.
    table: dict[str, _Node] = {}
    for info, node in zip(by_seq, messages, strict=True):
        ids = _msg_ids(info.message_id)
        if ids:
            table.setdefault(ids[0], node)
    dummies: list[_Node] = []
    for info, node in zip(by_seq, messages, strict=True):
        refs: list[_Node] = []
        for ref_id in _references(info):
            ref = table.get(ref_id)
            if ref is None:
                # (1.A) No message has this ID: a dummy, used for every later reference.
                ref = table[ref_id] = _Node(None)
                dummies.append(ref)
            refs.append(ref)
        # (1.A) Each reference is the parent of the next, unless the child already has a
        # parent (References may have been truncated) or the link would close a loop.
        for parent, child in pairwise(refs):
            if child.parent is None and not _would_loop(parent, child):
                _link(parent, child)
        # (1.B) The last reference is the message's parent: break any link made in (1.A),
        # then link unless that closes a loop. No references: no parent.
        _unlink(node)
        if refs and not _would_loop(refs[-1], node):
            _link(refs[-1], node)

    # (2) Messages without a parent are the children of the root.
    roots = [n for n in [*messages, *dummies] if n.parent is None]

    # (3) Prune dummies, bottom-up so that promoted children are pruned already: a dummy
    # without children goes; one with children goes and its children take its place.
    for node in _post_order(roots):
        if all(c.info is not None for c in node.children):
            continue
        kept: list[_Node] = []
        for child in node.children:
            if child.info is not None:
                kept.append(child)
                continue
            for grandchild in child.children:
                grandchild.parent = node
                kept.append(grandchild)
        node.children = kept
    # (3) Under the root, a dummy's children are promoted only when there is one child.
    pruned: list[_Node] = []
    for root in roots:
        if root.info is None and len(root.children) <= 1:
            for child in root.children:
                child.parent = None
                pruned.append(child)
            continue
        pruned.append(root)

    # (4) Sort the top level by sent date; a dummy by its first child after sorting those.
    for root in pruned:
        if root.info is None:
            root.children.sort(key=_sent_key)
    pruned.sort(key=_sent_key)

    # (5.A, 5.B) The subject table: one message per thread subject, preferring a dummy, then
    # a message that is not a reply or forward over one that is.
    subjects: dict[str, _Node] = {}
    for root in pruned:
        subject = _thread_subject(root)
        if not subject:
            continue
        held = subjects.get(subject)
        if held is None or (
            held.info is not None and (root.info is None or (held.reply and not root.reply))
        ):
            subjects[subject] = root

    # (5.C) Merge threads with the same thread subject.
    top: list[_Node | None] = list(pruned)
    position = {node: i for i, node in enumerate(pruned)}
    for root in pruned:
        subject = _thread_subject(root)
        if not subject:
            continue
        held = subjects[subject]
        if held is root:
            continue
        if held.info is None and root.info is None:
            # Both dummies: the current one's children join the held one's.
            for child in root.children:
                _link(held, child)
            root.children = []
        elif held.info is None or (root.reply and not held.reply):
            # Under a held dummy, or a reply/forward under its original.
            _link(held, root)
        else:
            # Otherwise a new dummy takes the held message's place, both as its children.
            dummy = _Node(None)
            top[position[held]] = dummy
            position[dummy] = position[held]
            _link(dummy, held)
            _link(dummy, root)
            subjects[subject] = dummy
        top[position[root]] = None

    # (6) Sort every set of siblings by sent date, grandchildren before children; a dummy
    # sorts by its first child.
    threads = [n for n in top if n is not None]
    for node in _post_order(threads):
        node.children.sort(key=_sent_key)
    threads.sort(key=_sent_key)
    return _freeze(threads)


def render_threads(threads: Iterable[Thread], use_uid: bool) -> bytes:
    """The THREAD response data of RFC 5256 §4, e.g. b"(2)(3 6 (4 23)(44 7 96))".

    thread-list    = "(" (thread-members / thread-nested) ")"
    thread-members = nz-number *(SP nz-number) [SP thread-nested]
    thread-nested  = 2*thread-list

    A message with one child is followed by that child inline; with more, each child is a
    parenthesised thread-list. A dummy is written as its children's thread-lists alone, and
    a dummy without children is left out. Messages are numbered by UID for UID THREAD.
    Empty output means no threads ("* THREAD" with nothing after it).
    """
    out: list[bytes] = []
    for thread in threads:
        if thread.info is None and not thread.children:
            continue
        out.append(b"(")
        stack: list[Thread | bytes] = [b")", thread]
        while stack:
            item = stack.pop()
            if isinstance(item, bytes):
                out.append(item)
                continue
            kids = [c for c in item.children if c.info is not None or c.children]
            if item.info is not None:
                out.append(b"%d" % (item.info.uid if use_uid else item.info.seq))
                if kids:
                    out.append(b" ")
            if len(kids) == 1:
                stack.append(kids[0])
                continue
            for kid in reversed(kids):
                stack.extend((b")", kid, b"("))
    return b"".join(out)
