"""SMTP argument parsing (paths, addresses, ESMTP parameters, xtext, BDAT, AUTH) and message
framing (DATA dot-stuffing, BDAT chunks), as pure functions."""

from __future__ import annotations

import pytest

from pochta.protocols.smtp.data import ChunkedMessage, DataReader
from pochta.protocols.smtp.parse import (
    ParseError,
    bdat_chunk_size,
    decode_base64,
    parse_auth,
    parse_bdat,
    parse_helo,
    parse_mail_from,
    parse_rcpt_to,
    split_command,
    xtext_decode,
    xtext_encode,
)
from pochta.protocols.smtp.replies import (
    BARE_LINEFEED,
    LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    ReplyError,
)

MAX = 1000


def mail(
    arg: str, *, max_message_bytes: int = MAX, dsn: bool = True
) -> tuple[str, dict[str, str | None]]:
    return parse_mail_from(arg, max_message_bytes=max_message_bytes, dsn=dsn)


def rcpt(
    arg: str, *, smtputf8: bool = False, dsn: bool = True
) -> tuple[str, dict[str, str | None]]:
    return parse_rcpt_to(arg, smtputf8=smtputf8, dsn=dsn)


def refusal(call: object, *args: object, **kwargs: object) -> str:
    """The reply a ParseError carries, as "code enhanced"."""
    assert callable(call)
    with pytest.raises(ParseError) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, ReplyError)
    return f"{info.value.reply.code} {info.value.reply.enhanced}"


# -- commands --


def test_split_command() -> None:
    assert split_command("mail FROM:<a@b>") == ("MAIL", "FROM:<a@b>")
    assert split_command("QUIT") == ("QUIT", "")
    assert split_command("") == ("", "")
    assert split_command("NOOP  x") == ("NOOP", " x")


# -- paths and addresses (RFC 5321 §4.1.2) --


