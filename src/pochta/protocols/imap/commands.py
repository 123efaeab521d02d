"""Command arguments for the IMAP session, read from the parser's token trees.

``core.py`` reads whole commands into tokens; the functions here check
each command's arguments against the grammar of RFC 9051 §9 (and the extensions' grammars)
and return them in the forms the session works with. A wrong argument raises ``BadArgs``,
which the session answers with BAD.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from pochta.config.settings import IMAPSettings
from pochta.protocols.imap.core import (
    Command,
    CommandError,
    CommandParser,
    ContinuationRequest,
    Quoted,
    RawLine,
)
from pochta.protocols.imap.fetch_items import FetchItem
from pochta.protocols.imap.render import (
    MONTHS,
    decode_mailbox,
    encode_mailbox,
    render,
    render_text,
    set_text,
    tagged,
    untagged,
)
from pochta.protocols.imap.search_return import ReturnOptions, parse_return_options

__all__ = [
    "BadArgs",
    "CommandError",
    "ContinuationRequest",
    "RawLine",
    "SeqSet",
    "decode_mailbox",
    "encode_mailbox",
    "render",
    "render_text",
    "tagged",
    "untagged",
]


# A search key, normalised:
#   ("all",) ("none",) ("flag", "\\Seen", True) ("keyword", "$Junk", False)
#   ("seq", [1, 2, ...]) ("uid", [..]) ("larger", n) ("smaller", n) ("modseq", n)
#   ("date", "before" | "on" | "since", date, sent: bool)
#   ("header", "from", "text") ("text", "needle") ("body", "needle")
#   ("not", key) ("or", key, key) ("and", [key, ...])
Key = tuple[object, ...]


@dataclass(slots=True)
class ListOptions:
    subscribed: bool = False  # selection SUBSCRIBED
    special_use: bool = False  # selection SPECIAL-USE
    recursive_match: bool = False  # selection RECURSIVEMATCH
    return_subscribed: bool = False
    return_children: bool = True  # RFC 5258 §4: servers may always return them
    return_special_use: bool = True
    lsub: bool = False  # the LSUB command (RFC 3501 §6.3.9)


class BadArgs(ValueError):
    pass


def new_parser(s: IMAPSettings, *, authenticated: bool = False) -> CommandParser:
    return CommandParser(
        max_literal=s.max_literal_bytes,
        max_command=s.max_command_bytes,
        max_append=s.max_append_bytes,
        max_literal_before_login=s.max_literal_bytes_before_login,
        authenticated=authenticated,
    )


def command_name(cmd: Command) -> str:
    return cmd.name


def raw_line(event: object) -> bytes:
    if not isinstance(event, RawLine):
        raise BadArgs("Expected a continuation line")
    return event.line.strip()


def uid_set_text(numbers: Iterable[int]) -> str:
    return set_text(list(numbers))


# -- basic argument types -------------------------------------------------------------------


def _args(cmd: Command, low: int, high: int | None = None) -> list[object]:
    n = len(cmd.args)
    if n < low or (high is not None and n > high):
        raise BadArgs(f"Wrong number of arguments for {cmd.name}")
    return cmd.args


def astring(token: object) -> str:
    if isinstance(token, bytes):
        try:
            return token.decode("utf-8")
        except UnicodeDecodeError:
            raise BadArgs("String is not UTF-8") from None
    if isinstance(token, str):
        return str(token)
    raise BadArgs("Expected a string")


def atom(token: object) -> str:
    if isinstance(token, str) and not isinstance(token, Quoted):
        return str(token)
    raise BadArgs("Expected an atom")


_SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


def flag(token: object) -> str:
    """A flag; system flags are case-insensitive (RFC 9051 §2.3.2) and come out canonical."""
    name = atom(token)
    return _SYSTEM_FLAGS.get(name.lower(), name)


def number(token: object) -> int:
    if isinstance(token, str) and not isinstance(token, Quoted) and token.isdigit():
        value = int(token)
        if value < 2**63:
            return value
    raise BadArgs("Expected a number")


def mailbox(token: object) -> str:
    name = astring(token)
    return "INBOX" if name.upper() == "INBOX" else name


def parenthesised(token: object) -> list[object]:
    if isinstance(token, list):
        return token
    raise BadArgs("Expected a parenthesised list")


# -- sequence sets (RFC 9051 §9 sequence-set) -------------------------------------------------

_SET_RE = re.compile(r"(\d+|\*)(?::(\d+|\*))?")


@dataclass(frozen=True, slots=True)
class SeqSet:
    ranges: tuple[tuple[int | None, int | None], ...]  # None stands for "*"

    def resolve(self, largest: int) -> list[int]:
        """The numbers, with * as ``largest`` (ranges in either order), deduplicated."""
        out: set[int] = set()
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            if hi - lo > 10_000_000:
                hi = lo + 10_000_000
            out.update(range(lo, hi + 1))
        return sorted(out)


def seqset(token: object) -> SeqSet:
    text = atom(token)
    if text == "$":
        raise BadArgs("Saved search results ($) are not supported")
    ranges = []
    for piece in text.split(","):
        m = _SET_RE.fullmatch(piece)
        if m is None:
            raise BadArgs(f"Invalid sequence set {text!r}")
        a = None if m.group(1) == "*" else int(m.group(1))
        b = a if m.group(2) is None else (None if m.group(2) == "*" else int(m.group(2)))
        if a == 0 or b == 0:
            raise BadArgs("Sequence numbers start at 1")
        ranges.append((a, b))
    return SeqSet(tuple(ranges))


def resolve_set(s: SeqSet, largest: int) -> list[int]:
    return s.resolve(largest)


def is_uid(cmd: Command) -> bool:
    return cmd.name.startswith("UID ")


# -- dates ----------------------------------------------------------------------------------

_DATE_RE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME_RE = re.compile(
    r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_MONTHS = {m.lower(): i + 1 for i, m in enumerate(MONTHS)}


def date(token: object) -> dt.date:
    m = _DATE_RE.fullmatch(astring(token))
    if m is None or m.group(2).lower() not in _MONTHS:
        raise BadArgs("Invalid date")
    try:
        return dt.date(int(m.group(3)), _MONTHS[m.group(2).lower()], int(m.group(1)))
    except ValueError:
        raise BadArgs("Invalid date") from None


def date_time(token: object) -> dt.datetime:
    m = _DATE_TIME_RE.fullmatch(astring(token))
    if m is None or m.group(2).lower() not in _MONTHS:
        raise BadArgs("Invalid date-time")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (1 if sign == "+" else -1)
    try:
        return dt.datetime(
            int(year),
            _MONTHS[mon.lower()],
            int(day),
            int(hh),
            int(mm),
            int(ss),
            tzinfo=dt.timezone(offset),
        )
    except ValueError:
        raise BadArgs("Invalid date-time") from None


# -- per command ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginArgs:
    user: str
    password: str

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        return f"LoginArgs(user={self.user!r}, password=...)"


def login_args(cmd: Command) -> LoginArgs:
    a = _args(cmd, 2, 2)
    return LoginArgs(astring(a[0]), astring(a[1]))


@dataclass(frozen=True, slots=True)
class AuthenticateArgs:
    mechanism: str  # upper case
    initial_response: bytes | None  # RFC 4959 SASL-IR, decoded; None: none sent

    def __repr__(self) -> str:
        sent = "none" if self.initial_response is None else "..."
        return f"AuthenticateArgs(mechanism={self.mechanism!r}, initial_response={sent})"


def authenticate_args(cmd: Command) -> AuthenticateArgs:
    a = _args(cmd, 1, 2)
    mech = atom(a[0]).upper()
    if len(a) == 1:
        return AuthenticateArgs(mech, None)
    text = astring(a[1])
    if text == "=":
        return AuthenticateArgs(mech, b"")  # RFC 4959 §3: an empty initial response
    try:
        return AuthenticateArgs(mech, base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise BadArgs("Invalid base64 in the initial response") from None


@dataclass(frozen=True, slots=True)
class EnableArgs:
    capabilities: list[str]  # as the client spelt them (RFC 5161 §3.1)


def enable_args(cmd: Command) -> EnableArgs:
    return EnableArgs([atom(t) for t in _args(cmd, 1)])


def id_params(cmd: Command) -> dict[str, str]:
    a = _args(cmd, 1, 1)
    if isinstance(a[0], str) and a[0].upper() == "NIL" and not isinstance(a[0], Quoted):
        return {}
    items = parenthesised(a[0])
    if len(items) % 2 or len(items) > 60:
        raise BadArgs("ID takes field/value pairs (at most 30)")
    out = {}
    for k, v in zip(items[::2], items[1::2], strict=True):
        value = (
            "" if (isinstance(v, str) and v == "NIL" and not isinstance(v, Quoted)) else astring(v)
        )
        out[astring(k)] = value
    return out


def compress_mechanism(cmd: Command) -> str:
    return atom(_args(cmd, 1, 1)[0])


def mailbox_arg(cmd: Command) -> str:
    return mailbox(_args(cmd, 1, 1)[0])


def quota_root_arg(cmd: Command) -> str:
    return astring(_args(cmd, 1, 1)[0])


@dataclass(frozen=True, slots=True)
class RenameArgs:
    old: str  # mailbox names as on the wire
    new: str


def rename_args(cmd: Command) -> RenameArgs:
    a = _args(cmd, 2, 2)
    return RenameArgs(mailbox(a[0]), mailbox(a[1]))


@dataclass(frozen=True, slots=True)
class CreateArgs:
    mailbox: str  # as on the wire
    special_use: list[str]  # RFC 6154 §3: CREATE ... (USE (\Drafts))


def create_args(cmd: Command) -> CreateArgs:
    a = _args(cmd, 1, 2)
    special: list[str] = []
    if len(a) == 2:
        params = parenthesised(a[1])
        if len(params) != 2 or atom(params[0]).upper() != "USE":
            raise BadArgs("Unknown CREATE parameter")
        special = [atom(x) for x in parenthesised(params[1])]
    return CreateArgs(mailbox(a[0]), special)


@dataclass(slots=True)
class ListArgs:
    reference: str
    patterns: list[str]
    options: ListOptions
    status_items: list[str] = field(default_factory=list)


def list_args(cmd: Command) -> ListArgs:
    a = list(_args(cmd, 2))
    options = ListOptions()
    first = a[0]
    if isinstance(first, list):  # RFC 5258 selection options
        a.pop(0)
        for opt in first:
            word = atom(opt).upper()
            if word == "SUBSCRIBED":
                options.subscribed = True
            elif word == "SPECIAL-USE":
                options.special_use = True
            elif word == "RECURSIVEMATCH":
                options.recursive_match = True
            elif word == "REMOTE":
                pass
            else:
                raise BadArgs(f"Unknown LIST selection option {word}")
        if options.recursive_match and not (options.subscribed or options.special_use):
            raise BadArgs("RECURSIVEMATCH needs another selection option")
    if len(a) < 2:
        raise BadArgs("LIST needs a reference and a pattern")
    reference = astring(a[0])
    pats = a[1]
    patterns = [astring(p) for p in pats] if isinstance(pats, list) else [astring(pats)]
    status: list[str] = []
    rest = a[2:]
    if rest:
        if len(rest) != 2 or atom(rest[0]).upper() != "RETURN":
            raise BadArgs("Unexpected LIST arguments")
        items = parenthesised(rest[1])
        i = 0
        while i < len(items):
            word = atom(items[i]).upper()
            if word == "SUBSCRIBED":
                options.return_subscribed = True
            elif word == "CHILDREN":
                options.return_children = True
            elif word == "SPECIAL-USE":
                options.return_special_use = True
            elif word == "STATUS" and i + 1 < len(items):
                status = [atom(x).upper() for x in parenthesised(items[i + 1])]
                i += 1
            else:
                raise BadArgs(f"Unknown LIST return option {word}")
            i += 1
    return ListArgs(reference, patterns, options, status)


def decode_mailbox_loose(pattern: str) -> str:
    try:
        return decode_mailbox(pattern)
    except ValueError:
        return pattern


STATUS_ITEMS = frozenset(
    {
        "MESSAGES",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
        "DELETED",
        "SIZE",
        "RECENT",
        "HIGHESTMODSEQ",
        "APPENDLIMIT",
    }
)


@dataclass(frozen=True, slots=True)
class StatusArgs:
    mailbox: str  # as on the wire
    items: list[str]  # upper case, each one of STATUS_ITEMS


def status_args(cmd: Command) -> StatusArgs:
    a = _args(cmd, 2, 2)
    items = [atom(x).upper() for x in parenthesised(a[1])]
    unknown = [i for i in items if i not in STATUS_ITEMS]
    if unknown or not items:
        raise BadArgs(f"Unknown STATUS item {unknown[0] if unknown else '()'}")
    return StatusArgs(mailbox(a[0]), items)


@dataclass(frozen=True, slots=True)
class CatText:
    """A CATENATE TEXT part: octets taken as they are (RFC 4469 §5)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CatUrl:
    """A CATENATE URL part: the octets an IMAP URL names (RFC 4469 §5, RFC 5092)."""

    url: str


