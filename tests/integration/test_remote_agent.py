"""The smtp / relay / lmtp agent against real peers on loopback.

Peers: aiosmtpd (SMTP and LMTP, with STARTTLS and AUTH, certificates from a ``trustme`` CA),
Postfix's smtp-sink (PIPELINING and DSN, its dump files show the commands' arguments), and a
small hand-written LMTP server that writes each per-recipient reply separately. DNS answers
come from ``ZoneServer``. Each test builds its ``Settings`` with ``msgspec.convert``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, AuthResult
from hypothesis import example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pochta.config.settings import Settings
from pochta.deliver.remote import RemoteAgent
from pochta.deliver.smtp_client import (
    ClientSession,
    ClientSettings,
    Endpoint,
    ReplyParser,
    ReplyProtocolError,
    data_payload,
    normalize_reply,
    xtext,
)
from pochta.deliver.tls_policy import DomainPolicy, HostTLS, TLSARecord
from pochta.queue.envelope import Envelope
from pochta.queue.scheduler import Attempt
from pochta.resolve.transport import parse_transport
from tests.dnsserver import ZoneServer
from tests.factories import make_envelope, make_settings

SENDER = "alice@pochta.test"
MESSAGE = (
    b"From: alice@pochta.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\n"
    b"Hello Bob.\r\n.A line that starts with a dot.\r\n"
)
ZONE = """
$TTL 300
. IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
two.test. IN MX 10 mx1.two.test.
two.test. IN MX 20 mx2.two.test.
mx1.two.test. IN A 127.0.0.2
mx2.two.test. IN A 127.0.0.3
tls.test. IN MX 10 mx.tls.test.
mx.tls.test. IN A 127.0.0.1
nullmx.test. IN MX 0 .
"""


# --- building blocks ------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def settings_for(tmp_path: Path, nameserver: str, **delivery: Any) -> Settings:
    return make_settings(
        {
            "server.hostname": "mail.pochta.test",
            "server.data_dir": str(tmp_path),
            "dns.nameservers": [nameserver],
            "dns.timeout_seconds": 2,
            "delivery.connect_timeout_seconds": 5,
            "delivery.command_timeout_seconds": 10,
            **{f"delivery.{key}": value for key, value in delivery.items()},
        }
    )


envelope_for = partial(make_envelope, sender=SENDER, queue_id=None, content=MESSAGE)


async def deliver_once(settings: Settings, env: Envelope, transport: str) -> list[Attempt]:
    """A fresh agent tries ``env`` once over ``transport`` (transport(5) syntax), then
    closes, saying QUIT to any session it kept."""
    agent = RemoteAgent(settings)
    try:
        return await agent.deliver(env, env.recipients, MESSAGE, parse_transport(transport))
    finally:
        await agent.close()


@dataclass
class Received:
    peer: Any
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    auth: Any


@dataclass
class Sink:
    """An aiosmtpd handler that keeps what it receives and answers as told."""

    refuse: dict[str, str] = field(default_factory=dict)  # RCPT address -> reply
    greylist: set[str] = field(default_factory=set)  # first RCPT gets 450
    mail_reply: str = ""
    data_reply: str = ""
    ehlo_extra: tuple[str, ...] = ()
    messages: list[Received] = field(default_factory=list)
    rsets: int = 0
    quits: int = 0
    _seen: set[str] = field(default_factory=set)

    def wait_for_messages(self, count: int = 1, timeout: float = 20.0) -> bool:
        """Whether ``count`` messages arrived within ``timeout`` seconds (a bound on the wait,
        not a timing assertion: the sink runs in its own thread)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.messages) >= count

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses[:-1] + [f"250-{e}" for e in self.ehlo_extra] + responses[-1:]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        if address in self.greylist and address not in self._seen:
            self._seen.add(address)
            return "450 4.2.0 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server, session, envelope):
        self.rsets += 1
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 2.0.0 Bye"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            Received(
                session.peer,
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.ssl is not None,
                session.auth_data,
            )
        )
        return self.data_reply or "250 2.0.0 Queued"

    def connections(self) -> int:
        return len({m.peer for m in self.messages})


class LMTPSink(Sink):
    """For aiosmtpd's LMTP: all per-recipient replies come back in one write."""

    def __init__(self, verdicts: dict[str, str], **kw: Any) -> None:
        super().__init__(**kw)
        self.verdicts = verdicts

    async def handle_DATA(self, server, session, envelope):
        await super().handle_DATA(server, session, envelope)
        return "\r\n".join(self.verdicts.get(r, "250 2.0.0 Delivered") for r in envelope.rcpt_tos)


class RequireTLSSMTP(SMTP):
    """aiosmtpd refuses unknown MAIL parameters; this one takes REQUIRETLS (RFC 8689)."""

    async def smtp_MAIL(self, arg):
        if arg and arg.upper().endswith(" REQUIRETLS"):
            self.event_handler.requiretls_seen = True
            arg = arg[: -len(" REQUIRETLS")]
        await super().smtp_MAIL(arg)


class BrokenTLSSMTP(SMTP):
    """Says yes to STARTTLS, then sends garbage instead of a TLS handshake."""

    async def smtp_STARTTLS(self, arg):
        await self.push("220 2.0.0 Ready to start TLS")
        self.transport.write(b"this is not TLS\r\n" * 20)
        self.transport.close()


class SinkController(Controller):
    def __init__(self, handler: Any, *, protocol: type[SMTP] = SMTP, **kwargs: Any) -> None:
        self.protocol = protocol
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return self.protocol(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def peers() -> Iterator[Any]:
    started: list[Controller] = []

    def start(handler: Any, host: str = "127.0.0.1", port: int | None = None, **kw: Any):
        kw.setdefault("server_hostname", "sink.test")
        controller = SinkController(handler, hostname=host, port=port or free_port(host), **kw)
        controller.start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def zone() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE) as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def attempts_by_address(attempts: list[Any]) -> dict[str, Any]:
    return {a.recipient_address: a for a in attempts}


def attempt_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "smtp_attempt"]


