"""Password hashes: Argon2id for everything we write, Dovecot's schemes for what we import.

Stored values use Dovecot's ``{SCHEME}value`` form (doc.dovecot.org, "Password Schemes"), so a
passwd-file exported from pochta can be read by Dovecot and the reverse. New hashes are Argon2id
with t=3 passes, m=64 MiB, p=2 lanes, a 16-byte salt and a 32-byte tag (``ARGON2ID_PARAMETERS``);
anything else (other schemes, other parameters, such as argon2-cffi's default p=4 that
pochta wrote before) verifies but reports ``needs_rehash``, so a login upgrades it.

Why these parameters. RFC 9106 §4 has two recommended options: t=1, m=2 GiB, p=4, which a
mail server cannot afford (a login per IMAP connection, several at once), and t=3, m=64 MiB,
p=4 "if much less memory is available", whose memory and passes we keep: an attacker's cost
per guess is the memory-time product t·m, which the lane count does not change. §4's
procedure then says to pick the lanes from the threads that can be spent on one hash: the
Authenticator runs up to max(2, CPUs) hashes at once, and on the 2-core machines pochta is
measured on p=4 only adds threads (one verification: 131 ms at p=4, 98 ms at p=2, 153 ms at
p=1, argon2-cffi 23, same machine and run), so p=2. Memory is 64 MiB per hash in flight.
The verified-credential cache (directory/auth_cache.py) means a client pays this once per
``[auth] cache_ttl_seconds``, not once per connection, which is why the memory is not lowered
to OWASP's minimum (19 MiB, t=2) to buy login speed.

``verify_password`` never raises: an unknown scheme or a malformed hash verifies as False.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

import argon2
import bcrypt
from argon2.exceptions import InvalidHashError, VerificationError
from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt
from scramp import ScramMechanism
from scramp.utils import saslprep

__all__ = [
    "ARGON2ID_PARAMETERS",
    "DUMMY_HASH",
    "SUPPORTED_SCHEMES",
    "hash_password",
    "make_scram_sha256",
    "needs_rehash",
    "parse_scheme",
    "verify_password",
]

# RFC 9106 §4, second option's t and m with p=2 lanes (see the module docstring).
ARGON2ID_PARAMETERS = argon2.Parameters(
    type=argon2.Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=3,
    memory_cost=64 * 1024,  # KiB
    parallelism=2,
)
_HASHER = argon2.PasswordHasher.from_parameters(ARGON2ID_PARAMETERS)

# Schemes whose value is a raw digest (hex or base64), salted ones with the salt appended
# (RFC 2307 style "{SSHA}" = base64(digest || salt)).
_DIGESTS: dict[str, tuple[Callable[[bytes], hashlib._Hash], bool]] = {
    "SHA512": (hashlib.sha512, False),
    "SHA256": (hashlib.sha256, False),
    "SHA1": (hashlib.sha1, False),
    "SHA": (hashlib.sha1, False),
    "LDAP-MD5": (hashlib.md5, False),
    "PLAIN-MD5": (hashlib.md5, False),
    "SSHA512": (hashlib.sha512, True),
    "SSHA256": (hashlib.sha256, True),
    "SSHA": (hashlib.sha1, True),
    "SMD5": (hashlib.md5, True),
}
# Dovecot's default encoding of each digest scheme (".HEX" / ".B64" suffixes override it).
_DEFAULT_HEX = frozenset({"PLAIN-MD5"})

_SCRAM_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SCRAM-SHA-256": hashlib.sha256,
    "SCRAM-SHA-1": hashlib.sha1,
}

_CRYPT_SCHEMES = frozenset(
    {"ARGON2ID", "ARGON2I", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "MD5", "BLF-CRYPT"}
    | {"DES-CRYPT", "CRYPT"}
)
_PLAIN_SCHEMES = frozenset({"PLAIN", "CLEARTEXT"})

SUPPORTED_SCHEMES: frozenset[str] = frozenset(
    _CRYPT_SCHEMES
    | _PLAIN_SCHEMES
    | {"PBKDF2"}
    | set(_SCRAM_HASHES)
    | set(_DIGESTS)
    | {f"{s}.{enc}" for s in (*_DIGESTS, *_PLAIN_SCHEMES) for enc in ("HEX", "B64")}
)
"""Scheme names ``verify_password`` understands (upper case, as ``parse_scheme`` returns them).
``{CRAM-MD5}`` is absent on purpose: it stores an HMAC-MD5 context, not a password hash."""

_SCHEME_RE = re.compile(r"^\{([A-Za-z0-9._-]{1,40})\}")
_PBKDF2_RE = re.compile(r"^\$1\$([^$]+)\$([0-9]{1,9})\$([0-9a-fA-F]{40})$")
_MAX_ITERATIONS = 10_000_000  # DoS guard on stored iteration counts (scramp uses the same cap)
_SCRAM_SALT_BYTES = 16
_BCRYPT_MAX_BYTES = 72  # bcrypt uses the first 72 octets, as crypt(3) and Dovecot do


def parse_scheme(stored: str) -> tuple[str, str]:
    """Split ``"{SCHEME}value"`` into ``("SCHEME", "value")``, the scheme upper-cased.

    A bare crypt string (``"$6$..."``) is ``("CRYPT", stored)``, as Dovecot's passwd-file
    reads it; anything else without a ``{SCHEME}`` prefix is ``("", stored)``.
    """
    m = _SCHEME_RE.match(stored)
    if m:
        return m.group(1).upper(), stored[m.end() :]
    if stored.startswith("$"):
        return "CRYPT", stored
    return "", stored


def hash_password(password: str) -> str:
    """A new ``{ARGON2ID}$argon2id$v=19$...`` hash of ``password``."""
    return "{ARGON2ID}" + _HASHER.hash(password)


def needs_rehash(stored: str) -> bool:
    """True unless ``stored`` is Argon2id with exactly our parameters."""
    scheme, value = parse_scheme(stored)
    if scheme != "ARGON2ID" or not value.startswith("$argon2id$"):
        return True
    try:
        return _HASHER.check_needs_rehash(value)
    except Exception:  # malformed parameters
        return True


def make_scram_sha256(password: str, iterations: int = 4096) -> str:
    """``"iterations,salt_b64,StoredKey_b64,ServerKey_b64"`` (Dovecot's SCRAM-SHA-256 format).

    RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i); StoredKey = H(HMAC(
    SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
    RFC 7677 §4: at least 4096 iterations.
    """
    # A 16-octet salt, as Dovecot makes (and as the SASL layer's fake keys for unknown users
    # look, so the two cannot be told apart by salt length).
    salt, stored_key, server_key, i = ScramMechanism("SCRAM-SHA-256").make_auth_info(
        password, iteration_count=iterations, salt=secrets.token_bytes(_SCRAM_SALT_BYTES)
    )
    b64 = base64.b64encode
    return f"{i},{b64(salt).decode()},{b64(stored_key).decode()},{b64(server_key).decode()}"


def verify_password(stored: str, password: str) -> bool:
    """Does ``password`` match ``stored``? False for unknown schemes and malformed hashes."""
    try:
        return _verify(stored, password)
    except Exception:  # malformed hash or a library refusal: a failed match, never a crash
        return False


def _verify(stored: str, password: str) -> bool:
    scheme, value = parse_scheme(stored)
    encoding = ""
    if scheme.endswith((".HEX", ".B64")):
        scheme, encoding = scheme[:-4], scheme[-3:]
    secret = password.encode("utf-8")
    if scheme in _CRYPT_SCHEMES and not encoding:
        return _verify_crypt(scheme, value, password, secret)
    if scheme in _PLAIN_SCHEMES:
        expected = _decode(value, encoding) if encoding else value.encode("utf-8")
        return expected is not None and hmac.compare_digest(expected, secret)
    if scheme in _DIGESTS:
        return _verify_digest(scheme, value, encoding, secret)
    if scheme == "PBKDF2" and not encoding:
        return _verify_pbkdf2(value, secret)
    if scheme in _SCRAM_HASHES and not encoding:
        return _verify_scram(_SCRAM_HASHES[scheme], value, password)
    return False  # unknown scheme, or CRAM-MD5/DIGEST-MD5 contexts that are not hashes


def _verify_crypt(scheme: str, value: str, password: str, secret: bytes) -> bool:
    if value.startswith("$argon2"):
        want = {"ARGON2ID": "$argon2id$", "ARGON2I": "$argon2i$"}.get(scheme)
        if want is not None and not value.startswith(want):
            return False
        if scheme not in ("ARGON2ID", "ARGON2I", "CRYPT"):
            return False
        try:
            return _HASHER.verify(value, password)
        except (VerificationError, InvalidHashError):
            return False
    if scheme in ("ARGON2ID", "ARGON2I"):
        return False
    if value.startswith(("$2a$", "$2b$", "$2y$", "$2x$")):
        if scheme not in ("BLF-CRYPT", "CRYPT"):
            return False
        # bcrypt(3) reads $2y$ as $2b$; the library refuses more than 72 octets, crypt(3)
        # truncates them, and so does Dovecot through libc crypt.
        return bcrypt.checkpw(secret[:_BCRYPT_MAX_BYTES], value.encode("ascii"))
    if scheme == "BLF-CRYPT":
        return False
    if "\x00" in password:
        return False  # crypt(3) takes a C string
    if value.startswith("$6$") and scheme in ("SHA512-CRYPT", "CRYPT"):
        return bool(sha512_crypt.verify(password, value))
    if value.startswith("$5$") and scheme in ("SHA256-CRYPT", "CRYPT"):
        return bool(sha256_crypt.verify(password, value))
    if value.startswith("$1$") and scheme in ("MD5-CRYPT", "MD5", "CRYPT"):
        return bool(md5_crypt.verify(password, value))
    if len(value) == 13 and scheme in ("DES-CRYPT", "CRYPT"):
        return bool(des_crypt.verify(password, value))
    return False


def _decode(value: str, encoding: str) -> bytes | None:
    try:
        if encoding == "HEX":
            return bytes.fromhex(value)
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):
        return None


def _verify_digest(scheme: str, value: str, encoding: str, secret: bytes) -> bool:
    algorithm, salted = _DIGESTS[scheme]
    size = algorithm(b"").digest_size
    if not encoding:
        encoding = "HEX" if scheme in _DEFAULT_HEX else "B64"
        # Dovecot's password_decode also reads hex where base64 is the default, when the
        # length says so (an unsalted digest written as hex).
        if not salted and len(value) == 2 * size and re.fullmatch(r"[0-9a-fA-F]+", value):
            encoding = "HEX"
    raw = _decode(value, encoding)
    if raw is None or len(raw) < size or (not salted and len(raw) != size):
        return False
    digest, salt = raw[:size], raw[size:]
    return hmac.compare_digest(algorithm(secret + salt).digest(), digest)


def _verify_pbkdf2(value: str, secret: bytes) -> bool:
    # Dovecot's PBKDF2 scheme: "$1$salt$rounds$hex", PBKDF2-HMAC-SHA1 (RFC 8018 §5.2) with the
    # salt string's bytes as salt and a 20-octet derived key.
    m = _PBKDF2_RE.match(value)
    if not m:
        return False
    salt, rounds, expected = m.group(1).encode("utf-8"), int(m.group(2)), m.group(3).lower()
    if not 1 <= rounds <= _MAX_ITERATIONS:
        return False
    derived = hashlib.pbkdf2_hmac("sha1", secret, salt, rounds, 20).hex()
    return hmac.compare_digest(derived, expected)


def _verify_scram(algorithm: Callable[[bytes], hashlib._Hash], value: str, password: str) -> bool:
    # RFC 5802 §3: a login password is right when H(HMAC(Hi(pw, salt, i), "Client Key"))
    # equals the stored StoredKey.
    parts = value.split(",")
    if len(parts) != 4 or not parts[0].isdigit():
        return False
    iterations = int(parts[0])
    salt = _decode(parts[1], "B64")
    stored_key = _decode(parts[2], "B64")
    name = algorithm(b"").name
    size = algorithm(b"").digest_size
    if salt is None or stored_key is None or len(stored_key) != size:
        return False
    if not 1 <= iterations <= _MAX_ITERATIONS:
        return False
    try:
        # RFC 5802 §2.2 Normalize(): SASLprep (RFC 4013); fall back to the raw UTF-8 for a
        # password SASLprep refuses, which is what a non-preparing client would have used.
        prepared = saslprep(password)
    except Exception:
        prepared = password
    salted = hashlib.pbkdf2_hmac(name, prepared.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    return hmac.compare_digest(algorithm(client_key).digest(), stored_key)


DUMMY_HASH: str = hash_password(secrets.token_urlsafe(32))
"""An Argon2id hash of a random secret, made once per process: verify an unknown user's
password against it so the answer takes as long as for a known user."""
