"""A self-signed certificate for the first start, before a real one (ACME or the admin's) exists.

Remote MTAs use STARTTLS opportunistically and do not check the certificate (RFC 7435 §1.3,
RFC 3207 §4.1), so a self-signed certificate already encrypts mail between servers; mail
clients will ask their user to accept it once.

Key type: ECDSA P-256 by default. Every client that speaks TLS 1.2 (our minimum, RFC 8996)
supports ECDHE-ECDSA (OpenSSL, GnuTLS, SChannel since Windows Vista, Java 7+, Apple), the
handshake is cheaper than with RSA-2048 and the key is smaller. ``key_type="rsa-2048"`` is
there for a client population that needs RSA (very old embedded devices).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pochta.durable import write_atomic

KeyType = Literal["ecdsa-p256", "rsa-2048"]

# Apple platforms refuse TLS server certificates valid for more than 825 days, even
# self-signed ones ("Requirements for trusted certificates in iOS 13 and macOS 10.15").
MAX_DAYS = 825
# RFC 5280 §4.1.2.5: not-before in the past tolerates clients whose clock is a little behind.
_CLOCK_SKEW = dt.timedelta(hours=1)
# RFC 5280 Appendix A.1: ub-common-name is 64 characters.
_CN_MAX = 64


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name.rstrip(".").lower())


def make_self_signed(
    hostname: str,
    *,
    extra_names: Iterable[str] = (),
    days: int = MAX_DAYS,
    key_type: KeyType = "ecdsa-p256",
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for ``hostname`` and ``extra_names``."""
    if days < 1:
        raise ValueError(f"certificate validity must be at least one day, not {days}")
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = list(dict.fromkeys([hostname, *extra_names]))
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pochta self-signed")]
    if len(hostname) <= _CN_MAX:
        # RFC 6125 §6.4.4: clients look at the CN only when there is no subjectAltName; it is
        # kept for humans reading the certificate.
        attrs.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, hostname))
    subject = x509.Name(attrs)
    start = (now or dt.datetime.now(dt.UTC)) - _CLOCK_SKEW
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        # RFC 5280 §4.1.2.2: positive, at most 20 octets, unpredictable.
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _CLOCK_SKEW + dt.timedelta(days=days))
        # RFC 6125 §6.4: the names a client checks are the subjectAltName dNSName entries.
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        # RFC 5280 §4.2.1.9: an end-entity certificate, not a CA.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # RFC 5280 §4.2.1.3; keyEncipherment only for RSA key transport (RFC 5246 §7.4.2).
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # RFC 5280 §4.2.1.12: a TLS server certificate.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # RFC 5280 §4.2.1.2 and §4.2.1.1 (strict verifiers, e.g. Python 3.13's default
        # VERIFY_X509_STRICT, want both).
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = builder.sign(key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def write_self_signed(
    cert_path: Path,
    key_path: Path,
    hostname: str,
    *,
    days: int = MAX_DAYS,
    extra_names: Iterable[str] = (),
    key_type: KeyType = "ecdsa-p256",
) -> None:
    """Write a new self-signed certificate (0644) and its private key (0600) for ``hostname``.

    Both files are replaced atomically; the key is written first so that a crash in between
    leaves a key without a matching certificate, which ``server_context`` reports clearly.
    """
    cert_pem, key_pem = make_self_signed(
        hostname, extra_names=extra_names, days=days, key_type=key_type
    )
    write_atomic(Path(key_path), key_pem, mode=0o600, make_parents=True)
    write_atomic(Path(cert_path), cert_pem, mode=0o644, make_parents=True)