# --- plain SMTP -----------------------------------------------------------------------------------


async def test_delivers_to_a_bracketed_host_and_logs_the_attempt(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    env = envelope_for("bob@example.test", "carol@example.test")
    with capture_logs() as logs:
        attempts = await deliver_once(
            settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
        )
    assert [(a.outcome, a.reply, a.remote_mta) for a in attempts] == [
        ("delivered", "250 2.0.0 Queued", "127.0.0.1"),
        ("delivered", "250 2.0.0 Queued", "127.0.0.1"),
    ]
    [got] = sink.messages
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ["bob@example.test", "carol@example.test"]
    assert got.content == MESSAGE  # dot-stuffed on the wire, unstuffed by the server
    assert f"SIZE={len(MESSAGE)}" in got.mail_options
    [line] = attempt_logs(logs)
    assert line["queue_id"] == env.queue_id
    assert line["host"] == "127.0.0.1"
    assert line["ip"] == f"127.0.0.1:{peer.port}"
    assert line["tls"] == "none"
    assert line["tls_verified"] == "none"
    assert line["reply"] == "250 2.0.0 Queued"
    assert line["delivered"] == 2
    assert sink.quits == 1  # close() says goodbye to the cached session


async def test_large_message_goes_through_flow_control(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    agent = RemoteAgent(settings_for(tmp_path, zone.address))
    line = b"0123456789" * 7 + b"\r\n"
    big = MESSAGE + line * 60_000  # about 4.3 MB, many times the transport's buffer
    env = envelope_for("bob@example.test")
    [attempt] = await agent.deliver(
        env, env.recipients, big, parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    )
    await agent.close()
    assert attempt.outcome == "delivered"
    assert sink.messages[0].content == big


async def test_greylisting_defers_then_delivers(tmp_path, zone, peers) -> None:
    sink = Sink(greylist={"bob@example.test"})
    peer = peers(sink)
    agent = RemoteAgent(settings_for(tmp_path, zone.address))
    env = envelope_for("bob@example.test")
    transport = parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    [first] = await agent.deliver(env, env.recipients, MESSAGE, transport)
    assert (first.outcome, first.reply) == ("deferred", "450 4.2.0 Greylisted, try again later")
    assert sink.messages == []
    [second] = await agent.deliver(env, env.recipients, MESSAGE, transport)
    await agent.close()
    assert second.outcome == "delivered"
    assert [m.rcpt_tos for m in sink.messages] == [["bob@example.test"]]


async def test_one_refused_recipient_bounces_alone(tmp_path, zone, peers) -> None:
    sink = Sink(refuse={"nobody@example.test": "550 5.1.1 No such user"})
    peer = peers(sink)
    env = envelope_for("bob@example.test", "nobody@example.test", "<bad>@example.test")
    attempts = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
    )
    outcome = attempts_by_address(attempts)
    assert outcome["bob@example.test"].outcome == "delivered"
    assert outcome["nobody@example.test"].outcome == "bounced"
    assert outcome["nobody@example.test"].reply == "550 5.1.1 No such user"
    # An address that would break the command line never leaves this host.
    assert outcome["<bad>@example.test"].outcome == "bounced"
    assert outcome["<bad>@example.test"].reply.startswith("550 5.1.3 ")
    assert [m.rcpt_tos for m in sink.messages] == [["bob@example.test"]]


async def test_reply_after_data_applies_to_accepted_recipients(tmp_path, zone, peers) -> None:
    sink = Sink(refuse={"x@example.test": "550 5.1.1 No"}, data_reply="554 5.7.1 Spam")
    peer = peers(sink)
    env = envelope_for("bob@example.test", "carol@example.test", "x@example.test")
    attempts = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
    )
    assert [(a.outcome, a.reply) for a in attempts] == [
        ("bounced", "554 5.7.1 Spam"),
        ("bounced", "554 5.7.1 Spam"),
        ("bounced", "550 5.1.1 No"),
    ]


async def test_permanent_refusal_of_the_sender_bounces_everyone(tmp_path, zone, peers) -> None:
    sink = Sink(mail_reply="553 5.7.1 Sender rejected")
    peer = peers(sink)
    env = envelope_for("bob@example.test", "carol@example.test")
    attempts = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
    )
    assert {(a.outcome, a.reply, a.remote_mta) for a in attempts} == {
        ("bounced", "553 5.7.1 Sender rejected", "127.0.0.1")
    }


async def test_message_over_the_size_limit_bounces(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink, data_size_limit=20)
    env = envelope_for("bob@example.test")
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
    )
    assert attempt.outcome == "bounced"
    assert attempt.reply.startswith("552 5.3.4 ")
    assert sink.messages == []


async def test_closed_port_defers_naming_the_host(tmp_path, zone) -> None:
    port = free_port()
    env = envelope_for("bob@example.test")
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{port}"
    )
    assert attempt.outcome == "deferred"
    assert attempt.reply == f"451 4.4.1 Connection to 127.0.0.1:{port} refused"


class NoEhloSMTP(SMTP):
    """An old server that knows HELO only."""

    async def smtp_EHLO(self, arg):
        await self.push("502 5.5.1 Error: command not implemented")


async def test_helo_when_the_server_does_not_know_ehlo(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink, protocol=NoEhloSMTP)
    env = envelope_for("bob@example.test")
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
    )
    assert attempt.outcome == "delivered"
    # RFC 5321 §3.2: after HELO no extension may be used, so MAIL FROM has no parameters.
    assert sink.messages[0].mail_options == []


class SlowSink(Sink):
    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(1.5)
        return await super().handle_DATA(server, session, envelope)


async def test_no_reply_after_the_final_dot_defers(tmp_path, zone, peers) -> None:
    sink = SlowSink()
    peer = peers(sink)
    agent = RemoteAgent(settings_for(tmp_path, zone.address, command_timeout_seconds=0.4))
    env = envelope_for("bob@example.test")
    [attempt] = await agent.deliver(
        env, env.recipients, MESSAGE, parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    )
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("451 4.4.2 ")
    assert "may be delivered twice" in attempt.reply
    assert agent.idle_sessions == 0  # a timed-out session is not kept
    await agent.close()


