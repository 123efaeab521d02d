"""The one SASL exchange (directory/sasl_exchange.py) through the real listeners: the client
must answer the server's additional data with success (SCRAM's server-final, sent as one more
challenge) with an empty response (RFC 4422 §3.6); SMTP, IMAP and POP3 now all refuse a
non-empty one, as POP3 already did."""

from __future__ import annotations

import base64
import imaplib
import io
import smtplib
import socket
from collections.abc import Callable, Iterator

import pytest
from scramp import ScramClient

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, client_tls, serve

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"


@pytest.fixture
def server(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    with serve(pochta_env.config_path) as proc:
        yield pochta_env, proc


def _smtp_scram(c: smtplib.SMTP, final_answer: str) -> tuple[int, bytes]:
    client = ScramClient(["SCRAM-SHA-256"], ALICE, PASSWORD)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    code, text = c.docmd("AUTH", f"SCRAM-SHA-256 {first}")
    assert code == 334, text
    client.set_server_first(base64.b64decode(text).decode())
    code, text = c.docmd(base64.b64encode(client.get_client_final().encode()).decode())
    assert code == 334, text
    client.set_server_final(base64.b64decode(text).decode())
    return c.docmd(final_answer)


def test_smtp_refuses_a_non_empty_answer_to_the_final_data(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = server
    with smtplib.SMTP_SSL("127.0.0.1", env.ports["submissions"], context=client_tls()) as c:
        c.ehlo()
        code, text = _smtp_scram(c, base64.b64encode(b"x").decode())
        assert (code, text) == (535, b"5.7.8 Authentication credentials invalid")
        code, text = _smtp_scram(c, "")  # RFC 4954 §4: the empty answer
        assert code == 235, text


def _imap_scram(final_answer: bytes) -> Callable[[bytes], bytes]:
    client = ScramClient(["SCRAM-SHA-256"], ALICE, PASSWORD)
    calls: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        calls.append(challenge)
        if len(calls) == 1:
            return client.get_client_first().encode()
        if len(calls) == 2:
            client.set_server_first(challenge.decode())
            return client.get_client_final().encode()
        client.set_server_final(challenge.decode())
        return final_answer

    return answer


def test_imap_refuses_a_non_empty_answer_to_the_final_data(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = server
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"])
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.authenticate("SCRAM-SHA-256", _imap_scram(b"x"))
    typ, _ = c.authenticate("SCRAM-SHA-256", _imap_scram(b""))  # RFC 9051 §6.2.2
    assert typ == "OK"
    c.logout()


def test_pop3_refuses_a_non_empty_answer_to_the_final_data(
    server: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = server

    def scram(f: io.BufferedRWPair, final_answer: bytes) -> bytes:
        client = ScramClient(["SCRAM-SHA-256"], ALICE, PASSWORD)
        first = base64.b64encode(client.get_client_first().encode())
        f.write(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        f.flush()
        line = f.readline()
        assert line.startswith(b"+ "), line
        client.set_server_first(base64.b64decode(line[2:].strip()).decode())
        f.write(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
        f.flush()
        line = f.readline()
        assert line.startswith(b"+ "), line
        client.set_server_final(base64.b64decode(line[2:].strip()).decode())
        f.write(base64.b64encode(final_answer) + b"\r\n")
        f.flush()
        return bytes(f.readline())

    with socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock:
        f = sock.makefile("rwb")
        assert f.readline().startswith(b"+OK")
        assert scram(f, b"x").startswith(b"-ERR [AUTH]")
        assert scram(f, b"").startswith(b"+OK Logged in")
