"""The Rspamd connector (cleanup/rspamd_filter.py) through a real pochta and Debian's real
``rspamd``: started here on a free loopback port with a private config, data and log
directory (no Redis: GTUBE and the rules need none; its DNS goes to a dead loopback port,
so nothing leaves the machine). Clients are smtplib's, in their default configuration.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from email.utils import formatdate
from pathlib import Path

import pytest

from pochta.mime.headers import split_message
from pochta.server.app import Server
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, PochtaEnv, serving_in_process, set_key
from tests.integration.test_verdict_policy import mail_of, subject, wait_for_message

BOB = f"bob@{DOMAIN}"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
RSPAMD = shutil.which("rspamd") or ("/usr/bin/rspamd" if Path("/usr/bin/rspamd").exists() else None)
needs_rspamd = pytest.mark.skipif(
    RSPAMD is None, reason="Debian's rspamd is not installed (scripts/test-packages.txt)"
)

CONFIG = """.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    dns {{
        nameserver = ["127.0.0.1:{dead_port}"];
        timeout = 0.5s;
        retransmits = 1;
    }}
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
}}
"""


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def rspamd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real rspamd's normal worker on loopback, private dirs; killed at the end."""
    if RSPAMD is None:
        pytest.skip("Debian's rspamd is not installed (scripts/test-packages.txt)")
    home = tmp_path_factory.mktemp("rspamd")
    for sub in ("local", "db", "run", "log"):
        (home / sub).mkdir()
    port = free_port()
    (home / "rspamd.conf").write_text(
        CONFIG.format(port=port, dead_port=free_port(socket.SOCK_DGRAM))
    )
    command = [RSPAMD, "-f", "-c", str(home / "rspamd.conf")]
    for name, sub in (("LOCAL_CONFDIR", "local"), ("DBDIR", "db"), ("RUNDIR", "run")):
        command.append(f"--var={name}={home / sub}")
    command.append(f"--var=LOGDIR={home / 'log'}")
    if os.geteuid() == 0:  # rspamd refuses root unless told which user and -i
        command += ["-i", "-u", "root", "-g", "root"]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2) as answer:  # noqa: S310
                    if answer.read().strip() == b"pong":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (home / "log" / "rspamd.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"rspamd did not start (exit {proc.poll()}):\n{log}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@asynccontextmanager
async def running(env: PochtaEnv, **rspamd: str) -> AsyncIterator[Server]:
    """``pochta serve`` in this process with ``[rspamd]`` set."""
    env.add_user(BOB, "secret-pw-1")
    async with AsyncExitStack() as stack:
        zone = stack.enter_context(ZoneServer("", origin="."))
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "2.0")
        for key, value in rspamd.items():
            set_key(env.config_path, "rspamd", key, value)
        server = await stack.enter_async_context(serving_in_process(env.config_path))
        yield server


def message(title: str, body: str) -> bytes:
    return (
        f"From: Alice <alice@sender.test>\r\nTo: <{BOB}>\r\nSubject: {title}\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: <r1@sender.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        f"\r\n{body}\r\n"
    ).encode()


def send_mx(port: int, content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.sender.test") as client:
        return client.sendmail("alice@sender.test", [BOB], content)


@needs_rspamd
async def test_gtube_is_rejected_and_normal_mail_carries_rspamds_headers(
    pochta_env: PochtaEnv, rspamd_url: str
) -> None:
    async with running(pochta_env, url=f'"{rspamd_url}"') as server:
        port = pochta_env.ports["smtp"]
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send_mx, port, message("gtube", f"Hello\r\n{GTUBE}"))
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(b"5.7.1 "), refused.value.smtp_error
        assert mail_of(server).store.list_messages(BOB, "INBOX") == []

        text = "Hi Bob,\r\n\r\nthe minutes of Monday's meeting are below.\r\n\r\nAlice"
        assert await asyncio.to_thread(send_mx, port, message("minutes", text)) == {}
        got = await wait_for_message(server, "INBOX", subject("minutes"))
        head = split_message(got)
        [score] = head.get_all("x-spam-score")
        [status] = head.get_all("x-spam-status")
        [symbols] = head.get_all("x-spam-symbols")
        assert status.text.startswith(f"No, score={score.text} required="), status.text
        assert float(score.text) < 6
        assert "(" in symbols.text  # NAME(score) of what Rspamd found


@needs_rspamd
async def test_gtube_as_junk_when_reject_action_is_junk(
    pochta_env: PochtaEnv, rspamd_url: str
) -> None:
    async with running(pochta_env, url=f'"{rspamd_url}"', reject_action='"junk"') as server:
        port = pochta_env.ports["smtp"]
        assert await asyncio.to_thread(send_mx, port, message("to junk", GTUBE)) == {}
        got = await wait_for_message(server, "Junk", subject("to junk"))
        [status] = split_message(got).get_all("x-spam-status")
        assert status.text.startswith("Yes, score=15.00"), status.text


async def test_unreachable_rspamd_tempfails_when_told(pochta_env: PochtaEnv) -> None:
    dead = f'"http://127.0.0.1:{free_port()}"'
    async with running(pochta_env, url=dead, failure_action='"tempfail"') as server:
        port = pochta_env.ports["smtp"]
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send_mx, port, message("later", "hello"))
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.7.1 ")
        assert mail_of(server).store.list_messages(BOB, "INBOX") == []
