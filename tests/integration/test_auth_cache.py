"""The verified-credential cache on the real server: imaplib logs in, the log counts the
Argon2id checks (``password_verified`` with ``source`` hash or cache), never the time.

The cache is per process, so the server runs as one process: with workers, which process
serves a login depends on which of them the master finds least busy at that moment, and
a login served by a process that had not seen the password yet would be a "hash" where the
test expects "cache" (the flakiness of a loaded CI machine, where the workers become ready
and count their connections at varying speeds)."""

from __future__ import annotations

import imaplib
import signal

import pytest

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, serve, set_key

ALICE = f"alice@{DOMAIN}"
PASSWORD = "correct horse 1"
NEW_PASSWORD = "battery staple 2"


def _login(env: PochtaEnv, password: str) -> None:
    with imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=60) as c:
        assert c.login(ALICE, password)[0] == "OK"


def _source(server: ServeProcess, count: int) -> str:
    record = server.wait_for("password_verified", count=count, timeout=60)
    assert record["user"] == ALICE
    return record["source"]


def test_second_login_from_cache_then_passwd_and_sighup(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(ALICE, PASSWORD)
    set_key(pochta_env.config_path, "server", "processes", "1")  # one cache (see above)
    set_key(pochta_env.config_path, "server", "log_level", '"debug"')
    with serve(pochta_env.config_path) as server:
        _login(pochta_env, PASSWORD)
        assert _source(server, 1) == "hash"
        _login(pochta_env, PASSWORD)
        assert _source(server, 2) == "cache"

        # pochta user passwd (another process): the old password stops working at once.
        pochta_env.run(
            "user", "passwd", ALICE, "--password-stdin", input=NEW_PASSWORD + "\n", check=True
        )
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            _login(pochta_env, PASSWORD)
        assert _source(server, 3) == "hash"
        _login(pochta_env, NEW_PASSWORD)
        assert _source(server, 4) == "hash"
        _login(pochta_env, NEW_PASSWORD)
        assert _source(server, 5) == "cache"

        # A reload empties the cache.
        server.signal(signal.SIGHUP)
        server.wait_for("reloaded", timeout=60)
        _login(pochta_env, NEW_PASSWORD)
        assert _source(server, 6) == "hash"
        assert len(server.events("password_verified")) == 6
