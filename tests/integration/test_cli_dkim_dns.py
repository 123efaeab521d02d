"""`pochta dkim` and `pochta dns`, run as an admin would, with a real DNS server for --check."""

from __future__ import annotations

import re
import smtplib
import stat
from pathlib import Path

import dns.resolver
import dns.zone
import pytest

from pochta.directory.model import DkimSelector
from pochta.mailauth.dkim_keys import load_private_key
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, client_tls, serve, set_key, wait_files
from tests.integration.test_dkim_signing import crlf, dkimpy_verdicts, signature_tags

PASSWORD = "correct horse 1"

IPV4 = "192.0.2.10"
SHOW_LINE = re.compile(
    r"^(\S+)  (rsa-sha256|ed25519-sha256)  (active|published \(not signing\))  (\S+)"
)

# The record compare alone (tests/integration/test_cli_dns_doctor.py runs the doctor).
RECORDS_ONLY = ("--skip", "all")


def _selectors(env: PochtaEnv) -> dict[str, tuple[str, str, str]]:
    """selector -> (algorithm, state, key path), from `pochta dkim show`."""
    out = env.run("dkim", "show", DOMAIN, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = SHOW_LINE.match(line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    return found


def _zone(env: PochtaEnv, *args: str) -> str:
    return env.run("dns", DOMAIN, "--ipv4", IPV4, *args, check=True).stdout


# -- dkim -------------------------------------------------------------------------------------


def test_show_lists_init_keys_with_dns_lines(pochta_env: PochtaEnv) -> None:
    sels = _selectors(pochta_env)
    assert sorted(a for a, _, _ in sels.values()) == ["ed25519-sha256", "rsa-sha256"]
    assert all(state == "active" for _, state, _ in sels.values())
    out = pochta_env.run("dkim", "show", DOMAIN, check=True).stdout
    for name, (algorithm, _, path) in sels.items():
        assert Path(path).is_file()
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        k = "rsa" if algorithm == "rsa-sha256" else "ed25519"
        assert f'{name}._domainkey.{DOMAIN}. 3600 IN TXT "v=DKIM1; k={k}; p=' in out


def test_unknown_domain_is_refused(pochta_env: PochtaEnv) -> None:
    for args in (
        ("dkim", "keygen", "other.test"),
        ("dkim", "show", "other.test"),
        ("dns", "other.test"),
    ):
        proc = pochta_env.run(*args)
        assert proc.returncode == 1
        assert proc.stderr == (
            "pochta: error: domain other.test is not hosted here; add it with: "
            "pochta domain add other.test\n"
        )


def test_keygen_options(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run(
        "dkim",
        "keygen",
        DOMAIN,
        "--algorithm",
        "rsa",
        "--selector",
        "Extra",
        "--bits",
        "1024",
        check=True,
    )
    assert "Created DKIM selector extra (rsa-sha256)" in proc.stdout
    assert _selectors(pochta_env)["extra"][1] == "active"
    again = pochta_env.run("dkim", "keygen", DOMAIN, "--algorithm", "rsa", "--selector", "extra")
    assert again.returncode == 1
    assert "extra already exists" in again.stderr
    both = pochta_env.run("dkim", "keygen", DOMAIN, "--selector", "x")
    assert both.returncode == 1
    assert "--algorithm rsa or --algorithm ed25519" in both.stderr


def test_rotate_then_retire(pochta_env: PochtaEnv) -> None:
    old = _selectors(pochta_env)
    proc = pochta_env.run("dkim", "rotate", DOMAIN, check=True)
    for name in old:
        assert f"pochta dkim retire {DOMAIN} {name}" in proc.stdout
    now = _selectors(pochta_env)
    new = set(now) - set(old)
    assert len(new) == 2
    assert all(now[n][1] == "active" for n in new)
    assert all(now[n][1] == "published (not signing)" for n in old)
    for name in new:
        assert f"{name}._domainkey.{DOMAIN}. 3600 IN TXT" in proc.stdout
    # Old selectors stay in the DNS output until retired.
    zone = _zone(pochta_env)
    assert all(f"{n}._domainkey.{DOMAIN}." in zone for n in now)

    active = next(iter(new))
    refused = pochta_env.run("dkim", "retire", DOMAIN, active)
    assert refused.returncode == 1
    assert "still signs mail" in refused.stderr

    victim = next(iter(old))
    key_path = Path(old[victim][2])
    pochta_env.run("dkim", "retire", DOMAIN, victim, check=True)
    assert not key_path.exists()
    assert victim not in _selectors(pochta_env)
    assert f"{victim}._domainkey." not in _zone(pochta_env)
    missing = pochta_env.run("dkim", "retire", DOMAIN, victim)
    assert missing.returncode == 1
    assert f"no DKIM selector {victim}" in missing.stderr


def test_rotate_staged_then_activate(pochta_env: PochtaEnv) -> None:
    old = _selectors(pochta_env)
    pochta_env.run("dkim", "rotate", DOMAIN, "--stage", check=True)
    now = _selectors(pochta_env)
    new = sorted(set(now) - set(old))
    assert all(now[n][1] == "published (not signing)" for n in new)
    assert all(now[n][1] == "active" for n in old)
    ed_new = next(n for n in new if now[n][0] == "ed25519-sha256")
    pochta_env.run("dkim", "activate", DOMAIN, ed_new, check=True)
    after = _selectors(pochta_env)
    assert after[ed_new][1] == "active"
    ed_old = next(n for n in old if old[n][0] == "ed25519-sha256")
    rsa_old = next(n for n in old if old[n][0] == "rsa-sha256")
    assert after[ed_old][1] == "published (not signing)"
    assert after[rsa_old][1] == "active"


# -- dns --------------------------------------------------------------------------------------


def test_dns_output_is_a_zone(pochta_env: PochtaEnv) -> None:
    text = _zone(pochta_env)
    zone = dns.zone.from_text(text, origin=".", relativize=False, check_origin=False)
    names = {n.to_text() for n in zone.nodes}
    assert f"{HOSTNAME}." in names
    assert "10.2.0.192.in-addr.arpa." in names
    mx = zone.get_rdataset(f"{DOMAIN}.", "MX")
    assert mx is not None
    assert [rd.to_text() for rd in mx] == [f"10 {HOSTNAME}."]
    # The SRV ports are those of the listeners (the test config adds a port base).
    imaps = zone.get_rdataset(f"_imaps._tcp.{DOMAIN}.", "SRV")
    assert imaps is not None
    assert next(iter(imaps)).port == pochta_env.ports["imaps"]
    for name in _selectors(pochta_env):
        assert zone.get_rdataset(f"{name}._domainkey.{DOMAIN}.", "TXT") is not None


def test_dns_publishes_an_srs_domain_of_its_own(pochta_env: PochtaEnv) -> None:
    """With ``[srs] domain`` a name of its own under the domain, forwarded mail leaves with
    senders there: the next hop checks SPF for it and bounces need its MX."""
    assert f"srs.{DOMAIN}" not in _zone(pochta_env)
    set_key(pochta_env.config_path, "srs", "domain", f'"srs.{DOMAIN}"')
    zone = dns.zone.from_text(_zone(pochta_env), origin=".", relativize=False, check_origin=False)
    mx = zone.get_rdataset(f"srs.{DOMAIN}.", "MX")
    assert mx is not None
    assert [rd.to_text() for rd in mx] == [f"10 {HOSTNAME}."]
    spf = zone.get_rdataset(f"srs.{DOMAIN}.", "TXT")
    assert spf is not None
    assert [rd.to_text() for rd in spf] == [f'"v=spf1 redirect=_spf.{HOSTNAME}"']


def test_dns_without_address_says_so(pochta_env: PochtaEnv) -> None:
    out = pochta_env.run("dns", DOMAIN, check=True).stdout
    # mail.example.test does not resolve (RFC 6761 §6.2: .test is never delegated).
    assert f"; A record: pass --ipv4 (could not determine the address of {HOSTNAME})" in out
    assert " IN A " not in out
    assert " IN PTR " not in out
    assert f'_spf.{HOSTNAME}. 3600 IN TXT "v=spf1 a:{HOSTNAME} -all"' in out


def test_dns_bad_options(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run("dns", DOMAIN, "--ipv4", "2001:db8::1")
    assert proc.returncode == 1
    assert "is not an IPv4 address" in proc.stderr
    proc = pochta_env.run("dns", DOMAIN, "--check", "--nameserver", "ns.example.test")
    assert proc.returncode == 1
    assert "is not an IP address" in proc.stderr


def _replace(text: str, prefix: str, new: str) -> str:
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, prefix
    lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def test_dns_check_against_real_server(pochta_env: PochtaEnv) -> None:
    zone_text = _zone(pochta_env)
    with ZoneServer(zone_text, origin=".") as server:
        proc = pochta_env.run(
            "dns", DOMAIN, "--ipv4", IPV4, "--check", "--nameserver", server.address, *RECORDS_ONLY
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results = [line for line in proc.stdout.splitlines() if not line.startswith(";")]
        status_lines = results[:-1]
        assert status_lines
        assert all(line.startswith("MATCH ") for line in status_lines), proc.stdout
        total = len(status_lines)
        assert results[-1] == (
            f"{total} of {total} records match, 0 valid but different, 0 required missing or "
            f"broken, 0 optional missing or broken, 0 could not be checked (asked nameserver "
            f"{server.address})"
        )
        assert any(q[1] == "PTR" for q in server.queries)

        server.load(
            _replace(
                zone_text,
                f"_dmarc.{DOMAIN}.",
                f"_dmarc.{DOMAIN}. 3600 IN TXT "
                f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"',
            )
        )
        proc = pochta_env.run(
            "dns", DOMAIN, "--ipv4", IPV4, "--check", "--nameserver", server.address, *RECORDS_ONLY
        )
        # p=none is valid, only weaker than ours: said, and the exit status stays 0.
        assert proc.returncode == 0, proc.stdout
        lines = proc.stdout.splitlines()
        i = lines.index(f"VALID-BUT-DIFFERENT  _dmarc.{DOMAIN}. TXT")
        assert lines[i + 1].strip() == (
            f"DNS has:  v=DMARC1; p=none; rua=mailto:dmarc-reports@{DOMAIN}"
        )
        assert lines[i + 2].strip() == (
            f'ours:     "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{DOMAIN}"'
        )
        assert lines[i + 3].strip().startswith("p=none: monitoring only")
        assert lines[-1].startswith(f"{total - 1} of {total} records match, 1 valid but different")

        server.load(
            "\n".join(
                line
                for line in zone_text.splitlines()
                if not line.startswith(f"{DOMAIN}. 3600 IN MX")
            )
            + "\n"
        )
        proc = pochta_env.run(
            "dns", DOMAIN, "--ipv4", IPV4, "--check", "--nameserver", server.address, *RECORDS_ONLY
        )
        assert proc.returncode == 1  # the MX is required
        assert re.search(rf"^MISSING +{re.escape(DOMAIN)}\. MX$", proc.stdout, re.M), proc.stdout


def test_zone_server_truncates_udp_and_answers_over_tcp() -> None:
    big = "".join(f'big.example.test. 3600 IN TXT "{i:03d}{"x" * 200}"\n' for i in range(10))
    with ZoneServer(big, origin=".") as server:
        answer = server.resolver().resolve("big.example.test.", "TXT")
        assert len(answer) == 10
        nx = server.resolver()
        with pytest.raises(dns.resolver.NXDOMAIN):
            nx.resolve("nothing.example.test.", "TXT")
        with pytest.raises(dns.resolver.NoAnswer):
            nx.resolve("big.example.test.", "A")


def test_published_dkim_record_verifies_signature(pochta_env: PochtaEnv) -> None:
    """The chain an outside verifier walks: `pochta dns` output, served by DNS, checks a
    signature made with the key `pochta init` wrote."""
    dkim = pytest.importorskip("dkim")
    pytest.importorskip("nacl")
    sels = _selectors(pochta_env)
    message = b"From: a@example.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    with ZoneServer(_zone(pochta_env), origin=".") as server:
        resolver = server.resolver()

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
            answer = resolver.resolve(name.decode(), "TXT")
            return b"".join(b"".join(rd.strings) for rd in answer)

        for name, (algorithm, _, path) in sels.items():
            sel = DkimSelector(selector=name, algorithm=algorithm, key_path=path, public_key_b64="")
            signature = dkim.sign(
                message,
                name.encode(),
                DOMAIN.encode(),
                load_private_key(sel),
                signature_algorithm=algorithm.encode(),
            )
            assert dkim.verify(signature + message, dnsfunc=dnsfunc), name
        assert any(q[1] == "TXT" and "_domainkey" in q[0] for q in server.queries)


# -- DKIM keys for every hosted domain (issue 12, point 8) ---------------------------------------

SECOND = "second.test"


def _selectors_of(env: PochtaEnv, domain: str) -> dict[str, tuple[str, str, str]]:
    out = env.run("dkim", "show", domain, check=True).stdout
    return {
        m.group(1): (m.group(2), m.group(3), m.group(4))
        for m in map(SHOW_LINE.match, out.splitlines())
        if m
    }


def test_domain_add_makes_keys_like_init_and_dns_publishes_them(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    out = env.run("domain", "add", SECOND, check=True).stdout
    sels = _selectors_of(env, SECOND)
    assert sorted(a for a, _, _ in sels.values()) == ["ed25519-sha256", "rsa-sha256"]
    assert all(state == "active" for _, state, _ in sels.values())
    first = next(iter(_selectors_of(env, DOMAIN).values()))[2]
    for name, (algorithm, _, path) in sels.items():
        assert f"DKIM key {name} ({algorithm}) {path}" in out  # says where the keys are
        key = Path(path)
        assert key.parent == Path(first).parent.parent / SECOND
        # The same mode and owner as the keys pochta init made.
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (key.stat().st_uid, key.stat().st_gid) == (
            Path(first).stat().st_uid,
            Path(first).stat().st_gid,
        )
    assert f"pochta dns {SECOND}" in out
    proc = env.run("dns", SECOND, "--ipv4", IPV4, check=True)
    assert proc.stderr == ""
    for name, (algorithm, _, _) in sels.items():
        k = "rsa" if algorithm == "rsa-sha256" else "ed25519"
        assert f'{name}._domainkey.{SECOND}. 3600 IN TXT "v=DKIM1; k={k}; p=' in proc.stdout
    check = env.run("check")
    assert check.returncode == 0
    assert "DKIM" not in check.stdout + check.stderr


def test_domain_without_keys_is_flagged_and_keygen_all_missing_fixes_it(
    pochta_env: PochtaEnv,
) -> None:
    env = pochta_env
    out = env.run("domain", "add", SECOND, "--no-dkim", check=True).stdout
    assert f"make them with: pochta dkim keygen {SECOND}" in out
    env.run("domain", "add", "third.test", "--no-dkim", check=True)
    before = _selectors_of(env, DOMAIN)

    proc = env.run("dns", SECOND, "--ipv4", IPV4, check=True)
    assert "_domainkey" not in proc.stdout
    assert proc.stderr == (
        f"pochta: warning: {SECOND} has no DKIM keys, so its mail goes out unsigned and has no "
        f"DKIM record to publish; make them with: pochta dkim keygen {SECOND} (or, for every "
        "domain without keys: pochta dkim keygen --all-missing)\n"
    )
    check = env.run("check")
    assert check.returncode == 0  # a warning: mail still flows, unsigned
    warnings = [line for line in check.stderr.splitlines() if "DKIM" in line]
    assert [w.split()[1] for w in warnings] == [SECOND, "third.test"]
    assert all(w.startswith("warning: ") for w in warnings)
    assert all("pochta dkim keygen" in w for w in warnings)

    made = env.run("dkim", "keygen", "--all-missing", check=True).stdout
    created = [line for line in made.splitlines() if line.startswith("Created DKIM selector")]
    domains = sorted(line.split()[6] for line in created)
    assert domains == [SECOND, SECOND, "third.test", "third.test"]
    assert f"._domainkey.{SECOND}. 3600 IN TXT" in made
    assert _selectors_of(env, DOMAIN) == before  # the domain that had keys is untouched
    second = _selectors_of(env, SECOND)
    assert len(second) == 2

    again = env.run("dkim", "keygen", "--all-missing", check=True).stdout
    assert again == "Every hosted domain has DKIM keys; nothing to do.\n"
    assert _selectors_of(env, SECOND) == second
    assert "DKIM" not in env.run("check", check=True).stderr
    assert env.run("dns", SECOND, "--ipv4", IPV4, check=True).stderr == ""

    both = env.run("dkim", "keygen", SECOND, "--all-missing")
    assert both.returncode == 1
    assert "not both" in both.stderr
    neither = env.run("dkim", "keygen")
    assert neither.returncode == 1
    assert "--all-missing" in neither.stderr


def test_second_domain_mail_is_signed_with_its_own_keys(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.run("domain", "add", SECOND, check=True)
    env.add_user(f"dave@{SECOND}", PASSWORD)
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    sels = _selectors_of(env, SECOND)
    zone = env.run("dns", SECOND, "--ipv4", IPV4, check=True).stdout
    message = (
        f"From: Dave <dave@{SECOND}>\r\nTo: <bob@{DOMAIN}>\r\nSubject: second\r\n\r\nhello\r\n"
    ).encode()
    with ZoneServer(zone, origin=".") as dns_server, serve(env.config_path):
        with smtplib.SMTP("127.0.0.1", env.ports["submission"], timeout=20) as c:
            c.starttls(context=client_tls())
            c.login(f"dave@{SECOND}", PASSWORD)
            c.sendmail(f"dave@{SECOND}", [f"bob@{DOMAIN}"], message)
        (path,) = wait_files(env, "bob", 1)
        content = crlf(path.read_bytes())
        tags = signature_tags(content)
        assert {t[b"d"] for t in tags} == {SECOND.encode()}
        assert {t[b"s"].decode() for t in tags} == set(sels)
        assert dkimpy_verdicts(content, dns_server.resolver()) == [True, True]
