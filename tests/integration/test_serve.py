"""The real `pochta serve` in a subprocess, driven by real HTTP clients and real signals."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import pwd
import signal
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pochta.checks import load_checked_settings
from pochta.config.settings import LISTENER_NAMES
from pochta.directory.sqlite import SqliteDirectory
from pochta.server import app
from pochta.server.app import Server
from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    make_pochta_env,
    parse_log_line,
    serve,
    set_key,
)


def http_get(
    port: int, path: str, host: str = "localhost", method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- the HTTP service ---------------------------------------------------------------------


def test_http_answers_autoconfig_mta_sts_metrics(pochta_env: PochtaEnv) -> None:
    port = pochta_env.ports["http"]
    with serve(pochta_env.config_path) as server:
        bound = {r["listener"]: (r["address"], r["tls"]) for r in server.events("listener_bound")}
        assert bound["http"] == (f"127.0.0.1:{port}", "no")
        assert bound["submissions"] == (f"127.0.0.1:{pochta_env.ports['submissions']}", "yes")
        assert set(bound) == set(LISTENER_NAMES)  # init switches every listener on
        assert server.events("listener_unavailable") == []

        status, headers, body = http_get(port, "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")
        assert status == 200
        assert headers["content-type"] == "text/plain"
        assert body == (
            f"version: STSv1\r\nmode: testing\r\nmx: {HOSTNAME}\r\nmax_age: 604800\r\n".encode()
        )
        assert http_get(port, "/.well-known/mta-sts.txt", "mta-sts.other.test")[0] == 404

        status, headers, body = http_get(
            port, f"/mail/config-v1.1.xml?emailaddress=alice%40{DOMAIN}", f"autoconfig.{DOMAIN}"
        )
        assert status == 200
        assert headers["content-type"].startswith("application/xml")
        assert f"<port>{pochta_env.ports['imaps']}</port>".encode() in body
        assert f"<port>{pochta_env.ports['submission']}</port>".encode() in body
        assert f"<hostname>{HOSTNAME}</hostname>".encode() in body
        assert http_get(port, "/.well-known/autoconfig/mail/config-v1.1.xml", DOMAIN)[0] == 200

        pox = (
            '<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
            f'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@{DOMAIN}'
            "</EMailAddress></Request></Autodiscover>"
        ).encode()
        status, _, body = http_get(port, "/autodiscover/autodiscover.xml", method="POST", body=pox)
        assert status == 200
        assert f"<LoginName>bob@{DOMAIN}</LoginName>".encode() in body
        status, _, _ = http_get(
            port, "/autodiscover/autodiscover.xml", method="POST", body=b"<!DOCTYPE x><x/>"
        )
        assert status == 400

        status, _, body = http_get(port, "/metrics")
        assert status == 200
        assert b'pochta_connections_total{listener="http"}' in body
        assert b"pochta_reloads_total" in body
        status, headers, body = http_get(port, "/healthz")
        assert (status, body) == (200, b"ok\n")
        assert headers["content-type"].startswith("text/plain")
        assert http_get(port, "/healthz", method="DELETE")[0] == 405
        assert http_get(port, "/nothing-here")[0] == 404
        status, headers, body = http_get(port, "/healthz", method="HEAD")
        assert (status, headers["content-length"], body) == (200, "3", b"")


def test_http_keep_alive_and_limits(pochta_env: PochtaEnv) -> None:
    port = pochta_env.ports["http"]
    with serve(pochta_env.config_path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(3):  # one connection, several requests
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            assert resp.read() == b"ok\n"
            assert resp.getheader("Connection") is None
        conn.close()

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
            answer = sock.recv(1000)
            assert answer.startswith(b"HTTP/1.1 431 "), answer

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"garbage\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 400 ")

        status, _, _ = http_get(
            port, "/autodiscover/autodiscover.xml", method="POST", body=b"x" * 20000
        )
        assert status == 413


# -- reload -------------------------------------------------------------------------------


def test_sighup_reload_applies_new_domain_and_settings(pochta_env: PochtaEnv) -> None:
    port = pochta_env.ports["http"]
    new_domain = "new.example"
    with serve(pochta_env.config_path) as server:
        assert http_get(port, "/.well-known/mta-sts.txt", f"mta-sts.{new_domain}")[0] == 404

        directory = SqliteDirectory(pochta_env.data_dir / "directory.sqlite3")
        try:
            directory.add_domain(new_domain)
        finally:
            directory.close()
        set_key(pochta_env.config_path, "server", "hostname", '"mx2.example.test"')
        set_key(pochta_env.config_path, "listen", "http", '"127.0.0.1:1"')  # needs a restart

        server.signal(signal.SIGHUP)
        server.wait_for("reloaded")
        ignored = server.wait_for("reload_listener_change_ignored")
        assert ignored["listener"] == "http"

        status, _, body = http_get(port, "/.well-known/mta-sts.txt", f"mta-sts.{new_domain}")
        assert status == 200
        assert b"mx: mx2.example.test\r\n" in body  # the new [server] hostname is in effect
        _, _, metrics = http_get(port, "/metrics")
        assert b'pochta_reloads_total{result="ok"} 1.0' in metrics


def test_broken_config_on_reload_keeps_serving(pochta_env: PochtaEnv) -> None:
    port = pochta_env.ports["http"]
    with serve(pochta_env.config_path) as server:
        good = pochta_env.config_path.read_text()
        pochta_env.config_path.write_text(good + '\n[surprise]\nkey = "value"\n')
        server.signal(signal.SIGHUP)
        failed = server.wait_for("reload_failed")
        assert failed["level"] == "error"
        assert "surprise" in failed["problems"]
        assert http_get(port, "/healthz")[0] == 200
        assert http_get(port, "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")[0] == 200
        _, _, metrics = http_get(port, "/metrics")
        assert b'pochta_reloads_total{result="failed"} 1.0' in metrics

        pochta_env.config_path.write_text(good)  # fixed: the next reload works
        server.signal(signal.SIGHUP)
        server.wait_for("reloaded")


def test_sighup_rereads_table_files(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    virtual = tmp_path / "virtual"
    virtual.write_text("info@example.test alice@example.test\n")
    set_key(pochta_env.config_path, "tables", "virtual_alias_maps", f'["hash:{virtual}"]')
    with serve(pochta_env.config_path) as server:
        assert server.events("table_warning") == []
        # A duplicate key: postmap keeps the first and warns; the reload must see the new file.
        virtual.write_text("info@example.test alice@example.test\ninfo@example.test bob\n")
        server.signal(signal.SIGHUP)
        server.wait_for("reloaded")
        (warning,) = server.events("table_warning")
        assert "duplicate" in warning["detail"]
        # A file that no longer parses: that table keeps its last good version, with a
        # warning naming the file and line; the rest of the reload goes on (issue 17, point 6).
        virtual.write_text("lonely-key\n")
        server.signal(signal.SIGHUP)
        kept = server.wait_for("table_kept")
        assert "lonely-key" in kept["detail"]
        assert f"{virtual}:1:" in kept["detail"]
        server.wait_for("reloaded", count=2)
        assert not server.events("reload_failed")
        assert http_get(pochta_env.ports["http"], "/healthz")[0] == 200


# -- stopping -----------------------------------------------------------------------------


def test_sigterm_stops_gracefully(pochta_env: PochtaEnv) -> None:
    port = pochta_env.ports["http"]
    with serve(pochta_env.config_path) as server:
        # An idle keep-alive connection must not hold the shutdown for the grace period.
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        idle.request("GET", "/healthz")
        idle.getresponse().read()
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        idle.close()
        # The idle connection was closed at once, not cancelled when the grace ran out.
        assert not server.events("connections_cancelled")
        assert server.events("shutdown")
        assert server.events("stopping")[0]["signal"] == "SIGTERM"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the listener is gone


def test_sigint_stops_too(pochta_env: PochtaEnv) -> None:
    with serve(pochta_env.config_path) as server:
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0
        assert server.events("shutdown")


def test_taken_port_exits_1_with_one_line(pochta_env: PochtaEnv) -> None:
    port = pochta_env.ports["http"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = pochta_env.run("serve", timeout=30)
    assert proc.returncode == 1
    assert proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"pochta: error: listen.http: cannot bind 127.0.0.1:{port}: Address already in use; "
        "another program listens there (see: ss -ltnp); stop it or choose another port"
    )


def test_missing_run_as_user_exits_1(pochta_env: PochtaEnv) -> None:
    set_key(pochta_env.config_path, "server", "run_as_user", '"no-such-user-pochta"')
    proc = pochta_env.run("serve", timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "pochta: error: server.run_as_user: no such user 'no-such-user-pochta'; "
        "create it (useradd --system no-such-user-pochta) or change the setting"
    )


# -- logs ---------------------------------------------------------------------------------


def test_logs_are_logfmt_by_default(pochta_env: PochtaEnv) -> None:
    with serve(pochta_env.config_path) as server:
        server.signal(signal.SIGTERM)
        server.wait_exit()
    assert server.lines
    for line in server.lines:
        assert line.startswith("timestamp="), line
        assert list(parse_log_line(line))[:4] == ["timestamp", "level", "logger", "event"]


def test_logs_are_json_when_configured(pochta_env: PochtaEnv) -> None:
    set_key(pochta_env.config_path, "server", "log_format", '"json"')
    with serve(pochta_env.config_path) as server:
        http_get(pochta_env.ports["http"], "/healthz")
        server.signal(signal.SIGTERM)
        server.wait_exit()
    events = [json.loads(line)["event"] for line in server.lines]
    assert events[0] == "starting"
    assert "listener_bound" in events
    assert "ready" in events
    assert events[-1] == "shutdown"


# -- privileges (root only) ---------------------------------------------------------------


def _free_low_port() -> int:
    for port in range(600, 1000, 7):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


def _status_ids(pid: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            out[key] = [int(x) for x in value.split()]
    return out


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_binds_low_port_as_root_then_runs_as_nobody() -> None:
    nobody = pwd.getpwnam("nobody")
    # The data dir must be reachable by nobody: pytest's tmp_path lives under a 0700 dir.
    top = Path(tempfile.mkdtemp(prefix="pochta-priv-"))
    try:
        top.chmod(0o755)
        data = top / "data"
        config = make_pochta_env(data).config_path
        # pochta init: readable by every local user (pochta sendmail), as Postfix's main.cf.
        assert config.stat().st_mode & 0o777 == 0o644
        port = _free_low_port()
        set_key(config, "listen", "http", f'"127.0.0.1:{port}"')
        set_key(config, "server", "run_as_user", '"nobody"')
        config.chmod(0o600)  # as an admin may make it: root reads it, nobody cannot
        with serve(config) as server:
            ids = _status_ids(server.proc.pid)
            assert ids["Uid"] == [nobody.pw_uid] * 4  # real, effective, saved, filesystem
            assert ids["Gid"] == [nobody.pw_gid] * 4
            assert 0 not in ids["Groups"]
            dropped = server.wait_for("privileges_dropped")
            assert dropped["user"] == "nobody"
            assert data.stat().st_uid == nobody.pw_uid  # it can write its data dir
            assert (data / "directory.sqlite3").stat().st_uid == nobody.pw_uid
            assert (data / "tls" / "key.pem").stat().st_uid == 0  # and nothing else changed

            status, _, body = http_get(port, "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")
            assert status == 200
            assert b"mx: " + HOSTNAME.encode() in body
            assert http_get(port, "/healthz")[2] == b"ok\n"

            # A config the server cannot read after the drop: it warns at start, a reload
            # says why, and a reload works once it can read it again.
            warned = server.events("unreadable_after_drop")
            assert [r["path"] for r in warned] == [str(config)]
            server.signal(signal.SIGHUP)
            assert "Permission denied" in server.wait_for("reload_failed")["problems"]
            config.chmod(0o644)
            server.signal(signal.SIGHUP)
            server.wait_for("reloaded")  # directory reopened as nobody
            assert http_get(port, "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")[0] == 200
            server.signal(signal.SIGTERM)
            assert server.wait_exit() == 0
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


# -- graceful stop, in process (a fake service controls how long a connection lasts) ------


class _SlowService:
    """Answers "done" after ``delay`` seconds; a delay of None never finishes."""

    ssl_context: ssl.SSLContext | None = None

    def __init__(self, delay: float | None) -> None:
        self.name = "http"
        self.delay = delay
        self.started = asyncio.Event()
        self.finished = 0
        self.cancelled = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.started.set()
        try:
            await asyncio.sleep(self.delay if self.delay is not None else 3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        writer.write(b"done\n")
        await writer.drain()
        self.finished += 1


async def _run_with(
    pochta_env: PochtaEnv, service: _SlowService
) -> tuple[Server, asyncio.Task[int], int]:
    settings = load_checked_settings(pochta_env.config_path)
    server = Server(settings, services={"http": lambda _server, _name: service})
    task = asyncio.create_task(server.run())
    for _ in range(200):
        if server.listeners and server._directory is not None:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    return server, task, pochta_env.ports["http"]


async def test_stop_lets_open_connections_finish(pochta_env: PochtaEnv) -> None:
    service = _SlowService(delay=0.5)
    server, task, port = await _run_with(pochta_env, service)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.wait_for(service.started.wait(), 5)
    server.stop("test")
    assert await reader.readline() == b"done\n"  # the connection finished its work
    assert await asyncio.wait_for(task, 5) == 0
    assert (service.finished, service.cancelled) == (1, 0)
    writer.close()


async def test_stop_cancels_connections_after_the_grace_period(
    pochta_env: PochtaEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "SHUTDOWN_GRACE_SECONDS", 0.3)
    service = _SlowService(delay=None)
    server, task, port = await _run_with(pochta_env, service)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.wait_for(service.started.wait(), 5)
    with capture_logs() as logs:
        server.stop("test")
        assert await asyncio.wait_for(task, 5) == 0
    events = {e["event"]: e for e in logs}
    assert events["draining"]["grace_seconds"] == 0.3  # waited the grace period...
    assert events["connections_cancelled"]["connections"] == 1  # ...then cancelled it
    assert service.cancelled == 1
    assert await reader.read() == b""  # the server closed it
    writer.close()
    assert server.metrics.connections_open.labels("http")._value.get() == 0


async def test_unix_listener_replaces_a_stale_socket(pochta_env: PochtaEnv) -> None:
    path = pochta_env.data_dir / "lmtp.sock"
    with socket.socket(socket.AF_UNIX) as stale:  # left behind by a crash: nobody listens
        stale.bind(str(path))
    service = _SlowService(delay=0)
    settings = load_checked_settings(pochta_env.config_path)
    server = Server(settings, services={"lmtp": lambda _server, _name: service})
    task = asyncio.create_task(server.run())
    for _ in range(500):
        if "lmtp" in server.listeners and server.listeners["lmtp"].server.is_serving():
            break
        await asyncio.sleep(0.01)
    assert list(server.listeners) == ["lmtp"]
    reader, writer = await asyncio.open_unix_connection(str(path))
    assert await reader.readline() == b"done\n"
    writer.close()
    server.stop("test")
    assert await asyncio.wait_for(task, 5) == 0
    assert not path.exists()  # removed at shutdown
