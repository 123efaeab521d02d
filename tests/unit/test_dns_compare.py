"""dns/compare.py without DNS: each record type parsed by its RFC and compared by meaning."""

from __future__ import annotations

import base64
import contextlib

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from pochta.dns.compare import (
    Comparison,
    KeyRecordError,
    SpfSyntaxError,
    compare_address,
    compare_dkim,
    compare_dmarc,
    compare_mx,
    compare_spf,
    compare_srv,
    compare_tlsrpt,
    parse_dkim_key,
    parse_spf,
)
from pochta.dns.records import Record
from pochta.mailauth.spf import SpfResult

DOMAIN = "example.test"
HOST = "mail.example.test"
# Fixed keys: the parameters name the tests, which must be the same in every test process.
KEY = base64.b64encode(
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw()
)
OTHER = base64.b64encode(
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1] * 32)).public_key().public_bytes_raw()
)
DKIM = Record(f"s1._domainkey.{DOMAIN}", "TXT", f"v=DKIM1; k=ed25519; p={KEY.decode()}")
DMARC = Record(f"_dmarc.{DOMAIN}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:d@{DOMAIN}")


def _rdatas(rtype: str, *values: str) -> list[dns.rdata.Rdata]:
    kind = dns.rdatatype.from_text(rtype)
    return [
        dns.rdata.from_text(dns.rdataclass.IN, kind, v, dns.name.root, relativize=False)
        for v in values
    ]


# -- SPF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "v=spf1 mx ~all",
        "v=spf1 a mx ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.org -all",
        "v=spf1  redirect=_spf.mail.example.test",
        "v=spf1 a:mail.example.test/24//64 ?all exp=explain.example.test",
        "V=SPF1 +MX -ALL",
    ],
)
def test_parse_spf_accepts_the_guides_records(text: str) -> None:
    parse_spf(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("v=spf1 mx foo -all", "not an SPF mechanism"),
        ("v=spf1 ip4:300.1.2.3 -all", "ip4:<IPv4 network>"),
        ("v=spf1 ip4:2001:db8::1 -all", "ip4:<IPv4 network>"),
        ("v=spf1 include -all", "include needs :domain"),
        ("v=spf1 redirect=a.test redirect=b.test", "appears twice"),
        ("v=spf1 all:x", "all takes no argument"),
        ("spf1 mx -all", "v=spf1"),
    ],
)
def test_parse_spf_refuses_permerrors(text: str, why: str) -> None:
    with pytest.raises(SpfSyntaxError, match=why):
        parse_spf(text)


@given(st.text())
def test_parse_spf_raises_only_its_error(text: str) -> None:
    with contextlib.suppress(SpfSyntaxError):
        parse_spf("v=spf1 " + text)


def _evaluator(results: dict[str, str]):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, str]] = []

    async def evaluate(ip: str, name: str) -> SpfResult:
        calls.append((ip, name))
        return SpfResult(result=results.get(ip, "fail"), reason=f"evaluated {ip}")  # type: ignore[arg-type]

    return evaluate, calls


SPF = Record(DOMAIN, "TXT", f"v=spf1 redirect=_spf.{HOST}")


async def test_spf_is_evaluated_for_ours_and_for_other_addresses() -> None:
    evaluate, calls = _evaluator({"192.0.2.10": "pass", "203.0.113.254": "neutral"})
    got = await compare_spf(SPF, ["v=spf1 mx ?all"], evaluate, ["192.0.2.10"])
    assert got.status == "VALID-BUT-DIFFERENT"
    assert got.notes[0].startswith("?all: neutral")
    assert calls == [("192.0.2.10", DOMAIN), ("203.0.113.254", DOMAIN)]


async def test_spf_same_meaning_written_otherwise_matches() -> None:
    evaluate, _ = _evaluator({"192.0.2.10": "pass"})
    got = await compare_spf(SPF, ["v=spf1 ip4:192.0.2.10 -all"], evaluate, ["192.0.2.10"])
    assert got.status == "MATCH"
    assert "same meaning" in got.notes[0]


