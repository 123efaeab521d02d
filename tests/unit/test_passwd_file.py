"""Dovecot passwd-file parsing and import."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pochta.directory.addresses import AddressError
from pochta.directory.base import DirectoryError
from pochta.directory.passwd_file import (
    PasswdFileError,
    import_passwd_file,
    parse_passwd_file,
    parse_size,
    scan_passwd_file,
)
from pochta.directory.passwords import verify_password
from pochta.directory.sqlite import SqliteDirectory

TESTDATA = Path("/work/shared/testdata/password-hashes/dovecot-2.3.19-doveadm-pw.tsv")
PASSWORD = "S3cret!pw"
GiB = 1024**3


def vectors() -> list[tuple[str, str]]:
    """(scheme, "{SCHEME}value") for every line of the doveadm pw vectors."""
    rows = []
    for line in TESTDATA.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        scheme, value = line.split("\t")
        rows.append((scheme, value))
    return rows


def vectors_file() -> str:
    lines = ["# exported from dovecot", ""]
    for n, (_, value) in enumerate(vectors()):
        lines.append(f"user{n}@example.org:{value}::::::userdb_quota_rule=*:storage=1G")
    return "\n".join(lines) + "\n"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[SqliteDirectory]:
    d = SqliteDirectory(tmp_path / "directory.sqlite3")
    d.add_domain("example.org")
    yield d
    d.close()


# -- sizes --


@pytest.mark.parametrize(
    ("text", "multiplier", "expected"),
    [
        ("0", 1, 0),
        ("1048576", 1, 1048576),
        ("100", 1024, 102400),  # storage= without a unit counts KiB
        ("100b", 1024, 100),
        ("100B", 1024, 100),
        ("1k", 1, 1024),
        ("2K", 1, 2048),
        ("512M", 1, 512 * 1024**2),
        ("1G", 1, GiB),
        ("1g", 1, GiB),
        ("1GB", 1, GiB),
        ("1GiB", 1, GiB),
        ("3T", 1, 3 * 1024**4),
        (" 2G ", 1, 2 * GiB),
    ],
)
def test_parse_size(text: str, multiplier: int, expected: int) -> None:
    assert parse_size(text, default_multiplier=multiplier) == expected


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1", "1X", "1 G B", "12345678901234567890T"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a size|too large"):
        parse_size(text)


# -- parsing --


def test_every_doveadm_vector_line_parses_except_cram_md5() -> None:
    # parse_passwd_file is all-or-nothing: the one CRAM-MD5 line makes it refuse the file.
    with pytest.raises(PasswdFileError) as exc:
        parse_passwd_file(vectors_file(), "users", None)
    assert [e.line for e in exc.value.errors] == [16]
    without_cram = "\n".join(
        line for line in vectors_file().splitlines() if "{CRAM-MD5}" not in line
    )
    assert len(parse_passwd_file(without_cram, "users", None)) == len(vectors()) - 1


def test_vector_file_scan() -> None:
    rows = vectors()
    assert len(rows) == 21  # README: 20 verifiable schemes and CRAM-MD5
    entries, errors = scan_passwd_file(vectors_file(), "users", None)
    by_line = {e.line: e for e in entries}
    # Line 1 is a comment and line 2 is blank: user N is on line N + 3.
    for n, (scheme, value) in enumerate(rows):
        line = n + 3
        if scheme == "CRAM-MD5":
            assert line not in by_line
            continue
        entry = by_line[line]
        assert entry.address == f"user{n}@example.org"
        assert entry.password_hash == value  # stored as given, prefix kept
        assert entry.scheme == scheme
        assert entry.quota_bytes == GiB
        assert entry.extra_fields == ("userdb_quota_rule=*:storage=1G",)
    assert len(entries) == 20
    assert [str(e) for e in errors] == [
        "users:16: user13@example.org: a {CRAM-MD5} value can only answer CRAM-MD5 challenges, "
        "not check a password; give the user a new one with: pochta user add user13@example.org"
    ]


def test_vector_hashes_still_verify_after_parse() -> None:
    entries, _ = scan_passwd_file(vectors_file(), "users", None)
    for entry in entries:
        assert verify_password(entry.password_hash, PASSWORD), entry.scheme
        assert not verify_password(entry.password_hash, "wrong"), entry.scheme


def test_scram_sha256_fills_the_scram_field() -> None:
    value = dict(vectors())["SCRAM-SHA-256"]
    (entry,) = parse_passwd_file(f"bob@example.org:{value}", "f", None)
    assert entry.scram_sha256 == value.removeprefix("{SCRAM-SHA-256}")
    assert entry.scram_sha256.count(",") == 3


def test_bare_user_gets_default_domain_and_case_is_folded() -> None:
    (entry,) = parse_passwd_file("Bob:{PLAIN}x\n", "f", "Example.ORG")
    assert entry.address == "bob@example.org"
    (entry,) = parse_passwd_file("Bob@Other.Example:{PLAIN}x\n", "f", "example.org")
    assert entry.address == "bob@other.example"


def test_crypt_without_prefix_and_libpam_forms() -> None:
    text = "\n".join(
        [
            "a:$6$salt$hash",
            "b:abcdefghijklm[13]",
            "c:5f4dcc3b5aa765d61d8327deb882cf99[34]",
        ]
    )
    a, b, c = parse_passwd_file(text, "f", "example.org")
    assert (a.password_hash, a.scheme) == ("{CRYPT}$6$salt$hash", "CRYPT")
    assert (b.password_hash, b.scheme) == ("{CRYPT}abcdefghijklm", "CRYPT")
    assert (c.password_hash, c.scheme) == (
        "{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99",
        "PLAIN-MD5",
    )


def test_lowercase_scheme_is_accepted() -> None:
    (entry,) = parse_passwd_file("a:{sha512-crypt}$6$x$y", "f", "example.org")
    assert entry.scheme == "SHA512-CRYPT"


def test_comments_blank_lines_crlf_and_full_passwd_fields() -> None:
    text = (
        "# comment\r\n"
        "   \r\n"
        "  # indented comment\n"
        "bob@example.org:{PLAIN}pw:1000:1000:Bob B:/home/bob:/bin/false:"
        "userdb_quota_rule=*:bytes=5000 allow_nets=127.0.0.1\r\n"
        "amy@example.org:{PLAIN}pw:1000:1000::/home/amy::\n"
        "cid@example.org:{PLAIN}pw\n"
    )
    bob, amy, cid = parse_passwd_file(text, "f", None)
    assert (bob.line, bob.quota_bytes) == (4, 5000)
    assert bob.extra_fields == ("userdb_quota_rule=*:bytes=5000", "allow_nets=127.0.0.1")
    assert (amy.line, amy.quota_bytes, amy.extra_fields) == (5, None, ())
    assert (cid.line, cid.password_hash) == (6, "{PLAIN}pw")


@pytest.mark.parametrize(
    ("extra", "quota"),
    [
        ("userdb_quota_rule=*:storage=1G", GiB),
        ("userdb_quota_rule=*:storage=1024", 1024 * 1024),  # KiB without a unit
        ("userdb_quota_rule=*:bytes=1024", 1024),
        ("userdb_quota_rule=*:bytes=2M", 2 * 1024**2),
        ("userdb_quota_rule=*:storage=0", 0),
        ("userdb_quota_rule=?:storage=10M", 10 * 1024**2),
        ("userdb_quota_rule=*:storage=1G:messages=1000", GiB),
        ("userdb_quota_rule=*:messages=1000", None),
        ("userdb_quota_rule=*:ignore", None),
        ("userdb_quota_rule=Trash:storage=+100M", None),
        ("userdb_quota_rule=*:storage=1G userdb_quota_rule2=Trash:storage=+100M", GiB),
        ("userdb_quota_storage_size=3G", 3 * GiB),
        ("userdb_quota_storage_size=unlimited", 0),
        ("userdb_mail=maildir:~/Maildir", None),
    ],
)
def test_quota_fields(extra: str, quota: int | None) -> None:
    (entry,) = parse_passwd_file(f"a@example.org:{{PLAIN}}x::::::{extra}", "f", None)
    assert entry.quota_bytes == quota


def test_old_format_mail_field_is_ignored() -> None:
    (entry,) = parse_passwd_file("a@example.org:{PLAIN}x:::::::maildir:~/Mail", "f", None)
    assert entry.extra_fields == ()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (":{PLAIN}x", "the line has no user name before the first ':'"),
        ("bob:{PLAIN}x", "user 'bob' has no @domain; name the domain with --domain"),
        ("bad user@example.org:{PLAIN}x", "cannot be a mailbox"),
        ("a/b@example.org:{PLAIN}x", "its local part names the mailbox directory and may only"),
        ("/abs@example.org:{PLAIN}x", "letters, digits, non-ASCII letters and"),
        ("a/b:{PLAIN}x", "'a/b@example.org' cannot be a mailbox"),
        ("bob@nodots:{PLAIN}x", "is not a fully qualified domain name"),
        ("bob@example.org", "bob@example.org has no password; set one after the import"),
        ("bob@example.org:", "bob@example.org has no password"),
        ("bob@example.org:{PLAIN}", "the {PLAIN} password has no value after it"),
        ("bob@example.org:secret", "has no {SCHEME} prefix and is not a $-crypt(3) hash"),
        ("bob@example.org:abcdefghijklm", "({CRYPT} if it is a 13-character DES crypt(3) hash)"),
        ("bob@example.org:{FANCY}x", "pochta cannot verify {FANCY} passwords; supported: "),
        ("bob@example.org:{DIGEST-MD5}x", "can only answer DIGEST-MD5 challenges"),
        ("bob@example.org:abcdefghijklmnopqrstuvwxyz012345[56]", "DIGEST-MD5"),
        ("bob@example.org:::::::nopassword", "has nopassword (any password logs in)"),
        ("bob@example.org:{PLAIN}x::::::nopassword=y", "has nopassword"),
        ("bob@example.org:{PLAIN}x::::::userdb_quota_rule=*", "has no ':'"),
        ("bob@example.org:{PLAIN}x::::::userdb_quota_rule=*:storage=1X", "is not a size"),
        ("bob@example.org:{PLAIN}x::::::userdb_quota_rule=*:storage=10%", "absolute size"),
        ("bob@example.org:{PLAIN}x::::::userdb_quota_rule=*:storage=+1G", "absolute size"),
        ("bob@example.org:{PLAIN}x::::::userdb_quota_rule=*:files=10", "unknown limit 'files'"),
        ("bob@example.org:{PLAIN}x::::::userdb_quota_storage_size=lots", "is not a size"),
    ],
)
def test_line_errors(line: str, message: str) -> None:
    text = f"# header\n\nok@example.org:{{PLAIN}}x\n{line}\n"
    with pytest.raises(PasswdFileError) as exc:
        parse_passwd_file(text, "/etc/dovecot/users", "example.org" if "/" in line else None)
    assert len(exc.value.errors) == 1
    error = exc.value.errors[0]
    assert error.line == 4
    assert str(error).startswith("/etc/dovecot/users:4: ")
    assert message in error.message
    assert str(exc.value) == str(error)


def test_all_errors_are_collected_with_line_numbers() -> None:
    text = "a:x\nb@example.org:{PLAIN}ok\nc:\n"
    entries, errors = scan_passwd_file(text, "users", "example.org")
    assert [e.address for e in entries] == ["b@example.org"]
    assert [(e.source, e.line) for e in errors] == [("users", 1), ("users", 3)]
    with pytest.raises(PasswdFileError, match=re.escape("users:1: ") + ".*and 1 more"):
        parse_passwd_file(text, "users", "example.org")


def test_bad_default_domain() -> None:
    with pytest.raises(AddressError):
        parse_passwd_file("a:{PLAIN}x", "f", "not a domain")


# -- import --


def test_import_vectors(directory: SqliteDirectory, tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(vectors_file())
    report = import_passwd_file(directory, path, "example.org", skip_existing=False)
    assert len(report.created) == 20
    assert report.skipped == []
    assert [e.line for e in report.errors] == [16]  # CRAM-MD5
    assert not report.ok
    for scheme, value in vectors():
        n = [v for _, v in vectors()].index(value)
        account = directory.get_account(f"user{n}@example.org")
        if scheme == "CRAM-MD5":
            assert account is None
            continue
        assert account is not None
        assert account.password_hash == value
        assert account.quota_bytes == GiB
        assert verify_password(account.password_hash, PASSWORD)
    scram = directory.get_account(
        f"user{[s for s, _ in vectors()].index('SCRAM-SHA-256')}@example.org"
    )
    assert scram is not None
    assert scram.scram_sha256


def test_import_existing_and_skip_existing(directory: SqliteDirectory, tmp_path: Path) -> None:
    directory.add_account("bob@example.org", password_hash="{PLAIN}keep", quota_bytes=5)
    path = tmp_path / "users"
    path.write_text("bob:{PLAIN}new\namy:{PLAIN}new::::::userdb_quota_rule=*:storage=1M\n")
    report = import_passwd_file(directory, path, "example.org", skip_existing=False)
    assert report.created == ["amy@example.org"]
    assert [str(e) for e in report.errors] == [
        f"{path}:1: account bob@example.org already exists; "
        "use --skip-existing to keep it and import the rest"
    ]
    amy = directory.get_account("amy@example.org")
    assert amy is not None
    assert amy.quota_bytes == 1024**2
    # Run again with skip_existing: nothing new, nothing failed, bob untouched.
    report = import_passwd_file(directory, path, "example.org", skip_existing=True)
    assert report.created == []
    assert report.skipped == ["bob@example.org", "amy@example.org"]
    assert report.ok
    bob = directory.get_account("bob@example.org")
    assert bob is not None
    assert (bob.password_hash, bob.quota_bytes) == ("{PLAIN}keep", 5)


def test_import_refusals_per_line(directory: SqliteDirectory, tmp_path: Path) -> None:
    directory.add_alias("info@example.org", ["x@elsewhere.example"])
    path = tmp_path / "users"
    path.write_text(
        "a@other.example:{PLAIN}x\n"
        "info:{PLAIN}x\n"
        "dup:{PLAIN}x\n"
        "DUP:{PLAIN}y\n"
        "nohash\n"
        "fine:{PLAIN}x\n"
    )
    report = import_passwd_file(
        directory, path, "example.org", skip_existing=False, default_quota_bytes=77
    )
    assert sorted(report.created) == ["dup@example.org", "fine@example.org"]
    messages = {e.line: e.message for e in report.errors}
    assert messages == {
        1: "domain other.example is not hosted here; add it with: pochta domain add other.example",
        2: "info@example.org is an alias; remove it first with: "
        "pochta alias remove info@example.org",
        4: "dup@example.org is already on line 3",
        5: "nohash@example.org has no password; set one after the import with: "
        "pochta user add nohash@example.org",
    }
    fine = directory.get_account("fine@example.org")
    assert fine is not None
    assert fine.quota_bytes == 77  # the default when the file names none


def test_import_skips_and_reports_lines_that_cannot_name_a_mailbox(
    directory: SqliteDirectory, tmp_path: Path
) -> None:
    path = tmp_path / "users"
    path.write_text("a/b:{PLAIN}x\n/abs@example.org:{PLAIN}x\n..:{PLAIN}x\nfine:{PLAIN}x\n")
    report = import_passwd_file(directory, path, "example.org", skip_existing=False)
    assert report.created == ["fine@example.org"]
    assert [e.line for e in report.errors] == [1, 2, 3]
    for error in report.errors:
        assert "cannot be a mailbox" in error.message or "not allowed" in error.message
        assert "letters, digits" in error.message
    assert [a.address for a in directory.list_accounts()] == ["fine@example.org"]


def test_import_needs_hosted_domain_and_readable_file(
    directory: SqliteDirectory, tmp_path: Path
) -> None:
    with pytest.raises(DirectoryError, match=re.escape("domain nothere.org is not hosted here")):
        import_passwd_file(directory, tmp_path / "users", "nothere.org", skip_existing=False)
    with pytest.raises(DirectoryError, match=re.escape("cannot read")):
        import_passwd_file(directory, tmp_path / "missing", "example.org", skip_existing=False)
    binary = tmp_path / "binary"
    binary.write_bytes(b"a:{PLAIN}\xff\n")
    with pytest.raises(DirectoryError, match=re.escape("is not UTF-8 text")):
        import_passwd_file(directory, binary, "example.org", skip_existing=False)