AppendData = bytes | tuple[CatText | CatUrl, ...]


class AppendMessage(NamedTuple):
    """One message of a (MULTI)APPEND; a named tuple, so ``for flags, when, data in ...``
    reads it too."""

    flags: list[str]
    when: dt.datetime | None  # the INTERNALDATE asked for, if any
    data: AppendData  # the literal, or CATENATE's parts (RFC 4469)


@dataclass(frozen=True, slots=True)
class AppendArgs:
    mailbox: str  # as on the wire
    messages: list[AppendMessage]  # RFC 3502: one or more


def append_args(cmd: Command) -> AppendArgs:
    a = list(_args(cmd, 2))
    name = mailbox(a.pop(0))
    messages: list[AppendMessage] = []
    while a:
        flags: list[str] = []
        when = None
        head = a[0]
        if isinstance(head, list):
            a.pop(0)
            flags = [flag(f) for f in head]
        if a and isinstance(a[0], Quoted):
            when = date_time(a.pop(0))
        if not a:
            raise BadArgs("APPEND needs a message literal")
        data = a.pop(0)
        inner = a[0] if a else None
        word = data.upper() if isinstance(data, str) and not isinstance(data, Quoted) else ""
        if word == "UTF8" and isinstance(inner, list):
            a.pop(0)  # RFC 6855 §4: UTF8 (~{n}...)
            if len(inner) != 1 or not isinstance(inner[0], bytes):
                raise BadArgs("UTF8 needs one literal8")
            data = inner[0]
        elif word == "CATENATE" and isinstance(inner, list):
            a.pop(0)
            messages.append(AppendMessage(flags, when, _catenate_parts(inner)))
            continue
        if not isinstance(data, bytes):
            raise BadArgs("The message must be a literal")
        messages.append(AppendMessage(flags, when, data))
    return AppendArgs(name, messages)


