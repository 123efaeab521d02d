"""Password schemes: Dovecot's vectors, our Argon2id hashes, rehash rules, malformed input."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.directory.passwords import (
    DUMMY_HASH,
    SUPPORTED_SCHEMES,
    hash_password,
    make_scram_sha256,
    needs_rehash,
    parse_scheme,
    verify_password,
)

VECTORS = Path("/work/shared/testdata/password-hashes/dovecot-2.3.19-doveadm-pw.tsv")
PASSWORD = "S3cret!pw"
# Not "S3cret!pX": DES crypt reads only the first 8 characters.
WRONG = "wrong-password"


def _vectors() -> list[tuple[str, str]]:
    rows = []
    for line in VECTORS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        scheme, stored = line.split("\t")
        rows.append((scheme, stored))
    return rows


@pytest.mark.parametrize(("scheme", "stored"), _vectors(), ids=lambda v: v[:20])
def test_dovecot_vectors(scheme: str, stored: str) -> None:
    assert parse_scheme(stored)[0] == scheme
    if scheme == "CRAM-MD5":
        # An HMAC-MD5 context for CRAM-MD5 only: not a password hash.
        assert scheme not in SUPPORTED_SCHEMES
        assert verify_password(stored, PASSWORD) is False
        assert verify_password(stored, WRONG) is False
        return
    assert scheme in SUPPORTED_SCHEMES
    assert verify_password(stored, PASSWORD) is True
    assert verify_password(stored, WRONG) is False
    assert verify_password(stored, "") is False
    assert needs_rehash(stored) is True


def test_vectors_cover_every_line() -> None:
    assert len(_vectors()) == 21


def test_own_hash_round_trip() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "correct horsE")
    assert not needs_rehash(stored)
    assert stored != hash_password("correct horse")  # salted


def test_own_hash_non_ascii() -> None:
    stored = hash_password("пароль ü")
    assert verify_password(stored, "пароль ü")
    assert not verify_password(stored, "пароль u")


def test_dummy_hash_is_ours() -> None:
    assert DUMMY_HASH.startswith("{ARGON2ID}")
    assert not needs_rehash(DUMMY_HASH)
    assert not verify_password(DUMMY_HASH, "")


def test_rehash_rules() -> None:
    # Dovecot's Argon2id parameters (p=1) differ from ours (p=4).
    assert needs_rehash(
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$a2QfJUI5egc43JMHMlLnww$"
        "n0NDiYa9yVkMEZWD61VBoD6S2raCTWhPZKPMoZlpmr0"
    )
    ours = hash_password("x")
    assert needs_rehash(ours.removeprefix("{ARGON2ID}"))  # bare crypt: not our stored form
    assert needs_rehash("{ARGON2I}" + ours.removeprefix("{ARGON2ID}"))
    assert needs_rehash("{ARGON2ID}$argon2id$garbage")
    assert needs_rehash("")
    assert needs_rehash("{PLAIN}x")


def test_parse_scheme() -> None:
    assert parse_scheme("{sha512-crypt}$6$x") == ("SHA512-CRYPT", "$6$x")
    assert parse_scheme("$6$abc$def") == ("CRYPT", "$6$abc$def")
    assert parse_scheme("plain") == ("", "plain")
    assert parse_scheme("{SHA256.HEX}ab") == ("SHA256.HEX", "ab")
    assert parse_scheme("{}x") == ("", "{}x")


def test_bare_crypt_and_crypt_variants() -> None:
    sha512 = _vectors()[1][1]
    assert verify_password(sha512.removeprefix("{SHA512-CRYPT}"), PASSWORD)
    assert verify_password("{CRYPT}" + sha512.removeprefix("{SHA512-CRYPT}"), PASSWORD)
    # A scheme that names a different crypt family than the value is refused.
    assert not verify_password("{MD5-CRYPT}" + sha512.removeprefix("{SHA512-CRYPT}"), PASSWORD)
    assert not verify_password("{BLF-CRYPT}" + sha512.removeprefix("{SHA512-CRYPT}"), PASSWORD)
    argon = hash_password(PASSWORD).removeprefix("{ARGON2ID}")
    assert verify_password("{CRYPT}" + argon, PASSWORD)
    assert not verify_password("{ARGON2I}" + argon, PASSWORD)


def test_bcrypt_long_password_truncates_like_crypt3() -> None:
    import bcrypt

    long_pw = "a" * 100
    stored = "{BLF-CRYPT}" + bcrypt.hashpw(b"a" * 72, bcrypt.gensalt(4)).decode()
    assert verify_password(stored, long_pw)
    assert verify_password(stored, "a" * 72)
    assert not verify_password(stored, "a" * 71)


def test_digest_encodings() -> None:
    raw = hashlib.sha256(PASSWORD.encode()).digest()
    assert verify_password("{SHA256}" + base64.b64encode(raw).decode(), PASSWORD)
    assert verify_password("{SHA256}" + raw.hex(), PASSWORD)  # Dovecot accepts hex by length
    assert verify_password("{SHA256.HEX}" + raw.hex(), PASSWORD)
    assert verify_password("{SHA256.b64}" + base64.b64encode(raw).decode(), PASSWORD)
    md5_hex = hashlib.md5(PASSWORD.encode()).hexdigest()  # noqa: S324 (an imported legacy scheme)
    assert verify_password("{PLAIN-MD5}" + md5_hex, PASSWORD)
    assert verify_password("{CLEARTEXT}" + PASSWORD, PASSWORD)
    assert verify_password("{PLAIN.B64}" + base64.b64encode(PASSWORD.encode()).decode(), PASSWORD)
    assert not verify_password("{SHA256}" + raw.hex()[:-2], PASSWORD)


def test_make_scram_sha256_format_and_keys() -> None:
    value = make_scram_sha256("pencil", iterations=4096)
    iterations, salt_b64, stored_b64, server_b64 = value.split(",")
    assert iterations == "4096"
    salt = base64.b64decode(salt_b64)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_b64) == hmac.new(salted, b"Server Key", "sha256").digest()
    assert verify_password("{SCRAM-SHA-256}" + value, "pencil")
    assert not verify_password("{SCRAM-SHA-256}" + value, "pencil2")


def test_unknown_and_malformed() -> None:
    for stored in (
        "",
        "{}",
        "{NOPE}x",
        "{SHA512-CRYPT}",
        "{SHA512-CRYPT}$6$",
        "{BLF-CRYPT}$2y$99$zzz",
        "{ARGON2ID}$argon2id$v=19$m=1,t=1,p=1$$",
        "{PBKDF2}$1$salt$0$" + "0" * 40,
        "{PBKDF2}$1$salt$99999999999$" + "0" * 40,
        "{SCRAM-SHA-256}1,2,3",
        "{SCRAM-SHA-256}99999999999,AAAA,AAAA,AAAA",
        "{SSHA}!!!",
        "{SHA1.HEX}zz",
        "{CRYPT}short",
        "nohash",
    ):
        assert verify_password(stored, PASSWORD) is False, stored


@given(stored=st.text(max_size=200), password=st.text(max_size=100))
@settings(max_examples=300, deadline=None)
@example(stored="{BLF-CRYPT}$2y$05$" + "a" * 53, password="x")
@example(stored="{SHA512-CRYPT}$6$rounds=1000$abc$def", password="\x00")
@example(stored="{PLAIN}\udc80", password="\udc80")
def test_malformed_never_raises(stored: str, password: str) -> None:
    assert verify_password(stored, password) in (True, False)
    assert needs_rehash(stored) in (True, False)
    scheme, _ = parse_scheme(stored)
    assert isinstance(scheme, str)


@given(
    scheme=st.sampled_from(sorted(SUPPORTED_SCHEMES)),
    value=st.text(alphabet="$./0123456789abcdefABCDEF=,+:", max_size=120),
    password=st.text(max_size=40),
)
@settings(max_examples=300, deadline=None)
def test_malformed_known_schemes_never_raise(scheme: str, value: str, password: str) -> None:
    assert verify_password("{" + scheme + "}" + value, password) in (True, False)
