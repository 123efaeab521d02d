"""`pochta sieve`, run as an administrator would, over a data dir made by `pochta init`.

Commands that only move scripts run as the real command (a subprocess). Those that compile
(put, check, global put, global include put) run in this process through click's runner with
a small fake compiler that refuses any script with the word "bogus" at that word's line and
column and warns about "discard" (the interpreter has no warnings yet); one subprocess test
uses the real interpreter (``pochta.sieve.script``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pochta.access import managesieve as service_module
from pochta.access.managesieve import Interpreter
from pochta.cli.main import cli
from pochta.config.load import load_settings
from pochta.sieve.scripts import ScriptStore
from tests.harness import DOMAIN, PochtaEnv
from tests.integration.test_managesieve import fake_check

ALICE = f"alice@{DOMAIN}"
GOOD = 'require ["fileinto"];\nfileinto "X";\n'
BAD = 'require ["fileinto"];\n\n   bogus "X";\n'


@pytest.fixture
def env(pochta_env: PochtaEnv) -> PochtaEnv:
    pochta_env.add_user(ALICE, "correct horse 1")
    return pochta_env


@pytest.fixture
def fake_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        service_module, "default_interpreter", lambda: Interpreter(("fileinto",), fake_check)
    )


def store_of(env: PochtaEnv) -> ScriptStore:
    return ScriptStore.from_settings(load_settings(env.config_path))


def invoke(env: PochtaEnv, *args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["--config", str(env.config_path), "sieve", *args], input=stdin
    )
    return result.exit_code, result.stdout, result.stderr


def test_put_compiles_first_and_stores(env: PochtaEnv, fake_compiler: None, tmp_path: Path) -> None:
    good = tmp_path / "good.sieve"
    good.write_text(GOOD)
    bad = tmp_path / "bad.sieve"
    bad.write_text(BAD)
    code, out, err = invoke(env, "put", ALICE, "main", str(good), "--activate")
    assert (code, err) == (0, "")
    assert out == f"Stored 'main' for {ALICE} (active)\n"
    code, out, err = invoke(env, "put", ALICE, "broken", str(bad))
    assert code == 1
    assert err == f"pochta: error: {bad}: line 3, column 4: unknown command 'bogus'\n"
    # From stdin, with a warning.
    code, out, err = invoke(env, "put", ALICE, "warned", "-", stdin="discard;\n")
    assert code == 0
    assert err == "pochta: warning: stdin: discard: the message is thrown away\n"
    store = store_of(env)
    assert store.scripts(ALICE) == [("main", True), ("warned", False)]
    assert store.get(ALICE, "main") == GOOD


def test_check_says_ok_or_where_the_error_is(env: PochtaEnv, fake_compiler: None) -> None:
    assert invoke(env, "check", "-", stdin=GOOD) == (0, "stdin: OK\n", "")
    assert invoke(env, "check", "-", stdin=BAD) == (
        1,
        "",
        "pochta: error: stdin: line 3, column 4: unknown command 'bogus'\n",
    )
    assert invoke(env, "check", "-", stdin=b"keep;\xff\n") == (
        1,
        "",
        "pochta: error: stdin is not UTF-8 (octet 6); Sieve scripts are UTF-8\n",
    )
    code, _, err = invoke(env, "check", "/nonexistent/x.sieve")
    assert code == 1
    assert err.startswith("pochta: error: cannot read /nonexistent/x.sieve:")


def test_global_scripts(env: PochtaEnv, fake_compiler: None) -> None:
    assert invoke(env, "global", "put", DOMAIN, "before", "-", stdin=GOOD)[0] == 0
    assert invoke(env, "global", "get", DOMAIN, "before") == (0, GOOD, "")
    assert invoke(env, "global", "put", DOMAIN, "after", "-", stdin=BAD)[0] == 1
    assert invoke(env, "global", "put", "other.test", "after", "-", stdin=GOOD) == (
        1,
        "",
        "pochta: error: no domain other.test; add it first: pochta domain add other.test\n",
    )
    assert invoke(env, "global", "include", "put", "spam-rules", "-", stdin=GOOD)[0] == 0
    assert store_of(env).get_global_include("spam-rules") == GOOD
    assert invoke(env, "global", "include", "get", "spam-rules") == (0, GOOD, "")
    assert invoke(env, "global", "include", "delete", "spam-rules")[0] == 0
    assert invoke(env, "global", "include", "get", "spam-rules")[0] == 1
    [before] = store_of(env).delivery_scripts(ALICE)
    assert (before.scope, before.text) == ("before", GOOD)
    assert invoke(env, "global", "delete", DOMAIN, "before")[0] == 0
    assert store_of(env).delivery_scripts(ALICE) == []


def test_managing_an_accounts_scripts(env: PochtaEnv) -> None:
    store = store_of(env)
    store.put(ALICE, "one", "keep;\n")
    store.put(ALICE, "two", "discard;\n")
    assert env.run("sieve", "list", ALICE, check=True).stdout == "one\ntwo\n"
    assert env.run("sieve", "activate", ALICE, "two", check=True).returncode == 0
    assert env.run("sieve", "list", ALICE, check=True).stdout == "one\ntwo  (active)\n"
    assert env.run("sieve", "get", ALICE, "two", check=True).stdout == "discard;\n"
    proc = env.run("sieve", "delete", ALICE, "two")
    assert proc.returncode == 1
    assert proc.stderr == (f"pochta: error: {ALICE}: script 'two' is active; deactivate it first\n")
    env.run("sieve", "rename", ALICE, "two", "zwei", check=True)
    assert env.run("sieve", "list", ALICE, check=True).stdout == "one\nzwei  (active)\n"
    env.run("sieve", "deactivate", ALICE, check=True)
    env.run("sieve", "delete", ALICE, "zwei", check=True)
    assert env.run("sieve", "list", ALICE, check=True).stdout == "one\n"
    proc = env.run("sieve", "get", ALICE, "zwei")
    assert (proc.returncode, proc.stderr) == (
        1,
        f"pochta: error: {ALICE}: no script named 'zwei'\n",
    )


def test_an_unknown_account_is_a_clear_error(env: PochtaEnv) -> None:
    proc = env.run("sieve", "list", f"nobody@{DOMAIN}")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"pochta: error: no account nobody@{DOMAIN}; add it first: pochta user add "
        f"nobody@{DOMAIN}\n"
    )


def test_put_with_the_real_interpreter(env: PochtaEnv) -> None:
    proc = env.run("sieve", "put", ALICE, "main", "-", input=GOOD)
    assert proc.returncode == 0, proc.stderr
    proc = env.run("sieve", "put", ALICE, "broken", "-", input='require "fileinto";\nfrob;\n')
    assert proc.returncode == 1
    assert proc.stderr == "pochta: error: stdin: line 2, column 1: unknown command 'frob'\n"
    assert store_of(env).scripts(ALICE) == [("main", False)]
