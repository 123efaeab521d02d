"""DKIM keys: the key we write signs with dkimpy, and the TXT value we print verifies it."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pochta.directory.model import DkimSelector
from pochta.mailauth.dkim_keys import (
    Algorithm,
    DkimKeyError,
    dkim_txt_value,
    generate_domain_keys,
    generate_selector,
    load_private_key,
    split_txt,
)

dkim = pytest.importorskip("dkim")
pytest.importorskip("nacl")

DOMAIN = "example.test"
MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: keys\r\n"
    b"Date: Mon, 06 Jan 2025 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


def _dnsfunc(records: dict[str, str]):  # type: ignore[no-untyped-def]
    """A dkimpy dnsfunc answering from ``records`` (name -> TXT value), the way DNS would:
    our zone output splits the value into strings, a resolver joins them again."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip(".").lower())
        return "".join(split_txt(value)).encode() if value is not None else None

    return lookup


def _sign(sel: DkimSelector, message: bytes = MESSAGE) -> bytes:
    signature: bytes = dkim.sign(
        message,
        sel.selector.encode(),
        DOMAIN.encode(),
        load_private_key(sel),
        signature_algorithm=sel.algorithm.encode(),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_signature_verifies_with_published_record(tmp_path: Path, algorithm: Algorithm) -> None:
    sel = generate_selector(DOMAIN, tmp_path, algorithm)
    records = {f"{sel.selector}._domainkey.{DOMAIN}": dkim_txt_value(sel)}
    signed = _sign(sel) + MESSAGE
    assert f"a={algorithm}".encode() in signed
    assert dkim.verify(signed, dnsfunc=_dnsfunc(records))
    # A changed body fails: the check is real.
    assert not dkim.verify(signed.replace(b"Hello Bob", b"Hello Eve"), dnsfunc=_dnsfunc(records))


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_other_key_does_not_verify(tmp_path: Path, algorithm: Algorithm) -> None:
    sel = generate_selector(DOMAIN, tmp_path, algorithm, selector="one")
    other = generate_selector(DOMAIN, tmp_path, algorithm, selector="two")
    records = {f"one._domainkey.{DOMAIN}": dkim_txt_value(other)}
    assert not dkim.verify(_sign(sel) + MESSAGE, dnsfunc=_dnsfunc(records))


def test_domain_keys_both_sign(tmp_path: Path) -> None:
    sels = generate_domain_keys(DOMAIN, tmp_path)
    assert [s.algorithm for s in sels] == ["rsa-sha256", "ed25519-sha256"]
    records = {f"{s.selector}._domainkey.{DOMAIN}": dkim_txt_value(s) for s in sels}
    message = MESSAGE
    for sel in sels:
        message = _sign(sel, message) + message
    # dkimpy verifies the topmost signature (the Ed25519 one) ...
    assert dkim.verify(message, dnsfunc=_dnsfunc(records))
    # ... and each signature on its own.
    d = dkim.DKIM(message)
    assert all(d.verify(idx=i, dnsfunc=_dnsfunc(records)) for i in range(2))


def test_files_and_public_keys(tmp_path: Path) -> None:
    now = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)
    rsa_sel = generate_selector("Example.TEST", tmp_path, "rsa-sha256", now=now)
    ed_sel = generate_selector(DOMAIN, tmp_path, "ed25519-sha256", now=now)
    assert rsa_sel.selector == "rsa-202501"
    assert ed_sel.selector == "ed-202501"
    assert rsa_sel.created == int(now.timestamp())
    assert rsa_sel.active
    for sel in (rsa_sel, ed_sel):
        path = Path(sel.key_path)
        assert path.is_absolute()
        assert path == tmp_path / DOMAIN / f"{sel.selector}.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / DOMAIN).stat().st_mode) == 0o700
    rsa_pem = Path(rsa_sel.key_path).read_bytes()
    assert rsa_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert Path(ed_sel.key_path).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    # RFC 6376 §3.6.1: RSA p= is a DER SubjectPublicKeyInfo of the private key's public half.
    public = serialization.load_der_public_key(base64.b64decode(rsa_sel.public_key_b64))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    private = serialization.load_pem_private_key(rsa_pem, None)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    # RFC 8463 §4.2: Ed25519 p= is the raw 32-byte key.
    assert len(base64.b64decode(ed_sel.public_key_b64)) == 32
    assert dkim_txt_value(rsa_sel) == f"v=DKIM1; k=rsa; p={rsa_sel.public_key_b64}"
    assert dkim_txt_value(ed_sel) == f"v=DKIM1; k=ed25519; p={ed_sel.public_key_b64}"


