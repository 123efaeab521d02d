"""The DNS doctor's checks (pochta.dns.doctor), each against a good and a bad zone served by
the loopback ZoneServer."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pochta.directory.model import DkimSelector
from pochta.dns import doctor
from pochta.dns.doctor import FetchedPolicy, Finding
from pochta.dns.records import Record
from pochta.mailauth.dkim_keys import dkim_txt_value, generate_selector
from pochta.mailauth.spf import DnspythonSpfDns
from tests.dnsserver import ZoneServer

DOMAIN = "example.test"
HOST = "mail.example.test"
IP = "192.0.2.10"
IP6 = "2001:db8::10"
REV = "10.2.0.192.in-addr.arpa"

BASE = f"""
{HOST}. 300 IN A {IP}
{HOST}. 300 IN AAAA {IP6}
{HOST}. 300 IN TXT "v=spf1 a -all"
{REV}. 300 IN PTR {HOST}.
0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR {HOST}.
{DOMAIN}. 300 IN MX 10 {HOST}.
{DOMAIN}. 300 IN TXT "v=spf1 redirect=_spf.{HOST}"
_spf.{HOST}. 300 IN TXT "v=spf1 ip4:{IP} ip6:{IP6} -all"
_dmarc.{DOMAIN}. 300 IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{DOMAIN}"
_mta-sts.{DOMAIN}. 300 IN TXT "v=STSv1; id=20250101"
"""


@pytest.fixture
def server() -> Iterator[ZoneServer]:
    with ZoneServer(BASE) as s:
        yield s


def _statuses(findings: list[Finding]) -> list[str]:
    return [f.status for f in findings]


def _one(findings: list[Finding], status: str) -> Finding:
    hits = [f for f in findings if f.status == status]
    assert len(hits) == 1, findings
    return hits[0]


# -- 1. forward-confirmed reverse DNS --------------------------------------------------------


async def test_fcrdns_good(server: ZoneServer) -> None:
    found = await doctor.check_fcrdns(server.async_resolver(), HOST, [IP, IP6])
    assert _statuses(found) == ["OK", "OK"]


async def test_fcrdns_ptr_names_another_host(server: ZoneServer) -> None:
    server.load(
        BASE.replace(f"{REV}. 300 IN PTR {HOST}.", f"{REV}. 300 IN PTR vps-1.hoster.example.")
    )
    found = await doctor.check_fcrdns(server.async_resolver(), HOST, [IP])
    wrong = _one(found, "WRONG")
    assert wrong.found == ("vps-1.hoster.example.",)
    assert "RFC 5321 §4.1.4" in wrong.detail
    assert wrong.fix == f"ask the provider of {IP} to set:  {REV}. 3600 IN PTR {HOST}."


async def test_fcrdns_missing_ptr(server: ZoneServer) -> None:
    server.load(BASE.replace(f"{REV}. 300 IN PTR {HOST}.", ""))
    found = await doctor.check_fcrdns(server.async_resolver(), HOST, [IP])
    assert _one(found, "MISSING").fix.endswith(f"{REV}. 3600 IN PTR {HOST}.")


async def test_fcrdns_name_does_not_resolve_back(server: ZoneServer) -> None:
    server.load(BASE.replace(f"{HOST}. 300 IN A {IP}", f"{HOST}. 300 IN A 192.0.2.99"))
    found = await doctor.check_fcrdns(server.async_resolver(), HOST, [IP])
    wrong = _one(found, "WRONG")
    assert "does not resolve back" in wrong.detail
    assert wrong.fix == f"publish:  {HOST}. 3600 IN A {IP}"


# -- 2. SPF -----------------------------------------------------------------------------------


async def _spf(server: ZoneServer, ips: list[str], expected: list[Record] = []) -> list[Finding]:  # noqa: B006
    resolver = server.async_resolver()
    return await doctor.check_spf(resolver, DnspythonSpfDns(resolver), DOMAIN, HOST, ips, expected)


async def test_spf_passes_for_domain_and_helo(server: ZoneServer) -> None:
    found = await _spf(server, [IP, IP6])
    assert _statuses(found) == ["OK"] * 4
    assert found[0].detail == f"pass; 1 of 10 DNS lookups: include/redirect:_spf.{HOST}"


async def test_spf_fails_for_our_ip(server: ZoneServer) -> None:
    expected = [Record(f"_spf.{HOST}", "TXT", f"v=spf1 ip4:{IP} -all")]
    server.load(BASE.replace(f"ip4:{IP} ", "ip4:192.0.2.99 "))
    found = await _spf(server, [IP], expected)
    wrong = _one(found, "WRONG")
    assert "SPF gives fail, not pass" in wrong.detail
    assert wrong.fix == f'publish:  _spf.{HOST}. 3600 IN TXT "v=spf1 ip4:{IP} -all"'


async def test_spf_two_records(server: ZoneServer) -> None:
    server.load(BASE + f'{DOMAIN}. 300 IN TXT "v=spf1 mx -all"\n')
    found = await _spf(server, [IP])
    wrong = _one(found, "WRONG")
    assert "2 SPF records" in wrong.detail
    assert "RFC 7208 §4.5" in wrong.detail


async def test_spf_too_many_lookups_names_the_terms(server: ZoneServer) -> None:
    includes = " ".join(f"include:i{n}.sp" for n in range(11))  # short: one TXT string
    extra = "".join(f'i{n}.sp. 300 IN TXT "v=spf1 -all"\n' for n in range(11))
    server.load(
        BASE.replace(f'"v=spf1 redirect=_spf.{HOST}"', f'"v=spf1 {includes} ip4:{IP} -all"') + extra
    )
    found = await _spf(server, [IP])
    wrong = _one(found, "WRONG")
    assert wrong.detail.startswith("over 10 of 10 DNS lookups: include/redirect:i0.sp")
    assert "include/redirect:i9.sp (the next term was refused)" in wrong.detail
    assert "RFC 7208 §4.6.4" in wrong.detail


async def test_spf_too_many_void_lookups(server: ZoneServer) -> None:
    server.load(
        BASE.replace(
            f'"v=spf1 redirect=_spf.{HOST}"',
            f'"v=spf1 a:v1.{DOMAIN} a:v2.{DOMAIN} a:v3.{DOMAIN} ip4:{IP} -all"',
        )
    )
    found = await _spf(server, [IP])
    wrong = _one(found, "WRONG")
    assert "3 void" in wrong.detail
    assert f"a/exists:v1.{DOMAIN} (void)" in wrong.detail


# -- 3. MX ------------------------------------------------------------------------------------


async def test_mx_good(server: ZoneServer) -> None:
    assert _statuses(await doctor.check_mx(server.async_resolver(), DOMAIN, HOST)) == ["OK"]


@pytest.mark.parametrize(
    ("mx", "extra", "words"),
    [
        (f"10 {IP}.", "", "IP address (RFC 5321 §5.1)"),
        (f"10 mx.{DOMAIN}.", f"mx.{DOMAIN}. 300 IN CNAME {HOST}.\n", "RFC 2181 §10.3"),
        ("10 mx.elsewhere.example.", "", f"not at {HOST}"),
    ],
)
async def test_mx_wrong(server: ZoneServer, mx: str, extra: str, words: str) -> None:
    server.load(BASE.replace(f"MX 10 {HOST}.", f"MX {mx}") + extra)
    found = await doctor.check_mx(server.async_resolver(), DOMAIN, HOST)
    wrong = _one(found, "WRONG")
    assert words in wrong.detail
    assert wrong.fix == f"publish:  {DOMAIN}. 3600 IN MX 10 {HOST}."


async def test_mx_missing(server: ZoneServer) -> None:
    server.load(BASE.replace(f"{DOMAIN}. 300 IN MX 10 {HOST}.", ""))
    assert _statuses(await doctor.check_mx(server.async_resolver(), DOMAIN, HOST)) == ["MISSING"]


# -- 4. DKIM ----------------------------------------------------------------------------------


@pytest.fixture
def selectors(tmp_path: Path) -> list[DkimSelector]:
    rsa_sel = generate_selector(DOMAIN, tmp_path, "rsa-sha256", "rsa1", 1024)
    ed_sel = generate_selector(DOMAIN, tmp_path, "ed25519-sha256", "ed1")
    return [rsa_sel, ed_sel]


def _dkim_zone(selectors: list[DkimSelector]) -> str:
    lines = []
    for sel in selectors:
        value = dkim_txt_value(sel)
        parts = " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))
        lines.append(f"{sel.selector}._domainkey.{DOMAIN}. 300 IN TXT {parts}")
    return BASE + "\n".join(lines) + "\n"


async def test_dkim_good(server: ZoneServer, selectors: list[DkimSelector]) -> None:
    server.load(_dkim_zone(selectors))
    found = await doctor.check_dkim(server.async_resolver(), DOMAIN, selectors)
    assert _statuses(found) == ["OK", "OK"]


def _pkcs1_public(sel: DkimSelector) -> str:
    """The selector's RSA public key as a bare PKCS#1 RSAPublicKey, base64 (not the SPKI)."""
    key = serialization.load_pem_private_key(Path(sel.key_path).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pkcs1 = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return base64.b64encode(pkcs1).decode()


async def test_dkim_pkcs1_rsa_key_is_the_same_key(
    server: ZoneServer, selectors: list[DkimSelector]
) -> None:
    rsa_sel = selectors[0]
    p = _pkcs1_public(rsa_sel)
    server.load(BASE + f'rsa1._domainkey.{DOMAIN}. 300 IN TXT "v=DKIM1; p={p}"\n')
    found = await doctor.check_dkim(server.async_resolver(), DOMAIN, [rsa_sel])
    assert _statuses(found) == ["OK"]


async def test_dkim_missing_and_not_ours(
    server: ZoneServer, selectors: list[DkimSelector], tmp_path: Path
) -> None:
    other = generate_selector(DOMAIN, tmp_path / "other", "ed25519-sha256", "ed1")
    # ed1 publishes another key (a string compare of the record would differ too, so the
    # RSA case below is the one that proves the key material is compared).
    server.load(_dkim_zone([other]))
    found = await doctor.check_dkim(server.async_resolver(), DOMAIN, selectors)
    assert _statuses(found) == ["MISSING", "WRONG"]
    assert found[0].fix.startswith(f"publish:  rsa1._domainkey.{DOMAIN}. 3600 IN TXT ")
    assert "not the public half" in found[1].detail
    ours = dkim_txt_value(selectors[1])
    assert found[1].fix == f'publish:  ed1._domainkey.{DOMAIN}. 3600 IN TXT "{ours}"'


# -- 5. DMARC ---------------------------------------------------------------------------------


async def test_dmarc_good(server: ZoneServer) -> None:
    assert _statuses(await doctor.check_dmarc(server.async_resolver(), DOMAIN)) == ["OK"]


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ("v=DMARC1; p=block", "syntax: p='block'"),
        ("v=DMARC1; p=reject; pct=150", "syntax: pct='150'"),
        ("p=reject; v=DMARC1", 'must start with "v=DMARC1"'),
    ],
)
async def test_dmarc_syntax(server: ZoneServer, record: str, words: str) -> None:
    expected = [Record(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=quarantine")]
    server.load(
        BASE.replace(f'"v=DMARC1; p=quarantine; rua=mailto:postmaster@{DOMAIN}"', f'"{record}"')
    )
    found = await doctor.check_dmarc(server.async_resolver(), DOMAIN, expected)
    wrong = _one(found, "WRONG")
    assert words in wrong.detail
    assert wrong.fix == f'publish:  _dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1; p=quarantine"'


async def test_dmarc_outside_report_target_needs_authorisation(server: ZoneServer) -> None:
    zone = BASE.replace(
        f"rua=mailto:postmaster@{DOMAIN}",
        "rua=mailto:a@reports.example.net; ruf=mailto:f@forensic.example.org",
    )
    server.load(zone)
    found = await doctor.check_dmarc(server.async_resolver(), DOMAIN)
    assert _statuses(found) == ["OK", "WRONG", "WRONG"]
    assert found[1].fix == (
        f"reports.example.net must publish:  {DOMAIN}._report._dmarc.reports.example.net. "
        '3600 IN TXT "v=DMARC1"'
    )
    server.load(zone + f'{DOMAIN}._report._dmarc.reports.example.net. 300 IN TXT "v=DMARC1"\n')
    found = await doctor.check_dmarc(server.async_resolver(), DOMAIN)
    assert _statuses(found) == ["OK", "OK", "WRONG"]


# -- 6. MTA-STS -------------------------------------------------------------------------------


def _fetch(mx: tuple[str, ...], error: str = "") -> doctor.PolicyFetch:
    async def fetch(domain: str) -> FetchedPolicy:
        if error:
            raise OSError(error)
        return FetchedPolicy("enforce", mx, lambda host: host in mx)

    return fetch


async def test_mta_sts_good(server: ZoneServer) -> None:
    found = await doctor.check_mta_sts(server.async_resolver(), DOMAIN, HOST, _fetch((HOST,)))
    assert _statuses(found) == ["OK", "OK"]


async def test_mta_sts_policy_does_not_cover_the_mx(server: ZoneServer) -> None:
    found = await doctor.check_mta_sts(
        server.async_resolver(), DOMAIN, HOST, _fetch(("old.example.test",))
    )
    wrong = _one(found, "WRONG")
    assert "RFC 8461 §4.1" in wrong.detail
    assert wrong.fix == f"add to the policy file:  mx: {HOST}"


async def test_mta_sts_fetch_failure_and_missing_record(server: ZoneServer) -> None:
    found = await doctor.check_mta_sts(
        server.async_resolver(), DOMAIN, HOST, _fetch((), "certificate verify failed")
    )
    assert "certificate verify failed" in _one(found, "WRONG").detail
    server.load(BASE.replace(f'_mta-sts.{DOMAIN}. 300 IN TXT "v=STSv1; id=20250101"', ""))
    found = await doctor.check_mta_sts(server.async_resolver(), DOMAIN, HOST, _fetch((HOST,)))
    assert _statuses(found) == ["MISSING"]
    assert not found[0].bad  # optional: no exit status for it


# -- 7. blocklists ----------------------------------------------------------------------------


async def test_blocklists(server: ZoneServer) -> None:
    server.load(
        BASE
        + "10.2.0.192.bl.example. 300 IN A 127.0.0.2\n"
        + '10.2.0.192.bl.example. 300 IN TXT "listed for spam, see https://bl.example/"\n'
        + "10.2.0.192.zen.spamhaus.org. 300 IN A 127.255.255.254\n"
        + "10.2.0.192.odd.example. 300 IN A 10.0.0.1\n"
        + "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example. 300 IN A"
        " 127.0.0.4\n"
    )
    zones = ["bl.example", "zen.spamhaus.org", "clean.example", "odd.example"]
    found = await doctor.check_blocklists(server.async_resolver(), [IP, IP6], zones)
    assert _statuses(found) == [
        "LISTED",
        "COULD-NOT-CHECK",
        "OK",
        "COULD-NOT-CHECK",
        "LISTED",
        "OK",
        "OK",
        "OK",
    ]
    assert "see https://bl.example/" in found[0].detail
    assert "public/open resolver" in found[1].detail
    assert not found[1].bad
    assert found[0].bad


# -- the addresses ----------------------------------------------------------------------------


async def test_host_addresses_from_dns(server: ZoneServer) -> None:
    assert await doctor.host_addresses(server.async_resolver(), HOST) == [IP, IP6]
