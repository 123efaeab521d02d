"""The real `pochta serve` answering real IMAP clients: imaplib, imapclient, mbsync."""

from __future__ import annotations

import base64
import imaplib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, client_tls, serve, set_key, smtp_send

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"


@pytest.fixture
def imap(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    pochta_env.add_user(BOB, PASSWORD)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def wait_messages(env: PochtaEnv, user: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
        c.login(user, PASSWORD)
        n = c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"]
        c.logout()
        if n >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{user} did not get {count} messages")


def login(env: PochtaEnv, user: str = ALICE) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    c.login(user, PASSWORD)
    return c


# -- connection, TLS, login --------------------------------------------------------------


def test_greeting_capabilities_starttls_and_login(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    assert "IMAP4REV1" in c.capabilities
    assert "IMAP4REV2" in c.capabilities
    assert "STARTTLS" in c.capabilities
    c.starttls(ssl_context=client_tls())
    _typ, data = c.capability()
    caps = data[0].decode().upper().split()
    for cap in ("IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "ENABLE", "LITERAL+", "AUTH=PLAIN"):
        assert cap in caps, cap
    assert "STARTTLS" not in caps
    assert c.login(ALICE, PASSWORD)[0] == "OK"
    c.logout()

    s = imaplib.IMAP4_SSL("127.0.0.1", env.ports["imaps"], ssl_context=client_tls(), timeout=10)
    assert s.login(ALICE, PASSWORD)[0] == "OK"
    s.logout()


def test_bad_password_and_unknown_user(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, server = imap
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(ALICE, "Bad-Secret-77")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(f"nobody@{DOMAIN}", "wrong")
    assert c.login(ALICE, PASSWORD)[0] == "OK"
    c.logout()
    assert "Bad-Secret-77" not in "".join(str(r) for r in server.records)


def test_failed_logins_end_the_connection(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    # Issue 12 point 14, as Dovecot's imap-login: after imap.max_auth_failures (3) failed
    # LOGIN/AUTHENTICATE the NO is followed by BYE and the connection closes.
    env, server = imap
    with socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        sock.sendall(b'a1 LOGIN "alice@example.test" "wrong-1"\r\n')
        assert f.readline().startswith(b"a1 NO [AUTHENTICATIONFAILED]")
        sock.sendall(
            b"a2 AUTHENTICATE PLAIN " + base64.b64encode(b"\0" + ALICE.encode() + b"\0x") + b"\r\n"
        )
        assert f.readline().startswith(b"a2 NO [AUTHENTICATIONFAILED]")
        sock.sendall(b'a3 LOGIN "nobody@example.test" "wrong-3"\r\n')
        assert f.readline().startswith(b"a3 NO [AUTHENTICATIONFAILED]")
        assert f.readline().startswith(b"* BYE Too many authentication failures")
        assert f.readline() == b""  # closed: a fourth guess needs a new connection
    assert server.wait_for("auth_failures_closed")["failures"] == "3"


def test_authenticate_plain_with_sasl_ir(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    c.plain_login(ALICE, PASSWORD)
    assert c.select_folder("INBOX")[b"EXISTS"] == 0
    c.logout()


def test_authenticate_plain_with_a_continuation(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    """imaplib sends AUTHENTICATE PLAIN alone and answers the "+" with its credentials: the
    answer is a line of the session's AUTHENTICATE state, not a command (RFC 9051 §6.2.2)."""
    env, _ = imap
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_bad_syntax_gets_bad_not_a_drop(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    with socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10) as s:
        f = s.makefile("rwb")
        assert f.readline().startswith(b"* OK")
        f.write(b"a1 FROBNICATE\r\na2 SELECT\r\na3 NOOP\r\n")
        f.flush()
        assert f.readline().startswith(b"a1 BAD")
        assert f.readline().startswith(b"a2 BAD")
        assert f.readline().startswith(b"a3 OK")


# -- folders --------------------------------------------------------------------------------


def test_list_special_use_create_rename_delete(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    smtp_send(env, ALICE, "first")
    wait_messages(env, ALICE, 1)
    c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    c.login(ALICE, PASSWORD)
    folders = {name: flags for flags, _, name in c.list_folders()}
    assert b"\\Sent" in folders["Sent"]
    assert b"\\Trash" in folders["Trash"]
    assert "INBOX" in folders
    c.create_folder("Projects")
    c.create_folder("Projects.Zürich")
    names = [name for _, _, name in c.list_folders("", "Projects*")]
    assert names == ["Projects", "Projects.Zürich"]
    assert b"\\HasChildren" in {n: f for f, _, n in c.list_folders()}["Projects"]
    c.rename_folder("Projects.Zürich", "Projects.Bern")
    assert c.folder_exists("Projects.Bern")
    assert not c.folder_exists("Projects.Zürich")
    c.delete_folder("Projects.Bern")
    assert not c.folder_exists("Projects.Bern")
    status = c.folder_status("INBOX", ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"])
    assert status[b"MESSAGES"] == 1
    assert status[b"UNSEEN"] == 1
    c.logout()


# -- messages -------------------------------------------------------------------------------


def test_fetch_store_search_copy_move_expunge(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    for i in range(3):
        smtp_send(
            env, ALICE, f"note {i}", body=f"body number {i} zanzibar\n" if i == 1 else "plain\n"
        )
    wait_messages(env, ALICE, 3)
    c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    c.login(ALICE, PASSWORD)
    info = c.select_folder("INBOX")
    assert info[b"EXISTS"] == 3
    uids = c.search("ALL")
    assert len(uids) == 3
    data = c.fetch(uids, ["ENVELOPE", "FLAGS", "RFC822.SIZE", "BODYSTRUCTURE", "INTERNALDATE"])
    by_subject = {d[b"ENVELOPE"].subject: uid for uid, d in data.items()}
    assert sorted(by_subject) == [b"note 0", b"note 1", b"note 2"]
    # Delivery order is not send order: name the messages by subject from here on.
    uids = [by_subject[b"note 0"], by_subject[b"note 1"], by_subject[b"note 2"]]
    # New mail, first seen by this session: \Recent only (RFC 3501 §2.3.2).
    assert all(d[b"FLAGS"] == (b"\\Recent",) for d in data.values())
    body = c.fetch([uids[1]], ["BODY.PEEK[TEXT]"])[uids[1]][b"BODY[TEXT]"]
    assert b"zanzibar" in body
    assert c.search(["TEXT", "zanzibar"]) == [uids[1]]
    assert c.search(["SUBJECT", "note 2"]) == [uids[2]]

    c.add_flags([uids[0]], [b"\\Seen", b"$Label1"])
    assert set(c.get_flags([uids[0]])[uids[0]]) == {b"\\Seen", b"$Label1", b"\\Recent"}
    assert c.search("UNSEEN") == sorted(uids[1:])

    c.copy([uids[0]], "Archive")
    c.move([uids[2]], "Trash")
    assert c.search("ALL") == sorted(uids[:2])
    c.delete_messages([uids[0]])
    c.expunge()
    assert c.search("ALL") == [uids[1]]
    assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
    assert c.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] == 1
    c.logout()


def test_append_with_flags_and_date_returns_appenduid(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    c = login(env)
    msg = b"From: a@example.org\r\nSubject: appended\r\n\r\nhi\r\n"
    typ, data = c.append("Drafts", r"(\Draft \Seen)", '"01-Jan-2026 10:00:00 +0000"', msg)
    assert typ == "OK"
    assert b"APPENDUID" in data[0]
    c.select("Drafts")
    typ, data = c.fetch("1", "(FLAGS INTERNALDATE BODY[])")
    text = data[0][0]
    assert b"\\Draft" in text
    assert b"\\Seen" in text
    assert b'" 1-Jan-2026 10:00:00 +0000"' in text
    assert data[0][1] == msg
    typ, data = c.append("NoSuchFolder", None, None, msg)
    assert typ == "NO"
    assert b"TRYCREATE" in data[0]
    c.logout()


def test_sort_and_thread_through_imapclient(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    c.login(ALICE, PASSWORD)
    caps = c.capabilities()
    assert b"THREAD=REFERENCES" in caps
    assert b"THREAD=ORDEREDSUBJECT" in caps
    c.create_folder("Threads")
    # (subject, message-id, in-reply-to, date): a reply chain a <- b <- d, and c alone.
    mails = [
        ("Plans", "a@x", "", "Mon, 02 Mar 2026 10:00:00 +0000"),
        ("Re: Plans", "b@x", "<a@x>", "Mon, 02 Mar 2026 11:00:00 +0000"),
        ("Zebra", "c@x", "", "Mon, 02 Mar 2026 09:00:00 +0000"),
        ("RE: [list] Plans", "d@x", "<b@x>", "Mon, 02 Mar 2026 12:00:00 +0000"),
    ]
    for subject, mid, parent, date in mails:
        head = f"From: {subject[0]}@example.org\r\nSubject: {subject}\r\nDate: {date}\r\n"
        head += f"Message-ID: <{mid}>\r\n"
        if parent:
            head += f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n"
        c.append("Threads", (head + "\r\nbody\r\n").encode())
    c.select_folder("Threads")
    uids = c.search("ALL")
    assert c.sort(["SUBJECT", "DATE"]) == [uids[0], uids[1], uids[3], uids[2]]
    assert c.sort(["REVERSE", "DATE"]) == [uids[3], uids[1], uids[0], uids[2]]
    threads = c.thread("REFERENCES")
    assert sorted(threads) == sorted([(uids[2],), (uids[0], uids[1], uids[3])])
    ordered = c.thread("ORDEREDSUBJECT")
    # RFC 5256 §3: later messages of a subject are all children of its first one.
    assert sorted(ordered) == sorted([(uids[2],), (uids[0], (uids[1],), (uids[3],))])
    with pytest.raises(IMAPClient.Error):
        c.thread("NOSUCH")
    c.logout()


def test_two_sessions_see_each_other_and_idle_pushes(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    smtp_send(env, ALICE, "one")
    wait_messages(env, ALICE, 1)
    a = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    b = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    a.login(ALICE, PASSWORD)
    b.login(ALICE, PASSWORD)
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    (uid,) = a.search("ALL")
    b.idle()
    a.add_flags([uid], [b"\\Flagged"])
    responses = b.idle_check(timeout=5)
    assert any(r[1] == b"FETCH" for r in responses), responses
    smtp_send(env, ALICE, "two")
    # IDLE has no polling fallback: an EXISTS inside the session's wait is the push itself.
    responses = b.idle_check(timeout=10)
    assert (2, b"EXISTS") in responses, responses
    b.idle_done()
    a.logout()
    b.logout()


def test_uids_and_uidvalidity_survive_a_restart(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(ALICE, PASSWORD)
    with serve(pochta_env.config_path):
        smtp_send(pochta_env, ALICE, "kept")
        wait_messages(pochta_env, ALICE, 1)
        c = IMAPClient("127.0.0.1", port=pochta_env.ports["imap"], ssl=False, timeout=10)
        c.login(ALICE, PASSWORD)
        before = c.select_folder("INBOX")
        uids = c.search("ALL")
        c.logout()
    with serve(pochta_env.config_path):
        c = IMAPClient("127.0.0.1", port=pochta_env.ports["imap"], ssl=False, timeout=10)
        c.login(ALICE, PASSWORD)
        after = c.select_folder("INBOX")
        assert after[b"UIDVALIDITY"] == before[b"UIDVALIDITY"]
        assert c.search("ALL") == uids
        c.logout()


# -- a real client program -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed")
def test_mbsync_syncs_both_ways(imap: tuple[PochtaEnv, ServeProcess], tmp_path: Path) -> None:
    env, _ = imap
    smtp_send(env, ALICE, "for mbsync")
    wait_messages(env, ALICE, 1)
    local = tmp_path / "Mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"""IMAPAccount test
Host 127.0.0.1
Port {env.ports["imap"]}
User {ALICE}
Pass "{PASSWORD}"
SSLType STARTTLS
# scramp refuses the authzid that mbsync's SASL library puts in SCRAM's GS2 header.
AuthMechs PLAIN
CertificateFile {env.data_dir / "tls" / "cert.pem"}

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
"""
    )
    rc.chmod(0o600)

    def run() -> None:
        proc = subprocess.run(
            ["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run()
    files = [p for p in (local / "INBOX" / "new").glob("*")] + [
        p for p in (local / "INBOX" / "cur").glob("*")
    ]
    assert len(files) == 1
    assert b"for mbsync" in files[0].read_bytes()
    # Mark it read locally: the flag must reach the server.
    f = files[0]
    f.rename(local / "INBOX" / "cur" / (f.name.split(":")[0] + ":2,S"))
    run()
    c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    c.login(ALICE, PASSWORD)
    c.select_folder("INBOX")
    (uid,) = c.search("ALL")
    assert b"\\Seen" in c.get_flags([uid])[uid]
    c.logout()


def test_idle_threads_do_not_block_each_other(pochta_env: PochtaEnv) -> None:
    """Twenty IDLE sessions at once; a delivery reaches every one of them."""
    env = pochta_env
    env.add_user(BOB, PASSWORD)
    # Twenty sessions of one account from one address: above Dovecot's default of 10.
    set_key(env.config_path, "imap", "max_userip_connections", "20")
    with serve(env.config_path):
        _twenty_idle_sessions_see_one_delivery(env)


def _twenty_idle_sessions_see_one_delivery(env: PochtaEnv) -> None:
    clients = []
    for _ in range(20):
        c = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
        c.login(BOB, PASSWORD)
        c.select_folder("INBOX")
        c.idle()
        clients.append(c)
    smtp_send(env, BOB, "to all")
    seen = []

    def check(c: IMAPClient) -> None:
        if (1, b"EXISTS") in c.idle_check(timeout=10):
            seen.append(c)

    threads = [threading.Thread(target=check, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 20
    for c in clients:
        c.idle_done()
        c.logout()


class _Raw:
    """A line client for commands no library speaks (QRESYNC's SELECT parameters)."""

    def __init__(self, env: PochtaEnv) -> None:
        self.sock = socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10)
        self.file = self.sock.makefile("rwb")
        assert self.file.readline().startswith(b"* OK")
        self.n = 0

    def run(self, command: str) -> list[bytes]:
        """The untagged lines of one command; fails unless it ends OK."""
        self.n += 1
        tag = b"q%d" % self.n
        self.file.write(tag + b" " + command.encode() + b"\r\n")
        self.file.flush()
        lines = []
        while True:
            line = self.file.readline()
            assert line, "connection closed"
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return lines
            lines.append(line.rstrip(b"\r\n"))

    def close(self) -> None:
        self.run("LOGOUT")
        self.sock.close()


def test_qresync_resynchronises_a_returning_client(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    for i in range(4):
        smtp_send(env, ALICE, f"q {i}")
    wait_messages(env, ALICE, 4)
    assert b"QRESYNC" in login(env).capability()[1][0]
    c = _Raw(env)
    c.run(f'LOGIN {ALICE} "{PASSWORD}"')
    assert c.run("ENABLE QRESYNC") == [b"* ENABLED QRESYNC"]
    lines = c.run("SELECT INBOX")
    uidvalidity = int(next(x for x in lines if b"UIDVALIDITY" in x).split()[3].rstrip(b"]"))
    modseq = int(next(x for x in lines if b"HIGHESTMODSEQ" in x).split()[3].rstrip(b"]"))
    uids = [int(x) for x in c.run("UID SEARCH ALL")[0].split()[2:]]
    c.close()

    # Meanwhile another client flags one message and expunges another.
    other = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    other.login(ALICE, PASSWORD)
    other.select_folder("INBOX")
    other.add_flags([uids[1]], [b"\\Flagged"])
    other.delete_messages([uids[2]])
    other.expunge()
    other.logout()

    # RFC 7162 §3.2.5: SELECT with QRESYNC reports exactly those two changes.
    c = _Raw(env)
    c.run(f'LOGIN {ALICE} "{PASSWORD}"')
    c.run("ENABLE QRESYNC")
    lines = c.run(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} {uids[0]}:{uids[-1]}))")
    assert f"* VANISHED (EARLIER) {uids[2]}".encode() in lines
    fetches = [x for x in lines if b" FETCH " in x]
    assert len(fetches) == 1
    assert f"UID {uids[1]}".encode() in fetches[0]
    assert b"\\Flagged" in fetches[0]
    # RFC 7162 §3.2.6: UID FETCH ... (CHANGEDSINCE n VANISHED) says the same.
    lines = c.run(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert f"* VANISHED (EARLIER) {uids[2]}".encode() in lines
    assert sum(b" FETCH " in x for x in lines) == 1
    # A wrong UIDVALIDITY gets a plain SELECT: no VANISHED, no FETCH.
    lines = c.run(f"SELECT INBOX (QRESYNC ({uidvalidity + 1} {modseq}))")
    assert not [x for x in lines if b"VANISHED" in x or b" FETCH " in x]
    # An expunge in another session now arrives as VANISHED, not EXPUNGE.
    other = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    other.login(ALICE, PASSWORD)
    other.select_folder("INBOX")
    other.delete_messages([uids[3]])
    other.expunge()
    other.logout()
    lines = c.run("NOOP")
    assert f"* VANISHED {uids[3]}".encode() in lines
    assert not [x for x in lines if x.endswith(b"EXPUNGE")]
    c.close()


def test_multiappend_is_all_or_nothing(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    env.run("user", "quota", ALICE, "20K", check=True)
    c = _Raw(env)
    c.run(f'LOGIN {ALICE} "{PASSWORD}"')
    small = b"Subject: small\r\n\r\nfits\r\n"
    big = b"Subject: big\r\n\r\n" + b"x" * 30_000 + b"\r\n"
    # RFC 3502: the second message is over the quota, so neither may stay.
    first = b"{%d+}\r\n%s" % (len(small), small)
    second = b"{%d+}\r\n%s" % (len(big), big)
    c.file.write(b"m1 APPEND INBOX " + first + b" " + second + b"\r\n")
    c.file.flush()
    reply = c.file.readline()
    while reply.startswith(b"*"):
        reply = c.file.readline()
    assert reply.startswith(b"m1 NO"), reply
    status = c.run("STATUS INBOX (MESSAGES)")
    assert b"(MESSAGES 0)" in status[0], status
    c.run(f"APPEND INBOX {{{len(small)}+}}\r\n{small.decode()}")
    assert b"(MESSAGES 1)" in c.run("STATUS INBOX (MESSAGES)")[0]
    c.close()


# -- issue 12: several sessions, keywords, CLOSED, timeouts, limits before login ------------


def _messages(env: PochtaEnv, user: str, count: int) -> None:
    for i in range(count):
        smtp_send(env, user, f"m{i}")
    wait_messages(env, user, count)


def test_fetch_after_another_session_expunged_returns_the_rest(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    """RFC 2180 §4.1.2, RFC 9051 §7.1 EXPUNGEISSUED: the messages that still exist come back,
    the expunged one is left out, and the command ends OK [EXPUNGEISSUED]."""
    env, _ = imap
    _messages(env, ALICE, 3)
    a = login(env)
    b = login(env)
    a.select("INBOX")
    b.select("INBOX")
    _, data = a.fetch("1:3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects = [d[1].strip() for d in data if isinstance(d, tuple)]
    b.store("2", "+FLAGS.SILENT", "(\\Deleted)")
    b.expunge()
    typ, data = a.fetch("1:3", "(BODY.PEEK[])")
    assert typ == "OK", data
    fetched = [item for item in data if isinstance(item, tuple)]
    assert [item[0].split()[0] for item in fetched] == [b"1", b"3"], data
    assert subjects[0] in fetched[0][1]
    assert subjects[2] in fetched[1][1]
    # imaplib files the tagged reply's response code with the untagged ones.
    assert "EXPUNGEISSUED" in a.untagged_responses
    # Only the expunged message asked for: no data, still OK [EXPUNGEISSUED] (as Dovecot).
    a.untagged_responses.clear()
    typ, data = a.fetch("2", "(BODY.PEEK[])")
    assert typ == "OK", data
    assert not [d for d in data if d is not None], data
    assert "EXPUNGEISSUED" in a.untagged_responses
    # Now that the client asks, it learns of the expunge; all of the rest is fetchable.
    typ, data = a.noop()
    assert typ == "OK"
    typ, data = a.fetch("1:2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    assert [d[1].strip() for d in data if isinstance(d, tuple)] == [subjects[0], subjects[2]]
    a.logout()
    b.logout()


def test_new_keywords_are_announced_before_exists_and_fetch(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    """RFC 9051 §7.3.5: FLAGS and PERMANENTFLAGS name a keyword before any EXISTS or FETCH
    shows it, whether another session appends a message with it or stores it."""
    env, _ = imap
    _messages(env, ALICE, 1)
    a = _Raw(env)
    a.run(f'LOGIN {ALICE} "{PASSWORD}"')
    lines = a.run("SELECT INBOX")
    assert b"$Project" not in b"".join(lines)
    b = login(env)
    b.append("INBOX", "($Project)", None, b"Subject: tagged\r\n\r\nbody\r\n")
    lines = a.run("NOOP")
    flags_at = next(i for i, x in enumerate(lines) if x.startswith(b"* FLAGS") and b"$Project" in x)
    permanent_at = next(i for i, x in enumerate(lines) if b"[PERMANENTFLAGS" in x)
    exists_at = lines.index(b"* 2 EXISTS")
    assert flags_at < permanent_at < exists_at, lines
    assert b"$Project" in lines[permanent_at]
    # Another session stores a new keyword on message 1: FLAGS first, then the FETCH.
    b.select("INBOX")
    b.store("1", "+FLAGS", "($Later)")
    lines = a.run("NOOP")
    flags_at = next(i for i, x in enumerate(lines) if x.startswith(b"* FLAGS") and b"$Later" in x)
    fetch_at = next(i for i, x in enumerate(lines) if b" FETCH " in x and b"$Later" in x)
    assert flags_at < fetch_at, lines
    a.close()
    b.logout()


def _flags_line(lines: list[bytes]) -> bytes:
    return next(x for x in lines if x.startswith(b"* FLAGS"))


def test_folder_keeps_every_keyword_it_ever_had(pochta_env: PochtaEnv) -> None:
    """As Dovecot: FLAGS on SELECT lists a keyword no message carries any more, also after
    a restart (the list is in the index)."""
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    with serve(env.config_path):
        _messages(env, ALICE, 1)
        c = login(env)
        c.select("INBOX")
        c.store("1", "+FLAGS", "($Old)")
        c.store("1", "-FLAGS", "($Old)")
        c.logout()
        raw = _Raw(env)
        raw.run(f'LOGIN {ALICE} "{PASSWORD}"')
        lines = raw.run("SELECT INBOX")
        assert b"$Old" in _flags_line(lines), lines
        assert b"$Old" in next(x for x in lines if b"[PERMANENTFLAGS" in x)
        raw.close()
    with serve(env.config_path):
        raw = _Raw(env)
        raw.run(f'LOGIN {ALICE} "{PASSWORD}"')
        assert b"$Old" in _flags_line(raw.run("EXAMINE INBOX"))
        raw.close()


def test_reselect_in_imap4rev2_says_closed_first(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    """RFC 9051 §6.3.2: with IMAP4rev2 enabled, SELECT while a mailbox is selected sends
    OK [CLOSED] before the new mailbox's responses."""
    env, _ = imap
    c = _Raw(env)
    c.run(f'LOGIN {ALICE} "{PASSWORD}"')
    assert c.run("ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2"]
    assert not [x for x in c.run("SELECT INBOX") if b"[CLOSED]" in x]
    lines = c.run("EXAMINE Sent")
    assert lines[0].startswith(b"* OK [CLOSED]"), lines
    c.close()


def _serve_imap_with(env: PochtaEnv, **keys: str) -> Any:
    env.add_user(ALICE, PASSWORD)
    for key, value in keys.items():
        set_key(env.config_path, "imap", key, value)
    return serve(env.config_path)


def _trickle_until_closed(sock: socket.socket, byte: bytes, every: float = 0.5) -> bytes:
    """Send one byte every ``every`` seconds; return what the server says until it closes.
    Gives up (the test fails) after 60 bytes."""
    sock.settimeout(every)
    said = b""
    for _ in range(60):
        try:
            sock.sendall(byte)
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not data:
            return said
        said += data
    else:
        raise AssertionError(f"the server did not close a trickling client: {said!r}")
    return said


def test_trickling_clients_are_closed(pochta_env: PochtaEnv) -> None:
    """Issue 12 point 9: one byte every half second resets no clock. Before login the login
    timeout closes the connection; after login the command timeout does."""
    with _serve_imap_with(pochta_env, login_timeout_seconds="2", command_timeout_seconds="2"):
        port = pochta_env.ports["imap"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert s.recv(4096).startswith(b"* OK")
            said = _trickle_until_closed(s, b"a")
        assert said.startswith(b"* BYE Log in within 2 seconds"), said
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rwb")
            assert f.readline().startswith(b"* OK")
            f.write(f'l1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
            f.flush()
            line = f.readline()
            while line.startswith(b"*"):
                line = f.readline()
            assert line.startswith(b"l1 OK"), line
            said = _trickle_until_closed(s, b"x")
        assert said.startswith(b"* BYE Command took too long"), said


def _reply(f: Any) -> bytes:
    """The first line that is not an untagged data line (a tagged reply, "+" or BYE)."""
    line: bytes = f.readline()
    while line.startswith(b"* ") and not line.startswith(b"* BYE"):
        line = f.readline()
    return line


def test_before_login_no_literal_invites_data(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    """Issue 12 point 13: before login APPEND and large literals get no "+", COMPRESS is
    refused, an over-long line is answered with its own tag, and a large LITERAL+ ends the
    connection."""
    env, _ = imap
    with socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10) as s:
        f = s.makefile("rwb")
        assert f.readline().startswith(b"* OK")
        f.write(b"a1 APPEND INBOX {10}\r\n")
        f.flush()
        assert _reply(f).startswith(b"a1 BAD"), "no + before login"
        f.write(b"a2 LOGIN {9000}\r\n")
        f.flush()
        assert _reply(f).startswith(b"a2 BAD")
        f.write(b"a3 COMPRESS DEFLATE\r\n")
        f.flush()
        assert _reply(f).startswith((b"a3 BAD", b"a3 NO"))
        f.write(b"a4 NOOP " + b"x" * 70000)  # over max_command_bytes before its CRLF
        f.flush()
        assert _reply(f).startswith(b"a4 BAD"), "the line's own tag, not a3's"
        f.write(b"x\r\n")
        f.flush()
        f.write(b"a5 NOOP\r\n")
        f.flush()
        assert _reply(f).startswith(b"a5 OK")
        f.write(b"a6 LOGIN {9000+}\r\n" + b"x" * 9000 + b" x\r\n")
        f.flush()
        assert _reply(f).startswith(b"a6 BAD")
        assert f.readline().startswith(b"* BYE")
        assert f.readline() == b""


def test_multiappend_total_is_capped_before_its_continuation(pochta_env: PochtaEnv) -> None:
    """Issue 12 point 13: the messages of one APPEND together stay under max_append_bytes;
    the literal that would pass it gets NO [TOOBIG] instead of "+"."""
    with (
        _serve_imap_with(pochta_env, max_append_bytes="20000"),
        socket.create_connection(("127.0.0.1", pochta_env.ports["imap"]), timeout=10) as s,
    ):
        f = s.makefile("rwb")
        assert f.readline().startswith(b"* OK")
        f.write(f'l1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
        f.flush()
        assert _reply(f).startswith(b"l1 OK")
        body = b"Subject: big\r\n\r\n" + b"x" * 14_000 + b"\r\n"
        f.write(b"m1 APPEND INBOX {%d}\r\n" % len(body))
        f.flush()
        assert _reply(f).startswith(b"+")
        f.write(body + b" {%d}\r\n" % len(body))
        f.flush()
        assert _reply(f).startswith(b"m1 NO [TOOBIG]")
        f.write(b"m2 APPEND INBOX {%d}\r\n" % len(body))
        f.flush()
        assert _reply(f).startswith(b"+")
        f.write(body + b"\r\n")
        f.flush()
        assert _reply(f).startswith(b"m2 OK")