def _catenate_parts(tokens: list[object]) -> tuple[CatText | CatUrl, ...]:
    # RFC 4469 §5: "CATENATE" SP "(" cat-part *(SP cat-part) ")";
    # cat-part = text-literal / url; text-literal = "TEXT" SP literal; url = "URL" SP astring
    if not tokens or len(tokens) % 2:
        raise BadArgs('CATENATE needs (TEXT {n} ... / URL "...") parts')
    parts: list[CatText | CatUrl] = []
    for kind, value in zip(tokens[::2], tokens[1::2], strict=True):
        word = atom(kind).upper()
        if word == "TEXT" and isinstance(value, bytes):
            parts.append(CatText(value))
        elif word == "URL":
            parts.append(CatUrl(astring(value)))
        else:
            raise BadArgs('A CATENATE part is TEXT {n} or URL "..."')
    return tuple(parts)


@dataclass(slots=True)
class QResync:
    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None


@dataclass(slots=True)
class SelectArgs:
    mailbox: str
    condstore: bool = False
    qresync: QResync | None = None


def select_args(cmd: Command) -> SelectArgs:
    a = _args(cmd, 1, 2)
    out = SelectArgs(mailbox(a[0]))
    if len(a) == 2:
        params = parenthesised(a[1])
        i = 0
        while i < len(params):
            word = atom(params[i]).upper()
            if word == "CONDSTORE":
                out.condstore = True
            elif word == "QRESYNC" and i + 1 < len(params):
                q = parenthesised(params[i + 1])
                if len(q) < 2:
                    raise BadArgs("QRESYNC needs UIDVALIDITY and MODSEQ")
                known = seqset(q[2]) if len(q) > 2 and not isinstance(q[2], list) else None
                out.qresync = QResync(number(q[0]), number(q[1]), known)
                i += 1
            else:
                raise BadArgs(f"Unknown SELECT parameter {word}")
            i += 1
    return out


