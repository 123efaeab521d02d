"""The round-robin recipe end to end: support@ -> alias file pipe -> pochta-round-robin ->
`pochta sendmail` -> the managers' INBOXes, with a real `pochta serve` and smtplib.

Who runs the command decides the set-up:

- not root: the server runs as the test's user, and so does the command; the venv's
  `pochta` does the re-submission.
- root: as in production, the server drops to an unprivileged user (``nobody``) and the
  command runs as that user. pytest's tmp_path and this venv's interpreter (under /root)
  are out of its reach, so the data dir lives in a 0755 temporary directory and `pochta` is
  a small wrapper that runs this checkout with the system's Python of the same version.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shlex
import shutil
import smtplib
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pochta
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, make_pochta_env, serve, set_key

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "contrib" / "round-robin" / "pochta-round-robin"
MANAGERS = ("manager1", "manager2")
PIPE_PATH = "/usr/bin:/bin"  # the PATH commands get (local(8))
ROOT = os.geteuid() == 0


def _system_python_like_ours() -> str | None:
    """A python3 on the commands' PATH with our major.minor (it can load our venv's
    compiled packages), else None."""
    found = shutil.which("python3", path=PIPE_PATH)
    if found is None:
        return None
    out = subprocess.run(
        [found, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return found if out == [str(n) for n in sys.version_info[:2]] else None


class Setup:
    """Where things are, and the `pochta` the command re-submits with."""

    def __init__(self, env: PochtaEnv, top: Path, pochta_command: str) -> None:
        self.env = env
        self.top = top
        self.pochta_command = pochta_command
        self.state = top / "state" / "rr-support"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    if shutil.which("python3", path=PIPE_PATH) is None:
        pytest.skip("the recipe's script runs with the python3 found on PATH=/usr/bin:/bin")
    if not ROOT:
        env = make_pochta_env(tmp_path / "data")
        (tmp_path / "state").mkdir()
        yield Setup(env, tmp_path, str(Path(sys.executable).with_name("pochta")))
        return
    python = _system_python_like_ours()
    if python is None:
        pytest.skip(f"as root the command runs as nobody and needs a Python {sys.version[:4]}")
    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="pochta-rr-"))
    try:
        top.chmod(0o755)
        env = make_pochta_env(top / "data")
        set_key(env.config_path, "server", "run_as_user", '"nobody"')
        env.config_path.chmod(0o644)  # `pochta sendmail` in the command reads it as nobody
        (top / "state").mkdir()
        os.chown(top / "state", nobody.pw_uid, nobody.pw_gid)
        wrapper = top / "pochta"
        source = Path(pochta.__file__).resolve().parents[1]
        packages = sysconfig.get_paths()["purelib"]
        wrapper.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={shlex.quote(f'{source}:{packages}')} "
            f'exec {shlex.quote(python)} -m pochta "$@"\n'
        )
        wrapper.chmod(0o755)
        yield Setup(env, top, str(wrapper))
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def inbox(env: PochtaEnv, local: str) -> list[Path]:
    root = env.data_dir / "mail" / DOMAIN / local
    return sorted(p for sub in ("new", "cur") for p in (root / sub).glob("*") if p.is_file())


def wait_total(env: PochtaEnv, count: int, timeout: float = 15.0) -> dict[str, list[Path]]:
    deadline = time.monotonic() + timeout
    while True:
        found = {m: inbox(env, m) for m in MANAGERS}
        if sum(map(len, found.values())) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_support_alternates_between_two_managers(setup: Setup) -> None:
    env = setup.env
    for manager in MANAGERS:
        env.add_user(f"{manager}@{DOMAIN}", "correct horse 1")
    aliases = setup.top / "aliases"
    command = (
        f"{SCRIPT} --state {setup.state} --sendmail '{setup.pochta_command} sendmail' "
        + " ".join(f"{m}@{DOMAIN}" for m in MANAGERS)
    )
    aliases.write_text(f'# the recipe, docs/recipes/round-robin.md\nsupport: "|{command}"\n')
    aliases.chmod(0o644)
    set_key(env.config_path, "tables", "alias_maps", f'["{aliases}"]')
    # support@example.test (a virtual mailbox domain) -> the local alias support@HOSTNAME
    env.run("alias", "add", f"support@{DOMAIN}", f"support@{HOSTNAME}", check=True)

    assert " " not in f"{SCRIPT}{setup.state}{setup.pochta_command}"  # no quoting needed
    seen: set[Path] = set()
    with serve(env.config_path) as server, smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        for n in range(1, 7):
            c.sendmail(
                "carol@remote.example",
                [f"support@{DOMAIN}"],
                f"From: carol@remote.example\r\nSubject: ticket {n}\r\n\r\nhelp {n}\r\n".encode(),
            )
            # One at a time, so the n-th message is the n-th turn.
            found = wait_total(env, n)
            arrived = {p for ps in found.values() for p in ps} - seen
            assert len(arrived) == 1, "\n".join(server.lines)
            seen |= arrived
            (newest,) = arrived
            expected = MANAGERS[(n - 1) % 2]
            assert newest.parent.parent.name == expected
            text = newest.read_bytes()
            assert f"Subject: ticket {n}\n".encode() in text
            # The first delivery's Return-Path was dropped; the sender is kept.
            assert text.count(b"Return-Path:") == 1
            assert text.startswith(b"Return-Path: <carol@remote.example>\n")
            assert f"Delivered-To: {expected}@{DOMAIN}\n".encode() in text
            assert f"Delivered-To: support@{DOMAIN}\n".encode() in text
        time.sleep(0.5)
        found = {m: inbox(env, m) for m in MANAGERS}
        assert [len(found[m]) for m in MANAGERS] == [3, 3]
        assert setup.state.read_text() == "6\n"
        deadline = time.monotonic() + 10
        while env.run("queue", "list", check=True).stdout != "Mail queue is empty\n":
            assert time.monotonic() < deadline, env.run("queue", "list").stdout
            time.sleep(0.1)


# -- the script alone, with a sendmail stand-in that records what it was given ---------------

FAKE_SENDMAIL = """#!/bin/sh
# records its arguments and stdin, then exits with $FAKE_EXIT (default 0)
n=$(date +%s%N)
printf '%s\\n' "$*" > "$FAKE_DIR/args.$n"
cat > "$FAKE_DIR/msg.$n"
echo "fake sendmail says no" >&2
exit "${FAKE_EXIT:-0}"
"""
MESSAGE = (
    b"Return-Path: <carol@remote.example>\n"
    b"Delivered-To: support@example.test\n"
    b"Subject: ticket\n"
    b"Return-path: <folded@\n remote.example>\n"
    b"\n"
    b"Return-Path: this line is body text, kept\n"
)


def run_script(
    tmp_path: Path, *addresses: str, exit_code: int = 0, sender: str | None = "carol@x.example"
) -> subprocess.CompletedProcess[bytes]:
    fake = tmp_path / "sendmail"
    if not fake.exists():
        fake.write_text(FAKE_SENDMAIL)
        fake.chmod(0o755)
    env = {"PATH": PIPE_PATH, "FAKE_DIR": str(tmp_path), "FAKE_EXIT": str(exit_code)}
    if sender is not None:
        env["SENDER"] = sender
    options = ["--state", str(tmp_path / "rr"), "--lock-wait", "0.3", "--sendmail", str(fake)]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *options, *addresses],
        input=MESSAGE,
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


def handed(tmp_path: Path) -> list[tuple[str, bytes]]:
    """(arguments, message) of each sendmail run, oldest first."""
    out = []
    for args in sorted(tmp_path.glob("args.*"), key=lambda p: int(p.suffix[1:])):
        out.append((args.read_text().strip(), (tmp_path / f"msg{args.suffix}").read_bytes()))
    return out


def test_script_takes_turns_and_keeps_the_turn_when_sendmail_fails(tmp_path: Path) -> None:
    managers = ("m1@example.test", "m2@example.test", "m3@example.test")
    for _ in range(4):
        assert run_script(tmp_path, *managers).returncode == 0
    runs = handed(tmp_path)
    assert [a for a, _ in runs] == [
        f"-i -f carol@x.example -- {m}" for m in (*managers, managers[0])
    ]
    # Return-Path goes (with its folded line), Delivered-To stays, the body is untouched.
    assert runs[0][1] == (
        b"Delivered-To: support@example.test\nSubject: ticket\n\n"
        b"Return-Path: this line is body text, kept\n"
    )
    assert (tmp_path / "rr").read_text() == "4\n"

    failed = run_script(tmp_path, *managers, exit_code=75)
    assert failed.returncode == 75  # the queue keeps the message ...
    assert b"fake sendmail says no" in failed.stderr
    assert (tmp_path / "rr").read_text() == "4\n"  # ... and the turn does not advance
    assert run_script(tmp_path, *managers, exit_code=64).returncode == 75
    assert run_script(tmp_path, *managers, exit_code=65).returncode == 65  # too big: bounce
    assert run_script(tmp_path, *managers, sender="").returncode == 0
    assert handed(tmp_path)[-1][0] == "-i -f <> -- m2@example.test"  # the null sender
    assert (tmp_path / "rr").read_text() == "5\n"


def test_script_tries_later_rather_than_lose_mail(tmp_path: Path) -> None:
    no_sender = run_script(tmp_path, "m1@example.test", sender=None)
    assert (no_sender.returncode, b"SENDER is not set" in no_sender.stderr) == (75, True)
    bad = run_script(tmp_path, "not-an-address")
    assert bad.returncode == 75
    assert b"configuration error" in bad.stderr
    (tmp_path / "rr").write_text("garbage\n")  # a damaged state file starts again at 0
    assert run_script(tmp_path, "m1@example.test", "m2@example.test").returncode == 0
    assert handed(tmp_path)[-1][0].endswith("-- m1@example.test")
    with (tmp_path / "rr").open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run_script(tmp_path, "m1@example.test", "m2@example.test")
    assert busy.returncode == 75
    assert b"stayed locked" in busy.stderr
    assert len(handed(tmp_path)) == 1


def test_script_runs_at_the_same_time_still_alternate(tmp_path: Path) -> None:
    fake = tmp_path / "sendmail"
    fake.write_text(FAKE_SENDMAIL)
    fake.chmod(0o755)
    env = {"PATH": PIPE_PATH, "FAKE_DIR": str(tmp_path), "SENDER": "carol@x.example"}
    argv = [sys.executable, str(SCRIPT), "--state", str(tmp_path / "rr"), "--sendmail", str(fake)]
    procs = [
        subprocess.Popen(
            [*argv, "m1@example.test", "m2@example.test"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(10)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(MESSAGE)
        proc.stdin.close()
    assert [proc.wait(30) for proc in procs] == [0] * 10
    chosen = [args.rpartition(" ")[2] for args, _ in handed(tmp_path)]
    assert sorted(chosen) == ["m1@example.test"] * 5 + ["m2@example.test"] * 5
    assert (tmp_path / "rr").read_text() == "10\n"
