"""Client addresses: the one loopback rule and network membership.

A kernel module: it imports nothing of pochta's, so the session packages (receive, access,
web) and the runtime (server) share it without importing each other.

Every listener reports its peer as the text of an IP address. A dual-stack IPv6 socket reports
an IPv4 client as an IPv4-mapped address (RFC 4291 §2.5.5.2, ``::ffff:127.0.0.1``), so such an
address counts as its IPv4 address; a zone suffix (``fe80::1%eth0``, RFC 4007 §11) is dropped.
A string that is not an address is never loopback and in no network.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(ip: str) -> IPAddress | None:
    """The address a client connected from, IPv4-mapped IPv6 made IPv4, zone dropped; None
    when ``ip`` is not an address."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])  # RFC 4007 §11: drop a zone id
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # RFC 4291 §2.5.5.2: a dual-stack listener's IPv4 client
    return addr


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8 (RFC 1122 §3.2.1.3), ::1 (RFC 4291 §2.5.3) and ::ffff:127.x."""
    addr = client_address(ip)
    return addr is not None and addr.is_loopback


@functools.lru_cache(maxsize=16)
def _networks(specs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    nets = []
    for spec in specs:
        with contextlib.suppress(ValueError):  # `pochta check` reports it (config/check.py)
            nets.append(ipaddress.ip_network(spec, strict=False))
    return tuple(nets)


def in_networks(ip: str, specs: Iterable[str]) -> bool:
    """Whether client address `ip` lies in one of the networks `specs` ("10.0.0.0/8", "::1");
    an IPv4-mapped IPv6 address (a dual-stack listener) counts as its IPv4 address. A spec
    that is not a network is skipped (`pochta check` reports it)."""
    addr = client_address(ip)
    if addr is None:
        return False
    return any(addr in net for net in _networks(tuple(specs)))
