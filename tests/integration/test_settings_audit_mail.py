"""Issue 17's settings audit, part two: the settings of outbound delivery and mail
authentication no other test set. ``[delivery] source_address6`` (Postfix
smtp_bind_address6), ``[mailauth] dmarc_allow`` (OpenDMARC's IgnoreHosts/IgnoreMailFrom, a
local policy override of RFC 7489 §6.7) and ``[srs] secret_file`` (postsrsd's secrets file).

Each test fails if its setting were read and then ignored. Servers run in this process
(``serving_in_process``) where the test reads the mail system's parts, as
test_inbound_auth.py and test_forwarding.py do; the next hop is an aiosmtpd sink.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from pochta.mailauth.srs import SrsCodec, SrsError
from pochta.server.app import Server
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, serving_in_process, set_key
from tests.integration.test_remote_agent import (
    Sink,
    SinkController,
    deliver_once,
    envelope_for,
    free_port,
    settings_for,
)
from tests.integration.test_verdict_policy import mail_of, subject, wait_for_message

BOB = f"bob@{DOMAIN}"
HELO = "helo.client.test"


def _free_port6() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- [delivery] source_address6 (Postfix smtp_bind_address6) ------------------------------------


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
async def test_ipv6_delivery_binds_to_source_address6(tmp_path: Path) -> None:
    """Over IPv6 the agent binds its socket to ``delivery.source_address6``: with "::1" the
    message reaches a sink on [::1] from ::1; with an address this host does not have the
    bind fails and the delivery is deferred with the reason (so the address was used: the
    system's own choice would have connected). ``pochta check`` refuses such a value before
    it gets here (test_check_refuses_source_addresses_that_cannot_work)."""
    sink = Sink()
    controller = SinkController(
        sink, hostname="::1", port=_free_port6(), server_hostname="sink.test"
    )
    controller.start()
    try:
        dead_dns = f"127.0.0.1:{free_port()}"  # a bracketed next hop needs no DNS
        hop = f"smtp:[::1]:{controller.port}"
        settings = settings_for(tmp_path, dead_dns, source_address6="::1")
        [attempt] = await deliver_once(settings, envelope_for("bob@far.example"), hop)
        assert attempt.outcome == "delivered", attempt.reply
        assert sink.messages[0].peer[0] == "::1"

        elsewhere = settings_for(tmp_path, dead_dns, source_address6="2001:db8::25")
        [attempt] = await deliver_once(elsewhere, envelope_for("bob@far.example"), hop)
        assert attempt.outcome == "deferred"
        assert attempt.reply.startswith("451 4.4.1 "), attempt.reply
        assert "Cannot assign requested address" in attempt.reply
        assert len(sink.messages) == 1
        # The IPv4 setting is not used for IPv6 (and the other way round).
        mixed = settings_for(tmp_path, dead_dns, source_address="127.0.0.9")
        [attempt] = await deliver_once(mixed, envelope_for("bob@far.example"), hop)
        assert attempt.outcome == "delivered", attempt.reply
    finally:
        controller.stop()


def test_check_refuses_source_addresses_that_cannot_work(pochta_env: PochtaEnv) -> None:
    """A value that is not an address of its family, or not one of this host's, would make
    every delivery wait out the queue lifetime: ``pochta check`` refuses it, with the key
    and what to write."""
    env = pochta_env
    for key, value, expected in (
        ("source_address6", '"banana"', '"banana" is not an IPv6 address'),
        ("source_address6", '"127.0.0.1"', '"127.0.0.1" is not an IPv6 address'),
        ("source_address", '"::1"', '"::1" is not an IPv4 address'),
        ("source_address6", '"2001:db8::25"', '"2001:db8::25" cannot be sent from'),
        ("source_address", '"192.0.2.25"', '"192.0.2.25" cannot be sent from'),
    ):
        set_key(env.config_path, "delivery", key, value)
        proc = env.run("check")
        assert proc.returncode == 1, (key, value, proc.stdout)
        assert f"delivery.{key}: {expected}" in proc.stderr, proc.stderr
        assert "write" in proc.stderr.split(f"delivery.{key}: ")[1].splitlines()[0]
        set_key(env.config_path, "delivery", key, '""')
    set_key(env.config_path, "delivery", "source_address", '"127.0.0.1"')
    if _has_ipv6_loopback():
        set_key(env.config_path, "delivery", "source_address6", '"::1"')
    proc = env.run("check")
    assert proc.returncode == 0, proc.stderr


# -- [mailauth] dmarc_allow ---------------------------------------------------------------------

# forged.test: p=reject and an SPF record that 127.0.0.1 (the test client) fails, no DKIM.
DMARC_ZONE = """
forged.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=reject"
other.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.other.test. 60 IN TXT "v=DMARC1; p=reject"
"""


@asynccontextmanager
async def checking(env: PochtaEnv, dmarc_allow: str) -> AsyncIterator[Server]:
    """``pochta serve`` in this process with the inbound checks on and ``dmarc_allow``."""
    env.add_user(BOB, "secret-pw-1")
    async with AsyncExitStack() as stack:
        zone = stack.enter_context(ZoneServer(DMARC_ZONE, origin="."))
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "2.0")
        set_key(env.config_path, "mailauth", "check_incoming", "true")
        set_key(env.config_path, "mailauth", "dmarc_allow", dmarc_allow)
        yield await stack.enter_async_context(serving_in_process(env.config_path))


def _message(sender: str, title: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{BOB}>\r\nSubject: {title}\r\n"
        "Message-ID: <1@client.test>\r\n\r\nhello\r\n"
    ).encode()


def _send_mx(port: int, sender: str, content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO) as client:
        return client.sendmail(sender, [BOB], content)


async def test_dmarc_allow_records_but_does_not_enforce(pochta_env: PochtaEnv) -> None:
    """forged.test says p=reject and fails SPF: listed in ``mailauth.dmarc_allow`` its mail is
    delivered with dmarc=fail in Authentication-Results (recorded, not enforced); mail of
    other.test, in the same state but not listed, is still refused with 550 5.7.1."""
    async with checking(pochta_env, '["forged.test"]') as server:
        port = pochta_env.ports["smtp"]
        content = _message("ceo@forged.test", "allowed forwarder")
        assert await asyncio.to_thread(_send_mx, port, "ceo@forged.test", content) == {}
        got = await wait_for_message(server, "INBOX", subject("allowed forwarder"))
        assert b"dmarc=fail" in got
        other = _message("ceo@other.test", "not allowed")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(_send_mx, port, "ceo@other.test", other)
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(b"5.7.1 DMARC policy of other.test")
        assert len(mail_of(server).store.list_messages(BOB, "INBOX")) == 1


async def test_dmarc_allow_by_client_network(pochta_env: PochtaEnv) -> None:
    """An entry may be the client's network: mail from 127.0.0.0/8 is let through."""
    async with checking(pochta_env, '["127.0.0.0/8"]') as server:
        port = pochta_env.ports["smtp"]
        content = _message("ceo@forged.test", "from our network")
        assert await asyncio.to_thread(_send_mx, port, "ceo@forged.test", content) == {}
        got = await wait_for_message(server, "INBOX", subject("from our network"))
        assert b"dmarc=fail" in got


# -- [srs] secret_file (postsrsd's secrets file) ---------------------------------------------


async def test_srs_addresses_are_signed_with_the_secret_file(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    """``srs.secret_file`` names an admin's file outside data_dir whose first line signs:
    the SRS0 address of forwarded mail verifies with that secret, not with the one
    ``pochta init`` wrote; a second, older line still verifies bounces (rotation)."""
    env = pochta_env
    secret_file = tmp_path / "keys" / "srs-secrets"
    secret_file.parent.mkdir()
    secret_file.write_text("# newest first\nnew-secret-of-the-admin\nold-secret\n")
    ours = SrsCodec(HOSTNAME, (b"new-secret-of-the-admin",))
    inits = SrsCodec(HOSTNAME, ((env.data_dir / "srs.secret").read_bytes().strip(),))
    sink = Sink()
    controller = SinkController(
        sink, hostname="127.0.0.1", port=free_port(), server_hostname="sink.test"
    )
    controller.start()
    try:
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{controller.port}"')
        set_key(env.config_path, "srs", "secret_file", f'"{secret_file}"')
        async with serving_in_process(env.config_path) as server:
            server.directory.add_alias(f"fwd@{DOMAIN}", ["friend@outside.test"])
            port = env.ports["smtp"]
            content = b"From: <alice@good.test>\r\nSubject: fwd\r\n\r\nhello\r\n"
            sent = await asyncio.to_thread(
                _send_to, port, "alice@good.test", f"fwd@{DOMAIN}", content
            )
            assert sent == {}
            assert await asyncio.to_thread(sink.wait_for_messages, 1)
            local, _, domain = sink.messages[0].mail_from.rpartition("@")
            assert domain == HOSTNAME
            assert local.startswith("SRS0="), local
            assert ours.reverse(local) == "alice@good.test"
            with pytest.raises(SrsError):
                inits.reverse(local)
            # A bounce to an address signed with the older line is still taken.
            older = SrsCodec(HOSTNAME, (b"old-secret",)).forward("carol@good.test")
            bounce = b"From: MAILER-DAEMON@sink.test\r\nSubject: bounce\r\n\r\nsorry\r\n"
            assert await asyncio.to_thread(_send_to, port, "", older, bounce) == {}
            assert await asyncio.to_thread(sink.wait_for_messages, 2)
            assert sink.messages[1].rcpt_tos == ["carol@good.test"]
    finally:
        controller.stop()


def _send_to(port: int, sender: str, recipient: str, content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO) as client:
        return client.sendmail(sender, [recipient], content)
