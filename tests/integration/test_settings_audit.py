"""Issue 17's rule, for the settings no other test set: each one, set the way an admin sets
it in ``pochta.toml``, changes what a real ``pochta serve`` (or the real CLI) does. Every test
here fails if its setting were read and then ignored.

The Postfix/Dovecot counterpart of each setting is named on its test. Real clients (smtplib,
imaplib) in their default configuration; a raw socket only where the point is the bytes
(an IMAP literal, an SMTP session kept open with NOOPs). Where a time limit is the point,
the limit is short (about a second) and the client's own patience is a few seconds longer
than the limit but shorter than the default: the test asserts what the client sees.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import smtplib
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest

from tests.dnsserver import ZoneServer
from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    client_tls,
    make_pochta_env,
    serve,
    set_key,
    smtp_send,
    wait_files,
)

BOB = f"bob@{DOMAIN}"
PASSWORD = "correct horse 9"


SLEEP = "61.7071"


# -- [delivery] pipe_timeout_seconds (Postfix local(8)/pipe(8) command_time_limit) -------------


def test_pipe_command_over_its_time_limit_is_killed_and_deferred(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    """A ``|command`` alias target that runs past ``delivery.pipe_timeout_seconds`` is killed
    (its process group) and the recipient deferred with 4.3.0 "command time limit exceeded":
    pochta defers where Postfix's pipe_command.c bounces (deliver/pipe.py says why: a hung
    command loses nothing, the queue lifetime still ends it). With the default 1000 s the
    command would still be running when the test gives up."""
    env = pochta_env
    aliases = tmp_path / "aliases"
    # The command hangs (as root it runs as nobody: the alias file is root's). Its sleep has
    # a length no other program here uses, so pgrep finds only ours.
    aliases.write_text(f'slow: "|exec sleep {SLEEP}"\n')
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "tables", "alias_maps", f'["{aliases}"]')
    set_key(env.config_path, "delivery", "pipe_timeout_seconds", "1.0")
    env.run("alias", "add", f"slow@{DOMAIN}", f"slow@{HOSTNAME}", check=True)
    with serve(env.config_path) as server:
        smtp_send(env, f"slow@{DOMAIN}", "hangs")
        deferred = server.wait_for("deferred", timeout=20)
        assert deferred["relay"].startswith("pipe:"), deferred
        assert "4.3.0 command time limit exceeded" in deferred["reply"], deferred
        # No sleep of the command is left: the whole process group was killed.
        leftover = subprocess.run(
            ["pgrep", "-f", f"sleep {SLEEP}"], capture_output=True, text=True, check=False
        )
        assert leftover.stdout == "", leftover.stdout
        listing = env.run("queue", "list", check=True).stdout
        assert "command time limit exceeded" in listing, listing


# -- [store] default_message_limit (Dovecot quota_rule = *:messages=N) --------------------------


def test_message_count_quota_refuses_the_next_message_at_rcpt(pochta_env: PochtaEnv) -> None:
    """Two messages fill a mailbox of ``store.default_message_limit = 2``; the third is
    refused at RCPT TO with 452 4.2.2 (mailbox full, try later), as the byte quota is, and
    an IMAP APPEND with NO [OVERQUOTA] (RFC 9208 §4.3)."""
    env = pochta_env
    env.add_user(BOB, PASSWORD)
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "store", "default_message_limit", "2")
    with serve(env.config_path):
        smtp_send(env, BOB, "one")
        smtp_send(env, BOB, "two")
        assert len(wait_files(env, "bob", 2)) == 2
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp_send(env, BOB, "three")
        code, text = refused.value.recipients[BOB]
        assert (code, text.split()[0]) == (452, b"4.2.2"), (code, text)
        assert b"mailbox full" in text
        client = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
        client.login(BOB, PASSWORD)
        status, data = client.append("INBOX", None, None, b"Subject: four\r\n\r\nx\r\n")
        client.logout()
        assert status == "NO"
        assert data[0].startswith(b"[OVERQUOTA]"), data
        assert len(wait_files(env, "bob", 3, timeout=1)) == 2


# -- [smtp] session_timeout_seconds (the whole session, not one wait) ---------------------------


def _read_line(sock: socket.socket, buf: bytearray, timeout: float) -> bytes | None:
    """One reply line (without CRLF) from ``sock`` within ``timeout``; None when none came,
    b"" when the server closed."""
    sock.settimeout(timeout)
    while b"\r\n" not in buf:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def test_smtp_session_over_its_time_limit_gets_421(pochta_env: PochtaEnv) -> None:
    """A client that keeps its session busy with NOOPs (each well inside the idle timeout)
    is cut off with 421 4.4.2 once the whole session passes ``smtp.session_timeout_seconds``.
    The client gives up after 40 NOOPs (about 8 s): with the default hour it would never
    see the 421."""
    env = pochta_env
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "smtp", "session_timeout_seconds", "2")
    with serve(env.config_path) as server:
        sock = socket.create_connection(("127.0.0.1", env.ports["smtp"]), timeout=10)
        with sock:
            buf = bytearray()
            assert (_read_line(sock, buf, 10) or b"").startswith(b"220 ")
            answered: list[bytes] = []
            for _ in range(40):
                try:
                    sock.sendall(b"NOOP\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                line = _read_line(sock, buf, 5)
                assert line is not None, "no reply to NOOP"
                answered.append(line)
                if not line.startswith(b"250"):
                    break
                # An unasked line here is the 421 of the session timer.
                late = _read_line(sock, buf, 0.2)
                if late is not None:
                    answered.append(late)
                    break
            assert answered[0].startswith(b"250"), answered
            assert answered[-1].startswith(b"421 4.4.2"), answered
            assert _read_line(sock, buf, 5) == b""  # and the server closed the connection
        assert server.wait_for("timeout")["timer"] == "session"


# -- [imap] max_literal_bytes_before_login -------------------------------------------------


def test_imap_literal_over_the_pre_login_limit_is_refused(pochta_env: PochtaEnv) -> None:
    """``imap.max_literal_bytes_before_login = 64``: LOGIN with a 100-octet literal is
    refused at once, with no "+" (the default 8192 would ask for the data), while one of 20
    octets gets its "+" as usual."""
    env = pochta_env
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "imap", "max_literal_bytes_before_login", "64")
    with serve(env.config_path):
        sock = socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10)
        with sock:
            buf = bytearray()
            assert (_read_line(sock, buf, 10) or b"").startswith(b"* OK")
            sock.sendall(b"a1 LOGIN {100}\r\n")
            line = _read_line(sock, buf, 10)
            assert line is not None
            assert not line.startswith(b"+"), line
            assert line.startswith((b"a1 NO", b"a1 BAD")), line
            assert b"Literal too large before login" in line
            sock.sendall(b"a2 LOGIN {20}\r\n")
            assert (_read_line(sock, buf, 10) or b"").startswith(b"+")


# -- [directory] sqlite_path (Dovecot's passdb/userdb args, Postfix's *_maps database) ------------


def test_directory_at_another_path_serves_the_cli_and_imap(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    """With ``directory.sqlite_path`` elsewhere, the CLI writes accounts there and ``serve``
    logs them in from there; the database pochta init made is left alone."""
    env = pochta_env
    elsewhere = tmp_path / "accounts" / "users.sqlite3"
    elsewhere.parent.mkdir()
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "directory", "sqlite_path", f'"{elsewhere}"')
    env.run("domain", "add", DOMAIN, check=True)  # a new, empty directory
    env.add_user(BOB, PASSWORD)
    assert BOB in env.run("user", "list", check=True).stdout
    with sqlite3.connect(elsewhere) as db:
        assert db.execute("SELECT address FROM accounts").fetchall() == [(BOB,)]
    with sqlite3.connect(env.data_dir / "directory.sqlite3") as db:
        assert (BOB,) not in db.execute("SELECT address FROM accounts").fetchall()
    with serve(env.config_path):
        client = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
        assert client.login(BOB, PASSWORD)[0] == "OK"
        client.logout()


# -- [server] run_as_group (Postfix mail_owner's group, Dovecot mail_gid) --------------------------


@pytest.fixture
def world_readable_env() -> Iterator[PochtaEnv]:
    """A data dir nobody can reach (pytest's tmp_path lives under a 0700 directory)."""
    top = Path(tempfile.mkdtemp(prefix="pochta-audit-"))
    try:
        top.chmod(0o755)
        yield make_pochta_env(top / "data")
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def _gids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Gid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Gid line for {pid}")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching user and group needs root")
def test_run_as_group_is_the_serving_process_group(world_readable_env: PochtaEnv) -> None:
    """``run_as_user = "nobody"``, ``run_as_group = "mail"``: the server runs with gid mail
    (real, effective, saved, filesystem), not nobody's primary group."""
    env = world_readable_env
    nobody = pwd.getpwnam("nobody")
    try:
        group = grp.getgrnam("mail")
    except KeyError:
        pytest.skip("this system has no group 'mail'")
    assert group.gr_gid != nobody.pw_gid
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "server", "run_as_user", '"nobody"')
    set_key(env.config_path, "server", "run_as_group", '"mail"')
    with serve(env.config_path) as server:
        server.wait_for("privileges_dropped")
        assert _gids(server.proc.pid) == [group.gr_gid] * 4
        assert (env.data_dir / "directory.sqlite3").stat().st_gid == group.gr_gid


