"""DKIM verification over bytes (RFC 6376; Ed25519 per RFC 8463): every signature, one result
each, in the order of the message's ``DKIM-Signature`` fields (top first).

Pure evaluation: a message and an injected TXT lookup in, results out. Nothing here knows
about cleanup, the queue or ``Authentication-Results``; each :class:`DkimResult` has the
RFC 8601 §2.7.1 shape (``result``, ``reason``, the ``header.*`` properties) so that the
cleanup filter of the next step can turn it into a ``cleanup.verdict.AuthResult``.

DNS: dkimpy asks DNS synchronously through a ``dnsfunc``. We never let it: every key record
``s._domainkey.d`` is fetched first, concurrently, with the injected asynchronous
:data:`TxtLookup` (in production :func:`resolver_txt_lookup` over the ``dns.asyncresolver``
of ``pochta.dns.async_resolver``, whose cache serves repeated keys), and dkimpy gets a
function that only reads what was fetched. A lookup says "no record" with an empty list
(NXDOMAIN or no TXT answer: RFC 6376 §6.1.2 makes that PERMFAIL, here ``permerror``) and
"cannot tell now" with :class:`DnsTemporaryError` (timeout, SERVFAIL: TEMPFAIL, here
``temperror``).

CPU: the hashes cover the whole body, once per signature, so the dkimpy work runs in a thread
(``asyncio.to_thread``) and the event loop stays free.

Results (RFC 8601 §2.7.1 keywords; RFC 6376 §6.1 names the failures):

- ``pass``: the signature verifies with its key;
- ``fail``: body hash or signature does not match (the message changed, or a forgery);
- ``permerror``: a signature or key record that cannot be used: syntax, a missing tag, From
  not signed, ``i=`` outside ``d=``, expired, no key record, revoked key (empty ``p=``), key
  type or hash the key record excludes, a key not meant for email;
- ``temperror``: the key could not be fetched now (DNS timeout or server failure);
- ``neutral``: a signature algorithm this verifier does not implement (RFC 6376 §6.1.1; a
  verifier that does not know Ed25519 ignores it the same way, RFC 8463 §1);
- ``policy``: verifiable, but not acceptable here: an RSA key under 1024 bits (RFC 8301 §3.2),
  ``rsa-sha1`` (RFC 8301 §3.1), or a signature past the first :data:`MAX_SIGNATURES`.

A key published with ``t=y`` (RFC 6376 §3.6.1, testing) is reported in ``testing``; the
result is still what the signature gives, and what to make of it is the caller's choice
(RFC 6376 §3.6.1: treat such mail like unsigned mail).
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dkim
import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver
from dkim.util import InvalidTagValueList, parse_tag_value

from pochta.mailauth import dkim_rsa
from pochta.mime.headers import HeaderField, split_message

# dkimpy's RSA check through OpenSSL (dkim_rsa.py): the same answers, a fraction of the CPU.
dkim_rsa.install()

__all__ = [
    "MAX_SIGNATURES",
    "MIN_RSA_KEY_BITS",
    "DkimResult",
    "DnsTemporaryError",
    "TxtLookup",
    "resolver_txt_lookup",
    "verify_dkim",
]

MAX_SIGNATURES = 10
"""Signatures checked per message; the ones after these get ``policy`` (each costs a DNS
lookup and a hash of the whole body, so an unbounded number is a denial of service)."""

MIN_RSA_KEY_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT accept RSA keys under 1024 bits

# RFC 6376 §3.3 + RFC 8463 §3: what this verifier implements.
_ALGORITHMS = frozenset({b"rsa-sha256", b"ed25519-sha256"})
_KEY_TYPE = {b"rsa-sha256": b"rsa", b"ed25519-sha256": b"ed25519", b"rsa-sha1": b"rsa"}
# RFC 6376 §3.5 (v, a, b, bh, d, h, s are REQUIRED).
_REQUIRED_TAGS = (b"v", b"a", b"b", b"bh", b"d", b"h", b"s")
# RFC 6376 §3.5 d= / s=: domain-name / selector, sub-domain syntax (RFC 5321 §4.1.2) in
# A-labels; an underscore is tolerated, as DNS holds such names.
_DNS_LABEL = rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rb"%s(?:\.%s)*" % (_DNS_LABEL, _DNS_LABEL))
_WSP = re.compile(rb"\s+")
_HEADER_B_CHARS = 8  # RFC 6008 §4: at least the first 8 characters of b=


# A message this small with one signature is verified on the calling thread (the event loop):
# about half a millisecond of dkimpy for 4 KiB, less than the hop to a worker thread costs.
# Larger ones, or several signatures, go to a thread and never hold the loop.
INLINE_MAX_BYTES = 32 * 1024


class DnsTemporaryError(Exception):
    """The lookup could not be answered now (timeout, SERVFAIL): try again later."""


TxtLookup = Callable[[str], Awaitable[list[bytes]]]
"""Asks DNS for the TXT records of a name: each record's strings joined (RFC 6376
§3.6.2.2), ``[]`` when the name does not exist or has no TXT record, and
:class:`DnsTemporaryError` when DNS cannot answer now."""


def resolver_txt_lookup(resolver: dns.asyncresolver.Resolver) -> TxtLookup:
    """The :data:`TxtLookup` of production, over a resolver built by
    ``pochta.dns.async_resolver.make_async_resolver`` (its cache keeps answers for their
    TTL)."""

    async def lookup(name: str) -> list[bytes]:
        # An absolute name: a key record is never looked up under the search domains.
        qname = name if name.endswith(".") else name + "."
        try:
            answer = await resolver.resolve(qname, dns.rdatatype.TXT, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []  # RFC 6376 §6.1.2 step 3: no key record
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no nameserver left
            raise DnsTemporaryError(f"{name}: {exc.__class__.__name__}") from None
        return [b"".join(rdata.strings) for rdata in answer]

    return lookup


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One signature's result: ``result`` an RFC 8601 §2.7.1 keyword, ``reason`` what a
    human needs to know why (empty for pass), ``properties`` the ``header.d``, ``header.s``,
    ``header.i``, ``header.a`` and ``header.b`` the signature has (RFC 8601 §2.7.1, RFC 6008),
    ``testing`` the key's ``t=y`` flag, ``key_bits`` the key size when the key was read."""

    result: str
    reason: str
    properties: Mapping[str, str] = field(default_factory=dict)
    testing: bool = False
    key_bits: int | None = None


