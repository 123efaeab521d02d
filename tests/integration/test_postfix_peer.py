"""The smtp agent, and the whole server, against Debian's Postfix as the receiving MTA.

One private Postfix instance for the module: its own configuration directory, queue and
mailbox root in a ``mkdtemp`` directory, started with ``postfix -c DIR start`` (it needs
root, as Postfix's master does; without root or Postfix the module is skipped, saying why).
It listens on two free loopback ports: one offers STARTTLS with a certificate for
``mx.peer.test`` from a ``trustme`` CA, the other offers no TLS. Its recipients, all in the
virtual mailbox domain peer.test:

- ``bob@peer.test``: a mailbox (Maildir under the instance's directory);
- ``busy@peer.test``: an access map entry that answers ``451 4.3.2`` (temporary);
- ``grey@peer.test``: a mailbox behind greylisting: a policy service in this test (Postfix's
  policy delegation protocol, ``check_policy_service``) answers the first try of each
  (client, sender, recipient) with ``DEFER_IF_PERMIT``, as postgrey does;
- anything else: ``550 5.1.1 ... User unknown in virtual mailbox table`` (permanent).

A ``ZoneServer`` gives peer.test an MX, so delivery finds Postfix through DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import pwd
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from structlog.testing import capture_logs

from pochta.deliver.remote import RemoteAgent
from pochta.resolve.transport import parse_transport
from tests.dnsserver import ZoneServer
from tests.factories import make_envelope, make_settings
from tests.harness import (
    DOMAIN,
    PochtaEnv,
    dsn_status_text,
    maildir_files,
    serve,
    set_key,
    wait_files,
    wait_maildir,
)

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTCONF = shutil.which("postconf") or "/usr/sbin/postconf"
SENDER = "alice@pochta.test"
MESSAGE = (
    b"From: alice@pochta.test\r\nTo: bob@peer.test\r\nSubject: to postfix\r\n\r\n"
    b"Hello Bob.\r\n.A line that starts with a dot.\r\n"
)
ZONE = """
$TTL 300
. IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
peer.test. IN MX 10 mx.peer.test.
mx.peer.test. IN A 127.0.0.1
"""
GREYLISTED = "Greylisted, try again later"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a Postfix instance needs root"),
    pytest.mark.skipif(not os.path.exists(POSTFIX), reason="Postfix is not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PolicyHandler(socketserver.StreamRequestHandler):
    """Postfix policy delegation: name=value lines, an empty line; reply ``action=...``."""

    server: _PolicyServer

    def handle(self) -> None:
        request: dict[str, str] = {}
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line:
                name, _, value = line.partition("=")
                request[name] = value
                continue
            action = self.server.decide(request)
            self.wfile.write(f"action={action}\n\n".encode())
            self.wfile.flush()
            request = {}


class _PolicyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PolicyHandler)
        self.seen: set[tuple[str, str, str]] = set()
        self.lock = threading.Lock()

    def decide(self, request: dict[str, str]) -> str:
        recipient = request.get("recipient", "").lower()
        if not recipient.startswith("grey@"):
            return "DUNNO"
        triplet = (request.get("client_address", ""), request.get("sender", ""), recipient)
        with self.lock:
            if triplet in self.seen:
                return "DUNNO"
            self.seen.add(triplet)
        return f"DEFER_IF_PERMIT {GREYLISTED}"


@dataclass
class PostfixPeer:
    root: Path
    tls_port: int
    plain_port: int
    ca: trustme.CA
    policy: _PolicyServer
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.root / "etc"

    def mailbox(self, local: str) -> list[Path]:
        return maildir_files(self.root / "mail" / "peer.test" / local)

    def wait_mailbox(self, local: str, count: int, timeout: float = 15.0) -> list[Path]:
        return wait_maildir(self.root / "mail" / "peer.test" / local, count, timeout, self.log)

    def log(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


def _run(*args: str) -> None:
    # Postfix's commands write their errors to stderr only on a terminal, and to its log.
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}")


def _wait_port(port: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixPeer]:
    owner = pwd.getpwnam("postfix")
    root = Path(tempfile.mkdtemp(prefix="pochta-postfix-"))
    # Postfix's daemons run as postfix and must reach the mailbox root under it.
    os.chmod(root, 0o755)  # noqa: S103 -- a private mkdtemp directory, removed afterwards
    etc, mail, data, spool = (root / n for n in ("etc", "mail", "data", "spool"))
    for path in (etc, mail, data, spool):
        path.mkdir()
    os.chown(mail, owner.pw_uid, owner.pw_gid)
    os.chown(data, owner.pw_uid, owner.pw_gid)
    shutil.copy("/etc/postfix/master.cf", etc / "master.cf")
    if os.path.exists("/etc/postfix/dynamicmaps.cf"):
        shutil.copy("/etc/postfix/dynamicmaps.cf", etc / "dynamicmaps.cf")
        (etc / "dynamicmaps.cf.d").mkdir()
    ca = trustme.CA()
    leaf = ca.issue_cert("mx.peer.test")
    leaf.cert_chain_pems[0].write_to_path(str(etc / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(etc / "key.pem"))
    os.chmod(etc / "key.pem", 0o600)
    (etc / "vmailbox").write_text("bob@peer.test peer.test/bob/\ngrey@peer.test peer.test/grey/\n")
    (etc / "access").write_text("busy@peer.test 451 4.3.2 Mailbox busy, try again later\n")
    policy = _PolicyServer()
    threading.Thread(target=policy.serve_forever, daemon=True).start()
    tls_port, plain_port = free_port(), free_port()
    (etc / "main.cf").write_text(
        f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = mx.peer.test
mydomain = peer.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = peer.test
virtual_mailbox_base = {mail}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
smtpd_recipient_restrictions =
    check_recipient_access texthash:{etc}/access,
    check_policy_service inet:127.0.0.1:{policy.server_address[1]},
    permit_mynetworks, reject_unauth_destination
smtpd_tls_security_level = may
smtpd_tls_cert_file = {etc}/cert.pem
smtpd_tls_key_file = {etc}/key.pem
smtpd_tls_received_header = yes
"""
    )
    config = str(etc)
    _run(POSTCONF, "-c", config, "-F", "*/*/chroot = n")  # no copies of /etc in the queue
    _run(POSTCONF, "-c", config, "-MX", "smtp/inet")
    _run(
        POSTCONF,
        "-c",
        config,
        "-M",
        f"127.0.0.1:{tls_port}/inet=127.0.0.1:{tls_port} inet n - n - - smtpd",
    )
    _run(
        POSTCONF,
        "-c",
        config,
        "-M",
        f"127.0.0.1:{plain_port}/inet=127.0.0.1:{plain_port} inet n - n - - smtpd"
        " -o smtpd_tls_security_level=none",
    )
    peer = PostfixPeer(root, tls_port, plain_port, ca, policy)
    try:
        _run(POSTFIX, "-c", config, "check")
        _run(POSTFIX, "-c", config, "start")
        if not (_wait_port(tls_port) and _wait_port(plain_port)):
            pytest.fail(f"Postfix did not start listening; log:\n{peer.log()}")
        yield peer
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run(POSTFIX, "-c", config, "stop")
        policy.shutdown()
        policy.server_close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def zone() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE) as server:
        yield server


