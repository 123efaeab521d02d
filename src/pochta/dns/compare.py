"""What ``pochta dns DOMAIN --check`` says of each record: its meaning compared with ours.

Each record ``pochta dns`` prints is asked from DNS and parsed by its RFC; the comparison is
of what the record means to a sender or receiver, not of its text (tags in another order,
extra spaces, a TXT value split into several strings, another MX preference with one MX all
mean the same). Each record gets one :data:`Status`:

- ``MATCH``: means what ours means (a note says so when it is written differently);
- ``VALID-BUT-DIFFERENT``: valid, and mail works, but it means something else; each
  difference is said with what it means and why ours is stricter (``~all: softfail,
  receivers may accept forged mail; ours: -all``);
- ``MISSING``: not in DNS (other records of the type only count as missing);
- ``BROKEN``: unparseable, or wrong in a way that breaks mail: the SPF record does not give
  ``pass`` for our addresses (evaluated by ``mailauth/spf.py`` itself, so ``include:``,
  ``redirect=`` and ``mx`` count as receivers count them), two SPF or DMARC records, a
  DMARC syntax error, a DKIM key that is not ours, the MX pointing elsewhere;
- ``ERROR``: DNS gave no answer, so nothing could be compared.

Which records are required (``Record.required``, set in ``records.py``) and why: the host's
A/AAAA (the MX target must resolve, and forward-confirmed reverse DNS needs them) and PTR
(large receivers refuse mail from addresses without reverse DNS); the MX (RFC 5321 §5.1: where
mail for the domain goes); the SPF records of the domain, the HELO name and an SRS domain
(RFC 7208 §2.3-2.4: receivers check them, and DMARC's SPF leg needs the domain's); the DKIM
keys of the active selectors (mail is signed with them); DMARC (RFC 7489 §6: without it,
anyone may send as the domain, and Gmail and Yahoo require one of bulk senders since 2024).
Optional: the shared ``_spf.HOST`` record (required only when a published SPF record
points at it), retired DKIM selectors, MTA-STS (RFC 8461: without it, senders apply no
policy), TLS-RPT, client SRV records (RFC 6186) and the autoconfig names. A missing, broken
or unanswered required record makes :attr:`Comparison.bad`; ``pochta dns --check`` exits 1
only then. Optional records are reported with their status and never change the exit status.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pochta.dns.records import Record, TxtKind, txt_kind
from pochta.mailauth import spf as spf_check
from pochta.mailauth.dmarc import DmarcRecord, RecordError, is_dmarc_record, parse_record

Status = Literal["MATCH", "VALID-BUT-DIFFERENT", "MISSING", "BROKEN", "ERROR"]
BAD_STATUSES: frozenset[str] = frozenset(("MISSING", "BROKEN", "ERROR"))

# Addresses SPF is evaluated for as "another sender" (RFC 5737 TEST-NET-3, RFC 3849): what a
# record says of addresses that are not ours is the meaning of its "all" (or its absence).
STRANGER_IPV4 = "203.0.113.254"
STRANGER_IPV6 = "2001:db8::fe"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One record compared: the status, what DNS has, and each difference or fault with
    what it means (``notes``)."""

    record: Record
    status: Status
    found: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    required: bool = True

    @property
    def bad(self) -> bool:
        """A required record missing, broken or unanswered: ``pochta dns --check`` exits 1."""
        return self.required and self.status in BAD_STATUSES


def _result(record: Record, status: Status, found: Sequence[str] = (), *notes: str) -> Comparison:
    return Comparison(record, status, tuple(found), tuple(n for n in notes if n))


def _differs(record: Record, found: Sequence[str], notes: Sequence[str]) -> Comparison:
    return _result(record, "VALID-BUT-DIFFERENT" if notes else "MATCH", found, *notes)


# -- SPF (RFC 7208) ---------------------------------------------------------------------------


class SpfSyntaxError(ValueError):
    """A record receivers answer with ``permerror``; the message says which term and why."""


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """An SPF record's terms (RFC 7208 §4.6.1): the mechanisms with their qualifiers, in
    order, and the modifiers."""

    mechanisms: tuple[tuple[str, str, str], ...]  # (qualifier, name, argument)
    modifiers: tuple[tuple[str, str], ...]

    @property
    def all_qualifier(self) -> str | None:
        return next((q for q, name, _ in self.mechanisms if name == "all"), None)

    @property
    def redirect(self) -> str | None:
        return next((v for k, v in self.modifiers if k == "redirect"), None)


