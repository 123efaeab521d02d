"""Canonical address mapping, canonical(5), for the envelope and for header addresses.

Which maps apply where (Postfix cleanup(8), ``cleanup_addr.c`` and ``header_opts.c``):

- envelope sender, and the sender-type header fields (:data:`SENDER_FIELDS`):
  ``sender_canonical_maps``, then ``canonical_maps``;
- envelope recipients, and the recipient-type header fields (:data:`RECIPIENT_FIELDS`):
  ``recipient_canonical_maps``, then ``canonical_maps``.

Each map is applied as cleanup_map11(3) does: look the address up (canonical(5) "TABLE
SEARCH ORDER": ``user+ext@domain``, ``user@domain``, ``user+ext`` and ``user`` when the domain
is one of ours, ``@domain``); a result is looked up again, until an address maps onto itself
or after 10 rounds (then a warning, and the last result is kept). A result ``@other`` means
the same user in ``other``; an extension cut off to find the key is added back to the result
(propagate_unmatched_extensions includes canonical). A value listing several addresses uses
the first, with a warning ("multi-valued entry"). The null sender is never mapped.

Header fields are rewritten in place: only the address inside each mailbox changes; display
names, comments, groups, quoting and folding stay as they were, and a field with no change
keeps its exact bytes. Addresses we cannot read with confidence (obsolete syntax with
comments or spaces inside the address, unterminated quotes or brackets, addresses without
a domain) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pochta.logs import get_logger
from pochta.tables import TableSet, match_address
from pochta.tables.address_list import split_addresses as _addresses

__all__ = [
    "MAX_RECURSION",
    "RECIPIENT_FIELDS",
    "SENDER_FIELDS",
    "CanonicalMaps",
    "address_spans",
    "rewrite_address_list",
]

log = get_logger("cleanup")

MAX_RECURSION = 10  # cleanup_map11.c MAX_RECURSION

# Postfix header_opts.c: HDR_OPT_SENDER and HDR_OPT_RECIP/XRECIP fields.
SENDER_FIELDS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "errors-to",
        "return-receipt-to",
        "disposition-notification-to",
        "resent-from",
        "resent-sender",
        "resent-reply-to",
    }
)
RECIPIENT_FIELDS = frozenset(
    {"to", "cc", "bcc", "apparently-to", "resent-to", "resent-cc", "resent-bcc"}
)


@dataclass(frozen=True, slots=True)
class CanonicalMaps:
    """The three [tables] canonical maps, the names of this host (for the bare ``user``
    keys) and the recipient_delimiter."""

    common: TableSet[str]
    sender_maps: TableSet[str]
    recipient_maps: TableSet[str]
    local_domains: frozenset[str]
    delimiter: str = "+"

    @property
    def empty(self) -> bool:
        return not (self.common.tables or self.sender_maps.tables or self.recipient_maps.tables)

    def sender(self, address: str) -> str:
        """Envelope sender or a sender-type header address: sender_canonical_maps, then
        canonical_maps (cleanup_addr_sender)."""
        if not address:
            return address  # the null sender (RFC 5321 §4.5.5) stays null
        return self._map(self.common, self._map(self.sender_maps, address))

    def recipient(self, address: str) -> str:
        """Envelope recipient or a recipient-type header address: recipient_canonical_maps,
        then canonical_maps (cleanup_addr_recipient)."""
        if not address:
            return address
        return self._map(self.common, self._map(self.recipient_maps, address))

    def for_field(self, key: str) -> Callable[[str], str] | None:
        """The mapping for header field ``key`` (lower-case name), or None if it has none."""
        if key in SENDER_FIELDS:
            return self.sender
        if key in RECIPIENT_FIELDS:
            return self.recipient
        return None

    def _map(self, maps: TableSet[str], address: str) -> str:
        """cleanup_map11(3): map until an address maps onto itself, at most 10 rounds."""
        if not maps.tables:
            return address
        for _ in range(MAX_RECURSION):
            mapped = self._map_once(maps, address)
            if mapped is None:
                return address
            if mapped.casefold() == address.casefold():
                return mapped
            address = mapped
        log.warning("canonical_nesting", address=address, maps=" ".join(maps.specs))
        return address

    def _map_once(self, maps: TableSet[str], address: str) -> str | None:
        """One lookup (mail_addr_map(3)): the new address, or None when nothing matches."""
        at = address.rfind("@")
        domain = address[at + 1 :].lower().rstrip(".") if at >= 0 else ""
        found = match_address(
            maps,
            address,
            self.delimiter,
            local_part_lookup=not domain or domain in self.local_domains,
        )
        if found is None:
            return None
        values = _addresses(found.value)
        if not values:
            log.warning("canonical_not_an_address", address=address, value=found.value)
            return None
        if len(values) > 1:
            log.warning("canonical_multi_valued", address=address, value=found.value)
        result = values[0]
        extension = found.extension
        if result.startswith("@"):
            user = address[:at] if at >= 0 else address
            if extension:
                user = user[: len(user) - len(extension)]
            result = user + result
        if extension:
            at = result.rfind("@")
            result = result + extension if at < 0 else result[:at] + extension + result[at:]
        return result


# -- header address lists ------------------------------------------------------------------

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


def rewrite_address_list(text: str, mapping: Callable[[str], str]) -> str | None:
    """``text`` with each address replaced by ``mapping(address)``, or None if none changed."""
    replacements: list[tuple[int, int, str]] = []
    for start, end in address_spans(text):
        old = text[start:end]
        new = mapping(old)
        if new != old:
            replacements.append((start, end, new))
    if not replacements:
        return None
    for start, end, new in reversed(replacements):
        text = text[:start] + new + text[end:]
    return text
