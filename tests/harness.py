"""The one way a test starts a real pochta: `pochta init` on free loopback ports, config edits,
`pochta serve` in a subprocess with its log read line by line, and waiting for what it does.

    env = make_pochta_env(tmp_path / "data")          # or the `pochta_env` fixture
    set_key(env.config_path, "server", "processes", "1")
    use_nameserver(env.config_path, zone.address)     # a tests.dnsserver.ZoneServer
    with serve(env.config_path) as server:            # waits for the `ready` event
        ...                                           # real clients on env.ports[...]
        server.wait_for("reloaded")                   # a log event, or the test fails
        files = wait_maildir(env.data_dir / "mail" / DOMAIN / "alice", 1, 15)

Every server is killed when its ``serve`` block ends, whatever happened inside.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import random
import re
import shlex
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pochta.config.settings import STANDARD_PORTS, port_with_base
from tests.factories import make_message

if TYPE_CHECKING:
    from pochta.server.app import Server

DOMAIN = "example.test"
HOSTNAME = "mail.example.test"
# How long to wait for the server's `ready` (and, by default, any awaited log event) before
# failing: a bound on a hang, never a speed check; a loaded 2-core CI machine starting
# a master and its workers has taken more than 20 s.
START_TIMEOUT = 60.0

# -- init on free loopback ports ----------------------------------------------------------


def _ports_free(base: int) -> bool:
    for port in STANDARD_PORTS.values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port_with_base(port, base)))
            except OSError:
                return False
    return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux's default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_base() -> int:
    """A port base N such that every standard port + N is free on 127.0.0.1, below the
    kernel's range for outgoing connections: a port checked free here cannot be taken by
    some client's connect() before pochta binds it."""
    rng = random.Random()
    top = max(_ephemeral_low() - 1000, 11000)
    for _ in range(200):
        base = rng.randrange(10000, top, 7)
        if _ports_free(base):
            return base
    raise RuntimeError("no free port range found on 127.0.0.1")


def pochta_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pochta", *args]


