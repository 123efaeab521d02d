"""RFC 5267 against the real `pochta serve`: ESORT, PARTIAL, and UPDATE contexts (ADDTO,
REMOVEFROM, CANCELUPDATE, NOUPDATE), driven by imaplib and IMAPClient. imaplib has no
names for these commands or responses, so the client below keeps every line it reads, in
order (the order is what RFC 5267 §4.3.3-4 is about)."""

from __future__ import annotations

import imaplib
import re
import socket
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from tests.harness import DOMAIN, PochtaEnv, ServeProcess, serve

PASSWORD = "correct horse 1"
ALICE = f"alice@{DOMAIN}"


class Recording(imaplib.IMAP4):
    """imaplib, keeping every line the server sent, in order."""

    def __init__(self, port: int) -> None:
        self.lines: list[bytes] = []
        super().__init__("127.0.0.1", port, timeout=10)

    def _get_line(self) -> bytes:
        line: bytes = super()._get_line()  # type: ignore[misc]
        self.lines.append(line)
        return line

    def run(self, name: str, *args: str) -> list[bytes]:
        """A command by name (SEARCH, UID SORT, CANCELUPDATE ...) that must succeed (a BAD
        raises); returns the lines that came with it, its tagged OK last."""
        start = len(self.lines)
        if name.startswith("UID "):
            typ, _ = self.uid(name[4:], *args)
        else:
            typ, _ = self.xatom(name, *args)
        assert typ == "OK", self.lines[start:]
        return self.lines[start:]


@pytest.fixture
def imap(pochta_env: PochtaEnv) -> Iterator[tuple[PochtaEnv, ServeProcess]]:
    pochta_env.add_user(ALICE, PASSWORD)
    with serve(pochta_env.config_path) as server:
        yield pochta_env, server


def client(env: PochtaEnv) -> Recording:
    c = Recording(env.ports["imap"])
    c.login(ALICE, PASSWORD)
    return c


def append(c: imaplib.IMAP4, n: int, *, day: int, flags: str = "") -> None:
    msg = f"From: a@example.org\r\nSubject: message {n}\r\n\r\nbody {n}\r\n".encode()
    date = f'"{day:02d}-Mar-2026 10:00:00 +0000"'
    assert c.append("INBOX", f"({flags})" if flags else None, date, msg)[0] == "OK"


def esearch(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"* ESEARCH")]


def tag_of(line: bytes) -> str:
    m = re.match(rb'\* ESEARCH \(TAG "([^"]+)"\)', line)
    assert m is not None, line
    return m.group(1).decode()


# -- ESORT and PARTIAL ---------------------------------------------------------------------


