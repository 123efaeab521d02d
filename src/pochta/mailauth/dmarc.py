"""DMARC evaluation (RFC 7489; DMARCbis tree walk on request): From domain, SPF and DKIM in,
a result and the policy to apply out.

Pure evaluation: the caller gives the RFC5322.From domain(s) (:func:`author_domains` takes
them from the header fields), the SPF result with its domain (MAIL FROM, or HELO when MAIL
FROM was empty), the DKIM results (``d=`` and pass/fail) and an async TXT lookup
(:data:`TxtLookup`; :func:`resolver_txt_lookup` adapts a dnspython resolver). Nothing here
knows about cleanup or SMTP replies; the next step maps :class:`DmarcResult` to
``cleanup.verdict.AuthResult``.

Policy discovery (RFC 7489 §6.6.3), ``discovery="psl"``, the default:

1. TXT at ``_dmarc.<From domain>``; answers not starting with ``v=DMARC1`` are dropped;
2. none left (NXDOMAIN or no answer): TXT at ``_dmarc.<organizational domain>``, the From
   domain's registrable part by the Public Suffix List (``publicsuffixlist``, RFC 7489 §3.2);
3. a DNS failure (timeout, SERVFAIL) stops with ``temperror``; several DMARC records at one
   name, or a record with a syntax error, stop with ``permerror`` and no policy applied (the
   record is ignored, RFC 7489 §6.6.3; RFC 7489 §11.2 names such a record as the example of
   permerror).

``discovery="treewalk"`` (draft-ietf-dmarc-dmarcbis §4.10): from the From domain towards the
root, at most 8 queries (a name of more than 8 labels jumps to its last 7); the first record
found applies, and the organizational domain is where ``psd=n`` is found, one label below
where ``psd=y`` is found, or else the shortest name on the walk with a record (the From
domain itself when none has). Alignment in this mode asks the same walk for each domain.

Which policy (RFC 7489 §6.6.3, §6.3 ``sp``; DMARCbis ``np``): ``p`` when the record is the
From domain's own, or the From domain is the organizational domain (a PSD record found
with ``psd=y``); else ``np`` when the From domain does not exist (NXDOMAIN on a TXT query
for the name itself, RFC 8020: NXDOMAIN means nothing at or under the name), then ``sp``,
then ``p``. A record without a valid ``p`` counts as ``p=none`` when it has a usable
``rua`` (RFC 7489 §6.6.3 step 5a), otherwise no DMARC applies (result ``none``).

Alignment (RFC 7489 §3.1): strict = the same name; relaxed = the same organizational domain.
``pass`` when an SPF ``pass`` domain or a DKIM ``pass`` ``d=`` aligns (§4.2).

``pct`` (RFC 7489 §6.6.4): a failing message is given the policy with probability pct/100
(drawn from the injected ``random_fraction``), otherwise the next milder one (reject →
quarantine → none).

Several From domains (RFC 7489 §6.6.1 lets the receiver choose): we refuse, as OpenDMARC
(``RejectMultiValueFrom``) and Gmail do: ``permerror`` with the disposition ``reject``. A
message with no usable From domain is ``permerror`` with no policy (there is no domain whose
owner asked for one).
"""

from __future__ import annotations

import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from publicsuffixlist import PublicSuffixList

from pochta.directory.addresses import AddressError, normalize_domain
from pochta.mime.addresses import address_spans
from pochta.mime.headers import HeaderField

__all__ = [
    "MAX_TREE_WALK_QUERIES",
    "Alignment",
    "Discovery",
    "DkimIdentity",
    "DmarcRecord",
    "DmarcResult",
    "DnsTemporaryError",
    "NoSuchDomain",
    "Policy",
    "RecordError",
    "ReportUri",
    "TxtLookup",
    "aligned",
    "author_domains",
    "evaluate",
    "is_dmarc_record",
    "organizational_domain",
    "parse_record",
    "resolver_txt_lookup",
]

Policy = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]
Discovery = Literal["psl", "treewalk"]


