"""A domain's catch-all set and removed from the CLI (issue 17 point 13): `pochta domain set
D --catchall ADDR | --no-catchall` and `pochta alias add|remove @D`, then real mail to an
unknown user of D through the real server's port 25."""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from tests.factories import make_message
from tests.harness import DOMAIN, PochtaEnv, mailbox_files, serve, smtp_send, wait_files


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr.startswith("pochta: error: "), proc.stderr
    return proc.stderr.removeprefix("pochta: error: ").strip()


def _unknown_user_refused(env: PochtaEnv) -> int:
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        try:
            s.send_message(make_message(f"nobody-here@{DOMAIN}", "no catch-all"))
        except smtplib.SMTPRecipientsRefused as exc:
            return exc.recipients[f"nobody-here@{DOMAIN}"][0]
    return 250


def test_domain_set_catchall_and_no_catchall(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", "correct horse battery")
    out = ok(env.run("domain", "set", DOMAIN, "--catchall", f"Alice@{DOMAIN}"))
    assert out.strip() == f"catch-all of {DOMAIN} -> alice@{DOMAIN}"
    assert f"catchall=alice@{DOMAIN}" in ok(env.run("domain", "list"))
    assert f"catchall  alice@{DOMAIN}" in ok(env.run("domain", "show", DOMAIN))
    with serve(env.config_path):
        smtp_send(env, f"whoever@{DOMAIN}", "to the catch-all")
        files = wait_files(env, "alice", 1)
        assert len(files) == 1
        assert b"Subject: to the catch-all" in files[0].read_bytes()
    out = ok(env.run("domain", "set", DOMAIN, "--no-catchall"))
    assert (
        out.strip()
        == f"removed the catch-all of {DOMAIN} (was alice@{DOMAIN}); unknown users get 550"
    )
    assert "catchall=" not in ok(env.run("domain", "list"))
    with serve(env.config_path):
        assert _unknown_user_refused(env) == 550
    assert len(mailbox_files(env, "alice")) == 1


def test_alias_add_and_remove_at_domain_is_the_catchall(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"bob@{DOMAIN}", "correct horse battery")
    out = ok(env.run("alias", "add", f"@{DOMAIN}", f"bob@{DOMAIN}"))
    assert out.strip() == f"catch-all of {DOMAIN} -> bob@{DOMAIN}"
    assert f"@{DOMAIN} -> bob@{DOMAIN}" in ok(env.run("alias", "list")).splitlines()
    assert f"catchall=bob@{DOMAIN}" in ok(env.run("domain", "list"))
    with serve(env.config_path):
        smtp_send(env, f"sales@{DOMAIN}", "to the catch-all")
        assert len(wait_files(env, "bob", 1)) == 1
    ok(env.run("alias", "remove", f"@{DOMAIN}"))
    assert "catchall=" not in ok(env.run("domain", "list"))
    with serve(env.config_path):
        assert _unknown_user_refused(env) == 550


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("domain", "set", "nowhere.test", "--catchall", "a@example.test"), "not hosted here"),
        (("domain", "set", DOMAIN), "nothing to change; give --catchall ADDR or --no-catchall"),
        (("domain", "set", DOMAIN, "--catchall", "a@x.test", "--no-catchall"), "not both"),
        (("alias", "add", f"@{DOMAIN}", "a@x.test", "b@x.test"), "a catch-all takes one address"),
        (("alias", "add", "@nowhere.test", "a@x.test"), "not hosted here"),
    ],
)
def test_catchall_refusals_say_what_to_do(
    pochta_env: PochtaEnv, args: tuple[str, ...], expected: str
) -> None:
    assert expected in refused(pochta_env.run(*args))
