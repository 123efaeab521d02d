"""Delivery status notifications: the bytes of a bounce, a delay warning or a success notice.

``build_dsn`` is a pure function (no I/O, no clock, no randomness): the queue manager's
``on_final`` hook (``notices.py``) reads the original message, calls it and queues the result.
The message is a ``multipart/report; report-type=delivery-status`` (RFC 6522 §3) of three
parts, as RFC 3464 §2.1 describes:

1. ``text/plain`` for a person: what happened, the reply for each recipient, what the sender
   can do (or, for a delay, until when the mail system keeps trying);
2. ``message/delivery-status`` for a program: per-message fields (Reporting-MTA,
   Original-Envelope-Id, Arrival-Date), then one block per recipient (Original-Recipient,
   Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date,
   Will-Retry-Until);
3. the returned content, ``message/rfc822`` (the whole message) or ``text/rfc822-headers``
   (its header only), chosen by the sender's RET (RFC 3461 §4.3). Without RET we do what
   Postfix does: the whole message in a bounce, the header in a delay or success notice.
   Like Postfix's ``bounce_size_limit`` (50,000 bytes, postconf(5): "A message is returned as
   either message/rfc822 (the complete original) or as text/rfc822-headers (the headers
   only)"), a message larger than ``return_limit_bytes`` is returned as its header only —
   also under RET=FULL, so that the notice stays small enough to be accepted where it goes.
   The part is left out when there is nothing to return (the message is gone).

Internationalised mail (RFC 6533): when the original came with SMTPUTF8 or has non-ASCII
addresses or header fields, the parts become ``message/global-delivery-status`` and
``message/global`` / ``message/global-headers``, addresses with non-ASCII characters use the
``utf-8`` address type (RFC 6533 §3), and the notice itself needs SMTPUTF8
(``is_international``). Otherwise every field of part 2 is ASCII.

Safety: everything that came from outside (addresses, replies of remote servers, ENVID,
ORCPT, HELO names) passes through ``_one_line`` before it reaches a header or a field: line
breaks are joined (RFC 3464 §2.3.6 lets a multi-line SMTP reply be given on one line),
control characters become "?", and each value is clipped to ``MAX_FIELD_BYTES``, so every
line stays under RFC 5322 §2.1.1's 998 octets and nothing can add a header field. Long
fields are folded at spaces (RFC 5322 §2.2.3).
"""

from __future__ import annotations

import quopri
import re
import textwrap
import unicodedata
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime

from pochta.mime.headers import leading_fields
from pochta.protocols.smtp.parse import xtext_encode
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import FinalKind

# Postfix bounce_size_limit: a larger message is returned as its header only.
DEFAULT_RETURN_LIMIT_BYTES = 50_000
# Any one value from outside, in UTF-8 octets: with the field name, far under 998 octets.
MAX_FIELD_BYTES = 900
# RFC 5322 §2.1.1 and RFC 2045 §2.8 (8bit data): at most 998 octets before CRLF.
MAX_LINE_OCTETS = 998
# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters; we fold and wrap there.
FOLD_COLUMNS = 78
# The header looked at for Message-ID when the message is large.
MAX_HEADER_SCAN_BYTES = 1024 * 1024

SUBJECTS: dict[str, str] = {
    "bounce": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}