async def test_spf_plus_all_and_failing_ours_are_broken() -> None:
    evaluate, _ = _evaluator({"192.0.2.10": "pass", "203.0.113.254": "pass"})
    got = await compare_spf(SPF, ["v=spf1 +all"], evaluate, ["192.0.2.10"])
    assert got.status == "BROKEN"
    assert "anyone can send" in got.notes[0]
    evaluate, _ = _evaluator({"192.0.2.10": "softfail"})
    got = await compare_spf(SPF, ["v=spf1 ip4:192.0.2.99 ~all"], evaluate, ["192.0.2.10"])
    assert got.status == "BROKEN"
    assert got.bad
    assert "does not authorise 192.0.2.10" in got.notes[0]


async def test_spf_without_our_addresses_compares_the_terms() -> None:
    evaluate, calls = _evaluator({})
    same = await compare_spf(SPF, [f"v=spf1 REDIRECT=_spf.{HOST}"], evaluate, [])
    assert same.status == "MATCH"
    other = await compare_spf(SPF, ["v=spf1 mx -all"], evaluate, [])
    assert other.status == "VALID-BUT-DIFFERENT"
    assert "pass --ip" in other.notes[0]
    assert calls == []


# -- DKIM -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        f"k=ed25519; p={KEY.decode()}",  # v= is optional (RFC 6376 §3.6.1)
        f"v=DKIM1 ; p = {KEY.decode()[:10]} {KEY.decode()[10:]} ; k = ed25519 ; n=note;",
        f"v=DKIM1; k=ed25519; h=sha256; s=email; p={KEY.decode()}",
    ],
)
def test_dkim_same_key_written_otherwise_matches(value: str) -> None:
    assert compare_dkim(DKIM, [value]).status == "MATCH"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"v=DKIM1; k=ed25519; p={OTHER.decode()}", "not our public key"),
        ("v=DKIM1; k=ed25519; p=", "revoked"),
        (f"v=DKIM1; p={KEY.decode()}", "k=rsa, ours: k=ed25519"),
        (f"v=DKIM1; k=ed25519; h=sha1; p={KEY.decode()}", "does not allow sha256"),
        (f"v=DKIM1; k=ed25519; s=tlsrpt; p={KEY.decode()}", "not for email"),
        (f"k=ed25519; v=DKIM1; p={KEY.decode()}", "v= must come first"),
        (f"v=DKIM1; k=ed25519; k=rsa; p={KEY.decode()}", "appears twice"),
    ],
)
def test_dkim_broken(value: str, why: str) -> None:
    got = compare_dkim(DKIM, [value])
    assert got.status == "BROKEN"
    assert why in got.notes[0]


def test_dkim_testing_flag_is_a_difference() -> None:
    got = compare_dkim(DKIM, [f"v=DKIM1; k=ed25519; t=y:s; p={KEY.decode()}"])
    assert got.status == "VALID-BUT-DIFFERENT"
    assert [n[:4] for n in got.notes] == ["t=y:", "t=s:"]


def test_dkim_other_txt_only_is_missing() -> None:
    assert compare_dkim(DKIM, ["google-site-verification=x"]).status == "MISSING"


@given(st.text())
def test_parse_dkim_key_raises_only_its_error(text: str) -> None:
    with contextlib.suppress(KeyRecordError):
        parse_dkim_key(text)


# -- DMARC ------------------------------------------------------------------------------------


def test_dmarc_differences_say_what_they_mean() -> None:
    got = compare_dmarc(
        DMARC,
        [f"v=DMARC1; p=quarantine; sp=none; pct=50; adkim=s; rua=mailto:other@{DOMAIN}"],
    )
    assert got.status == "VALID-BUT-DIFFERENT"
    assert [n.split(":")[0] for n in got.notes] == ["sp=none", "pct=50", "adkim=s", "rua=mailto"]
    assert "pochta report dmarc shows none" in got.notes[3]


