"""Delivery agents for every destination the resolver accepts (issue 17, points 2 and 4),
with a real `pochta serve`, smtplib, and the files read back with Python's `mailbox`.

- virtual_mailbox_maps mailboxes with no directory account: the mail lands where the table
  says, under [store] mail_dir (Postfix virtual(8)), Maildir for a value ending in "/",
  mbox otherwise;
- `/file` alias targets: appended in mbox format with locking, as the alias file's owner
  (local(8) "EXTERNAL FILE DELIVERY"), or into a Maildir for a path ending in "/";
- `[local] deliver_to_unix_accounts`: the account's ~/Maildir/, written as the account;
- `[local] allow_mail_to_commands` / `allow_mail_to_files`: a target from a source not
  allowed is refused at RCPT (local(8) "DELIVERY RIGHTS").

As root (the CI's case) the file deliveries switch to the alias file's owner: the files live
in a 0755 temporary directory that user can reach (pytest's tmp_path is 0700).
"""

from __future__ import annotations

import mailbox
import os
import pwd
import shutil
import smtplib
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import HOSTNAME, PochtaEnv, make_pochta_env, serve, set_key, wait_until

ROOT = os.geteuid() == 0
TABLE_DOMAIN = "tables.test"


def send(env: PochtaEnv, to: str, subject: str, body: str = "Hello.\r\n") -> None:
    message = (
        f"From: carol@remote.example\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@remote.example>\r\n\r\n{body}"
    )
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=30) as c:
        c.sendmail("carol@remote.example", [to], message.encode())


