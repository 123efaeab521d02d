"""`pochta dns DOMAIN --check` compares the meaning of each record (issue 17 point 8).

A real DNS server on loopback (tests/dnsserver.py) serves the zone `pochta dns` prints, with
records rewritten the ways the Postfix/Dovecot guides write them: ``v=spf1 mx ~all``, DMARC
``p=none`` with ``ruf=``, DKIM tags in another order with ``t=s`` and the key split over
several strings, another MX preference, and the optional records (SRV, MTA-STS, TLS-RPT,
autoconfig) left out. Each record gets MATCH, VALID-BUT-DIFFERENT, MISSING or BROKEN, and the
exit status is non-zero only for a missing or broken required record.
"""

from __future__ import annotations

import re

from tests.harness import DOMAIN, HOSTNAME
from tests.integration.test_cli_dns_doctor import IP, Doctor, _block, _replace, doctor

__all__ = ["doctor"]  # the fixture, used by name

SPF_NAME = f"{DOMAIN}. 3600 IN TXT"
DMARC = f"_dmarc.{DOMAIN}."


def _drop(zone: str, *prefixes: str) -> str:
    return "".join(
        line + "\n" for line in zone.splitlines() if not line.startswith(tuple(prefixes))
    )


def _dkim(zone: str) -> dict[str, tuple[str, str]]:
    """selector -> (zone line, the joined TXT value)."""
    out = {}
    for line in zone.splitlines():
        m = re.match(rf"^([a-z0-9-]+)\._domainkey\.{re.escape(DOMAIN)}\. 3600 IN TXT (.*)$", line)
        if m:
            out[m.group(1)] = (line, "".join(re.findall(r'"([^"]*)"', m.group(2))))
    return out


def _guides_zone(zone: str) -> str:
    """The zone as the guides write it: same meaning where it counts, other spellings."""
    zone = _replace(zone, SPF_NAME, f'{SPF_NAME} "v=spf1 mx ~all"')
    zone = _replace(
        zone,
        DMARC,
        f'{DMARC} 3600 IN TXT "v=DMARC1;  p=none; ruf=mailto:dmarc-reports@{DOMAIN}; '
        f'rua=mailto:dmarc-reports@{DOMAIN}; fo=1"',
    )
    zone = _replace(zone, f"{DOMAIN}. 3600 IN MX", f"{DOMAIN}. 3600 IN MX 20 {HOSTNAME}.")
    for selector, (line, value) in _dkim(zone).items():
        tags = dict(part.strip().split("=", 1) for part in value.split(";"))
        key = tags["p"]
        if selector.startswith("ed-"):  # tags reordered, extra spaces, the key split in two
            new = f'"v=DKIM1;  p={key[:20]}" "{key[20:]} ; k = ed25519"'
        else:  # the guides' opendkim-genkey output: t=s, h=sha256, the key split in strings
            new = f'"v=DKIM1; h=sha256; k=rsa; t=s; " "p={key[:200]}" "{key[200:]}"'
        zone = zone.replace(line, f"{selector}._domainkey.{DOMAIN}. 3600 IN TXT {new}")
    # The optional records, not published.
    return _drop(
        zone,
        f"_submissions._tcp.{DOMAIN}.",
        f"_submission._tcp.{DOMAIN}.",
        f"_imaps._tcp.{DOMAIN}.",
        f"_imap._tcp.{DOMAIN}.",
        f"_pop3s._tcp.{DOMAIN}.",
        f"_pop3._tcp.{DOMAIN}.",
        f"_autodiscover._tcp.{DOMAIN}.",
        f"_mta-sts.{DOMAIN}.",
        f"mta-sts.{DOMAIN}.",
        f"_smtp._tls.{DOMAIN}.",
        f"autoconfig.{DOMAIN}.",
        f"autodiscover.{DOMAIN}.",
    )


def _status(out: str, subject: str) -> str:
    """The status word of the record line naming ``subject`` (name and type)."""
    for line in out.splitlines():
        m = re.match(r"^(MATCH|VALID-BUT-DIFFERENT|MISSING|BROKEN|ERROR) +(.*)$", line)
        if m and m.group(2).split("  (")[0].strip() == subject:
            return m.group(1)
    raise AssertionError(f"no record line for {subject!r} in:\n{out}")