def agent_for(tmp_path: Path, zone: ZoneServer, port: int, **delivery: Any) -> RemoteAgent:
    settings = make_settings(
        {
            "server.hostname": "mail.pochta.test",
            "server.data_dir": str(tmp_path),
            "dns.nameservers": [zone.address],
            "dns.timeout_seconds": 2,
            "delivery.connect_timeout_seconds": 5,
            "delivery.command_timeout_seconds": 20,
            "delivery.smtp_port": port,
            **{f"delivery.{key}": value for key, value in delivery.items()},
        }
    )
    return RemoteAgent(settings)


async def deliver(agent: RemoteAgent, *addresses: str) -> dict[str, Any]:
    env = make_envelope(*addresses, sender=SENDER, queue_id=None, content=MESSAGE)
    attempts = await agent.deliver(env, env.recipients, MESSAGE, parse_transport("smtp:peer.test"))
    return {a.recipient_address: a for a in attempts}


def stored(path: Path) -> email.message.EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


async def test_postfix_takes_the_message_into_a_mailbox(
    tmp_path: Path, zone: ZoneServer, postfix: PostfixPeer
) -> None:
    before = len(postfix.mailbox("bob"))
    agent = agent_for(tmp_path, zone, postfix.plain_port)
    with capture_logs() as logs:
        got = await deliver(agent, "bob@peer.test")
    await agent.close()
    attempt = got["bob@peer.test"]
    assert attempt.outcome == "delivered", attempt.reply
    assert attempt.reply.startswith("250 2.0.0 Ok: queued as ")
    assert attempt.remote_mta == "mx.peer.test"
    [line] = [e for e in logs if e["event"] == "smtp_attempt"]
    assert (line["host"], line["ip"], line["tls"]) == (
        "mx.peer.test",
        f"127.0.0.1:{postfix.plain_port}",
        "none",
    )
    path = postfix.wait_mailbox("bob", before + 1)[-1]
    message = stored(path)
    assert message["Return-Path"] == f"<{SENDER}>"
    assert message["Subject"] == "to postfix"
    # Dot-stuffed on the wire (RFC 5321 §4.5.2), unstuffed by Postfix.
    assert message.get_content() == "Hello Bob.\n.A line that starts with a dot.\n"


