"""The client address against DNS blocklists (``[dnsbl] client_zones``), Rspamd's RBL module.

For every message from a client whose address is worth asking about (not loopback, private,
link-local or otherwise non-global: nothing to ask a public list about) and that did not log
in (an authenticated user on a dynamic home address is in Spamhaus's PBL by design), the
address is looked up in each zone (``dns/dnsbl.py`` builds the name and reads the answer) over
the mail system's cached dnspython resolver. Lookups run concurrently under one time limit
per message (``[dnsbl] timeout_seconds``); what times out or fails gives no symbol and a log
line, never a listing.

A zone pochta knows maps its return codes to symbols and scores like Rspamd's (Spamhaus ZEN:
127.0.0.2 SBL, .3 CSS, .4-.7 XBL, .9 DROP, .10/.11 PBL, also through the DQS mirror
``KEY.zen.dq.spamhaus.net``); any other zone, or a code the table does not know, gives one
symbol ``RBL_<ZONE>`` with ``[dnsbl] default_score``. Options are the address and the codes.

A list that refuses the query (127.255.255.252/254/255: our resolver is a public one, or
rate limited) or answers outside 127.0.0.0/8 (a resolver rewriting NXDOMAIN) gives no
symbol; a warning that says what to fix is logged once per zone per hour
(``dns.dnsbl.ZoneWarnings``).

The HELO name is not checked: ZEN is a list of addresses, and the HELO name is whatever
the client chose to say (Rspamd asks the HELO name only of domain lists, with low weights).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver

from pochta.cleanup.verdict import Symbol
from pochta.dns.dnsbl import LISTED, NOT_LISTED, Listing, ZoneWarnings, interpret, ip_query_name
from pochta.logs import get_logger
from pochta.netaddr import client_address
from pochta.spam.check import ScanInput

__all__ = [
    "ZEN_CODES",
    "BlocklistLookup",
    "ClientBlocklists",
    "ReturnCode",
    "askable_address",
    "code_symbols",
    "zone_symbol_name",
]


class EventLog(Protocol):
    """The part of ``logs.PochtaLogger`` the lookups use (a test passes a recorder)."""

    def info(self, event: str, **fields: Any) -> None: ...

    def warning(self, event: str, **fields: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class ReturnCode:
    """What one return code of a known zone means: its symbol, score and description."""

    symbol: str
    score: float
    description: str


# Spamhaus ZEN return codes (Spamhaus "DNSBL return codes"), scored as Rspamd's rbl_group.
_SBL = ReturnCode("RBL_ZEN_SBL", 4.0, "address in Spamhaus SBL (spam source)")
_CSS = ReturnCode("RBL_ZEN_CSS", 2.0, "address in Spamhaus CSS (snowshoe spam)")
_XBL = ReturnCode("RBL_ZEN_XBL", 4.0, "address in Spamhaus XBL (exploited host)")
_DROP = ReturnCode("RBL_ZEN_DROP", 7.0, "address in Spamhaus DROP (hijacked network)")
_PBL = ReturnCode("RBL_ZEN_PBL", 2.0, "address in Spamhaus PBL (end-user range)")
ZEN_CODES: dict[str, ReturnCode] = {
    "127.0.0.2": _SBL,
    "127.0.0.3": _CSS,
    "127.0.0.4": _XBL,
    "127.0.0.5": _XBL,
    "127.0.0.6": _XBL,
    "127.0.0.7": _XBL,
    "127.0.0.9": _DROP,
    "127.0.0.10": _PBL,
    "127.0.0.11": _PBL,
}


def known_client_codes(zone: str) -> Mapping[str, ReturnCode]:
    """The return-code table of a known address zone, empty for others."""
    name = zone.strip(".").lower()
    if name == "zen.spamhaus.org" or name.endswith(".zen.dq.spamhaus.net"):
        return ZEN_CODES
    return {}


def zone_symbol_name(prefix: str, zone: str) -> str:
    """``RBL_BL_EXAMPLE_NET`` for zone bl.example.net: the symbol of an unknown zone."""
    return prefix + "_" + re.sub(r"[^A-Z0-9]+", "_", zone.strip(".").upper()).strip("_")


def code_symbols(
    listing: Listing,
    zone: str,
    table: Mapping[str, ReturnCode],
    *,
    prefix: str,
    default_score: float,
    what: str,
) -> list[ReturnCode]:
    """The symbols of one listing: one per distinct known meaning of its codes, and the
    zone's own symbol (``prefix_ZONE``, ``default_score``) for codes the table lacks."""
    out: dict[str, ReturnCode] = {}
    for code in listing.codes:
        known = table.get(code)
        if known is None:
            name = zone_symbol_name(prefix, zone)
            known = ReturnCode(name, default_score, f"{what} listed in {zone}")
        out.setdefault(known.symbol, known)
    return list(out.values())


