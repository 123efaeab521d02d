"""DNS blocklists: the RFC 5782 query names and answer meanings (pochta.dns.dnsbl), the client
address check (pochta.spam.dnsbl) against a loopback ZoneServer, and the DNS doctor reading
answers the same way."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import dns.asyncresolver
import pytest

from pochta.dns import doctor
from pochta.dns.dnsbl import (
    LISTED,
    NOT_LISTED,
    REFUSED,
    UNEXPECTED,
    ZoneWarnings,
    domain_query_name,
    interpret,
    ip_query_name,
)
from pochta.spam.check import ScanInput
from pochta.spam.dnsbl import BlocklistLookup, ClientBlocklists, askable_address
from pochta.spam.message import ScanMessage
from tests.dnsserver import ZoneServer

CLIENT = "81.2.69.160"  # a global address; only ever a name in the loopback zone
CLIENT_REV = "160.69.2.81"
CLIENT6 = "2a00:1450:4001:82a::1"
CLIENT6_REV = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.2.8.0.1.0.0.4.0.5.4.1.0.0.a.2"

ZONE = f"""
; RFC 5782 §5: an IPv4 list has 127.0.0.2 and never 127.0.0.1; a domain list has TEST, not
; INVALID.
2.0.0.127.bl.test. 60 IN A 127.0.0.2
test.dbl.test. 60 IN A 127.0.0.2
{CLIENT_REV}.zen.spamhaus.org. 60 IN A 127.0.0.2
{CLIENT_REV}.zen.spamhaus.org. 60 IN A 127.0.0.4
{CLIENT_REV}.zen.spamhaus.org. 60 IN A 127.0.0.5
{CLIENT_REV}.zen.spamhaus.org. 60 IN TXT "https://check.spamhaus.org/"
{CLIENT6_REV}.zen.spamhaus.org. 60 IN A 127.0.0.10
{CLIENT_REV}.bl.test. 60 IN A 127.0.0.3
{CLIENT_REV}.open.test. 60 IN A 127.255.255.254
{CLIENT_REV}.hijack.test. 60 IN A 198.51.100.7
"""


class Recorder:
    """A logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for _, event, fields in self.lines if event == name]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def zone() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE) as server:
        yield server


def _scan(client_ip: str = CLIENT, **fields: Any) -> ScanInput:
    message = ScanMessage(b"From: <a@b.test>\r\nSubject: hi\r\n\r\nhello\r\n")
    return ScanInput(message=message, sender="a@b.test", recipients=["bob@example.test"],
                     client_ip=client_ip, from_mx=True, **fields)  # fmt: skip


def _resolver(address: str, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    host, port = address.rsplit(":", 1)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)
    resolver.timeout = resolver.lifetime = timeout
    return resolver


def _check(
    zone: ZoneServer | str, zones: list[str], log: Recorder, clock: Clock | None = None, **kw: Any
) -> ClientBlocklists:
    address = zone if isinstance(zone, str) else zone.address
    lookup = BlocklistLookup(
        _resolver(address, kw.pop("dns_timeout", 2.0)),
        warnings=ZoneWarnings(clock or Clock()),
        log=log,
    )
    return ClientBlocklists(
        zones=zones,
        lookup=lookup,
        default_score=kw.pop("default_score", 2.0),
        timeout_seconds=kw.pop("timeout_seconds", 5.0),
    )


# -- query names (RFC 5782 §2.1, §2.4, §3) ---------------------------------------------------


def test_ipv4_query_name_reverses_the_octets() -> None:
    # RFC 5782 §2.1: 192.0.2.99 in dnsbl.example.com is 99.2.0.192.dnsbl.example.com.
    assert ip_query_name("192.0.2.99", "dnsbl.example.com") == "99.2.0.192.dnsbl.example.com"
    assert ip_query_name("192.0.2.99", "DNSBL.Example.COM.") == "99.2.0.192.dnsbl.example.com"
    # A dual-stack listener's IPv4 client is asked as IPv4.
    assert ip_query_name("::ffff:192.0.2.99", "bl.test") == "99.2.0.192.bl.test"