class DnsTemporaryError(Exception):
    """A lookup failed for now (timeout, SERVFAIL, no server answered): ``temperror``."""


class NoSuchDomain(Exception):
    """The name does not exist (NXDOMAIN)."""


TxtLookup = Callable[[str], Awaitable[list[bytes]]]
"""TXT strings at a name (each record's strings joined); ``[]`` when the name has no TXT
record; raises :class:`NoSuchDomain` for NXDOMAIN and :class:`DnsTemporaryError` for the
rest, so "no record" (DMARC ``none``) and "could not ask" (``temperror``) stay apart."""

# draft-ietf-dmarc-dmarcbis §4.10: "at most eight" queries on one walk.
MAX_TREE_WALK_QUERIES = 8

_PSL = PublicSuffixList()


def resolver_txt_lookup(resolver: dns.asyncresolver.Resolver) -> TxtLookup:
    """A :data:`TxtLookup` over dnspython (build the resolver with
    ``pochta.dns.async_resolver.make_async_resolver(settings.dns)``)."""

    async def lookup(name: str) -> list[bytes]:
        try:
            answer = await resolver.resolve(name, "TXT")
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(name) from None
        except dns.resolver.NoAnswer:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporaryError(f"{name} TXT: {exc}") from None
        except dns.exception.DNSException as exc:  # e.g. a name too long to ask
            raise DnsTemporaryError(f"{name} TXT: {exc}") from None
        # RFC 7208 §3.3 / RFC 7489 §6.1: a TXT record's strings are joined without spaces.
        return [b"".join(rdata.strings) for rdata in answer]

    return lookup


# ---------------------------------------------------------------------------------------
# The record


class RecordError(ValueError):
    """A DMARC record that does not parse; the message says which tag and why."""


@dataclass(frozen=True, slots=True)
class ReportUri:
    """One ``rua``/``ruf`` entry (RFC 7489 §6.4 dmarc-uri): the URI and its size limit."""

    uri: str
    max_size_bytes: int | None = None  # "!10m" → 10 MiB; None: no limit given


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed DMARC record (RFC 7489 §6.3; ``np``, ``psd``, ``t`` from DMARCbis)."""

    policy: Policy | None = None  # p; None when absent (see the module docstring)
    subdomain_policy: Policy | None = None  # sp
    nonexistent_policy: Policy | None = None  # np (DMARCbis, RFC 9091)
    percent: int = 100  # pct
    dkim_alignment: Alignment = "r"  # adkim
    spf_alignment: Alignment = "r"  # aspf
    aggregate_report_uris: tuple[ReportUri, ...] = ()  # rua
    failure_report_uris: tuple[ReportUri, ...] = ()  # ruf
    failure_options: tuple[str, ...] = ("0",)  # fo
    report_formats: tuple[str, ...] = ("afrf",)  # rf
    report_interval_seconds: int = 86400  # ri
    psd: Literal["y", "n", "u"] = "u"  # DMARCbis §4.7
    testing: bool = False  # DMARCbis t=y


# RFC 7489 §6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31
_VERSION = re.compile(r"v[ \t]*=[ \t]*DMARC1[ \t]*(?:;|$)")
# RFC 6376 §3.2 tag-list (RFC 7489 §6.3 uses it): tag-name = ALPHA *ALNUMPUNC,
# tval = 1*tval-char, tval-char = %x21-3A / %x3C-7E, separated by WSP.
_TAG = re.compile(r"[ \t]*([A-Za-z][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*?)[ \t]*")
_TVAL = re.compile(r"[\x21-\x3a\x3c-\x7e]+(?:[ \t]+[\x21-\x3a\x3c-\x7e]+)*")
_POLICIES: dict[str, Policy] = {"none": "none", "quarantine": "quarantine", "reject": "reject"}
# RFC 7489 §6.4: dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ]; a comma in a URI
# must be %-encoded (§6.2), so "," separates. The scheme per RFC 3986 §3.1.
# A "!" in the URI itself is taken as the size mark, as OpenDMARC does (the ABNF is ambiguous).
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*:[^\s,!]+)(?:!([0-9]{1,15})([kmgtKMGT]?))?")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_FO = re.compile(r"[01ds](?:[ \t]*:[ \t]*[01ds])*")
_KEYWORDS = re.compile(r"[A-Za-z0-9\-]+(?:[ \t]*:[ \t]*[A-Za-z0-9\-]+)*")


def is_dmarc_record(text: str | bytes) -> bool:
    """Whether a TXT string starts with the DMARC version tag (RFC 7489 §6.6.3 step 2:
    other records at ``_dmarc`` names are discarded)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return _VERSION.match(text) is not None