def test_sort_return_options_and_partial_results(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    c = client(env)
    caps = c.capabilities
    for cap in ("ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT"):
        assert cap in caps, cap
    # Arrival order 2, 5, 1, 3, 4 (by INTERNALDATE), sequence order 1..5.
    for n, day in ((1, 3), (2, 1), (3, 4), (4, 5), (5, 2)):
        append(c, n, day=day)
    c.select("INBOX")
    lines = c.run("SORT", "RETURN", "(MIN MAX COUNT ALL)", "(ARRIVAL)", "US-ASCII", "ALL")
    # RFC 5267 §3.1-3.2: MIN/MAX are the first/last in sort order; ALL keeps the order.
    (line,) = esearch(lines)
    assert line.endswith(b") MIN 2 MAX 4 ALL 2,5,1,3:4 COUNT 5")
    lines = c.run("UID SORT", "RETURN", "()", "(REVERSE ARRIVAL)", "US-ASCII", "ALL")
    (line,) = esearch(lines)
    assert line.endswith(b") UID ALL 4,3,1,5,2")  # the UIDs are 1..5 here too
    lines = c.run("SORT", "RETURN", "(PARTIAL 4:2)", "(ARRIVAL)", "US-ASCII", "ALL")
    assert esearch(lines)[0].endswith(b") PARTIAL (2:4 5,1,3)")
    lines = c.run("SEARCH", "RETURN", "(PARTIAL 2:4)", "1:2,4:5")
    assert esearch(lines)[0].endswith(b") PARTIAL (2:4 2,4:5)")
    lines = c.run("SEARCH", "RETURN", "(PARTIAL 6:9)", "ALL")
    assert esearch(lines)[0].endswith(b") PARTIAL (6:9 NIL)")
    # RFC 9394 §3.1: counted from the end.
    lines = c.run("UID SEARCH", "RETURN", "(PARTIAL -1:-2)", "ALL")
    assert esearch(lines)[0].endswith(b") UID PARTIAL (-1:-2 4:5)")
    for bad in ("(PARTIAL 1)", "(PARTIAL 1:*)", "(PARTIAL *:1)", "(PARTIAL 1:2 ALL)"):
        with pytest.raises(imaplib.IMAP4.error, match="PARTIAL"):
            c.run("SEARCH", "RETURN", bad, "ALL")
    # Without RETURN, SORT answers as RFC 5256 says.
    assert c.sort("(ARRIVAL)", "US-ASCII", "ALL") == ("OK", [b"2 5 1 3 4"])
    c.logout()


# -- UPDATE contexts -------------------------------------------------------------------------


def test_search_update_follows_changes_until_cancelled(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    a, b = client(env), client(env)
    for n in range(1, 6):
        append(a, n, day=n)
    a.select("INBOX")
    b.select("INBOX")
    lines = a.run("SEARCH", "RETURN", "(UPDATE)", "SEEN")
    (line,) = esearch(lines)
    tag = tag_of(line)
    assert line == f'* ESEARCH (TAG "{tag}")'.encode()
    # This session's own STORE: the ADDTO comes with the command's answer.
    lines = a.run("STORE", "1,2,4", "+FLAGS", r"(\Seen)")
    assert esearch(lines) == [f'* ESEARCH (TAG "{tag}") ADDTO (0 1:2,4)'.encode()]
    # Another session's change, learnt at the next command.
    b.store("1", "-FLAGS", r"(\Seen)")
    lines = a.run("NOOP")
    assert esearch(lines) == [f'* ESEARCH (TAG "{tag}") REMOVEFROM (0 1)'.encode()]
    # Expunged by another session: REMOVEFROM first, numbered as before the EXPUNGE.
    b.store("3:4", "+FLAGS", r"(\Deleted)")
    b.expunge()
    lines = a.run("NOOP")
    removal = f'* ESEARCH (TAG "{tag}") REMOVEFROM (0 4)'.encode()
    assert removal in lines
    assert lines.index(removal) < lines.index(b"* 4 EXPUNGE")
    assert lines.index(removal) < lines.index(b"* 3 EXPUNGE")
    # A new message: ADDTO after its EXISTS (RFC 5267 §4.3.3), numbered 4 now.
    append(b, 6, day=6, flags=r"\Seen")
    lines = a.run("NOOP")
    addition = f'* ESEARCH (TAG "{tag}") ADDTO (0 4)'.encode()
    assert lines.index(b"* 4 EXISTS") < lines.index(addition)
    # This session's own EXPUNGE: REMOVEFROM before its EXPUNGE response.
    a.store("2", "+FLAGS", r"(\Deleted)")
    lines = a.run("EXPUNGE")
    removal = f'* ESEARCH (TAG "{tag}") REMOVEFROM (0 2)'.encode()
    assert lines.index(removal) < lines.index(b"* 2 EXPUNGE")
    # CANCELUPDATE: no more updates for the tag; an unknown tag is refused.
    a.run("CANCELUPDATE", f'"{tag}"')
    b.store("1", "+FLAGS", r"(\Seen)")
    lines = a.run("NOOP")
    assert esearch(lines) == []
    with pytest.raises(imaplib.IMAP4.error, match="No search with UPDATE"):
        a.run("CANCELUPDATE", f'"{tag}"')
    a.logout()
    b.logout()


def test_uid_sort_update_gives_positions_in_sort_order(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    a, b = client(env), client(env)
    for n, day in ((1, 10), (2, 20), (3, 30)):
        append(a, n, day=day)
    a.select("INBOX")
    b.select("INBOX")
    lines = a.run("UID SORT", "RETURN", "(UPDATE ALL)", "(REVERSE ARRIVAL)", "UTF-8", "UNSEEN")
    (line,) = esearch(lines)
    tag = tag_of(line)
    assert line.endswith(b") UID ALL 3,2,1")
    # Arrivals on day 25 (UID 4) and day 5 (UID 5): positions 2 and 5 of 3,4,2,1,5.
    append(b, 4, day=25)
    append(b, 5, day=5)
    lines = a.run("NOOP")
    assert esearch(lines) == [f'* ESEARCH (TAG "{tag}") UID ADDTO (2 4 5 5)'.encode()]
    # UID 2 seen, UID 1 expunged: removed at their positions, the highest first.
    b.uid("STORE", "2", "+FLAGS", r"(\Seen)")
    b.uid("STORE", "1", "+FLAGS", r"(\Deleted)")
    b.expunge()
    lines = a.run("NOOP")
    assert esearch(lines) == [
        f'* ESEARCH (TAG "{tag}") UID REMOVEFROM (4 1)'.encode(),
        f'* ESEARCH (TAG "{tag}") UID REMOVEFROM (3 2)'.encode(),
    ]
    # Another SELECT ends every context (RFC 5267 §4.3).
    a.select("INBOX")
    b.uid("STORE", "3", "+FLAGS", r"(\Seen)")
    lines = a.run("NOOP")
    assert esearch(lines) == []
    a.logout()
    b.logout()


def test_too_many_contexts_get_noupdate_and_other_options_still_answer(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    env, _ = imap
    a = client(env)
    append(a, 1, day=1)
    a.select("INBOX")
    for _ in range(2):
        lines = a.run("SORT", "RETURN", "(UPDATE)", "(ARRIVAL)", "UTF-8", "ALL")
        assert not [line for line in lines if b"NOUPDATE" in line]
    # RFC 5267 §4.3.1: refused with an untagged NO [NOUPDATE "tag"], COUNT still answered.
    lines = a.run("SORT", "RETURN", "(UPDATE COUNT)", "(ARRIVAL)", "UTF-8", "ALL")
    (line,) = esearch(lines)
    assert line.endswith(b" COUNT 1")
    assert f'* NO [NOUPDATE "{tag_of(line)}"] Too many SORT contexts'.encode() in lines[-2]
    for _ in range(8):
        lines = a.run("SEARCH", "RETURN", "(UPDATE)", "ALL")
        assert not [line for line in lines if b"NOUPDATE" in line]
    lines = a.run("UID SEARCH", "RETURN", "(UPDATE MIN)", "ALL")
    (line,) = esearch(lines)
    assert line.endswith(b" UID MIN 1")
    assert b"NOUPDATE" in lines[-2]
    assert b"Too many contexts (at most 10)" in lines[-2]
    a.logout()


def test_a_tag_in_use_by_an_update_context_is_refused(
    imap: tuple[PochtaEnv, ServeProcess],
) -> None:
    # RFC 5267 §4.3: reusing such a tag "SHALL result in ... BAD". No client reuses tags,
    # so this one is a socket.
    env, _ = imap
    with socket.create_connection(("127.0.0.1", env.ports["imap"]), timeout=10) as s:
        f = s.makefile("rwb")
        assert f.readline().startswith(b"* OK")
        f.write(f'l1 LOGIN "{ALICE}" "{PASSWORD}"\r\nl2 SELECT INBOX\r\n'.encode())
        f.write(b"s1 SEARCH RETURN (UPDATE) ALL\r\ns1 SORT RETURN (UPDATE) (DATE) UTF-8 ALL\r\n")
        f.write(b's2 CANCELUPDATE "s1"\r\ns1 SEARCH RETURN (UPDATE) ALL\r\nz LOGOUT\r\n')
        f.flush()
        answers = [line for line in f.read().split(b"\r\n") if line[:2] in (b"s1", b"s2")]
    assert answers[0].startswith(b"s1 OK")
    assert answers[1].startswith(b"s1 BAD Tag s1 names a search with UPDATE")
    assert answers[2].startswith(b"s2 OK")
    assert answers[3].startswith(b"s1 OK")


def test_idle_pushes_addto(imap: tuple[PochtaEnv, ServeProcess]) -> None:
    env, _ = imap
    a = IMAPClient("127.0.0.1", port=env.ports["imap"], ssl=False, timeout=10)
    a.login(ALICE, PASSWORD)
    b = client(env)
    append(b, 1, day=1)
    a.select_folder("INBOX")
    a._imap.xatom("UID SEARCH", "RETURN", "(UPDATE)", "FLAGGED")
    a.idle()
    b.select("INBOX")
    b.store("1", "+FLAGS", r"(\Flagged)")
    pushed: list[tuple[object, ...]] = []
    for _ in range(10):
        pushed += a.idle_check(timeout=2)
        if any(r[0] == b"ESEARCH" for r in pushed):
            break
    a.idle_done()
    # IMAPClient parses * ESEARCH (TAG "t") UID ADDTO (0 1) into a tuple.
    assert [r[2:] for r in pushed if r[0] == b"ESEARCH"] == [(b"UID", b"ADDTO", (0, 1))]
    a.logout()
    b.logout()