POSTMASTER_SUBJECT = "Postmaster Copy: Undeliverable Notice"
# RFC 3464 §2.3.3: the action for each kind ("relayed" and "expanded" are not used here).
ACTIONS: dict[str, str] = {"bounce": "failed", "delay": "delayed", "success": "delivered"}
# The status classes that fit each kind, and the status used when a reply gives none that
# fits (RFC 3463 §3.1: x.0.0, "other or undefined").
_CLASSES: dict[str, str] = {"bounce": "45", "delay": "4", "success": "2"}
_DEFAULT_STATUS: dict[str, str] = {"bounce": "5.0.0", "delay": "4.0.0", "success": "2.0.0"}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SPACES = re.compile(r"\s{2,}")
# RFC 5321 §4.2: Reply-code [ SP / "-" ] text; RFC 3463 §2: class "." subject "." detail.
_REPLY = re.compile(r"([2-5])\d\d(?:[ -]+([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]))?")
_CONTINUATION = re.compile(r"(\d{3})[ -](?:[245]\.\d{1,3}\.\d{1,3}(?![\d.]) ?)?")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")  # RFC 5322 §3.2.3 atext
_NOT_DNS = re.compile(r"[^A-Za-z0-9.:_\[\]-]")
_NOT_BCHARS = re.compile(r"[^A-Za-z0-9.-]")
# RFC 5322 §3.4.1 domain: dot-atom-text or a domain literal (loosely).
_DOMAIN = re.compile(r"[^\s<>()\[\],;:\\\"@]+|\[[^\s\[\]\\]*\]")
_MSG_ID = re.compile(r"<[^\s<>@]+@[^\s<>@]+>")
_ANY_LINE_END = re.compile(rb"\r\n?|\n")


def build_dsn(
    envelope: Envelope,
    recipients: Sequence[Recipient],
    kind: FinalKind,
    content: bytes,
    *,
    reporting_mta: str,
    from_address: str,
    now: float,
    will_retry_until: float | None,
    to: str | None = None,
    postmaster: str = "",
    postmaster_copy: bool = False,
    return_limit_bytes: int = DEFAULT_RETURN_LIMIT_BYTES,
) -> bytes:
    """The DSN about ``recipients`` of ``envelope`` as a message ready to queue (CRLF).

    ``kind`` is "bounce" (failed or expired), "delay" or "success"; ``content`` is the
    original message (b"": not available, part 3 is left out). ``reporting_mta`` is our host
    name, ``from_address`` the MAILER-DAEMON address, ``now`` the Unix time of the notice,
    ``will_retry_until`` when a delayed message will be given up (delay notices only).
    ``to`` is the notice's recipient (default: the envelope sender); ``postmaster`` the
    address named for help (default postmaster@reporting_mta); ``postmaster_copy`` makes
    the double-bounce notice for the postmaster (Postfix's 2bounce: header only).
    ``return_limit_bytes`` (0: none) caps the returned message; larger, its header is sent.
    """
    if kind not in ACTIONS:
        raise ValueError(f"unknown DSN kind {kind!r}; use bounce, delay or success")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient (RFC 3464 §2.3)")
    to = envelope.sender if to is None else to
    if not to:
        raise ValueError("a DSN is never sent to the null sender <> (RFC 3464 §1)")
    host = _dns_name(reporting_mta) or "localhost"
    postmaster = postmaster or f"postmaster@{host}"
    intl = is_international(envelope, recipients, content, to)
    returned = _returned(envelope, kind, content, return_limit_bytes, postmaster_copy, intl)

    text = _human_text(
        envelope,
        recipients,
        kind,
        host=host,
        postmaster=_one_line(postmaster, utf8=intl),
        now=now,
        will_retry_until=will_retry_until,
        postmaster_copy=postmaster_copy,
        returned=returned[0] if returned else "",
        utf8=intl,
    )
    status = _delivery_status(envelope, recipients, kind, host, now, will_retry_until, intl)

    parts: list[tuple[list[str], bytes]] = []
    text_bytes, charset, text_cte = _encode_text(text, eight_bit=intl)
    parts.append(
        (
            [
                "Content-Description: Notification",
                f"Content-Type: text/plain; charset={charset}",
                f"Content-Transfer-Encoding: {text_cte}",
            ],
            text_bytes,
        )
    )
    # RFC 3464 §2.1 / RFC 6533 §4: the machine-readable part.
    parts.append(
        (
            [
                "Content-Description: Delivery report",
                f"Content-Type: message/{'global-' if intl else ''}delivery-status",
                f"Content-Transfer-Encoding: {_cte(status)}",
            ],
            status,
        )
    )
    if returned is not None:
        media_type, body = returned
        undelivered = "Undelivered " if kind != "success" else ""
        what = (
            "Message" if media_type in ("message/rfc822", "message/global") else "Message Headers"
        )
        # RFC 2046 §5.2.1: message/rfc822 is 7bit or 8bit, never encoded.
        parts.append(
            (
                [
                    f"Content-Description: {undelivered}{what}",
                    f"Content-Type: {media_type}",
                    f"Content-Transfer-Encoding: {_cte(body)}",
                ],
                body,
            )
        )

    boundary = _boundary(envelope.queue_id, now, host, [body for _, body in parts])
    original_id = _original_message_id(content, utf8=intl)
    subject = POSTMASTER_SUBJECT if postmaster_copy else SUBJECTS[kind]
    digest = zlib.crc32("\0".join(r.address for r in recipients).encode("utf-8", "replace"))
    queue_id = _NOT_BCHARS.sub("", envelope.queue_id)[:40] or "dsn"
    message_id = f"<{int(now * 1000)}.{kind}.{queue_id}.{digest:08x}@{host}>"  # RFC 5322 §3.6.4

    head = [
        _fold("From", f"Mail Delivery System <{_one_line(from_address, utf8=intl)}>"),
        _fold("To", _to_header(to)),
        _fold("Subject", subject),
        _fold("Date", _date(now)),
        _fold("Message-ID", message_id),
    ]
    if original_id:
        head.append(_fold("In-Reply-To", original_id))
        head.append(_fold("References", original_id))
    # RFC 3834 §5: a notice to the sender answers their message; the postmaster copy does not.
    head.append(f"Auto-Submitted: {'auto-generated' if postmaster_copy else 'auto-replied'}")
    head.append("MIME-Version: 1.0")
    # RFC 6522 §3 (report-type "delivery-status" also for the RFC 6533 parts, as Postfix does).
    head.append(
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"'
    )
    eight_bit = any(not body.isascii() for _, body in parts)
    if eight_bit:
        head.append("Content-Transfer-Encoding: 8bit")  # RFC 2045 §6.4: as its parts

    out = bytearray("\r\n".join(head).encode("utf-8"))
    out += b"\r\n\r\nThis is a MIME-formatted delivery status notification.\r\n"
    for part_head, body in parts:
        out += f"\r\n--{boundary}\r\n".encode()
        out += "\r\n".join(part_head).encode("utf-8") + b"\r\n\r\n"
        out += body
    out += f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)


