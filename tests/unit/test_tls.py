"""Self-signed certificates, the server TLS context and its error messages."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pochta.tls.context import (
    CertInfo,
    SniContexts,
    TLSConfigError,
    covers,
    describe_certificate,
    name_covers,
    reference_name,
    server_context,
    wildcard_of,
)
from pochta.tls.selfsigned import KeyType, write_self_signed

HOST = "mail.example.test"


@pytest.fixture(params=["ecdsa-p256", "rsa-2048"])
def key_type(request: pytest.FixtureRequest) -> KeyType:
    value: KeyType = request.param
    return value


@pytest.fixture
def pair(tmp_path: Path, key_type: KeyType) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "private" / "key.pem"
    write_self_signed(
        cert, key, HOST, extra_names=["mx2.example.test", "192.0.2.7"], key_type=key_type
    )
    return cert, key


def _load(cert: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.read_bytes())


def test_certificate_names_and_extensions(pair: tuple[Path, Path], key_type: KeyType) -> None:
    cert = _load(pair[0])
    assert cert.version == x509.Version.v3
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [HOST, "mx2.example.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert ku.key_encipherment is (key_type == "rsa-2048")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.serial_number > 0
    assert cert.serial_number.bit_length() <= 159
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=825, hours=1)
    assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC)
    pub = cert.public_key()
    if key_type == "ecdsa-p256":
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        assert pub.curve.name == "secp256r1"
    else:
        assert isinstance(pub, rsa.RSAPublicKey)
        assert pub.key_size == 2048


def test_serials_are_random(tmp_path: Path) -> None:
    serials = set()
    for i in range(3):
        write_self_signed(tmp_path / f"c{i}.pem", tmp_path / f"k{i}.pem", HOST)
        serials.add(_load(tmp_path / f"c{i}.pem").serial_number)
    assert len(serials) == 3


def test_key_mode_and_atomic_replace(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    before = key.read_bytes()
    write_self_signed(cert, key, HOST)
    assert key.read_bytes() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # No temporary file is left behind.
    assert sorted(p.name for p in key.parent.iterdir()) == ["key.pem"]
    assert sorted(p.name for p in cert.parent.iterdir()) == ["cert.pem", "private"]
    serialization.load_pem_private_key(key.read_bytes(), password=None)


def test_describe_certificate(pair: tuple[Path, Path]) -> None:
    info = describe_certificate(pair[0])
    assert isinstance(info, CertInfo)
    assert info.subject_names == (HOST, "mx2.example.test", "192.0.2.7")
    assert info.self_signed
    assert not info.expired()
    assert info.matches_hostname("MAIL.example.test.")
    assert not info.matches_hostname("other.example.test")
    assert len(info.fingerprint_sha256.split(":")) == 32
    assert info.not_after - info.not_before <= dt.timedelta(days=825, hours=1)


def test_wildcard_match() -> None:
    now = dt.datetime.now(dt.UTC)
    info = CertInfo(("*.example.test",), "CN=x", now, now, False, "")
    assert info.matches_hostname("mail.example.test")
    assert not info.matches_hostname("a.mail.example.test")
    assert not info.matches_hostname("example.test")


def test_server_context_settings(pair: tuple[Path, Path]) -> None:
    ctx = server_context(*pair)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.verify_mode == ssl.CERT_NONE
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12, "TLS 1.2 suites are offered"
    assert all(("GCM" in n or "CHACHA20" in n) and "DHE" in n for n in tls12)


def test_mismatched_key(tmp_path: Path) -> None:
    write_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", HOST)
    write_self_signed(tmp_path / "other.pem", tmp_path / "otherkey.pem", HOST)
    with pytest.raises(TLSConfigError) as err:
        server_context(tmp_path / "cert.pem", tmp_path / "otherkey.pem")
    assert str(err.value).startswith(
        f"tls.key_file {tmp_path}/otherkey.pem does not match tls.cert_file {tmp_path}/cert.pem"
    )


def test_missing_files(tmp_path: Path) -> None:
    write_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", HOST)
    with pytest.raises(TLSConfigError, match=r"^tls.cert_file .*/nope.pem does not exist"):
        server_context(tmp_path / "nope.pem", tmp_path / "key.pem")
    with pytest.raises(TLSConfigError, match=r"^tls.key_file .*/nokey.pem does not exist"):
        server_context(tmp_path / "cert.pem", tmp_path / "nokey.pem")
    with pytest.raises(TLSConfigError, match="is a directory"):
        server_context(tmp_path, tmp_path / "key.pem")


def test_not_pem_and_encrypted(tmp_path: Path) -> None:
    write_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", HOST)
    (tmp_path / "junk.pem").write_text("hello\n")
    with pytest.raises(TLSConfigError, match="holds no PEM certificate"):
        server_context(tmp_path / "junk.pem", tmp_path / "key.pem")
    with pytest.raises(TLSConfigError, match="holds no usable PEM private key"):
        server_context(tmp_path / "cert.pem", tmp_path / "junk.pem")
    key = serialization.load_pem_private_key((tmp_path / "key.pem").read_bytes(), None)
    (tmp_path / "enc.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TLSConfigError, match="passphrase"):
        server_context(tmp_path / "cert.pem", tmp_path / "enc.pem")


def test_setting_names_in_messages(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match=r"^listen\.imaps\.cert .*/c does not exist"):
        server_context(tmp_path / "c", tmp_path / "k", cert_setting="listen.imaps.cert")


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str
) -> tuple[str | None, bytes]:
    """Run a TLS handshake over a socketpair; the client's (version, data received)."""
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(b"220 ready\r\n")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            return c.version(), c.recv(100)
    finally:
        t.join(10)


