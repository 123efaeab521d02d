"""DMARC evaluation (mailauth/dmarc.py): the authheaders 0.16.3 vectors, record syntax,
alignment, pct, sp/np and the DMARCbis tree walk, with zone data as a dict (no network)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

import dkim
import dns.exception
import dns.resolver
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.mailauth.dmarc import (
    MAX_TREE_WALK_QUERIES,
    DkimIdentity,
    DmarcRecord,
    DnsTemporaryError,
    NoSuchDomain,
    RecordError,
    ReportUri,
    TxtLookup,
    author_domains,
    evaluate,
    organizational_domain,
    parse_record,
    resolver_txt_lookup,
)
from pochta.mime.headers import split_message

DATA = Path("/work/shared/testdata/dmarc/authheaders-0.16.3")

Zone = Mapping[str, "str | list[str] | None"]


class ZoneLookup:
    """A TxtLookup over a dict: a string or list is the TXT answer, "" no answer, None or a
    missing name NXDOMAIN, a name in ``failing`` a timeout. Counts the names asked."""

    def __init__(self, zone: Zone, failing: frozenset[str] = frozenset()) -> None:
        self.zone = {k.lower().rstrip("."): v for k, v in zone.items()}
        self.failing = failing
        self.asked: list[str] = []

    async def __call__(self, name: str) -> list[bytes]:
        name = name.lower().rstrip(".")
        self.asked.append(name)
        if name in self.failing:
            raise DnsTemporaryError(f"{name}: timeout")
        value = self.zone.get(name)
        if value is None:
            raise NoSuchDomain(name)
        if isinstance(value, str):
            return [value.encode()] if value else []
        return [v.encode() for v in value]


def never(_: float = 0.0) -> float:
    return 0.0  # pct draw: always inside the sample


# --- the authheaders 0.16.3 cases -----------------------------------------------------------

CASES = json.loads((DATA / "cases.json").read_text())


def _case_zone() -> dict[str, str | None]:
    zone: dict[str, str | None] = {}
    for name, value in CASES["dns_txt"].items():
        if isinstance(value, dict):
            value = (DATA / value["from_file"]).read_text().strip()
        zone[name] = value
    return zone


def _dkim_results(
    message: bytes, prev: str, run_dkim: bool, zone: dict[str, str | None]
) -> list[DkimIdentity]:
    """The DKIM results the case feeds in: its ``prev`` Authentication-Results, else a real
    verification with dkimpy against the case's key (test.txt)."""
    if prev:
        return [
            DkimIdentity(domain=d, result=r)
            for r, d in re.findall(r"dkim=(\w+) header\.d=([\w.]+)", prev)
        ]
    if not run_dkim:
        return []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = zone.get(name.decode())
        return value.encode() if value else None

    d = dkim.DKIM(message)
    ok = d.verify(dnsfunc=dnsfunc)
    return [DkimIdentity(domain=d.domain.decode(), result="pass" if ok else "fail")]


# Where we differ from authheaders on purpose (reported in the brief's report).
KNOWN_DIFFERENCES = {
    # RFC 7489 §6.6.1 lets the receiver choose; we refuse several From domains (permerror,
    # disposition reject) as OpenDMARC and Gmail do. authheaders evaluates only the
    # example.com address and says fail/reject.
    "test_authenticate_dmarc_mult_from": ("permerror", "example.org", "reject"),
    "test_authenticate_dmarc_mult_from2": ("permerror", "example.com", "reject"),
}


def _expected(ar: str) -> tuple[str, str | None, str | None, str | None]:
    match = re.search(r"dmarc=(\w+)(?: \(([^)]*)\))?", ar)
    assert match is not None
    result, comment = match.group(1), match.group(2)
    header_from = re.search(r"header\.from=([\w.]+)", ar)
    policy = re.search(r"policy\.dmarc=(\w+)", ar)
    return (
        result,
        header_from.group(1) if header_from else None,
        policy.group(1) if policy else None,
        comment,
    )


DMARC_CASES = [c for c in CASES["cases"] if c["options"].get("dmarc", True)]