# RFC 7208 §12: mechanism = ( all / include / a / mx / ptr / ip4 / ip6 / exists ).
_SPF_MECH = re.compile(r"([+?~-]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?=$|[:/])(.*)", re.I)
# RFC 7208 §12: modifier = redirect / explanation / unknown-modifier; name = ALPHA *( ... ).
_SPF_MOD = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_CIDR = r"(?:/(?:[0-9]{1,3}))?(?://(?:[0-9]{1,3}))?"


def parse_spf(text: str) -> SpfRecord:
    """Parse one SPF record (RFC 7208 §4.5, §12), or raise :class:`SpfSyntaxError`."""
    # RFC 7208 §4.5: the record begins with exactly "v=spf1", then a space or its end.
    if not re.match(r"v=spf1(?: |$)", text, re.I):
        raise SpfSyntaxError('the record must begin with "v=spf1" (RFC 7208 §4.5)')
    mechanisms: list[tuple[str, str, str]] = []
    modifiers: list[tuple[str, str]] = []
    for term in text.split(" ")[1:]:
        if not term:
            continue  # RFC 7208 §12: terms are separated by 1*SP
        if m := _SPF_MECH.fullmatch(term):
            qualifier, name, arg = m.group(1) or "+", m.group(2).lower(), m.group(3)
            _check_mechanism(name, arg, term)
            mechanisms.append((qualifier, name, arg))
        elif m := _SPF_MOD.fullmatch(term):
            key = m.group(1).lower()
            # RFC 7208 §6: redirect and exp each appear at most once.
            if key in ("redirect", "exp") and any(k == key for k, _ in modifiers):
                raise SpfSyntaxError(f"{key}= appears twice (RFC 7208 §6): permerror")
            if key in ("redirect", "exp") and not m.group(2):
                raise SpfSyntaxError(f"{key}= needs a domain (RFC 7208 §6.1, §6.2)")
            modifiers.append((key, m.group(2)))
        else:
            # RFC 7208 §5: an unknown mechanism is a permerror.
            raise SpfSyntaxError(f"{term!r} is not an SPF mechanism or modifier (RFC 7208 §12)")
    return SpfRecord(tuple(mechanisms), tuple(modifiers))


def _check_mechanism(name: str, arg: str, term: str) -> None:
    if name == "all" and arg:
        raise SpfSyntaxError(f"{term!r}: all takes no argument (RFC 7208 §5.1)")
    if name in ("include", "exists") and not re.fullmatch(r":\S+", arg):
        raise SpfSyntaxError(f"{term!r}: {name} needs :domain (RFC 7208 §5.2, §5.7)")
    if name in ("a", "mx") and not re.fullmatch(rf"(?::[^/\s]+)?{_CIDR}", arg):
        raise SpfSyntaxError(f"{term!r}: {name}[:domain][/cidr] (RFC 7208 §5.3, §5.4)")
    if name == "ptr" and not re.fullmatch(r"(?::\S+)?", arg):
        raise SpfSyntaxError(f"{term!r}: ptr[:domain] (RFC 7208 §5.5)")
    if name in ("ip4", "ip6"):
        version = 4 if name == "ip4" else 6
        try:
            network = ipaddress.ip_network(arg[1:] if arg.startswith(":") else "-", strict=False)
        except ValueError:
            network = None
        if network is None or network.version != version:
            raise SpfSyntaxError(
                f"{term!r}: {name}:<IPv{version} network> (RFC 7208 §5.6): permerror"
            )


# RFC 7208 §2.6, §8: what a result for an address that is not ours means to a receiver.
_STRANGER_MEANING = {
    "fail": "fail, receivers may refuse forged mail",
    "softfail": "softfail, receivers may accept forged mail (most only mark it)",
    "neutral": "neutral, receivers treat forged mail as if there were no SPF record",
    "none": "none, receivers treat forged mail as if there were no SPF record",
}


def _all_label(record: SpfRecord) -> str:
    qualifier = record.all_qualifier
    if qualifier is not None:
        return f"{'' if qualifier == '+' else qualifier}all"
    if record.redirect:
        return f"redirect={record.redirect}"
    return "no all"  # RFC 7208 §4.7: no match and no redirect gives neutral


