"""`pochta table query|check`, run as a real process and through click's CliRunner.

Exit statuses follow postmap(1) -q: 0 found (value on stdout), 1 not found (no output),
1 on errors (one line on stderr).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pochta.cli.table import table

VIRTUAL = """\
# virtual alias map
Alice@Example.com    alice@mail.example.com
bob@example.com      bob@mail.example.com,
                     bob@backup.example.net
@example.org         catchall@example.com
"""

ALIASES = """\
postmaster: root
root: alice, "|/usr/bin/logger -t mail, root", /var/log/root-mail
team: :include:/etc/mail/team
"""


def pochta(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pochta", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.fixture
def virtual(tmp_path: Path) -> Path:
    path = tmp_path / "virtual"
    path.write_text(VIRTUAL)
    return path


@pytest.fixture
def aliases(tmp_path: Path) -> Path:
    path = tmp_path / "aliases"
    path.write_text(ALIASES)
    return path


# -- real process ---------------------------------------------------------------------------


def test_query_found(virtual: Path) -> None:
    result = pochta("table", "query", str(virtual), "ALICE@example.COM")
    assert (result.returncode, result.stdout, result.stderr) == (0, "alice@mail.example.com\n", "")


def test_query_continued_value(virtual: Path) -> None:
    result = pochta("table", "query", f"hash:{virtual}", "bob@example.com")
    assert result.returncode == 0
    assert result.stdout == ("bob@mail.example.com,                     bob@backup.example.net\n")


def test_query_not_found(virtual: Path) -> None:
    result = pochta("table", "query", f"texthash:{virtual}", "carol@example.com")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


def test_query_db_name_reads_text_source(virtual: Path) -> None:
    result = pochta("table", "query", f"hash:{virtual}.db", "@example.org")
    assert (result.returncode, result.stdout) == (0, "catchall@example.com\n")


def test_query_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_text("ok value\nlonely@example.com\n")
    result = pochta("table", "query", str(path), "ok")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"pochta: error: {path}:2: key 'lonely@example.com' has no value; write 'key "
        "whitespace value' on one line, e.g. 'lonely@example.com VALUE'\n"
    )


def test_query_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    result = pochta("table", "query", str(path), "k")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"pochta: error: {path}: cannot read: No such file or directory; "
        "check the path and permissions\n"
    )


def test_query_unknown_type(virtual: Path) -> None:
    result = pochta("table", "query", f"ldap:{virtual}", "k")
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"pochta: error: ldap:{virtual}: unsupported table type 'ldap'; use one of texthash,"
    )


def test_query_regexp_table(tmp_path: Path) -> None:
    path = tmp_path / "virtual.regexp"
    path.write_text("/^(.*)@old\\.example$/ ${1}@new.example\n")
    result = pochta("table", "query", f"regexp:{path}", "Joe@old.example")
    assert (result.returncode, result.stdout) == (0, "Joe@new.example\n")
    assert pochta("table", "query", f"pcre:{path}", "joe@else.example").returncode == 1


def test_query_prints_warnings_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "dup"
    path.write_text("k first\nK second\n")
    result = pochta("table", "query", str(path), "k")
    assert (result.returncode, result.stdout) == (0, "first\n")
    assert result.stderr == (
        f"pochta: warning: {path}:2: duplicate entry 'k', ignored; the entry on line 1 is used\n"
    )


def test_query_aliases(aliases: Path) -> None:
    result = pochta("table", "query", "--type", "aliases", str(aliases), "Root")
    assert result.returncode == 0
    assert result.stdout == 'alice, "|/usr/bin/logger -t mail, root", /var/log/root-mail\n'
    result = pochta("table", "query", "--type", "aliases", str(aliases), "nobody")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


def test_query_needs_no_config(virtual: Path, tmp_path: Path) -> None:
    broken = tmp_path / "pochta.toml"
    broken.write_text("this is [not toml")
    env = {**os.environ, "POCHTA_CONFIG": str(broken)}
    result = pochta("table", "query", str(virtual), "alice@example.com", env=env)
    assert (result.returncode, result.stdout) == (0, "alice@mail.example.com\n")


def test_check_good_file(virtual: Path) -> None:
    result = pochta("table", "check", str(virtual))
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"{virtual}: 3 entries, 0 warnings\n",
        "",
    )


def test_check_warnings_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("a b\na c\n")
    result = pochta("table", "check", str(path))
    assert result.returncode == 0
    assert result.stdout == f"{path}: 1 entry, 1 warning\n"
    assert result.stderr == (
        f"pochta: warning: {path}:2: duplicate entry 'a', ignored; the entry on line 1 is used\n"
    )
    path.write_text("a b\nc\n")
    result = pochta("table", "check", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"pochta: error: {path}:2: key 'c' has no value;")


def test_check_aliases_reads_includes(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.write_text("alice\nbob\n")
    path = tmp_path / "aliases"
    path.write_text(f"team: :include:{team}\nroot: alice\n")
    result = pochta("table", "check", "--type", "aliases", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"{path}: 2 aliases, 0 warnings\n",
        "",
    )
    team.unlink()
    result = pochta("table", "check", "--type", "aliases", str(path))
    assert result.returncode == 1
    assert result.stderr == (
        f"pochta: error: {team}: cannot read: No such file or directory; "
        "check the path and permissions\n"
    )


# -- CliRunner --------------------------------------------------------------------------------


def test_cli_runner_query(virtual: Path) -> None:
    runner = CliRunner()
    found = runner.invoke(table, ["query", str(virtual), "alice@example.com"])
    assert (found.exit_code, found.output) == (0, "alice@mail.example.com\n")
    missing = runner.invoke(table, ["query", str(virtual), "zed@example.com"])
    assert (missing.exit_code, missing.output) == (1, "")


def test_cli_runner_error_goes_to_stderr(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("k\n")
    result = CliRunner().invoke(table, ["query", str(path), "k"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"pochta: error: {path}:1: key 'k' has no value")


def test_cli_runner_help_lists_commands() -> None:
    result = CliRunner().invoke(table, ["--help"])
    assert result.exit_code == 0
    assert "query" in result.output
    assert "check" in result.output


# -- against Postfix itself -------------------------------------------------------------------

POSTMAP = shutil.which("postmap")


@pytest.mark.skipif(POSTMAP is None, reason="postmap not installed (Debian package postfix)")
@pytest.mark.parametrize(
    "key",
    ["alice@example.com", "ALICE@EXAMPLE.COM", "bob@example.com", "@example.org", "nobody"],
)
def test_same_answer_as_postmap(virtual: Path, key: str, tmp_path: Path) -> None:
    assert POSTMAP is not None
    # postmap needs a main.cf; an empty one in a private config dir gives Postfix's defaults.
    confdir = tmp_path / "postfix-conf"
    confdir.mkdir()
    (confdir / "main.cf").write_text("compatibility_level = 3.6\n")
    theirs = subprocess.run(
        [POSTMAP, "-c", str(confdir), "-q", key, f"texthash:{virtual}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert theirs.returncode in (0, 1), theirs.stderr
    ours = pochta("table", "query", f"texthash:{virtual}", key)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