@pytest.mark.parametrize("case", DMARC_CASES, ids=[c["name"] for c in DMARC_CASES])
async def test_authheaders_case(case: dict[str, object]) -> None:
    zone = _case_zone()
    options = case["options"]
    assert isinstance(options, dict)
    message = (DATA / str(case["message"])).read_bytes()
    domains, why = author_domains(split_message(message).headers)
    dkim_results = _dkim_results(
        message, str(options.get("prev", "")), options.get("dkim", True) is not False, zone
    )
    got = await evaluate(
        domains,
        from_reason=why,
        spf_result="none",
        spf_domain="",
        dkim=dkim_results,
        lookup=ZoneLookup(zone),
        discovery="treewalk" if options.get("dmarcbis") else "psl",
        random_fraction=never,
    )
    result, header_from, policy, comment = _expected(str(case["expected_authentication_results"]))
    if case["name"] in KNOWN_DIFFERENCES:
        result, header_from, policy = KNOWN_DIFFERENCES[str(case["name"])]
        comment = None
    assert got.result == result, got.reason
    if header_from == "none":  # authheaders writes header.from=none without a From domain
        assert "header.from" not in got.properties
    elif header_from is not None:
        assert got.properties["header.from"] == header_from
    if policy is not None:
        assert got.properties["policy.dmarc"] == policy
    # Which record was used: authheaders says so in its comment.
    if comment == "Used From Domain Record":
        assert got.record_domain == got.from_domain
    elif comment == "Used Org Domain Record":
        assert got.record_domain == got.organizational_domain != got.from_domain
    elif comment and comment.startswith("Used Tree Walk"):
        assert got.record_domain == "gov"
        assert got.organizational_domain == "example.gov"


def test_every_dmarc_case_is_run() -> None:
    assert len(DMARC_CASES) == 11  # 12 cases, one without DMARC (dkim only)


# --- record syntax --------------------------------------------------------------------------


def test_parse_full_record() -> None:
    record = parse_record(
        "v=DMARC1; p=reject; sp=quarantine; np=none; pct=20; adkim=s; aspf=r; "
        "rua=mailto:a@example.org!10m, mailto:b@example.org; ruf=mailto:f@example.org!512; "
        "fo=1:d; rf=afrf; ri=3600; psd=n; t=y; future=ignored"
    )
    assert record == DmarcRecord(
        policy="reject",
        subdomain_policy="quarantine",
        nonexistent_policy="none",
        percent=20,
        dkim_alignment="s",
        spf_alignment="r",
        aggregate_report_uris=(
            ReportUri("mailto:a@example.org", 10 * 1024 * 1024),
            ReportUri("mailto:b@example.org"),
        ),
        failure_report_uris=(ReportUri("mailto:f@example.org", 512),),
        failure_options=("1", "d"),
        report_formats=("afrf",),
        report_interval_seconds=3600,
        psd="n",
        testing=True,
    )


def test_parse_defaults_and_case() -> None:
    assert parse_record(b"v=DMARC1;P=Reject;") == DmarcRecord(policy="reject")
    assert parse_record("v = DMARC1 ; sp=none").policy is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("v=DMARC1; p=none; reject", "tag=value"),  # authheaders' bad.example.com
        ("p=none; v=DMARC1", "start with"),
        ("v=dmarc1; p=none", "start with"),
        ("v=DMARC1; p=block", "p="),
        ("v=DMARC1; p=none; p=reject", "twice"),
        ("v=DMARC1; p=none; pct=101", "pct"),
        ("v=DMARC1; p=none; pct=-1", "pct"),
        ("v=DMARC1; p=none; adkim=x", "adkim"),
        ("v=DMARC1; p=none; rua=dmarc@example.org", "URI"),
        ("v=DMARC1; p=none; rua=mailto:a@example.org!10x", "URI"),
        ("v=DMARC1; p=none; fo=2", "fo"),
        ("v=DMARC1; p=none; ri=1h", "ri"),
        ("v=DMARC1; p=", "value"),
        ("v=DMARC1; v=DMARC1; p=none", "once"),
        ("v=DMARC1; p=nöne".encode(), "ASCII"),
    ],
)
def test_record_syntax_errors(text: str | bytes, says: str) -> None:
    with pytest.raises(RecordError, match=re.escape(says)):
        parse_record(text)


@given(st.text())
@example("v=DMARC1;")
@example("v=DMARC1; rua=mailto:x@y!99999999999999999999")
@example("v=DMARC1; =x")
def test_any_text_is_parsed_or_refused(text: str) -> None:
    with contextlib.suppress(RecordError):
        assert isinstance(parse_record(text), DmarcRecord)


@given(st.binary())
def test_any_bytes_are_parsed_or_refused(data: bytes) -> None:
    with contextlib.suppress(RecordError):
        parse_record(b"v=DMARC1; " + data)


