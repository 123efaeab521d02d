"""The inbound mail-authentication filter of cleanup: SPF, DKIM and DMARC on mail from the MX.

The first filter of :class:`pochta.cleanup.pipeline.Cleanup` (server/mail.py), for mail from
the smtp (MX) listener only (``CleanupInput.from_mx``) when ``mailauth.check_incoming`` is on;
submission, the pickup of ``pochta sendmail`` mail, notices and LMTP are never checked. It
adapts the pure modules of ``mailauth/``:

1. every ``Authentication-Results`` field that claims our host name as its authserv-id is
   removed (RFC 8601 §5: a forgery, or a result we may not vouch for);
2. SPF: the result the MAIL FROM policy computed (``receive/spf_policy.py``,
   ``CleanupInput.spf``); ``none`` when there is none;
3. DKIM: every signature verified (``mailauth/dkim_verify.verify_dkim``), one result each;
   ``dkim=none`` for an unsigned message (RFC 8601 §2.7.1);
4. ARC: the chain of ``ARC-*`` fields verified (``mailauth/arc_verify.verify_arc``, RFC 8617
   §5.2), one ``arc=`` result;
5. DMARC (``mailauth/dmarc.evaluate``) over the From domain, the SPF result with its domain
   and the DKIM results;
6. every result goes into the verdict (``add_auth_result``) and ONE
   ``Authentication-Results: HOSTNAME; spf=...; dkim=...; arc=...; dmarc=...`` is prepended
   (RFC 8601 §2.2);
7. the decision: a DMARC failure whose disposition is ``reject`` refuses the message
   (550 5.7.1 with the reason, RFC 7489 §6.7) unless ``mailauth.dmarc_reject_action`` is
   ``quarantine``, or the client or sender is in ``mailauth.dmarc_allow`` (known forwarders
   and mailing lists: recorded, not enforced, policy override ``local_policy``), or the
   message comes through a trusted ARC sealer (below); a ``quarantine`` disposition
   delivers to Junk. A DNS failure never refuses mail: ``temperror`` is recorded and the
   mail delivered.

Trusted ARC sealers (``mailauth.trusted_arc_sealers``; RFC 7489 §6.6.2/§7.2.2 local policy,
RFC 8617 §7.2.1): a DMARC failure is not enforced when the ARC chain validates
(``arc=pass``), the newest set (highest ``i=``) was sealed by a listed domain or a subdomain
of one, and that set's ``ARC-Authentication-Results`` says ``dmarc=pass`` (with a
``header.from``, if it names one, equal to our From domain). Only the newest sealer's word
counts, and only its DMARC result: an ``spf=pass``/``dkim=pass`` in the AAR is not judged for
alignment here (the sealer's DMARC result already did that). The override is logged
(``dmarc_arc_override``), marked with the symbol ``ARC_TRUSTED_OVERRIDE`` and named
``trusted_forwarder`` (RFC 7489 Appendix C ``PolicyOverrideType``) for the aggregate reports.

DNS: the lookups are the production ones over the one cached resolver of the mail system
(``make_async_resolver(settings.dns)``), injected here so tests give their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
import re
import time
from collections.abc import Callable, Sequence

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.cleanup.verdict import AuthResult
from pochta.logs import get_logger
from pochta.mailauth import dkim_verify, dmarc
from pochta.mailauth.arc_verify import ArcResult, ArcSet, verify_arc
from pochta.mailauth.dkim_verify import DkimResult, verify_dkim
from pochta.mailauth.dmarc import DkimIdentity, DmarcResult, author_domains, evaluate
from pochta.mime.headers import split_message
from pochta.netaddr import in_networks
from pochta.protocols.smtp.replies import Reply
from pochta.reports.store import DmarcEvaluation

__all__ = [
    "AUTH_RESULTS_FIELD",
    "JUNK_FOLDER",
    "OVERRIDE_LOCAL_POLICY",
    "OVERRIDE_TRUSTED_FORWARDER",
    "AuthFilter",
    "authserv_id",
    "render_header",
]

log = get_logger("cleanup.auth")

AUTH_RESULTS_FIELD = "Authentication-Results"
JUNK_FOLDER = "Junk"
# RFC 7489 Appendix C PolicyOverrideType: why a DMARC failure was not enforced.
OVERRIDE_LOCAL_POLICY = "local_policy"  # mailauth.dmarc_allow
OVERRIDE_TRUSTED_FORWARDER = "trusted_forwarder"  # mailauth.trusted_arc_sealers

# RFC 2045 §5.1 token: CHAR except SPACE, CTLs and tspecials (RFC 8601 §2.2 "value").
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# RFC 8601 §2.3 pvalue: also [ [ local-part ] "@" ] domain-name, unquoted.
_ADDRESS = re.compile(r"(?:[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z.]*@)?[0-9A-Za-z](?:[0-9A-Za-z.\-]*)")
_COMMENT_OR_SPACE = re.compile(r"\([^()]*\)|\s+")


class AuthFilter:
    """A cleanup ``Filter``: see the module docstring."""

    def __init__(
        self,
        *,
        hostname: str,
        dkim_lookup: dkim_verify.TxtLookup,
        dmarc_lookup: dmarc.TxtLookup,
        reject_action: str = "reject",
        allow: Sequence[str] = (),
        timeout_seconds: float = 20.0,
        random_fraction: Callable[[], float] = random.random,
        trusted_arc_sealers: Sequence[str] = (),
        record: Callable[[DmarcEvaluation], None] | None = None,
    ) -> None:
        self.hostname = hostname.rstrip(".").lower()
        self._dkim_lookup = dkim_lookup
        self._dmarc_lookup = dmarc_lookup
        self._reject_action = reject_action
        self._allow_networks = [a for a in allow if _is_network(a)]
        self._allow_domains = {a.rstrip(".").lower() for a in allow if not _is_network(a)}
        self._timeout = timeout_seconds
        self._random = random_fraction
        self._trusted_sealers = {d.rstrip(".").lower() for d in trusted_arc_sealers if d}
        # Called once per checked message, after the decision (reports/store.py).
        self._record = record

    async def __call__(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        if not info.from_mx or info.submission:
            return result
        result = self._remove_ours(result, info)
        head = split_message(result.content)
        spf = _spf_auth(info)
        dkim = await self._dkim(result.content)
        arc = await self._arc(result.content)
        domains, from_reason = author_domains(head.headers)
        found = await self._dmarc(domains, from_reason, info, dkim)
        dmarc_auth = AuthResult(
            method="dmarc",
            result=found.result,
            reason="" if found.result == "pass" else found.reason,
            properties=dict(found.properties),
        )
        dkim_auth = [
            AuthResult(
                method="dkim",
                result=d.result,
                reason="" if d.result == "pass" else d.reason,
                properties=dict(d.properties),
            )
            for d in dkim
        ] or [AuthResult(method="dkim", result="none", reason="message not signed")]
        arc_auth = AuthResult(
            method="arc",
            result=arc.result,
            reason=arc.reason,
            properties=dict(arc.properties),
        )
        results = [spf, *dkim_auth, arc_auth, dmarc_auth]
        for found_result in results:
            result = dataclasses.replace(result, verdict=result.verdict.with_auth(found_result))
        result = result.prepend_header(AUTH_RESULTS_FIELD, render_header(self.hostname, results))
        result, policy_override = self._decide(result, found, info, domains, arc)
        if self._record is not None and found.from_domain:
            self._record(evaluation(found, dkim, info, result, policy_override))
        log.info(
            "authentication",
            queue_id=info.queue_id,
            spf=spf.result,
            dkim=",".join(a.result for a in dkim_auth),
            arc=arc.result,
            dmarc=found.result,
            disposition=found.disposition,
            policy_override=policy_override,
            action=result.verdict.action,
        )
        return result

    def _remove_ours(self, result: CleanupResult, info: CleanupInput) -> CleanupResult:
        """RFC 8601 §5: remove every Authentication-Results field with our authserv-id."""
        head = split_message(result.content)
        kept = tuple(
            h
            for h in head.headers
            if h.key != "authentication-results" or authserv_id(h.text) != self.hostname
        )
        if len(kept) == len(head.headers):
            return result
        log.info(
            "authentication_results_removed",
            queue_id=info.queue_id,
            fields=len(head.headers) - len(kept),
        )
        content = dataclasses.replace(head, headers=kept).join()
        return dataclasses.replace(result, content=content)

    async def _dkim(self, content: bytes) -> list[DkimResult]:
        try:
            async with asyncio.timeout(self._timeout):
                return await verify_dkim(content, txt_lookup=self._dkim_lookup)
        except TimeoutError:
            return [DkimResult("temperror", f"no answer within {self._timeout:g} s")]

    async def _arc(self, content: bytes) -> ArcResult:
        try:
            async with asyncio.timeout(self._timeout):
                return await verify_arc(content, txt_lookup=self._dkim_lookup)
        except TimeoutError:
            return ArcResult("temperror", f"no answer within {self._timeout:g} s")

    async def _dmarc(
        self,
        domains: list[str],
        from_reason: str,
        info: CleanupInput,
        dkim: list[DkimResult],
    ) -> DmarcResult:
        spf = info.spf
        identities = [
            DkimIdentity(d.properties.get("header.d", ""), d.result)
            for d in dkim
            if d.properties.get("header.d")
        ]
        try:
            async with asyncio.timeout(self._timeout):
                return await evaluate(
                    domains,
                    spf_result=spf.result if spf is not None else "none",
                    spf_domain=spf.domain if spf is not None else "",
                    dkim=identities,
                    lookup=self._dmarc_lookup,
                    random_fraction=self._random,
                    from_reason=from_reason,
                )
        except TimeoutError:
            props = {"header.from": domains[0]} if domains else {}
            return DmarcResult("temperror", f"no answer within {self._timeout:g} s", props)

    def _decide(
        self,
        result: CleanupResult,
        found: DmarcResult,
        info: CleanupInput,
        domains: list[str],
        arc: ArcResult,
    ) -> tuple[CleanupResult, str]:
        """The result with the DMARC decision, and the policy override (RFC 7489 Appendix C
        ``PolicyOverrideType``: "", ``local_policy``, ``trusted_forwarder``)."""
        if found.result not in ("fail", "permerror") or found.disposition == "none":
            return result, ""  # pass, none, temperror (RFC 7489 §6.6.3: deliver): no action
        allowed = self._allowed(info, domains)
        if allowed:
            log.info(
                "dmarc_allowed",
                queue_id=info.queue_id,
                client=info.client_ip,
                sender=info.sender or "<>",
                disposition=found.disposition,
                matched=allowed,
            )
            return result.add_symbol(
                "DMARC_POLICY_ALLOWED", 0.0, "DMARC failure not enforced", [allowed]
            ), OVERRIDE_LOCAL_POLICY
        sealer = self._trusted_arc(arc, found, domains)
        if sealer is not None:
            # RFC 8617 §7.2.1, RFC 7489 §6.6.2: local policy may accept what a trusted
            # intermediary authenticated before it changed the message.
            log.info(
                "dmarc_arc_override",
                queue_id=info.queue_id,
                sealer=sealer.domain,
                instance=sealer.instance,
                disposition=found.disposition,
            )
            detail = f"{sealer.domain} i={sealer.instance}"
            return result.add_symbol(
                "ARC_TRUSTED_OVERRIDE", 0.0, "DMARC failure not enforced", [detail]
            ), OVERRIDE_TRUSTED_FORWARDER
        what = found.from_domain or (domains[0] if domains else "the From domain")
        if found.disposition == "reject" and self._reject_action == "reject":
            # RFC 7489 §6.7: reject during the SMTP transaction, 5.7.1 with the reason.
            reason = f"DMARC policy of {what} rejects this message: {found.reason}"
            return result.decide("reject", reason), ""
        # RFC 7489 §6.6.4 quarantine (or a reject we were told to quarantine): to Junk.
        reason = f"DMARC {found.disposition} policy of {what}: {found.reason}"
        return result.decide("folder", reason, folder=JUNK_FOLDER), ""

    def _trusted_arc(self, arc: ArcResult, found: DmarcResult, domains: list[str]) -> ArcSet | None:
        """The newest ARC set when it may override the DMARC failure (module docstring)."""
        newest = arc.newest
        if arc.result != "pass" or newest is None or not self._trusted_sealers:
            return None  # RFC 8617 §7.2.1: only a validated chain carries a sealer's word
        name = newest.domain
        while name and name not in self._trusted_sealers:
            name = name.partition(".")[2]  # a listed domain covers its subdomains
        if not name:
            return None
        said = newest.result_of("dmarc")
        if said is None or said.result != "pass":
            return None
        author = (found.from_domain or (domains[0] if domains else "")).rstrip(".").lower()
        vouched = said.properties.get("header.from", "").rstrip(".").lower()
        if vouched and vouched != author:
            return None  # the sealer vouched for another author domain
        return newest

    def _allowed(self, info: CleanupInput, domains: list[str]) -> str:
        """The ``dmarc_allow`` entry that matches the client or a sender domain, or ""."""
        if (
            info.client_ip
            and self._allow_networks
            and in_networks(info.client_ip, self._allow_networks)
        ):
            return info.client_ip
        candidates = [info.sender.rpartition("@")[2], *domains]
        if info.spf is not None:
            candidates.append(info.spf.domain)
        for name in candidates:
            name = name.rstrip(".").lower()
            while name:
                if name in self._allow_domains:
                    return name
                name = name.partition(".")[2]  # a listed domain covers its subdomains
        return ""


def evaluation(
    found: DmarcResult,
    dkim: Sequence[DkimResult],
    info: CleanupInput,
    result: CleanupResult,
    policy_override: str = "",
) -> DmarcEvaluation:
    """What the reports record of this message (RFC 7489 Appendix C ``record``): the
    disposition applied is the verdict's, the override why it differs from the policy."""
    verdict = result.verdict
    applied = "none"
    if verdict.action == "reject":
        applied = "reject"
    elif verdict.delivery_folder == JUNK_FOLDER and found.disposition != "none":
        applied = "quarantine"
    # local_policy (dmarc_allow) or trusted_forwarder (ARC) as _decide named it, else why
    # the applied disposition differs from the policy's.
    override = policy_override
    if not override and "sampled out" in found.reason:
        override = "sampled_out"  # RFC 7489 §6.6.4 pct
    elif not override and applied != found.disposition:
        override = "local_policy"
    rec = found.record
    return DmarcEvaluation(
        time=time.time(),
        source_ip=info.client_ip,
        header_from=found.from_domain,
        envelope_from=info.sender,
        spf_domain=info.spf.domain if info.spf is not None else "",
        spf_result=info.spf.result if info.spf is not None else "none",
        dkim=tuple(
            (d.properties.get("header.d", ""), d.properties.get("header.s", ""), d.result)
            for d in dkim
            if d.properties.get("header.d")
        ),
        dmarc_result=found.result,
        spf_aligned=found.spf_aligned,
        dkim_aligned=found.dkim_aligned,
        policy_domain=found.record_domain,
        p=(rec.policy or "none") if rec is not None else "",
        sp=(rec.subdomain_policy or rec.policy or "none") if rec is not None else "",
        pct=rec.percent if rec is not None else 100,
        adkim=rec.dkim_alignment if rec is not None else "r",
        aspf=rec.spf_alignment if rec is not None else "r",
        np=(rec.nonexistent_policy or "") if rec is not None else "",
        rua=tuple((u.uri, u.max_size_bytes) for u in rec.aggregate_report_uris) if rec else (),
        disposition=applied,
        override=override,
    )


