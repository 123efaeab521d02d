"""SPF through our interface: the RFC 7208 §4.6.4 limits, temperror on DNS failures, the HELO
and null-sender identities, the thread pool, and the dnspython adapter against a real DNS
server on loopback. The conformance suites are in ``test_spf_suite.py``."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import spf

from pochta.mailauth import spf as spf_module
from pochta.mailauth.spf import (
    MAX_DNS_QUERIES,
    DnsNameNotFound,
    DnspythonSpfDns,
    DnsTemporaryError,
    check_helo,
    check_spf,
)
from tests.dnsserver import ZoneServer
from tests.spf_zone import ZoneDns

IP = "192.0.2.1"


def _txt(record: str) -> tuple[str, bytes]:
    return ("TXT", record.encode())


# -- RFC 7208 §4.6.4: 10 DNS-querying terms ---------------------------------------------------


def _terms_zone(n: int) -> dict[str, list[tuple[str, Any]]]:
    """example.test's record has ``n`` a: terms (each one DNS-querying), then +all."""
    zone: dict[str, list[tuple[str, Any]]] = {}
    terms = " ".join(f"a:h{i}.example.test" for i in range(n))
    zone["example.test"] = [_txt(f"v=spf1 {terms} +all")]
    for i in range(n):
        zone[f"h{i}.example.test"] = [("A", "198.51.100.7")]
    return zone


async def test_ten_dns_terms_are_allowed() -> None:
    dns = ZoneDns(_terms_zone(10))
    got = await check_spf(IP, "a@example.test", "mx.example.test", dns=dns)
    assert got.result == "pass"
    assert got.dns_queries == 11  # the record + 10 A lookups


async def test_an_eleventh_dns_term_is_a_permerror() -> None:
    dns = ZoneDns(_terms_zone(11))
    got = await check_spf(IP, "a@example.test", "mx.example.test", dns=dns)
    assert got.result == "permerror"
    assert "DNS lookups" in got.reason
    assert ("A", "h10.example.test") not in dns.queries  # stopped before querying it


async def test_includes_and_redirect_count_towards_the_ten_terms() -> None:
    # a chain of 11 includes: each include is a DNS-querying term (RFC 7208 §4.6.4).
    zone: dict[str, list[tuple[str, Any]]] = {}
    for i in range(11):
        zone[f"d{i}.example.test"] = [_txt(f"v=spf1 include:d{i + 1}.example.test -all")]
    zone["d11.example.test"] = [_txt("v=spf1 +all")]
    zone["example.test"] = [_txt("v=spf1 redirect=d0.example.test")]
    got = await check_spf(IP, "a@example.test", "mx.example.test", dns=ZoneDns(zone))
    assert got.result == "permerror"


async def test_more_than_ten_mx_names_is_a_permerror() -> None:
    zone: dict[str, list[tuple[str, Any]]] = {
        "example.test": [_txt("v=spf1 mx -all")]
        + [("MX", (i, f"mx{i}.example.test")) for i in range(11)],
        # each MX host exists, so no void lookup decides the result before the MX limit
        **{f"mx{i}.example.test": [("A", "198.51.100.1")] for i in range(11)},
    }
    got = await check_spf(IP, "a@example.test", "mx.example.test", dns=ZoneDns(zone))
    assert got.result == "permerror"


# -- RFC 7208 §4.6.4: 2 void lookups ----------------------------------------------------------


def _void_zone(n: int) -> dict[str, list[tuple[str, Any]]]:
    """``n`` a: terms naming names that do not exist (NXDOMAIN), then +all."""
    terms = " ".join(f"a:void{i}.example.test" for i in range(n))
    return {"example.test": [_txt(f"v=spf1 {terms} +all")]}


async def test_two_void_lookups_are_allowed() -> None:
    got = await check_spf(IP, "a@example.test", "h", dns=ZoneDns(_void_zone(2)))
    assert got.result == "pass"


async def test_a_third_void_lookup_is_a_permerror() -> None:
    got = await check_spf(IP, "a@example.test", "h", dns=ZoneDns(_void_zone(3)))
    assert got.result == "permerror"
    assert "Void lookup" in got.reason


