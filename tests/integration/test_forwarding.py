"""Forwarded mail keeps passing (issue 14, point 2) through a real server: an alias to an
outside address leaves with an SRS MAIL FROM and an ARC set that dkimpy verifies, a bounce to
the SRS address goes back to the original sender, a forged SRS hash is 550 5.1.1, and mail
that would only be forwarded from a sender failing SPF and DMARC is refused at DATA.

The server runs in this process (as in test_inbound_auth.py) with ``check_incoming`` on and a
loopback zone server; the next hop is an aiosmtpd sink as the relayhost.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import smtplib
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import dkim
import pytest

from pochta.mailauth.dkim_keys import dkim_txt_value
from pochta.server.app import Server
from tests.dnsserver import ZoneServer
from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    make_pochta_env,
    serve,
    serving_in_process,
    set_key,
)
from tests.integration.test_remote_agent import Sink, SinkController, free_port

ALIAS = f"fwd@{DOMAIN}"
FRIEND = "friend@outside.test"
HELO = "helo.client.test"

# good.test: SPF passes for 127.0.0.1, DMARC p=none (no DKIM: DMARC passes by aligned SPF).
# forged.test: SPF fails for 127.0.0.1, DMARC p=none: the message is not refused by DMARC
# itself, but SPF and DMARC both fail.
ZONE = """
good.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.good.test. 60 IN TXT "v=DMARC1; p=none"
forged.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=none"
"""


@asynccontextmanager
async def running(env: PochtaEnv) -> AsyncIterator[tuple[Server, Sink]]:
    sink = Sink()
    async with AsyncExitStack() as stack:
        zone = stack.enter_context(ZoneServer(ZONE, origin="."))
        port = free_port("127.0.0.1")
        controller = SinkController(
            sink, hostname="127.0.0.1", port=port, server_hostname="sink.test"
        )
        controller.start()
        stack.callback(controller.stop)
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "2.0")
        set_key(env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{port}"')
        set_key(env.config_path, "mailauth", "check_incoming", "true")
        server = await stack.enter_async_context(serving_in_process(env.config_path))
        assert server.mail is not None
        server.directory.add_alias(ALIAS, [FRIEND])
        yield server, sink


def message(sender: str, title: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{ALIAS}>\r\nSubject: {title}\r\n"
        "Message-ID: <1@client.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n"
    ).encode()


def send_mx(port: int, sender: str, recipients: list[str], content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO) as client:
        return client.sendmail(sender, recipients, content)


def host_dnsfunc(server: Server) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc over the DKIM records of the domain that signs for the host name."""
    records: dict[str, bytes] = {}
    domain = server.directory.get_domain(DOMAIN)
    assert domain is not None
    for sel in domain.dkim:
        records[f"{sel.selector}._domainkey.{DOMAIN}"] = dkim_txt_value(sel).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode().rstrip(".").lower())

    return dnsfunc


async def forwarded(env: PochtaEnv, server: Server, sink: Sink, sender: str) -> Any:
    port = env.ports["smtp"]
    await asyncio.to_thread(send_mx, port, sender, [ALIAS], message(sender, "forward me"))
    assert await asyncio.to_thread(sink.wait_for_messages, 1)
    return sink.messages[0]


async def test_alias_to_outside_leaves_with_srs_and_a_valid_arc_set(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env) as (server, sink):
        got = await forwarded(pochta_env, server, sink, "alice@good.test")
        assert got.rcpt_tos == [FRIEND]
        local, _, domain = got.mail_from.rpartition("@")
        assert domain == HOSTNAME
        assert local.startswith("SRS0=")
        assert local.endswith("=good.test=alice")
        assert got.content.startswith(b"ARC-Seal: i=1;")
        cv, results, reason = dkim.arc_verify(got.content, dnsfunc=host_dnsfunc(server))
        assert cv == dkim.CV_Pass, reason
        assert results[0]["instance"] == 1
        # The queued envelope kept the original sender (our DSNs go to it): the log says so.
        assert b"ARC-Authentication-Results: i=1; " + HOSTNAME.encode() in got.content