async def test_source_address_is_used(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    env = envelope_for("bob@example.test")
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address, source_address="127.0.0.9"),
        env,
        f"smtp:[127.0.0.1]:{peer.port}",
    )
    assert attempt.outcome == "delivered"
    assert sink.messages[0].peer[0] == "127.0.0.9"


async def test_connect_timeout(tmp_path, zone) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    # hangs until our timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            await asyncio.sleep(0.2)
            agent = RemoteAgent(settings_for(tmp_path, zone.address, connect_timeout_seconds=0.5))
            env = envelope_for("bob@example.test")
            started = time.monotonic()
            [attempt] = await agent.deliver(
                env, env.recipients, MESSAGE, parse_transport(f"smtp:[127.0.0.1]:{port}")
            )
            elapsed = time.monotonic() - started
            await agent.close()
        finally:
            for filler in fillers:
                filler.close()
    assert attempt.outcome == "deferred"
    assert attempt.reply == f"451 4.4.1 Connection to 127.0.0.1:{port} timed out after 0.5 s"
    assert 0.4 < elapsed < 3


# --- MX hosts -------------------------------------------------------------------------------------


async def test_second_mx_host_takes_the_mail_when_the_first_is_down(tmp_path, zone, peers) -> None:
    port = free_port("127.0.0.3")
    sink = Sink()
    peers(sink, host="127.0.0.3", port=port)  # nothing listens on 127.0.0.2
    env = envelope_for("bob@two.test")
    with capture_logs() as logs:
        [attempt] = await deliver_once(
            settings_for(tmp_path, zone.address, smtp_port=port), env, "smtp:two.test"
        )
    assert (attempt.outcome, attempt.remote_mta) == ("delivered", "mx2.two.test")
    tried = [(line["host"], line["ip"], line["reply"][:3]) for line in attempt_logs(logs)]
    assert tried == [
        ("mx1.two.test", f"127.0.0.2:{port}", "451"),
        ("mx2.two.test", f"127.0.0.3:{port}", "250"),
    ]


async def test_temporary_refusal_of_the_sender_tries_the_next_mx(tmp_path, zone, peers) -> None:
    port = free_port("127.0.0.2")
    first = Sink(mail_reply="451 4.3.2 Try later")
    second = Sink()
    peers(first, host="127.0.0.2", port=port)
    peers(second, host="127.0.0.3", port=port)
    env = envelope_for("bob@two.test")
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address, smtp_port=port), env, "smtp:two.test"
    )
    assert (attempt.outcome, attempt.remote_mta) == ("delivered", "mx2.two.test")
    assert len(second.messages) == 1
    assert first.messages == []


async def test_recipients_refused_for_now_are_tried_at_the_next_mx(tmp_path, zone, peers) -> None:
    """A 4xx to RCPT at the first MX host: those recipients go to the next host in the same
    attempt (as in Postfix); a 5xx stays final, and the accepted one is not sent twice."""
    port = free_port("127.0.0.2")
    first = Sink(greylist={"bob@two.test"}, refuse={"nobody@two.test": "550 5.1.1 No such user"})
    second = Sink()
    peers(first, host="127.0.0.2", port=port)
    peers(second, host="127.0.0.3", port=port)
    env = envelope_for("bob@two.test", "carol@two.test", "nobody@two.test")
    attempts = attempts_by_address(
        await deliver_once(
            settings_for(tmp_path, zone.address, smtp_port=port), env, "smtp:two.test"
        )
    )
    assert (attempts["bob@two.test"].outcome, attempts["bob@two.test"].remote_mta) == (
        "delivered",
        "mx2.two.test",
    )
    assert (attempts["carol@two.test"].outcome, attempts["carol@two.test"].remote_mta) == (
        "delivered",
        "mx1.two.test",
    )
    assert attempts["nobody@two.test"].outcome == "bounced"
    assert [m.rcpt_tos for m in first.messages] == [["carol@two.test"]]
    assert [m.rcpt_tos for m in second.messages] == [["bob@two.test"]]


async def test_a_4xx_kept_when_the_next_mx_is_down(tmp_path, zone, peers) -> None:
    port = free_port("127.0.0.2")
    first = Sink(greylist={"bob@two.test"})
    peers(first, host="127.0.0.2", port=port)  # nothing listens on 127.0.0.3
    env = envelope_for("bob@two.test", "carol@two.test")
    attempts = attempts_by_address(
        await deliver_once(
            settings_for(tmp_path, zone.address, smtp_port=port), env, "smtp:two.test"
        )
    )
    assert attempts["carol@two.test"].outcome == "delivered"
    bob = attempts["bob@two.test"]
    assert (bob.outcome, bob.reply, bob.remote_mta) == (
        "deferred",
        "450 4.2.0 Greylisted, try again later",
        "mx1.two.test",
    )


async def test_every_mx_host_down_defers_with_the_last_reply(tmp_path, zone) -> None:
    port = free_port("127.0.0.2")
    env = envelope_for("bob@two.test", "carol@two.test")
    attempts = await deliver_once(
        settings_for(tmp_path, zone.address, smtp_port=port), env, "smtp:two.test"
    )
    assert {(a.outcome, a.reply) for a in attempts} == {
        ("deferred", f"451 4.4.1 Connection to mx2.two.test[127.0.0.3:{port}] refused")
    }


async def test_null_mx_bounces_without_connecting(tmp_path, zone) -> None:
    agent = RemoteAgent(settings_for(tmp_path, zone.address))
    env = envelope_for("bob@nullmx.test")
    [attempt] = await agent.deliver(
        env, env.recipients, MESSAGE, parse_transport("smtp:nullmx.test")
    )
    assert attempt.outcome == "bounced"
    assert attempt.reply.startswith("556 5.1.10 ")


