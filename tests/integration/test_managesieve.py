"""The real pochta answering ManageSieve (RFC 5804) clients: sievelib's ``managesieve.Client``
in its default configuration (STARTTLS, then the SASL mechanism it prefers among those
offered), and raw sockets for what sievelib does not send.

The server runs in this process (``serving_in_process``, ``server.processes = 1``) so the
Sieve compiler can be a small fake where a test needs what the interpreter does not do yet
(warnings): it refuses any script with the word "bogus" in it, at that word's line and
column, and warns about "discard". ``test_real_interpreter`` uses the real one
(``pochta.sieve.script``). sievelib is blocking: it runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import types
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from scramp import ScramClient
from sievelib import managesieve as sievelib_managesieve
from sievelib.managesieve import Client

from pochta.access import managesieve as service_module
from pochta.access.managesieve import Interpreter
from pochta.server.app import Server
from pochta.sieve.errors import SieveError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.scripts import ScriptStore
from tests.harness import DOMAIN, PochtaEnv, serving_in_process, set_key

ALICE = f"alice@{DOMAIN}"
PASSWORD = "correct horse 1"
GOOD = 'require ["fileinto"];\nif header :contains "subject" "x" {\n  fileinto "X";\n}\n'
BAD = 'require ["fileinto"];\nif header :contains "subject" "x" {\n  bogus "X";\n}\n'


def fake_check(text: str, name: str, limits: SieveLimits) -> Sequence[str]:
    for number, line in enumerate(text.splitlines(), 1):
        column = line.find("bogus")
        if column >= 0:
            raise SieveError("unknown command 'bogus'", number, column + 1)
    return ["discard: the message is thrown away"] if "discard" in text else []


def sievelib_trusts(env: PochtaEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """sievelib verifies the server's certificate with ssl.create_default_context(): make it
    trust the test server's self-signed one (issued to the host name, not 127.0.0.1)."""

    def trusting_context() -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(env.data_dir / "tls" / "cert.pem"))
        ctx.check_hostname = False
        return ctx

    monkeypatch.setattr(
        sievelib_managesieve,
        "ssllib",
        types.SimpleNamespace(
            create_default_context=trusting_context,
            SSLError=ssl.SSLError,
            SSLSocket=ssl.SSLSocket,
        ),
    )


@pytest.fixture
async def server(
    pochta_env: PochtaEnv, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[PochtaEnv, Server]]:
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    set_key(env.config_path, "server", "processes", "1")
    # The tests connect from 127.0.0.1: login only under TLS there too.
    set_key(env.config_path, "managesieve", "allow_plaintext_on_loopback", "false")
    monkeypatch.setattr(
        service_module,
        "default_interpreter",
        lambda: Interpreter(("fileinto", "vacation"), fake_check),
    )

    sievelib_trusts(env, monkeypatch)
    async with serving_in_process(env.config_path, ("managesieve",)) as running:
        yield env, running


def client(env: PochtaEnv) -> Client:
    return Client("127.0.0.1", env.ports["managesieve"])


def scripts_of(env: PochtaEnv) -> Path:
    return env.data_dir / "sieve" / DOMAIN / "alice"


async def test_sievelib_manages_scripts_over_starttls(
    server: tuple[PochtaEnv, Server],
) -> None:
    env, _ = server

    def session() -> None:
        c = client(env)
        assert c.connect(ALICE, PASSWORD, starttls=True), c.errmsg
        assert c.get_implementation() == "pochta"
        assert c.get_sieve_capabilities() == ["fileinto", "vacation"]
        assert c.havespace("main", len(GOOD))
        assert c.putscript("main", GOOD)
        # A script that does not compile: NO with its line and column.
        assert not c.putscript("broken", BAD)
        assert c.errmsg == b"broken: line 3, column 3: unknown command 'bogus'"
        assert c.putscript("other", "keep;\n")
        assert c.setactive("main")
        assert c.listscripts() == ("main", ["other"])
        # Stored with CRLF line ends (sievelib sends them); sievelib joins lines with LF.
        assert c.getscript("main") == GOOD.rstrip("\n")
        # The active script cannot be deleted (RFC 5804 §2.10).
        assert not c.deletescript("main")
        assert c.errcode == b"ACTIVE"
        assert c.renamescript("main", "renamed")
        assert c.listscripts() == ("renamed", ["other"])  # still active after the rename
        assert not c.renamescript("renamed", "other")
        assert c.errcode == b"ALREADYEXISTS"
        assert not c.getscript("nope")
        assert c.errcode == b"NONEXISTENT"
        assert c.deletescript("other")
        assert c.setactive("")
        assert c.deletescript("renamed")
        assert c.listscripts() == (None, [])
        c.logout()

    await asyncio.to_thread(session)
    assert list(scripts_of(env).iterdir()) == []


async def test_script_is_on_disk_for_delivery(server: tuple[PochtaEnv, Server]) -> None:
    env, running = server

    def session() -> None:
        c = client(env)
        assert c.connect(ALICE, PASSWORD, starttls=True), c.errmsg
        assert c.putscript("main", GOOD)
        assert c.setactive("main")
        c.logout()

    await asyncio.to_thread(session)
    store = ScriptStore.from_settings(running.settings)
    [stored] = store.delivery_scripts(ALICE)
    assert stored.scope == "personal"
    assert stored.text == GOOD.replace("\n", "\r\n")


