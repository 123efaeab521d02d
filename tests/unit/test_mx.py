"""MX resolution (RFC 5321 §5.1, RFC 7505) against a real DNS server on loopback.

``ZoneServer`` (tests/dnsserver.py) answers authoritatively from the zone below; the resolver
under test is the one pochta builds from ``[dns]`` settings (``make_async_resolver``).
"""

from __future__ import annotations

import collections
import random
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.config.settings import DNSSettings
from pochta.deliver.mx import (
    MAX_ADDRESSES_PER_HOST,
    MXRecord,
    order_mx,
    resolve_host,
    resolve_mx,
)
from pochta.dns.async_resolver import ResolverConfigError, make_async_resolver
from tests.dnsserver import ZoneServer

ZONE = """
$TTL 300
. IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
; three MX hosts, two of them at preference 10
example.test. IN MX 10 mx1.example.test.
example.test. IN MX 10 mx2.example.test.
example.test. IN MX 20 mx3.example.test.
mx1.example.test. IN A 192.0.2.1
mx2.example.test. IN A 192.0.2.2
mx2.example.test. IN AAAA 2001:db8::2
mx3.example.test. IN A 192.0.2.3
; no MX: the implicit MX is the domain itself
implicit.test. IN A 192.0.2.10
implicit.test. IN AAAA 2001:db8::10
; RFC 7505 null MX
nullmx.test. IN MX 0 .
; an IP address written as MX target, and a usable host
ipmx.test. IN MX 10 192.0.2.55.
ipmx.test. IN MX 20 good.ipmx.test.
good.ipmx.test. IN A 192.0.2.56
; every MX target is missing
deadmx.test. IN MX 10 nowhere.deadmx.test.
; the domain exists, but has neither MX nor address records
nomail.test. IN TXT "no mail here"
; the domain is an alias: processed as the name it points to
alias.test. IN CNAME real.test.
real.test. IN MX 5 mx.real.test.
mx.real.test. IN A 192.0.2.20
; an MX target that is an alias (RFC 2181 §10.3 forbids it; the answer is followed)
cnamemx.test. IN MX 10 mxalias.cnamemx.test.
mxalias.cnamemx.test. IN CNAME mxreal.cnamemx.test.
mxreal.cnamemx.test. IN A 192.0.2.30
; an alias loop
loop.test. IN CNAME loop2.test.
loop2.test. IN CNAME loop.test.
; this host is the backup MX of self.test
self.test. IN MX 10 primary.self.test.
self.test. IN MX 20 mail.pochta.test.
self.test. IN MX 30 tertiary.self.test.
primary.self.test. IN A 192.0.2.40
tertiary.self.test. IN A 192.0.2.41
onlyme.test. IN MX 10 mail.pochta.test.
; a host with many addresses
many.test. IN A 192.0.2.101
many.test. IN A 192.0.2.102
many.test. IN A 192.0.2.103
many.test. IN A 192.0.2.104
many.test. IN A 192.0.2.105
many.test. IN A 192.0.2.106
v6only.test. IN AAAA 2001:db8::99
"""


def always(_: str) -> bool:
    return True


def never(_: str) -> bool:
    return False


@pytest.fixture(scope="module")
def zone():
    with ZoneServer(ZONE) as server:
        yield server


@pytest.fixture
def resolver(zone: ZoneServer):
    return make_async_resolver(DNSSettings(nameservers=[zone.address], timeout_seconds=3))


# --- order_mx -----------------------------------------------------------------------------------


def test_order_sorts_by_preference_and_is_reproducible_with_a_seed() -> None:
    records = [
        MXRecord(30, "c.test"),
        MXRecord(10, "a1.test"),
        MXRecord(20, "b.test"),
        MXRecord(10, "a2.test"),
    ]
    first = order_mx(records, random.Random(7))
    second = order_mx(list(reversed(records)), random.Random(7))
    assert [r.preference for r in first] == [10, 10, 20, 30]
    assert {r.host for r in first[:2]} == {"a1.test", "a2.test"}
    assert [r.host for r in first[2:]] == ["b.test", "c.test"]
    # The input order does not matter, only the generator: the same seed, the same order.
    assert first == second


