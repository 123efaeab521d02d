"""The DNS doctor: what ``pochta dns DOMAIN --check`` finds beyond a record-by-record compare.

``compare.compare_records`` says what each record ``pochta dns`` prints means in DNS. The
doctor asks whether the published whole works, as a receiver sees it:

- ``check_fcrdns``: each address of the host has a PTR, the PTR name resolves back to the
  address and is the HELO name (RFC 5321 §4.1.4; M3AAWG; RFC 1912 §2.1);
- ``check_spf``: the domain's and the HELO name's SPF give ``pass`` for our addresses,
  evaluated by ``mailauth/spf.py`` (pyspf) itself, one SPF record (RFC 7208 §4.5), at most 10
  DNS-querying terms and 2 void lookups (RFC 7208 §4.6.4), with the terms that cost them;
- ``check_mx``: no MX that is an address (RFC 5321 §5.1) or an alias (RFC 2181 §10.3), and
  the MX points at this host;
- ``check_dkim``: each selector's published key is the public half of our private key
  (compared as key material, not as text);
- ``check_dmarc``: the record parses (``mailauth/dmarc.py``), and each ``rua``/``ruf``
  target outside the organisational domain authorises the reports (RFC 7489 §7.1);
- ``check_mta_sts``: the ``_mta-sts`` record's id, and the policy fetched over HTTPS (the
  caller injects the fetch: ``deliver/mta_sts.py``'s in ``pochta dns``) covers the MX hosts;
- ``check_blocklists``: our addresses on DNS blocklists, asked and read by ``dns/dnsbl.py``
  as the spam filter does; Spamhaus's 127.255.255.252/254/255 "we do not answer you" replies
  and answers outside 127.0.0.0/8 are "could not check", never "listed".

Each check is a small coroutine over an injected dnspython asyncio resolver, returning
:class:`Finding` lines: ``OK``, ``MISSING``, ``WRONG``, ``LISTED`` or ``COULD-NOT-CHECK``,
with what DNS has and the exact line to publish or the fix. ``needed`` findings that are not
OK make ``pochta dns --check`` exit non-zero; could-not-check and optional ones (MTA-STS, as
its record is optional: ``dns/compare.py``) do not.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pochta.directory.model import DkimSelector
from pochta.dns import dnsbl
from pochta.dns.compare import same_key
from pochta.dns.records import Record, render_record, txt_kind
from pochta.mailauth import spf as spf_check
from pochta.mailauth.dkim_keys import DkimKeyError, load_private_key
from pochta.mailauth.dmarc import (
    RecordError,
    is_dmarc_record,
    organizational_domain,
    parse_record,
)

Status = Literal["OK", "MISSING", "WRONG", "LISTED", "COULD-NOT-CHECK"]
BAD: frozenset[str] = frozenset(("MISSING", "WRONG", "LISTED"))

DEFAULT_BLOCKLISTS: tuple[str, ...] = (
    "zen.spamhaus.org",
    "bl.spamcop.net",
    "b.barracudacentral.org",
    "psbl.surriel.com",
)
# RFC 7208 §4.6.4: at most 10 DNS-querying terms and 2 void lookups per check.
SPF_MAX_LOOKUPS = 10
SPF_MAX_VOID = 2
CHECKS: tuple[str, ...] = ("fcrdns", "spf", "mx", "dkim", "dmarc", "mta-sts", "blocklists")


@dataclass(frozen=True, slots=True)
class Finding:
    """One doctor line: the status, what was checked, what DNS has, why, and the fix."""

    status: Status
    subject: str
    found: tuple[str, ...] = ()
    detail: str = ""
    fix: str = ""
    needed: bool = True  # a bad status here makes the exit status non-zero

    @property
    def bad(self) -> bool:
        return self.needed and self.status in BAD


# -- DNS ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lookup:
    state: Literal["ok", "nxdomain", "nodata", "error"]
    rdatas: list[Any] = field(default_factory=list)
    error: str = ""


def _abs(name: str) -> str:
    return name if name.endswith(".") else name + "."


async def _lookup(resolver: dns.asyncresolver.Resolver, name: str, rtype: str) -> _Lookup:
    try:
        answer = await resolver.resolve(_abs(name), rtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return _Lookup("nxdomain")
    except dns.exception.DNSException as exc:
        return _Lookup("error", error=str(exc) or type(exc).__name__)
    if answer.rrset is None or len(answer.rrset) == 0:
        return _Lookup("nodata")
    return _Lookup("ok", list(answer.rrset))


def _txt(rdatas: Sequence[Any]) -> list[str]:
    # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: a TXT record's strings are joined.
    return [b"".join(rd.strings).decode("utf-8", "replace") for rd in rdatas]


def _name(rdata_name: dns.name.Name) -> str:
    return rdata_name.to_text(omit_final_dot=True).lower()


def _could_not(subject: str, lookup: _Lookup, what: str) -> Finding:
    return Finding(
        "COULD-NOT-CHECK", subject, detail=f"no answer from DNS for {what}: {lookup.error}"
    )


def _publish(record: Record) -> str:
    return "publish:  " + render_record(record)


def _expected(records: Sequence[Record], name: str, rtype: str, kind: str = "") -> list[Record]:
    return [
        r
        for r in records
        if r.name == name and r.rtype == rtype and (not kind or txt_kind(r.value) == kind)
    ]


def async_resolver_like(resolver: dns.resolver.Resolver) -> dns.asyncresolver.Resolver:
    """An asyncio resolver asking the same servers as ``resolver`` (``records.make_resolver``)."""
    out = dns.asyncresolver.Resolver(configure=False)
    out.nameservers = list(resolver.nameservers)
    out.port = resolver.port
    out.timeout = resolver.timeout
    out.lifetime = resolver.lifetime
    return out


async def host_addresses(resolver: dns.asyncresolver.Resolver, host: str) -> list[str]:
    """The A and AAAA addresses of ``host`` in DNS (when no address was given or guessed)."""
    out: list[str] = []
    for rtype in ("A", "AAAA"):
        found = await _lookup(resolver, host, rtype)
        out.extend(str(rd.address) for rd in found.rdatas)
    return out


# -- 1. forward-confirmed reverse DNS ---------------------------------------------------------


async def check_fcrdns(
    resolver: dns.asyncresolver.Resolver, host: str, ips: Sequence[str]
) -> list[Finding]:
    """Each address has one PTR, naming ``host`` (the HELO name), which resolves back to it."""
    out: list[Finding] = []
    for ip in ips:
        rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
        subject = f"{rev}. PTR (reverse DNS of {ip})"
        fix = f"ask the provider of {ip} to set:  {rev}. 3600 IN PTR {host}."
        ptr = await _lookup(resolver, rev, "PTR")
        if ptr.state == "error":
            out.append(_could_not(subject, ptr, f"PTR {rev}"))
            continue
        if ptr.state != "ok":
            out.append(Finding("MISSING", subject, detail=f"{ip} has no PTR record", fix=fix))
            continue
        names = [_name(rd.target) for rd in ptr.rdatas]
        shown = tuple(n + "." for n in names)
        if names != [host]:
            # RFC 5321 §4.1.4 / M3AAWG: the client's reverse name should be its HELO name.
            detail = (
                f"the PTR names {', '.join(names)}, not the HELO name {host} "
                "(RFC 5321 §4.1.4; receivers compare them)"
                if host not in names
                else "more than one PTR record: receivers take any one of them"
            )
            out.append(Finding("WRONG", subject, shown, detail, fix))
            continue
        rtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
        back = await _lookup(resolver, host, rtype)
        if back.state == "error":
            out.append(_could_not(subject, back, f"{rtype} {host}"))
            continue
        addresses = {str(ipaddress.ip_address(str(rd.address))) for rd in back.rdatas}
        if ip not in addresses:
            have = ", ".join(sorted(addresses)) or "none"
            # RFC 1912 §2.1: the name the PTR gives must resolve back to the same address.
            out.append(
                Finding(
                    "WRONG",
                    subject,
                    shown,
                    f"{host} does not resolve back to {ip} (forward-confirmed reverse DNS, "
                    f"RFC 1912 §2.1); its {rtype} records: {have}",
                    f"publish:  {host}. 3600 IN {rtype} {ip}",
                )
            )
            continue
        out.append(Finding("OK", subject, shown, f"{host} resolves back to {ip}"))
    return out


# -- 2. SPF -----------------------------------------------------------------------------------


class _CountingSpfDns:
    """The SPF checker's DNS, recording every query so the lookups can be told per term."""

    def __init__(self, inner: spf_check.SpfDns) -> None:
        self.inner = inner
        self.queries: list[tuple[str, str, bool]] = []  # (type, name, void)
        self.mx_names: set[str] = set()
        self.ptr_names: set[str] = set()

    async def _run(self, rtype: str, name: str, coro: Awaitable[list[Any]]) -> list[Any]:
        try:
            found = await coro
        except spf_check.DnsNameNotFound:
            self.queries.append((rtype, name.lower().rstrip("."), True))
            raise
        self.queries.append((rtype, name.lower().rstrip("."), not found))
        return found

    async def txt(self, name: str) -> list[bytes]:
        return await self._run("TXT", name, self.inner.txt(name))

    async def a(self, name: str) -> list[str]:
        return await self._run("A", name, self.inner.a(name))

    async def aaaa(self, name: str) -> list[str]:
        return await self._run("AAAA", name, self.inner.aaaa(name))

    async def mx(self, name: str) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = await self._run("MX", name, self.inner.mx(name))
        self.mx_names.update(host.lower().rstrip(".") for _, host in found)
        return found

    async def ptr(self, name: str) -> list[str]:
        found: list[str] = await self._run("PTR", name, self.inner.ptr(name))
        self.ptr_names.update(host.lower().rstrip(".") for host in found)
        return found

    def terms(self) -> tuple[list[str], int]:
        """(the DNS-querying terms that cost a lookup, the void lookups) as RFC 7208 §4.6.4
        counts them: the first TXT query is the record itself; each later TXT is an
        include/redirect, each MX an mx term, each PTR a ptr term; an A/AAAA query is an
        a/exists term unless it resolves a name an MX or PTR answer gave (§4.6.4: part of
        that term)."""
        terms: list[str] = []
        void = 0
        for index, (rtype, name, empty) in enumerate(self.queries):
            if index == 0 and rtype == "TXT":
                continue
            if rtype in ("A", "AAAA") and (name in self.mx_names or name in self.ptr_names):
                continue
            label = {"TXT": "include/redirect:", "MX": "mx:", "PTR": "ptr:"}.get(rtype, "a/exists:")
            terms.append(label + name + (" (void)" if empty else ""))
            void += empty
        return terms, void