# -- [smtp] peername_lookup_timeout_seconds (Postfix smtpd's client name lookup) -------------------


class SilentOnPTR(ZoneServer):
    """A zone server that never answers PTR questions (a broken reverse zone)."""

    def _respond(self, wire: bytes, *, udp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if query.question and query.question[0].rdtype == dns.rdatatype.PTR:
            self.queries.append((query.question[0].name.to_text(), "PTR"))
            return None
        return super()._respond(wire, udp=udp)


def test_client_name_lookup_gives_up_after_its_time_limit(pochta_env: PochtaEnv) -> None:
    """The reverse zone never answers: after ``smtp.peername_lookup_timeout_seconds`` (0.5)
    the session starts, the client named "unknown". The DNS timeout is 30 s and the default
    limit 5 s; the client waits 3 s for the greeting, so only the setting lets it in."""
    env = pochta_env
    zone_text = ". 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"
    with SilentOnPTR(zone_text) as zone:
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "30.0")
        set_key(env.config_path, "smtp", "peername_lookup_timeout_seconds", "0.5")
        with serve(env.config_path) as server:
            with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=3) as client:
                assert client.noop()[0] == 250
            connect = server.wait_for("connect")
            assert connect["client_name"] == "unknown"
            assert ("1.0.0.127.in-addr.arpa.", "PTR") in zone.queries


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to run_as_user needs root")
def test_directory_path_with_run_as_user(world_readable_env: PochtaEnv) -> None:
    """``directory.sqlite_path`` with ``run_as_user = "nobody"``: SQLite makes its -wal and
    -shm files next to the database after the switch. In a folder of data_dir the server
    hands that folder to nobody, and logins work; in root's folder outside data_dir
    ``pochta check`` refuses and says what to run, and once done the server starts."""
    env = world_readable_env
    set_key(env.config_path, "server", "processes", "1")
    set_key(env.config_path, "server", "run_as_user", '"nobody"')
    set_key(env.config_path, "directory", "sqlite_path", '"db/accounts.sqlite3"')
    env.run("domain", "add", DOMAIN, check=True)
    env.add_user(BOB, PASSWORD)
    with serve(env.config_path) as server:
        server.wait_for("privileges_dropped")
        client = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
        assert client.login(BOB, PASSWORD)[0] == "OK"
        client.logout()
    assert (env.data_dir / "db").stat().st_uid == pwd.getpwnam("nobody").pw_uid

    outside = env.data_dir.parent / "accounts"
    outside.mkdir(mode=0o755)
    set_key(env.config_path, "directory", "sqlite_path", f'"{outside}/users.sqlite3"')
    env.run("domain", "add", DOMAIN, check=False)  # check refuses: nothing is made
    proc = env.run("check")
    assert proc.returncode == 1
    assert (
        f"directory.sqlite_path: the server runs as nobody and SQLite must create "
        f"users.sqlite3-wal and users.sqlite3-shm in {outside}, which nobody cannot write; "
        f"run: chown nobody {outside}"
    ) in proc.stderr, proc.stderr
    os.chown(outside, pwd.getpwnam("nobody").pw_uid, -1)
    env.run("domain", "add", DOMAIN, check=True)
    env.add_user(BOB, PASSWORD)
    with serve(env.config_path):
        client = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
        assert client.login(BOB, PASSWORD)[0] == "OK"
        client.logout()