def test_equal_preferences_are_shuffled_fairly() -> None:
    # RFC 5321 §5.1: hosts of equal preference MUST be randomized to spread the load.
    records = [MXRecord(10, f"mx{i}.test") for i in range(3)] + [MXRecord(50, "backup.test")]
    rng = random.Random(20240501)
    first = collections.Counter()
    position = collections.Counter()
    trials = 3000
    for _ in range(trials):
        ordered = order_mx(records, rng)
        assert ordered[-1].host == "backup.test"
        first[ordered[0].host] += 1
        position[(ordered[1].host, 1)] += 1
    for i in range(3):
        # 1000 expected each; a fair shuffle stays well inside ±15 % (p < 1e-6 otherwise).
        assert 850 < first[f"mx{i}.test"] < 1150, first
        assert 850 < position[(f"mx{i}.test", 1)] < 1150, position


def test_a_host_named_twice_keeps_its_best_preference() -> None:
    ordered = order_mx(
        [MXRecord(20, "same.test"), MXRecord(10, "same.test"), MXRecord(15, "other.test")],
        random.Random(1),
    )
    assert ordered == [MXRecord(10, "same.test"), MXRecord(15, "other.test")]


@settings(deadline=None)  # a shared 2-CPU machine: time is not the property
@given(
    st.lists(
        st.tuples(st.integers(0, 65535), st.sampled_from([f"h{i}.test" for i in range(8)])),
        max_size=20,
    ),
    st.integers(),
)
def test_order_is_a_sorted_deduplicated_permutation(pairs, seed) -> None:
    records = [MXRecord(p, h) for p, h in pairs]
    ordered = order_mx(records, random.Random(seed))
    assert [r.preference for r in ordered] == sorted(r.preference for r in ordered)
    assert [r.host for r in ordered] == list(dict.fromkeys(r.host for r in ordered))
    best = {}
    for record in records:
        best[record.host] = min(best.get(record.host, 1 << 20), record.preference)
    assert {(r.host, r.preference) for r in ordered} == set(best.items())


# --- resolve_mx against real DNS -----------------------------------------------------------------


async def test_mx_hosts_in_preference_order_with_addresses(resolver) -> None:
    result = await resolve_mx(
        resolver, "Example.TEST", max_hosts=5, rng=random.Random(3), routable6=always
    )
    assert result.ok
    assert not result.implicit
    assert result.error == ""
    names = [h.name for h in result.hosts]
    assert set(names[:2]) == {"mx1.example.test", "mx2.example.test"}
    assert names[2] == "mx3.example.test"
    by_name = {h.name: h for h in result.hosts}
    # IPv4 first, then IPv6 (module docstring of mx.py).
    assert by_name["mx2.example.test"].addresses == ("192.0.2.2", "2001:db8::2")
    assert by_name["mx3.example.test"].preference == 20


async def test_ipv6_addresses_need_a_route(resolver) -> None:
    result = await resolve_mx(resolver, "example.test", max_hosts=5, routable6=never)
    by_name = {h.name: h for h in result.hosts}
    assert by_name["mx2.example.test"].addresses == ("192.0.2.2",)
    only6 = await resolve_host(resolver, "v6only.test", routable6=never)
    assert not only6.ok
    assert only6.permanent
    assert "no IPv6 route" in only6.error


async def test_max_hosts_keeps_the_best(resolver) -> None:
    result = await resolve_mx(resolver, "example.test", max_hosts=2, rng=random.Random(5))
    assert {h.name for h in result.hosts} == {"mx1.example.test", "mx2.example.test"}


async def test_no_mx_means_the_implicit_mx(resolver) -> None:
    result = await resolve_mx(resolver, "implicit.test", max_hosts=5, routable6=always)
    assert result.implicit
    assert [(h.name, h.preference, h.addresses) for h in result.hosts] == [
        ("implicit.test", 0, ("192.0.2.10", "2001:db8::10"))
    ]