async def _spf_records(resolver: dns.asyncresolver.Resolver, name: str) -> _Lookup:
    found = await _lookup(resolver, name, "TXT")
    if found.state != "ok":
        return found
    return _Lookup("ok", [t for t in _txt(found.rdatas) if txt_kind(t) == "spf"])


async def check_spf(
    resolver: dns.asyncresolver.Resolver,
    spf_dns: spf_check.SpfDns,
    domain: str,
    host: str,
    ips: Sequence[str],
    expected: Sequence[Record] = (),
) -> list[Finding]:
    """SPF of ``domain`` (MAIL FROM identity) and of ``host`` (HELO identity, RFC 7208 §2.3)
    for each of our addresses, by ``mailauth.spf``; it must give ``pass``."""
    out: list[Finding] = []
    identities = [("mailfrom", domain)] + ([("helo", host)] if host != domain else [])
    for identity, name in identities:
        fixes = [_publish(r) for r in _expected(expected, name, "TXT", "spf")]
        if identity == "mailfrom":
            fixes += [_publish(r) for r in _expected(expected, f"_spf.{host}", "TXT", "spf")]
        fix = "\n".join(fixes)
        records = await _spf_records(resolver, name)
        subject_base = f"{name}. TXT SPF"
        if records.state == "error":
            out.append(_could_not(subject_base, records, f"TXT {name}"))
            continue
        if len(records.rdatas) > 1:
            out.append(
                Finding(
                    "WRONG",
                    subject_base,
                    tuple(records.rdatas),
                    f"{len(records.rdatas)} SPF records: receivers get a permerror "
                    "(RFC 7208 §4.5); keep exactly one",
                    fix,
                )
            )
            continue
        if not records.rdatas:
            out.append(
                Finding("MISSING", subject_base, detail=f"{name} has no SPF record", fix=fix)
            )
            continue
        for ip in ips:
            counting = _CountingSpfDns(spf_dns)
            if identity == "mailfrom":
                result = await spf_check.check_spf(
                    ip, f"postmaster@{name}", host, dns=counting, receiver=host
                )
            else:
                result = await spf_check.check_helo(ip, name, dns=counting, receiver=host)
            terms, void = counting.terms()
            subject = f"{subject_base} for {ip} ({'HELO' if identity == 'helo' else 'MAIL FROM'})"
            cost = f"{len(terms)} of {SPF_MAX_LOOKUPS} DNS lookups" + (
                f": {', '.join(terms)}" if terms else ""
            )
            # pyspf stops at the term past a limit, before asking DNS: its reason says so.
            stopped = result.result == "permerror" and (
                "Too many DNS lookups" in result.reason or "Void lookup limit" in result.reason
            )
            if stopped or len(terms) > SPF_MAX_LOOKUPS or void > SPF_MAX_VOID:
                if stopped and len(terms) <= SPF_MAX_LOOKUPS and void <= SPF_MAX_VOID:
                    cost = f"over {cost} (the next term was refused)"
                # RFC 7208 §4.6.4: over 10 DNS-querying terms or 2 void lookups: permerror.
                out.append(
                    Finding(
                        "WRONG",
                        subject,
                        tuple(records.rdatas),
                        f"{cost}; {void} void (at most {SPF_MAX_VOID}); receivers get a "
                        "permerror (RFC 7208 §4.6.4): replace include/a/mx terms by ip4:/ip6:",
                        fix,
                    )
                )
            elif result.result == "temperror":
                out.append(
                    Finding("COULD-NOT-CHECK", subject, tuple(records.rdatas), result.reason)
                )
            elif result.result != "pass":
                out.append(
                    Finding(
                        "WRONG",
                        subject,
                        tuple(records.rdatas),
                        f"SPF gives {result.result}, not pass: {result.reason} ({cost})",
                        fix,
                    )
                )
            else:
                out.append(Finding("OK", subject, detail=f"pass; {cost}"))
    return out


