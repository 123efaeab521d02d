"""kill -9 at a random moment loses no acknowledged message and delivers none twice."""

from __future__ import annotations

import random
import re
import smtplib
import threading
import time
from collections import Counter

from tests.conftest import DOMAIN, PochtaEnv
from tests.integration.test_serve import serve

CONNECTIONS = 20
PER_CONNECTION = 25  # 500 messages in all
TOKEN = re.compile(rb"X-Token: (\d+)")


def _client(port: int, first: int, acked: list[int], lock: threading.Lock) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            for n in range(first, first + PER_CONNECTION):
                msg = f"X-Token: {n}\r\nSubject: crash {n}\r\n\r\nmessage {n}\r\n".encode()
                c.sendmail("load@remote.example", [f"alice@{DOMAIN}"], msg)
                with lock:
                    acked.append(n)  # the server said 250: it must be delivered
    except (OSError, smtplib.SMTPException):
        return  # the server was killed under us: what was not acknowledged may be lost


def _tokens(env: PochtaEnv) -> Counter[int]:
    root = env.data_dir / "mail" / DOMAIN / "alice"
    found: Counter[int] = Counter()
    for sub in ("new", "cur"):
        for path in (root / sub).glob("*"):
            match = TOKEN.search(path.read_bytes())
            assert match is not None, path
            found[int(match.group(1))] += 1
    return found


def _spool_empty(env: PochtaEnv) -> bool:
    spool = env.data_dir / "queue"
    return all(not any((spool / s).glob("*")) for s in ("incoming", "active", "deferred"))


def test_kill_9_loses_nothing_and_duplicates_nothing(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", "crash-test-pw1")
    acked: list[int] = []
    lock = threading.Lock()
    rng = random.Random()
    with serve(env.config_path) as server:
        threads = [
            threading.Thread(
                target=_client, args=(env.ports["smtp"], i * PER_CONNECTION, acked, lock)
            )
            for i in range(CONNECTIONS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        kill_after = rng.randint(50, 400)  # acknowledged messages before the kill
        while len(acked) < kill_after and time.monotonic() < deadline:
            time.sleep(0.005)
        server.proc.kill()  # SIGKILL: no clean-up of any kind
        server.proc.wait(10)
        for t in threads:
            t.join(30)
    with lock:
        acknowledged = set(acked)
    assert acknowledged, "no message was acknowledged before the kill"

    with serve(env.config_path) as server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = _tokens(env)
            if acknowledged <= set(found) and _spool_empty(env):
                break
            time.sleep(0.2)
        found = _tokens(env)
    missing = acknowledged - set(found)
    assert not missing, f"acknowledged but not delivered: {sorted(missing)[:20]}"
    twice = {n: c for n, c in found.items() if c > 1}
    assert not twice, f"delivered more than once: {twice}"
