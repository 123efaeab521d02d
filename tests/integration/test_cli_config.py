"""`pochta config get|set` (issue 17 point 11), postconf's job, on the pochta.toml that the
real `pochta init` wrote: get one key, every key, only the file's (-n); set keeps the
comments and layout, validates as `pochta check` and leaves the file untouched on refusal."""

from __future__ import annotations

import difflib
import subprocess
import tomllib

import pytest

from tests.harness import HOSTNAME, PochtaEnv


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr.startswith("pochta: error: "), proc.stderr
    return proc.stderr.removeprefix("pochta: error: ")


def test_get_one_key_a_table_and_every_setting(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    assert ok(env.run("config", "get", "server.hostname")) == f'server.hostname = "{HOSTNAME}"\n'
    assert ok(env.run("config", "get", "local.domains")) == 'local.domains = ["localhost"]\n'
    every = ok(env.run("config", "get")).splitlines()
    keys = [line.split(" = ", 1)[0] for line in every]
    assert len(keys) == len(set(keys)) > 150
    # Defaults the file does not write are listed too (postconf without -n).
    assert 'server.log_file = ""' in every
    assert any(k.startswith("imap.") for k in keys)
    server = ok(env.run("config", "get", "server")).splitlines()
    assert server
    assert all(line.startswith("server.") for line in server)
    assert f'server.hostname = "{HOSTNAME}"' in server


def _drop_line(env: PochtaEnv, line: str) -> None:
    text = env.config_path.read_text()
    assert f"\n{line}\n" in text
    env.config_path.write_text(text.replace(f"\n{line}\n", "\n", 1))


def test_get_n_lists_only_what_the_file_sets(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    _drop_line(env, 'log_file = ""')  # pochta init writes every key; a file with fewer
    _drop_line(env, 'pid_file = "pochta.pid"')
    data = tomllib.loads(env.config_path.read_text())
    in_file = {f"{t}.{k}" for t, table in data.items() for k in table}
    lines = ok(env.run("config", "get", "-n")).splitlines()
    assert {line.split(" = ", 1)[0] for line in lines} == in_file
    assert "server.log_file" not in {line.split(" = ", 1)[0] for line in lines}
    every = ok(env.run("config", "get")).splitlines()
    assert 'server.log_file = ""' in every
    assert 'server.pid_file = "pochta.pid"' in every  # the default stands in


def test_get_of_an_unknown_key_suggests_the_right_one(pochta_env: PochtaEnv) -> None:
    message = refused(pochta_env.run("config", "get", "server.hostnme"))
    assert "no setting server.hostnme; did you mean server.hostname?" in message


def _changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_set_edits_one_line_and_keeps_comments_and_layout(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    before = env.config_path.read_text()
    out = ok(env.run("config", "set", "server.postmaster", "admin@example.org"))
    assert out.splitlines()[0] == 'server.postmaster = "admin@example.org" (was "")'
    assert "kill -HUP $(cat " in out
    after = env.config_path.read_text()
    assert _changed_lines(before, after) == [
        '-postmaster = ""',
        '+postmaster = "admin@example.org"',
    ]
    assert ok(env.run("config", "get", "server.postmaster")) == (
        'server.postmaster = "admin@example.org"\n'
    )
    ok(env.run("check"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("localhost", "mail.local"), ["localhost", "mail.local"]),
        (("localhost, mail.local",), ["localhost", "mail.local"]),  # main.cf's list syntax
        (('["localhost", "mail.local"]',), ["localhost", "mail.local"]),  # TOML
        (("[]",), []),
    ],
)
def test_set_takes_lists_as_toml_arguments_or_main_cf_text(
    pochta_env: PochtaEnv, values: tuple[str, ...], expected: list[str]
) -> None:
    env = pochta_env
    ok(env.run("config", "set", "local.domains", *values))
    assert tomllib.loads(env.config_path.read_text())["local"]["domains"] == expected


def test_set_parses_numbers_and_booleans_as_toml(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    ok(env.run("config", "set", "server.processes", "2"))
    ok(env.run("config", "set", "mailauth.check_incoming", "true"))
    data = tomllib.loads(env.config_path.read_text())
    assert data["server"]["processes"] == 2
    assert data["mailauth"]["check_incoming"] is True


def test_set_adds_a_key_the_file_does_not_have(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    _drop_line(env, 'log_file = ""')
    ok(env.run("config", "set", "server.log_file", "pochta.log"))
    assert tomllib.loads(env.config_path.read_text())["server"]["log_file"] == "pochta.log"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("server.log_level", "loud"), 'server.log_level: "loud" is not allowed'),
        (("server.processes", "-1"), "server.processes"),
        (("tables.alias_maps", "/nonexistent/aliases"), "/nonexistent/aliases: cannot read"),
        (("server.hostnme", "x.example"), "did you mean server.hostname?"),
        (("server.processes", "many"), "server.processes"),
        (("server", "x"), "server is a table, not a setting"),
    ],
)
def test_set_refuses_what_check_refuses_and_leaves_the_file(
    pochta_env: PochtaEnv, args: tuple[str, ...], expected: str
) -> None:
    env = pochta_env
    before = env.config_path.read_bytes()
    proc = env.run("config", "set", *args)
    assert proc.returncode == 1, proc.stdout
    assert expected in proc.stderr
    assert env.config_path.read_bytes() == before