class EnforcedPolicy:
    """A TLS policy source as MTA-STS in enforce mode would give: only mx2 is allowed."""

    async def domain_policy(self, domain: str) -> DomainPolicy:
        return DomainPolicy("none", "mta-sts", ("mx2.two.test",), "enforce")

    async def host_tls(self, domain: str, host: str, port: int, floor: DomainPolicy) -> HostTLS:
        return HostTLS(floor.level, floor.source)


async def test_mta_sts_enforce_skips_unlisted_mx_hosts(tmp_path, zone, peers) -> None:
    port = free_port("127.0.0.2")
    first, second = Sink(), Sink()
    peers(first, host="127.0.0.2", port=port)
    peers(second, host="127.0.0.3", port=port)
    agent = RemoteAgent(
        settings_for(tmp_path, zone.address, smtp_port=port), policy=EnforcedPolicy()
    )
    env = envelope_for("bob@two.test")
    with capture_logs() as logs:
        [attempt] = await agent.deliver(
            env, env.recipients, MESSAGE, parse_transport("smtp:two.test")
        )
    await agent.close()
    assert attempt.outcome == "delivered"
    assert first.messages == []
    assert len(second.messages) == 1
    assert [line["host"] for line in attempt_logs(logs)] == ["mx2.two.test"]


# --- connection reuse, pacing ---------------------------------------------------------------------


async def test_two_messages_share_one_connection(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    agent = RemoteAgent(settings_for(tmp_path, zone.address, connection_cache_seconds=10))
    transport = parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    with capture_logs() as logs:
        for _ in range(2):
            env = envelope_for("bob@example.test")
            [attempt] = await agent.deliver(env, env.recipients, MESSAGE, transport)
            assert attempt.outcome == "delivered"
    assert agent.idle_sessions == 1
    await agent.close()
    assert agent.idle_sessions == 0
    assert len(sink.messages) == 2
    assert sink.connections() == 1
    assert sink.rsets == 1  # RFC 5321 §4.1.1.5: RSET before the second transaction
    assert [line["reused"] for line in attempt_logs(logs)] == [False, True]
    assert sink.quits == 1


async def test_idle_connection_closes_after_the_cache_time(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    agent = RemoteAgent(settings_for(tmp_path, zone.address, connection_cache_seconds=0.2))
    transport = parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    env = envelope_for("bob@example.test")
    await agent.deliver(env, env.recipients, MESSAGE, transport)
    assert agent.idle_sessions == 1
    await asyncio.sleep(0.6)
    assert agent.idle_sessions == 0
    assert sink.quits == 1
    await agent.deliver(env, env.recipients, MESSAGE, transport)
    await agent.close()
    assert sink.connections() == 2


async def test_destination_rate_delay_spaces_deliveries(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    agent = RemoteAgent(settings_for(tmp_path, zone.address, destination_rate_delay_seconds=0.4))
    transport = parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    started = time.monotonic()
    envs = [envelope_for("bob@example.test") for _ in range(3)]
    results = await asyncio.gather(
        *(agent.deliver(e, e.recipients, MESSAGE, transport) for e in envs)
    )
    elapsed = time.monotonic() - started
    await agent.close()
    assert all(r[0].outcome == "delivered" for r in results)
    assert elapsed >= 0.8  # three deliveries, two pauses


# --- TLS ------------------------------------------------------------------------------------------


async def test_verify_passes_with_the_ca_file(tmp_path, zone, peers, ca) -> None:
    sink = Sink()
    peer = peers(sink, tls_context=server_tls(ca, "mx.tls.test"), require_starttls=True)
    settings = settings_for(
        tmp_path,
        zone.address,
        smtp_port=peer.port,
        tls_security_level="verify",
        tls_ca_file=ca_file(ca, tmp_path),
    )
    env = envelope_for("bob@tls.test")
    with capture_logs() as logs:
        [attempt] = await deliver_once(settings, env, "smtp:tls.test")
    assert attempt.outcome == "delivered"
    assert sink.messages[0].tls
    [line] = attempt_logs(logs)
    assert line["tls"].startswith("TLSv1.")
    assert line["tls_verified"] == "ca"


async def test_verify_fails_without_the_ca_file(tmp_path, zone, peers, ca) -> None:
    sink = Sink()
    peer = peers(sink, tls_context=server_tls(ca, "mx.tls.test"), require_starttls=True)
    settings = settings_for(
        tmp_path, zone.address, smtp_port=peer.port, tls_security_level="verify"
    )
    env = envelope_for("bob@tls.test")
    [attempt] = await deliver_once(settings, env, "smtp:tls.test")
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("451 4.7.5 ")
    assert "not verified" in attempt.reply
    assert sink.messages == []


async def test_verify_checks_the_mx_name_not_the_ip(tmp_path, zone, peers, ca) -> None:
    sink = Sink()
    # The certificate names the IP address the MX host resolves to, but not the MX host.
    peer = peers(sink, tls_context=server_tls(ca, "127.0.0.1"), require_starttls=True)
    settings = settings_for(
        tmp_path,
        zone.address,
        smtp_port=peer.port,
        tls_security_level="verify",
        tls_ca_file=ca_file(ca, tmp_path),
    )
    env = envelope_for("bob@tls.test")
    [attempt] = await deliver_once(settings, env, "smtp:tls.test")
    assert attempt.outcome == "deferred"
    assert "mx.tls.test" in attempt.reply
    assert "Hostname mismatch" in attempt.reply, attempt.reply
    assert sink.messages == []


async def test_may_accepts_any_certificate(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink, tls_context=server_tls(trustme.CA(), "elsewhere.test"))
    env = envelope_for("bob@example.test")
    with capture_logs() as logs:
        [attempt] = await deliver_once(
            settings_for(tmp_path, zone.address, tls_security_level="may"),
            env,
            f"smtp:[127.0.0.1]:{peer.port}",
        )
    assert attempt.outcome == "delivered"
    assert sink.messages[0].tls
    [line] = attempt_logs(logs)
    assert line["tls"].startswith("TLSv1.")
    assert line["tls_verified"] == "none"


async def test_may_falls_back_to_plain_text_after_a_failed_handshake(tmp_path, zone, peers, ca):
    sink = Sink()
    peer = peers(sink, protocol=BrokenTLSSMTP, tls_context=server_tls(ca, "x.test"))
    env = envelope_for("bob@example.test")
    with capture_logs() as logs:
        [attempt] = await deliver_once(
            settings_for(tmp_path, zone.address, tls_security_level="may"),
            env,
            f"smtp:[127.0.0.1]:{peer.port}",
        )
    assert attempt.outcome == "delivered"
    assert not sink.messages[0].tls
    assert [e["event"] for e in logs if e["event"] == "tls_fallback"] == ["tls_fallback"]
    assert attempt_logs(logs)[0]["tls"] == "none"


class RefusingTLSSMTP(SMTP):
    """Offers STARTTLS, then refuses it (RFC 3207 §4: 454)."""

    async def smtp_STARTTLS(self, arg):
        await self.push("454 4.7.0 TLS not available due to temporary reason")


@pytest.mark.parametrize("level", ["may", "encrypt"])
async def test_refused_starttls(tmp_path, zone, peers, ca, level) -> None:
    sink = Sink()
    peer = peers(sink, protocol=RefusingTLSSMTP, tls_context=server_tls(ca, "x.test"))
    env = envelope_for("bob@example.test")
    with capture_logs() as logs:
        [attempt] = await deliver_once(
            settings_for(tmp_path, zone.address, tls_security_level=level),
            env,
            f"smtp:[127.0.0.1]:{peer.port}",
        )
    if level == "may":
        # The same connection goes on in plain text; no reconnection.
        assert attempt.outcome == "delivered"
        assert not sink.messages[0].tls
        assert not [e for e in logs if e["event"] == "tls_fallback"]
    else:
        assert attempt.outcome == "deferred"
        assert attempt.reply.startswith("451 4.7.4 ")
        assert "454 4.7.0" in attempt.reply


async def test_encrypt_needs_starttls(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)
    env = envelope_for("bob@example.test")
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address, tls_security_level="encrypt"),
        env,
        f"smtp:[127.0.0.1]:{peer.port}",
    )
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("451 4.7.4 ")
    assert sink.messages == []


def leaf_sha256(context_ca: trustme.CA, cert: trustme.LeafCert) -> bytes:
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).digest()