def parse_record(text: str | bytes) -> DmarcRecord:
    """Parse one DMARC TXT string into a :class:`DmarcRecord`, or raise :class:`RecordError`
    (and nothing else, whatever the input) saying what is wrong.

    RFC 7489 §6.3: ``v=DMARC1`` must be first; unknown tags are ignored; a tag given twice
    spoils the record (RFC 6376 §3.2). Tag names and keyword values are matched without
    regard to case (RFC 5234 §2.3); the version value is exact.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise RecordError("the record is not ASCII (RFC 7489 §6.4)") from None
    if not _VERSION.match(text):
        raise RecordError('the record must start with "v=DMARC1" (RFC 7489 §6.3)')
    values: dict[str, str] = {}
    for part in text.split(";")[1:]:
        if not part.strip(" \t"):
            continue  # "p=none;" ends with a separator; an empty part between two is kept too
        match = _TAG.fullmatch(part)
        if match is None:
            raise RecordError(f"{part.strip()!r} is not a tag=value pair (RFC 7489 §6.4)")
        name, value = match.group(1).lower(), match.group(2)
        if name == "v":
            raise RecordError('"v" may appear only once, first (RFC 7489 §6.3)')
        if name in values:
            raise RecordError(f"tag {name!r} appears twice (RFC 6376 §3.2)")
        if not _TVAL.fullmatch(value):
            raise RecordError(f"tag {name!r} has no valid value (RFC 6376 §3.2 tval)")
        values[name] = value
    return DmarcRecord(
        policy=_policy(values, "p"),
        subdomain_policy=_policy(values, "sp"),
        nonexistent_policy=_policy(values, "np"),
        percent=_number(values, "pct", 100, 3, 100),
        dkim_alignment=_alignment(values, "adkim"),
        spf_alignment=_alignment(values, "aspf"),
        aggregate_report_uris=_uris(values, "rua"),
        failure_report_uris=_uris(values, "ruf"),
        failure_options=_list(values, "fo", _FO, ("0",)),
        report_formats=_list(values, "rf", _KEYWORDS, ("afrf",)),
        report_interval_seconds=_number(values, "ri", 86400, 32, 2**32 - 1),
        psd=_choice(values, "psd", ("y", "n"), "u"),  # type: ignore[arg-type]
        testing=_choice(values, "t", ("y", "n"), "n") == "y",
    )


def _choice(values: dict[str, str], tag: str, allowed: tuple[str, ...], default: str) -> str:
    if tag not in values:
        return default
    value = values[tag].lower()
    if value not in allowed:
        raise RecordError(f"{tag}={values[tag]!r}: must be one of {', '.join(allowed)}")
    return value


def _policy(values: dict[str, str], tag: str) -> Policy | None:
    if tag not in values:
        return None
    # RFC 7489 §6.3 p/sp; DMARCbis np: "none", "quarantine" or "reject".
    return _POLICIES[_choice(values, tag, tuple(_POLICIES), "")]


def _alignment(values: dict[str, str], tag: str) -> Alignment:
    # RFC 7489 §6.3 adkim/aspf: "r" (relaxed, the default) or "s" (strict).
    return "s" if _choice(values, tag, ("r", "s"), "r") == "s" else "r"


def _number(values: dict[str, str], tag: str, default: int, digits: int, top: int) -> int:
    if tag not in values:
        return default
    value = values[tag]
    # RFC 7489 §6.4: dmarc-percent = "pct" ... 1*3DIGIT (0-100); dmarc-ainterval 1*32DIGIT.
    if not (value.isascii() and value.isdigit() and len(value) <= digits) or int(value) > top:
        raise RecordError(f"{tag}={value!r}: must be a whole number from 0 to {top}")
    return int(value)


def _list(
    values: dict[str, str], tag: str, pattern: re.Pattern[str], default: tuple[str, ...]
) -> tuple[str, ...]:
    if tag not in values:
        return default
    if not pattern.fullmatch(values[tag]):
        raise RecordError(f"{tag}={values[tag]!r}: not a ':'-separated list (RFC 7489 §6.4)")
    return tuple(item.strip(" \t").lower() for item in values[tag].split(":"))


def _uris(values: dict[str, str], tag: str) -> tuple[ReportUri, ...]:
    if tag not in values:
        return ()
    out: list[ReportUri] = []
    for item in values[tag].split(","):
        match = _URI.fullmatch(item.strip(" \t"))
        if match is None:
            raise RecordError(
                f"{tag}: {item.strip()!r} is not a URI with an optional !size (RFC 7489 §6.4),"
                " e.g. mailto:dmarc@example.org!10m"
            )
        uri, number, unit = match.groups()
        size = None if number is None else int(number) * _SIZE_UNITS[unit.lower()]
        out.append(ReportUri(uri, size))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Domains


def author_domains(headers: Sequence[HeaderField]) -> tuple[list[str], str]:
    """The distinct RFC5322.From domains (A-labels, lower case) in order, or ``[]`` and why.

    RFC 5322 §3.6: one From field; more than one is reported (``"several From fields"``)
    with the domains of all of them, so the caller sees the refusal."""
    froms = [h for h in headers if h.key == "from"]
    if not froms:
        return [], "no From field"
    domains: list[str] = []
    for field_ in froms:
        text = field_.text
        for start, end in address_spans(text):
            try:
                domain = normalize_domain(text[start:end].rpartition("@")[2])
            except AddressError:
                return [], f"From address without a usable domain: {text[start:end]!r}"
            if domain not in domains:
                domains.append(domain)
    if not domains:
        return [], f"no address in From: {froms[0].text!r}"
    return domains, "several From fields" if len(froms) > 1 else ""


def organizational_domain(domain: str) -> str:
    """The organizational domain by the Public Suffix List (RFC 7489 §3.2): the public
    suffix plus one label; a name that is itself a public suffix is its own."""
    return _PSL.privatesuffix(domain.lower().rstrip(".")) or domain.lower().rstrip(".")


def aligned(domain: str, author: str, mode: Alignment, org: Callable[[str], str]) -> bool:
    """RFC 7489 §3.1.1/§3.1.2: strict: equal names; relaxed: equal organizational domains."""
    a, b = domain.lower().rstrip("."), author.lower().rstrip(".")
    if a == b:
        return True
    return mode == "r" and org(a) == org(b)


# ---------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True, slots=True)
class DkimIdentity:
    """One DKIM signature's outcome as DMARC needs it: the ``d=`` domain and the result."""

    domain: str
    result: str  # RFC 8601 keyword: "pass", "fail", "temperror", ...


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """The DMARC outcome (RFC 8601 shape: ``result``, ``reason``, ``properties``).

    ``policy`` is what the domain asks for this From domain (p/sp/np chosen), shown as
    ``policy.dmarc``; ``disposition`` is what to do: ``none`` on pass, the policy after
    ``pct`` on fail, ``reject`` for several From domains."""

    result: Literal["pass", "fail", "none", "temperror", "permerror"]
    reason: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    policy: Policy = "none"
    disposition: Policy = "none"
    from_domain: str = ""
    record_domain: str = ""  # where the record was found ("" when none was)
    organizational_domain: str = ""
    record: DmarcRecord | None = None
    dkim_aligned: bool = False
    spf_aligned: bool = False


