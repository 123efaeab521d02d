"""Header fields of a stored message, decoded for SEARCH and SORT (RFC 9051 §6.4.4: header
keys match the field's text after RFC 2047 decoding, as Dovecot does)."""

from __future__ import annotations

import email.errors
import email.header
import re

from pochta.mime.addresses import format_address_list, parse_address_list

# RFC 5322 §2.2: field-name ":" field-body; the body of a folded field spans lines.
_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:(.*)$", re.DOTALL)
MAX_HEADER_BYTES = 1 << 20
_NOT_CHARSETS = frozenset(
    {
        "idna",
        "punycode",
        "unicode_escape",
        "raw_unicode_escape",
        "undefined",
        "rot_13",
        "rot13",
        "base64",
        "hex",
        "zlib",
        "bz2",
        "uu",
        "quopri",
    }
)


def header_block(raw: bytes) -> bytes:
    """The header of a message: everything before the first empty line."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    block = raw if end < 0 else raw[: end + 2]
    return block[:MAX_HEADER_BYTES]


def raw_fields(raw: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded raw value) for each field of the header, in order."""
    out: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n(?![ \t])", header_block(raw)):
        m = _FIELD.match(line)
        if m is None:
            continue
        value = re.sub(rb"\r?\n[ \t]", b" ", m.group(2)).strip()
        out.append((m.group(1).decode("ascii").lower(), value))
    return out


def decode_value(value: bytes) -> str:
    """RFC 2047 encoded words decoded; 8-bit octets read as UTF-8 (RFC 6532), else Latin-1."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    if "=?" not in text:
        return text
    try:
        parts = email.header.decode_header(text)
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return text
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            # Python-only codecs (idna, unicode_escape, ...) are no mail charsets.
            if charset and charset.lower().replace("-", "_") in _NOT_CHARSETS:
                raise LookupError(charset)
            out.append(chunk.decode(charset or "ascii", "replace"))
        except (LookupError, UnicodeError):
            out.append(chunk.decode("latin-1"))
    return "".join(out)


# The fields of the SEARCH keys FROM, TO, CC and BCC (RFC 9051 §6.4.4).
ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc"})


def normalized_addresses(value: bytes) -> str:
    """An address field as SEARCH FROM/TO/CC/BCC sees it, after Dovecot: the address list
    parsed (RFC 5322 §3.4) and written back in one form, then RFC 2047 decoded. Comments
    and quoting vanish, a comment after an address becomes its display name, and groups
    keep their names: ``groupname: <u1@example.org>, <u2@example.org>;``."""
    text = value.decode("utf-8", "surrogateescape")
    written = format_address_list(parse_address_list(text))
    return decode_value(written.encode("utf-8", "surrogateescape"))


def header_fields(raw: bytes) -> dict[str, list[str]]:
    """{lower-case name: [texts]}: the texts a SEARCH header key matches, for each field.

    Every field gives its decoded value. From, To, Cc and Bcc give their normalized address
    list too (`normalized_addresses`): SEARCH FROM/TO/CC/BCC match against it in Dovecot.
    Deviation from Dovecot: the search key does not say whether the client wrote FROM or
    HEADER FROM, so both match either text.
    """
    fields: dict[str, list[str]] = {}
    for name, value in raw_fields(raw):
        texts = fields.setdefault(name, [])
        texts.append(decode_value(value))
        if name in ADDRESS_FIELDS:
            texts.append(normalized_addresses(value))
    return fields
