"""DANE for SMTP (RFC 7672): TLSA records, validated by DNSSEC, say which certificates an MX
host may present.

Two halves:

- ``lookup_tlsa(resolver, host, port)`` asks DNS. pochta does not validate DNSSEC itself: it
  trusts the AD ("authentic data") flag of a validating resolver it was told to trust
  (``[dns] dnssec_validating``, typically a local unbound; RFC 6698 §4.1, RFC 4035 §3.2.3).
  Queries carry the DO bit and the AD bit (RFC 6840 §5.7), so the resolver reports what it
  validated. DANE applies to a host only when both its address records and its TLSA records
  are secure (RFC 7672 §2.2, §2.2.1). The result's ``status`` tells the caller what to do:

  ========== ==================================================================================
  usable     validated TLSA records, some usable: TLS required, certificate must match
  unusable   validated TLSA records, none usable: TLS required, no authentication (§2.2)
  none       no TLSA records (or no such host): DANE does not apply
  insecure   the address or TLSA records are not validated: DANE does not apply (§2.2)
  error      a lookup failed (SERVFAIL, timeout; a bogus answer is a SERVFAIL from a
             validating resolver): do not deliver to this host now (§2.2)
  ========== ==================================================================================

- ``match_tlsa(chain_der, records, names)`` checks the certificate chain a server presented:
  DANE-EE(3) matches the leaf alone, with no name or expiry check (RFC 7672 §3.1.1);
  DANE-TA(2) matches a CA certificate of the chain that signed the way down to the leaf,
  and the leaf must name the host (RFC 7672 §3.1.2, §3.2.2, §3.2.3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdtypes.ANY.TLSA
import dns.resolver
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from pochta.deliver.tls_policy import TLSARecord
from pochta.logs import get_logger

log = get_logger("deliver")

TlsaStatus = Literal["usable", "unusable", "none", "insecure", "error"]

# RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP; only DANE-TA and DANE-EE.
DANE_TA, DANE_EE = 2, 3
USABLE_USAGES = frozenset({DANE_TA, DANE_EE})
SELECTOR_CERT, SELECTOR_SPKI = 0, 1  # RFC 6698 §2.1.2
# RFC 6698 §2.1.3: 0 exact, 1 SHA-256, 2 SHA-512; the digest length a record must have.
DIGEST_SIZES = {1: 32, 2: 64}
MAX_TLSA_RECORDS = 100  # records looked at per RRset; a real one has a few
MAX_CHAIN = 16  # certificates looked at in a presented chain


@dataclass(frozen=True, slots=True)
class TlsaLookup:
    """What DNS says about DANE for one MX host and port (see the module docstring).

    ``records``: the usable records (empty unless ``status == "usable"``). ``base_domain``:
    the TLSA base domain where they were found (the MX host name, or the name its CNAME chain
    ends at, RFC 7672 §2.2.2). ``names``: the reference identifiers a DANE-TA certificate may
    carry (RFC 7672 §3.2.3). ``detail``: why, for the logs.
    """

    status: TlsaStatus
    records: tuple[TLSARecord, ...] = ()
    base_domain: str = ""
    names: tuple[str, ...] = ()
    detail: str = ""


def is_usable(record: TLSARecord) -> bool:
    """RFC 7672 §2.2 / §3.1.3: a record pochta can check: usage 2 or 3, selector 0 or 1,
    matching type 0, 1 or 2 with a digest of the right length (RFC 7671 §4: records with
    unknown parameters are ignored, not fatal)."""
    if record.usage not in USABLE_USAGES or record.selector not in (SELECTOR_CERT, SELECTOR_SPKI):
        return False
    if record.mtype == 0:
        return len(record.data) > 0
    size = DIGEST_SIZES.get(record.mtype)
    return size is not None and len(record.data) == size


def dnssec_resolver(base: dns.asyncresolver.Resolver) -> dns.asyncresolver.Resolver:
    """A resolver asking the same servers as ``base``, with DO and AD set in every query and
    no client-side cache (a cached answer to a query without DO would have lost its AD)."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameserver_ports = dict(base.nameserver_ports)
    resolver.port = base.port
    resolver.nameservers = list(base.nameservers)
    resolver.timeout = base.timeout
    resolver.lifetime = base.lifetime
    resolver.retry_servfail = False
    # RFC 4035 §3.2.1: DO asks for DNSSEC; RFC 6840 §5.7: AD in a query asks for the AD bit.
    resolver.use_edns(0, dns.flags.DO, 1232)
    resolver.set_flags(dns.flags.RD | dns.flags.AD)
    resolver.cache = None
    return resolver


