"""Address lists of header fields (RFC 5322 §3.4), parsed into IMAP's address structures.

`parse_address_list` turns the value of From, To, Cc, ... into the entries of an ENVELOPE
address list (RFC 9051 §7.5.2): each mailbox is one `Address`; a group
``display-name ":" [group-list] ";"`` becomes a start entry (its name in `mailbox`, `domain`
None), its members, and an end entry (every field None).

Real mail breaks the grammar often, and clients expect what Dovecot reports then, so:

* a comment after a bare addr-spec is its display name: ``user@host (Real Name)``;
* local parts with stray dots (``a..b``, ``.a``) are kept as written;
* a mailbox that does not parse still gives an entry, marked `invalid`, and the list goes on
  after the next comma; with `fill_missing` its missing parts read MISSING_MAILBOX,
  MISSING_DOMAIN or SYNTAX_ERROR, because in ENVELOPE a NIL host means a group;
* display names are returned as written (words joined by one space, quotes and
  quoted-pairs removed): RFC 2047 encoded words stay encoded, as ENVELOPE sends them.

Nothing here raises, whatever the text, and the work is linear in its length.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Address", "address_spans", "format_address_list", "parse_address_list"]

MISSING_MAILBOX = "MISSING_MAILBOX"
MISSING_DOMAIN = "MISSING_DOMAIN"
SYNTAX_ERROR = "SYNTAX_ERROR"
INVALID_ROUTE = "INVALID_ROUTE"


@dataclass(frozen=True, slots=True)
class Address:
    """One entry of an address list, shaped like the ENVELOPE address structure.

    A mailbox has `mailbox` and `domain` set (possibly to ""); a group start has `mailbox`
    (the group's display name) and `domain` None; a group end has every field None.
    """

    name: str | None = None  # display-name, as written (RFC 2047 words not decoded)
    route: str | None = None  # obs-route without its ":", e.g. "@a.example,@b.example"
    mailbox: str | None = None  # local-part, unquoted
    domain: str | None = None
    invalid: bool = False  # the text did not parse as RFC 5322 asks

    @property
    def is_group_start(self) -> bool:
        return self.domain is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.domain is None and self.mailbox is None


# RFC 5322 §3.2.3 atext, plus every non-ASCII character (RFC 6532 §3.2; undecodable octets
# arrive as surrogates and count too).
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff"
_ATOM = re.compile(f"[{_ATEXT}]+")
_DOT_ATOM = re.compile(f"[{_ATEXT}.]*")
_SPACE = " \t\r\n"


class _Cursor:
    """Walks one field value: the lexical tokens of RFC 5322 §3.2 and the address grammar
    of §3.4, with the recovery described in the module docstring."""

    def __init__(self, text: str, fill: bool) -> None:
        self.text = text.replace("\0", "\ufffd")  # no IMAP string may hold NUL (RFC 9051 §4.3)
        self.pos = 0
        self.fill = fill
        self.comment: str | None = None  # the text of the last comment skipped

    # -- lexical ---------------------------------------------------------------------------

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def cfws(self) -> None:
        """RFC 5322 §3.2.2: skip folding white space and comments."""
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in _SPACE:
                self.pos += 1
            elif c == "(":
                self.comment = self._comment()
            else:
                return

    def _comment(self) -> str:
        # comment = "(" *([FWS] ccontent) [FWS] ")", nesting; unterminated: to the end.
        text, depth, out = self.text, 0, []
        while self.pos < len(text):
            c = text[self.pos]
            self.pos += 1
            if c == "\\" and self.pos < len(text):
                out.append(text[self.pos])
                self.pos += 1
                continue
            if c == "(":
                depth += 1
                if depth == 1:
                    continue
            elif c == ")":
                depth -= 1
                if depth == 0:
                    break
            out.append(c)
        return " ".join("".join(out).split())

    def _quoted(self) -> str:
        # RFC 5322 §3.2.4 quoted-string, quotes and backslashes of quoted-pairs removed.
        text, out = self.text, []
        self.pos += 1
        while self.pos < len(text):
            c = text[self.pos]
            self.pos += 1
            if c == '"':
                break
            if c == "\\" and self.pos < len(text):
                c = text[self.pos]
                self.pos += 1
            elif c in "\r\n":
                continue  # unfolding
            out.append(c)
        return "".join(out)

    def _literal(self) -> str:
        # RFC 5322 §3.4.1 domain-literal, kept with its brackets; unterminated: to the end.
        end = self.text.find("]", self.pos)
        end = len(self.text) if end < 0 else end + 1
        raw = self.text[self.pos : end]
        self.pos = end
        return "".join(raw.split())

    def phrase(self) -> list[str]:
        """RFC 5322 §3.2.5 phrase (and obs-phrase: dots allowed): its words."""
        words: list[str] = []
        while True:
            self.cfws()
            c = self.peek()
            if c == '"':
                words.append(self._quoted())
            elif c == ".":
                self.pos += 1
                if words:
                    words[-1] += "."
                else:
                    words.append(".")
            else:
                m = _ATOM.match(self.text, self.pos)
                if m is None:
                    return words
                words.append(m.group())
                self.pos = m.end()

    def local_part(self) -> str:
        """RFC 5322 §3.4.1 local-part (dot-atom, quoted-string, obs-local-part), loosely:
        stray dots are kept."""
        parts: list[str] = []
        while True:
            self.cfws()
            if self.peek() == '"':
                parts.append(self._quoted())
                continue
            m = _DOT_ATOM.match(self.text, self.pos)
            if m is None or not m.group():
                return "".join(parts)
            parts.append(m.group())
            self.pos = m.end()

    def domain(self) -> str:
        """RFC 5322 §3.4.1 domain: dot-atom or domain-literal, after the "@"."""
        self.cfws()
        if self.peek() == "[":
            return self._literal()
        parts: list[str] = []
        while True:
            m = _DOT_ATOM.match(self.text, self.pos)
            if m is None or not m.group():
                return "".join(parts)
            parts.append(m.group())
            self.pos = m.end()
            # CFWS may stand around the dots of an obs-domain; anything else ends it.
            after = self.pos
            self.cfws()
            if not m.group().endswith(".") and self.peek() != ".":
                self.pos = after
                return "".join(parts)

    def skip_to(self, stops: str) -> None:
        """Recovery: skip to the next of `stops` outside quotes, comments and brackets."""
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in stops:
                return
            if c == '"':
                self._quoted()
            elif c == "(":
                self._comment()
            elif c == "<":
                end = text.find(">", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            else:
                self.pos += 1

    # -- RFC 5322 §3.4 -----------------------------------------------------------------------

    def mailbox(self, allow_group: bool) -> list[Address]:
        """name-addr / addr-spec, or (at the top level) a group."""
        start = self.pos
        words = self.phrase()
        self.cfws()
        c = self.peek()
        if c == "<":
            return [self._angle(" ".join(words) if words else None)]
        if c == ":" and allow_group and words:
            self.pos += 1
            return self._group(" ".join(words))
        self.pos = start
        return [self._addr_spec()]

    def _entry(
        self, name: str | None, route: str | None, local: str, domain: str | None, bad: bool
    ) -> Address:
        if domain is None or not domain:
            bad = bad or domain is None
            domain = MISSING_DOMAIN if self.fill else ""
        if not local:
            bad = True
            local = MISSING_MAILBOX if self.fill else ""
        return Address(name, route, local, domain, bad)

    def _addr_spec(self) -> Address:
        local = self.local_part()
        self.cfws()
        domain = None
        if self.peek() == "@":
            self.pos += 1
            domain = self.domain()
        self.comment = None
        self.cfws()  # a comment right after the address names it: "a@b (Name)"
        nothing = not local and domain is None
        entry = self._entry(self.comment or None, None, local, domain, nothing)
        if nothing and self.fill:
            entry = dataclasses.replace(entry, domain=SYNTAX_ERROR)
        return entry

    def _angle(self, name: str | None) -> Address:
        # angle-addr = "<" [obs-route] addr-spec ">"; obs-route = obs-domain-list ":".
        self.pos += 1
        self.cfws()
        route: str | None = None
        bad = False
        if self.peek() == "@":
            hops: list[str] = []
            while self.peek() in ("@", ","):
                if self.peek() == "@":
                    self.pos += 1
                    hops.append("@" + self.domain())
                else:
                    self.pos += 1
                self.cfws()
            if self.peek() == ":":
                self.pos += 1
                route = ",".join(hops)
            else:
                bad = True
                route = INVALID_ROUTE if self.fill else ",".join(hops)
        local = self.local_part()
        self.cfws()
        domain = None
        if self.peek() == "@":
            self.pos += 1
            domain = self.domain()
            self.cfws()
        if self.peek() == ">":
            self.pos += 1
        else:
            bad = True
            self.skip_to(">,;")
            if self.peek() == ">":
                self.pos += 1
        if bad and domain is None and self.fill:
            return Address(name, route, local or MISSING_MAILBOX, SYNTAX_ERROR, True)
        return self._entry(name, route, local, domain, bad)

    def _group(self, name: str) -> list[Address]:
        # group = display-name ":" [group-list] ";" [CFWS]
        out = [Address(mailbox=name)]
        while True:
            self.cfws()
            c = self.peek()
            if c in (";", ""):
                self.pos += len(c)
                break
            if c == ",":
                self.pos += 1
                continue
            out.extend(self.mailbox(allow_group=False))
            self.cfws()
            if self.peek() not in (",", ";", ""):
                out[-1] = dataclasses.replace(out[-1], invalid=True)
                self.skip_to(",;")
        out.append(Address())
        return out


def parse_address_list(
    text: str, *, limit: int | None = None, fill_missing: bool = False
) -> list[Address]:
    """The entries of the address list in a header field value (unfolded or not).

    `limit` stops after that many addresses (a group counts as one). With `fill_missing`
    a missing local part or domain reads MISSING_MAILBOX or MISSING_DOMAIN, an address that
    does not parse has the domain SYNTAX_ERROR and a broken route is INVALID_ROUTE, as
    ENVELOPE needs; without, they are "".
    """
    cur = _Cursor(text, fill_missing)
    out: list[Address] = []
    count = 0
    while limit is None or count < limit:
        cur.cfws()
        if not cur.peek():
            break
        out.extend(cur.mailbox(allow_group=True))
        count += 1
        cur.cfws()
        c = cur.peek()
        if c == ",":
            cur.pos += 1
        elif c:
            # Not a separator: the entry was broken; go on after the next comma.
            out[-1] = dataclasses.replace(out[-1], invalid=True)
            cur.skip_to(",")
            cur.pos += 1
    return out


def _maybe_quoted(text: str, dot_ok: bool) -> str:
    # RFC 5322 §3.2.3-§3.2.4: an atom (or dot-atom) stays bare; anything else is quoted.
    plain = _DOT_ATOM if dot_ok else _ATOM
    if not text or plain.fullmatch(text):
        return text
    return '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


def _name(text: str) -> str:
    # A phrase of atoms stays bare (RFC 5322 §3.2.5), and so does one with an RFC 2047
    # encoded word, which must not be quoted (RFC 2047 §5) or it could not be decoded.
    if "=?" in text or all(_ATOM.fullmatch(w) for w in text.split(" ")):
        return text
    return _maybe_quoted(text, dot_ok=False)


def format_address_list(addresses: Iterable[Address]) -> str:
    """The entries written as an address list in one canonical form:
    ``Name <local@domain>``, ``<local@domain>``, ``group: <a@b>, <c@d>;``, ``group:;``."""
    items: list[str] = []
    members: list[str] | None = None  # inside a group
    group = ""
    for addr in addresses:
        if addr.is_group_start:
            if members is not None:  # a start without an end: close the open group
                items.append(f"{group}: {', '.join(members)};" if members else f"{group}:;")
            group, members = _name(addr.mailbox or "") or '""', []
            continue
        if addr.is_group_end:
            if members is not None:
                items.append(f"{group}: {', '.join(members)};" if members else f"{group}:;")
                members = None
            continue
        spec = _maybe_quoted(addr.mailbox or "", dot_ok=True) or '""'
        if addr.domain:
            spec += "@" + addr.domain
        if addr.route is not None:
            spec = f"{addr.route}:{spec}"
        text = f"{_name(addr.name)} <{spec}>" if addr.name else f"<{spec}>"
        (items if members is None else members).append(text)
    if members is not None:
        items.append(f"{group}: {', '.join(members)};" if members else f"{group}:;")
    return ", ".join(items)


# -- addr-spec spans in an address list (the DKIM signer, canonical header rewriting) ------

_SPECIALS_END = frozenset(',;:<>()"')


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "atom", "quoted", "comment", "angle", "space", ",", ";", ":"
    start: int
    end: int


def _tokens(text: str) -> list[_Token] | None:
    """RFC 5322 §3.2-§3.4 lexical tokens of an address list, or None when a quoted string,
    comment or angle address is not closed (then nothing is rewritten)."""
    out: list[_Token] = []
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char in " \t\r\n":
            j = i
            while j < size and text[j] in " \t\r\n":
                j += 1
            out.append(_Token("space", i, j))
        elif char == '"':
            j = _close_quote(text, i)
            if j < 0:
                return None
            out.append(_Token("quoted", i, j))
        elif char == "(":
            j = _close_comment(text, i)
            if j < 0:
                return None
            out.append(_Token("comment", i, j))
        elif char == "<":
            j = _close_angle(text, i)
            if j < 0:
                return None
            out.append(_Token("angle", i, j))
        elif char in ",;:":
            j = i + 1
            out.append(_Token(char, i, j))
        elif char in ">)":
            return None
        else:
            j = i
            while j < size and text[j] not in _SPECIALS_END and text[j] not in " \t\r\n":
                j += 1
            out.append(_Token("atom", i, j))
        i = j
    return out


def _close_quote(text: str, i: int) -> int:
    """Index after the quoted string starting at ``i`` (RFC 5322 §3.2.4), or -1."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == '"':
            return j + 1
        j += 1
    return -1


def _close_comment(text: str, i: int) -> int:
    """Index after the (nested) comment starting at ``i`` (RFC 5322 §3.2.2), or -1."""
    depth, j = 0, i
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return -1


def _close_angle(text: str, i: int) -> int:
    """Index after the angle address starting at ``i``; quoted strings inside may hold
    ``>`` (``<"a>b"@example.org>``). -1 when not closed."""
    j = i + 1
    while j < len(text):
        char = text[j]
        if char == '"':
            j = _close_quote(text, j)
            if j < 0:
                return -1
            continue
        if char == ">":
            return j + 1
        if char == "<":
            return -1
        j += 1
    return -1


def address_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each addr-spec in an RFC 5322 §3.4 address-list, in ``text``.

    ``name <addr>`` gives the inside of the brackets (after an obsolete route ``@a,@b:``);
    a bare ``addr (comment)`` gives the address without the comment. Groups
    (``name: a, b;``) are walked into. Mailboxes that are not plainly one address are
    skipped.
    """
    tokens = _tokens(text)
    if tokens is None:
        return []
    spans: list[tuple[int, int]] = []
    mailbox: list[_Token] = []
    for token in tokens:
        if token.kind in (",", ";"):
            _mailbox_span(text, mailbox, spans)
            mailbox = []
        elif token.kind == ":":
            mailbox = []  # what came before was a group's display name (RFC 5322 §3.4)
        else:
            mailbox.append(token)
    _mailbox_span(text, mailbox, spans)
    return spans


def _mailbox_span(text: str, mailbox: list[_Token], spans: list[tuple[int, int]]) -> None:
    angles = [t for t in mailbox if t.kind == "angle"]
    if len(angles) > 1:
        return
    if angles:
        start, end = angles[0].start + 1, angles[0].end - 1
        inner = text[start:end]
        if inner.startswith("@") and ":" in inner:  # RFC 5322 §4.4 obs-route
            start += inner.index(":") + 1
        while start < end and text[start] in " \t":
            start += 1
        while end > start and text[end - 1] in " \t":
            end -= 1
        span = (start, end)
    else:
        core = [t for t in mailbox if t.kind not in ("space", "comment")]
        if not core:
            return
        first, last = mailbox.index(core[0]), mailbox.index(core[-1])
        if any(t.kind in ("space", "comment") for t in mailbox[first:last]):
            return  # "Bob Smith bob@x" or "bob(c)@x": not plainly one address
        span = (core[0].start, core[-1].end)
    # The span must be plainly local@domain: atoms and quoted strings, the domain in an atom.
    parts = _tokens(text[span[0] : span[1]])
    if parts and all(t.kind in ("atom", "quoted") for t in parts) and parts[-1].kind == "atom":
        domain_part = text[span[0] + parts[-1].start : span[0] + parts[-1].end]
        if "@" in domain_part and "\r" not in domain_part:
            spans.append(span)