@pytest.mark.filterwarnings("ignore:Credentials are sent over an unencrypted connection")
async def test_authentication_is_refused_before_tls(server: tuple[PochtaEnv, Server]) -> None:
    env, _ = server

    def session() -> None:
        c = client(env)
        assert not c.connect(ALICE, PASSWORD, starttls=False)
        assert c.errmsg == b"No suitable mechanism found"  # SASL "" before TLS

    await asyncio.to_thread(session)
    # And a client that tries anyway gets NO (ENCRYPT-NEEDED).
    reply = await asyncio.to_thread(
        raw_exchange,
        env,
        b'AUTHENTICATE "PLAIN" "' + base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()) + b'"\r\n',
    )
    assert reply == b'NO (ENCRYPT-NEEDED) "Authentication needs TLS: send STARTTLS first"\r\n'


async def test_quota_and_warnings(server: tuple[PochtaEnv, Server]) -> None:
    env, running = server
    limit = running.settings.sieve.max_script_bytes

    def session() -> None:
        c = client(env)
        assert c.connect(ALICE, PASSWORD, starttls=True), c.errmsg
        assert not c.havespace("big", limit + 1)
        assert c.errcode == b"QUOTA/MAXSIZE"
        assert c.putscript("warned", "discard;\n")  # OK (WARNINGS) is still OK
        assert c.checkscript("keep;\n")
        assert not c.checkscript("bogus;\n")
        assert c.errmsg == b"script: line 1, column 1: unknown command 'bogus'"
        c.logout()

    await asyncio.to_thread(session)


def raw_exchange(env: PochtaEnv, command: bytes) -> bytes:
    """Send one command on a fresh plain connection and return the first line after the
    greeting."""
    with socket.create_connection(("127.0.0.1", env.ports["managesieve"]), timeout=10) as sock:
        f = sock.makefile("rb")
        while not f.readline().startswith(b"OK"):
            pass
        sock.sendall(command)
        return f.readline()


async def test_scram_final_data_in_ok_and_wrong_password_counts(
    server: tuple[PochtaEnv, Server],
) -> None:
    env, _ = server

    def session() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", env.ports["managesieve"]), timeout=10) as raw:
            f = raw.makefile("rb")
            while not f.readline().startswith(b"OK"):
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"OK")
            ctx = ssl.create_default_context(cafile=str(env.data_dir / "tls" / "cert.pem"))
            ctx.check_hostname = False
            with ctx.wrap_socket(raw) as sock:
                g = sock.makefile("rb")
                while not g.readline().startswith(b"OK"):
                    pass
                scram = ScramClient(["SCRAM-SHA-256"], ALICE, PASSWORD)
                first = base64.b64encode(scram.get_client_first().encode())
                sock.sendall(b'AUTHENTICATE "SCRAM-SHA-256" "' + first + b'"\r\n')
                challenge = g.readline().strip().strip(b'"')
                scram.set_server_first(base64.b64decode(challenge).decode())
                final = base64.b64encode(scram.get_client_final().encode())
                sock.sendall(b'"' + final + b'"\r\n')
                ok = g.readline()
                sock.sendall(b"LOGOUT\r\n")
                return ok, g.readline()

    ok, bye = await asyncio.to_thread(session)
    assert ok.startswith(b'OK (SASL "')
    assert bye == b'OK "Logout completed"\r\n'


@pytest.fixture
async def limited(pochta_env: PochtaEnv) -> AsyncIterator[PochtaEnv]:
    env = pochta_env
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "managesieve", "max_connections_per_ip", "1")
    async with serving_in_process(env.config_path, ("managesieve",)):
        yield env


async def test_connection_limit_per_ip_says_bye_trylater(limited: PochtaEnv) -> None:
    env = limited

    def session() -> bytes:
        port = env.ports["managesieve"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
            f = first.makefile("rb")
            while not f.readline().startswith(b"OK"):
                pass
            with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
                refused = second.makefile("rb").readline()
            first.sendall(b"LOGOUT\r\n")
            assert f.readline() == b'OK "Logout completed"\r\n'
        return refused

    refused = await asyncio.to_thread(session)
    assert (
        refused == b'BYE (TRYLATER) "Too many connections from your address; try again later"\r\n'
    )


@pytest.fixture
async def real_server(pochta_env: PochtaEnv) -> AsyncIterator[PochtaEnv]:
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    set_key(env.config_path, "server", "processes", "1")
    async with serving_in_process(env.config_path, ("managesieve",)):
        yield env


@pytest.mark.filterwarnings("ignore:Credentials are sent over an unencrypted connection")
async def test_real_interpreter(real_server: PochtaEnv) -> None:
    """The interpreter's compiler behind PUTSCRIPT, its extensions in the SIEVE capability
    (from loopback, where plaintext login is allowed by default)."""
    from pochta.sieve.script import CAPABILITIES

    env = real_server

    def session() -> None:
        c = client(env)
        assert c.connect(ALICE, PASSWORD), c.errmsg
        assert c.get_sieve_capabilities() == list(CAPABILITIES)
        assert c.putscript("main", GOOD)
        assert not c.putscript("broken", BAD)
        assert c.errmsg == b"broken: line 3, column 3: unknown command 'bogus'"
        assert c.listscripts() == (None, ["main"])
        c.logout()

    await asyncio.to_thread(session)
