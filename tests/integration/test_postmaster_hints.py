"""Issue 17 point 7: the postmaster hints are commands that work as written, and `pochta
domain add` of the host name or a [local] domains name (the local class, whose aliases are
alias_maps lines) is refused with what to do instead. Each hint is run as the log gives it."""

from __future__ import annotations

import re
import shlex
import signal
import smtplib
import subprocess

from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, serve, set_key

# The commands a hint names: "pochta SUBCOMMAND ..." up to the next ";", "(" or the end.
COMMAND = re.compile(r"pochta [a-z]+(?: [^;()]*[^;() ])?")


def _commands(hint: str) -> list[list[str]]:
    return [shlex.split(found)[1:] for found in COMMAND.findall(hint)]


def _rcpt(env: PochtaEnv, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        s.ehlo("client.example.net")
        s.mail("someone@example.net")
        code, _ = s.rcpt(address)
        s.rset()
    return code


def _run_as_written(env: PochtaEnv, args: list[str]) -> str:
    proc = env.run(*args)
    assert proc.returncode == 0, f"pochta {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def test_no_postmaster_hints_work_as_written(pochta_env: PochtaEnv) -> None:
    env = pochta_env  # pochta init: no account yet, server.postmaster empty
    with serve(env.config_path) as server:
        assert _rcpt(env, f"postmaster@{HOSTNAME}") == 451
        local_hint = server.wait_for("no_postmaster")["hint"]
        assert _rcpt(env, f"postmaster@{DOMAIN}") == 451
        hosted_hint = server.wait_for("no_postmaster", count=2)["hint"]

        # The host name is the local class: no `pochta alias add` (it is refused there) and
        # no `pochta user add` (which sends the admin to `domain add HOST`, the trap).
        local = _commands(local_hint)
        assert local == [["config", "set", "server.postmaster", "you@example.org"]]
        hosted = _commands(hosted_hint)
        assert ["alias", "add", f"postmaster@{DOMAIN}", "you@example.org"] in hosted

        alias = next(c for c in hosted if c[0] == "alias")
        _run_as_written(env, alias)
        assert _rcpt(env, f"postmaster@{DOMAIN}") == 250

        _run_as_written(env, local[0])
        server.signal(signal.SIGHUP)
        server.wait_for("reloaded")
        assert _rcpt(env, f"postmaster@{HOSTNAME}") == 250
    assert "postmaster   -> you@example.org (server.postmaster)" in env.run("check").stdout


def test_double_bounce_hint_commands_work_as_written(pochta_env: PochtaEnv) -> None:
    from pochta.deliver.notices import Notices

    notices = Notices(object(), lambda: None, HOSTNAME, f"postmaster@{HOSTNAME}", 60)  # type: ignore[arg-type, return-value]
    import asyncio

    from structlog.testing import capture_logs

    from pochta.queue.envelope import Envelope, Recipient

    envelope = Envelope(
        queue_id="A1",
        sender="",
        recipients=[Recipient(address=f"postmaster@{HOSTNAME}")],
        arrival=0.0,
        size=1,
        protocol="dsn",
    )
    with capture_logs() as logs:
        asyncio.run(notices(envelope, envelope.recipients, "bounce"))
    [dropped] = [e for e in logs if e["event"] == "dsn_dropped"]
    commands = _commands(dropped["reason"])
    assert commands == [["check"], ["config", "set", "server.postmaster", "you@example.org"]]
    for args in commands:
        _run_as_written(pochta_env, args)
    assert "postmaster   -> you@example.org" in pochta_env.run("check").stdout


def _refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stderr


def test_domain_add_of_the_host_name_is_refused_with_what_to_do(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    before = env.run("domain", "list").stdout
    message = _refused(env.run("domain", "add", HOSTNAME))
    assert f"{HOSTNAME} is the host name (server.hostname)" in message
    assert "alias_maps" in message
    assert "pochta config set server.postmaster you@example.org" in message
    assert f"pochta domain add {HOSTNAME} --force" in message
    assert env.run("domain", "list").stdout == before  # nothing changed
    commands = _commands(message)
    assert ["config", "set", "tables.alias_maps", "/etc/pochta/aliases"] in commands
    for args in commands:
        # The alias_maps one names a file the admin creates first; --force is the last resort.
        if "--force" not in args and "tables.alias_maps" not in args:
            _run_as_written(env, args)


def test_domain_add_of_a_local_domains_name_is_refused(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    set_key(env.config_path, "local", "domains", '["localhost", "box.example.test"]')
    message = _refused(env.run("domain", "add", "box.example.test"))
    assert "box.example.test is a [local] domains name" in message


def test_domain_add_force_hosts_the_host_name(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    proc = env.run("domain", "add", HOSTNAME, "--force", "--no-dkim")
    assert proc.returncode == 0, proc.stderr
    assert f"added domain {HOSTNAME}" in proc.stdout
    assert f"{HOSTNAME} is the host name (server.hostname): mail for it now goes" in proc.stdout


def test_alias_add_in_the_local_class_says_where_the_alias_goes(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    message = _refused(env.run("alias", "add", f"postmaster@{HOSTNAME}", f"bob@{DOMAIN}"))
    assert "the local address class: its aliases live in alias_maps files" in message
    assert f"pochta config set server.postmaster bob@{DOMAIN}" in message
    assert f"'postmaster: bob@{DOMAIN}'" in message
    assert "pochta domain add" not in message  # the old trap
    [config_set, alias_maps] = _commands(message)
    _run_as_written(env, config_set)
    # The alias_maps hint names the file to set up; it works once the file exists.
    aliases = env.data_dir / "aliases"
    aliases.write_text(f"postmaster: bob@{DOMAIN}\n")
    assert alias_maps[:3] == ["config", "set", "tables.alias_maps"]
    _run_as_written(env, ["config", "set", "tables.alias_maps", str(aliases)])
    message = _refused(env.run("alias", "add", f"root@{HOSTNAME}", f"bob@{DOMAIN}"))
    assert f"'root: bob@{DOMAIN}' to {aliases} (an alias_maps file; then reload)" in message


def test_user_add_in_the_local_class_says_where_the_user_goes(pochta_env: PochtaEnv) -> None:
    """The host name is the local class: an account there is refused with the alias_maps
    line to write, not sent to `domain add` (which refuses the host name); once the host
    name is hosted with --force, accounts and aliases in it work."""
    proc = pochta_env.run(
        "user", "add", f"bob@{HOSTNAME}", "--password-stdin", input="correct horse battery\n"
    )
    assert proc.returncode == 1
    assert "the local address class" in proc.stderr, proc.stderr
    assert "'bob: bob@YOUR-DOMAIN'" in proc.stderr, proc.stderr
    assert "domain add" not in proc.stderr, proc.stderr
    pochta_env.run("domain", "add", HOSTNAME, "--force", "--no-dkim", check=True)
    pochta_env.add_user(f"bob@{HOSTNAME}", "correct horse battery")
    pochta_env.run("alias", "add", f"postmaster@{HOSTNAME}", f"bob@{HOSTNAME}", check=True)
