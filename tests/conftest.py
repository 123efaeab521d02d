"""Shared fixtures: a real `pochta` command in a fresh data directory."""

from __future__ import annotations

import email
import email.policy
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STANDARD_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "managesieve": 4190,
    "http": 80,
}
DOMAIN = "example.test"
HOSTNAME = "mail.example.test"


def _ports_free(base: int) -> bool:
    for port in STANDARD_PORTS.values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + base))
            except OSError:
                return False
    return True


def free_port_base() -> int:
    """A port base N such that every standard port + N is free on 127.0.0.1."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 55000, 7)
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
    return PochtaEnv(
        data_dir=data,
        config_path=data / "pochta.toml",
        port_base=base,
        ports={name: port + base for name, port in STANDARD_PORTS.items()},
    )


@pytest.fixture
def pochta_env(tmp_path: Path) -> PochtaEnv:
    return make_pochta_env(tmp_path / "data")


def maildir_files(folder: Path) -> list[Path]:
    """The message files of a Maildir folder (new/ and cur/), by name."""
    return sorted(p for sub in ("new", "cur") for p in (folder / sub).glob("*") if p.is_file())


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


def dsn_status_text(path: Path) -> str:
    """The message/delivery-status part of the DSN (RFC 3464) in ``path``, as text; fails
    unless the file is a multipart/report of report-type delivery-status."""
    dsn = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    return status.as_string()
