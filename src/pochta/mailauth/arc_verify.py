"""ARC verification over bytes (RFC 8617 §5.2): the chain validation status of a message's
Authenticated Received Chain, and the chain itself as data.

Pure evaluation, like ``dkim_verify.py``: a message and an injected TXT lookup in, one
:class:`ArcResult` out. Nothing here knows about cleanup or the verdict; the result has the
RFC 8601 shape (``result``, ``reason``, the ``header.*`` properties) so that
``cleanup/auth_filter.py`` can write ``arc=...`` and decide whether a trusted sealer's
``ARC-Authentication-Results`` may override a DMARC failure (RFC 8617 §7.2.1).

What is checked, in the order of RFC 8617 §5.2:

1. the ARC fields (``ARC-Seal``, ``ARC-Message-Signature``, ``ARC-Authentication-Results``)
   are collected and grouped by their instance ``i=``; none: ``none``; an ``i=`` outside
   1..50 (§4.2.1) or more than 50 sets: ``fail``;
2. the newest ARC-Seal says ``cv=fail``: ``fail`` (§5.2 step 2);
3. the structure: every instance 1..N has exactly one field of each kind, ``cv=none`` on
   instance 1 and ``cv=pass`` on every other (§5.2 step 3, §4.4); else ``fail`` with what is
   wrong;
4. the newest ARC-Message-Signature verifies (§5.2 step 4); each older one is tried too,
   for ``header.oldest-pass`` (§5.2 step 5: the instance of the oldest AMS that validates
   with all newer ones, ``0`` when every AMS validates);
5. every ARC-Seal verifies, newest first (§5.2 step 6); then ``pass`` (§5.2 step 7).

DNS: every key an ARC-Seal or ARC-Message-Signature names (``s._domainkey.d``, RFC 8617
§4.1.2/§4.1.3 reuse the DKIM key records) is fetched first, concurrently, with the same
:data:`~pochta.mailauth.dkim_verify.TxtLookup` as DKIM verification, and the key records
are checked by the same code (``dkim_verify._read_key``: key type, revocation, RFC 8301 key
size). dkimpy then verifies in a thread (``asyncio.to_thread``) with a ``dnsfunc`` that only
reads what was fetched. A key that is not in DNS makes its signature fail to validate, so
the chain ``fail``s (RFC 8617 §5.2 steps 4/6 know only pass and fail). A lookup that could not
be answered now (:class:`~pochta.mailauth.dkim_verify.DnsTemporaryError`) gives ``temperror``
(RFC 8601 §2.7.1's keyword for "could not be completed now") unless a signature whose key
was fetched already fails the chain. ``permerror`` is not used: RFC 8617 §4.4 and §5.2 make
every broken chain a ``fail``.
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from pochta.mailauth.dkim_verify import (
    _DNS_NAME,
    MIN_RSA_KEY_BITS,
    DnsTemporaryError,
    TxtLookup,
    _Key,
    _read_key,
)
from pochta.mime.headers import HeaderField, split_message

__all__ = ["MAX_ARC_SETS", "AarResult", "ArcResult", "ArcSet", "verify_arc"]

MAX_ARC_SETS = 50  # RFC 8617 §4.2.1: i= is 1 to 50; §5.2 step 1: more than 50 sets: fail

_SEAL = "arc-seal"
_AMS = "arc-message-signature"
_AAR = "arc-authentication-results"
_KINDS = {_SEAL: "ARC-Seal", _AMS: "ARC-Message-Signature", _AAR: "ARC-Authentication-Results"}
# RFC 8617 §4.1.3 and §4.1.2: the DKIM algorithms (RFC 6376 §3.3, RFC 8463 §3), without
# rsa-sha1 (RFC 8301 §3.1).
_ALGORITHMS = frozenset({b"rsa-sha256", b"ed25519-sha256"})
_SEAL_TAGS = (b"i", b"a", b"b", b"cv", b"d", b"s")  # RFC 8617 §4.1.3 (required tags)
_AMS_TAGS = (b"i", b"a", b"b", b"bh", b"d", b"h", b"s")  # RFC 8617 §4.1.2 (as DKIM, plus i=)
_INSTANCE = re.compile(r"\s*i\s*=\s*([0-9]{1,4})\s*")
# RFC 8601 §2.2 resinfo pieces: "method=result", "reason=...", "ptype.property=value".
_PAIR = re.compile(r'([A-Za-z0-9_.\-/]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s";]+)')


@dataclass(frozen=True, slots=True)
class AarResult:
    """One resinfo of an ``ARC-Authentication-Results`` payload (RFC 8601 §2.2): what the
    sealer found, e.g. ``dmarc``/``pass`` with ``{"header.from": "example.org"}``."""

    method: str
    result: str
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArcSet:
    """One ARC set as data: the ARC-Seal's ``d=``, ``s=`` and ``cv=``, and the parsed
    ARC-Authentication-Results (its authserv-id and results)."""

    instance: int
    domain: str
    selector: str
    cv: str
    authserv_id: str = ""
    results: tuple[AarResult, ...] = ()

    def result_of(self, method: str) -> AarResult | None:
        """The sealer's first result for ``method`` (``dmarc``, ``spf``, ``dkim``), or None."""
        return next((r for r in self.results if r.method == method), None)


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The chain validation status (RFC 8617 §4.4: ``none``, ``pass``, ``fail``; plus
    ``temperror`` for DNS that could not answer), ``reason`` for a human (empty for pass and
    none), ``properties`` for Authentication-Results (``header.oldest-pass``, RFC 8617 §6)
    and the sets, oldest (i=1) first. ``chain`` is empty when the structure is broken."""

    result: str
    reason: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)
    chain: tuple[ArcSet, ...] = ()

    @property
    def newest(self) -> ArcSet | None:
        """The set with the highest instance: the last sealer's, or None."""
        return self.chain[-1] if self.chain else None