async def test_bounce_to_the_srs_address_goes_to_the_original_sender(
    pochta_env: PochtaEnv,
) -> None:
    async with running(pochta_env) as (server, sink):
        got = await forwarded(pochta_env, server, sink, "alice@good.test")
        bounce = (
            b"From: MAILER-DAEMON@sink.test\r\nTo: " + got.mail_from.encode() + b"\r\n"
            b"Subject: Undelivered Mail\r\n\r\nsorry\r\n"
        )
        port = pochta_env.ports["smtp"]
        await asyncio.to_thread(send_mx, port, "", [got.mail_from], bounce)
        assert await asyncio.to_thread(sink.wait_for_messages, 2)
        back = sink.messages[1]
        assert back.rcpt_tos == ["alice@good.test"]
        assert back.mail_from in ("", "<>")


async def test_forged_srs_hash_is_550(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env) as (_server, _sink):
        port = pochta_env.ports["smtp"]
        forged = f"SRS0=AAAA=AA=good.test=alice@{HOSTNAME}"
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asyncio.to_thread(send_mx, port, "", [forged], b"Subject: x\r\n\r\nx\r\n")
        code, text = refused.value.recipients[forged]
        assert code == 550
        assert text.decode().startswith("5.1.1 SRS address hash does not verify")


async def test_forwarding_only_a_failing_sender_is_refused_at_data(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env) as (_server, sink):
        port = pochta_env.ports["smtp"]
        content = message("ceo@forged.test", "backscatter")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send_mx, port, "ceo@forged.test", [ALIAS], content)
        assert refused.value.smtp_code == 550
        text = refused.value.smtp_error.decode()
        assert text.startswith("5.7.1 Message refused: it would be forwarded"), text
        assert sink.messages == []


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_serve_makes_a_missing_srs_secret_for_run_as_user_and_forwards_with_srs() -> None:
    """An install older than SRS has no secrets file: ``pochta serve`` makes one at start
    (``Server._ensure_srs_secret``), as root, mode 0600, given to run_as_user at the
    privilege drop, so the server can still read it and forwarded mail leaves with SRS."""
    nobody = pwd.getpwnam("nobody")
    # The data dir must be reachable by nobody: pytest's tmp_path lives under a 0700 dir.
    top = Path(tempfile.mkdtemp(prefix="pochta-srs-"))
    sink = Sink()
    controller = SinkController(
        sink, hostname="127.0.0.1", port=free_port("127.0.0.1"), server_hostname="sink.test"
    )
    controller.start()
    try:
        top.chmod(0o755)
        env = make_pochta_env(top / "data")
        secret = env.data_dir / "srs.secret"
        assert secret.exists()  # pochta init wrote one; an older install has none
        secret.unlink()
        set_key(env.config_path, "server", "run_as_user", '"nobody"')
        set_key(env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{controller.port}"')
        env.run("alias", "add", ALIAS, FRIEND, check=True)
        with serve(env.config_path) as server:
            created = server.wait_for("srs_secret_created")
            assert created["path"] == str(secret)
            stat = secret.stat()
            assert stat.st_mode & 0o777 == 0o600
            assert (stat.st_uid, stat.st_gid) == (nobody.pw_uid, nobody.pw_gid)
            assert len(secret.read_text().split()) == 1
            port = env.ports["smtp"]
            send_mx(port, "alice@good.test", [ALIAS], message("alice@good.test", "after"))
            assert sink.wait_for_messages(1), "\n".join(server.lines[-40:])
        got = sink.messages[0]
        assert got.rcpt_tos == [FRIEND]
        local, _, domain = got.mail_from.rpartition("@")
        assert domain == HOSTNAME, got.mail_from
        assert local.startswith("SRS0="), got.mail_from
        assert local.endswith("=good.test=alice"), got.mail_from
    finally:
        controller.stop()
        subprocess.run(["rm", "-rf", str(top)], check=False)