@dataclass(slots=True)
class StoreArgs:
    seqset: SeqSet
    uid: bool
    sign: str  # "+", "-" or ""
    silent: bool
    flags: list[str]
    unchanged_since: int | None


def store_args(cmd: Command) -> StoreArgs:
    a = list(_args(cmd, 3))
    s = seqset(a.pop(0))
    unchanged = None
    mods = a[0]
    if isinstance(mods, list):
        a.pop(0)
        if len(mods) != 2 or atom(mods[0]).upper() != "UNCHANGEDSINCE":
            raise BadArgs("Unknown STORE modifier")
        unchanged = number(mods[1])
    if len(a) < 2:
        raise BadArgs("STORE needs an operation and flags")
    op = atom(a.pop(0)).upper()
    m = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", op)
    if m is None:
        raise BadArgs(f"Unknown STORE operation {op}")
    listed = a[0]
    flags = [flag(f) for f in listed] if isinstance(listed, list) else [flag(f) for f in a]
    return StoreArgs(s, is_uid(cmd), m.group(1), bool(m.group(2)), flags, unchanged)


@dataclass(slots=True)
class CopyArgs:
    seqset: SeqSet
    uid: bool
    mailbox: str


def copy_args(cmd: Command) -> CopyArgs:
    a = _args(cmd, 2, 2)
    return CopyArgs(seqset(a[0]), is_uid(cmd), mailbox(a[1]))


