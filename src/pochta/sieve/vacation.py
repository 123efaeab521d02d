"""Vacation's rules and its reply (RFC 5230, RFC 6131, RFC 3834), pure.

The interpreter (``extensions/vacation.py``) asks :func:`may_answer` whether the message is
one that may be answered at all, and builds the ``Vacation`` action with :func:`reply_subject`
and :func:`reply_references`. The delivery side checks the once-per-period state and turns
the action into a message with :func:`build_reply`.

Who is never answered (each rule cites its source on its line):

- the null sender ``<>`` and the user's own addresses;
- system senders: ``MAILER-DAEMON``, ``LISTSERV``, ``majordomo``, ``owner-*``, ``*-request``,
  ``*-owner``;
- messages marked automatic: ``Auto-Submitted`` other than ``no``, ``Precedence: bulk``,
  ``list`` or ``junk``, any ``List-*`` field, Microsoft's ``X-Auto-Response-Suppress`` with
  ``All`` or ``OOF``;
- messages that do not name one of the user's addresses in To, Cc, Bcc or their Resent-
  forms (the user got them by Bcc, an alias or a list).
"""

from __future__ import annotations

import hashlib
import quopri
from collections.abc import Collection, Iterable
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

from pochta.mime.addresses import parse_address_list
from pochta.mime.base_subject import decode_encoded_words
from pochta.mime.headers import SplitMessage, split_message
from pochta.sieve.actions import Vacation
from pochta.sieve.context import Envelope

__all__ = [
    "build_reply",
    "default_handle",
    "period_seconds",
    "may_answer",
    "normal_address",
    "reply_references",
    "reply_subject",
]

# RFC 5230 §4.5: the fields that say the message was sent to the user.
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
# RFC 5230 §4.6, RFC 3834 §2: list and system addresses that must not be answered.
_SYSTEM_LOCALPARTS = frozenset({"mailer-daemon", "listserv", "majordomo"})
# RFC 2369 and RFC 2919: a List- field marks list mail.
_LIST_FIELDS = frozenset(
    {
        "list-id",
        "list-help",
        "list-subscribe",
        "list-unsubscribe",
        "list-post",
        "list-owner",
        "list-archive",
    }
)


def normal_address(address: str) -> str:
    """An address for comparison: angle brackets dropped, domain and local part lower-cased,
    a ``+detail`` (RFC 5233) dropped, so ``User+x@Example.com`` is ``user@example.com``."""
    address = address.strip().strip("<>").strip()
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    local = local.split("+", 1)[0]
    return f"{local.lower()}@{domain.lower()}" if domain else local.lower()


