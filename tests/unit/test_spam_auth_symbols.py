"""spam/auth_symbols.py: the auth filter's results and the client's names as symbols."""

from __future__ import annotations

import asyncio

import pytest

from pochta.cleanup.verdict import AuthResult, Verdict
from pochta.spam.auth_symbols import AuthSymbols, ClientSymbols
from pochta.spam.check import Check, ScanInput
from pochta.spam.message import ScanMessage

MESSAGE = ScanMessage(b"From: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n")


def scan(
    *results: AuthResult,
    client_ip: str = "192.0.2.7",
    client_hostname: str = "mx.example.net",
    helo: str = "mx.example.net",
) -> ScanInput:
    verdict = Verdict()
    for r in results:
        verdict = verdict.with_auth(r)
    return ScanInput(
        message=MESSAGE,
        sender="a@example.net",
        recipients=["bob@example.org"],
        client_ip=client_ip,
        client_hostname=client_hostname,
        helo=helo,
        verdict=verdict,
    )


def names(check: Check, s: ScanInput) -> dict[str, float]:
    return {sym.name: sym.score for sym in asyncio.run(check(s))}


def auth(method: str, result: str, **props: str) -> AuthResult:
    return AuthResult(method=method, result=result, properties=props)


# -- SPF, DKIM, DMARC, ARC ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "symbol", "score"),
    [
        ("pass", "R_SPF_ALLOW", -0.2),
        ("fail", "R_SPF_FAIL", 1.0),
        ("softfail", "R_SPF_SOFTFAIL", 0.0),
        ("neutral", "R_SPF_NEUTRAL", 0.0),
        ("none", "R_SPF_NA", 0.0),
        ("temperror", "R_SPF_DNSFAIL", 0.0),
        ("permerror", "R_SPF_PERMFAIL", 0.0),
    ],
)
def test_spf_results(result: str, symbol: str, score: float) -> None:
    found = names(AuthSymbols(), scan(auth("spf", result, **{"smtp.mailfrom": "example.net"})))
    assert found == {symbol: score}


@pytest.mark.parametrize(
    ("result", "symbol", "score"),
    [
        ("pass", "R_DKIM_ALLOW", -0.2),
        ("fail", "R_DKIM_REJECT", 1.0),
        ("temperror", "R_DKIM_TEMPFAIL", 0.0),
        ("permerror", "R_DKIM_PERMFAIL", 0.0),
        ("none", "R_DKIM_NA", 0.0),
    ],
)
def test_dkim_results(result: str, symbol: str, score: float) -> None:
    assert names(AuthSymbols(), scan(auth("dkim", result))) == {symbol: score}


def test_dkim_two_signatures_give_both_outcomes_with_their_domains() -> None:
    s = scan(
        auth("dkim", "pass", **{"header.d": "list.example"}),
        auth("dkim", "fail", **{"header.d": "example.net"}),
    )
    symbols = {sym.name: sym for sym in asyncio.run(AuthSymbols()(s))}
    assert set(symbols) == {"R_DKIM_ALLOW", "R_DKIM_REJECT"}
    assert symbols["R_DKIM_REJECT"].options == ("example.net",)


@pytest.mark.parametrize(
    ("result", "policy", "symbol", "score"),
    [
        ("pass", "reject", "DMARC_POLICY_ALLOW", -0.5),
        ("fail", "reject", "DMARC_POLICY_REJECT", 2.0),
        ("fail", "quarantine", "DMARC_POLICY_QUARANTINE", 1.5),
        ("fail", "none", "DMARC_POLICY_SOFTFAIL", 0.1),
        ("none", "none", "DMARC_NA", 0.0),
        ("temperror", "none", "DMARC_DNSFAIL", 0.0),
        ("permerror", "none", "DMARC_BAD_POLICY", 0.5),
    ],
)
def test_dmarc_results(result: str, policy: str, symbol: str, score: float) -> None:
    found = names(AuthSymbols(), scan(auth("dmarc", result, **{"policy.dmarc": policy})))
    assert found == {symbol: score}


@pytest.mark.parametrize(
    ("result", "symbol", "score"),
    [("pass", "ARC_ALLOW", -1.0), ("fail", "ARC_REJECT", 1.0), ("none", "ARC_NA", 0.0)],
)
def test_arc_results(result: str, symbol: str, score: float) -> None:
    assert names(AuthSymbols(), scan(auth("arc", result))) == {symbol: score}


def test_auth_symbols_skip_mail_made_here_and_unchecked_mail() -> None:
    assert names(AuthSymbols(), scan(auth("spf", "fail"), client_ip="")) == {}
    assert names(AuthSymbols(), scan()) == {}  # the auth filter did not run


# -- reverse DNS and HELO -------------------------------------------------------------------


def client(*hosted: str) -> ClientSymbols:
    return ClientSymbols(hostname="mail.example.org", own_names=lambda: hosted)


def test_rdns_none() -> None:
    assert names(client(), scan(client_hostname="", helo="mx.example.net")) == {"RDNS_NONE": 1.0}
    assert names(client(), scan()) == {}


@pytest.mark.parametrize(
    ("helo", "symbol"),
    [
        ("192.0.2.7", "HFILTER_HELO_BAREIP"),
        ("2001:db8::7", "HFILTER_HELO_BAREIP"),
        ("[192.0.2.7]", "HELO_IP_LITERAL"),
        ("localhost", "HFILTER_HELO_NOT_FQDN"),
        ("mycomputer", "HFILTER_HELO_NOT_FQDN"),
    ],
)
def test_helo_syntax(helo: str, symbol: str) -> None:
    assert set(names(client(), scan(helo=helo))) == {symbol}


@pytest.mark.parametrize(
    "helo", ["mail.example.org", "example.org", "MX.Example.ORG.", "x.hosted.test"]
)
def test_helo_claiming_our_names_from_a_foreign_client(helo: str) -> None:
    check = client("example.org", "hosted.test")
    assert names(check, scan(helo=helo)) == {"HELO_FORGED_OURS": 3.0}


def test_helo_of_our_names_is_fine_from_loopback_or_when_dns_confirms_it() -> None:
    check = client("example.org")
    assert (
        names(
            check, scan(helo="mail.example.org", client_ip="127.0.0.1", client_hostname="localhost")
        )
        == {}
    )
    # our own secondary MX, whose forward-confirmed name is the name it greets with
    assert names(check, scan(helo="mx2.example.org", client_hostname="mx2.example.org")) == {}


def test_helo_not_matching_the_client_name_is_mild() -> None:
    found = names(client(), scan(helo="smtp.other.example", client_hostname="mx.example.net"))
    assert found == {"HELO_NOT_RDNS": 0.3}
    # another name of the same organisation is not a mismatch
    assert names(client(), scan(helo="out-7.example.net", client_hostname="mx.example.net")) == {}


def test_client_symbols_skip_mail_made_here_and_loopback_clients() -> None:
    assert names(client(), scan(client_ip="", client_hostname="", helo="1.2.3.4")) == {}
    assert names(client(), scan(client_ip="::1", client_hostname="", helo="box")) == {}
