"""URI blocklists (pochta.spam.uribl): the link domains and addresses a message asks, and the
check against DBL, SURBL and unknown zones served by a loopback ZoneServer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import dns.asyncresolver
import dns.resolver
import pytest

from pochta.dns.dnsbl import ZoneWarnings
from pochta.spam.check import ScanInput
from pochta.spam.dnsbl import BlocklistLookup
from pochta.spam.message import Link, ScanMessage
from pochta.spam.uribl import UriBlocklists, link_targets, surbl_codes
from tests.dnsserver import ZoneServer

LINKED_IP = "81.2.69.160"
HOSTED = {"example.test"}

ZONE = """
spam.test.dbl.spamhaus.org. 60 IN A 127.0.1.2
phish.test.dbl.spamhaus.org. 60 IN A 127.0.1.4
redir.test.dbl.spamhaus.org. 60 IN A 127.0.1.103
refused.test.dbl.spamhaus.org. 60 IN A 127.0.1.255
phish.test.multi.surbl.org. 60 IN A 127.0.0.24
cracked.test.multi.surbl.org. 60 IN A 127.0.0.128
blocked.test.multi.surbl.org. 60 IN A 127.0.0.1
spam.test.uri.test. 60 IN A 127.0.0.2
160.69.2.81.zen.spamhaus.org. 60 IN A 127.0.0.2
"""
URI_ZONES = ["dbl.spamhaus.org", "multi.surbl.org"]


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


@pytest.fixture
def zone() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE) as server:
        yield server


def _message(*urls: str) -> ScanMessage:
    body = "".join(f'<p><a href="{url}">click</a></p>\r\n' for url in urls)
    return ScanMessage(
        b"From: <a@b.test>\r\nSubject: offer\r\nContent-Type: text/html\r\n\r\n" + body.encode()
    )


def _scan(*urls: str) -> ScanInput:
    return ScanInput(
        message=_message(*urls),
        sender="a@b.test",
        recipients=["bob@example.test"],
        client_ip="10.0.0.1",
        from_mx=True,
        queue_id="Q7",
    )


def _check(zone: ZoneServer, log: Recorder | None = None, **kw: Any) -> UriBlocklists:
    resolver: dns.asyncresolver.Resolver = zone.async_resolver()
    return UriBlocklists(
        uri_zones=kw.pop("uri_zones", URI_ZONES),
        client_zones=kw.pop("client_zones", ["zen.spamhaus.org"]),
        lookup=BlocklistLookup(resolver, warnings=ZoneWarnings(lambda: 0.0), log=log or Recorder()),
        hosted=lambda name: name in HOSTED,
        default_score=kw.pop("default_score", 2.0),
        max_lookups=kw.pop("max_lookups", 20),
        timeout_seconds=5.0,
    )


# -- which domains and addresses are asked ---------------------------------------------------


def test_link_targets_registrable_domains_addresses_hosted_and_limit() -> None:
    links = [
        Link("http://a.b.Spam.test/x?y=1"),
        Link("https://spam.test./again"),  # the same registrable domain: asked once
        Link("www.other.co.uk/path"),  # found in text without a scheme
        Link("http://www.shop.example.co.uk/"),
        Link(f"http://{LINKED_IP}/payload"),
        Link("http://10.0.0.1/router"),  # private: nothing to ask
        Link("http://[2001:db8::1]/"),  # documentation range: nothing to ask
        Link("https://mail.example.test/login"),  # under a hosted domain
        Link("https://example.test/"),
        Link("http://com/"),  # a bare public suffix
        Link("http://bücher.test/"),  # IDN: asked as A-label
        Link("http://[broken/"),
    ]
    targets = link_targets(links, lambda name: name in HOSTED, 20)
    assert targets.domains == ("spam.test", "other.co.uk", "example.co.uk", "xn--bcher-kva.test")
    assert targets.addresses == (LINKED_IP,)
    limited = link_targets(links, lambda name: name in HOSTED, 2)
    assert limited.domains == ("spam.test", "other.co.uk")
    assert limited.addresses == ()


def test_surbl_bit_mask() -> None:
    assert [c.symbol for c in surbl_codes(["127.0.0.24"])] == ["PH_SURBL_MULTI", "MW_SURBL_MULTI"]
    assert [c.symbol for c in surbl_codes(["127.0.0.192"])] == ["ABUSE_SURBL", "CRACKED_SURBL"]
    assert surbl_codes(["127.0.0.2"]) == []


# -- the check --------------------------------------------------------------------------------


async def test_dbl_and_surbl_listings_give_symbols_with_the_domains(zone: ZoneServer) -> None:
    check = _check(zone)
    scan = _scan(
        "http://www.spam.test/a", "http://x.phish.test/", "http://cracked.test/", "http://ok.test/"
    )
    symbols = {s.name: s for s in await check(scan)}
    assert set(symbols) == {
        "DBL_SPAM",
        "DBL_PHISH",
        "PH_SURBL_MULTI",
        "MW_SURBL_MULTI",
        "CRACKED_SURBL",
    }
    assert symbols["DBL_SPAM"].options == ("spam.test",)
    assert symbols["DBL_SPAM"].score == 6.5
    assert symbols["PH_SURBL_MULTI"].options == ("phish.test",)
    assert symbols["CRACKED_SURBL"].score == 5.0


async def test_several_domains_share_one_symbol(zone: ZoneServer) -> None:
    zone.load(ZONE + "more.test.dbl.spamhaus.org. 60 IN A 127.0.1.2\n")
    [symbol] = await _check(zone, uri_zones=["dbl.spamhaus.org"])(
        _scan("http://spam.test/", "http://more.test/")
    )
    assert (symbol.name, symbol.options) == ("DBL_SPAM", ("spam.test", "more.test"))


async def test_refusal_codes_give_no_symbol(zone: ZoneServer) -> None:
    log = Recorder()
    check = _check(zone, log)
    assert await check(_scan("http://refused.test/", "http://blocked.test/")) == []
    warned = sorted(f["zone"] for event, f in log.lines if event == "dnsbl_unusable_answer")
    assert warned == ["dbl.spamhaus.org", "multi.surbl.org"]


async def test_unknown_zone_and_ip_literal(zone: ZoneServer) -> None:
    check = _check(zone, uri_zones=["uri.test"], default_score=1.5)
    symbols = {s.name: s for s in await check(_scan("http://spam.test/", f"http://{LINKED_IP}/"))}
    assert set(symbols) == {"URIBL_URI_TEST", "URIBL_ZEN_SBL"}
    assert symbols["URIBL_URI_TEST"].score == 1.5
    assert symbols["URIBL_URI_TEST"].options == ("spam.test",)
    assert symbols["URIBL_ZEN_SBL"].options == (LINKED_IP, "127.0.0.2")


async def test_hosted_domains_are_not_asked_and_lookups_are_bounded(zone: ZoneServer) -> None:
    urls = [f"http://d{i}.test/" for i in range(30)] + ["http://www.example.test/"]
    assert await _check(zone, max_lookups=20)(_scan(*urls)) == []
    asked = {name for name, _ in zone.queries}
    assert len(zone.queries) == 20 * len(URI_ZONES) == len(asked)
    assert not any("example.test" in name for name in asked)
    assert "d19.test.dbl.spamhaus.org." in asked
    assert "d20.test.dbl.spamhaus.org." not in asked


async def test_lookups_run_concurrently() -> None:
    """Every name of the message is asked before any answer comes (counted, not timed)."""

    class Resolver:
        in_flight = 0
        most = 0

        async def resolve(self, *_: Any, **__: Any) -> Any:
            Resolver.in_flight += 1
            Resolver.most = max(Resolver.most, Resolver.in_flight)
            for _ in range(5):
                await asyncio.sleep(0)
            Resolver.in_flight -= 1
            raise dns.resolver.NXDOMAIN

    check = UriBlocklists(
        uri_zones=URI_ZONES,
        client_zones=[],
        lookup=BlocklistLookup(Resolver(), log=Recorder()),  # type: ignore[arg-type]
        hosted=lambda _: False,
        default_score=2.0,
        max_lookups=20,
        timeout_seconds=5.0,
    )
    assert await check(_scan(*[f"http://c{i}.test/" for i in range(5)])) == []
    assert Resolver.most == 5 * len(URI_ZONES)
