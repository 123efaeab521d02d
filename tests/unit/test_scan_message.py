"""spam/message.py: the message as the checks read it, parsed once, bounded, never raising."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.spam.message import (
    _TEXT_URL,
    MAX_ADDRESSES,
    MAX_SCAN_BYTES,
    MAX_URLS,
    Author,
    Link,
    ScanMessage,
    _may_hold_links,
)

MULTIPART = (
    b"From: =?utf-8?q?Al=C3=AFce?= <Alice@Example.NET>\r\n"
    b"To: bob@example.org, carol@example.org\r\n"
    b"Cc: team: dan@example.org, erin@example.org;\r\n"
    b"Subject: =?utf-8?b?0J/RgNC40LLQtdGC?=\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Caf\xc3\xa9 at www.cafe.example/menu.\r\n"
    b"--b\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b'<html><head><style>p{}</style></head><body><p>Hi <a href="https://x.example/a">'
    b'click <b>here</b></a><img src="https://img.example/p.png"></p></body></html>\r\n'
    b"--b\r\n"
    b"Content-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="a.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0=\r\n"
    b"--b--\r\n"
)


def test_headers_decoded() -> None:
    m = ScanMessage(MULTIPART)
    assert m.header("Subject") == "Привет"
    assert m.header("x-missing") is None
    assert m.headers("to") == ["bob@example.org, carol@example.org"]


def test_author_is_parsed_before_decoding() -> None:
    assert ScanMessage(MULTIPART).author == Author("Alïce", "Alice@example.net")
    # an encoded word that decodes to an address stays the display name
    m = ScanMessage(b"From: =?utf-8?q?ceo=40example=2Eorg?= <x@evil.example>\r\n\r\n")
    assert m.author == Author("ceo@example.org", "x@evil.example")
    assert m.author.domain == "evil.example"
    assert ScanMessage(b"Subject: x\r\n\r\n").author is None
    assert ScanMessage(b"From: nobody\r\n\r\n").author == Author("", "")


def test_address_count_counts_group_members_not_groups() -> None:
    m = ScanMessage(MULTIPART)
    assert m.address_count("to") == 2
    assert m.address_count("cc") == 2
    assert m.address_count("bcc") == 0
    many = ", ".join(f"u{i}@example.net" for i in range(MAX_ADDRESSES + 50))
    assert ScanMessage(f"To: {many}\r\n\r\n".encode()).address_count("to") == MAX_ADDRESSES


def test_parts_links_and_attachments() -> None:
    m = ScanMessage(MULTIPART)
    assert [(p.content_type, p.charset) for p in m.text_parts] == [
        ("text/plain", "utf-8"),
        ("text/html", ""),
    ]
    plain, html = m.text_parts
    assert plain.text.startswith("Café")
    assert (plain.transfer_encoding, plain.raw_8bit) == ("8bit", True)
    assert (html.transfer_encoding, html.raw_8bit) == ("", False)
    assert "p{}" not in html.text  # style is not visible text
    assert "click here" in html.text
    assert m.links == [
        Link("www.cafe.example/menu", None, "text"),
        Link("https://x.example/a", "click here", "href"),
        Link("https://img.example/p.png", None, "img"),
    ]
    assert [(a.filename, a.content_type) for a in m.attachments] == [("a.pdf", "application/pdf")]
    assert m.decode_errors == 0
    assert m.defects == 0
    assert not m.truncated


def test_bounds() -> None:
    links = " ".join(f"https://l{i}.example/" for i in range(MAX_URLS + 10))
    big = b"Subject: x\r\n\r\n" + links.encode() + b"\r\n" + b"x" * MAX_SCAN_BYTES
    m = ScanMessage(big)
    assert len(m.links) == MAX_URLS
    assert m.truncated


def test_unknown_charset_counts_as_a_decode_error() -> None:
    m = ScanMessage(b"Content-Type: text/plain; charset=x-nope\r\n\r\nhello\r\n")
    assert m.decode_errors == 1
    assert m.text.startswith("hello")


def _read_everything(m: ScanMessage) -> None:
    m.header("subject")
    m.headers("received")
    _ = (m.author, m.address_count("to"), m.address_count("cc"))
    _ = (m.text_parts, m.text, m.links, m.attachments, m.decode_errors, m.defects, m.truncated)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\r\n\r\n")
@example(b'From: "\\\r\n\r\n')
@example(b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n")
@example(b"Content-Type: text/html\r\n\r\n<a href='http://[::1'>x</a><![CDATA[")
@example(b"Subject: =?x-nope?q?abc?=\r\nFrom: =?utf-8?b?////?= <@>\r\n\r\n")
@example(b'Content-Type: text/plain; charset="\xff"\r\n\r\n\xff\xfe')
def test_never_raises_on_arbitrary_bytes(content: bytes) -> None:
    _read_everything(ScanMessage(content))


_HEADER_LINES = st.sampled_from(
    [
        b"From: a@b.example\r\n",
        b'From: "x <y@z>" <\r\n',
        b"To: undisclosed-recipients:;\r\n",
        b"Content-Type: multipart/alternative; boundary=zz\r\n",
        b"Content-Type: text/html; charset=utf-7\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename*=utf-8''%ff%fe.exe\r\n",
        b"Subject: =?utf-8?q?=FF?=\r\n",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_HEADER_LINES, max_size=6), st.binary(max_size=2048))
def test_never_raises_on_mime_shaped_input(headers: list[bytes], body: bytes) -> None:
    content = b"".join(headers) + b"\r\n--zz\r\n" + body + b"\r\n--zz--\r\n"
    _read_everything(ScanMessage(content))


PIECES = [*"hHtTpPsSwW.:/ x\u017fKk\u212a\u0130", "http", "WWW.", "://"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_the_link_precheck_never_hides_a_link(text: str) -> None:
    """The cheap test before the case-blind URL expression: when the expression finds a
    link, the test must have said there may be one."""
    if _TEXT_URL.search(text):
        assert _may_hold_links(text)