def test_records_written_the_guides_way_are_valid_and_exit_zero(doctor: Doctor) -> None:
    zone = _guides_zone(doctor.zone)
    code, out = doctor.run(zone)
    assert code == 0, out
    # SPF: "mx ~all" authorises our address (evaluated), and says softfail for others.
    assert _status(out, f"{DOMAIN}. TXT") == "VALID-BUT-DIFFERENT"
    spf = _block(out, f"VALID-BUT-DIFFERENT  {DOMAIN}. TXT")
    assert "DNS has:  v=spf1 mx ~all" in spf
    assert any(f"pass for {IP}" in line for line in spf), spf
    assert any("~all: softfail" in line and "ours: -all" in line for line in spf), spf
    # DMARC p=none with ruf=: valid, each difference said with what it means.
    dmarc = _block(out, f"VALID-BUT-DIFFERENT  _dmarc.{DOMAIN}. TXT")
    assert any("p=none" in line and "ours: p=quarantine" in line for line in dmarc), dmarc
    assert any(line.startswith("ruf=") and "RFC 7489 §7.3" in line for line in dmarc), dmarc
    # DKIM: the ed25519 key reordered and split is the same record; t=s is a difference.
    selectors = _dkim(doctor.zone)
    ed = next(s for s in selectors if s.startswith("ed-"))
    rsa = next(s for s in selectors if not s.startswith("ed-"))
    assert _status(out, f"{ed}._domainkey.{DOMAIN}. TXT") == "MATCH"
    rsa_block = _block(out, f"VALID-BUT-DIFFERENT  {rsa}._domainkey.{DOMAIN}. TXT")
    assert any(line.startswith("t=s:") for line in rsa_block), rsa_block
    # One MX: its preference does not matter.
    assert _status(out, f"{DOMAIN}. MX") == "MATCH"
    assert re.search(rf"^MATCH +{re.escape(DOMAIN)}\. MX  \(.*preference 20", out, re.M), out
    # The optional records are reported missing, and do not make the exit status.
    for name in (
        f"_imaps._tcp.{DOMAIN}. SRV",
        f"_mta-sts.{DOMAIN}. TXT",
        f"_smtp._tls.{DOMAIN}. TXT",
        f"autoconfig.{DOMAIN}. CNAME",
    ):
        assert _status(out, name) == "MISSING", name
        assert re.search(rf"^MISSING +{re.escape(name)}  \(optional\)", out, re.M), out
    # _spf.HOST is not needed when the domain's SPF does not point at it.
    assert _status(out, f"_spf.{HOSTNAME}. TXT") == "MATCH"
    assert re.search(r"^\d+ of \d+ records match, \d+ valid but different, 0 required", out, re.M)


def test_broken_required_records_exit_one(doctor: Doctor) -> None:
    selectors = _dkim(doctor.zone)
    ed = next(s for s in selectors if s.startswith("ed-"))
    rsa_line, rsa_value = selectors[next(s for s in selectors if not s.startswith("ed-"))]
    ed_line, _ = selectors[ed]
    zone = _replace(doctor.zone, SPF_NAME, f'{SPF_NAME} "v=spf1 ip4:192.0.2.99 ~all"')
    zone = _replace(zone, DMARC, f'{DMARC} 3600 IN TXT "v=DMARC1; p=bogus"')
    # The ed25519 selector publishes the RSA key: not our key.
    rsa_key = rsa_value.split("p=")[1]
    zone = zone.replace(
        ed_line,
        f'{ed}._domainkey.{DOMAIN}. 3600 IN TXT "v=DKIM1; k=rsa; p={rsa_key[:200]}" '
        f'"{rsa_key[200:]}"',
    )
    code, out = doctor.run(zone)
    assert code == 1, out
    spf = _block(out, f"BROKEN               {DOMAIN}. TXT")
    assert any(f"does not authorise {IP}" in line for line in spf), spf
    dmarc = _block(out, f"BROKEN               _dmarc.{DOMAIN}. TXT")
    assert any("p='bogus'" in line for line in dmarc), dmarc
    dkim = _block(out, f"BROKEN               {ed}._domainkey.{DOMAIN}. TXT")
    assert any("k=rsa" in line and "ours: k=ed25519" in line for line in dkim), dkim
    assert rsa_line  # the RSA selector itself is untouched
    assert re.search(r"^\d+ of \d+ records match, .*3 required missing or broken", out, re.M), out


def test_two_spf_records_are_broken(doctor: Doctor) -> None:
    code, out = doctor.run(doctor.zone + f'{SPF_NAME} "v=spf1 mx -all"\n')
    assert code == 1, out
    block = _block(out, f"BROKEN               {DOMAIN}. TXT")
    assert any("RFC 7208 §4.5" in line for line in block), block


def test_missing_required_record_exits_one_missing_optional_does_not(doctor: Doctor) -> None:
    code, out = doctor.run(_drop(doctor.zone, f"_mta-sts.{DOMAIN}.", f"_smtp._tls.{DOMAIN}."))
    assert code == 0, out
    assert _status(out, f"_mta-sts.{DOMAIN}. TXT") == "MISSING"
    code, out = doctor.run(_drop(doctor.zone, DMARC))
    assert code == 1, out
    assert re.search(rf"^MISSING +_dmarc\.{re.escape(DOMAIN)}\. TXT$", out, re.M), out
