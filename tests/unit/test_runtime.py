"""The sessions' runtime seam (pochta.runtime): an SMTP and a POP3 session built against a
small fake runtime, with no Server, no MailSystem and no listener, hold a short dialogue
over a socket pair. What the session asks of its runtime is recorded and checked."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.config.settings import Settings
from pochta.directory.authenticator import AuthResult
from pochta.directory.model import Account
from pochta.protocols.smtp.replies import Reply
from pochta.queue.envelope import Envelope, Recipient
from pochta.receive.policy import Policy
from pochta.resolve.classes import Resolution
from pochta.runtime import ChangeBus, Refusal
from pochta.store import MailStore, open_store
from tests.factories import make_settings

ALICE = "alice@example.org"


class FakeDoor:
    def __init__(self) -> None:
        self.cleaned: list[CleanupInput] = []
        self.submitted: list[tuple[Envelope, bytes]] = []

    def new_queue_id(self) -> str:
        return "4FAKEQUEUE01"

    async def clean(self, content: bytes, info: CleanupInput) -> CleanupResult:
        self.cleaned.append(info)
        return CleanupResult(b"X-Cleaned: yes\r\n" + content, info.sender, info.recipients)

    def canonical_recipient(self, address: str) -> str:
        return address  # no canonical maps

    def expand(self, recipients: list[Recipient]) -> tuple[list[Recipient], list[tuple[str, str]]]:
        return recipients, []

    async def submit(self, envelope: Envelope, content: bytes) -> str:
        self.submitted.append((envelope, content))
        return envelope.queue_id


@dataclass
class FakeFreeSpace:
    path: Path = Path("/spool")
    free: int = 1 << 40

    def free_bytes(self) -> int:
        return self.free

    def shortfall(self, needed_bytes: int) -> int:
        return max(0, needed_bytes - self.free)


@dataclass
class FakeSpool:
    free_space: FakeFreeSpace = field(default_factory=FakeFreeSpace)


class FakeResolver:
    def check_recipient(
        self,
        address: str,
        *,
        authenticated: bool,
        client_is_local: bool = False,
        quota_check: Callable[[str], Reply | None] | None = None,
    ) -> Reply | None:
        if address.endswith("@example.org"):
            return None
        return Reply(554, "5.7.1", f"<{address}>: Relay access denied")

    def resolve(self, address: str) -> Resolution:
        raise AssertionError("not asked by an MX session")

    def is_ours(self, domain: str) -> bool:
        return domain == "example.org"

    def sender_allowed(self, account: str, sender: str) -> bool:
        raise AssertionError("not asked by an MX session")


class FakeLogin:
    async def check_password(
        self, ip: str, username: str, password: str, *, mechanism: str = "PLAIN"
    ) -> AuthResult:
        if username == ALICE and password == "right":
            return AuthResult(True, Account(address=ALICE, password_hash=""), "ok")
        return AuthResult(False, None, "bad password")

    async def resolve_step(self, ip: str, mech: object, step: object) -> object:
        raise AssertionError("no SASL in these dialogues")

    async def settle(self, ip: str, exchange: object, action: object) -> object:
        raise AssertionError("no SASL in these dialogues")


@dataclass
class FakeMail:
    store: MailStore
    door: FakeDoor = field(default_factory=FakeDoor)
    spool: FakeSpool = field(default_factory=FakeSpool)
    resolver: FakeResolver = field(default_factory=FakeResolver)
    authenticator: FakeLogin = field(default_factory=FakeLogin)
    mailbox: object = None
    changes: ChangeBus | None = None
    policies: list[Policy] = field(default_factory=list)
    spam_trainer: object = None


class FakeRuntime:
    """Just what pochta.runtime.SessionRuntime names; counts the accounting calls."""

    def __init__(self, settings: Settings, mail: FakeMail) -> None:
        self.settings = settings
        self.mail = mail
        self.directory = None
        self.metrics = None
        self.stopping = asyncio.Event()
        self.quits = 0
        self.refusals: list[tuple[str, str]] = []

    def refusal(self, listener: str, ip: str, *, accepted: bool = True) -> Refusal | None:
        self.refusals.append((listener, ip))
        return None

    def connection_quit(self) -> None:
        self.quits += 1

    def sessions(self, key: str) -> int:
        return 0

    def session_opened(self, key: str) -> None:
        pass

    def session_closed(self, key: str) -> None:
        pass

    async def sessions_closed(self, *keys: str) -> None:
        pass


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    settings = make_settings(
        {
            "server.hostname": "mail.example.org",
            "server.data_dir": str(tmp_path),
            "smtp.peername_lookup": False,  # no name lookups: a fake runtime, no resolver
        }
    )
    store = open_store(settings)
    return FakeRuntime(settings, FakeMail(store))


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> str:
        return (await asyncio.wait_for(self.reader.readline(), 10)).decode().rstrip("\r\n")

    async def smtp_reply(self) -> str:
        """The last line of a (multi-line) SMTP reply."""
        while True:
            line = await self.line()
            if line[3:4] != "-":
                return line

    async def send(self, text: str) -> None:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()


@contextlib.asynccontextmanager
async def connect(service: object) -> AsyncIterator[Client]:
    """A client on one end of a socket pair, ``service.handle`` on the other."""
    ours, theirs = socket.socketpair()
    s_reader, s_writer = await asyncio.open_unix_connection(sock=theirs)
    c_reader, c_writer = await asyncio.open_unix_connection(sock=ours)

    async def serve() -> None:
        try:
            await service.handle(s_reader, s_writer)  # type: ignore[attr-defined]
        finally:
            s_writer.close()

    task = asyncio.create_task(serve())
    try:
        yield Client(c_reader, c_writer)
        await asyncio.wait_for(task, 10)  # the session ends by itself after QUIT
    finally:
        task.cancel()
        c_writer.close()


async def test_smtp_session_on_a_fake_runtime(runtime: FakeRuntime) -> None:
    from pochta.receive.smtp_service import smtp

    service = smtp(runtime, "smtp")  # type: ignore[arg-type]
    door = runtime.mail.door
    async with connect(service) as client:
        assert (await client.smtp_reply()).startswith("220 mail.example.org ESMTP")
        await client.send("EHLO client.example.net")
        assert (await client.smtp_reply()).startswith("250 ")
        await client.send("MAIL FROM:<bob@example.net>")
        assert (await client.smtp_reply()).startswith("250 ")
        await client.send("RCPT TO:<someone@elsewhere.example>")
        assert (await client.smtp_reply()).startswith("554 5.7.1")
        await client.send(f"RCPT TO:<{ALICE}>")
        assert (await client.smtp_reply()).startswith("250 ")
        await client.send("DATA")
        assert (await client.smtp_reply()).startswith("354 ")
        await client.send("Subject: hi\r\n\r\nhello\r\n.")
        assert await client.smtp_reply() == "250 2.0.0 Ok: queued as 4FAKEQUEUE01"
        await client.send("QUIT")
        assert (await client.smtp_reply()).startswith("221 ")
    assert runtime.refusals == [("smtp", "127.0.0.1")]
    assert runtime.quits == 1
    (info,) = door.cleaned
    assert (info.sender, info.recipients, info.queue_id) == (
        "bob@example.net",
        [ALICE],
        "4FAKEQUEUE01",
    )
    ((envelope, content),) = door.submitted
    assert [r.address for r in envelope.recipients] == [ALICE]
    assert content == b"X-Cleaned: yes\r\nSubject: hi\r\n\r\nhello\r\n"


async def test_smtp_mail_from_asks_the_runtime_for_spool_space(runtime: FakeRuntime) -> None:
    """queue.min_free_bytes at MAIL FROM reads the runtime's spool space (Postfix
    queue_minfree): below it, 452 4.3.1 and nothing reaches the door."""
    from pochta.receive.smtp_service import smtp

    runtime.mail.spool.free_space.free = 1000
    async with connect(smtp(runtime, "smtp")) as client:  # type: ignore[arg-type]
        await client.smtp_reply()
        await client.send("EHLO client.example.net")
        await client.smtp_reply()
        await client.send("MAIL FROM:<bob@example.net>")
        assert (await client.smtp_reply()).startswith("452 4.3.1")
        await client.send("QUIT")
        await client.smtp_reply()
    assert runtime.mail.door.cleaned == []


async def test_pop3_session_on_a_fake_runtime(runtime: FakeRuntime) -> None:
    from pochta.access.pop3 import pop3

    message = b"Subject: one\r\n\r\nbody\r\n"
    runtime.mail.store.deliver(ALICE, message)
    async with connect(pop3(runtime, "pop3")) as client:  # type: ignore[arg-type]
        assert (await client.line()).startswith("+OK")
        await client.send(f"USER {ALICE}")
        assert (await client.line()).startswith("+OK")
        await client.send("PASS wrong")
        assert (await client.line()).startswith("-ERR [AUTH]")
        await client.send(f"USER {ALICE}")
        await client.line()
        await client.send("PASS right")
        assert (await client.line()).startswith("+OK")
        await client.send("STAT")
        assert await client.line() == f"+OK 1 {len(message)}"
        await client.send("QUIT")
        assert (await client.line()).startswith("+OK")
    assert runtime.quits == 1
    assert runtime.refusals == [("pop3", "127.0.0.1")]


async def test_smtp_acks_message_content_at_once(
    runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While more of a message is to come, the session asks for an immediate TCP ACK
    (quick_ack.py): a client that writes the content and the final "." in two writes is
    not held 40 ms by Nagle and the delayed ACK. Between whole command lines it does not."""
    from pochta.receive import smtp_service

    acks: list[object] = []
    monkeypatch.setattr(smtp_service, "ack_now", lambda sock: acks.append(sock) or True)
    async with connect(smtp_service.smtp(runtime, "smtp")) as client:  # type: ignore[arg-type]
        await client.smtp_reply()
        for line in (
            "EHLO client.example.net",
            "MAIL FROM:<bob@example.net>",
            f"RCPT TO:<{ALICE}>",
        ):
            await client.send(line)
            assert (await client.smtp_reply()).startswith("250")
        assert acks == []
        await client.send("DATA")
        assert (await client.smtp_reply()).startswith("354 ")
        client.writer.write(b"Subject: hi\r\n\r\nhello\r\n")  # the content, not its end
        await client.writer.drain()
        await client.send(".")
        assert (await client.smtp_reply()).startswith("250 ")
        seen = len(acks)
        assert seen >= 1
        await client.send("QUIT")
        assert (await client.smtp_reply()).startswith("221 ")
    assert len(acks) == seen


async def test_managesieve_acks_a_partly_received_command_at_once(
    runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a ManageSieve command is partly in (a PUTSCRIPT whose final CRLF is still to
    come), the session asks for an immediate TCP ACK (quick_ack.py); between whole commands
    it does not."""
    from pochta.access import managesieve

    acks: list[object] = []
    monkeypatch.setattr(managesieve, "ack_now", lambda sock: acks.append(sock) or True)
    async with connect(managesieve.managesieve(runtime, "managesieve")) as client:  # type: ignore[arg-type]
        while not (await client.line()).startswith("OK"):
            pass  # the capabilities, then OK
        await client.send("NOOP")
        assert (await client.line()).startswith("OK")
        assert acks == []
        client.writer.write(b"NO")  # a command without its end
        await client.writer.drain()
        await asyncio.sleep(0.05)  # let the session read the piece and wait for the rest
        assert len(acks) == 1
        await client.send("OP")
        assert (await client.line()).startswith("OK")
        await client.send("NOOP")
        assert (await client.line()).startswith("OK")
        await client.send("LOGOUT")
        assert (await client.line()).startswith("OK")
    assert len(acks) == 1