@dataclass(slots=True)
class _Found:
    record: DmarcRecord | None = None
    domain: str = ""
    error: DmarcResult | None = None


async def evaluate(
    from_domains: Sequence[str],
    *,
    spf_result: str,
    spf_domain: str,
    dkim: Sequence[DkimIdentity],
    lookup: TxtLookup,
    discovery: Discovery = "psl",
    random_fraction: Callable[[], float] = random.random,
    from_reason: str = "",
) -> DmarcResult:
    """The DMARC result for a message (see the module docstring).

    ``from_domains`` as :func:`author_domains` gives them (``from_reason`` its reason when
    empty); ``spf_result`` the RFC 7208 result keyword for ``spf_domain``;
    ``random_fraction`` a number in [0, 1) for ``pct``.
    """
    if not from_domains:
        # RFC 7489 §6.6.1: no author domain to evaluate.
        return DmarcResult("permerror", from_reason or "no From domain", {"policy.dmarc": "none"})
    if len(from_domains) > 1 or from_reason:
        # RFC 7489 §6.6.1: several From domains; we refuse (module docstring).
        reason = from_reason or "several From domains: " + ", ".join(from_domains)
        return DmarcResult(
            "permerror",
            reason,
            {"header.from": from_domains[0], "policy.dmarc": "reject"},
            policy="reject",
            disposition="reject",
            from_domain=from_domains[0],
        )
    author = from_domains[0].lower().rstrip(".")
    props = {"header.from": author}

    if discovery == "treewalk":
        found, org = await _tree_walk(author, lookup)
    else:
        org = organizational_domain(author)
        found = await _psl_discovery(author, org, lookup)
    if found.error is not None:
        e = found.error
        return DmarcResult(
            e.result,
            e.reason,
            {**props, "policy.dmarc": "none"},
            from_domain=author,
            record_domain=found.domain,
            organizational_domain=org,
        )
    record = found.record
    if record is None:
        return DmarcResult(
            "none", "no DMARC record", dict(props), from_domain=author, organizational_domain=org
        )
    if record.policy is None and not record.aggregate_report_uris:
        # RFC 7489 §6.6.3 step 5b: no valid "p" and no usable "rua": no DMARC processing.
        return DmarcResult(
            "none",
            f"the record at _dmarc.{found.domain} has no p= tag",
            dict(props),
            from_domain=author,
            record_domain=found.domain,
            organizational_domain=org,
            record=record,
        )

    # Which policy applies to this From domain (module docstring).
    if found.domain == author or author == org:
        policy: Policy = record.policy or "none"  # RFC 7489 §6.6.3 5a: no p, rua → none
    else:
        policy = record.subdomain_policy or record.policy or "none"  # RFC 7489 §6.3 sp
        if record.nonexistent_policy is not None:
            try:
                await lookup(author)
            except NoSuchDomain:
                # DMARCbis §4.7 np: the From domain does not exist (RFC 8020 NXDOMAIN).
                policy = record.nonexistent_policy
            except DnsTemporaryError:
                pass  # existence unknown: keep sp, as a domain that exists

    org_of: Callable[[str], str] = organizational_domain
    if discovery == "treewalk":
        # DMARCbis §4.10.2: each identifier's organizational domain by its own walk.
        orgs = {author: org}
        for name in {d.domain for d in dkim} | {spf_domain}:
            name = name.lower().rstrip(".")
            if name and name not in orgs:
                orgs[name] = (await _tree_walk(name, lookup))[1]

        def org_of(domain: str) -> str:
            return orgs.get(domain, domain)

    # RFC 7489 §4.2: pass when SPF or DKIM passes with an aligned identifier.
    dkim_ok = any(
        d.result == "pass" and aligned(d.domain, author, record.dkim_alignment, org_of)
        for d in dkim
    )
    spf_ok = (
        spf_result == "pass"
        and bool(spf_domain)
        and aligned(spf_domain, author, record.spf_alignment, org_of)
    )
    props["policy.dmarc"] = policy

    def outcome(result: Literal["pass", "fail"], reason: str, disposition: Policy) -> DmarcResult:
        return DmarcResult(
            result,
            reason,
            props,
            policy=policy,
            disposition=disposition,
            from_domain=author,
            record_domain=found.domain,
            organizational_domain=org,
            record=record,
            dkim_aligned=dkim_ok,
            spf_aligned=spf_ok,
        )

    if dkim_ok or spf_ok:
        how = " and ".join(w for w, ok in (("DKIM", dkim_ok), ("SPF", spf_ok)) if ok)
        return outcome("pass", f"aligned {how} pass", "none")
    disposition = policy
    reason = "no aligned DKIM or SPF pass"
    # RFC 7489 §6.6.4: pct — apply to that share of failing mail, else the next milder policy.
    if policy != "none" and random_fraction() * 100 >= record.percent:
        disposition = "quarantine" if policy == "reject" else "none"
        reason += f"; pct={record.percent} sampled out: {disposition} instead of {policy}"
    return outcome("fail", reason, disposition)


