"""What TLS outbound delivery must have, per recipient domain and per MX host.

The smtp agent (``remote.py``) asks a ``TLSPolicySource`` twice per destination:

1. ``domain_policy(domain)`` once per recipient domain before it connects: the MX hosts an
   MTA-STS policy allows (RFC 8461 §4.1), and the floor that policy or the configuration sets.
2. ``host_tls(domain, host, port, floor)`` for each MX host it is about to try: DANE TLSA
   records (RFC 7672 §2.2) make TLS mandatory and say which certificates are right.

Levels follow Postfix's smtp_tls_security_level: ``none`` (never STARTTLS), ``may``
(STARTTLS when offered, any certificate, fall back to plain text on failure), ``encrypt``
(TLS required, any certificate), ``verify`` (TLS required, a certificate that chains to a
trusted CA and names the MX host), ``dane`` (TLS required, the certificate matches a TLSA
record; RFC 7672 §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Level = Literal["none", "may", "encrypt", "verify", "dane"]

# Stronger levels sort higher; "dane" and "verify" both authenticate the peer.
LEVEL_ORDER: dict[Level, int] = {"none": 0, "may": 1, "encrypt": 2, "verify": 3, "dane": 3}


@dataclass(frozen=True, slots=True)
class TLSARecord:
    """One TLSA record (RFC 6698 §2.1): usage 2 (DANE-TA) or 3 (DANE-EE), selector 0 (full
    certificate) or 1 (SubjectPublicKeyInfo), matching type 0 (exact), 1 (SHA-256) or 2
    (SHA-512)."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    """The policy of one recipient domain.

    ``mx_patterns``: the MTA-STS ``mx`` lines (``mail.example.org``, ``*.example.org``); when
    not empty, only matching MX hosts may be used in ``enforce`` mode (RFC 8461 §4.1).
    ``level``: the floor for every host of the domain. ``source`` names where it comes from
    for the logs ("config", "mta-sts", "requiretls"); ``mode`` is the MTA-STS mode when a
    policy was found ("enforce", "testing", "none").
    """

    level: Level
    source: str = "config"
    mx_patterns: tuple[str, ...] = ()
    mode: str = ""

    def mx_allowed(self, host: str) -> bool:
        """RFC 8461 §4.1: a pattern ``*.example.org`` matches one leftmost label."""
        if not self.mx_patterns:
            return True
        name = host.lower().rstrip(".")
        for pattern in self.mx_patterns:
            pat = pattern.lower().rstrip(".")
            if pat.startswith("*."):
                head, _, rest = name.partition(".")
                if head and rest == pat[2:]:
                    return True
            elif name == pat:
                return True
        return False


@dataclass(frozen=True, slots=True)
class HostTLS:
    """What a connection to one host needs. ``tlsa`` is not empty exactly when ``level`` is
    "dane" (usable TLSA records were found and validated)."""

    level: Level
    source: str = "config"
    tlsa: tuple[TLSARecord, ...] = field(default=())


class TLSPolicySource(Protocol):
    async def domain_policy(self, domain: str) -> DomainPolicy: ...

    async def host_tls(self, domain: str, host: str, port: int, floor: DomainPolicy) -> HostTLS: ...


class ConfiguredPolicy:
    """The policy of the configuration alone (no MTA-STS, no DANE lookups)."""

    def __init__(self, level: Level) -> None:
        # "dane" without lookups cannot authenticate anything: it means "may" here.
        self.level: Level = "may" if level == "dane" else level

    async def domain_policy(self, domain: str) -> DomainPolicy:
        return DomainPolicy(self.level)

    async def host_tls(self, domain: str, host: str, port: int, floor: DomainPolicy) -> HostTLS:
        return HostTLS(floor.level, floor.source)
