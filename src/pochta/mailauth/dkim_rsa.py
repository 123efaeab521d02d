"""RSA signature checks for dkimpy done by ``cryptography`` (OpenSSL) instead of dkimpy's own
pure-Python modular arithmetic.

dkimpy 1.1 verifies RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2) in Python: big-integer ``pow`` and a
byte-by-byte integer-to-string loop, about a third of the CPU of checking one 4 KiB message.
:func:`install` points dkimpy's module-level ``RSASSA_PKCS1_v1_5_verify`` (the name its
``DomainSigner.verify_sig_process`` calls, for DKIM and ARC alike) at :func:`verify`, which
gives the same answer through ``cryptography``'s verifier, already a dependency. Anything
``cryptography`` will not take (a hash it does not know here, a key it refuses) is handed
to dkimpy's original function, so results never depend on which one ran. dkimpy's
``parse_public_key`` (its own ASN.1 reader, run for every signature) is remembered for the
last 256 keys.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

__all__ = ["install", "parse_public_key", "verify"]

_original = dkim.crypto.RSASSA_PKCS1_v1_5_verify
_original_parse = dkim.crypto.parse_public_key

# RFC 6376 §3.3: rsa-sha256 (and rsa-sha1, which RFC 8301 §3.1 retires; still checked so
# that the result can say "policy" rather than "fail").
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@functools.lru_cache(maxsize=256)
def _key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def verify(hash: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)`` contract: ``hash``
    a hashlib-like object with ``name`` and ``digest()``, ``public_key`` dkimpy's parsed key
    (``modulus``, ``publicExponent``); True when the signature is valid."""
    algorithm = _HASHES.get(str(getattr(hash, "name", "")).lower())
    if algorithm is None:
        return bool(_original(hash, signature, public_key))
    modulus = public_key["modulus"]
    number = int.from_bytes(signature, "big")
    if number >= modulus:
        return bool(_original(hash, signature, public_key))  # dkimpy reduces it; so do we
    # dkimpy reads the signature as a number, so leading zero octets may be missing or extra
    # (RFC 8017 §8.2.2 step 1 wants exactly k octets; OpenSSL insists): give OpenSSL k.
    signature = number.to_bytes((modulus.bit_length() + 7) // 8, "big")
    try:
        key = _key(modulus, public_key["publicExponent"])
        digest = hash.digest()
        key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # A key or digest OpenSSL refuses (too small a modulus for the digest...): dkimpy's
        # own arithmetic decides, raising what it raises there (DigestTooLargeError).
        return bool(_original(hash, signature, public_key))
    return True


@functools.lru_cache(maxsize=256)
def _parsed_public_key(data: bytes) -> dict[str, int]:
    parsed: dict[str, int] = _original_parse(data)
    return parsed


def parse_public_key(data: bytes) -> dict[str, int]:
    """dkimpy's ``parse_public_key`` (DER SubjectPublicKeyInfo or RSAPublicKey to modulus and
    exponent in its pure-Python ASN.1 reader), remembered for the keys seen last: the same
    few keys sign most mail. A copy each time, so no caller can change the remembered one."""
    return dict(_parsed_public_key(data))


def install() -> None:
    """Make dkimpy check RSA signatures with :func:`verify` and remember parsed keys
    (idempotent)."""
    dkim.RSASSA_PKCS1_v1_5_verify = verify
    dkim.parse_public_key = parse_public_key
