"""DKIM signing end to end: the real `pochta serve` signs what a user submits on port 587
(STARTTLS + AUTH); the delivered and the queued copies verify with dkimpy and with OpenDKIM
(opendkim-testmsg), against keys published by a real DNS server on loopback; and
`pochta dkim retire` refuses while a queued message is signed with the selector.

OpenDKIM's ``opendkim-testmsg`` has no option for a nameserver or a config file (``-C`` only
keeps CRLFs): libopendkim asks the system resolver, which reads ``/etc/resolv.conf`` and
talks to port 53. So the test runs it in a private mount namespace (``unshare --mount``) where
``/etc/resolv.conf`` is bind-mounted over by a file naming a random 127.x.y.z address, and a
UDP relay on that address, port 53, forwards to the test's ZoneServer. Nothing leaves
loopback and nothing outside that one process sees the changed file. It needs root (a mount
namespace, port 53); without it the OpenDKIM checks are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import smtplib
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.exception
import dns.resolver
import pytest
from dkim.util import parse_tag_value

from pochta.checks import load_checked_settings
from pochta.mime.headers import SplitMessage, split_message
from pochta.queue.spool import Spool
from tests.dnsserver import ZoneServer
from tests.harness import (
    DOMAIN,
    PochtaEnv,
    ServeProcess,
    client_tls,
    serve,
    set_key,
    use_nameserver,
    wait_files,
)

PASSWORD = "correct horse 1"
IPV4 = "192.0.2.10"
OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"
SHOW_LINE = re.compile(r"^(\S+)  (rsa-sha256|ed25519-sha256)  (active|published \(not signing\))")
REMOTE = "carol@elsewhere.example"


def selectors(env: PochtaEnv) -> dict[str, tuple[str, bool]]:
    """selector -> (algorithm, active), from `pochta dkim show`."""
    out = env.run("dkim", "show", DOMAIN, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = SHOW_LINE.match(line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3) == "active")
    return found


def zone_text(env: PochtaEnv) -> str:
    """What `pochta dns` tells the admin to publish, plus an MX for the remote domain."""
    zone = env.run("dns", DOMAIN, "--ipv4", IPV4, check=True).stdout
    return zone + (
        "elsewhere.example. 300 IN MX 10 mx.elsewhere.example.\n"
        "mx.elsewhere.example. 300 IN A 127.0.0.1\n"
    )


def submit(env: PochtaEnv, to: str, subject: str) -> None:
    """alice submits on port 587: STARTTLS, AUTH, then one message (no Date/Message-ID:
    cleanup adds them for submissions)."""
    message = (
        f"From: Alice <alice@{DOMAIN}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Hello,\r\n\r\nthe keys are in the usual place.  \r\n\r\n-- \r\nAlice\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", env.ports["submission"], timeout=20) as c:
        c.starttls(context=client_tls())
        c.login(f"alice@{DOMAIN}", PASSWORD)
        c.sendmail(f"alice@{DOMAIN}", [to], message)


def signature_tags(content: bytes) -> list[dict[bytes, bytes]]:
    return [
        parse_tag_value(re.sub(rb"\r?\n", b"", h.value))
        for h in split_message(content).get_all("dkim-signature")
    ]


def only_signature(content: bytes, index: int) -> bytes:
    """The message with just its index-th DKIM-Signature (to verify each on its own: a
    verifier passes a message when any one signature passes)."""
    message = split_message(content)
    kept = []
    seen = 0
    for h in message.headers:
        if h.key == "dkim-signature":
            seen += 1
            if seen - 1 != index:
                continue
        kept.append(h)
    return SplitMessage(tuple(kept), message.separator, message.body).join()


def crlf(maildir_bytes: bytes) -> bytes:
    """A Maildir file (LF line ends, as Dovecot writes) as it travels on the wire."""
    assert b"\r" not in maildir_bytes
    return maildir_bytes.replace(b"\n", b"\r\n")


def dkimpy_verdicts(content: bytes, resolver: dns.resolver.Resolver) -> list[bool]:
    """dkimpy's verdict on each signature; keys come from real DNS queries."""

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(rdata.strings) for rdata in answer)

    verdicts = []
    for i in range(len(signature_tags(content))):
        try:
            verdicts.append(bool(dkim.DKIM(content).verify(idx=i, dnsfunc=txt)))
        except dkim.DKIMException:
            verdicts.append(False)
    return verdicts