SpfEvaluate = Callable[[str, str], Awaitable[spf_check.SpfResult]]
"""check_host() for (address, domain): ``mailauth.spf.check_spf`` of ``postmaster@domain``."""


async def compare_spf(
    record: Record, found: Sequence[str], evaluate: SpfEvaluate, ips: Sequence[str]
) -> Comparison:
    """The SPF record at ``record.name`` against ours: one record (RFC 7208 §4.5), valid
    syntax, ``pass`` for each of our addresses, and what it says of other addresses."""
    spf_records = [f for f in found if txt_kind(f) == "spf"]
    if not spf_records:
        return _result(record, "MISSING", found, "other TXT records only" if found else "")
    if len(spf_records) > 1:
        return _result(
            record,
            "BROKEN",
            spf_records,
            f"{len(spf_records)} SPF records: receivers get a permerror (RFC 7208 §4.5); "
            "keep exactly one",
        )
    text = spf_records[0]
    try:
        theirs = parse_spf(text)
    except SpfSyntaxError as exc:
        return _result(record, "BROKEN", spf_records, str(exc))
    ours = parse_spf(record.value)
    same_text = _spf_terms(ours) == _spf_terms(theirs)
    if not ips:
        if same_text:
            return _result(record, "MATCH", spf_records)
        return _result(
            record,
            "VALID-BUT-DIFFERENT",
            spf_records,
            "written differently; our addresses are unknown, so it could not be evaluated "
            "(pass --ip)",
        )
    notes: list[str] = []
    for ip in ips:
        got = await evaluate(ip, record.name)
        if got.result == "temperror":
            return _result(record, "ERROR", spf_records, f"SPF for {ip}: {got.reason}")
        if got.result != "pass":
            return _result(
                record,
                "BROKEN",
                spf_records,
                f"does not authorise {ip}: SPF gives {got.result} ({got.reason}); receivers "
                "see this host's mail as forged",
            )
    passes = f"pass for {', '.join(ips)}"
    stranger = STRANGER_IPV6 if all(":" in ip for ip in ips) else STRANGER_IPV4
    other = await evaluate(stranger, record.name)
    if other.result in ("temperror", "permerror"):
        status: Status = "ERROR" if other.result == "temperror" else "BROKEN"
        return _result(record, status, spf_records, f"SPF for other addresses: {other.reason}")
    if other.result == "pass":
        return _result(
            record,
            "BROKEN",
            spf_records,
            f"{_all_label(theirs)} gives pass for any address (tried {stranger}): anyone can "
            "send as this domain and pass SPF",
        )
    if other.result != "fail":
        notes.append(
            f"{_all_label(theirs)}: {_STRANGER_MEANING[other.result]}; ours: -all (fail, "
            "RFC 7208 §8.4)"
        )
        notes.append(f"{passes} (evaluated as receivers do)")
        return _result(record, "VALID-BUT-DIFFERENT", spf_records, *notes)
    if same_text:
        return _result(record, "MATCH", spf_records)
    return _result(
        record,
        "MATCH",
        spf_records,
        f"written differently, same meaning: {passes}, fail for others",
    )


def _spf_terms(record: SpfRecord) -> tuple[list[tuple[str, str, str]], set[tuple[str, str]]]:
    """Terms compared without regard to case; modifiers are unordered (RFC 7208 §6)."""
    mechs = [(q, n, a.lower()) for q, n, a in record.mechanisms]
    return mechs, {(k, v.lower()) for k, v in record.modifiers}


# -- DKIM (RFC 6376 §3.6.1) --------------------------------------------------------------------


class KeyRecordError(ValueError):
    """A DKIM key record verifiers cannot use; the message says why."""


