"""IMAP dialogs, bytes in and bytes out (like the SMTP core's dialog tests): the real
``Session`` of access/imap.py over an in-memory transport (no sockets), a real MaildirStore
in a temporary directory, the real Authenticator (over a one-account directory with a
``{PLAIN}`` password, so no Argon2 work) and the real change hub.

And h11's invariant at the session level: the same dialog fed in any cut of its bytes gives
the same replies (STYLE.md §8)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pochta.access.change_hub import ChangeHub
from pochta.access.imap import IMAPService, Session
from pochta.directory.authenticator import Authenticator
from pochta.directory.model import Account, Domain
from pochta.store import FlagMode, MailStore, open_store
from tests.factories import make_settings
from tests.unit.test_runtime import FakeMail, FakeRuntime

ALICE = "alice@example.org"
PASSWORD = "right"
MESSAGE = b"From: bob@example.net\r\nSubject: hello\r\n\r\nhello alice\r\n"
PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())


class OneAccount:
    """The directory the Authenticator asks: alice, password "right" ({PLAIN} scheme)."""

    def get_account(self, address: str) -> Account | None:
        if address == ALICE:
            return Account(address=ALICE, password_hash="{PLAIN}" + PASSWORD)
        return None

    def get_domain(self, name: str) -> Domain | None:
        return Domain(name="example.org") if name == "example.org" else None


class NoQuota:
    """The mailbox agent's quota check (APPEND asks it): every message fits."""

    def quota_reply(self, address: str, size: int) -> None:
        return None


