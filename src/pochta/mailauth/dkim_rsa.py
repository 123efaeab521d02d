"""RSA signature checks for dkimpy done by ``cryptography`` (OpenSSL) instead of dkimpy's own
pure-Python modular arithmetic.

dkimpy 1.1 verifies RSASSA-PKCS1-v1_5 (RFC 8017 §8.2.2) in Python: big-integer ``pow`` and a
byte-by-byte integer-to-string loop, about a third of the CPU of checking one 4 KiB message.
:func:`install` points dkimpy's module-level ``RSASSA_PKCS1_v1_5_verify`` (the name its
``DomainSigner.verify_sig_process`` calls, for DKIM and ARC alike) at :func:`verify`, which
gives the same answer through ``cryptography``'s verifier, already a dependency. Anything
``cryptography`` will not take (a hash it does not know here, a key it refuses) is handed
to dkimpy's original function, so results never depend on which one ran.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

__all__ = ["install", "verify"]

_original = dkim.crypto.RSASSA_PKCS1_v1_5_verify

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
    try:
        key = _key(public_key["modulus"], public_key["publicExponent"])
        digest = hash.digest()
        key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # A key or digest OpenSSL refuses (too small a modulus for the digest...): dkimpy's
        # own arithmetic decides, raising what it raises there (DigestTooLargeError).
        return bool(_original(hash, signature, public_key))
    return True


def install() -> None:
    """Make dkimpy check RSA signatures with :func:`verify` (idempotent)."""
    dkim.RSASSA_PKCS1_v1_5_verify = verify
