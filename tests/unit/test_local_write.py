"""deliver/local_write.py: mbox entries, locking, truncation on a failed write, Maildir;
and the resolver's side of issue 17 points 2 and 4 (table mailbox paths, delivery rights)."""

from __future__ import annotations

import mailbox
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pochta.checks import checked_settings_from_dict
from pochta.config.problems import ConfigError
from pochta.config.settings import TablesSettings
from pochta.deliver import local_write
from pochta.deliver.local_write import WriteError, append_mbox, format_mbox, write_maildir
from pochta.directory.sqlite import SqliteDirectory
from pochta.protocols.smtp.replies import Reply
from pochta.resolve import FileDest, MailboxDest, PipeDest, Rejection, UnixDest
from pochta.resolve.classes import table_mailbox_problem
from pochta.resolve.resolver import CONFIG_ERROR, Resolver
from pochta.tables.configured import ConfiguredTables
from tests.factories import make_settings

HOST = "mail.example.test"
WHEN = time.mktime((2026, 12, 7, 4, 5, 6, 0, 0, -1))

# -- mbox entries ----------------------------------------------------------------------------


def test_format_mbox_from_line_quoting_and_blank_line() -> None:
    entry = format_mbox(
        "a@b.example", b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nok\r\n", WHEN
    )
    assert entry == (
        b"From a@b.example Mon Dec  7 04:05:06 2026\nSubject: x\n\n>From here\n>From there\nok\n\n"
    )


def test_format_mbox_null_sender_is_mailer_daemon_and_last_line_ends() -> None:
    entry = format_mbox("", b"Subject: x\r\n\r\nno newline at the end", WHEN)
    assert entry.startswith(b"From MAILER-DAEMON Mon Dec  7 ")
    assert entry.endswith(b"no newline at the end\n\n")


def test_append_reads_back_with_python_mailbox(tmp_path: Path) -> None:
    path = tmp_path / "box"
    for n in range(3):
        body = f"Subject: m{n}\r\n\r\nFrom line {n}\r\n".encode()
        append_mbox(str(path), format_mbox("s@x.example", body))
    assert [m["Subject"] for m in mailbox.mbox(str(path))] == ["m0", "m1", "m2"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{path}.lock").exists()


def test_failed_write_truncates_the_file_back(tmp_path: Path) -> None:
    """A write that fails half-way (here: the file size limit, EFBIG) leaves the file as it
    was, in a child process so the limit stays there."""
    path = tmp_path / "box"
    first = format_mbox("s@x.example", b"Subject: one\r\n\r\nbody\r\n")
    append_mbox(str(path), first)
    limit = len(first) + 100
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from pochta.deliver.local_write import append_mbox, WriteError\n"
        "try:\n"
        f"    append_mbox({str(path)!r}, b'x' * 10000)\n"
        "except WriteError as exc:\n"
        "    print(exc.status); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "5.2.0"
    assert path.read_bytes() == first  # not one byte of the failed message stays
    assert not Path(f"{path}.lock").exists()


def _append_many(path: str, worker: int, count: int) -> None:
    body = "".join(f"w{worker} line {n} " + "y" * 70 + "\n" for n in range(500))
    for i in range(count):
        append_mbox(path, format_mbox("s@x.example", f"Subject: {worker}-{i}\n\n{body}".encode()))


def test_concurrent_processes_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "box")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(path, w, 5)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    messages = list(mailbox.mbox(path))
    assert sorted(str(m["Subject"]) for m in messages) == sorted(
        f"{w}-{i}" for w in range(4) for i in range(5)
    )
    for m in messages:
        worker = str(m["Subject"]).split("-")[0]
        lines = str(m.get_payload()).splitlines()
        assert len(lines) == 500
        assert all(line.startswith(f"w{worker} line ") for line in lines)


def test_a_held_dotlock_defers_and_a_stale_one_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "box"
    lock = Path(f"{path}.lock")
    lock.write_text("")
    with pytest.raises(WriteError) as caught:
        append_mbox(str(path), b"From x\n\n", lock_wait_seconds=0.1)
    assert caught.value.temporary
    old = time.time() - local_write.STALE_LOCK_SECONDS - 10
    os.utime(lock, (old, old))
    append_mbox(str(path), format_mbox("s@x.example", b"Subject: s\n\nb\n"))
    assert len(mailbox.mbox(str(path))) == 1


def test_symlinks_executables_and_hard_links_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_bytes(b"")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(WriteError, match="symbolic link"):
        append_mbox(str(tmp_path / "link"), b"x\n")
    exe = tmp_path / "exe"
    exe.write_bytes(b"")
    exe.chmod(0o700)
    with pytest.raises(WriteError, match="executable") as caught:
        append_mbox(str(exe), b"x\n")
    assert caught.value.status == "5.7.1"
    os.link(target, tmp_path / "second")
    with pytest.raises(WriteError, match="hard link"):
        append_mbox(str(target), b"x\n")
    assert target.read_bytes() == b""


def test_maildir_write(tmp_path: Path) -> None:
    name = write_maildir(str(tmp_path / "md"), b"Subject: hi\r\n\r\nbody\r\n", "host/a:b,c")
    box = mailbox.Maildir(str(tmp_path / "md"), create=False)
    assert box.get_message(name)["Subject"] == "hi"
    assert "host\\057a\\072b\\054c" in name
    assert not list((tmp_path / "md" / "tmp").iterdir())