class DanePolicy:
    """A policy source that found validated TLSA records for every host."""

    def __init__(self, records: tuple[TLSARecord, ...]) -> None:
        self.records = records

    async def domain_policy(self, domain: str) -> DomainPolicy:
        return DomainPolicy("may")

    async def host_tls(self, domain: str, host: str, port: int, floor: DomainPolicy) -> HostTLS:
        return HostTLS("dane", "dane", self.records)


def dane_ee_sha256(host: str):
    """A DANE-EE(3) SPKI-less check: SHA-256 of the whole leaf certificate (selector 0)."""

    def check(chain_der: list[bytes], tlsa) -> bool:
        digest = hashlib.sha256(chain_der[0]).digest()
        return any((r.usage, r.selector, r.mtype, r.data) == (3, 0, 1, digest) for r in tlsa)

    return check


@pytest.mark.parametrize("matching", [True, False])
async def test_dane_checks_the_chain_against_tlsa(tmp_path, zone, peers, matching) -> None:
    issuer = trustme.CA()
    leaf = issuer.issue_cert("mx.tls.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    sink = Sink()
    peer = peers(sink, tls_context=context)
    digest = leaf_sha256(issuer, leaf) if matching else bytes(32)
    agent = RemoteAgent(
        settings_for(tmp_path, zone.address, smtp_port=peer.port),
        policy=DanePolicy((TLSARecord(3, 0, 1, digest),)),
        dane_check_for=dane_ee_sha256,
    )
    env = envelope_for("bob@tls.test")
    with capture_logs() as logs:
        [attempt] = await agent.deliver(
            env, env.recipients, MESSAGE, parse_transport("smtp:tls.test")
        )
    await agent.close()
    if matching:
        assert attempt.outcome == "delivered"
        assert attempt_logs(logs)[0]["tls_verified"] == "dane"
    else:
        assert attempt.outcome == "deferred"
        assert "TLSA" in attempt.reply
        assert sink.messages == []


async def test_implicit_tls_session(tmp_path, peers, ca) -> None:
    sink = Sink()
    peer = peers(sink, ssl_context=server_tls(ca, "smtps.test"))
    config = ClientSettings(helo_name="mail.pochta.test", ca_file=ca_file(ca, tmp_path))
    session = await ClientSession.open(
        Endpoint("smtps.test", "127.0.0.1", peer.port),
        config,
        HostTLS("verify"),
        implicit_tls=True,
    )
    try:
        assert session.tls.verified == "ca"
        assert session.tls.version.startswith("TLSv1.")
    finally:
        await session.quit()


# --- SMTPUTF8, REQUIRETLS -------------------------------------------------------------------------


async def test_smtputf8_mail_is_refused_by_a_server_without_it(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink, enable_SMTPUTF8=False)
    agent = RemoteAgent(settings_for(tmp_path, zone.address))
    transport = parse_transport(f"smtp:[127.0.0.1]:{peer.port}")
    env = envelope_for("josé@example.test", smtputf8=True)
    [attempt] = await agent.deliver(env, env.recipients, MESSAGE, transport)
    assert attempt.outcome == "bounced"
    assert attempt.reply.startswith("550 5.6.7 ")
    # Flagged SMTPUTF8 but all ASCII: RFC 6531 §3.2, it may go without the parameter.
    ascii_env = envelope_for("bob@example.test", smtputf8=True)
    [ascii_attempt] = await agent.deliver(ascii_env, ascii_env.recipients, MESSAGE, transport)
    await agent.close()
    assert ascii_attempt.outcome == "delivered"
    assert "SMTPUTF8" not in sink.messages[0].mail_options


async def test_smtputf8_mail_goes_to_a_server_with_it(tmp_path, zone, peers) -> None:
    sink = Sink()
    peer = peers(sink)  # the controller enables SMTPUTF8
    env = envelope_for("josé@example.test", sender="renée@pochta.test", smtputf8=True)
    [attempt] = await deliver_once(
        settings_for(tmp_path, zone.address), env, f"smtp:[127.0.0.1]:{peer.port}"
    )
    assert attempt.outcome == "delivered"
    [got] = sink.messages
    assert "SMTPUTF8" in got.mail_options
    assert (got.mail_from, got.rcpt_tos) == ("renée@pochta.test", ["josé@example.test"])


async def test_requiretls_needs_the_extension(tmp_path, zone, peers, ca) -> None:
    sink = Sink()
    peer = peers(sink, tls_context=server_tls(ca, "mx.tls.test"))
    settings = settings_for(
        tmp_path, zone.address, smtp_port=peer.port, tls_ca_file=ca_file(ca, tmp_path)
    )
    env = envelope_for("bob@tls.test", requiretls=True)
    [attempt] = await deliver_once(settings, env, "smtp:tls.test")
    # RFC 8689 §4.2.1: not sent to a server that does not offer REQUIRETLS; the last host
    # lacking it bounces the message (X.7.30).
    assert attempt.outcome == "bounced"
    assert attempt.reply.startswith("550 5.7.30 ")
    assert sink.messages == []


async def test_requiretls_delivers_over_verified_tls(tmp_path, zone, peers, ca) -> None:
    sink = Sink(ehlo_extra=("REQUIRETLS",))
    peer = peers(sink, protocol=RequireTLSSMTP, tls_context=server_tls(ca, "mx.tls.test"))
    settings = settings_for(
        tmp_path, zone.address, smtp_port=peer.port, tls_ca_file=ca_file(ca, tmp_path)
    )
    agent = RemoteAgent(settings)  # configured level "may": REQUIRETLS raises it to verify
    env = envelope_for("bob@tls.test", requiretls=True)
    with capture_logs() as logs:
        [attempt] = await agent.deliver(
            env, env.recipients, MESSAGE, parse_transport("smtp:tls.test")
        )
    await agent.close()
    assert attempt.outcome == "delivered"
    assert getattr(sink, "requiretls_seen", False)
    assert attempt_logs(logs)[0]["tls_verified"] == "ca"


async def test_requiretls_bounces_when_tls_cannot_be_verified(tmp_path, zone, peers, ca) -> None:
    sink = Sink(ehlo_extra=("REQUIRETLS",))
    peer = peers(sink, protocol=RequireTLSSMTP, tls_context=server_tls(ca, "mx.tls.test"))
    agent = RemoteAgent(settings_for(tmp_path, zone.address, smtp_port=peer.port))  # no CA
    env = envelope_for("bob@tls.test", requiretls=True)
    [attempt] = await agent.deliver(env, env.recipients, MESSAGE, parse_transport("smtp:tls.test"))
    await agent.close()
    assert attempt.outcome == "bounced"
    assert attempt.reply.startswith("550 5.7.10 ")
    assert sink.messages == []


# --- relayhost ------------------------------------------------------------------------------------


def relay_authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"relayuser" and auth_data.password == b"s3cret pass"
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def relay_settings(tmp_path: Path, port: int, password: str, **delivery: Any) -> Settings:
    secret = tmp_path / "relay-password"
    secret.write_text(password + "\n")
    # No usable DNS at all: the relayhost is bracketed, nothing is looked up.
    dead = f"127.0.0.1:{free_port()}"
    return settings_for(
        tmp_path,
        dead,
        relayhost=f"[127.0.0.1]:{port}",
        relayhost_username="relayuser",
        relayhost_password_file=str(secret),
        **delivery,
    )


async def test_relayhost_with_auth_over_starttls(tmp_path, peers, ca) -> None:
    sink = Sink()
    peer = peers(
        sink,
        tls_context=server_tls(ca, "relay.test"),
        require_starttls=True,
        auth_required=True,
        authenticator=relay_authenticator,
    )
    env = envelope_for("bob@far.example")
    with capture_logs() as logs:
        [attempt] = await deliver_once(
            relay_settings(tmp_path, peer.port, "s3cret pass"), env, "smtp:far.example"
        )
    assert attempt.outcome == "delivered"
    [got] = sink.messages
    assert got.tls
    assert got.auth.login == b"relayuser"
    assert "s3cret" not in repr(logs)


async def test_relayhost_refusing_the_password_defers(tmp_path, peers, ca) -> None:
    sink = Sink()
    peer = peers(
        sink,
        tls_context=server_tls(ca, "relay.test"),
        require_starttls=True,
        auth_required=True,
        authenticator=relay_authenticator,
    )
    env = envelope_for("bob@far.example")
    [attempt] = await deliver_once(
        relay_settings(tmp_path, peer.port, "wrong"), env, "smtp:far.example"
    )
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("454 4.7.8 ")
    assert sink.messages == []


async def test_password_never_goes_without_tls(tmp_path, peers) -> None:
    sink = Sink()
    peer = peers(sink, auth_require_tls=False, authenticator=relay_authenticator)
    env = envelope_for("bob@far.example")
    [attempt] = await deliver_once(
        relay_settings(tmp_path, peer.port, "s3cret pass"), env, "smtp:far.example"
    )
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("451 4.7.0 ")
    assert sink.messages == []


async def test_explicit_next_hop_bypasses_the_relayhost(tmp_path, peers) -> None:
    relay, direct = Sink(), Sink()
    relay_peer = peers(relay)
    direct_peer = peers(direct)
    settings = relay_settings(tmp_path, relay_peer.port, "s3cret pass")
    env = envelope_for("bob@far.example")
    [attempt] = await deliver_once(settings, env, f"smtp:[127.0.0.1]:{direct_peer.port}")
    assert attempt.outcome == "delivered"
    assert len(direct.messages) == 1
    assert relay.messages == []


def low_port_peer(peers: Any, sink: Sink, port: int, **kw: Any) -> Any:
    host = "127.0.0.7"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind((host, port))
    except OSError as exc:
        pytest.skip(f"cannot bind {host}:{port}: {exc}")
    return peers(sink, host=host, port=port, **kw)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="ports 465 and 587 need root")
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_relayhost_on_port_465_speaks_tls_first(tmp_path, peers, ca) -> None:
    sink = Sink()
    low_port_peer(
        peers,
        sink,
        465,
        ssl_context=server_tls(ca, "relay.test"),
        auth_required=True,
        # aiosmtpd offers AUTH only after its own STARTTLS; this connection is TLS already.
        auth_require_tls=False,
        authenticator=relay_authenticator,
    )
    settings = relay_settings(tmp_path, 465, "s3cret pass", tls_security_level="none")
    settings = msgspec.structs.replace(
        settings,
        delivery=msgspec.structs.replace(settings.delivery, relayhost="[127.0.0.7]:465"),
    )
    env = envelope_for("bob@far.example")
    [attempt] = await deliver_once(settings, env, "smtp:far.example")
    assert attempt.outcome == "delivered"
    assert sink.messages[0].auth.login == b"relayuser"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="ports 465 and 587 need root")