# -- OpenDKIM behind a loopback resolver --------------------------------------------------------


class LoopbackResolver:
    """A UDP relay from a random 127.x.y.z:53 to a ZoneServer, and a resolv.conf naming it."""

    def __init__(self, zone: ZoneServer, directory: Path) -> None:
        self.zone = zone
        self.resolv_conf = directory / "resolv.conf"
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackResolver:
        rng = random.Random()
        for _ in range(50):
            address = f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}"
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((address, 53))
            except OSError:
                sock.close()
                continue
            break
        else:
            raise OSError("no 127.0.0.0/8 address with port 53 free")
        sock.settimeout(0.2)
        self._sock = sock
        # edns0: answers up to 1200 octets over UDP, so a 2048-bit RSA key needs no TCP.
        self.resolv_conf.write_text(
            f"nameserver {address}\noptions edns0 timeout:2 attempts:2\n", encoding="ascii"
        )
        self._thread = threading.Thread(target=self._relay, name="dns-relay", daemon=True)
        self._thread.start()
        return self

    def _relay(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                query, client = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
                upstream.settimeout(2)
                try:
                    upstream.sendto(query, (self.zone.host, self.zone.port))
                    answer = upstream.recv(65535)
                except OSError:
                    continue
            with contextlib.suppress(OSError):
                self._sock.sendto(answer, client)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def opendkim_verify(self, content: bytes) -> subprocess.CompletedProcess[bytes]:
        """opendkim-testmsg on ``content`` (exit 0: the signature verifies)."""
        script = 'mount --bind "$1" /etc/resolv.conf && exec "$2"'
        unshare = ["unshare", "--mount", "--propagation", "private"]
        return subprocess.run(
            [*unshare, "sh", "-c", script, "sh", str(self.resolv_conf), OPENDKIM_TESTMSG],
            input=content,
            capture_output=True,
            timeout=60,
            check=False,
        )


def _opendkim_unavailable() -> str:
    if not os.path.exists(OPENDKIM_TESTMSG):
        return f"{OPENDKIM_TESTMSG} is not installed (Debian package opendkim-tools)"
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    if os.geteuid() != 0:
        return "needs root: a private mount namespace and a resolver on port 53"
    return ""


@dataclass
class Setup:
    env: PochtaEnv
    server: ServeProcess
    zone: ZoneServer
    opendkim: LoopbackResolver | None
    opendkim_missing: str

    def check_opendkim(self, content: bytes) -> None:
        """Each signature alone verifies with OpenDKIM, and a changed body fails."""
        if self.opendkim is None:
            pytest.skip(self.opendkim_missing)
        for i in range(len(signature_tags(content))):
            single = only_signature(content, i)
            good = self.opendkim.opendkim_verify(single)
            assert good.returncode == 0, good.stderr.decode()
            bad = self.opendkim.opendkim_verify(single.replace(b"usual place", b"other place"))
            assert bad.returncode != 0
            assert b"Bad signature" in bad.stderr


@pytest.fixture
def setup(pochta_env: PochtaEnv, tmp_path: Path) -> Iterator[Setup]:
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    # Remote mail must wait in the queue: every way out leads to a closed loopback port
    # (bound, never listening: connection refused, and no one else can take the port).
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    with contextlib.ExitStack() as stack:
        stack.callback(closed.close)
        zone = stack.enter_context(ZoneServer(zone_text(env), origin="."))
        use_nameserver(env.config_path, zone.address)
        set_key(env.config_path, "delivery", "relayhost", f'"[127.0.0.1]:{port}"')
        set_key(env.config_path, "delivery", "smtp_port", str(port))
        set_key(env.config_path, "delivery", "connect_timeout_seconds", "2.0")
        missing = _opendkim_unavailable()
        relay = None
        if not missing:
            try:
                relay = LoopbackResolver(zone, tmp_path).start()
            except OSError as exc:
                missing = f"cannot serve DNS on 127.0.0.0/8 port 53: {exc}"
            else:
                stack.callback(relay.stop)
        server = stack.enter_context(serve(env.config_path))
        yield Setup(env, server, zone, relay, missing)


# -- the tests ----------------------------------------------------------------------------------


def test_submitted_mail_is_signed_and_verifies(setup: Setup) -> None:
    env, server = setup.env, setup.server
    active = selectors(env)
    submit(env, f"bob@{DOMAIN}", "keys")
    (path,) = wait_files(env, "bob", 1)
    content = crlf(path.read_bytes())
    tags = signature_tags(content)
    assert [t[b"a"] for t in tags] == [b"rsa-sha256", b"ed25519-sha256"]
    assert {t[b"s"].decode(): t[b"a"].decode() for t in tags} == {
        name: algorithm for name, (algorithm, _) in active.items()
    }
    for t in tags:
        assert t[b"d"] == DOMAIN.encode()
        assert t[b"c"] == b"relaxed/relaxed"
        signed = [n.strip() for n in t[b"h"].split(b":")]
        assert signed.count(b"from") == 2  # over-signed (RFC 6376 §8.15)
    logged = server.wait_for("dkim_signed")
    assert logged["domain"] == DOMAIN
    assert sorted(logged["selectors"].split(",")) == sorted(active)

    # dkimpy fetches the keys from the DNS server publishing `pochta dns` output.
    resolver = setup.zone.resolver()
    assert dkimpy_verdicts(content, resolver) == [True, True]
    assert dkimpy_verdicts(b"From: mallory@example.test\r\n" + content, resolver) == [
        False,
        False,
    ]
    assert any(name.endswith("._domainkey.example.test.") for name, _ in setup.zone.queries)
    setup.check_opendkim(content)


def test_mail_from_outside_is_not_signed(setup: Setup) -> None:
    env = setup.env
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=20) as c:
        # Even with a hosted From: MX traffic is never signed (not a submission).
        c.sendmail(
            "carol@remote.example",
            [f"bob@{DOMAIN}"],
            b"From: alice@example.test\r\nSubject: not from us\r\n\r\nhi\r\n",
        )
    (path,) = wait_files(env, "bob", 1)
    assert b"DKIM-Signature" not in path.read_bytes()
    assert setup.server.events("dkim_signed") == []