def askable_address(ip: str) -> str:
    """``ip`` as an address a public blocklist can know ("" when not): loopback, private,
    link-local, multicast, reserved and unspecified addresses are never asked."""
    addr = client_address(ip)
    if addr is None or not addr.is_global or addr.is_multicast:
        return ""
    return str(addr)


class BlocklistLookup:
    """One A lookup of a blocklist name through the cached resolver, read by
    ``dns.dnsbl.interpret``; refusals and odd answers are logged once per zone per hour."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        *,
        warnings: ZoneWarnings | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.resolver = resolver
        self.warnings = warnings if warnings is not None else ZoneWarnings(time.monotonic)
        self.log: EventLog = log if log is not None else get_logger("spam.dnsbl")

    async def __call__(self, qname: str, zone: str, *, queue_id: str = "") -> Listing | None:
        """The listing of ``qname``; None when DNS gave no usable answer (timeout, SERVFAIL,
        a refusal or an answer outside 127.0.0.0/8), which is never a listing."""
        try:
            answer = await self.resolver.resolve(
                qname + ".", "A", search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return Listing(NOT_LISTED)  # RFC 5782 §2.1: no entry, not listed
        except dns.exception.DNSException as exc:
            self.log.info(
                "dnsbl_lookup_failed",
                zone=zone,
                name=qname,
                error=str(exc) or type(exc).__name__,
                queue_id=queue_id,
            )
            return None
        rrset = answer.rrset
        listing = interpret(str(rd.address) for rd in rrset) if rrset is not None else None
        if listing is None:
            return Listing(NOT_LISTED)
        if listing.status in (LISTED, NOT_LISTED):
            return listing
        if self.warnings.due(zone, listing.status):
            self.log.warning(
                "dnsbl_unusable_answer",
                zone=zone,
                name=qname,
                answers=",".join(listing.answers),
                fix=listing.problem,
            )
        return None


async def gather_within(
    jobs: Sequence[Awaitable[Any]], timeout_seconds: float
) -> tuple[list[Any], int]:
    """Run ``jobs`` concurrently for at most ``timeout_seconds`` in all: the results of
    those done in time (in order, exceptions dropped) and how many were cut off."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    if not tasks:
        return [], 0
    done, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
    for task in pending:
        task.cancel()
    results = [t.result() for t in tasks if t in done and t.exception() is None]
    return results, len(pending)


@dataclass(slots=True)
class ClientBlocklists:
    """The check: ``RBL_*`` symbols for the client address (module docstring)."""

    zones: Sequence[str]
    lookup: BlocklistLookup
    default_score: float
    timeout_seconds: float
    name: str = "dnsbl"

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        ip = askable_address(scan.client_ip)
        if not ip or scan.auth_user or not self.zones:
            return []
        return await address_symbols(
            self.lookup,
            [ip],
            self.zones,
            prefix="RBL",
            default_score=self.default_score,
            timeout_seconds=self.timeout_seconds,
            queue_id=scan.queue_id,
        )


async def address_symbols(
    lookup: BlocklistLookup,
    ips: Sequence[str],
    zones: Sequence[str],
    *,
    prefix: str,
    default_score: float,
    timeout_seconds: float,
    queue_id: str = "",
) -> list[Symbol]:
    """Every address of ``ips`` in every zone of ``zones`` at once, as symbols (one per
    meaning; options: the listed addresses and their codes). ``prefix`` "RBL" names the
    client's symbols; "URIBL" those of an address written in a link."""

    async def one(ip: str, zone: str) -> tuple[str, str, Listing | None]:
        return ip, zone, await lookup(ip_query_name(ip, zone), zone, queue_id=queue_id)

    results, late = await gather_within(
        [one(ip, zone) for ip in ips for zone in zones], timeout_seconds
    )
    if late:
        lookup.log.info("dnsbl_timeout", lookups=late, queue_id=queue_id)
    found: dict[str, tuple[ReturnCode, list[str]]] = {}
    for ip, zone, listing in results:
        if listing is None or not listing.listed:
            continue
        table = known_client_codes(zone)
        for code in code_symbols(
            listing, zone, table, prefix="RBL", default_score=default_score, what=ip
        ):
            name = prefix + code.symbol.removeprefix("RBL")
            entry = found.setdefault(name, (ReturnCode(name, code.score, code.description), []))
            entry[1].extend([ip, *listing.codes])
    return [
        Symbol(
            name=code.symbol,
            score=code.score,
            description=code.description,
            options=tuple(dict.fromkeys(options)),
        )
        for code, options in found.values()
    ]


def ipv4_or_6(text: str) -> str:
    """The address in a URL host (``[2001:db8::1]`` or ``192.0.2.1``), "" when none."""
    host = text.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""
