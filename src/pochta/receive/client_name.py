"""The client's verified name: forward-confirmed reverse DNS (Postfix's ``client_name``).

Postfix keeps two names for an SMTP client: ``reverse_client_name``, whatever the PTR record
of the IP says, and ``client_name``, that name only when a forward lookup of it gives the IP
back (else "unknown"). Only the verified one is worth showing in ``Received:`` or to a
policy: anyone who owns the reverse zone of an IP can make its PTR say anything.

:func:`verified_client_name` does the second: the PTR names of the IP (RFC 1035 §3.5
in-addr.arpa, RFC 3596 §2.5 ip6.arpa), then for each the A (IPv4) or AAAA (IPv6) records; the
first name whose addresses contain the IP is the answer. Any failure (NXDOMAIN, SERVFAIL,
timeout, a bad name) gives "": a DNS problem never refuses or delays mail beyond the time
limit.

With no ``dns.nameservers`` configured, :func:`system_client_name` asks the system instead,
as Postfix does (getnameinfo, then getaddrinfo: the name service switch, so /etc/hosts
answers for 127.0.0.1 and the host's own addresses without a DNS query). The system gives no
TTLs, so its answers (a name, or none) are kept for ``NAME_CACHE_SECONDS`` per IP, as nscd
would: a client that connects for every message is looked up once a minute, not each time
(the dnspython path has the resolver's own TTL cache).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from pochta.logs import get_logger

__all__ = ["MAX_PTR_NAMES", "NameCache", "system_client_name", "verified_client_name"]

log = get_logger("smtpd")

# Postfix checks one name (getnameinfo); a PTR RRset may hold several: try a few.
MAX_PTR_NAMES = 4

_FAILURES = (dns.exception.DNSException, OSError, ValueError, TimeoutError)


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None  # a unix socket or something else: no name to look up
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


NAME_CACHE_SECONDS = 60.0
NAME_CACHE_ENTRIES = 4096


class NameCache:
    """Answers of the system resolver per IP for ``seconds`` (at most ``entries``, the
    oldest dropped first); ``clock`` is injectable for tests."""

    def __init__(
        self,
        seconds: float = NAME_CACHE_SECONDS,
        entries: int = NAME_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.entries, self._clock = seconds, entries, clock
        self._answers: dict[str, tuple[float, str]] = {}

    def get(self, ip: str) -> str | None:
        found = self._answers.get(ip)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    def put(self, ip: str, name: str) -> None:
        self._answers.pop(ip, None)
        if len(self._answers) >= self.entries:
            del self._answers[next(iter(self._answers))]
        self._answers[ip] = (self._clock() + self.seconds, name)


async def system_client_name(
    ip: str, *, timeout_seconds: float, cache: NameCache | None = None
) -> str:
    """:func:`verified_client_name` through the system's resolver (nsswitch), or "".
    With ``cache``, a name or a definite "no name" is kept; a timeout is not."""
    address = _address(ip)
    if address is None:
        return ""
    if cache is not None and (known := cache.get(str(address))) is not None:
        return known
    loop = asyncio.get_running_loop()

    async def confirmed() -> str:
        name, _ = await loop.getnameinfo((str(address), 0), socket.NI_NAMEREQD)
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        infos = await loop.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM)
        if any(ipaddress.ip_address(info[4][0]) == address for info in infos):
            return name.rstrip(".").lower()
        return ""

    try:
        name = await asyncio.wait_for(confirmed(), timeout_seconds)
    except TimeoutError:
        log.info("client_name_unknown", client=ip, reason="TimeoutError")
        return ""
    except (OSError, ValueError, UnicodeError) as exc:  # no name: kept like a name
        log.info("client_name_unknown", client=ip, reason=type(exc).__name__)
        name = ""
    if cache is not None:
        cache.put(str(address), name)
    return name


async def verified_client_name(
    resolver: dns.asyncresolver.Resolver, ip: str, *, timeout_seconds: float
) -> str:
    """The forward-confirmed name of ``ip`` (no trailing dot, lower case), or "".

    The whole look-up (PTR and the forward checks) ends within ``timeout_seconds``.
    """
    address = _address(ip)
    if address is None:
        return ""
    try:
        return await asyncio.wait_for(_confirmed(resolver, address), timeout_seconds)
    except _FAILURES as exc:
        log.info("client_name_unknown", client=ip, reason=type(exc).__name__)
        return ""


async def _confirmed(
    resolver: dns.asyncresolver.Resolver, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> str:
    ptr = await resolver.resolve(dns.reversename.from_address(str(address)), "PTR")
    forward = dns.rdatatype.A if address.version == 4 else dns.rdatatype.AAAA
    for rdata in list(ptr)[:MAX_PTR_NAMES]:
        name: dns.name.Name = rdata.target
        if name == dns.name.root:
            continue
        try:
            answer = await resolver.resolve(name, forward)
        except dns.exception.DNSException:
            continue  # this name has no address of the family: try the next one
        if any(ipaddress.ip_address(r.address) == address for r in answer):
            return name.to_text(omit_final_dot=True).lower()
    return ""
