"""Address classes: where mail for an address goes (Postfix ADDRESS_CLASS_README).

:class:`Resolver` expands an address through the directory's aliases, virtual_alias_maps,
alias_maps and catch-alls into final destinations (:mod:`pochta.resolve.classes`), checks
recipients at RCPT time and answers the submission sender check. transport_maps values are
read by :func:`parse_transport`.
"""

from pochta.resolve.classes import (
    Destination,
    DiscardDest,
    FileDest,
    MailboxDest,
    PipeDest,
    Rejection,
    RelayDest,
    RemoteDest,
    ReportDest,
    Resolution,
    UnixDest,
)
from pochta.resolve.resolver import (
    ROLE_NAMES,
    DomainClass,
    QuotaCheck,
    Resolver,
    parse_address,
    split_addresses,
)
from pochta.resolve.transport import Transport, TransportError, parse_transport

__all__ = [
    "ROLE_NAMES",
    "Destination",
    "DiscardDest",
    "DomainClass",
    "FileDest",
    "MailboxDest",
    "PipeDest",
    "QuotaCheck",
    "Rejection",
    "RelayDest",
    "RemoteDest",
    "ReportDest",
    "Resolution",
    "Resolver",
    "Transport",
    "TransportError",
    "UnixDest",
    "parse_address",
    "parse_transport",
    "split_addresses",
]
