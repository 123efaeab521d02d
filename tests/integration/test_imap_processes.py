"""SMTP and IMAP served by several processes (server/workers.py): the master passes
connections to a worker; IMAP sessions in different processes still see each other's changes
at once; mail a worker queues is delivered by that worker, and by the master when the
worker dies."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from imapclient import IMAPClient

from pochta.queue.envelope import queue_shard
from tests.harness import DOMAIN, PochtaEnv, ServeProcess, serve, set_key, smtp_send

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"


def set_config(config: Path, table: str, **values: int) -> None:
    """Change integer keys of one table of the config `pochta init` wrote."""
    text = config.read_text()
    for key, value in values.items():
        text, n = re.subn(
            rf"(?ms)^(\[{table}\]\n.*?^){key} = \d+$", rf"\g<1>{key} = {value}", text, count=1
        )
        assert n == 1, f"{table}.{key} not found in the generated config"
    config.write_text(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(x) for x in out.split()]


@pytest.fixture
def two_processes(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    set_config(pochta_env.config_path, "server", processes=3)  # the master and two workers
    set_config(pochta_env.config_path, "imap", max_connections_per_ip=4)
    with serve(pochta_env.config_path) as server:
        server.wait_for("ready", count=3)
        yield pochta_env, server


def _client(env: PochtaEnv) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    c.login(ALICE, PASSWORD)
    return c


def _server_pid_of(client: IMAPClient) -> int:
    """Which process serves this connection: the owner of the server end of its socket."""
    sock = client._imap.sock  # imaplib's socket
    return _pid_of_connection(sock.getpeername()[1], sock.getsockname()[1])


def _pid_of_connection(server_port: int, local_port: int) -> int:
    out = subprocess.run(["ss", "-Htnp"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if (
            len(fields) >= 6
            and fields[3].endswith(f":{server_port}")
            and fields[4].endswith(f":{local_port}")
        ):
            m = re.search(r"pid=(\d+)", fields[5])
            if m:
                return int(m.group(1))
    raise AssertionError(f"no server socket for client port {local_port}:\n{out}")


def test_connections_spread_and_changes_cross_processes(
    two_processes: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, server = two_processes
    master = server.proc.pid
    workers = _children(master)
    assert len(workers) == 2
    a, b = _client(env), _client(env)
    # The master passes each connection to the least busy worker: one each.
    assert {_server_pid_of(a), _server_pid_of(b)} == set(workers)

    smtp_send(env, ALICE, "first")
    deadline = time.monotonic() + 15
    while a.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    uid = a.search("ALL")[0]

    # A flag set in one process is pushed to an IDLE session in the other...
    for idler, changer in ((a, b), (b, a)):
        idler.idle()
        changer.add_flags([uid], [b"\\Flagged"])
        responses = idler.idle_check(timeout=5)
        idler.idle_done()
        assert any(r[1] == b"FETCH" and b"\\Flagged" in r[2][-1] for r in responses), responses
        changer.remove_flags([uid], [b"\\Flagged"])
        idler.noop()

    # ...and so is a delivery, which the master makes.
    a.idle()
    smtp_send(env, ALICE, "second")
    responses = a.idle_check(timeout=10)
    a.idle_done()
    assert (2, b"EXISTS") in responses
    a.logout()
    b.logout()


def test_per_ip_limit_counts_every_process(two_processes: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = two_processes
    held = [_client(env) for _ in range(4)]
    with socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10) as s:
        greeting = s.recv(200)
    assert greeting.startswith(b"* BYE [UNAVAILABLE]"), greeting
    held.pop().logout()
    time.sleep(0.3)  # the worker's "closed" message reaches the master
    extra = _client(env)
    extra.logout()
    for c in held:
        c.logout()


def test_a_killed_worker_is_restarted_and_stop_ends_all(
    two_processes: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, server = two_processes
    master = server.proc.pid
    before = _children(master)
    os.kill(before[0], signal.SIGKILL)
    server.wait_for("worker_exited")
    c = _client(env)  # served meanwhile by the other worker
    assert _server_pid_of(c) == before[1]
    c.logout()
    server.wait_for("ready", count=4, timeout=20)
    now = _children(master)
    assert len(now) == 2
    assert before[0] not in now
    c = _client(env)
    c.logout()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=20) == 0
    assert not _children(master)
    for pid in now:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _queue_id(reply: bytes) -> str:
    """The id in "250 2.0.0 Ok: queued as ID"."""
    text = reply.decode()
    assert "queued as " in text, text
    return text.rsplit(" ", 1)[1]


def _worker_pids(server: ServeProcess) -> dict[int, int]:
    """worker index -> pid of its latest start."""
    return {int(r["worker"]): int(r["pid"]) for r in server.events("worker_started")}


def test_smtp_in_a_worker_is_queued_in_its_shard_and_delivered(pochta_env: PochtaEnv) -> None:
    """A worker gives the mail it receives ids of its own shard (server/workers.py); mail for
    local mailboxes only is handed to the master, which delivers it at once."""
    pochta_env.add_user(ALICE, PASSWORD)
    set_config(pochta_env.config_path, "server", processes=3)
    set_config(pochta_env.config_path, "smtp", max_connections_per_ip=2)
    set_key(pochta_env.config_path, "smtp", "connection_limit_exceptions", "[]")  # loopback
    with serve(pochta_env.config_path) as server:
        server.wait_for("ready", count=3)
        server.wait_for("delivering", count=2)
        workers = _worker_pids(server)
        port = pochta_env.ports["smtp"]
        first = smtplib.SMTP("127.0.0.1", port, timeout=10)
        second = smtplib.SMTP("127.0.0.1", port, timeout=10)
        served_by = [_pid_of_connection(port, s.sock.getsockname()[1]) for s in (first, second)]
        assert set(served_by) == set(workers.values())
        # The per-IP limit (2) counts both processes: a third connection is refused.
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", port, timeout=10)
        assert refused.value.smtp_code == 421
        shard_of_pid = {int(r["pid"]): int(r["shard"]) for r in server.events("delivering")}
        assert {shard_of_pid[pid] for pid in workers.values()} == {1, 2}
        for i, (s, pid) in enumerate(zip((first, second), served_by, strict=True)):
            s.ehlo()
            s.mail("carol@example.org")
            s.rcpt(ALICE)
            code, reply = s.data(f"Subject: via {i}\r\n\r\nhello\r\n".encode())
            assert code == 250
            assert queue_shard(_queue_id(reply), 3) == shard_of_pid[pid]
            s.quit()
        c = _client(pochta_env)
        deadline = time.monotonic() + 15
        while c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] < 2:
            assert time.monotonic() < deadline, "mail queued by the worker was not delivered"
            time.sleep(0.05)
        c.logout()
        queued = [r for r in server.lines if "event=queued" in r]
        assert len(queued) == 2


class StallingSink:
    """An SMTP peer whose first DATA never gets its reply; later ones are taken."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.taken: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.stalled.is_set():
            self.stalled.set()
            await asyncio.sleep(60)
            return "451 4.3.0 too late"
        self.taken.append(envelope.content)
        return "250 2.0.0 Taken"