def expunge_set(cmd: Command) -> SeqSet:
    return seqset(_args(cmd, 1, 1)[0])


# -- FETCH ----------------------------------------------------------------------------------

_SECTION_RE = re.compile(
    r"(BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?|BINARY\.SIZE)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?",
    re.IGNORECASE,
)
_SIMPLE = {
    "FLAGS",
    "UID",
    "INTERNALDATE",
    "RFC822.SIZE",
    "MODSEQ",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
}
_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}


def fetch_item(text: str) -> FetchItem:
    upper = text.upper()
    if upper in _SIMPLE:
        return FetchItem(upper, name=upper)
    m = _SECTION_RE.fullmatch(text)
    if m is None:
        raise BadArgs(f"Unknown FETCH item {text[:40]}")
    head = m.group(1).upper()
    spec = m.group(2)
    partial = None
    if m.group(3) is not None:
        if m.group(4) is None:
            raise BadArgs("A partial needs <origin.count>")
        count = int(m.group(4))
        if count == 0:
            raise BadArgs("A partial of zero octets")
        partial = (int(m.group(3)), count)
    part, textspec, fields = _section_spec(spec, binary=head.startswith("BINARY"))
    peek = head.endswith(".PEEK")
    base = "BINARY" if head.startswith("BINARY") else "BODY"
    kind = "BINARY.SIZE" if head == "BINARY.SIZE" else ("BINARY" if base == "BINARY" else "SECTION")
    # RFC 9051 §7.5.2: the response names the section as asked, without .PEEK, and only
    # the origin of a partial.
    label = "BINARY.SIZE" if kind == "BINARY.SIZE" else base
    name = f"{label}[{_canonical_spec(part, textspec, fields)}]"
    if partial is not None:
        name += f"<{partial[0]}>"
    return FetchItem(
        kind, part=part, text=textspec, fields=fields, partial=partial, peek=peek, name=name
    )


def _section_spec(
    spec: str, *, binary: bool
) -> tuple[tuple[int, ...], str | None, tuple[str, ...]]:
    spec = spec.strip()
    if not spec:
        return (), None, ()
    m = re.fullmatch(r"((?:\d+\.)*\d+)?\.?(.*)", spec, re.DOTALL)
    assert m is not None
    numbers = tuple(int(x) for x in m.group(1).split(".")) if m.group(1) else ()
    if any(n == 0 for n in numbers):
        raise BadArgs("Section numbers start at 1")
    rest = m.group(2).strip()
    if binary:
        if rest:
            raise BadArgs("BINARY takes part numbers only")
        return numbers, None, ()
    if not rest:
        return numbers, None, ()
    word, _, tail = rest.partition(" ")
    word = word.upper()
    if word in ("HEADER", "TEXT") and not tail:
        return numbers, word, ()
    if word == "MIME" and numbers and not tail:
        return numbers, word, ()
    if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        names = tail.strip()
        if not (names.startswith("(") and names.endswith(")")):
            raise BadArgs("HEADER.FIELDS needs a list of field names")
        fields = tuple(f.strip('"').upper() for f in names[1:-1].split())
        if not fields:
            raise BadArgs("HEADER.FIELDS needs field names")
        return numbers, word, fields
    raise BadArgs(f"Unknown section {spec[:40]}")


