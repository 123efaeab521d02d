"""The records a domain needs, their zone-file form, and the comparison with DNS answers."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.zone
import pytest

from pochta.directory.model import DkimSelector
from pochta.dns.compare import Comparison, compare_records
from pochta.dns.records import (
    Record,
    host_signing_records,
    mail_host_records,
    mta_sts_policy,
    parse_nameserver,
    render_zone,
    required_records,
)
from pochta.mailauth.dkim_keys import dkim_txt_value, generate_selector
from pochta.mailauth.spf import DnspythonSpfDns
from tests.dnsserver import ZoneServer

DOMAIN = "example.test"
HOST = "mail.example.test"
IPV4 = "192.0.2.10"
IPV6 = "2001:db8::10"
NOW = dt.datetime(2025, 1, 6, 12, 30, 45, tzinfo=dt.UTC)

# RFC 7208 §12 (basics): "v=spf1" then terms separated by spaces; a term is a mechanism with
# an optional qualifier, or a modifier name=value.
_SPF_TERM = (
    r"(?:[+?~-]?(?:all|include:\S+|a(?::\S+)?|mx(?::\S+)?|ptr(?::\S+)?|ip4:[0-9./]+"
    r"|ip6:[0-9a-fA-F:./]+|exists:\S+)|[A-Za-z][A-Za-z0-9_.-]*=\S*)"
)
SPF_RECORD = re.compile(rf"^v=spf1(?: +{_SPF_TERM})* *$")


@pytest.fixture(scope="module")
def selectors(tmp_path_factory: pytest.TempPathFactory) -> list[DkimSelector]:
    keys: Path = tmp_path_factory.mktemp("dkim")
    active = generate_selector(DOMAIN, keys, "rsa-sha256", selector="rsa-202501")
    retired = generate_selector(DOMAIN, keys, "ed25519-sha256", selector="ed-202412")
    ed = generate_selector(DOMAIN, keys, "ed25519-sha256", selector="ed-202501")
    return [active, DkimSelector(**{**_fields(retired), "active": False}), ed]


def _fields(sel: DkimSelector) -> dict[str, object]:
    return {f: getattr(sel, f) for f in sel.__struct_fields__}


@pytest.fixture(scope="module")
def records(selectors: list[DkimSelector]) -> list[Record]:
    return required_records(DOMAIN, HOST, selectors, IPV4, IPV6, now=NOW)


def _by_key(records: list[Record]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for r in records:
        out.setdefault((r.name, r.rtype), []).append(r.value)
    return out


def test_record_set(records: list[Record], selectors: list[DkimSelector]) -> None:
    got = _by_key(records)
    expected = {
        (HOST, "A"): [IPV4],
        (HOST, "AAAA"): [IPV6],
        ("10.2.0.192.in-addr.arpa", "PTR"): [f"{HOST}."],
        (
            "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            "PTR",
        ): [f"{HOST}."],
        (HOST, "TXT"): ["v=spf1 a -all"],
        (f"_spf.{HOST}", "TXT"): [f"v=spf1 ip4:{IPV4} ip6:{IPV6} -all"],
        (DOMAIN, "MX"): [f"10 {HOST}."],
        (DOMAIN, "TXT"): [f"v=spf1 redirect=_spf.{HOST}"],
        **{(f"{s.selector}._domainkey.{DOMAIN}", "TXT"): [dkim_txt_value(s)] for s in selectors},
        (f"_dmarc.{DOMAIN}", "TXT"): [f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{DOMAIN}"],
        (f"_mta-sts.{DOMAIN}", "TXT"): ["v=STSv1; id=20250106123045"],
        (f"mta-sts.{DOMAIN}", "CNAME"): [f"{HOST}."],
        (f"_smtp._tls.{DOMAIN}", "TXT"): [f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"],
        (f"autoconfig.{DOMAIN}", "CNAME"): [f"{HOST}."],
        (f"autodiscover.{DOMAIN}", "CNAME"): [f"{HOST}."],
        (f"_submissions._tcp.{DOMAIN}", "SRV"): [f"0 1 465 {HOST}."],
        (f"_submission._tcp.{DOMAIN}", "SRV"): [f"10 1 587 {HOST}."],
        (f"_imaps._tcp.{DOMAIN}", "SRV"): [f"0 1 993 {HOST}."],
        (f"_imap._tcp.{DOMAIN}", "SRV"): [f"10 1 143 {HOST}."],
        (f"_pop3s._tcp.{DOMAIN}", "SRV"): [f"20 1 995 {HOST}."],
        (f"_pop3._tcp.{DOMAIN}", "SRV"): [f"30 1 110 {HOST}."],
        (f"_autodiscover._tcp.{DOMAIN}", "SRV"): [f"0 0 443 {HOST}."],
    }
    assert got == expected
    assert all(r.comment for r in records)


def test_srv_prefers_tls(records: list[Record]) -> None:
    prio = {r.name.split(".")[0]: int(r.value.split()[0]) for r in records if r.rtype == "SRV"}
    # RFC 8314 §5.1: implicit TLS preferred; RFC 6186 §3.4: IMAP before POP3.
    assert prio["_submissions"] < prio["_submission"]
    assert prio["_imaps"] < prio["_imap"] < prio["_pop3s"] < prio["_pop3"]


def test_spf_records_follow_rfc7208(records: list[Record]) -> None:
    spf = [r for r in records if r.rtype == "TXT" and r.value.startswith("v=spf1")]
    assert len(spf) == 3
    for r in spf:
        assert SPF_RECORD.match(r.value), r.value
    # RFC 7208 §4.5: one SPF record per name.
    assert len({r.name for r in spf}) == len(spf)
    domain_spf = next(r.value for r in spf if r.name == DOMAIN)
    terms = domain_spf.split()[1:]
    # RFC 7208 §6.1: redirect is ignored when there is an "all" mechanism.
    assert terms == [f"redirect=_spf.{HOST}"]
    assert not any(re.fullmatch(r"[+?~-]?all", t) for t in terms)
    assert next(r.value for r in spf if r.name == f"_spf.{HOST}").endswith(" -all")


def test_dkim_records_include_retired_selector(
    records: list[Record], selectors: list[DkimSelector]
) -> None:
    dkim = [r for r in records if "._domainkey." in r.name]
    assert [r.name.split(".")[0] for r in dkim] == ["rsa-202501", "ed-202412", "ed-202501"]
    retired = dkim[1]
    assert "pochta dkim retire example.test ed-202412" in retired.comment
    assert "active" in dkim[0].comment


def test_zone_parses_back(records: list[Record]) -> None:
    text = render_zone(records)
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
    rdatas = list(zone.iterate_rdatas())
    assert len(rdatas) == len(records)
    for rec in records:
        node = zone.get_node(dns.name.from_text(rec.name + "."))
        assert node is not None, rec.name
        rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rec.rtype))
        assert rdataset is not None
        assert rdataset.ttl == 3600
        if rec.rtype == "TXT":
            joined = [b"".join(rd.strings).decode() for rd in rdataset]
            assert rec.value in joined
            for rd in rdataset:
                assert all(len(s) <= 255 for s in rd.strings)
        else:
            assert any(rd.to_text() == rec.value for rd in rdataset)
    # The long RSA key really is split into several strings.
    rsa_node = zone.get_node(dns.name.from_text(f"rsa-202501._domainkey.{DOMAIN}."))
    assert rsa_node is not None
    rsa_txt = rsa_node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.TXT)
    assert rsa_txt is not None
    assert len(next(iter(rsa_txt)).strings) == 2


def test_zone_layout(records: list[Record]) -> None:
    lines = render_zone(records).splitlines()
    record_line = re.compile(r"^\S+\. 3600 IN [A-Z]+ \S.*$")
    for i, line in enumerate(lines):
        if not line or line.startswith(";"):
            continue
        assert record_line.match(line), line
        # Each group starts with a comment line.
        j = i
        while j > 0 and lines[j - 1] and not lines[j - 1].startswith(";"):
            j -= 1
        assert j > 0, line
        assert lines[j - 1].startswith(";"), line
    assert all(len(line) <= 100 for line in lines if line.startswith(";"))
    text = "\n".join(lines)
    assert "mode: testing" in text
    assert "mode: enforce" in text
    assert "p=quarantine" in text


def test_without_addresses() -> None:
    recs = required_records(DOMAIN, HOST, [], None, None, now=NOW)
    types = {r.rtype for r in recs}
    assert not types & {"A", "AAAA", "PTR"}
    spf = _by_key(recs)[(f"_spf.{HOST}", "TXT")]
    assert spf == [f"v=spf1 a:{HOST} -all"]


def test_host_is_the_domain() -> None:
    recs = required_records(DOMAIN, DOMAIN, [], IPV4, None, now=NOW)
    apex_txt = [r.value for r in recs if r.name == DOMAIN and r.rtype == "TXT"]
    assert apex_txt == ["v=spf1 a -all"]


def test_host_in_another_zone() -> None:
    recs = required_records("example.org", HOST, [], IPV4, None, now=NOW)
    host_a = next(r for r in recs if r.rtype == "A")
    assert f"zone of {HOST}" in host_a.comment
    mx = next(r for r in recs if r.rtype == "MX")
    assert mx.name == "example.org"
    assert _by_key(recs)[("example.org", "TXT")] == [f"v=spf1 redirect=_spf.{HOST}"]


def test_service_ports_and_report_address() -> None:
    recs = required_records(
        DOMAIN,
        HOST,
        [],
        None,
        None,
        service_ports={"pop3": None, "imap": 10143},
        report_address="reports@example.org",
        mta_sts_id="abc123",
    )
    got = _by_key(recs)
    assert got[(f"_pop3._tcp.{DOMAIN}", "SRV")] == ["0 0 0 ."]
    assert got[(f"_imap._tcp.{DOMAIN}", "SRV")] == [f"10 1 10143 {HOST}."]
    assert got[(f"_dmarc.{DOMAIN}", "TXT")] == [
        "v=DMARC1; p=quarantine; rua=mailto:reports@example.org"
    ]
    assert got[(f"_smtp._tls.{DOMAIN}", "TXT")] == ["v=TLSRPTv1; rua=mailto:reports@example.org"]
    assert got[(f"_mta-sts.{DOMAIN}", "TXT")] == ["v=STSv1; id=abc123"]


def test_mta_sts_policy() -> None:
    assert mta_sts_policy("MAIL.example.test.") == (
        "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5300", ("::1", 5300)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["ns.example", "1.2.3.4:x", "1.2.3.4:0", "[::1", "[::1]x"])
def test_parse_nameserver_errors(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_nameserver(text)


# -- checking: the meaning of each record against a DNS server on loopback (dns/compare.py) --


async def _checked(
    records: list[Record], zone_text: str, ips: tuple[str, ...] = (IPV4, IPV6)
) -> dict[tuple[str, str], Comparison]:
    with ZoneServer(zone_text, origin=".") as server:
        resolver = server.async_resolver()
        results = await compare_records(records, resolver, DnspythonSpfDns(resolver), HOST, ips)
    assert [r.record for r in results] == records
    return {(r.record.name, r.record.rtype): r for r in results}


async def test_check_all_ok(records: list[Record]) -> None:
    results = await _checked(records, render_zone(records))
    assert {k: (r.status, r.notes) for k, r in results.items() if r.status != "MATCH"} == {}
    assert not any(r.bad for r in results.values())


def _replace_line(text: str, startswith: str, new: str | None) -> str:
    lines = text.splitlines()
    idx = [i for i, line in enumerate(lines) if line.startswith(startswith)]
    assert len(idx) == 1, startswith
    if new is None:
        del lines[idx[0]]
    else:
        lines[idx[0]] = new
    return "\n".join(lines) + "\n"


async def test_check_differences(records: list[Record]) -> None:
    zone = render_zone(records)
    zone = _replace_line(
        zone,
        f"_dmarc.{DOMAIN}.",
        f'_dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"',
    )
    zone = _replace_line(zone, f"autoconfig.{DOMAIN}.", None)
    zone = _replace_line(
        zone, f"_mta-sts.{DOMAIN}.", f'_mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id=other1"'
    )
    zone += f"{DOMAIN}. 3600 IN MX 20 backup.example.org.\n"
    zone += f'{HOST}. 3600 IN TXT "v=spf1 mx -all"\n'
    results = await _checked(records, zone)
    dmarc = results[(f"_dmarc.{DOMAIN}", "TXT")]
    assert dmarc.status == "VALID-BUT-DIFFERENT"
    assert dmarc.found == (f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}",)
    assert dmarc.notes[0].startswith("p=none: monitoring only")
    autoconfig = results[(f"autoconfig.{DOMAIN}", "CNAME")]
    assert (autoconfig.status, autoconfig.required, autoconfig.bad) == ("MISSING", False, False)
    # Any valid MTA-STS id will do: it only tracks policy changes (RFC 8461 §3.1).
    assert results[(f"_mta-sts.{DOMAIN}", "TXT")].status == "MATCH"
    mx = results[(DOMAIN, "MX")]
    assert mx.status == "VALID-BUT-DIFFERENT"
    assert "backup MX" in mx.notes[0]
    host_spf = results[(HOST, "TXT")]
    assert host_spf.status == "BROKEN"
    assert host_spf.bad
    assert "RFC 7208 §4.5" in host_spf.notes[0]
    match = {k for k, r in results.items() if r.status == "MATCH"}
    assert len(match) == len(records) - 4


async def test_check_normalised_compares(
    records: list[Record], selectors: list[DkimSelector]
) -> None:
    zone = render_zone(records)
    zone = _replace_line(
        zone,
        f"_dmarc.{DOMAIN}.",
        f'_dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1;p=reject;  adkim=r; '
        f'rua=mailto:DMARC-REPORTS@{DOMAIN}"',
    )
    zone = _replace_line(zone, f"{DOMAIN}. 3600 IN TXT", None)
    zone += f'{DOMAIN}. 3600 IN TXT "v=spf1  REDIRECT=_spf.{HOST}" "" "google-site=1"\n'
    zone += f'{DOMAIN}. 3600 IN TXT "google-site-verification=abc"\n'
    sel = selectors[0]
    key = sel.public_key_b64
    zone = _replace_line(
        zone,
        f"{sel.selector}._domainkey.",
        f'{sel.selector}._domainkey.{DOMAIN}. 3600 IN TXT "v=DKIM1; k=rsa; " '
        f'"p={key[:100]}" "{key[100:300]}" "{key[300:]}"',
    )
    results = await _checked(records, zone)
    dmarc = results[(f"_dmarc.{DOMAIN}", "TXT")]
    assert dmarc.status == "VALID-BUT-DIFFERENT"
    assert dmarc.notes == (
        "p=reject: mail failing DMARC is refused; stricter than ours: check the reports first "
        "that every sender of the domain passes (RFC 7489 §6.3)",
    )
    assert results[(f"{sel.selector}._domainkey.{DOMAIN}", "TXT")].status == "MATCH"
    # "v=spf1  REDIRECT=..." joined with a trailing "google-site=1" redirects to a name
    # without SPF: receivers get a permerror (RFC 7208 §6.1).
    spf = results[(DOMAIN, "TXT")]
    assert spf.status == "BROKEN"
    assert f"does not authorise {IPV4}" in spf.notes[0]


async def test_check_wrong_dkim_key(records: list[Record], selectors: list[DkimSelector]) -> None:
    zone = render_zone(records)
    ed = selectors[2]
    zone = _replace_line(
        zone,
        f"{ed.selector}._domainkey.",
        f'{ed.selector}._domainkey.{DOMAIN}. 3600 IN TXT "v=DKIM1; k=ed25519; '
        f'p={selectors[1].public_key_b64}"',
    )
    result = (await _checked(records, zone))[(f"{ed.selector}._domainkey.{DOMAIN}", "TXT")]
    assert result.status == "BROKEN"
    assert result.notes == ("p= is not our public key: signatures with it fail",)


async def test_check_reports_resolver_errors() -> None:
    class Failing(dns.asyncresolver.Resolver):
        async def resolve(self, *args: object, **kwargs: object) -> dns.resolver.Answer:  # type: ignore[override]
            raise dns.resolver.LifetimeTimeout(timeout=5.0, errors=[])

    record = Record(DOMAIN, "MX", f"10 {HOST}.")
    failing = Failing(configure=False)
    (result,) = await compare_records([record], failing, DnspythonSpfDns(failing), HOST, ())
    assert result.status == "ERROR"
    assert result.bad
    assert result.notes[0].startswith("no answer from DNS")


# -- the host name's own keys (issue 13 point 2) ----------------------------------------------

OWN_HOST = "mx.provider.test"


def test_host_signing_records_are_the_helo_spf_and_the_host_dkim_keys(
    selectors: list[DkimSelector],
) -> None:
    section = host_signing_records(OWN_HOST + ".", selectors)
    assert [(r.name, r.rtype) for r in section] == [(OWN_HOST, "TXT")] + [
        (f"{s.selector}._domainkey.{OWN_HOST}", "TXT") for s in selectors
    ]
    assert section[0].value == "v=spf1 a -all"  # RFC 7208 §2.3
    assert "RFC 7208 §2.3" in section[0].comment
    for record, sel in zip(section[1:], selectors, strict=True):
        assert record.value == dkim_txt_value(sel)
        assert f"MAILER-DAEMON@{OWN_HOST}" in record.comment
        assert f"d={OWN_HOST}" in record.comment
    # With the section printed, the domain's records leave the HELO record to it.
    domain = required_records(DOMAIN, OWN_HOST, selectors, IPV4, None, now=NOW, helo_spf=False)
    assert (OWN_HOST, "TXT") not in _by_key(domain)
    assert (f"_spf.{OWN_HOST}", "TXT") in _by_key(domain)
    full = required_records(DOMAIN, OWN_HOST, selectors, IPV4, None, now=NOW)
    assert _by_key(full)[(OWN_HOST, "TXT")] == ["v=spf1 a -all"]


def test_mail_host_records_have_no_mail_domain_records(selectors: list[DkimSelector]) -> None:
    records = mail_host_records(OWN_HOST, selectors, IPV4, IPV6)
    keys = _by_key(records)
    assert keys[(OWN_HOST, "A")] == [IPV4]
    assert keys[(OWN_HOST, "AAAA")] == [IPV6]
    assert keys[(OWN_HOST, "TXT")] == ["v=spf1 a -all"]  # once: a second would be a permerror
    assert keys[(f"_spf.{OWN_HOST}", "TXT")] == [f"v=spf1 ip4:{IPV4} ip6:{IPV6} -all"]
    assert {n for n, t in keys if t == "PTR"} == {
        "10.2.0.192.in-addr.arpa",
        "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
    }
    for sel in selectors:
        assert keys[(f"{sel.selector}._domainkey.{OWN_HOST}", "TXT")] == [dkim_txt_value(sel)]
    assert not [k for k in keys if k[1] in ("MX", "SRV", "CNAME")]
    assert not [n for n, _ in keys if n.startswith(("_dmarc.", "_mta-sts.", "_smtp._tls."))]
    zone = render_zone(records)
    dns.zone.from_text(zone, origin=".", relativize=False, check_origin=False)
