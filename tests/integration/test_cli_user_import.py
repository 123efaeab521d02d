"""`pochta user import FILE|-` as an admin migrating from Dovecot runs it: the real command on
files in Dovecot's formats, then the real server and imaplib logging in with the passwords."""

from __future__ import annotations

import contextlib
import imaplib
import os
import pty
import subprocess
from pathlib import Path

from tests.harness import DOMAIN, PochtaEnv, pochta_command, serve, set_key

TESTDATA = Path("/work/shared/testdata/password-hashes/dovecot-2.3.19-doveadm-pw.tsv")
DOVECOT_PASSWORD = "S3cret!pw"  # every line of TESTDATA hashes it (its README)


def dovecot_hashes() -> list[tuple[str, str]]:
    """(scheme, "{SCHEME}value") of every `doveadm pw` line of the test data."""
    rows = []
    for row in TESTDATA.read_text().splitlines():
        if row.startswith("#") or not row.strip():
            continue
        scheme, value = row.split("\t")
        rows.append((scheme, value))
    return rows


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def imap_login(env: PochtaEnv, user: str, password: str) -> bool:
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=30)
    try:
        c.login(user, password)
    except imaplib.IMAP4.error:
        return False
    finally:
        c.shutdown()
    return True


def user_list(env: PochtaEnv) -> list[str]:
    return ok(env.run("user", "list", DOMAIN)).splitlines()


