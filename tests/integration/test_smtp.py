"""The real `pochta serve` receiving mail from real clients: smtplib, raw sockets, swaks."""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from email.header import Header
from email.utils import formatdate

import pytest

from tests.harness import (
    DOMAIN,
    HOSTNAME,
    PochtaEnv,
    ServeProcess,
    client_tls,
    mailbox_files,
    serve,
    set_key,
    wait_files,
)
from tests.scram_authzid import scram_client

PASSWORD = "correct horse 1"


@pytest.fixture
def mx(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(f"alice@{DOMAIN}", PASSWORD)
    pochta_env.add_user(f"bob@{DOMAIN}", PASSWORD)
    pochta_env.run("alias", "add", f"postmaster@{DOMAIN}", f"alice@{DOMAIN}", check=True)
    pochta_env.run("alias", "add", f"team@{DOMAIN}", f"alice@{DOMAIN}", f"bob@{DOMAIN}", check=True)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def raw_session(port: int, data: bytes, *, wait: float = 1.5) -> bytes:
    """Send ``data`` in one write after the banner; return everything the server said."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.recv(4096)
        s.sendall(data)
        s.settimeout(wait)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def test_ehlo_capabilities(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        code, _ = c.ehlo("client.example")
        assert code == 250
        for ext in (
            "pipelining",
            "size",
            "8bitmime",
            "enhancedstatuscodes",
            "smtputf8",
            "chunking",
            "dsn",
            "starttls",
        ):
            assert c.has_extn(ext), ext
        assert not c.has_extn("auth")  # MX: no AUTH (and never before TLS)
        assert c.esmtp_features["size"] == "52428800"


def test_mx_delivers_to_mailbox_with_trace_headers(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        c.sendmail(
            "carol@remote.example",
            [f"Alice@{DOMAIN}"],
            b"From: carol@remote.example\r\nSubject: hello\r\n\r\nHi Alice\r\n",
        )
    (path,) = wait_files(env, "alice", 1)
    text = path.read_bytes()
    assert text.startswith(
        b"Return-Path: <carol@remote.example>\nDelivered-To: alice@example.test\n"
    )
    assert b"\nReceived: from " in text
    assert b"by mail.example.test (pochta) with ESMTP id " in text
    assert text.endswith(b"\n\nHi Alice\n")  # Maildir files use LF (as Dovecot)
    assert b"Message-ID:" not in text  # never added to MX traffic
    queued = server.wait_for("queued")
    delivered = server.wait_for("delivered")
    assert queued["queue_id"] == delivered["queue_id"]


def test_alias_fans_out(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        c.sendmail(
            "x@remote.example",
            [f"team@{DOMAIN}", f"postmaster@{DOMAIN}"],
            b"Subject: team\r\n\r\nall\r\n",
        )
    assert len(wait_files(env, "alice", 1)) == 1  # team + postmaster -> alice once
    assert len(wait_files(env, "bob", 1)) == 1


def test_unknown_user_and_relay_refused(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        c.ehlo()
        c.mail("x@remote.example")
        assert c.rcpt(f"nobody@{DOMAIN}") == (550, b"5.1.1 No such user here")
        code, msg = c.rcpt("someone@elsewhere.example")
        assert (code, msg) == (554, b"5.7.1 Relay access denied")


def test_submission_needs_tls_then_auth(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["submission"]) as c:
        c.ehlo()
        assert not c.has_extn("auth")
        code, _ = c.docmd("AUTH", "PLAIN AGFsaWNlAHg=")
        assert code == 538
        c.starttls(context=client_tls())
        c.ehlo()
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        assert c.mail(f"alice@{DOMAIN}")[0] == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(f"alice@{DOMAIN}", "wrong")
        c.login(f"alice@{DOMAIN}", PASSWORD)
        c.sendmail(
            f"alice@{DOMAIN}",
            ["outside@elsewhere.example", f"bob@{DOMAIN}"],
            b"From: Alice <alice@example.test>\r\nSubject: s\r\n\r\nbody\r\n",
        )
    (path,) = wait_files(env, "bob", 1)
    text = path.read_bytes()
    assert b"with ESMTPSA id" in text
    assert b"\nMessage-ID: <" in text  # added for submissions
    assert b"\nDate: " in text
    assert PASSWORD.encode() not in text


def _submission_scram(c: smtplib.SMTP, user: str, authzid: str) -> tuple[int, bytes]:
    """AUTH SCRAM-SHA-256 (RFC 4954) naming ``authzid`` in the GS2 header, as isync does."""
    client = scram_client(user, PASSWORD, authzid)
    first = base64.b64encode(client.get_client_first().encode()).decode()
    code, text = c.docmd("AUTH", f"SCRAM-SHA-256 {first}")
    if code != 334:
        return code, text
    client.set_server_first(base64.b64decode(text).decode())
    code, text = c.docmd(base64.b64encode(client.get_client_final().encode()).decode())
    assert code == 334, text
    client.set_server_final(base64.b64decode(text).decode())  # the server proves itself
    return c.docmd("")  # RFC 4954 §4: the empty answer to the additional data


def test_submission_scram_with_authzid(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = mx
    alice = f"alice@{DOMAIN}"
    with smtplib.SMTP_SSL("127.0.0.1", env.ports["submissions"], context=client_tls()) as c:
        c.ehlo()
        code, text = _submission_scram(c, alice, f"bob@{DOMAIN}")
        assert code == 535, text  # another identity: proxy authorisation refused
        code, text = _submission_scram(c, alice, alice)
        assert code == 235, text
        c.sendmail(alice, [f"bob@{DOMAIN}"], b"From: alice@example.test\r\nSubject: s\r\n\r\nx\r\n")
    assert len(wait_files(env, "bob", 1)) == 1
    failed = [r for r in server.events("auth_failed") if r.get("logger") != "pochta.auth"]
    assert any(r["reason"].startswith("proxy authorisation is not allowed") for r in failed)


def test_sender_login_mismatch(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    with smtplib.SMTP_SSL("127.0.0.1", env.ports["submissions"], context=client_tls()) as c:
        c.login(f"alice@{DOMAIN}", PASSWORD)
        code, _ = c.mail(f"bob@{DOMAIN}")
        assert code == 553
        c.rset()
        with pytest.raises(smtplib.SMTPDataError) as info:
            c.sendmail(
                f"alice@{DOMAIN}",
                [f"bob@{DOMAIN}"],
                b"From: bob@example.test\r\nSubject: forged\r\n\r\nx\r\n",
            )
        assert info.value.smtp_code == 553
        # an alias the account receives may be used as sender (postmaster -> alice)
        c.sendmail(
            f"postmaster@{DOMAIN}",
            [f"bob@{DOMAIN}"],
            b"From: postmaster@example.test\r\n\r\nok\r\n",
        )
    assert len(wait_files(env, "bob", 1)) == 1


def test_size_limit(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        c.ehlo()
        code, msg = c.mail("x@remote.example", ["SIZE=999999999"])
        assert code == 552
        assert msg.startswith(b"5.3.4")


def test_pipelining_and_bdat(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    body = b"Subject: bdat\r\n\r\nbinary \n.\n and \x00 bytes\r\n"
    out = raw_session(
        env.ports["smtp"],
        b"EHLO c.example\r\nMAIL FROM:<x@remote.example> BODY=BINARYMIME\r\n"
        b"RCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
        + f"BDAT {len(body)} LAST\r\n".encode()
        + body
        + b"QUIT\r\n",
    )
    codes = [line[:3] for line in out.split(b"\r\n") if line[:3].isdigit() and line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"550", b"250", b"221"]
    (path,) = wait_files(env, "alice", 1)
    assert path.read_bytes().endswith(b"binary \n.\n and \x00 bytes\n")


def test_8bit_and_smtputf8(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    # A well-formed message (Date, Message-ID): the spam filter leaves it in the INBOX.
    msg = (
        "From: Jürgen <jürgen@bücher.example>\r\nSubject: Grüße\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: <8bit.1@bücher.example>\r\n\r\nПривет\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        c.ehlo()
        c.sendmail(
            "jürgen@bücher.example",
            [f"alice@{DOMAIN}"],
            msg,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    (path,) = wait_files(env, "alice", 1)
    assert "Привет".encode() in path.read_bytes()
    assert b"Return-Path: <j\xc3\xbcrgen@b\xc3\xbccher.example>" in path.read_bytes()


def _serve_mx(env: PochtaEnv, bare_newline: str) -> AbstractContextManager[ServeProcess]:
    """The ``mx`` fixture's users and aliases, with ``[smtp] bare_newline`` set."""
    text = env.config_path.read_text()
    assert 'bare_newline = "normalize"' in text  # the default init writes
    env.config_path.write_text(
        text.replace('bare_newline = "normalize"', f'bare_newline = "{bare_newline}"')
    )
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    env.add_user(f"bob@{DOMAIN}", PASSWORD)
    return serve(env.config_path)


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("fake", [b"\n.\n", b"\r.\r\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"])
def test_smtp_smuggling_is_impossible(pochta_env: PochtaEnv, fake: bytes, mode: str) -> None:
    env = pochta_env
    with _serve_mx(env, mode) as server:
        out = raw_session(
            env.ports["smtp"],
            b"EHLO c.example\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
            b"DATA\r\nSubject: first\r\n\r\nbody"
            + fake
            + b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n",
        )
        replies = [line for line in out.split(b"\r\n") if line[:3].isdigit() and line[3:4] == b" "]
        if mode == "reject":
            # smtpd_forbid_bare_newline = reject: no message at all
            assert b"550 5.5.2" in out
            time.sleep(0.5)
            assert mailbox_files(env, "alice") == []
            assert server.events("queued") == []
        else:
            # normalize: one message for alice, the "smuggled" commands are its content
            assert replies[-2].startswith(b"250 2.0.0 Ok: queued as "), out
            assert replies[-1] == b"221 2.0.0 Bye"
            (path,) = wait_files(env, "alice", 1)
            stored = path.read_bytes()
            assert b"MAIL FROM:<admin@example.test>" in stored
            assert b"evil" in stored
            assert b"\r" not in stored  # Maildir holds LF; no stray CR survived
            assert len(server.events("queued")) == 1
        assert mailbox_files(env, "bob") == []


LONG_SUBJECT = "Приглашение на встречу по поводу квартального отчёта и планов на следующий год"


def test_header_encode_folded_with_bare_lf_is_accepted(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    # Issue 12 point 2: Header(...).encode() folds a long UTF-8 Subject with a bare "\n";
    # a script pastes it into CRLF text and sends bytes (smtplib fixes no line ends in bytes).
    env, _ = mx
    subject = Header(LONG_SUBJECT, "utf-8").encode()
    assert "?=\n =?" in subject
    msg = (
        f"From: cron@app.example\r\nTo: alice@{DOMAIN}\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nreport\r\n"
    ).encode()
    assert b"?=\n =?" in msg  # the bare LF really goes out
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        assert c.sendmail("cron@app.example", [f"alice@{DOMAIN}"], msg) == {}
    (path,) = wait_files(env, "alice", 1)
    stored = path.read_bytes()
    assert b"\r" not in stored  # every line end was CRLF (Maildir files hold them as LF)
    parsed = email.message_from_bytes(stored.replace(b"\n", b"\r\n"), policy=email.policy.SMTP)
    assert parsed["Subject"] == LONG_SUBJECT
    assert parsed.get_content().strip() == "report"
    # what IMAP would send: CRLF only
    with imaplib.IMAP4("127.0.0.1", env.ports["imap"]) as imap:
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        imap.select("INBOX")
        _, data = imap.fetch("1", "(BODY.PEEK[])")
    body = data[0][1]
    assert isinstance(body, bytes)
    assert b"?=\r\n =?" in body
    assert body.count(b"\n") == body.count(b"\r\n")
    assert body.count(b"\r") == body.count(b"\r\n")


def test_bdat_text_with_bare_lf_is_normalized(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    body = b"Subject: bdat\n =?utf-8?b?QQ==?=\r\n\r\nline one\nline two\r\n"
    out = raw_session(
        env.ports["smtp"],
        b"EHLO c.example\r\nMAIL FROM:<x@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
        + f"BDAT {len(body)} LAST\r\n".encode()
        + body
        + b"QUIT\r\n",
    )
    assert b"250 2.0.0 Ok: queued as " in out
    with imaplib.IMAP4("127.0.0.1", env.ports["imap"]) as imap:
        wait_files(env, "alice", 1)
        imap.login(f"alice@{DOMAIN}", PASSWORD)
        imap.select("INBOX")
        _, data = imap.fetch("1", "(BODY.PEEK[])")
    fetched = data[0][1]
    assert isinstance(fetched, bytes)
    assert fetched.endswith(b"Subject: bdat\r\n =?utf-8?b?QQ==?=\r\n\r\nline one\r\nline two\r\n")


def test_lmtp_per_recipient_replies(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    env.run(
        "user",
        "add",
        f"full@{DOMAIN}",
        "--password-stdin",
        "--quota",
        "1K",
        input=PASSWORD + "\n",
        check=True,
    )
    with serve(env.config_path):
        sock_path = str(env.data_dir / "lmtp.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock_path)
            s.settimeout(10)
            assert s.recv(1024).startswith(b"220 ")
            body = b"Subject: lmtp\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n"
            s.sendall(
                b"LHLO mx.example\r\nMAIL FROM:<x@remote.example>\r\n"
                b"RCPT TO:<alice@example.test>\r\nRCPT TO:<full@example.test>\r\nDATA\r\n"
            )
            out = b""
            while out.count(b"\r\n") < 5 or b"354" not in out:
                out += s.recv(4096)
            s.sendall(body)
            out = b""
            while out.count(b"\r\n") < 2:
                out += s.recv(4096)
        first, second = out.split(b"\r\n")[:2]
        assert first.startswith(b"250 2.0.0")
        assert second.startswith(b"552 5.2.2")  # larger than the whole 1 KiB quota
    assert len(mailbox_files(env, "alice")) == 1
    assert mailbox_files(env, "full") == []


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed (Debian swaks)")
def test_swaks_submission_with_starttls_and_auth(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    proc = subprocess.run(
        [
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(env.ports["submission"]),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            f"alice@{DOMAIN}",
            "--auth-password",
            PASSWORD,
            "--from",
            f"alice@{DOMAIN}",
            "--to",
            f"bob@{DOMAIN}",
            "--header",
            f"From: alice@{DOMAIN}",
            "--body",
            "sent by swaks",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<~  250 2.0.0 Ok: queued as " in proc.stdout
    (path,) = wait_files(env, "bob", 1)
    assert b"sent by swaks" in path.read_bytes()


async def test_aiosmtplib_pipelined_submission(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    import aiosmtplib

    env, _ = mx
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=env.ports["submission"], start_tls=True, tls_context=client_tls()
    )
    async with client:
        await client.login(f"alice@{DOMAIN}", PASSWORD)
        assert client.supports_extension("pipelining")
        errors, reply = await client.sendmail(
            f"alice@{DOMAIN}",
            [f"bob@{DOMAIN}", f"alice@{DOMAIN}"],
            b"From: alice@example.test\r\nSubject: aio\r\n\r\n.leading dot\r\n",
        )
        assert errors == {}
        assert reply.startswith("2.0.0 Ok: queued as ")
    (path,) = wait_files(env, "bob", 1)
    assert path.read_bytes().endswith(b"\n.leading dot\n")  # dot-stuffing undone exactly once
    assert len(wait_files(env, "alice", 1)) == 1


def test_sendmail_command_reaches_mailboxes(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = mx
    proc = env.run(
        "sendmail",
        "-f",
        f"alice@{DOMAIN}",
        f"team@{DOMAIN}",
        f"bob@{DOMAIN}",
        input="Subject: from cron\n\nnightly report\n",
    )
    assert proc.returncode == 0, proc.stderr
    # team -> alice, bob (expanded after the queue); bob named twice gets one copy
    assert len(wait_files(env, "alice", 1)) == 1
    assert len(wait_files(env, "bob", 1)) == 1
    time.sleep(0.5)
    assert len(mailbox_files(env, "bob")) == 1
    assert b"nightly report" in mailbox_files(env, "alice")[0].read_bytes()


def test_quota_at_rcpt_time(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.run(
        "user",
        "add",
        f"small@{DOMAIN}",
        "--password-stdin",
        "--quota",
        "4K",
        input=PASSWORD + "\n",
        check=True,
    )
    with serve(env.config_path), smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
        c.ehlo()
        c.mail("x@remote.example", ["SIZE=10000"])
        code, msg = c.rcpt(f"small@{DOMAIN}")
        assert (code, msg[:5]) == (552, b"5.2.2")  # can never fit: permanent
        c.rset()
        c.sendmail(
            "x@remote.example",
            [f"small@{DOMAIN}"],
            b"Subject: fill\r\n\r\n" + b"y" * 3000 + b"\r\n",
        )
        assert len(wait_files(env, "small", 1)) == 1
        c.mail("x@remote.example", ["SIZE=2000"])
        code, msg = c.rcpt(f"small@{DOMAIN}")
        assert (code, msg[:5]) == (452, b"4.2.2")  # full for now: try later


def test_starttls_discards_injected_plaintext(mx: tuple[PochtaEnv, ServeProcess]) -> None:
    """CVE-2011-0411: commands sent in plaintext after STARTTLS must never run under TLS."""
    env, _ = mx
    with socket.create_connection(("127.0.0.1", env.ports["smtp"]), timeout=10) as raw:
        raw.recv(4096)
        raw.sendall(b"EHLO c.example\r\n")
        while not raw.recv(4096).endswith(b"250 STARTTLS\r\n"):
            pass
        raw.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@remote.example>\r\n")
        assert raw.recv(4096).startswith(b"220 ")
        with client_tls().wrap_socket(raw) as tls:
            tls.sendall(b"NOOP\r\n")
            time.sleep(0.3)
            answer = tls.recv(4096)
    assert answer == b"250 2.0.0 OK\r\n"  # only NOOP's reply: RSET and MAIL were dropped


def test_postmaster_accepted_and_delivered_on_a_fresh_install(pochta_env: PochtaEnv) -> None:
    # Issue 12 point 3, RFC 5321 §4.5.1: <postmaster>, postmaster@HOSTNAME and
    # postmaster@DOMAIN are accepted with no setup and really delivered.
    env = pochta_env
    forms = ["postmaster", f"PostMaster@{HOSTNAME}", f"postmaster@{DOMAIN}"]
    msg = b"Subject: to the postmaster\r\n\r\nhello\r\n"
    with serve(env.config_path):
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
            c.ehlo()
            c.mail("someone@remote.example")
            for form in forms:
                # no account yet: nowhere to put it, so "try again later", never 550
                code, text = c.rcpt(form)
                assert (code, text[:5]) == (451, b"4.3.5"), (form, text)
            c.rset()
        env.add_user(f"admin@{DOMAIN}", PASSWORD)  # the first account reads postmaster mail
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
            for form in forms:
                assert c.sendmail("someone@remote.example", [form], msg) == {}
        files = wait_files(env, "admin", 3)
        assert len(files) == 3
        assert all(b"hello" in f.read_bytes() for f in files)
        # An alias for postmaster@DOMAIN wins for that domain; the host name form still
        # reaches the admin.
        env.add_user(f"bob@{DOMAIN}", PASSWORD)
        env.run("alias", "add", f"postmaster@{DOMAIN}", f"bob@{DOMAIN}", check=True)
        with smtplib.SMTP("127.0.0.1", env.ports["smtp"]) as c:
            assert c.sendmail("someone@remote.example", [f"postmaster@{DOMAIN}"], msg) == {}
            assert c.sendmail("someone@remote.example", [f"postmaster@{HOSTNAME}"], msg) == {}
        assert len(wait_files(env, "bob", 1)) == 1
        assert len(wait_files(env, "admin", 4)) == 4


# -- issue 12: a trickled command line, brute force on one connection --------------------------


def _trickle(sock: socket.socket, data: bytes, *, every: float = 0.5) -> bytes:
    """Send `data` one byte every `every` seconds until the server speaks; return what it said
    (b"" if it never did, i.e. it let the trickle go on)."""
    sock.settimeout(every)
    for byte in data:
        sock.sendall(bytes([byte]))
        try:
            return sock.recv(4096)
        except TimeoutError:
            continue
    return b""


def test_trickled_command_line_gets_421(pochta_env: PochtaEnv) -> None:
    """One byte every 0.5 s resets the idle timer, not smtp.command_timeout_seconds."""
    env = pochta_env
    set_key(env.config_path, "smtp", "command_timeout_seconds", "2")
    with (
        serve(env.config_path) as server,
        socket.create_connection(("127.0.0.1", env.ports["smtp"]), timeout=10) as sock,
    ):
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        said = _trickle(sock, b"EHLO a.very.slow.client.example.org" * 2)
        assert said == b"421 4.4.2 Timeout, closing connection\r\n"
        sock.settimeout(10)
        assert sock.recv(1) == b""  # EOF
        # The log is read in a thread: wait for the line rather than look once.
        assert server.wait_for("timeout", timeout=10)["timer"] == "command"
        assert [r["timer"] for r in server.events("timeout")] == ["command"]


def test_message_content_is_not_capped_per_line(pochta_env: PochtaEnv) -> None:
    """DATA content keeps the per-read idle timer: content trickling in for longer than
    command_timeout_seconds is still taken."""
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    set_key(env.config_path, "smtp", "command_timeout_seconds", "1")
    with (
        serve(env.config_path),
        socket.create_connection(("127.0.0.1", env.ports["smtp"]), timeout=10) as sock,
    ):
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(
            b"HELO c.example.org\r\nMAIL FROM:<c@example.org>\r\n"
            + f"RCPT TO:<alice@{DOMAIN}>\r\nDATA\r\n".encode()
        )
        replies = [f.readline()[:3] for _ in range(4)]
        assert replies == [b"250", b"250", b"250", b"354"]
        assert _trickle(sock, b"Subject: slow") == b""  # 6.5 s of content: no 421
        sock.sendall(b"\r\n\r\nbody\r\n.\r\n")
        assert f.readline().startswith(b"250 2.0.0 Ok: queued as ")


def test_auth_failures_close_the_connection(pochta_env: PochtaEnv) -> None:
    """The 3rd failed AUTH on one connection (smtp.max_auth_failures) is answered 421 4.7.0
    and the connection closes."""
    env = pochta_env
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    set_key(env.config_path, "auth", "allow_plaintext_on_loopback", "true")
    set_key(env.config_path, "auth", "failure_threshold", "100")  # no tarpit in this test
    with serve(env.config_path), smtplib.SMTP("127.0.0.1", env.ports["submission"]) as c:
        c.ehlo()
        wrong = base64.b64encode(f"\0alice@{DOMAIN}\0wrong".encode()).decode()
        for _ in range(2):
            assert c.docmd("AUTH", f"PLAIN {wrong}")[0] == 535
        code, text = c.docmd("AUTH", f"PLAIN {wrong}")
        assert (code, text[:5]) == (421, b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.noop()
