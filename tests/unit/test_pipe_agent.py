"""The pipe agent: the exit-status table, and real commands run with /bin/sh -c.

As root the agent switches to the command's user, so the commands here run as ``nobody``
and write into a directory that ``nobody`` owns (pytest's tmp_path is out of its reach);
otherwise they run as the test's own user and write under tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pochta.deliver import pipe as pipe_module
from pochta.deliver.pipe import (
    MAX_REPLY_OUTPUT_CHARS,
    OUTPUT_GRACE_SECONDS,
    SYSEXITS,
    PipeAgent,
    exit_status_reply,
    parse_pipe_destination,
    sanitize_output,
)
from pochta.queue.envelope import Recipient
from tests.factories import make_envelope

ROOT = os.geteuid() == 0
ME = pwd.getpwuid(os.geteuid()).pw_name
# The user named in the destination: as root a real switch happens.
USER = "nobody" if ROOT else ME
CONTENT = b"Subject: hi\r\nFrom: alice@example.org\r\n\r\nbody line\r\n.\r\nlast\r\n"


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory the command's user can write."""
    if not ROOT:
        yield tmp_path
        return
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="pochta-pipe-"))
    try:
        os.chown(top, nobody.pw_uid, nobody.pw_gid)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


envelope = partial(
    make_envelope,
    queue_id="0AbCdEfGhIjKlMn",
    content=CONTENT,
    client_ip="192.0.2.7",
    client_helo="client.example.org",
    protocol="ESMTPS",
)


RCPT = Recipient("support+urgent@mail.example.test", original="support@example.test")


def home_or_root(home: str) -> str:
    return home if os.path.isdir(home) else "/"


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init to reap it counts)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the exit status table (pure) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outcome", "reply"),
    [
        (0, "delivered", "250 2.0.0 delivered to command"),
        (64, "bounced", "554 5.3.0 command line usage error"),
        (65, "bounced", "554 5.6.0 data format error"),
        (67, "bounced", "550 5.1.1 user unknown"),
        (68, "bounced", "550 5.1.2 host name unknown"),
        (69, "bounced", "554 5.3.0 service unavailable"),
        (70, "bounced", "554 5.3.0 internal software error"),
        (71, "deferred", "451 4.3.0 system resource problem"),
        (73, "bounced", "550 5.2.0 can't create user output file"),
        (74, "bounced", "554 5.3.0 input/output error"),
        (75, "deferred", "451 4.3.0 temporary failure"),
        (76, "bounced", "554 5.5.0 remote error in protocol"),
        (77, "bounced", "550 5.7.0 permission denied"),
        (78, "bounced", "554 5.3.5 local configuration error"),
        (1, "bounced", "554 5.3.0 command died with status 1"),
        (127, "bounced", "554 5.3.0 command died with status 127"),
    ],
)
def test_exit_codes_map_as_postfix_does(code: int, outcome: str, reply: str) -> None:
    got_outcome, got_reply = exit_status_reply(code, None, "")
    assert (got_outcome, str(got_reply)) == (outcome, reply)


def test_only_oserr_and_tempfail_are_temporary() -> None:
    assert set(SYSEXITS) == set(range(64, 79))  # every sysexits.h code has an entry
    temporary = {c for c in SYSEXITS if exit_status_reply(c, None, "")[0] == "deferred"}
    assert temporary == {71, 75}
    for code, (enhanced, _) in SYSEXITS.items():
        _, reply = exit_status_reply(code, None, "")
        assert reply.enhanced == enhanced
        assert str(reply.code)[0] == enhanced[0]  # RFC 3463 §2: classes agree


def test_signals_timeouts_and_missing_status_defer() -> None:
    outcome, reply = exit_status_reply(None, 9, "oops")
    assert (outcome, str(reply)) == (
        "deferred",
        "451 4.3.0 command died with signal 9. Command output: oops",
    )
    outcome, reply = exit_status_reply(None, 9, "", timed_out=True)
    assert (outcome, str(reply)) == ("deferred", "451 4.3.0 command time limit exceeded")
    assert exit_status_reply(None, None, "")[0] == "deferred"


def test_output_is_sanitised_and_bounded() -> None:
    raw = "No such\tuser\r\n  here\n\x1b[31mred\x00 caf\u00e9\n"
    assert sanitize_output(raw) == "No such user here _[31mred_ caf_"
    _, reply = exit_status_reply(67, None, raw)
    assert str(reply) == "550 5.1.1 user unknown. Command output: No such user here _[31mred_ caf_"
    long = sanitize_output("word " * 1000)
    assert len(long) == MAX_REPLY_OUTPUT_CHARS
    assert long.endswith("...")
    assert sanitize_output(" \n\t ") == ""


