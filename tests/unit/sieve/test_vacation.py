"""RFC 5230 / RFC 3834 rules of vacation and the reply it sends (sieve/vacation.py)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from pochta.sieve.actions import Vacation
from pochta.sieve.context import Envelope
from pochta.sieve.vacation import (
    build_reply,
    default_handle,
    period_seconds,
    may_answer,
    reply_references,
    reply_subject,
)

ENV = Envelope(sender="timo@example.com", recipient="stephan@example.com")
NORMAL = (
    b"From: timo@example.com\r\nTo: stephan@example.com\r\nSubject: Frop!\r\n"
    b"Auto-submitted: no\r\nPrecedence: normal\r\nX-Auto-Response-Suppress: None\r\n\r\nFrop!\r\n"
)


def test_normal_mail_is_answered() -> None:
    assert may_answer(NORMAL, ENV, ()) is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (b"Auto-Submitted: auto-replied\r\n", "Auto-Submitted"),
        (b"Auto-Submitted: auto-generated; owner-email=x@y\r\n", "Auto-Submitted"),
        (b"Precedence: bulk\r\n", "Precedence"),
        (b"Precedence: junk\r\n", "Precedence"),
        (b"Precedence: list\r\n", "Precedence"),
        (b"List-Id: <dovecot.lists.example.com>\r\n", "List-Id"),
        (b"List-Unsubscribe: <mailto:x@example.com>\r\n", "List-Unsubscribe"),
        (b"X-Auto-Response-Suppress: All\r\n", "X-Auto-Response-Suppress"),
        (b"X-Auto-Response-Suppress: DR, OOF, RN\r\n", "X-Auto-Response-Suppress"),
    ],
)
def test_automatic_mail_is_not_answered(extra: bytes, reason: str) -> None:
    message = b"From: timo@example.com\r\nTo: stephan@example.com\r\n" + extra + b"\r\nx\r\n"
    why = may_answer(message, ENV, ())
    assert why is not None
    assert reason in why


@pytest.mark.parametrize(
    "sender",
    [
        "",
        "<>",
        "MAILER-DAEMON@example.com",
        "owner-list@example.com",
        "dovecot-request@lists.example.com",
        "list-owner@example.com",
        "LISTSERV@example.com",
        "majordomo@example.com",
    ],
)
def test_system_senders_are_not_answered(sender: str) -> None:
    env = Envelope(sender=sender, recipient="stephan@example.com")
    assert may_answer(NORMAL, env, ()) is not None


def test_own_address_is_not_answered() -> None:
    env = Envelope(sender="stephan@example.com", recipient="stephan@example.com")
    assert "own address" in (may_answer(NORMAL, env, ()) or "")
    # RFC 5230 §4.6 through :addresses too.
    env = Envelope(sender="sirius@example.com", recipient="stephan@example.com")
    assert "own address" in (may_answer(NORMAL, env, ["sirius@example.com"]) or "")


def test_not_named_in_recipient_fields() -> None:
    # RFC 5230 §4.5: mail to all@ (an alias or list) is not answered unless :addresses says.
    message = b"From: timo@example.com\r\nTo: all@example.com\r\nSubject: x\r\n\r\nx\r\n"
    assert "§4.5" in (may_answer(message, ENV, ()) or "")
    assert may_answer(message, ENV, ["All@Example.com"]) is None
    env = Envelope(
        sender="timo@example.com",
        recipient="stephan@example.com",
        original_recipient="all@example.com",
    )
    assert may_answer(message, env, ()) is None


@pytest.mark.parametrize("field", [b"Cc", b"Bcc", b"Resent-To", b"Resent-Cc", b"Resent-Bcc"])
def test_other_recipient_fields_count(field: bytes) -> None:
    message = b"From: timo@example.com\r\nTo: all@example.com\r\n" + field
    message += b': "Stephan" <Stephan+work@Example.COM>\r\n\r\nx\r\n'
    assert may_answer(message, ENV, ()) is None


def test_subject_and_references() -> None:
    original = (
        b"From: a@example.org\r\nSubject: =?utf-8?q?Bloemetjes_=F0=9F=8C=B7?=\r\n"
        b"Message-ID: <432df324@example.org>\r\n"
        b"References: <1234@local.machine.example>\r\n <3456@example.net>\r\n\r\nx\r\n"
    )
    assert reply_subject(original) == "Auto: Bloemetjes \U0001f337"
    assert reply_subject(b"From: a@example.org\r\n\r\nx\r\n") == "Automated reply"
    in_reply_to, references = reply_references(original)
    assert in_reply_to == "<432df324@example.org>"
    assert references == ("<1234@local.machine.example> <3456@example.net> <432df324@example.org>")


def _vacation(**kw: object) -> Vacation:
    base: dict[str, object] = {
        "to": "h.j.tuinman@example.org",
        "reason": "I am not in today! Één dag.",
        "subject": "Auto: Bloemetjes \U0001f337",
        "from_address": "nico@frop.example.org",
        "handle": "h",
        "period_seconds": 86400,
        "in_reply_to": "<432df324@example.org>",
        "references": "<1@x> <432df324@example.org>",
    }
    base.update(kw)
    return Vacation(**base)  # type: ignore[arg-type]


ORIGINAL = (
    b'From: "Stephan Bosch" <stephan@example.org>\r\n'
    b'Sender: "Hendrik-Jan Tuinman" <h.j.tuinman@example.org>\r\n'
    b"Subject: Reply to me\r\nTo: nico@frop.example.org\r\n\r\nFrop\r\n"
)
WHEN = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def test_reply_message() -> None:
    raw = build_reply(_vacation(), ORIGINAL, date=WHEN, message_id="abc@frop.example.org")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"  # RFC 5230 §5, RFC 3834 §5.1
    assert msg["In-Reply-To"] == "<432df324@example.org>"
    assert msg["References"] == "<1@x> <432df324@example.org>"
    assert msg["Message-ID"] == "<abc@frop.example.org>"
    assert str(msg["Subject"]) == "Auto: Bloemetjes \U0001f337"
    assert raw.isascii()  # the subject is encoded words, the body quoted-printable
    assert msg["To"].addresses[0].addr_spec == "h.j.tuinman@example.org"
    assert msg["To"].addresses[0].display_name == "Hendrik-Jan Tuinman"
    assert msg["From"].addresses[0].addr_spec == "nico@frop.example.org"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content().rstrip("\r\n") == "I am not in today! Één dag."
    assert msg["Date"] == "Mon, 07 Dec 2026 01:00:00 +0000"


def test_reply_to_unknown_sender_is_bare() -> None:
    raw = build_reply(
        _vacation(to="arie.aardappel@example.org"), ORIGINAL, date=WHEN, message_id="<m@x>"
    )
    assert b"\r\nTo: <arie.aardappel@example.org>\r\n" in raw


def test_mime_reason_is_the_entity() -> None:
    reason = (
        "Content-Type: multipart/alternative; boundary=AA\n\n--AA\nContent-Type: text/plain\n\n"
        "Gone\n--AA\nContent-Type: text/html\n\n<p>Gone</p>\n--AA--\n"
    )
    raw = build_reply(_vacation(mime=True, reason=reason), ORIGINAL, date=WHEN, message_id="m@x")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert raw.count(b"MIME-Version") == 1


def test_period_is_clamped() -> None:
    limits = {"default": 7 * 86400, "minimum": 86400, "maximum": 30 * 86400}
    assert period_seconds(None, **limits) == 7 * 86400
    assert period_seconds(0, **limits) == 86400  # RFC 6131 §2: the site's floor
    assert period_seconds(3600, **limits) == 86400
    assert period_seconds(365 * 86400, **limits) == 30 * 86400
    assert period_seconds(365 * 86400, default=1, minimum=0, maximum=0) == 365 * 86400
    assert period_seconds(0, default=1, minimum=0, maximum=0) == 0


def test_default_handle_follows_the_reply() -> None:
    a = default_handle("gone", "Auto: x", "me@example.com", mime=False)
    assert a == default_handle("gone", "Auto: x", "me@example.com", mime=False)
    assert a != default_handle("gone!", "Auto: x", "me@example.com", mime=False)
    assert a != default_handle("gone", "Auto: x", "me@example.com", mime=True)