def test_a_missing_directory_database_is_refused_not_made(pochta_env: PochtaEnv) -> None:
    """A mistyped directory.sqlite_path must not start an empty directory: every command
    that reads it refuses and names the path; check warns."""
    wrong = pochta_env.data_dir / "typo" / "directory.sqlite3"
    set_key(pochta_env.config_path, "directory", "sqlite_path", f'"{wrong}"')
    listed = pochta_env.run("user", "list")
    assert listed.returncode == 1
    assert f"no directory database at {wrong}" in listed.stderr, listed.stderr
    assert not wrong.exists()
    assert not wrong.parent.exists()
    checked = pochta_env.run("check")
    assert checked.returncode == 0, checked.stderr
    assert f"warning: no directory database at {wrong}" in checked.stderr, checked.stderr


@pytest.mark.parametrize("setting", ["reject", "allow"])
def test_sender_login_mismatch(pochta_env: PochtaEnv, setting: str) -> None:
    """Postfix's reject_sender_login_mismatch: with "reject" (the default) a logged-in user
    may not send as an address that is not theirs (553 5.7.1); with "allow" they may."""
    env = pochta_env
    env.add_user(BOB, PASSWORD)
    set_key(env.config_path, "smtp", "sender_login_mismatch", f'"{setting}"')
    with serve(env.config_path), smtplib.SMTP("127.0.0.1", env.ports["submission"]) as c:
        c.starttls(context=client_tls())
        c.login(BOB, PASSWORD)
        code, text = c.mail(f"someone-else@{DOMAIN}")
    if setting == "reject":
        owned = f"5.7.1 <someone-else@{DOMAIN}>: Sender address not owned by user {BOB}"
        assert (code, text) == (553, owned.encode())
    else:
        assert code == 250, text
