"""The sans-IO IMAP reader and writer: whole commands with literals, errors, limits, and
the same events however the bytes are split."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import (
    Command,
    CommandError,
    CommandParser,
    ContinuationRequest,
    Quoted,
    RawLine,
)
from pochta.protocols.imap.render import (
    decode_mailbox,
    encode_mailbox,
    format_internaldate,
    render,
    set_text,
)
from pochta.protocols.imap.search_return import ReturnOptions
from pochta.protocols.imap.values import Atom


def events(data: bytes, parser: CommandParser | None = None) -> list[object]:
    p = parser or CommandParser()
    p.feed(data)
    out = []
    while (event := p.next_event()) is not None:
        out.append(event)
    return out


def one(data: bytes) -> Command:
    (cmd,) = [e for e in events(data) if not isinstance(e, ContinuationRequest)]
    assert isinstance(cmd, Command), cmd
    return cmd


def test_rfc9051_example_commands() -> None:
    assert one(b"a001 LOGIN SMITH SESAME\r\n") == Command("a001", "LOGIN", ["SMITH", "SESAME"])
    cmd = one(b'A142 SELECT "INBOX"\r\n')
    assert cmd.args == ["INBOX"]
    assert isinstance(cmd.args[0], Quoted)
    cmd = one(b"A999 UID FETCH 4827313:4828442 FLAGS\r\n")
    assert cmd.name == "UID FETCH"
    cmd = one(b"a003 fetch 12 (flags body[header.fields (date from)]<0.100>)\r\n")
    assert cmd.name == "FETCH"
    assert cmd.args[1] == ["flags", "body[header.fields (date from)]<0.100>"]
    item = C.fetch_item("body[header.fields (date from)]<0.100>")
    assert item.name == "BODY[HEADER.FIELDS (DATE FROM)]<0>"
    assert item.partial == (0, 100)
    assert item.peek is False


def test_synchronizing_literal_asks_for_continuation_once() -> None:
    p = CommandParser()
    p.feed(b"A003 APPEND saved-messages (\\Seen) {12}\r\n")
    assert p.next_event() == ContinuationRequest()
    assert p.next_event() is None
    p.feed(b"Hello World!")
    assert p.next_event() is None
    p.feed(b"\r\n")
    cmd = p.next_event()
    assert isinstance(cmd, Command)
    assert cmd.args == ["saved-messages", ["\\Seen"], b"Hello World!"]
    messages = C.append_args(cmd).messages
    assert messages == [(["\\Seen"], None, b"Hello World!")]


def test_literal_plus_needs_no_continuation() -> None:
    assert events(b"a LOGIN {3+}\r\nbob {4+}\r\npass\r\n") == [
        Command("a", "LOGIN", [b"bob", b"pass"])
    ]


def test_errors_are_bad_and_parsing_goes_on() -> None:
    out = events(b'a1 FETCH 1 (FLAGS\r\na2 LOGIN "x\r\na3 NOOP\r\n')
    assert isinstance(out[0], CommandError)
    assert out[0].tag == "a1"
    assert isinstance(out[1], CommandError)
    assert out[2] == Command("a3", "NOOP", [])


def test_too_large_literal_and_line() -> None:
    p = CommandParser(max_literal=100, max_command=200)
    out = events(b"a APPEND INBOX {1000}\r\nb NOOP\r\n", p)
    assert isinstance(out[0], CommandError)
    assert out[0].too_big
    assert out[1] == Command("b", "NOOP", [])
    # A non-synchronizing literal that is too big: its data is skipped.
    p = CommandParser(max_literal=10, max_command=200)
    out = events(b"a APPEND INBOX {20+}\r\n" + b"x" * 20 + b"\r\nb NOOP\r\n", p)
    assert isinstance(out[0], CommandError)
    assert out[-1] == Command("b", "NOOP", [])
    p = CommandParser(max_command=50)
    out = events(b"a NOOP " + b"x" * 100 + b"\r\nb NOOP\r\n", p)
    assert isinstance(out[0], CommandError)
    assert out[-1] == Command("b", "NOOP", [])


def test_append_literals_do_not_count_as_command_length() -> None:
    p = CommandParser(max_literal=10_000, max_command=100)
    body = b"x" * 5000
    out = events(b"a APPEND INBOX {5000+}\r\n" + body + b" {5000+}\r\n" + body + b"\r\n", p)
    assert out == [Command("a", "APPEND", ["INBOX", body, body])]


def test_raw_lines_on_request() -> None:
    p = CommandParser()
    p.expect_line()
    assert events(b"dGVzdA==\r\na NOOP\r\n", p) == [RawLine(b"dGVzdA=="), Command("a", "NOOP", [])]


def test_search_keys_and_sets() -> None:
    cmd = one(b'a SEARCH CHARSET UTF-8 OR FROM "smith" NOT SEEN 1:3,5 UID 7:*\r\n')
    args = C.search_args(cmd)
    assert args.charset == "UTF-8"
    key = args.key
    assert key[0] == "and"
    assert key[1][0] == ("or", ("header", "from", "smith"), ("not", ("flag", "\\Seen", True)))
    assert C.bind_sets(key[1][1], exists=4, max_uid=9) == ("seq", [1, 2, 3, 5])
    assert C.bind_sets(key[1][2], exists=4, max_uid=9) == ("uid", [7, 8, 9])
    args = C.search_args(one(b"a UID SEARCH RETURN (MIN COUNT) SINCE 1-Feb-1994\r\n"))
    assert args.returns == ReturnOptions(min=True, count=True)
    assert args.key == ("date", "since", dt.date(1994, 2, 1), False)
    with pytest.raises(C.BadArgs):
        C.search_args(one(b"a SEARCH FROBNICATE\r\n"))


def test_store_and_select_arguments() -> None:
    args = C.store_args(one(b"a STORE 2:4 (UNCHANGEDSINCE 12) +FLAGS.SILENT (\\Deleted)\r\n"))
    assert (args.sign, args.silent, args.flags, args.unchanged_since) == (
        "+",
        True,
        ["\\Deleted"],
        12,
    )
    sel = C.select_args(one(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41:211))\r\n"))
    assert sel.qresync is not None
    assert sel.qresync.uidvalidity == 67890007
    assert sel.qresync.known_uids is not None
    assert sel.qresync.known_uids.resolve(300)[:2] == [41, 42]


def test_render_values() -> None:
    assert render(None) == b"NIL"
    assert render(["a b", 3, Atom("\\Seen"), b"x\r\ny"]) == b'("a b" 3 \\Seen {4}\r\nx\r\ny)'
    assert render('say "hi"') == b'"say \\"hi\\""'
    assert render(b"\x00\x01", binary=True) == b"~{2}\r\n\x00\x01"
    assert render("Zürich") == b"{7}\r\nZ\xc3\xbcrich"
    assert set_text([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    when = dt.datetime(2026, 1, 5, 9, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert format_internaldate(when) == " 5-Jan-2026 09:03:04 -0500"


def test_modified_utf7_examples() -> None:
    # RFC 3501 §5.1.3
    assert encode_mailbox("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_mailbox("&U,BTFw-") == "台北"
    assert encode_mailbox("A&B") == "A&-B"
    assert decode_mailbox("A&-B") == "A&B"
    for bad in ("&Jjo!", "&U,BTFw", "&AGE-"):
        with pytest.raises(ValueError, match=r"UTF-7|base64|&"):
            decode_mailbox(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_any_bytes_split_anywhere_give_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = events(data, CommandParser(max_command=200, max_literal=100))
    p = CommandParser(max_command=200, max_literal=100)
    split: list[object] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        p.feed(data[last:cut])
        last = cut
        while (event := p.next_event()) is not None:
            split.append(event)
    drop = ContinuationRequest()
    assert [e for e in whole if e != drop] == [e for e in split if e != drop]


COMMANDS = st.sampled_from(
    [
        b"a1 NOOP\r\n",
        b"a2 FETCH 1:* (FLAGS BODY.PEEK[1.2.MIME] BINARY[2]<0.10>)\r\n",
        b'a3 SEARCH OR (FROM "x" SMALLER 30) NOT KEYWORD $Junk\r\n',
        b"a4 APPEND INBOX {3+}\r\nabc\r\n",
        b"a5 STORE 1 +FLAGS (\\Seen)\r\n",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(COMMANDS, min_size=1, max_size=5), st.data())
def test_pipelined_valid_commands_parse_in_order(cmds: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(cmds)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream)))
    p = CommandParser()
    p.feed(stream[:cut])
    out = []
    while (event := p.next_event()) is not None:
        out.append(event)
    p.feed(stream[cut:])
    while (event := p.next_event()) is not None:
        out.append(event)
    tags = [e.tag for e in out if isinstance(e, Command)]
    assert tags == [c.split(b" ")[0].decode() for c in cmds]


# -- limits before login (issue 12, point 13) -----------------------------------------------


def anonymous(**limits: int) -> CommandParser:
    """A parser as a session has it before login."""
    return CommandParser(authenticated=False, max_literal_before_login=8192, **limits)


def test_append_before_login_is_refused_without_continuation() -> None:
    # RFC 9051 §6.3.12: APPEND needs the authenticated state; no "+" invites the message.
    out = events(b"a1 APPEND INBOX {10}\r\na2 NOOP\r\n", anonymous())
    assert out == [CommandError("a1", "Log in first"), Command("a2", "NOOP", [])]
    # A LITERAL+ message is on its way anyway: skipped, not buffered; the stream goes on.
    out = events(b"a1 APPEND INBOX {10+}\r\n0123456789\r\na2 NOOP\r\n", anonymous())
    assert out == [CommandError("a1", "Log in first"), Command("a2", "NOOP", [])]


def test_large_literal_before_login_gets_no_continuation() -> None:
    out = events(b"a1 LOGIN {9000}\r\na2 NOOP\r\n", anonymous())
    assert out == [CommandError("a1", "Literal too large before login"), Command("a2", "NOOP", [])]
    # A small one is still fine (a password with spaces or quotes).
    p = anonymous()
    assert events(b"a3 LOGIN {5}\r\n", p) == [ContinuationRequest()]
    assert events(b"alice {4+}\r\npass\r\n", p) == [Command("a3", "LOGIN", [b"alice", b"pass"])]


def test_large_literal_plus_before_login_ends_the_stream() -> None:
    p = anonymous()
    out = events(b"a1 LOGIN {9000+}\r\n" + b"x" * 100, p)
    assert out == [CommandError("a1", "Literal too large before login", fatal=True)]
    assert not p.in_command  # nothing held
    assert events(b"x" * 8900 + b"\r\na2 NOOP\r\n", p) == []
    # Also inside a command already refused (its LITERAL+ data would be skipped).
    p = anonymous()
    out = events(b"a1 APPEND INBOX {5+}\r\nhello {9000+}\r\n", p)
    assert out == [
        CommandError("a1", "Log in first"),
        CommandError("a1", "Literal too large before login", fatal=True),
    ]


def test_after_login_the_large_limits_apply() -> None:
    p = anonymous()
    p.authenticated = True
    assert events(b"a1 APPEND INBOX {9000}\r\n", p) == [ContinuationRequest()]


def test_multiappend_total_is_capped_before_the_continuation() -> None:
    p = CommandParser(max_literal=100, max_append=150)
    out = events(b"a1 APPEND INBOX {100+}\r\n" + b"x" * 100 + b" {100}\r\na2 NOOP\r\n", p)
    assert out == [
        CommandError("a1", "Messages too large together; append them one by one", too_big=True),
        Command("a2", "NOOP", []),
    ]
    # Under the cap both go through.
    p = CommandParser(max_literal=100, max_append=200)
    out = events(b"a1 APPEND INBOX {100+}\r\n" + b"x" * 100 + b" {100+}\r\n" + b"y" * 100, p)
    out += events(b"\r\n", p)
    assert out == [Command("a1", "APPEND", ["INBOX", b"x" * 100, b"y" * 100])]


def test_over_long_line_is_answered_with_its_own_tag() -> None:
    p = CommandParser(max_command=100)
    out = events(b"a1 NOOP\r\nb2 NOOP " + b"x" * 200, p)
    assert out == [Command("a1", "NOOP", []), CommandError("b2", "Command line too long")]
    out = events(b"\r\nc3 NOOP\r\n", p)
    assert out == [Command("c3", "NOOP", [])]
    # No tag to read (no space in sight): "*", never the previous command's tag.
    p = CommandParser(max_command=100)
    out = events(b"a1 NOOP\r\n" + b"y" * 200, p)
    assert out == [Command("a1", "NOOP", []), CommandError("*", "Command line too long")]


def test_parser_reports_a_command_in_progress_and_its_literals() -> None:
    p = CommandParser()
    assert not p.in_command
    p.feed(b"a1 APPEND INBOX {300}\r\n")
    assert p.next_event() == ContinuationRequest()
    assert p.in_command
    assert p.literal_octets == 300
    p.feed(b"z" * 300 + b"\r\n")
    assert isinstance(p.next_event(), Command)
    assert not p.in_command
    assert p.literal_octets == 0


ANONYMOUS_INPUT = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"a APPEND INBOX {20000}\r\n",
                b"a APPEND INBOX {20+}\r\n",
                b"a LOGIN {9000}\r\n",
                b"a LOGIN {3+}\r\n",
                b"a LOGIN {9000+}\r\n",
                b"a NOOP\r\n",
                b"\r\n",
            ]
        ),
        st.integers(min_value=0, max_value=3000).map(lambda n: b"x" * n),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(ANONYMOUS_INPUT, st.integers(min_value=1, max_value=4096))
def test_before_login_nothing_invites_an_append_and_little_is_held(
    parts: list[bytes], chunk: int
) -> None:
    """Any input, in chunks of any size: no "+" for a literal over the cap, and the parser
    holds at most a command's worth (max_command, a small literal) plus one chunk."""
    data = b"".join(parts)
    p = anonymous(max_command=4096)
    for start in range(0, len(data), chunk):
        p.feed(data[start : start + chunk])
        while (event := p.next_event()) is not None:
            if isinstance(event, ContinuationRequest):
                assert p.literal_octets <= 8192
        assert p.buffered_octets <= 4096 + chunk + 8192


