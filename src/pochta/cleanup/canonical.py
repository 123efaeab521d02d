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

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pochta.logs import get_logger
from pochta.mime.addresses import address_spans
from pochta.tables import TableSet, match_address
from pochta.tables.address_list import split_addresses as _addresses

if TYPE_CHECKING:
    from pochta.config.settings import Settings
    from pochta.tables.configured import ConfiguredTables

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
class _LocalNames:
    """The host name and the ``[local] domains`` list (Postfix mydestination, which may
    name tables and files: tables/domain_list.py)."""

    hostname: str
    domains: Container[str]

    def __contains__(self, domain: object) -> bool:
        return domain == self.hostname or domain in self.domains


@dataclass(frozen=True, slots=True)
class CanonicalMaps:
    """The three [tables] canonical maps, the names of this host (for the bare ``user``
    keys) and the recipient_delimiter."""

    common: TableSet[str]
    sender_maps: TableSet[str]
    recipient_maps: TableSet[str]
    local_domains: Container[str]
    delimiter: str = "+"

    @classmethod
    def from_settings(cls, settings: Settings, tables: ConfiguredTables) -> CanonicalMaps:
        """The maps of ``[tables]``, with the host name and ``[local] domains`` as the
        domains whose bare ``user`` keys apply: what cleanup rewrites with, and what RCPT TO
        (``receive/smtp_service.py``) and ``pochta queue requeue`` rewrite with before they
        resolve, so the three agree."""
        hostname = settings.server.hostname.rstrip(".").lower()
        return cls(
            common=tables.canonical_maps,
            sender_maps=tables.sender_canonical_maps,
            recipient_maps=tables.recipient_canonical_maps,
            local_domains=_LocalNames(hostname, tables.local_domains),
            delimiter=settings.directory.recipient_delimiter,
        )

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