@pytest.mark.parametrize("name", [HOST, "mx2.example.test"])
def test_handshake_verifies_against_self_signed_ca(pair: tuple[Path, Path], name: str) -> None:
    client = ssl.create_default_context(cafile=str(pair[0]))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    version, data = _handshake(server_context(*pair), client, name)
    assert data == b"220 ready\r\n"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_handshake_wrong_hostname_fails(pair: tuple[Path, Path]) -> None:
    client = ssl.create_default_context(cafile=str(pair[0]))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
        _handshake(server_context(*pair), client, "evil.example.test")


def test_tls12_client_is_served(pair: tuple[Path, Path]) -> None:
    client = ssl.create_default_context(cafile=str(pair[0]))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    version, _ = _handshake(server_context(*pair), client, HOST)
    assert version == "TLSv1.2"


def test_tls11_client_is_refused(pair: tuple[Path, Path]) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=str(pair[0]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = ssl.TLSVersion.TLSv1
            client.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(server_context(*pair), client, HOST)


# -- the cover rule (RFC 6125 §6.4) and SNI selection -----------------------------------------


@pytest.mark.parametrize(
    ("presented", "host", "covered"),
    [
        ("mta-sts.example.org", "mta-sts.example.org", True),
        ("MTA-STS.Example.ORG", "mta-sts.example.org.", True),  # §6.4.1: case, trailing dot
        ("*.example.org", "mta-sts.example.org", True),  # §6.4.3: one left-most label
        ("*.example.org", "example.org", False),  # "*" is exactly one label
        ("*.example.org", "a.b.example.org", False),  # ... not two
        ("*.example.org", "*.example.org", False),  # a wildcard is not a host name
        ("*.org", "example.org", False),  # a wildcard over a top-level domain
        ("f*.example.org", "foo.example.org", False),  # partial-label wildcards: not matched
        ("mta-sts.*.org", "mta-sts.example.org", False),  # "*" only in the left-most label
        ("xn--*.example.org", "xn--bcher-kva.example.org", False),  # not inside an A-label
        ("*.xn--bcher-kva.example", "mta-sts.bücher.example", True),  # §6.4.2: U-label host
        ("mta-sts.xn--bcher-kva.example", "MTA-STS.BÜCHER.example", True),
        ("mta-sts.bücher.example", "mta-sts.xn--bcher-kva.example", True),  # a U-label SAN
        ("*.xn--bcher-kva.example", "xn--bcher-kva.example", False),
        ("mta-sts.example.org", "mta-sts.example.org.evil.test", False),
        ("mta-sts.example.org", "", False),
    ],
)
def test_cover_rule(presented: str, host: str, covered: bool) -> None:
    assert name_covers(presented, host) is covered
    now = dt.datetime.now(dt.UTC)
    info = CertInfo((presented,), "CN=x", now, now, False, "")
    assert info.matches_hostname(host) is covered
    assert covers(["other.example.net", presented], host) is covered


def test_reference_name_and_wildcard_of() -> None:
    assert reference_name("Mta-Sts.Bücher.Example.") == "mta-sts.xn--bcher-kva.example"
    assert reference_name("*.Bücher.example") == "*.xn--bcher-kva.example"
    assert reference_name("") is None
    assert reference_name("a" * 64 + ".bücher.example") is None  # IDNA refuses a long label
    assert wildcard_of("mta-sts.example.org") == "*.example.org"
    assert wildcard_of("example.org") is None


def _sni_handshake(server: ssl.SSLContext, server_name: str | None) -> x509.Certificate:
    """A handshake over memory BIOs (no sockets); the certificate the server presented."""
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj in (("client", client), ("server", srv)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _san(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def test_sni_picks_the_certificate_by_name(tmp_path: Path) -> None:
    def context(name: str) -> ssl.SSLContext:
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        write_self_signed(cert, key, name)
        return server_context(cert, key)

    host, sts, wild = (
        context(HOST),
        context("mta-sts.example.test"),
        context("any.xn--bcher-kva.test"),
    )
    sni = SniContexts(host, {"mta-sts.example.test": sts, "*.xn--bcher-kva.test": wild})
    assert sni.select("MTA-STS.example.test") is sts
    assert sni.select("autoconfig.xn--bcher-kva.test") is wild  # the wildcard, one label up
    assert sni.select("a.b.xn--bcher-kva.test") is host  # two labels: not the wildcard's
    assert sni.select("other.example.test") is host
    assert sni.select(None) is host

    assert _san(_sni_handshake(sni.context, "mta-sts.example.test")) == ["mta-sts.example.test"]
    assert _san(_sni_handshake(sni.context, "x.xn--bcher-kva.test")) == ["any.xn--bcher-kva.test"]
    assert _san(_sni_handshake(sni.context, None)) == [HOST]  # no SNI: the host's
    assert _san(_sni_handshake(sni.context, "unknown.example.net")) == [HOST]

    # A reload swaps the table: the listening context stays, the next handshakes change.
    renewed = context("renewed.example.test")
    sni.replace(renewed, {})
    assert _san(_sni_handshake(sni.context, "mta-sts.example.test")) == ["renewed.example.test"]
    assert _san(_sni_handshake(sni.context, None)) == ["renewed.example.test"]
