"""`pochta sendmail` -> maildrop/ -> the server's pickup -> the door -> the queue, with the real
`pochta serve`: mail from a local (non-root) user arrives cleaned and DKIM-signed, mail
written while the server is stopped goes out after the start, a corrupt maildrop file does not
stop the next one, a bounce to an outside sender leaves DKIM-signed, and mail queued by an
older version (recipients not yet expanded) is still delivered.

Signatures are checked with dkimpy against the keys that `pochta dns` publishes, served by a
DNS server on loopback (tests/dnsserver.py); the outside MX is an aiosmtpd sink on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from pochta.mime.headers import split_message
from pochta.queue.envelope import Recipient
from pochta.queue.spool import Spool
from tests.dnsserver import ZoneServer
from tests.factories import make_envelope
from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    make_pochta_env,
    serve,
    set_key,
    wait_maildir,
    wait_until,
)
from tests.integration.test_dkim_signing import crlf, dkimpy_verdicts, signature_tags
from tests.integration.test_remote_agent import Sink, free_port

NOBODY = 65534  # a local user that is neither root nor the server's user
OUTSIDE = "carol@elsewhere.example"
MESSAGE = f"From: Alice <alice@{DOMAIN}>\nTo: bob@{DOMAIN}\nSubject: from cron\n\nnightly report\n"


@dataclass
class World:
    env: PochtaEnv
    zone: ZoneServer
    sink: Sink

    def maildir(self, local: str) -> Path:
        return self.env.data_dir / "mail" / DOMAIN / local

    @property
    def spool_dir(self) -> Path:
        return self.env.data_dir / "queue"

    def sendmail(self, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
        """The real command; as ``uid`` (setpriv) when given."""
        command = [sys.executable, "-m", "pochta", "--config", str(self.env.config_path)]
        prefix = []
        if uid is not None:
            prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        env = {k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"}
        return subprocess.run(
            [*prefix, *command, "sendmail", *args],
            input=MESSAGE,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )


@pytest.fixture
def world() -> Iterator[World]:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("as root the test runs sendmail as another user with setpriv(1)")
    # Every directory above maildrop/ must be searchable by a local user: not pytest's
    # tmp_path (under /tmp/pytest-of-root, mode 0700).
    top = Path(tempfile.mkdtemp(prefix="pochta-pickup-"))
    top.chmod(0o755)
    try:
        env = make_pochta_env(top / "data")
        env.add_user(f"bob@{DOMAIN}", "correct horse 1")
        sink = Sink()
        port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port, server_hostname="mx.test")
        controller.start()
        zone_text = env.run("dns", DOMAIN, "--ipv4", "192.0.2.10", check=True).stdout + (
            "elsewhere.example. 300 IN MX 10 mx.elsewhere.example.\n"
            "mx.elsewhere.example. 300 IN A 127.0.0.1\n"
        )
        with ZoneServer(zone_text, origin=".") as zone:
            set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
            set_key(env.config_path, "delivery", "smtp_port", str(port))
            try:
                yield World(env, zone, sink)
            finally:
                controller.stop()
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def as_local_user() -> int | None:
    """The uid to run sendmail as: nobody when we are root, else ourselves (not root)."""
    return NOBODY if os.geteuid() == 0 else None


def fields(path: Path) -> dict[str, list[str]]:
    message = split_message(path.read_bytes())
    out: dict[str, list[str]] = {}
    for h in message.headers:
        out.setdefault(h.key, []).append(h.text)
    return out


def test_sendmail_from_a_local_user_arrives_cleaned_and_signed(world: World) -> None:
    uid = as_local_user() or os.getuid()
    with serve(world.env.config_path) as server:
        proc = world.sendmail("-f", f"alice@{DOMAIN}", f"bob@{DOMAIN}", uid=as_local_user())
        assert proc.returncode == 0, proc.stderr
        (path,) = wait_maildir(world.maildir("bob"), 1, 20, lambda: "\n".join(server.lines))
        server.wait_for("pickup")
    got = fields(path)
    [received] = got["received"]
    assert f"by {HOSTNAME} (pochta, from userid {uid})" in received
    assert len(got["message-id"]) == 1
    assert got["message-id"][0].endswith(f"@{HOSTNAME}>")
    assert len(got["date"]) == 1
    content = crlf(path.read_bytes())
    assert [t[b"d"] for t in signature_tags(content)] == [DOMAIN.encode()] * 2
    assert dkimpy_verdicts(content, world.zone.resolver()) == [True, True]
    assert [p.name for p in (world.spool_dir / "maildrop").iterdir()] == []


def test_a_config_local_users_cannot_read_gets_a_hint(world: World) -> None:
    """pochta init writes the config 0644; one narrowed by hand stops local users, and the
    error says how to fix it (exit 75: try again later)."""
    uid = as_local_user()
    if uid is None:
        pytest.skip("needs root to run sendmail as another local user")
    assert world.env.config_path.stat().st_mode & 0o777 == 0o644
    world.env.config_path.chmod(0o600)
    proc = world.sendmail(f"bob@{DOMAIN}", uid=uid)
    assert proc.returncode == 75
    assert f"chmod 644 {world.env.config_path}" in proc.stderr


def test_sendmail_while_stopped_goes_out_after_start_past_a_corrupt_file(world: World) -> None:
    maildrop = world.spool_dir / "maildrop"
    (maildrop / "0bad").write_bytes(b"POCHTA-MAILDROP 1\n{not json\nSubject: x\r\n\r\n")
    proc = world.sendmail(f"bob@{DOMAIN}", uid=as_local_user())
    assert proc.returncode == 0, proc.stderr  # no server: still written, exit 0
    assert len(list(maildrop.iterdir())) == 2
    with serve(world.env.config_path) as server:
        (path,) = wait_maildir(world.maildir("bob"), 1, 20, lambda: "\n".join(server.lines))
        corrupt = server.wait_for("pickup_corrupt")
    assert corrupt["file"] == "0bad"
    assert "bad envelope" in corrupt["reason"]
    assert [p.name for p in (world.spool_dir / "maildrop-corrupt").iterdir()] == ["0bad"]
    assert list(maildrop.iterdir()) == []
    assert b"nightly report" in path.read_bytes()


def test_a_bounce_to_an_outside_sender_is_dkim_signed(world: World) -> None:
    with serve(world.env.config_path) as server:
        proc = world.sendmail("-f", OUTSIDE, f"nobody@{DOMAIN}")
        assert proc.returncode == 0, proc.stderr
        server.wait_for("dsn_queued")
        assert world.sink.wait_for_messages(), "\n".join(server.lines)
    [bounce] = world.sink.messages
    assert bounce.mail_from == "<>"
    assert bounce.rcpt_tos == [OUTSIDE]
    head = split_message(bounce.content)
    assert head.get_all("from")[0].text.endswith(f"<MAILER-DAEMON@{HOSTNAME}>")
    # The host name is not hosted: its parent example.test signs (relaxed alignment).
    assert [t[b"d"] for t in signature_tags(bounce.content)] == [DOMAIN.encode()] * 2
    assert dkimpy_verdicts(bounce.content, world.zone.resolver()) == [True, True]


def test_mail_queued_by_an_older_version_is_still_delivered(world: World) -> None:
    """Envelopes as the old `pochta sendmail` wrote them: recipients without a destination,
    and one an older router had marked ``expand:`` (an alias with two targets)."""
    world.env.add_user(f"dave@{DOMAIN}", "correct horse 1")
    world.env.run("alias", "add", f"team@{DOMAIN}", f"bob@{DOMAIN}", f"dave@{DOMAIN}", check=True)

    async def queue_old() -> None:
        spool = Spool(world.spool_dir)
        try:
            content = b"From: alice@example.test\r\nSubject: old\r\n\r\nfrom the old spool\r\n"
            for recipient in (
                Recipient(f"bob@{DOMAIN}"),  # destination "" (never routed)
                Recipient(f"team@{DOMAIN}", destination=f"expand:team@{DOMAIN}"),
            ):
                envelope = make_envelope(
                    recipient, sender="alice@example.test", content=content, protocol="sendmail"
                )
                await spool.enqueue(envelope, content)
        finally:
            spool.close()

    asyncio.run(queue_old())
    with serve(world.env.config_path) as server:
        why = lambda: "\n".join(server.lines)  # noqa: E731
        bob = wait_maildir(world.maildir("bob"), 2, 20, why)
        (dave,) = wait_maildir(world.maildir("dave"), 1, 20, why)
    for path in (*bob, dave):
        assert b"from the old spool" in path.read_bytes()
    with contextlib.suppress(FileNotFoundError):
        assert list((world.spool_dir / "deferred").iterdir()) == []


def test_header_checks_discard_and_hold_apply_to_sendmail_mail(world: World) -> None:
    # header_checks(5) apply to all mail cleanup receives, the sendmail command's too.
    table = world.env.data_dir / "header_checks"
    table.write_text("/^Subject: from cron$/ DISCARD cron noise\n")
    set_key(world.env.config_path, "tables", "header_checks", f'["regexp:{table}"]')
    with serve(world.env.config_path) as server:
        proc = world.sendmail("-f", f"alice@{DOMAIN}", f"bob@{DOMAIN}", uid=as_local_user())
        assert proc.returncode == 0, proc.stderr
        record = server.wait_for("discarded")
        assert record["reason"] == "cron noise"
        # The file goes once the event is logged (pickup.py removes it last).
        maildrop = world.spool_dir / "maildrop"
        assert wait_until(lambda: not list(maildrop.iterdir())), list(maildrop.iterdir())
        listing = world.env.run("queue", "list", "--json", check=True).stdout
        assert json.loads(listing) == []
        # A SIGHUP reads the edited table: HOLD now, into the hold queue.
        table.write_text("/^Subject: from cron$/ HOLD\n")
        server.signal(signal.SIGHUP)
        server.wait_for("reloaded")
        proc = world.sendmail("-f", f"alice@{DOMAIN}", f"bob@{DOMAIN}", uid=as_local_user())
        assert proc.returncode == 0, proc.stderr
        server.wait_for("pickup")
        listing = world.env.run("queue", "list", "--json", check=True).stdout
        assert [entry["state"] for entry in json.loads(listing)] == ["hold"]