async def test_an_empty_answer_is_void_too() -> None:
    # RFC 7208 §4.6.4: "no answer" (NOERROR, no records) counts like NXDOMAIN.
    zone = {
        "example.test": [_txt("v=spf1 a:n0.example.test a:n1.example.test a:n2.example.test +all")],
        **{f"n{i}.example.test": [("AAAA", "2001:db8::1")] for i in range(3)},
    }
    got = await check_spf(IP, "a@example.test", "h", dns=ZoneDns(zone))
    assert got.result == "permerror"


async def test_our_ceiling_on_dns_queries_holds_whatever_pyspf_does() -> None:
    dns = ZoneDns(_terms_zone(10))
    got = await check_spf(IP, "a@example.test", "h", dns=dns, max_dns_queries=3)
    assert got.result == "permerror"
    assert len(dns.queries) == 3
    assert MAX_DNS_QUERIES >= 11 + 10 * 10  # the default allows every RFC-legal record


# -- temperror ----------------------------------------------------------------------------------


async def test_a_dns_timeout_on_the_record_is_a_temperror() -> None:
    zone: dict[str, list[tuple[str, Any]]] = {"example.test": [("TIMEOUT", None)]}
    got = await check_spf(IP, "a@example.test", "h", dns=ZoneDns(zone))
    assert got.result == "temperror"
    assert got.explanation == ""


async def test_a_dns_timeout_inside_a_mechanism_is_a_temperror() -> None:
    zone = {
        "example.test": [_txt("v=spf1 a:slow.example.test -all")],
        "slow.example.test": [("TIMEOUT", None)],
    }
    got = await check_spf(IP, "a@example.test", "h", dns=ZoneDns(zone))
    assert got.result == "temperror"


async def test_a_lookup_that_never_answers_is_a_temperror_and_is_cancelled() -> None:
    zone = {"example.test": [_txt("v=spf1 a:hang.example.test -all")]}
    dns = ZoneDns(zone, hang=frozenset({"hang.example.test"}))
    got = await check_spf(IP, "a@example.test", "h", dns=dns, timeout_seconds=0.2)
    assert got.result == "temperror"
    assert ("A", "hang.example.test") in dns.queries
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []  # the hanging lookup was cancelled, not left on the loop


async def test_a_failing_resolver_is_a_temperror() -> None:
    class Broken(ZoneDns):
        async def _ask(self, name: str, rdtype: str) -> list[Any]:
            raise ValueError("adapter bug")

    got = await check_spf(IP, "a@example.test", "h", dns=Broken({}))
    assert got.result == "temperror"
    assert "adapter bug" in got.reason


async def test_the_time_budget_is_for_the_whole_check() -> None:
    # An injected clock that moves 15 s per lookup: with a 20 s budget the third lookup
    # (at 30 s) is not asked and the check is a temperror; with 100 s it completes.
    now = [0.0]

    class Slow(ZoneDns):
        async def _ask(self, name: str, rdtype: str) -> list[Any]:
            now[0] += 15.0
            return await super()._ask(name, rdtype)

    zone = {
        "example.test": [_txt("v=spf1 a:h1.example.test a:h2.example.test -all")],
        "h1.example.test": [("A", "198.51.100.1")],
        "h2.example.test": [("A", IP)],
    }
    dns = Slow(zone)
    got = await check_spf(
        IP, "a@example.test", "h", dns=dns, clock=lambda: now[0], timeout_seconds=20
    )
    assert got.result == "temperror"
    assert dns.queries == [("TXT", "example.test"), ("A", "h1.example.test")]
    now[0] = 0.0
    got = await check_spf(
        IP, "a@example.test", "h", dns=Slow(zone), clock=lambda: now[0], timeout_seconds=100
    )
    assert got.result == "pass"


# -- identities -------------------------------------------------------------------------------