async def test_postfix_replies_per_recipient_in_one_transaction(
    tmp_path: Path, zone: ZoneServer, postfix: PostfixPeer
) -> None:
    """Accepted, temporarily refused (access map 451) and unknown (550) recipients of one
    message: one transaction, and each recipient gets Postfix's own reply."""
    before = len(postfix.mailbox("bob"))
    agent = agent_for(tmp_path, zone, postfix.plain_port)
    got = await deliver(agent, "bob@peer.test", "busy@peer.test", "nobody@peer.test")
    await agent.close()
    assert got["bob@peer.test"].outcome == "delivered"
    busy = got["busy@peer.test"]
    assert busy.outcome == "deferred"
    assert busy.reply == (
        "451 4.3.2 <busy@peer.test>: Recipient address rejected: Mailbox busy, try again later"
    )
    nobody = got["nobody@peer.test"]
    assert nobody.outcome == "bounced"
    assert nobody.reply == (
        "550 5.1.1 <nobody@peer.test>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert nobody.remote_mta == "mx.peer.test"
    [path] = postfix.wait_mailbox("bob", before + 1)[before:]
    assert stored(path)["Delivered-To"] == "bob@peer.test"


async def test_greylisting_first_try_450_then_delivered(
    tmp_path: Path, zone: ZoneServer, postfix: PostfixPeer
) -> None:
    agent = agent_for(tmp_path, zone, postfix.plain_port)
    first = (await deliver(agent, "grey@peer.test"))["grey@peer.test"]
    assert first.outcome == "deferred"
    assert first.reply.startswith("450 4.7.1 <grey@peer.test>: Recipient address rejected: ")
    assert first.reply.endswith(GREYLISTED)
    assert postfix.mailbox("grey") == []
    second = (await deliver(agent, "grey@peer.test"))["grey@peer.test"]
    await agent.close()
    assert second.outcome == "delivered", second.reply
    postfix.wait_mailbox("grey", 1)


async def test_verified_tls_to_postfix(
    tmp_path: Path, zone: ZoneServer, postfix: PostfixPeer
) -> None:
    ca_file = tmp_path / "ca.pem"
    postfix.ca.cert_pem.write_to_path(str(ca_file))
    before = len(postfix.mailbox("bob"))
    agent = agent_for(
        tmp_path,
        zone,
        postfix.tls_port,
        tls_security_level="verify",
        tls_ca_file=str(ca_file),
    )
    with capture_logs() as logs:
        got = await deliver(agent, "bob@peer.test")
    await agent.close()
    assert got["bob@peer.test"].outcome == "delivered", got["bob@peer.test"].reply
    [line] = [e for e in logs if e["event"] == "smtp_attempt"]
    assert line["tls"].startswith("TLSv1.")
    assert line["tls_verified"] == "ca"
    path = postfix.wait_mailbox("bob", before + 1)[-1]
    received = str(stored(path)["Received"])
    assert f"(using {line['tls']} with cipher " in received  # Postfix saw the same session
    assert "with ESMTPS id " in received


async def test_tls_required_but_not_offered_defers(
    tmp_path: Path, zone: ZoneServer, postfix: PostfixPeer
) -> None:
    before = len(postfix.mailbox("bob"))
    agent = agent_for(tmp_path, zone, postfix.plain_port, tls_security_level="encrypt")
    attempt = (await deliver(agent, "bob@peer.test"))["bob@peer.test"]
    await agent.close()
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("451 4.7.4 ")
    assert "STARTTLS" in attempt.reply
    await asyncio.sleep(0.5)  # (nothing was sent: no copy may turn up late)
    assert len(postfix.mailbox("bob")) == before


async def test_verify_fails_against_an_unknown_ca(
    tmp_path: Path, zone: ZoneServer, postfix: PostfixPeer
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    agent = agent_for(
        tmp_path, zone, postfix.tls_port, tls_security_level="verify", tls_ca_file=str(other)
    )
    attempt = (await deliver(agent, "bob@peer.test"))["bob@peer.test"]
    await agent.close()
    assert attempt.outcome == "deferred"
    assert attempt.reply.startswith("4")
    assert "certificate" in attempt.reply.lower()


def test_server_relays_to_postfix_and_bounces_its_refusal(
    pochta_env: PochtaEnv, postfix: PostfixPeer
) -> None:
    """The whole server: `pochta sendmail` queues a message for a known and an unknown
    Postfix recipient, with Postfix as the relayhost. The known one's copy arrives signed
    (DKIM); the unknown one comes back to the sender as a DSN (RFC 3464) that carries
    Postfix's reply and names Postfix as the Remote-MTA."""
    sender = f"alice@{DOMAIN}"
    pochta_env.add_user(sender, "correct horse 1")
    set_key(pochta_env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{postfix.plain_port}"')
    before = len(postfix.mailbox("bob"))
    with serve(pochta_env.config_path) as server:
        message = f"From: {sender}\nTo: bob@peer.test, nobody@peer.test\nSubject: relayed\n\nHi.\n"
        pochta_env.run(
            "sendmail", "-f", sender, "bob@peer.test", "nobody@peer.test", input=message, check=True
        )
        server.wait_for("bounced")
        [path] = postfix.wait_mailbox("bob", before + 1)[before:]
        [dsn_path] = wait_files(pochta_env, "alice", 1)
    relayed = stored(path)
    assert relayed["Subject"] == "relayed"
    assert relayed["DKIM-Signature"] is not None
    assert f"d={DOMAIN}" in str(relayed["DKIM-Signature"]).replace(" ", "")
    text = dsn_status_text(dsn_path)
    assert "Final-Recipient: rfc822; nobody@peer.test" in text
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert "Remote-MTA: dns; 127.0.0.1" in text
    assert "User unknown in virtual mailbox table" in text
