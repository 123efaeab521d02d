"""Two pochta hosts, end to end: MX lookup, STARTTLS, DKIM, a reply, and a bounce.

Host A (mail.a.test, 10.77.0.1) and host B (mail.b.test, 10.77.0.2) each run in a network
namespace of their own; NSD, a real authoritative DNS server, serves both zones and the
reverse zone from a third namespace, with the records ``pochta dns`` prints. A user of A
submits mail to a user of B: A finds B by its MX record, delivers over STARTTLS, and the
message arrives with DKIM signatures that dkimpy and OpenDKIM's ``opendkim-testmsg`` verify.
The answer travels back the same way, and mail to a user B does not have comes back to the
sender as a delivery status notification (RFC 3464).
"""

from __future__ import annotations

import email
import email.policy
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from tests.harness import (
    ServeProcess,
    dsn_status_text,
    maildir_files,
    pochta_command,
    run_pochta,
    set_key,
    use_nameserver,
    wait_maildir,
)
from tests.integration.netns import Network, NsdServer, netns_available, zones_from_records

pytestmark = pytest.mark.root

REVERSE_ZONE = "0.77.10.in-addr.arpa"
PASSWORD = "two hosts 1"


@dataclass
class Host:
    name: str  # "a"
    domain: str  # "a.test"
    address: str
    data: Path
    server: ServeProcess | None = None

    @property
    def config(self) -> Path:
        return self.data / "pochta.toml"

    def mailbox(self, local: str) -> list[Path]:
        return maildir_files(self.data / "mail" / self.domain / local)

    def wait_mail(self, local: str, count: int, timeout: float = 30.0) -> list[Path]:
        folder = self.data / "mail" / self.domain / local
        return wait_maildir(folder, count, timeout, self._server_log)

    def _server_log(self) -> str:
        return "\n".join(self.server.lines[-40:]) if self.server else ""