def test_default_selector_suffix_when_taken(tmp_path: Path) -> None:
    now = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    first = generate_selector(DOMAIN, tmp_path, "ed25519-sha256", now=now)
    second = generate_selector(DOMAIN, tmp_path, "ed25519-sha256", now=now)
    third = generate_selector(DOMAIN, tmp_path, "ed25519-sha256", now=now, taken=["ed-202503-3"])
    assert [first.selector, second.selector, third.selector] == [
        "ed-202503",
        "ed-202503-2",
        "ed-202503-4",
    ]


def test_explicit_selector_checks(tmp_path: Path) -> None:
    generate_selector(DOMAIN, tmp_path, "ed25519-sha256", selector="mail")
    with pytest.raises(DkimKeyError, match="already exists"):
        generate_selector(DOMAIN, tmp_path, "ed25519-sha256", selector="mail")
    with pytest.raises(DkimKeyError, match="already exists"):
        generate_selector(DOMAIN, tmp_path, "rsa-sha256", selector="x", taken=["X"])
    for bad in ("bad_selector", "-x", "a..b", "", "a/b"):
        with pytest.raises(DkimKeyError, match="not a valid DKIM selector"):
            generate_selector(DOMAIN, tmp_path, "ed25519-sha256", selector=bad)
    assert (
        generate_selector(DOMAIN, tmp_path, "ed25519-sha256", selector="2025.Jan").selector
        == "2025.jan"
    )


def test_rsa_bits(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match="RFC 8301"):
        generate_selector(DOMAIN, tmp_path, "rsa-sha256", rsa_bits=512)
    assert not list(tmp_path.glob("*/*.key")), "a refused key leaves no file"
    sel = generate_selector(DOMAIN, tmp_path, "rsa-sha256", rsa_bits=4096)
    value = dkim_txt_value(sel)
    parts = split_txt(value)
    assert len(parts) == 3
    records = {f"{sel.selector}._domainkey.{DOMAIN}": value}
    assert dkim.verify(_sign(sel) + MESSAGE, dnsfunc=_dnsfunc(records))


def test_split_txt() -> None:
    assert split_txt("") == [""]
    assert split_txt("v=spf1 -all") == ["v=spf1 -all"]
    for n in (254, 255, 256, 510, 511, 1000):
        value = "".join(chr(ord("a") + i % 26) for i in range(n))
        parts = split_txt(value)
        assert "".join(parts) == value
        assert all(1 <= len(p.encode()) <= 255 for p in parts)
        assert all(len(p.encode()) == 255 for p in parts[:-1])
    # Never cuts a UTF-8 sequence in two.
    value = "a" + "é" * 300
    parts = split_txt(value)
    assert "".join(parts) == value
    assert all(len(p.encode()) <= 255 for p in parts)


def test_load_private_key_formats(tmp_path: Path) -> None:
    ed = generate_selector(DOMAIN, tmp_path, "ed25519-sha256")
    seed_b64 = load_private_key(ed)
    assert len(base64.b64decode(seed_b64)) == 32
    # A dkimpy dknewkey-style file (base64 seed) is read as is.
    imported = tmp_path / "imported.key"
    imported.write_bytes(seed_b64 + b"\n")
    sel = DkimSelector(
        selector=ed.selector,
        algorithm=ed.algorithm,
        key_path=str(imported),
        public_key_b64=ed.public_key_b64,
    )
    assert load_private_key(sel) == seed_b64
    # An RSA key in PKCS#8 form is handed to dkimpy as PKCS#1.
    rs = generate_selector(DOMAIN, tmp_path, "rsa-sha256")
    key = serialization.load_pem_private_key(Path(rs.key_path).read_bytes(), None)
    pkcs8 = tmp_path / "pkcs8.key"
    pkcs8.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rs8 = DkimSelector(
        selector=rs.selector,
        algorithm=rs.algorithm,
        key_path=str(pkcs8),
        public_key_b64=rs.public_key_b64,
    )
    assert load_private_key(rs8).startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_load_private_key_errors(tmp_path: Path) -> None:
    ed = generate_selector(DOMAIN, tmp_path, "ed25519-sha256")
    rs = generate_selector(DOMAIN, tmp_path, "rsa-sha256")
    swapped = DkimSelector(
        selector=ed.selector, algorithm="rsa-sha256", key_path=ed.key_path, public_key_b64=""
    )
    with pytest.raises(DkimKeyError, match="is not a rsa key"):
        load_private_key(swapped)
    Path(rs.key_path).unlink()
    with pytest.raises(DkimKeyError, match="is missing"):
        load_private_key(rs)
    Path(ed.key_path).write_text("garbage")
    with pytest.raises(DkimKeyError, match="not an unencrypted PEM"):
        load_private_key(ed)


