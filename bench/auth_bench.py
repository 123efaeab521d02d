"""Inbound SMTP with the mail checks on and off, in the same run (issue 14's benchmark).

    .venv/bin/python bench/auth_bench.py [--n 3000] [--concurrency 10] [--reps 3]
                                         [--size 4096] [--work DIR] [--out FILE]

What it measures: a fresh ``pochta serve`` (its default processes) receives N DKIM-signed
messages on its MX port, one message per connection from C concurrent clients, once with
``[mailauth] check_incoming = false`` and once with ``true``; on and off alternate, so the
slow phases of a shared machine hit both. With the checks on, every message gets SPF for
MAIL FROM, the client's forward-confirmed reverse DNS, a DKIM verification (RSA-2048,
relaxed/relaxed) and DMARC (p=reject, aligned), all answered by a DNS server on loopback
(tests/dnsserver.py) and pochta's own answer cache, as a local caching resolver would.

Reported per mode: accepted msgs/s (first connection to the last 250 after DATA), and the
server's CPU seconds (the server and its worker processes, from /proc, between the first
and the last message) per message. The summary gives the medians, the on/off throughput
ratio (the issue's target: at least 0.85) and the CPU the checks add per message (target:
at most 2 ms). The load generator runs in this process; its CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dkim

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.dnsserver import ZoneServer  # noqa: E402  (the repo root is on the path now)
from tests.factories import make_rsa_dkim_key  # noqa: E402

POCHTA = [sys.executable, "-m", "pochta"]
SENDER_DOMAIN = "sender.test"
SELECTOR = "s1"
USERS = 10
PORT_BASE = 21000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _txt(value: str) -> str:
    return " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))


def make_zone(key_txt: bytes) -> str:
    return f"""
{SENDER_DOMAIN}. 3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.{SENDER_DOMAIN}. 3600 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{SENDER_DOMAIN}"
{SELECTOR}._domainkey.{SENDER_DOMAIN}. 3600 IN TXT {_txt(key_txt.decode())}
client.{SENDER_DOMAIN}. 3600 IN A 127.0.0.1
1.0.0.127.in-addr.arpa. 3600 IN PTR client.{SENDER_DOMAIN}.
"""


def make_messages(n: int, size: int, key_pem: bytes) -> list[tuple[str, bytes]]:
    """N (recipient, signed message) pairs, each with its own Message-ID and body."""
    rng = random.Random(1)
    words = ["mail", "server", "queue", "check", "domain", "report", "policy", "signature"]
    out = []
    for i in range(n):
        rcpt = f"user{i % USERS + 1}@example.test"
        lines, length = [], 0
        while length < size:
            line = " ".join(rng.choice(words) for _ in range(12))
            lines.append(line)
            length += len(line) + 2
        body = "\r\n".join(lines) + "\r\n"
        head = (
            f"From: Sender <news@{SENDER_DOMAIN}>\r\nTo: <{rcpt}>\r\nSubject: bench {i}\r\n"
            f"Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{i}.bench@{SENDER_DOMAIN}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        )
        content = (head + body).encode()
        sig = dkim.sign(
            content,
            SELECTOR.encode(),
            SENDER_DOMAIN.encode(),
            key_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        out.append((rcpt, sig + content))
    return out


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=600, **kw)  # type: ignore[call-overload]


def build_template(template: Path) -> None:
    if (template / "pochta.toml").exists():
        return
    shutil.rmtree(template, ignore_errors=True)
    run(
        [
            *POCHTA,
            "init",
            "--data",
            str(template),
            "--hostname",
            "mail.example.test",
            "--domain",
            "example.test",
            "--bind",
            "127.0.0.1",
            "--port-base",
            str(PORT_BASE),
        ]
    )
    config = template / "pochta.toml"
    set_key(config, "pop3", "max_connections_per_ip", "2000")
    for i in range(1, USERS + 1):
        address = f"user{i}@example.test"
        run(
            [*POCHTA, "--config", str(config), "user", "add", address, "--password-stdin"],
            input=f"pass-{i}\n".encode(),
        )


def set_key(config: Path, table: str, key: str, value: str) -> None:
    """Set ``key`` in ``[table]`` of the config (the line must exist in the sample)."""
    lines = config.read_text().splitlines()
    current = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[] ")
        elif current == table and line.split("=")[0].strip().lstrip("# ") == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        raise SystemExit(f"no {key} in [{table}] of {config}")
    config.write_text("\n".join(lines) + "\n")


def smtp_port(config: Path) -> int:
    for line in config.read_text().splitlines():
        if line.startswith("smtp = "):
            return int(line.strip().strip('"').rpartition(":")[2])
    raise SystemExit("no smtp listener in the config")


def cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its living children (the worker processes)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (stat(5) fields 14, 15)
    return total / CLK_TCK


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def send_one(port: int, rcpt: str, content: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        ok = await _reply(reader) == 220
        for line in (
            f"EHLO client.{SENDER_DOMAIN}\r\n",
            f"MAIL FROM:<news@{SENDER_DOMAIN}>\r\n",
            f"RCPT TO:<{rcpt}>\r\n",
            "DATA\r\n",
        ):
            writer.write(line.encode())
            code = await _reply(reader)
            ok = ok and code in (250, 354)
        writer.write(content + b".\r\n")
        ok = ok and await _reply(reader) == 250
        writer.write(b"QUIT\r\n")
        await _reply(reader)
        return ok
    finally:
        writer.close()


async def load(port: int, messages: list[tuple[str, bytes]], concurrency: int) -> dict[str, float]:
    queue = list(reversed(messages))
    accepted = failed = 0

    async def worker() -> None:
        nonlocal accepted, failed
        while queue:
            rcpt, content = queue.pop()
            try:
                if await send_one(port, rcpt, content):
                    accepted += 1
                else:
                    failed += 1
            except (OSError, ConnectionError, ValueError):
                failed += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"seconds": time.monotonic() - start, "accepted": accepted, "failed": failed}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"pochta serve exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("pochta serve did not listen in time")


@contextmanager
def serving(config: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``pochta serve`` on ``config`` (its data dir is the config's), listening on its MX
    port when this yields, stopped with SIGTERM (then killed) afterwards."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*POCHTA, "--config", str(config), "serve"],
            cwd=config.parent,
            stdout=log,
            stderr=log,
        )
        try:
            wait_port(smtp_port(config), proc)
            time.sleep(1.0)  # the workers take their listeners
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def one_run(
    template: Path,
    work: Path,
    checks: bool,
    nameserver: str,
    messages: list[tuple[str, bytes]],
    concurrency: int,
    processes: int = 0,
    *,
    toggle: tuple[str, str] = ("mailauth", "check_incoming"),
    settings: tuple[tuple[str, str, str], ...] = (),
) -> dict[str, float]:
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data, symlinks=True)
    config = data / "pochta.toml"
    text = config.read_text().replace(str(template), str(data))
    config.write_text(text)
    for table, key, value in settings:
        set_key(config, table, key, value)
    set_key(config, *toggle, "true" if checks else "false")
    set_key(config, "dns", "nameservers", f'["{nameserver}"]')
    if processes:
        set_key(config, "server", "processes", str(processes))
    port = smtp_port(config)
    with serving(config, work / f"serve-{'on' if checks else 'off'}.log") as proc:
        cpu0 = cpu_seconds(proc.pid)
        result = asyncio.run(load(port, messages, concurrency))
        result["server_cpu_s"] = cpu_seconds(proc.pid) - cpu0
    n = len(messages)
    result["msgs_per_s"] = result["accepted"] / result["seconds"]
    result["cpu_ms_per_msg"] = 1000 * result["server_cpu_s"] / n
    result["checks"] = checks
    return result


def alternating(run: Callable[[bool], dict[str, float]], reps: int) -> list[dict[str, float]]:
    """``reps`` pairs of runs, off then on, then on then off (so the slow phases of a shared
    machine hit both modes); each run printed as a JSON line as it ends."""
    runs: list[dict[str, float]] = []
    for rep in range(reps):
        for on in (False, True) if rep % 2 == 0 else (True, False):
            result = run(on)
            result["rep"] = rep
            runs.append(result)
            print(json.dumps(result), flush=True)
    return runs


def summarize(runs: list[dict[str, float]], cost_key: str) -> dict[str, float]:
    """The medians of each mode, the on/off throughput ratio and, as ``cost_key``, the server
    CPU per message that the switched part adds."""
    out: dict[str, float] = {}
    for on in (False, True):
        mine = [r for r in runs if r["checks"] == on]
        name = "on" if on else "off"
        out[f"{name}_msgs_per_s"] = statistics.median(r["msgs_per_s"] for r in mine)
        out[f"{name}_cpu_ms_per_msg"] = statistics.median(r["cpu_ms_per_msg"] for r in mine)
        out[f"{name}_failed"] = sum(r["failed"] for r in mine)
    out["ratio_on_off"] = out["on_msgs_per_s"] / out["off_msgs_per_s"]
    out[cost_key] = out["on_cpu_ms_per_msg"] - out["off_cpu_ms_per_msg"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pochta-auth-bench"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--processes", type=int, default=0, help="server.processes (default: the server's)"
    )
    a = parser.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    template = a.work / "template"
    build_template(template)
    key_pem, key_txt = make_rsa_dkim_key()
    messages = make_messages(a.n, a.size, key_pem)
    with ZoneServer(make_zone(key_txt), origin=".") as zone:
        runs = alternating(
            lambda checks: one_run(
                template, a.work, checks, zone.address, messages, a.concurrency, a.processes
            ),
            a.reps,
        )
    summary: dict[str, object] = {
        "n": a.n,
        "concurrency": a.concurrency,
        "size": a.size,
        "processes": a.processes or "default",
        **summarize(runs, "checks_cpu_ms_per_msg"),
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
