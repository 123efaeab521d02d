"""The server-side TLS context shared by every listener, and a description of the certificate.

Files are checked with ``cryptography`` before OpenSSL sees them, so that a missing file, a
file that is not PEM, an encrypted key or a key of another certificate each get a message
that names the setting and says what to do, instead of OpenSSL's "[X509] key values mismatch".
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

# BCP 195 (RFC 9325 §4.2) recommended TLS 1.2 suites: AEAD only, forward secrecy only
# (Mozilla "intermediate"). TLS 1.3 suites are all acceptable and set by OpenSSL separately.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)


class TLSConfigError(Exception):
    """The certificate or key cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What an admin wants to know about the certificate in use."""

    subject_names: tuple[str, ...]  # subjectAltName DNS names and IPs (CN if there is no SAN)
    issuer: str  # RFC 4514 string
    not_before: dt.datetime  # aware, UTC
    not_after: dt.datetime  # aware, UTC
    self_signed: bool
    fingerprint_sha256: str  # hex, colon-separated, as browsers show it

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or dt.datetime.now(dt.UTC)) > self.not_after

    def matches_hostname(self, hostname: str) -> bool:
        """True when one of the names covers ``hostname`` (``covers``: RFC 6125 §6.4.3)."""
        return covers(self.subject_names, hostname)


def reference_name(name: str) -> str | None:
    """``name`` as certificates and SNI carry it: A-labels (RFC 5280 §7.2, RFC 6066 §3),
    lower case, no trailing dot; None when it is not a domain name (IDNA refuses it). A
    leading "*." is kept."""
    n = name.strip().rstrip(".").lower()
    wildcard = n.startswith("*.")
    if wildcard:
        n = n[2:]
    if not n:
        return None
    try:
        # The IDNA codec of the directory's normalize_domain: U-labels become A-labels.
        ascii_form = n.encode("idna").decode("ascii") if not n.isascii() else n
    except UnicodeError:
        return None
    return f"*.{ascii_form}" if wildcard else ascii_form


def name_covers(presented: str, hostname: str) -> bool:
    """True when the certificate's DNS name ``presented`` covers ``hostname``.

    RFC 6125 §6.4.1: names compare case-insensitively, as A-labels (§6.4.2: a U-label is
    turned into its A-label first). §6.4.3: "*" matches only as the whole left-most label
    and stands for exactly one label: "*.example.org" covers "mta-sts.example.org", not
    "example.org" nor "a.b.example.org"; a wildcard elsewhere or inside a label ("f*.example
    .org", "xn--*") matches nothing (§6.4.3 lets clients refuse them, and CAs no longer
    issue them). "*.org" (a wildcard over a single label) matches nothing either.
    """
    pattern, host = reference_name(presented), reference_name(hostname)
    if pattern is None or host is None or host.startswith("*."):
        return False
    if "*" not in pattern:
        return pattern == host
    if not pattern.startswith("*.") or "*" in pattern[2:]:
        return False  # RFC 6125 §6.4.3: only a whole left-most "*" label
    parent = pattern[2:]
    if "." not in parent:
        return False  # "*.org": a wildcard over a top-level domain
    first, dot, rest = host.partition(".")
    return bool(first) and bool(dot) and rest == parent


def wildcard_of(name: str) -> str | None:
    """The wildcard name that would cover ``name`` ("*.example.org" for
    "mta-sts.example.org", RFC 6125 §6.4.3), or None for a name of one or two labels."""
    first, _, parent = name.partition(".")
    return f"*.{parent}" if first and "." in parent else None


def covers(presented: tuple[str, ...] | list[str], hostname: str) -> bool:
    """True when any of the certificate's names covers ``hostname`` (``name_covers``)."""
    return any(name_covers(name, hostname) for name in presented)


