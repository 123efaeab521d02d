"""DSN messages (RFC 3464, RFC 6522, RFC 6533), parsed back with the std-lib email package."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage, Message
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pochta.deliver.dsn import (
    DEFAULT_RETURN_LIMIT_BYTES,
    build_dsn,
    is_international,
    reply_text,
    status_code,
)
from pochta.queue.envelope import Envelope, Recipient
from tests.factories import make_envelope

T0 = 1_750_000_000.0  # Sun, 15 Jun 2025 15:06:40 +0000
NOW = T0 + 3600
HOST = "mail.example.org"
CONTENT = (
    b"Message-ID: <orig.42@example.org>\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: lunch\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)
PER_MESSAGE = {
    "Original-Envelope-Id",
    "Reporting-MTA",
    "Received-From-MTA",
    "X-Pochta-Queue-ID",
    "Arrival-Date",
}
PER_RECIPIENT = {
    "Original-Recipient",
    "Final-Recipient",
    "Action",
    "Status",
    "Remote-MTA",
    "Diagnostic-Code",
    "Last-Attempt-Date",
    "Will-Retry-Until",
}
TOP_HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
}


envelope = partial(make_envelope, queue_id="0Abc123XYZabcde", arrival=T0, content=CONTENT)


def bounced(address: str = "bob@example.com", **changes: Any) -> Recipient:
    fields: dict[str, Any] = {
        "status": "bounced",
        "reply": "550 5.1.1 No such user",
        "remote_mta": "mx.example.com",
        "attempts": 1,
    }
    fields.update(changes)
    return Recipient(address, **fields)


def build(
    env: Envelope | None = None,
    recipients: list[Recipient] | None = None,
    kind: Any = "bounce",
    content: bytes = CONTENT,
    **kwargs: Any,
) -> bytes:
    return build_dsn(
        env or envelope(),
        recipients if recipients is not None else [bounced()],
        kind,
        content,
        reporting_mta=kwargs.pop("reporting_mta", HOST),
        from_address=kwargs.pop("from_address", f"MAILER-DAEMON@{HOST}"),
        now=kwargs.pop("now", NOW),
        will_retry_until=kwargs.pop("will_retry_until", None),
        **kwargs,
    )


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> list[Message]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    assert all(isinstance(p, Message) for p in payload)
    return [p for p in payload if isinstance(p, Message)]


def inner(part: Message) -> Message:
    """The message inside a message/rfc822 part."""
    message = part.get_payload(0)
    assert isinstance(message, Message)
    return message


def status_blocks(msg: EmailMessage) -> list[dict[str, str]]:
    """Per-message fields first, then one dict per recipient (message/delivery-status)."""
    part = parts(msg)[1]
    assert part.get_content_type() == "message/delivery-status"
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return [{k: str(v) for k, v in block.items()} for block in blocks if isinstance(block, Message)]


def global_blocks(data: bytes) -> list[dict[str, str]]:
    """The fields of a message/global-delivery-status part (8bit text), read from the raw
    bytes: the email package treats that part as an embedded message."""
    msg = parse(data)
    assert parts(msg)[1].get_content_type() == "message/global-delivery-status"
    boundary = msg.get_boundary()
    assert boundary is not None
    raw = data.split(f"\r\n--{boundary}".encode())[2]
    body = raw.split(b"\r\n\r\n", 1)[1].decode("utf-8")
    out = []
    for block in body.strip().split("\r\n\r\n"):
        fields = {}
        for line in re.split(r"\r\n(?![ \t])", block):
            name, _, value = line.partition(":")
            fields[name] = re.sub(r"\r\n[ \t]", " ", value).strip()
        out.append(fields)
    return out


def text_of(msg: EmailMessage) -> str:
    """The human-readable part, its wrapped lines joined again."""
    part = parts(msg)[0]
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    assert all(len(line) <= 78 for line in content.splitlines())
    return re.sub(r"\s+", " ", content)


def assert_clean_lines(data: bytes) -> None:
    """No bare CR or LF anywhere, no line over 998 octets (RFC 5322 §2.1.1, §2.3)."""
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


# -- the three kinds ---------------------------------------------------------------------------


def test_bounce_structure_and_fields() -> None:
    data = build(
        envelope(client_helo="client.example.net", client_ip="192.0.2.7"),
        [bounced(orcpt="rfc822;Bob@Example.com")],
    )
    assert_clean_lines(data)
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOST}>"
    assert msg["To"] == "alice@example.org"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg["In-Reply-To"] == "<orig.42@example.org>"
    assert msg["References"] == "<orig.42@example.org>"
    assert msg["Date"].datetime.timestamp() == NOW
    assert msg["Message-ID"].endswith(f"@{HOST}>")
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    per_message, per_recipient = status_blocks(msg)
    assert per_message == {
        "Reporting-MTA": f"dns; {HOST}",
        "Received-From-MTA": "dns; client.example.net (192.0.2.7)",
        "X-Pochta-Queue-ID": "0Abc123XYZabcde",
        "Arrival-Date": "Sun, 15 Jun 2025 15:06:40 +0000",
    }
    assert per_recipient == {
        "Original-Recipient": "rfc822; Bob@Example.com",
        "Final-Recipient": "rfc822; bob@example.com",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.example.com",
        "Diagnostic-Code": "smtp; 550 5.1.1 No such user",
        "Last-Attempt-Date": "Sun, 15 Jun 2025 16:06:40 +0000",
    }
    # RET not given, a small bounce: the whole message comes back, byte for byte.
    returned = parts(msg)[2]
    assert inner(returned).as_bytes(policy=email.policy.SMTP) == CONTENT
    assert data.count(CONTENT) == 1
    text = text_of(msg)
    assert "<bob@example.com>: mx.example.com said: 550 5.1.1 No such user" in text
    assert "What you can do" in text
    assert f"<postmaster@{HOST}>" in text


def test_delay_notice() -> None:
    deferred = Recipient(
        "bob@example.com",
        status="deferred",
        reply="451 4.4.1 Connection timed out",
        remote_mta="mx.example.com",
        attempts=3,
    )
    until = T0 + 432000
    msg = parse(build(recipients=[deferred], kind="delay", will_retry_until=until))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    # RET not given: a delay notice returns the header only (as Postfix does).
    assert [p.get_content_type() for p in parts(msg)][2] == "text/rfc822-headers"
    assert parts(msg)[2].get_payload(decode=True) == CONTENT.split(b"\r\n\r\n")[0] + b"\r\n"
    block = status_blocks(msg)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert block["Will-Retry-Until"] == "Fri, 20 Jun 2025 15:06:40 +0000"
    text = text_of(msg)
    assert "still trying, and will keep trying until Fri, 20 Jun 2025" in text
    assert "you do not need to send your message again" in text


def test_success_notice() -> None:
    delivered = Recipient(
        "bob@example.com",
        status="delivered",
        reply="250 2.0.0 Ok: queued as 4XyZ",
        remote_mta="mx.example.com",
        attempts=1,
        delivered_at=T0 + 60,
        notify=("SUCCESS",),
    )
    msg = parse(build(recipients=[delivered], kind="success"))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    block = status_blocks(msg)[1]
    assert block["Action"] == "delivered"
    assert block["Status"] == "2.0.0"
    assert block["Last-Attempt-Date"] == "Sun, 15 Jun 2025 15:07:40 +0000"
    assert "Will-Retry-Until" not in block
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "delivered on Sun, 15 Jun 2025 15:07:40 +0000 by mx.example.com" in text_of(msg)


def test_expired_recipient_keeps_its_4xx_status_but_fails() -> None:
    expired = Recipient(
        "slow@example.net", status="expired", reply="451 4.4.1 Connection timed out", attempts=9
    )
    msg = parse(build(recipients=[expired], now=T0 + 5 * 86400))
    block = status_blocks(msg)[1]
    assert block["Action"] == "failed"
    assert block["Status"] == "4.4.1"
    # Our own reply (no remote MTA): no Remote-MTA and no Diagnostic-Code.
    assert "Remote-MTA" not in block
    assert "Diagnostic-Code" not in block
    assert "given up after 5.0 days and 9 attempts" in text_of(msg)


def test_several_recipients_get_one_block_each() -> None:
    rcpts = [bounced(f"u{i}@example.com", reply=f"550 5.1.{i} no {i}") for i in range(1, 4)]
    blocks = status_blocks(parse(build(recipients=rcpts)))
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; u1@example.com",
        "rfc822; u2@example.com",
        "rfc822; u3@example.com",
    ]
    assert [b["Status"] for b in blocks[1:]] == ["5.1.1", "5.1.2", "5.1.3"]


# -- status codes and replies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        ("550 5.1.1 No such user", "bounce", "5.1.1"),
        ("550 No such user", "bounce", "5.0.0"),
        ("550-5.7.26 unauthenticated", "bounce", "5.7.26"),
        ("554 5.010.001 odd zeros", "bounce", "5.10.1"),
        ("550 4.1.1 class disagrees with the code", "bounce", "5.0.0"),
        ("550 5.1.1.1 not an enhanced code", "bounce", "5.0.0"),
        ("451 4.4.1 timeout", "bounce", "4.4.1"),
        ("", "bounce", "5.0.0"),
        ("garbage", "bounce", "5.0.0"),
        ("250 2.0.0 Ok", "bounce", "5.0.0"),
        ("421 4.3.2 busy", "delay", "4.3.2"),
        ("421 busy", "delay", "4.0.0"),
        ("", "delay", "4.0.0"),
        ("250 2.6.0 queued", "success", "2.6.0"),
        ("250 Ok", "success", "2.0.0"),
        ("550 5.1.1 x", "success", "2.0.0"),
    ],
)
def test_status_code(reply: str, kind: Any, status: str) -> None:
    assert status_code(reply, kind) == status


def test_multi_line_reply_is_one_diagnostic_line() -> None:
    reply = (
        "550-5.1.1 The account you tried to reach does not exist.\r\n"
        "550-5.1.1 Please check the address\n"
        "550 5.1.1 for typos. https://help.example/nosuchuser"
    )
    assert reply_text(reply, utf8=False) == (
        "550 5.1.1 The account you tried to reach does not exist. Please check the address "
        "for typos. https://help.example/nosuchuser"
    )
    data = build(recipients=[bounced(reply=reply)])
    assert_clean_lines(data)
    block = status_blocks(parse(data))[1]
    assert block["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 The account you tried to reach does not exist. Please check the "
        "address for typos. https://help.example/nosuchuser"
    )
    assert block["Status"] == "5.1.1"
    assert "does not exist. Please check the address for typos. https://" in text_of(parse(data))


# -- injection -----------------------------------------------------------------------------


def test_header_injection_from_a_reply_is_harmless() -> None:
    evil = "550 5.1.1 nope\r\nBcc: victim@example.net\r\n\r\nInjected-Field: yes\rX: y\nZ: z"
    data = build(recipients=[bounced(reply=evil)])
    assert_clean_lines(data)
    msg = parse(data)
    assert set(msg.keys()) <= TOP_HEADERS
    blocks = status_blocks(msg)
    assert len(blocks) == 2
    assert set(blocks[0]) <= PER_MESSAGE
    assert set(blocks[1]) <= PER_RECIPIENT
    assert "Bcc: victim@example.net" in blocks[1]["Diagnostic-Code"]  # kept, on one line


def test_header_injection_from_addresses_and_envid() -> None:
    env = envelope(
        sender="alice@example.org\r\nBcc: victim@example.net",
        envid="id\r\nX-Injected: 1",
        client_helo="helo\nX-Injected: 2",
    )
    rcpt = bounced(
        "bob@example.com\nX-Injected: 3",
        orcpt="rfc822;bob@example.com\rX-Injected: 4",
        remote_mta="mx\r\nX-Injected: 5",
        original="team@example.com\x0bX-Injected: 6",
    )
    data = build(env, [rcpt])
    assert_clean_lines(data)
    assert not re.search(rb"(?m)^X-Injected", data)
    msg = parse(data)
    assert set(msg.keys()) <= TOP_HEADERS
    per_message, per_recipient = status_blocks(msg)
    assert set(per_message) <= PER_MESSAGE
    assert set(per_recipient) <= PER_RECIPIENT
    # RFC 3461 §4: an ENVID that cannot be written as text goes back in its xtext form.
    assert per_message["Original-Envelope-Id"] == "id+0D+0AX-Injected:+201"


def test_the_boundary_never_appears_in_the_content() -> None:
    first = build()
    boundary = parse(first).get_boundary()
    assert boundary is not None
    tricky = CONTENT + f"--{boundary}\r\n".encode()
    msg = parse(build(content=tricky))
    assert msg.get_boundary() != boundary
    assert len(parts(msg)) == 3
    assert inner(parts(msg)[2]).as_bytes(policy=email.policy.SMTP) == tricky


# -- RET, ENVID, ORCPT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ret", "kind", "expected"),
    [
        ("FULL", "bounce", "message/rfc822"),
        ("FULL", "delay", "message/rfc822"),
        ("FULL", "success", "message/rfc822"),
        ("HDRS", "bounce", "text/rfc822-headers"),
        ("", "bounce", "message/rfc822"),
        ("", "delay", "text/rfc822-headers"),
        ("", "success", "text/rfc822-headers"),
    ],
)
def test_ret_chooses_what_comes_back(ret: Any, kind: Any, expected: str) -> None:
    status = {"bounce": "bounced", "delay": "deferred", "success": "delivered"}[kind]
    rcpt = bounced(status=status, reply="250 ok" if kind == "success" else "451 4.0.0 x")
    msg = parse(build(envelope(ret=ret), [rcpt], kind))
    returned = parts(msg)[2]
    assert returned.get_content_type() == expected
    if expected == "message/rfc822":
        assert b"Shall we meet at noon?" in returned.as_bytes()
    else:
        assert returned.get_payload(decode=True) == (
            b"Message-ID: <orig.42@example.org>\r\nFrom: Alice <alice@example.org>\r\n"
            b"To: bob@example.com\r\nSubject: lunch\r\n"
        )


def test_size_cap_returns_the_header_of_a_large_message() -> None:
    big = CONTENT + (b"y" * 76 + b"\r\n") * (DEFAULT_RETURN_LIMIT_BYTES // 78 + 1)
    assert len(big) > DEFAULT_RETURN_LIMIT_BYTES
    for ret in ("", "FULL"):
        data = build(envelope(ret=ret, size=len(big)), content=big)
        returned = parts(parse(data))[2]
        assert returned.get_content_type() == "text/rfc822-headers"
        assert b"y" * 76 not in data
    # Just under the cap, the whole message comes back.
    fits = big[: DEFAULT_RETURN_LIMIT_BYTES - 2] + b"\r\n"
    returned = parts(parse(build(content=fits)))[2]
    assert returned.get_content_type() == "message/rfc822"
    # The cap can be changed.
    returned = parts(parse(build(content=big, return_limit_bytes=len(big))))[2]
    assert returned.get_content_type() == "message/rfc822"


def test_a_huge_header_is_cut_at_a_field_boundary() -> None:
    fields = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"z" * 60) for i in range(2000))
    content = b"Subject: big\r\n" + fields + b"\r\nbody\r\n"
    data = build(envelope(ret="HDRS"), content=content, return_limit_bytes=10_000)
    returned = parts(parse(data))[2].get_payload(decode=True)
    assert isinstance(returned, bytes)
    assert 9_000 < len(returned) <= 10_000
    assert returned.startswith(b"Subject: big\r\n")
    assert returned.endswith(b"z" * 60 + b"\r\n")  # whole fields only


def test_binary_or_long_lined_content_is_returned_as_header_only() -> None:
    long_line = CONTENT + b"a" * 2000 + b"\r\n"
    assert parts(parse(build(content=long_line)))[2].get_content_type() == "text/rfc822-headers"
    binary = envelope(body="BINARYMIME")
    assert parts(parse(build(binary)))[2].get_content_type() == "text/rfc822-headers"


def test_no_content_no_third_part() -> None:
    msg = parse(build(content=b""))
    assert [p.get_content_type() for p in parts(msg)] == ["text/plain", "message/delivery-status"]
    assert "In-Reply-To" not in msg


def test_bare_line_ends_in_the_content_become_crlf() -> None:
    content = b"Subject: lf\nX-A: 1\r\n\nbody\rmore\n"
    data = build(content=content)
    assert_clean_lines(data)
    assert b"Subject: lf\r\nX-A: 1\r\n\r\nbody\r\nmore\r\n" in data


def test_envid_and_orcpt() -> None:
    env = envelope(envid="QQ314159")
    rcpts = [
        bounced("bob@example.com", orcpt="rfc822;bob+tag@example.com"),
        bounced("carol@example.com", original="team@example.com"),
        bounced("dave@example.com"),
    ]
    blocks = status_blocks(parse(build(env, rcpts)))
    assert blocks[0]["Original-Envelope-Id"] == "QQ314159"
    assert blocks[1]["Original-Recipient"] == "rfc822; bob+tag@example.com"
    assert blocks[2]["Original-Recipient"] == "rfc822; team@example.com"
    assert "Original-Recipient" not in blocks[3]
    # RFC 3464 §2.2.1: no ENVID, no Original-Envelope-Id.
    assert "Original-Envelope-Id" not in status_blocks(parse(build()))[0]


def test_8bit_original_gets_8bit_transfer_encoding() -> None:
    content = b"Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xd0\x9f\xd1\x80\r\n"
    data = build(envelope(body="8BITMIME"), content=content)
    msg = parse(data)
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert parts(msg)[1].get_content_type() == "message/delivery-status"  # header is ASCII
    assert parts(msg)[2]["Content-Transfer-Encoding"] == "8bit"
    assert content in data


# -- internationalised mail (RFC 6533) ------------------------------------------------------


def test_smtputf8_uses_the_global_types() -> None:
    env = envelope(sender="алиса@пример.рф", smtputf8=True)
    rcpt = bounced("борис@пример.рф", orcpt="rfc822;Борис@пример.рф", reply="550 5.1.1 нет")
    content = "Subject: привет\r\nFrom: алиса@пример.рф\r\n\r\nтело\r\n".encode()
    assert is_international(env, [rcpt], content)
    data = build(env, [rcpt], content=content)
    assert_clean_lines(data)
    msg = parse(data)
    assert [p.get_content_type() for p in parts(msg)] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global",
    ]
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert "алиса@пример.рф".encode() in data.split(b"\r\n\r\n")[0]  # RFC 6532 To:
    per_recipient = global_blocks(data)[1]
    assert per_recipient["Final-Recipient"] == "utf-8; борис@пример.рф"
    assert per_recipient["Original-Recipient"] == "utf-8; Борис@пример.рф"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 нет"
    assert content in data
    assert parts(msg)[0].get_content_charset() == "utf-8"
    assert "<борис@пример.рф>: mx.example.com said: 550 5.1.1 нет" in text_of(msg)


def test_non_ascii_header_alone_makes_it_international() -> None:
    content = "Subject: Grüße\r\n\r\nbody\r\n".encode()
    assert is_international(envelope(), [bounced()], content)
    msg = parse(build(envelope(ret="HDRS"), content=content))
    assert parts(msg)[1].get_content_type() == "message/global-delivery-status"
    assert parts(msg)[2].get_content_type() == "message/global-headers"
    assert not is_international(envelope(), [bounced()], CONTENT)


def test_non_ascii_reply_in_an_ascii_notice() -> None:
    data = build(recipients=[bounced(reply="550 5.1.1 Ящик не существует")])
    msg = parse(data)
    assert parts(msg)[1].get_content_type() == "message/delivery-status"
    assert status_blocks(msg)[1]["Diagnostic-Code"].startswith("smtp; 550 5.1.1 ????")
    # The text part keeps the words, quoted-printable.
    assert parts(msg)[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Ящик не существует" in text_of(msg)
    assert data.isascii()


# -- the postmaster copy and bad calls ------------------------------------------------------


def test_postmaster_copy_of_a_failed_bounce() -> None:
    env = envelope(sender="", protocol="dsn")
    msg = parse(build(env, to=f"postmaster@{HOST}", postmaster_copy=True))
    assert msg["To"] == f"postmaster@{HOST}"
    assert msg["Subject"] == "Postmaster Copy: Undeliverable Notice"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    assert "empty return address" in text_of(msg)


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="null sender"):
        build(envelope(sender=""))
    with pytest.raises(ValueError, match="at least one recipient"):
        build(recipients=[])
    with pytest.raises(ValueError, match="unknown DSN kind"):
        build(kind="relayed")


# -- properties -------------------------------------------------------------------------------

_texts = st.text(st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["\r\n", "a\rb", "\u2028x", "\x85", "550-5.1.1 a\r\n550 5.1.1 b", "\x00\x1b[31m", " " * 5]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=_texts,
    address=_texts,
    sender=_texts.filter(bool),
    orcpt=_texts,
    envid=_texts,
    remote=_texts,
    smtputf8=st.booleans(),
    kind=st.sampled_from(["bounce", "delay", "success"]),
)
@example(
    reply="550 x\r\nBcc: a@b",
    address="a@b\nX: y",
    sender="s@x\r\n\r\nbody",
    orcpt="rfc822;\r",
    envid="\u2029",
    remote="\n",
    smtputf8=False,
    kind="bounce",
)
def test_any_reply_or_address_gives_a_clean_parseable_message(
    reply: str,
    address: str,
    sender: str,
    orcpt: str,
    envid: str,
    remote: str,
    smtputf8: bool,
    kind: Any,
) -> None:
    env = envelope(sender=sender, envid=envid, smtputf8=smtputf8, client_helo=remote)
    rcpt = Recipient(
        address, orcpt=orcpt, reply=reply, remote_mta=remote, attempts=1, status="bounced"
    )
    data = build(env, [rcpt], kind, will_retry_until=NOW + 10)
    assert_clean_lines(data)
    msg = parse(data)
    assert set(msg.keys()) <= TOP_HEADERS
    for name in msg:
        str(msg[name])  # every header value parses
    assert msg.get_content_type() == "multipart/report"
    types = [p.get_content_type() for p in parts(msg)]
    assert len(types) == 3
    if types[1] == "message/delivery-status":
        per_message, per_recipient = status_blocks(msg)
        assert set(per_message) <= PER_MESSAGE
        assert set(per_recipient) <= PER_RECIPIENT
        assert {"Final-Recipient", "Action", "Status"} <= set(per_recipient)
        assert data.isascii()
    else:
        assert types[1] == "message/global-delivery-status"
        blocks = global_blocks(data)
        assert len(blocks) == 2
        assert set(blocks[0]) <= PER_MESSAGE
        assert set(blocks[1]) <= PER_RECIPIENT
    assert isinstance(text_of(msg), str)


_contents = st.binary(max_size=3000) | st.lists(
    st.sampled_from(
        [
            *(b"Subject: x\r\n", b"X-A: 1\n", b"\r\n", b"\n", b"\r", b" folded\r\n"),
            *(b"body\r\n", b"--0Abc123XYZabcde.1750003600/mail.example.org\r\n"),
            *(b"\x00", b"\xff\xfe"),
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(content=_contents, ret=st.sampled_from(["", "FULL", "HDRS"]), limit=st.integers(0, 400))
def test_any_content_gives_a_clean_parseable_message(content: bytes, ret: Any, limit: int) -> None:
    data = build(envelope(ret=ret), content=content, return_limit_bytes=limit)
    assert_clean_lines(data)
    msg = parse(data)
    types = [p.get_content_type() for p in parts(msg)]
    assert types[:2] in (
        ["text/plain", "message/delivery-status"],
        ["text/plain", "message/global-delivery-status"],
    )
    assert len(types) in (2, 3)
    if not content.strip(b"\r\n"):
        assert len(types) == 2 or types[2] in ("message/rfc822", "message/global")
    if len(types) == 3 and types[2] in ("message/rfc822", "message/global"):
        assert ret != "HDRS"
        assert limit == 0 or len(content) <= limit
        assert re.sub(rb"\r\n?|\n", b"\r\n", content).rstrip(b"\r\n") in data
