"""directory.account_import (the file of `pochta user import`, read and hashed) and the
SQLite directory's one-transaction import_accounts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.directory.account_import import hash_entries, read_accounts, to_account
from pochta.directory.base import DirectoryError
from pochta.directory.model import Account
from pochta.directory.passwords import verify_password
from pochta.directory.sqlite import SqliteDirectory

D = "example.org"
SHA512 = (  # doveadm pw -s SHA512-CRYPT (the test data's line)
    "$6$GE.9sUKTQ4VRsm39$znFFH7nPTsJJk1kmhoW/jcCtBSRktvi3lPiqSknWvTn29ocjfIQJdEAo/xM5VNH.AsI.Sl"
    "iJ5ScMr8LJuxkQh0"
)


def test_passwd_lines_with_hashes_plaintext_comments_and_quota() -> None:
    text = (
        "# a Dovecot passwd-file\n"
        "\n"
        f"a@{D}:{{SHA512-CRYPT}}{SHA512}:1000:1000::/home/a::userdb_quota_rule=*:storage=1G\r\n"
        f"B@{D.upper()}:plain-pw-1\n"
        f"c@{D}:{{plain}}Other-pw-2::::::userdb_quota_storage_size=2M\n"
        f"d@{D}:$1$Pbdfu.GA$h0ytA4SmUdSmUM8XWkxHa1\n"
    )
    entries, errors = read_accounts(text, "f")
    assert errors == []
    a, b, c, d = entries
    assert (a.line, a.address, a.password_hash, a.quota_bytes) == (
        3,
        f"a@{D}",
        "{SHA512-CRYPT}" + SHA512,
        1024**3,
    )
    assert (b.line, b.address, b.password, b.password_hash) == (4, f"b@{D}", "plain-pw-1", "")
    # {PLAIN} is a plaintext password: hashed at import like a bare one.
    assert (c.password, c.password_hash, c.quota_bytes) == ("Other-pw-2", "", 2 * 1024**2)
    assert d.password_hash == "{CRYPT}$1$Pbdfu.GA$h0ytA4SmUdSmUM8XWkxHa1"


def test_csv_with_header_quoting_and_columns() -> None:
    text = (
        "Address, Password , password_hash,quota,enabled\n"
        f'x@{D},"a,b:c ""q""",,unlimited,no\n'
        f"y@{D},,{{SSHA}}z1bPXRZkRa/eUqZUgetX0BMBBRxboLrg,500M,\n"
    )
    entries, errors = read_accounts(text, "f")
    assert errors == []
    x, y = entries
    assert (x.line, x.password, x.quota_bytes, x.enabled) == (2, 'a,b:c "q"', 0, False)
    assert (y.line, y.password_hash, y.quota_bytes, y.enabled) == (
        3,
        "{SSHA}z1bPXRZkRa/eUqZUgetX0BMBBRxboLrg",
        500 * 1024**2,
        True,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"x@{D},pw-1234567,{{SHA}}abc,,", f"x@{D} has both a password and a password_hash"),
        (f"x@{D},,,,", f"x@{D} has no password and no password_hash"),
        (f"x@{D},pw-1234567,,lots,", "quota 'lots' is not a size"),
        (f"x@{D},pw-1234567,,,maybe", "enabled 'maybe' is not yes or no"),
        (f'x@{D},"pw,,,', "not a CSV record"),
        (f"x@{D},,{{CRAM-MD5}}abcd,,", "can only answer CRAM-MD5 challenges"),
    ],
)
def test_csv_bad_records_name_their_line(line: str, message: str) -> None:
    text = f"address,password,password_hash,quota,enabled\n{line}\ny@{D},ok-pw-12345,,,\n"
    entries, errors = read_accounts(text, "users.csv")
    assert [e.address for e in entries] == [f"y@{D}"]
    (error,) = errors
    assert (error.source, error.line) == ("users.csv", 2)
    assert message in error.message


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("address,secret", "unknown column 'secret'"),
        ("address,quota", "needs a 'password' or a 'password_hash' column"),
        ("address,password,address", "the column 'address' is named twice"),
    ],
)
def test_a_bad_csv_header_stops_the_reading(header: str, message: str) -> None:
    entries, errors = read_accounts(f"# users\n{header}\nx@{D},a,b\n", "f")
    assert entries == []
    (error,) = errors
    assert error.line == 2
    assert message in error.message


def test_duplicates_and_passwd_line_errors() -> None:
    text = f"a@{D}:pw-1234567\nb@{D}\na@{D}:pw-7654321\nc@{D}:\n{'x' * 70000}@{D}:pw\n"
    entries, errors = read_accounts(text, "f")
    assert [e.address for e in entries] == [f"a@{D}"]
    assert [(e.line, e.message) for e in errors] == [
        (2, "no ':' after the address; write address:password"),
        (3, f"a@{D} is already on line 1"),
        (4, f"c@{D} has an empty password"),
        (5, "the line is longer than 65536 characters"),
    ]