def _field_addresses(message: SplitMessage, names: Iterable[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for field in message.get_all(name):
            for entry in parse_address_list(field.text):
                if entry.mailbox and entry.domain:
                    out.append(f"{entry.mailbox}@{entry.domain}")
    return out


def may_answer(message: bytes, envelope: Envelope, addresses: Collection[str]) -> str | None:
    """None when vacation may answer ``message``; else why not, in words for the log.
    ``addresses`` are the ``:addresses`` of the command; the envelope recipient and the
    original recipient count as the user's own too."""
    sender = envelope.sender.strip().strip("<>")
    if not sender:
        return "the sender is <> (RFC 5230 §4.6, RFC 3834 §2)"
    ours = {
        normal_address(a)
        for a in (envelope.recipient, envelope.original_recipient, *addresses)
        if a.strip()
    }
    if normal_address(sender) in ours:
        return "the sender is the user's own address (RFC 5230 §4.6)"
    local = sender.rpartition("@")[0].lower() or sender.lower()
    # RFC 5230 §4.6: MAILER-DAEMON, owner-*, *-request; RFC 3834 §2 list/system addresses.
    if (
        local in _SYSTEM_LOCALPARTS
        or local.startswith("owner-")
        or local.endswith(("-request", "-owner"))
    ):
        return f"the sender {sender} is a system or list address (RFC 5230 §4.6)"
    header = split_message(message)
    for field in header.get_all("auto-submitted"):
        # RFC 3834 §2, §5: anything but "no" is automatic mail.
        if field.text.split(";", 1)[0].strip().lower() != "no":
            return f"Auto-Submitted: {field.text} (RFC 3834 §2)"
    for field in header.get_all("precedence"):
        # RFC 3834 §2: Precedence bulk, list or junk is not answered.
        if field.text.lower() in ("bulk", "list", "junk"):
            return f"Precedence: {field.text} (RFC 3834 §2)"
    for field in header.headers:
        if field.key in _LIST_FIELDS:  # RFC 5230 §4.6, RFC 2369, RFC 2919
            return f"{field.name} marks list mail (RFC 5230 §4.6)"
    for field in header.get_all("x-auto-response-suppress"):
        # Microsoft's marker (MS-OXCMAIL 2.2.3.2.14): All or OOF forbids an out-of-office.
        values = {v.strip().lower() for v in field.text.split(",")}
        if values & {"all", "oof"}:
            return f"X-Auto-Response-Suppress: {field.text}"
    named = {normal_address(a) for a in _field_addresses(header, _RECIPIENT_FIELDS)}
    if not named & ours:
        # RFC 5230 §4.5: only answer mail that names the user in a recipient field.
        return "none of the user's addresses is in To, Cc, Bcc or Resent-* (RFC 5230 §4.5)"
    return None


def period_seconds(
    asked: int | None, *, default: int, minimum: int, maximum: int
) -> int:
    """The period to stay silent to one sender: ``asked`` (from :days or :seconds, in
    seconds; None when neither was given, then ``default``) kept within ``minimum`` and
    ``maximum`` ([sieve] vacation_min/max_period_seconds; a maximum of 0 is no limit, as
    Dovecot's sieve_vacation_max_period). RFC 5230 §4.1 and RFC 6131 §2 let the site bound
    what a script asks."""
    value = default if asked is None else asked
    if maximum and value > maximum:
        value = maximum
    return max(value, minimum)


def default_handle(reason: str, subject: str, from_address: str, mime: bool) -> str:
    """RFC 5230 §4.2: without :handle, two vacation commands are the same when the
    arguments that make the reply are the same; the handle is a digest of them."""
    digest = hashlib.sha256()
    for part in (reason, subject, from_address, "mime" if mime else ""):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return "vacation-" + digest.hexdigest()[:32]


def reply_subject(message: bytes) -> str:
    """RFC 5230 §4.7: "Auto: " and the original subject (decoded), when there is no
    ``:subject``; "Automated reply" when the original has none."""
    fields = split_message(message).get_all("subject")
    original = decode_encoded_words(" ".join(fields[0].text.split())) if fields else ""
    return f"Auto: {original}" if original else "Automated reply"


def reply_references(message: bytes) -> tuple[str, str]:
    """RFC 5230 §5.1, RFC 3834 §3.1.5: the reply's In-Reply-To (the original Message-ID) and
    References (the original's References, else its In-Reply-To, then its Message-ID)."""
    header = split_message(message)
    ids = header.get_all("message-id")
    message_id = ids[0].text if ids else ""
    refs = header.get_all("references") or header.get_all("in-reply-to")
    before = " ".join(refs[0].text.split()) if refs else ""
    references = " ".join(part for part in (before, message_id) if part)
    return message_id, references


def _encode(text: str) -> str:
    """An unstructured value: as is when ASCII, else RFC 2047 encoded words (UTF-8)."""
    if text.isascii():
        return text
    return Header(text, "utf-8").encode(linesep="\r\n")


def _mailbox(name: str, address: str) -> str:
    if not name:
        return f"<{address}>"
    return formataddr((name, address), charset="utf-8")  # RFC 2047 for non-ASCII names


def _reply_to_field(original: SplitMessage, to: str) -> str:
    """The reply's To: the original From/Sender/Reply-To mailbox that is the envelope
    sender, with its display name; else the bare address."""
    wanted = normal_address(to)
    for name in ("from", "sender", "reply-to"):
        for field in original.get_all(name):
            for entry in parse_address_list(field.text):
                if not (entry.mailbox and entry.domain):
                    continue
                address = f"{entry.mailbox}@{entry.domain}"
                if normal_address(address) == wanted:
                    display = decode_encoded_words(entry.name or "").strip().strip('"')
                    return _mailbox(display, address)
    return f"<{to}>"


def _text_body(text: str) -> tuple[str, bytes]:
    """A text/plain UTF-8 body: 7bit when ASCII with short lines, else quoted-printable."""
    lines = text.replace("\r\n", "\n").split("\n")
    if text.isascii() and all(len(line) <= 998 for line in lines):
        return "7bit", "\r\n".join(lines).encode("ascii")
    encoded = quopri.encodestring("\n".join(lines).encode("utf-8"))
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def build_reply(action: Vacation, original: bytes, *, date: datetime, message_id: str) -> bytes:
    """The reply message (RFC 5230 §5, RFC 3834 §3), CRLF line ends. ``date`` is aware;
    ``message_id`` with or without angle brackets."""
    header = split_message(original)
    mid = message_id if message_id.startswith("<") else f"<{message_id}>"
    from_field = action.from_address.strip()
    if "<" not in from_field and "@" in from_field:
        from_field = f"<{from_field}>"
    fields = [
        ("Date", format_datetime(date)),
        ("From", _encode(from_field)),
        ("To", _reply_to_field(header, action.to)),
        ("Subject", _encode(action.subject)),
        ("Message-ID", mid),
    ]
    if action.in_reply_to:
        fields.append(("In-Reply-To", action.in_reply_to))  # RFC 5230 §5.1
    if action.references:
        fields.append(("References", action.references))  # RFC 5230 §5.1
    # RFC 5230 §5, RFC 3834 §5.1: the reply says it is an automatic answer.
    fields.append(("Auto-Submitted", "auto-replied"))
    fields.append(("MIME-Version", "1.0"))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields).encode("utf-8")
    if action.mime:
        # RFC 5230 §4.8 (":mime"): the reason is a whole MIME entity, its header included.
        entity = action.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        return head + entity.encode("utf-8")
    cte, body = _text_body(action.reason)
    head += (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Transfer-Encoding: {cte}\r\n".encode("ascii")
        + b"\r\n"
    )
    return head + body + (b"" if body.endswith(b"\r\n") else b"\r\n")