# -- 3. MX ------------------------------------------------------------------------------------


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


async def check_mx(resolver: dns.asyncresolver.Resolver, domain: str, host: str) -> list[Finding]:
    """The MX records of ``domain``: names (not addresses), not aliases, pointing at ``host``."""
    subject = f"{domain}. MX"
    fix = f"publish:  {domain}. 3600 IN MX 10 {host}."
    mx = await _lookup(resolver, domain, "MX")
    if mx.state == "error":
        return [_could_not(subject, mx, f"MX {domain}")]
    if mx.state != "ok":
        return [Finding("MISSING", subject, detail=f"{domain} has no MX record", fix=fix)]
    out: list[Finding] = []
    for rd in sorted(mx.rdatas, key=lambda r: r.preference):
        target = _name(rd.exchange)
        shown = (rd.to_text(),)
        each = f"{subject} {rd.preference} {target}."
        if _is_address(target):
            # RFC 5321 §5.1: the MX target is a domain name; an address literal there is
            # not looked up as an address by conforming senders.
            out.append(
                Finding("WRONG", each, shown, "the MX target is an IP address (RFC 5321 §5.1)", fix)
            )
            continue
        alias = await _lookup(resolver, target, "CNAME")
        if alias.state == "ok":
            # RFC 2181 §10.3 (RFC 5321 §5.1): an MX must not point at an alias.
            out.append(
                Finding(
                    "WRONG",
                    each,
                    shown,
                    f"{target} is a CNAME (to {_name(alias.rdatas[0].target)}); the MX must "
                    "name the host itself (RFC 2181 §10.3)",
                    fix,
                )
            )
            continue
        if target != host:
            out.append(
                Finding("WRONG", each, shown, f"the MX points at {target}, not at {host}", fix)
            )
            continue
        out.append(Finding("OK", each))
    return out