def _asks_dnssec(resolver: dns.asyncresolver.Resolver) -> bool:
    return resolver.edns >= 0 and bool(resolver.ednsflags & dns.flags.DO) and resolver.cache is None


async def lookup_tlsa(resolver: dns.asyncresolver.Resolver, host: str, port: int) -> TlsaLookup:
    """The TLSA records of ``_PORT._tcp.HOST`` that DANE may use (RFC 7672 §2.2).

    ``resolver`` must be a trusted validating resolver; a plain one is wrapped with
    ``dnssec_resolver`` (pass such a wrapper to save the wrapping on every call).
    """
    if not _asks_dnssec(resolver):
        resolver = dnssec_resolver(resolver)
    name = host.lower().rstrip(".")
    try:
        qname = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        return TlsaLookup("none", detail=f"{host!r} is not a host name: {exc}")

    # RFC 7672 §2.2.1/§2.2.2: the TLSA lookup is only meaningful when the MX host's address
    # records are secure. pochta asks for A (then AAAA if that fails) and trusts the AD bit.
    address = await _address_answer(resolver, qname)
    if isinstance(address, TlsaLookup):
        return address
    if not address.response.flags & dns.flags.AD:
        return TlsaLookup("insecure", detail=f"address records of {name} are not DNSSEC-signed")
    # RFC 7672 §2.2.2: a secure CNAME chain makes its target the first TLSA base domain;
    # the original name is the fallback. Both are reference identifiers (§3.2.3).
    expanded = address.canonical_name.to_text(omit_final_dot=True).lower()
    bases = [expanded, name] if expanded != name else [name]
    for base in bases:
        result = await _tlsa_at(resolver, base, port)
        if result is None:
            continue  # no records at this base domain: try the next
        if result.status == "usable":
            names = tuple(dict.fromkeys((base, *bases)))
            return TlsaLookup("usable", result.records, base, names, result.detail)
        return result
    return TlsaLookup("none", base_domain=name, detail=f"no TLSA records for _{port}._tcp.{name}")


async def _address_answer(
    resolver: dns.asyncresolver.Resolver, qname: dns.name.Name
) -> dns.resolver.Answer | TlsaLookup:
    errors: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            return await resolver.resolve(qname, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return TlsaLookup("none", detail=f"{qname} does not exist")
        except dns.exception.DNSException as exc:
            errors.append(f"{rdtype}: {exc}")
    # RFC 7672 §2.2: when it cannot be known whether the host is secure, a validating
    # resolver's failure may hide a bogus answer: do not use this host now.
    return TlsaLookup("error", detail=f"address lookup of {qname} failed ({'; '.join(errors)})")


async def _tlsa_at(resolver: dns.asyncresolver.Resolver, base: str, port: int) -> TlsaLookup | None:
    qname = f"_{port}._tcp.{base}."
    try:
        answer = await resolver.resolve(qname, "TLSA", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None
    except dns.exception.DNSException as exc:
        # RFC 7672 §2.2: a TLSA lookup that fails (other than "no records") for a secure
        # host means the host must not be used, lest an attacker strip DANE by blocking it.
        return TlsaLookup("error", base_domain=base, detail=f"{qname} TLSA lookup failed: {exc}")
    if answer.rrset is None or len(answer.rrset) == 0:
        return None
    if not answer.response.flags & dns.flags.AD:
        # RFC 7672 §2.2: insecure TLSA records MUST NOT be used.
        return TlsaLookup("insecure", base_domain=base, detail=f"{qname} is not DNSSEC-signed")
    records = [
        TLSARecord(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert))
        for rdata in list(answer.rrset)[:MAX_TLSA_RECORDS]
        if isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA)
    ]
    usable = tuple(r for r in records if is_usable(r))
    if not usable:
        # RFC 7672 §2.2: a secure RRset whose records are all unusable still promises TLS.
        return TlsaLookup(
            "unusable", base_domain=base, detail=f"{qname}: {len(records)} unusable records"
        )
    return TlsaLookup("usable", usable, base, detail=f"{qname}: {len(usable)} usable records")