def rcpt_reply(env: PochtaEnv, to: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", env.ports["smtp"], timeout=30) as c:
        c.ehlo("client.example")
        c.mail("carol@remote.example")
        return c.rcpt(to)


def postmap(confdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The oracle: the real postmap(1), with an empty main.cf of its own (Postfix defaults)."""
    confdir.mkdir(exist_ok=True)
    (confdir / "main.cf").write_text("compatibility_level = 3.6\n")
    return subprocess.run(
        ["postmap", "-c", str(confdir), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory every user can reach (for the files written as another user)."""
    path = Path(tempfile.mkdtemp(prefix="pochta-agents-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def owner() -> pwd.struct_passwd:
    """Whom the alias file belongs to: `daemon` as root (local(8) runs file deliveries as
    the alias file's owner), else ourselves."""
    if ROOT:
        return pwd.getpwnam("daemon")
    return pwd.getpwuid(os.geteuid())


# -- point 2: virtual_mailbox_maps mailboxes -------------------------------------------------


def test_table_mailboxes_land_where_the_table_says(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    env = pochta_env
    vmailbox = tmp_path / "vmailbox"
    # The Postfix VIRTUAL_README way: "user@domain  domain/user/" (trailing / = Maildir).
    vmailbox.write_text(
        f"# virtual_mailbox_maps\nbob@{TABLE_DOMAIN}   {TABLE_DOMAIN}/bob/\n"
        f"ann@{TABLE_DOMAIN}   {TABLE_DOMAIN}/ann.mbox\n"
    )
    if shutil.which("postmap") is not None:  # build the .db as the guides do, and ask it
        conf = tmp_path / "postfix"
        assert postmap(conf, f"hash:{vmailbox}").returncode == 0
        found = postmap(conf, "-q", f"bob@{TABLE_DOMAIN}", f"hash:{vmailbox}")
        assert found.stdout.strip() == f"{TABLE_DOMAIN}/bob/"
    set_key(env.config_path, "tables", "virtual_mailbox_domains", f'["{TABLE_DOMAIN}"]')
    set_key(env.config_path, "tables", "virtual_mailbox_maps", f'["hash:{vmailbox}"]')
    assert env.run("check").returncode == 0, env.run("check").stderr
    with serve(env.config_path) as server:
        send(env, f"bob@{TABLE_DOMAIN}", "to bob's maildir")
        send(env, f"ann@{TABLE_DOMAIN}", "to ann's mbox", "From the start\r\nline two\r\n")
        send(env, f"Bob+news@{TABLE_DOMAIN}", "with an extension")
        assert rcpt_reply(env, f"nobody@{TABLE_DOMAIN}")[0] == 550
        # LMTP (final delivery, one reply per recipient) delivers there too.
        with smtplib.LMTP(str(env.data_dir / "lmtp.sock"), timeout=30) as lmtp:
            refused = lmtp.sendmail(
                "carol@remote.example",
                [f"bob@{TABLE_DOMAIN}"],
                b"From: carol@remote.example\r\nSubject: by lmtp\r\n\r\nhi\r\n",
            )
            assert refused == {}
        bob = env.data_dir / "mail" / TABLE_DOMAIN / "bob"
        ann = env.data_dir / "mail" / TABLE_DOMAIN / "ann.mbox"
        assert wait_until(lambda: len(list((bob / "new").glob("*"))) == 3, 20), server.lines
        assert wait_until(lambda: ann.exists() and len(mailbox.mbox(str(ann))) == 1, 20)
    subjects = sorted(str(m["Subject"]) for m in mailbox.Maildir(str(bob), create=False))
    assert subjects == ["by lmtp", "to bob's maildir", "with an extension"]
    (only,) = list(mailbox.mbox(str(ann)))
    assert only["Subject"] == "to ann's mbox"
    assert only["Delivered-To"] == f"ann@{TABLE_DOMAIN}"
    assert only.get_from().startswith("carol@remote.example ")
    assert ">From the start\nline two\n" in str(only.get_payload())


def test_table_mailbox_outside_the_mail_root_is_refused_by_check(
    pochta_env: PochtaEnv, tmp_path: Path
) -> None:
    env = pochta_env
    vmailbox = tmp_path / "vmailbox"
    vmailbox.write_text(
        f"evil@{TABLE_DOMAIN}  ../../etc/evil/\nroot@{TABLE_DOMAIN}  /var/mail/root\n"
        f"ok@{TABLE_DOMAIN}  {TABLE_DOMAIN}/ok/\n"
    )
    set_key(env.config_path, "tables", "virtual_mailbox_domains", f'["{TABLE_DOMAIN}"]')
    set_key(env.config_path, "tables", "virtual_mailbox_maps", f'["hash:{vmailbox}"]')
    proc = env.run("check")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "tables.virtual_mailbox_maps[0]" in out
    assert f"evil@{TABLE_DOMAIN}" in out
    assert "'..'" in out
    assert f"root@{TABLE_DOMAIN}" in out
    assert "relative to [store] mail_dir" in out
    assert f"ok@{TABLE_DOMAIN}" not in out


# -- point 4: /file targets, Unix accounts, delivery rights ----------------------------------


def alias_file(top: Path, owner: pwd.struct_passwd, text: str) -> Path:
    aliases = top / "aliases"
    aliases.write_text(text)
    aliases.chmod(0o644)
    os.chown(aliases, owner.pw_uid, owner.pw_gid)
    return aliases


def files_dir(top: Path, owner: pwd.struct_passwd) -> Path:
    where = top / "files"
    where.mkdir()
    os.chown(where, owner.pw_uid, owner.pw_gid)
    return where


def test_file_alias_appends_mbox_as_the_alias_owner(top: Path, owner: pwd.struct_passwd) -> None:
    env = make_pochta_env(top / "data")
    where = files_dir(top, owner)
    log = where / "archive.mbox"
    aliases = alias_file(top, owner, f"archive: {log}\nbox: {where}/maildir/\n")
    set_key(env.config_path, "tables", "alias_maps", f'["hash:{aliases}"]')
    with serve(env.config_path) as server:
        send(env, f"archive@{HOSTNAME}", "first", "From me to you\r\n>From quoted\r\nend\r\n")
        send(env, f"archive@{HOSTNAME}", "second")
        send(env, f"box@{HOSTNAME}", "into a maildir")
        assert wait_until(lambda: log.exists() and len(mailbox.mbox(str(log))) == 2, 20), [
            x for x in server.lines if "file" in x or "error" in x or "deliver" in x
        ]
        maildir = where / "maildir"
        assert wait_until(lambda: len(list((maildir / "new").glob("*"))) == 1, 20)
        done = server.events("file_delivery_done")
    messages = list(mailbox.mbox(str(log)))
    assert [m["Subject"] for m in messages] == ["first", "second"]
    assert messages[0]["Return-Path"] == "<carol@remote.example>"
    assert messages[0]["Delivered-To"] == f"archive@{HOSTNAME}"
    # mboxo quoting (Postfix MAIL_COPY_QUOTE): only lines starting "From " get a ">".
    assert str(messages[0].get_payload()) == ">From me to you\n>From quoted\nend\n"
    raw = log.read_bytes()
    assert raw.startswith(b"From carol@remote.example ")
    assert raw.endswith(b"\n\n")  # a blank line after each message
    assert not Path(f"{log}.lock").exists()
    assert log.stat().st_uid == owner.pw_uid  # written as the alias file's owner
    assert log.stat().st_mode & 0o777 == 0o600
    (new,) = (maildir / "new").iterdir()
    assert new.stat().st_uid == owner.pw_uid
    assert mailbox.Maildir(str(maildir), create=False).get_message(new.name)["Subject"] == (
        "into a maildir"
    )
    assert {d["user"] for d in done} == {owner.pw_name}
    assert all(d["outcome"] == "delivered" for d in done)


def test_concurrent_deliveries_to_one_file_do_not_interleave(
    top: Path, owner: pwd.struct_passwd
) -> None:
    env = make_pochta_env(top / "data")
    where = files_dir(top, owner)
    log = where / "all.mbox"
    aliases = alias_file(top, owner, f"all: {log}\n")
    set_key(env.config_path, "tables", "alias_maps", f'["hash:{aliases}"]')
    count = 12
    body = "".join(f"line {n:04d} " + "x" * 60 + "\r\n" for n in range(2000))  # ~140 KB
    with serve(env.config_path):
        threads = [
            threading.Thread(target=send, args=(env, f"all@{HOSTNAME}", f"msg {i}", body))
            for i in range(count)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wait_until(lambda: log.exists() and len(mailbox.mbox(str(log))) == count, 60)
    messages = list(mailbox.mbox(str(log)))
    assert sorted(str(m["Subject"]) for m in messages) == sorted(f"msg {i}" for i in range(count))
    expected = body.replace("\r\n", "\n")
    for m in messages:
        assert m.get_payload() == expected  # whole, nothing of another message inside


def test_unix_account_gets_its_maildir_as_itself(top: Path) -> None:
    if not ROOT or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make a Unix account with a home of our own")
    name = f"pt{uuid.uuid4().hex[:8]}"
    home = top / name
    subprocess.run(
        ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/sh", name],
        check=True,
    )
    try:
        env = make_pochta_env(top / "data")
        set_key(env.config_path, "local", "deliver_to_unix_accounts", "true")
        account = pwd.getpwnam(name)
        with serve(env.config_path) as server:
            send(env, f"{name}@{HOSTNAME}", "to a unix account")
            send(env, f"{name}+ext@localhost", "with an extension")
            maildir = home / "Maildir"
            assert wait_until(lambda: len(list((maildir / "new").glob("*"))) == 2, 20), server.lines
        subjects = sorted(str(m["Subject"]) for m in mailbox.Maildir(str(maildir), create=False))
        assert subjects == ["to a unix account", "with an extension"]
        for path in [maildir, maildir / "new", *(maildir / "new").iterdir()]:
            assert path.stat().st_uid == account.pw_uid
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


def test_delivery_rights_refuse_commands_and_files_at_rcpt(
    top: Path, owner: pwd.struct_passwd
) -> None:
    env = make_pochta_env(top / "data")
    where = files_dir(top, owner)
    included = top / "team.list"
    included.write_text(f"{where}/team.mbox\n")
    included.chmod(0o644)
    aliases = alias_file(
        top,
        owner,
        f"runit: |/bin/cat\nteam: :include:{included}\nmixed: |/bin/cat, {where}/mixed.mbox\n",
    )
    set_key(env.config_path, "tables", "alias_maps", f'["hash:{aliases}"]')
    set_key(env.config_path, "local", "allow_mail_to_commands", "[]")
    with serve(env.config_path) as server:
        # local(8) DELIVERY RIGHTS: no commands at all; files only from the alias file.
        code, text = rcpt_reply(env, f"runit@{HOSTNAME}")
        assert (code, text[:5]) == (550, b"5.7.1"), text
        assert b"command" in text
        code, text = rcpt_reply(env, f"team@{HOSTNAME}")
        assert (code, text[:5]) == (550, b"5.7.1"), text
        assert b"file" in text
        # One branch refused, one allowed: accepted; the file gets it, the command bounces.
        assert rcpt_reply(env, f"mixed@{HOSTNAME}")[0] == 250
        send(env, f"mixed@{HOSTNAME}", "mixed")
        mixed = where / "mixed.mbox"
        assert wait_until(lambda: mixed.exists() and len(mailbox.mbox(str(mixed))) == 1, 20)
        assert server.events("alias_target_not_allowed")
    set_key(env.config_path, "local", "allow_mail_to_files", '["alias", "include"]')
    with serve(env.config_path):
        send(env, f"team@{HOSTNAME}", "for the team")
        team = where / "team.mbox"
        assert wait_until(lambda: team.exists() and len(mailbox.mbox(str(team))) == 1, 20)


def test_file_alias_written_as_the_server_user_when_it_is_not_root(
    top: Path, owner: pwd.struct_passwd
) -> None:
    """A server that dropped root (server.run_as_user) cannot switch users: it writes the
    file as itself (as the pipe agent runs commands), in the same mbox format and locks."""
    if not ROOT:
        pytest.skip("the other tests of this file already run without root")
    nobody = pwd.getpwnam("nobody")
    env = make_pochta_env(top / "data")
    set_key(env.config_path, "server", "run_as_user", '"nobody"')
    env.config_path.chmod(0o644)
    where = files_dir(top, nobody)
    log = where / "archive.mbox"
    aliases = alias_file(top, owner, f"archive: {log}\n")
    set_key(env.config_path, "tables", "alias_maps", f'["hash:{aliases}"]')
    with serve(env.config_path) as server:
        send(env, f"archive@{HOSTNAME}", "one")
        send(env, f"archive@{HOSTNAME}", "two")
        assert wait_until(lambda: log.exists() and len(mailbox.mbox(str(log))) == 2, 20), [
            x for x in server.lines if "file" in x or "error" in x
        ]
        done = server.events("file_delivery_done")
    assert [m["Subject"] for m in mailbox.mbox(str(log))] == ["one", "two"]
    assert log.stat().st_uid == nobody.pw_uid
    assert {d["user"] for d in done} == {"nobody"}
