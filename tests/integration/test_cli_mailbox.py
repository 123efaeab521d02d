"""`pochta mailbox` as an admin runs it: the real command on a real data dir, with mail put
into the store the way the delivery agent does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pochta.store import FlagMode
from pochta.store.index import INDEX_FILE
from pochta.store.maildir import MaildirStore
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv

PASSWORD = "correct horse battery"
ADDRESS = f"bob@{DOMAIN}"


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc.stdout


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pochta: error: "), lines[0]
    return lines[0].removeprefix("pochta: error: ")


def deliver_some(env: PochtaEnv) -> Path:
    store = MaildirStore(env.data_dir / "mail", hostname=HOSTNAME)
    store.deliver(ADDRESS, b"Subject: one\r\n\r\n" + b"x" * 1000 + b"\r\n")
    store.deliver(ADDRESS, b"Subject: two\r\n\r\nhello\r\n", flags=frozenset({"\\Seen"}))
    store.deliver(ADDRESS, b"Subject: sent\r\n\r\nbye\r\n", folder="Sent")
    store.store_flags(ADDRESS, "Sent", [1], FlagMode.ADD, frozenset({"\\Seen"}))
    root = store.account_root(ADDRESS)
    store.close()
    return root


def test_list_and_quota(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    ok(env.run("user", "add", ADDRESS, "--password-stdin", "--quota", "1M", input=PASSWORD))
    deliver_some(env)
    lines = ok(env.run("mailbox", "list", "Bob@Example.TEST")).splitlines()
    assert lines[0].split() == ["INBOX", "messages=2", "unseen=1", "size=1.0K", "role=-"]
    sent = next(line for line in lines if line.startswith("Sent"))
    assert sent.split() == ["Sent", "messages=1", "unseen=0", "size=22B", "role=\\Sent"]
    assert {line.split()[0] for line in lines} == {
        "INBOX",
        "Archive",
        "Drafts",
        "Junk",
        "Sent",
        "Trash",
    }
    out = ok(env.run("mailbox", "quota", ADDRESS)).splitlines()
    assert out[0] == "storage  1.0K of 1M (0.1%)"
    assert out[1] == "messages 3 of unlimited"


def test_sync_adopts_a_file_dropped_in_by_hand(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(ADDRESS, PASSWORD)
    root = deliver_some(env)
    (root / "new" / "1700000000.M1P1Q1.elsewhere").write_bytes(b"Subject: by hand\n\nhi\n")
    out = ok(env.run("mailbox", "sync", ADDRESS))
    assert "INBOX: adopted 1, vanished 0, flags changed 0" in out
    assert out.splitlines()[-1] == (
        f"synced {ADDRESS}: adopted 1 message, 0 vanished, 0 with changed flags"
    )
    again = ok(env.run("mailbox", "sync", ADDRESS))
    assert again.splitlines() == [
        f"synced {ADDRESS}: adopted 0 messages, 0 vanished, 0 with changed flags"
    ]
    assert ok(env.run("mailbox", "list", ADDRESS)).split()[:2] == ["INBOX", "messages=3"]


def test_reindex_after_losing_the_index(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    env.add_user(ADDRESS, PASSWORD)
    root = deliver_some(env)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    out = ok(env.run("mailbox", "reindex", ADDRESS))
    assert out.splitlines()[-1] == (
        f"reindexed {ADDRESS}: 6 folders, 3 messages (3 kept their UID, 0 got a new one)"
    )
    assert ok(env.run("mailbox", "list", ADDRESS)).split()[:3] == [
        "INBOX",
        "messages=2",
        "unseen=1",
    ]

    # With the index still there, the UIDs come from it; without index and uidlist, INBOX
    # gets new UIDs and a new UIDVALIDITY.
    (root / "pochta-uidlist").unlink()
    assert "(3 kept their UID" in ok(env.run("mailbox", "reindex", ADDRESS))
    (root / "pochta-uidlist").unlink()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    out = ok(env.run("mailbox", "reindex", ADDRESS))
    assert "(1 kept their UID, 2 got a new one)" in out  # Sent kept its uidlist
    assert out.splitlines()[-1] == (
        "new UIDVALIDITY (mail clients download these folders again): INBOX"
    )


def test_errors_are_one_line(pochta_env: PochtaEnv) -> None:
    env = pochta_env
    for command in ("list", "quota", "sync", "reindex"):
        assert refused(env.run("mailbox", command, f"nobody@{DOMAIN}")) == (
            f"no account nobody@{DOMAIN}; list accounts with: pochta user list"
        )
    assert "not an address" in refused(env.run("mailbox", "list", "no-at-sign"))
    env.add_user(ADDRESS, PASSWORD)
    root = deliver_some(env)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    (root / INDEX_FILE).write_bytes(b"not a database" * 500)
    message = refused(env.run("mailbox", "list", ADDRESS))
    assert message.endswith(f"rebuild it with: pochta mailbox reindex {ADDRESS}")
    out = ok(env.run("mailbox", "reindex", ADDRESS))
    assert out.startswith("note: the old index could not be read")
    assert ok(env.run("mailbox", "list", ADDRESS)).split()[:2] == ["INBOX", "messages=2"]
