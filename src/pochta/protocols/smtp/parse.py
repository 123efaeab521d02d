"""Parsing SMTP command arguments: paths, addresses, ESMTP parameters, xtext, BDAT, AUTH.

Pure functions of text. Each either returns its result or raises ``ParseError``, whose
``reply`` is what the server sends; nothing else escapes for any input.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from pochta.protocols.smtp.replies import (
    AUTH_BAD_BASE64,
    BAD_RECIPIENT_SYNTAX,
    BAD_SENDER_SYNTAX,
    MESSAGE_TOO_BIG,
    NON_ASCII_ADDRESS,
    PARAM_SYNTAX,
    UNKNOWN_PARAMETER,
    Reply,
    ReplyError,
)

__all__ = [
    "MAX_PATH_OCTETS",
    "ParseError",
    "bdat_chunk_size",
    "decode_base64",
    "parse_auth",
    "parse_bdat",
    "parse_helo",
    "parse_mail_from",
    "parse_rcpt_to",
    "split_command",
    "xtext_decode",
    "xtext_encode",
]

MAX_PATH_OCTETS = 256  # RFC 5321 §4.5.3.1.3, including the angle brackets
MAX_DOMAIN_OCTETS = 255  # RFC 5321 §4.5.3.1.2
MAX_ENVID_CHARS = 100  # RFC 3461 §4.4
MAX_ORCPT_CHARS = 500  # RFC 3461 §4.2
MAX_NUMBER_DIGITS = 20  # RFC 1870 §3: size-value ::= 1*20DIGIT (also our BDAT bound)


class ParseError(ReplyError):
    """The argument is refused; ``reply`` says how (501 syntax, 553, 555, 552...)."""


def split_command(line: str) -> tuple[str, str]:
    """``"mail FROM:<a@b>"`` -> ``("MAIL", "FROM:<a@b>")``. Verbs are case-insensitive
    (RFC 5321 §2.4)."""
    verb, _, arg = line.partition(" ")
    return verb.upper(), arg


# -- Addresses, RFC 5321 §4.1.2 with RFC 6531 §3.3 --

# atext = ALPHA / DIGIT / "!" / "#" / ... (RFC 5322 §3.2.3, used by RFC 5321 §4.1.2 Atom)
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
# RFC 6531 §3.3: UTF8-non-ascii (RFC 6532 §3.1), as code points; no surrogates.
_UTF8_NON_ASCII = "\u0080-\ud7ff\ue000-\U0010ffff"
# Dot-string = Atom *("." Atom)
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}{_UTF8_NON_ASCII}]+(?:\.[{_ATEXT}{_UTF8_NON_ASCII}]+)*")
# Quoted-string = DQUOTE *QcontentSMTP DQUOTE
# QcontentSMTP = qtextSMTP / quoted-pairSMTP; qtextSMTP = %d32-33 / %d35-91 / %d93-126;
# quoted-pairSMTP = %d92 %d32-126
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8_NON_ASCII}]|\\[\x20-\x7e])*"')
# sub-domain = Let-dig [Ldh-str]; Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
# (written so that every run of hyphens is followed by a Let-dig: no backtracking)
_SUB_DOMAIN = r"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
# Domain = sub-domain *("." sub-domain)
_DOMAIN = re.compile(rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*+")
# RFC 6531 §3.3: sub-domain =/ U-label (checked loosely: any non-ASCII character is a Let-dig)
_SUB_DOMAIN_UTF8 = rf"[A-Za-z0-9{_UTF8_NON_ASCII}]++(?:-++[A-Za-z0-9{_UTF8_NON_ASCII}]++)*+"
_DOMAIN_UTF8 = re.compile(rf"{_SUB_DOMAIN_UTF8}(?:\.{_SUB_DOMAIN_UTF8})*+")
# IPv4-address-literal = Snum 3("." Snum)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6_TAG = "ipv6:"  # IPv6-address-literal = "IPv6:" IPv6-addr (ABNF strings ignore case)


def _valid_domain(domain: str, *, utf8: bool) -> bool:
    if len(domain.encode("utf-8")) > MAX_DOMAIN_OCTETS:  # RFC 5321 §4.5.3.1.2
        return False
    return (_DOMAIN_UTF8 if utf8 else _DOMAIN).fullmatch(domain) is not None


def _valid_address_literal(literal: str) -> bool:
    # address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
    #                         General-address-literal ) "]"       (RFC 5321 §4.1.3)
    inner = literal[1:-1]
    if _IPV4.fullmatch(inner):
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            return False
        return True
    if inner[: len(_IPV6_TAG)].lower() == _IPV6_TAG:
        addr = inner[len(_IPV6_TAG) :]
        if "%" in addr:  # ipaddress accepts scope ids; RFC 5321 §4.1.3 has none
            return False
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            return False
        return True
    # Deviation from RFC 5321 §4.1.3: General-address-literal (a registered tag) is refused;
    # no tag besides IPv6 is registered and we could not deliver to one.
    return False


def _split_path(text: str) -> tuple[str, str] | None:
    """``"<a@b> SIZE=1"`` -> ``("a@b", " SIZE=1")``: the text inside the angle brackets and
    what follows the closing one (a ">" inside a quoted local part does not close)."""
    if not text.startswith("<"):
        return None
    quoted = escaped = False
    for i in range(1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ">":
            return text[1:i], text[i + 1 :]
    return None


def _parse_mailbox(inner: str, *, utf8: bool, bad: Reply, postmaster_ok: bool) -> str:
    """The inside of a Path: ``[ A-d-l ":" ] Mailbox`` (RFC 5321 §4.1.2); returns the
    Mailbox without the source route."""
    if len(f"<{inner}>".encode("utf-8", "surrogatepass")) > MAX_PATH_OCTETS:
        # RFC 5321 §4.5.3.1.3 (path ≤ 256 octets); the reply text is §4.5.3.1.10's.
        raise ParseError(Reply(501, bad.enhanced, "Path too long"))
    if not utf8 and not inner.isascii():
        raise ParseError(NON_ASCII_ADDRESS)  # RFC 6531 §3.5: non-ASCII needs SMTPUTF8
    mailbox = inner
    if inner.startswith("@"):
        # A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain. RFC 5321 §4.1.1.3 and
        # Appendix C: accept a source route and ignore it.
        route, colon, mailbox = inner.partition(":")
        if not colon:
            raise ParseError(bad)
        for at_domain in route.split(","):
            if not at_domain.startswith("@") or not _valid_domain(at_domain[1:], utf8=utf8):
                raise ParseError(bad)
    if postmaster_ok and mailbox.lower() == "postmaster":
        return mailbox  # RFC 5321 §4.1.1.3: "<Postmaster>" without a domain
    # Mailbox = Local-part "@" ( Domain / address-literal ); a domain has no "@".
    local, at, domain = mailbox.rpartition("@")
    if not at:
        raise ParseError(bad)
    # Local-part = Dot-string / Quoted-string
    dot_string, quoted = (_DOT_STRING_UTF8, _QUOTED_UTF8) if utf8 else (_DOT_STRING, _QUOTED)
    if not (dot_string.fullmatch(local) or quoted.fullmatch(local)):
        raise ParseError(bad)
    if domain.startswith("[") and domain.endswith("]"):
        if not _valid_address_literal(domain):
            raise ParseError(bad)
    elif not _valid_domain(domain, utf8=utf8):
        raise ParseError(bad)
    # Deviation from RFC 5321 §4.5.3.1.1 (local part ≤ 64 octets): not enforced, as §4.5.3.1
    # asks servers to avoid limits where they can and real addresses exceed it.
    return mailbox


# -- ESMTP parameters, RFC 5321 §4.1.2 --

# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds UTF8-non-ascii
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_VALUE_UTF8 = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8_NON_ASCII}]+")
_DIGITS = re.compile(r"[0-9]+")


def _parse_params(text: str, *, utf8: bool) -> dict[str, str | None]:
    # Mail-parameters = esmtp-param *(SP esmtp-param); esmtp-param = esmtp-keyword ["=" value]
    # Deviation from RFC 5321 §4.1.2: runs of spaces are accepted where one SP is required.
    params: dict[str, str | None] = {}
    value_re = _VALUE_UTF8 if utf8 else _VALUE
    for word in text.split(" "):
        if not word:
            continue
        keyword, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(keyword) or (eq and not value_re.fullmatch(value)):
            raise ParseError(PARAM_SYNTAX)
        keyword = keyword.upper()
        if keyword in params:
            raise ParseError(Reply(501, "5.5.4", f"Duplicate parameter {keyword}"))
        params[keyword] = value if eq else None
    return params


def _param_error(keyword: str, expected: str) -> ParseError:
    return ParseError(Reply(501, "5.5.4", f"Bad {keyword} parameter; syntax: {expected}"))


def _required_value(params: dict[str, str | None], keyword: str, expected: str) -> str:
    value = params[keyword]
    if value is None:
        raise _param_error(keyword, expected)
    return value


def _path_and_params(arg: str, verb: str, prefix: str, bad: Reply) -> tuple[str, str]:
    if arg[: len(prefix)].upper() != prefix:
        raise ParseError(Reply(501, "5.5.4", f"Syntax: {verb} {prefix}<address>"))
    # Deviation from RFC 5321 §4.1.1.2: spaces after the colon are accepted (Postfix does).
    split = _split_path(arg[len(prefix) :].lstrip(" "))
    if split is None:
        raise ParseError(bad)
    inner, rest = split
    if rest and not rest.startswith(" "):
        raise ParseError(bad)
    return inner, rest


def parse_mail_from(
    arg: str, *, max_message_bytes: int, dsn: bool
) -> tuple[str, dict[str, str | None]]:
    """``MAIL`` arguments: ``FROM:<reverse-path> [params]`` (RFC 5321 §4.1.1.2).

    Returns the address ("" for the null path ``<>``) and the checked parameters (see
    ``events.MailFrom``)."""
    inner, rest = _path_and_params(arg, "MAIL", "FROM:", BAD_SENDER_SYNTAX)
    keywords = {word.partition("=")[0].upper() for word in rest.split(" ")}
    smtputf8 = "SMTPUTF8" in keywords  # RFC 6531 §3.4
    params = _parse_params(rest, utf8=smtputf8)
    for keyword in params:
        if keyword == "SIZE":  # RFC 1870 §3: size-value ::= 1*20DIGIT
            value = _required_value(params, keyword, "SIZE=octets")
            if not _DIGITS.fullmatch(value) or len(value) > MAX_NUMBER_DIGITS:
                raise _param_error(keyword, "SIZE=octets")
            if max_message_bytes and int(value) > max_message_bytes:
                raise ParseError(MESSAGE_TOO_BIG)  # RFC 1870 §6.1: 552 at MAIL time
            params[keyword] = str(int(value))
        elif keyword == "BODY":  # RFC 6152 §2 (7BIT, 8BITMIME), RFC 3030 §3 (BINARYMIME)
            value = _required_value(params, keyword, "BODY=7BIT|8BITMIME|BINARYMIME").upper()
            if value not in ("7BIT", "8BITMIME", "BINARYMIME"):
                raise _param_error(keyword, "BODY=7BIT|8BITMIME|BINARYMIME")
            params[keyword] = value
        elif keyword == "SMTPUTF8":  # RFC 6531 §3.4: no value
            if params[keyword] is not None:
                raise _param_error(keyword, "SMTPUTF8 (no value)")
        elif keyword == "RET" and dsn:  # RFC 3461 §4.3: ret-value = "FULL" / "HDRS"
            value = _required_value(params, keyword, "RET=FULL|HDRS").upper()
            if value not in ("FULL", "HDRS"):
                raise _param_error(keyword, "RET=FULL|HDRS")
            params[keyword] = value
        elif keyword == "ENVID" and dsn:  # RFC 3461 §4.4: xtext, at most 100 characters
            value = _required_value(params, keyword, "ENVID=xtext")
            if len(value) > MAX_ENVID_CHARS:
                raise _param_error(keyword, f"ENVID=xtext of at most {MAX_ENVID_CHARS} chars")
            params[keyword] = xtext_decode(value)
        elif keyword == "AUTH":  # RFC 4954 §5: AUTH=<> or AUTH=xtext; accepted and ignored
            value = _required_value(params, keyword, "AUTH=<>|xtext")
            if value != "<>":
                xtext_decode(value)
        else:
            raise ParseError(UNKNOWN_PARAMETER)  # RFC 5321 §4.1.1.11: 555
    if inner == "":
        return "", params  # Reverse-path = Path / "<>"
    address = _parse_mailbox(inner, utf8=smtputf8, bad=BAD_SENDER_SYNTAX, postmaster_ok=False)
    return address, params


def parse_rcpt_to(arg: str, *, smtputf8: bool, dsn: bool) -> tuple[str, dict[str, str | None]]:
    """``RCPT`` arguments: ``TO:<forward-path> [params]`` (RFC 5321 §4.1.1.3). ``smtputf8``
    is whether the transaction's MAIL carried SMTPUTF8 (RFC 6531 §3.4)."""
    inner, rest = _path_and_params(arg, "RCPT", "TO:", BAD_RECIPIENT_SYNTAX)
    params = _parse_params(rest, utf8=smtputf8)
    for keyword in params:
        if keyword == "NOTIFY" and dsn:
            # RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )
            expected = "NOTIFY=NEVER|SUCCESS,FAILURE,DELAY"
            items = _required_value(params, keyword, expected).upper().split(",")
            if items != ["NEVER"] and (
                len(set(items)) != len(items) or not set(items) <= {"SUCCESS", "FAILURE", "DELAY"}
            ):
                raise _param_error(keyword, expected)
            params[keyword] = ",".join(items)
        elif keyword == "ORCPT" and dsn:
            # RFC 3461 §4.2: orcpt-parameter = "ORCPT=" addr-type ";" xtext; addr-type = atom;
            # at most 500 characters.
            value = _required_value(params, keyword, "ORCPT=addr-type;xtext")
            addr_type, semi, encoded = value.partition(";")
            if not semi or not _ATOM.fullmatch(addr_type) or len(value) > MAX_ORCPT_CHARS:
                raise _param_error(keyword, "ORCPT=addr-type;xtext")
            params[keyword] = f"{addr_type};{xtext_decode(encoded)}"
        else:
            raise ParseError(UNKNOWN_PARAMETER)  # RFC 5321 §4.1.1.11: 555
    if inner == "":
        raise ParseError(BAD_RECIPIENT_SYNTAX)  # RFC 5321 §4.1.1.3: no null forward-path
    address = _parse_mailbox(inner, utf8=smtputf8, bad=BAD_RECIPIENT_SYNTAX, postmaster_ok=True)
    return address, params


