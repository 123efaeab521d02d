"""CATENATE (RFC 4469), URLAUTH (RFC 4467) and URLAUTH=BINARY (RFC 5524) on the real
`pochta serve`, driven by imaplib (raw lines only where a CATENATE TEXT literal must be
followed by more of the command, which imaplib cannot send)."""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Iterator

import pytest

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, serve, set_key

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
MESSAGE = (
    b"From: alice@example.test\r\nSubject: one\r\nContent-Type: multipart/mixed; boundary=b\r\n"
    b"\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"aGVsbG8gd29ybGQ=\r\n--b--\r\n"
)


@pytest.fixture
def imap(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    pochta_env.add_user(BOB, PASSWORD)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def login(env: PochtaEnv, user: str = ALICE) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    c.login(user, PASSWORD)
    return c


def _with_message(env: PochtaEnv) -> imaplib.IMAP4:
    c = login(env)
    assert c.append("INBOX", None, None, MESSAGE)[0] == "OK"
    return c


def _bodies(c: imaplib.IMAP4) -> list[bytes]:
    c.select("INBOX")
    typ, data = c.fetch("1:*", "(BODY.PEEK[])")
    assert typ == "OK"
    return [item[1] for item in data if isinstance(item, tuple)]


def _count(c: imaplib.IMAP4, box: str = "INBOX") -> int:
    typ, data = c.status(box, "(MESSAGES)")
    assert typ == "OK"
    return int(data[0].split()[-1].rstrip(b")"))


def _command(c: imaplib.IMAP4, name: str, *args: str) -> tuple[str, list[bytes]]:
    imaplib.Commands.setdefault(name, ("AUTH", "SELECTED"))
    typ, data = c._simple_command(name, *args)
    return typ, data


def _untagged(c: imaplib.IMAP4, name: str) -> list[object]:
    return c.untagged_responses.pop(name, [])


# -- CATENATE ------------------------------------------------------------------------------


def test_catenate_joins_url_parts_of_stored_mail(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = _with_message(env)
    assert "CATENATE" in c.capabilities
    typ, data = _command(
        c,
        "APPEND",
        "INBOX",
        'CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" URL "/INBOX/;UID=1/;SECTION=1")',
    )
    assert typ == "OK", data
    assert b"APPENDUID" in data[0]
    first, joined = _bodies(c)
    header = first[: first.index(b"\r\n\r\n") + 4]
    assert joined == header + b"aGVsbG8gd29ybGQ="
    c.logout()


def _raw(env: PochtaEnv, user: str = ALICE) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10)
    f = sock.makefile("rwb")
    assert f.readline().startswith(b"* OK")
    f.write(f'l LOGIN {user} "{PASSWORD}"\r\n'.encode())
    f.flush()
    while not f.readline().startswith(b"l OK"):
        pass
    return sock


def _answer(sock: socket.socket, command: bytes) -> bytes:
    f = sock.makefile("rwb")
    f.write(command + b"\r\n")
    f.flush()
    tag = command.split(b" ", 1)[0] + b" "
    while True:
        line = f.readline()
        assert line, "connection closed"
        if line.startswith(tag):
            return line


def test_catenate_text_literals_around_a_url(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    _with_message(env).logout()
    sock = _raw(env)
    head = b"Subject: quoted\r\n\r\n> "
    tail = b"\r\n-- \r\nbye\r\n"
    reply = _answer(
        sock,
        b"c APPEND INBOX (\\Seen) CATENATE (TEXT {%d+}\r\n%s URL /INBOX/;UID=1/;SECTION=1"
        b" TEXT {%d+}\r\n%s)" % (len(head), head, len(tail), tail),
    )
    assert reply.startswith(b"c OK [APPENDUID"), reply
    sock.close()
    c = login(env)
    assert _bodies(c)[1] == head + b"aGVsbG8gd29ybGQ=" + tail
    c.logout()


def test_bad_url_refuses_the_whole_multiappend(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = _with_message(env)
    # RFC 4469 §5: a URL naming nothing fails the APPEND with NO [BADURL url], and with
    # MULTIAPPEND (RFC 3502) the other messages are not stored either.
    typ, data = _command(
        c, "APPEND", "INBOX", 'CATENATE (URL "/INBOX/;UID=1") CATENATE (URL "/INBOX/;UID=77")'
    )
    assert typ == "NO"
    assert data[0].startswith(b"[BADURL /INBOX/;UID=77]"), data
    typ, data = _command(c, "APPEND", "INBOX", 'CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")')
    assert typ == "NO"
    assert b"BADURL" in data[0]
    # RFC 4469 §5: a missing target is TRYCREATE, before its URLs are looked at.
    typ, data = _command(c, "APPEND", "Nowhere", 'CATENATE (URL "/INBOX/;UID=77")')
    assert typ == "NO"
    assert data[0].startswith(b"[TRYCREATE]"), data
    assert _count(c) == 1
    c.logout()


def test_catenate_result_over_appendlimit_is_toobig(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(ALICE, PASSWORD)
    set_key(pochta_env.config_path, "imap", "max_literal_bytes", str(len(MESSAGE) + 10))
    with serve(pochta_env.config_path):
        c = _with_message(pochta_env)
        # RFC 4469 §6: each part fits, the joined message does not.
        typ, data = _command(
            c, "APPEND", "INBOX", 'CATENATE (URL "/INBOX/;UID=1" URL "/INBOX/;UID=1")'
        )
        assert typ == "NO"
        assert data[0].startswith(b"[TOOBIG]"), data
        assert _count(c) == 1
        c.logout()


def test_catenate_cannot_read_another_users_mail(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    _with_message(env).logout()
    c = login(env, BOB)
    url = f"imap://{ALICE.replace('@', '%40')}@{DOMAIN}/INBOX/;UID=1"
    typ, data = _command(c, "APPEND", "INBOX", f'CATENATE (URL "{url}")')
    assert typ == "NO"
    assert b"BADURL" in data[0]
    c.logout()


# -- URLAUTH --------------------------------------------------------------------------------


def _genurlauth(c: imaplib.IMAP4, rump: str) -> str:
    typ, data = _command(c, "GENURLAUTH", f'"{rump}"', "INTERNAL")
    assert typ == "OK", data
    (line,) = _untagged(c, "GENURLAUTH")
    assert isinstance(line, bytes)
    url = line.decode().strip('"')
    assert url.startswith(rump + ":INTERNAL:")
    return url


def _urlfetch(c: imaplib.IMAP4, arg: str) -> list[object]:
    typ, data = _command(c, "URLFETCH", arg)
    assert typ == "OK", data
    return _untagged(c, "URLFETCH")


def test_urlauth_url_fetched_by_another_user_until_the_key_is_reset(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    alice = _with_message(env)
    assert "URLAUTH" in alice.capabilities
    base = f"imap://alice@{DOMAIN}/INBOX/;UID=1"
    for_anyone = _genurlauth(alice, base + ";URLAUTH=authuser")
    for_alice = _genurlauth(alice, base + "/;SECTION=1;URLAUTH=user+" + ALICE)
    bob = login(env, BOB)
    got = _urlfetch(bob, f'"{for_anyone}"')
    assert got[0] == (f'"{for_anyone}" {{{len(MESSAGE)}}}'.encode(), MESSAGE)
    # RFC 4467 §3: user+alice is for alice only; NIL tells bob nothing more.
    assert _urlfetch(bob, f'"{for_alice}"') == [f'"{for_alice}" NIL'.encode()]
    assert _urlfetch(alice, f'"{for_alice}"') == [f'"{for_alice}" "aGVsbG8gd29ybGQ="'.encode()]
    forged = for_anyone[:-4] + "0000"
    assert _urlfetch(bob, f'"{forged}"') == [f'"{forged}" NIL'.encode()]
    # GENURLAUTH signs the user's own mailboxes only.
    typ, data = _command(bob, "GENURLAUTH", f'"{base};URLAUTH=anonymous"', "INTERNAL")
    assert typ == "NO"
    assert b"NOPERM" in data[0]
    typ, data = _command(alice, "RESETKEY", "INBOX")
    assert typ == "OK"
    assert data[0].startswith(b"[URLMECH INTERNAL]")
    assert _urlfetch(bob, f'"{for_anyone}"') == [f'"{for_anyone}" NIL'.encode()]
    bob.logout()
    alice.logout()


def test_expired_urls_fetch_nil(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = _with_message(env)
    base = f"imap://alice@{DOMAIN}/INBOX/;UID=1"
    gone = _genurlauth(c, base + ";EXPIRE=2001-01-01T00:00:00Z;URLAUTH=authuser")
    later = _genurlauth(c, base + ";EXPIRE=2999-01-01T00:00:00Z;URLAUTH=authuser")
    assert _urlfetch(c, f'"{gone}"') == [f'"{gone}" NIL'.encode()]
    assert _urlfetch(c, f'"{later}"')[0] == (f'"{later}" {{{len(MESSAGE)}}}'.encode(), MESSAGE)
    c.logout()


def test_urlfetch_binary_and_bodypartstructure(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = _with_message(env)
    assert "URLAUTH=BINARY" in c.capabilities
    url = _genurlauth(c, f"imap://alice@{DOMAIN}/INBOX/;UID=1/;SECTION=1;URLAUTH=authuser")
    (line,) = _urlfetch(c, f'("{url}" BINARY BODYPARTSTRUCTURE BODY)')
    assert (
        line
        == (
            f'"{url}" (BODYPARTSTRUCTURE ("text" "plain" NIL NIL NIL "base64" 11 0 NIL NIL NIL NIL)'
            ' BINARY "hello world" BODY "aGVsbG8gd29ybGQ=")'
        ).encode()
    )
    c.logout()


def test_keys_survive_a_restart(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(ALICE, PASSWORD)
    with serve(pochta_env.config_path):
        c = _with_message(pochta_env)
        url = _genurlauth(c, f"imap://alice@{DOMAIN}/INBOX/;UID=1;URLAUTH=anonymous")
        c.logout()
    with serve(pochta_env.config_path):
        c = login(pochta_env)
        assert _urlfetch(c, f'"{url}"')[0] == (f'"{url}" {{{len(MESSAGE)}}}'.encode(), MESSAGE)
        c.logout()