@given(
    st.sampled_from(["none", "quarantine", "reject"]),
    st.integers(0, 100),
    st.sampled_from(["r", "s"]),
    st.integers(0, 2**32 - 1),
)
def test_generated_records_parse_back(policy: str, pct: int, adkim: str, ri: int) -> None:
    record = parse_record(f"v=DMARC1;p={policy} ;  pct = {pct};adkim={adkim};ri={ri};")
    assert (record.policy, record.percent, record.dkim_alignment) == (policy, pct, adkim)
    assert record.report_interval_seconds == ri


# --- evaluation -----------------------------------------------------------------------------


async def run(
    zone: Zone,
    from_domain: str = "example.com",
    *,
    dkim_ids: tuple[tuple[str, str], ...] = (),
    spf: tuple[str, str] = ("none", ""),
    fraction: float = 0.0,
    discovery: str = "psl",
    failing: frozenset[str] = frozenset(),
) -> tuple[object, ZoneLookup]:
    lookup = ZoneLookup(zone, failing)
    result = await evaluate(
        [from_domain],
        spf_result=spf[0],
        spf_domain=spf[1],
        dkim=[DkimIdentity(domain=d, result=r) for d, r in dkim_ids],
        lookup=lookup,
        discovery=discovery,  # type: ignore[arg-type]
        random_fraction=lambda: fraction,
    )
    return result, lookup


async def test_relaxed_alignment_shares_the_organizational_domain() -> None:
    zone = {"_dmarc.example.com": "v=DMARC1; p=reject"}
    r, _ = await run(zone, "news.example.com", dkim_ids=(("mail.example.com", "pass"),))
    assert (r.result, r.dkim_aligned, r.disposition) == ("pass", True, "none")  # type: ignore[attr-defined]
    r, _ = await run(zone, "example.com", spf=("pass", "bounce.example.com"))
    assert (r.result, r.spf_aligned) == ("pass", True)  # type: ignore[attr-defined]
    # A different organization never aligns; a failing signature does not count.
    r, _ = await run(
        zone,
        dkim_ids=(("example.com.evil.example", "pass"), ("example.com", "fail")),
        spf=("softfail", "example.com"),
    )
    assert (r.result, r.disposition) == ("fail", "reject")  # type: ignore[attr-defined]


async def test_strict_alignment_needs_the_same_name() -> None:
    zone = {"_dmarc.example.com": "v=DMARC1; p=quarantine; adkim=s; aspf=s"}
    r, _ = await run(
        zone, dkim_ids=(("mail.example.com", "pass"),), spf=("pass", "bounce.example.com")
    )
    assert (r.result, r.disposition) == ("fail", "quarantine")  # type: ignore[attr-defined]
    r, _ = await run(zone, dkim_ids=(("EXAMPLE.com.", "pass"),))
    assert r.result == "pass"  # type: ignore[attr-defined]
    r, _ = await run(zone, spf=("pass", "example.com"))
    assert (r.result, r.spf_aligned, r.dkim_aligned) == ("pass", True, False)  # type: ignore[attr-defined]


def test_organizational_domain_from_the_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("Mail.Example.COM.") == "example.com"
    assert organizational_domain("co.uk") == "co.uk"


@pytest.mark.parametrize(
    ("fraction", "policy", "disposition"),
    [
        (0.0, "reject", "reject"),
        (0.49, "reject", "reject"),
        (0.5, "reject", "quarantine"),  # outside the 50 %: the next milder policy
        (0.99, "quarantine", "none"),
        (0.3, "quarantine", "quarantine"),
    ],
)
async def test_pct_samples_with_the_injected_random(
    fraction: float, policy: str, disposition: str
) -> None:
    zone = {"_dmarc.example.com": f"v=DMARC1; p={policy}; pct=50"}
    r, _ = await run(zone, fraction=fraction)
    assert (r.result, r.policy, r.disposition) == ("fail", policy, disposition)  # type: ignore[attr-defined]
    assert r.properties["policy.dmarc"] == policy  # type: ignore[attr-defined]


async def test_pct_zero_never_applies_reject() -> None:
    r, _ = await run({"_dmarc.example.com": "v=DMARC1; p=reject; pct=0"}, fraction=0.0)
    assert r.disposition == "quarantine"  # type: ignore[attr-defined]