def is_international(
    envelope: Envelope, recipients: Sequence[Recipient], content: bytes, to: str = ""
) -> bool:
    """Whether the DSN uses the RFC 6533 types (and so needs SMTPUTF8 to travel): the
    original came with SMTPUTF8, or an address or the original header is not ASCII."""
    if envelope.smtputf8:  # RFC 6531 §3.4
        return True
    texts = [to, envelope.sender]
    for r in recipients:
        texts += (r.address, r.original, r.orcpt)
    if not all(t.isascii() for t in texts):
        return True
    return not _header_block(content, MAX_HEADER_SCAN_BYTES).isascii()  # RFC 6532 §3


# -- part 2: message/delivery-status ---------------------------------------------------------


def _delivery_status(
    envelope: Envelope,
    recipients: Sequence[Recipient],
    kind: FinalKind,
    host: str,
    now: float,
    will_retry_until: float | None,
    utf8: bool,
) -> bytes:
    # RFC 3464 §2.2: the per-message fields, then a blank line before each recipient block.
    fields: list[str] = []
    envid = _envelope_id(envelope.envid, utf8=utf8)
    if envid:
        # RFC 3464 §2.2.1: only when ENVID was given; RFC 3461 §4.4: its decoded value.
        fields.append(_fold("Original-Envelope-Id", envid))
    fields.append(_fold("Reporting-MTA", f"dns; {host}"))  # RFC 3464 §2.2.2
    helo = _dns_name(envelope.client_helo)
    if helo:
        ip = _dns_name(envelope.client_ip)
        # RFC 3464 §2.2.4: the MTA the message came from.
        fields.append(_fold("Received-From-MTA", f"dns; {helo}" + (f" ({ip})" if ip else "")))
    if envelope.queue_id:
        fields.append(_fold("X-Pochta-Queue-ID", _one_line(envelope.queue_id, utf8=False)))
    fields.append(_fold("Arrival-Date", _date(envelope.arrival)))  # RFC 3464 §2.2.5
    blocks = ["\r\n".join(fields)]
    for r in recipients:
        blocks.append("\r\n".join(_recipient_fields(r, kind, now, will_retry_until, utf8)))
    return ("\r\n\r\n".join(blocks) + "\r\n").encode("utf-8")


