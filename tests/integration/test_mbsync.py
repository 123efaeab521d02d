"""The Debian `mbsync` (isync) syncing a real `pochta serve` mailbox into a local Maildir.

isync 1.4 chooses its SASL mechanism itself (no ``AuthMechs`` line): with the Cyrus SASL
SCRAM plugin installed it takes SCRAM-SHA-256 and sends an authorisation identity equal to
the user name (``n,a=USER,n=USER,...``), which pochta must accept (RFC 5802 §5.1/§7).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, maildir_files, serve, wait_maildir

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync is not installed")


@pytest.fixture
def imap(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def _mbsyncrc(env: PochtaEnv, local: Path, ssl_type: str, port: int) -> str:
    cert = env.data_dir / "tls" / "cert.pem"
    # No AuthMechs: isync picks the mechanism from the server's AUTH= capabilities.
    return (
        "IMAPAccount pochta\n"
        "Host 127.0.0.1\n"
        f"Port {port}\n"
        f"User {ALICE}\n"
        f'Pass "{PASSWORD}"\n'
        f"SSLType {ssl_type}\n"
        f"CertificateFile {cert}\n"
        "\n"
        "IMAPStore pochta-remote\n"
        "Account pochta\n"
        "\n"
        "MaildirStore local\n"
        f"Path {local}/\n"
        f"Inbox {local}/INBOX\n"
        "\n"
        "Channel inbox\n"
        "Far :pochta-remote:\n"
        "Near :local:\n"
        "Patterns INBOX\n"
        "Create Near\n"
        "SyncState *\n"
    )


@pytest.mark.parametrize(("ssl_type", "port_name"), [("IMAPS", "imaps"), ("STARTTLS", "imap")])
def test_mbsync_default_mechanism_syncs_delivered_mail(
    imap: tuple[PochtaEnv, ServeProcess], tmp_path: Path, ssl_type: str, port_name: str
) -> None:
    env, server = imap
    body = b"Subject: for mbsync\r\n\r\nSynced by isync.\r\n"
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as s:
        s.sendmail("carol@example.org", [ALICE], body)
    wait_maildir(env.data_dir / "mail" / DOMAIN / "alice", 1, 15.0, lambda: "\n".join(server.lines))

    home = tmp_path / "home"
    home.mkdir()
    local = tmp_path / "local"
    local.mkdir()
    rc = home / ".mbsyncrc"
    rc.write_text(_mbsyncrc(env, local, ssl_type, env.ports[port_name]))
    rc.chmod(0o600)
    proc = subprocess.run(
        ["mbsync", "-Dn", "-c", str(rc), "-a"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=120,
        check=False,
    )
    log = f"mbsync exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n" + "\n".join(
        server.lines
    )
    assert proc.returncode == 0, log
    # The mechanism isync chose by itself (its network trace, -Dn), and pochta's login.
    assert "AUTHENTICATE SCRAM-SHA-256" in proc.stdout + proc.stderr, log
    assert [r["user"] for r in server.events("login") if r.get("logger") == "imap"] == [ALICE]
    assert not server.events("auth_failed"), log
    files = maildir_files(local / "INBOX")
    assert len(files) == 1, log
    assert b"Subject: for mbsync" in files[0].read_bytes()
