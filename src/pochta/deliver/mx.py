"""Where mail for a domain goes: MX records, in the order RFC 5321 §5.1 asks, with addresses.

``resolve_mx(resolver, domain, max_hosts=...)`` does the whole lookup and returns an
``MXResult``: either the hosts to try, best first, each with its addresses, or the reply text
that the caller records for every recipient ("550 5.1.2 ...", "451 4.4.3 ...") and whether
that failure is permanent. ``resolve_host`` does the same for a next hop given in brackets
(``smtp:[mail.example.org]``, transport(5): no MX lookup) or as an IP address.

The rules, each cited where it is applied below:

- MX records are sorted by preference and hosts of equal preference are shuffled
  (``order_mx``, a pure function of the records and a random generator);
- no MX records: the domain itself is the one "implicit MX" (its A/AAAA records);
- NXDOMAIN is permanent (the domain does not exist), SERVFAIL and timeouts are temporary;
- a null MX (RFC 7505) is permanent, 556 5.1.10;
- MX targets must be host names with address records: an IP address written as an MX target,
  or a target without addresses, is unusable and skipped; when no MX host is usable, the
  error is permanent unless some lookup failed only for now;
- a target that is a CNAME: the recursive server's answer (which follows the alias) is used as
  it is. dnspython follows the chain inside one answer and stops after a bounded number of
  links, and we never issue a query of our own for an alias target, so a CNAME loop cannot
  make us loop;
- MX hosts that are this host (``local_names``) and every less preferred host are dropped
  (RFC 5321 §5.1), else a backup MX would send mail to itself.

Address order: IPv4 addresses first, then IPv6 addresses, and IPv6 ones only when this machine
has a route to them (``ipv6_routable``, asked for each address), so a host without IPv6
connectivity does not spend a connect timeout per AAAA record. Postfix's default
(``smtp_address_preference = any``) mixes the families; IPv4 first is the simple choice here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

__all__ = [
    "MAX_ADDRESSES_PER_HOST",
    "MXHost",
    "MXRecord",
    "MXResult",
    "ipv6_routable",
    "order_mx",
    "resolve_host",
    "resolve_mx",
]

# Addresses tried per MX host (Postfix limits the total with smtp_mx_address_limit = 5).
MAX_ADDRESSES_PER_HOST = 4

_system_random = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class MXRecord:
    """One MX record: preference and target host (lower-case, no trailing dot)."""

    preference: int
    host: str


@dataclass(frozen=True, slots=True)
class MXHost:
    """A host to try: its name (for TLS verification and logs), preference and addresses."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MXResult:
    """The hosts to try in order, or why there are none.

    ``error`` is a reply text with its codes ("451 4.4.3 ..."), set exactly when ``hosts`` is
    empty; ``permanent`` says whether it is final (5xx). ``implicit`` is True when the domain
    had no MX records and its own addresses are used. ``skipped`` has one note per MX host
    that was left out (no address, an IP address as target), for the logs.
    """

    hosts: tuple[MXHost, ...] = ()
    error: str = ""
    permanent: bool = False
    implicit: bool = False
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return bool(self.hosts)


def _failure(error: str, *, skipped: Sequence[str] = (), implicit: bool = False) -> MXResult:
    return MXResult((), error, error.startswith("5"), implicit, tuple(skipped))


def order_mx(records: Iterable[MXRecord], rng: random.Random) -> list[MXRecord]:
    """The records best first: by preference, equal preferences shuffled with ``rng``.

    RFC 5321 §5.1: "Multiple MX records contain a preference indication that MUST be used in
    sorting", and hosts of the same preference MUST be randomized to spread the load. A host
    named twice keeps only its most preferred record.
    """
    by_preference: dict[int, list[MXRecord]] = {}
    for record in records:
        by_preference.setdefault(record.preference, []).append(record)
    ordered: list[MXRecord] = []
    seen: set[str] = set()
    for preference in sorted(by_preference):
        group = sorted(by_preference[preference], key=lambda r: r.host)  # rng alone decides
        rng.shuffle(group)
        for record in group:
            if record.host not in seen:
                seen.add(record.host)
                ordered.append(record)
    return ordered