async def test_null_sender_is_checked_as_postmaster_at_helo() -> None:
    # RFC 7208 §2.4: MAIL FROM:<> is checked as postmaster@HELO; %{l} shows the local part.
    zone = {
        "mx.example.test": [_txt("v=spf1 exists:%{l}.%{o}.x.example.test -all")],
        "postmaster.mx.example.test.x.example.test": [("A", "127.0.0.2")],
    }
    dns = ZoneDns(zone)
    got = await check_spf(IP, "", "mx.example.test", dns=dns)
    assert got.result == "pass"
    assert got.identity == "mailfrom"
    assert got.domain == "mx.example.test"
    assert got.properties == {"smtp.mailfrom": "postmaster@mx.example.test"}


async def test_mail_from_domain_is_checked_not_helo() -> None:
    zone = {
        "example.test": [_txt("v=spf1 -all")],
        "mx.example.test": [_txt("v=spf1 +all")],
    }
    got = await check_spf(IP, "joe@example.test", "mx.example.test", dns=ZoneDns(zone))
    assert got.result == "fail"
    assert got.domain == "example.test"
    assert got.properties == {"smtp.mailfrom": "joe@example.test"}
    assert got.explanation == "SPF fail - not authorized"


async def test_exp_text_is_the_explanation_of_a_fail() -> None:
    zone = {
        "example.test": [_txt("v=spf1 -all exp=why.example.test")],
        "why.example.test": [_txt("%{i} may not send for %{d}")],
    }
    got = await check_spf(IP, "joe@example.test", "h", dns=ZoneDns(zone))
    assert got.result == "fail"
    assert got.explanation == "192.0.2.1 may not send for example.test"


async def test_helo_identity() -> None:
    # RFC 7208 §2.3: the HELO name's own record, with postmaster@HELO as the sender.
    zone = {"mx.example.test": [_txt("v=spf1 ip4:192.0.2.0/24 -all")]}
    got = await check_helo(IP, "mx.example.test", dns=ZoneDns(zone))
    assert (got.result, got.identity, got.domain) == ("pass", "helo", "mx.example.test")
    assert got.properties == {"smtp.helo": "mx.example.test"}
    got = await check_helo("198.51.100.1", "mx.example.test", dns=ZoneDns(zone))
    assert got.result == "fail"


@pytest.mark.parametrize("helo", ["[192.0.2.1]", "192.0.2.1", "localhost", ""])
async def test_helo_that_is_no_domain_is_none_without_dns(helo: str) -> None:
    # RFC 7208 §4.3: a malformed or single-label domain gives "none".
    dns = ZoneDns({})
    got = await check_helo(IP, helo, dns=dns)
    assert got.result == "none"
    assert dns.queries == []


async def test_ipv4_mapped_ipv6_client_is_checked_as_ipv4() -> None:
    zone = {"example.test": [_txt("v=spf1 ip4:192.0.2.1 -all")]}
    got = await check_spf("::ffff:192.0.2.1", "a@example.test", "h", dns=ZoneDns(zone))
    assert got.result == "pass"


async def test_a_bad_client_address_is_the_callers_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        await check_spf("not-an-ip", "a@example.test", "h", dns=ZoneDns({}))


# -- threads ----------------------------------------------------------------------------------


class CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="test-spf")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool() -> Iterator[CountingPool]:
    p = CountingPool()
    yield p
    p.shutdown(wait=True)