_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def parse_tag_list(text: str) -> dict[str, str]:
    """RFC 6376 §3.2 tag-list: ``tag=value`` pairs separated by ";", whitespace around the
    tags and values ignored, a tag at most once, tag names case-sensitive."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue  # RFC 6376 §3.2: the last tag may be followed by ";"
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not _TAG_NAME.fullmatch(name):
            raise KeyRecordError(f"{part.strip()!r} is not a tag=value pair (RFC 6376 §3.2)")
        if name in tags:
            raise KeyRecordError(f"tag {name}= appears twice (RFC 6376 §3.2)")
        tags[name] = value.strip()
    return tags


def parse_dkim_key(text: str) -> dict[str, str]:
    """A DKIM key record's tags (RFC 6376 §3.6.1), ``p=`` without its whitespace."""
    tags = parse_tag_list(text)
    # RFC 6376 §3.6.1: v= is optional, but if present it is first and "DKIM1".
    if "v" in tags and (next(iter(tags)) != "v" or tags["v"] != "DKIM1"):
        raise KeyRecordError('v= must come first and be "DKIM1" (RFC 6376 §3.6.1)')
    if "p" not in tags:
        raise KeyRecordError("no p= tag: the key is required (RFC 6376 §3.6.1)")
    tags["p"] = re.sub(r"\s+", "", tags["p"])
    return tags


def same_key(key_type: str, ours: bytes, published_b64: str) -> bool:
    """Whether the published ``p=`` is the key ``ours`` (raw for ed25519, RFC 8463 §4.2; DER
    SubjectPublicKeyInfo for rsa, RFC 6376 §3.6.1), compared as key material."""
    try:
        published = base64.b64decode(re.sub(r"\s+", "", published_b64), validate=True)
    except (ValueError, binascii.Error):
        return False
    if key_type == "ed25519":
        return published == ours
    try:
        mine = serialization.load_der_public_key(ours)
        # cryptography reads the SPKI and the bare RSAPublicKey (PKCS#1) some publish.
        theirs = serialization.load_der_public_key(published)
    except (ValueError, TypeError):
        return False
    if not isinstance(mine, rsa.RSAPublicKey) or not isinstance(theirs, rsa.RSAPublicKey):
        return False
    return mine.public_numbers() == theirs.public_numbers()


def _looks_like_key(text: str) -> bool:
    return txt_kind(text) == "dkim" or re.search(r"(?:^|;)\s*p\s*=", text) is not None


def compare_dkim(record: Record, found: Sequence[str]) -> Comparison:
    """The key at ``SELECTOR._domainkey.DOMAIN`` against our selector's key."""
    keys = [f for f in found if _looks_like_key(f)]
    if not keys:
        return _result(record, "MISSING", found, "other TXT records only" if found else "")
    if len(keys) > 1:
        return _result(
            record,
            "BROKEN",
            keys,
            f"{len(keys)} key records at one name: verifiers take any one (RFC 6376 §3.6.2.2)",
        )
    try:
        theirs = parse_dkim_key(keys[0])
    except KeyRecordError as exc:
        return _result(record, "BROKEN", keys, str(exc))
    ours = parse_dkim_key(record.value)
    ours_type = ours.get("k", "rsa")
    their_type = theirs.get("k", "rsa").lower()  # RFC 6376 §3.6.1: k= defaults to rsa
    if their_type != ours_type:
        return _result(
            record,
            "BROKEN",
            keys,
            f"k={their_type}, ours: k={ours_type} (the type of our private key): signatures fail",
        )
    if not theirs["p"]:
        return _result(record, "BROKEN", keys, "p= is empty: the key is revoked (RFC 6376 §3.6.1)")
    if not same_key(ours_type, base64.b64decode(ours["p"]), theirs["p"]):
        return _result(record, "BROKEN", keys, "p= is not our public key: signatures with it fail")
    hashes = [h.strip() for h in theirs.get("h", "sha256").split(":")]
    if "sha256" not in hashes:
        return _result(
            record,
            "BROKEN",
            keys,
            f"h={theirs['h']} does not allow sha256, the hash pochta signs with (RFC 6376 §3.6.1)",
        )
    services = {s.strip() for s in theirs.get("s", "*").split(":")}
    if not services & {"*", "email"}:
        return _result(
            record,
            "BROKEN",
            keys,
            f"s={theirs['s']}: the key is not for email (RFC 6376 §3.6.1)",
        )
    notes: list[str] = []
    flags = {f.strip() for f in theirs.get("t", "").split(":") if f.strip()}
    if "y" in flags:
        notes.append(
            "t=y: testing; verifiers may treat signed mail as unsigned (RFC 6376 §3.6.1); "
            "ours has no t=: remove it once signatures verify"
        )
    if "s" in flags:
        notes.append(
            "t=s: a signature's i= must be in d= exactly, no subdomain (RFC 6376 §3.6.1); "
            "pochta signs without i= (it defaults to @d=), so its signatures verify as with ours"
        )
    return _differs(record, keys, notes)