def _canonical_spec(part: tuple[int, ...], text: str | None, fields: tuple[str, ...]) -> str:
    out = ".".join(str(n) for n in part)
    if text:
        out = f"{out}.{text}" if out else text
        if fields:
            out += " (" + " ".join(fields) + ")"
    return out


@dataclass(slots=True)
class FetchArgs:
    seqset: SeqSet
    uid: bool
    items: list[FetchItem]
    changed_since: int | None = None
    vanished: bool = False


def fetch_args(cmd: Command) -> FetchArgs:
    a = list(_args(cmd, 2, 3))
    s = seqset(a[0])
    what = a[1]
    if isinstance(what, list):
        items = [fetch_item(atom(x)) for x in what]
    else:
        word = atom(what)
        if word.upper() in _MACROS:
            items = [FetchItem(n, name=n) for n in _MACROS[word.upper()]]
        else:
            items = [fetch_item(word)]
    out = FetchArgs(s, is_uid(cmd), items)
    if len(a) == 3:
        mods = parenthesised(a[2])
        i = 0
        while i < len(mods):
            word = atom(mods[i]).upper()
            if word == "CHANGEDSINCE" and i + 1 < len(mods):
                out.changed_since = number(mods[i + 1])
                i += 1
            elif word == "VANISHED":
                out.vanished = True
            else:
                raise BadArgs(f"Unknown FETCH modifier {word}")
            i += 1
    return out


# -- SEARCH (RFC 9051 §6.4.4) ------------------------------------------------------------

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"FROM", "TO", "CC", "BCC", "SUBJECT"}


@dataclass(slots=True)
class SearchArgs:
    key: Key
    uid: bool
    charset: str | None = None
    # RETURN options (RFC 4731 ESEARCH, RFC 5267 CONTEXT=SEARCH); None: a plain SEARCH
    returns: ReturnOptions | None = None


class _Keys:
    def __init__(self, tokens: list[object]) -> None:
        self.tokens = tokens
        self.pos = 0

    def next(self) -> object:
        if self.pos >= len(self.tokens):
            raise BadArgs("Missing search argument")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def all(self) -> list[Key]:
        keys = []
        while self.pos < len(self.tokens):
            keys.append(self.key())
        if not keys:
            raise BadArgs("Missing search key")
        return keys

    def key(self, depth: int = 0) -> Key:
        if depth > 64:
            raise BadArgs("Search nested too deeply")
        tok = self.next()
        if isinstance(tok, list):
            sub = _Keys(tok)
            keys = []
            while sub.pos < len(sub.tokens):
                keys.append(sub.key(depth + 1))
            if not keys:
                raise BadArgs("Empty search group")
            return ("and", keys)
        word = atom(tok)
        upper = word.upper()
        if upper == "ALL":
            return ("all",)
        if upper in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[upper]
            return ("flag", flag, present)
        if upper == "RECENT":
            return ("recent",)
        if upper == "NEW":  # RFC 3501 §6.4.4: RECENT UNSEEN
            return ("and", [("recent",), ("flag", "\\Seen", False)])
        if upper == "OLD":
            return ("not", ("recent",))
        if upper in ("KEYWORD", "UNKEYWORD"):
            return ("keyword", atom(self.next()), upper == "KEYWORD")
        if upper in _HEADER_KEYS:
            return ("header", upper.lower(), astring(self.next()))
        if upper == "HEADER":
            name = astring(self.next())
            return ("header", name.lower(), astring(self.next()))
        if upper in ("BODY", "TEXT"):
            return (upper.lower(), astring(self.next()))
        if upper in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
            sent = upper.startswith("SENT")
            return ("date", upper.removeprefix("SENT").lower(), date(self.next()), sent)
        if upper in ("LARGER", "SMALLER"):
            return (upper.lower(), number(self.next()))
        if upper == "UID":
            return ("uidset", seqset(self.next()))
        if upper == "NOT":
            return ("not", self.key(depth + 1))
        if upper == "OR":
            return ("or", self.key(depth + 1), self.key(depth + 1))
        if upper == "MODSEQ":
            nxt = self.next()
            if isinstance(nxt, Quoted):  # entry name and type (RFC 7162 §3.1.5)
                self.next()
                nxt = self.next()
            return ("modseq", number(nxt))
        if re.fullmatch(r"[\d*:,$]+", word):
            return ("seqset", seqset(word))
        raise BadArgs(f"Unknown search key {word[:40]}")