async def test_cname_domain_is_processed_as_its_target(resolver) -> None:
    result = await resolve_mx(resolver, "alias.test", max_hosts=5)
    assert [(h.name, h.addresses) for h in result.hosts] == [("mx.real.test", ("192.0.2.20",))]


async def test_mx_target_that_is_an_alias_is_followed_once(resolver, zone) -> None:
    zone.queries.clear()
    result = await resolve_mx(resolver, "cnamemx.test", max_hosts=5)
    assert [(h.name, h.addresses) for h in result.hosts] == [
        ("mxalias.cnamemx.test", ("192.0.2.30",))
    ]
    # The server's answer carried the chain: we asked nothing about the alias target.
    assert not any(name.startswith("mxreal.") for name, _ in zone.queries)


async def test_alias_loop_ends(resolver) -> None:
    result = await resolve_mx(resolver, "loop.test", max_hosts=5)
    assert not result.ok
    # dnspython gives up on the looping answer; nothing was proven, so try again later.
    assert result.error.startswith("451 4.4.3 ")


async def test_null_mx_is_permanent(resolver) -> None:
    result = await resolve_mx(resolver, "nullmx.test", max_hosts=5)
    assert not result.ok
    assert result.permanent
    assert result.error.startswith("556 5.1.10 ")


async def test_nxdomain_is_permanent(resolver) -> None:
    result = await resolve_mx(resolver, "no-such-domain.test", max_hosts=5)
    assert not result.ok
    assert result.permanent
    assert result.error.startswith("550 5.1.2 ")
    assert "no-such-domain.test" in result.error


async def test_ip_address_as_mx_target_is_skipped(resolver) -> None:
    result = await resolve_mx(resolver, "ipmx.test", max_hosts=5)
    assert [h.name for h in result.hosts] == ["good.ipmx.test"]
    assert any("192.0.2.55" in note for note in result.skipped)


async def test_no_usable_mx_host_is_permanent(resolver) -> None:
    result = await resolve_mx(resolver, "deadmx.test", max_hosts=5)
    assert not result.ok
    assert result.permanent
    assert result.error.startswith("550 5.4.4 ")
    assert "nowhere.deadmx.test" in result.error


async def test_domain_without_mx_or_address_is_permanent(resolver) -> None:
    result = await resolve_mx(resolver, "nomail.test", max_hosts=5)
    assert not result.ok
    assert result.permanent
    assert result.implicit
    assert result.error.startswith("550 5.4.4 ")


async def test_backup_mx_drops_itself_and_the_less_preferred(resolver) -> None:
    local = frozenset({"mail.pochta.test"})
    result = await resolve_mx(resolver, "self.test", max_hosts=5, local_names=local)
    assert [h.name for h in result.hosts] == ["primary.self.test"]
    alone = await resolve_mx(resolver, "onlyme.test", max_hosts=5, local_names=local)
    assert not alone.ok
    assert alone.error.startswith("554 5.4.6 ")


async def test_addresses_per_host_are_bounded(resolver) -> None:
    result = await resolve_mx(resolver, "many.test", max_hosts=5)
    assert len(result.hosts[0].addresses) == MAX_ADDRESSES_PER_HOST


async def test_bad_domain_is_permanent(resolver) -> None:
    result = await resolve_mx(resolver, "a" * 64 + ".test", max_hosts=5)
    assert not result.ok
    assert result.error.startswith("550 5.1.2 ")


# --- temporary failures ---------------------------------------------------------------------------


async def test_refused_answer_is_temporary() -> None:
    # A server that is authoritative for another zone only answers REFUSED (like SERVFAIL,
    # dnspython reports NoNameservers): the message must wait, not bounce.
    with ZoneServer(". IN SOA ns.test. h.test. 1 1 1 1 1\n", origin="elsewhere.") as other:
        resolver = make_async_resolver(DNSSettings(nameservers=[other.address], timeout_seconds=2))
        result = await resolve_mx(resolver, "example.test", max_hosts=5)
    assert not result.ok
    assert not result.permanent
    assert result.error.startswith("451 4.4.3 ")