# -- DMARC (RFC 7489 §6.3) ---------------------------------------------------------------------

_POLICY_RANK = {"none": 0, "quarantine": 1, "reject": 2}
_POLICY_MEANING = {
    "none": "monitoring only: mail failing DMARC is delivered as if there were no policy",
    "quarantine": "mail failing DMARC goes to spam",
    "reject": "mail failing DMARC is refused",
}


def _policy_note(tag: str, theirs: str | None, ours: str) -> str:
    if theirs is None:
        # RFC 7489 §6.6.3: a record without p= (and a valid rua=) is taken as p=none.
        return f"no {tag}=: receivers take it as {tag}=none; ours: {tag}={ours}"
    if theirs == ours:
        return ""
    stricter = _POLICY_RANK[theirs] > _POLICY_RANK[ours]
    why = (
        "stricter than ours: check the reports first that every sender of the domain passes"
        if stricter
        else f"ours: {tag}={ours} ({_POLICY_MEANING[ours]})"
    )
    return f"{tag}={theirs}: {_POLICY_MEANING[theirs]}; {why} (RFC 7489 §6.3)"


def _uris(record: DmarcRecord, tag: str) -> list[str]:
    uris = record.aggregate_report_uris if tag == "rua" else record.failure_report_uris
    return [u.uri.lower() for u in uris]


def dmarc_differences(ours: DmarcRecord, theirs: DmarcRecord) -> list[str]:
    """Each difference of meaning (RFC 7489 §6.3 tags), with what it means."""
    notes: list[str] = []
    our_p = ours.policy or "none"
    notes.append(_policy_note("p", theirs.policy, our_p))
    our_sp = ours.subdomain_policy or our_p
    their_sp = theirs.subdomain_policy or theirs.policy or "none"
    if theirs.subdomain_policy is not None:  # sp= absent follows p=, said above
        notes.append(_policy_note("sp", their_sp, our_sp))
    if theirs.percent != ours.percent:
        notes.append(
            f"pct={theirs.percent}: the policy applies to {theirs.percent}% of failing mail "
            f"only, the rest is treated one step softer (RFC 7489 §6.3); ours: {ours.percent}"
        )
    for tag, mine, their in (
        ("adkim", ours.dkim_alignment, theirs.dkim_alignment),
        ("aspf", ours.spf_alignment, theirs.spf_alignment),
    ):
        if mine != their:
            what = "DKIM d=" if tag == "adkim" else "MAIL FROM"
            notes.append(
                f"{tag}={their}: {'strict' if their == 's' else 'relaxed'} alignment, the "
                f"{what} domain must {'equal' if their == 's' else 'share the organisation of'}"
                f" the From: domain (RFC 7489 §3.1); ours: {tag}={mine}"
            )
    our_rua, their_rua = _uris(ours, "rua"), _uris(theirs, "rua")
    if not their_rua:
        notes.append(
            "no rua=: nobody gets aggregate reports (RFC 7489 §7.2), so you cannot see who "
            f"sends as the domain; ours: rua={','.join(our_rua)}"
        )
    elif not set(our_rua) <= set(their_rua):
        notes.append(
            f"rua={','.join(their_rua)}: aggregate reports go there, not to "
            f"{','.join(our_rua)}, so pochta report dmarc shows none"
        )
    their_ruf = _uris(theirs, "ruf")
    if their_ruf != _uris(ours, "ruf"):
        notes.append(
            f"ruf={','.join(their_ruf) or '(none)'}: asks for failure reports (RFC 7489 §7.3); "
            "few receivers send them, and they carry the failed message's header (personal "
            "data); ours asks for none"
            + (
                f"; fo={':'.join(theirs.failure_options)} says on which failures"
                if theirs.failure_options != ours.failure_options
                else ""
            )
        )
    if theirs.report_interval_seconds != ours.report_interval_seconds:
        notes.append(
            f"ri={theirs.report_interval_seconds}: asks for aggregate reports every "
            f"{theirs.report_interval_seconds} s; most receivers send them daily whatever it says"
        )
    if theirs.testing:
        notes.append("t=y: testing (DMARCbis): receivers apply the policy one step softer")
    return [n for n in notes if n]


