"""The spam checks of the mail system, built from the settings: what the scanner runs.

``build_checks`` is the one list; each check's engineer adds its lines here, in the order
the symbols should read in a verdict (the scanner runs them concurrently anyway).
"""

from __future__ import annotations

import time

import dns.asyncresolver

from pochta.config.settings import Settings
from pochta.directory.base import Directory
from pochta.dns.dnsbl import ZoneWarnings
from pochta.spam.check import Check
from pochta.spam.dnsbl import BlocklistLookup, ClientBlocklists
from pochta.spam.uribl import UriBlocklists

__all__ = ["build_checks"]


def build_checks(
    settings: Settings, *, directory: Directory, dns_resolver: dns.asyncresolver.Resolver
) -> list[Check]:
    """The checks ``settings`` turn on, over the process's directory and cached resolver."""
    checks: list[Check] = []
    dnsbl = settings.dnsbl
    if dnsbl.enabled:
        # DNS blocklists (spam/dnsbl.py, spam/uribl.py): one lookup helper, so the "fix your
        # resolver" warning is logged once per zone per hour for both checks.
        lookup = BlocklistLookup(dns_resolver, warnings=ZoneWarnings(time.monotonic))
        if dnsbl.client_zones:
            checks.append(
                ClientBlocklists(
                    zones=tuple(dnsbl.client_zones),
                    lookup=lookup,
                    default_score=dnsbl.default_score,
                    timeout_seconds=dnsbl.timeout_seconds,
                )
            )
        if dnsbl.uri_zones or dnsbl.client_zones:
            checks.append(
                UriBlocklists(
                    uri_zones=tuple(dnsbl.uri_zones),
                    client_zones=tuple(dnsbl.client_zones),
                    lookup=lookup,
                    hosted=lambda name: directory.get_domain(name) is not None,
                    default_score=dnsbl.default_score,
                    max_lookups=dnsbl.max_uri_lookups,
                    timeout_seconds=dnsbl.timeout_seconds,
                )
            )
    return checks
