"""Property tests for the SMTP core (STYLE.md §8, after h11's fuzz/afl-server.py).

* Any byte stream, fed whole, byte by byte or split anywhere, gives the same events and the
  same output, and nothing raises.
* The argument parsers raise nothing but ParseError, for any text.
* xtext round-trips; valid addresses parse to themselves; DATA dot-stuffing round-trips.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Iterator
from typing import Any, Literal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pochta.protocols.smtp import NEED_DATA, Event
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
    xtext_decode,
    xtext_encode,
)
from tests.unit.test_smtp_core import App, exchange, make_conn

# Pieces an SMTP client (or an attacker) sends, to reach deep states quickly.
TOKENS = [
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"LHLO c.example\r\n",
    b"MAIL FROM:<a@example.org>\r\n",
    b"MAIL FROM:<bad@example.org>\r\n",
    b"MAIL FROM:<> SMTPUTF8 BODY=BINARYMIME SIZE=50\r\n",
    b"RCPT TO:<b@example.org>\r\n",
    b"RCPT TO:<full@example.org>\r\n",
    b"RCPT TO:<unknown@example.org>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT x\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"VRFY x\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n",
    b"AUTH LOGIN\r\n",
    b"YWxpY2VAZXhhbXBsZS50ZXN0\r\n",
    b"c2VjcmV0\r\n",
    b"*\r\n",
    b"=\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"x" * 70,
    b"hello world\r\n",
    b"\xff\x00",
]

SMALL_LIMITS: dict[str, Any] = {
    "max_message_bytes": 120,
    "max_recipients": 3,
    "max_command_line_bytes": 64,
    "max_data_line_bytes": 40,
    "max_commands_before_mail": 30,
    "max_errors": 20,
}

MILD_NOISE = [b"NOOP\r\n", b"RSET\r\n", b"VRFY x\r\n", b"HELP\r\n", b"FOO\r\n", b"\n"]
CONTENT = [b"line", b"\r\n", b".", b"..", b"\n", b"\r", b"x" * 45, b"\x00\xff", b"MAIL FROM:<e@x>"]


@st.composite
def sessions(draw: st.DrawFn, lmtp: bool = False, auth: bool = False) -> bytes:
    """Mostly well-formed sessions (with noise), so that the deep states are reached."""
    greetings = [b"LHLO c.example\r\n"] if lmtp else [b"EHLO c.example\r\n", b"HELO c\r\n"]
    parts = [draw(st.sampled_from(greetings))]
    if auth:
        parts.append(b"AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n")
    for _ in range(draw(st.integers(0, 3))):
        parts += draw(st.lists(st.sampled_from(MILD_NOISE), max_size=2))
        parts.append(draw(st.sampled_from([t for t in TOKENS if t.startswith(b"MAIL")])))
        parts += draw(
            st.lists(st.sampled_from([t for t in TOKENS if t.startswith(b"RCPT")]), max_size=4)
        )
        if draw(st.booleans()):
            parts.append(b"DATA\r\n")
            parts += draw(st.lists(st.sampled_from(CONTENT), max_size=20))
            parts.append(b"\r\n.\r\n")
        else:
            chunks = [
                *draw(st.lists(st.binary(max_size=40), max_size=3)),
                draw(st.binary(max_size=9)),
            ]
            for i, chunk in enumerate(chunks):
                last = b" LAST" if i == len(chunks) - 1 else b""
                parts.append(b"BDAT %d%s\r\n%s" % (len(chunk), last, chunk))
    parts.append(draw(st.sampled_from([b"QUIT\r\n", b"", b"NOOP\r\n"])))
    return b"".join(parts)


noise = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
    st.binary(max_size=300),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), max_size=40).map(b"".join),
)

connections = st.fixed_dictionaries(
    {
        "lmtp": st.booleans(),
        "bare_newline": st.sampled_from(["reject", "normalize"]),
        "tls_active": st.booleans(),
        "auth_requires_tls": st.booleans(),
        "require_auth": st.sampled_from([False, False, True]),
        "dsn": st.booleans(),
    }
)


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` cut at the given offsets (out-of-range and repeated ones ignored)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    for start, end in itertools.pairwise(bounds):
        yield data[start:end]


def run(data: bytes, cuts: list[int], options: dict[str, Any]) -> tuple[list[Event], bytes, bool]:
    """Feed ``data`` cut at ``cuts``, then EOF; the events seen, the output, closed."""
    conn = make_conn(
        tls_available=False,  # STARTTLS drops buffered input on purpose: that depends on cuts
        auth_mechanisms=["PLAIN", "LOGIN"],  # not SCRAM: its nonce is random
        **SMALL_LIMITS,
        **options,
    )
    app = App()
    out = bytearray()
    for piece in pieces(data, cuts):
        if piece:
            out += exchange(conn, app, piece)
    out += exchange(conn, app, b"")
    return app.events, bytes(out), conn.closed


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, list[int], dict[str, Any]]:
    """A connection's options, a byte stream for it, and where to cut the stream."""
    options: dict[str, Any] = draw(connections)
    auth = options["require_auth"] and (options["tls_active"] or not options["auth_requires_tls"])
    data = draw(st.one_of(sessions(bool(options["lmtp"]), bool(auth)), noise))
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=12))
    return data, cuts, options


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
@example((b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n.\r", [], {}))
@example((b"LHLO x\r\nBDAT 5\r\nQUIT\r\n", [3, 9, 16], {"lmtp": True}))
@example((b"NOOP " + b"x" * 100 + b"\r\r\nNOOP\r\n", [50, 101, 102], {}))
def test_cuts_do_not_matter(case: tuple[bytes, list[int], dict[str, Any]]) -> None:
    data, cuts, options = case
    whole = run(data, [], options)
    assert run(data, cuts, options) == whole
    if len(data) <= 120:
        assert run(data, list(range(len(data))), options) == whole
    _, out, closed = whole
    assert closed  # EOF always ends the session
    assert out.endswith(b"\r\n") or out == b""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20), connections, st.booleans())