async def _records_at(domain: str, lookup: TxtLookup) -> _Found:
    """The DMARC record at ``_dmarc.<domain>``: RFC 7489 §6.6.3 steps 1, 2, 4 and 5."""
    name = f"_dmarc.{domain}"
    try:
        answers = await lookup(name)
    except NoSuchDomain:
        return _Found()
    except DnsTemporaryError as exc:
        return _Found(domain=domain, error=DmarcResult("temperror", f"DNS: {exc}"))
    candidates = [a for a in answers if is_dmarc_record(a)]
    if not candidates:
        return _Found()
    if len(candidates) > 1:
        # RFC 7489 §6.6.3 step 4: several records, no DMARC processing; reported as
        # permerror (a publishing error) with no policy applied.
        return _Found(
            domain=domain, error=DmarcResult("permerror", f"several DMARC records at {name}")
        )
    try:
        return _Found(record=parse_record(candidates[0]), domain=domain)
    except RecordError as exc:
        # RFC 7489 §6.6.3: a record with syntax errors is ignored; RFC 7489 §11.2: permerror.
        return _Found(domain=domain, error=DmarcResult("permerror", f"{name}: {exc}"))


async def _psl_discovery(author: str, org: str, lookup: TxtLookup) -> _Found:
    found = await _records_at(author, lookup)
    # RFC 7489 §6.6.3 step 3: no record at the From domain → the organizational domain's.
    if found.record is None and found.error is None and org != author:
        found = await _records_at(org, lookup)
    return found