@dataclass
class PochtaEnv:
    """A data dir made by the real `pochta init`, and a way to run the real command in it."""

    data_dir: Path
    config_path: Path
    port_base: int
    ports: dict[str, int] = field(default_factory=dict)

    def run(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"}
        proc = subprocess.run(
            pochta_command("--config", str(self.config_path), *args),
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pochta {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def add_user(self, address: str, password: str) -> None:
        self.run("user", "add", address, "--password-stdin", input=password + "\n", check=True)


def run_pochta(
    *args: str, input: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command with no config selected unless args/env select one."""
    base_env = {k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"}
    if env:
        base_env.update(env)
    return subprocess.run(
        pochta_command(*args),
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=base_env,
        timeout=60,
        check=False,
    )


def make_pochta_env(data: Path, hostname: str = HOSTNAME) -> PochtaEnv:
    """`pochta init` into ``data`` (example.test served by ``hostname``, free ports on
    127.0.0.1)."""
    base = free_port_base()
    proc = run_pochta(
        "init",
        "--data",
        str(data),
        "--hostname",
        hostname,
        "--domain",
        DOMAIN,
        "--port-base",
        str(base),
        "--bind",
        "127.0.0.1",
    )
    assert proc.returncode == 0, f"pochta init failed: {proc.stdout}\n{proc.stderr}"
    # The inbound SPF/DKIM/DMARC checks ask DNS for every message from the MX; tests that
    # want them turn them on with a loopback zone server (tests/integration/
    # test_inbound_auth.py), the others never ask the system's resolver.
    set_key(data / "pochta.toml", "mailauth", "check_incoming", "false")
    # The DNS blocklists ([dnsbl], spam/dnsbl.py, spam/uribl.py) would ask Spamhaus and SURBL
    # about every MX message; tests that want them point the zones at a loopback zone server
    # (tests/integration/test_spam_dnsbl.py).
    set_key(data / "pochta.toml", "dnsbl", "enabled", "false")
    # Greylisting of suspicious mail ([greylist], spam/greylist.py) would answer 451 to the
    # first try of a test message that scores 4 or more; tests of it switch it on
    # (tests/integration/test_spam_limits.py).
    set_key(data / "pochta.toml", "greylist", "enabled", "false")
    return PochtaEnv(
        data_dir=data,
        config_path=data / "pochta.toml",
        port_base=base,
        ports={name: port_with_base(port, base) for name, port in STANDARD_PORTS.items()},
    )


# -- config edits -------------------------------------------------------------------------


def set_key(config: Path, table: str, key: str, toml_value: str) -> None:
    """Rewrite `key = ...` in `[table]` of the generated config (the key must be there)."""
    text = config.read_text()
    pattern = re.compile(
        rf"(^\[{re.escape(table)}\]\n(?:(?!^\[).*\n)*?^){re.escape(key)} = .*$", re.M
    )
    new, n = pattern.subn(lambda m: f"{m.group(1)}{key} = {toml_value}", text)
    assert n == 1, f"[{table}] {key} not found in {config}"
    config.write_text(new)


def use_nameserver(config: Path, address: str) -> None:
    """The DNS hook: the server asks only ``address`` (e.g. a tests.dnsserver.ZoneServer's
    ``address``, "127.0.0.1:PORT") for every name."""
    set_key(config, "dns", "nameservers", f'["{address}"]')


# -- start, stop, and the log -------------------------------------------------------------

LogRecord = dict[str, str]


def parse_log_line(line: str) -> LogRecord:
    """One log line, JSON or logfmt, as a dict of strings."""
    if line.startswith("{"):
        return {k: str(v) for k, v in json.loads(line).items()}
    out: LogRecord = {}
    for token in shlex.split(line):
        key, _, value = token.partition("=")
        out[key] = value
    return out


class ServeProcess:
    """`pochta serve` running; stderr collected line by line in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def records(self) -> list[LogRecord]:
        with self._cond:
            lines = list(self.lines)
        return [parse_log_line(x) for x in lines if x.startswith(("{", "timestamp="))]

    def events(self, name: str) -> list[LogRecord]:
        return [r for r in self.records if r.get("event") == name]

    def wait_for(self, event: str, *, count: int = 1, timeout: float = START_TIMEOUT) -> LogRecord:
        """The count-th record of ``event``; fails with the log if it does not come in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    r
                    for r in (parse_log_line(x) for x in self.lines if x.startswith(("{", "time")))
                    if r.get("event") == event
                ]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    log = "\n".join(self.lines)
                    pytest.fail(f"no {event!r} event (exit {self.proc.poll()}); log:\n{log}")
                self._cond.wait(min(remaining, 0.2))

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


@contextmanager
def serve(config_path: Path) -> Iterator[ServeProcess]:
    """Start the real `pochta serve`, wait for `ready`, and always kill it afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pochta", "--config", str(config_path), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    running = ServeProcess(proc)
    try:
        running.wait_for("ready")
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        proc.stdout.close()
        assert stdout == "", f"serve wrote to stdout: {stdout!r}"


# -- talking to it and waiting for what it does -------------------------------------------


def client_tls() -> ssl.SSLContext:
    """A client TLS context that accepts the test server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return ctx


def smtp_send(env: PochtaEnv, to: str, subject: str, body: str = "Hello there.\n") -> None:
    """A plain message (``factories.make_message``) to ``to`` through the server's port 25."""
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        s.send_message(make_message(to, subject, body))


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


_DELIVERY_TIME = re.compile(r"^(\d+)\.M(\d+)")


def _delivery_order(path: Path) -> tuple[int, int, str]:
    # pochta's (and Dovecot's) names start "SECONDS.MMICROS" with the microseconds not
    # zero-padded, so by name alone "…M99…" sorts after "…M123456…" of the same second.
    found = _DELIVERY_TIME.match(path.name)
    if found is None:
        return (0, 0, path.name)
    return (int(found.group(1)), int(found.group(2)), path.name)


def maildir_files(folder: Path) -> list[Path]:
    """The message files of a Maildir folder (new/ and cur/), in delivery order."""
    files = (p for sub in ("new", "cur") for p in (folder / sub).glob("*") if p.is_file())
    return sorted(files, key=_delivery_order)


def wait_maildir(
    folder: Path, count: int, timeout: float, why: Callable[[], str] = lambda: ""
) -> list[Path]:
    """The folder's message files once there are ``count``; fails after ``timeout`` seconds
    with ``why()`` (a log) in the message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = maildir_files(folder)
        if len(files) >= count:
            return files
        time.sleep(0.05)
    pytest.fail(f"{count} message(s) expected in {folder}:\n{why()}")


def mailbox_files(env: PochtaEnv, local: str) -> list[Path]:
    """The message files in the INBOX of ``local``@example.test."""
    return maildir_files(env.data_dir / "mail" / DOMAIN / local)


def wait_files(env: PochtaEnv, local: str, count: int, timeout: float = 15.0) -> list[Path]:
    """The INBOX files of ``local``@example.test once there are ``count``, or what there is
    after ``timeout`` seconds (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = mailbox_files(env, local)
        if len(files) >= count:
            return files
        time.sleep(0.05)
    return mailbox_files(env, local)


def dsn_status_text(path: Path) -> str:
    """The message/delivery-status part of the DSN (RFC 3464) in ``path``, as text; fails
    unless the file is a multipart/report of report-type delivery-status."""
    dsn = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    return status.as_string()


@asynccontextmanager
async def serving_in_process(
    config_path: Path, listeners: tuple[str, ...] = ("smtp",)
) -> AsyncIterator[Server]:
    """``pochta serve`` of ``config_path`` as a task of this event loop (tests that read the
    mail system's parts), once ``listeners`` accept connections; stopped on exit."""
    from pochta.config.load import load_settings
    from pochta.server.app import Server

    server: Server = Server(load_settings(config_path))
    task = asyncio.create_task(server.run())
    for _ in range(1000):
        wanted = [server.listeners.get(name) for name in listeners]
        if server.mail is not None and all(w and w.server.is_serving() for w in wanted):
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.stop("test")
        await asyncio.wait_for(task, 20)
