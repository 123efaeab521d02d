"""The real `pochta serve` answering real POP3 clients: poplib (plain on loopback, STLS,
POP3S), raw sockets, scramp for SCRAM-SHA-256, and the Debian fetchmail program.

Mail goes in through the MX port with smtplib and is checked in the Maildir on disk: the
files that remain, their Subject lines, and their Maildir flags (":2,S" for \\Seen).
"""

from __future__ import annotations

import base64
import os
import poplib
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scramp import ScramClient

from pochta.access.pop3 import apply_update
from pochta.store import INBOX, FlagMode, StoreUnavailable
from pochta.store.maildir import MaildirStore
from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    ServeProcess,
    mailbox_files,
    serve,
    set_key,
    wait_until,
)
from tests.scram_authzid import scram_client

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
UIDL_FORMAT = re.compile(rb"[0-9A-F]{16}")


def tls_context(env: PochtaEnv) -> ssl.SSLContext:
    """A client context that trusts the test server's self-signed certificate (its name is
    the server's hostname, not 127.0.0.1, so only the name check is off)."""
    ctx = ssl.create_default_context(cafile=str(env.data_dir / "tls" / "cert.pem"))
    ctx.check_hostname = False
    return ctx


@pytest.fixture
def pop3(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    pochta_env.add_user(BOB, PASSWORD)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def send(env: PochtaEnv, to: str, subject: str) -> None:
    body = f"Subject: {subject}\r\n\r\nHello.\r\n.a line with a leading dot\r\n..two\r\nbye\r\n"
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        s.sendmail("carol@example.org", [to], body.encode())


def subjects(env: PochtaEnv, local: str) -> dict[str, Path]:
    """Subject -> file of every message in the account's INBOX."""
    out = {}
    for path in mailbox_files(env, local):
        match = re.search(rb"^Subject: (.*)$", path.read_bytes(), re.M)
        assert match is not None, path
        out[match.group(1).decode()] = path
    return out


def deliver(env: PochtaEnv, to: str, *names: str) -> None:
    """Send each message and wait until it is in the Maildir, so UIDs follow ``names``."""
    local = to.partition("@")[0]
    for name in names:
        send(env, to, name)
        assert wait_until(lambda n=name: n in subjects(env, local), 15.0), name


def flags(path: Path) -> str:
    """The Maildir flags of a message file ("" for new/ and for none)."""
    return path.name.partition(":2,")[2]


def login(env: PochtaEnv, user: str = ALICE) -> poplib.POP3:
    c = poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10)
    c.user(user)
    c.pass_(PASSWORD)
    return c


def pop3_record(server: ServeProcess, event: str, count: int = 1) -> dict[str, str]:
    """The count-th ``event`` logged by the POP3 service (SMTP logs connect/disconnect too)."""
    found: list[dict[str, str]] = []

    def seen() -> bool:
        found[:] = [r for r in server.events(event) if r.get("logger") == "pop3"]
        return len(found) >= count

    assert wait_until(seen, 15.0), f"no pop3 {event!r} record; log:\n" + "\n".join(server.lines)
    return found[count - 1]


def wire_size(path: Path) -> int:
    """RFC822.SIZE from the Maildir file name (",W=" is the size with CRLF line ends)."""
    match = re.search(r",W=(\d+)", path.name)
    assert match is not None, path.name
    return int(match.group(1))


# -- connection, CAPA, TLS, login --------------------------------------------------------------


def test_capa_plain_then_stls_then_pop3s(pop3: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = pop3
    c = poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10)
    assert c.getwelcome() == b"+OK pochta POP3 ready"
    caps = c.capa()
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
        assert cap in caps, cap
    assert caps["SASL"] == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert caps["IMPLEMENTATION"] == ["pochta"]

    c.stls(tls_context(env))  # verifies the server's certificate
    caps = c.capa()
    assert "STLS" not in caps
    assert "USER" in caps
    c.user(ALICE)
    assert c.pass_(PASSWORD) == b"+OK Logged in, maildrop has 0 messages (0 octets)"
    c.quit()

    s = poplib.POP3_SSL("127.0.0.1", env.ports["pop3s"], context=tls_context(env), timeout=10)
    assert "STLS" not in s.capa()
    s.user(ALICE)
    s.pass_(PASSWORD)
    assert s.stat() == (0, 0)
    s.quit()
    login_record = pop3_record(server, "login", count=2)
    assert login_record["tls"] == "true"
    assert login_record["mechanism"] == "USER"