@settings(max_examples=200, deadline=None)
@given(ANONYMOUS_INPUT, st.lists(st.integers(min_value=0, max_value=30000), max_size=6))
def test_before_login_any_cut_gives_the_same_events(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    whole = events(data, anonymous(max_command=4096))
    p = anonymous(max_command=4096)
    split: list[object] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        p.feed(data[last:cut])
        last = cut
        while (event := p.next_event()) is not None:
            split.append(event)
    drop = ContinuationRequest()
    assert [e for e in whole if e != drop] == [e for e in split if e != drop]


def test_literal_plus_after_an_over_long_line_is_discarded_however_it_arrives() -> None:
    """An over-long line ending in a LITERAL+ is refused, and the literal's data that follows
    unasked (RFC 7888 §4) is discarded, never read as commands, whether the line arrives
    whole or cut anywhere (found by the property test below: a whole line used to leave the
    data to be parsed as commands)."""
    smuggled = b"a9 LOGOUT\r\n"
    line = b"t1 NOOP " + b"x" * 300 + b" {%d+}\r\n" % len(smuggled)
    data = line + smuggled + b"\r\n" + b"t2 NOOP\r\n"  # the command ends after its literal
    for cut in (None, 5, 120, len(line) - 4, len(line) - 2, len(line) + 3):
        p = CommandParser(max_command=100)
        got = events(data, p) if cut is None else events(data[:cut], p) + events(data[cut:], p)
        names = [e.name for e in got if isinstance(e, Command)]
        assert names == ["NOOP"], (cut, got)  # t2 only: a9 LOGOUT was literal data
        assert [e.tag for e in got if isinstance(e, Command)] == ["t2"]
    # Before login a LITERAL+ beyond the limit closes the session, however it arrives.
    big = b"x" * 5000 + b" {9000+}\r\n"
    assert events(big, anonymous(max_command=4096))[-1].fatal  # type: ignore[attr-defined]
    p = anonymous(max_command=4096)
    assert (events(big[:4097], p) + events(big[4097:], p))[-1].fatal  # type: ignore[attr-defined]


def test_literal_plus_beyond_max_literals_is_discarded_not_parsed() -> None:
    """The literal that is one too many is refused and its unasked LITERAL+ data skipped:
    a command line inside it is never run."""
    p = CommandParser(max_literals=2)
    data = b"t1 X {1+}\r\na {1+}\r\nb {11+}\r\na9 LOGOUT\r\n\r\nt2 NOOP\r\n"
    got = events(data, p)
    assert [(e.tag, e.name) for e in got if isinstance(e, Command)] == [("t2", "NOOP")]
    assert any(isinstance(e, CommandError) and e.text == "Too many literals" for e in got)


def test_over_long_line_tag_does_not_depend_on_the_reads() -> None:
    for line in (b"t1 NOOP " + b"x" * 300 + b"\r\n", b"y" * 300 + b"\r\n", b"z" * 150 + b" x" * 60):
        whole = events(line + b"\r\n", CommandParser(max_command=100))
        p = CommandParser(max_command=100)
        split = events(line[:120], p) + events(line[120:] + b"\r\n", p)
        assert whole == split, line
        assert whole[0].tag in ("t1", "*")  # type: ignore[union-attr]