def _spf_auth(info: CleanupInput) -> AuthResult:
    spf = info.spf
    if spf is None:
        return AuthResult(method="spf", result="none", reason="not checked")
    return AuthResult(
        method="spf",
        result=spf.result,
        reason="" if spf.result == "pass" else spf.reason,
        properties=dict(spf.properties),
    )


def authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2: the text before
    the first ";" less comments, white space and the optional version), lower case."""
    first = value.split(";", 1)[0]
    words = _COMMENT_OR_SPACE.sub(" ", first).split()
    return words[0].strip('"').rstrip(".").lower() if words else ""


def render_header(hostname: str, results: Sequence[AuthResult]) -> str:
    """The field value: ``HOSTNAME;`` then each resinfo on its own folded line (RFC 8601
    §2.2: ``authserv-id 1*( ";" methodspec [reasonspec] *propspec )``)."""
    parts = [hostname]
    for found in results:
        text = f"{found.method}={found.result}"
        if found.reason:
            text += f" reason={_quoted(found.reason)}"  # RFC 8601 §2.2 reasonspec
        for key, value in found.properties.items():
            text += f" {key}={_pvalue(value)}"  # RFC 8601 §2.3 propspec
        parts.append(text)
    return ";\r\n\t".join(parts)


def _pvalue(value: str) -> str:
    """RFC 8601 §2.3 pvalue: a token or an address as it is, anything else quoted."""
    if _TOKEN.fullmatch(value) or _ADDRESS.fullmatch(value):
        return value
    return _quoted(value)


def _quoted(text: str) -> str:
    """An RFC 5322 §3.2.4 quoted-string, on one line, printable characters only."""
    clean = "".join(c if c >= " " and c != "\x7f" else " " for c in text)[:200]
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True
