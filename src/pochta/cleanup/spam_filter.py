"""The spam filter of cleanup: ``spam/scanner.py`` adapted to the pipeline.

Which mail is scanned: mail from the smtp (MX) listener (``CleanupInput.from_mx``) when
``[spam] enabled``; never submissions, authenticated clients, the pickup of ``pochta
sendmail`` mail, notices or LMTP. It runs after the auth filter (whose SPF/DKIM/DMARC/ARC
results the checks read in the verdict) and before the DKIM signer (``server/mail.py``).
For one message:

1. every ``X-Spam*`` field that came with it is removed (a forgery: only we say what our
   filter found; ``scanner.is_spam_field``);
2. the scanner runs the checks (``ScanInput`` from the result and the input) and its
   symbols go into the verdict;
3. ``X-Spam-Score``, ``X-Spam-Status`` and ``X-Spam-Symbols`` are prepended (every scanned
   message gets them, spam or not);
4. the action by score (``spam/scanner.action_for``) becomes the verdict's:

   - ``junk``: ``folder`` Junk (local delivery files it there, ``deliver/mailbox.py``);
   - ``quarantine``: ``quarantine``; the door keeps the message in the quarantine instead
     of queueing it and the client gets 250 (``cleanup/door.py``, ``spam/quarantine.py``);
   - ``reject``: ``reject``; cleanup answers ``550 5.7.1 Spam message rejected`` at the end
     of DATA (``pipeline.verdict_refusal``);
   - ``greylist``: the greylisting gate is asked (``admit``); a triplet it does not know
     yet is ``tempfail``: ``451 4.7.1 Greylisted, try again later`` (RFC 6647 §2.3,
     content-level greylisting). Without a gate (greylisting off) the message is accepted
     with its headers.

A decision an earlier filter made is never weakened: a message already refused or dropped
is not scanned, and one already bound for Junk (DMARC quarantine) stays there unless the
score asks for more (quarantine, reject). Every reject is logged here and every quarantine
by the door, with the queue id, the score and the symbols.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.logs import get_logger
from pochta.mime.headers import split_message
from pochta.protocols.smtp.replies import Reply
from pochta.spam.check import ScanInput
from pochta.spam.message import ScanMessage
from pochta.spam.scanner import Scanner, ScanResult, is_spam_field, spam_headers, symbols_text

__all__ = ["GREYLISTED", "JUNK_FOLDER", "SPAM_REJECTED", "GreylistGate", "SpamFilter"]

log = get_logger("cleanup.spam")

JUNK_FOLDER = "Junk"
SPAM_REJECTED = "Spam message rejected"  # Rspamd's text for its reject action
GREYLISTED = "Greylisted, try again later"  # RFC 6647 §2.3: greylisting after DATA (451 4.7.1)

_SETTLED = frozenset({"reject", "tempfail", "discard"})  # earlier filters' final refusals


class GreylistGate(Protocol):
    """The greylisting gate (``spam/greylist.py``): whether the triplet may pass now."""

    async def admit(self, client_ip: str, sender: str, recipients: Sequence[str]) -> bool: ...


class SpamFilter:
    """A cleanup ``Filter``: see the module docstring."""

    def __init__(
        self,
        scanner: Scanner,
        *,
        enabled: bool = True,
        greylist: GreylistGate | None = None,
    ) -> None:
        self.scanner = scanner
        self._enabled = enabled
        self._greylist = greylist

    async def __call__(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        if not self._enabled or not info.from_mx or info.submission or info.auth_user:
            return result
        if result.verdict.action in _SETTLED:
            return result
        result = _remove_forged(result, info)
        scan = ScanInput(
            message=ScanMessage(result.content),
            sender=result.sender,
            recipients=result.recipients,
            client_ip=info.client_ip,
            client_hostname=info.client_hostname,
            helo=info.helo,
            auth_user=info.auth_user,
            from_mx=info.from_mx,
            queue_id=info.queue_id,
            verdict=result.verdict,
        )
        found = await self.scanner.scan(scan)
        verdict = result.verdict
        for symbol in found.symbols:
            verdict = verdict.with_symbol(symbol)
        result = dataclasses.replace(result, verdict=verdict)
        for name, value in reversed(spam_headers(found)):
            result = result.prepend_header(name, value)
        log.info(
            "spam",
            queue_id=info.queue_id,
            score=f"{found.score:.2f}",
            action=found.action,
            symbols=symbols_text(found.symbols),
        )
        return await self._act(result, info, found)

    async def _act(
        self, result: CleanupResult, info: CleanupInput, found: ScanResult
    ) -> CleanupResult:
        why = f"spam score {found.score:.2f}"
        if found.action == "reject":
            log.info(
                "spam_rejected",
                queue_id=info.queue_id,
                client=info.client_ip,
                sender=info.sender or "<>",
                score=f"{found.score:.2f}",
                symbols=symbols_text(found.symbols),
            )
            return result.decide("reject", SPAM_REJECTED)
        if found.action == "quarantine":
            return result.decide("quarantine", why)  # stored by the door (cleanup/door.py)
        if found.action == "junk":
            if result.verdict.action == "folder":
                return result  # already bound for a folder (DMARC quarantine: Junk)
            return result.decide("folder", why, folder=JUNK_FOLDER)
        if found.action == "greylist" and self._greylist is not None:
            admitted = await self._greylist.admit(info.client_ip, info.sender, info.recipients)
            if not admitted:
                log.info(
                    "greylisted",
                    queue_id=info.queue_id,
                    client=info.client_ip,
                    sender=info.sender or "<>",
                    score=f"{found.score:.2f}",
                )
                return result.decide("tempfail", GREYLISTED)
        return result


def _remove_forged(result: CleanupResult, info: CleanupInput) -> CleanupResult:
    """The result without the X-Spam* fields that came with the message."""
    head = split_message(result.content)
    kept = tuple(h for h in head.headers if not is_spam_field(h.key))
    if len(kept) == len(head.headers):
        return result
    log.info("spam_fields_removed", queue_id=info.queue_id, fields=len(head.headers) - len(kept))
    content = dataclasses.replace(head, headers=kept).join()
    return dataclasses.replace(result, content=content)
