"""`pochta dns DOMAIN --check`, the doctor, as an admin runs it: a real DNS server on loopback
serves the zone `pochta dns` prints (and broken variants of it), a real HTTPS server with a
trustme CA serves the MTA-STS policy. Each planted fault is found, with its fix line."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ed25519

from pochta.dns.records import mta_sts_policy
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv
from tests.unit.test_mta_sts import POLICY_PATH, PolicySite, Reply

IP = "127.0.0.1"  # our "public" address: loopback, so the HTTPS fetch stays on this machine
REV = "1.0.0.127.in-addr.arpa"


@dataclass
class Doctor:
    env: PochtaEnv
    server: ZoneServer
    site: PolicySite
    zone: str  # the good zone, as `pochta dns` prints it

    def run(self, zone: str | None = None) -> tuple[int, str]:
        self.server.load(self.zone if zone is None else zone)
        proc = self.env.run(
            "dns",
            DOMAIN,
            "--ip",
            IP,
            "--check",
            "--nameserver",
            self.server.address,
            "--mta-sts-port",
            str(self.site.port),
        )
        return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def doctor(pochta_env: PochtaEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Doctor]:
    ca = trustme.CA()
    ca_file = pochta_env.data_dir / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # The fetch trusts the system CAs, which SSL_CERT_FILE replaces (OpenSSL).
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    zone = pochta_env.run("dns", DOMAIN, "--ipv4", IP, check=True).stdout
    with PolicySite(ca.issue_cert(f"mta-sts.{DOMAIN}")) as site, ZoneServer(zone) as server:
        site.replies[POLICY_PATH] = Reply(body=mta_sts_policy(HOSTNAME).encode())
        yield Doctor(pochta_env, server, site, zone)


def _replace(zone: str, prefix: str, *new: str) -> str:
    lines = zone.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, prefix
    lines[hits[0] : hits[0] + 1] = list(new)
    return "\n".join(lines) + "\n"


def _block(out: str, first: str) -> list[str]:
    """The line starting with ``first`` and its indented detail lines."""
    lines = out.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(first)]
    assert starts, f"no line starting {first!r} in:\n{out}"
    i = starts[0]
    block = [lines[i]]
    for line in lines[i + 1 :]:
        if not line.startswith("           "):
            break
        block.append(line.strip())
    return block


def _fixes(block: list[str]) -> list[str]:
    return [line.removeprefix("fix:").strip() for line in block if line.startswith("fix:")]


def _dkim_lines(zone: str) -> dict[str, str]:
    return {
        m.group(1): line
        for line in zone.splitlines()
        if (m := re.match(rf"^([a-z0-9-]+)\._domainkey\.{re.escape(DOMAIN)}\. ", line))
    }


def test_good_zone_all_ok(doctor: Doctor) -> None:
    code, out = doctor.run()
    assert code == 0, out
    status = [line for line in out.splitlines() if re.match(r"^[A-Z-]+ +\S", line)]
    # Every record a MATCH and every doctor check OK: PTR, SPF (domain and HELO), MX, DKIM,
    # DMARC, MTA-STS fetched over HTTPS, four blocklists.
    assert status
    assert all(line.startswith(("OK ", "MATCH ")) for line in status), out
    assert f"OK         {REV}. PTR (reverse DNS of {IP})" in out
    assert f"OK         {DOMAIN}. TXT SPF for {IP} (MAIL FROM)  (pass; 1 of 10" in out
    assert f"OK         {HOSTNAME}. TXT SPF for {IP} (HELO)" in out
    assert f"OK         https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt" in out
    assert f"OK         {IP} in zen.spamhaus.org" in out
    assert (POLICY_PATH, f"mta-sts.{DOMAIN}") in doctor.site.requests
    assert re.search(r"^(\d+) of \1 checks OK, 0 to fix, 0 could not be checked", out, re.M)


def test_wrong_spf_ip(doctor: Doctor) -> None:
    zone = _replace(
        doctor.zone,
        f"_spf.{HOSTNAME}.",
        f'_spf.{HOSTNAME}. 3600 IN TXT "v=spf1 ip4:192.0.2.99 -all"',
    )
    code, out = doctor.run(zone)
    assert code == 1
    block = _block(out, f"WRONG      {DOMAIN}. TXT SPF for {IP} (MAIL FROM)")
    assert any("SPF gives fail, not pass" in line for line in block), block
    assert f'publish:  _spf.{HOSTNAME}. 3600 IN TXT "v=spf1 ip4:{IP} -all"' in _fixes(block)


def test_two_spf_records(doctor: Doctor) -> None:
    zone = doctor.zone + f'{DOMAIN}. 3600 IN TXT "v=spf1 a -all"\n'
    code, out = doctor.run(zone)
    assert code == 1
    block = _block(out, f"WRONG      {DOMAIN}. TXT SPF")
    assert any("2 SPF records" in line and "RFC 7208 §4.5" in line for line in block), block
    assert f'publish:  {DOMAIN}. 3600 IN TXT "v=spf1 redirect=_spf.{HOSTNAME}"' in _fixes(block)


def test_missing_dkim(doctor: Doctor) -> None:
    selector, line = sorted(_dkim_lines(doctor.zone).items())[0]
    code, out = doctor.run(doctor.zone.replace(line + "\n", ""))
    assert code == 1
    block = _block(out, f"MISSING    {selector}._domainkey.{DOMAIN}. TXT DKIM")
    assert _fixes(block) == ["publish:  " + line]


def test_dkim_key_not_ours(doctor: Doctor) -> None:
    lines = _dkim_lines(doctor.zone)
    selector = next(s for s in lines if s.startswith("ed-"))
    other = base64.b64encode(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    name = f"{selector}._domainkey.{DOMAIN}."
    bad = f'{name} 3600 IN TXT "v=DKIM1; k=ed25519; p={other.decode()}"'
    code, out = doctor.run(_replace(doctor.zone, name, bad))
    assert code == 1
    block = _block(out, f"WRONG      {name} TXT DKIM")
    assert any("not the public half of our private key" in line for line in block), block
    assert _fixes(block) == ["publish:  " + lines[selector]]


def test_mx_is_an_ip_address(doctor: Doctor) -> None:
    zone = _replace(doctor.zone, f"{DOMAIN}. 3600 IN MX", f"{DOMAIN}. 3600 IN MX 10 {IP}.")
    code, out = doctor.run(zone)
    assert code == 1
    block = _block(out, f"WRONG      {DOMAIN}. MX 10 {IP}.")
    assert any("IP address (RFC 5321 §5.1)" in line for line in block), block
    assert _fixes(block) == [f"publish:  {DOMAIN}. 3600 IN MX 10 {HOSTNAME}."]


def test_mx_is_a_cname(doctor: Doctor) -> None:
    zone = _replace(
        doctor.zone,
        f"{DOMAIN}. 3600 IN MX",
        f"{DOMAIN}. 3600 IN MX 10 mx.{DOMAIN}.",
        f"mx.{DOMAIN}. 3600 IN CNAME {HOSTNAME}.",
    )
    code, out = doctor.run(zone)
    assert code == 1
    block = _block(out, f"WRONG      {DOMAIN}. MX 10 mx.{DOMAIN}.")
    assert any("is a CNAME" in line and "RFC 2181 §10.3" in line for line in block), block
    assert _fixes(block) == [f"publish:  {DOMAIN}. 3600 IN MX 10 {HOSTNAME}."]


def test_dmarc_syntax_error(doctor: Doctor) -> None:
    name = f"_dmarc.{DOMAIN}."
    good = _block(doctor.zone, name)[0]
    code, out = doctor.run(
        _replace(doctor.zone, name, f'{name} 3600 IN TXT "v=DMARC1; p=bogus; pct=100"')
    )
    assert code == 1
    block = _block(out, f"WRONG      {name} TXT DMARC")
    assert any(line.startswith("syntax: p='bogus'") for line in block), block
    assert _fixes(block) == ["publish:  " + good]


def test_rua_to_unauthorised_outside_domain(doctor: Doctor) -> None:
    name = f"_dmarc.{DOMAIN}."
    rua = "mailto:dmarc@reports.example.net"
    zone = _replace(doctor.zone, name, f'{name} 3600 IN TXT "v=DMARC1; p=quarantine; rua={rua}"')
    code, out = doctor.run(zone)
    assert code == 1
    block = _block(out, f"WRONG      {name} TXT DMARC rua={rua}")
    assert any("RFC 7489 §7.1" in line for line in block), block
    assert _fixes(block) == [
        f"reports.example.net must publish:  {DOMAIN}._report._dmarc.reports.example.net. "
        '3600 IN TXT "v=DMARC1"'
    ]


def test_ptr_mismatch(doctor: Doctor) -> None:
    zone = _replace(doctor.zone, f"{REV}.", f"{REV}. 3600 IN PTR host.provider.example.")
    code, out = doctor.run(zone)
    assert code == 1
    block = _block(out, f"WRONG      {REV}. PTR (reverse DNS of {IP})")
    assert "DNS has:  host.provider.example." in block
    assert _fixes(block) == [f"ask the provider of {IP} to set:  {REV}. 3600 IN PTR {HOSTNAME}."]


def test_listed_ip(doctor: Doctor) -> None:
    zone = doctor.zone + (
        "1.0.0.127.bl.spamcop.net. 300 IN A 127.0.0.2\n"
        '1.0.0.127.bl.spamcop.net. 300 IN TXT "Blocked - see https://www.spamcop.net/bl.shtml"\n'
    )
    code, out = doctor.run(zone)
    assert code == 1, out
    block = _block(out, f"LISTED     {IP} in bl.spamcop.net")
    assert "DNS has:  127.0.0.2" in block
    assert any("see https://www.spamcop.net/bl.shtml" in line for line in block), block
    assert _fixes(block)
    # The record check itself is clean: the listing alone makes the exit status.
    assert re.search(r"^(\d+) of \1 records match", out, re.M)


def test_spamhaus_refusal_is_could_not_check(doctor: Doctor) -> None:
    zone = doctor.zone + "1.0.0.127.zen.spamhaus.org. 300 IN A 127.255.255.254\n"
    code, out = doctor.run(zone)
    assert code == 0, out
    block = _block(out, f"COULD-NOT-CHECK  {IP} in zen.spamhaus.org")
    assert any("public/open resolver" in line for line in block), block
    assert "LISTED" not in out
    assert "1 could not be checked" in out


def test_mta_sts_fetch_failure_is_wrong(doctor: Doctor) -> None:
    doctor.site.replies[POLICY_PATH] = Reply(status=404, body=b"not here")
    code, out = doctor.run()
    # MTA-STS is optional (RFC 8461 §5: senders that cannot fetch a policy apply none): the
    # fault is reported, and only required records make the exit status (issue 17 point 8).
    assert code == 0, out
    block = _block(
        out,
        f"WRONG      https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt (MTA-STS policy)  (optional)",
    )
    assert any("HTTP status 404" in line for line in block), block
    assert re.search(
        r"^\d+ of \d+ checks OK, 0 to fix, 0 could not be checked, 1 optional not OK", out, re.M
    )
