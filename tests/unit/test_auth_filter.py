"""cleanup/auth_filter.py and receive/spf_policy.py with dict zones: no network, no server."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pochta.cleanup.auth_filter import AuthFilter, authserv_id, render_header
from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.cleanup.verdict import AuthResult
from pochta.mailauth import dmarc
from pochta.mailauth.arc_verify import verify_arc
from pochta.mailauth.spf import SpfResult
from pochta.mime.headers import split_message
from pochta.protocols.smtp.replies import Reply
from pochta.receive.policy import Findings, PolicyRequest
from pochta.receive.spf_policy import SpfPolicy
from pochta.reports.store import DmarcEvaluation
from tests.spf_zone import ZoneDns
from tests.unit.test_arc_verify import RSA_TXT, seal

HOST = "mail.example.test"
CONTENT = b"From: <ceo@forged.test>\r\nSubject: hi\r\n\r\nbody\r\n"
SPF_FAIL = SpfResult(
    result="fail",
    reason="not allowed",
    properties={"smtp.mailfrom": "ceo@forged.test"},
    domain="forged.test",
)


def _dmarc_lookup(zone: Mapping[str, list[bytes]], *, broken: bool = False) -> dmarc.TxtLookup:
    async def lookup(name: str) -> list[bytes]:
        if broken:
            raise dmarc.DnsTemporaryError(f"{name}: SERVFAIL")
        name = name.rstrip(".")
        if name not in zone:
            raise dmarc.NoSuchDomain(name)
        return zone[name]

    return lookup


async def _no_keys(name: str) -> list[bytes]:
    return []


def _filter(*, broken: bool = False, **options: object) -> AuthFilter:
    zone = {"_dmarc.forged.test": [b"v=DMARC1; p=reject"]}
    return AuthFilter(
        hostname=HOST,
        dkim_lookup=_no_keys,
        dmarc_lookup=_dmarc_lookup(zone, broken=broken),
        **options,  # type: ignore[arg-type]
    )


def _info(**fields: object) -> CleanupInput:
    base: dict[str, object] = {
        "sender": "ceo@forged.test",
        "recipients": ["bob@example.test"],
        "client_ip": "192.0.2.7",
        "from_mx": True,
        "spf": SPF_FAIL,
    }
    base.update(fields)
    return CleanupInput(**base)  # type: ignore[arg-type]


async def _run(flt: AuthFilter, info: CleanupInput, content: bytes = CONTENT) -> CleanupResult:
    out = await flt(CleanupResult(content, info.sender, list(info.recipients)), info)
    assert not isinstance(out, Reply)
    return out


def test_authserv_id_skips_comments_and_the_version() -> None:
    assert authserv_id("Mail.Example.Test; spf=pass") == HOST
    assert authserv_id(" (forged) mail.example.test 1 ; dkim=pass") == HOST
    assert authserv_id("mail.example.test.;none") == HOST
    assert authserv_id("other.example; spf=pass") == "other.example"


def test_render_quotes_values_that_are_not_tokens() -> None:
    text = render_header(
        HOST,
        [
            AuthResult(method="spf", result="pass", properties={"smtp.mailfrom": "a.b@x.test"}),
            AuthResult(
                method="dkim",
                result="fail",
                reason='body hash "bh" mismatch',
                properties={"header.d": "x.test", "header.b": "ab/c+d=e"},
            ),
        ],
    )
    assert text == (
        f"{HOST};\r\n\tspf=pass smtp.mailfrom=a.b@x.test;\r\n"
        '\tdkim=fail reason="body hash \\"bh\\" mismatch" header.d=x.test header.b="ab/c+d=e"'
    )


async def test_dmarc_reject_refuses_with_the_reason() -> None:
    out = await _run(_filter(), _info())
    assert out.verdict.action == "reject"
    assert out.verdict.reason.startswith("DMARC policy of forged.test rejects this message")
    assert [a.method for a in out.verdict.auth] == ["spf", "dkim", "arc", "dmarc"]
    assert [a.result for a in out.verdict.auth] == ["fail", "none", "none", "fail"]


async def test_quarantine_action_and_allow_list() -> None:
    out = await _run(_filter(reject_action="quarantine"), _info())
    assert (out.verdict.action, out.verdict.folder) == ("folder", "Junk")
    for allow in (["192.0.2.0/24"], ["forged.test"], ["test"]):
        out = await _run(_filter(allow=allow), _info())
        assert out.verdict.action == "accept", allow
        assert out.verdict.symbol("DMARC_POLICY_ALLOWED") is not None
        assert out.verdict.auth_results("dmarc")[0].result == "fail"  # still recorded
    out = await _run(_filter(allow=["198.51.100.0/24", "other.test"]), _info())
    assert out.verdict.action == "reject"


async def test_a_dns_failure_never_refuses() -> None:
    out = await _run(_filter(broken=True), _info())
    assert out.verdict.action == "accept"
    assert out.verdict.auth_results("dmarc")[0].result == "temperror"
    assert b"dmarc=temperror" in out.content


async def test_only_mx_mail_is_checked_and_our_old_results_go() -> None:
    forged = b"Authentication-Results: mail.example.test; dmarc=pass\r\n" + CONTENT
    untouched = await _run(_filter(), _info(from_mx=False), forged)
    assert untouched.content == forged
    assert untouched.verdict.auth == ()
    checked = await _run(_filter(allow=["forged.test"]), _info(), forged)
    assert checked.content.count(b"Authentication-Results:") == 1
    assert b"dmarc=pass" not in checked.content


# -- the SPF policy -----------------------------------------------------------------------

ZONE = {
    "forged.test": [("TXT", b"v=spf1 ip4:192.0.2.1 -all")],
    "helo.test": [("TXT", b"v=spf1 -all")],
}


def _request(**fields: object) -> PolicyRequest:
    base: dict[str, object] = {
        "stage": "mail",
        "listener": "smtp",
        "client_ip": "192.0.2.7",
        "client_hostname": "",
        "helo": "helo.test",
        "auth_user": "",
        "sender": "ceo@forged.test",
    }
    base.update(fields)
    return PolicyRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("reject", [False, True])
async def test_spf_policy_checks_once_and_refuses_only_when_asked(reject: bool) -> None:
    dns = ZoneDns(ZONE)
    policy = SpfPolicy(dns=dns, receiver=HOST, reject=reject, timeout_seconds=5)
    findings = Findings()
    reply = await policy(_request(findings=findings))
    assert findings.spf is not None
    assert (findings.spf.result, findings.spf.identity) == ("fail", "mailfrom")
    if reject:
        assert reply is not None
        assert (reply.code, reply.enhanced) == (550, "5.7.23")
    else:
        assert reply is None
    asked = len(dns.queries)
    await policy(_request(stage="rcpt", recipient="bob@example.test", findings=findings))
    assert len(dns.queries) == asked  # once per transaction


async def test_spf_policy_null_sender_checks_helo_and_skips_other_listeners() -> None:
    dns = ZoneDns(ZONE)
    policy = SpfPolicy(dns=dns, receiver=HOST, reject=False, timeout_seconds=5)
    findings = Findings()
    await policy(_request(sender="", findings=findings))
    assert findings.spf is not None
    assert (findings.spf.identity, findings.spf.result) == ("helo", "fail")  # RFC 7208 §2.4
    skipped = Findings()
    await policy(_request(listener="submission", auth_user="bob", findings=skipped))
    assert skipped.spf is None


# -- ARC: the result, and trusted sealers overriding DMARC ---------------------------------

ARC_KEYS = {
    "arc._domainkey.lists.test": [RSA_TXT],
    "arc._domainkey.other.test": [RSA_TXT],
}


def _arc_filter(**options: object) -> AuthFilter:
    """The filter of ``_filter`` whose DKIM/ARC keys are ARC_KEYS."""

    async def keys(name: str) -> list[bytes]:
        return list(ARC_KEYS.get(name, []))

    zone = {"_dmarc.forged.test": [b"v=DMARC1; p=reject"]}
    return AuthFilter(
        hostname=HOST,
        dkim_lookup=keys,
        dmarc_lookup=_dmarc_lookup(zone),
        **options,  # type: ignore[arg-type]
    )


def _listed(sealer: str = "lists.test", said: str = "dmarc=pass header.from=forged.test") -> bytes:
    """CONTENT as a list sends it on: checked by ``sealer`` (``said``), changed (a subject
    tag, which would break a DKIM signature of the author), then sealed."""
    return seal(CONTENT.replace(b"Subject: hi", b"Subject: [list] hi"), sealer, results=said)


async def test_arc_result_is_in_the_header_and_the_verdict() -> None:
    out = await _run(_arc_filter(), _info(), _listed())
    [arc] = out.verdict.auth_results("arc")
    assert (arc.result, arc.properties) == ("pass", {"header.oldest-pass": "0"})
    header = split_message(out.content).get_all("authentication-results")[0].text
    assert "\tarc=pass header.oldest-pass=0;\r\n\tdmarc=fail" in header
    # Not trusted: the DMARC failure is enforced.
    assert out.verdict.action == "reject"
    assert out.verdict.symbol("ARC_TRUSTED_OVERRIDE") is None


async def test_trusted_sealer_overrides_a_reject() -> None:
    for trusted in (["lists.test"], ["LISTS.test."], ["test"]):
        out = await _run(_arc_filter(trusted_arc_sealers=trusted), _info(), _listed())
        assert out.verdict.action == "accept", trusted
        symbol = out.verdict.symbol("ARC_TRUSTED_OVERRIDE")
        assert symbol is not None
        assert symbol.options == ("lists.test i=1",)
        assert out.verdict.auth_results("dmarc")[0].result == "fail"  # still recorded


async def _arc_keys(name: str) -> list[bytes]:
    return list(ARC_KEYS.get(name, []))


async def test_policy_override_is_named_for_reports() -> None:
    """RFC 7489 Appendix C PolicyOverrideType, as ``_decide`` gives it to the recorder."""
    flt = _arc_filter(trusted_arc_sealers=["lists.test"], allow=["other.test"])
    result = CleanupResult(_listed(), "ceo@forged.test", ["bob@example.test"])
    found = dmarc.DmarcResult(
        "fail", "no aligned pass", disposition="reject", from_domain="forged.test"
    )
    arc_pass = await verify_arc(result.content, txt_lookup=_arc_keys)
    no_arc = await verify_arc(CONTENT, txt_lookup=_arc_keys)
    domains = ["forged.test"]
    _, override = flt._decide(result, found, _info(), domains, arc_pass)
    assert override == "trusted_forwarder"
    _, override = flt._decide(result, found, _info(sender="x@other.test"), domains, no_arc)
    assert override == "local_policy"
    decided, override = flt._decide(result, found, _info(), domains, no_arc)
    assert (override, decided.verdict.action) == ("", "reject")


async def test_untrusted_or_unconvincing_sealers_do_not_override() -> None:
    cases = {
        "another sealer": _listed("other.test"),
        "sealer saw a DMARC fail": _listed(said="dmarc=fail header.from=forged.test"),
        "sealer vouched for another From": _listed(said="dmarc=pass header.from=else.test"),
        "sealer said only spf": _listed(said="spf=pass smtp.mailfrom=ceo@forged.test"),
    }
    for name, content in cases.items():
        out = await _run(_arc_filter(trusted_arc_sealers=["lists.test"]), _info(), content)
        assert out.verdict.auth_results("arc")[0].result == "pass", name
        assert out.verdict.action == "reject", name
        assert out.verdict.symbol("ARC_TRUSTED_OVERRIDE") is None, name


async def test_a_failed_chain_does_not_override() -> None:
    # Changed after the trusted list sealed it: cv=fail for us, no override.
    changed = _listed().replace(b"body", b"other body")
    out = await _run(_arc_filter(trusted_arc_sealers=["lists.test"]), _info(), changed)
    [arc] = out.verdict.auth_results("arc")
    assert (arc.result, arc.reason) == ("fail", "ARC-Message-Signature i=1 did not validate")
    assert out.verdict.action == "reject"
    # A chain that says cv=fail itself, sealed by the trusted list on top.
    broken = seal(changed, "lists.test", results="arc=fail; dmarc=pass header.from=forged.test")
    out = await _run(_arc_filter(trusted_arc_sealers=["lists.test"]), _info(), broken)
    assert out.verdict.auth_results("arc")[0].result == "fail"
    assert out.verdict.action == "reject"


async def test_recorder_gets_one_evaluation_per_message_rejected_ones_too() -> None:
    """Issue 14 point 3: the DMARC report data, after the decision (reports/store.py)."""
    seen: list[DmarcEvaluation] = []
    out = await _run(_filter(record=seen.append), _info())
    assert out.verdict.action == "reject"
    out = await _run(_filter(record=seen.append, allow=["192.0.2.0/24"]), _info())
    assert out.verdict.action == "accept"
    out = await _run(_filter(record=seen.append), _info(from_mx=False))  # not checked
    assert [(e.dmarc_result, e.disposition, e.override) for e in seen] == [
        ("fail", "reject", ""),
        ("fail", "none", "local_policy"),
    ]
    first = seen[0]
    assert (first.source_ip, first.header_from, first.envelope_from) == (
        "192.0.2.7",
        "forged.test",
        "ceo@forged.test",
    )
    assert (first.spf_domain, first.spf_result, first.spf_aligned) == ("forged.test", "fail", False)
    assert (first.policy_domain, first.p, first.pct, first.dkim) == (
        "forged.test",
        "reject",
        100,
        (),
    )