async def test_sp_and_np_for_subdomains() -> None:
    zone = {
        "_dmarc.example.com": "v=DMARC1; p=none; sp=quarantine; np=reject",
        "exists.example.com": "",  # the name exists (no TXT): sp
    }
    r, lookup = await run(zone, "exists.example.com")
    assert (r.policy, r.record_domain) == ("quarantine", "example.com")  # type: ignore[attr-defined]
    assert lookup.asked == ["_dmarc.exists.example.com", "_dmarc.example.com", "exists.example.com"]
    r, _ = await run(zone, "gone.example.com")  # NXDOMAIN: np
    assert r.policy == "reject"  # type: ignore[attr-defined]
    r, _ = await run(zone, "example.com")  # the organizational domain itself: p
    assert r.policy == "none"  # type: ignore[attr-defined]
    # Without np a non-existent subdomain gets sp; without sp, p.
    r, _ = await run({"_dmarc.example.com": "v=DMARC1; p=reject; sp=none"}, "gone.example.com")
    assert r.policy == "none"  # type: ignore[attr-defined]
    r, _ = await run({"_dmarc.example.com": "v=DMARC1; p=quarantine"}, "a.example.com")
    assert r.policy == "quarantine"  # type: ignore[attr-defined]


async def test_own_record_of_a_subdomain_uses_its_p() -> None:
    zone = {
        "_dmarc.example.com": "v=DMARC1; p=reject",
        "_dmarc.lists.example.com": "v=DMARC1; p=none; sp=reject",
    }
    r, lookup = await run(zone, "lists.example.com")
    assert (r.policy, r.record_domain) == ("none", "lists.example.com")  # type: ignore[attr-defined]
    assert lookup.asked == ["_dmarc.lists.example.com"]


async def test_no_record_no_p_and_p_from_rua() -> None:
    r, _ = await run({})
    assert (r.result, r.policy) == ("none", "none")  # type: ignore[attr-defined]
    r, _ = await run({"_dmarc.example.com": ["v=spf1 -all", "something else"]})
    assert r.result == "none"  # type: ignore[attr-defined]
    # RFC 7489 §6.6.3 step 5: no p, no rua: none; no p but rua: as p=none.
    r, _ = await run({"_dmarc.example.com": "v=DMARC1; sp=reject"})
    assert r.result == "none"  # type: ignore[attr-defined]
    r, _ = await run({"_dmarc.example.com": "v=DMARC1; rua=mailto:r@example.com"})
    assert (r.result, r.policy, r.disposition) == ("fail", "none", "none")  # type: ignore[attr-defined]


async def test_dns_failure_is_temperror_and_nxdomain_is_none() -> None:
    r, _ = await run({}, failing=frozenset({"_dmarc.example.com"}))
    assert (r.result, r.disposition) == ("temperror", "none")  # type: ignore[attr-defined]
    r, _ = await run(
        {"_dmarc.a.example.com": None}, "a.example.com", failing=frozenset({"_dmarc.example.com"})
    )
    assert r.result == "temperror"  # type: ignore[attr-defined]
    r, _ = await run({"_dmarc.example.com": None})
    assert r.result == "none"  # type: ignore[attr-defined]


async def test_several_records_and_bad_records_are_permerror() -> None:
    r, _ = await run({"_dmarc.example.com": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]})
    assert (r.result, r.disposition) == ("permerror", "none")  # type: ignore[attr-defined]
    # A bad record at the From domain is not replaced by the organizational domain's.
    zone = {
        "_dmarc.a.example.com": "v=DMARC1; p=none; pct=x",
        "_dmarc.example.com": "v=DMARC1; p=reject",
    }
    r, lookup = await run(zone, "a.example.com")
    assert (r.result, r.disposition) == ("permerror", "none")  # type: ignore[attr-defined]
    assert "pct" in r.reason  # type: ignore[attr-defined]
    assert lookup.asked == ["_dmarc.a.example.com"]


async def test_several_from_domains_are_refused() -> None:
    message = b"From: a@example.com, b@example.org\r\nTo: c@example.net\r\n\r\nhi\r\n"
    domains, why = author_domains(split_message(message).headers)
    assert (domains, why) == (["example.com", "example.org"], "")
    lookup = ZoneLookup({})
    r = await evaluate(domains, spf_result="pass", spf_domain="example.com", dkim=[], lookup=lookup)
    assert (r.result, r.disposition) == ("permerror", "reject")
    assert lookup.asked == []
    # Two addresses of one domain are one author domain.
    message = b"From: a@Example.com, b@example.COM\r\n\r\n"
    assert author_domains(split_message(message).headers) == (["example.com"], "")
    # Two From fields break RFC 5322 §3.6: refused too.
    message = b"From: a@example.com\r\nFrom: a@example.com\r\n\r\n"
    domains, why = author_domains(split_message(message).headers)
    assert why == "several From fields"
    r = await evaluate(
        domains, from_reason=why, spf_result="none", spf_domain="", dkim=[], lookup=lookup
    )
    assert (r.result, r.disposition) == ("permerror", "reject")


