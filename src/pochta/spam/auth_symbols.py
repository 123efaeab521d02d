"""Symbols from mail authentication and from what the client said of itself.

:class:`AuthSymbols` turns the SPF, DKIM, DMARC and ARC results that the auth filter put in
the verdict (cleanup/auth_filter.py, one RFC 8601 ``resinfo`` per method, DKIM one per
signature) into Rspamd's symbols, with Rspamd's default scores (``scores.d/
policies_group.conf``): only the results that say something get a weight; a failing SPF or
DKIM alone is a weak sign (forwarders and mailing lists break both), a DMARC failure under a
policy of ``reject`` or ``quarantine`` a stronger one, and a pass lowers the score a little
(spammers authenticate their own domains too).

:class:`ClientSymbols` reads the connection: the client's forward-confirmed reverse DNS name
(receive/client_name.py; "" when the address has none) and its HELO/EHLO argument. Real mail
servers have a name that resolves both ways and greet with it; bots on dial-up and hijacked
hosts greet with an IP, a bare word, or claim to be the server they talk to.

Both skip mail without a client address (made on this host: the sendmail pickup, notices):
there was no SMTP client to judge; :class:`ClientSymbols` also skips loopback clients.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence

from pochta.cleanup.verdict import AuthResult, Symbol
from pochta.mailauth.dmarc import organizational_domain
from pochta.netaddr import is_loopback
from pochta.spam.check import ScanInput

__all__ = ["AuthSymbols", "ClientSymbols"]

# RFC 8601 §2.7.2 SPF result -> (symbol, Rspamd's default score, description).
_SPF: dict[str, tuple[str, float, str]] = {
    "pass": ("R_SPF_ALLOW", -0.2, "SPF verification allows sending"),
    "fail": ("R_SPF_FAIL", 1.0, "SPF verification failed"),
    "softfail": ("R_SPF_SOFTFAIL", 0.0, "SPF verification soft-failed"),
    "neutral": ("R_SPF_NEUTRAL", 0.0, "SPF policy is neutral"),
    "none": ("R_SPF_NA", 0.0, "Missing SPF record"),
    "temperror": ("R_SPF_DNSFAIL", 0.0, "SPF DNS failure"),
    "permerror": ("R_SPF_PERMFAIL", 0.0, "SPF record is malformed or persistent DNS error"),
}

# RFC 8601 §2.7.1 DKIM result -> symbol. "neutral" and "policy" (a signature that could not
# be used) count as PERMFAIL, as in Rspamd.
_DKIM: dict[str, tuple[str, float, str]] = {
    "pass": ("R_DKIM_ALLOW", -0.2, "DKIM verification succeed"),
    "fail": ("R_DKIM_REJECT", 1.0, "DKIM verification failed"),
    "temperror": ("R_DKIM_TEMPFAIL", 0.0, "DKIM verification soft-failed"),
    "permerror": ("R_DKIM_PERMFAIL", 0.0, "DKIM verification hard-failed (invalid)"),
    "neutral": ("R_DKIM_PERMFAIL", 0.0, "DKIM verification hard-failed (invalid)"),
    "policy": ("R_DKIM_PERMFAIL", 0.0, "DKIM verification hard-failed (invalid)"),
    "none": ("R_DKIM_NA", 0.0, "Missing DKIM signature"),
}

# A DMARC "fail" by the policy the domain publishes (property policy.dmarc, RFC 8601 §2.7.X
# style; the auth filter records p/sp/np as chosen for the From domain).
_DMARC_FAIL: dict[str, tuple[str, float, str]] = {
    "reject": ("DMARC_POLICY_REJECT", 2.0, "DMARC reject policy"),
    "quarantine": ("DMARC_POLICY_QUARANTINE", 1.5, "DMARC quarantine policy"),
    "none": ("DMARC_POLICY_SOFTFAIL", 0.1, "DMARC failed"),
}
_DMARC: dict[str, tuple[str, float, str]] = {
    "pass": ("DMARC_POLICY_ALLOW", -0.5, "DMARC permit policy"),
    "none": ("DMARC_NA", 0.0, "No DMARC record"),
    "temperror": ("DMARC_DNSFAIL", 0.0, "DMARC DNS failure"),
    "permerror": ("DMARC_BAD_POLICY", 0.5, "DMARC record is invalid or no From domain"),
}

# RFC 8617 §4.4 chain validation status (cv=) -> symbol; Rspamd's weights. ARC_ALLOW lowers
# the score by 1: anyone can seal, so a valid chain says little until its sealer is trusted
# (mailauth.trusted_arc_sealers, which the auth filter applies to DMARC).
_ARC: dict[str, tuple[str, float, str]] = {
    "pass": ("ARC_ALLOW", -1.0, "ARC checks success"),
    "fail": ("ARC_REJECT", 1.0, "ARC checks failed"),
    "none": ("ARC_NA", 0.0, "ARC signature absent"),
    "temperror": ("ARC_DNSFAIL", 0.0, "ARC DNS error"),
    "permerror": ("ARC_INVALID", 0.5, "ARC structure invalid"),
}


def _symbol(entry: tuple[str, float, str], options: Iterable[str] = ()) -> Symbol:
    name, score, description = entry
    return Symbol(
        name=name, score=score, description=description, options=tuple(o for o in options if o)
    )


class AuthSymbols:
    """R_SPF_*, R_DKIM_*, DMARC_*, ARC_* from the auth filter's results in the verdict.

    Nothing when the auth filter did not run (``mailauth.check_incoming`` off: no results)."""

    name = "auth"
    waits = False

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        if not scan.client_ip:
            return ()
        verdict = scan.verdict
        out: list[Symbol] = []
        spf = verdict.auth_results("spf")
        if spf and spf[0].result in _SPF:
            out.append(_symbol(_SPF[spf[0].result], [spf[0].properties.get("smtp.mailfrom", "")]))
        out.extend(_dkim_symbols(verdict.auth_results("dkim")))
        dmarc = verdict.auth_results("dmarc")
        if dmarc:
            out.extend(_dmarc_symbol(dmarc[0]))
        arc = verdict.auth_results("arc")
        if arc and arc[0].result in _ARC:
            out.append(_symbol(_ARC[arc[0].result]))
        return out


def _dkim_symbols(results: list[AuthResult]) -> list[Symbol]:
    """One symbol per outcome, its options the signing domains (``header.d``) that had it:
    a message signed by its author and broken by a list gives both ALLOW and REJECT."""
    domains: dict[str, list[str]] = {}
    for r in results:
        entry = _DKIM.get(r.result)
        if entry is None:
            continue
        domains.setdefault(entry[0], []).append(r.properties.get("header.d", ""))
    by_name = {e[0]: e for e in _DKIM.values()}
    return [_symbol(by_name[name], found) for name, found in domains.items()]


def _dmarc_symbol(result: AuthResult) -> list[Symbol]:
    domain = [result.properties.get("header.from", "")]
    if result.result == "fail":
        policy = result.properties.get("policy.dmarc", "none")
        return [_symbol(_DMARC_FAIL.get(policy, _DMARC_FAIL["none"]), domain)]
    entry = _DMARC.get(result.result)
    return [_symbol(entry, domain)] if entry is not None else []


# -- the client: reverse DNS and HELO -------------------------------------------------------

RDNS_NONE = Symbol(
    name="RDNS_NONE", score=1.0, description="Cannot resolve reverse DNS for sender's IP"
)


class ClientSymbols:
    """RDNS_NONE and the HELO checks.

    ``hostname`` is ``server.hostname``; ``own_names`` gives the names that are ours besides
    it (``local.domains`` and the hosted domains, asked per message so a domain added while
    the server runs counts at once)."""

    name = "client"
    waits = False

    def __init__(self, *, hostname: str, own_names: Callable[[], Iterable[str]]) -> None:
        self._hostname = hostname.rstrip(".").lower()
        self._own_names = own_names

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        if not scan.client_ip or is_loopback(scan.client_ip):
            # A program on this host (a content filter reinjecting, a local script): its
            # name and greeting say nothing about spam.
            return ()
        out: list[Symbol] = []
        client_name = scan.client_hostname.rstrip(".").lower()
        if not client_name:
            out.append(RDNS_NONE)
        out.extend(self._helo_symbols(scan.helo.strip(), client_name))
        return out

    def _helo_symbols(self, helo: str, client_name: str) -> list[Symbol]:
        if not helo:
            return []
        if _is_ip(helo):
            # RFC 5321 §4.1.1.1: an address is given as a literal in brackets; a bare one
            # is not a valid HELO argument at all (Rspamd HFILTER_HELO_BAREIP, 3.0).
            return [_helo("HFILTER_HELO_BAREIP", 3.0, "HELO is a bare IP address", helo)]
        if helo.startswith("[") and helo.endswith("]"):
            # An address literal is valid (RFC 5321 §4.1.3), yet real mail servers greet with
            # a name; SpamAssassin scores it (RCVD_HELO_IP_MISMATCH) and so do we, mildly.
            return [_helo("HELO_IP_LITERAL", 1.0, "HELO is an address literal", helo)]
        name = helo.rstrip(".").lower()
        if "." not in name:
            # RFC 5321 §4.1.1.1: the argument is the client's fully qualified domain name.
            return [_helo("HFILTER_HELO_NOT_FQDN", 2.0, "HELO is not a fully qualified name", helo)]
        if name != client_name and self._is_ours(name):
            # A foreign client greeting with our own name or a hosted domain (Postfix's
            # classic "reject HELO of my own name"): no MTA of ours connects from there.
            return [
                _helo("HELO_FORGED_OURS", 3.0, "HELO claims this server or a hosted domain", helo)
            ]
        if client_name and organizational_domain(name) != organizational_domain(client_name):
            # Mild: many real servers greet with another name of the same operator (hence the
            # organizational domains are compared), a few with a name of another.
            return [
                _helo(
                    "HELO_NOT_RDNS",
                    0.3,
                    "HELO does not match the client's DNS name",
                    helo,
                    client_name,
                )
            ]
        return []

    def _is_ours(self, name: str) -> bool:
        if name == self._hostname:
            return True
        for own in self._own_names():
            own = own.rstrip(".").lower()
            if own and (name == own or name.endswith("." + own)):
                return True
        return False


def _helo(name: str, score: float, description: str, *options: str) -> Symbol:
    return Symbol(name=name, score=score, description=description, options=options)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
