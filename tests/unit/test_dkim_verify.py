"""DKIM verification of every signature (mailauth/dkim_verify.py).

Vectors from dkimpy 1.1.8 (../shared/testdata/dkim/README.md: messages, keys, and the TXT
record each key is served as), messages changed after signing, key records that must be
refused, DNS that cannot answer, and a round trip with pochta's own signer (RSA and Ed25519
side by side). DNS is a dict: no test touches the network.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import dkim
import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pochta.directory.sqlite import SqliteDirectory
from pochta.mailauth import dkim_verify
from pochta.mailauth.dkim_keys import dkim_txt_value, generate_domain_keys, split_txt
from pochta.mailauth.dkim_sign import DkimSigner
from pochta.mailauth.dkim_verify import (
    MAX_SIGNATURES,
    DkimResult,
    DnsTemporaryError,
    resolver_txt_lookup,
    verify_dkim,
)
from pochta.mime.headers import make_field

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "dkim" / "dkimpy-1.1.8"
if not DATA.is_dir():  # a worktree under /work/wt, the shared data beside it
    DATA = Path("/work/shared/testdata/dkim/dkimpy-1.1.8")


def data(name: str) -> bytes:
    return (DATA / name).read_bytes()


# The README's table: which TXT record each vector's key is served as.
RSA_1024_TXT = data("test.txt").strip()
ZONE: dict[str, list[bytes]] = {
    "brisbane._domainkey.football.example.com": [
        b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    ],
    "test._domainkey.football.example.com": [RSA_1024_TXT],
    "sed._domainkey.test.ex": [data("eximtest.dns").strip()],
    "test._domainkey.example.com": [RSA_1024_TXT],
    "test._domainkey.example.net": [data("ed25519test.dns").strip()],
}


class Dns:
    """A zone as a dict; names that raise DnsTemporaryError; every lookup counted."""

    def __init__(
        self, zone: Mapping[str, list[bytes]] | None = None, *, failing: tuple[str, ...] = ()
    ) -> None:
        self.zone = dict(ZONE if zone is None else zone)
        self.failing = failing
        self.lookups: list[str] = []

    async def __call__(self, name: str) -> list[bytes]:
        self.lookups.append(name)
        if name in self.failing:
            raise DnsTemporaryError(f"{name}: LifetimeTimeout")
        return list(self.zone.get(name, []))


def verify(message: bytes, lookup: Dns | None = None, **kwargs: Any) -> list[DkimResult]:
    return asyncio.run(verify_dkim(message, txt_lookup=lookup or Dns(), **kwargs))


def results(found: list[DkimResult]) -> list[str]:
    return [r.result for r in found]


def sign_rsa(message: bytes, *, domain: bytes = b"example.com", selector: bytes = b"test") -> bytes:
    """``message`` with a DKIM-Signature on top, by dkimpy with the RSA-1024 test key."""
    field = dkim.sign(
        message, selector, domain, data("test.private"), canonicalize=(b"relaxed", b"relaxed")
    )
    return bytes(field) + message


def sign_ed25519(message: bytes) -> bytes:
    field = dkim.sign(
        message,
        b"test",
        b"example.net",
        data("ed25519test.key").strip(),
        signature_algorithm=b"ed25519-sha256",
    )
    return bytes(field) + message


def replace_tag(message: bytes, old: bytes, new: bytes) -> bytes:
    assert message.count(old) == 1, old
    return message.replace(old, new)


# -- the vectors -------------------------------------------------------------------------------


def test_rfc8463_appendix_a_ed25519_and_rsa_both_pass() -> None:
    lookup = Dns()
    found = verify(data("rfc6376.signed.msg"), lookup)
    assert results(found) == ["pass", "pass"]
    ed, rsa_ = found
    assert dict(ed.properties) == {
        "header.d": "football.example.com",
        "header.s": "brisbane",
        "header.i": "@football.example.com",
        "header.a": "ed25519-sha256",
        "header.b": "9/dsDChY",  # RFC 6008: the first 8 characters of b=
    }
    assert rsa_.properties["header.s"] == "test"
    assert rsa_.properties["header.a"] == "rsa-sha256"
    assert rsa_.properties["header.b"] == "icKcLSEZ"
    assert (ed.key_bits, rsa_.key_bits) == (256, 1024)
    assert not ed.testing
    assert not rsa_.testing
    assert sorted(lookup.lookups) == [
        "brisbane._domainkey.football.example.com",
        "test._domainkey.football.example.com",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "rfc6376.signed.rsa.msg",  # the RSA signature alone
        "ed25519test2.msg",  # signed by Exim: interop
    ],
)
def test_vector_passes(name: str) -> None:
    assert results(verify(data(name))) == ["pass"]


@pytest.mark.parametrize(
    "name", ["test.message", "rfc6376.msg", "test_extra.message", "rfc6376.w1258.msg"]
)
def test_dkimpy_signed_vectors_pass(name: str) -> None:
    message = data(name)
    assert verify(message) == []  # unsigned: nothing to report
    assert results(verify(sign_rsa(message))) == ["pass"]
    assert results(verify(sign_ed25519(message))) == ["pass"]


def test_tampered_body_fails_both() -> None:
    message = replace_tag(data("rfc6376.signed.msg"), b"We lost the game.", b"We won the game.")
    found = verify(message)
    assert results(found) == ["fail", "fail"]
    assert {r.reason for r in found} == {"body hash did not verify"}


def test_tampered_header_fails_both() -> None:
    message = replace_tag(
        data("rfc6376.signed.msg"), b"Subject: Is dinner ready?", b"Subject: Is lunch ready?"
    )
    found = verify(message)
    assert results(found) == ["fail", "fail"]
    assert {r.reason for r in found} == {"signature did not verify"}


def test_signature_tags_changed_after_signing_fail() -> None:
    # dkimpy's vector: t= removed and x= added without signing again.
    found = verify(data("rfc6376.signed.no_t.msg"))
    assert results(found) == ["fail"]


def test_added_from_field_fails() -> None:
    # RFC 6376 §8.15: a second From added on the way must not ride along (From is signed).
    message = sign_rsa(data("test.message"))
    forged = message.replace(
        b"From: Test User", b"From: Evil <evil@example.org>\r\nFrom: Test User"
    )
    assert results(verify(forged)) == ["fail"]


# -- keys and DNS ------------------------------------------------------------------------------


def test_missing_key_is_permerror() -> None:
    zone = dict(ZONE)
    del zone["test._domainkey.football.example.com"]
    found = verify(data("rfc6376.signed.msg"), Dns(zone))
    # RFC 6376 §6.1.2: no key record is PERMFAIL; the other signature is unaffected.
    assert results(found) == ["pass", "permerror"]
    assert found[1].reason == "no key for signature (test._domainkey.football.example.com)"


def test_dns_timeout_is_temperror() -> None:
    lookup = Dns(failing=("brisbane._domainkey.football.example.com",))
    found = verify(data("rfc6376.signed.msg"), lookup)
    assert results(found) == ["temperror", "pass"]
    assert "LifetimeTimeout" in found[0].reason


def test_each_key_is_looked_up_once_and_before_verifying() -> None:
    message = sign_rsa(sign_rsa(data("test.message")))
    lookup = Dns()
    assert results(verify(message, lookup)) == ["pass", "pass"]
    assert lookup.lookups == ["test._domainkey.example.com"]


@pytest.mark.parametrize(
    ("record", "result", "reason"),
    [
        (b"v=DKIM1; k=rsa; p=", "permerror", "key revoked (empty p=)"),
        (b"v=DKIM1; k=rsa", "permerror", "key record without p="),
        (data("badversion.txt").strip(), "permerror", "key record"),
        (data("badk.txt").strip(), "permerror", "key type ed25519-sha256 does not fit rsa-sha256"),
        (data("ed25519test.dns").strip(), "permerror", "key type ed25519 does not fit"),
        (data("test_bad.txt").strip(), "permerror", "key record unusable"),
        (data("test_tlsrpt.txt").strip(), "permerror", "key is not for email (s=)"),
        (RSA_1024_TXT.replace(b"k=rsa;", b"k=rsa; h=sha1;"), "permerror", "excludes"),
        (b"p=not base64 at all!", "permerror", "key record"),
    ],
)
def test_unusable_key_record(record: bytes, result: str, reason: str) -> None:
    zone = {"test._domainkey.example.com": [record]}
    found = verify(sign_rsa(data("test.message")), Dns(zone))
    assert results(found) == [result]
    assert reason in found[0].reason


def test_key_without_version_still_works() -> None:
    # RFC 6376 §3.6.1: v= is optional in a key record (test2.txt has none).
    zone = {"test._domainkey.example.com": [data("test2.txt").strip()]}
    assert results(verify(sign_rsa(data("test.message")), Dns(zone))) == ["pass"]


def test_first_usable_of_several_records() -> None:
    zone = {"test._domainkey.example.com": [b"v=spf1 -all", RSA_1024_TXT]}
    assert results(verify(sign_rsa(data("test.message")), Dns(zone))) == ["pass"]


def test_testing_key_is_reported() -> None:
    zone = {"test._domainkey.example.com": [RSA_1024_TXT + b"; t=y"]}
    found = verify(sign_rsa(data("test.message")), Dns(zone))
    assert results(found) == ["pass"]
    assert found[0].testing


def test_strict_key_refuses_subdomain_identity() -> None:
    message = data("test.message")
    field = dkim.sign(
        message, b"test", b"example.com", data("test.private"), identity=b"@sub.example.com"
    )
    signed = bytes(field) + message
    assert results(verify(signed)) == ["pass"]
    zone = {"test._domainkey.example.com": [RSA_1024_TXT + b"; t=s"]}
    found = verify(signed, Dns(zone))
    assert results(found) == ["permerror"]
    assert found[0].properties["header.i"] == "@sub.example.com"


def short_rsa_record(bits: int) -> bytes:
    modulus = (1 << (bits - 1)) | 0x10001  # odd, top bit set: a key of exactly `bits` bits
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def test_rsa_key_under_1024_bits_is_policy() -> None:
    zone = {"test._domainkey.example.com": [short_rsa_record(512)]}
    found = verify(sign_rsa(data("test.message")), Dns(zone))
    # RFC 8301 §3.2: never valid, whatever the signature says.
    assert results(found) == ["policy"]
    assert found[0].reason == "RSA key of 512 bits (RFC 8301: at least 1024)"


# -- the signature field -----------------------------------------------------------------------


def test_unsupported_algorithm_is_neutral() -> None:
    message = replace_tag(sign_rsa(data("test.message")), b"a=rsa-sha256", b"a=rsa-sha512")
    lookup = Dns()
    found = verify(message, lookup)
    assert results(found) == ["neutral"]
    assert found[0].reason == "unsupported algorithm rsa-sha512"
    assert lookup.lookups == []  # nothing to fetch for a signature that is not checked


def test_rsa_sha1_is_policy() -> None:
    message = data("test.message")
    field = dkim.sign(
        message, b"test", b"example.com", data("test.private"), signature_algorithm=b"rsa-sha1"
    )
    found = verify(bytes(field) + message)
    assert results(found) == ["policy"]  # RFC 8301 §3.1


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"d=example.com", b"d=exa(mple.com", "invalid signature"),
        (b"s=test", b"s=te st", "s= 'te st' is not a selector"),
        (b"v=1", b"v=2", "invalid signature"),
        (b"bh=", b"xx=", "signature without bh= tag"),
        (b"; s=test", b"; s=test; ==", "signature syntax error"),
    ],
)
def test_malformed_signature_is_permerror(old: bytes, new: bytes, reason: str) -> None:
    message = replace_tag(sign_rsa(data("test.message")), old, new)
    found = verify(message)
    assert results(found) == ["permerror"]
    assert found[0].reason.startswith(reason), found[0].reason


def test_from_not_signed_is_permerror() -> None:
    message = re.sub(rb"; h=[^;]*;", b"; h=to : subject;", sign_rsa(data("test.message")))
    found = verify(message)
    assert results(found) == ["permerror"]
    assert found[0].reason == "From field not signed"  # RFC 6376 §6.1.1


def test_identity_outside_domain_is_permerror() -> None:
    message = replace_tag(sign_rsa(data("test.message")), b"i=@example.com", b"i=@example.org")
    found = verify(message)
    assert results(found) == ["permerror"]
    assert "i= domain is not a subdomain of d=" in found[0].reason


def test_only_the_first_signatures_are_checked() -> None:
    message = data("test.message")
    for _ in range(MAX_SIGNATURES + 2):
        message = sign_rsa(message)
    found = verify(message)
    assert results(found) == ["pass"] * MAX_SIGNATURES + ["policy", "policy"]
    assert found[-1].reason == f"too many signatures (only the first {MAX_SIGNATURES} are checked)"
    assert results(verify(message, max_signatures=1)) == ["pass"] + ["policy"] * (
        MAX_SIGNATURES + 1
    )


def test_lf_line_endings_verify() -> None:
    message = data("rfc6376.signed.msg").replace(b"\r\n", b"\n")
    assert results(verify(message)) == ["pass", "pass"]


def test_header_block_dkimpy_cannot_read_is_permerror() -> None:
    # split_message ends the header at a line that is no field; dkimpy refuses the message.
    signed = sign_rsa(data("rfc6376.msg"))
    broken = signed.replace(b"Subject: Is dinner ready?", b"not a field\r\nSubject: x")
    found = verify(broken)
    assert results(found) == ["permerror"]
    assert found[0].reason.startswith("header block DKIM cannot read")


def test_message_without_final_line_end_verifies() -> None:
    message = b"From: a@example.com\r\nSubject: no body"
    assert results(verify(sign_rsa(message))) == ["pass"]


def test_dkimpy_runs_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []

    class Recording(dkim.DKIM):
        def verify(self, idx: int = 0, dnsfunc: Any = None) -> bool:
            threads.append(threading.get_ident())
            return bool(super().verify(idx=idx, dnsfunc=dnsfunc))

    monkeypatch.setattr(dkim_verify.dkim, "DKIM", Recording)
    assert results(verify(data("rfc6376.signed.msg"))) == ["pass", "pass"]
    assert len(threads) == 2
    assert threading.get_ident() not in threads


# -- pochta's own signer -----------------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[SqliteDirectory]:
    d = SqliteDirectory(tmp_path / "directory.sqlite3")
    yield d
    d.close()


def test_round_trip_with_pochta_signer(tmp_path: Path, directory: SqliteDirectory) -> None:
    keys_dir = tmp_path / "dkim"
    directory.add_domain("example.test")
    zone: dict[str, list[bytes]] = {}
    for sel in generate_domain_keys("example.test", keys_dir):
        directory.add_dkim_selector("example.test", sel)
        # As DNS serves it: strings of at most 255 octets, joined by the lookup.
        zone[f"{sel.selector}._domainkey.example.test"] = [
            "".join(split_txt(dkim_txt_value(sel))).encode()
        ]
    message = (
        b"From: Alice <alice@example.test>\r\n"
        b"To: Bob <bob@example.org>\r\n"
        b"Subject: the plan\r\n"
        b"\r\n"
        b"Hello Bob,\r\nsee you at noon.\r\n"
    )
    signatures = asyncio.run(DkimSigner(directory, keys_dir).sign(message))
    assert signatures is not None
    fields = [make_field("DKIM-Signature", value).raw for value in signatures.values]
    signed = b"".join(fields) + message
    found = verify(signed, Dns(zone))
    assert results(found) == ["pass", "pass"]
    assert [r.properties["header.a"] for r in found] == ["rsa-sha256", "ed25519-sha256"]
    assert [r.key_bits for r in found] == [2048, 256]
    assert {r.properties["header.d"] for r in found} == {"example.test"}
    # Relaxed/relaxed survives refolding by a relay; a changed word does not.
    refolded = signed.replace(b"Subject: the plan", b"Subject:   the\r\n plan")
    assert results(verify(refolded, Dns(zone))) == ["pass", "pass"]
    changed = signed.replace(b"see you at noon", b"see you at nine")
    assert results(verify(changed, Dns(zone))) == ["fail", "fail"]


# -- the dnspython adapter ---------------------------------------------------------------------


class _Rdata:
    def __init__(self, *strings: bytes) -> None:
        self.strings = strings


class _FakeResolver:
    def __init__(self, outcome: object) -> None:
        self.outcome = outcome
        self.asked: list[tuple[str, object, bool]] = []

    async def resolve(self, qname: str, rdtype: object, *, search: bool) -> object:
        self.asked.append((qname, rdtype, search))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def adapter_lookup(outcome: object) -> tuple[_FakeResolver, Any]:
    fake = _FakeResolver(outcome)
    return fake, resolver_txt_lookup(cast(dns.asyncresolver.Resolver, fake))


def test_adapter_joins_strings_and_asks_absolute_name() -> None:
    fake, lookup = adapter_lookup([_Rdata(b"v=DKIM1; k=rsa; ", b"p=AAAA"), _Rdata(b"other")])
    assert asyncio.run(lookup("s._domainkey.example.com")) == [b"v=DKIM1; k=rsa; p=AAAA", b"other"]
    assert fake.asked == [("s._domainkey.example.com.", dns.rdatatype.TXT, False)]


@pytest.mark.parametrize("error", [dns.resolver.NXDOMAIN(), dns.resolver.NoAnswer()])
def test_adapter_no_record_is_empty(error: Exception) -> None:
    _, lookup = adapter_lookup(error)
    assert asyncio.run(lookup("s._domainkey.example.com")) == []


@pytest.mark.parametrize(
    "error", [dns.resolver.LifetimeTimeout(timeout=1.0, errors=[]), dns.resolver.NoNameservers()]
)
def test_adapter_timeout_and_servfail_are_temporary(error: Exception) -> None:
    _, lookup = adapter_lookup(error)
    with pytest.raises(DnsTemporaryError):
        asyncio.run(lookup("s._domainkey.example.com"))
    # And through verify_dkim: temperror, not permerror.
    found = asyncio.run(
        verify_dkim(sign_rsa(data("test.message")), txt_lookup=lookup)  # type: ignore[arg-type]
    )
    assert results(found) == ["temperror"]


def test_small_single_signature_verified_inline_others_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One signature over a small message: no thread hop; a large message or several
    signatures: dkimpy runs in a thread, never on the event loop."""
    hops: list[int] = []
    real = asyncio.to_thread

    async def counting(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(1)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(dkim_verify.asyncio, "to_thread", counting)
    small = sign_rsa(data("test.message"))
    assert results(verify(small)) == ["pass"]
    assert hops == []
    large_body = b"x" * 100 + b"\r\n"
    large = sign_rsa(data("test.message") + large_body * (dkim_verify.INLINE_MAX_BYTES // 100))
    assert results(verify(large)) == ["pass"]
    assert hops == [1]
    assert results(verify(sign_rsa(small, selector=b"test"))) == ["pass", "pass"]
    assert hops == [1, 1]
