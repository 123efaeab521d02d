"""Connection limits of the real `pochta serve` (issue 12, points 15 and 16), with real
clients: a connection that has answered QUIT no longer counts, loopback is exempt from the
SMTP per-IP limit by default, IMAP limits sessions per account and address (Dovecot's
mail_max_userip_connections), and each service has a total (max_connections) counted over
every process."""

from __future__ import annotations

import imaplib
import os
import poplib
import signal
import smtplib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, serve, set_key, wait_until

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"
THREADS = 10
SESSIONS = 30


def _greeting(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock, sock.makefile("rb").readline()


def _eof_after(sock: socket.socket) -> bool:
    """The server closed the connection (after what was already read)."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def workers(pochta_env: PochtaEnv) -> PochtaEnv:
    """The master and two workers: limits are counted over processes."""
    set_key(pochta_env.config_path, "server", "processes", "3")
    return pochta_env


def _senders(port: int) -> list[str]:
    """THREADS clients, each SESSIONS sessions one after the other (EHLO, MAIL, RSET, QUIT),
    reconnecting right after QUIT; every refusal seen."""
    refused: list[str] = []
    lock = threading.Lock()

    def sender() -> None:
        for _ in range(SESSIONS):
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                    s.ehlo("sender.example.org")
                    s.mail("carol@example.org")
                    s.rset()
                    # __exit__ sends QUIT and closes right after reading 221
            except smtplib.SMTPConnectError as exc:
                with lock:
                    refused.append(f"{exc.smtp_code} {exc.smtp_error!r}")

    threads = [threading.Thread(target=sender) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return refused


@pytest.mark.parametrize("exceptions", ["[]", "default"])
def test_reconnecting_after_quit_is_never_refused(workers: PochtaEnv, exceptions: str) -> None:
    """Point 15: 10 senders on loopback with a per-IP limit of 10, each reconnecting at once
    after QUIT, 300 sessions: no 421. With the loopback exemption switched off ("[]") this
    holds because a connection that answered QUIT no longer counts."""
    env = workers
    set_key(env.config_path, "smtp", "max_connections_per_ip", str(THREADS))
    if exceptions != "default":
        set_key(env.config_path, "smtp", "connection_limit_exceptions", exceptions)
    with serve(env.config_path) as server:
        server.wait_for("ready", count=3)
        refused = _senders(env.ports["smtp"])
    assert refused == []


def test_per_ip_limit_still_holds_without_exemption(workers: PochtaEnv) -> None:
    """The exemption switched off, the per-IP limit refuses the (N+1)th open connection."""
    env = workers
    set_key(env.config_path, "smtp", "max_connections_per_ip", "2")
    set_key(env.config_path, "smtp", "connection_limit_exceptions", "[]")
    with serve(env.config_path) as server:
        server.wait_for("ready", count=3)
        port = env.ports["smtp"]
        with smtplib.SMTP("127.0.0.1", port, timeout=10), smtplib.SMTP("127.0.0.1", port):
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP("127.0.0.1", port, timeout=10)
            assert refused.value.smtp_code == 421
            assert b"from your address" in refused.value.smtp_error


def test_loopback_is_exempt_from_the_smtp_per_ip_limit_by_default(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    set_key(env.config_path, "smtp", "max_connections_per_ip", "2")
    with serve(env.config_path):
        port = env.ports["smtp"]
        clients = [smtplib.SMTP("127.0.0.1", port, timeout=10) for _ in range(5)]
        for c in clients:
            assert c.noop()[0] == 250
            c.quit()


@pytest.fixture
def small_totals(workers: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    env = workers
    set_key(env.config_path, "smtp", "max_connections", "3")
    set_key(env.config_path, "imap", "max_connections", "3")
    set_key(env.config_path, "pop3", "max_connections", "3")
    with serve(env.config_path) as server:
        server.wait_for("ready", count=3)
        yield env, server


def test_smtp_total_refuses_the_next_connection_with_421(
    small_totals: tuple[PochtaEnv, ServeProcess],
) -> None:
    """Point 16: smtp.max_connections counts the listener's connections in every process."""
    env, _ = small_totals
    port = env.ports["smtp"]
    held = [smtplib.SMTP("127.0.0.1", port, timeout=10) for _ in range(3)]
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", port, timeout=10)
    assert refused.value.smtp_code == 421
    assert refused.value.smtp_error.startswith(b"4.7.0 Too many connections, try again later")
    # Other listeners have their own count; one closed connection makes room again.
    with smtplib.SMTP("127.0.0.1", env.ports["submission"], timeout=10) as other:
        assert other.noop()[0] == 250
    held.pop().quit()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as again:
        assert again.noop()[0] == 250
    for c in held:
        c.quit()


def test_imap_total_refuses_with_bye_unavailable(
    small_totals: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = small_totals
    # imap and imaps are one service: counted together.
    held = [imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10) for _ in range(3)]
    sock, greeting = _greeting(env.ports["imap"])
    with sock:
        assert greeting.startswith(b"* BYE [UNAVAILABLE] Too many connections, try again later")
        assert _eof_after(sock)
    held.pop().logout()
    again = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    assert again.noop()[0] == "OK"
    again.logout()
    for c in held:
        c.logout()


def test_pop3_total_refuses_with_sys_temp(small_totals: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = small_totals
    held = [poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10) for _ in range(3)]
    sock, greeting = _greeting(env.ports["pop3"])
    with sock:
        assert greeting == b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
        assert _eof_after(sock)
    held.pop().quit()
    again = poplib.POP3("127.0.0.1", env.ports["pop3"], timeout=10)
    again.quit()
    for c in held:
        c.quit()


def test_imap_limits_sessions_per_user_and_address(workers: PochtaEnv) -> None:
    """Point 15, IMAP: 11 sessions of one account from one address get NO [LIMIT] on the
    11th (imap.max_userip_connections = 10, Dovecot's default), while 11 accounts behind the
    same address (an office behind NAT) all log in; the per-IP cap is in the hundreds."""
    env = workers
    users = [f"user{i}@{DOMAIN}" for i in range(11)]
    for user in users:
        env.add_user(user, PASSWORD)
    with serve(env.config_path) as server:
        server.wait_for("ready", count=3)
        port = env.ports["imap"]
        mine = []
        for _ in range(10):
            c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            c.login(users[0], PASSWORD)
            mine.append(c)
        eleventh = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\]"):
            eleventh.login(users[0], PASSWORD)
        others = []
        for user in users[1:]:
            c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            assert c.login(user, PASSWORD)[0] == "OK"
            others.append(c)
        # One session of the account ends: the same address may open another.
        mine.pop().logout()
        assert eleventh.login(users[0], PASSWORD)[0] == "OK"
        for c in [*mine, *others, eleventh]:
            c.logout()


