"""header_checks and body_checks (header_checks(5), body_checks(5)) in a real pochta.

One server for the module, with a regexp: header table, a pcre: header table (the
attachment-name rule of Postfix's documentation, x flag) and a regexp: body table with
Postfix's IFRAME example; each action is tried with smtplib against the MX port: REJECT
(550 5.7.1 with the text, also on a folded Subject and on a MIME part header), WARN,
DISCARD, HOLD (then ``pochta queue release``), REPLACE, IGNORE, PREPEND, DUNNO, for
headers and body lines; a base64 part is matched as it is, not decoded. And ``pochta
check`` refuses tables whose actions pochta cannot carry out.
"""

from __future__ import annotations

import base64
import json
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    DOMAIN,
    PochtaEnv,
    ServeProcess,
    mailbox_files,
    make_pochta_env,
    serve,
    set_key,
    wait_until,
)

BOB = f"bob@{DOMAIN}"

HEADER_REGEXP = r"""# header_checks(5) EXAMPLES, and one rule per action
/^Subject: make money fast/     REJECT
/^Subject: two lines.*folded/   REJECT Folded
/^Subject: reject me(.*)$/      REJECT Not here: $1
/^Subject: warn me/             WARN Looks odd
/^Subject: discard me/          DISCARD Thrown away
/^Subject: hold me/             HOLD Held for review
/^Subject: replace me/          REPLACE Subject: replaced
/^X-Remove-Me:/                 IGNORE
/^Subject: prepend me/          PREPEND X-Prepended: yes
/^Subject: dunno me/            DUNNO
/^X-Trace: (.*)$/               REPLACE X-Trace: seen $1
"""

# BUILTIN_FILTER_README / header_checks(5): attachment names, as MIME headers of parts.
HEADER_PCRE = (
    r"""/^Content-(Disposition|Type).*name\s*=\s*"?([^;]*(\.|=2E)(ade|bat|exe|scr))"""
    r"""(\?=)?"?\s*(;|$)/x
    REJECT Attachment name "$2" may not end with ".$4"
"""
)

BODY_REGEXP = r"""# body_checks(5) EXAMPLE
/^<iframe src=(3D)?cid:.* height=(3D)?0 width=(3D)?0>$/  REJECT IFRAME vulnerability exploit
/^drop this line$/              IGNORE
/^change this line$/            REPLACE changed line
/^hold this body$/              HOLD
/^secret decoded text$/         REJECT matched decoded text
"""


def _with_checks(env: PochtaEnv, header: list[str], body: list[str]) -> None:
    set_key(env.config_path, "tables", "header_checks", json.dumps(header))
    set_key(env.config_path, "tables", "body_checks", json.dumps(body))


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    data = tmp_path_factory.mktemp("content-checks")
    env = make_pochta_env(data / "pochta")
    env.add_user(BOB, "secret-password-1")
    tables = data / "postfix"
    tables.mkdir()
    (tables / "header_checks").write_text(HEADER_REGEXP)
    (tables / "mime_header_checks.pcre").write_text(HEADER_PCRE)
    (tables / "body_checks").write_text(BODY_REGEXP)
    _with_checks(
        env,
        [f"regexp:{tables / 'header_checks'}", f"pcre:{tables / 'mime_header_checks.pcre'}"],
        [f"regexp:{tables / 'body_checks'}"],
    )
    env.run("check", check=True)
    with serve(env.config_path) as server:
        yield env, server


def send(env: PochtaEnv, message: str) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=10) as client:
        return client.sendmail("carol@example.org", [BOB], message.encode())


def message(subject: str, body: str = "Hello there.\r\n", extra: str = "") -> str:
    return (
        f"From: <carol@example.org>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <{time.time_ns()}@example.org>\r\n\r\n{body}"
    )


def delivered(env: PochtaEnv, marker: str) -> bytes:
    """The content of the one INBOX message holding ``marker`` (waits for it)."""
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = [p.read_bytes() for p in mailbox_files(env, "bob")]
        found[:] = [c for c in found if marker.encode() in c]
        return bool(found)

    assert wait_until(arrived, timeout=20), f"no message with {marker!r} delivered"
    assert len(found) == 1
    return found[0]


def refused(env: PochtaEnv, text: str) -> smtplib.SMTPDataError:
    with pytest.raises(smtplib.SMTPDataError) as caught:
        send(env, text)
    return caught.value


def queue(env: PochtaEnv) -> list[dict[str, Any]]:
    listing: list[dict[str, Any]] = json.loads(env.run("queue", "list", "--json").stdout)
    return listing


def wait_held(env: PochtaEnv) -> list[dict[str, Any]]:
    """The messages on hold, once there is one."""
    held: list[dict[str, Any]] = []

    def on_hold() -> bool:
        held[:] = [e for e in queue(env) if e["state"] == "hold"]
        return bool(held)

    assert wait_until(on_hold, timeout=20), queue(env)
    return held


