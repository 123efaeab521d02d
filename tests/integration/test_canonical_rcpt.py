"""Recipient canonical mapping before the RCPT TO check (issue 17 point 3), with a real
`pochta serve`, smtplib in its default configuration and a canonical table written as
canonical(5) and postmap(1) read it (``recipient_canonical_maps = hash:/etc/postfix/...``).

Postfix's smtpd counts an address as known when it matches a canonical(5) mapping
(postconf(5) smtpd_reject_unlisted_recipient); pochta rewrites first and judges the result,
so a mapping to an address that is no account is accepted (the result is), and a mapping
to an unknown address is refused at RCPT saying so, not bounced later.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    DOMAIN,
    PochtaEnv,
    ServeProcess,
    client_tls,
    serve,
    set_key,
    wait_files,
)

PASSWORD = "correct horse battery"
CANONICAL = f"""\
# recipient_canonical(5): old addresses that are no accounts any more
old@{DOMAIN}            alice@{DOMAIN}
gone@{DOMAIN}           nobody-here@{DOMAIN}
someone@elsewhere.example   alice@{DOMAIN}
"""


@pytest.fixture
def mx(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess, Path]]:
    pochta_env.add_user(f"alice@{DOMAIN}", PASSWORD)
    table = pochta_env.data_dir / "recipient_canonical"
    table.write_text(CANONICAL)
    set_key(pochta_env.config_path, "tables", "recipient_canonical_maps", f'["hash:{table}"]')
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server, table


def test_postmap_reads_the_table_as_we_do(
    mx: tuple[PochtaEnv, ServeProcess, Path], tmp_path: Path
) -> None:
    """The oracle: Postfix's own lookup of the same file gives the mapping the test uses."""
    _, _, table = mx
    if shutil.which("postmap") is None:
        pytest.skip("postmap (Postfix) is not installed")
    copy = tmp_path / "recipient_canonical"
    copy.write_text(table.read_text())
    (tmp_path / "main.cf").write_text("")  # postmap -c: a config directory of its own
    postmap = ["postmap", "-c", str(tmp_path)]
    subprocess.run([*postmap, f"hash:{copy}"], check=True, capture_output=True)
    found = subprocess.run(
        [*postmap, "-q", f"old@{DOMAIN}", f"hash:{copy}"], capture_output=True, text=True
    )
    assert found.stdout.strip() == f"alice@{DOMAIN}"


def test_mx_accepts_an_address_canonical_maps_rewrite_to_an_account(
    mx: tuple[PochtaEnv, ServeProcess, Path],
) -> None:
    env, _, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
        c.ehlo()
        c.mail("carol@remote.example")
        assert c.rcpt(f"old@{DOMAIN}") == (250, b"2.1.5 Recipient OK")
        code, _ = c.data(b"From: carol@remote.example\r\nSubject: to old\r\n\r\nhello\r\n")
        assert code == 250
    (path,) = wait_files(env, "alice", 1)
    assert b"Subject: to old" in path.read_bytes()


def test_mx_refuses_a_rewrite_to_an_unknown_address_naming_both(
    mx: tuple[PochtaEnv, ServeProcess, Path],
) -> None:
    env, _, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
        c.ehlo()
        c.mail("carol@remote.example")
        code, text = c.rcpt(f"gone@{DOMAIN}")
        assert code == 550
        assert text.startswith(b"5.1.1 ")
        assert f"<gone@{DOMAIN}>".encode() in text
        assert f"<nobody-here@{DOMAIN}>".encode() in text
        # An unknown address with no mapping is refused as before.
        assert c.rcpt(f"nobody@{DOMAIN}") == (550, b"5.1.1 No such user here")


def test_relay_permission_is_judged_on_the_address_as_given(
    mx: tuple[PochtaEnv, ServeProcess, Path],
) -> None:
    """Postfix reject_unauth_destination runs in smtpd, before cleanup rewrites: a foreign
    key is no way into our domains for an unauthenticated client."""
    env, _, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as c:
        c.ehlo()
        c.mail("carol@remote.example")
        assert c.rcpt("someone@elsewhere.example") == (554, b"5.7.1 Relay access denied")


def test_submission_rewrites_before_it_resolves(
    mx: tuple[PochtaEnv, ServeProcess, Path],
) -> None:
    env, _, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["submission"], timeout=10) as c:
        c.starttls(context=client_tls())
        c.login(f"alice@{DOMAIN}", PASSWORD)
        c.mail(f"alice@{DOMAIN}")
        assert c.rcpt(f"old@{DOMAIN}") == (250, b"2.1.5 Recipient OK")
        code, text = c.rcpt(f"gone@{DOMAIN}")
        assert code == 550, text
        assert f"<nobody-here@{DOMAIN}>".encode() in text
        code, _ = c.data(f"From: alice@{DOMAIN}\r\nSubject: note to self\r\n\r\nhello\r\n".encode())
        assert code == 250
    files = wait_files(env, "alice", 1)
    assert any(b"Subject: note to self" in p.read_bytes() for p in files)


def test_lmtp_rewrites_before_it_resolves(mx: tuple[PochtaEnv, ServeProcess, Path]) -> None:
    """LMTP accepts only local mailboxes (RFC 2033): judged on the rewritten address too."""
    env, _, _ = mx
    with smtplib.LMTP(str(env.data_dir / "lmtp.sock"), timeout=10) as c:
        c.ehlo()  # LHLO
        c.mail("carol@remote.example")
        assert c.rcpt(f"old@{DOMAIN}") == (250, b"2.1.5 Recipient OK")
        code, text = c.rcpt(f"gone@{DOMAIN}")
        assert code == 550, text
        assert f"<nobody-here@{DOMAIN}>".encode() in text
        code, _ = c.data(b"From: carol@remote.example\r\nSubject: over lmtp\r\n\r\nhi\r\n")
        assert code == 250
    (path,) = wait_files(env, "alice", 1)
    assert b"Subject: over lmtp" in path.read_bytes()


def test_sendmail_and_pickup_agree(mx: tuple[PochtaEnv, ServeProcess, Path]) -> None:
    """`pochta sendmail` checks no recipient (as Postfix's sendmail); pickup's cleanup
    rewrites it with the same maps before the door resolves it. A guard: this held before
    RCPT TO was changed, and must keep holding."""
    env, _, _ = mx
    proc = env.run(
        "sendmail",
        "-f",
        f"alice@{DOMAIN}",
        f"old@{DOMAIN}",
        input=f"From: alice@{DOMAIN}\nSubject: by sendmail\n\nhello\n",
    )
    assert proc.returncode == 0, proc.stderr
    (path,) = wait_files(env, "alice", 1)
    assert b"Subject: by sendmail" in path.read_bytes()