def _init(host: Host, nameserver: str) -> str:
    proc = run_pochta(
        "init",
        "--data",
        str(host.data),
        "--hostname",
        f"mail.{host.domain}",
        "--domain",
        host.domain,
        "--bind",
        host.address,
    )
    assert proc.returncode == 0, proc.stderr
    set_key(host.config, "server", "processes", "1")
    use_nameserver(host.config, nameserver)
    for local in ("alice", "bob"):
        user = run_pochta(
            "--config",
            str(host.config),
            "user",
            "add",
            f"{local}@{host.domain}",
            "--password-stdin",
            input=PASSWORD + "\n",
        )
        assert user.returncode == 0, user.stderr
    records = run_pochta("--config", str(host.config), "dns", host.domain, "--ipv4", host.address)
    assert records.returncode == 0, records.stderr
    return records.stdout


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Network, Host, Host, str]]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    for tool in ("nsd", "swaks", "opendkim-testmsg"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is not installed (scripts/test-packages.txt installs it)")
    base = tmp_path_factory.mktemp("two-hosts")
    with Network(["a", "b"]) as net:
        a = Host("a", "a.test", net.addresses["a"], base / "a")
        b = Host("b", "b.test", net.addresses["b"], base / "b")
        text = _init(a, net.dns_address) + _init(b, net.dns_address)
        zones = zones_from_records(text, ["a.test", "b.test", REVERSE_ZONE])
        with NsdServer(net, base / "nsd", zones):
            servers = []
            try:
                for host in (a, b):
                    proc = net.popen(
                        host.name,
                        *pochta_command("--config", str(host.config), "serve"),
                        stdout=sys.stderr,
                        stderr=-1,  # subprocess.PIPE
                        text=True,
                    )
                    host.server = ServeProcess(proc)
                    servers.append(proc)
                    host.server.wait_for("ready")
                yield net, a, b, text
            finally:
                for proc in servers:
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait(10)


def submit(net: Network, host: Host, sender: str, to: str, subject: str) -> None:
    """A user of ``host`` submits a message over port 587 with STARTTLS and AUTH (swaks,
    run inside the host's namespace)."""
    proc = net.run(
        host.name,
        "swaks",
        "--server",
        f"{host.address}:587",
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        sender,
        "--auth-password",
        PASSWORD,
        "--from",
        sender,
        "--to",
        to,
        "--header",
        f"Subject: {subject}",
        "--body",
        f"This is {subject}.",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dns_txt(records: str) -> dict[str, bytes]:
    """TXT records by owner name from ``pochta dns`` output (for dkimpy's dnsfunc)."""
    out: dict[str, bytes] = {}
    for line in records.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[3] == "TXT" and not line.startswith(";"):
            chunks = [c for c in parts[4].split('"') if c.strip()]
            out[parts[0].rstrip(".").lower()] = "".join(chunks).encode()
    return out


def test_mail_crosses_hosts_signed_over_tls_and_back(
    hosts: tuple[Network, Host, Host, str],
) -> None:
    net, a, b, records = hosts
    submit(net, a, "alice@a.test", "bob@b.test", "hello from a")
    [arrived] = b.wait_mail("bob", 1)
    raw = arrived.read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "hello from a"
    # B's Received field: from A (its HELO name) with STARTTLS (RFC 3848 ESMTPS).
    received = " ".join(message.get_all("Received") or [])
    assert "mail.a.test" in received, received
    assert "ESMTPS" in received, received

    # Both signatures (RSA and Ed25519) verify with dkimpy against the published keys ...
    txt = dns_txt(records)
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    signatures = message.get_all("DKIM-Signature") or []
    algorithms = {s.split("a=")[1].split(";")[0].strip() for s in map(str, signatures)}
    assert algorithms == {"rsa-sha256", "ed25519-sha256"}, signatures
    for index in range(len(signatures)):
        verifier = dkim.DKIM(wire)
        assert verifier.verify(
            idx=index, dnsfunc=lambda name, timeout=5: txt.get(name.decode().rstrip(".").lower())
        ), f"signature {index} does not verify"
    # ... and with OpenDKIM, asking NSD from inside host B.
    opendkim = net.run(b.name, "opendkim-testmsg", input=raw.decode("utf-8", "replace"))
    assert opendkim.returncode == 0, opendkim.stdout + opendkim.stderr

    # A's log names B's MX host and the TLS it used.
    assert a.server is not None
    attempt = a.server.wait_for("smtp_attempt")
    assert attempt.get("host") == "mail.b.test", attempt
    assert str(attempt.get("tls", "")).startswith("TLS"), attempt

    # The reply travels back the same way.
    submit(net, b, "bob@b.test", "alice@a.test", "re: hello from a")
    [reply] = a.wait_mail("alice", 1)
    back = email.message_from_bytes(reply.read_bytes(), policy=email.policy.default)
    assert back["Subject"] == "re: hello from a"
    assert back.get_all("DKIM-Signature")


def test_mail_to_an_unknown_user_comes_back_as_a_dsn(
    hosts: tuple[Network, Host, Host, str],
) -> None:
    net, a, _, _ = hosts
    before = len(a.mailbox("bob"))
    submit(net, a, "bob@a.test", "nobody@b.test", "to nobody")
    files = a.wait_mail("bob", before + 1)
    text = dsn_status_text(files[-1])
    assert "nobody@b.test" in text
    assert "Status: 5.1.1" in text
    assert "Action: failed" in text
    assert "mail.b.test" in text  # Remote-MTA


def test_mail_from_the_sendmail_command_leaves_signed(
    hosts: tuple[Network, Host, Host, str],
) -> None:
    """``pochta sendmail`` queues without cleanup's signer (it runs as any local user); the
    server signs such mail as it leaves, so it verifies at B like a submission."""
    net, a, b, records = hosts
    before = len(b.mailbox("alice"))
    message = (
        "From: Alice <alice@a.test>\r\nTo: alice@b.test\r\nSubject: from cron\r\n"
        "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMessage-ID: <cron-1@a.test>\r\n\r\n"
        "The nightly job ran.\r\n"
    )
    proc = net.run(
        a.name,
        *pochta_command(
            "--config", str(a.config), "sendmail", "-f", "alice@a.test", "alice@b.test"
        ),
        input=message,
    )
    assert proc.returncode == 0, proc.stderr
    files = b.wait_mail("alice", before + 1)
    raw = files[-1].read_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "from cron"
    signatures = parsed.get_all("DKIM-Signature") or []
    assert len(signatures) == 2, signatures
    txt = dns_txt(records)
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for index in range(len(signatures)):
        assert dkim.DKIM(wire).verify(
            idx=index, dnsfunc=lambda name, timeout=5: txt.get(name.decode().rstrip(".").lower())
        ), f"signature {index} does not verify"