async def test_no_from_domain_is_permerror_without_policy() -> None:
    for message in (
        b"To: a@example.com\r\n\r\n",
        b'From: "Test User"\r\n\r\n',
        b"From: a@b\r\n\r\n",
    ):
        domains, why = author_domains(split_message(message).headers)
        assert domains == []
        assert why
        r = await evaluate(
            domains,
            from_reason=why,
            spf_result="none",
            spf_domain="",
            dkim=[],
            lookup=ZoneLookup({}),
        )
        assert (r.result, r.disposition) == ("permerror", "none")


# --- DMARCbis tree walk ---------------------------------------------------------------------


async def test_tree_walk_asks_at_most_eight_names() -> None:
    deep = "a.b.c.d.e.f.g.h.i.example.com"  # 11 labels
    r, lookup = await run({}, deep, discovery="treewalk")
    assert r.result == "none"  # type: ignore[attr-defined]
    assert len(lookup.asked) == MAX_TREE_WALK_QUERIES
    # The first name, then a jump to the last 7 labels, then one label less each time.
    assert lookup.asked[0] == f"_dmarc.{deep}"
    assert lookup.asked[1] == "_dmarc.e.f.g.h.i.example.com"
    assert lookup.asked[-1] == "_dmarc.com"


async def test_tree_walk_finds_an_intermediate_record_and_the_org_domain() -> None:
    zone = {
        "_dmarc.dept.example.com": "v=DMARC1; p=quarantine; sp=reject",
        "_dmarc.example.com": "v=DMARC1; p=none",
        "host.team.dept.example.com": "",
    }
    r, _ = await run(
        zone,
        "host.team.dept.example.com",
        dkim_ids=(("other.example.com", "pass"),),
        discovery="treewalk",
    )
    # The first record on the way applies (sp: the From domain is below it); the org domain
    # is the shortest name with a record, so a signature of example.com's family aligns.
    assert (r.record_domain, r.organizational_domain, r.policy) == (
        "dept.example.com",
        "example.com",
        "reject",
    )  # type: ignore[attr-defined]
    assert r.result == "pass"  # type: ignore[attr-defined]


async def test_tree_walk_psd_flags() -> None:
    zone = {
        "_dmarc.gov": "v=DMARC1; p=reject; sp=none; psd=y",
        "_dmarc.agency.gov": "v=DMARC1; p=quarantine; psd=n",
        "_dmarc.sub.agency.gov": "v=DMARC1; p=none",
    }
    r, _ = await run(
        zone, "x.sub.agency.gov", dkim_ids=(("agency.gov", "pass"),), discovery="treewalk"
    )
    # psd=n stops the walk: agency.gov is the organization, so the d=agency.gov aligns.
    assert (r.result, r.organizational_domain) == ("pass", "agency.gov")  # type: ignore[attr-defined]
    r, _ = await run(zone, "other.gov", discovery="treewalk")
    # psd=y: the org domain is one label below the PSD; its policy is p.
    assert (r.result, r.organizational_domain, r.policy) == ("fail", "other.gov", "reject")  # type: ignore[attr-defined]
    # The PSL alone sees no record for other.gov (RFC 7489 has no PSD step).
    r, _ = await run(zone, "other.gov")
    assert r.result == "none"  # type: ignore[attr-defined]


# --- the dnspython adapter ------------------------------------------------------------------


class _Rdata:
    def __init__(self, *strings: bytes) -> None:
        self.strings = strings


class _Resolver:
    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    async def resolve(self, name: str, rdtype: str) -> object:
        assert rdtype == "TXT"
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_resolver_adapter_keeps_nxdomain_nodata_and_failure_apart() -> None:
    lookup: TxtLookup = resolver_txt_lookup(_Resolver([_Rdata(b"v=DMARC1; ", b"p=none")]))  # type: ignore[arg-type]
    assert await lookup("_dmarc.example.com") == [b"v=DMARC1; p=none"]
    with pytest.raises(NoSuchDomain):
        await resolver_txt_lookup(_Resolver(dns.resolver.NXDOMAIN()))("x")  # type: ignore[arg-type]
    assert await resolver_txt_lookup(_Resolver(dns.resolver.NoAnswer()))("x") == []  # type: ignore[arg-type]
    for exc in (dns.exception.Timeout(), dns.resolver.NoNameservers()):
        with pytest.raises(DnsTemporaryError):
            await resolver_txt_lookup(_Resolver(exc))("x")  # type: ignore[arg-type]
