"""`pochta queue` and `pochta sendmail`, run as the real command in a data dir made by init."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import time
from pathlib import Path
from typing import Any

from pochta.queue.spool import Spool
from pochta.receive.maildrop import Drop, decode
from tests.factories import make_envelope
from tests.harness import HOSTNAME, PochtaEnv

MESSAGE = "Subject: test\nFrom: alice@example.test\nTo: bob@example.org\n\nHello\n"


def spool_of(env: PochtaEnv) -> Path:
    return env.data_dir / "queue"


def listing(env: PochtaEnv) -> list[dict[str, Any]]:
    proc = env.run("queue", "list", "--json", check=True)
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def content_of(env: PochtaEnv, queue_id: str) -> bytes:
    """The content part of a message file (after the envelope line)."""
    (path,) = spool_of(env).glob(f"*/{queue_id}")
    return path.read_bytes().split(b"\n", 1)[1]


def dropped(env: PochtaEnv) -> list[tuple[Drop, bytes]]:
    """What `pochta sendmail` left in maildrop/ for the server's pickup: (envelope, message)."""
    maildrop = spool_of(env) / "maildrop"
    return [decode(p.read_bytes()) for p in sorted(maildrop.iterdir()) if "." not in p.name]


def one_line_error(proc: Any, text: str) -> None:
    assert proc.returncode == 1, proc
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert text in proc.stderr


def make_message(env: PochtaEnv, *recipients: str, state: str = "incoming") -> str:
    """Queue a message through the spool API and move it to ``state``."""

    async def run() -> str:
        spool = Spool(spool_of(env))
        try:
            envelope = make_envelope(*recipients, sender="alice@example.test")
            queue_id = await spool.enqueue(envelope, b"Subject: made\r\n\r\nbody\r\n")
            if state == "deferred":
                for r in envelope.recipients:
                    r.status, r.attempts = "deferred", 2
                    r.reply = "451 4.4.1 Connection refused"
                    r.next_attempt = time.time() + 600
                await spool.update_envelope(queue_id, envelope)
            if state != "incoming":
                await spool.move(queue_id, state)  # type: ignore[arg-type]
            return queue_id
        finally:
            spool.close()

    return asyncio.run(run())


# -- pochta sendmail -----------------------------------------------------------------------


