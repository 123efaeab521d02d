"""The asyncio DNS resolver that delivery uses (MX, A/AAAA, and later TLSA and MTA-STS).

One ``dns.asyncresolver.Resolver`` is built from ``[dns]`` in pochta.toml:

- ``nameservers``: "IP", "IP:PORT" or "[IPv6]:PORT" each (``parse_nameserver`` of
  ``records.py`` reads them, the same syntax ``pochta dns --nameserver`` takes); empty means
  the system's resolvers from /etc/resolv.conf;
- ``timeout_seconds``: the lifetime of one lookup, all servers and retries included (and the
  wait for one server, so a single dead server cannot use the whole budget on its own turn);
- ``dnssec_validating``: the servers validate DNSSEC; queries then set the AD bit (RFC 6840
  §5.7) so that the answers say whether they were validated, which DANE needs (RFC 7672 §2.1).

Answers are cached in memory for their TTL (dnspython's LRU cache), so a queue run that sends
many messages to one domain asks DNS once.
"""

from __future__ import annotations

import dns.asyncresolver
import dns.flags
import dns.nameserver
import dns.resolver

from pochta.config.nameserver import parse_nameserver
from pochta.config.settings import DNSSettings

# Entries kept by the answer cache (names × types); old entries are evicted first.
CACHE_ENTRIES = 10_000
# RFC 6891 §6.2.5 / DNS flag day 2020: an EDNS buffer size that avoids IP fragmentation.
EDNS_PAYLOAD_BYTES = 1232


class ResolverConfigError(ValueError):
    """``[dns]`` settings that cannot make a resolver; the message says what to change."""


def make_async_resolver(dns_settings: DNSSettings) -> dns.asyncresolver.Resolver:
    """An asyncio resolver following ``dns_settings`` (see the module docstring).

    ``ResolverConfigError`` names the bad ``dns.nameservers`` entry, or says that the system
    has no resolver configuration to fall back on.
    """
    if dns_settings.timeout_seconds <= 0:
        raise ResolverConfigError(
            f"dns.timeout_seconds = {dns_settings.timeout_seconds}: must be more than 0"
        )
    if dns_settings.nameservers:
        servers: list[str | dns.nameserver.Nameserver] = []
        for index, entry in enumerate(dns_settings.nameservers):
            try:
                ip, port = parse_nameserver(entry)
            except ValueError as exc:
                raise ResolverConfigError(f"dns.nameservers[{index}]: {exc}") from None
            servers.append(dns.nameserver.Do53Nameserver(ip, port))
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = servers
    else:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            raise ResolverConfigError(
                "no nameservers in /etc/resolv.conf; set dns.nameservers, "
                'e.g. nameservers = ["127.0.0.1"]'
            ) from None
    resolver.lifetime = dns_settings.timeout_seconds
    resolver.timeout = dns_settings.timeout_seconds
    resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
    if dns_settings.dnssec_validating:
        # RFC 6840 §5.7: a query with AD set asks the validating server to report, in the
        # answer's AD bit, whether the data was validated.
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.use_edns(0, 0, EDNS_PAYLOAD_BYTES)
    return resolver