def test_never_raises(packets: list[bytes], options: dict[str, Any], tls: bool) -> None:
    # With STARTTLS on too; the app answers every event.
    conn = make_conn(tls_available=tls, auth_mechanisms=["PLAIN", "LOGIN"], **options)
    app = App()
    for packet in [b"EHLO x\r\nSTARTTLS\r\n", *packets, b""]:
        out = exchange(conn, app, packet)
        assert all(line[:3].isdigit() for line in out.split(b"\r\n")[:-1])
    assert conn.closed
    assert conn.next_event() is NEED_DATA


def _smuggling_parts() -> st.SearchStrategy[bytes]:
    return st.lists(
        st.sampled_from(
            [b"\r\n", b"\n", b"\r", b".", b"MAIL FROM:<evil@x.example>", b"DATA", b"a", b" "]
        ),
        max_size=30,
    ).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(_smuggling_parts(), st.sampled_from(["reject", "normalize"]), st.lists(st.integers(0, 400)))
@example(b"\n.\nMAIL FROM:<evil@x.example>\r\n", "normalize", [])
@example(b"\r.\rMAIL FROM:<evil@x.example>\r\n", "reject", [1])
def test_no_command_inside_data_runs(content: bytes, mode: str, cuts: list[int]) -> None:
    # Whatever the content, a command inside it is never executed unless the content holds
    # a real CRLF "." CRLF before it.
    data = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n" + content
    events, _, _ = run(data, [c for c in cuts if c <= len(data)], {"bare_newline": mode})
    body = b"\r\n" + content
    if b"\r\n.\r\n" not in body:
        assert not any(getattr(e, "address", "") == "evil@x.example" for e in events)


# -- parsers --

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=80) | st.text(
    alphabet=string.printable, max_size=80
)
command_args = st.one_of(
    texts,
    st.builds(
        lambda prefix, body, rest: f"{prefix}{body}{rest}",
        st.sampled_from(["FROM:", "TO:", "from: ", "FROM:<", "TO:<@"]),
        texts,
        st.sampled_from(["", ">", "> SIZE=1", "> NOTIFY=NEVER", ">ORCPT=x", "> SMTPUTF8"]),
    ),
)


def _parse_error(call: Callable[[], object]) -> ParseError | None:
    try:
        call()
    except ParseError as exc:
        return exc
    return None


