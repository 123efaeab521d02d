"""Mail client set-up documents, as pure functions: settings in, bytes out.

- Thunderbird autoconfig, the "clientConfig" format version 1.1
  (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).
- Microsoft autodiscover, the "POX" (plain old XML) request and response schemas
  (MS-OXDSCLI §2.2.3 request, §2.2.4 response; "outlook/responseschema/2006a").
- The MTA-STS policy file (RFC 8461 §3.2).

XML is built with ``xml.etree.ElementTree`` and read with expat that refuses any DOCTYPE, so
user input is always escaped and entity tricks (billion laughs) are impossible.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from pochta.config.listen import parse_listen
from pochta.config.settings import ListenSettings

AUTODISCOVER_REQUEST_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
)
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK_NS = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

# RFC 8461 §3.2: max_age in seconds, at most 31557600; one week as most providers publish.
MTA_STS_MAX_AGE_SECONDS = 604800
# Deviation kept on purpose: "testing" until the MTA-STS host has a publicly trusted
# certificate (ACME, a later issue); "enforce" with a bad certificate would bounce mail.
MTA_STS_MODE = "testing"

# The autodiscover request is a few hundred bytes; anything bigger is not one.
AUTODISCOVER_BODY_LIMIT = 8 * 1024


@dataclass(frozen=True, slots=True)
class ClientPorts:
    """Ports clients connect to; None where the listener is switched off (or a unix socket)."""

    imaps: int | None = None
    imap: int | None = None
    pop3s: int | None = None
    pop3: int | None = None
    submissions: int | None = None
    submission: int | None = None


def ports_from_listen(listen: ListenSettings) -> ClientPorts:
    """The client ports of the configured listeners; unparsable or unix ones are skipped."""
    found: dict[str, int | None] = {}
    for name in ClientPorts.__dataclass_fields__:
        value: str = getattr(listen, name)
        port: int | None = None
        if value:
            try:
                address = parse_listen(value)
            except ValueError:
                address = None
            if address is not None and not address.is_unix:
                port = address.port
        found[name] = port
    return ClientPorts(**found)


# -- MTA-STS ------------------------------------------------------------------------------


def mta_sts_policy(mx_hosts: list[str], *, mode: str = MTA_STS_MODE) -> bytes:
    """The policy file of RFC 8461 §3.2: "key: value" lines, CRLF-terminated."""
    lines = [("version", "STSv1"), ("mode", mode)]
    lines += [("mx", host) for host in mx_hosts]
    lines.append(("max_age", str(MTA_STS_MAX_AGE_SECONDS)))
    return "".join(f"{key}: {value}\r\n" for key, value in lines).encode("ascii")


# -- Thunderbird autoconfig ---------------------------------------------------------------

# (server type, listener, socketType), implicit TLS first (RFC 8314 §3: prefer it).
_INCOMING = (
    ("imap", "imaps", "SSL"),
    ("imap", "imap", "STARTTLS"),
    ("pop3", "pop3s", "SSL"),
    ("pop3", "pop3", "STARTTLS"),
)
_OUTGOING = (
    ("smtp", "submissions", "SSL"),
    ("smtp", "submission", "STARTTLS"),
)


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


def _serialize(root: ET.Element) -> bytes:
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def build_autoconfig(domain: str, hostname: str, ports: ClientPorts) -> bytes:
    """The clientConfig document for one hosted domain; usernames are the full address."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", domain)
    _sub(provider, "displayShortName", domain.split(".", 1)[0])
    for direction, servers in (("incomingServer", _INCOMING), ("outgoingServer", _OUTGOING)):
        for kind, listener, socket_type in servers:
            port = getattr(ports, listener)
            if port is None:
                continue
            server = ET.SubElement(provider, direction, type=kind)
            _sub(server, "hostname", hostname)
            _sub(server, "port", str(port))
            _sub(server, "socketType", socket_type)
            _sub(server, "authentication", "password-cleartext")
            _sub(server, "username", "%EMAILADDRESS%")
    return _serialize(root)


# -- Microsoft autodiscover (POX) ---------------------------------------------------------


class _RefuseDoctype(Exception):
    pass


def parse_autodiscover_request(body: bytes) -> str:
    """The EMailAddress of a POX autodiscover request; ValueError when it is not one.

    Any DOCTYPE is refused, so no entity can be declared, let alone expanded.
    """
    if len(body) > AUTODISCOVER_BODY_LIMIT:
        raise ValueError(f"request body is larger than {AUTODISCOVER_BODY_LIMIT} bytes")
    parser = expat.ParserCreate(namespace_separator=" ")
    stack: list[str] = []
    texts: list[str] = []
    found: list[str] = []

    def refuse(*_: object) -> None:
        raise _RefuseDoctype

    def start(name: str, _attrs: dict[str, str]) -> None:
        stack.append(name)
        texts.clear()

    def end(name: str) -> None:
        ns, _, local = name.rpartition(" ")
        if (
            local == "EMailAddress"
            and ns in ("", AUTODISCOVER_REQUEST_NS)
            and stack[-3:-1] == _request_path(ns)
        ):
            found.append("".join(texts))
        stack.pop()
        texts.clear()

    def chars(data: str) -> None:
        texts.append(data)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(body, True)
    except _RefuseDoctype:
        raise ValueError("DOCTYPE is not allowed in an autodiscover request") from None
    except expat.ExpatError as exc:
        raise ValueError(f"not well-formed XML: {expat.errors.messages[exc.code]}") from None
    if len(found) != 1:
        raise ValueError("no Autodiscover/Request/EMailAddress in the request")
    return found[0].strip()


def _request_path(ns: str) -> list[str]:
    prefix = f"{ns} " if ns else ""
    return [f"{prefix}Autodiscover", f"{prefix}Request"]


# (Type, listener, Encryption) for the POX <Protocol> elements, implicit TLS first.
_POX_PROTOCOLS = (
    ("IMAP", "imaps", "SSL"),
    ("IMAP", "imap", "TLS"),
    ("POP3", "pop3s", "SSL"),
    ("POP3", "pop3", "TLS"),
    ("SMTP", "submissions", "SSL"),
    ("SMTP", "submission", "TLS"),
)


def build_autodiscover(email: str, hostname: str, ports: ClientPorts) -> bytes:
    """The POX response for ``email``: IMAP, POP3 and SMTP settings, login = the address."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=AUTODISCOVER_OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for kind, listener, encryption in _POX_PROTOCOLS:
        port = getattr(ports, listener)
        if port is None:
            continue
        protocol = ET.SubElement(account, "Protocol")
        _sub(protocol, "Type", kind)
        _sub(protocol, "Server", hostname)
        _sub(protocol, "Port", str(port))
        _sub(protocol, "DomainRequired", "off")
        _sub(protocol, "LoginName", email)
        _sub(protocol, "SPA", "off")
        # "SSL on" plus Encryption: older Outlooks read SSL, newer ones Encryption.
        _sub(protocol, "SSL", "on")
        _sub(protocol, "Encryption", encryption)
        _sub(protocol, "AuthRequired", "on")
        if kind == "SMTP":
            _sub(protocol, "UsePOPAuth", "off")
            _sub(protocol, "SMTPLast", "off")
    return _serialize(root)