def _recipient_fields(
    r: Recipient, kind: FinalKind, now: float, will_retry_until: float | None, utf8: bool
) -> list[str]:
    fields: list[str] = []
    original = _original_recipient(r, utf8)
    if original:
        fields.append(_fold("Original-Recipient", original))  # RFC 3464 §2.3.1
    address = _one_line(r.address, utf8=utf8)
    # RFC 3464 §2.3.2; RFC 6533 §3: the utf-8 type for an address that is not ASCII.
    fields.append(_fold("Final-Recipient", f"{_address_type(address)}; {address}"))
    fields.append(f"Action: {ACTIONS[kind]}")  # RFC 3464 §2.3.3
    fields.append(f"Status: {status_code(r.reply, kind)}")  # RFC 3464 §2.3.4
    remote = _dns_name(r.remote_mta)
    if remote:
        fields.append(_fold("Remote-MTA", f"dns; {remote}"))  # RFC 3464 §2.3.5
        reply = reply_text(r.reply, utf8=utf8)
        if reply:
            # RFC 3464 §2.3.6: the remote server's own words, on one line (RFC 6533 §4:
            # UTF-8 allowed in message/global-delivery-status).
            fields.append(_fold("Diagnostic-Code", f"smtp; {reply}"))
    if r.attempts > 0:
        last = r.delivered_at if kind == "success" and r.delivered_at else now
        fields.append(_fold("Last-Attempt-Date", _date(last)))  # RFC 3464 §2.3.7
    if kind == "delay" and will_retry_until is not None:
        fields.append(_fold("Will-Retry-Until", _date(will_retry_until)))  # RFC 3464 §2.3.9
    return fields


def status_code(reply: str, kind: FinalKind) -> str:
    """The RFC 3463 status for a recipient: the reply's enhanced code when it agrees with the
    basic code and fits the kind, else x.0.0 from the basic code, else the kind's default.

    "550 5.1.1 No such user" → 5.1.1; "550 No such user" → 5.0.0; "451 4.4.1 timeout" in a
    bounce (the message expired) → 4.4.1 (RFC 3463 §3.2: a persistent transient failure may
    end in abandonment).
    """
    match = _REPLY.match(reply.strip())
    if match is None or match.group(1) not in _CLASSES[kind]:
        return _DEFAULT_STATUS[kind]
    klass, enhanced_class, subject, detail = match.groups()
    if enhanced_class == klass:  # RFC 3463 §2: the class must agree with the reply code
        return f"{klass}.{int(subject)}.{int(detail)}"
    return f"{klass}.0.0"