def compare_dmarc(record: Record, found: Sequence[str]) -> Comparison:
    """The DMARC record at ``_dmarc.DOMAIN``: one record that parses, compared by meaning."""
    dmarc = [f for f in found if is_dmarc_record(f)]
    if not dmarc:
        near = [f for f in found if "v=dmarc1" in f.lower()]
        if near:
            return _result(
                record,
                "BROKEN",
                near,
                'the record must start with "v=DMARC1" (RFC 7489 §6.3): receivers ignore it',
            )
        return _result(record, "MISSING", found, "other TXT records only" if found else "")
    if len(dmarc) > 1:
        return _result(
            record,
            "BROKEN",
            dmarc,
            f"{len(dmarc)} DMARC records: no policy applies (RFC 7489 §6.6.3)",
        )
    try:
        theirs = parse_record(dmarc[0])
    except RecordError as exc:
        return _result(record, "BROKEN", dmarc, f"syntax: {exc}")
    return _differs(record, dmarc, dmarc_differences(parse_record(record.value), theirs))


# -- MTA-STS (RFC 8461 §3.1) and TLS-RPT (RFC 8460 §3) -------------------------------------------

_STS_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # RFC 8461 §3.1 sts-id


def compare_mta_sts(record: Record, found: Sequence[str]) -> Comparison:
    """Any valid id matches: it only has to change when the policy changes (RFC 8461 §3.1)."""
    sts = [f for f in found if txt_kind(f) == "mta-sts"]
    if not sts:
        return _result(record, "MISSING", found, "other TXT records only" if found else "")
    if len(sts) > 1:
        return _result(
            record, "BROKEN", sts, "more than one STSv1 record: no policy applies (RFC 8461 §3.1)"
        )
    try:
        tags = parse_tag_list(sts[0])
    except KeyRecordError as exc:
        return _result(record, "BROKEN", sts, str(exc))
    if not _STS_ID.fullmatch(tags.get("id", "")):
        return _result(
            record, "BROKEN", sts, "id= must be 1 to 32 letters and digits (RFC 8461 §3.1)"
        )
    return _result(record, "MATCH", sts)


