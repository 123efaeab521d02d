"""The sans-IO ManageSieve core (protocols/managesieve): bytes in, events and bytes out.

Dialogs are fed whole; the property tests feed the same bytes cut anywhere and check that
the events and every byte sent back are the same (STYLE.md §8, like h11's fuzzers).
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.protocols.managesieve import (
    NEED_DATA,
    Authenticate,
    AuthResponse,
    Capabilities,
    CheckScript,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    LocalProtocolError,
    Logout,
    ManageSieveServerConnection,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    State,
    Unauthenticate,
)
from pochta.protocols.managesieve import responses as R
from pochta.protocols.managesieve.parse import (
    Atom,
    Bad,
    Command,
    Incomplete,
    LiteralTooLarge,
    TooLong,
    parse_command,
)

CAPS = Capabilities(sieve=("fileinto", "vacation"), max_redirects=4)


def connection(**kwargs: object) -> ManageSieveServerConnection:
    options: dict[str, object] = {"tls_active": True}
    options.update(kwargs)
    conn = ManageSieveServerConnection(CAPS, **options)  # type: ignore[arg-type]
    conn.greet()
    conn.data_to_send()
    return conn


def logged_in(**kwargs: object) -> ManageSieveServerConnection:
    conn = connection(**kwargs)
    conn.receive_data(b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"\0a@x.test\0pw") + b'"\r\n')
    event = conn.next_event()
    assert isinstance(event, Authenticate)
    conn.authenticated("a@x.test")
    conn.data_to_send()
    return conn


def answer(conn: ManageSieveServerConnection, event: Event) -> None:
    """A glue that says yes to everything (scripts: one named "s")."""
    if isinstance(event, ListScripts):
        conn.script_list([("s", True), ('a "quoted" one', False)])
    elif isinstance(event, GetScript):
        conn.script("keep;\r\n")
    elif isinstance(event, Authenticate | AuthResponse):
        conn.authenticated("a@x.test")
    elif isinstance(event, StartTLS):
        conn.respond(R.TLS_UNAVAILABLE)
    else:
        conn.respond(R.ok("yes"))


def feed(conn: ManageSieveServerConnection, chunks: list[bytes]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    out = b""
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            assert isinstance(event, Event)
            events.append(event)
            if event.needs_reply:
                answer(conn, event)
        out += conn.data_to_send()
    return events, out


# -- grammar ----------------------------------------------------------------------------------


def parse(data: bytes) -> object:
    return parse_command(data, max_line_bytes=100, max_literal_bytes=50)


def test_parse_atoms_quoted_and_both_literal_forms() -> None:
    data = b'PUTSCRIPT "a \\"b\\" \\\\c" {5+}\r\nkeep;\r\nNOOP\r\n'
    parsed = parse(data)
    assert parsed == Command([Atom("PUTSCRIPT"), b'a "b" \\c', b"keep;"], len(data) - 6)
    # RFC 5804 §4: {N} from a client gets no continuation; it is read the same way.
    assert parse(b"CHECKSCRIPT {2}\r\nab\r\n") == Command([Atom("CHECKSCRIPT"), b"ab"], 21)


def test_parse_waits_for_the_whole_literal() -> None:
    assert parse(b'PUTSCRIPT "s" {10+}\r\nabc') == Incomplete(31)


def test_parse_errors_say_where_to_drop_from() -> None:
    assert isinstance(parse(b'NOOP "a\\x"\r\n'), Bad)  # "\" escapes only "\" and DQUOTE
    assert isinstance(parse(b"NOOP  x\r\n"), Bad)
    assert parse(b"NOOP " + b"x" * 200) == TooLong(205)
    assert parse(b'PUTSCRIPT "s" {51+}\r\n') == LiteralTooLarge(51, 21)


# -- dialogs ----------------------------------------------------------------------------------


def test_greeting_lists_capabilities_then_ok() -> None:
    conn = ManageSieveServerConnection(CAPS, tls_available=True)
    conn.greet()
    assert conn.data_to_send() == (
        b'"IMPLEMENTATION" "pochta"\r\n'
        b'"SASL" ""\r\n'  # no login before TLS: no mechanisms
        b'"SIEVE" "fileinto vacation"\r\n'
        b'"STARTTLS"\r\n'
        b'"MAXREDIRECTS" "4"\r\n'
        b'"UNAUTHENTICATE"\r\n'
        b'"VERSION" "1.0"\r\n'
        b'OK "pochta ManageSieve ready"\r\n'
    )


def test_authenticate_before_tls_is_refused_encrypt_needed() -> None:
    conn = connection(tls_active=False)
    events, out = feed(conn, [b'AUTHENTICATE "PLAIN" "AGEAYg=="\r\n'])
    assert events == []
    assert out == b'NO (ENCRYPT-NEEDED) "Authentication needs TLS: send STARTTLS first"\r\n'


def test_starttls_then_capabilities_again_with_sasl() -> None:
    conn = connection(tls_active=False)
    events, _ = feed(conn, [b"STARTTLS\r\nNOOP\r\n"])
    assert events == [StartTLS()]
    # answer() refused it; do it for real now:
    conn = connection(tls_active=False)
    conn.receive_data(b"STARTTLS\r\nCAPABILITY\r\n")
    assert conn.next_event() == StartTLS()
    conn.start_tls()
    assert conn.data_to_send() == b'OK "Begin TLS negotiation now"\r\n'
    assert conn.next_event() is NEED_DATA  # RFC 5804 §2.2: what came after STARTTLS is gone
    conn.tls_started()
    out = conn.data_to_send()
    assert b'"SASL" "SCRAM-SHA-256 PLAIN LOGIN"\r\n' in out
    assert b"STARTTLS" not in out
    assert out.endswith(b'OK "TLS negotiation successful"\r\n')


def test_sasl_challenge_and_answers() -> None:
    conn = connection()
    conn.receive_data(b'AUTHENTICATE "login"\r\n"dXNlcg=="\r\n{4+}\r\ncGFz\r\n')
    assert conn.next_event() == Authenticate("LOGIN", None)
    conn.auth_challenge(b"Username:")
    assert conn.data_to_send() == b'"VXNlcm5hbWU6"\r\n'
    assert conn.next_event() == AuthResponse(b"user")
    conn.auth_challenge(b"Password:")
    assert conn.next_event() == AuthResponse(b"pas")
    conn.authenticated("a@x.test", b"v=sig")
    assert conn.data_to_send().endswith(b'OK (SASL "dj1zaWc=") "Logged in"\r\n')
    assert conn.state is State.AUTHENTICATED


def test_sasl_cancel_with_star() -> None:
    conn = connection()
    conn.receive_data(b'AUTHENTICATE "PLAIN"\r\n"*"\r\n')
    assert conn.next_event() == Authenticate("PLAIN", None)
    conn.auth_challenge(b"")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b'""\r\nNO "Authentication cancelled"\r\n'
    assert conn.state is State.NOT_AUTHENTICATED


def test_three_failed_logins_end_with_bye() -> None:
    conn = connection()
    for _ in range(3):
        conn.receive_data(b'AUTHENTICATE "PLAIN" "AGEAYg=="\r\n')
        assert isinstance(conn.next_event(), Authenticate)
        conn.respond(R.AUTH_FAILED)
    assert conn.closed
    assert conn.data_to_send().endswith(
        b'BYE "Too many authentication failures; closing the connection"\r\n'
    )


def test_script_commands_become_events() -> None:
    conn = logged_in()
    events, out = feed(
        conn,
        [
            b'HAVESPACE "s" 100\r\n'
            b'PUTSCRIPT "s" {6+}\r\nkeep;\n\r\n'
            b"CHECKSCRIPT {5}\r\nkeep;\r\n"
            b"LISTSCRIPTS\r\n"
            b'SETACTIVE "s"\r\n'
            b'SETACTIVE ""\r\n'
            b'GETSCRIPT "s"\r\n'
            b'RENAMESCRIPT "s" "t"\r\n'
            b'DELETESCRIPT "t"\r\n'
            b'NOOP "tag 1"\r\n'
            b"UNAUTHENTICATE\r\n"
            b"LISTSCRIPTS\r\n"
            b"LOGOUT\r\n"
        ],
    )
    assert events == [
        HaveSpace("s", 100),
        PutScript("s", "keep;\n"),
        CheckScript("keep;"),
        ListScripts(),
        SetActive("s"),
        SetActive(""),
        GetScript("s"),
        RenameScript("s", "t"),
        DeleteScript("t"),
        Unauthenticate(),
        Logout(),
    ]
    assert b'"s" ACTIVE\r\n"a \\"quoted\\" one"\r\nOK "Listscripts completed"\r\n' in out
    assert b'{7}\r\nkeep;\r\n\r\nOK "Getscript completed"\r\n' in out
    assert b'OK (TAG "tag 1") "Done"\r\n' in out  # RFC 5804 §2.13
    assert b'OK "Unauthenticate completed"\r\nNO "Authenticate first (AUTHENTICATE)"\r\n' in out
    assert out.endswith(b'OK "Logout completed"\r\n')
    assert conn.closed


def test_no_responses_for_bad_input() -> None:
    conn = logged_in()
    _, out = feed(
        conn,
        [
            b"FROB\r\n"
            b"PUTSCRIPT s keep\r\n"
            b'HAVESPACE "s" many\r\n'
            b'GETSCRIPT "\xff"\r\n'
            b"STARTTLS\r\n"
            b"\r\n"  # an empty line is ignored
        ],
    )
    assert out == (
        b'NO "Unknown command"\r\n'
        b'NO "Syntax: PUTSCRIPT \\"name\\" {N+} script (strings are \\"quoted\\" or literals)"\r\n'
        b'NO "Syntax: HAVESPACE \\"name\\" size (a number)"\r\n'
        b'NO "Strings must be UTF-8"\r\n'
        b'NO "Already authenticated"\r\n'
    )


def test_too_long_line_and_too_large_literal_are_skipped() -> None:
    conn = logged_in(max_line_bytes=1024, max_literal_bytes=20)
    _, out = feed(
        conn,
        [
            b"NOOP " + b"x" * 2000 + b"\r\n",
            b'PUTSCRIPT "s" {30+}\r\n' + b"y\r\n" * 10 + b"\r\nNOOP\r\n",
        ],
    )
    assert out == (
        b'NO "Command line too long"\r\n'
        b'NO (QUOTA/MAXSIZE) "A literal may have at most 20 octets here (30 sent)"\r\n'
        b'OK "Done"\r\n'
    )


def test_literal_before_login_is_small() -> None:
    conn = connection(max_line_bytes=1024)
    _, out = feed(conn, [b'AUTHENTICATE "PLAIN" {2000+}\r\n' + b"A" * 2000 + b"\r\nNOOP\r\n"])
    assert out == b'NO "A literal may have at most 1024 octets before login"\r\nOK "Done"\r\n'


def test_garbage_ends_with_bye() -> None:
    conn = connection()
    _, out = feed(conn, [b"\x01\x02\r\n" * 10])
    assert out.endswith(b'BYE "Too many errors; closing the connection"\r\n')
    assert conn.closed


def test_glue_must_answer_before_the_next_event() -> None:
    conn = logged_in()
    conn.receive_data(b"LISTSCRIPTS\r\nLISTSCRIPTS\r\n")
    assert conn.next_event() == ListScripts()
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_eof_closes() -> None:
    conn = logged_in()
    conn.receive_data(b'GETSCRIPT "s')
    conn.receive_data(b"")
    assert conn.next_event() is NEED_DATA
    assert conn.closed


def test_response_strings_that_cannot_be_quoted_are_literals() -> None:
    assert R.no("line 2, column 1:\nbad").encode() == b"NO {21}\r\nline 2, column 1:\nbad\r\n"


# -- any cut of the input gives the same events and bytes ----------------------------------

SESSION = (
    b'AUTHENTICATE "PLAIN" "AGFAeC50ZXN0AHB3"\r\n'
    b'PUTSCRIPT "s" {12+}\r\nkeep;\r\nstop;\r\n'
    b"LISTSCRIPTS\r\nNOOP " + b"z" * 1100 + b"\r\n"
    b"CHECKSCRIPT {40000}\r\n" + b"q" * 40000 + b"\r\n"
    b'GETSCRIPT "s"\nBAD\x00\r\nLOGOUT\r\n'
)


def run_cut(data: bytes, cuts: list[int]) -> tuple[list[Event], bytes, bool]:
    conn = connection(max_line_bytes=1024, max_literal_bytes=30000)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    events, out = feed(conn, [c for c in chunks if c])
    return events, out, conn.closed


WHOLE = run_cut(SESSION, [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SESSION)), max_size=12))
@example([1])
@example(list(range(0, 200)))
def test_any_cut_gives_the_same_session(cuts: list[int]) -> None:
    assert run_cut(SESSION, cuts) == WHOLE
    assert WHOLE[2]  # LOGOUT closed it


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
@example(b"{4294967296+}\r\n", [])
@example(b'"\\', [1])
def test_any_bytes_cut_anywhere_give_the_same(data: bytes, cuts: list[int]) -> None:
    assert run_cut(data, cuts) == run_cut(data, [])


def test_in_command_while_the_rest_of_a_command_is_to_come() -> None:
    """The glue asks for an immediate TCP ACK exactly while a command is partly in: a
    PUTSCRIPT whose literal or final CRLF comes in a later write."""
    conn = logged_in()
    assert not conn.in_command
    script = b"keep;\r\n"
    pieces = [b'PUTSCRIPT "s" {%d+}\r\n' % len(script), script[:3], script[3:], b"\r\n"]
    states = []
    for piece in pieces:
        events, _ = feed(conn, [piece])
        states.append((conn.in_command, [type(e).__name__ for e in events]))
    assert states == [(True, []), (True, []), (True, []), (False, ["PutScript"])]
    feed(conn, [b"NOOP"])  # a line without its end
    assert conn.in_command
    events, out = feed(conn, [b"\r\n"])  # NOOP is answered by the core itself
    assert events == []
    assert out.startswith(b"OK")
    assert not conn.in_command