@given(st.text(), st.integers(min_value=0, max_value=255))
def test_any_output_gives_a_one_line_printable_reply(output: str, code: int) -> None:
    shown = sanitize_output(output)
    assert len(shown) <= MAX_REPLY_OUTPUT_CHARS
    assert all(" " <= c <= "~" for c in shown)
    _, reply = exit_status_reply(code, None, output)
    assert all(" " <= c <= "~" for c in str(reply))


def test_parse_pipe_destination() -> None:
    assert parse_pipe_destination("pipe:nobody:/bin/x --a=b:c") == ("nobody", "/bin/x --a=b:c")
    for bad in ("pipe:", "pipe:nobody", "pipe::cmd", "pipe:nobody:  ", "mailbox:a@b"):
        with pytest.raises(ValueError, match="not a pipe destination"):
            parse_pipe_destination(bad)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        PipeAgent(timeout_seconds=0)


# -- real commands ---------------------------------------------------------------------------


async def test_command_gets_message_and_local8_environment(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POCHTA_TEST_LEAK", "must not reach the command")
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("LANG", "C.UTF-8")
    agent = PipeAgent(timeout_seconds=30, config_path="/etc/pochta/pochta.toml")
    command = (
        f"env > {scratch}/env; cat > {scratch}/stdin; id -u > {scratch}/uid; "
        f"id -G > {scratch}/groups; pwd > {scratch}/cwd"
    )
    env_in = envelope(client_helo="evil\x00helo\nX-Injected: 1", envid="env-1")
    attempt = await agent.deliver(env_in, RCPT, CONTENT, command, USER)
    assert (attempt.recipient_address, attempt.outcome) == (RCPT.address, "delivered")
    assert attempt.reply == "250 2.0.0 delivered to command"

    # Return-Path and Delivered-To first, LF line ends, the lone "." line kept as is.
    assert (scratch / "stdin").read_bytes() == (
        b"Return-Path: <alice@example.org>\n"
        b"Delivered-To: support+urgent@mail.example.test\n"
        b"Subject: hi\nFrom: alice@example.org\n\nbody line\n.\nlast\n"
    )
    env = dict(
        line.split("=", 1) for line in (scratch / "env").read_text().splitlines() if "=" in line
    )
    who = pwd.getpwnam(USER)
    expected = {
        "SENDER": "alice@example.org",
        "RECIPIENT": "support+urgent@mail.example.test",
        "ORIGINAL_RECIPIENT": "support@example.test",
        "LOCAL": "support+urgent",
        "USER": "support",
        "EXTENSION": "urgent",
        "DOMAIN": "mail.example.test",
        "HOME": who.pw_dir,
        "SHELL": who.pw_shell,
        "LOGNAME": USER,
        "PATH": "/usr/bin:/bin",
        "QUEUE_ID": "0AbCdEfGhIjKlMn",
        "SIZE": str(len(CONTENT)),
        "CLIENT_ADDRESS": "192.0.2.7",
        "CLIENT_PROTOCOL": "ESMTPS",
        "ENVID": "env-1",
        "POCHTA_CONFIG": "/etc/pochta/pochta.toml",
        "TZ": "UTC",  # exported from the server, as Postfix's export_environment
        "LANG": "C.UTF-8",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["CLIENT_HELO"] == "evil_helo_X-Injected: 1"  # no control characters
    assert "POCHTA_TEST_LEAK" not in env  # nothing else from the server's environment
    assert set(env) - set(expected) <= {"CLIENT_HELO", "SASL_USERNAME", "PWD", "SHLVL", "_"}
    uid = int((scratch / "uid").read_text())
    groups = {int(g) for g in (scratch / "groups").read_text().split()}
    assert uid == who.pw_uid
    if ROOT:
        assert 0 not in groups  # root's groups were not inherited
        assert groups == set(os.getgrouplist(USER, who.pw_gid))
    cwd = (scratch / "cwd").read_text().strip()
    assert cwd == home_or_root(who.pw_dir)


async def test_null_sender_and_no_extension(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    command = (
        f'printf "%s|%s|%s" "$SENDER" "$USER" "$EXTENSION" > {scratch}/out; '
        f"head -1 > {scratch}/first"
    )
    rcpt = Recipient("support@mail.example.test")
    attempt = await agent.deliver(envelope(sender=""), rcpt, CONTENT, command, USER)
    assert attempt.outcome == "delivered"
    assert (scratch / "out").read_text() == "|support|"
    assert (scratch / "first").read_text() == "Return-Path: <>\n"  # RFC 5321 §4.4


async def test_exit_75_defers_with_the_commands_words(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    attempt = await agent.deliver(
        envelope(), RCPT, CONTENT, "cat >/dev/null; echo 'mailbox locked, try later'; exit 75", USER
    )
    assert attempt.outcome == "deferred"
    assert attempt.reply == "451 4.3.0 temporary failure. Command output: mailbox locked, try later"


async def test_exit_67_bounces_5_1_1(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    attempt = await agent.deliver(
        envelope(), RCPT, CONTENT, "echo 'no such ticket queue' >&2; exit 67", USER
    )
    assert attempt.outcome == "bounced"
    assert attempt.reply == "550 5.1.1 user unknown. Command output: no such ticket queue"


async def test_signal_defers(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    attempt = await agent.deliver(envelope(), RCPT, CONTENT, "kill -TERM $$", USER)
    assert (attempt.outcome, attempt.reply) == (
        "deferred",
        "451 4.3.0 command died with signal 15",
    )


@pytest.fixture
def group_kills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each process group the agent kills (and still kills it)."""
    killed: list[int] = []
    real = pipe_module._kill_group

    def record(pgid: int) -> None:
        killed.append(pgid)
        real(pgid)

    monkeypatch.setattr(pipe_module, "_kill_group", record)
    return killed


async def test_timeout_kills_the_whole_process_group(scratch: Path, group_kills: list[int]) -> None:
    agent = PipeAgent(timeout_seconds=0.5)
    command = f"sleep 100 & echo $! > {scratch}/child; echo started; wait"
    attempt = await agent.deliver(envelope(), RCPT, CONTENT, command, USER)
    assert attempt.outcome == "deferred"
    assert attempt.reply == "451 4.3.0 command time limit exceeded. Command output: started"
    assert len(group_kills) == 1  # the time limit killed the group: no wait for `sleep 100`
    child = int((scratch / "child").read_text())
    assert wait_gone(child), "the shell's child `sleep 100` survived the time limit"


async def test_children_holding_the_output_are_killed_after_the_shell_exits(
    scratch: Path, group_kills: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    graces: list[float | None] = []
    real_timeout = asyncio.timeout

    def recorded_timeout(delay: float | None) -> asyncio.Timeout:
        graces.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(pipe_module.asyncio, "timeout", recorded_timeout)
    agent = PipeAgent(timeout_seconds=30)
    command = f"sleep 100 & echo $! > {scratch}/child; exit 0"
    attempt = await agent.deliver(envelope(), RCPT, CONTENT, command, USER)
    assert attempt.outcome == "delivered"  # the shell's status counts
    assert OUTPUT_GRACE_SECONDS in graces  # the child got the grace time for its output...
    assert len(group_kills) == 1  # ...and was then killed with its group
    assert wait_gone(int((scratch / "child").read_text()))


async def test_a_command_that_ignores_stdin_or_talks_a_lot_does_not_hang(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 4000  # far more than a pipe holds
    attempt = await agent.deliver(envelope(), RCPT, big, "exit 0", USER)
    assert attempt.outcome == "delivered"  # stopping early is fine (EPIPE is ignored)
    chatty = "head -c 2000000 /dev/zero | tr '\\0' y; exit 74"
    attempt = await agent.deliver(envelope(), RCPT, CONTENT, chatty, USER)
    assert attempt.outcome == "bounced"
    prefix = "554 5.3.0 input/output error. Command output: "
    assert attempt.reply.startswith(prefix + "yyy")
    assert len(attempt.reply) == len(prefix) + MAX_REPLY_OUTPUT_CHARS


async def test_delivered_to_loop_bounces_without_running(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    looped = b"Delivered-To: support+urgent@mail.example.test\r\n" + CONTENT
    attempt = await agent.deliver(envelope(), RCPT, looped, f"touch {scratch}/ran", USER)
    assert attempt.outcome == "bounced"
    assert attempt.reply.startswith("554 5.4.6 ")
    assert not (scratch / "ran").exists()


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="only root can switch users")
async def test_root_never_runs_a_command_as_root(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    with capture_logs() as logs:
        attempt = await agent.deliver(envelope(), RCPT, CONTENT, f"id -u > {scratch}/uid", "root")
    assert attempt.outcome == "delivered"
    assert int((scratch / "uid").read_text()) == pwd.getpwnam("nobody").pw_uid
    assert any(e["event"] == "pipe_refuses_root" for e in logs)
    attempt = await agent.deliver(envelope(), RCPT, CONTENT, "exit 0", "no-such-user-pochta")
    assert (attempt.outcome, attempt.reply) == (
        "deferred",
        "451 4.3.5 local configuration error: command user unusable",
    )


@pytest.mark.skipif(ROOT, reason="as root the agent switches users")
async def test_without_root_the_command_runs_as_the_server_user(scratch: Path) -> None:
    agent = PipeAgent(timeout_seconds=30)
    with capture_logs() as logs:
        for _ in range(2):
            attempt = await agent.deliver(
                envelope(), RCPT, CONTENT, f"id -u > {scratch}/uid", "someone-else"
            )
            assert attempt.outcome == "delivered"
    assert int((scratch / "uid").read_text()) == os.geteuid()
    told = [e for e in logs if e["event"] == "pipe_runs_as_server_user"]
    assert len(told) == 1  # once per user, not per message
    assert (told[0]["requested"], told[0]["running_as"]) == ("someone-else", ME)
