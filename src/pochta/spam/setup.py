"""The checks of the mail system's spam filter, made from the settings.

:func:`build_checks` is called where the mail system builds cleanup (``server/mail.py``,
again on reload) and by ``pochta spam score``; each part of the filter adds its own lines
here, with the settings and dependencies it needs (no globals). The scanner
(spam/scanner.py) runs them concurrently and sums the symbols.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import dns.asyncresolver

from pochta.config.settings import Settings
from pochta.directory.base import Directory
from pochta.dns.dnsbl import ZoneWarnings
from pochta.spam.auth_symbols import AuthSymbols, ClientSymbols
from pochta.spam.bayes import BayesCheck, ScoreCurve
from pochta.spam.bayes_store import BayesStore
from pochta.spam.check import Check
from pochta.spam.dnsbl import BlocklistLookup, ClientBlocklists
from pochta.spam.gtube import Gtube
from pochta.spam.heuristics import HeaderHeuristics, MimeHeuristics
from pochta.spam.lists import ListSymbols, SpamLists
from pochta.spam.uribl import UriBlocklists

__all__ = ["HOSTED_DOMAINS_CACHE_SECONDS", "bayes_curve", "build_checks", "hosted_domains"]

HOSTED_DOMAINS_CACHE_SECONDS = 30.0
"""How long the hosted domains are kept between directory reads (a domain added while the
server runs counts for the display-name and HELO rules within this time)."""


def hosted_domains(
    directory: Directory,
    *,
    seconds: float = HOSTED_DOMAINS_CACHE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], tuple[str, ...]]:
    """A callable giving the hosted mail domains (not the signing-only rows), read from the
    directory at most once per ``seconds``."""
    cached: tuple[str, ...] = ()
    read_at: float | None = None

    def domains() -> tuple[str, ...]:
        nonlocal cached, read_at
        now = clock()
        if read_at is None or now - read_at >= seconds:
            cached = tuple(d.name for d in directory.list_domains() if not d.signing_only)
            read_at = now
        return cached

    return domains


def build_checks(
    settings: Settings,
    *,
    directory: Directory,
    dns_resolver: dns.asyncresolver.Resolver,
    clock: Callable[[], float] = time.time,
) -> list[Check]:
    """The checks the scanner runs on every inbound message; ``clock`` is the time the
    date rules compare the Date field with (the accuracy run gives each old corpus message
    its own arrival time)."""
    checks: list[Check] = [Gtube()]  # the end-to-end test string (spam/gtube.py)

    # Authentication results, reverse DNS, HELO, header and MIME heuristics (spam/
    # auth_symbols.py, spam/heuristics.py): no I/O beyond the cached hosted domains.
    hosted = hosted_domains(directory)
    hosted_set = _AsSet(hosted)

    local_names = _local_names(settings)

    def own_names() -> Iterable[str]:
        return (*local_names, *hosted())

    checks.append(AuthSymbols())
    checks.append(ClientSymbols(hostname=settings.server.hostname, own_names=own_names))
    checks.append(HeaderHeuristics(hosted_domains=hosted, clock=clock))
    checks.append(MimeHeuristics())
    if settings.bayes.enabled:
        # Bayes: BAYES_SPAM / BAYES_HAM from the statistics in the directory database.
        checks.append(
            BayesCheck(
                BayesStore(settings.directory_db),
                min_learned=settings.bayes.min_learned,
                curve=bayes_curve(settings),
                is_local=_account_of(directory),
            )
        )
    # Sender allow/block lists and never-filtered recipients (spam/lists.py).
    if settings.spam_lists.enabled:
        checks.append(
            ListSymbols(
                SpamLists(settings.directory_db),
                allow_score=settings.spam_lists.allow_score,
                block_score=settings.spam_lists.block_score,
                recipient_score=settings.spam_lists.recipient_allow_score,
                recipient_delimiter=settings.directory.recipient_delimiter,
            )
        )
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
                    hosted=hosted_set.contains,
                    default_score=dnsbl.default_score,
                    max_lookups=dnsbl.max_uri_lookups,
                    timeout_seconds=dnsbl.timeout_seconds,
                )
            )
    return checks


def bayes_curve(settings: Settings) -> ScoreCurve:
    b = settings.bayes
    return ScoreCurve(
        spam_above=b.spam_probability,
        spam_min_score=b.spam_min_score,
        spam_max_score=b.spam_max_score,
        ham_below=b.ham_probability,
        ham_score=b.ham_score,
    )


def _account_of(directory: Directory) -> Callable[[str], str | None]:
    """An envelope recipient -> its account's address, None when it has none here."""

    def account_of(address: str) -> str | None:
        account = directory.get_account(address)
        return account.address if account is not None else None

    return account_of


class _AsSet:
    """Membership in the cached hosted domains, the set made again only when the directory
    was read again (a link's domain is asked for every link of every message)."""

    def __init__(self, domains: Callable[[], tuple[str, ...]]) -> None:
        self._domains = domains
        self._source: tuple[str, ...] | None = None
        self._set: frozenset[str] = frozenset()

    def contains(self, name: str) -> bool:
        domains = self._domains()
        if domains is not self._source:
            self._source, self._set = domains, frozenset(domains)
        return name in self._set


def _local_names(settings: Settings) -> tuple[str, ...]:
    """The names ``[local] domains`` lists outright (its literal names and the keys of its
    tables: tables/domain_list.py), for the HELO checks."""
    from pochta.tables.domain_list import DomainList, local_domains

    names = local_domains(settings.local.domains)
    return tuple(names.listed_names() if isinstance(names, DomainList) else names)
