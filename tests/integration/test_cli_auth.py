"""`pochta auth test`, run as the real command against a data dir made by `pochta init`."""

from __future__ import annotations

from pathlib import Path

from tests.harness import DOMAIN, PochtaEnv

SHA512_CRYPT = (
    "{SHA512-CRYPT}$6$GE.9sUKTQ4VRsm39$znFFH7nPTsJJk1kmhoW/jcCtBSRktvi3lPiqSknWvTn29ocjfIQJdEAo"
    "/xM5VNH.AsI.SliJ5ScMr8LJuxkQh0"
)  # "S3cret!pw", from shared/testdata/password-hashes


def test_success(pochta_env: PochtaEnv) -> None:
    address = f"alice@{DOMAIN}"
    pochta_env.add_user(address, "correct horse 1")
    proc = pochta_env.run("auth", "test", address, "--password-stdin", input="correct horse 1\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"passdb: {address} auth succeeded"
    assert f"  user={address}" in lines
    assert "  enabled=yes" in lines
    assert "  scheme=ARGON2ID" in lines
    assert any(line.startswith("  quota_bytes=") for line in lines)
    assert "correct horse" not in proc.stdout + proc.stderr


def test_password_argument_and_case(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(f"bob@{DOMAIN}", "pw-of-bob-9")
    proc = pochta_env.run("auth", "test", f"BOB@{DOMAIN.upper()}", "pw-of-bob-9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"passdb: BOB@{DOMAIN.upper()} auth succeeded")


def test_wrong_password(pochta_env: PochtaEnv) -> None:
    address = f"alice@{DOMAIN}"
    pochta_env.add_user(address, "correct horse 1")
    proc = pochta_env.run("auth", "test", address, "--password-stdin", input="Wr0ng-guess\n")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == f"passdb: {address} auth failed"
    assert "Wr0ng-guess" not in proc.stdout + proc.stderr


def test_unknown_user(pochta_env: PochtaEnv) -> None:
    address = f"nobody@{DOMAIN}"
    proc = pochta_env.run("auth", "test", address, "--password-stdin", input="anything-1\n")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == f"passdb: {address} auth failed"


def test_disabled_user(pochta_env: PochtaEnv) -> None:
    address = f"carol@{DOMAIN}"
    pochta_env.add_user(address, "carol-pw-123")
    pochta_env.run("user", "disable", address, check=True)
    proc = pochta_env.run("auth", "test", address, "carol-pw-123")
    assert proc.returncode == 1
    assert "auth failed" in proc.stdout


def test_imported_sha512_crypt_user(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"old:{SHA512_CRYPT}::::::\n")
    pochta_env.run("user", "import-passwd-file", str(passwd), "--domain", DOMAIN, check=True)
    address = f"old@{DOMAIN}"

    proc = pochta_env.run("auth", "test", address, "--password-stdin", input="S3cret!pw\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "  scheme=SHA512-CRYPT" in proc.stdout.splitlines()
    # `auth test` changes nothing: the imported hash stays until a real login.
    again = pochta_env.run("auth", "test", address, "S3cret!pw")
    assert "  scheme=SHA512-CRYPT" in again.stdout.splitlines()

    wrong = pochta_env.run("auth", "test", address, "--password-stdin", input="S3cret!pX\n")
    assert wrong.returncode == 1
    assert "auth failed" in wrong.stdout


def test_both_password_sources_refused(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run("auth", "test", f"a@{DOMAIN}", "pw", "--password-stdin", input="pw\n")
    assert proc.returncode == 1
    assert proc.stderr.startswith("pochta: error:")


def test_no_terminal_without_password(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run("auth", "test", f"a@{DOMAIN}", input="")
    assert proc.returncode == 1
    assert "--password-stdin" in proc.stderr