@pytest.mark.parametrize(
    ("arg", "address"),
    [
        ("FROM:<a@example.org>", "a@example.org"),
        ("from:<A.B+c@Example.ORG>", "A.B+c@Example.ORG"),  # case kept (RFC 5321 §2.4)
        ("FROM: <a@example.org>", "a@example.org"),  # tolerated space after the colon
        ("FROM:<>", ""),  # the null reverse-path
        ("FROM:<!#$%&'*+-/=?^_`{|}~@example.org>", "!#$%&'*+-/=?^_`{|}~@example.org"),
        ('FROM:<"john doe"@example.org>', '"john doe"@example.org'),
        ('FROM:<"a>b@c"@example.org>', '"a>b@c"@example.org'),  # ">" and "@" inside quotes
        ('FROM:<"a\\"b\\\\"@example.org>', '"a\\"b\\\\"@example.org'),  # quoted-pairSMTP
        ('FROM:<""@example.org>', '""@example.org'),
        ("FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        ("FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
        ("FROM:<a@[ipv6:::1]>", "a@[ipv6:::1]"),
        ("FROM:<a@xn--bcher-kva.example>", "a@xn--bcher-kva.example"),
        ("FROM:<a@a-b--c.example>", "a@a-b--c.example"),
        ("FROM:<a@localhost>", "a@localhost"),
        ("FROM:<a@3com.example>", "a@3com.example"),
        # RFC 5321 §4.1.1.3, Appendix C: the source route is accepted and dropped.
        ("FROM:<@a.example,@b.example:u@c.example>", "u@c.example"),
        ("FROM:<@a.example:u@c.example>", "u@c.example"),
    ],
)
def test_valid_paths(arg: str, address: str) -> None:
    assert mail(arg) == (address, {})


@pytest.mark.parametrize(
    "path",
    [
        "<a>",
        "<a@>",
        "<@example.org>",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<a.@example.org>",
        "<a b@example.org>",
        "<a@-x.example>",
        "<a@x-.example>",
        "<a@x..example>",
        "<a@.x.example>",
        "<a@x.example.>",
        "<a@x_y.example>",
        "<a@[300.1.1.1]>",
        "<a@[192.0.2.01]>",
        "<a@[1.2.3]>",
        "<a@[IPv6:zz::1]>",
        "<a@[IPv6:fe80::1%eth0]>",
        "<a@[tag:something]>",  # General-address-literal: refused
        "<a@[]>",
        "<a@x.example",
        "a@x.example",
        "<a@x.example>junk",
        "<<a@x.example>>",
        "<@a.example u@x.example>",
        "<@-a.example:u@x.example>",
        "<@a.example,b.example:u@x.example>",
        "<a\x01@x.example>",
        "<a\x7f@x.example>",
        '<"unterminated@x.example>',
        '<"a"b@x.example>',
        '<"\t"@x.example>',
        "<a@b@x.example>",
        "",
    ],
)
def test_invalid_paths(path: str) -> None:
    assert refusal(mail, f"FROM:{path}") == "501 5.1.7"
    assert refusal(rcpt, f"TO:{path}") == "501 5.1.3"


def test_path_length_limits() -> None:
    # RFC 5321 §4.5.3.1.3: a path is at most 256 octets, brackets included.
    local = "a" * 64
    domain = f"{'b' * 63}.{'b' * 63}.{'b' * 61}"  # 189 octets
    ok = f"{local}@{domain}"
    assert len(f"<{ok}>") == 256
    assert mail(f"FROM:<{ok}>") == (ok, {})
    too_long = f"{local}x@{domain}"
    with pytest.raises(ParseError) as info:
        mail(f"FROM:<{too_long}>")
    assert info.value.reply.text == "Path too long"
    assert refusal(rcpt, f"TO:<{too_long}>") == "501 5.1.3"
    # RFC 5321 §4.5.3.1.2: a domain is at most 255 octets (here within a long route).
    assert refusal(mail, f"FROM:<@{'a.' * 127}aa:u@x.example>") == "501 5.1.7"


def test_local_part_over_64_is_tolerated() -> None:
    # Deviation from RFC 5321 §4.5.3.1.1, documented in parse.py.
    assert mail(f"FROM:<{'a' * 100}@x.example>")[0] == f"{'a' * 100}@x.example"


def test_utf8_addresses_need_smtputf8() -> None:
    # RFC 6531 §3.3 (the syntax), §3.4 (the parameter), §3.5 (553 5.6.7 without it).
    assert refusal(mail, "FROM:<jösé@example.org>") == "553 5.6.7"
    assert refusal(mail, "FROM:<a@exämple.org>") == "553 5.6.7"
    assert mail("FROM:<jösé@exämple.org> SMTPUTF8") == ("jösé@exämple.org", {"SMTPUTF8": None})
    assert mail('FROM:<"ü ü"@example.org> smtputf8')[0] == '"ü ü"@example.org'
    assert mail("FROM:<用户@例子.广告> SMTPUTF8")[0] == "用户@例子.广告"
    assert rcpt("TO:<ü@example.org>", smtputf8=True) == ("ü@example.org", {})
    assert refusal(rcpt, "TO:<ü@example.org>") == "553 5.6.7"
    # Still no spaces, controls or empty labels.
    assert refusal(mail, "FROM:<ü ü@example.org> SMTPUTF8") == "501 5.1.7"
    assert refusal(mail, "FROM:<ü@ex..ample.org> SMTPUTF8") == "501 5.1.7"
    # A UTF-8 parameter value needs SMTPUTF8 too (RFC 6531 §3.3 esmtp-value).
    assert refusal(mail, "FROM:<a@example.org> AUTH=ü") == "501 5.5.4"


def test_postmaster() -> None:
    # RFC 5321 §4.1.1.3: "<Postmaster>" without a domain, any case; only as a recipient.
    assert rcpt("TO:<Postmaster>") == ("Postmaster", {})
    assert rcpt("TO:<postmaster>") == ("postmaster", {})
    assert rcpt("TO:<@relay.example:POSTMASTER>") == ("POSTMASTER", {})
    assert rcpt("TO:<Postmaster@example.org>") == ("Postmaster@example.org", {})
    assert refusal(mail, "FROM:<Postmaster>") == "501 5.1.7"
    assert refusal(rcpt, "TO:<root>") == "501 5.1.3"


def test_verb_prefix() -> None:
    assert refusal(mail, "TO:<a@example.org>") == "501 5.5.4"
    assert refusal(mail, "FROM <a@example.org>") == "501 5.5.4"
    assert refusal(rcpt, "FROM:<a@example.org>") == "501 5.5.4"
    assert refusal(rcpt, "") == "501 5.5.4"
    assert rcpt("to:<a@example.org>") == ("a@example.org", {})


# -- ESMTP parameters --


def test_mail_parameters() -> None:
    arg = "FROM:<a@example.org> SIZE=0100 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B1 AUTH=<>"
    assert mail(arg) == (
        "a@example.org",
        {
            "SIZE": "100",
            "BODY": "8BITMIME",
            "SMTPUTF8": None,
            "RET": "HDRS",
            "ENVID": "QQ+1",
            "AUTH": "<>",
        },
    )
    assert mail("FROM:<a@example.org>   size=5   body=7BIT ") == (
        "a@example.org",
        {"SIZE": "5", "BODY": "7BIT"},
    )
    assert mail("FROM:<> BODY=BINARYMIME") == ("", {"BODY": "BINARYMIME"})
    assert mail("FROM:<a@example.org> AUTH=a+2Bb@example.org")[1] == {"AUTH": "a+2Bb@example.org"}


def test_size_parameter() -> None:
    # RFC 1870: 1*20DIGIT; over the limit: 552 5.3.4 at MAIL time (§6.1); 0 = no limit.
    assert mail(f"FROM:<a@x.example> SIZE={MAX}")[1] == {"SIZE": str(MAX)}
    assert refusal(mail, f"FROM:<a@x.example> SIZE={MAX + 1}") == "552 5.3.4"
    assert (
        mail("FROM:<a@x.example> SIZE=99999999999", max_message_bytes=0)[1]["SIZE"] == "99999999999"
    )
    assert refusal(mail, "FROM:<a@x.example> SIZE=" + "1" * 21) == "501 5.5.4"
    for bad in ("SIZE", "SIZE=", "SIZE=-1", "SIZE=1k", "SIZE=1 SIZE=2"):
        assert refusal(mail, f"FROM:<a@x.example> {bad}") == "501 5.5.4", bad


@pytest.mark.parametrize(
    "param",
    [
        "BODY",
        "BODY=8BIT",
        "SMTPUTF8=yes",
        "RET",
        "RET=ALL",
        "ENVID",
        "ENVID=a+zz",
        "ENVID=a+2",
        "ENVID=" + "x" * 101,
        "ENVID=+FF",  # not UTF-8
        "AUTH",
        "AUTH=+",
        "-X=1",
        "X_Y",
        "A=b=c",
        "A=",
        "A=\x7f",
    ],
)
def test_bad_mail_parameters(param: str) -> None:
    assert refusal(mail, f"FROM:<a@example.org> {param}") == "501 5.5.4"


@pytest.mark.parametrize("param", ["FOO", "FOO=bar", "X-Y=1", "NOTIFY=NEVER", "ORCPT=rfc822;a"])
def test_unknown_mail_parameters(param: str) -> None:
    # RFC 5321 §4.1.1.11: 555 for parameters not recognised.
    assert refusal(mail, f"FROM:<a@example.org> {param}") == "555 5.5.4"


def test_dsn_parameters_only_with_dsn() -> None:
    assert refusal(mail, "FROM:<a@example.org> RET=FULL", dsn=False) == "555 5.5.4"
    assert refusal(mail, "FROM:<a@example.org> ENVID=x", dsn=False) == "555 5.5.4"
    assert refusal(rcpt, "TO:<a@example.org> NOTIFY=NEVER", dsn=False) == "555 5.5.4"
    assert refusal(rcpt, "TO:<a@example.org> ORCPT=rfc822;a", dsn=False) == "555 5.5.4"
    assert mail("FROM:<a@example.org> BODY=7BIT SIZE=1", dsn=False)[1] == {
        "BODY": "7BIT",
        "SIZE": "1",
    }


def test_rcpt_parameters() -> None:
    # RFC 3461 §4.1 (NOTIFY), §4.2 (ORCPT).
    assert rcpt("TO:<a@example.org> NOTIFY=never") == ("a@example.org", {"NOTIFY": "NEVER"})
    assert rcpt("TO:<a@example.org> NOTIFY=delay,Success,FAILURE")[1] == {
        "NOTIFY": "DELAY,SUCCESS,FAILURE"
    }
    assert rcpt("TO:<a@example.org> ORCPT=rfc822;Bob+40example.org")[1] == {
        "ORCPT": "rfc822;Bob@example.org"
    }
    assert rcpt("TO:<a@example.org> ORCPT=rfc822;")[1] == {"ORCPT": "rfc822;"}
    for bad in (
        "NOTIFY",
        "NOTIFY=",
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=SOMETIMES",
        "NOTIFY=SUCCESS,",
        "ORCPT",
        "ORCPT=rfc822",
        "ORCPT=;a@b",
        "ORCPT=rfc 822;a",
        "ORCPT=rfc822;a+g0",
        "ORCPT=rfc822;" + "a" * 500,
        "NOTIFY=NEVER NOTIFY=NEVER",
    ):
        assert refusal(rcpt, f"TO:<a@example.org> {bad}") == "501 5.5.4", bad
    assert refusal(rcpt, "TO:<a@example.org> SIZE=1") == "555 5.5.4"
    assert refusal(rcpt, "TO:<a@example.org>SIZE=1") == "501 5.1.3"


# -- xtext (RFC 3461 §4) --


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("abc", "abc"),
        ("a+b", "a+2Bb"),
        ("a=b", "a+3Db"),
        ("a b", "a+20b"),
        ("~!", "~!"),
        ("é", "+C3+A9"),
        ("\x00\x7f", "+00+7F"),
    ],
)
def test_xtext(text: str, encoded: str) -> None:
    assert xtext_encode(text) == encoded
    assert xtext_decode(encoded) == text