def test_bad_password_gets_auth_code_and_is_never_logged(
    pop3: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, server = pop3
    c = poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10)
    c.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        c.pass_("wrong password 7")
    c.user(f"nobody@{DOMAIN}")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed"):
        c.pass_("wrong password 7")
    c.user(ALICE)
    c.pass_(PASSWORD)
    c.quit()
    pop3_record(server, "quit")
    failures = [r for r in server.events("auth_failed") if r.get("logger") == "pop3"]
    assert [r["reason"] for r in failures] == ["wrong password", "unknown user"]
    log = "\n".join(server.lines)
    assert "wrong password 7" not in log
    assert PASSWORD not in log


def test_auth_plain_and_scram_sha_256(pop3: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = pop3
    with socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock:
        f = sock.makefile("rwb")
        assert f.readline().startswith(b"+OK")
        plain = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
        f.write(b"AUTH PLAIN " + plain + b"\r\nSTAT\r\nQUIT\r\n")  # pipelined
        f.flush()
        assert f.readline() == b"+OK Logged in, maildrop has 0 messages (0 octets)\r\n"
        assert f.readline() == b"+OK 0 0\r\n"
        assert f.readline().startswith(b"+OK pochta POP3 server signing off")

    with socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock:
        f = sock.makefile("rwb")
        f.readline()
        client = ScramClient(["SCRAM-SHA-256"], ALICE, PASSWORD)
        first = base64.b64encode(client.get_client_first().encode())
        f.write(b"AUTH SCRAM-SHA-256 " + first + b"\r\n")
        f.flush()
        challenge = f.readline()
        assert challenge.startswith(b"+ ")
        client.set_server_first(base64.b64decode(challenge[2:]).decode())
        f.write(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
        f.flush()
        final = f.readline()
        assert final.startswith(b"+ ")
        client.set_server_final(base64.b64decode(final[2:]).decode())  # the server proves itself
        f.write(b"\r\n")
        f.flush()
        assert f.readline().startswith(b"+OK Logged in")
    assert pop3_record(server, "login", count=2)["mechanism"] == "SCRAM-SHA-256"


def _pop3_scram(env: PochtaEnv, authzid: str) -> bytes:
    """AUTH SCRAM-SHA-256 as ALICE naming ``authzid`` (isync's way); the server's last line."""
    with socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock:
        f = sock.makefile("rwb")
        f.readline()
        client = scram_client(ALICE, PASSWORD, authzid)
        first = client.get_client_first()
        assert first.startswith(f"n,a={authzid},n={ALICE},")
        f.write(b"AUTH SCRAM-SHA-256 " + base64.b64encode(first.encode()) + b"\r\n")
        f.flush()
        challenge = f.readline()
        if not challenge.startswith(b"+ "):
            return challenge
        client.set_server_first(base64.b64decode(challenge[2:]).decode())
        f.write(base64.b64encode(client.get_client_final().encode()) + b"\r\n")
        f.flush()
        final = f.readline()
        assert final.startswith(b"+ "), final
        client.set_server_final(base64.b64decode(final[2:]).decode())  # the server proves itself
        f.write(b"\r\nSTAT\r\n")
        f.flush()
        reply = f.readline()
        assert f.readline() == b"+OK 0 0\r\n"
        return reply


def test_auth_scram_sha_256_with_authzid(pop3: tuple[PochtaEnv, ServeProcess]) -> None:
    # RFC 5802 §5.1: an authzid equal to the user name (what isync sends) logs in.
    env, server = pop3
    assert _pop3_scram(env, ALICE).startswith(b"+OK Logged in")
    assert pop3_record(server, "login")["mechanism"] == "SCRAM-SHA-256"
    # Another identity asks to act as someone else: refused with [AUTH] (RFC 3206 §5).
    assert _pop3_scram(env, BOB).startswith(b"-ERR [AUTH]")
    failed = pop3_record(server, "auth_failed")
    assert failed["reason"].startswith("proxy authorisation is not allowed")


def test_plaintext_refused_unless_allowed_and_idle_timeout(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    set_key(env.config_path, "pop3", "allow_plaintext_on_loopback", "false")
    set_key(env.config_path, "pop3", "idle_timeout_seconds", "2")
    set_key(env.config_path, "pop3", "max_connections_per_ip", "2")
    env.add_user(ALICE, PASSWORD)
    with serve(env.config_path) as server:
        deliver(env, ALICE, "kept")
        # Two connections per IP, counted over both listeners.
        other = poplib.POP3_SSL("127.0.0.1", env.ports["pop3s"], context=tls_context(env))
        c = poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10)
        with socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as third:
            assert third.makefile("rb").readline() == (
                b"-ERR [SYS/TEMP] Too many connections from your address\r\n"
            )
        other.quit()
        caps = c.capa()
        assert "USER" not in caps
        assert "SASL" not in caps
        assert "STLS" in caps
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] .*issue STLS first"):
            c.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
            c.pass_(PASSWORD)
        c.stls(tls_context(env))
        c.user(ALICE)
        c.pass_(PASSWORD)
        assert c.dele(1) == b"+OK Message 1 deleted"
        # RFC 1939 §3: the idle timer closes without a response and without UPDATE.
        time.sleep(3)
        assert c.sock.recv(100) == b""
        pop3_record(server, "timeout")
        assert list(subjects(env, "alice")) == ["kept"]


# -- the maildrop ----------------------------------------------------------------------------


def test_stat_list_retr_top_uidl(pop3: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = pop3
    deliver(env, ALICE, "first", "second", "third")
    files = subjects(env, "alice")
    sizes = [wire_size(files[name]) for name in ("first", "second", "third")]  # UID order
    c = login(env)
    assert c.stat() == (3, sum(sizes))
    resp, listing, _ = c.list()
    assert resp == f"+OK 3 messages ({sum(sizes)} octets)".encode()
    assert listing == [f"{i} {size}".encode() for i, size in enumerate(sizes, 1)]

    resp, lines, _ = c.retr(1)
    assert resp == f"+OK {sizes[0]} octets".encode()
    stored = files["first"].read_bytes()  # with LF line ends on disk
    assert b"\r\n".join(lines) + b"\r\n" == stored.replace(b"\n", b"\r\n")
    assert b".a line with a leading dot" in lines  # un-stuffed by poplib
    assert b"..two" in lines

    resp, lines, _ = c.top(2, 0)
    assert lines[-1] == b""
    assert b"Subject: second" in lines
    assert b"Hello." not in lines
    _, lines, _ = c.top(2, 1)
    assert lines[-1] == b"Hello."

    resp, uidl, _ = c.uidl()
    ids = [line.split()[1] for line in uidl]
    assert all(UIDL_FORMAT.fullmatch(i) for i in ids)
    assert len(set(ids)) == 3
    assert c.uidl(2) == b"+OK 2 " + ids[1]
    with pytest.raises(poplib.error_proto, match="No such message"):
        c.retr(4)
    c.quit()


def test_uidl_stable_across_sessions_and_restart(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    with serve(env.config_path):
        deliver(env, ALICE, "a", "b")
        c = login(env)
        first = c.uidl()[1]
        c.quit()
        c = login(env)
        assert c.uidl()[1] == first
        c.dele(1)
        c.quit()
        deliver(env, ALICE, "c")
        c = login(env)
        after = c.uidl()[1]
        c.quit()
    # The kept message keeps its id under its new number; the new one gets a new id.
    assert after[0].split()[1] == first[1].split()[1]
    assert after[1].split()[1] not in {line.split()[1] for line in first}
    with serve(env.config_path) as server:
        c = login(env)
        assert c.uidl()[1] == after
        c.dele(1)
        # SIGTERM: an idle session is told at once, and its DELE is not applied.
        server.signal(signal.SIGTERM)
        assert c.sock.makefile("rb").readline() == (
            b"-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
        )
        assert server.wait_exit() == 0
    assert set(subjects(env, "alice")) == {"b", "c"}


def test_dele_rset_and_dele_quit_remove_exactly_those(
    pop3: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, server = pop3
    deliver(env, ALICE, "m1", "m2", "m3", "m4")
    c = login(env)
    c.dele(1)
    c.dele(2)
    assert c.stat()[0] == 2
    assert c.rset().startswith(b"+OK Maildrop has 4 messages")
    c.quit()
    assert set(subjects(env, "alice")) == {"m1", "m2", "m3", "m4"}

    c = login(env)
    c.retr(2)  # retrieved and kept: \Seen after QUIT
    c.top(3, 0)  # TOP marks nothing
    c.dele(1)
    c.dele(4)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        c.retr(4)
    assert c.list()[1] == [
        f"{n} {wire_size(subjects(env, 'alice')[s])}".encode() for n, s in ((2, "m2"), (3, "m3"))
    ]
    assert c.quit().endswith(b"(2 deleted, 2 left)")
    # The files follow the index once the account is quiet for a moment (the store's
    # lazy renames and unlinks, issue 18).
    assert wait_until(lambda: set(subjects(env, "alice")) == {"m2", "m3"}, 15.0)
    assert wait_until(lambda: "S" in flags(subjects(env, "alice")["m2"]), 15.0)
    left = subjects(env, "alice")
    assert "S" in flags(left["m2"])
    assert "S" not in flags(left["m3"])
    record = pop3_record(server, "quit", count=2)
    assert (record["deleted"], record["retrieved"]) == ("2", "1")


def test_dropped_connection_deletes_nothing_and_releases_the_lock(
    pop3: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, server = pop3
    deliver(env, ALICE, "x1", "x2")
    sock = socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10)
    f = sock.makefile("rwb")
    f.readline()
    f.write(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nDELE 1\r\nDELE 2\r\nRETR 1\r\n".encode())
    f.flush()
    for _ in range(5):
        f.readline()
    # Reset the connection (SO_LINGER 0) instead of sending QUIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    f.close()
    sock.close()
    dropped = pop3_record(server, "disconnect")
    assert dropped["deleted"] == ""  # no UPDATE state
    assert set(subjects(env, "alice")) == {"x1", "x2"}
    c = login(env)  # the maildrop lock went with the connection
    assert c.stat()[0] == 2
    c.quit()
    assert pop3_record(server, "quit")["deleted"] == "0"


def test_second_session_is_in_use(pop3: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = pop3
    first = login(env)
    second = poplib.POP3_SSL("127.0.0.1", env.ports["pop3s"], context=tls_context(env))
    second.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(PASSWORD)
    other = login(env, BOB)  # another account is not locked
    other.quit()
    first.quit()
    second.user(ALICE)
    assert second.pass_(PASSWORD).startswith(b"+OK Logged in")
    second.quit()


def test_update_removes_exactly_the_marked_uids_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UPDATE step on a real store: all or nothing, and only the UIDs the session marked
    (a message an IMAP client flagged \\Deleted stays)."""
    store = MaildirStore(tmp_path / "mail", hostname=HOSTNAME, durable=False)
    uids = [store.deliver(ALICE, f"Subject: {n}\r\n\r\nx\r\n".encode()).uid for n in "abc"]
    store.store_flags(ALICE, INBOX, [uids[2]], FlagMode.ADD, frozenset({"\\Deleted"}))

    def broken(*_args: object, **_kwargs: object) -> list[int]:
        raise StoreUnavailable("disk on fire")

    with monkeypatch.context() as m:
        m.setattr(store, "expunge", broken)
        with pytest.raises(StoreUnavailable):
            apply_update(store, ALICE, [uids[0], uids[2]], [uids[1]])
    after = {i.uid: i.flags for i in store.list_messages(ALICE, INBOX)}
    assert set(after) == set(uids)  # nothing removed
    assert "\\Deleted" not in after[uids[0]]  # our flag taken back ...
    assert "\\Deleted" in after[uids[2]]  # ... the IMAP client's left alone
    assert "\\Seen" not in after[uids[1]]

    assert apply_update(store, ALICE, [uids[0]], [uids[1]]) == [uids[0]]
    after = {i.uid: i.flags for i in store.list_messages(ALICE, INBOX)}
    assert set(after) == {uids[1], uids[2]}
    assert "\\Seen" in after[uids[1]]
    store.close()


# -- fetchmail -----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail is not installed")
def test_fetchmail_fetches_over_stls_and_deletes(
    pop3: tuple[PochtaEnv, ServeProcess], tmp_path: Path
) -> None:
    env, server = pop3
    deliver(env, BOB, "fm1", "fm2", "fm3")
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "fetched.mbox"
    cert = env.data_dir / "tls" / "cert.pem"
    rc = home / ".fetchmailrc"
    local_user = pwd.getpwuid(os.getuid()).pw_name  # fetchmail as root runs the MDA as them
    rc.write_text(
        "set no syslog\n"
        f"poll {HOSTNAME} via 127.0.0.1 protocol POP3 port {env.ports['pop3']}"
        " timeout 20\n"
        f'  user "{BOB}" there with password "{PASSWORD}" is "{local_user}" here\n'
        '  options nokeep fetchall sslproto "TLS1.2+" sslcertck'
        f' sslcertfile "{cert}" sslcommonname "{HOSTNAME}"\n'
        f'  mda "cat >> {out}"\n'
    )
    rc.chmod(0o600)
    environment = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    proc = subprocess.run(
        ["fetchmail", "-f", str(rc), "-v", "--nodetach"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"fetchmail: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    fetched = out.read_bytes()
    for name in ("fm1", "fm2", "fm3"):
        assert f"Subject: {name}".encode() in fetched
    assert b"\n.a line with a leading dot\n" in fetched
    assert wait_until(lambda: mailbox_files(env, "bob") == [], 15.0)  # lazy unlinks
    record = pop3_record(server, "quit")
    assert record["user"] == BOB
    assert record["deleted"] == "3"
    assert pop3_record(server, "tls")["version"].startswith("TLSv1.")


# -- issue 12: pre-login trickle, command-line cap, brute force on one connection ---------------


def _trickle(sock: socket.socket, data: bytes, *, every: float = 0.5) -> bytes:
    """Send `data` one byte every `every` seconds until the server speaks; return what it said
    ("" if it never did, i.e. it let the trickle go on)."""
    sock.settimeout(every)
    for byte in data:
        sock.sendall(bytes([byte]))
        try:
            said = sock.recv(4096)
        except TimeoutError:
            continue
        return said
    return b""


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_trickle_before_login_gets_err_then_eof(pochta_env: PochtaEnv) -> None:
    """One byte every 0.5 s resets the idle timer, not the login timer: -ERR, then EOF."""
    env = pochta_env
    set_key(env.config_path, "pop3", "login_timeout_seconds", "2")
    with (
        serve(env.config_path) as server,
        socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock,
    ):
        assert sock.recv(4096).startswith(b"+OK")
        said = _trickle(sock, b"USER someone.with.a.long.name@example.test" * 2)
        assert said == b"-ERR Login took too long, closing connection\r\n"
        assert _closed(sock)
        assert pop3_record(server, "timeout")["timer"] == "login"


def test_trickled_command_after_login_gets_err_then_eof(pochta_env: PochtaEnv) -> None:
    """Logged in (the login timer is over), a command line must still end in time."""
    env = pochta_env
    set_key(env.config_path, "pop3", "command_timeout_seconds", "2")
    env.add_user(ALICE, PASSWORD)
    with (
        serve(env.config_path) as server,
        socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock,
    ):
        f = sock.makefile("rb")
        assert f.readline().startswith(b"+OK")
        sock.sendall(f"USER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"+OK")
        assert f.readline().startswith(b"+OK Logged in")
        said = _trickle(sock, b"NOOP" * 20)
        assert said == b"-ERR Command line took too long, closing connection\r\n"
        assert _closed(sock)
        assert pop3_record(server, "timeout")["timer"] == "command"


def test_wrong_passwords_close_the_connection(pochta_env: PochtaEnv) -> None:
    """Brute force on one connection: the 3rd wrong PASS (pop3.max_auth_failures, Dovecot's
    3) is answered -ERR and the connection closes; the same with AUTH."""
    env = pochta_env
    set_key(env.config_path, "auth", "failure_threshold", "100")  # no tarpit in this test
    env.add_user(ALICE, PASSWORD)
    with serve(env.config_path):
        c = poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10)
        for _ in range(2):
            c.user(ALICE)
            with pytest.raises(
                poplib.error_proto, match=r"^b'-ERR \[AUTH\] Authentication failed'"
            ):
                c.pass_("wrong")
        c.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"too many failures, closing connection"):
            c.pass_("wrong")
        # Read, do not send: a command sent to a closed connection may meet a reset (RST)
        # instead of the end of the stream.
        assert c.file.readline() == b""  # the server closed the connection
        c.close()

        with socket.create_connection(("127.0.0.1", env.ports["pop3"]), timeout=10) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"+OK")
            bad = base64.b64encode(f"\0{ALICE}\0wrong".encode())
            for _ in range(2):
                sock.sendall(b"AUTH PLAIN " + bad + b"\r\n")
                assert f.readline() == b"-ERR [AUTH] Authentication failed\r\n"
            sock.sendall(b"AUTH PLAIN " + bad + b"\r\n")
            assert f.readline().endswith(b"too many failures, closing connection\r\n")
            assert f.readline() == b""  # EOF