def _read(path: Path, setting: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(
            f"{setting} {path} does not exist; point {setting} at your {what}, "
            "or create a self-signed certificate with: pochta init"
        ) from None
    except PermissionError:
        raise TLSConfigError(
            f"{setting} {path} cannot be read by uid {os.getuid()} (permission denied); "
            "check the file's owner and mode"
        ) from None
    except IsADirectoryError:
        raise TLSConfigError(f"{setting} {path} is a directory; name the PEM file") from None
    except OSError as exc:
        raise TLSConfigError(f"{setting} {path} cannot be read: {exc.strerror}") from None


def _load_certificates(path: Path, setting: str) -> list[x509.Certificate]:
    data = _read(path, setting, "certificate (PEM, leaf first, then intermediates)")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(
            f"{setting} {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ) from None
    return certs


def _load_private_key(path: Path, setting: str) -> PrivateKeyTypes:
    data = _read(path, setting, "private key (PEM)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            f"{setting} {path} is protected by a passphrase; pochta needs an unencrypted key: "
            f"openssl pkey -in {path} -out {path}.plain"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError(
            f"{setting} {path} holds no usable PEM private key "
            "(expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)"
        ) from None


def _spki(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    data: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    cert_setting: str = "tls.cert_file",
    key_setting: str = "tls.key_file",
) -> ssl.SSLContext:
    """An SSLContext for TLS servers (STARTTLS and implicit TLS) with ``cert_file``/``key_file``.

    TLS 1.2 is the minimum (RFC 8996 deprecates 1.0 and 1.1; RFC 9325 §3.1.1), compression
    is off (RFC 9325 §3.3, CRIME), renegotiation is off, TLS 1.2 suites are AEAD with
    forward secrecy (RFC 9325 §4.2). Client certificates are not requested.
    """
    cert_path, key_path = Path(cert_file), Path(key_file)
    certs = _load_certificates(cert_path, cert_setting)
    key = _load_private_key(key_path, key_setting)
    if _spki(key.public_key()) != _spki(certs[0].public_key()):
        raise TLSConfigError(
            f"{key_setting} {key_path} does not match {cert_setting} {cert_path} "
            "(the key is not the certificate's private key; the certificate must come first "
            "in the file, before any intermediates)"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
    # RFC 9325 §4.1 leaves the choice to the server; all offered suites are strong, so let the
    # client pick (it knows whether it has AES hardware), as Mozilla's guidelines advise.
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"OpenSSL refused {cert_setting} {cert_path} with {key_setting} {key_path}: "
            f"{exc.reason or exc}"
        ) from None
    return ctx


class SniContexts:
    """The contexts of a listener that picks its certificate by the name the client asks for
    (SNI, RFC 6066 §3): the https listener.

    ``context`` is the context the listener is bound with. Its ``sni_callback``, which
    OpenSSL calls for every ClientHello (with None when the client sends no name), moves the
    handshake to the context of that name: the exact name first, then the wildcard one label
    up ("*.example.org" for "mta-sts.example.org", RFC 6125 §6.4.3), else the default (the
    host's certificate). ``replace`` swaps the whole table at once (a reload): handshakes
    already under way keep the context they picked, the next ones get the new table.
    """

    def __init__(self, default: ssl.SSLContext, by_name: Mapping[str, ssl.SSLContext]) -> None:
        self._table: tuple[ssl.SSLContext, dict[str, ssl.SSLContext]] = (default, dict(by_name))
        self.context = default
        self.context.sni_callback = self._pick

    @property
    def default(self) -> ssl.SSLContext:
        return self._table[0]

    @property
    def by_name(self) -> dict[str, ssl.SSLContext]:
        return dict(self._table[1])

    def replace(self, default: ssl.SSLContext, by_name: Mapping[str, ssl.SSLContext]) -> None:
        self._table = (default, dict(by_name))

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for ``server_name`` (an A-label name as SNI carries it, or None)."""
        default, by_name = self._table
        name = reference_name(server_name) if server_name else None
        if name is None:
            return default
        found = by_name.get(name)
        if found is None and (wildcard := wildcard_of(name)) is not None:
            found = by_name.get(wildcard)
        return found if found is not None else default

    def _pick(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        chosen = self.select(server_name)
        if sslobj.context is not chosen:
            sslobj.context = chosen


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value) for a in cns)
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names.extend(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return tuple(names)


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def describe_certificate(cert_file: Path, *, setting: str = "tls.cert_file") -> CertInfo:
    """Names, validity and issuer of the first (leaf) certificate in ``cert_file``."""
    cert = _load_certificates(Path(cert_file), setting)[0]
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return CertInfo(
        subject_names=_names(cert),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        self_signed=_is_self_signed(cert),
        fingerprint_sha256=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    )