def reply_text(reply: str, *, utf8: bool) -> str:
    """An SMTP reply on one safe line: the first line as given, the code and enhanced code
    of each further line dropped ("550-5.1.1 a" / "550 5.1.1 b" → "550 5.1.1 a b")."""
    lines = [line.strip() for line in _LINE_BREAK.split(reply) if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    code = first[:3]
    if len(first) > 3 and first[3] == "-" and code.isdigit():
        first = f"{code} {first[4:]}"
    words = [first]
    for line in lines[1:]:
        match = _CONTINUATION.match(line)
        words.append(line[match.end() :] if match and match.group(1) == code else line)
    return _one_line(" ".join(words), utf8=utf8)


def _original_recipient(r: Recipient, utf8: bool) -> str:
    """RFC 3464 §2.3.1 from ORCPT (RFC 3461 §4.2, kept xtext-decoded); without one, the
    address as given at RCPT when alias expansion changed it (as Postfix does)."""
    if r.orcpt:
        addr_type, sep, address = r.orcpt.partition(";")
        if not sep:
            addr_type, address = "rfc822", r.orcpt
        addr_type = addr_type.strip()
        if not _ATOM.fullmatch(addr_type):
            addr_type = "rfc822"
        address = _one_line(address, utf8=utf8)
        if addr_type.lower() == "rfc822":
            addr_type = _address_type(address)  # RFC 6533 §3
        return f"{addr_type}; {address}" if address else ""
    if r.original and r.original != r.address:
        address = _one_line(r.original, utf8=utf8)
        return f"{_address_type(address)}; {address}"
    return ""


def _address_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"


def _envelope_id(envid: str, *, utf8: bool) -> str:
    """RFC 3464 §2.2.1: envelope-id = *text, the ENVID as the sender gave it (decoded).

    Deviation from RFC 3464 §2.2.1: a decoded ENVID with control characters (or non-ASCII
    ones outside RFC 6533 notices) could not be written safely; it is returned in its xtext
    form (RFC 3461 §4), which is how the sender sent it."""
    if not envid:
        return ""
    if all(ch.isprintable() for ch in envid) and (utf8 or envid.isascii()):
        return _clip(envid, MAX_FIELD_BYTES)
    return _clip(xtext_encode(envid.encode("utf-8", "replace").decode("utf-8")), MAX_FIELD_BYTES)


# -- part 1: the text for a person -----------------------------------------------------------


def _human_text(
    envelope: Envelope,
    recipients: Sequence[Recipient],
    kind: FinalKind,
    *,
    host: str,
    postmaster: str,
    now: float,
    will_retry_until: float | None,
    postmaster_copy: bool,
    returned: str,
    utf8: bool,
) -> str:
    paragraphs: list[str] = [f"This is the mail delivery system at {host}."]
    attached = {
        "message/rfc822": "The message is attached below.",
        "message/global": "The message is attached below.",
        "text/rfc822-headers": "The header of the message is attached below.",
        "message/global-headers": "The header of the message is attached below.",
    }.get(returned, "")
    until = _date(will_retry_until) if will_retry_until is not None else ""
    if postmaster_copy:
        paragraphs.append(
            "Postmaster: a message with an empty return address (<>, usually itself a "
            "delivery notice) could not be delivered, and there is nobody to return it to. "
            + attached
        )
    elif kind == "bounce":
        paragraphs.append(
            "Your message could not be delivered to one or more of its recipients; it "
            "will not be tried again. " + attached
        )
    elif kind == "delay":
        paragraphs.append("THIS IS A WARNING ONLY: you do not need to send your message again.")
        still = f"until {until}" if until else "for a while longer"
        paragraphs.append(
            "Your message has not been delivered yet to the recipients below. The mail "
            f"system is still trying, and will keep trying {still}; if it cannot deliver "
            "the message by then, you will get another notice. " + attached
        )
    else:
        paragraphs.append(
            "Your message was delivered to the recipients below. You get this report because "
            "it was asked for when the message was sent (NOTIFY=SUCCESS). " + attached
        )

    for r in recipients:
        paragraphs.append(_recipient_line(envelope, r, kind, now, utf8))

    if kind == "bounce" and not postmaster_copy:
        paragraphs.append(
            "What you can do: check each address above for typing mistakes and send the "
            "message again to the corrected address. If an address is right, the reply "
            "quoted next to it says why the receiving system refused the message (an "
            "unknown user, a full mailbox, a message that is too large, a policy); remove "
            "the cause, or reach the recipient another way."
        )
    if kind == "delay":
        paragraphs.append(
            "What you can do: nothing yet. If the message is urgent, reach the recipient "
            "another way; the reply quoted above may tell you what is wrong."
        )
    if kind != "success":
        paragraphs.append(f"If you need help, write to <{postmaster}> and include this report.")
    lines: list[str] = []
    for paragraph in paragraphs:
        wrapped = textwrap.wrap(
            paragraph.strip(),
            width=FOLD_COLUMNS - 2,
            subsequent_indent="    " if paragraph.startswith("<") else "",
            break_long_words=True,
            break_on_hyphens=False,
        )
        lines += [*wrapped, ""]
    return "\n".join(lines)


def _recipient_line(
    envelope: Envelope, r: Recipient, kind: FinalKind, now: float, utf8: bool
) -> str:
    who = f"<{_one_line(r.address, utf8=utf8)}>"
    if r.original and r.original != r.address:
        who += f" (expanded from <{_one_line(r.original, utf8=utf8)}>)"
    reply = reply_text(r.reply, utf8=True) or "(no reply recorded)"
    remote = _dns_name(r.remote_mta)
    said = f"{remote} said: {reply}" if remote else reply
    tries = f"{r.attempts} attempt{'s' if r.attempts != 1 else ''}"
    if kind == "success":
        when = _date(r.delivered_at) if r.delivered_at else _date(now)
        return f"{who}: delivered on {when}" + (f" by {remote}" if remote else "") + f": {reply}"
    if kind == "delay":
        return f"{who}: not delivered yet after {tries}; the last one gave: {said}"
    if r.status == "expired":
        days = max(0.0, now - envelope.arrival) / 86400
        return f"{who}: given up after {days:.1f} days and {tries}; the last one gave: {said}"
    return f"{who}: {said}"


def _encode_text(text: str, *, eight_bit: bool) -> tuple[bytes, str, str]:
    """The text part's body, charset and transfer encoding (RFC 2045 §6): 7bit when it is
    ASCII, 8bit in an SMTPUTF8 notice, quoted-printable otherwise."""
    if text.isascii():
        return text.replace("\n", "\r\n").encode("ascii"), "us-ascii", "7bit"
    raw = text.encode("utf-8", "replace")
    if eight_bit:
        return raw.replace(b"\n", b"\r\n"), "utf-8", "8bit"
    return quopri.encodestring(raw).replace(b"\n", b"\r\n"), "utf-8", "quoted-printable"


# -- part 3: the returned content ------------------------------------------------------------


def _returned(
    envelope: Envelope,
    kind: FinalKind,
    content: bytes,
    limit: int,
    postmaster_copy: bool,
    intl: bool,
) -> tuple[str, bytes] | None:
    """(media type, body) of part 3, or None when nothing can be returned."""
    if not content:
        return None
    if envelope.ret == "FULL":  # RFC 3461 §4.3
        full = True
    elif envelope.ret == "HDRS":
        full = False
    else:
        full = kind == "bounce"  # the MTA's choice without RET: Postfix's
    if postmaster_copy:
        full = False  # Postfix 2bounce: the postmaster gets the header, not the mail
    if limit > 0 and len(content) > limit:
        full = False  # Deviation from RFC 3461 §4.3 under RET=FULL: Postfix bounce_size_limit
    if envelope.body == "BINARYMIME":
        # Deviation from RFC 3461 §4.3: binary content (RFC 3030) cannot travel in an 8bit
        # notice; its header can.
        full = False
    if full:
        body = _crlf(content)
        if _fits_8bit(body):
            return ("message/global" if intl else "message/rfc822"), body
    header = _header_block(content, limit if limit > 0 else len(content))
    if not header or not _fits_8bit(header):
        return None
    # RFC 6522 §4 text/rfc822-headers; RFC 6533 §4 message/global-headers.
    return ("message/global-headers" if intl else "text/rfc822-headers"), header


def _header_block(content: bytes, limit: int) -> bytes:
    """The header fields of ``content`` (where the block ends is mime.headers' rule, RFC 5322
    §2.2) with CRLF line ends, cut at a field boundary to at most ``limit`` bytes (b"" when
    its first field alone is longer). CRLF only lengthens a field, so the fields within the
    first ``limit`` bytes are all that can fit."""
    header = b""
    for field in leading_fields(content, limit):
        line = _crlf(field.raw)
        if len(header) + len(line) > limit:
            break
        header += line
    return header


def _crlf(data: bytes) -> bytes:
    """Bare CR and bare LF as CRLF, and a CRLF at the end (RFC 5322 §2.3)."""
    data = _ANY_LINE_END.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _fits_8bit(data: bytes) -> bool:
    """RFC 2045 §2.8: no NUL, lines of at most 998 octets."""
    return b"\0" not in data and all(len(line) <= MAX_LINE_OCTETS for line in data.split(b"\r\n"))


def _cte(body: bytes) -> str:
    return "7bit" if body.isascii() else "8bit"


# -- the message header ----------------------------------------------------------------------


def _to_header(address: str) -> str:
    """The envelope sender as an RFC 5322 address (RFC 6532 §3.2 when not ASCII)."""
    clean = _one_line(address, utf8=True)
    rendered = ""
    try:
        rendered = str(Address(addr_spec=clean))
    except (ValueError, IndexError, HeaderParseError):
        local, _, domain = clean.rpartition("@")
        try:
            rendered = str(Address(username=local, domain=domain))
        except (ValueError, IndexError, HeaderParseError):
            rendered = ""
    rendered = _one_line(rendered, utf8=True)
    domain = rendered.rpartition("@")[2]
    if "@" not in rendered or not _DOMAIN.fullmatch(domain):
        # RFC 5322 §3.4 group syntax: no usable address; the envelope still names it.
        return "undisclosed-recipients:;"
    return f"<{rendered}>"


def _original_message_id(content: bytes, *, utf8: bool) -> str:
    """The original's Message-ID for In-Reply-To and References (RFC 5322 §3.6.4), when it is
    a plain msg-id."""
    header = _header_block(content, MAX_HEADER_SCAN_BYTES)
    if not header:
        return ""
    value = BytesHeaderParser(policy=compat32).parsebytes(header).get("Message-ID")
    text = str(value).strip() if value is not None else ""
    if not _MSG_ID.fullmatch(text) or not text.isprintable() or len(text) > MAX_FIELD_BYTES:
        return ""
    return text if utf8 or text.isascii() else ""


def _boundary(queue_id: str, now: float, host: str, bodies: Sequence[bytes]) -> str:
    """RFC 2046 §5.1.1: at most 70 characters, found in no part."""
    base = _NOT_BCHARS.sub("", queue_id)[:20] or "dsn"
    base = f"{base}.{int(now)}/" + _NOT_BCHARS.sub("", host)[:40]
    candidate, n = base, 0
    while any(f"--{candidate}".encode() in body for body in bodies):
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def _date(timestamp: float) -> str:
    """RFC 5322 §3.3 date-time, in UTC (RFC 3464 §2.2.5 uses it)."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


# -- making values safe ----------------------------------------------------------------------


def _one_line(text: str, *, utf8: bool, limit: int = MAX_FIELD_BYTES) -> str:
    """``text`` as one safe line: line breaks joined with a space, control characters (and,
    unless ``utf8``, non-ASCII ones) as "?", runs of spaces collapsed, clipped to ``limit``
    UTF-8 octets."""
    joined = " ".join(_LINE_BREAK.split(text))
    out: list[str] = []
    for ch in joined:
        if ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or not (utf8 or ch.isascii()):
            out.append("?")
        else:
            out.append(ch)
    return _clip(_SPACES.sub(" ", "".join(out)).strip(), limit)


def _dns_name(text: str) -> str:
    """A host name or address literal for an "dns; NAME" field: other characters as "?"."""
    return _NOT_DNS.sub("?", text.strip())[:255]


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def _fold(name: str, value: str) -> str:
    """``Name: value``, folded at spaces before column 78 where it can be (RFC 5322 §2.2.3).
    Values reach here through ``_one_line``, so no word is longer than a line may be."""
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if not word:
            continue
        if len(current) + 1 + len(word.encode()) > FOLD_COLUMNS and current.strip() != f"{name}:":
            lines.append(current)
            current = f" {word}"
        else:
            current = f"{current} {word}"
    lines.append(current)
    return "\r\n".join(lines)
