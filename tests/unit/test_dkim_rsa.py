"""mailauth/dkim_rsa.py: dkimpy's RSA check through cryptography gives dkimpy's answers."""

from __future__ import annotations

import hashlib

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pochta.mailauth import dkim_rsa, dkim_verify


def _parsed(key: rsa.RSAPrivateKey) -> dict[str, int]:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parsed: dict[str, int] = dkim.crypto.parse_public_key(der)
    return parsed


@pytest.mark.parametrize("bits", [1024, 2048])
@pytest.mark.parametrize("name", ["sha256", "sha1"])
def test_same_answers_as_dkimpy(bits: int, name: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    # rsa-sha1 is still checked (RFC 8301 §3.1 makes it "policy", not "fail").
    algorithm = hashes.SHA256() if name == "sha256" else hashes.SHA1()  # noqa: S303
    data = b"the canonicalized header block"
    signature = key.sign(data, padding.PKCS1v15(), algorithm)
    public = _parsed(key)
    # dkimpy reads a signature as a number: leading zero octets missing or added change
    # nothing for it, and must not for us (OpenSSL itself wants exactly k octets).
    zero_led = b"\0" + signature.lstrip(b"\0")
    cases = {
        "good": (data, signature, True),
        "leading zeros added": (data, b"\0\0" + signature, True),
        "leading zeros dropped": (data, signature.lstrip(b"\0"), True),
        "a zero octet first": (data, zero_led, True),
        "other data": (data + b"!", signature, False),
        "bit flipped": (data, signature[:-1] + bytes([signature[-1] ^ 1]), False),
        "first significant octet cut": (data, signature.lstrip(b"\0")[1:], False),
        "modulus added": (
            data,
            (int.from_bytes(signature, "big") + public["modulus"]).to_bytes(bits // 8 + 1, "big"),
            True,  # dkimpy reduces modulo n, so this passes there too
        ),
    }
    for what, (message, sig, valid) in cases.items():
        ours = dkim_rsa.verify(hashlib.new(name, message), sig, public)
        theirs = dkim.crypto.RSASSA_PKCS1_v1_5_verify(hashlib.new(name, message), sig, public)
        assert ours == theirs, what
        assert ours == valid, what


def test_an_unknown_hash_goes_to_dkimpy() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(KeyError):  # dkimpy's own answer to a hash it has no OID for
        dkim_rsa.verify(hashlib.new("md5", b"x"), b"\0" * 128, _parsed(key))  # noqa: S324


def test_installed_for_dkimpy_by_the_verifier() -> None:
    assert dkim_verify.MAX_SIGNATURES  # the module that installs it is imported
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkim_rsa.verify


def test_parsed_keys_are_remembered_and_copied() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    first = dkim_rsa.parse_public_key(der)
    assert first == dkim.crypto.parse_public_key(der)
    first["modulus"] = 1  # a caller changing its copy ...
    assert dkim_rsa.parse_public_key(der) == dkim.crypto.parse_public_key(der)  # ... changes none
    assert dkim.parse_public_key is dkim_rsa.parse_public_key
