"""The domains of a message's links against URI blocklists (``[dnsbl] uri_zones``), Rspamd's
SURBL module.

Each link's host (``spam/message.py`` finds them in text, anchors and images) is reduced to
its registrable domain by the Public Suffix List (``mailauth.dmarc.organizational_domain``):
``a.b.spam.example.co.uk`` is asked as ``spam.example.co.uk`` (RFC 5782 §3), as DBL and SURBL
list them. Hosts in or under a hosted domain are not asked (our own links are no evidence).
An IP literal in a link (``http://203.0.113.5/``) is asked of the client zones
(``[dnsbl] client_zones``, reversed octets, RFC 5782 §2.1), as Rspamd does, giving
``URIBL_ZEN_SBL`` and the like.

At most ``[dnsbl] max_uri_lookups`` distinct domains and addresses per message, in the order
they appear; all lookups run concurrently under one time limit per message
(``[dnsbl] timeout_seconds``). Known zones map their codes to Rspamd's symbols and scores:

- Spamhaus DBL (``dbl.spamhaus.org``): 127.0.1.2 spam, .4 phish, .5 malware, .6 botnet;
  .102-.106 abused legitimate domains (127.0.1.255 is its "refused" code, never a listing);
- SURBL (``multi.surbl.org``): a bit mask in the last octet, 8 PH (phishing), 16 MW
  (malware), 64 ABUSE, 128 CR (cracked sites); 127.0.0.1 is its "blocked" answer.

Another zone, or a code the table lacks, gives ``URIBL_<ZONE>`` with ``[dnsbl]
default_score``. A symbol's options are the matched domains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pochta.cleanup.verdict import Symbol
from pochta.dns.dnsbl import Listing, domain_query_name
from pochta.mailauth.dmarc import organizational_domain
from pochta.spam.check import ScanInput
from pochta.spam.dnsbl import (
    BlocklistLookup,
    ReturnCode,
    address_symbols,
    askable_address,
    code_symbols,
    gather_within,
)
from pochta.spam.message import Link

__all__ = ["DBL_CODES", "LinkTargets", "UriBlocklists", "link_targets", "surbl_codes"]

# Spamhaus DBL return codes, scored as Rspamd's surbl_group.
DBL_CODES: dict[str, ReturnCode] = {
    "127.0.1.2": ReturnCode("DBL_SPAM", 6.5, "link to a spam domain (Spamhaus DBL)"),
    "127.0.1.4": ReturnCode("DBL_PHISH", 6.5, "link to a phishing domain (Spamhaus DBL)"),
    "127.0.1.5": ReturnCode("DBL_MALWARE", 6.5, "link to a malware domain (Spamhaus DBL)"),
    "127.0.1.6": ReturnCode("DBL_BOTNET", 5.5, "link to a botnet C&C domain (Spamhaus DBL)"),
    "127.0.1.102": ReturnCode("DBL_ABUSE", 5.5, "link to an abused legit domain (DBL)"),
    "127.0.1.103": ReturnCode("DBL_ABUSE_REDIR", 1.5, "link to an abused redirector (DBL)"),
    "127.0.1.104": ReturnCode("DBL_ABUSE_PHISH", 5.5, "link to an abused legit domain (DBL)"),
    "127.0.1.105": ReturnCode("DBL_ABUSE_MALWARE", 5.5, "link to an abused legit domain (DBL)"),
    "127.0.1.106": ReturnCode("DBL_ABUSE_BOTNET", 5.5, "link to an abused legit domain (DBL)"),
}
# SURBL multi: one bit per sub-list in the last octet, scored as Rspamd's surbl_group.
SURBL_BITS: tuple[tuple[int, ReturnCode], ...] = (
    (8, ReturnCode("PH_SURBL_MULTI", 7.5, "link to a phishing domain (SURBL)")),
    (16, ReturnCode("MW_SURBL_MULTI", 7.5, "link to a malware domain (SURBL)")),
    (64, ReturnCode("ABUSE_SURBL", 5.0, "link to a spam domain (SURBL ABUSE)")),
    (128, ReturnCode("CRACKED_SURBL", 5.0, "link to a cracked site (SURBL)")),
)


def surbl_codes(codes: Sequence[str]) -> list[ReturnCode]:
    """The SURBL meanings of ``codes`` (127.0.0.X, X a bit mask of sub-lists), one per
    known bit set in any of them; empty when no known bit is set."""
    out: dict[str, ReturnCode] = {}
    for code in codes:
        mask = int(code.rsplit(".", 1)[1])
        for bit, meaning in SURBL_BITS:
            if mask & bit:
                out.setdefault(meaning.symbol, meaning)
    return list(out.values())


def _symbols_of(listing: Listing, zone: str, default_score: float) -> list[ReturnCode]:
    name = zone.strip(".").lower()
    if name == "dbl.spamhaus.org" or name.endswith(".dbl.dq.spamhaus.net"):
        return code_symbols(
            listing, zone, DBL_CODES, prefix="URIBL", default_score=default_score, what="link"
        )
    if name == "multi.surbl.org":
        known = surbl_codes(listing.codes)
        if known:
            return known
    return code_symbols(listing, zone, {}, prefix="URIBL", default_score=default_score, what="link")


@dataclass(frozen=True, slots=True)
class LinkTargets:
    """What the links of one message ask: registrable domains and addresses, in order."""

    domains: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


def _host(url: str) -> str:
    text = url.strip()
    if "://" not in text[:12]:
        text = "http://" + text  # "www.example.com/..." found in plain text
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    host = host.rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return ""


def link_targets(links: Sequence[Link], hosted: Callable[[str], bool], limit: int) -> LinkTargets:
    """The distinct registrable domains and askable addresses of ``links``, at most
    ``limit`` of both together, skipping hosts in or under a hosted domain."""
    domains: dict[str, None] = {}
    addresses: dict[str, None] = {}
    for link in links:
        if len(domains) + len(addresses) >= limit:
            break
        host = _host(link.url)
        if not host:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            ip = askable_address(host)
            if ip:
                addresses[ip] = None
            continue
        if "." not in host:
            continue
        registrable = organizational_domain(host)
        if "." not in registrable or registrable in domains:
            continue  # a bare public suffix ("com") names nobody
        if _is_hosted(host, registrable, hosted):
            continue
        domains[registrable] = None
    return LinkTargets(tuple(domains), tuple(addresses))


def _is_hosted(host: str, registrable: str, hosted: Callable[[str], bool]) -> bool:
    """Whether ``host`` or a parent of it, down to its registrable domain, is hosted."""
    name = host
    while True:
        if hosted(name):
            return True
        if name == registrable or "." not in name:
            return False
        name = name.split(".", 1)[1]


@dataclass(slots=True)
class UriBlocklists:
    """The check: URI blocklist symbols for the links of a message (module docstring)."""

    uri_zones: Sequence[str]
    client_zones: Sequence[str]
    lookup: BlocklistLookup
    hosted: Callable[[str], bool]
    default_score: float
    max_lookups: int
    timeout_seconds: float
    name: str = "uribl"

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        targets = link_targets(scan.message.links, self.hosted, self.max_lookups)
        symbols: list[Symbol] = []
        if targets.addresses and self.client_zones:
            symbols += await address_symbols(
                self.lookup,
                targets.addresses,
                self.client_zones,
                prefix="URIBL",
                default_score=self.default_score,
                timeout_seconds=self.timeout_seconds,
                queue_id=scan.queue_id,
            )
        if targets.domains and self.uri_zones:
            symbols += await self._domains(targets.domains, scan.queue_id)
        return symbols

    async def _domains(self, domains: Sequence[str], queue_id: str) -> list[Symbol]:
        async def one(domain: str, zone: str) -> tuple[str, str, Listing | None]:
            qname = domain_query_name(domain, zone)  # RFC 5782 §3
            return domain, zone, await self.lookup(qname, zone, queue_id=queue_id)

        jobs = [one(domain, zone) for domain in domains for zone in self.uri_zones]
        results, late = await gather_within(jobs, self.timeout_seconds)
        if late:
            self.lookup.log.info("uribl_timeout", lookups=late, queue_id=queue_id)
        found: dict[str, tuple[ReturnCode, dict[str, None]]] = {}
        for domain, zone, listing in results:
            if listing is None or not listing.listed:
                continue
            for meaning in _symbols_of(listing, zone, self.default_score):
                found.setdefault(meaning.symbol, (meaning, {}))[1][domain] = None
        return [
            Symbol(
                name=meaning.symbol,
                score=meaning.score,
                description=meaning.description,
                options=tuple(matched),
            )
            for meaning, matched in found.values()
        ]
