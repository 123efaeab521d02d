"""spam/heuristics.py: each header and MIME rule, with a message that has it and one that
does not."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pochta.spam.check import ScanInput
from pochta.spam.heuristics import HeaderHeuristics, MimeHeuristics
from pochta.spam.message import ScanMessage

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC).timestamp()
DATE = "Mon, 06 May 2024 11:58:00 +0000"
HOSTED = ("example.org", "hosted.test")


def message(
    *,
    headers: dict[str, str] | None = None,
    body: str = "Hello Bob,\r\nsee you tomorrow.\r\n",
    content_type: str = "text/plain; charset=utf-8",
    raw_body: bytes | None = None,
) -> ScanMessage:
    fields = {
        "From": "Alice <alice@example.net>",
        "To": "bob@example.org",
        "Subject": "Lunch tomorrow",
        "Date": DATE,
        "Message-ID": "<1234.abc@mail.example.net>",
        "MIME-Version": "1.0",
        "Content-Type": content_type,
    }
    for key, value in (headers or {}).items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return ScanMessage(
        head.encode() + b"\r\n" + (raw_body if raw_body is not None else body.encode())
    )


def header_symbols(m: ScanMessage, now: float = NOW) -> dict[str, float]:
    check = HeaderHeuristics(hosted_domains=lambda: HOSTED, clock=lambda: now)
    return {
        s.name: s.score for s in asyncio.run(check(ScanInput(message=m, sender="", recipients=())))
    }


def mime_symbols(m: ScanMessage) -> dict[str, float]:
    found = asyncio.run(MimeHeuristics()(ScanInput(message=m, sender="", recipients=())))
    return {s.name: s.score for s in found}


def test_a_plain_message_has_no_symbols() -> None:
    m = message()
    assert header_symbols(m) == {}
    assert mime_symbols(m) == {}


# -- Date ------------------------------------------------------------------------------------


def test_missing_date() -> None:
    assert header_symbols(message(headers={"Date": None})) == {"MISSING_DATE": 1.0}


def test_invalid_date() -> None:
    assert header_symbols(message(headers={"Date": "yesterday at noon"})) == {"INVALID_DATE": 1.5}


def test_date_in_the_future_by_the_injected_clock() -> None:
    future = format_datetime(datetime(2024, 5, 6, 15, 0, tzinfo=UTC))
    assert header_symbols(message(headers={"Date": future})) == {"DATE_IN_FUTURE": 4.0}
    # the same Date is fine once the clock has caught up
    assert header_symbols(message(headers={"Date": future}), now=NOW + 3 * 3600) == {}


def test_date_in_the_past() -> None:
    old = "Wed, 01 May 2024 11:00:00 +0000"  # 5 days
    assert header_symbols(message(headers={"Date": old})) == {"DATE_IN_PAST": 1.0}
    assert header_symbols(message(headers={"Date": "Mon, 06 May 2024 08:00:00 +0000"})) == {}


def test_a_date_two_days_old_is_not_in_the_past() -> None:
    """A queue retry or a digest: a day or two late is common in real mail."""
    late = "Sat, 04 May 2024 11:00:00 +0000"
    assert header_symbols(message(headers={"Date": late})) == {}


# -- Message-ID ------------------------------------------------------------------------------


def test_missing_message_id() -> None:
    assert header_symbols(message(headers={"Message-ID": None})) == {"MISSING_MID": 2.5}


@pytest.mark.parametrize("mid", ["1234@host", "<no-at-sign>", "<a b@c>", "<a@b@c>"])
def test_malformed_message_id(mid: str) -> None:
    assert header_symbols(message(headers={"Message-ID": mid})) == {"INVALID_MSGID": 1.7}


# -- From display name -----------------------------------------------------------------------


def test_display_name_with_an_address_of_a_hosted_domain() -> None:
    m = message(headers={"From": '"ceo@example.org" <boss@phish.example>'})
    assert header_symbols(m) == {"SPOOF_DISPLAY_NAME": 8.0}


def test_display_name_with_another_address() -> None:
    m = message(headers={"From": '"support@bank.example" <x@phish.example>'})
    assert header_symbols(m) == {"FROM_NEQ_DISPLAY_NAME": 4.0}


def test_display_name_with_an_encoded_address_is_read_decoded() -> None:
    m = message(headers={"From": "=?utf-8?q?ceo=40example=2Eorg?= <boss@phish.example>"})
    assert header_symbols(m) == {"SPOOF_DISPLAY_NAME": 8.0}


def test_display_name_naming_a_hosted_domain() -> None:
    m = message(headers={"From": '"Example.org IT Support" <it@phish.example>'})
    assert header_symbols(m) == {"SPOOF_DISPLAY_NAME_DOMAIN": 4.0}


@pytest.mark.parametrize(
    "from_",
    [
        '"alice@example.org" <alice@example.org>',  # the name is the address
        '"Example.org IT" <it@mail.example.org>',  # the From address is in the domain
        '"bob@sub.example.net" <bob@example.net>',  # its own parent domain
        "Alice Example <alice@example.net>",
    ],
)
def test_display_names_that_are_fine(from_: str) -> None:
    assert header_symbols(message(headers={"From": from_})) == {}


# -- Subject ---------------------------------------------------------------------------------


def test_subject_in_capitals() -> None:
    found = header_symbols(message(headers={"Subject": "CLAIM YOUR FREE PRIZE NOW TODAY!!!"}))
    assert set(found) == {"SUBJ_ALL_CAPS"}
    assert 0 < found["SUBJ_ALL_CAPS"] <= 3.0
    assert header_symbols(message(headers={"Subject": "Re: FYI"})) == {}
    assert header_symbols(message(headers={"Subject": "Meeting with IBM and NASA"})) == {}


def test_empty_subject_with_a_link() -> None:
    with_link = "Look at this: https://shop.example/offer\r\n"
    assert header_symbols(message(headers={"Subject": ""}, body=with_link)) == {
        "EMPTY_SUBJECT_WITH_LINK": 2.0
    }
    assert header_symbols(message(headers={"Subject": None}, body=with_link)) == {
        "EMPTY_SUBJECT_WITH_LINK": 2.0
    }
    assert header_symbols(message(headers={"Subject": ""})) == {}  # no link


def test_mixed_scripts_in_the_subject() -> None:
    # "PаyPal" with a Cyrillic а (U+0430), encoded as a client would
    subject = "=?utf-8?b?" + base64.b64encode("Your PаyPal account".encode()).decode() + "?="
    assert header_symbols(message(headers={"Subject": subject})) == {"SUBJECT_MIXED_SCRIPTS": 3.0}
    plain_russian = "=?utf-8?b?" + base64.b64encode("Привет, Bob".encode()).decode() + "?="
    assert header_symbols(message(headers={"Subject": plain_russian})) == {}


def test_mixed_scripts_in_the_from_name() -> None:
    name = "=?utf-8?q?Micr=D0=BEsoft?="  # Cyrillic о
    m = message(headers={"From": f"{name} <no-reply@ms.example>"})
    assert header_symbols(m) == {"FROM_NAME_MIXED_SCRIPTS": 3.0}


# -- recipients ------------------------------------------------------------------------------


def test_undisclosed_recipients() -> None:
    assert header_symbols(message(headers={"To": "undisclosed-recipients:;"})) == {
        "R_UNDISC_RCPT": 3.0
    }
    assert header_symbols(message(headers={"To": "Undisclosed Recipient <u@example.net>"})) == {}


def test_many_recipients_in_to() -> None:
    many = ", ".join(f"user{i}@example.net" for i in range(60))
    assert header_symbols(message(headers={"To": many})) == {"TO_MANY_RECIPIENTS": 1.0}
    few = ", ".join(f"user{i}@example.net" for i in range(10))
    assert header_symbols(message(headers={"To": few})) == {}


# -- MIME ------------------------------------------------------------------------------------


def test_html_only() -> None:
    html = message(content_type="text/html; charset=utf-8", body="<p>Hello</p>")
    assert mime_symbols(html) == {"MIME_HTML_ONLY": 0.2}
    alternative = message(
        content_type='multipart/alternative; boundary="b"',
        body=(
            "--b\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
            "--b\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n--b--\r\n"
        ),
    )
    assert mime_symbols(alternative) == {}


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="http://evil.example/login">https://www.bank.example/login</a>',
        '<a href="https://198.51.100.7/x">www.bank.example</a>',
        '<a href="http://bank.example.evil.example/">bank.example</a>',
    ],
)
def test_link_text_showing_another_domain(anchor: str) -> None:
    found = mime_symbols(message(content_type="text/html", body=f"<p>{anchor}</p>"))
    assert found == {"PHISHING": 4.0, "MIME_HTML_ONLY": 0.2}


@pytest.mark.parametrize(
    "anchor",
    [
        '<a href="https://login.bank.example/x">www.bank.example</a>',  # same organisation
        '<a href="https://evil.example/">Click here</a>',  # text shows no place
        '<a href="mailto:a@bank.example">bank.example</a>',  # not a web link
        '<a href="https://bank.example/">version 1.2</a>',
    ],
)
def test_link_texts_that_are_fine(anchor: str) -> None:
    assert mime_symbols(message(content_type="text/html", body=f"<p>{anchor}</p>")) == {
        "MIME_HTML_ONLY": 0.2
    }


@pytest.mark.parametrize(
    "anchor",
    [
        # a click-tracking redirector that ends at the site shown
        '<a href="http://click.tracker.example/r?u=http%3A%2F%2Fwww.shop.example%2F">'
        "www.shop.example</a>",
        '<a href="http://t.tracker.example/c/12/*http://www.shop.example">www.shop.example</a>',
    ],
)
def test_redirector_to_the_shown_site_is_not_phishing(anchor: str) -> None:
    assert mime_symbols(message(content_type="text/html", body=f"<p>{anchor}</p>")) == {
        "MIME_HTML_ONLY": 0.2
    }


def test_link_through_the_senders_own_click_server_scores_less() -> None:
    """A newsletter from news@mail.comics.example linking "Dilbert.example" through its
    own click server: 1.0, not 4.0; the same link from another sender is 4.0."""
    body = '<p><a href="http://click.comics.example/Click?q=ab12">Dilbert.example</a></p>'
    own = message(
        content_type="text/html", body=body, headers={"From": "News <news@mail.comics.example>"}
    )
    assert mime_symbols(own) == {"PHISHING": 1.0, "MIME_HTML_ONLY": 0.2}
    assert mime_symbols(message(content_type="text/html", body=body)) == {
        "PHISHING": 4.0,
        "MIME_HTML_ONLY": 0.2,
    }


def with_attachment(filename: str, content_type: str = "application/octet-stream") -> ScanMessage:
    return message(
        content_type='multipart/mixed; boundary="b"',
        body=(
            "--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            f"--b\r\nContent-Type: {content_type}\r\n"
            f'Content-Disposition: attachment; filename="{filename}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
        ),
    )


@pytest.mark.parametrize(
    "filename",
    [
        "setup.exe",
        "photo.SCR",
        "run.js",
        "x.vbs",
        "a.ps1",
        "b.jar",
        "c.msi",
        "d.bat",
        "e.cmd",
        "f.com",
        "g.pif",
    ],
)
def test_executable_attachments(filename: str) -> None:
    assert mime_symbols(with_attachment(filename)) == {"MIME_BAD_EXTENSION": 2.0}


@pytest.mark.parametrize("filename", ["invoice.pdf.exe", "scan.jpg   .scr", "Order.DOCX.js"])
def test_double_extensions(filename: str) -> None:
    assert mime_symbols(with_attachment(filename)) == {"MIME_DOUBLE_BAD_EXTENSION": 3.0}


@pytest.mark.parametrize(
    "filename", ["invoice.pdf", "report.exe.pdf", "notes.txt", "archive.tar.gz", "exe"]
)
def test_harmless_attachments(filename: str) -> None:
    assert mime_symbols(with_attachment(filename)) == {}


def test_undeclared_8bit() -> None:
    latin1 = message(content_type="text/plain; charset=iso-8859-1", raw_body=b"Gr\xfc\xdfe\r\n")
    assert mime_symbols(latin1) == {"R_BAD_CTE_7BIT": 3.5}
    utf8 = message(raw_body="Grüße\r\n".encode())
    assert mime_symbols(utf8) == {"R_BAD_CTE_7BIT": 1.05}
    declared = message(headers={"Content-Transfer-Encoding": "8bit"}, raw_body="Grüße\r\n".encode())
    assert mime_symbols(declared) == {}


def test_unknown_charset_and_decode_errors() -> None:
    unknown = message(content_type="text/plain; charset=x-no-such-charset", body="hello\r\n")
    assert mime_symbols(unknown) == {"CHARSET_DECODE_ERROR": 1.0}
    bad_utf8 = message(headers={"Content-Transfer-Encoding": "8bit"}, raw_body=b"caf\xe9 \xff\r\n")
    assert mime_symbols(bad_utf8) == {"CHARSET_DECODE_ERROR": 1.0}


def test_mime_defects() -> None:
    broken = message(
        content_type='multipart/mixed; boundary="b"',
        body="no boundary line at all\r\n",
    )
    found = mime_symbols(broken)
    assert "MIME_BAD_STRUCTURE" in found
    assert "MIME_BAD_STRUCTURE" not in mime_symbols(with_attachment("a.pdf"))