@pytest.mark.parametrize("offers_tls", [True, False])
async def test_relayhost_on_port_587_requires_starttls(tmp_path, peers, ca, offers_tls) -> None:
    sink = Sink()
    tls = {"tls_context": server_tls(ca, "relay.test")} if offers_tls else {}
    low_port_peer(peers, sink, 587, auth_require_tls=False, **tls)
    settings = settings_for(
        tmp_path,
        f"127.0.0.1:{free_port()}",
        relayhost="[127.0.0.7]:587",
        tls_security_level="none",  # port 587 raises it to "encrypt"
    )
    env = envelope_for("bob@far.example")
    [attempt] = await deliver_once(settings, env, "smtp:far.example")
    if offers_tls:
        assert attempt.outcome == "delivered"
        assert sink.messages[0].tls
    else:
        assert attempt.outcome == "deferred"
        assert attempt.reply.startswith("451 4.7.4 ")


# --- LMTP -----------------------------------------------------------------------------------------


class LMTPController(SinkController):
    def factory(self) -> SMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


async def test_lmtp_gives_one_reply_per_recipient(tmp_path, zone) -> None:
    sink = LMTPSink(
        {"full@example.test": "452 4.2.2 Mailbox full", "gone@example.test": "550 5.1.1 Gone"},
        refuse={"nope@example.test": "550 5.1.1 Unknown user"},
    )
    controller = LMTPController(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        agent = RemoteAgent(settings_for(tmp_path, zone.address))
        env = envelope_for(
            "bob@example.test", "nope@example.test", "full@example.test", "gone@example.test"
        )
        attempts = await agent.deliver(
            env, env.recipients, MESSAGE, parse_transport(f"lmtp:[127.0.0.1]:{controller.port}")
        )
        await agent.close()
    finally:
        controller.stop()
    assert [(a.outcome, a.reply) for a in attempts] == [
        ("delivered", "250 2.0.0 Delivered"),
        ("bounced", "550 5.1.1 Unknown user"),
        ("deferred", "452 4.2.2 Mailbox full"),
        ("bounced", "550 5.1.1 Gone"),
    ]


class RawLMTP:
    """A small LMTP server on a real socket that writes every per-recipient reply on its
    own, a little apart, and counts its connections."""

    def __init__(self, verdicts: dict[str, str]) -> None:
        self.verdicts = verdicts
        self.messages: list[tuple[list[str], bytes]] = []
        self.connections = 0
        self.commands: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 raw LMTP\r\n")
        rcpts: list[str] = []
        while line := await reader.readline():
            command = line.decode("utf-8").rstrip("\r\n")
            self.commands.append(command)
            verb = command[:4].upper()
            if verb == "LHLO":
                writer.write(
                    b"250-raw\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
                )
            elif verb == "MAIL":
                rcpts = []
                writer.write(b"250 2.1.0 OK\r\n")
            elif verb == "RCPT":
                rcpts.append(command.partition("<")[2].partition(">")[0])
                writer.write(b"250 2.1.5 OK\r\n")
            elif verb == "DATA":
                writer.write(b"354 Go ahead\r\n")
                await writer.drain()
                data = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    data += chunk
                self.messages.append((rcpts, data))
                for rcpt in rcpts:
                    writer.write(self.verdicts.get(rcpt, "250 2.0.0 Saved").encode() + b"\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.02)
            elif verb == "RSET":
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            await writer.drain()
        writer.close()


async def test_lmtp_over_a_unix_socket_with_replies_written_apart(tmp_path, zone) -> None:
    server = RawLMTP({"full@example.test": "452 4.2.2 Over quota"})
    path = tmp_path / "lmtp.sock"
    listener = await asyncio.start_unix_server(server.handle, path=str(path))
    try:
        agent = RemoteAgent(settings_for(tmp_path, zone.address, connection_cache_seconds=5))
        transport = parse_transport(f"lmtp:unix:{path}")
        env = envelope_for("bob@example.test", "full@example.test", "carol@example.test")
        with capture_logs() as logs:
            attempts = await agent.deliver(env, env.recipients, MESSAGE, transport)
            again = envelope_for("dave@example.test")
            [second] = await agent.deliver(again, again.recipients, MESSAGE, transport)
        await agent.close()
    finally:
        listener.close()
        await listener.wait_closed()
    assert [(a.outcome, a.reply) for a in attempts] == [
        ("delivered", "250 2.0.0 Saved"),
        ("deferred", "452 4.2.2 Over quota"),
        ("delivered", "250 2.0.0 Saved"),
    ]
    assert second.outcome == "delivered"
    assert server.connections == 1  # the session was kept and reused
    assert server.commands[0].startswith("LHLO mail.pochta.test")
    assert server.messages[0][1] == data_payload(MESSAGE)[: -len(b".\r\n")]
    assert attempt_logs(logs)[0]["ip"] == f"unix:{path}"


# --- Postfix's smtp-sink: PIPELINING and DSN ------------------------------------------------------

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


@contextlib.contextmanager
def smtp_sink(tmp_path: Path, *args: str) -> Iterator[tuple[int, Path]]:
    if not os.path.exists(SMTP_SINK):
        pytest.skip("Postfix smtp-sink is not installed")
    # smtp-sink drops to "nobody", which cannot enter pytest's private tmp_path.
    dumps = Path(tempfile.mkdtemp(prefix="pochta-smtp-sink-"))
    os.chmod(dumps, 0o777)  # noqa: S103 -- a private mkdtemp directory, removed afterwards
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [SMTP_SINK, *user, "-d", f"{dumps}/%M.", *args, f"127.0.0.1:{port}", "10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield port, dumps
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(dumps, ignore_errors=True)


def dump_headers(dumps: Path) -> list[dict[str, list[str]]]:
    found = []
    for path in sorted(p for p in dumps.rglob("*") if p.is_file()):
        fields: dict[str, list[str]] = {}
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("X-"):
                break
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        found.append(fields)
    return found


async def test_pipelined_dsn_transaction_with_smtp_sink(tmp_path, zone) -> None:
    with smtp_sink(tmp_path) as (port, dumps):
        agent = RemoteAgent(settings_for(tmp_path, zone.address))
        env = envelope_for(
            "bob@example.test", "carol@example.test", ret="HDRS", envid="Q+1=2", body="8BITMIME"
        )
        env.recipients[0].notify = ("SUCCESS", "FAILURE")
        env.recipients[0].orcpt = "rfc822;Bob+Old@example.test"
        env.recipients[1].original = "carol.alias@example.test"
        attempts = await agent.deliver(
            env, env.recipients, MESSAGE, parse_transport(f"smtp:[127.0.0.1]:{port}")
        )
        await agent.close()
        dumped = dump_headers(dumps)  # written before smtp-sink's reply to the final dot
    assert [a.outcome for a in attempts] == ["delivered", "delivered"]
    [fields] = dumped
    mail_args = fields["X-Mail-Args"][0].split()
    assert mail_args[0] == f"<{SENDER}>"
    # smtp-sink offers no SIZE, so none is sent (RFC 1870 §3: only to servers with SIZE).
    assert set(mail_args[1:]) == {
        "BODY=8BITMIME",
        "RET=HDRS",
        f"ENVID={xtext('Q+1=2')}",
    }
    assert fields["X-Rcpt-Args"] == [
        "<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2BOld@example.test",
        "<carol@example.test> ORCPT=rfc822;carol.alias@example.test",
    ]


async def test_smtp_sink_as_lmtp_peer(tmp_path, zone) -> None:
    with smtp_sink(tmp_path, "-L") as (port, _dumps):
        agent = RemoteAgent(settings_for(tmp_path, zone.address))
        env = envelope_for("bob@example.test", "carol@example.test")
        attempts = await agent.deliver(
            env, env.recipients, MESSAGE, parse_transport(f"lmtp:[127.0.0.1]:{port}")
        )
        await agent.close()
    assert [a.outcome for a in attempts] == ["delivered", "delivered"]


# --- the reply reader and the DATA bytes (sans-IO) ------------------------------------------------


def test_reply_parser_reads_multiline_and_pipelined_replies() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-first\r\n250-2.1.0 sec") == []
    assert parser.feed(b"ond\r\n250 third\r\n354 go\n") == [
        (250, ["first", "2.1.0 second", "third"]),
        (354, ["go"]),
    ]


@pytest.mark.parametrize(
    "data",
    [b"hello\r\n", b"2500 x\r\n", b"250-a\r\n251 b\r\n", b"25\r\n", b"650 x\r\n", b"9" * 5000],
)
def test_reply_parser_refuses_what_is_not_a_reply(data: bytes) -> None:
    with pytest.raises(ReplyProtocolError):
        ReplyParser().feed(data)


def test_reply_parser_bounds_the_lines() -> None:
    with pytest.raises(ReplyProtocolError):
        ReplyParser(max_lines=3).feed(b"250-a\r\n" * 4)


replies = st.lists(
    st.tuples(
        st.sampled_from([220, 250, 354, 421, 450, 550, 554]),
        st.lists(
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            min_size=1,
            max_size=4,
        ),
    ),
    max_size=5,
)


def render(reply_list: list[tuple[int, list[str]]]) -> bytes:
    out = b""
    for code, lines in reply_list:
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out += f"{code}{sep}{line}\r\n".encode()
    return out


@settings(deadline=None)  # a shared 2-CPU machine: time is not the property
@given(replies, st.integers(1, 7))
def test_reply_parser_round_trip_in_any_chunks(reply_list, step) -> None:
    data = render(reply_list)
    parser = ReplyParser()
    got = []
    for start in range(0, len(data), step):
        got.extend(parser.feed(data[start : start + step]))
    assert got == [(code, lines) for code, lines in reply_list]


@settings(deadline=None)  # a shared 2-CPU machine: time is not the property
@given(st.binary(max_size=300))
@example(b"250-\xff\xfe\r\n250 \r\n")
def test_reply_parser_gives_replies_or_a_protocol_error(data: bytes) -> None:
    parser = ReplyParser()
    try:
        out = parser.feed(data)
    except ReplyProtocolError:
        return
    assert all(200 <= code < 600 for code, _ in out)


def test_replies_get_enhanced_codes_of_their_class() -> None:
    assert normalize_reply(250, ["Ok"]).text == "250 2.0.0 Ok"
    assert normalize_reply(550, ["5.1.1 No such user", "5.1.1 really"]).text == (
        "550 5.1.1 No such user / really"
    )
    assert normalize_reply(452, ["5.2.2 Full"]).text == "452 4.2.2 Full"
    assert normalize_reply(250, ["x\x00y"]).text == "250 2.0.0 x?y"
    assert len(normalize_reply(550, ["z" * 5000]).text) == 1000


def test_data_payload_stuffs_dots_and_ends_lines_with_crlf() -> None:
    assert data_payload(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert data_payload(b"") == b".\r\n"


def test_xtext_encodes_plus_equals_and_non_printables() -> None:
    assert xtext("a+b=c d\u00e9") == "a+2Bb+3Dc+20d+C3+A9"