def test_xtext_decode_lenient_hex_strict_chars() -> None:
    assert xtext_decode("a+2bb") == "a+b"  # lower-case hex: a documented leniency
    for bad in ("+", "+2", "+2G", "a=b", "a b", "é", "\x00"):
        assert refusal(xtext_decode, bad) == "501 5.5.4", bad


# -- HELO, BDAT, AUTH --


def test_parse_helo() -> None:
    assert parse_helo("client.example", "EHLO") == "client.example"
    assert parse_helo(" [192.0.2.1] ", "EHLO") == "[192.0.2.1]"
    assert parse_helo("under_score", "HELO") == "under_score"
    for bad in ("", " ", "a b", "é.example", "a\tb"):
        with pytest.raises(ParseError) as info:
            parse_helo(bad, "HELO")
        assert info.value.reply.text == "Syntax: HELO hostname"


def test_parse_bdat() -> None:
    # RFC 3030 §2: bdat-cmd ::= "BDAT" SP chunk-size [ SP end-marker ] CR LF
    assert parse_bdat("0") == (0, False)
    assert parse_bdat("10 LAST") == (10, True)
    assert parse_bdat("007 last") == (7, True)
    assert parse_bdat("1" * 20) == (int("1" * 20), False)
    for bad in ("", "x", "-1", "10 FOO", "10 LAST x", "10  LAST", "1" * 21, "+1", "1_0"):
        assert refusal(parse_bdat, bad) == "501 5.5.4", bad
    assert bdat_chunk_size("10 FOO") == 10
    assert bdat_chunk_size("10 LAST extra") == 10
    assert bdat_chunk_size("x 10") is None
    assert bdat_chunk_size("1" * 21) is None
    assert bdat_chunk_size("") is None