class MemoryReader:
    """The client's bytes: each ``read`` returns the next chunk given, b"" at the end."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self, n: int) -> bytes:
        chunk = await self.chunks.get()
        assert len(chunk) <= n
        return chunk


class MemoryWriter:
    """What the session writes, kept whole."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.written = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.data += data
        self.written.set()

    async def drain(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        pass


def make_runtime(root: Path, **overrides: Any) -> FakeRuntime:
    s = make_settings(
        {
            "server.hostname": "mail.example.org",
            "server.data_dir": str(root),
            "imap.allow_plaintext_on_loopback": True,
            **overrides,
        }
    )
    store = open_store(s)
    auth = Authenticator(
        OneAccount(),  # type: ignore[arg-type]
        s.auth,
        "+",
        sleep=None,
        upgrade=False,
    )
    mail = FakeMail(store, authenticator=auth, mailbox=NoQuota())  # type: ignore[arg-type]
    return FakeRuntime(s, mail)


class Client:
    def __init__(self, reader: MemoryReader, writer: MemoryWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen = 0

    def send(self, data: bytes) -> None:
        self.reader.chunks.put_nowait(data)

    async def until(self, last: bytes) -> bytes:
        """The bytes written since the last call, up to the line that starts with ``last``."""
        pattern = re.compile(rb"(?:^|(?<=\n))" + re.escape(last) + rb"[^\r\n]*\r\n")
        while True:
            m = pattern.search(self.writer.data, self.seen)
            if m is not None:
                out = bytes(self.writer.data[self.seen : m.end()])
                self.seen = m.end()
                return out
            self.writer.written.clear()
            try:
                await asyncio.wait_for(self.writer.written.wait(), 10)
            except TimeoutError:
                got = bytes(self.writer.data[self.seen :])
                raise AssertionError(f"no {last!r} in {got!r}") from None

    async def lines(self, last: bytes) -> list[bytes]:
        return (await self.until(last)).split(b"\r\n")[:-1]


@asynccontextmanager
async def session(
    runtime: FakeRuntime, factory: Callable[..., Session] = Session
) -> AsyncIterator[Client]:
    reader, writer = MemoryReader(), MemoryWriter()
    service = IMAPService(runtime, "imap", implicit_tls=False)  # type: ignore[arg-type]
    s = factory(service, reader, writer, "127.0.0.1")
    task = asyncio.create_task(s.run())
    client = Client(reader, writer)
    try:
        await client.until(b"* OK")
        yield client
        client.send(b"")  # EOF: the session ends by itself
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()


async def login(c: Client) -> None:
    c.send(f"L LOGIN {ALICE} {PASSWORD}\r\n".encode())
    assert (await c.lines(b"L "))[-1] == b"L OK LOGIN completed"


def count_thread_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions sent to a thread (``asyncio.to_thread``) from now on."""
    trips: list[str] = []
    real = asyncio.to_thread

    async def counted(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(func, "__name__", ""))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    return trips


def store_of(runtime: FakeRuntime) -> MailStore:
    return runtime.mail.store


# -- dialogs ---------------------------------------------------------------------------------


async def test_login_select_fetch_store_search(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    store_of(runtime).deliver(ALICE, MESSAGE)
    async with session(runtime) as c:
        c.send(f"a LOGIN {ALICE} {PASSWORD}\r\n".encode())
        capability, done = await c.lines(b"a ")
        assert capability.startswith(b"* CAPABILITY IMAP4rev1 IMAP4rev2 ")
        assert not [
            c for c in capability.split() if c.startswith(b"AUTH=")
        ]  # RFC 9051 §6.2.3: the list after login
        assert done == b"a OK LOGIN completed"
        c.send(b"b SELECT INBOX\r\n")
        lines = await c.lines(b"b ")
        assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
        assert b"* 1 EXISTS" in lines
        assert b"* 1 RECENT" in lines
        assert lines[-1] == b"b OK [READ-WRITE] SELECT completed"
        c.send(b"c FETCH 1 (FLAGS BODY[])\r\n")
        assert await c.until(b"c ") == (
            b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[] {%d}\r\n" % len(MESSAGE)
            + MESSAGE
            + b")\r\nc OK FETCH completed\r\n"
        )
        c.send(b"d STORE 1 +FLAGS (\\Flagged)\r\n")
        assert await c.lines(b"d ") == [
            b"* 1 FETCH (FLAGS (\\Flagged \\Seen \\Recent))",
            b"d OK STORE completed",
        ]
        c.send(b"e UID SEARCH FLAGGED SUBJECT hello\r\n")
        assert await c.lines(b"e ") == [b"* SEARCH 1", b"e OK SEARCH completed"]
        c.send(b"f SEARCH UNFLAGGED\r\n")
        assert await c.lines(b"f ") == [b"* SEARCH", b"f OK SEARCH completed"]
        c.send(b"g LOGOUT\r\n")
        assert await c.lines(b"g ") == [b"* BYE pochta logging out", b"g OK LOGOUT completed"]


async def test_authenticate_plain_with_a_continuation(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    async with session(runtime) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert await c.until(b"+") == b"+ \r\n"  # RFC 9051 §6.2.2: an empty challenge
        c.send(PLAIN + b"\r\n")
        lines = await c.lines(b"a ")
        assert lines[0].startswith(b"* CAPABILITY ")
        assert lines[-1] == b"a OK AUTHENTICATE completed"
        c.send(b"b SELECT INBOX\r\n")
        assert (await c.lines(b"b "))[-1] == b"b OK [READ-WRITE] SELECT completed"


async def test_authenticate_cancel_bad_base64_and_wrong_password(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    async with session(runtime) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        await c.until(b"+")
        c.send(b"*\r\n")  # RFC 9051 §6.2.2: the client cancels: BAD
        assert await c.lines(b"a ") == [b"a BAD Authentication cancelled"]
        c.send(b"b AUTHENTICATE PLAIN\r\n")
        await c.until(b"+")
        c.send(b"not base64!\r\n")
        assert await c.lines(b"b ") == [b"b BAD Invalid base64"]
        wrong = base64.b64encode(f"\0{ALICE}\0wrong".encode())
        c.send(b"c AUTHENTICATE PLAIN " + wrong + b"\r\n")  # RFC 4959: initial response
        assert await c.lines(b"c ") == [b"c NO [AUTHENTICATIONFAILED] Authentication failed"]
        # The state is back to commands: a line that looks like base64 is a command again.
        c.send(PLAIN + b"\r\n")
        assert await c.lines(PLAIN) == [PLAIN + b" BAD Missing command"]
        c.send(b"d AUTHENTICATE PLAIN " + PLAIN + b"\r\n")
        assert (await c.lines(b"d "))[-1] == b"d OK AUTHENTICATE completed"


async def test_idle_done_with_a_delivery_in_between(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    runtime.mail.changes = ChangeHub(store, asyncio.get_running_loop())
    store.deliver(ALICE, MESSAGE)
    async with session(runtime) as c:
        await login(c)
        c.send(b"a SELECT INBOX\r\n")
        await c.until(b"a ")
        c.send(b"b IDLE\r\n")
        assert await c.until(b"+") == b"+ idling\r\n"
        await asyncio.to_thread(store.deliver, ALICE, MESSAGE)
        # RFC 2177 §3: the update goes out while idling, before DONE.
        assert await c.lines(b"* 2 RECENT") == [b"* 2 EXISTS", b"* 2 RECENT"]
        c.send(b"DONE\r\n")
        assert await c.lines(b"b ") == [b"b OK IDLE terminated"]
        c.send(b"c IDLE\r\n")
        await c.until(b"+")
        c.send(b"NOT DONE\r\n")
        assert await c.lines(b"c ") == [b"c BAD Expected DONE"]
        c.send(b"d NOOP\r\n")
        assert await c.lines(b"d ") == [b"d OK NOOP completed"]


async def test_idle_and_done_pipelined(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    async with session(runtime) as c:
        await login(c)
        c.send(b"a IDLE\r\ndone\r\nb NOOP\r\n")
        assert await c.until(b"b ") == (
            b"+ idling\r\na OK IDLE terminated\r\nb OK NOOP completed\r\n"
        )


async def test_literals_synchronizing_and_literal_plus(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path)
    async with session(runtime) as c:
        user = ALICE.encode()
        c.send(b"a LOGIN {%d}\r\n" % len(user))
        assert await c.until(b"+") == b"+ Ready for literal data\r\n"
        c.send(user + b" {%d+}\r\n" % len(PASSWORD) + PASSWORD.encode() + b"\r\n")
        assert (await c.lines(b"a "))[-1] == b"a OK LOGIN completed"
        c.send(b"b APPEND INBOX (\\Seen) {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n")
        (done,) = await c.lines(b"b ")
        assert re.fullmatch(rb"b OK \[APPENDUID \d+ 1\] APPEND completed", done)
        c.send(b"c APPEND INBOX {%d}\r\n" % len(MESSAGE))
        assert await c.until(b"+") == b"+ Ready for literal data\r\n"
        c.send(MESSAGE + b"\r\n")
        (done,) = await c.lines(b"c ")
        assert re.fullmatch(rb"c OK \[APPENDUID \d+ 2\] APPEND completed", done)
        c.send(b"d STATUS INBOX (MESSAGES UNSEEN)\r\n")
        assert await c.lines(b"d ") == [
            b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1)',
            b"d OK STATUS completed",
        ]


async def test_errors_bad_and_no_codes(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, **{"imap.max_literal_bytes": 100})
    async with session(runtime) as c:
        c.send(b"a SELECT INBOX\r\n")
        assert await c.lines(b"a ") == [b"a BAD Log in first"]
        c.send(b"b LOGIN alice@example.org wrong\r\n")
        assert await c.lines(b"b ") == [b"b NO [AUTHENTICATIONFAILED] Authentication failed"]
        await login(c)
        c.send(b"c FROB\r\n")
        assert await c.lines(b"c ") == [b"c BAD FROB is not supported"]
        c.send(b"d FETCH 1 FLAGS\r\n")
        assert await c.lines(b"d ") == [b"d BAD Select a mailbox first"]
        c.send(b"e SELECT Nowhere\r\n")
        assert await c.lines(b"e ") == [b"e NO [NONEXISTENT] No mailbox Nowhere"]
        c.send(b"f AUTHENTICATE PLAIN\r\n")
        assert await c.lines(b"f ") == [b"f BAD Already logged in"]
        c.send(b"g LOGIN\r\n")
        assert await c.lines(b"g ") == [b"g BAD Already logged in"]
        c.send(b"h APPEND INBOX {101}\r\n")  # RFC 7889: no "+", NO [TOOBIG] instead
        assert await c.lines(b"h ") == [b"h NO [TOOBIG] Literal too large"]
        c.send(b"i SELECT INBOX\r\n")
        await c.until(b"i ")
        c.send(b"j FETCH 0 FLAGS\r\n")
        assert await c.lines(b"j ") == [b"j BAD Sequence numbers start at 1"]
        c.send(b"k STORE 1 FLAGS.BOGUS (\\Seen)\r\n")
        assert await c.lines(b"k ") == [b"k BAD Unknown STORE operation FLAGS.BOGUS"]
        c.send(b"l CREATE INBOX\r\n")
        assert await c.lines(b"l ") == [b"l NO [ALREADYEXISTS] INBOX exists already"]
        c.send(b"m (bad\r\n")
        (bad,) = await c.lines(b"m ")
        assert bad.startswith(b"m BAD ")


async def test_a_wake_source_pushes_between_commands(tmp_path: Path) -> None:
    """The seam NOTIFY (RFC 5465) uses: a mixin adds a wake source to ``pending_pushes``,
    and the loop, waiting for the client between commands, sends its ``push_updates``."""
    runtime = make_runtime(tmp_path)
    ring = asyncio.Event()

    class Notifying(Session):
        def pending_pushes(self) -> list[asyncio.Event]:
            return [*super().pending_pushes(), ring]

        async def push_updates(self) -> None:
            await super().push_updates()
            ring.clear()
            self.send(b"* OK [NOTIFY] something changed\r\n")

    async with session(runtime, Notifying) as c:
        await login(c)
        ring.set()
        assert await c.lines(b"* OK [NOTIFY]") == [b"* OK [NOTIFY] something changed"]
        c.send(b"a NO")  # a command cut by the push: the read goes on where it was
        await asyncio.sleep(0)
        ring.set()
        assert await c.lines(b"* OK [NOTIFY]") == [b"* OK [NOTIFY] something changed"]
        c.send(b"OP\r\n")
        assert await c.lines(b"a ") == [b"a OK NOOP completed"]


async def test_recent_is_claimed_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 3501 §2.3.2: a new message is \\Recent in the first session that sees it. That
    session writes the claim, and the others read that it is taken, all on the event loop:
    the claim is written at once without an fsync (lost in a crash, the message is \\Recent
    once more, which §2.3.2 allows)."""
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    store.deliver(ALICE, MESSAGE)
    async with session(runtime) as first, session(runtime) as second:
        for c in (first, second):
            await login(c)
            c.send(b"s SELECT INBOX\r\n")
            await c.until(b"s ")
        await asyncio.to_thread(store.deliver, ALICE, MESSAGE)
        claims: list[bool] = []
        real = asyncio.to_thread

        async def counted(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            if getattr(func, "__name__", "") == "claim_recent":
                claims.append(kwargs["claim"])
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(asyncio, "to_thread", counted)
        first.send(b"n NOOP\r\n")
        assert await first.lines(b"n ") == [b"* 2 EXISTS", b"* 2 RECENT", b"n OK NOOP completed"]
        second.send(b"n NOOP\r\n")
        assert await second.lines(b"n ") == [
            b"* 2 EXISTS",
            b"* 0 RECENT",
            b"n OK NOOP completed",
        ]
        assert claims == []  # no thread for either
    async with session(runtime) as third:  # the claim was committed: nothing is \Recent
        await login(third)
        third.send(b"s SELECT INBOX\r\n")
        assert b"* 0 RECENT" in await third.lines(b"s ")


async def test_store_and_expunge_answer_from_the_loop_after_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STORE, EXPUNGE and CLOSE take no thread trip (to_thread): a change is written on the
    event loop and made durable by the shared sync (quick_sync.py) before its answer; one
    that changes nothing (nothing \\Deleted, flags already set) needs no sync at all."""
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    for _ in range(2):
        store.deliver(ALICE, MESSAGE)
    syncs: list[str] = []
    sync = store.sync_quick_writes

    def counted_sync(address: str) -> None:
        syncs.append(address)
        sync(address)

    monkeypatch.setattr(store, "sync_quick_writes", counted_sync)
    async with session(runtime) as c:
        await login(c)
        c.send(b"s SELECT INBOX\r\n")
        await c.until(b"s ")
        trips = count_thread_trips(monkeypatch)
        c.send(b"e EXPUNGE\r\n")
        assert await c.lines(b"e ") == [b"e OK EXPUNGE completed"]
        assert syncs == []
        c.send(b"d STORE 2 +FLAGS.SILENT (\\Deleted)\r\ne2 EXPUNGE\r\n")
        assert await c.lines(b"e2 ") == [
            b"d OK STORE completed",
            b"* 2 EXPUNGE",
            b"e2 OK EXPUNGE completed",
        ]
        assert syncs == [ALICE, ALICE]
        c.send(b"f STORE 1 +FLAGS (\\Flagged)\r\n")
        assert await c.lines(b"f ") == [
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
            b"f OK STORE completed",
        ]
        c.send(b"g STORE 1 +FLAGS (\\Flagged)\r\nh STORE 1 -FLAGS (\\Seen)\r\n")
        assert await c.lines(b"h ") == [b"g OK STORE completed", b"h OK STORE completed"]
        assert len(syncs) == 3  # the changes: \\Deleted, the expunge, \\Flagged
        c.send(b"c CLOSE\r\n")
        assert await c.lines(b"c ") == [b"c OK CLOSE completed"]
        assert len(syncs) == 3
        assert trips == []
    assert not store.quick_writes_pending(ALICE)


async def test_a_change_is_answered_only_once_it_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer to a STORE waits for the sync of the index journal, and a change made
    while a sync is under way gets a sync of its own."""
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    store.deliver(ALICE, MESSAGE)
    release = threading.Event()
    syncs: list[str] = []
    sync = store.sync_quick_writes
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def held_sync(address: str) -> None:
        syncs.append(address)
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        sync(address)

    monkeypatch.setattr(store, "sync_quick_writes", held_sync)
    async with session(runtime) as a, session(runtime) as b:
        for c in (a, b):
            await login(c)
            c.send(b"s SELECT INBOX\r\n")
            await c.until(b"s ")
        a.send(b"f STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
        await asyncio.wait_for(started.wait(), 10)
        b.send(b"g STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert b"f OK" not in a.writer.data
        assert b"g OK" not in b.writer.data
        assert store.quick_writes_pending(ALICE)
        release.set()
        assert await a.lines(b"f ") == [b"f OK STORE completed"]
        assert await b.lines(b"g ") == [b"g OK STORE completed"]
        # a's sync was under way when b asked: b's change needs (and got) one more.
        assert syncs == [ALICE, ALICE]
        assert not store.quick_writes_pending(ALICE)


async def test_own_changes_wake_only_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session reports its own STORE and EXPUNGE in its answer, so they do not send it
    back to the index (no folder_changes read). Another session on the same folder is woken
    and shows the change at its next command."""
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    runtime.mail.changes = ChangeHub(store, asyncio.get_running_loop())
    for _ in range(2):
        store.deliver(ALICE, MESSAGE)
    calls: list[tuple[str, bool]] = []
    for name in ("folder_changes", "store_flags", "expunge"):
        real = getattr(store, name)

        def counted(*args: Any, __real: Any = real, __name: str = name, **kwargs: Any) -> Any:
            calls.append((__name, bool(kwargs.get("quick"))))
            return __real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    async with session(runtime) as a, session(runtime) as b:
        for c in (a, b):
            await login(c)
            c.send(b"s SELECT INBOX\r\n")
            await c.until(b"s ")
        calls.clear()
        a.send(b"f STORE 1 +FLAGS (\\Flagged)\r\n")
        assert await a.lines(b"f ") == [
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
            b"f OK STORE completed",
        ]
        await asyncio.sleep(0.05)  # the store's wake-up reaches the loop
        a.send(b"g FETCH 2 FLAGS\r\n")
        assert await a.lines(b"g ") == [
            b"* 2 FETCH (FLAGS (\\Recent))",  # the first session to see them: \\Recent
            b"g OK FETCH completed",
        ]
        assert calls == [("store_flags", True)]
        b.send(b"h FETCH 2 FLAGS\r\n")
        assert await b.lines(b"h ") == [
            b"* 2 FETCH (FLAGS ())",
            b"* 1 FETCH (UID 1 FLAGS (\\Flagged))",  # A's change, after the answer
            b"h OK FETCH completed",
        ]
        assert ("folder_changes", True) in calls
        calls.clear()
        a.send(b"d STORE 2 +FLAGS.SILENT (\\Deleted)\r\ne EXPUNGE\r\n")
        assert await a.lines(b"e ") == [
            b"d OK STORE completed",
            b"* 2 EXPUNGE",
            b"e OK EXPUNGE completed",
        ]
        await asyncio.sleep(0.05)
        a.send(b"n FETCH 1 FLAGS\r\n")
        assert await a.lines(b"n ") == [
            b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
            b"n OK FETCH completed",
        ]
        assert calls == [("store_flags", True), ("expunge", True)]
        b.send(b"x NOOP\r\n")
        assert await b.lines(b"x ") == [b"* 2 EXPUNGE", b"x OK NOOP completed"]


async def test_a_client_behind_the_kept_expunges_gets_every_gone_uid_it_knows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7162 §3.2.5.2: SELECT with QRESYNC from a MODSEQ older than the expunges the
    folder still keeps (store/index.py EXPUNGED_HISTORY) gives VANISHED (EARLIER) of the
    UIDs the client knows that are gone, computed from what is there; from a recent MODSEQ,
    only what was expunged after it."""
    from pochta.store import index as index_module

    monkeypatch.setattr(index_module, "EXPUNGED_HISTORY", 4)
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    uids = [store.deliver(ALICE, MESSAGE).uid for _ in range(12)]
    start = store.folder_changes(ALICE, "INBOX", 0)
    for uid in uids[:8]:
        store.store_flags(ALICE, "INBOX", [uid], FlagMode.ADD, frozenset({"\\Deleted"}))
        recent = store.folder_changes(ALICE, "INBOX", 0).highestmodseq
        store.expunge(ALICE, "INBOX", [uid])
    assert not store.folder_changes(ALICE, "INBOX", start.highestmodseq).complete
    async with session(runtime) as c:
        await login(c)
        c.send(b"e ENABLE QRESYNC\r\n")
        await c.lines(b"e ")
        since = f"{start.uidvalidity} {start.highestmodseq} {uids[0]}:{uids[-1]}"
        c.send(f"s SELECT INBOX (QRESYNC ({since}))\r\n".encode())
        lines = await c.lines(b"s ")
        assert f"* VANISHED (EARLIER) {uids[0]}:{uids[7]}".encode() in lines
        assert lines[-1].startswith(b"s OK")
        c.send(b"u UNSELECT\r\n")
        await c.lines(b"u ")
        c.send(f"t SELECT INBOX (QRESYNC ({start.uidvalidity} {recent}))\r\n".encode())
        lines = await c.lines(b"t ")
        assert [x for x in lines if x.startswith(b"* VANISHED")] == [
            f"* VANISHED (EARLIER) {uids[7]}".encode()
        ]


async def test_status_counts_in_one_read_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STATUS (RFC 9051 §6.3.11) answers from one index read on the event loop, RECENT and
    DELETED included, and marks nothing \\Recent: the next SELECT still gets them."""
    runtime = make_runtime(tmp_path)
    store = store_of(runtime)
    for _ in range(3):
        store.deliver(ALICE, MESSAGE)
    async with session(runtime) as a, session(runtime) as b:
        await login(a)
        a.send(b"s SELECT INBOX\r\nd STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        await a.until(b"d ")
        store.deliver(ALICE, MESSAGE)  # UID 4: nobody has seen it
        await login(b)
        trips = count_thread_trips(monkeypatch)
        query = b"STATUS INBOX (MESSAGES UNSEEN RECENT DELETED UIDNEXT SIZE)\r\n"
        b.send(b"t " + query + b"u " + query)
        size = 4 * len(MESSAGE.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        line = (
            b'* STATUS "INBOX" (MESSAGES 4 UNSEEN 4 RECENT 1 DELETED 1 UIDNEXT 5 SIZE '
            + str(size).encode()
            + b")"
        )
        assert await b.lines(b"u ") == [
            line,
            b"t OK STATUS completed",
            line,
            b"u OK STATUS completed",
        ]
        assert trips == []
        b.send(b"n STATUS Nowhere (MESSAGES)\r\n")
        assert await b.lines(b"n ") == [b"n NO [NONEXISTENT] No mailbox Nowhere"]
        b.send(b"x SELECT INBOX\r\n")
        assert b"* 1 RECENT" in await b.lines(b"x ")


async def test_a_folder_listing_opens_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a client fetches to list a folder (ENVELOPE, BODYSTRUCTURE, header fields) is
    kept in the structure cache at the first FETCH: the next one reads no message file."""
    from pochta.store import maildir

    runtime = make_runtime(tmp_path)
    for n in range(3):
        store_of(runtime).deliver(ALICE, MESSAGE + b"%d\r\n" % n)
    reads: list[str] = []
    real = maildir.read_file

    def counted(path: str) -> bytes:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(maildir, "read_file", counted)
    listing = b"f UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] ENVELOPE)\r\n"
    async with session(runtime) as c:
        await login(c)
        c.send(b"s SELECT INBOX\r\n")
        await c.until(b"s ")
        c.send(listing)
        first = await c.until(b"f ")
        assert first.count(b"BODY[HEADER.FIELDS (FROM SUBJECT)] {41}\r\n") == 3
        assert len(reads) == 3
        c.send(listing)
        assert await c.until(b"f ") == first
        assert len(reads) == 3  # none more
        c.send(b"t FETCH 2 (BODY.PEEK[TEXT])\r\n")
        assert await c.lines(b"t ") == [
            b"* 2 FETCH (BODY[TEXT] {16}",
            b"hello alice",
            b"1",
            b")",
            b"t OK FETCH completed",
        ]
        assert len(reads) == 4  # the body is read from the file


# -- any cut of the input gives the same replies ----------------------------------------------

USER = ALICE.encode()
DIALOG = b"".join(
    [
        b"a0 CAPABILITY\r\n",
        b"a1 AUTHENTICATE PLAIN\r\n",
        b"*\r\n",
        b"a2 AUTHENTICATE PLAIN\r\n",
        PLAIN + b"\r\n",
        b"a3 SELECT INBOX\r\n",
        b"a4 FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
        b"a5 STORE 1 +FLAGS (\\Flagged)\r\n",
        b"a6 SEARCH FLAGGED\r\n",
        b"a7 APPEND INBOX {%d}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n",
        b"a8 APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n",
        b"a9 IDLE\r\n",
        b"DONE\r\n",
        b"b0 IDLE\r\n",
        b"NOPE\r\n",
        b"b1 FETCH 9 FLAGS\r\n",
        b"b2 FROB\r\n",
        b"b3 UID SEARCH ALL\r\n",
        b"b4 LOGOUT\r\n",
    ]
)


def _normalised(out: bytes) -> bytes:
    # UIDVALIDITY is the time of the folder's creation (a fresh store per run); "+" before a
    # synchronizing literal is sent only when its data has not arrived yet (RFC 9051 §7.5):
    # both depend on the run, not on the replies.
    out = re.sub(rb"(UIDVALIDITY|APPENDUID) \d+", rb"\1 N", out)
    return out.replace(b"+ Ready for literal data\r\n", b"")


async def _replies(chunks: list[bytes]) -> bytes:
    with tempfile.TemporaryDirectory() as root:
        runtime = make_runtime(Path(root))
        store_of(runtime).deliver(ALICE, MESSAGE)
        reader, writer = MemoryReader(), MemoryWriter()
        service = IMAPService(runtime, "imap", implicit_tls=False)  # type: ignore[arg-type]
        for chunk in [*chunks, b""]:
            reader.chunks.put_nowait(chunk)
        await asyncio.wait_for(Session(service, reader, writer, "127.0.0.1").run(), 30)
        store_of(runtime).close()
        return _normalised(bytes(writer.data))


_WHOLE: list[bytes] = []


def _whole() -> bytes:
    if not _WHOLE:
        _WHOLE.append(asyncio.run(_replies([DIALOG])))
    return _WHOLE[0]


def test_the_whole_dialog() -> None:
    out = _whole()
    assert b"a1 BAD Authentication cancelled\r\n" in out
    assert b"a2 OK AUTHENTICATE completed\r\n" in out
    assert b"* 1 FETCH (FLAGS (\\Recent) BODY[HEADER.FIELDS (SUBJECT)] {18}\r\n" in out
    assert b"* SEARCH 1\r\na6 OK SEARCH completed\r\n" in out
    assert b"a8 OK [APPENDUID N 3] APPEND completed\r\n" in out
    assert b"+ idling\r\n" in out
    assert b"a9 OK IDLE terminated\r\n" in out
    assert b"b0 BAD Expected DONE\r\n" in out
    assert b"b1 BAD Invalid message sequence number\r\n" in out
    assert b"b2 BAD FROB is not supported\r\n" in out
    assert b"* SEARCH 1 2 3\r\nb3 OK SEARCH completed\r\n" in out
    assert out.endswith(b"* BYE pochta logging out\r\nb4 OK LOGOUT completed\r\n")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.integers(min_value=1, max_value=len(DIALOG) - 1), max_size=12))
@example(list(range(1, len(DIALOG))))  # byte by byte
@example([DIALOG.index(b"DONE") + 2])  # IDLE's DONE at the end of a read
@example([DIALOG.index(PLAIN) + 3])  # the AUTHENTICATE answer cut in two
def test_any_cut_of_the_dialog_gives_the_same_replies(cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(DIALOG)]
    chunks = [DIALOG[a:b] for a, b in itertools.pairwise(points)]
    assert asyncio.run(_replies(chunks)) == _whole()


class AckRecorder:
    """The TCP socket of the connection, as far as the session touches it: its
    setsockopt calls (quick_ack.py asks for TCP_QUICKACK)."""

    def __init__(self) -> None:
        self.quick_acks = 0

    def setsockopt(self, level: int, option: int, value: int) -> None:
        import socket

        assert (level, option, value) == (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.quick_acks += 1


async def _settle(reader: MemoryReader) -> None:
    """Let the session take what was sent and reach its next read."""
    for _ in range(50):
        await asyncio.sleep(0)
        if reader.chunks.empty():
            break
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_partly_received_command_is_acknowledged_at_once(tmp_path: Path) -> None:
    """While the rest of a command is to come (the literal of an APPEND, the CRLF after
    it), the session asks the kernel to ACK at once (TCP_QUICKACK), so a client that wrote
    it in two writes is not held by Nagle for the 40 ms of a delayed ACK; between whole
    commands it does not."""
    runtime = make_runtime(tmp_path)
    ack = AckRecorder()

    class SocketWriter(MemoryWriter):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ack if name == "socket" else super().get_extra_info(name, default)

    reader, writer = MemoryReader(), SocketWriter()
    service = IMAPService(runtime, "imap", implicit_tls=False)  # type: ignore[arg-type]
    task = asyncio.create_task(Session(service, reader, writer, "127.0.0.1").run())  # type: ignore[arg-type]
    c = Client(reader, writer)
    try:
        await c.until(b"* OK")
        await login(c)
        c.send(b"n NOOP\r\n")
        await c.until(b"n OK")
        await _settle(reader)
        assert ack.quick_acks == 0
        c.send(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE))
        await c.until(b"+ ")
        await _settle(reader)
        assert ack.quick_acks == 1  # waiting for the literal
        c.send(MESSAGE)
        await _settle(reader)
        assert ack.quick_acks == 2  # the literal is in, its CRLF is not
        c.send(b"\r\n")
        assert (await c.lines(b"a "))[-1].startswith(b"a OK [APPENDUID ")
        await _settle(reader)
        assert ack.quick_acks == 2
        c.send(b"")
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