@dataclass(slots=True)
class _Signature:
    """A DKIM-Signature field on its way: its tags once parsed, its result once known."""

    index: int  # among the message's DKIM-Signature fields, top first (dkimpy's idx)
    field: HeaderField
    properties: dict[str, str]
    tags: dict[bytes, bytes] | None = None
    key_name: str = ""
    result: DkimResult | None = None

    def done(
        self, result: str, reason: str, *, testing: bool = False, bits: int | None = None
    ) -> None:
        self.result = DkimResult(result, reason, self.properties, testing, bits)


async def verify_dkim(
    message: bytes, *, txt_lookup: TxtLookup, max_signatures: int = MAX_SIGNATURES
) -> list[DkimResult]:
    """One :class:`DkimResult` per ``DKIM-Signature`` field of ``message``, top first (an
    empty list for an unsigned message). See the module docstring for the results."""
    head = split_message(message)
    signatures: list[_Signature] = []
    for index, sig_field in enumerate(head.get_all("dkim-signature")):
        sig = _Signature(index, sig_field, {})
        signatures.append(sig)
        if index >= max_signatures:
            # Resource bound: each signature costs a lookup and a body hash.
            sig.done("policy", f"too many signatures (only the first {max_signatures} are checked)")
            continue
        _check_signature(sig)
    names = sorted({s.key_name for s in signatures if s.result is None})
    answers = await asyncio.gather(*(txt_lookup(name) for name in names), return_exceptions=True)
    records: dict[str, list[bytes] | DnsTemporaryError] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, (DnsTemporaryError, list)):
            records[name] = answer
        else:
            raise answer  # a bug in the lookup, not an answer from DNS
    pending = [s for s in signatures if s.result is None]
    if len(pending) == 1 and len(message) <= INLINE_MAX_BYTES:
        # One signature over a small message costs less than the hop to a thread and back.
        _verify_pending(message, pending, records)
    elif pending:
        await asyncio.to_thread(_verify_pending, message, pending, records)
    return [s.result for s in signatures if s.result is not None]


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _check_signature(sig: _Signature) -> None:
    """The checks that need no key (RFC 6376 §6.1.1); sets ``key_name`` or a result."""
    try:
        tags: dict[bytes, bytes] = parse_tag_value(sig.field.value)
    except InvalidTagValueList as exc:
        sig.done("permerror", f"signature syntax error: {exc}")  # RFC 6376 §6.1.1
        return
    sig.tags = tags
    for tag, name in ((b"d", "header.d"), (b"s", "header.s"), (b"a", "header.a")):
        if tag in tags:
            sig.properties[name] = _text(tags[tag])
    if b"i" in tags:
        sig.properties["header.i"] = _text(tags[b"i"])
    elif b"d" in tags:
        sig.properties["header.i"] = "@" + _text(tags[b"d"])  # RFC 6376 §3.5 i= default
    if b"b" in tags:
        sig.properties["header.b"] = _text(_WSP.sub(b"", tags[b"b"]))[:_HEADER_B_CHARS]
    for tag in _REQUIRED_TAGS:  # RFC 6376 §6.1.1: a required tag missing is PERMFAIL
        if tag not in tags:
            sig.done("permerror", f"signature without {tag.decode()}= tag")
            return
    algorithm = tags[b"a"]
    if algorithm == b"rsa-sha1":
        # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid.
        sig.done("policy", "rsa-sha1 signature (RFC 8301: not accepted)")
        return
    if algorithm not in _ALGORITHMS:
        # RFC 6376 §6.1.1: an algorithm the verifier does not implement: ignore it.
        sig.done("neutral", f"unsupported algorithm {_text(algorithm)}")
        return
    try:
        dkim.validate_signature_fields(tags)  # v=1, base64, i= under d=, l=, q=, t=, x=
    except dkim.ValidationError as exc:
        sig.done("permerror", f"invalid signature: {exc}")
        return
    signed = [name.strip().lower() for name in tags[b"h"].split(b":")]
    if b"from" not in signed:
        # RFC 6376 §6.1.1: h= without From is PERMFAIL (From field not signed).
        sig.done("permerror", "From field not signed")
        return
    domain, selector = tags[b"d"], tags[b"s"]
    if not _DNS_NAME.fullmatch(domain) or len(domain) > 253:
        sig.done("permerror", f"d= {_text(domain)!r} is not a domain name")
        return
    if not _DNS_NAME.fullmatch(selector):
        sig.done("permerror", f"s= {_text(selector)!r} is not a selector")
        return
    # RFC 6376 §3.6.2.1: the key lives at SELECTOR._domainkey.DOMAIN.
    sig.key_name = f"{selector.decode()}._domainkey.{domain.decode()}".lower()


