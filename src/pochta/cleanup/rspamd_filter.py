"""The Rspamd connector of cleanup: MX mail scanned by an external Rspamd (``[rspamd] url``).

A cleanup ``Filter`` after the auth filter and before pochta's own scanner and the DKIM
signer (server/mail.py). For mail from the smtp (MX) listener only; submissions, the pickup
of ``pochta sendmail`` mail, notices and LMTP are not scanned. The message as cleanup has
it (our ``Received:`` and ``Authentication-Results`` on top) is posted to Rspamd's
``/checkv2`` (``spam/rspamd.py``) with the envelope in request headers, and:

1. every ``X-Spam-Score``, ``X-Spam-Status`` and ``X-Spam-Symbols`` field the message came
   with is removed (a sender must not pre-answer the scan), and ours are prepended, as
   SpamAssassin writes them: ``X-Spam-Score: 7.20``, ``X-Spam-Status: Yes, score=7.20
   required=6.00``, ``X-Spam-Symbols: NAME(score), ...``;
2. each Rspamd symbol goes into the verdict with its name and score (plus
   ``RSPAMD_SCORE_ADJUST`` when Rspamd's total is not the sum of its symbols, as with a
   GTUBE pre-result, so the verdict's score is Rspamd's);
3. Rspamd's action decides: ``reject`` refuses the message (550 5.7.1 with Rspamd's
   ``smtp_message``), or delivers it to Junk when ``[rspamd] reject_action = "junk"``;
   ``soft reject`` and ``greylist`` refuse it for now (451 4.7.1); ``add header`` and
   ``rewrite subject`` deliver it to Junk (the subject is left as it is); ``no action``
   accepts it.

Rspamd unreachable, too slow (``[rspamd] timeout_seconds``) or answering nonsense:
``[rspamd] failure_action`` = ``accept`` (logged, the message goes on unscanned, marked with
the symbol ``RSPAMD_UNAVAILABLE`` of score 0) or ``tempfail`` (451 4.7.1, the client
retries; nothing is lost either way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.logs import get_logger
from pochta.mime.headers import split_message
from pochta.protocols.smtp.replies import Reply
from pochta.spam.rspamd import RspamdError, RspamdReply, request_headers

__all__ = [
    "JUNK_FOLDER",
    "SPAM_FIELDS",
    "RspamdFilter",
    "spam_fields",
]

log = get_logger("cleanup.rspamd")

JUNK_FOLDER = "Junk"
SPAM_FIELDS = ("X-Spam-Score", "X-Spam-Status", "X-Spam-Symbols")
UNAVAILABLE = Reply(451, "4.7.1", "Spam filter unavailable, try again later")
_SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})


class RspamdChecker(Protocol):
    """What the filter needs of a client (``spam/rspamd.RspamdClient``)."""

    async def check(self, content: bytes, headers: Sequence[tuple[str, str]]) -> RspamdReply: ...


class RspamdFilter:
    """A cleanup ``Filter``: see the module docstring."""

    def __init__(
        self,
        client: RspamdChecker,
        *,
        hostname: str,
        reject_action: str = "reject",
        failure_action: str = "accept",
    ) -> None:
        self._client = client
        self._hostname = hostname
        self._reject_action = reject_action
        self._failure_action = failure_action

    async def __call__(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        if not info.from_mx or info.submission:
            return result
        result = _remove_spam_fields(result)
        headers = request_headers(
            client_ip=info.client_ip,
            helo=info.helo,
            client_hostname=info.client_hostname,
            sender=result.sender,
            recipients=result.recipients,
            queue_id=info.queue_id,
            auth_user=info.auth_user,
            mta_name=self._hostname,
        )
        try:
            reply = await self._client.check(result.content, headers)
        except RspamdError as exc:
            log.warning(
                "rspamd_failed",
                queue_id=info.queue_id,
                reason=str(exc),
                failure_action=self._failure_action,
            )
            if self._failure_action == "tempfail":
                return UNAVAILABLE
            return result.add_symbol("RSPAMD_UNAVAILABLE", 0.0, str(exc)[:200])
        for symbol in reply.symbols:
            result = dataclasses.replace(result, verdict=result.verdict.with_symbol(symbol))
        gap = reply.score - sum(s.score for s in reply.symbols)
        if abs(gap) >= 0.005:
            result = result.add_symbol(
                "RSPAMD_SCORE_ADJUST",
                round(gap, 2),
                "Rspamd's total differs from its symbols' sum (a pre-result or a factor)",
            )
        for name, value in reversed(spam_fields(reply)):
            result = result.prepend_header(name, value)
        result = self._decide(result, reply)
        log.info(
            "rspamd",
            queue_id=info.queue_id,
            action=reply.action,
            score=round(reply.score, 2),
            required=round(reply.required_score, 2),
            symbols=",".join(s.name for s in reply.symbols)[:1000],
            verdict=result.verdict.action,
        )
        return result

    def _decide(self, result: CleanupResult, reply: RspamdReply) -> CleanupResult:
        what = f"Rspamd {reply.action}, score {reply.score:.2f}/{reply.required_score:.2f}"
        if reply.action == "reject":
            if self._reject_action == "junk":
                return result.decide("folder", what, folder=JUNK_FOLDER)
            return result.decide("reject", reply.smtp_message or "Spam message rejected")
        if reply.action in ("soft reject", "greylist"):
            return result.decide("tempfail", reply.smtp_message or "Try again later")
        if reply.action in ("add header", "rewrite subject"):
            return result.decide("folder", what, folder=JUNK_FOLDER)
        return result


def spam_fields(reply: RspamdReply) -> list[tuple[str, str]]:
    """The X-Spam-* fields of a scan, SpamAssassin's way (module docstring)."""
    spam = reply.action in _SPAM_ACTIONS or reply.score >= reply.required_score > 0
    symbols = sorted(reply.symbols, key=lambda s: (-abs(s.score), s.name))
    listed = ",\r\n\t".join(f"{_token(s.name)}({s.score:.2f})" for s in symbols[:100])
    return [
        ("X-Spam-Score", f"{reply.score:.2f}"),
        (
            "X-Spam-Status",
            f"{'Yes' if spam else 'No'}, score={reply.score:.2f} "
            f"required={reply.required_score:.2f}",
        ),
        ("X-Spam-Symbols", listed or "none"),
    ]


def _token(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "_-.") else "_" for c in name)


def _remove_spam_fields(result: CleanupResult) -> CleanupResult:
    head = split_message(result.content)
    names = {n.lower() for n in SPAM_FIELDS}
    kept = tuple(h for h in head.headers if h.key not in names)
    if len(kept) == len(head.headers):
        return result
    return dataclasses.replace(result, content=dataclasses.replace(head, headers=kept).join())