@dataclass(slots=True)
class _Instance:
    """The fields of one instance on their way through the checks."""

    number: int
    fields: dict[str, list[HeaderField]] = field(default_factory=dict)
    seal: dict[bytes, bytes] = field(default_factory=dict)
    ams: dict[bytes, bytes] = field(default_factory=dict)


class _Broken(Exception):
    """The chain is ``fail`` before any signature is checked; the message says why."""


async def verify_arc(message: bytes, *, txt_lookup: TxtLookup) -> ArcResult:
    """The :class:`ArcResult` of ``message``; see the module docstring."""
    head = split_message(message)
    arc_fields = [h for h in head.headers if h.key in _KINDS]
    if not arc_fields:
        return ArcResult("none")  # RFC 8617 §5.2 step 1: no ARC sets
    try:
        instances = _structure(arc_fields)
    except _Broken as exc:
        return ArcResult("fail", str(exc))
    chain = tuple(_as_set(inst) for inst in instances)
    # Every key a seal or signature names, fetched concurrently before dkimpy runs.
    names = sorted({_key_name(tags) for inst in instances for tags in (inst.seal, inst.ams)})
    answers = await asyncio.gather(*(txt_lookup(name) for name in names), return_exceptions=True)
    keys: dict[str, _Key | str] = {}  # a usable key, or why there is none
    unknown: set[str] = set()  # DNS could not answer now
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, DnsTemporaryError):
            unknown.add(name)
            keys[name] = f"key lookup failed: {answer}"
        elif isinstance(answer, list):
            keys[name] = _pick_key(name, answer, instances)
        else:
            raise answer  # a bug in the lookup, not an answer from DNS
    return await asyncio.to_thread(_verify, message, instances, chain, keys, unknown)


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _structure(arc_fields: list[HeaderField]) -> list[_Instance]:
    """The instances 1..N, each with one field of each kind and valid tags (RFC 8617
    §5.2 steps 1-3), or :class:`_Broken`."""
    by_number: dict[int, _Instance] = {}
    for arc_field in arc_fields:
        number = _instance_of(arc_field)
        by_number.setdefault(number, _Instance(number)).fields.setdefault(arc_field.key, []).append(
            arc_field
        )
    if len(by_number) > MAX_ARC_SETS:  # RFC 8617 §5.2 step 1
        raise _Broken(f"{len(by_number)} ARC sets (at most {MAX_ARC_SETS})")
    newest = max(by_number)
    for number in range(1, newest + 1):  # RFC 8617 §5.2 step 3.2: 1..N, no gaps
        if number not in by_number:
            raise _Broken(f"ARC set i={number} missing (the chain goes up to i={newest})")
    instances = [by_number[n] for n in range(1, newest + 1)]
    for inst in instances:
        for key, kind in _KINDS.items():  # RFC 8617 §5.2 step 3.1: exactly one of each
            found = inst.fields.get(key, [])
            if not found:
                raise _Broken(f"ARC set i={inst.number} has no {kind}")
            if len(found) > 1:
                raise _Broken(f"ARC set i={inst.number} has {len(found)} {kind} fields")
        inst.seal = _tags(inst, _SEAL, _SEAL_TAGS)
        inst.ams = _tags(inst, _AMS, _AMS_TAGS)
    # RFC 8617 §5.2 step 2: the newest seal says the chain already failed.
    if instances[-1].seal[b"cv"].lower() == b"fail":
        raise _Broken(f"ARC-Seal i={newest} says cv=fail (a handler found the chain broken)")
    for inst in instances:  # RFC 8617 §5.2 step 3.3, §4.4
        cv = inst.seal[b"cv"].lower()
        wanted = b"none" if inst.number == 1 else b"pass"
        if cv != wanted:
            raise _Broken(
                f"ARC-Seal i={inst.number} has cv={_text(cv)} (instance "
                f"{'1 must say none' if inst.number == 1 else 'above 1 must say pass'})"
            )
    return instances