def test_sendmail_writes_the_maildrop_not_the_queue(pochta_env: PochtaEnv) -> None:
    maildrop = spool_of(pochta_env) / "maildrop"
    assert maildrop.stat().st_mode & 0o7777 == 0o1733  # made by init: write, never list
    proc = pochta_env.run(
        "sendmail", "-f", "alice@example.test", "bob@example.org", input=MESSAGE + ".\nafter\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert listing(pochta_env) == []  # the server's pickup queues it
    [(drop, content)] = dropped(pochta_env)
    [name] = [p.name for p in maildrop.iterdir()]
    assert len(name) == 32  # random, unguessable
    assert "." not in name  # no .tmp left
    assert drop.sender == "alice@example.test"
    assert drop.recipients == ["bob@example.org"]
    assert drop.uid == os.getuid()
    assert drop.body == ""  # pickup detects it
    # CRLF line ends; a line with only "." ended the input
    assert content == MESSAGE.replace("\n", "\r\n").encode()
    assert drop.size == len(content)


def test_sendmail_t_takes_header_recipients_and_drops_bcc(pochta_env: PochtaEnv) -> None:
    message = (
        "From alice Mon Jan  1 00:00:00 2024\n"  # mbox line: dropped
        "Subject: team\n"
        "To: Bob <bob@example.org>, carol@example.org\n"
        "Cc: dave@example.net\n"
        "Bcc: secret@example.net,\n"
        "  hidden@example.net\n"
        "\n"
        "Dear all,\n"
        ".\n"
        "this stays, thanks to -oi\n"
    )
    proc = pochta_env.run(
        "sendmail", "-t", "-oi", "-F", "Alice", "extra@example.org", input=message
    )
    assert proc.returncode == 0, proc.stderr
    [(drop, content)] = dropped(pochta_env)
    assert drop.recipients == [
        "extra@example.org",
        "bob@example.org",
        "carol@example.org",
        "dave@example.net",
        "secret@example.net",
        "hidden@example.net",
    ]
    assert b"Bcc" not in content
    assert b"hidden" not in content
    assert content.startswith(b"Subject: team\r\n")
    assert content.endswith(b".\r\nthis stays, thanks to -oi\r\n")


def test_sendmail_defaults_and_dsn_options(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run(
        "sendmail",
        "-N",
        "success,failure",
        "-R",
        "hdrs",
        "-V",
        "env-1",
        "root",
        input="Subject: caf\u00e9\n\nna\u00efve\n",
    )
    assert proc.returncode == 0, proc.stderr
    [(drop, _)] = dropped(pochta_env)
    user = pwd.getpwuid(os.getuid()).pw_name
    assert drop.sender == f"{user}@{HOSTNAME}"  # the Unix user @ server.hostname
    assert drop.recipients == [f"root@{HOSTNAME}"]  # bare name: @hostname appended
    assert drop.notify == ["SUCCESS", "FAILURE"]
    assert drop.ret == "HDRS"
    assert drop.envid == "env-1"


def test_sendmail_null_sender(pochta_env: PochtaEnv) -> None:
    assert pochta_env.run("sendmail", "-f", "<>", "bob@example.org", input=MESSAGE).returncode == 0
    assert dropped(pochta_env)[0][0].sender == ""


def test_sendmail_usage_errors_exit_64(pochta_env: PochtaEnv) -> None:
    for args, text in [
        ((), "no recipients"),
        (("-t",), "no recipient addresses found"),
        (("-bs", "bob@example.org"), "-bs is not supported"),
        (("-q",), "-q is not supported"),
        (("-N", "sometimes", "bob@example.org"), "-N sometimes"),
        (("-Z", "bob@example.org"), "option -Z not recognized"),
        (("bad address@example.org",), "bad address"),
    ]:
        proc = pochta_env.run("sendmail", *args, input="Subject: x\n\nbody\n")
        assert proc.returncode == 64, (args, proc.stderr)
        assert text in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1
    assert dropped(pochta_env) == []


def test_sendmail_temporary_failures_exit_75(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    proc = pochta_env.run(
        "sendmail", "-C", str(tmp_path / "missing.toml"), "bob@example.org", input=MESSAGE
    )
    assert proc.returncode == 75, proc.stderr
    assert "cannot read the config" in proc.stderr
    maildrop = spool_of(pochta_env) / "maildrop"
    maildrop.rmdir()
    maildrop.write_text("a file where the maildrop directory should be")
    proc = pochta_env.run("sendmail", "bob@example.org", input=MESSAGE)
    assert proc.returncode == 75, proc.stderr
    assert "pochta sendmail:" in proc.stderr
    assert "maildrop" in proc.stderr


def test_sendmail_too_big_exits_65(pochta_env: PochtaEnv) -> None:
    text = pochta_env.config_path.read_text()
    pochta_env.config_path.write_text(
        text.replace("max_message_bytes = 52428800", "max_message_bytes = 100")
    )
    proc = pochta_env.run("sendmail", "bob@example.org", input=MESSAGE + "x" * 200 + "\n")
    assert proc.returncode == 65, proc.stderr
    assert "max_message_bytes" in proc.stderr


# -- pochta queue --------------------------------------------------------------------------


def test_list_empty_queue(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run("queue", "list", check=True)
    assert proc.stdout == "Mail queue is empty\n"
    assert listing(pochta_env) == []


def test_list_shows_recipients_with_status_reply_and_next_try(pochta_env: PochtaEnv) -> None:
    deferred = make_message(pochta_env, "bob@example.org", "carol@example.org", state="deferred")
    held = make_message(pochta_env, "dave@example.org", state="hold")
    fresh = make_message(pochta_env, "erin@example.org")
    out = pochta_env.run("queue", "list", check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("-Queue ID-")
    assert any(line.startswith(f"{fresh} ") and "alice@example.test" in line for line in lines)
    assert any(line.startswith(f"{held}!") for line in lines)
    assert "bob@example.org  [deferred, 2 attempts, next try " in out
    assert "(451 4.4.1 Connection refused)" in out
    assert lines[-1] == "-- 1 Kbytes in 3 Requests."
    states = {e["queue_id"]: e["state"] for e in listing(pochta_env)}
    assert states == {deferred: "deferred", held: "hold", fresh: "incoming"}
    only = pochta_env.run("queue", "list", "--json", "--state", "hold", check=True)
    assert [e["queue_id"] for e in json.loads(only.stdout)] == [held]


def test_show_prints_envelope_and_headers(pochta_env: PochtaEnv) -> None:
    queue_id = make_message(pochta_env, "bob@example.org")
    proc = pochta_env.run("queue", "show", queue_id, check=True)
    assert "state: incoming" in proc.stdout
    assert '"sender": "alice@example.test"' in proc.stdout
    assert "Subject: made" in proc.stdout
    assert "body" not in proc.stdout.split("Subject: made")[1]  # headers only
    full = pochta_env.run("queue", "show", "--content", queue_id, check=True)
    assert "body" in full.stdout.split("Subject: made")[1]


def test_unknown_ids_are_one_line_errors(pochta_env: PochtaEnv) -> None:
    for command in ("show", "hold", "release", "requeue", "delete"):
        proc = pochta_env.run("queue", command, "08DwkSowAg7wXGl")
        one_line_error(proc, "no message 08DwkSowAg7wXGl in the queue")
    one_line_error(pochta_env.run("queue", "delete", "../../etc"), "no message ../../etc")


def test_hold_release_requeue_delete(pochta_env: PochtaEnv) -> None:
    queue_id = make_message(pochta_env, "bob@example.org")
    proc = pochta_env.run("queue", "hold", queue_id, check=True)
    assert proc.stdout == "Placed on hold: 1 message\n"
    assert (spool_of(pochta_env) / "hold" / queue_id).exists()
    one_line_error(pochta_env.run("queue", "hold", queue_id), "on hold")
    pochta_env.run("queue", "release", queue_id, check=True)
    assert (spool_of(pochta_env) / "incoming" / queue_id).exists()
    pochta_env.run("queue", "hold", queue_id, check=True)
    pochta_env.run("queue", "requeue", queue_id, check=True)
    assert (spool_of(pochta_env) / "incoming" / queue_id).exists()
    proc = pochta_env.run("queue", "delete", queue_id, check=True)
    assert proc.stdout == "Deleted: 1 message\n"
    assert not any(spool_of(pochta_env).glob(f"*/{queue_id}"))
    assert listing(pochta_env) == []


def test_all_and_an_active_message(pochta_env: PochtaEnv) -> None:
    a = make_message(pochta_env, "a@example.org")
    b = make_message(pochta_env, "b@example.org", state="deferred")
    c = make_message(pochta_env, "c@example.org", state="active")
    assert (
        pochta_env.run("queue", "hold", "ALL", check=True).stdout == "Placed on hold: 2 messages\n"
    )
    one_line_error(pochta_env.run("queue", "hold", c), "being delivered")
    assert pochta_env.run("queue", "release", "ALL", check=True).stdout == (
        "Released from hold: 2 messages\n"
    )
    states = {e["queue_id"]: e["state"] for e in listing(pochta_env)}
    assert states == {a: "incoming", b: "incoming", c: "active"}
    assert pochta_env.run("queue", "delete", "ALL", check=True).stdout == "Deleted: 3 messages\n"
    assert listing(pochta_env) == []


def test_flush_moves_deferred_to_incoming(pochta_env: PochtaEnv) -> None:
    deferred = make_message(pochta_env, "bob@example.org", state="deferred")
    held = make_message(pochta_env, "carol@example.org", state="hold")
    proc = pochta_env.run("queue", "flush", check=True)
    assert proc.stdout == "1 deferred message made due now\n"
    states = {e["queue_id"]: e["state"] for e in listing(pochta_env)}
    assert states == {deferred: "incoming", held: "hold"}
