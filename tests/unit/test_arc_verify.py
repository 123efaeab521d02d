"""ARC verification (mailauth/arc_verify.py) of chains made by dkimpy's own ARC signer.

Each hop adds its ``Authentication-Results`` and seals with ``dkim.ARC.sign`` (RSA, or Ed25519
through dkimpy's Ed25519 signing code: ``dkim.arc_sign`` itself only signs with RSA); DNS is
a dict, so no test touches the network.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

import dkim
import nacl.encoding
import nacl.signing
import pytest

from pochta.mailauth.arc_verify import MAX_ARC_SETS, ArcResult, verify_arc
from pochta.mailauth.dkim_verify import DnsTemporaryError
from tests.factories import make_rsa_dkim_key

ORIGINAL = (
    b"From: Alice <alice@good.test>\r\n"
    b"To: <list@lists.test>\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <1@good.test>\r\n"
    b"\r\n"
    b"Hello, list.\r\n"
)


RSA_PEM, RSA_TXT = make_rsa_dkim_key()
ED_KEY = nacl.signing.SigningKey.generate()
ED_SEED = base64.b64encode(bytes(ED_KEY))
ED_TXT = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(ED_KEY.verify_key))

ZONE: dict[str, list[bytes]] = {
    "arc._domainkey.lists.test": [RSA_TXT],
    "arc._domainkey.relay.test": [RSA_TXT],
    "arc._domainkey.last.test": [RSA_TXT],
    "ed._domainkey.lists.test": [ED_TXT],
}


class Dns:
    """A zone as a dict; names that raise DnsTemporaryError; every lookup counted."""

    def __init__(self, zone: Mapping[str, list[bytes]] = ZONE, *, failing: tuple[str, ...] = ()):
        self.zone = dict(zone)
        self.failing = failing
        self.lookups: list[str] = []

    async def __call__(self, name: str) -> list[bytes]:
        self.lookups.append(name)
        if name in self.failing:
            raise DnsTemporaryError(f"{name}: LifetimeTimeout")
        return list(self.zone.get(name, []))


def seal(
    message: bytes,
    domain: str,
    *,
    results: str = "dmarc=pass header.from=good.test",
    selector: str = "arc",
    ed25519: bool = False,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> bytes:
    """One hop: ``domain`` records what it found in its Authentication-Results, then seals
    with dkimpy; the new ARC set goes on top."""
    hop = f"Authentication-Results: {domain}; {results}\r\n".encode() + message
    if ed25519:
        assert monkeypatch is not None
        # dkimpy's ARC.sign reads every key as RSA PEM; its Ed25519 signing path needs a
        # nacl key, which is what its DKIM signer makes of a base64 seed.
        monkeypatch.setattr(
            dkim,
            "parse_pem_private_key",
            lambda key: nacl.signing.SigningKey(key, encoder=nacl.encoding.Base64Encoder),
        )
        signer = dkim.ARC(hop, signature_algorithm=b"ed25519-sha256")
        headers = signer.sign(selector.encode(), domain.encode(), ED_SEED, domain.encode())
        monkeypatch.undo()
    else:
        headers = dkim.arc_sign(hop, selector.encode(), domain.encode(), RSA_PEM, domain.encode())
    assert headers, "dkimpy made no ARC set"
    return b"".join(headers) + hop


def three_hops() -> bytes:
    once = seal(ORIGINAL, "lists.test")
    twice = seal(once, "relay.test", results="arc=pass; dmarc=fail header.from=good.test")
    return seal(twice, "last.test", results="arc=pass; spf=pass smtp.mailfrom=x@relay.test")


async def verify(message: bytes, dns: Dns | None = None) -> ArcResult:
    return await verify_arc(message, txt_lookup=dns or Dns())


async def test_no_arc_fields_is_none() -> None:
    dns = Dns()
    found = await verify(ORIGINAL, dns)
    assert (found.result, found.chain) == ("none", ())
    assert dns.lookups == []


async def test_one_hop_passes_with_the_chain_as_data() -> None:
    found = await verify(seal(ORIGINAL, "lists.test"))
    assert (found.result, found.reason) == ("pass", "")
    assert found.properties == {"header.oldest-pass": "0"}
    [only] = found.chain
    assert (only.instance, only.domain, only.selector, only.cv) == (1, "lists.test", "arc", "none")
    assert only.authserv_id == "lists.test"
    dmarc = only.result_of("dmarc")
    assert dmarc is not None
    assert (dmarc.result, dmarc.properties) == ("pass", {"header.from": "good.test"})
    assert found.newest is only


async def test_three_hops_pass_and_each_sealer_is_read() -> None:
    dns = Dns()
    found = await verify(three_hops(), dns)
    assert found.result == "pass", found.reason
    assert [(s.instance, s.domain, s.cv) for s in found.chain] == [
        (1, "lists.test", "none"),
        (2, "relay.test", "pass"),
        (3, "last.test", "pass"),
    ]
    newest = found.newest
    assert newest is not None
    spf = newest.result_of("spf")
    assert spf is not None
    assert (spf.result, spf.properties) == ("pass", {"smtp.mailfrom": "x@relay.test"})
    assert [(r.method, r.result) for r in found.chain[1].results] == [
        ("arc", "pass"),
        ("dmarc", "fail"),
    ]
    # One lookup per key name, whatever the number of signatures naming it.
    assert sorted(dns.lookups) == [
        "arc._domainkey.last.test",
        "arc._domainkey.lists.test",
        "arc._domainkey.relay.test",
    ]


async def test_ed25519_and_rsa_sealers_in_one_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    first = seal(ORIGINAL, "lists.test", selector="ed", ed25519=True, monkeypatch=monkeypatch)
    assert b"a=ed25519-sha256" in first
    found = await verify(first)
    assert found.result == "pass", found.reason
    both = seal(first, "relay.test", results="arc=pass")
    found = await verify(both)
    assert found.result == "pass", found.reason
    assert [s.selector for s in found.chain] == ["ed", "arc"]


async def test_body_changed_after_the_last_seal_fails() -> None:
    message = seal(ORIGINAL, "lists.test").replace(b"Hello, list.", b"Hello, world.")
    found = await verify(message)
    assert found.result == "fail"
    assert found.reason == "ARC-Message-Signature i=1 did not validate"
    assert "header.oldest-pass" not in found.properties


async def test_body_changed_between_hops_gives_oldest_pass() -> None:
    once = seal(ORIGINAL, "lists.test").replace(b"Hello, list.", b"[list] Hello, list.")
    found = await verify(seal(once, "relay.test", results="arc=pass"))
    # The newest AMS and every AS validate; the AMS of i=1 no longer does.
    assert found.result == "pass", found.reason
    assert found.properties == {"header.oldest-pass": "2"}


async def test_a_tampered_seal_fails() -> None:
    message = seal(ORIGINAL, "lists.test")
    tampered = message.replace(b"cv=none", b"cv=none; q=dns/txt", 1)
    found = await verify(tampered)
    assert found.result == "fail"
    assert found.reason == "ARC-Seal i=1 did not validate"
    # What the sealer saw, upgraded by someone after it: the seal covers the AAR.
    forged = message.replace(b"header.from=good.test", b"header.from=evil.test", 1)
    [evil] = [s for s in (await verify(forged)).chain if s.result_of("dmarc")]
    assert evil.results[0].properties == {"header.from": "evil.test"}  # the AAR's
    found = await verify(forged)
    assert found.result == "fail"
    assert found.reason == "ARC-Seal i=1 did not validate"
    # An older seal tampered with in a chain of three: the newest seal covers it.
    chain = three_hops()
    older = chain.replace(b"ARC-Seal: i=2; cv=pass;", b"ARC-Seal: i=2; cv=pass; q=dns/txt;")
    assert older != chain
    found = await verify(older)
    assert found.result == "fail"
    assert "ARC-Seal i=3 did not validate" in found.reason


def _drop_instance(message: bytes, number: int) -> bytes:
    """The message without the three fields of instance ``number`` (unfolded lines)."""
    kept: list[bytes] = []
    skipping = False
    for line in message.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].lower()
        arc = name in (b"arc-seal", b"arc-message-signature", b"arc-authentication-results")
        skipping = arc and re.search(rb"\bi=%d;" % number, line) is not None
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept)


async def test_broken_structure_fails_with_what_is_wrong() -> None:
    chain = three_hops()
    found = await verify(_drop_instance(chain, 2))
    assert found.result == "fail"
    assert found.reason == "ARC set i=2 missing (the chain goes up to i=3)"
    assert found.chain == ()

    one = seal(ORIGINAL, "lists.test")
    aar = re.search(rb"ARC-Authentication-Results: [^\r]*\r\n(?:[ \t][^\r]*\r\n)*", one)
    assert aar is not None
    found = await verify(aar.group(0) + one)
    assert (found.result, found.reason) == (
        "fail",
        "ARC set i=1 has 2 ARC-Authentication-Results fields",
    )
    found = await verify(one.replace(aar.group(0), b""))
    assert (found.result, found.reason) == ("fail", "ARC set i=1 has no ARC-Authentication-Results")

    found = await verify(b"ARC-Authentication-Results: i=51; x.test; none\r\n" + one)
    assert (found.result, found.reason) == (
        "fail",
        f"ARC-Authentication-Results has i=51 (instances are 1 to {MAX_ARC_SETS})",
    )


async def test_cv_rules_of_the_chain() -> None:
    # i=1 sealed as if a chain existed before (cv=pass): dkimpy refuses to make it, so the
    # seal is edited; the structure check refuses it before any signature is verified.
    dns = Dns()
    one = seal(ORIGINAL, "lists.test")
    found = await verify(one.replace(b"cv=none", b"cv=pass", 1), dns)
    assert (found.result, found.reason) == (
        "fail",
        "ARC-Seal i=1 has cv=pass (instance 1 must say none)",
    )
    assert dns.lookups == []
    # A sealer that found the chain broken says cv=fail: the chain stays failed.
    broken = one.replace(b"Hello, list.", b"changed")
    failed = seal(broken, "relay.test", results="arc=fail")
    assert b"cv=fail" in failed
    found = await verify(failed)
    assert (found.result, found.reason) == (
        "fail",
        "ARC-Seal i=2 says cv=fail (a handler found the chain broken)",
    )


async def test_key_not_in_dns_fails() -> None:
    # RFC 8617 §5.2 steps 4/6: a seal or signature that cannot be validated fails the chain.
    dns = Dns({})
    found = await verify(seal(ORIGINAL, "lists.test"), dns)
    assert found.result == "fail"
    assert found.reason == "ARC-Message-Signature i=1: no key at arc._domainkey.lists.test"
    revoked = Dns({"arc._domainkey.lists.test": [b"v=DKIM1; k=rsa; p="]})
    found = await verify(seal(ORIGINAL, "lists.test"), revoked)
    assert found.result == "fail"
    assert "key revoked" in found.reason


async def test_dns_timeout_is_temperror() -> None:
    dns = Dns(failing=("arc._domainkey.lists.test",))
    found = await verify(seal(ORIGINAL, "lists.test"), dns)
    assert found.result == "temperror"
    assert "LifetimeTimeout" in found.reason
    # ...but a seal that fails on a key that was fetched decides: fail.
    chain = seal(seal(ORIGINAL, "lists.test"), "relay.test", results="arc=pass")
    tampered = chain.replace(b"Hello, list.", b"changed")
    found = await verify(tampered, Dns(failing=("arc._domainkey.lists.test",)))
    assert found.result == "fail"
    assert found.reason == "ARC-Message-Signature i=2 did not validate"


async def test_more_than_fifty_sets_fail() -> None:
    fake = b"".join(b"ARC-Authentication-Results: i=%d; x.test; none\r\n" % n for n in range(1, 52))
    # i=51 is refused by itself; 50 sets are allowed and only fail on their missing seals.
    found = await verify(fake + ORIGINAL)
    assert found.result == "fail"
    assert "i=51" in found.reason
    found = await verify(fake.split(b"ARC-Authentication-Results: i=51")[0] + ORIGINAL)
    assert found.reason == "ARC set i=1 has no ARC-Seal"