def test_parse_auth() -> None:
    assert parse_auth("PLAIN") == ("PLAIN", None)
    assert parse_auth("plain AGEAYg==") == ("PLAIN", "AGEAYg==")
    assert parse_auth("SCRAM-SHA-256 =") == ("SCRAM-SHA-256", "=")
    assert parse_auth("X_Y") == ("X_Y", None)
    for bad in ("", "PLAIN a b", "PL@IN", "A" * 21, " PLAIN"):
        assert refusal(parse_auth, bad) == "501 5.5.4", bad


def test_decode_base64() -> None:
    assert decode_base64("") == b""
    assert decode_base64("YQ==") == b"a"
    assert decode_base64("AGFsaWNlAHB3") == b"\x00alice\x00pw"
    for bad in ("YQ", "Y", "=", "Y Q==", "é", "YQ==YQ==x", "*"):
        assert refusal(decode_base64, bad) == "501 5.5.2", bad


# -- DATA framing (RFC 5321 §4.5.2, §2.3.8) --


def reader(**kwargs: object) -> DataReader:
    options: dict[str, object] = {
        "max_message_bytes": 1000,
        "max_line_bytes": 100,
        "bare_newline": "reject",
    }
    options.update(kwargs)
    return DataReader(**options)  # type: ignore[arg-type]


def read_all(r: DataReader, data: bytes, step: int = 0) -> int:
    """Feed ``data`` (in pieces of ``step`` octets; 0 = whole) like the server does: the
    unused rest stays in the buffer. Returns the octets left unused."""
    buf = bytearray()
    step = step or max(len(data), 1)
    for i in range(0, len(data), step):
        buf += data[i : i + step]
        del buf[: r.feed(buf)]
        if r.done:
            return len(buf) + max(0, len(data) - (i + step))
    return len(buf)


@pytest.mark.parametrize("step", [0, 1, 2, 3, 7])
def test_data_reader(step: int) -> None:
    r = reader()
    rest = read_all(r, b"Subject: x\r\n\r\n..dot\r\n\r\n.a\r\n.\r\nNOOP\r\n", step)
    assert r.done
    assert r.failure is None
    assert r.content == b"Subject: x\r\n\r\n.dot\r\n\r\na\r\n"
    assert rest == len(b"NOOP\r\n")
    assert r.size == len(r.content)


