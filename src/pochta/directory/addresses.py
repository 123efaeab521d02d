"""Parsing and normalising mail addresses and domain names for directory keys.

Lookups are case-insensitive on the domain (RFC 5321 §2.4: domain names are case-insensitive)
and, by policy like Postfix and Dovecot, on the local part too, although RFC 5321 §2.4 allows a
server to treat local parts as case-sensitive.
"""

from __future__ import annotations

import re
import unicodedata


class AddressError(ValueError):
    """An address or domain that cannot be used; the message says what is wrong."""


# RFC 1035 §2.3.1 / RFC 1123 §2.1: letters, digits, hyphen; labels 1-63 octets; name <= 253.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5322 §3.2.3 atext, plus "." between atoms (dot-atom); quoted local parts are refused for
# accounts (no mainstream server creates them), UTF-8 allowed per RFC 6531 §3.3.
_LOCAL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+)*$"
)


def normalize_domain(domain: str) -> str:
    """Lower-case A-label form of a domain name, or AddressError saying why not."""
    d = domain.strip().rstrip(".").lower()
    if not d:
        raise AddressError("empty domain name")
    try:
        ascii_form = d.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise AddressError(f"{domain!r} is not a valid domain name ({exc})") from None
    if len(ascii_form) > 253:
        raise AddressError(f"{domain!r} is longer than 253 characters")
    labels = ascii_form.split(".")
    if len(labels) < 2:
        raise AddressError(f"{domain!r} is not a fully qualified domain name; use e.g. example.org")
    for label in labels:
        if not _LABEL.match(label):
            raise AddressError(
                f"{domain!r} is not a valid domain name; labels are letters, digits and '-'"
            )
    return ascii_form


def _unbracket(address: str) -> str:
    a = address.strip()
    return a[1:-1] if a.startswith("<") and a.endswith(">") else a


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of "local@domain", normalised; AddressError when malformed."""
    local, at, domain = _unbracket(address).rpartition("@")
    if not at or not local:
        raise AddressError(f"{address!r} is not an address; use local@domain")
    if len(local.encode()) > 64:
        # RFC 5321 §4.5.3.1.1: local part at most 64 octets.
        raise AddressError(f"{address!r}: the local part is longer than 64 octets")
    if not _LOCAL.match(local):
        raise AddressError(
            f"{address!r}: the local part has characters that are not allowed; use "
            f"{_ADDRESS_LOCAL_CHARACTERS}"
        )
    return local.lower(), normalize_domain(domain)


# RFC 5322 §3.2.3 dot-atom, as _LOCAL allows it.
_ADDRESS_LOCAL_CHARACTERS = (
    "letters, digits, non-ASCII letters and ! # $ % & ' * + - / = ? ^ _ ` { | } ~, "
    "with single dots between them (not first or last)"
)
# What a mailbox's local part may hold: it names the directory MAIL_DIR/DOMAIN/LOCALPART
# (store/maildir.py), so on top of the address syntax no "/" (a path separator; RFC 5322
# §3.2.3 atext allows it) and no character a file name cannot carry or shows wrongly.
MAILBOX_LOCAL_CHARACTERS = (
    "letters, digits, non-ASCII letters and ! # $ % & ' * + - = ? ^ _ ` { | } ~, "
    "with single dots between them (not first or last)"
)
# Unicode categories refused in a mailbox name: controls (C0, DEL, C1), surrogates (not
# UTF-8, RFC 3629 §3), private use, spaces and line/paragraph separators.
_NOT_IN_MAILBOX_NAMES = frozenset({"Cc", "Cs", "Co", "Zs", "Zl", "Zp"})


def check_mailbox_address(address: str) -> str:
    """The canonical "local@domain" of an account whose mailbox directory
    MAIL_DIR/DOMAIN/LOCALPART can exist, or AddressError naming the allowed characters.

    Every account a directory backend adds goes through here: the local part must be one
    path component inside the domain's directory (no "/", not "." or "..", no leading dot)
    and a readable file name (no control, space or separator characters)."""
    local = _unbracket(address).rpartition("@")[0]
    bad = [ch for ch in local if ch == "/" or unicodedata.category(ch) in _NOT_IN_MAILBOX_NAMES]
    # _LOCAL (dot-atom) also keeps out "", ".", "..", a leading dot and "\\".
    if local and (bad or not _LOCAL.match(local)):
        shown = f" (not {', '.join(sorted({repr(ch) for ch in bad}))})" if bad else ""
        raise AddressError(
            f"{address!r} cannot be a mailbox: its local part names the mailbox directory "
            f"and may only hold {MAILBOX_LOCAL_CHARACTERS}{shown}"
        )
    local, domain = split_address(address)  # the rest: "@", lengths, the domain
    return f"{local}@{domain}"


def normalize_address(address: str) -> str:
    """Canonical lower-case "local@domain" form."""
    local, domain = split_address(address)
    return f"{local}@{domain}"


def strip_extension(local: str, delimiter: str) -> str:
    """Remove the "+tag" extension of a local part (Postfix recipient_delimiter).

    Each character of ``delimiter`` is a delimiter (Postfix ≥ 2.11 semantics); the local part
    is cut at the first one that is not its first character.
    """
    if not delimiter:
        return local
    cut = len(local)
    for ch in delimiter:
        i = local.find(ch, 1)
        if i != -1:
            cut = min(cut, i)
    return local[:cut]