def test_hash_entries_spreads_plaintext_and_keeps_hashes() -> None:
    text = "".join(f"u{i}@{D}:Pw-number-{i}\n" for i in range(5)) + f"h@{D}:{{SHA}}hash\n"
    entries, _ = read_accounts(text, "f")
    done: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        hashed = hash_entries(entries, executor=pool, progress=done.append)
    assert sum(done) == 5  # one step per plaintext password
    assert [e.address for e in hashed] == [e.address for e in entries]
    for i, entry in enumerate(hashed[:5]):
        assert entry.password == ""
        assert entry.password_hash.startswith("{ARGON2ID}$argon2id$")
        assert verify_password(entry.password_hash, f"Pw-number-{i}")
        assert entry.scram_sha256.startswith("4096,")
    assert hashed[5].password_hash == "{SHA}hash"
    with pytest.raises(AssertionError):
        to_account(entries[0], 0, replacing=False)  # not hashed yet


def _account(address: str, quota: int = 0) -> Account:
    return Account(address=address, password_hash="{PLAIN}x", quota_bytes=quota)


def test_sqlite_import_is_all_or_nothing(tmp_path: Path) -> None:
    directory = SqliteDirectory(tmp_path / "dir.db")
    try:
        directory.add_domain(D)
        directory.add_account(f"old@{D}", password_hash="{PLAIN}old", quota_bytes=7)
        directory.add_alias(f"info@{D}", [f"old@{D}"])
        for bad in (f"old@{D}", f"info@{D}", "x@missing.test"):
            new = [_account(f"a@{D}"), _account(bad)]
            with pytest.raises(DirectoryError):
                directory.import_accounts(new)
            assert directory.get_account(f"a@{D}") is None  # the first one was not kept
        with pytest.raises(DirectoryError, match="no account nobody@"):
            directory.import_accounts([_account(f"a@{D}")], [_account(f"nobody@{D}")])
        assert directory.get_account(f"a@{D}") is None

        replaced = Account(address=f"old@{D}", password_hash="{PLAIN}new", quota_bytes=-1)
        assert directory.import_accounts([_account(f"a@{D}", 5)], [replaced]) == (1, 1)
        old = directory.get_account(f"old@{D}")
        assert old is not None
        assert (old.password_hash, old.quota_bytes) == ("{PLAIN}new", 7)  # -1 keeps the quota
        a = directory.get_account(f"a@{D}")
        assert a is not None
        assert a.quota_bytes == 5
    finally:
        directory.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "address,password,password_hash,quota,enabled",
                f"a@{D}:pw-123456",
                f"b@{D},pw,,1G,no",
                f'"c@{D}",,{{SHA}}x,,',
                "{PLAIN}",
                ":",
                ",",
                '"',
                "#",
                "\r",
                "\x00",
                "userdb_quota_rule=*:storage=",
            ]
        )
        | st.text(max_size=40),
        max_size=8,
    )
)
def test_any_input_gives_entries_or_line_errors(parts: list[str]) -> None:
    text = "\n".join(parts)
    entries, errors = read_accounts(text, "f")
    lines = text.split("\n")
    for entry in entries:
        assert 1 <= entry.line <= len(lines)
        assert bool(entry.password) != bool(entry.password_hash)
    for error in errors:
        assert 1 <= error.line <= len(lines)
    assert len({e.line for e in entries} & {e.line for e in errors}) == 0


TESTDATA = Path("/work/shared/testdata/password-hashes/dovecot-2.3.19-doveadm-pw.tsv")


def test_every_dovecot_hash_of_the_test_data_is_read_but_cram_md5() -> None:
    rows = [r.split("\t") for r in TESTDATA.read_text().splitlines() if not r.startswith("#")]
    text = "".join(f"u{i}@{D}:{value}\n" for i, (_, value) in enumerate(rows))
    entries, errors = read_accounts(text, "f")
    assert [rows[e.line - 1][0] for e in errors] == ["CRAM-MD5"]
    assert len(entries) == len(rows) - 1
    for entry in entries:
        # PLAIN is hashed at import; every other value is kept as doveadm wrote it.
        scheme, value = rows[entry.line - 1]
        assert (entry.password or entry.password_hash) == (
            "S3cret!pw" if scheme == "PLAIN" else value
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # A plaintext password that starts with "$" would import as a crypt hash and then
        # never match: refused with the way to write it.
        ("$ecret-pw-1", "a plaintext password that starts with '$' or '{' is written {PLAIN}"),
        ("{CRYPT}not-a-hash", "not a crypt(3) hash pochta can verify"),
        (
            "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
            "yescrypt ($y$), which pochta cannot verify",
        ),
        ("{SHA512-CRYPT}$6$salt$short", "not a crypt(3) hash"),
    ],
)
def test_a_crypt_value_that_could_never_match_is_refused(value: str, message: str) -> None:
    for text in (f"x@{D}:{value}\n", f"address,password_hash\nx@{D},{value}\n"):
        entries, errors = read_accounts(text, "f")
        assert entries == []
        (error,) = errors
        assert message in error.message