def _rua_list(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def compare_tlsrpt(record: Record, found: Sequence[str]) -> Comparison:
    """The TLS-RPT record: rua= of mailto: or https: URIs (RFC 8460 §3)."""
    rpt = [f for f in found if txt_kind(f) == "tlsrpt"]
    if not rpt:
        return _result(record, "MISSING", found, "other TXT records only" if found else "")
    if len(rpt) > 1:
        return _result(
            record,
            "BROKEN",
            rpt,
            "more than one TLSRPTv1 record: no reports are sent (RFC 8460 §3)",
        )
    try:
        tags = parse_tag_list(rpt[0])
    except KeyRecordError as exc:
        return _result(record, "BROKEN", rpt, str(exc))
    theirs = _rua_list(tags.get("rua", ""))
    bad = [u for u in theirs if not u.lower().startswith(("mailto:", "https:"))]
    if not theirs or bad:
        return _result(
            record,
            "BROKEN",
            rpt,
            "rua= must be mailto: or https: URIs, comma-separated (RFC 8460 §3)",
        )
    ours = _rua_list(parse_tag_list(record.value)["rua"])
    if {u.lower() for u in ours} <= {u.lower() for u in theirs}:
        return _result(record, "MATCH", rpt)
    return _result(
        record,
        "VALID-BUT-DIFFERENT",
        rpt,
        f"rua={','.join(theirs)}: TLS reports go there, not to {','.join(ours)}",
    )


# -- other record types ------------------------------------------------------------------------


def compare_mx(record: Record, found: Sequence[Any]) -> Comparison:
    """Our host among the MX targets; another preference with one MX means the same."""
    shown = [rd.to_text() for rd in found]
    pref_s, _, target = record.value.partition(" ")
    ours, host = int(pref_s), target.rstrip(".").lower()
    mx = sorted((int(rd.preference), rd.exchange.to_text().rstrip(".").lower()) for rd in found)
    if len(mx) == 1 and mx[0][1] == "":
        # RFC 7505 §3: "MX 0 ." says the domain accepts no mail.
        return _result(record, "BROKEN", shown, "a null MX (RFC 7505): the domain accepts no mail")
    mine = [p for p, name in mx if name == host]
    if not mine:
        return _result(
            record,
            "BROKEN",
            shown,
            f"mail for the domain goes to {', '.join(n for _, n in mx)}, not to {host} "
            "(RFC 5321 §5.1)",
        )
    notes: list[str] = []
    others = [(p, n) for p, n in mx if n != host]
    for pref, name in others:
        if pref <= mine[0]:
            notes.append(
                f"{name} (preference {pref}) comes before or with {host} (preference "
                f"{mine[0]}): senders try it first (RFC 5321 §5.1); it must pass mail here"
            )
        else:
            notes.append(
                f"also {name} (preference {pref}): a backup MX senders use when {host} does "
                "not answer; it must accept mail for the domain and relay it here"
            )
    if notes:
        return _result(record, "VALID-BUT-DIFFERENT", shown, *notes)
    note = (
        f"preference {mine[0]}, ours {ours}: with one MX the value does not matter (RFC 5321 §5.1)"
        if mine[0] != ours
        else ""
    )
    return _result(record, "MATCH", shown, note)


def compare_address(record: Record, found: Sequence[Any]) -> Comparison:
    """A/AAAA: our address among them; more addresses send some connections elsewhere."""
    addresses = [str(ipaddress.ip_address(str(rd.address))) for rd in found]
    ours = str(ipaddress.ip_address(record.value))
    if ours not in addresses:
        return _result(
            record,
            "BROKEN",
            addresses,
            f"{record.name} resolves to {', '.join(addresses)}, not to {ours}: the MX target "
            "and the HELO name point elsewhere",
        )
    extra = [a for a in addresses if a != ours]
    return _differs(
        record,
        addresses,
        [f"also {', '.join(extra)}: senders and clients connect there too"] if extra else [],
    )


def compare_ptr(record: Record, found: Sequence[Any]) -> Comparison:
    names = [rd.target.to_text().lower() for rd in found]
    if record.value.lower() not in names:
        return _result(
            record,
            "BROKEN",
            names,
            f"the PTR names {', '.join(names)}, not the HELO name {record.value}: receivers "
            "compare them (RFC 5321 §4.1.4)",
        )
    return _differs(
        record,
        names,
        ["more than one PTR record: receivers take any one of them"] if len(names) > 1 else [],
    )


def compare_srv(record: Record, found: Sequence[Any]) -> Comparison:
    """Client SRV records (RFC 6186 §3): the same target and port; priority and weight only
    order the choices."""
    shown = [rd.to_text() for rd in found]
    prio, weight, port, target = record.value.split()
    ours_off = target == "."
    for rd in found:
        their_target = rd.target.to_text().lower()
        if ours_off and their_target == ".":
            return _result(record, "MATCH", shown)
        if not ours_off and their_target == target.lower() and int(rd.port) == int(port):
            notes = []
            if (int(rd.priority), int(rd.weight)) != (int(prio), int(weight)):
                notes.append(
                    f"priority {rd.priority} weight {rd.weight}, ours {prio} {weight}: clients "
                    "try lower priorities first (RFC 6186 §3.4); ours prefers implicit TLS "
                    "(RFC 8314 §5.1)"
                )
            if len(found) > 1:
                notes.append("more targets: clients pick among them by priority and weight")
            return _differs(record, shown, notes)
    if ours_off:
        why = "pochta does not offer this service here: clients fail to connect"
    elif all(rd.target.to_text() == "." for rd in found):
        why = "target '.' says the service is not offered (RFC 6186 §4): clients do not use it"
    else:
        why = f"clients connect to {', '.join(shown)}, not to {target}:{port}"
    return _result(record, "BROKEN", shown, why)


def compare_cname(record: Record, found: Sequence[Any]) -> Comparison:
    targets = [rd.target.to_text().lower() for rd in found]
    if record.value.lower() in targets:
        return _result(record, "MATCH", targets)
    return _result(
        record,
        "VALID-BUT-DIFFERENT",
        targets,
        f"points at {', '.join(targets)}, not at {record.value}: what {record.name} serves "
        "comes from there, not from pochta's HTTP listener",
    )


def compare_exact(record: Record, found: Sequence[Any]) -> Comparison:
    expected = dns.rdata.from_text(
        dns.rdataclass.IN,
        dns.rdatatype.from_text(record.rtype),
        record.value,
        dns.name.root,
        relativize=False,
    )
    shown = [rd.to_text() for rd in found]
    if list(found) == [expected]:
        return _result(record, "MATCH", shown)
    if expected in found:
        return _result(record, "VALID-BUT-DIFFERENT", shown, "DNS has more records than this one")
    return _result(record, "BROKEN", shown, "DNS has other data")


_TXT_COMPARE: dict[TxtKind, Callable[[Record, Sequence[str]], Comparison]] = {
    "dkim": compare_dkim,
    "dmarc": compare_dmarc,
    "mta-sts": compare_mta_sts,
    "tlsrpt": compare_tlsrpt,
}
_RDATA_COMPARE: dict[str, Callable[[Record, Sequence[Any]], Comparison]] = {
    "MX": compare_mx,
    "A": compare_address,
    "AAAA": compare_address,
    "PTR": compare_ptr,
    "SRV": compare_srv,
    "CNAME": compare_cname,
}


# -- DNS ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    state: Literal["ok", "nxdomain", "nodata", "error"]
    rdatas: list[Any] = field(default_factory=list)
    error: str = ""


async def _ask(resolver: dns.asyncresolver.Resolver, name: str, rtype: str) -> _Answer:
    try:
        answer = await resolver.resolve(name + ".", rtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return _Answer("nxdomain")
    except dns.exception.DNSException as exc:
        return _Answer("error", error=str(exc) or type(exc).__name__)
    if answer.rrset is None or len(answer.rrset) == 0:
        return _Answer("nodata")
    return _Answer("ok", list(answer.rrset))


async def compare_record(
    record: Record, resolver: dns.asyncresolver.Resolver, evaluate: SpfEvaluate, ips: Sequence[str]
) -> Comparison:
    """Ask DNS for ``record`` and compare its meaning (the module docstring)."""
    answer = await _ask(resolver, record.name, record.rtype)
    if answer.state == "error":
        out = _result(record, "ERROR", (), f"no answer from DNS: {answer.error}")
    elif answer.state != "ok":
        why = "does not exist" if answer.state == "nxdomain" else f"has no {record.rtype} record"
        out = _result(record, "MISSING", (), f"{record.name} {why}")
    elif record.rtype == "TXT":
        # RFC 7208 §3.3 / RFC 6376 §3.6.2.2: a TXT record's strings are joined.
        texts = [b"".join(rd.strings).decode("utf-8", "replace") for rd in answer.rdatas]
        kind = txt_kind(record.value)
        if kind == "spf":
            out = await compare_spf(record, texts, evaluate, ips)
        elif kind in _TXT_COMPARE:
            out = _TXT_COMPARE[kind](record, texts)
        else:
            out = _differs(record, texts, [] if record.value in texts else ["other text"])
    else:
        out = _RDATA_COMPARE.get(record.rtype, compare_exact)(record, answer.rdatas)
    return replace(out, required=record.required)


def _points_at(found: Sequence[str], name: str) -> bool:
    """Whether an SPF record uses ``name`` in include: or redirect= (RFC 7208 §5.2, §6.1)."""
    pattern = re.compile(rf"(?:^|\s)(?:[+?~-]?include:|redirect=){re.escape(name)}\.?(?:\s|$)")
    return any(pattern.search(text.lower()) for text in found)


async def compare_records(
    records: Sequence[Record],
    resolver: dns.asyncresolver.Resolver,
    spf_dns: spf_check.SpfDns,
    host: str,
    ips: Sequence[str],
) -> list[Comparison]:
    """``compare_record`` for each record, in order. SPF is evaluated by ``mailauth.spf`` for
    ``ips`` (our addresses; none: compared as text) with ``host`` as the receiver. An
    optional SPF record (``_spf.HOST``) becomes required when a published SPF record of the
    set points at it."""

    async def evaluate(ip: str, name: str) -> spf_check.SpfResult:
        return await spf_check.check_spf(ip, f"postmaster@{name}", host, dns=spf_dns, receiver=host)

    out = [await compare_record(r, resolver, evaluate, ips) for r in records]
    published = [f for c in out if c.record.rtype == "TXT" for f in c.found]
    return [
        replace(c, required=True)
        if not c.required
        and txt_kind(c.record.value) == "spf"
        and _points_at(published, c.record.name)
        else c
        for c in out
    ]
