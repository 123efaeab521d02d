"""The IMAP continuation states (protocols/imap/session_state.py), sans-IO: AUTHENTICATE and
IDLE lines routed by the state, IDLE's timers on an injected clock, any cut of the input giving
the same events."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.protocols.imap.core import Command, CommandError, CommandParser, ContinuationRequest
from pochta.protocols.imap.session_state import (
    IDLE_KEEPALIVE_SECONDS,
    AuthenticateLine,
    IdleDone,
    IdleExpired,
    IdleKeepalive,
    LocalProtocolError,
    Mode,
    SessionState,
    StateEvent,
)


def drain(state: SessionState) -> list[StateEvent]:
    """Events until the parser needs more, acting as the session does: a challenge after
    AUTHENTICATE without an initial response (and after each answer but "*" and the last),
    IDLE entered after IDLE."""
    out: list[StateEvent] = []
    while (event := state.next_event()) is not None:
        out.append(event)
        if isinstance(event, Command) and event.name == "IDLE":
            state.idle(event, 0.0, 1800)
        elif isinstance(event, Command) and event.name == "AUTHENTICATE" and len(event.args) == 1:
            state.challenge(event)
        elif isinstance(event, AuthenticateLine) and event.line not in (b"*", b"last"):
            state.challenge(event.command)
    return out


def run(data: bytes) -> list[StateEvent]:
    state = SessionState(CommandParser(max_command=200))
    state.parser.feed(data)
    return drain(state)


def test_authenticate_lines_are_answers_not_commands() -> None:
    events = run(b"a AUTHENTICATE PLAIN\r\nb NOOP\r\nlast\r\nc NOOP\r\n")
    auth = Command("a", "AUTHENTICATE", ["PLAIN"])
    assert events == [
        auth,
        AuthenticateLine(auth, b"b NOOP"),  # RFC 9051 §6.2.2: a line answers the challenge
        AuthenticateLine(auth, b"last"),
        Command("c", "NOOP", []),
    ]


def test_idle_ends_with_done_in_any_case_or_with_a_bad_line() -> None:
    events = run(b"a IDLE\r\nDone\r\nb IDLE\r\nc NOOP\r\nd NOOP\r\n")
    a, b = Command("a", "IDLE", []), Command("b", "IDLE", [])
    assert events == [a, IdleDone(a, True), b, IdleDone(b, False), Command("d", "NOOP", [])]


def test_an_unreadable_answer_ends_the_exchange_with_the_commands_tag() -> None:
    state = SessionState(CommandParser(max_command=64))
    state.parser.feed(b"a IDLE\r\n" + b"x" * 100)
    assert drain(state) == [Command("a", "IDLE", []), CommandError("a", "Line too long")]
    assert state.mode is Mode.COMMAND


def test_idle_timers_on_an_injected_clock() -> None:
    state = SessionState(CommandParser())
    idle = Command("t", "IDLE", [])
    assert state.seconds_to_timer(0.0) is None
    state.idle(idle, 1000.0, 300)
    assert state.seconds_to_timer(1000.0) == IDLE_KEEPALIVE_SECONDS
    assert state.timer_event(1000.0 + IDLE_KEEPALIVE_SECONDS - 1) is None
    assert state.timer_event(1000.0 + IDLE_KEEPALIVE_SECONDS) == IdleKeepalive()
    assert state.seconds_to_timer(1000.0 + IDLE_KEEPALIVE_SECONDS) == IDLE_KEEPALIVE_SECONDS
    assert state.timer_event(1000.0 + 2 * IDLE_KEEPALIVE_SECONDS) == IdleKeepalive()
    assert state.seconds_to_timer(1250.0) == 50.0  # the deadline comes before the next one
    assert state.timer_event(1300.0) == IdleExpired(idle)
    assert state.mode is Mode.COMMAND
    assert state.timer_event(5000.0) is None


def test_the_glue_cannot_skip_a_state() -> None:
    state = SessionState(CommandParser())
    cmd = Command("a", "IDLE", [])
    state.idle(cmd, 0.0, 10)
    with pytest.raises(LocalProtocolError):
        state.challenge(cmd)
    state.reset(CommandParser())  # STARTTLS's new parser: back to commands
    assert state.mode is Mode.COMMAND


def test_a_synchronizing_literal_is_still_asked_for() -> None:
    state = SessionState(CommandParser())
    state.parser.feed(b"a LOGIN {3}\r\n")
    assert state.next_event() == ContinuationRequest()


TOKENS = [
    b"a AUTHENTICATE PLAIN\r\n",
    b"a AUTHENTICATE PLAIN =\r\n",
    b"AGFAYgBj\r\n",
    b"*\r\n",
    b"last\r\n",
    b"i IDLE\r\n",
    b"DONE\r\n",
    b"done\r\n",
    b"n NOOP\r\n",
    b"l LOGIN {3}\r\nabc def\r\n",
    b"p LOGIN {3+}\r\nabc def\r\n",
    b"x" * 40,
    b"\r\n",
    b"(",
    b"\xff",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(TOKENS), max_size=12),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
@example([b"i IDLE\r\n", b"DONE\r\n", b"n NOOP\r\n"], [9, 10])
@example([b"a AUTHENTICATE PLAIN\r\n", b"AGFAYgBj\r\n", b"*\r\n"], [21, 22, 25])
def test_any_cut_gives_the_same_state_events(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    state = SessionState(CommandParser(max_command=200))
    split: list[StateEvent] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        state.parser.feed(data[last:cut])
        last = cut
        split += drain(state)
    whole = [e for e in run(data) if e != ContinuationRequest()]
    assert whole == [e for e in split if e != ContinuationRequest()]