def search_keys(tokens: list[object]) -> Key:
    keys = _Keys(tokens).all()
    return keys[0] if len(keys) == 1 else ("and", keys)


def search_args(cmd: Command) -> SearchArgs:
    a = list(_args(cmd, 1))
    returns, a = _return_options(a)
    charset = None
    if len(a) > 1 and isinstance(a[0], str) and a[0].upper() == "CHARSET":
        charset = astring(a[1])
        a = a[2:]
    return SearchArgs(search_keys(a), is_uid(cmd), charset, returns)


def key_uses_modseq(key: Key) -> bool:
    if key[0] == "modseq":
        return True
    subs = key[1] if key[0] == "and" else key[1:]
    assert isinstance(subs, list | tuple)
    return any(isinstance(k, tuple) and key_uses_modseq(k) for k in subs)


def bind_sets(key: Key, *, exists: int, max_uid: int) -> Key:
    """Replace sequence-set keys by concrete number lists for the evaluator."""
    kind = key[0]
    if kind in ("seqset", "uidset"):
        numbers = key[1]
        assert isinstance(numbers, SeqSet)
        if kind == "seqset":
            return ("seq", numbers.resolve(exists) if exists else [])
        return ("uid", numbers.resolve(max_uid) if max_uid else [])
    if kind == "and":
        subs = key[1]
        assert isinstance(subs, list)
        return ("and", [bind_sets(k, exists=exists, max_uid=max_uid) for k in subs])
    if kind in ("or", "not"):
        return (
            kind,
            *(
                bind_sets(k, exists=exists, max_uid=max_uid)
                for k in key[1:]
                if isinstance(k, tuple)
            ),
        )
    return key


def _return_options(a: list[object]) -> tuple[ReturnOptions | None, list[object]]:
    """``RETURN (...)`` at the head of SEARCH/SORT arguments (RFC 4731 §3.1, RFC 5267 §3)."""
    if a and isinstance(a[0], str) and a[0].upper() == "RETURN":
        if len(a) < 2 or not isinstance(a[1], list):
            raise BadArgs("RETURN needs a parenthesised list of options")
        try:
            return parse_return_options(a[1]), a[2:]
        except ValueError as exc:
            raise BadArgs(str(exc)) from None
    return None, a


@dataclass(slots=True)
class SortArgs:
    criteria: list[tuple[str, bool]]
    key: Key
    uid: bool
    returns: ReturnOptions | None = None  # RFC 5267 §3 ESORT; None: a plain SORT


SORT_KEYS = frozenset(
    {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"}
)


def sort_args(cmd: Command) -> SortArgs:
    returns, a = _return_options(list(_args(cmd, 3)))
    if len(a) < 3:
        raise BadArgs(f"Wrong number of arguments for {cmd.name}")
    crit_tokens = parenthesised(a[0])
    criteria = []
    reverse = False
    for tok in crit_tokens:
        word = atom(tok).upper()
        if word == "REVERSE":
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise BadArgs(f"Unknown sort key {word}")
        criteria.append((word, reverse))
        reverse = False
    if reverse or not criteria:
        raise BadArgs("Incomplete sort criteria")
    astring(a[1])  # charset: UTF-8 and US-ASCII are what we decode anyway
    return SortArgs(criteria, search_keys(a[2:]), is_uid(cmd), returns)


@dataclass(slots=True)
class ThreadArgs:
    algorithm: str
    key: Key
    uid: bool


def thread_args(cmd: Command) -> ThreadArgs:
    a = list(_args(cmd, 3))
    algorithm = atom(a[0])
    astring(a[1])
    return ThreadArgs(algorithm, search_keys(a[2:]), is_uid(cmd))