def test_a_dead_workers_mail_is_delivered_by_the_master(pochta_env: PochtaEnv) -> None:
    """A worker dies while it delivers a message: the master moves what that worker left in
    active/ back to incoming/ and delivers it (taking the worker's shard until the worker is
    back)."""
    sink = StallingSink()
    peer = Controller(sink, hostname="127.0.0.1", port=_free_port())
    peer.start()
    try:
        pochta_env.add_user(ALICE, PASSWORD)
        set_config(pochta_env.config_path, "server", processes=3)
        set_key(pochta_env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{peer.port}"')
        with serve(pochta_env.config_path) as server:
            server.wait_for("ready", count=3)
            server.wait_for("delivering", count=2)
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the test server's self-signed certificate
            with smtplib.SMTP("127.0.0.1", pochta_env.ports["submission"], timeout=20) as s:
                s.starttls(context=context)
                s.login(ALICE, PASSWORD)
                s.mail(ALICE)
                s.rcpt("bob@elsewhere.example")
                code, reply = s.data(b"Subject: stalls\r\n\r\nwill the master take it?\r\n")
            assert code == 250
            queue_id = _queue_id(reply)
            shard = queue_shard(queue_id, 3)
            assert shard in (1, 2)  # a worker took the connection, and so the delivery
            assert sink.stalled.wait(15), "the worker never reached DATA"
            assert (pochta_env.data_dir / "queue" / "active" / queue_id).exists()
            os.kill(_worker_pids(server)[shard - 1], signal.SIGKILL)
            requeued = server.wait_for("worker_mail_requeued", timeout=20)
            assert (requeued["shard"], requeued["messages"]) == (str(shard), "1")
            delivered = server.wait_for("delivered", timeout=20)
            assert delivered["queue_id"] == queue_id
            assert len(sink.taken) == 1
            assert b"will the master take it?" in sink.taken[0]
            server.wait_for("ready", count=4, timeout=20)  # the worker is back
    finally:
        peer.stop()


def test_delivered_mail_is_indexed_in_the_background(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(ALICE, PASSWORD)
    text = pochta_env.config_path.read_text()
    pochta_env.config_path.write_text(text.replace('log_level = "info"', 'log_level = "debug"', 1))
    with serve(pochta_env.config_path) as server:
        smtp_send(pochta_env, ALICE, "to index", body="a zanzibar in the body\n")
        record = server.wait_for("fts_indexed", timeout=20)
        assert record["user"] == ALICE
        assert record["messages"] == "1"
        c = _client(pochta_env)
        c.select_folder("INBOX")
        assert len(c.search(["TEXT", "zanzibar"])) == 1
        c.logout()


def test_recent_goes_to_one_session_across_processes(
    two_processes: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = two_processes
    for i in range(2):
        smtp_send(env, ALICE, f"recent {i}")
    a, b = _client(env), _client(env)
    assert _server_pid_of(a) != _server_pid_of(b)
    deadline = time.monotonic() + 15
    while a.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # RFC 3501 §2.3.2: EXAMINE shows \Recent without taking it; SELECT takes it.
    assert b.select_folder("INBOX", readonly=True)[b"RECENT"] == 2
    assert a.select_folder("INBOX")[b"RECENT"] == 2
    assert b.select_folder("INBOX")[b"RECENT"] == 0  # another process, same truth
    a.idle()
    smtp_send(env, ALICE, "recent 2")
    responses = a.idle_check(timeout=10)
    a.idle_done()
    assert (3, b"RECENT") in responses  # its two and the new one
    b.noop()
    assert b.folder_status("INBOX", ["RECENT"])[b"RECENT"] == 0
    a.logout()
    b.logout()


def test_per_account_limit_counts_every_process(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(ALICE, PASSWORD)
    set_config(pochta_env.config_path, "server", processes=3)
    set_config(pochta_env.config_path, "imap", max_connections_per_account=3)
    with serve(pochta_env.config_path) as server:
        server.wait_for("ready", count=3)
        held = [_client(pochta_env) for _ in range(3)]
        assert len({_server_pid_of(c) for c in held}) == 2  # spread over both workers
        time.sleep(0.3)  # the workers' counts reach the master and come back as totals
        extra = IMAPClient("127.0.0.1", port=pochta_env.ports["imap"], ssl=False, timeout=10)
        with pytest.raises(IMAPClient.Error, match="LIMIT"):
            extra.login(ALICE, PASSWORD)
        held.pop().logout()
        time.sleep(0.3)
        extra.login(ALICE, PASSWORD)
        extra.logout()
        for c in held:
            c.logout()