# -- the resolver ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("example.org/bob/", True),
        ("example.org/bob.mbox", True),
        ("../etc/", False),
        ("example.org/../../x/", False),
        ("/var/mail/bob", False),
        ("", False),
    ],
)
def test_table_mailbox_problem(value: str, ok: bool) -> None:
    assert (table_mailbox_problem(value) is None) is ok


def resolver(
    tmp_path: Path,
    *,
    vmailbox: str = "",
    aliases: str = "",
    commands: list[str] | None = None,
    files: list[str] | None = None,
) -> Resolver:
    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    (tmp_path / "vmailbox").write_text(vmailbox)
    (tmp_path / "aliases").write_text(aliases)
    tables = TablesSettings(
        virtual_mailbox_maps=[f"hash:{tmp_path / 'vmailbox'}"],
        virtual_mailbox_domains=["tables.test"],
        alias_maps=[f"hash:{tmp_path / 'aliases'}"],
    )
    settings = make_settings(
        {
            "server.hostname": HOST,
            "tables": tables,
            "local.allow_mail_to_commands": ["alias"] if commands is None else commands,
            "local.allow_mail_to_files": ["alias"] if files is None else files,
        }
    )
    return Resolver(directory, ConfiguredTables.open(tables), settings)


def no_account(account: str) -> Reply | None:
    """What the server's quota check says of an address with no account (mailbox.py)."""
    return Reply(550, "5.1.1", f"<{account}>: no such user here")


def test_table_mailbox_is_accepted_at_rcpt_without_an_account(tmp_path: Path) -> None:
    r = resolver(tmp_path, vmailbox="bob@tables.test tables.test/bob/\n")
    assert r.resolve("bob+x@tables.test").destinations == (
        MailboxDest("bob@tables.test", "x", "tables.test/bob/"),
    )
    assert r.check_recipient("bob@tables.test", authenticated=False, quota_check=no_account) is None


def test_table_mailbox_leaving_the_mail_root_is_refused_at_rcpt(tmp_path: Path) -> None:
    r = resolver(tmp_path, vmailbox="evil@tables.test ../../etc/\nabs@tables.test /tmp/x/\n")
    for address in ("evil@tables.test", "abs@tables.test"):
        assert r.resolve(address).destinations == (Rejection(CONFIG_ERROR, address),)
        assert r.check_recipient(address, authenticated=False) == CONFIG_ERROR


def test_delivery_rights_by_source(tmp_path: Path) -> None:
    members = tmp_path / "members"
    members.write_text("|/usr/bin/team-cmd\n/var/spool/team.mbox\nann@example.org\n")
    aliases = f"direct: |/bin/cat, /var/log/direct.mbox\nteam: :include:{members}\n"
    not_allowed_cmd = Reply(550, "5.7.1", "mail to command is not allowed")
    not_allowed_file = Reply(550, "5.7.1", "mail to file is not allowed")

    r = resolver(tmp_path, aliases=aliases)  # Postfix's defaults: from the alias file only
    direct = r.resolve(f"direct@{HOST}").destinations
    assert [type(d) for d in direct] == [PipeDest, FileDest]
    assert isinstance(direct[1], FileDest)
    assert direct[1].path == "/var/log/direct.mbox"
    team = r.resolve(f"team@{HOST}").destinations
    assert Rejection(not_allowed_cmd, f"team@{HOST}") in team
    assert Rejection(not_allowed_file, f"team@{HOST}") in team
    assert r.check_recipient(f"team@{HOST}", authenticated=False) is None  # ann remains

    r = resolver(tmp_path, aliases=aliases, commands=[], files=[])
    assert r.check_recipient(f"direct@{HOST}", authenticated=False) == not_allowed_cmd

    r = resolver(tmp_path, aliases=aliases, commands=["include"], files=["alias", "include"])
    team = r.resolve(f"team@{HOST}").destinations
    assert any(isinstance(d, PipeDest) and d.command == "/usr/bin/team-cmd" for d in team)
    assert any(isinstance(d, FileDest) and d.path == "/var/spool/team.mbox" for d in team)
    direct = r.resolve(f"direct@{HOST}").destinations
    assert Rejection(not_allowed_cmd, f"direct@{HOST}") in direct


# -- pochta check ----------------------------------------------------------------------------


def test_check_refuses_unix_accounts_when_the_server_drops_root() -> None:
    data = {
        "server": {"hostname": HOST, "run_as_user": "pochta"},
        "local": {"deliver_to_unix_accounts": True},
    }
    with pytest.raises(ConfigError) as info:
        checked_settings_from_dict(data, check_files=False)
    (problem,) = [str(p) for p in info.value.problems]
    assert problem.startswith("local.deliver_to_unix_accounts")
    assert 'server.run_as_user = ""' in problem
    data["server"] = {"hostname": HOST}
    assert checked_settings_from_dict(data, check_files=False).local.deliver_to_unix_accounts


def test_root_is_no_unix_account_to_deliver_to(tmp_path: Path) -> None:
    """local(8) SECURITY: nothing is written as root; root's mail needs an alias."""
    directory = SqliteDirectory(tmp_path / "d.sqlite3")
    tables = TablesSettings()
    settings = make_settings(
        {"server.hostname": HOST, "tables": tables, "local.deliver_to_unix_accounts": True}
    )
    r = Resolver(directory, ConfiguredTables.open(tables), settings)
    assert r.resolve(f"daemon@{HOST}").destinations == (UnixDest("daemon"),)
    (refused,) = r.resolve(f"root@{HOST}").destinations
    assert isinstance(refused, Rejection)
    assert refused.reply.code == 550
