"""Addresses as the ``address`` and ``envelope`` tests see them (RFC 5228 §2.7.4, §5.1) and
the address parts :all, :localpart, :domain (RFC 5228) and :user, :detail (RFC 5233)."""

from __future__ import annotations

from pochta.mime.addresses import parse_address_list
from pochta.sieve.registry import REGISTRY, AddressPart, Capability, ParsedAddress

__all__ = ["DETAIL_SEPARATOR", "header_addresses", "parse_one"]

DETAIL_SEPARATOR = "+"  # RFC 5233 §4: the separator is the implementation's; ours is "+"


def header_addresses(value: str) -> list[ParsedAddress]:
    """The mailboxes of an address-list header value; a group's members count, its name
    does not (RFC 5228 §2.7.4). Entries that do not parse keep their raw text in ``full``."""
    out: list[ParsedAddress] = []
    for a in parse_address_list(value):
        if a.is_group_start or a.is_group_end:
            continue
        if a.invalid or a.mailbox is None or a.domain is None:
            raw = value.strip()
            out.append(ParsedAddress(raw, "", ""))
            continue
        full = f"{a.mailbox}@{a.domain}" if a.domain else a.mailbox
        out.append(ParsedAddress(full, a.mailbox, a.domain))
    return out


def parse_one(address: str) -> ParsedAddress:
    """An envelope address (no angle brackets): RFC 5228 §5.4."""
    address = address.strip().removeprefix("<").removesuffix(">")
    local, at, domain = address.rpartition("@")
    if not at:
        return ParsedAddress(address, address, "")
    return ParsedAddress(address, local, domain)


def _all(a: ParsedAddress) -> str | None:
    return a.full


def _localpart(a: ParsedAddress) -> str | None:
    return a.local if a.local or not a.full else a.full


def _domain(a: ParsedAddress) -> str | None:
    return a.domain


def _user(a: ParsedAddress) -> str | None:
    # RFC 5233 §4: the local part up to the separator (all of it when there is none)
    return _localpart(a).partition(DETAIL_SEPARATOR)[0]  # type: ignore[union-attr]


def _detail(a: ParsedAddress) -> str | None:
    # RFC 5233 §4: after the separator; no separator means no detail (the test fails)
    _, sep, detail = (_localpart(a) or "").partition(DETAIL_SEPARATOR)
    return detail if sep else None


REGISTRY.add_capability(Capability("subaddress"))
for _part in (
    AddressPart(name="all", capability="", extract=_all),
    AddressPart(name="localpart", capability="", extract=_localpart),
    AddressPart(name="domain", capability="", extract=_domain),
    AddressPart(name="user", capability="subaddress", extract=_user),
    AddressPart(name="detail", capability="subaddress", extract=_detail),
):
    REGISTRY.add_address_part(_part)