def test_ipv6_query_name_reverses_the_nibbles() -> None:
    # RFC 5782 §2.4's example: 2001:db8:1:2:3:4:567:89ab.
    assert ip_query_name("2001:db8:1:2:3:4:567:89ab", "ugly.example.com") == (
        "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"
    )
    assert ip_query_name(CLIENT6, "bl.test") == f"{CLIENT6_REV}.bl.test"


def test_domain_query_name_prefixes_the_domain() -> None:
    # RFC 5782 §3: the domain itself under the zone.
    assert domain_query_name("Spam.Example.", "dbl.spamhaus.org") == "spam.example.dbl.spamhaus.org"
    with pytest.raises(ValueError, match="empty"):
        domain_query_name("", "dbl.test")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        ip_query_name("not-an-address", "bl.test")


# -- answer meanings ------------------------------------------------------------------------


def test_no_record_is_not_listed() -> None:
    assert interpret([]).status == NOT_LISTED


def test_codes_in_127_8_are_listings() -> None:
    found = interpret(["127.0.0.4", "127.0.0.2", "127.0.0.2"])
    assert found.status == LISTED
    assert found.listed
    assert found.codes == ("127.0.0.2", "127.0.0.4")
    assert interpret(["127.0.1.2"]).codes == ("127.0.1.2",)  # DBL's codes are in 127/8 too


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("127.255.255.252", "typing error"),
        ("127.255.255.254", "public/open resolver"),
        ("127.255.255.255", "rate limited"),
        ("127.0.1.255", "refused"),
        ("127.0.0.1", "RFC 5782 §5"),
    ],
)
def test_error_codes_are_refusals_with_the_fix(code: str, says: str) -> None:
    found = interpret([code])
    assert found.status == REFUSED
    assert not found.listed
    assert found.codes == ()
    assert says in found.problem
    if code != "127.255.255.252":
        assert "own recursive resolver" in found.problem


def test_answers_outside_127_8_are_no_listing() -> None:
    for answers in (["198.51.100.7"], ["127.0.0.2", "198.51.100.7"], ["::1"]):
        found = interpret(answers)
        assert found.status == UNEXPECTED, answers
        assert not found.listed
        assert "outside 127.0.0.0/8" in found.problem
        assert "NXDOMAIN" in found.problem


def test_zone_warnings_once_per_zone_per_hour() -> None:
    clock = Clock()
    warnings = ZoneWarnings(clock)
    assert warnings.due("zen.test", REFUSED)
    assert not warnings.due("zen.test", REFUSED)
    assert warnings.due("other.test", REFUSED)
    assert warnings.due("zen.test", UNEXPECTED)
    clock.now += 3599
    assert not warnings.due("zen.test", REFUSED)
    clock.now += 1
    assert warnings.due("zen.test", REFUSED)


# -- the check, against a loopback zone ------------------------------------------------------


async def test_rfc5782_test_entries(zone: ZoneServer) -> None:
    lookup = BlocklistLookup(zone.async_resolver(), log=Recorder())
    listed = await lookup(ip_query_name("127.0.0.2", "bl.test"), "bl.test")
    assert listed is not None
    assert listed.codes == ("127.0.0.2",)
    clean = await lookup(ip_query_name("127.0.0.1", "bl.test"), "bl.test")
    assert clean is not None
    assert clean.status == NOT_LISTED
    domain = await lookup(domain_query_name("test", "dbl.test"), "dbl.test")
    assert domain is not None
    assert domain.listed
    invalid = await lookup(domain_query_name("invalid", "dbl.test"), "dbl.test")
    assert invalid is not None
    assert invalid.status == NOT_LISTED


async def test_zen_codes_give_rspamd_like_symbols(zone: ZoneServer) -> None:
    check = _check(zone, ["zen.spamhaus.org"], Recorder())
    symbols = {s.name: s for s in await check(_scan())}
    assert set(symbols) == {"RBL_ZEN_SBL", "RBL_ZEN_XBL"}  # .4 and .5 are both XBL
    assert symbols["RBL_ZEN_SBL"].score == 4.0
    assert symbols["RBL_ZEN_SBL"].options == (CLIENT, "127.0.0.2", "127.0.0.4", "127.0.0.5")
    [pbl] = await check(_scan(CLIENT6))
    assert (pbl.name, pbl.score, pbl.options) == ("RBL_ZEN_PBL", 2.0, (CLIENT6, "127.0.0.10"))