def _dead_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_timeout_is_temporary() -> None:
    dead = f"127.0.0.1:{_dead_udp_port()}"
    resolver = make_async_resolver(DNSSettings(nameservers=[dead], timeout_seconds=0.5))
    result = await resolve_mx(resolver, "example.test", max_hosts=5)
    assert not result.ok
    assert not result.permanent
    assert result.error.startswith("451 4.4.3 ")
    host = await resolve_host(resolver, "mx1.example.test")
    assert not host.ok
    assert host.error.startswith("451 4.4.3 ")


class FailingAddresses:
    """A resolver whose MX answers come from the real server and whose address lookups
    fail for now: an MX host that cannot be looked up makes the result temporary."""

    def __init__(self, real, failing: str) -> None:
        self.real = real
        self.failing = failing

    async def resolve(self, name, rdtype, **kwargs):
        import dns.rdatatype
        import dns.resolver

        if rdtype != dns.rdatatype.MX and str(name).startswith(self.failing):
            raise dns.resolver.NoNameservers()
        return await self.real.resolve(name, rdtype, **kwargs)


async def test_address_lookup_failure_is_temporary(resolver) -> None:
    failing = FailingAddresses(resolver, "mx")
    result = await resolve_mx(failing, "example.test", max_hosts=5)
    assert not result.ok
    assert not result.permanent
    assert result.error.startswith("451 4.4.3 ")
    # Only some hosts failing: the others are used.
    partly = FailingAddresses(resolver, "mx3")
    result = await resolve_mx(partly, "example.test", max_hosts=5)
    assert {h.name for h in result.hosts} == {"mx1.example.test", "mx2.example.test"}


# --- hosts without MX lookup ----------------------------------------------------------------------


async def test_ip_literal_needs_no_dns(resolver, zone) -> None:
    zone.queries.clear()
    v4 = await resolve_host(resolver, "192.0.2.77")
    v6 = await resolve_host(resolver, "[2001:DB8::7]")
    assert v4.hosts[0].addresses == ("192.0.2.77",)
    assert v6.hosts[0].addresses == ("2001:db8::7",)
    assert zone.queries == []


async def test_bracketed_host_uses_addresses_not_mx(resolver, zone) -> None:
    zone.queries.clear()
    result = await resolve_host(resolver, "mx3.example.test")
    assert [(h.name, h.addresses) for h in result.hosts] == [("mx3.example.test", ("192.0.2.3",))]
    assert all(rtype in ("A", "AAAA") for _, rtype in zone.queries)
    missing = await resolve_host(resolver, "nothere.example.test")
    assert not missing.ok
    assert missing.permanent
    assert missing.error.startswith("550 5.4.4 ")


# --- the resolver from settings -------------------------------------------------------------------


def test_resolver_follows_the_settings(zone) -> None:
    resolver = make_async_resolver(
        DNSSettings(nameservers=[zone.address, "[::1]:5353"], timeout_seconds=4)
    )
    servers = [(ns.address, ns.port) for ns in resolver.nameservers]
    assert servers == [("127.0.0.1", zone.port), ("::1", 5353)]
    assert resolver.lifetime == 4


def test_bad_nameserver_names_the_entry() -> None:
    with pytest.raises(ResolverConfigError, match=r"dns\.nameservers\[1\]"):
        make_async_resolver(DNSSettings(nameservers=["127.0.0.1", "dns.example:53"]))


def test_validating_servers_get_the_ad_bit() -> None:
    import dns.flags

    resolver = make_async_resolver(DNSSettings(nameservers=["127.0.0.1"], dnssec_validating=True))
    assert resolver.flags is not None
    assert resolver.flags & dns.flags.AD
