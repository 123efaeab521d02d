"""DANE for SMTP: TLSA matching against real certificates, lookups against a real DNS server
that plays a validating resolver (AD flag), and the policy source built on both."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import dns.asyncresolver
import dns.flags
import dns.resolver
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from pochta.config.settings import Settings
from pochta.deliver.dane import (
    TlsaLookup,
    dnssec_resolver,
    is_usable,
    lookup_tlsa,
    match_tlsa,
)
from pochta.deliver.sts_dane_policy import DaneLookupError, StsDanePolicy
from pochta.deliver.tls_policy import DomainPolicy, HostTLS, TLSARecord
from tests.dnsserver import ZoneServer
from tests.factories import make_settings

MX = "mx.example.test"


# -- certificates ----------------------------------------------------------------------------


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _record(usage: int, selector: int, mtype: int, der: bytes) -> TLSARecord:
    data = der if selector == 0 else _spki(der)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return TLSARecord(usage, selector, mtype, data)


class Pki:
    """A root CA, an intermediate and leaves, as DER chains (leaf first, as TLS sends them)."""

    def __init__(self) -> None:
        self.root = trustme.CA()
        self.intermediate = self.root.create_child_ca()
        self.root_der = _der(self.root.cert_pem.bytes())
        self.intermediate_der = _der(self.intermediate.cert_pem.bytes())

    def leaf(self, *names: str, ca: trustme.CA | None = None, **kwargs: object) -> bytes:
        issued = (ca or self.root).issue_cert(*names, **kwargs)  # type: ignore[arg-type]
        return _der(issued.cert_chain_pems[0].bytes())

    def key(self, ca: trustme.CA) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def _build(
    subject_cn: str,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = False,
    san: list[str] | None = None,
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A certificate made with cryptography directly, for the shapes trustme does not make."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER), key


def _subject(der: bytes) -> x509.Name:
    return x509.load_der_x509_certificate(der).subject


# -- DANE-EE (RFC 7672 §3.1.1) ---------------------------------------------------------------


@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (0, 1), (1, 2), (0, 2), (1, 0), (0, 0)])
def test_dane_ee_matches_the_leaf(pki: Pki, selector: int, mtype: int) -> None:
    leaf = pki.leaf(MX)
    record = _record(3, selector, mtype, leaf)
    assert match_tlsa([leaf, pki.root_der], [record])
    # The leaf alone is enough: no chain, no names.
    assert match_tlsa([leaf], [record])


def test_dane_ee_mismatch_fails(pki: Pki) -> None:
    leaf, other = pki.leaf(MX), pki.leaf(MX)
    assert not match_tlsa([leaf], [_record(3, 1, 1, other)])
    assert not match_tlsa([leaf], [_record(3, 0, 1, other)])
    # One byte changed in the digest.
    good = _record(3, 1, 1, leaf)
    bad = TLSARecord(3, 1, 1, bytes([good.data[0] ^ 1]) + good.data[1:])
    assert not match_tlsa([leaf], [bad])
    # A record for the CA does not make the leaf an end entity.
    assert not match_tlsa([leaf, pki.root_der], [_record(3, 1, 1, pki.root_der)])


def test_dane_ee_ignores_names_and_expiry(pki: Pki) -> None:
    past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    expired = pki.leaf("elsewhere.example", not_before=past, not_after=past + dt.timedelta(days=1))
    assert match_tlsa([expired], [_record(3, 1, 1, expired)], names=[MX])


def test_any_matching_record_is_enough(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    records = [_record(3, 1, 1, pki.leaf(MX)), _record(3, 0, 2, leaf)]
    assert match_tlsa([leaf], records)


def test_empty_chain_or_records_never_match(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    assert not match_tlsa([], [_record(3, 1, 1, leaf)])
    assert not match_tlsa([leaf], [])


# -- DANE-TA (RFC 7672 §3.1.2) ---------------------------------------------------------------


@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (0, 2), (1, 0)])
def test_dane_ta_matches_the_issuer(pki: Pki, selector: int, mtype: int) -> None:
    leaf = pki.leaf(MX)
    record = _record(2, selector, mtype, pki.root_der)
    assert match_tlsa([leaf, pki.root_der], [record], names=[MX])


def test_dane_ta_through_an_intermediate(pki: Pki) -> None:
    leaf = pki.leaf(MX, ca=pki.intermediate)
    chain = [leaf, pki.intermediate_der, pki.root_der]
    assert match_tlsa(chain, [_record(2, 0, 1, pki.root_der)], names=[MX])
    assert match_tlsa(chain, [_record(2, 1, 1, pki.intermediate_der)], names=[MX])
    # The order of the certificates after the leaf does not matter.
    assert match_tlsa(
        [leaf, pki.root_der, pki.intermediate_der], [_record(2, 0, 1, pki.root_der)], names=[MX]
    )
    # Without the intermediate the path to the root is broken.
    assert not match_tlsa([leaf, pki.root_der], [_record(2, 0, 1, pki.root_der)], names=[MX])


def test_dane_ta_needs_the_ta_in_the_chain(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    assert not match_tlsa([leaf], [_record(2, 0, 1, pki.root_der)], names=[MX])


def test_dane_ta_never_matches_the_leaf_itself(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    assert not match_tlsa([leaf, pki.root_der], [_record(2, 0, 1, leaf)], names=[MX])


def test_dane_ta_of_another_ca_fails(pki: Pki) -> None:
    other = trustme.CA()
    other_der = _der(other.cert_pem.bytes())
    leaf = pki.leaf(MX)
    assert not match_tlsa([leaf, pki.root_der, other_der], [_record(2, 0, 1, other_der)], [MX])


def test_dane_ta_checks_signatures_not_just_names(pki: Pki) -> None:
    # A forger's CA with the same subject name as the real one signs a leaf; the real CA,
    # named by the TLSA record, is sent along.
    forger_der, forger_key = _build("x", _subject(pki.root_der), pki.key(pki.root))
    forged_leaf, _ = _build(MX, _subject(pki.root_der), forger_key, san=[MX])
    del forger_der
    assert not match_tlsa([forged_leaf, pki.root_der], [_record(2, 0, 1, pki.root_der)], [MX])


def test_dane_ta_requires_ca_flag_below_the_ta(pki: Pki) -> None:
    root_key = pki.key(pki.root)
    # A non-CA certificate issued by the root tries to act as an intermediate.
    middle_der, middle_key = _build("middle", _subject(pki.root_der), root_key, ca=False)
    leaf, _ = _build(MX, _subject(middle_der), middle_key, san=[MX])
    record = _record(2, 0, 1, pki.root_der)
    assert not match_tlsa([leaf, middle_der, pki.root_der], [record], [MX])
    # The same shape with the CA flag set is fine.
    good_middle, good_key = _build("middle2", _subject(pki.root_der), root_key, ca=True)
    good_leaf, _ = _build(MX, _subject(good_middle), good_key, san=[MX])
    assert match_tlsa([good_leaf, good_middle, pki.root_der], [record], [MX])


def test_dane_ta_checks_the_leaf_name(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    record = _record(2, 0, 1, pki.root_der)
    assert not match_tlsa([leaf, pki.root_der], [record], names=["other.example.test"])
    assert not match_tlsa([leaf, pki.root_der], [record])  # no reference identifiers
    # RFC 7672 §3.2.3: the TLSA base domain is accepted as well as the MX host name.
    assert match_tlsa([leaf, pki.root_der], [record], names=["alias.example.test", MX])
    assert match_tlsa([leaf, pki.root_der], [record], names=["MX.Example.Test."])


def test_dane_ta_wildcard_covers_one_label(pki: Pki) -> None:
    leaf = pki.leaf("*.example.test")
    record = _record(2, 1, 1, pki.root_der)
    assert match_tlsa([leaf, pki.root_der], [record], names=[MX])
    assert not match_tlsa([leaf, pki.root_der], [record], names=["a.mx.example.test"])
    assert not match_tlsa([leaf, pki.root_der], [record], names=["example.test"])


def test_dane_ta_common_name_only_without_dns_names(pki: Pki) -> None:
    root_key = pki.key(pki.root)
    cn_only, _ = _build(MX, _subject(pki.root_der), root_key)
    record = _record(2, 0, 1, pki.root_der)
    assert match_tlsa([cn_only, pki.root_der], [record], [MX])
    # With DNS names present the CN is not looked at.
    with_san, _ = _build(MX, _subject(pki.root_der), root_key, san=["other.example.test"])
    assert not match_tlsa([with_san, pki.root_der], [record], [MX])


def test_dane_ta_checks_the_leaf_dates(pki: Pki) -> None:
    past = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    expired = pki.leaf(MX, not_before=past, not_after=past + dt.timedelta(days=1))
    assert not match_tlsa([expired, pki.root_der], [_record(2, 0, 1, pki.root_der)], [MX])


# -- usable records (RFC 7672 §3.1.3, RFC 7671) -----------------------------------------------


@pytest.mark.parametrize(
    ("usage", "selector", "mtype"),
    [(0, 0, 1), (1, 1, 1), (0, 1, 2), (1, 0, 0), (3, 2, 1), (2, 7, 1), (3, 1, 3), (2, 0, 255)],
)
def test_unusable_records_never_match(pki: Pki, usage: int, selector: int, mtype: int) -> None:
    leaf = pki.leaf(MX)
    # Data that would match if the parameters were read as the nearest usable ones.
    data = hashlib.sha256(_spki(leaf)).digest()
    record = TLSARecord(usage, selector, mtype, data)
    assert not is_usable(record)
    assert not match_tlsa([leaf, pki.root_der], [record], names=[MX])


def test_digest_of_the_wrong_length_is_unusable(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    digest = hashlib.sha256(_spki(leaf)).digest()
    assert is_usable(TLSARecord(3, 1, 1, digest))
    assert not is_usable(TLSARecord(3, 1, 1, digest[:31]))
    assert not is_usable(TLSARecord(3, 1, 2, digest))
    assert not is_usable(TLSARecord(3, 1, 0, b""))


def test_garbage_certificates_do_not_raise(pki: Pki) -> None:
    leaf = pki.leaf(MX)
    records = [_record(3, 1, 1, leaf), _record(2, 0, 1, pki.root_der)]
    assert not match_tlsa([b"not a certificate"], records, [MX])
    assert not match_tlsa([leaf[:-5]], records, [MX])
    assert match_tlsa([leaf, b"junk"], records, [MX])  # DANE-EE looks at the leaf only


# -- lookups against a DNS server playing a validating resolver ------------------------------


def _tlsa_hex(record: TLSARecord) -> str:
    return f"{record.usage} {record.selector} {record.mtype} {record.data.hex()}"


@pytest.fixture(scope="module")
def leaf(pki: Pki) -> bytes:
    return pki.leaf(MX)


@pytest.fixture(scope="module")
def zone(pki: Pki, leaf: bytes) -> str:
    ee = _record(3, 1, 1, leaf)
    ta = _record(2, 0, 1, pki.root_der)
    unusable = [
        _record(0, 0, 1, pki.root_der),
        _record(1, 1, 1, leaf),
        TLSARecord(3, 1, 5, b"\x01" * 32),
    ]
    lines = [
        "$TTL 300",
        f"{MX}. A 127.0.0.1",
        f"_25._tcp.{MX}. TLSA {_tlsa_hex(ee)}",
        f"_25._tcp.{MX}. TLSA {_tlsa_hex(ta)}",
        "plain.example.test. A 127.0.0.2",
        "mixed.example.test. A 127.0.0.3",
        *(f"_25._tcp.mixed.example.test. TLSA {_tlsa_hex(r)}" for r in unusable),
        "alias.example.test. CNAME mx.provider.test.",
        "mx.provider.test. A 127.0.0.4",
        f"_25._tcp.mx.provider.test. TLSA {_tlsa_hex(ta)}",
        "v6only.example.test. AAAA ::1",
        f"_25._tcp.v6only.example.test. TLSA {_tlsa_hex(ee)}",
        f"_2525._tcp.{MX}. TLSA {_tlsa_hex(ee)}",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def server(zone: str) -> Iterator[ZoneServer]:
    with ZoneServer(zone, origin=".", authenticated=True) as s:
        yield s


async def test_lookup_finds_validated_records(server: ZoneServer, pki: Pki, leaf: bytes) -> None:
    result = await lookup_tlsa(server.async_resolver(), MX, 25)
    assert result.status == "usable"
    assert set(result.records) == {_record(3, 1, 1, leaf), _record(2, 0, 1, pki.root_der)}
    assert result.base_domain == MX
    assert result.names == (MX,)
    assert (f"_25._tcp.{MX}.", "TLSA") in server.queries
    # The port is part of the name.
    other_port = await lookup_tlsa(server.async_resolver(), MX, 2525)
    assert other_port.records == (_record(3, 1, 1, leaf),)


async def test_same_zone_without_ad_is_insecure(server: ZoneServer) -> None:
    server.authenticated = False
    result = await lookup_tlsa(server.async_resolver(), MX, 25)
    assert result.status == "insecure"
    assert result.records == ()


async def test_insecure_tlsa_records_are_not_used(server: ZoneServer) -> None:
    # The host's addresses validate, its TLSA records do not.
    server.authenticated = lambda name, rdtype: rdtype != "TLSA"
    result = await lookup_tlsa(server.async_resolver(), MX, 25)
    assert result.status == "insecure"
    assert "TLSA" in result.detail or "_25._tcp" in result.detail


async def test_insecure_address_records_disable_dane(server: ZoneServer) -> None:
    # RFC 7672 §2.2.1: secure TLSA records of a host whose addresses are insecure don't count.
    server.authenticated = lambda name, rdtype: rdtype == "TLSA"
    result = await lookup_tlsa(server.async_resolver(), MX, 25)
    assert result.status == "insecure"
    # DANE gave up before asking for TLSA records.
    assert all(rdtype != "TLSA" for _, rdtype in server.queries)


async def test_no_records_and_no_host(server: ZoneServer) -> None:
    resolver = server.async_resolver()
    assert (await lookup_tlsa(resolver, "plain.example.test", 25)).status == "none"
    assert (await lookup_tlsa(resolver, "missing.example.test", 25)).status == "none"


async def test_only_unusable_records(server: ZoneServer) -> None:
    result = await lookup_tlsa(server.async_resolver(), "mixed.example.test", 25)
    assert result.status == "unusable"
    assert result.records == ()


async def test_cname_target_is_the_base_domain(server: ZoneServer, pki: Pki) -> None:
    result = await lookup_tlsa(server.async_resolver(), "alias.example.test", 25)
    assert result.status == "usable"
    assert result.records == (_record(2, 0, 1, pki.root_der),)
    assert result.base_domain == "mx.provider.test"
    assert result.names == ("mx.provider.test", "alias.example.test")
    # A certificate naming the CNAME target passes DANE-TA with these names.
    target_leaf = pki.leaf("mx.provider.test")
    assert match_tlsa([target_leaf, pki.root_der], result.records, result.names)


async def test_ipv6_only_host(server: ZoneServer, leaf: bytes) -> None:
    result = await lookup_tlsa(server.async_resolver(), "v6only.example.test", 25)
    assert result.status == "usable"
    assert result.records == (_record(3, 1, 1, leaf),)


NARROW_ZONE = """$TTL 300
example.test. SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 300
mx.example.test. A 127.0.0.1
"""


async def test_lookup_failure_is_an_error() -> None:
    # This server answers only for example.test: other names are REFUSED, like a resolver
    # that fails (SERVFAIL for a bogus answer).
    with ZoneServer(NARROW_ZONE, origin="example.test.", authenticated=True) as s:
        result = await lookup_tlsa(s.async_resolver(), "mx.provider.test", 25)
    assert result.status == "error"
    assert "mx.provider.test" in result.detail


async def test_queries_ask_for_dnssec(server: ZoneServer) -> None:
    plain = server.async_resolver()
    answer = await plain.resolve(f"{MX}.", "A")
    # The server sets AD only when asked (RFC 6840 §5.7): a plain query gets none ...
    assert not answer.response.flags & dns.flags.AD
    # ... and lookup_tlsa asks without changing the caller's resolver.
    assert (await lookup_tlsa(plain, MX, 25)).status == "usable"
    assert plain.edns < 0 or not plain.ednsflags & dns.flags.DO
    secure = dnssec_resolver(plain)
    assert secure.ednsflags & dns.flags.DO  # RFC 4035 §3.2.1
    assert secure.flags is not None
    assert secure.flags & dns.flags.AD  # RFC 6840 §5.7
    answer = await secure.resolve(f"{MX}.", "A")
    assert answer.response.flags & dns.flags.AD


async def test_lookup_of_a_bad_name(server: ZoneServer) -> None:
    result = await lookup_tlsa(server.async_resolver(), "a..b", 25)
    assert result == TlsaLookup("none", detail=result.detail)


# -- StsDanePolicy.host_tls -------------------------------------------------------------------


def _settings(tmp_path: Path, *, level: str = "dane", validating: bool = True) -> Settings:
    return make_settings(
        {
            "server.hostname": "mail.example.test",
            "server.data_dir": str(tmp_path),
            "delivery.tls_security_level": level,
            "delivery.mta_sts": False,
            "dns.dnssec_validating": validating,
        }
    )


async def test_policy_dane_records_win(server: ZoneServer, tmp_path: Path, leaf: bytes) -> None:
    policy = StsDanePolicy(_settings(tmp_path), server.async_resolver())
    floor = await policy.domain_policy("example.test")
    assert floor == DomainPolicy("may")
    host = await policy.host_tls("example.test", MX, 25, floor)
    assert host.level == "dane"
    assert host.source == "dane"
    assert _record(3, 1, 1, leaf) in host.tlsa
    # RFC 8461 §2: DANE takes precedence over an MTA-STS floor.
    enforce = DomainPolicy("verify", "mta-sts", (MX,), "enforce")
    assert (await policy.host_tls("example.test", MX, 25, enforce)).level == "dane"
    # The callback for the agent checks the chain with the host's names.
    check = policy.dane_check(MX)
    assert check([leaf], host.tlsa)
    assert not check([_der(trustme.CA().issue_cert(MX).cert_chain_pems[0].bytes())], host.tlsa)


async def test_policy_without_ad_keeps_the_floor(server: ZoneServer, tmp_path: Path) -> None:
    server.authenticated = False
    policy = StsDanePolicy(_settings(tmp_path), server.async_resolver())
    floor = DomainPolicy("may")
    assert await policy.host_tls("example.test", MX, 25, floor) == HostTLS("may", "config")


async def test_policy_unusable_records_make_tls_mandatory(
    server: ZoneServer, tmp_path: Path
) -> None:
    policy = StsDanePolicy(_settings(tmp_path), server.async_resolver())
    host = "mixed.example.test"
    may = DomainPolicy("may")
    assert await policy.host_tls("d.test", host, 25, may) == HostTLS("encrypt", "dane-unusable")
    enforce = DomainPolicy("verify", "mta-sts", (host,), "enforce")
    assert await policy.host_tls("d.test", host, 25, enforce) == HostTLS("verify", "mta-sts")


async def test_policy_no_records_keeps_the_floor(server: ZoneServer, tmp_path: Path) -> None:
    policy = StsDanePolicy(_settings(tmp_path), server.async_resolver())
    floor = DomainPolicy("verify", "mta-sts", ("*.example.test",), "enforce")
    assert await policy.host_tls("d.test", "plain.example.test", 25, floor) == HostTLS(
        "verify", "mta-sts"
    )


async def test_policy_lookup_error_refuses_the_host(tmp_path: Path) -> None:
    with ZoneServer(NARROW_ZONE, origin="example.test.", authenticated=True) as s:
        policy = StsDanePolicy(_settings(tmp_path), s.async_resolver())
        with pytest.raises(DaneLookupError, match=r"mx\.provider\.test"):
            await policy.host_tls("d.test", "mx.provider.test", 25, DomainPolicy("may"))


async def test_policy_needs_a_validating_resolver(server: ZoneServer, tmp_path: Path) -> None:
    with capture_logs() as logs:
        policy = StsDanePolicy(_settings(tmp_path, validating=False), server.async_resolver())
    assert any(e["event"] == "dane_disabled" for e in logs)
    floor = await policy.domain_policy("example.test")
    assert floor.level == "may"
    assert await policy.host_tls("example.test", MX, 25, floor) == HostTLS("may", "config")
    assert server.queries == []  # no TLSA lookups at all


async def test_policy_other_levels_do_no_lookups(server: ZoneServer, tmp_path: Path) -> None:
    policy = StsDanePolicy(_settings(tmp_path, level="encrypt"), server.async_resolver())
    floor = await policy.domain_policy("example.test")
    assert floor == DomainPolicy("encrypt")
    assert await policy.host_tls("example.test", MX, 25, floor) == HostTLS("encrypt", "config")
    assert server.queries == []


def test_plain_resolver_reports_no_ad_without_asking(server: ZoneServer) -> None:
    # The sync resolver of the test server sends no DO bit: the AD flag stays off, so the
    # server does not hand out AD to clients that did not ask (RFC 6840 §5.8).
    answer = server.resolver().resolve(f"{MX}.", "A")
    assert isinstance(answer, dns.resolver.Answer)
    assert not answer.response.flags & dns.flags.AD