def _at_limit_of_one(env: PochtaEnv) -> None:
    """One session per account and address, and the master's counts in the log
    (``sessions_counted``, debug)."""
    env.add_user(ALICE, PASSWORD)
    set_key(env.config_path, "imap", "max_userip_connections", "1")
    set_key(env.config_path, "server", "log_level", '"debug"')


def _master_counts(server: ServeProcess, key: str) -> list[int]:
    """Every total the master computed for ``key``, in order."""
    return [int(r["total"]) for r in server.events("sessions_counted") if r.get("key") == key]


USERIP = f"imap-userip:127.0.0.1/{ALICE}"
CYCLES = 20


def test_imap_login_right_after_logout_on_another_worker(workers: PochtaEnv) -> None:
    """At a limit of one session, CYCLES times: the next connection is opened while the
    last session is still logged in (so the master gives it to the other worker), the last
    session logs out, and the next one logs in as soon as LOGOUT's OK is read. None is
    refused, and the master's count of the account-from-address sessions never passes one
    and ends at zero."""
    env = workers
    _at_limit_of_one(env)
    with serve(env.config_path) as server:
        server.wait_for("ready", count=3)
        port = env.ports["imap"]
        current = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        assert current.login(ALICE, PASSWORD)[0] == "OK"
        for _ in range(CYCLES):
            following = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            assert following.noop()[0] == "OK"
            assert current.logout()[0] == "BYE"
            assert following.login(ALICE, PASSWORD)[0] == "OK"  # not NO [LIMIT]
            current = following
        current.logout()
        server.wait_for("disconnect", count=CYCLES + 1)
        assert wait_until(lambda: _master_counts(server, USERIP)[-1:] == [0], timeout=20)
        counts = _master_counts(server, USERIP)
        assert max(counts) == 1
        assert counts.count(1) == CYCLES + 1  # each login counted once, in the master


def test_imap_logout_answers_once_the_master_has_the_release(workers: PochtaEnv) -> None:
    """The race made certain: the master is stopped (SIGSTOP) while a session logs out, so
    it cannot handle the release in time, and the client logs in again on another
    connection as soon as it reads LOGOUT's OK. The OK waits for the master (its
    confirmation that every worker has the new count), so that login is not refused."""
    env = workers
    _at_limit_of_one(env)
    with serve(env.config_path) as server:
        server.wait_for("ready", count=3)
        port = env.ports["imap"]
        first = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        assert first.login(ALICE, PASSWORD)[0] == "OK"
        second = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        assert second.noop()[0] == "OK"
        # The master has counted the first session (and told every worker).
        assert wait_until(lambda: _master_counts(server, USERIP)[-1:] == [1], timeout=20)
        answers: list[str] = []

        def log_out_and_in_again() -> None:
            answers.append(first.logout()[0])
            try:
                answers.append(second.login(ALICE, PASSWORD)[0])
            except imaplib.IMAP4.error as exc:
                answers.append(str(exc))

        master = server.proc.pid
        client = threading.Thread(target=log_out_and_in_again)
        os.kill(master, signal.SIGSTOP)
        try:
            client.start()
            client.join(1.0)  # without the wait for the master, both answers come now
        finally:
            os.kill(master, signal.SIGCONT)
        client.join(30)
        assert answers == ["BYE", "OK"]
        assert not server.events("session_release_unconfirmed")
        second.logout()


def test_imap_sixty_connections_from_one_address(pochta_env: PochtaEnv) -> None:
    """An office behind one NAT address: 60 connections (more than the old cap of 50)."""
    with serve(pochta_env.config_path):
        socks = []
        try:
            for _ in range(60):
                sock, greeting = _greeting(pochta_env.ports["imap"])
                socks.append(sock)
                assert greeting.startswith(b"* OK"), greeting
        finally:
            for sock in socks:
                sock.close()