async def test_pyspf_runs_in_the_pool_not_on_the_loop(pool: CountingPool) -> None:
    threads: list[str] = []
    original = spf.query.check

    def check(self: spf.query, *args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    zone = {"example.test": [_txt("v=spf1 +all")]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spf.query, "check", check)
        got = await check_spf(IP, "a@example.test", "h", dns=ZoneDns(zone), executor=pool)
    assert got.result == "pass"
    assert pool.submitted == 1
    # A first check has nothing in the memo: the inline attempt stops at its first lookup
    # and the evaluation that answers runs in the pool.
    assert threads[-1].startswith("test-spf")
    assert not any(name.startswith("test-spf") for name in threads[:-1])


async def test_answers_of_the_last_seconds_are_evaluated_inline(pool: CountingPool) -> None:
    """MEMO_SECONDS: a check whose every answer a recent check got runs on the loop with no
    DNS query and no thread; after that, DNS and the pool again."""
    now = [100.0]
    dns = ZoneDns(
        {
            "example.test": [_txt("v=spf1 include:inc.test -all")],
            "inc.test": [_txt("v=spf1 ip4:192.0.2.0/24 -all")],
        }
    )
    spf_module._memos[dns] = spf_module._AnswerMemo(clock=lambda: now[0])
    first = await check_spf(IP, "a@example.test", "h", dns=dns, executor=pool)
    asked = len(dns.queries)
    second = await check_spf(IP, "b@example.test", "h", dns=dns, executor=pool)
    assert (first.result, second.result) == ("pass", "pass")
    assert pool.submitted == 1  # the second check did not use the pool ...
    assert len(dns.queries) == asked  # ... nor DNS
    assert second.dns_queries == first.dns_queries == 2
    now[0] += spf_module.MEMO_SECONDS + 1
    third = await check_spf(IP, "c@example.test", "h", dns=dns, executor=pool)
    assert third.result == "pass"
    assert pool.submitted == 2
    assert len(dns.queries) == 2 * asked


async def test_pyspf_outside_a_check_gets_no_dns() -> None:
    # pyspf's own resolver is never used: a query made outside check_spf cannot reach DNS.
    result, _, _ = spf.query(i=IP, s="a@example.com", h="h").check()
    assert result == "temperror"


async def test_concurrent_checks_keep_their_own_dns(pool: CountingPool) -> None:
    zone_a = {"example.test": [_txt("v=spf1 +all")]}
    zone_b = {"example.test": [_txt("v=spf1 -all")]}
    big = ThreadPoolExecutor(max_workers=4)
    try:
        results = await asyncio.gather(
            *(
                check_spf(IP, "a@example.test", "h", dns=ZoneDns(z), executor=big)
                for z in [zone_a, zone_b] * 8
            )
        )
    finally:
        big.shutdown(wait=True)
    assert [r.result for r in results] == ["pass", "fail"] * 8


# -- the dnspython adapter, against a DNS server on loopback ---------------------------------

ZONE = """
$TTL 300
example.test. IN TXT "v=spf1 " "mx a:h.example.test -all"
example.test. IN MX 10 mx.example.test.
mx.example.test. IN A 192.0.2.10
h.example.test. IN AAAA 2001:db8::10
alias.example.test. IN CNAME h.example.test.
1.2.0.192.in-addr.arpa. IN PTR mx.example.test.
"""


@pytest.fixture
def zone_server() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE, origin=".") as server:
        yield server


async def test_dnspython_adapter_answers(zone_server: ZoneServer) -> None:
    dns = DnspythonSpfDns(zone_server.async_resolver())
    assert await dns.txt("example.test") == [b"v=spf1 mx a:h.example.test -all"]
    assert await dns.mx("example.test") == [(10, "mx.example.test")]
    assert await dns.a("mx.example.test") == ["192.0.2.10"]
    assert await dns.aaaa("alias.example.test") == ["2001:db8::10"]  # CNAME followed
    assert await dns.ptr("1.2.0.192.in-addr.arpa") == ["mx.example.test"]
    assert await dns.a("h.example.test") == []  # the name exists, no A: no answer
    with pytest.raises(DnsNameNotFound):
        await dns.a("nowhere.example.test")


async def test_dnspython_adapter_through_check_spf(zone_server: ZoneServer) -> None:
    dns = DnspythonSpfDns(zone_server.async_resolver())
    got = await check_spf("192.0.2.10", "a@example.test", "h", dns=dns)
    assert got.result == "pass"
    got = await check_spf("198.51.100.1", "a@example.test", "h", dns=dns)
    assert got.result == "fail"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A UDP socket on loopback that reads queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_dnspython_adapter_timeout_is_temporary(silent_server: int) -> None:
    import dns.asyncresolver

    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = silent_server
    resolver.timeout = resolver.lifetime = 0.2
    adapter = DnspythonSpfDns(resolver)
    with pytest.raises(DnsTemporaryError):
        await adapter.txt("example.test")
    got = await check_spf(IP, "a@example.test", "h", dns=adapter)
    assert got.result == "temperror"