def _instance_of(arc_field: HeaderField) -> int:
    """The instance of one ARC field: ``i=`` of its tag list, or the ``i=`` before the first
    ``;`` of an ARC-Authentication-Results (RFC 8617 §4.1.1)."""
    kind = _KINDS[arc_field.key]
    if arc_field.key == _AAR:
        match = _INSTANCE.fullmatch(arc_field.text.split(";", 1)[0])
        raw = match.group(1) if match else ""
    else:
        try:
            raw = _text(parse_tag_value(arc_field.value).get(b"i", b""))
        except InvalidTagValueList as exc:
            raise _Broken(f"{kind} syntax error: {exc}") from None
    if not raw.isdigit():
        raise _Broken(f"{kind} without a valid instance (i=)")
    number = int(raw)
    if not 1 <= number <= MAX_ARC_SETS:  # RFC 8617 §4.2.1: 1 to 50
        raise _Broken(f"{kind} has i={number} (instances are 1 to {MAX_ARC_SETS})")
    return number


def _tags(inst: _Instance, key: str, required: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The checked tags of the instance's seal or signature (RFC 8617 §4.1.2, §4.1.3)."""
    kind = _KINDS[key]
    where = f"{kind} i={inst.number}"
    try:
        tags: dict[bytes, bytes] = parse_tag_value(inst.fields[key][0].value)
    except InvalidTagValueList as exc:
        raise _Broken(f"{where}: syntax error: {exc}") from None
    for tag in required:
        if tag not in tags:
            raise _Broken(f"{where} without {tag.decode()}= tag")
    if key == _SEAL and b"h" in tags:
        raise _Broken(f"{where} has an h= tag (RFC 8617 §4.1.3 forbids it)")
    if tags[b"a"] not in _ALGORITHMS:
        raise _Broken(f"{where} uses algorithm {_text(tags[b'a'])}")
    if key == _AMS and b"arc-seal" in [h.strip().lower() for h in tags[b"h"].split(b":")]:
        raise _Broken(f"{where} signs ARC-Seal (RFC 8617 §4.1.2 forbids it)")
    try:  # base64, t=, x= (expired), q=, l= as for DKIM; i= is the instance here
        dkim.validate_signature_fields({k: v for k, v in tags.items() if k != b"i"}, [])
    except dkim.ValidationError as exc:
        raise _Broken(f"{where}: {exc}") from None
    domain, selector = tags[b"d"], tags[b"s"]
    if not _DNS_NAME.fullmatch(domain) or len(domain) > 253:
        raise _Broken(f"{where}: d= {_text(domain)!r} is not a domain name")
    if not _DNS_NAME.fullmatch(selector):
        raise _Broken(f"{where}: s= {_text(selector)!r} is not a selector")
    return tags


def _key_name(tags: Mapping[bytes, bytes]) -> str:
    # RFC 6376 §3.6.2.1 (RFC 8617 §4.1.2/§4.1.3 use DKIM keys): SELECTOR._domainkey.DOMAIN
    return f"{tags[b's'].decode()}._domainkey.{tags[b'd'].decode()}".lower()


def _pick_key(name: str, answer: list[bytes], instances: list[_Instance]) -> _Key | str:
    """The first usable key record at ``name`` for the signatures that name it, or why none
    is (RFC 6376 §6.1.2 applied to ARC keys)."""
    if not answer:
        return f"no key at {name}"
    users = [t for inst in instances for t in (inst.seal, inst.ams) if _key_name(t) == name]
    problem = ""
    for record in answer:
        # Checked against each signature that uses it (the algorithm may differ).
        checked = [_read_key({**tags, b"i": b"@" + tags[b"d"]}, record) for tags in users]
        good = [k for k in checked if isinstance(k, _Key)]
        if len(good) == len(checked):
            return good[0]
        problem = problem or next(p[1] for p in checked if not isinstance(p, _Key))
    return f"{name}: {problem}"


def _as_set(inst: _Instance) -> ArcSet:
    authserv, results = _parse_aar(inst.fields[_AAR][0].text)
    return ArcSet(
        instance=inst.number,
        domain=_text(inst.seal[b"d"]).lower(),
        selector=_text(inst.seal[b"s"]),
        cv=_text(inst.seal[b"cv"]).lower(),
        authserv_id=authserv,
        results=results,
    )


def _parse_aar(text: str) -> tuple[str, tuple[AarResult, ...]]:
    """An ARC-Authentication-Results payload (RFC 8617 §4.1.1: ``i=N;`` then an
    Authentication-Results value, RFC 8601 §2.2) as its authserv-id and results. Lenient:
    comments go, a resinfo that cannot be read is skipped (the policy then finds no pass)."""
    pieces = _split_outside_quotes(_strip_comments(text), ";")[1:]  # [0] is "i=N"
    if not pieces:
        return "", ()
    words = pieces[0].split()
    authserv = words[0].strip('"').rstrip(".").lower() if words else ""
    results: list[AarResult] = []
    for piece in pieces[1:]:
        pairs = _PAIR.findall(piece)
        if not pairs:
            continue  # "none" (RFC 8601 §2.2 no-result) or unreadable
        method, result = pairs[0]
        properties = {
            key.lower(): _unquote(value)
            for key, value in pairs[1:]
            if "." in key  # RFC 8601 §2.3 propspec: ptype "." property
        }
        results.append(
            AarResult(method.partition("/")[0].lower(), _unquote(result).lower(), properties)
        )
    return authserv, tuple(results)


def _strip_comments(text: str) -> str:
    """``text`` without RFC 5322 §3.2.2 comments (nested), quoted strings kept."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` cut at each ``separator`` that is not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _verify(
    message: bytes,
    instances: list[_Instance],
    chain: tuple[ArcSet, ...],
    keys: Mapping[str, _Key | str],
    unknown: set[str],
) -> ArcResult:
    """dkimpy's verification of every set on the fetched keys (runs in a thread), then
    RFC 8617 §5.2 steps 4-7."""
    newest = len(instances)

    def failed(reason: str) -> ArcResult:
        return ArcResult("fail", reason, {}, chain)

    def dnsfunc(name: bytes, timeout: float = 0) -> bytes:  # dkimpy's interface; no DNS here
        key = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        return key.record if isinstance(key, _Key) else b""

    try:
        verifier = dkim.ARC(message, minkey=MIN_RSA_KEY_BITS)
        top, sorted_fields = verifier.sorted_arc_headers()
        if top != newest:  # both parsers must see the same chain
            return failed("ARC fields dkimpy cannot read")
        outcome = {
            inst.number: _check_instance(verifier, sorted_fields, inst, dnsfunc)
            for inst in reversed(instances)
        }
    except dkim.DKIMException as exc:
        return failed(f"ARC set unusable: {exc}")
    except (IndexError, KeyError, ValueError, binascii.Error) as exc:  # dkimpy on odd input
        return failed(f"ARC set unusable: {exc.__class__.__name__}")

    def problem(inst: _Instance, kind: str, tags: Mapping[bytes, bytes]) -> tuple[str, bool]:
        """Why the seal or signature did not validate, and whether DNS is to blame."""
        name = _key_name(tags)
        key = keys[name]
        if isinstance(key, str):
            return f"{kind} i={inst.number}: {key}", name in unknown
        return f"{kind} i={inst.number} did not validate", False

    pending: list[str] = []  # what could not be checked for want of DNS
    top_inst = instances[-1]
    if not outcome[newest][0]:  # RFC 8617 §5.2 step 4
        reason, temporary = problem(top_inst, "ARC-Message-Signature", top_inst.ams)
        if not temporary:
            return failed(reason)
        pending.append(reason)
    for inst in reversed(instances):  # RFC 8617 §5.2 step 6, newest first
        if not outcome[inst.number][1]:
            reason, temporary = problem(inst, "ARC-Seal", inst.seal)
            if not temporary:
                return failed(reason)
            pending.append(reason)
    if pending:
        return ArcResult("temperror", pending[0], {}, chain)
    # RFC 8617 §5.2 step 5: the oldest AMS validating with all newer ones; 0: all validate.
    oldest = newest
    while oldest > 1 and outcome[oldest - 1][0]:
        oldest -= 1
    oldest_pass = 0 if oldest == 1 else oldest
    return ArcResult("pass", "", {"header.oldest-pass": str(oldest_pass)}, chain)  # step 7


_SortedFields = list[tuple[int, tuple[bytes, bytes]]]


def _check_instance(
    verifier: dkim.ARC,
    sorted_fields: _SortedFields,
    inst: _Instance,
    dnsfunc: Callable[..., bytes],
) -> tuple[bool, bool]:
    """Whether the instance's ARC-Message-Signature and ARC-Seal validate.

    What dkimpy's ``ARC.verify_instance`` does, with its ``verify_sig``, but for every
    algorithm the DKIM verifier knows (``verify_instance`` takes only rsa-sha256; RFC 8617
    §4.1.2/§4.1.3 take the DKIM algorithms, so Ed25519 too, RFC 8463) and with the fields
    already checked by :func:`_structure`."""
    wanted = str(inst.number).encode()
    # The AMS as it came (RFC 8617 §4.1.2: hashed like a DKIM-Signature, c= relaxed/relaxed
    # unless it says otherwise).
    ams_header = next(
        (name, value)
        for name, value in verifier.headers
        if name.lower() == b"arc-message-signature"
        and parse_tag_value(value).get(b"i", b"").strip() == wanted
    )
    ams_tags = {b"c": b"relaxed/relaxed", **inst.ams}
    signed = [name.strip().lower() for name in inst.ams[b"h"].split(b":")]
    ams_valid = _signature_valid(verifier, ams_tags, signed, ams_header, dnsfunc)
    # RFC 8617 §5.1.1 (the seal's hash input): the ARC fields of instances 1..i, oldest
    # first, AAR, AMS, AS each, the seal itself last with an empty b=; relaxed only.
    fields = [f for i, f in sorted_fields if i <= inst.number]
    seal_value = next(
        v for i, (n, v) in sorted_fields if i == inst.number and n.lower() == b"arc-seal"
    )
    seal_tags = {b"c": b"relaxed/relaxed", **parse_tag_value(seal_value)}
    covered = [name.lower() for name, _value in reversed(fields)][:-1]
    as_valid = _signature_valid(
        verifier, seal_tags, covered, (b"ARC-Seal", b" " + seal_value), dnsfunc
    )
    return ams_valid, as_valid


def _signature_valid(
    verifier: dkim.ARC,
    tags: dict[bytes, bytes],
    signed: list[bytes],
    header: tuple[bytes, bytes],
    dnsfunc: Callable[..., bytes],
) -> bool:
    try:
        return bool(verifier.verify_sig(tags, signed, header, dnsfunc))
    except dkim.DKIMException:  # body hash mismatch, unusable key: not valid
        return False
