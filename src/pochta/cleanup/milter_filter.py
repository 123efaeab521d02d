"""The milter connector of cleanup: the message through each of ``[milter] servers`` in order.

A cleanup ``Filter`` after the auth filter and the Rspamd connector, before pochta's own
scanner and the DKIM signer (server/mail.py). It runs on mail that came over SMTP (MX and
submission, Postfix's ``smtpd_milters``); mail made on this host (pickup, notices) and LMTP
are left alone (Postfix's ``non_smtpd_milters`` is empty by default). Each milter
(``spam/milter.py``, one connection per message) sees the message as the milter before it
left it; its end-of-message changes are applied before the next one runs:

- ADDHEADER appends a field to the header block, INSHEADER inserts one before the field at
  its index (0: the top), CHGHEADER replaces the index-th (from 1) field of that name or
  deletes it when the value is empty (and appends it when there is no such field, as
  Sendmail does); REPLBODY replaces the body;
- REJECT refuses the message with 550 5.7.1, TEMPFAIL with 451 4.7.1, REPLYCODE with the
  milter's own reply when it is a valid 4xx or 5xx one; DISCARD accepts and drops it (the
  verdict's ``discard``; the milters after it are not asked); QUARANTINE delivers it to the
  Junk folder (pochta has no hold queue for quarantine yet);
- a milter that cannot be reached, runs out of ``[milter] timeout_seconds`` or breaks the
  protocol (a bad change, a REPLYCODE that is not 4xx/5xx) gets ``[milter] default_action``:
  ``tempfail`` (451 4.7.1, Postfix's default) or ``accept`` (logged; the message goes on
  as that milter got it).

Envelope changes (ADDRCPT, DELRCPT, CHGFROM) are not offered in the option negotiation:
after the SMTP transaction has ended the recipients the client was told about are fixed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.mime.headers import HeaderField, SplitMessage, detect_newline, make_field, split_message
from pochta.protocols.milter.constants import Protocol
from pochta.protocols.milter.events import AddHeader, ChangeHeader, InsertHeader
from pochta.protocols.smtp.replies import Reply
from pochta.spam.milter import (
    MilterAddress,
    MilterError,
    MilterMessage,
    MilterOutcome,
    ask_milter,
    parse_address,
)

__all__ = ["JUNK_FOLDER", "MilterFilter", "apply_changes", "milter_reply"]

log = get_logger("cleanup.milter")

JUNK_FOLDER = "Junk"
REJECTED = Reply(550, "5.7.1", "Message content rejected")
TEMPFAILED = Reply(451, "4.7.1", "Service unavailable, try again later")
UNAVAILABLE = Reply(451, "4.7.1", "Mail filter unavailable, try again later")
# RFC 5321 §4.2: Reply-code SP / "-" text; RFC 3463 §2: class.subject.detail.
_REPLY_LINE = re.compile(r"([45][0-5][0-9])([ -])(?:([45]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$))?(.*)")


class MilterFilter:
    """A cleanup ``Filter``: see the module docstring."""

    def __init__(
        self,
        addresses: Sequence[MilterAddress],
        *,
        hostname: str,
        timeout_seconds: float = 30.0,
        default_action: str = "tempfail",
    ) -> None:
        self.addresses = list(addresses)
        self._hostname = hostname
        self._timeout = timeout_seconds
        self._default_action = default_action

    @classmethod
    def from_settings(cls, settings: Settings) -> MilterFilter:
        """The filter of ``[milter]``; ValueError names a bad address."""
        return cls(
            [parse_address(a) for a in settings.milter.servers],
            hostname=settings.server.hostname,
            timeout_seconds=settings.milter.timeout_seconds,
            default_action=settings.milter.default_action,
        )

    async def __call__(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        if not info.client_ip or info.protocol.upper().startswith("LMTP"):
            return result
        for address in self.addresses:
            try:
                message = _milter_message(result, info, self._hostname)
                outcome = await ask_milter(address, message, timeout_seconds=self._timeout)
                answer = self._apply(result, outcome, address, info)
            except (MilterError, ValueError) as exc:
                log.warning(
                    "milter_failed",
                    queue_id=info.queue_id,
                    milter=str(address),
                    reason=str(exc),
                    default_action=self._default_action,
                )
                if self._default_action == "tempfail":
                    return UNAVAILABLE
                continue
            if isinstance(answer, Reply):
                log.info(
                    "milter_refused", queue_id=info.queue_id, milter=str(address), reply=str(answer)
                )
                return answer
            result = answer
            log.info(
                "milter",
                queue_id=info.queue_id,
                milter=str(address),
                decision=outcome.decision,
                changes=len(outcome.changes) + (outcome.body is not None),
                quarantine=outcome.quarantine or "",
            )
            if result.verdict.action == "discard":
                break
        return result

    def _apply(
        self,
        result: CleanupResult,
        outcome: MilterOutcome,
        address: MilterAddress,
        info: CleanupInput,
    ) -> CleanupResult | Reply:
        if outcome.decision == "reject":
            return REJECTED
        if outcome.decision == "tempfail":
            return TEMPFAILED
        if outcome.decision == "reply":
            return milter_reply(outcome.reply)
        result = apply_changes(result, outcome)
        if outcome.decision == "discard":
            return result.decide("discard", f"discarded by milter {address}")
        if outcome.quarantine is not None:
            reason = f"quarantined by milter {address}: {outcome.quarantine}"[:300]
            log.info("milter_quarantine", queue_id=info.queue_id, reason=reason)
            return result.decide("folder", reason, folder=JUNK_FOLDER)
        return result


def milter_reply(text: str) -> Reply:
    """A REPLYCODE text as a Reply: one or more ``NNN[-| ][X.Y.Z ]text`` lines with the same
    4xx or 5xx code (RFC 5321 §4.2.1); ValueError otherwise (the milter broke the rules)."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    code = ""
    enhanced = ""
    texts: list[str] = []
    for number, line in enumerate(lines):
        found = _REPLY_LINE.fullmatch(line)
        if found is None:
            raise ValueError(f"milter REPLYCODE {line[:80]!r} is not a 4xx or 5xx reply")
        last = number == len(lines) - 1
        if (found.group(2) == " ") != last or (code and found.group(1) != code):
            raise ValueError(f"milter REPLYCODE {text[:80]!r}: inconsistent multi-line reply")
        code = found.group(1)
        enhanced = enhanced or (found.group(3) or "")
        piece = "".join(c if " " <= c <= "~" else "?" for c in found.group(4))
        texts.append(piece[:500])
    if enhanced and enhanced[0] != code[0]:
        raise ValueError(f"milter REPLYCODE {text[:80]!r}: {enhanced} does not match {code}")
    if not enhanced:
        enhanced = "4.7.1" if code[0] == "4" else "5.7.1"
    return Reply(int(code), enhanced, "\n".join(texts) or "Rejected by mail filter")


