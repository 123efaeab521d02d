"""`[server] log_file` and `[server] pid_file` with the real `pochta serve` (issue 17 point
11): the log appended to the file and reopened on SIGHUP as logrotate needs (rename, signal,
the next lines in a new file); the PID file written after binding, removed on exit, a live
pochta refused, a stale file replaced; both still work after the drop to run_as_user."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.harness import PochtaEnv, make_pochta_env, serve, set_key, wait_until


def _events(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [
        part.removeprefix("event=")
        for line in path.read_text().splitlines()
        for part in line.split()
        if part.startswith("event=")
    ]


@contextmanager
def serve_to_file(config: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    """`pochta serve` whose log goes to ``log``; waits for `ready` there; killed at the end."""
    env = {k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pochta", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ready = wait_until(lambda: "ready" in _events(log) or proc.poll() is not None, 20)
        assert ready, "no ready event in the log file"
        assert proc.poll() is None, proc.communicate()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_log_file_gets_the_log_and_is_reopened_on_sighup(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    set_key(env.config_path, "server", "log_file", '"pochta.log"')
    log = env.data_dir / "pochta.log"
    rotated = env.data_dir / "pochta.log.1"
    with serve_to_file(env.config_path, log) as proc:
        assert "starting" in _events(log)
        log.rename(rotated)  # logrotate: rename, then postrotate sends SIGHUP
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reloaded" in _events(log), 20), _events(rotated)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        _, stderr = proc.communicate(timeout=10)
    assert stderr == ""  # nothing on stderr: all of it went to the file
    before, after = _events(rotated), _events(log)
    assert "ready" in before
    assert "reload" not in before
    assert after[0] == "reload"  # the reload's own lines already in the new file
    assert "reloaded" in after
    assert after[-1] == "shutdown"


def test_a_log_file_that_cannot_be_opened_stops_serve_with_what_to_fix(
    pochta_env: PochtaEnv,
) -> None:
    set_key(pochta_env.config_path, "server", "log_file", '"/nonexistent-dir/pochta.log"')
    proc = pochta_env.run("serve", timeout=30)
    assert proc.returncode == 1
    assert "cannot open the log file /nonexistent-dir/pochta.log" in proc.stderr
    assert "fix server.log_file" in proc.stderr


def test_pid_file_written_refuses_a_second_server_and_is_removed_on_exit(
    pochta_env: PochtaEnv,
) -> None:
    env = pochta_env
    pid_file = env.data_dir / "pochta.pid"  # the default: pid_file = "pochta.pid"
    with serve(env.config_path) as server:
        written = server.wait_for("pid_file_written")
        assert pid_file.read_text() == f"{server.proc.pid}\n"
        assert written["path"] == str(pid_file)
        second = env.run("serve", timeout=30)
        assert second.returncode == 1
        assert f"pochta already runs as process {server.proc.pid}" in second.stderr
        assert f"kill {server.proc.pid}" in second.stderr
        assert pid_file.read_text() == f"{server.proc.pid}\n"  # left as it was
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0
    assert not pid_file.exists()


def test_a_stale_pid_file_is_replaced(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    pid_file = env.data_dir / "pochta.pid"
    gone = subprocess.Popen(["true"])
    gone.wait()
    other = subprocess.Popen(["sleep", "60"])  # alive, but not pochta (a reused PID)
    try:
        for stale in (gone.pid, other.pid):
            pid_file.write_text(f"{stale}\n")
            with serve(env.config_path) as server:
                server.wait_for("pid_file_stale")
                server.wait_for("pid_file_written")
                assert pid_file.read_text() == f"{server.proc.pid}\n"
    finally:
        other.kill()
        other.wait()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_log_and_pid_files_work_after_the_drop_to_run_as_user() -> None:
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="pochta-logpid-"))
    try:
        top.chmod(0o755)  # pytest's tmp_path is out of nobody's reach
        env = make_pochta_env(top / "data")
        set_key(env.config_path, "server", "run_as_user", '"nobody"')
        set_key(env.config_path, "server", "log_file", '"pochta.log"')
        log = env.data_dir / "pochta.log"
        pid_file = env.data_dir / "pochta.pid"
        with serve_to_file(env.config_path, log) as proc:
            assert wait_until(lambda: "privileges_dropped" in _events(log), 20)
            assert log.stat().st_uid == nobody.pw_uid
            assert pid_file.stat().st_uid == nobody.pw_uid
            log.rename(env.data_dir / "pochta.log.1")
            proc.send_signal(signal.SIGHUP)
            assert wait_until(lambda: "reloaded" in _events(log), 20)
            assert log.stat().st_uid == nobody.pw_uid  # made by the server's user
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        assert not pid_file.exists()  # removed by nobody
        assert "shutdown" in _events(log)
    finally:
        shutil.rmtree(top, ignore_errors=True)
