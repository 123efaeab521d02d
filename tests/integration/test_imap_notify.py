"""NOTIFY (RFC 5465) on the real `pochta serve`: one imaplib session asks for notifications,
another changes the mailboxes, and the first reads them off its socket without sending a
command (no NOOP, no IDLE)."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Iterator

import pytest

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, serve

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"


@pytest.fixture
def imap(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def login(env: PochtaEnv) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", env.ports["imap"], timeout=10)
    c.login(ALICE, PASSWORD)
    return c


def command(c: imaplib.IMAP4, line: str) -> list[bytes]:
    """Send one command as it is; the untagged lines until its tagged reply, and that."""
    tag = c._new_tag()  # type: ignore[attr-defined]
    c.send(tag + b" " + line.encode() + b"\r\n")
    lines = []
    while True:
        got = c.readline()
        lines.append(got)
        if got.startswith(tag + b" "):
            return lines


def unsolicited(c: imaplib.IMAP4, pattern: bytes) -> bytes:
    """Read the socket (no command sent) until a line matches; the socket's timeout (10 s)
    fails the test if it never comes."""
    while True:
        line = c.readline()
        assert line, "connection closed"
        if re.search(pattern, line):
            return line


def test_notify_pushes_status_and_list_for_other_folders(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    a, b = login(env), login(env)
    assert "NOTIFY" in a.capabilities
    b.create("Lists")
    b.append("Lists", None, None, b"Subject: one\r\n\r\nbody\r\n")
    got = command(
        a,
        "NOTIFY SET STATUS (mailboxes Lists (MessageNew MessageExpunge FlagChange)) "
        "(personal (MailboxName SubscriptionChange))",
    )
    # §3.1: the STATUS indicator gives a STATUS for the watched folder before the OK.
    assert any(re.match(rb"\* STATUS \"Lists\" \(.*MESSAGES 1.*UIDNEXT 2", x) for x in got), got
    assert got[-1].split()[1] == b"OK"

    b.append("Lists", None, None, b"Subject: two\r\n\r\nbody\r\n")
    line = unsolicited(a, rb"^\* STATUS \"Lists\" ")
    assert b"MESSAGES 2" in line
    assert b"UIDNEXT 3" in line

    b.select("Lists")
    b.uid("STORE", "1", "+FLAGS", r"(\Flagged)")
    line = unsolicited(a, rb"^\* STATUS \"Lists\" ")
    assert b"HIGHESTMODSEQ" in line
    assert b"UIDVALIDITY" in line

    b.uid("STORE", "2", "+FLAGS", r"(\Deleted)")
    b.expunge()
    line = unsolicited(a, rb"^\* STATUS \"Lists\" \(.*MESSAGES 1")  # §5.3
    b.close()

    b.create("Projects")
    assert unsolicited(a, rb"^\* LIST .*Projects")  # §5.4
    b.rename("Projects", "Done")
    line = unsolicited(a, rb"^\* LIST .*OLDNAME")  # §5.4
    assert b"Done" in line
    assert b"Projects" in line
    b.subscribe("Done")
    line = unsolicited(a, rb"^\* LIST .*Done")  # §5.5
    assert b"\\Subscribed" in line
    b.delete("Done")
    line = unsolicited(a, rb"^\* LIST .*Done")
    assert b"\\NonExistent" in line

    # NOTIFY NONE: nothing more comes; the next command's answer is the next line.
    assert command(a, "NOTIFY NONE")[-1].split()[1] == b"OK"
    b.append("Lists", None, None, b"Subject: three\r\n\r\nbody\r\n")
    assert command(a, "CHECK")[:-1] == []
    a.logout()
    b.logout()


def test_selected_mailbox_gets_exists_and_fetch_between_commands(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    a, b = login(env), login(env)
    a.select("INBOX")
    got = command(
        a,
        "NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) "
        "MessageExpunge FlagChange))",
    )
    assert got[-1].split()[1] == b"OK"
    b.append("INBOX", None, None, b"Subject: pushed\r\n\r\nbody\r\n")
    assert unsolicited(a, rb"^\* 1 EXISTS")
    line = unsolicited(a, rb"^\* 1 FETCH ")  # §5.2: the attributes asked for
    assert b"UID 1" in line
    b.select("INBOX")
    b.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
    b.expunge()
    # SELECTED (not -DELAYED): the expunge goes out at once, between commands (§6.1.1).
    assert unsolicited(a, rb"^\* 1 EXPUNGE")
    a.logout()
    b.logout()


def test_unsupported_events_and_bad_combinations(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    a = login(env)
    # §3.1: an event we do not offer is NO [BADEVENT (the events we do)], not BAD.
    got = command(a, "NOTIFY SET (personal (MessageNew MessageExpunge AnnotationChange))")
    assert re.match(rb"\S+ NO \[BADEVENT \(MessageNew MessageExpunge FlagChange", got[-1])
    # §5: MessageNew without MessageExpunge for the selected mailbox is BAD.
    assert command(a, "NOTIFY SET (selected (MessageNew))")[-1].split()[1] == b"BAD"
    # §6.1: SELECTED and SELECTED-DELAYED together is BAD; so is MailboxName for selected.
    got = command(a, "NOTIFY SET (selected NONE) (selected-delayed NONE)")
    assert got[-1].split()[1] == b"BAD"
    assert command(a, "NOTIFY SET (selected (MailboxName))")[-1].split()[1] == b"BAD"
    a.logout()


def test_a_client_that_falls_behind_gets_notificationoverflow(pochta_env: PochtaEnv) -> None:
    # imap.notify_max_pending_folders = 2: three folders change while A's APPEND waits for
    # its literal, so A's feed overflows (§5.8).
    pochta_env.add_user(ALICE, PASSWORD)
    pochta_env.run("config", "set", "imap.notify_max_pending_folders", "2", check=True)
    with serve(pochta_env.config_path):
        _falls_behind(pochta_env)


def _falls_behind(env: PochtaEnv) -> None:
    a, b = login(env), login(env)
    for name in ("F1", "F2", "F3"):
        b.create(name)
    assert command(a, "NOTIFY SET (personal (MessageNew MessageExpunge))")[-1].split()[1] == b"OK"
    late = b"Subject: late\r\n\r\nbody\r\n"
    a.send(b"x1 APPEND INBOX {%d}\r\n" % len(late))
    assert a.readline().startswith(b"+")
    for name in ("F1", "F2", "F3"):
        b.append(name, None, None, b"Subject: x\r\n\r\nbody\r\n")
    a.send(late + b"\r\n")
    lines = []
    while not (line := a.readline()).startswith(b"x1 "):
        lines.append(line)
    assert any(x.startswith(b"* OK [NOTIFICATIONOVERFLOW]") for x in lines), lines
    assert line.startswith(b"x1 OK")
    # NOTIFY is off now (as after NOTIFY NONE): a change brings nothing unasked.
    b.append("F1", None, None, b"Subject: y\r\n\r\nbody\r\n")
    assert not any(b"STATUS" in x for x in command(a, "CHECK")[:-1])
    a.logout()
    b.logout()


def test_selected_delayed_holds_expunges_until_a_command_may_carry_them(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    """§6.1.2 SELECTED-DELAYED: an expunge in the selected mailbox is not pushed between
    commands, and not sent during FETCH (RFC 9051 §7.5.1); NOOP carries it."""
    env, _ = imap
    a, b = login(env), login(env)
    b.append("INBOX", None, None, b"Subject: one\r\n\r\nbody\r\n")
    b.append("INBOX", None, None, b"Subject: two\r\n\r\nbody\r\n")
    a.select("INBOX")
    got = command(a, "NOTIFY SET (selected-delayed (MessageNew MessageExpunge FlagChange))")
    assert got[-1].split()[1] == b"OK"
    b.select("INBOX")
    b.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
    b.expunge()
    got = command(a, "FETCH 2 (UID)")
    assert not any(re.match(rb"\* \d+ EXPUNGE", x) for x in got), got
    assert any(re.match(rb"\* 2 FETCH \(UID 2\)", x) for x in got), got
    got = command(a, "NOOP")
    assert any(re.match(rb"\* 1 EXPUNGE", x) for x in got), got
    assert got[-1].split()[1] == b"OK"
    a.logout()
    b.logout()


def test_notify_reaches_a_client_in_idle(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    """A client in IDLE gets the STATUS of another folder that NOTIFY watches (§5.7 is
    about IDLE and NOTIFY together: both kinds of update go out while it idles)."""
    env, _ = imap
    a, b = login(env), login(env)
    b.create("Lists")
    a.select("INBOX")
    got = command(a, "NOTIFY SET (mailboxes Lists (MessageNew MessageExpunge))")
    assert got[-1].split()[1] == b"OK"
    tag = a._new_tag()  # type: ignore[attr-defined]
    a.send(tag + b" IDLE\r\n")
    assert a.readline().startswith(b"+")
    b.append("Lists", None, None, b"Subject: while idle\r\n\r\nbody\r\n")
    line = unsolicited(a, rb"^\* STATUS \"Lists\" ")
    assert b"MESSAGES 1" in line
    b.append("INBOX", None, None, b"Subject: inbox too\r\n\r\nbody\r\n")
    assert unsolicited(a, rb"^\* 1 EXISTS")
    a.send(b"DONE\r\n")
    assert unsolicited(a, re.escape(tag) + rb" OK")
    a.logout()
    b.logout()