_ATOM = re.compile(rf"[{_ATEXT}]+")


# -- xtext, RFC 3461 §4 --


def xtext_decode(text: str) -> str:
    """RFC 3461 §4: xtext = *( xchar / hexchar ); xchar = "!".."~" except "+" and "=";
    hexchar = "+" 2 upper-case hex digits. The octets are read as UTF-8.

    Deviation: lower-case hex digits are accepted too (robustness; RFC 1123 §1.2.2)."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "+":
            hexdigits = text[i + 1 : i + 3]
            if len(hexdigits) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in hexdigits):
                raise ParseError(Reply(501, "5.5.4", "Bad xtext: '+' needs two hex digits"))
            out.append(int(hexdigits, 16))
            i += 3
        elif "!" <= ch <= "~" and ch != "=":
            out.append(ord(ch))
            i += 1
        else:
            raise ParseError(Reply(501, "5.5.4", "Bad character in xtext"))
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(Reply(501, "5.5.4", "xtext does not decode to UTF-8")) from None


def xtext_encode(text: str) -> str:
    """The inverse of ``xtext_decode`` (RFC 3461 §4), with upper-case hex digits."""
    return "".join(
        chr(b) if 0x21 <= b <= 0x7E and b not in (0x2B, 0x3D) else f"+{b:02X}"
        for b in text.encode("utf-8")
    )


# -- Other commands --

_HELO_NAME = re.compile(r"[\x21-\x7e]+")


def parse_helo(arg: str, verb: str) -> str:
    """``EHLO``/``HELO``/``LHLO`` argument: ``Domain / address-literal`` (RFC 5321
    §4.1.1.1). Checked loosely (one word of printable ASCII): the glue judges the name."""
    name = arg.strip(" ")
    if not _HELO_NAME.fullmatch(name):
        raise ParseError(Reply(501, "5.5.4", f"Syntax: {verb} hostname"))
    return name


def bdat_chunk_size(arg: str) -> int | None:
    """The octet count of a BDAT command, or None when there is none to trust. A known count
    lets the server skip the chunk even when the rest of the command is bad (RFC 3030 §2)."""
    first = arg.split(" ", 1)[0]
    if not _DIGITS.fullmatch(first) or len(first) > MAX_NUMBER_DIGITS:
        return None
    return int(first)


def parse_bdat(arg: str) -> tuple[int, bool]:
    """RFC 3030 §2: ``bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CR LF``;
    ``chunk-size ::= 1*DIGIT``; ``end-marker ::= "LAST"``. Returns (size, last)."""
    words = arg.split(" ")
    size = bdat_chunk_size(arg)
    if size is None or len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
        raise ParseError(Reply(501, "5.5.4", "Syntax: BDAT octets [LAST]"))
    return size, len(words) == 2


# RFC 4422 §3.1: sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / "-" / "_"
# (SMTP compares mechanism names without regard to case, RFC 4954 §4).
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,20}")


def parse_auth(arg: str) -> tuple[str, str | None]:
    """``AUTH`` arguments: ``mechanism [SP initial-response]`` (RFC 4954 §4). Returns the
    upper-cased mechanism and the initial response as sent (still base64), or None."""
    words = arg.split(" ")
    if not _MECHANISM.fullmatch(words[0]) or len(words) > 2:
        raise ParseError(Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
    return words[0].upper(), (words[1] if len(words) == 2 else None)


def decode_base64(text: str) -> bytes:
    """A client's base64 response (RFC 4954 §4); the empty line is the empty response. (The
    "=" of an empty *initial* response is the caller's business.)"""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError(AUTH_BAD_BASE64) from None
