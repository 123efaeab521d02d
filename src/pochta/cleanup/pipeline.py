"""cleanup: the only way into the queue (Postfix cleanup(8)).

Every message, from the MX, submission, LMTP or the sendmail command, passes through
:meth:`Cleanup.process` before it is queued. The steps, in order:

1. **Split** the content into header fields and body, byte-exact
   (:mod:`pochta.mime.headers`). A header block over 1 MiB or one field over 64 KiB:
   ``550 5.6.0 Message header too large``.
2. **Hop count**: more than 100 ``Received:`` fields with ours counted is a mail loop:
   ``554 5.4.6 Too many hops`` (RFC 5321 §6.3 "at least 100").
3. **Canonical mapping** of the envelope (:mod:`.canonical`): sender_canonical_maps /
   recipient_canonical_maps, then canonical_maps. Recipients stay one-to-one with the input
   (index i is RCPT i) so DSN ORCPT/NOTIFY parameters stay attached; the queue dedupes.
4. **Header addresses** get the same mapping, but only for submissions: Postfix rewrites
   headers only for local_header_rewrite_clients and leaves mail from remote clients alone
   (ADDRESS_REWRITING_README, remote_header_rewrite_domain empty).
5. **Missing headers**, submissions only (RFC 6409 §8.2, §8.3; never for MX traffic):
   ``Message-ID:`` and ``Date:`` are appended to the header block when absent.
6. **Received:** is prepended (:mod:`.received`; RFC 5321 §4.4 "at the beginning").
7. **Filters** (header_checks and body_checks first, :mod:`.content_checks`, when
   ``[tables]`` names them; then mail authentication, spam scoring) run last, in order,
   each an async callable that returns a new :class:`CleanupResult` or a :class:`Reply`
   that refuses the message. A filter that raises refuses it temporarily (451 4.3.0), like Postfix's
   milter_default_action = tempfail. Filters pass results to each other in the result's
   :class:`~pochta.cleanup.verdict.Verdict` (``add_auth_result``, ``add_symbol``,
   ``decide``); a verdict whose action is ``reject`` or ``tempfail`` refuses the message
   (550 5.7.1 / 451 4.7.1 with the verdict's reason) once the filters have run.

The body is never decoded or re-encoded. When the header block ended without an empty line
(a non-header line started the body) and we add fields, an empty line is written between
headers and body so the result is well-formed RFC 5322 (§2.1).

Left out (Postfix does them): Resent-* variants of the added fields, adding a missing
``From:``, qualifying addresses without a domain, masquerade_domains.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pochta.cleanup.canonical import CanonicalMaps, rewrite_address_list
from pochta.cleanup.content_checks import ContentChecks, open_checks
from pochta.cleanup.received import date_value, message_id_value, received_value
from pochta.cleanup.verdict import Action, AuthResult, Symbol, Verdict
from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.mailauth.spf import SpfResult
from pochta.mime.headers import (
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_FIELD_BYTES,
    HeaderField,
    HeaderLimitError,
    SplitMessage,
    detect_newline,
    make_field,
    split_message,
)
from pochta.protocols.smtp.replies import TEMPORARY_FAILURE, Reply
from pochta.tables.configured import ConfiguredTables

__all__ = [
    "HEADER_TOO_LARGE",
    "MAX_HOPS",
    "TOO_MANY_HOPS",
    "Cleanup",
    "CleanupInput",
    "CleanupResult",
    "Filter",
    "Verdict",
    "verdict_refusal",
]

log = get_logger("cleanup")

MAX_HOPS = 100
"""Most ``Received:`` fields a message may carry, ours included (RFC 5321 §6.3)."""

HEADER_TOO_LARGE = Reply(550, "5.6.0", "Message header too large")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops; mail loop?")  # RFC 3463 X.4.6


@dataclass(frozen=True, slots=True)
class CleanupInput:
    """What the receiving side knows about a message besides its content."""

    sender: str  # envelope MAIL FROM, "" for the null sender
    recipients: Sequence[str]  # envelope RCPT TO, in order
    client_ip: str = ""  # "" for mail made on this host (sendmail command, bounces)
    client_hostname: str = ""  # verified reverse DNS name, "" when unknown
    helo: str = ""
    protocol: str = "ESMTP"  # RFC 3848 / RFC 6531 §3.7.3 "with" keyword: ESMTPSA, LMTP, ...
    tls_version: str = ""  # "TLSv1.3", "" without TLS
    tls_cipher: str = ""
    auth_user: str = ""  # the SASL login; never written into the message
    queue_id: str = ""
    submission: bool = False  # from an authenticated submission client (or local command)
    local_uid: int | None = None  # the uid of a local ``pochta sendmail`` user (pickup)
    from_mx: bool = False  # from the smtp (MX) listener: inbound checks apply (auth_filter)
    spf: SpfResult | None = None  # SPF of MAIL FROM/HELO, from the policy (spf_policy.py)
    arrival: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """The message as it will be queued, or the reasons it will not be.

    ``recipients[i]`` is the (mapped) ``CleanupInput.recipients[i]``. ``headers_added``
    lists each field cleanup or a filter added, as written (``"Received: from ..."``, folded,
    without the final line ending). ``problems`` holds the refusals; the first one is the
    reply to send (:attr:`reply`), and a message with problems is not queued.
    """

    content: bytes
    sender: str
    recipients: list[str]
    headers_added: list[str] = field(default_factory=list)
    problems: list[Reply] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)

    @property
    def accepted(self) -> bool:
        return not self.problems

    @property
    def reply(self) -> Reply | None:
        return self.problems[0] if self.problems else None

    def prepend_header(self, name: str, value: str) -> CleanupResult:
        """A copy with ``name: value`` added at the top (the place for trace fields:
        Authentication-Results, RFC 8601 §5; DKIM-Signature, ARC-*, X-Spam-*)."""
        new = make_field(name, value, _newline_of(self.content))
        return dataclasses.replace(
            self,
            content=new.raw + self.content,
            headers_added=[*self.headers_added, _field_text(new)],
        )

    def add_auth_result(
        self, method: str, result: str, reason: str = "", **properties: str
    ) -> CleanupResult:
        """A copy whose verdict has one more authentication result (RFC 8601 §2.2);
        ``properties`` as ``header_d="example.org"`` become ``header.d``."""
        props = {key.replace("_", ".", 1): value for key, value in properties.items()}
        found = AuthResult(method=method, result=result, reason=reason, properties=props)
        return dataclasses.replace(self, verdict=self.verdict.with_auth(found))

    def add_symbol(
        self, name: str, score: float = 0.0, description: str = "", options: Sequence[str] = ()
    ) -> CleanupResult:
        """A copy whose verdict has the symbol ``name`` with ``score`` (Rspamd's symbol)."""
        symbol = Symbol(name=name, score=score, description=description, options=tuple(options))
        return dataclasses.replace(self, verdict=self.verdict.with_symbol(symbol))

    def decide(self, action: Action, reason: str = "", folder: str = "") -> CleanupResult:
        """A copy with the verdict's final action set (``reject``/``tempfail`` refuse the
        message after the filters; ``folder`` needs ``folder``)."""
        verdict = self.verdict.with_action(action, reason, folder)
        return dataclasses.replace(self, verdict=verdict)


Filter = Callable[[CleanupResult, CleanupInput], Awaitable[CleanupResult | Reply]]
"""A hook run after the built-in steps: a new result, or a 4xx/5xx Reply to refuse."""


class Cleanup:
    """Postfix cleanup(8) for pochta; see the module docstring for the steps."""

    def __init__(
        self,
        settings: Settings,
        tables: ConfiguredTables,
        *,
        filters: Sequence[Filter] = (),
        hide_submission_client: bool = False,
    ) -> None:
        self.filters: list[Filter] = list(filters)
        header_checks = open_checks(settings.tables.header_checks)
        body_checks = open_checks(settings.tables.body_checks)
        if header_checks is not None or body_checks is not None:
            # First, as Postfix's cleanup(8) inspects the message as it reads it: before
            # the milters, the auth results and the signature (content_checks.py).
            self.filters.insert(0, ContentChecks(header_checks, body_checks))
        self._hostname = settings.server.hostname.rstrip(".").lower()
        self._hide_submission_client = hide_submission_client
        # Public: the SMTP sessions rewrite RCPT TO with the same maps (cleanup/door.py).
        self.canonical = CanonicalMaps.from_settings(settings, tables)

    async def process(self, content: bytes, info: CleanupInput) -> CleanupResult:
        """Run every step (see the module docstring) and the filters."""
        result = self.prepare(content, info)
        held = ""  # the reason a filter (header_checks HOLD) gave for holding the message
        if result.accepted:
            for hook in self.filters:
                try:
                    outcome = await hook(result, info)
                except Exception:
                    log.exception("cleanup_filter_failed", queue_id=info.queue_id)
                    outcome = TEMPORARY_FAILURE
                if isinstance(outcome, Reply):
                    result = dataclasses.replace(result, problems=[*result.problems, outcome])
                    break
                result = outcome
                if result.verdict.action == "hold":
                    held = held or result.verdict.reason or "held"
            if held and result.verdict.action in ("accept", "add_header", "folder"):
                # A later filter's Junk folder or header does not release a HOLD: the
                # message waits in hold/ and goes to that folder once released.
                result = result.decide("hold", held, folder=result.verdict.folder)
            refusal = verdict_refusal(result.verdict)
            if result.accepted and refusal is not None:
                result = dataclasses.replace(result, problems=[refusal])
        self._log(result, info)
        return result

    def prepare(self, content: bytes, info: CleanupInput) -> CleanupResult:
        """The built-in steps 1-6, without the filters (synchronous)."""
        sender = self.canonical.sender(info.sender)
        recipients = [self.canonical.recipient(r) for r in info.recipients]
        refused = CleanupResult(content, sender, recipients)
        try:
            message = split_message(
                content,
                max_block_bytes=MAX_HEADER_BLOCK_BYTES,
                max_field_bytes=MAX_HEADER_FIELD_BYTES,
            )
        except HeaderLimitError as exc:
            log.info("cleanup_header_too_large", queue_id=info.queue_id, reason=str(exc))
            return dataclasses.replace(refused, problems=[HEADER_TOO_LARGE])
        # RFC 5321 §6.3: count Received fields to detect loops; ours will be one more.
        if message.count("received") + 1 > MAX_HOPS:
            return dataclasses.replace(refused, problems=[TOO_MANY_HOPS])
        newline = detect_newline(message)
        headers = list(message.headers)
        if info.submission and not self.canonical.empty:
            headers = [self._rewrite_field(h) for h in headers]
        appended: list[HeaderField] = []
        if info.submission:
            # RFC 6409 §8.3 / RFC 5322 §3.6.4; §8.2 / RFC 5322 §3.6.1.
            if not message.has("message-id"):
                value = message_id_value(self._hostname, info.arrival, info.queue_id)
                appended.append(make_field("Message-ID", value, newline))
            if not message.has("date"):
                appended.append(make_field("Date", date_value(info.arrival), newline))
        received = make_field(
            "Received",
            received_value(
                hostname=self._hostname,
                arrival=info.arrival,
                protocol=info.protocol,
                queue_id=info.queue_id,
                helo=info.helo,
                client_ip=info.client_ip,
                client_hostname=info.client_hostname,
                tls_version=info.tls_version,
                tls_cipher=info.tls_cipher,
                local_uid=info.local_uid,
                recipients=list(info.recipients),
                hide_client=info.submission and self._hide_submission_client,
                newline=newline.decode("ascii"),
            ),
            newline,
        )
        rebuilt = SplitMessage((received, *headers, *appended), message.separator, message.body)
        return CleanupResult(
            content=_assemble(rebuilt, newline),
            sender=sender,
            recipients=recipients,
            headers_added=[_field_text(f) for f in (received, *appended)],
        )

    def _rewrite_field(self, field_: HeaderField) -> HeaderField:
        """Canonical mapping of the addresses in one header field; untouched bytes stay."""
        mapping = self.canonical.for_field(field_.key)
        if mapping is None:
            return field_
        raw = field_.raw.decode("utf-8", "surrogateescape")
        colon = raw.index(":") + 1
        new_value = rewrite_address_list(raw[colon:], mapping)
        if new_value is None:
            return field_
        return HeaderField(
            (raw[:colon] + new_value).encode("utf-8", "surrogateescape"), field_.name
        )

    def _log(self, result: CleanupResult, info: CleanupInput) -> None:
        if result.reply is not None:
            log.info("cleanup_refused", queue_id=info.queue_id, reply=str(result.reply))
            return
        message_id = ""
        # The header block is at most 1 MiB plus what filters prepended: no body copy.
        head = split_message(result.content[: 2 * MAX_HEADER_BLOCK_BYTES])
        for header in head.get_all("message-id")[:1]:
            message_id = header.text[:200]
        log.info(
            "cleanup",
            queue_id=info.queue_id,
            message_id=message_id,
            sender=result.sender,
            nrcpt=len(result.recipients),
            size=len(result.content),
            **_verdict_log(result.verdict),
        )


def _verdict_log(verdict: Verdict) -> dict[str, object]:
    """The verdict in the cleanup log line, when a filter made one."""
    if verdict == Verdict():
        return {}
    found: dict[str, object] = {"action": verdict.action, "score": round(verdict.score, 2)}
    if verdict.folder:
        found["folder"] = verdict.folder
    return found


def verdict_refusal(verdict: Verdict) -> Reply | None:
    """The reply for a verdict that refuses the message: ``reject`` is 550 5.7.1,
    ``tempfail`` 451 4.7.1 (RFC 3463 §3.8: delivery not authorized / security or policy
    status), with the verdict's reason as text."""
    if verdict.action == "reject":
        return Reply(550, "5.7.1", _reply_text(verdict.reason) or "Message rejected by policy")
    if verdict.action == "tempfail":
        return Reply(451, "4.7.1", _reply_text(verdict.reason) or "Try again later")
    return None


def _reply_text(reason: str) -> str:
    """A reason made safe as one reply line: printable ASCII, at most 200 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in reason)[:200].strip()


def _assemble(message: SplitMessage, newline: bytes) -> bytes:
    """Join the fields and body; every field ends its line, and headers and body are
    separated by an empty line when the original block ended without one."""
    parts: list[bytes] = []
    for header in message.headers:
        parts.append(header.raw if header.raw.endswith(b"\n") else header.raw + newline)
    separator = message.separator
    if not separator and message.body:
        separator = newline  # RFC 5322 §2.1: an empty line separates header and body
    return b"".join(parts) + separator + message.body


def _newline_of(content: bytes) -> bytes:
    """The line ending of the first line of ``content``; CRLF when it has none."""
    newline = content.find(b"\n")
    return b"\n" if newline >= 0 and content[newline - 1 : newline] != b"\r" else b"\r\n"


def _field_text(field_: HeaderField) -> str:
    text = field_.raw.decode("utf-8", "surrogateescape")
    return text.removesuffix("\n").removesuffix("\r")