# -- matching (RFC 6698 §2.1, RFC 7671, RFC 7672 §3) -----------------------------------------


def match_tlsa(
    chain_der: Sequence[bytes], records: Iterable[TLSARecord], names: Sequence[str] = ()
) -> bool:
    """Does the chain a server presented (leaf first, DER) satisfy one of the records?

    ``names``: the reference identifiers for DANE-TA (the MX host name and the TLSA base
    domain, ``TlsaLookup.names``); with none given no DANE-TA record can match.
    Unusable records are ignored.
    """
    usable = [r for r in records if is_usable(r)]
    if not chain_der or not usable:
        return False
    chain = list(chain_der[:MAX_CHAIN])
    leaf_der = chain[0]
    # RFC 7672 §3.1.1: DANE-EE matches the leaf; its names and dates do not matter.
    for record in usable:
        if record.usage == DANE_EE and _matches(record, leaf_der):
            return True
    ta_records = [r for r in usable if r.usage == DANE_TA]
    if not ta_records:
        return False
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return False
    # RFC 7672 §3.2.2/§3.2.3: with DANE-TA the leaf must name the host.
    if not _names_host(certs[0], names):
        return False
    return _chains_to_ta(chain, certs, ta_records)


def _chains_to_ta(
    chain: list[bytes], certs: list[x509.Certificate], ta_records: list[TLSARecord]
) -> bool:
    # RFC 7672 §3.1.2: the TA certificate is in the chain the server sends; the path from the
    # leaf up to it must verify (issuer names, signatures, dates, CA flags below the TA).
    now = dt.datetime.now(dt.UTC)
    current = 0
    used = {0}
    for _ in range(len(certs)):
        cert = certs[current]
        if not _valid_now(cert, now):
            return False
        issuer = _find_issuer(certs, current, used)
        if issuer is None:
            return False
        if any(_matches(record, chain[issuer]) for record in ta_records):
            return True  # the TA's own dates and flags are the domain owner's business
        if not _is_ca(certs[issuer]):
            return False
        used.add(issuer)
        current = issuer
    return False


def _find_issuer(certs: list[x509.Certificate], index: int, used: set[int]) -> int | None:
    cert = certs[index]
    for i, candidate in enumerate(certs):
        if i in used or candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return i
    return None


def _valid_now(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _matches(record: TLSARecord, cert_der: bytes) -> bool:
    if record.selector == SELECTOR_CERT:
        data = cert_der
    else:
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            data = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except (ValueError, TypeError):
            return False
    if record.mtype == 1:
        data = hashlib.sha256(data).digest()
    elif record.mtype == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def _names_host(cert: x509.Certificate, names: Sequence[str]) -> bool:
    wanted = {n.lower().rstrip(".") for n in names if n}
    if not wanted:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        presented = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        presented = []
    if not presented:
        # RFC 7672 §3.2.3 (by RFC 6125 §6.4.4): the CN only when there are no DNS names.
        presented = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return any(_name_matches(p, w) for p in presented for w in wanted)


def _name_matches(presented: str, wanted: str) -> bool:
    pattern = presented.lower().rstrip(".")
    if pattern.startswith("*."):
        # RFC 7672 §3.2.3: a wildcard matches exactly one leftmost label.
        head, _, rest = wanted.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == wanted
