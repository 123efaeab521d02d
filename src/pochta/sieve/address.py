"""Addresses as the ``address`` and ``envelope`` tests see them (RFC 5228 §2.7.4, §5.1) and
the address parts :all, :localpart, :domain (RFC 5228) and :user, :detail (RFC 5233)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pochta.mime.addresses import parse_address_list
from pochta.sieve.registry import REGISTRY, AddressPart, Capability, ParsedAddress
from pochta.tables.postfix_text import split_extension

if TYPE_CHECKING:
    from pochta.sieve.interpreter import Run

__all__ = ["header_addresses", "parse_one", "split_detail"]

# RFC 5321 §4.1.2 and §4.1.3: Path = "<" [ A-d-l ":" ] Mailbox ">"
# Lenient as Pigeonhole is: "_" and a leading or trailing "-" in host names, dots anywhere
# in a local part (seen in the wild, e.g. Japanese mobile carriers), and a local part alone
# (<MAILER-DAEMON>).
_SUB_DOMAIN = r"[A-Za-z0-9_\-\x80-\U0010ffff]+"
_DOMAIN = rf"(?:{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*|\[[^\[\]\\\s]+\])"
_LOCAL = r'(?:[A-Za-z0-9!#$%&\'*+\-/=?^_`{|}~.\x80-\U0010ffff]+|"(?:[^"\\\r\n]|\\.)*")'
_ROUTE = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"
_MAILBOX = rf"(?:{_ROUTE})?(?P<local>{_LOCAL})(?:@(?P<domain>{_DOMAIN}))?"
_PATH = re.compile(rf"{_MAILBOX}\Z")


def header_addresses(value: str) -> list[ParsedAddress]:
    """The mailboxes of an address-list header value; a group's members count, its name
    does not (RFC 5228 §2.7.4). Entries that do not parse keep their raw text in ``full``."""
    if not value.strip():
        return [ParsedAddress("", "", "", valid=False)]  # an empty field: :all sees ""
    entries = [a for a in parse_address_list(value) if not (a.is_group_start or a.is_group_end)]
    pieces = [p.strip() for p in value.split(",")]
    out: list[ParsedAddress] = []
    for n, a in enumerate(entries):
        if a.invalid or not a.mailbox or not a.domain:
            # RFC 5228 §2.7.4: not matched by :localpart or :domain; :all sees the text
            raw = pieces[n] if len(pieces) == len(entries) else value.strip()
            out.append(ParsedAddress(raw, "", "", valid=False))
            continue
        out.append(ParsedAddress(f"{a.mailbox}@{a.domain}", a.mailbox, a.domain))
    return out


def parse_one(path: str) -> ParsedAddress | None:
    """An envelope address (RFC 5228 §5.4) read as an RFC 5321 §4.1.2 path, its angle
    brackets optional and a source route ignored; None when it is not one."""
    path = path.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    m = _PATH.match(path)
    if m is None:
        return None
    local, domain = m.group("local"), m.group("domain")
    full = f"{local}@{domain}" if domain else local
    if local.startswith('"'):
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return ParsedAddress(full, local, domain or "")


def _all(_run: Run, a: ParsedAddress) -> str | None:
    return a.full


def _localpart(_run: Run, a: ParsedAddress) -> str | None:
    return a.local if a.valid else None


def _domain(_run: Run, a: ParsedAddress) -> str | None:
    return a.domain if a.valid else None


def split_detail(local: str, delimiters: str) -> tuple[str, str | None]:
    """A local part as :user and :detail (RFC 5233 §4) see it: ``(user, detail)``, detail
    None when there is none.

    RFC 5233 §4 leaves the separator to the implementation. Ours is the MTA's own split
    (``directory.recipient_delimiter``, Postfix's split_addr(3): at the first of any of the
    ``delimiters`` characters), so a script sees the same detail that routing and
    ``delivery.save_to_detail_mailbox`` use: "" means no subaddressing (``:detail`` never
    matches, ``:user`` is the whole local part), and Postfix's exceptions hold (postmaster,
    mailer-daemon, double-bounce; ``owner-*``/``*-request`` when "-" is a delimiter; no
    split leaving an empty user, so "+frop" has no detail).
    """
    user, extension = split_extension(local, delimiters)
    return user, (extension[1:] if extension is not None else None)


def _user(run: Run, a: ParsedAddress) -> str | None:
    # RFC 5233 §4: the local part up to the separator (all of it when there is none)
    return split_detail(a.local, run.context.recipient_delimiter)[0] if a.valid else None


def _detail(run: Run, a: ParsedAddress) -> str | None:
    # RFC 5233 §4: after the separator; no separator means no detail (the test fails)
    return split_detail(a.local, run.context.recipient_delimiter)[1] if a.valid else None


REGISTRY.add_capability(Capability("subaddress"))
for _part in (
    AddressPart(name="all", capability="", extract=_all),
    AddressPart(name="localpart", capability="", extract=_localpart),
    AddressPart(name="domain", capability="", extract=_domain),
    AddressPart(name="user", capability="subaddress", extract=_user),
    AddressPart(name="detail", capability="subaddress", extract=_detail),
):
    REGISTRY.add_address_part(_part)