def _walk_names(domain: str) -> list[str]:
    """The names a DMARCbis tree walk asks, in order (draft-ietf-dmarc-dmarcbis §4.10)."""
    labels = domain.split(".")
    names = [domain]
    # §4.10: a name of more than 8 labels jumps to its last 7, so at most 8 queries.
    count = min(len(labels) - 1, MAX_TREE_WALK_QUERIES - 1)
    while count >= 1:
        names.append(".".join(labels[-count:]))
        count -= 1
    return names


async def _tree_walk(domain: str, lookup: TxtLookup) -> tuple[_Found, str]:
    """The policy record for ``domain`` (the first found) and its organizational domain
    (draft-ietf-dmarc-dmarcbis §4.10.1 and §4.10.2), asking each name once."""
    policy: _Found | None = None
    shortest_with_record = ""
    previous = domain
    for name in _walk_names(domain):
        found = await _records_at(name, lookup)
        if found.error is not None and found.error.result == "temperror":
            return (policy or found), shortest_with_record or domain
        if policy is None and (found.record is not None or found.error is not None):
            policy = found
        if found.record is not None:
            shortest_with_record = name
            if found.record.psd == "n":  # §4.10.2: the organizational domain is here
                return (policy or found), name
            if found.record.psd == "y":  # §4.10.2: one label below a public suffix domain
                return (policy or found), previous
        previous = name
    # §4.10.2: no psd=y/n: the shortest name with a record, else the domain itself.
    return (policy or _Found()), shortest_with_record or domain
