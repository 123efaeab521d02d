"""The SASL exchange loop shared by SMTP AUTH, IMAP AUTHENTICATE and POP3 AUTH (sans-IO)."""

from __future__ import annotations

import base64
import functools

import pytest
import scramp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.directory.passwords import make_scram_sha256
from pochta.directory.sasl import (
    MECHANISMS,
    Failure,
    Mechanism,
    NeedPassword,
    NeedScramKeys,
    Step,
    Success,
    server_mechanism,
)
from pochta.directory.sasl_exchange import (
    NOT_EMPTY_AFTER_SUCCESS,
    Authenticated,
    BadBase64,
    Cancelled,
    Failed,
    Resolve,
    SaslExchange,
    SendChallenge,
    decode_response,
)

USER = "alice@example.org"
PASSWORD = "secret pw"


@functools.cache
def _keys() -> str:
    return make_scram_sha256(PASSWORD)


def resolve(mech: Mechanism, step: Step) -> Step:
    """What Authenticator.resolve_step does, with one account and no counting."""
    if isinstance(step, NeedPassword):
        return mech.password_result(step.authcid == USER and step.password == PASSWORD)
    if isinstance(step, NeedScramKeys):
        return mech.scram_keys(_keys() if step.authcid == USER else None)
    return step


Action = Resolve | SendChallenge | Authenticated | Failed | Cancelled | BadBase64


def run(name: str, initial: bytes | None, lines: list[bytes]) -> tuple[Action, list[bytes]]:
    """Drive an exchange as the services do; the last action and the challenges sent."""
    exchange = SaslExchange(server_mechanism(name))
    sent: list[bytes] = []
    action: Action = exchange.start(initial)
    answers = iter(lines)
    while True:
        if isinstance(action, Resolve):
            action = exchange.resolved(resolve(exchange.mechanism, action.step))
        elif isinstance(action, SendChallenge):
            sent.append(action.data)
            line = next(answers, None)
            if line is None:
                return action, sent
            action = exchange.answer_line(line)
        else:
            assert exchange.finished
            return action, sent


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_decode_response() -> None:
    assert decode_response(b"*") == Cancelled()
    assert decode_response(b"") == b""  # the empty response
    assert decode_response(b"YWI=") == b"ab"
    assert decode_response(b"YW I=") == BadBase64()
    assert decode_response(b"**") == BadBase64()
    assert decode_response(b"YWI") == BadBase64()  # RFC 4648 §3.2: padding required


def test_plain_with_initial_response() -> None:
    action, sent = run("PLAIN", f"\0{USER}\0{PASSWORD}".encode(), [])
    assert action == Authenticated(Success(USER, "", None))
    assert sent == []


def test_plain_wrong_password_fails() -> None:
    action, _ = run("PLAIN", f"\0{USER}\0wrong".encode(), [])
    assert isinstance(action, Failed)


def test_plain_without_initial_response_gets_an_empty_challenge() -> None:
    action, sent = run("PLAIN", None, [b64(f"\0{USER}\0{PASSWORD}".encode())])
    assert sent == [b""]
    assert isinstance(action, Authenticated)


def test_login_two_challenges() -> None:
    action, sent = run("LOGIN", None, [b64(USER.encode()), b64(PASSWORD.encode())])
    assert sent == [b"Username:", b"Password:"]
    assert isinstance(action, Authenticated)


@pytest.mark.parametrize(("line", "outcome"), [(b"*", Cancelled()), (b"!!", BadBase64())])
def test_cancel_and_bad_base64_end_the_exchange(line: bytes, outcome: Action) -> None:
    exchange = SaslExchange(server_mechanism("LOGIN"))
    action = exchange.resolved(resolve(exchange.mechanism, exchange.start(None).step))
    assert action == SendChallenge(b"Username:")
    assert exchange.answer_line(line) == outcome
    assert exchange.finished
    assert isinstance(exchange.answer_line(b64(USER.encode())), Failed)


def _scram_exchange(final_answer: bytes) -> tuple[Action, list[bytes], scramp.ScramClient]:
    client = scramp.ScramClient(["SCRAM-SHA-256"], USER, PASSWORD)
    exchange = SaslExchange(server_mechanism("SCRAM-SHA-256"))
    sent: list[bytes] = []
    action: Action = exchange.start(client.get_client_first().encode())
    while not exchange.finished:
        if isinstance(action, Resolve):
            action = exchange.resolved(resolve(exchange.mechanism, action.step))
            continue
        assert isinstance(action, SendChallenge)
        sent.append(action.data)
        if len(sent) == 1:
            client.set_server_first(action.data.decode())
            action = exchange.answer(client.get_client_final().encode())
        else:
            client.set_server_final(action.data.decode())  # the server proves itself
            action = exchange.answer(final_answer)
    return action, sent, client


def test_scram_final_data_then_the_empty_answer() -> None:
    """RFC 4422 §3.6: the additional data with success goes out as a challenge; the client's
    empty answer completes the exchange."""
    action, sent, _ = _scram_exchange(b"")
    assert len(sent) == 2
    assert sent[1].startswith(b"v=")
    assert action == Authenticated(Success(USER, "", sent[1]))


def test_scram_non_empty_answer_to_final_data_fails() -> None:
    action, _, _ = _scram_exchange(b"x")
    assert action == Failed(NOT_EMPTY_AFTER_SUCCESS)


def test_unknown_steps_fail() -> None:
    exchange = SaslExchange(server_mechanism("PLAIN"))
    assert exchange.resolved(NeedPassword(USER, "", PASSWORD)) == Failed("failed")
    assert exchange.finished
    assert exchange.resolved(Success(USER, "")) == Failed("exchange already finished")
    assert exchange.answer(b"") == Failed("exchange already finished")


def test_failure_reason_is_kept() -> None:
    exchange = SaslExchange(server_mechanism("PLAIN"))
    assert exchange.resolved(Failure("nope")) == Failed("nope")


_line = st.one_of(
    st.just(b"*"),
    st.just(b""),
    st.binary(max_size=40),
    st.binary(max_size=40).map(b64),
    st.sampled_from([b64(USER.encode()), b64(PASSWORD.encode())]),
    st.just(b64(f"\0{USER}\0{PASSWORD}".encode())),
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(MECHANISMS)),
    initial=st.one_of(st.none(), st.binary(max_size=40)),
    lines=st.lists(_line, max_size=6),
)
@example(name="LOGIN", initial=None, lines=[b"*"])
@example(name="PLAIN", initial=b"", lines=[b""])
def test_any_client_lines_end_in_an_outcome_never_an_exception(
    name: str, initial: bytes | None, lines: list[bytes]
) -> None:
    """Whatever the client sends, the exchange asks for more, or ends in success, failure,
    cancel or bad base64; after the end every answer is a failure."""
    action, sent = run(name, initial, lines)
    assert isinstance(action, SendChallenge | Authenticated | Failed | Cancelled | BadBase64)
    assert len(sent) <= len(lines) + 1
    if isinstance(action, Cancelled):
        assert lines[len(sent) - 1] == b"*"
