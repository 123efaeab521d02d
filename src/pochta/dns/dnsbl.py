"""DNS blocklists (RFC 5782): the names to ask and what an answer means. Pure: no I/O.

A blocklist (DNSxL) is a DNS zone. An address is looked up as its reversed octets (IPv4,
RFC 5782 §2.1) or reversed nibbles (IPv6, §2.4) under the zone, a domain as itself under the
zone (§3), and the A records of that name say whether and why it is listed:

- NXDOMAIN (or no A record): not listed (§2.1);
- an A record in 127.0.0.0/8: listed, the address being the return code (``127.0.0.2`` is
  the usual "listed"; lists such as Spamhaus ZEN or DBL give a code per sub-list, SURBL a
  bit mask in the last octet). Several records may come back: one per sub-list (§2.1);
- except the codes a list uses to say "I do not answer you": Spamhaus's 127.255.255.252
  (typo in the zone name), 127.255.255.254 (query through a public/open resolver),
  127.255.255.255 (rate limited), 127.0.1.255 (DBL: the same, for its domain zone), and
  127.0.0.1, which RFC 5782 §5 forbids as an entry and SURBL answers to resolvers it blocks.
  These are :data:`REFUSED`: nothing is known about the address, never a listing;
- an A record outside 127.0.0.0/8: :data:`UNEXPECTED`, a wildcard zone or a resolver that
  rewrites NXDOMAIN into an advertising address; no listing either.

:func:`interpret` turns the answers into a :class:`Listing`; the callers (the spam checks
``spam/dnsbl.py`` and ``spam/uribl.py``, the DNS doctor ``dns/doctor.py``) do the lookups.
:class:`ZoneWarnings` keeps the "fix your resolver" warnings to one per zone per hour.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "LISTED",
    "NOT_LISTED",
    "REFUSED",
    "UNEXPECTED",
    "Listing",
    "ZoneWarnings",
    "domain_query_name",
    "interpret",
    "ip_query_name",
]

Status = Literal["listed", "not-listed", "refused", "unexpected"]
LISTED: Status = "listed"
NOT_LISTED: Status = "not-listed"
REFUSED: Status = "refused"
UNEXPECTED: Status = "unexpected"

_OWN_RESOLVER = (
    "run your own recursive resolver (e.g. unbound on 127.0.0.1) and point [dns] "
    "nameservers at it, or use the list's paid query service"
)
# Return codes that say the list did not answer the question (Spamhaus "DNSBL return codes";
# SURBL "blocked" answer), with what the admin should do about each.
REFUSAL_CODES: dict[str, str] = {
    "127.255.255.252": "typing error in the blocklist zone name: check the [dnsbl] zones",
    "127.255.255.254": (
        "the query came through a public/open resolver, which Spamhaus does not answer: "
        + _OWN_RESOLVER
    ),
    "127.255.255.255": "too many queries (rate limited): " + _OWN_RESOLVER,
    "127.0.1.255": (
        "the domain blocklist refused the query (public/open resolver, or an address asked "
        "of a domain list): " + _OWN_RESOLVER
    ),
    # RFC 5782 §5: 127.0.0.1 MUST NOT be listed; SURBL answers it to resolvers it blocks.
    "127.0.0.1": (
        "127.0.0.1 is never a listing (RFC 5782 §5); SURBL answers it when it blocks a public "
        "resolver or too many queries: " + _OWN_RESOLVER
    ),
}
_LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")


def ip_query_name(ip: str, zone: str) -> str:
    """The name to look up for address ``ip`` in the blocklist ``zone``: the four octets
    reversed (RFC 5782 §2.1), or the 32 nibbles of an IPv6 address reversed (§2.4).

    An IPv4-mapped IPv6 address is asked as its IPv4 address. ``ValueError`` for a string
    that is not an address."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        # RFC 5782 §2.1: 192.0.2.99 -> 99.2.0.192.<zone>
        stem = ".".join(reversed(str(addr).split(".")))
    else:
        # RFC 5782 §2.4: each of the 32 nibbles, least significant first (as in ip6.arpa).
        stem = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{stem}.{_zone(zone)}"


def domain_query_name(domain: str, zone: str) -> str:
    """The name to look up for ``domain`` in the domain blocklist ``zone``: the domain
    itself prefixed to the zone (RFC 5782 §3), lower case, without the trailing dot."""
    name = domain.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty domain name")
    return f"{name}.{_zone(zone)}"


def _zone(zone: str) -> str:
    name = zone.strip().strip(".").lower()
    if not name:
        raise ValueError("empty blocklist zone name")
    return name


@dataclass(frozen=True, slots=True)
class Listing:
    """What one blocklist answer means.

    ``status`` is :data:`LISTED` with ``codes`` the return codes in 127.0.0.0/8 (sorted);
    :data:`NOT_LISTED`; :data:`REFUSED` or :data:`UNEXPECTED`, both no listing, with
    ``problem`` saying what is wrong and how to fix it, and ``answers`` what DNS said."""

    status: Status
    codes: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    problem: str = ""

    @property
    def listed(self) -> bool:
        return self.status == LISTED


NOT_LISTED_ANSWER = Listing(NOT_LISTED)


def interpret(answers: Iterable[str]) -> Listing:
    """The meaning of the A records of a blocklist name (see the module docstring). No
    records (NXDOMAIN, NODATA) is not listed (RFC 5782 §2.1)."""
    found = tuple(sorted(set(answers)))
    if not found:
        return NOT_LISTED_ANSWER
    outside: list[str] = []
    refusals: list[str] = []
    codes: list[str] = []
    for text in found:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            outside.append(text)
            continue
        if not isinstance(addr, ipaddress.IPv4Address) or addr not in _LOOPBACK_NET:
            outside.append(text)
        elif text in REFUSAL_CODES:
            refusals.append(text)
        else:
            codes.append(text)  # RFC 5782 §2.1: 127.0.0.0/8 answers are the return codes
    if outside:
        # A blocklist answers only in 127.0.0.0/8 (RFC 5782 §2.1): anything else is a
        # wildcard or a resolver rewriting NXDOMAIN, so nothing of it is a listing.
        return Listing(
            UNEXPECTED,
            answers=found,
            problem=(
                f"answer {', '.join(outside)} is outside 127.0.0.0/8 (RFC 5782 §2.1): the zone "
                "name is wrong or the resolver rewrites NXDOMAIN answers; use a resolver that "
                "does not ([dns] nameservers)"
            ),
        )
    if refusals and not codes:
        return Listing(REFUSED, answers=found, problem=REFUSAL_CODES[refusals[0]])
    return Listing(LISTED, codes=tuple(codes), answers=found)


@dataclass(slots=True)
class ZoneWarnings:
    """Lets one warning per (zone, problem kind) through per ``interval_seconds`` (an hour),
    so a misconfigured resolver is reported in the log without a line per message.
    ``clock`` is injected (``time.monotonic`` in production)."""

    clock: Callable[[], float]
    interval_seconds: float = 3600.0
    _last: dict[tuple[str, str], float] = field(default_factory=dict)

    def due(self, zone: str, kind: str) -> bool:
        """True (and the hour starts again) when a warning about ``zone`` may be logged."""
        now = self.clock()
        last = self._last.get((zone, kind))
        if last is not None and now - last < self.interval_seconds:
            return False
        self._last[(zone, kind)] = now
        return True