# -- 4. DKIM ----------------------------------------------------------------------------------


def _public_half(sel: DkimSelector) -> tuple[str, bytes]:
    """(k= value, p= bytes) of the selector's private key, read from its file."""
    key = load_private_key(sel)
    if sel.algorithm == "ed25519-sha256":
        seed = base64.b64decode(key)
        priv = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        # RFC 8463 §4.2: p= is the raw 32-byte public key.
        return "ed25519", priv.public_key().public_bytes_raw()
    rsa_key = serialization.load_pem_private_key(key, password=None)
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"DKIM key {sel.key_path} is not an RSA key")
    # RFC 6376 §3.6.1: p= is the DER SubjectPublicKeyInfo for k=rsa.
    return "rsa", rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _dkim_tags(value: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in value.split(";"):
        key, eq, val = part.partition("=")
        if eq:
            tags[key.strip().lower()] = val.strip()
    return tags


async def check_dkim(
    resolver: dns.asyncresolver.Resolver, domain: str, selectors: Sequence[DkimSelector]
) -> list[Finding]:
    """Each selector's published key (RFC 6376 §3.6.2.1) against our private key's public half."""
    out: list[Finding] = []
    for sel in selectors:
        name = f"{sel.selector}._domainkey.{domain}"
        subject = f"{name}. TXT DKIM"
        try:
            key_type, ours = _public_half(sel)
        except (DkimKeyError, ValueError, TypeError) as exc:
            out.append(Finding("WRONG", subject, detail=f"our private key: {exc}"))
            continue
        record = Record(
            name, "TXT", f"v=DKIM1; k={key_type}; p={base64.b64encode(ours).decode('ascii')}"
        )
        found = await _lookup(resolver, name, "TXT")
        if found.state == "error":
            out.append(_could_not(subject, found, f"TXT {name}"))
            continue
        keys = [t for t in _txt(found.rdatas) if "p" in _dkim_tags(t)]
        if not keys:
            out.append(
                Finding(
                    "MISSING",
                    subject,
                    tuple(_txt(found.rdatas)),
                    f"no DKIM key at {name}: receivers cannot verify mail signed with "
                    f"s={sel.selector}",
                    _publish(record),
                )
            )
            continue
        tags = _dkim_tags(keys[0])
        published_type = tags.get("k", "rsa").lower()  # RFC 6376 §3.6.1: k= defaults to rsa
        if len(keys) == 1 and published_type == key_type and same_key(key_type, ours, tags["p"]):
            out.append(Finding("OK", subject, detail=f"the public half of {sel.key_path}"))
            continue
        out.append(
            Finding(
                "WRONG",
                subject,
                tuple(k if len(k) <= 80 else k[:77] + "..." for k in keys),
                f"the published key is not the public half of our private key {sel.key_path}: "
                "signatures with it fail"
                if len(keys) == 1
                else f"{len(keys)} key records at one name: verifiers take any one",
                _publish(record),
            )
        )
    return out


# -- 5. DMARC ---------------------------------------------------------------------------------


def _mailto_domain(uri: str) -> str | None:
    if not uri.lower().startswith("mailto:"):
        return None
    address = uri[len("mailto:") :].split("?")[0]
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return domain or None


async def check_dmarc(
    resolver: dns.asyncresolver.Resolver, domain: str, expected: Sequence[Record] = ()
) -> list[Finding]:
    """The DMARC record parses; outside report targets authorise the reports (RFC 7489 §7.1)."""
    name = f"_dmarc.{domain}"
    subject = f"{name}. TXT DMARC"
    fix = "\n".join(_publish(r) for r in _expected(expected, name, "TXT", "dmarc"))
    found = await _lookup(resolver, name, "TXT")
    if found.state == "error":
        return [_could_not(subject, found, f"TXT {name}")]
    texts = _txt(found.rdatas)
    records = [t for t in texts if is_dmarc_record(t)]
    if not records:
        if any("v=dmarc1" in t.lower() for t in texts):
            return [
                Finding(
                    "WRONG",
                    subject,
                    tuple(texts),
                    'the record must start with "v=DMARC1" (RFC 7489 §6.3): receivers ignore it',
                    fix,
                )
            ]
        return [Finding("MISSING", subject, tuple(texts), f"{name} has no DMARC record", fix=fix)]
    if len(records) > 1:
        return [
            Finding(
                "WRONG",
                subject,
                tuple(records),
                f"{len(records)} DMARC records: no policy applies (RFC 7489 §6.6.3)",
                fix,
            )
        ]
    try:
        parsed = parse_record(records[0])
    except RecordError as exc:
        return [Finding("WRONG", subject, tuple(records), f"syntax: {exc}", fix)]
    out = [Finding("OK", subject)]
    org = organizational_domain(domain)
    for tag, uris in (("rua", parsed.aggregate_report_uris), ("ruf", parsed.failure_report_uris)):
        for uri in uris:
            target = _mailto_domain(uri.uri)
            if target is None or organizational_domain(target) == org:
                continue
            # RFC 7489 §7.1: a report target outside the domain's organisational domain must
            # publish DOMAIN._report._dmarc.TARGET with v=DMARC1, or reports are not sent.
            auth = f"{domain}._report._dmarc.{target}"
            each = f"{subject} {tag}={uri.uri}"
            answer = await _lookup(resolver, auth, "TXT")
            if answer.state == "error":
                out.append(_could_not(each, answer, f"TXT {auth}"))
            elif any(is_dmarc_record(t) for t in _txt(answer.rdatas)):
                out.append(Finding("OK", each, detail=f"{auth} authorises the reports"))
            else:
                out.append(
                    Finding(
                        "WRONG",
                        each,
                        tuple(_txt(answer.rdatas)),
                        f"{target} is outside {org} and does not authorise reports about "
                        f"{domain} (RFC 7489 §7.1): they will be dropped",
                        f'{target} must publish:  {auth}. 3600 IN TXT "v=DMARC1"',
                    )
                )
    return out


# -- 6. MTA-STS -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedPolicy:
    """What the injected fetch returns: the policy's mode and mx patterns, and the
    RFC 8461 §4.1 matcher of those patterns."""

    mode: str
    mx: tuple[str, ...]
    covers: Callable[[str], bool]


PolicyFetch = Callable[[str], Awaitable[FetchedPolicy]]
"""Fetch and parse https://mta-sts.DOMAIN/.well-known/mta-sts.txt; raise with the reason."""


async def check_mta_sts(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    host: str,
    fetch: PolicyFetch,
    expected: Sequence[Record] = (),
) -> list[Finding]:
    """The ``_mta-sts`` record's id and the policy over HTTPS, covering the MX hosts.

    MTA-STS is optional (RFC 8461: without it senders apply no policy; with a policy they
    cannot fetch, they apply none either, RFC 8461 §5): its findings are reported and never
    make the exit status (``needed=False``)."""
    return [
        replace(f, needed=False) for f in await _mta_sts(resolver, domain, host, fetch, expected)
    ]


async def _mta_sts(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    host: str,
    fetch: PolicyFetch,
    expected: Sequence[Record],
) -> list[Finding]:
    name = f"_mta-sts.{domain}"
    subject = f"{name}. TXT MTA-STS"
    fix = "\n".join(_publish(r) for r in _expected(expected, name, "TXT", "mta-sts"))
    found = await _lookup(resolver, name, "TXT")
    if found.state == "error":
        return [_could_not(subject, found, f"TXT {name}")]
    texts = [t for t in _txt(found.rdatas) if txt_kind(t) == "mta-sts"]
    if not texts:
        # MTA-STS is optional: without the record, senders simply apply no policy.
        return [Finding("MISSING", subject, detail="no MTA-STS record", fix=fix, needed=False)]
    if len(texts) > 1:
        return [
            Finding(
                "WRONG", subject, tuple(texts), "more than one STSv1 record (RFC 8461 §3.1)", fix
            )
        ]
    sts_id = _dkim_tags(texts[0]).get("id", "")
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", sts_id):
        return [
            Finding(
                "WRONG",
                subject,
                tuple(texts),
                "id= must be 1 to 32 letters and digits (RFC 8461 §3.1)",
                fix,
            )
        ]
    out = [Finding("OK", subject, detail=f"id={sts_id}")]
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    policy_subject = f"{url} (MTA-STS policy)"
    try:
        policy = await fetch(domain)
    except Exception as exc:  # the fetch says why: no HTTPS, bad certificate, bad policy...
        out.append(
            Finding(
                "WRONG",
                policy_subject,
                detail=f"senders cannot fetch the policy (RFC 8461 §3.3): {exc}",
                fix=f"serve the policy over HTTPS with a certificate valid for mta-sts.{domain}",
            )
        )
        return out
    mx = await _lookup(resolver, domain, "MX")
    targets = [_name(rd.exchange) for rd in mx.rdatas] or [host]
    uncovered = [t for t in dict.fromkeys([*targets, host]) if not policy.covers(t)]
    if policy.mode != "none" and uncovered:
        # RFC 8461 §4.1: a sender in enforce mode delivers only to MX hosts the policy names.
        out.append(
            Finding(
                "WRONG",
                policy_subject,
                tuple(f"mx: {p}" for p in policy.mx),
                f"the policy's mx patterns do not cover {', '.join(uncovered)} (RFC 8461 §4.1)",
                "add to the policy file:  " + "  ".join(f"mx: {t}" for t in uncovered),
            )
        )
    else:
        out.append(
            Finding(
                "OK",
                policy_subject,
                detail=f"mode {policy.mode}, mx {', '.join(policy.mx) or '-'}",
            )
        )
    return out


# -- 7. blocklists ----------------------------------------------------------------------------


async def check_blocklists(
    resolver: dns.asyncresolver.Resolver, ips: Sequence[str], zones: Sequence[str]
) -> list[Finding]:
    """Each address in each DNSBL zone, asked and read as the spam filter does
    (``dns/dnsbl.py``): NXDOMAIN is OK, a return code in 127.0.0.0/8 is LISTED (RFC 5782
    §2.1); the lists' refusals (Spamhaus 127.255.255.252/254/255) and answers outside
    127.0.0.0/8 are COULD-NOT-CHECK, never LISTED."""
    out: list[Finding] = []
    for ip in ips:
        for zone in zones:
            qname = dnsbl.ip_query_name(ip, zone)  # RFC 5782 §2.1 (IPv4), §2.4 (IPv6)
            subject = f"{ip} in {zone}"
            found = await _lookup(resolver, qname, "A")
            if found.state in ("nxdomain", "nodata"):
                out.append(Finding("OK", subject, detail="not listed"))
                continue
            if found.state == "error":
                out.append(_could_not(subject, found, f"A {qname}"))
                continue
            listing = dnsbl.interpret(str(rd.address) for rd in found.rdatas)
            if not listing.listed:
                out.append(
                    Finding(
                        "COULD-NOT-CHECK",
                        subject,
                        listing.answers,
                        f"the list gave no usable answer: {listing.problem}",
                    )
                )
                continue
            reason = await _lookup(resolver, qname, "TXT")
            why = "; ".join(_txt(reason.rdatas))
            out.append(
                Finding(
                    "LISTED",
                    subject,
                    listing.answers,
                    f"{ip} is listed" + (f": {why}" if why else ""),
                    f"find the cause (open relay, compromised account), then ask {zone} to "
                    "delist it",
                )
            )
    return out


# -- all of it --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoctorInput:
    """What the doctor checks: the domain, our host name (HELO), our addresses, our DKIM
    selectors, the records ``pochta dns`` prints (for the fix lines), the blocklist zones."""

    domain: str
    host: str
    ips: tuple[str, ...]
    selectors: tuple[DkimSelector, ...]
    expected: tuple[Record, ...]
    blocklists: tuple[str, ...] = DEFAULT_BLOCKLISTS
    mail_domain: bool = True  # False for a signing-only entry: no MX, DMARC, MTA-STS
    skip: frozenset[str] = frozenset()


async def run_doctor(
    resolver: dns.asyncresolver.Resolver,
    spf_dns: spf_check.SpfDns,
    fetch: PolicyFetch,
    what: DoctorInput,
) -> list[Finding]:
    """Every check of the module docstring, in order, minus ``what.skip``."""
    out: list[Finding] = []
    run = [c for c in CHECKS if c not in what.skip]
    if not what.mail_domain:
        run = [c for c in run if c not in ("mx", "dmarc", "mta-sts")]
    for check in run:
        if check == "fcrdns":
            out += await check_fcrdns(resolver, what.host, what.ips)
        elif check == "spf":
            out += await check_spf(
                resolver, spf_dns, what.domain, what.host, what.ips, what.expected
            )
        elif check == "mx":
            out += await check_mx(resolver, what.domain, what.host)
        elif check == "dkim":
            out += await check_dkim(resolver, what.domain, what.selectors)
        elif check == "dmarc":
            out += await check_dmarc(resolver, what.domain, what.expected)
        elif check == "mta-sts":
            out += await check_mta_sts(resolver, what.domain, what.host, fetch, what.expected)
        elif check == "blocklists":
            out += await check_blocklists(resolver, what.ips, what.blocklists)
    return out


def render_findings(findings: Sequence[Finding]) -> list[str]:
    """The output lines, in the form of the record check's (status, name, indented detail)."""
    lines: list[str] = []
    pad = " " * 11
    for f in findings:
        line = f"{f.status:<9}  {f.subject}"
        if f.status == "OK":
            lines.append(line + (f"  ({f.detail})" if f.detail else ""))
            continue
        lines.append(line + ("" if f.needed else "  (optional)"))
        lines.extend(f"{pad}DNS has:  {found}" for found in f.found)
        if f.detail:
            lines.append(f"{pad}{f.detail}")
        lines.extend(f"{pad}fix:      {fix}" for fix in f.fix.splitlines())
    return lines