# -- add_selectors / add_domain_keys: make and register, all or nothing ------------------------


def test_add_domain_keys_registers_both_and_warning_goes_away(tmp_path: Path) -> None:
    from pochta.directory.sqlite import SqliteDirectory
    from pochta.dns.records import dkim_key_warning
    from pochta.mailauth.dkim_keys import add_domain_keys

    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    try:
        directory.add_domain(DOMAIN)
        found = directory.get_domain(DOMAIN)
        assert found is not None
        warning = dkim_key_warning(DOMAIN, found.dkim)
        assert warning is not None
        assert f"pochta dkim keygen {DOMAIN}" in warning
        assert "--all-missing" in warning
        made = add_domain_keys(directory, DOMAIN, tmp_path / "keys")
        assert [s.algorithm for s in made] == ["rsa-sha256", "ed25519-sha256"]
        found = directory.get_domain(DOMAIN)
        assert found is not None
        assert {s.selector for s in found.dkim} == {s.selector for s in made}
        assert dkim_key_warning(DOMAIN, found.dkim) is None
        staged = [msgspec.structs.replace(s, active=False) for s in found.dkim]
        inactive = dkim_key_warning(DOMAIN, staged)
        assert inactive is not None
        assert f"pochta dkim activate {DOMAIN}" in inactive
    finally:
        directory.close()


def test_add_selectors_leaves_nothing_when_one_key_fails(tmp_path: Path) -> None:
    from pochta.directory.sqlite import SqliteDirectory
    from pochta.mailauth.dkim_keys import ALGORITHMS, DkimKeyError, add_selectors

    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    try:
        directory.add_domain(DOMAIN)
        # The RSA key "x" is made, then the Ed25519 one cannot take the same name.
        with pytest.raises(DkimKeyError, match="already exists"):
            add_selectors(directory, DOMAIN, tmp_path / "keys", ALGORITHMS, selector="x")
        found = directory.get_domain(DOMAIN)
        assert found is not None
        assert found.dkim == ()
        assert list((tmp_path / "keys" / DOMAIN).glob("*.key")) == []
    finally:
        directory.close()


# -- the host name's own keys (issue 13 point 2) ----------------------------------------------


@pytest.mark.parametrize(
    ("hosted", "hostname", "needs"),
    [
        ("example.test", "mx.provider.test", True),
        ("example.test", "example.test", False),
        ("example.test", "mail.example.test", False),  # the parent signs (relaxed alignment)
        ("example.test", "a.b.example.test", False),
        ("sub.provider.test", "provider.test", True),  # a subdomain does not contain it
        ("provider.test", "provider.test.", False),  # the trailing dot changes nothing
    ],
)
def test_host_needs_own_keys(tmp_path: Path, hosted: str, hostname: str, needs: bool) -> None:
    from pochta.directory.sqlite import SqliteDirectory
    from pochta.mailauth.dkim_keys import host_needs_own_keys

    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    try:
        directory.add_domain(hosted)
        assert host_needs_own_keys(directory, hostname) is needs
    finally:
        directory.close()


def test_add_host_keys_makes_a_signing_only_row_with_both_keys(tmp_path: Path) -> None:
    from pochta.directory.sqlite import SqliteDirectory
    from pochta.mailauth.dkim_keys import add_host_keys, host_needs_own_keys
    from pochta.mailauth.dkim_sign import DkimSigner

    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    try:
        directory.add_domain(DOMAIN)
        made = add_host_keys(directory, "MX.Provider.test", tmp_path / "keys")
        assert [s.algorithm for s in made] == ["rsa-sha256", "ed25519-sha256"]
        assert all(Path(s.key_path).parent == tmp_path / "keys" / "mx.provider.test" for s in made)
        found = directory.get_domain("mx.provider.test")
        assert found is not None
        assert found.signing_only
        assert {s.selector for s in found.dkim} == {s.selector for s in made}
        assert not host_needs_own_keys(directory, "mx.provider.test")
        # The signer finds it for the notices' From domain, and for nothing else.
        signer = DkimSigner(directory, tmp_path / "keys")
        assert signer.hosted_signer("mx.provider.test") == found
        hosted = signer.hosted_signer(DOMAIN)
        assert hosted is not None
        assert hosted.name == DOMAIN
        bare = add_host_keys(directory, "other.test", tmp_path / "keys", make_keys=False)
        assert bare == []
        other = directory.get_domain("other.test")
        assert other is not None
        assert (other.signing_only, other.dkim) == (True, ())
    finally:
        directory.close()
