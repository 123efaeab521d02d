"""`pochta domain|user|alias` as a new admin runs them: the real command, a real data dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import DOMAIN, PochtaEnv

TESTDATA = Path("/work/shared/testdata/password-hashes/dovecot-2.3.19-doveadm-pw.tsv")
PASSWORD = "correct horse battery"


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr; that line, without its prefix."""
    assert proc.returncode == 1, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pochta: error: "), lines[0]
    return lines[0].removeprefix("pochta: error: ")


def test_domain_add_list_remove(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    out = ok(env.run("domain", "add", "Example.ORG", "--catchall", "Postmaster@example.org"))
    assert out.splitlines()[0] == "added domain example.org (catch-all -> postmaster@example.org)"
    assert refused(env.run("domain", "add", "example.org")) == "domain example.org already exists"
    assert "labels are letters" in refused(env.run("domain", "add", "bad_domain.org"))

    env.add_user("a@example.org", PASSWORD)
    env.add_user("b@example.org", PASSWORD)
    env.add_user("c@example.org", PASSWORD)
    ok(env.run("alias", "add", "info@example.org", "a@example.org"))
    lines = ok(env.run("domain", "list")).splitlines()
    (line,) = [line for line in lines if line.startswith("example.org ")]
    fields = dict(f.split("=", 1) for f in line.split()[2:])
    # info@ and the two report aliases domain add made (dmarc-reports@, tlsrpt@).
    assert (fields["accounts"], fields["aliases"]) == ("3", "3")
    assert fields["catchall"] == "postmaster@example.org"
    assert len(fields["dkim"].split(",")) == 2  # domain add made its DKIM keys
    # init's domain: the two report aliases (dmarc-reports@, tlsrpt@).
    assert any(line.startswith(f"{DOMAIN} enabled accounts=0 aliases=2 dkim=") for line in lines)

    ok(env.run("domain", "disable", "example.org"))
    assert "example.org disabled accounts=3" in ok(env.run("domain", "list"))
    ok(env.run("domain", "enable", "example.org"))
    assert "example.org enabled accounts=3" in ok(env.run("domain", "list"))

    assert refused(env.run("domain", "remove", "example.org")) == (
        "domain example.org has 3 accounts and 3 aliases; remove them first or use --force"
    )
    out = ok(env.run("domain", "remove", "example.org", "--force"))
    assert out.splitlines()[0] == "removed domain example.org with 3 accounts and 3 aliases"
    keys = env.data_dir / "dkim" / "example.org"
    assert f"its DKIM keys were kept in {keys}; delete them with: rm -r {keys}" in out
    assert "example.org" not in ok(env.run("domain", "list")).replace(DOMAIN, "")
    assert ok(env.run("user", "list")) == ""
    assert refused(env.run("domain", "remove", "example.org")) == (
        "domain example.org is not hosted here; add it with: pochta domain add example.org"
    )
    assert "is not hosted" in refused(env.run("domain", "enable", "example.org"))


def test_user_add_and_refusals(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    out = ok(
        env.run(
            "user",
            "add",
            f"Bob@{DOMAIN.upper()}",
            "--password-stdin",
            "--quota",
            "2G",
            input=PASSWORD + "\n",
        )
    )
    assert out == f"added user bob@{DOMAIN} (quota 2G)\n"
    bob = f"bob@{DOMAIN}"
    # Every wrong input: exit 1, one line on stderr, and no password is asked for.
    assert refused(env.run("user", "add", bob, "--password-stdin", input="x\n")) == (
        f"account {bob} already exists"
    )
    assert (
        refused(env.run("user", "add", "bob@nothere.org", "--password-stdin", input="x\n"))
        == "domain nothere.org is not hosted here; add it with: pochta domain add nothere.org"
    )
    assert refused(env.run("user", "add", "not an address", "--password-stdin")) == (
        "'not an address' is not an address; use local@domain"
    )
    assert refused(env.run("user", "add", "b@d@", "--password-stdin")).startswith("'b@d@'")
    assert "is not a size" in refused(
        env.run("user", "add", f"c@{DOMAIN}", "--password-stdin", "--quota", "2Q", input="x\n")
    )
    assert refused(env.run("user", "add", f"c@{DOMAIN}", "--password-stdin", input="\n")) == (
        "the password is empty"
    )
    ok(env.run("alias", "add", f"info@{DOMAIN}", bob))
    assert "is an alias" in refused(
        env.run("user", "add", f"info@{DOMAIN}", "--password-stdin", input="secret123\n")
    )
    ok(
        env.run(
            "user",
            "add",
            f"dis@{DOMAIN}",
            "--password-stdin",
            "--disabled",
            "--quota",
            "unlimited",
            input=PASSWORD + "\n",
        )
    )
    assert ok(env.run("user", "list", DOMAIN)).splitlines() == [
        f"bob@{DOMAIN} quota=2G enabled",
        f"dis@{DOMAIN} quota=unlimited disabled",
    ]
    assert "not hosted" in refused(env.run("user", "list", "nothere.org"))


def test_user_info_passwd_quota_enable(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    bob = f"bob@{DOMAIN}"
    env.add_user(bob, PASSWORD)
    ok(env.run("alias", "add", f"info@{DOMAIN}", bob, "ext@elsewhere.example"))
    ok(env.run("alias", "add", f"sales@{DOMAIN}", "BOB@" + DOMAIN))
    info = dict(
        line.split(None, 1) for line in ok(env.run("user", "info", bob.upper())).splitlines()
    )
    assert info["address"] == bob
    assert info["home"] == str(env.data_dir / "mail" / DOMAIN / "bob")
    assert info["quota"] == "unlimited"
    assert info["enabled"] == "yes"
    assert info["password"] == "ARGON2ID"
    assert info["scram"] == "yes"
    assert info["created"].endswith("+00:00")
    assert info["aliases"] == f"info@{DOMAIN}, sales@{DOMAIN}"
    assert info["delimiter"] == f"+ (bob+tag@{DOMAIN} reaches {bob})"

    assert ok(env.run("user", "quota", bob, "512M")) == f"quota of {bob} is now 512M\n"
    assert "quota      512M (536870912 bytes)" in ok(env.run("user", "info", bob))
    assert "is not a size" in refused(env.run("user", "quota", bob, "lots"))
    ok(env.run("user", "disable", bob))
    assert "enabled    no" in ok(env.run("user", "info", bob))
    ok(env.run("user", "enable", bob))
    assert "enabled    yes" in ok(env.run("user", "info", bob))
    out = ok(env.run("user", "passwd", bob, "--password-stdin", input="another password\n"))
    assert out == f"changed the password of {bob}\n"

    assert refused(env.run("user", "info", f"nobody@{DOMAIN}")) == (
        f"no account nobody@{DOMAIN}; list accounts with: pochta user list"
    )
    assert refused(env.run("user", "info", f"info@{DOMAIN}")).startswith(
        f"info@{DOMAIN} is an alias (-> bob@{DOMAIN}, ext@elsewhere.example), not an account"
    )
    assert "no account" in refused(
        env.run("user", "passwd", f"nobody@{DOMAIN}", "--password-stdin", input="x\n")
    )


def test_user_remove_keeps_or_purges_mailbox(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    keep, purge = f"keep@{DOMAIN}", f"purge@{DOMAIN}"
    env.add_user(keep, PASSWORD)
    env.add_user(purge, PASSWORD)
    for local in ("keep", "purge"):
        new = env.data_dir / "mail" / DOMAIN / local / "new"
        new.mkdir(parents=True)
        (new / "1.msg").write_text("Subject: hi\n\nbody\n")

    ok(env.run("alias", "add", f"info@{DOMAIN}", keep))
    out = ok(env.run("user", "remove", keep))
    kept = env.data_dir / "mail" / DOMAIN / "keep"
    assert f"note: info@{DOMAIN} still forward to {keep}" in out
    assert f"its mailbox was kept in {kept}" in out
    assert (kept / "new" / "1.msg").exists()

    out = ok(env.run("user", "remove", purge, "--purge"))
    assert "deleted its mailbox" in out
    assert not (env.data_dir / "mail" / DOMAIN / "purge").exists()
    assert kept.exists()
    assert ok(env.run("user", "list")) == ""
    assert refused(env.run("user", "remove", keep)) == (
        f"no account {keep}; list accounts with: pochta user list"
    )


def test_alias_add_list_remove(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    info = f"info@{DOMAIN}"
    # init made the report aliases; this test is about the others.
    for local in ("dmarc-reports", "tlsrpt"):
        ok(env.run("alias", "remove", f"{local}@{DOMAIN}"))
    out = ok(env.run("alias", "add", f"Info@{DOMAIN}", f"a@{DOMAIN}", "Ext@Elsewhere.example"))
    assert out == f"{info} -> a@{DOMAIN}, ext@elsewhere.example\n"
    ok(env.run("alias", "add", info, f"b@{DOMAIN}"))
    assert ok(env.run("alias", "list")) == (
        f"{info} -> a@{DOMAIN}, ext@elsewhere.example, b@{DOMAIN}\n"
    )
    assert ok(env.run("alias", "list", DOMAIN)) == ok(env.run("alias", "list"))
    assert ok(env.run("alias", "list", "other.example")) == ""

    assert "is not an address" in refused(env.run("alias", "add", info, "not-an-address"))
    assert "not hosted" in refused(env.run("alias", "add", "x@nothere.org", f"a@{DOMAIN}"))
    env.add_user(f"a@{DOMAIN}", PASSWORD)
    assert refused(env.run("alias", "add", f"a@{DOMAIN}", f"b@{DOMAIN}")).startswith(
        f"a@{DOMAIN} is an account"
    )
    assert env.run("alias", "add", info).returncode == 2  # click: TARGET is required

    out = ok(env.run("alias", "remove", info, "ext@elsewhere.example"))
    assert (
        out == f"removed ext@elsewhere.example from {info}; now {info} -> a@{DOMAIN}, b@{DOMAIN}\n"
    )
    assert refused(env.run("alias", "remove", info, "ext@elsewhere.example")) == (
        f"alias {info} has no target ext@elsewhere.example; list aliases with: pochta alias list"
    )
    ok(env.run("alias", "remove", info))
    assert ok(env.run("alias", "list")) == ""
    assert refused(env.run("alias", "remove", info)) == (
        f"no alias {info}; list aliases with: pochta alias list"
    )


def test_import_passwd_file(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    env = pochta_env
    lines: list[str] = []
    schemes: list[str] = []
    for row in TESTDATA.read_text().splitlines():
        if row.startswith("#") or not row.strip():
            continue
        scheme, value = row.split("\t")
        schemes.append(scheme)
        # Bare user names take --domain, like a per-domain Dovecot passwd-file.
        lines.append(f"user{len(lines)}:{value}::::::userdb_quota_rule=*:storage=1G")
    users = tmp_path / "users"
    users.write_text("# dovecot users\n" + "\n".join(lines) + "\n")
    cram_line = schemes.index("CRAM-MD5") + 2

    proc = env.run("user", "import-passwd-file", str(users), "--domain", DOMAIN)
    assert proc.returncode == 1
    assert proc.stdout == f"imported {len(lines) - 1} accounts from {users}\n"
    errors = proc.stderr.splitlines()
    assert errors[0].startswith(f"pochta: error: {users}:{cram_line}: ")
    assert "CRAM-MD5" in errors[0]
    assert errors[1] == (
        f"pochta: error: 1 line of {users} could not be imported; "
        "fix them and run the import again with --skip-existing"
    )
    listed = ok(env.run("user", "list", DOMAIN)).splitlines()
    assert len(listed) == len(lines) - 1
    assert f"user0@{DOMAIN} quota=1G enabled" in listed
    sha = schemes.index("SHA512-CRYPT")
    assert "password   SHA512-CRYPT" in ok(env.run("user", "info", f"user{sha}@{DOMAIN}"))

    # Again: without --skip-existing every line fails; with it, only CRAM-MD5 does.
    proc = env.run("user", "import-passwd-file", str(users), "--domain", DOMAIN)
    assert proc.returncode == 1
    assert f"{len(lines)} lines of {users} could not be imported" in proc.stderr
    users.write_text("\n".join(line for i, line in enumerate(lines) if i != cram_line - 2) + "\n")
    out = ok(
        env.run("user", "import-passwd-file", str(users), "--domain", DOMAIN, "--skip-existing")
    )
    assert (
        out == f"imported 0 accounts from {users}, skipped {len(lines) - 1} that already existed\n"
    )

    assert (
        refused(
            env.run("user", "import-passwd-file", str(tmp_path / "missing"), "--domain", DOMAIN)
        )
        == f"cannot read {tmp_path / 'missing'}: No such file or directory"
    )
    assert refused(
        env.run("user", "import-passwd-file", str(users), "--domain", "nothere.org")
    ) == ("domain nothere.org is not hosted here; add it with: pochta domain add nothere.org")


@pytest.mark.parametrize("local", ["a/b", "/abs", "..", ".hidden", "tab\there"])
def test_user_add_refuses_local_parts_that_cannot_name_a_mailbox(
    pochta_env: PochtaEnv, local: str
) -> None:
    # The local part names DATA/mail/DOMAIN/LOCALPART; refused before the password prompt.
    message = refused(pochta_env.run("user", "add", f"{local}@{DOMAIN}", "--password-stdin"))
    assert message.startswith(repr(f"{local}@{DOMAIN}"))
    assert "letters, digits, non-ASCII letters and ! # $ % & ' * + - = ? ^ _ ` { | } ~" in message
    assert "with single dots between them" in message
    assert ok(pochta_env.run("user", "list", DOMAIN)) == ""
    assert not (pochta_env.data_dir / "mail" / "abs").exists()


def test_domain_add_refuses_a_slash(pochta_env: PochtaEnv) -> None:
    message = refused(pochta_env.run("domain", "add", "a/b.example"))
    assert "not a valid domain name; labels are letters, digits and '-'" in message


def test_import_passwd_file_reports_and_skips_local_parts_with_a_slash(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    env = pochta_env
    users = tmp_path / "users"
    users.write_text(f"a/b:{{PLAIN}}x\n/abs@{DOMAIN}:{{PLAIN}}x\nfine:{{PLAIN}}x\n")
    proc = env.run("user", "import-passwd-file", str(users), "--domain", DOMAIN)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == f"imported 1 account from {users}\n"
    errors = proc.stderr.splitlines()
    assert errors[0].startswith(f"pochta: error: {users}:1: 'a/b@{DOMAIN}' cannot be a mailbox")
    assert errors[1].startswith(f"pochta: error: {users}:2: '/abs@{DOMAIN}' cannot be a mailbox")
    for line in errors[:2]:
        assert "may only hold letters, digits" in line
    assert errors[2] == (
        f"pochta: error: 2 lines of {users} could not be imported; "
        "fix them and run the import again with --skip-existing"
    )
    assert ok(env.run("user", "list", DOMAIN)).splitlines() == [
        f"fine@{DOMAIN} quota=unlimited enabled"
    ]
