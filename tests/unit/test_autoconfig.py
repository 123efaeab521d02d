"""Autoconfig, autodiscover and MTA-STS documents, and the HTTP router, without sockets."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pochta.config.settings import ListenSettings, Settings
from pochta.directory.model import Domain
from pochta.server.metrics import Metrics
from pochta.web.autoconfig import (
    AUTODISCOVER_OUTLOOK_NS,
    AUTODISCOVER_REQUEST_NS,
    AUTODISCOVER_RESPONSE_NS,
    ClientPorts,
    build_autoconfig,
    build_autodiscover,
    mta_sts_policy,
    parse_autodiscover_request,
    ports_from_listen,
)
from pochta.web.http_server import HttpService, Request, host_domain, is_loopback
from tests.factories import make_settings

PORTS = ClientPorts(imaps=993, imap=143, pop3s=995, pop3=110, submissions=465, submission=587)
HOSTILE = '<evil attr="x">&amp;</evil>]]><!--'


def parse_xml(data: bytes) -> ET.Element:
    """Parse our own output (trusted, and DOCTYPE-free by construction)."""
    return ET.fromstring(data)  # noqa: S314


def _servers(root: ET.Element, tag: str) -> list[tuple[str, str, str]]:
    return [
        (s.get("type") or "", s.findtext("port") or "", s.findtext("socketType") or "")
        for s in root.iter(tag)
    ]


def test_autoconfig_parses_back_with_every_server() -> None:
    root = parse_xml(build_autoconfig("example.org", "mail.example.org", PORTS))
    assert root.tag == "clientConfig"
    assert root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.get("id") == "example.org"
    assert provider.findtext("domain") == "example.org"
    assert _servers(root, "incomingServer") == [
        ("imap", "993", "SSL"),
        ("imap", "143", "STARTTLS"),
        ("pop3", "995", "SSL"),
        ("pop3", "110", "STARTTLS"),
    ]
    assert _servers(root, "outgoingServer") == [
        ("smtp", "465", "SSL"),
        ("smtp", "587", "STARTTLS"),
    ]
    for server in [*root.iter("incomingServer"), *root.iter("outgoingServer")]:
        assert server.findtext("hostname") == "mail.example.org"
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"


def test_autoconfig_skips_switched_off_listeners() -> None:
    listen = ListenSettings(imap="", pop3="", pop3s="", submission="", lmtp="unix:x")
    ports = ports_from_listen(listen)
    assert ports == ClientPorts(imaps=993, submissions=465)
    root = parse_xml(build_autoconfig("example.org", "mx.example.org", ports))
    assert _servers(root, "incomingServer") == [("imap", "993", "SSL")]
    assert _servers(root, "outgoingServer") == [("smtp", "465", "SSL")]


def test_ports_come_from_configured_listeners() -> None:
    listen = ListenSettings(imaps="127.0.0.1:10993", submission="[::1]:10587", pop3="bogus")
    ports = ports_from_listen(listen)
    assert ports.imaps == 10993
    assert ports.submission == 10587
    assert ports.pop3 is None  # unparsable: skipped, never advertised


def test_hostile_text_is_escaped_in_autoconfig() -> None:
    data = build_autoconfig(HOSTILE, HOSTILE, PORTS)
    assert b"<evil" not in data
    root = parse_xml(data)
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.findtext("domain") == HOSTILE
    assert provider.get("id") == HOSTILE
    assert {s.findtext("hostname") for s in root.iter("incomingServer")} == {HOSTILE}


def _request_body(email: str) -> bytes:
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_REQUEST_NS)
    req = ET.SubElement(root, "Request")
    ET.SubElement(req, "EMailAddress").text = email
    ET.SubElement(req, "AcceptableResponseSchema").text = AUTODISCOVER_OUTLOOK_NS
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def test_autodiscover_request_round_trip() -> None:
    assert parse_autodiscover_request(_request_body("bob@example.org")) == "bob@example.org"
    assert parse_autodiscover_request(_request_body(HOSTILE)) == HOSTILE


def test_autodiscover_request_without_namespace() -> None:
    body = (
        b"<Autodiscover><Request><EMailAddress> a@b.example </EMailAddress></Request>"
        b"</Autodiscover>"
    )
    assert parse_autodiscover_request(body) == "a@b.example"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
            b'"&lol;&lol;&lol;">]><Autodiscover><Request><EMailAddress>&lol2;</EMailAddress>'
            b"</Request></Autodiscover>",
            "DOCTYPE is not allowed",
        ),
        (
            b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><Autodiscover/>',
            "DOCTYPE is not allowed",
        ),
        (
            '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE a [<!ENTITY a "b">]><a/>'.encode(
                "utf-16"
            ),
            "DOCTYPE is not allowed",
        ),
        (b"<Autodiscover><Request></Request></Autodiscover>", "no Autodiscover/Request"),
        (b"<EMailAddress>a@b.example</EMailAddress>", "no Autodiscover/Request"),
        (b"<Autodiscover><Request>", "not well-formed"),
        (b"x" * 9000, "larger than"),
    ],
)
def test_autodiscover_request_refusals(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_autodiscover_request(body)


def test_autodiscover_response() -> None:
    data = build_autodiscover("bob@example.org", "mail.example.org", PORTS)
    root = parse_xml(data)
    ns = {"r": AUTODISCOVER_RESPONSE_NS, "o": AUTODISCOVER_OUTLOOK_NS}
    assert root.tag == f"{{{AUTODISCOVER_RESPONSE_NS}}}Autodiscover"
    protocols = root.findall("r:Response/o:Account/o:Protocol", ns) or root.findall(
        "o:Response/o:Account/o:Protocol", ns
    )
    got = [
        (p.findtext("o:Type", namespaces=ns), p.findtext("o:Port", namespaces=ns))
        for p in protocols
    ]
    assert got == [
        ("IMAP", "993"),
        ("IMAP", "143"),
        ("POP3", "995"),
        ("POP3", "110"),
        ("SMTP", "465"),
        ("SMTP", "587"),
    ]
    assert {p.findtext("o:LoginName", namespaces=ns) for p in protocols} == {"bob@example.org"}


def test_hostile_email_is_escaped_in_autodiscover() -> None:
    data = build_autodiscover(HOSTILE, "mail.example.org", PORTS)
    assert b"<evil" not in data
    assert HOSTILE in {e.text for e in parse_xml(data).iter() if e.tag.endswith("LoginName")}


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
def test_any_text_survives_the_xml_round_trip(text: str) -> None:
    root = parse_xml(build_autodiscover(text, "mail.example.org", ClientPorts(imaps=993)))
    logins = [e.text or "" for e in root.iter() if e.tag.endswith("LoginName")]
    assert logins == [text]


def test_mta_sts_policy_rfc8461_format() -> None:
    policy = mta_sts_policy(["mail.example.org"])
    assert policy == (
        b"version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\nmax_age: 604800\r\n"
    )


# -- the router ---------------------------------------------------------------------------


@dataclass
class FakeDirectory:
    domains: dict[str, Domain] = field(default_factory=dict)

    def get_domain(self, name: str) -> Domain | None:
        return self.domains.get(name)


@dataclass
class FakeServer:
    settings: Settings
    directory: FakeDirectory
    metrics: Metrics = field(default_factory=Metrics)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def service() -> HttpService:
    settings = make_settings(
        {
            "server.hostname": "mail.example.org",
            "listen.imaps": "0.0.0.0:993",
            "listen.pop3": "",
            "listen.pop3s": "",
        }
    )
    directory = FakeDirectory(
        {
            "example.org": Domain(name="example.org"),
            "off.example": Domain(name="off.example", enabled=False),
            # the host name's DKIM keys only (pochta init): not a mail domain of ours
            "mx.provider.example": Domain(name="mx.provider.example", signing_only=True),
        }
    )
    return HttpService(FakeServer(settings, directory))  # type: ignore[arg-type]


def _get(path: str, host: str = "example.org", **kw: object) -> Request:
    return Request(method="GET", path=path, headers={"host": host}, **kw)  # type: ignore[arg-type]


def test_route_mta_sts(service: HttpService) -> None:
    ok = service.respond(_get("/.well-known/mta-sts.txt", "MTA-STS.Example.org.:80"))
    assert ok.status == 200
    assert ok.content_type == "text/plain"
    assert b"mx: mail.example.org\r\n" in ok.body
    for host in (
        "example.org",
        "mta-sts.other.example",
        "mta-sts.off.example",
        "mta-sts.mx.provider.example",  # signing-only: no policy for a domain without mail
        "1.2.3.4",
        "",
    ):
        assert service.respond(_get("/.well-known/mta-sts.txt", host)).status == 404


def test_route_autoconfig(service: HttpService) -> None:
    by_query = service.respond(
        _get("/mail/config-v1.1.xml", "x", query={"emailaddress": ["Bob@Example.ORG"]})
    )
    assert by_query.status == 200
    assert b"<port>993</port>" in by_query.body
    assert b"<port>110</port>" not in by_query.body
    by_host = service.respond(
        _get("/.well-known/autoconfig/mail/config-v1.1.xml", "autoconfig.example.org")
    )
    assert by_host.status == 200
    assert by_host.body == by_query.body
    for other in ("a@other.example", "a@mx.provider.example"):
        unhosted = _get("/mail/config-v1.1.xml", query={"emailaddress": [other]})
        assert service.respond(unhosted).status == 404
    hostile = _get("/mail/config-v1.1.xml", query={"emailaddress": [HOSTILE]})
    assert service.respond(hostile).status == 400


def test_route_autodiscover(service: HttpService) -> None:
    post = Request(
        method="POST", path="/Autodiscover/Autodiscover.xml", body=_request_body("B@example.org")
    )
    answer = service.respond(post)
    assert answer.status == 200
    assert b"<LoginName>b@example.org</LoginName>" in answer.body
    bad = Request(method="POST", path="/autodiscover/autodiscover.xml", body=b"<!DOCTYPE x><x/>")
    assert service.respond(bad).status == 400
    get = service.respond(_get("/autodiscover/autodiscover.xml"))
    assert get.status == 405
    assert ("Allow", "POST") in get.headers


def test_route_metrics_only_for_loopback(service: HttpService) -> None:
    assert service.respond(_get("/metrics", client="127.0.0.1")).status == 200
    assert service.respond(_get("/metrics", client="::1")).status == 200
    assert service.respond(_get("/metrics", client="")).status == 200  # unix socket
    assert service.respond(_get("/metrics", client="192.0.2.1")).status == 403


def test_route_metrics_for_configured_networks() -> None:
    settings = make_settings(
        {
            "server.hostname": "mail.example.org",
            "http.metrics_allowed_networks": ["192.0.2.0/24", "2001:db8::/32"],
        }
    )
    service = HttpService(FakeServer(settings, FakeDirectory()))  # type: ignore[arg-type]
    assert service.respond(_get("/metrics", client="192.0.2.77")).status == 200
    assert service.respond(_get("/metrics", client="2001:db8::5")).status == 200
    assert service.respond(_get("/metrics", client="198.51.100.1")).status == 403
    assert service.respond(_get("/metrics", client="127.0.0.1")).status == 200


def test_route_methods_and_unknown_paths(service: HttpService) -> None:
    assert service.respond(_get("/healthz")).body == b"ok\n"
    assert service.respond(_get("/nope")).status == 404
    post = service.respond(Request(method="POST", path="/healthz"))
    assert post.status == 405
    assert ("Allow", "GET, HEAD") in post.headers


@pytest.mark.parametrize(
    ("client", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("garbage", False),
    ],
)
def test_is_loopback(client: str, loopback: bool) -> None:
    assert is_loopback(client) is loopback


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        ("Example.ORG", "example.org"),
        ("example.org:8080", "example.org"),
        ("a.b.", "a.b"),
        ("[::1]:80", None),
        ("127.0.0.1:80", None),
        ("", None),
    ],
)
def test_host_domain(header: str, domain: str | None) -> None:
    assert host_domain(header) == domain
