"""The TLS policy of outbound mail from MTA-STS, DANE and the configuration.

``StsDanePolicy`` is the ``TLSPolicySource`` the smtp agent asks (see ``tls_policy.py``):

- ``domain_policy(domain)``, once per recipient domain, applies MTA-STS (RFC 8461) when
  ``[delivery] mta_sts`` is on: ``enforce`` makes the floor "verify" and restricts the MX
  hosts to the policy's patterns (§5); ``testing`` keeps the configured level but hands the
  patterns on with mode "testing", so that failures are logged and not enforced (§5); no
  policy or mode ``none`` leaves the configured level.
- ``host_tls(domain, host, port, floor)``, once per MX host, applies DANE (RFC 7672) when
  ``[delivery] tls_security_level = "dane"`` and ``[dns] dnssec_validating`` are set: usable
  validated TLSA records make the level "dane" with those records, whatever MTA-STS says
  (RFC 8461 §2: DANE takes precedence); a validated RRset with only unusable records makes
  TLS mandatory without authentication (RFC 7672 §2.2); anything else leaves the floor.

Configured "dane" without a validating resolver cannot authenticate anything: it means "may"
(as in ``ConfiguredPolicy``), and a warning says so at start.

A DNS failure during the TLSA lookup of a secure host raises ``DaneLookupError`` from
``host_tls``: RFC 7672 §2.2 says not to deliver to that host then (the agent tries the next
MX host or defers). It is an ``OSError`` so that code treating connection errors as "try the
next host" does the right thing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import dns.asyncresolver

from pochta.config.settings import Settings
from pochta.deliver.dane import TlsaLookup, dnssec_resolver, lookup_tlsa, match_tlsa
from pochta.deliver.mta_sts import StsResolver
from pochta.deliver.tls_policy import LEVEL_ORDER, DomainPolicy, HostTLS, Level, TLSARecord
from pochta.logs import get_logger

log = get_logger("deliver")

MTA_STS_CACHE_DIR = "mta-sts"  # under the data directory
_MAX_REMEMBERED_HOSTS = 10_000

DaneCheck = Callable[[list[bytes], Sequence[TLSARecord]], bool]


class DaneLookupError(OSError):
    """The TLSA records of a DNSSEC-secure MX host could not be looked up (RFC 7672 §2.2):
    do not deliver to that host now."""


class StsDanePolicy:
    """MTA-STS and DANE on top of the configured TLS level.

    ``resolver``: the async resolver of ``[dns]`` (for DANE it must be the trusted validating
    resolver of ``dnssec_validating``). ``sts``: the MTA-STS resolver; by default one with its
    cache in ``DATA_DIR/mta-sts`` and ``[delivery] tls_ca_file`` trusted beside the system CAs.
    """

    def __init__(
        self,
        settings: Settings,
        resolver: dns.asyncresolver.Resolver,
        *,
        sts: StsResolver | None = None,
    ) -> None:
        self.settings = settings
        configured: Level = settings.delivery.tls_security_level
        self.dane = configured == "dane" and settings.dns.dnssec_validating
        # Below DANE, and where DANE does not apply, "dane" means "may" (RFC 7672 §2.2).
        self.level: Level = "may" if configured == "dane" else configured
        if configured == "dane" and not settings.dns.dnssec_validating:
            log.warning(
                "dane_disabled",
                reason="tls_security_level is dane but [dns] dnssec_validating is false: "
                "TLSA records cannot be trusted, using may",
            )
        self._dnssec = dnssec_resolver(resolver) if self.dane else None
        self.mta_sts = settings.delivery.mta_sts
        if sts is None and self.mta_sts:
            ca_file = settings.delivery.tls_ca_file
            sts = StsResolver(
                resolver,
                default_cache_dir(settings),
                ca_file=settings.path(ca_file) if ca_file else None,
            )
        self.sts = sts
        # The reference identifiers of the last TLSA lookup per host (for DANE-TA names).
        self._names: OrderedDict[str, tuple[str, ...]] = OrderedDict()

    async def domain_policy(self, domain: str) -> DomainPolicy:
        if not self.mta_sts or self.sts is None:
            return DomainPolicy(self.level)
        policy = await self.sts.policy(domain)
        if policy is None:
            return DomainPolicy(self.level)
        if policy.mode == "enforce":
            # RFC 8461 §5: deliver only to matching MX hosts, over TLS with a certificate
            # valid for the host name (§4.2): that is the "verify" level.
            return DomainPolicy("verify", "mta-sts", policy.mx, "enforce")
        if policy.mode == "testing":
            # RFC 8461 §5: in testing mode, failures are reported (logged) but delivery
            # proceeds as without a policy.
            return DomainPolicy(self.level, "mta-sts", policy.mx, "testing")
        # RFC 8461 §5: mode "none" means the domain has withdrawn its policy.
        return DomainPolicy(self.level, "config", (), "none")

    async def host_tls(self, domain: str, host: str, port: int, floor: DomainPolicy) -> HostTLS:
        if floor.mode == "testing" and not floor.mx_allowed(host):
            # RFC 8461 §5: testing mode: report what enforce mode would have refused.
            log.warning(
                "mta_sts_testing_failure",
                domain=domain,
                host=host,
                reason="MX host not in the policy's mx patterns",
            )
        if self._dnssec is None:
            return HostTLS(floor.level, floor.source)
        lookup = await lookup_tlsa(self._dnssec, host, port)
        return self._apply(domain, host, port, floor, lookup)

    def _apply(
        self, domain: str, host: str, port: int, floor: DomainPolicy, lookup: TlsaLookup
    ) -> HostTLS:
        if lookup.status == "usable":
            self._remember(host, lookup.names)
            log.info(
                "dane_usable",
                domain=domain,
                host=host,
                port=port,
                base_domain=lookup.base_domain,
                records=len(lookup.records),
            )
            # RFC 8461 §2: where DANE applies it takes precedence over MTA-STS.
            return HostTLS("dane", "dane", lookup.records)
        if lookup.status == "error":
            log.warning("dane_lookup_failed", domain=domain, host=host, error=lookup.detail)
            raise DaneLookupError(f"DANE: {lookup.detail}")
        if lookup.status == "unusable":
            log.info("dane_unusable", domain=domain, host=host, detail=lookup.detail)
            # RFC 7672 §2.2: TLS is mandatory, authentication is not.
            if LEVEL_ORDER[floor.level] < LEVEL_ORDER["encrypt"]:
                return HostTLS("encrypt", "dane-unusable")
            return HostTLS(floor.level, floor.source)
        log.debug("dane_not_applicable", domain=domain, host=host, status=lookup.status)
        return HostTLS(floor.level, floor.source)

    def reference_names(self, host: str) -> tuple[str, ...]:
        """The names a DANE-TA certificate of ``host`` may carry: the MX host name and the
        TLSA base domain found by the last lookup (RFC 7672 §3.2.3)."""
        name = host.lower().rstrip(".")
        return tuple(dict.fromkeys((name, *self._names.get(name, ()))))

    def dane_check(self, host: str) -> DaneCheck:
        """The ``dane_check(chain_der, tlsa)`` callback for a connection to ``host``; ask
        after ``host_tls`` for that host, which found the names to accept."""
        names = self.reference_names(host)

        def check(chain_der: list[bytes], tlsa: Sequence[TLSARecord]) -> bool:
            return match_tlsa(chain_der, tlsa, names)

        return check

    def _remember(self, host: str, names: tuple[str, ...]) -> None:
        key = host.lower().rstrip(".")
        self._names[key] = names
        self._names.move_to_end(key)
        while len(self._names) > _MAX_REMEMBERED_HOSTS:
            self._names.popitem(last=False)


def default_cache_dir(settings: Settings) -> Path:
    """Where the MTA-STS policies are kept: ``DATA_DIR/mta-sts``."""
    return settings.path(MTA_STS_CACHE_DIR)