def apply_changes(result: CleanupResult, outcome: MilterOutcome) -> CleanupResult:
    """The result with the milter's header changes and new body (module docstring);
    ValueError for a change that would make the header invalid."""
    if not outcome.changes and outcome.body is None:
        return result
    message = split_message(result.content)
    newline = detect_newline(message)
    leading = bool(outcome.protocol & Protocol.HDR_LEADSPC)
    headers = list(message.headers)
    added: list[str] = []
    for change in outcome.changes:
        new = _field(change.name, change.value, newline, leading) if change.value else None
        if isinstance(change, AddHeader):
            if new is None:
                new = _field(change.name, "", newline, leading)
            headers.append(new)
        elif isinstance(change, InsertHeader):
            if new is None:
                new = _field(change.name, "", newline, leading)
            headers.insert(min(change.index, len(headers)), new)
        elif isinstance(change, ChangeHeader):
            _change(headers, change, new)
        if new is not None:
            added.append(new.raw.decode("utf-8", "surrogateescape").rstrip("\r\n"))
    body = message.body if outcome.body is None else outcome.body
    separator = message.separator or (newline if body else b"")
    content = SplitMessage(tuple(_ended(h, newline) for h in headers), separator, body).join()
    return dataclasses.replace(
        result, content=content, headers_added=[*result.headers_added, *added]
    )


def _change(headers: list[HeaderField], change: ChangeHeader, new: HeaderField | None) -> None:
    """SMFIR_CHGHEADER: index 0 counts as 1 (libmilter smfi_chgheader)."""
    wanted = max(change.index, 1)
    seen = 0
    for position, field_ in enumerate(headers):
        if field_.key == change.name.lower():
            seen += 1
            if seen == wanted:
                if new is None:
                    del headers[position]
                else:
                    headers[position] = new
                return
    if new is not None:
        headers.append(new)


def _field(name: str, value: str, newline: bytes, leading: bool) -> HeaderField:
    """A field from a milter's name and value (folds as LF or CRLF); with HDR_LEADSPC the
    value brings its own space after the colon."""
    text = value.replace("\r\n", "\n")
    if leading and text[:1] == " ":
        text = text[1:]
    return make_field(name, text, newline)


def _ended(field_: HeaderField, newline: bytes) -> HeaderField:
    if field_.raw.endswith(b"\n"):
        return field_
    return HeaderField(field_.raw + newline, field_.name)


def _milter_message(result: CleanupResult, info: CleanupInput, hostname: str) -> MilterMessage:
    message = split_message(result.content)
    names: list[tuple[str, str]] = []
    spaces: list[str] = []
    for field_ in message.headers:
        value = field_.value.decode("utf-8", "surrogateescape")
        value = value.removesuffix("\n").removesuffix("\r").replace("\r\n", "\n")
        stripped = value.lstrip(" \t")
        spaces.append(value[: len(value) - len(stripped)])
        names.append((field_.name, stripped))
    return MilterMessage(
        headers=names,
        body=message.body,
        sender=result.sender,
        recipients=list(result.recipients),
        hostname=hostname,
        client_ip=info.client_ip,
        client_hostname=info.client_hostname,
        helo=info.helo,
        queue_id=info.queue_id,
        auth_user=info.auth_user,
        leading_spaces=spaces,
    )