def test_dmarc_same_meaning_matches_and_syntax_errors_break() -> None:
    same = f"v=DMARC1;rua=MAILTO:d@{DOMAIN};  p=quarantine; adkim=r; pct=100"
    assert compare_dmarc(DMARC, [same]).status == "MATCH"
    broken = compare_dmarc(DMARC, ["v=DMARC1; p=quarantine; pct=200"])
    assert broken.status == "BROKEN"
    assert broken.notes[0].startswith("syntax: pct=")
    two = compare_dmarc(DMARC, ["v=DMARC1; p=none", "v=DMARC1; p=reject"])
    assert (two.status, "RFC 7489 §6.6.3" in two.notes[0]) == ("BROKEN", True)


@given(st.text())
def test_compare_dmarc_always_gives_a_comparison(text: str) -> None:
    assert isinstance(compare_dmarc(DMARC, ["v=DMARC1; " + text]), Comparison)


# -- TLS-RPT, MX, addresses, SRV --------------------------------------------------------------


def test_tlsrpt() -> None:
    ours = Record(f"_smtp._tls.{DOMAIN}", "TXT", f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}")
    also = f"v=TLSRPTv1; rua=https://reports.example.org/tls,mailto:tlsrpt@{DOMAIN}"
    assert compare_tlsrpt(ours, [also]).status == "MATCH"
    other = compare_tlsrpt(ours, ["v=TLSRPTv1; rua=https://reports.example.org/tls"])
    assert other.status == "VALID-BUT-DIFFERENT"
    assert compare_tlsrpt(ours, ["v=TLSRPTv1; rua=ftp://x"]).status == "BROKEN"


def test_mx() -> None:
    ours = Record(DOMAIN, "MX", f"10 {HOST}.")
    assert compare_mx(ours, _rdatas("MX", f"5 {HOST}.")).status == "MATCH"
    backup = compare_mx(ours, _rdatas("MX", f"10 {HOST}.", "20 backup.example.org."))
    assert (backup.status, "backup MX" in backup.notes[0]) == ("VALID-BUT-DIFFERENT", True)
    first = compare_mx(ours, _rdatas("MX", f"10 {HOST}.", "5 relay.example.org."))
    assert "senders try it first" in first.notes[0]
    elsewhere = compare_mx(ours, _rdatas("MX", "10 mx.example.org."))
    assert (elsewhere.status, elsewhere.bad) == ("BROKEN", True)
    null = compare_mx(ours, _rdatas("MX", "0 ."))
    assert (null.status, "RFC 7505" in null.notes[0]) == ("BROKEN", True)


def test_addresses() -> None:
    ours = Record(HOST, "A", "192.0.2.10")
    assert compare_address(ours, _rdatas("A", "192.0.2.10")).status == "MATCH"
    assert compare_address(ours, _rdatas("A", "192.0.2.10", "192.0.2.11")).status == (
        "VALID-BUT-DIFFERENT"
    )
    assert compare_address(ours, _rdatas("A", "192.0.2.99")).status == "BROKEN"


def test_srv() -> None:
    ours = Record(f"_imaps._tcp.{DOMAIN}", "SRV", f"0 1 993 {HOST}.", required=False)
    assert compare_srv(ours, _rdatas("SRV", f"0 1 993 {HOST}.")).status == "MATCH"
    order = compare_srv(ours, _rdatas("SRV", f"5 0 993 {HOST}."))
    assert order.status == "VALID-BUT-DIFFERENT"
    assert "RFC 6186 §3.4" in order.notes[0]
    assert compare_srv(ours, _rdatas("SRV", f"0 1 143 {HOST}.")).status == "BROKEN"
    assert "not offered" in compare_srv(ours, _rdatas("SRV", "0 0 0 .")).notes[0]
    off = Record(f"_pop3._tcp.{DOMAIN}", "SRV", "0 0 0 .", required=False)
    assert compare_srv(off, _rdatas("SRV", "0 0 0 .")).status == "MATCH"
    assert compare_srv(off, _rdatas("SRV", f"0 1 110 {HOST}.")).status == "BROKEN"