def _queued_content(env: PochtaEnv, queue_id: str) -> bytes:
    spool = Spool(load_checked_settings(env.config_path, check_files=False).spool_dir, create=False)
    try:
        return asyncio.run(spool.read_content(queue_id))
    finally:
        spool.close()


def test_retire_refuses_while_signed_mail_is_queued(setup: Setup) -> None:
    env, server = setup.env, setup.server
    old = selectors(env)
    submit(env, REMOTE, "stays queued")
    queue_id = server.wait_for("queued")["queue_id"]
    queued = _queued_content(env, queue_id)
    assert dkimpy_verdicts(queued, setup.zone.resolver()) == [True, True]

    rotated = env.run("dkim", "rotate", DOMAIN, check=True)
    assert "no longer sign" in rotated.stdout
    for name in old:
        refused = env.run("dkim", "retire", DOMAIN, name)
        assert refused.returncode == 1, refused.stdout
        assert (
            f"1 queued message(s) signed with selector {name} of {DOMAIN} still wait for "
            f"delivery: {queue_id};"
        ) in refused.stderr
        assert "--force" in refused.stderr
    assert set(old) <= set(selectors(env))  # nothing was removed

    # The server reads the selectors per message: new mail is signed with the new keys.
    submit(env, f"bob@{DOMAIN}", "after rotation")
    (path,) = wait_files(env, "bob", 1)
    new_names = {t[b"s"].decode() for t in signature_tags(crlf(path.read_bytes()))}
    assert new_names == {name for name, (_, active) in selectors(env).items() if active}
    assert not new_names & set(old)
    setup.zone.load(zone_text(env))  # publish the new keys
    assert dkimpy_verdicts(crlf(path.read_bytes()), setup.zone.resolver()) == [True, True]

    # The queued copy still verifies with OpenDKIM while its keys are published.
    if setup.opendkim is not None:
        setup.check_opendkim(queued)

    old_rsa = next(n for n, (a, _) in old.items() if a == "rsa-sha256")
    old_ed = next(n for n, (a, _) in old.items() if a == "ed25519-sha256")
    forced = env.run("dkim", "retire", DOMAIN, old_rsa, "--force", check=True)
    assert f"Retired {old_rsa}" in forced.stdout
    # Once the message has left the queue, retire needs no --force.
    env.run("queue", "delete", queue_id, check=True)
    env.run("dkim", "retire", DOMAIN, old_ed, check=True)
    assert not set(old) & set(selectors(env))