@dataclass(frozen=True, slots=True)
class _Key:
    record: bytes
    bits: int
    testing: bool


def _choose_key(sig: _Signature, answer: list[bytes] | DnsTemporaryError) -> _Key | None:
    """The usable key record for ``sig`` (RFC 6376 §6.1.2), or None with the result set."""
    assert sig.tags is not None
    if isinstance(answer, DnsTemporaryError):
        sig.done("temperror", f"key lookup failed: {answer}")  # RFC 6376 §6.1.2 step 2
        return None
    if not answer:
        sig.done("permerror", f"no key for signature ({sig.key_name})")  # §6.1.2 step 3
        return None
    # RFC 6376 §6.1.2 step 3: with several records the verifier may pick: the first usable.
    problem: tuple[str, str] = ("permerror", "")
    for record in answer:
        key_or_problem = _read_key(sig.tags, record)
        if isinstance(key_or_problem, _Key):
            return key_or_problem
        if not problem[1]:
            problem = key_or_problem
    sig.done(*problem)
    return None


def _read_key(tags: Mapping[bytes, bytes], record: bytes) -> _Key | tuple[str, str]:
    """A key record checked against the signature (RFC 6376 §3.6.1, §6.1.2)."""
    try:
        key: dict[bytes, bytes] = parse_tag_value(record)
    except InvalidTagValueList as exc:
        return "permerror", f"key record syntax error: {exc}"  # §6.1.2 step 4
    if key.get(b"v", b"DKIM1") != b"DKIM1":
        return "permerror", "key record is not v=DKIM1"  # §3.6.1 v=
    if b"p" not in key:
        return "permerror", "key record without p="
    if not _WSP.sub(b"", key[b"p"]):
        return "permerror", "key revoked (empty p=)"  # §3.6.1 p=: an empty value revokes
    algorithm = tags[b"a"]
    if key.get(b"k", b"rsa") != _KEY_TYPE[algorithm]:
        # §6.1.2 step 7: key type does not fit a= (inappropriate key algorithm).
        return (
            "permerror",
            f"key type {_text(key.get(b'k', b'rsa'))} does not fit {_text(algorithm)}",
        )
    hashes = [h.strip() for h in key[b"h"].split(b":")] if b"h" in key else None
    if hashes is not None and algorithm.rpartition(b"-")[2] not in hashes:
        return "permerror", "key record excludes the signature's hash (h=)"  # §6.1.2 step 6
    services = [s.strip() for s in key.get(b"s", b"*").split(b":")]
    if b"*" not in services and b"email" not in services:
        return "permerror", "key is not for email (s=)"  # §3.6.1 s=
    flags = [f.strip() for f in key.get(b"t", b"").split(b":")]
    if b"s" in flags:
        # §3.6.1 t=s: the i= domain must be d= itself, not a subdomain.
        identity = tags.get(b"i", b"@" + tags[b"d"])
        if identity.rpartition(b"@")[2].lower() != tags[b"d"].lower():
            return "permerror", "i= is a subdomain of d= but the key says t=s"
    try:
        _pk, bits, _ktag, _tlsrpt = dkim.evaluate_pk(b"", record)
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        return "permerror", f"key record unusable: {exc}"  # §6.1.2 step 4
    if algorithm.startswith(b"rsa-") and bits < MIN_RSA_KEY_BITS:
        return "policy", f"RSA key of {bits} bits (RFC 8301: at least {MIN_RSA_KEY_BITS})"
    return _Key(record, bits, b"y" in flags)