def ipv6_routable(address: str) -> bool:
    """Whether the kernel has a route to this IPv6 address (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 25))
    except OSError:
        return False
    return True


def _ip_literal(text: str) -> str | None:
    """The normalised address when ``text`` is an IPv4 or IPv6 address, else None."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _absolute_name(domain: str) -> dns.name.Name:
    """The domain as an absolute DNS name (U-labels are IDNA-encoded); ValueError if bad."""
    text = domain.strip().rstrip(".")
    if not text:
        raise ValueError("empty domain")
    try:
        return dns.name.from_text(text + ".")
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _why(exc: BaseException) -> str:
    """A short, single-line reason for a DNS failure (for reply texts)."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return "name does not exist"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no server could answer (SERVFAIL or refused)"
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


@dataclass(frozen=True, slots=True)
class _Addresses:
    addresses: tuple[str, ...]
    temporary: bool = False  # the lookup failed only for now
    detail: str = ""


async def _lookup(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[list[str], BaseException | None]:
    try:
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False)
    except dns.exception.DNSException as exc:
        return [], exc
    if answer.rrset is None:
        return [], None
    return [rdata.to_text() for rdata in answer.rrset], None


async def _host_addresses(
    resolver: dns.asyncresolver.Resolver,
    name: dns.name.Name,
    routable6: Callable[[str], bool],
) -> _Addresses:
    """A and AAAA records of one host: IPv4 first, then routable IPv6 (module docstring)."""
    (v4, err4), (v6, err6) = await asyncio.gather(
        _lookup(resolver, name, dns.rdatatype.A), _lookup(resolver, name, dns.rdatatype.AAAA)
    )
    addresses = [a for a in v4 if _ip_literal(a)]
    addresses += [a for a in v6 if _ip_literal(a) and routable6(a)]
    if addresses:
        return _Addresses(tuple(addresses[:MAX_ADDRESSES_PER_HOST]))
    errors = [e for e in (err4, err6) if e is not None]
    temporary = [e for e in errors if not isinstance(e, dns.resolver.NXDOMAIN)]
    if temporary:
        return _Addresses((), True, _why(temporary[0]))
    if errors:
        return _Addresses((), False, "name does not exist")
    if v6:
        return _Addresses((), False, "IPv6 addresses only, and no IPv6 route from this host")
    return _Addresses((), False, "no A or AAAA records")


async def resolve_host(
    resolver: dns.asyncresolver.Resolver,
    host: str,
    *,
    routable6: Callable[[str], bool] = ipv6_routable,
) -> MXResult:
    """The addresses of one host given without MX lookup: a bracketed next hop or an IP.

    An IP address is used as it is (no DNS). A name is looked up for A/AAAA only;
    NXDOMAIN or no address records are permanent (550 5.4.4, RFC 3463 §3.5 "unable to
    route"), other DNS failures temporary (451 4.4.3, "directory server failure").
    """
    literal = _ip_literal(host.strip("[]"))
    if literal is not None:
        return MXResult((MXHost(literal, 0, (literal,)),))
    try:
        name = _absolute_name(host)
    except ValueError as exc:
        return _failure(f"550 5.4.4 Host name {host!r} is not valid: {exc}")
    found = await _host_addresses(resolver, name, routable6)
    if found.addresses:
        return MXResult((MXHost(_host_text(name), 0, found.addresses),))
    if found.temporary:
        return _failure(f"451 4.4.3 Cannot look up host {_host_text(name)}: {found.detail}")
    return _failure(f"550 5.4.4 Host {_host_text(name)} not found: {found.detail}")


async def resolve_mx(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    *,
    max_hosts: int,
    local_names: frozenset[str] = frozenset(),
    rng: random.Random | None = None,
    routable6: Callable[[str], bool] = ipv6_routable,
) -> MXResult:
    """The MX hosts of ``domain`` to try, best first, at most ``max_hosts`` of them, each with
    its addresses; or the reply that every recipient of the domain gets (module docstring).

    ``local_names`` are this host's own names (lower-case, no trailing dot); ``rng`` shuffles
    hosts of equal preference (a SystemRandom by default).
    """
    try:
        name = _absolute_name(domain)
    except ValueError as exc:
        return _failure(f"550 5.1.2 Recipient domain {domain!r} is not valid: {exc}")
    shown = _host_text(name)
    try:
        answer = await resolver.resolve(name, dns.rdatatype.MX, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        # RFC 5321 §5.1: "If a non-existent domain error is returned, this situation MUST be
        # reported as an error"; RFC 3463 §3.2 X.1.2: bad destination system address.
        return _failure(f"550 5.1.2 Recipient domain {shown} not found (NXDOMAIN)")
    except dns.exception.DNSException as exc:
        # RFC 5321 §5.1: "If a temporary error is returned, the message MUST be queued and
        # retried later"; RFC 3463 §3.5 X.4.3: directory server failure.
        return _failure(f"451 4.4.3 MX lookup for {shown} failed: {_why(exc)}")
    ordered_rng = rng if rng is not None else _system_random

    if answer.rrset is None or len(answer.rrset) == 0:
        # RFC 5321 §5.1: "If an empty list of MXs is returned, the address is treated as if it
        # was associated with an implicit MX RR, with a preference of 0, pointing to that
        # host." After a CNAME, "the resulting name is processed as if it were the initial
        # name": the canonical name is the host.
        canonical = answer.canonical_name
        target = _host_text(canonical)
        if target in local_names:
            return _failure(f"554 5.4.6 Mail for {shown} loops back to myself", implicit=True)
        found = await _host_addresses(resolver, canonical, routable6)
        if found.addresses:
            return MXResult((MXHost(target, 0, found.addresses),), implicit=True)
        if found.temporary:
            return _failure(
                f"451 4.4.3 Address lookup for {target} failed: {found.detail}", implicit=True
            )
        # RFC 5321 §5.1: "... or the implicit MX is unusable, this situation MUST be reported
        # as an error"; RFC 3463 §3.5 X.4.4: unable to route.
        return _failure(
            f"550 5.4.4 Recipient domain {shown} has no MX and no address records ({found.detail})",
            implicit=True,
        )

    records: list[MXRecord] = []
    skipped: list[str] = []
    for rdata in answer.rrset:
        exchange: dns.name.Name = rdata.exchange
        if exchange == dns.name.root:
            # RFC 7505 §3: a null MX says the domain accepts no mail; RFC 7505 §4.2 and
            # RFC 3463 X.1.10 (registered by RFC 7505 §5): 556 5.1.10. RFC 7505 §3 forbids
            # other MX records beside it; like Postfix (dns_lookup.c) we honour it even then.
            return _failure(f"556 5.1.10 Recipient domain {shown} accepts no mail (null MX)")
        host = _host_text(exchange)
        if _ip_literal(host) is not None:
            # RFC 5321 §5.1: the MX data field "MUST contain a domain name" that has address
            # records; an IP address in its place makes the record unusable.
            # Deviation from Postfix, which uses such an address anyway: we follow the RFC.
            skipped.append(f"{host}: an IP address is not a valid MX target")
            continue
        records.append(MXRecord(int(rdata.preference), host))

    ordered = order_mx(records, ordered_rng)
    mine = [r.preference for r in ordered if r.host in local_names]
    if mine:
        # RFC 5321 §5.1: when this host is one of the MX hosts, only more preferred ones
        # (lower values) may be used, else mail would loop through the backups.
        ordered = [r for r in ordered if r.preference < min(mine)]
        if not ordered:
            return _failure(f"554 5.4.6 Mail for {shown} loops back to myself", skipped=skipped)
    ordered = ordered[: max(1, max_hosts)]

    lookups = await asyncio.gather(
        *(_host_addresses(resolver, _absolute_name(r.host), routable6) for r in ordered)
    )
    hosts: list[MXHost] = []
    temporary = False
    for record, found in zip(ordered, lookups, strict=True):
        if found.addresses:
            hosts.append(MXHost(record.host, record.preference, found.addresses))
        else:
            temporary = temporary or found.temporary
            skipped.append(f"{record.host}: {found.detail}")
    if hosts:
        return MXResult(tuple(hosts), skipped=tuple(skipped))
    detail = "; ".join(skipped) or "no MX records"
    if temporary:
        return _failure(
            f"451 4.4.3 No MX host of {shown} can be looked up now: {detail}", skipped=skipped
        )
    # RFC 5321 §5.1: "If MX records are present, but none of them are usable, this situation
    # MUST be reported as an error." Postfix (smtp_addr.c) bounces this with 5.4.4 too.
    return _failure(f"550 5.4.4 No MX host of {shown} is usable: {detail}", skipped=skipped)
