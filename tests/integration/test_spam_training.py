"""Training Bayes for real: `pochta spam learn` on files, an mbox and a Maildir, and a real
`pochta serve` learning from imaplib's MOVE into Junk and the $Junk/$NotJunk flags."""

from __future__ import annotations

import imaplib
import json
import mailbox
import time
from pathlib import Path

from pochta.spam.bayes import Counts
from pochta.spam.bayes_store import GLOBAL, BayesStore
from tests.harness import DOMAIN, PochtaEnv, serve

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"


def message(n: int, words: str) -> bytes:
    return (
        f"From: sender{n}@remote.example\r\nTo: {ALICE}\r\nSubject: note {n}\r\n"
        f"Message-ID: <{n}.{words.split()[0]}@remote.example>\r\n\r\n{words} {n}\r\n"
    ).encode()


def counts(env: PochtaEnv, scope: str) -> Counts:
    store = BayesStore(env.data_dir / "directory.sqlite3")
    try:
        return store.scope_counts(scope)
    finally:
        store.close()


def learn(env: PochtaEnv, *args: str) -> dict[str, object]:
    proc = env.run("spam", "learn", "--json", *args, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def test_learn_files_a_folder_an_mbox_and_a_maildir(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    env = pochta_env
    folder = tmp_path / "spam-files"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.eml").write_bytes(message(n, "casino prize money"))
    (folder / "empty.eml").write_bytes(b"")
    result = learn(env, "--spam", str(folder))
    assert (result["learned"], result["known"], result["unreadable"]) == (3, 0, 1)

    box = mailbox.mbox(tmp_path / "ham.mbox")
    for n in range(10, 14):
        box.add(message(n, "project agenda review"))
    box.close()
    result = learn(env, "--ham", str(tmp_path / "ham.mbox"))
    assert (result["learned"], result["moved"]) == (4, 0)

    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(message(0, "casino prize money"))  # already learned as spam
    maildir.add(message(20, "lunch meeting"))
    maildir.close()
    result = learn(env, "--ham", str(tmp_path / "Maildir"))
    assert (result["learned"], result["moved"]) == (1, 1)
    assert counts(env, GLOBAL) == Counts(2, 6)

    # Again: nothing new; the text summary says so.
    proc = env.run("spam", "learn", "--ham", str(tmp_path / "ham.mbox"), check=True)
    assert "Learned 0 as ham, 4 already known, 0 moved" in proc.stdout


def test_learn_for_a_user_and_errors(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    (tmp_path / "m.eml").write_bytes(message(1, "casino prize"))
    result = learn(env, "--spam", "--user", ALICE, str(tmp_path / "m.eml"))
    assert result["learned"] == 1
    assert counts(env, ALICE) == Counts(1, 0)
    assert counts(env, GLOBAL) == Counts(1, 0)
    proc = env.run("spam", "learn", str(tmp_path / "m.eml"))
    assert proc.returncode != 0
    assert "--spam or --ham" in proc.stderr
    proc = env.run("spam", "learn", "--spam", "--user", f"nobody@{DOMAIN}", str(tmp_path))
    assert proc.returncode != 0
    assert "no account" in proc.stderr


def wait_counts(env: PochtaEnv, scope: str, want: Counts, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if counts(env, scope) == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{scope}: {counts(env, scope)}, wanted {want}")


def uid_of(c: imaplib.IMAP4, folder: str) -> bytes:
    assert c.select(folder)[0] == "OK"
    typ, data = c.uid("SEARCH", "ALL")
    assert typ == "OK"
    assert data[0]
    return data[0].split()[-1]


def test_imap_junk_moves_and_flags_train_the_user(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(ALICE, PASSWORD)
    with serve(env.config_path) as server:
        c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
        c.login(ALICE, PASSWORD)
        for n, words in ((1, "casino prize"), (2, "project agenda"), (3, "lunch today")):
            assert c.append("INBOX", None, None, message(n, words))[0] == "OK"

        # Thunderbird's "Junk": MOVE into the \Junk folder.
        assert c.uid("MOVE", uid_of(c, "INBOX"), "Junk")[0] == "OK"
        wait_counts(env, ALICE, Counts(1, 0))
        assert server.wait_for("bayes_learn")["outcome"] == "learned"

        # Apple Mail's "Not Junk" on it: $NotJunk moves it to ham.
        assert c.uid("STORE", uid_of(c, "Junk"), "+FLAGS", "($NotJunk)")[0] == "OK"
        wait_counts(env, ALICE, Counts(0, 1))
        assert server.wait_for("bayes_learn", count=2)["outcome"] == "moved"

        # $Junk on another message in INBOX: spam.
        assert c.uid("STORE", uid_of(c, "INBOX"), "+FLAGS", "($Junk)")[0] == "OK"
        wait_counts(env, ALICE, Counts(1, 1))

        # COPY into Junk then MOVE it out of Junk into a folder: spam, then ham.
        c.select("INBOX")
        _typ, data = c.uid("SEARCH", "ALL")
        first = data[0].split()[0]
        assert c.uid("COPY", first, "Junk")[0] == "OK"
        wait_counts(env, ALICE, Counts(2, 1))
        assert c.uid("MOVE", uid_of(c, "Junk"), "Archive")[0] == "OK"
        wait_counts(env, ALICE, Counts(1, 2))

        # Deleting junk (Junk -> Trash) and filing (INBOX -> Archive) say nothing.
        assert c.uid("MOVE", uid_of(c, "Archive"), "Trash")[0] == "OK"
        c.select("INBOX")
        assert c.uid("COPY", first, "Archive")[0] == "OK"
        c.noop()
        c.logout()
    # The server finished its queued learns before it stopped: the last two said nothing.
    assert len(server.events("bayes_learn")) == 5
    assert counts(env, ALICE) == Counts(1, 2)
    assert counts(env, GLOBAL) == Counts(1, 2)  # learn_global: the user's learns too