def _normalized(value: bytes) -> bytes:
    """A field value as dkimpy keeps it: CRLF line ends (the last one left out here)."""
    return re.sub(rb"\r?\n", b"\r\n", value).removesuffix(b"\r\n")


def _verify_pending(
    message: bytes,
    pending: Sequence[_Signature],
    records: Mapping[str, list[bytes] | DnsTemporaryError],
) -> None:
    """dkimpy's verification of each pending signature (runs in a thread)."""
    try:
        verifier = dkim.DKIM(message, minkey=MIN_RSA_KEY_BITS)
    except dkim.DKIMException as exc:
        for sig in pending:
            sig.done("permerror", f"header block DKIM cannot read: {exc}")
        return
    theirs = [_normalized(v) for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    for sig in pending:
        # Both parsers must see the same field at this index, or dkimpy checks another one.
        if sig.index >= len(theirs) or theirs[sig.index] != _normalized(sig.field.value):
            sig.done("permerror", "header block DKIM cannot read")
            continue
        key = _choose_key(sig, records[sig.key_name])
        if key is None:
            continue
        sig.result = _run_dkimpy(verifier, sig, key)


def _run_dkimpy(verifier: dkim.DKIM, sig: _Signature, key: _Key) -> DkimResult:
    def done(result: str, reason: str) -> DkimResult:
        return DkimResult(result, reason, sig.properties, key.testing, key.bits)

    def dnsfunc(name: bytes, timeout: float = 0) -> bytes:  # dkimpy's interface; no DNS here
        return key.record

    try:
        ok = verifier.verify(idx=sig.index, dnsfunc=dnsfunc)
    except dkim.ValidationError as exc:
        if str(exc).startswith("body hash mismatch"):
            return done("fail", "body hash did not verify")  # RFC 6376 §6.1.3
        return done("permerror", f"invalid signature: {exc}")
    except dkim.KeyFormatError as exc:
        return done("permerror", f"key record unusable: {exc}")
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        return done("permerror", f"signature unusable: {exc}")
    if not ok:
        return done("fail", "signature did not verify")  # RFC 6376 §6.1.3
    return done("pass", "")