@settings(max_examples=500, deadline=None)
@given(command_args, st.booleans(), st.integers(0, 10**6))
@example('FROM:<"a\\', True, 0)
@example("FROM:<@:a@b>", False, 0)
@example("TO:<a@[IPv6:::1%x]>", True, 0)
@example("FROM:<a@b> SIZE=" + "9" * 5000, False, 10)
@example("FROM:<\ud7ff@b> SMTPUTF8", False, 0)
def test_parsers_raise_only_parse_error(arg: str, flag: bool, limit: int) -> None:
    calls = [
        lambda: parse_mail_from(arg, max_message_bytes=limit, dsn=flag),
        lambda: parse_rcpt_to(arg, smtputf8=flag, dsn=not flag),
        lambda: parse_bdat(arg),
        lambda: parse_auth(arg),
        lambda: parse_helo(arg, "EHLO"),
        lambda: xtext_decode(arg),
        lambda: decode_base64(arg),
    ]
    for call in calls:
        error = _parse_error(call)
        if error is not None:
            assert 400 <= error.reply.code < 600
            assert "\r" not in error.reply.text
            assert "\n" not in error.reply.text
    size = bdat_chunk_size(arg)
    assert size is None or size >= 0


@given(st.text(alphabet=st.characters(codec="utf-8")))
@example("+=\x00é")
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert all("!" <= ch <= "~" and ch != "=" for ch in encoded)
    assert xtext_decode(encoded) == text


_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=10)
labels = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)


@given(
    st.lists(atoms, min_size=1, max_size=4).map(".".join),
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.lists(st.lists(labels, min_size=1, max_size=2).map(".".join), max_size=3),
)
def test_addresses_parse_to_themselves(local: str, domain: str, route: list[str]) -> None:
    address = f"{local}@{domain}"
    prefix = ",".join(f"@{d}" for d in route) + ":" if route else ""
    assert parse_mail_from(f"FROM:<{prefix}{address}>", max_message_bytes=0, dsn=True) == (
        address,
        {},
    )
    assert parse_rcpt_to(f"TO:<{address}> NOTIFY=NEVER", smtputf8=False, dsn=True) == (
        address,
        {"NOTIFY": "NEVER"},
    )


# -- DATA framing --

Mode = Literal["reject", "normalize"]
modes: st.SearchStrategy[Mode] = st.sampled_from(["reject", "normalize"])


def stuff(lines: list[bytes]) -> bytes:
    """What a client sends for these lines (RFC 5321 §4.5.2), with the terminator."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


lines_st = st.lists(
    st.lists(
        st.sampled_from([b".", b"a", b" ", b"\x00", b"\xff", b"..", b"x" * 10]), max_size=6
    ).map(b"".join),
    max_size=12,
)


@settings(max_examples=300)
@given(lines_st, st.lists(st.integers(0, 200), max_size=10), modes)
@example([b"."], [1, 2], "reject")
@example([b"", b"."], [2, 3], "normalize")
def test_dot_stuffing_round_trip(lines: list[bytes], cuts: list[int], mode: Mode) -> None:
    data = stuff(lines) + b".\r\nNEXT"
    reader = DataReader(max_message_bytes=0, max_line_bytes=1000, bare_newline=mode)
    buf = bytearray()
    fed = 0
    for piece in pieces(data, cuts):
        buf += piece
        fed += len(piece)
        del buf[: reader.feed(buf)]
        if reader.done:
            buf += data[fed:]
            break
    assert reader.done
    assert reader.failure is None
    assert reader.content == b"".join(line + b"\r\n" for line in lines)
    assert bytes(buf) == b"NEXT"


@settings(max_examples=300)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=10), modes)
def test_data_reader_cuts_do_not_matter(data: bytes, cuts: list[int], mode: Mode) -> None:
    def read(points: list[int]) -> tuple[bool, int, bytes, object, int]:
        reader = DataReader(max_message_bytes=100, max_line_bytes=20, bare_newline=mode)
        buf = bytearray()
        used = 0
        for piece in pieces(data, points):
            buf += piece
            n = reader.feed(buf)
            used += n
            del buf[:n]
            if reader.done:
                break
        return reader.done, used, reader.content, reader.failure, reader.size

    whole = read([])
    assert read(cuts) == whole
    if whole[0]:
        assert read(list(range(len(data)))) == whole


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"."]), max_size=40).map(b"".join),
    st.lists(st.integers(0, 80), max_size=10),
)
@example(b"a\r\nb", [2])
def test_bdat_normalize_cuts_do_not_matter(data: bytes, cuts: list[int]) -> None:
    # BDAT text content (issue 12 point 2): however the chunks cut it, every CR and LF ends
    # up in a CRLF, and a CRLF cut between two chunks is still one line end.
    message = ChunkedMessage(max_message_bytes=0, normalize=True)
    for piece in pieces(data, cuts):
        message.add(piece)
    whole = ChunkedMessage(max_message_bytes=0, normalize=True)
    whole.add(data)
    assert message.content == whole.content
    expected = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert message.content == expected
    assert message.failure is None