async def test_unknown_zone_gives_one_symbol_with_the_default_score(zone: ZoneServer) -> None:
    check = _check(zone, ["bl.test", "clean.test"], Recorder(), default_score=3.5)
    [symbol] = await check(_scan())
    assert (symbol.name, symbol.score) == ("RBL_BL_TEST", 3.5)
    assert symbol.options == (CLIENT, "127.0.0.3")


async def test_refusing_zone_gives_no_symbol_and_warns_once_an_hour(zone: ZoneServer) -> None:
    log, clock = Recorder(), Clock()
    check = _check(zone, ["open.test", "hijack.test"], log, clock)
    for _ in range(3):
        assert await check(_scan()) == []
    warned = log.events("dnsbl_unusable_answer")
    assert sorted(w["zone"] for w in warned) == ["hijack.test", "open.test"]
    refused = next(w for w in warned if w["zone"] == "open.test")
    assert refused["answers"] == "127.255.255.254"
    assert "public/open resolver" in refused["fix"]
    assert "[dns] nameservers" in refused["fix"]
    clock.now += 3600
    assert await check(_scan()) == []
    assert len(log.events("dnsbl_unusable_answer")) == 4


@pytest.mark.parametrize(
    "client", ["127.0.0.2", "10.1.2.3", "192.168.1.1", "169.254.0.9", "fe80::1", "::1", "", "x"]
)
async def test_loopback_private_link_local_are_not_asked(zone: ZoneServer, client: str) -> None:
    check = _check(zone, ["zen.spamhaus.org", "bl.test"], Recorder())
    assert await check(_scan(client)) == []
    assert zone.queries == []
    assert askable_address(client) == ""


async def test_authenticated_clients_are_not_asked(zone: ZoneServer) -> None:
    check = _check(zone, ["zen.spamhaus.org"], Recorder())
    assert await check(_scan(auth_user="alice@example.test")) == []
    assert zone.queries == []


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback UDP port that takes queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_timeout_gives_no_symbol_and_a_log_line(silent_server: str) -> None:
    silent = silent_server
    log = Recorder()
    # The per-message limit runs out before the resolver's own.
    check = _check(silent, ["zen.spamhaus.org"], log, dns_timeout=30.0, timeout_seconds=0.2)
    assert await check(_scan(queue_id="Q1")) == []
    assert log.events("dnsbl_timeout") == [{"lookups": 1, "queue_id": "Q1"}]
    # The resolver's limit runs out first: logged as a failed lookup.
    log = Recorder()
    check = _check(silent, ["zen.spamhaus.org"], log, dns_timeout=0.2, timeout_seconds=30.0)
    assert await check(_scan()) == []
    [failed] = log.events("dnsbl_lookup_failed")
    assert failed["zone"] == "zen.spamhaus.org"


# -- the DNS doctor reads answers the same way -----------------------------------------------


async def test_doctor_and_filter_agree_on_return_codes(zone: ZoneServer) -> None:
    zone.load(
        ZONE
        + f"{CLIENT_REV}.dbl-style.test. 60 IN A 127.0.1.2\n"
        + f"{CLIENT_REV}.surbl-blocked.test. 60 IN A 127.0.0.1\n"
    )
    zones = ["dbl-style.test", "surbl-blocked.test", "open.test", "hijack.test", "bl.test"]
    found = await doctor.check_blocklists(zone.async_resolver(), [CLIENT], zones)
    statuses = [f.status for f in found]
    assert statuses == ["LISTED", "COULD-NOT-CHECK", "COULD-NOT-CHECK", "COULD-NOT-CHECK", "LISTED"]
    assert "RFC 5782 §5" in found[1].detail
    assert "outside 127.0.0.0/8" in found[3].detail
    check = _check(zone, zones, Recorder())
    names = sorted(s.name for s in await check(_scan()))
    assert names == ["RBL_BL_TEST", "RBL_DBL_STYLE_TEST"]  # the same two zones list it
