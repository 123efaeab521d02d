"""Issue 14 end to end on three hosts: forged mail refused, SPF/DKIM/DMARC pass between
hosts, a forward that keeps passing (SRS + ARC), and a failed forward that reaches the
original sender.

Host A (mail.a.test, 10.77.0.1), B (mail.b.test, 10.77.0.2) and C (mail.c.test, 10.77.0.3)
each run the real ``pochta serve`` in a network namespace of their own, with the inbound
checks on (``pochta init``'s default) and NSD serving the zones ``pochta dns`` prints for each
host (as ``test_two_hosts.py`` does, whose helpers are used here). C's address is in no SPF
record but c.test's, so a message sent from C with ``From: alice@a.test`` is a forgery. Last,
A's DMARC aggregate report about b.test mail reaches B and is summarised there.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from tests.harness import ServeProcess, dsn_status_text, pochta_command, run_pochta
from tests.integration.netns import Network, NsdServer, netns_available, zones_from_records
from tests.integration.test_two_hosts import PASSWORD, REVERSE_ZONE, Host, _init, dns_txt, submit

pytestmark = pytest.mark.root

FORWARD = "fwd@b.test"  # B's alias to carol@c.test
LOST = "lost@b.test"  # B's alias to a user C does not have
HOP = "hop@b.test"  # B's alias to RELAY
RELAY = "relay@c.test"  # C's alias to a user A does not have: C accepts, then bounces


@dataclass
class Trust:
    net: Network
    a: Host
    b: Host
    c: Host
    records: str  # every zone line served, after the DMARC rewrite


def _pochta(host: Host, *args: str, input: str | None = None) -> None:
    proc = run_pochta("--config", str(host.config), *args, input=input)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _reject_dmarc(lines: list[str], domain: str) -> list[str]:
    """``pochta dns`` prints ``p=quarantine`` (a safe start for a new domain); the forgery
    case needs a domain whose owner asks for rejection (RFC 7489 §6.3 ``p=reject``), so the
    test publishes that for a.test instead, as an owner would once the reports are clean."""
    owner = f"_dmarc.{domain}."
    out = []
    for line in lines:
        if line.split()[0].lower() == owner:
            assert "p=quarantine" in line, line
            line = line.replace("p=quarantine", "p=reject")
        out.append(line)
    assert out != lines, f"no DMARC record for {domain} in {lines}"
    return out


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trust]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    for tool in ("nsd", "swaks"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is not installed (scripts/test-packages.txt installs it)")
    base = tmp_path_factory.mktemp("trust-hosts")
    with Network(["a", "b", "c"]) as net:
        a = Host("a", "a.test", net.addresses["a"], base / "a")
        b = Host("b", "b.test", net.addresses["b"], base / "b")
        c = Host("c", "c.test", net.addresses["c"], base / "c")
        text = "".join(_init(host, net.dns_address) for host in (a, b, c))
        _pochta(c, "user", "add", "carol@c.test", "--password-stdin", input=PASSWORD + "\n")
        _pochta(b, "alias", "add", FORWARD, "carol@c.test")
        _pochta(b, "alias", "add", LOST, "nobody@c.test")
        _pochta(b, "alias", "add", HOP, RELAY)
        _pochta(c, "alias", "add", RELAY, "ghost@a.test")
        zones = zones_from_records(text, ["a.test", "b.test", "c.test", REVERSE_ZONE])
        zones["a.test"] = _reject_dmarc(zones["a.test"], "a.test")
        served = "\n".join(line for lines in zones.values() for line in lines)
        with NsdServer(net, base / "nsd", zones):
            servers = []
            try:
                for host in (a, b, c):
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
                yield Trust(net, a, b, c, served)
            finally:
                for proc in servers:
                    if proc.poll() is None:
                        proc.kill()
                    proc.wait(10)


def parse(path: Path) -> email.message.EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def results_of(message: email.message.EmailMessage, authserv_id: str) -> list[str]:
    """The Authentication-Results values whose authserv-id (RFC 8601 §2.2) is ours."""
    values = [" ".join(str(v).split()) for v in message.get_all("Authentication-Results") or []]
    return [v for v in values if v.split(";")[0].strip() == authserv_id]


def test_forged_mail_from_a_reject_domain_is_refused_at_data(trust: Trust) -> None:
    net, b = trust.net, trust.b
    before = len(b.mailbox("bob"))
    proc = net.run(
        "c",
        "swaks",
        "--server",
        f"{b.address}:25",
        "--helo",
        "mail.c.test",
        "--from",
        "alice@a.test",
        "--to",
        "bob@b.test",
        "--header",
        "From: Alice <alice@a.test>",
        "--header",
        "Subject: forged",
        "--body",
        "Please wire the money.",
    )
    assert proc.returncode != 0, proc.stdout
    refusals = [x for x in proc.stdout.splitlines() if x.startswith("<** ")]
    # RFC 7489 §6.7: p=reject, SPF fail (C's IP is not in a.test's record), no DKIM.
    assert refusals, proc.stdout
    assert refusals[-1].startswith("<** 550 5.7.1"), proc.stdout
    # Refused at the end of DATA: the reply follows the final dot (RCPT was accepted).
    assert proc.stdout.split("<** 550")[0].splitlines()[-1].strip() == "-> .", proc.stdout
    assert "<-  250 2.1.5" in proc.stdout, proc.stdout
    assert "DMARC" in refusals[-1], refusals
    assert len(b.mailbox("bob")) == before


def test_mail_from_a_passes_spf_dkim_and_dmarc_at_b(trust: Trust) -> None:
    net, a, b = trust.net, trust.a, trust.b
    before = len(b.mailbox("bob"))
    submit(net, a, "alice@a.test", "bob@b.test", "signed by a")
    files = b.wait_mail("bob", before + 1)
    message = parse(files[-1])
    assert message["Subject"] == "signed by a"
    [results] = results_of(message, "mail.b.test")
    assert "spf=pass smtp.mailfrom=alice@a.test;" in results, results
    assert "dkim=pass header.d=a.test" in results, results
    assert "dmarc=pass header.from=a.test" in results, results


def test_forwarded_mail_arrives_with_srs_and_an_arc_chain_that_passes(trust: Trust) -> None:
    net, a, c = trust.net, trust.a, trust.c
    before = len(c.mailbox("carol"))
    submit(net, a, "alice@a.test", FORWARD, "forwarded by b")
    files = c.wait_mail("carol", before + 1)
    raw = files[-1].read_bytes()
    message = parse(files[-1])
    assert message["Subject"] == "forwarded by b"

    # The envelope sender C saw is B's SRS0 address for alice@a.test (srs.domain is empty:
    # B's host name).
    return_path = str(message["Return-Path"]).strip("<>")
    local, _, domain = return_path.rpartition("@")
    assert domain == "mail.b.test", return_path
    assert local.startswith("SRS0="), return_path
    assert local.lower().endswith("=a.test=alice"), return_path

    # One ARC set, i=1, sealed by B with the key the signer finds for its host name: the
    # hosted domain above it (mail.b.test has no key of its own), the one pochta dns published.
    seals = [str(v) for v in message.get_all("ARC-Seal") or []]
    assert len(seals) == 1, seals
    tags = dict(
        (k.strip(), v.strip())
        for k, _, v in (t.partition("=") for t in "".join(seals[0].split()).split(";"))
    )
    assert tags["i"] == "1", seals
    assert tags["cv"] == "none", seals
    assert tags["d"] == "b.test", seals

    # C's verdict: SPF passes for the SRS sender (mail.b.test's HELO record covers B),
    # A's DKIM signature survived the forward, DMARC passes by it, and B's ARC set verifies.
    [results] = results_of(message, "mail.c.test")
    assert f"spf=pass smtp.mailfrom={return_path};" in results, results
    assert "dkim=pass header.d=a.test" in results, results
    assert "dmarc=pass header.from=a.test" in results, results
    assert "arc=pass" in results, results

    # dkimpy verifies the chain against the published TXT records.
    txt = dns_txt(trust.records)
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    cv, chain, why = dkim.arc_verify(
        wire, dnsfunc=lambda name, timeout=5: txt.get(name.decode().rstrip(".").lower())
    )
    assert cv == dkim.CV_Pass, why
    assert [r["instance"] for r in chain] == [1], chain


def test_a_forward_that_fails_at_c_comes_back_to_the_original_sender(trust: Trust) -> None:
    net, a = trust.net, trust.a
    before = len(a.mailbox("alice"))
    submit(net, a, "alice@a.test", LOST, "forwarded to nobody")
    files = a.wait_mail("alice", before + 1)
    text = dsn_status_text(files[-1])
    # C refuses nobody@c.test at RCPT: B, which queued the message with alice's envelope
    # sender, reports the failure to her; had C accepted and bounced, the DSN would have gone
    # to B's SRS address and B would have relayed it to her.
    assert "nobody@c.test" in text, text
    assert "Action: failed" in text, text
    assert "Status: 5.1.1" in text, text
    assert "Reporting-MTA: dns; mail.b.test" in text, text
    assert "Remote-MTA: dns; mail.c.test" in text, text
    dsn = parse(files[-1])
    assert "forwarded to nobody" in dsn.as_string()


def test_a_bounce_to_b_s_srs_address_is_relayed_to_the_original_sender(trust: Trust) -> None:
    """C accepts the forwarded message (RELAY is an alias of its own), then fails to pass it
    on (A has no ghost@a.test): C's DSN goes to the envelope sender it was given, B's SRS0
    address, and B decodes that address and relays the DSN to alice@a.test."""
    net, a, b = trust.net, trust.a, trust.b
    before = len(a.mailbox("alice"))
    submit(net, a, "alice@a.test", HOP, "forwarded twice")
    files = a.wait_mail("alice", before + 1)
    text = dsn_status_text(files[-1])
    assert "ghost@a.test" in text, text
    assert "Action: failed" in text, text
    assert "Status: 5.1.1" in text, text
    assert "Reporting-MTA: dns; mail.c.test" in text, text  # C made it, not B
    dsn = parse(files[-1])
    assert str(dsn["Return-Path"]) == "<>"
    assert "forwarded twice" in dsn.as_string()
    # B received it from C at an SRS0 address it had given out as an envelope sender.
    received = [" ".join(str(v).split()) for v in dsn.get_all("Received") or []]
    at_b = [r for r in received if "by mail.b.test" in r]
    assert len(at_b) == 1, received
    assert at_b[0].startswith("from mail.c.test"), at_b
    target = at_b[0].split(" for <")[1].split(">")[0].lower()
    assert target.startswith("srs0="), at_b
    assert target.endswith("=a.test=alice@mail.b.test"), at_b
    assert b.server is not None
    given = {r["mail_from"].lower() for r in b.server.events("srs_rewrite")}
    assert target in given, (target, given)


def test_a_dmarc_report_from_a_about_b_is_received_and_summarised_on_b(trust: Trust) -> None:
    """RFC 7489 §7.2 both ways: A checks a message from b.test (whose record, as ``pochta
    dns`` prints it, says rua=mailto:dmarc-reports@b.test), sends its aggregate report, and B
    stores it (the alias dmarc-reports@b.test -> report:dmarc) and summarises it."""
    net, a, b = trust.net, trust.a, trust.b
    assert "rua=mailto:dmarc-reports@b.test" in trust.records
    before = len(a.mailbox("alice"))
    submit(net, b, "bob@b.test", "alice@a.test", "for the report")
    a.wait_mail("alice", before + 1)
    # Inside A's namespace: the report job's DNS is NSD on the test network.
    # The evaluation is reported once it is older than the recorder's batch delay.
    command = pochta_command("--config", str(a.config), "report", "send", "--dmarc")
    deadline = time.monotonic() + 30
    while True:
        sent = net.run("a", *command)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        if "queued" in sent.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "queued: b.test to dmarc-reports@b.test" in sent.stdout, sent.stdout
    sources: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        proc = run_pochta("--config", str(b.config), "report", "dmarc", "--json", "--days", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        sources = {s["source_ip"]: s for s in json.loads(proc.stdout)["sources"]}
        if sources:
            break
        time.sleep(0.2)
    assert b.address in sources, sources
    row = sources[b.address]
    assert row["orgs"] == ["mail.a.test"]
    assert row["messages"] == row["pass"]
    assert row["fail"] == 0