def test_import_dovecot_passwd_file_and_csv_then_imap_login(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    env = pochta_env
    hashes = dovecot_hashes()
    lines = ["# exported from dovecot", ""]
    for i, (scheme, value) in enumerate(hashes):
        # As Dovecot's passwd-file writes them: user:password:uid:gid:gecos:home:shell:extra
        lines.append(
            f"u{i}-{scheme.lower()}@{DOMAIN}:{value}:5000:5000::/var/vmail/u{i}::"
            "userdb_quota_rule=*:storage=1G"
        )
    lines.append(f"plain@{DOMAIN}:Plain-pw-42")  # address:password, plaintext
    users = tmp_path / "users"
    users.write_text("\n".join(lines) + "\n")
    cram = next(i for i, (s, _) in enumerate(hashes) if s == "CRAM-MD5")
    cram_line = cram + 3

    # All or nothing: the CRAM-MD5 line (not a password hash) stops the whole import.
    proc = env.run("user", "import", str(users))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    errors = proc.stderr.splitlines()
    assert errors[0].startswith(f"pochta: error: {users}:{cram_line}: u{cram}-cram-md5@{DOMAIN}")
    assert "CRAM-MD5" in errors[0]
    assert errors[1] == (
        f"pochta: error: nothing imported: 1 line of {users} cannot be imported; "
        "fix them, or import the other lines with --continue"
    )
    assert user_list(env) == []

    # --continue imports the rest and still exits 1, naming the skipped line.
    proc = env.run("user", "import", "--continue", str(users))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == f"imported {len(hashes)} accounts from {users}\n"
    assert proc.stderr.splitlines()[-1] == (
        f"pochta: error: skipped 1 line of {users} that could not be imported"
    )
    listed = user_list(env)
    assert len(listed) == len(hashes)
    assert f"u0-plain@{DOMAIN} quota=1G enabled" in listed
    assert f"plain@{DOMAIN} quota=unlimited enabled" in listed
    sha = next(i for i, (s, _) in enumerate(hashes) if s == "SHA512-CRYPT")
    info = ok(env.run("user", "info", f"u{sha}-sha512-crypt@{DOMAIN}"))
    assert "password   SHA512-CRYPT" in info
    # {PLAIN} and a bare plaintext password are hashed at import, never stored in clear.
    assert "password   ARGON2ID" in ok(env.run("user", "info", f"u0-plain@{DOMAIN}"))
    assert "scram      yes" in ok(env.run("user", "info", f"plain@{DOMAIN}"))

    # CSV on stdin: a plaintext password with ',' and ':' in it, a Dovecot hash, a quota.
    ssha = dict(hashes)["SSHA512"]
    csv_text = (
        "address,password,password_hash,quota,enabled\n"
        f'carol@{DOMAIN},"Pa,ss:word 7",,500M,yes\n'
        f"dave@{DOMAIN},,{ssha},,\n"
        f"erin@{DOMAIN},Erin-pw-123,,0,no\n"
    )
    proc = env.run("user", "import", "-", input=csv_text)
    assert proc.stdout == "imported 3 accounts from stdin\n"
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    listed = user_list(env)
    assert f"carol@{DOMAIN} quota=500M enabled" in listed
    assert f"erin@{DOMAIN} quota=unlimited disabled" in listed

    set_key(env.config_path, "server", "processes", "1")
    with serve(env.config_path):
        for i, (scheme, _) in enumerate(hashes):
            user = f"u{i}-{scheme.lower()}@{DOMAIN}"
            if scheme == "CRAM-MD5":
                assert not imap_login(env, user, DOVECOT_PASSWORD)
                continue
            assert imap_login(env, user, DOVECOT_PASSWORD), scheme
        assert not imap_login(env, f"u{sha}-sha512-crypt@{DOMAIN}", "Wrong-pw-1")
        assert imap_login(env, f"plain@{DOMAIN}", "Plain-pw-42")
        assert imap_login(env, f"carol@{DOMAIN}", "Pa,ss:word 7")
        assert imap_login(env, f"dave@{DOMAIN}", DOVECOT_PASSWORD)
        assert not imap_login(env, f"erin@{DOMAIN}", "Erin-pw-123")  # imported disabled


def test_import_reports_every_bad_line_and_changes_nothing(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    env = pochta_env
    env.add_user(f"old@{DOMAIN}", "Old-password-1")
    ok(env.run("alias", "add", f"info@{DOMAIN}", f"old@{DOMAIN}"))
    text = "\n".join(
        [
            f"good@{DOMAIN}:{{SHA256-CRYPT}}$5$OchNdf7jkM9C7Cac$8wN824So3emQ99v9drVWPHSZ7rX/FOym7cS/yHKfwZ1",
            "nodomain:{PLAIN}x",  # 2
            f"bad@{DOMAIN}:{{NOPE}}abc",  # 3
            f"good@{DOMAIN}:Another-pw-1",  # 4: twice
            f"old@{DOMAIN}:Replaced-pw-1",  # 5: exists
            f"info@{DOMAIN}:Alias-pw-123",  # 6: an alias
            "x@elsewhere.test:Some-pw-123",  # 7: not hosted
            f"q@{DOMAIN}:pw-123456:0:0::::userdb_quota_rule=*:storage=lots",  # 8
            f"empty@{DOMAIN}:",  # 9
            f"fine@{DOMAIN}:Fine-pw-123",  # 10
        ]
    )
    users = tmp_path / "users"
    users.write_text(text + "\n")
    proc = env.run("user", "import", str(users))
    assert proc.returncode == 1
    errors = [line.removeprefix("pochta: error: ") for line in proc.stderr.splitlines()]
    numbers = [int(e.split(":")[1]) for e in errors[:-1]]
    assert numbers == [2, 3, 4, 5, 6, 7, 8, 9]
    assert errors[0] == (
        f"{users}:2: 'nodomain' has no @domain; write the whole address, user@domain"
    )
    assert "pochta cannot verify {NOPE} passwords" in errors[1]
    assert errors[2] == f"{users}:4: good@{DOMAIN} is already on line 1"
    assert errors[3] == (
        f"{users}:5: account old@{DOMAIN} already exists; import with --update to replace "
        "its password"
    )
    assert errors[4] == (
        f"{users}:6: info@{DOMAIN} is an alias; remove it first with: "
        f"pochta alias remove info@{DOMAIN}"
    )
    assert "domain elsewhere.test is not hosted here" in errors[5]
    assert "--create-domains" in errors[5]
    assert "storage=lots" in errors[6]
    assert errors[7] == f"{users}:9: empty@{DOMAIN} has an empty password"
    assert errors[8] == (
        f"nothing imported: 8 lines of {users} cannot be imported; "
        "fix them, or import the other lines with --continue"
    )
    assert user_list(env) == [f"old@{DOMAIN} quota=unlimited enabled"]

    # A CSV whose record does not match its header, and a header pochta cannot read.
    bad_csv = f"address,password\nz@{DOMAIN},pw-1234567,extra\n"
    proc = env.run("user", "import", "-", input=bad_csv)
    assert proc.stderr.splitlines()[0] == (
        "pochta: error: stdin:2: 3 fields where the header names 2 (address, password)"
    )
    proc = env.run("user", "import", "-", input=f"address,pass\nz@{DOMAIN},x\n")
    assert proc.stderr.splitlines()[0] == (
        "pochta: error: stdin:1: unknown column 'pass'; the columns are address, password, "
        "password_hash, quota, enabled"
    )
    assert user_list(env) == [f"old@{DOMAIN} quota=unlimited enabled"]


def test_import_update_and_create_domains(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"old@{DOMAIN}", "Old-password-1")
    ok(env.run("user", "quota", f"old@{DOMAIN}", "2G"))
    text = f"old@{DOMAIN}:New-password-2\nnew@fresh.test:Fresh-pw-123\n"

    proc = env.run("user", "import", "--update", "-", input=text)
    assert proc.returncode == 1
    assert "domain fresh.test is not hosted here" in proc.stderr

    out = ok(env.run("user", "import", "--update", "--create-domains", "-", input=text))
    assert out == (
        "imported 1 account from stdin, replaced the password of 1, added 1 domain (fresh.test)\n"
    )
    # The password is replaced, the quota the line does not name is kept.
    assert ok(env.run("user", "list", DOMAIN)).splitlines() == [f"old@{DOMAIN} quota=2G enabled"]
    ok(env.run("auth", "test", f"old@{DOMAIN}", "--password-stdin", input="New-password-2\n"))
    assert (
        env.run(
            "auth", "test", f"old@{DOMAIN}", "--password-stdin", input="Old-password-1\n"
        ).returncode
        == 1
    )
    ok(env.run("auth", "test", "new@fresh.test", "--password-stdin", input="Fresh-pw-123\n"))
    # The new domain is set up as `pochta domain add` does it: DKIM keys, report aliases.
    domains = ok(env.run("domain", "list"))
    line = next(x for x in domains.splitlines() if x.startswith("fresh.test "))
    assert "accounts=1 aliases=2 dkim=" in line


def test_progress_bar_only_on_a_terminal(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    env = pochta_env
    users = tmp_path / "users"
    users.write_text("".join(f"t{i}@{DOMAIN}:Tty-pw-{i}234\n" for i in range(3)))
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            pochta_command("--config", str(env.config_path), "user", "import", str(users)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env={k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"},
            timeout=120,
            check=False,
        )
        os.close(slave)
        slave = -1
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the pty's other end is closed
            while chunk := os.read(master, 4096):
                seen += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    assert proc.stdout == b"imported 3 accounts from " + str(users).encode() + b"\n"
    assert b"hashing 3 passwords" in seen
    assert b"100%" in seen