def test_data_reader_waits_for_the_whole_terminator() -> None:
    r = reader()
    buf = bytearray(b"abc\r\n.")
    del buf[: r.feed(buf)]
    assert not r.done
    assert buf == b"."
    buf += b"\r"
    del buf[: r.feed(buf)]
    assert not r.done
    buf += b"\n"
    del buf[: r.feed(buf)]
    assert r.done
    assert r.content == b"abc\r\n"


def test_data_reader_cr_split_from_its_lf() -> None:
    # A CR at the end of one packet and the LF at the start of the next are one CRLF.
    r = reader()
    assert read_all(r, b"abc\r\ndef\r\n.\r\n", step=4) == 0
    assert r.content == b"abc\r\ndef\r\n"
    assert r.failure is None


@pytest.mark.parametrize("step", [0, 1, 5])
def test_data_reader_size_limit(step: int) -> None:
    r = reader(max_message_bytes=10)
    read_all(r, b"12345678\r\n.\r\n", step)
    assert (r.failure, r.content) == (None, b"12345678\r\n")
    r = reader(max_message_bytes=10)
    read_all(r, b"123456789\r\n.\r\n", step)
    assert (r.failure, r.content, r.size) == (MESSAGE_TOO_BIG, b"", 11)


@pytest.mark.parametrize("step", [0, 1, 5])
def test_data_reader_line_limit(step: int) -> None:
    r = reader(max_line_bytes=10)
    read_all(r, b"12345678\r\n.\r\n", step)
    assert r.failure is None
    r = reader(max_line_bytes=10)
    read_all(r, b"123456789\r\n.\r\n", step)
    assert r.failure == LINE_TOO_LONG
    # Stuffed dots do not count; the limit is on the line as sent, less its dot.
    r = reader(max_line_bytes=10)
    read_all(r, b"..2345678\r\n.\r\n", step)
    assert r.failure is None


@pytest.mark.parametrize("step", [0, 1, 4])
def test_data_reader_bare_newlines(step: int) -> None:
    for data in (b"a\nb\r\n.\r\n", b"a\rb\r\n.\r\n", b"a\r\r\n.\r\n", b"\n.\r\n.\r\n"):
        r = reader()
        read_all(r, data, step)
        assert (r.done, r.failure, r.content) == (True, BARE_LINEFEED, b""), data
    r = reader(bare_newline="normalize")
    read_all(r, b"a\nb\rc\r\r\n\n.\n.\r\n.\r\n", step)
    assert (r.done, r.failure) == (True, None)
    assert r.content == b"a\r\nb\r\nc\r\n\r\n\r\n.\r\n.\r\n"


def test_data_reader_failure_order() -> None:
    # One fixed order: too big, then bare newline, then long line.
    r = reader(max_message_bytes=5, max_line_bytes=3)
    read_all(r, b"a\nbcdefgh\r\n.\r\n")
    assert r.failure == MESSAGE_TOO_BIG
    r = reader(max_line_bytes=3)
    read_all(r, b"a\nbcdefgh\r\n.\r\n")
    assert r.failure == BARE_LINEFEED


def test_data_reader_normalize_counts_lines_between_bare_newlines() -> None:
    r = reader(bare_newline="normalize", max_line_bytes=10)
    read_all(r, b"12345678\n12345678\r12345678\r\n.\r\n", step=3)
    assert r.failure is None
    r = reader(bare_newline="normalize", max_line_bytes=10)
    read_all(r, b"12345678\n123456789\r\n.\r\n", step=3)
    assert r.failure == LINE_TOO_LONG


def test_data_reader_holds_little() -> None:
    # A long line is not kept in the buffer: all but the last octet is used at once.
    r = reader(max_line_bytes=10**9, max_message_bytes=10**9)
    buf = bytearray(b"x" * 100_000)
    assert r.feed(buf) == 99_999
    assert r.feed(bytearray(b"\r")) == 0


def test_chunked_message() -> None:
    m = ChunkedMessage(max_message_bytes=10)
    m.add(b"12345")
    m.add(bytearray(b"\r\n.\r\n"))
    assert (m.failure, m.content, m.size) == (None, b"12345\r\n.\r\n", 10)
    m.add(b"x")
    assert (m.failure, m.content, m.size) == (MESSAGE_TOO_BIG, b"", 11)
    unlimited = ChunkedMessage(max_message_bytes=0)
    unlimited.add(b"x" * 100)
    assert unlimited.failure is None