def test_reject_with_postfix_default_and_own_text(
    checked: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = checked
    error = refused(env, message("make money fast"))
    assert (error.smtp_code, error.smtp_error) == (550, b"5.7.1 message content rejected")
    error = refused(env, message("reject me, please"))
    assert (error.smtp_code, error.smtp_error) == (550, b"5.7.1 Not here: , please")


def test_folded_header_is_one_logical_line(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    # header_checks(5): a multi-line header is matched as one string, newline inside
    # (regexp: "." matches it).
    error = refused(env, message("two lines\r\n\tfolded"))
    assert (error.smtp_code, error.smtp_error) == (550, b"5.7.1 Folded")
    assert send(env, message("folded")) == {}  # the rule needs both lines


def test_warn_logs_and_delivers(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = checked
    assert send(env, message("warn me 1")) == {}
    assert b"Subject: warn me 1" in delivered(env, "warn me 1")
    warned = [r for r in server.events("header_checks") if r["action"] == "warn"]
    assert [(r["reason"], r["header"]) for r in warned] == [("Looks odd", "Subject: warn me 1")]


def test_discard_accepts_and_drops(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = checked
    assert send(env, message("discard me 1")) == {}
    record = server.wait_for("discarded")
    assert record["reason"] == "Thrown away"
    assert all(record["queue_id"] != entry["queue_id"] for entry in queue(env))
    # A message sent after it arrives; the discarded one never does.
    send(env, message("after the discard"))
    delivered(env, "after the discard")
    assert not [p for p in mailbox_files(env, "bob") if b"discard me 1" in p.read_bytes()]


def test_hold_keeps_it_until_released(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    assert send(env, message("hold me 1")) == {}
    held = wait_held(env)
    assert len(held) == 1
    env.run("queue", "release", held[0]["queue_id"], check=True)
    assert b"Subject: hold me 1" in delivered(env, "hold me 1")


def test_body_hold(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    assert send(env, message("body hold", "hold this body\r\n")) == {}
    held = wait_held(env)
    env.run("queue", "release", held[0]["queue_id"], check=True)
    delivered(env, "hold this body")


def test_replace_ignore_prepend_dunno_headers(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    send(env, message("replace me", extra="X-Marker: replaced-one\r\n"))
    content = delivered(env, "replaced-one")
    assert b"\nSubject: replaced\n" in content
    assert b"replace me" not in content
    send(env, message("ignored-one", extra="X-Remove-Me: yes\r\n\tfolded too\r\n"))
    content = delivered(env, "ignored-one")
    assert b"X-Remove-Me" not in content
    assert b"folded too" not in content
    send(env, message("prepend me 1"))
    content = delivered(env, "prepend me 1")
    assert b"\nX-Prepended: yes\nSubject: prepend me 1\n" in content
    send(env, message("dunno me 1", extra="X-Trace: kept\r\n"))
    content = delivered(env, "dunno me 1")
    assert b"\nX-Trace: seen kept\n" in content  # DUNNO stops only its own line


def test_body_lines_replaced_and_removed(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    body = "first line body-edit\r\ndrop this line\r\nchange this line\r\nlast line\r\n"
    send(env, message("body edit", body))
    content = delivered(env, "body-edit")
    # The store keeps LF line ends (store/maildir.py); what was sent had CRLF.
    assert content.endswith(b"\n\nfirst line body-edit\nchanged line\nlast line\n")


def test_postfix_iframe_example(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    body = "Hi\r\n<iframe src=3Dcid:EZ3Ad height=3D0 width=3D0>\r\n"
    error = refused(env, message("iframe", body))
    assert (error.smtp_code, error.smtp_error) == (550, b"5.7.1 IFRAME vulnerability exploit")


MIME = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n'


def _multipart(subject: str, filename: str, payload: str) -> str:
    body = (
        "--outer\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
        f'--outer\r\nContent-Type: application/octet-stream; name="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{payload}\r\n--outer--\r\n"
    )
    return message(subject, body, extra=MIME)


def test_mime_part_header_checked(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    error = refused(env, _multipart("attachment", "invoice.exe", "TVqQAAMAAAAEAAAA"))
    assert error.smtp_code == 550
    assert error.smtp_error == b'5.7.1 Attachment name "invoice.exe" may not end with ".exe"'
    assert send(env, _multipart("fine attachment", "invoice.pdf", "JVBERi0xLjQK")) == {}
    delivered(env, "fine attachment")


def test_base64_part_not_decoded(checked: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = checked
    # body_checks(5): Postfix does not decode; "secret decoded text" is only in base64 here.
    payload = base64.b64encode(b"secret decoded text\r\n").decode()
    assert send(env, _multipart("encoded body", "notes.txt", payload)) == {}
    delivered(env, "encoded body")
    error = refused(env, message("plain body", "secret decoded text\r\n"))
    assert error.smtp_error == b"5.7.1 matched decoded text"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("/^Subject: x/ FILTER smtp:[127.0.0.1]:10025\n", "action 'FILTER' is not supported"),
        ("/^Subject: x/ REPLACE\n", "REPLACE needs a text"),
        (
            "/^Subject: x/ PREPEND not a header\n",
            "PREPEND text 'not a header' is not a header field",
        ),
    ],
)
def test_check_refuses_what_pochta_cannot_do(
    pochta_env: PochtaEnv, tmp_path: Path, table: str, says: str
) -> None:
    path = tmp_path / "header_checks"
    path.write_text("# comment\n" + table)
    _with_checks(pochta_env, [f"regexp:{path}"], [])
    proc = pochta_env.run("check")
    assert proc.returncode != 0
    assert f"tables.header_checks[0]: {path}:2: {says}" in proc.stdout + proc.stderr


def test_check_refuses_a_text_table(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    path = tmp_path / "header_checks"
    path.write_text("subject REJECT\n")
    _with_checks(pochta_env, [f"hash:{path}"], [])
    proc = pochta_env.run("check")
    assert proc.returncode != 0
    assert f"write 'regexp:{path}' or 'pcre:{path}'" in proc.stdout + proc.stderr
