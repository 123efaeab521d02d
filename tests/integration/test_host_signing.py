"""The host name's own DKIM keys (issue 13, point 2): when no hosted domain contains the host
name (``mx.provider.test`` serving ``example.test``), `pochta init` gives it a signing-only
directory entry with keys, the notices it sends as ``MAILER-DAEMON@mx.provider.test`` are
signed with ``d=mx.provider.test``, `pochta dns` prints the host name's records in a section
of their own, and local mail to the host name (postmaster@, root@) still goes where it went.

Real `pochta` commands and `pochta serve`; the outside MX is an aiosmtpd sink on loopback and
the records `pochta dns` prints are served by a DNS server on loopback (tests/dnsserver.py),
so dkimpy verifies the bounce against what an admin would publish (as tests/integration/
test_pickup.py does for a host name under the domain).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.zone
import pytest
from aiosmtpd.controller import Controller

from pochta.mime.headers import split_message
from tests.dnsserver import ZoneServer
from tests.harness import (
    DOMAIN,
    STANDARD_PORTS,
    PochtaEnv,
    free_port_base,
    make_pochta_env,
    run_pochta,
    serve,
    set_key,
    wait_maildir,
)
from tests.integration.test_dkim_signing import dkimpy_verdicts, signature_tags
from tests.integration.test_remote_agent import Sink, free_port

HOST = "mx.provider.test"
OUTSIDE = "carol@elsewhere.example"
IPV4 = "192.0.2.10"
PASSWORD = "correct horse 1"
SECTION = f"; ===== The mail host {HOST}: its own records, in the zone of {HOST} ====="
SHOW_LINE = re.compile(r"^(\S+)  (rsa-sha256|ed25519-sha256)  (active|published \(not signing\))")


# The doctor runs too; its MTA-STS fetch would leave loopback (IPV4 is TEST-NET).
NO_FETCH = ("--skip", "mta-sts")


def _selectors(env: PochtaEnv, domain: str) -> dict[str, str]:
    """selector -> algorithm, from `pochta dkim show`."""
    out = env.run("dkim", "show", domain, check=True).stdout
    return {m.group(1): m.group(2) for m in map(SHOW_LINE.match, out.splitlines()) if m}


def _domain_lines(env: PochtaEnv) -> dict[str, str]:
    out = env.run("domain", "list", check=True).stdout
    return {line.split()[0]: line for line in out.splitlines()}


def _zone(env: PochtaEnv, domain: str = DOMAIN) -> str:
    return env.run("dns", domain, "--ipv4", IPV4, check=True).stdout


@pytest.fixture
def env(tmp_path: Path) -> PochtaEnv:
    return make_pochta_env(tmp_path / "data", hostname=HOST)


# -- init, domain list, dns -------------------------------------------------------------------


def test_init_makes_the_host_name_keys_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = free_port_base()
    proc = run_pochta(
        "init",
        *("--data", str(data), "--hostname", HOST, "--domain", DOMAIN),
        *("--port-base", str(base), "--bind", "127.0.0.1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"host name        {HOST} is not in {DOMAIN}: it has DKIM keys of its own" in proc.stdout
    assert f"signed with d={HOST}" in proc.stdout
    key_lines = [line for line in proc.stdout.splitlines() if f"/dkim/{HOST}/" in line]
    assert len(key_lines) == 2
    env = PochtaEnv(data, data / "pochta.toml", base)
    assert sorted(_selectors(env, HOST).values()) == ["ed25519-sha256", "rsa-sha256"]
    lines = _domain_lines(env)
    assert lines[DOMAIN].split()[1] == "enabled"
    assert lines[HOST].split()[1:4] == ["signing-only", "accounts=0", "aliases=0"]
    assert "dkim=-" not in lines[HOST]


def test_init_under_the_domain_makes_no_host_entry(pochta_env: PochtaEnv) -> None:
    # mail.example.test is under example.test, whose keys sign its notices (test_pickup).
    assert list(_domain_lines(pochta_env)) == [DOMAIN]
    assert "=====" not in _zone(pochta_env)


def test_dns_prints_the_host_name_section_and_checks_it(env: PochtaEnv) -> None:
    sels = _selectors(env, HOST)
    text = _zone(env)
    head, _, section = text.partition(SECTION + "\n")
    assert section, text
    for name, algorithm in sels.items():
        k = "rsa" if algorithm == "rsa-sha256" else "ed25519"
        assert f'{name}._domainkey.{HOST}. 3600 IN TXT "v=DKIM1; k={k}; p=' in section
        assert f"{name}._domainkey.{HOST}." not in head
    # RFC 7208 §2.3: the HELO record, once, in the host name's section.
    helo = f'{HOST}. 3600 IN TXT "v=spf1 a -all"'
    assert text.count(helo) == 1
    assert helo in section
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
    assert zone.get_rdataset(f"{HOST}.", "MX") is None
    assert zone.get_rdataset(f"{DOMAIN}.", "MX") is not None

    # `pochta dns HOST`: the host name's records, none of a mail domain.
    own = _zone(env, HOST)
    assert own.startswith(f"; DNS records for {HOST}, which only signs the mail host's notices")
    own_zone = dns.zone.from_text(own, origin=".", relativize=False, check_origin=False)
    assert own_zone.get_rdataset(f"{HOST}.", "A") is not None
    assert own.count(helo) == 1
    for name in sels:
        assert own_zone.get_rdataset(f"{name}._domainkey.{HOST}.", "TXT") is not None
    names = {n.to_text() for n in own_zone.nodes}
    for absent in ("_dmarc", "_mta-sts", "mta-sts", "_smtp._tls", "autoconfig", "_imaps._tcp"):
        assert f"{absent}.{HOST}." not in names
    assert own_zone.get_rdataset(f"{HOST}.", "MX") is None

    with ZoneServer(text, origin=".") as server:
        proc = env.run(
            "dns", DOMAIN, "--ipv4", IPV4, "--check", "--nameserver", server.address, *NO_FETCH
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for name in sels:
            assert f"OK         {name}._domainkey.{HOST}. TXT" in proc.stdout
        rsa = next(n for n, a in sels.items() if a == "rsa-sha256")
        server.load(
            "\n".join(
                line for line in text.splitlines() if not line.startswith(f"{rsa}._domainkey")
            )
            + "\n"
        )
        proc = env.run(
            "dns", DOMAIN, "--ipv4", IPV4, "--check", "--nameserver", server.address, *NO_FETCH
        )
        assert proc.returncode == 1
        assert f"MISSING    {rsa}._domainkey.{HOST}. TXT" in proc.stdout


def test_keygen_all_missing_makes_the_host_name_entry(env: PochtaEnv) -> None:
    """An install made before the host name had keys (here: its entry removed)."""
    env.run("domain", "remove", HOST, check=True)
    assert "=====" not in _zone(env)
    before = _selectors(env, DOMAIN)
    made = env.run("dkim", "keygen", "--all-missing", check=True).stdout
    assert f"Added {HOST}, the host name, as a signing-only entry" in made
    created = [line for line in made.splitlines() if line.startswith("Created DKIM selector")]
    assert [line.split()[6] for line in created] == [HOST, HOST]
    assert _selectors(env, DOMAIN) == before
    assert _domain_lines(env)[HOST].split()[1] == "signing-only"
    assert SECTION in _zone(env)
    again = env.run("dkim", "keygen", "--all-missing", check=True).stdout
    assert again == "Every hosted domain has DKIM keys; nothing to do.\n"


def test_init_without_dkim_leaves_the_entry_for_keygen(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = free_port_base()
    proc = run_pochta(
        "init",
        *("--data", str(data), "--hostname", HOST, "--domain", DOMAIN, "--no-dkim"),
        *("--port-base", str(base), "--bind", "127.0.0.1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "pochta dkim keygen --all-missing" in proc.stdout
    env = PochtaEnv(data, data / "pochta.toml", base)
    assert _domain_lines(env)[HOST].split()[1:] == [
        "signing-only",
        "accounts=0",
        "aliases=0",
        "dkim=-",
    ]
    dns_proc = env.run("dns", DOMAIN, "--ipv4", IPV4, check=True)
    assert f"pochta: warning: {HOST} has no DKIM keys" in dns_proc.stderr
    made = env.run("dkim", "keygen", "--all-missing", check=True).stdout
    assert sorted(line.split()[6] for line in made.splitlines() if "Created" in line) == [
        DOMAIN,
        DOMAIN,
        HOST,
        HOST,
    ]


def test_signing_only_entry_takes_no_accounts_and_domain_add_hosts_it(env: PochtaEnv) -> None:
    refused = env.run("user", "add", f"x@{HOST}", "--password-stdin", input=PASSWORD + "\n")
    assert refused.returncode == 1
    # The host name is the local class: its users are alias_maps lines, not accounts.
    assert f"{HOST} is the host name (server.hostname), the local address class" in (refused.stderr)
    alias = env.run("alias", "add", f"a@{HOST}", f"bob@{DOMAIN}")
    assert alias.returncode == 1
    # The host name is the local class: its aliases are alias_maps lines (issue 17 point 7).
    assert "the local address class" in alias.stderr
    assert "pochta domain add" not in alias.stderr
    disable = env.run("domain", "disable", HOST)
    assert disable.returncode == 1
    assert "signing-only" in disable.stderr

    sels = _selectors(env, HOST)
    out = env.run("domain", "add", HOST, "--force", check=True).stdout
    assert f"added domain {HOST}" in out
    assert "they are kept" in out
    assert f"{HOST} is the host name: mail for it now goes to its accounts" in out
    assert _selectors(env, HOST) == sels  # the same keys: published records stay valid
    assert _domain_lines(env)[HOST].split()[1] == "enabled"
    env.add_user(f"x@{HOST}", PASSWORD)
    zone = dns.zone.from_text(_zone(env, HOST), origin=".", relativize=False, check_origin=False)
    assert zone.get_rdataset(f"{HOST}.", "MX") is not None  # a mail domain now
    again = env.run("domain", "add", HOST, "--force")
    assert again.returncode == 1
    assert f"domain {HOST} already exists" in again.stderr


# -- the server: bounces and local mail --------------------------------------------------------


@dataclass
class World:
    env: PochtaEnv
    zone: ZoneServer
    sink: Sink

    def maildir(self, local: str) -> Path:
        return self.env.data_dir / "mail" / DOMAIN / local


@pytest.fixture
def world(env: PochtaEnv) -> Iterator[World]:
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    aliases = env.data_dir / "aliases"
    aliases.write_text(f"root: bob@{DOMAIN}\n")
    set_key(env.config_path, "tables", "alias_maps", f'["hash:{aliases}"]')
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mx.test")
    controller.start()
    zone_text = _zone(env) + (
        "elsewhere.example. 300 IN MX 10 mx.elsewhere.example.\n"
        "mx.elsewhere.example. 300 IN A 127.0.0.1\n"
    )
    try:
        with ZoneServer(zone_text, origin=".") as zone:
            set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
            set_key(env.config_path, "delivery", "smtp_port", str(port))
            yield World(env, zone, sink)
    finally:
        controller.stop()


def test_a_bounce_to_an_outside_sender_is_signed_by_the_host_name(world: World) -> None:
    with serve(world.env.config_path) as server:
        proc = world.env.run(
            "sendmail",
            *("-f", OUTSIDE, f"nobody@{DOMAIN}"),
            input=f"From: {OUTSIDE}\nTo: nobody@{DOMAIN}\nSubject: lost\n\nhello\n",
        )
        assert proc.returncode == 0, proc.stderr
        server.wait_for("dsn_queued")
        assert world.sink.wait_for_messages(), "\n".join(server.lines)
    [bounce] = world.sink.messages
    assert bounce.mail_from == "<>"
    assert bounce.rcpt_tos == [OUTSIDE]
    head = split_message(bounce.content)
    assert head.get_all("from")[0].text.endswith(f"<MAILER-DAEMON@{HOST}>")
    tags = signature_tags(bounce.content)
    assert [t[b"d"] for t in tags] == [HOST.encode()] * 2
    assert {t[b"s"].decode() for t in tags} == set(_selectors(world.env, HOST))
    assert dkimpy_verdicts(bounce.content, world.zone.resolver()) == [True, True]


def test_local_mail_to_the_host_name_still_goes_to_local_names(world: World) -> None:
    """root@HOST through alias_maps and postmaster@HOST to the admin (the first account), as
    for any host name: the signing-only entry is no mail domain (a mail domain would answer
    550 5.1.1 for root, which is no account of it)."""
    port = world.env.port_base + STANDARD_PORTS["smtp"]
    message = f"From: {OUTSIDE}\r\nSubject: to the host\r\n\r\nhello host\r\n"
    with serve(world.env.config_path) as server:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            # One message each: both end in bob's mailbox, where one message would be
            # delivered once.
            for local in ("root", "postmaster"):
                assert client.sendmail(OUTSIDE, [f"{local}@{HOST}"], message) == {}
        why = lambda: "\n".join(server.lines)  # noqa: E731
        files = wait_maildir(world.maildir("bob"), 2, 20, why)
    assert all(b"hello host" in p.read_bytes() for p in files)
