"""The milter connector (cleanup/milter_filter.py, spam/milter.py) with real milters.

- Debian's real ``opendkim`` as a signing milter, started here on a free loopback port with
  a private config and key: mail through a real pochta (smtplib) arrives with opendkim's
  DKIM-Signature, which verifies against the key (so the header and body pochta sent and
  applied are byte-faithful).
- A scripted milter on loopback (the codec's own ``encode_reply``) for the replies opendkim
  does not give: REJECT, REPLYCODE, TEMPFAIL, DISCARD, QUARANTINE, header changes, a new
  body, a milter that hangs, and ``[milter] default_action``.
"""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from email.utils import formatdate
from pathlib import Path

import dkim
import pytest

from pochta.cleanup.milter_filter import MilterFilter
from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.mime.headers import split_message
from pochta.protocols.milter.codec import FrameReader, decode_command, encode_reply
from pochta.protocols.milter.constants import Protocol
from pochta.protocols.milter.events import (
    Accept,
    AddHeader,
    AddRecipient,
    Body,
    ChangeHeader,
    Continue,
    Discard,
    EndOfMessage,
    Header,
    InsertHeader,
    MilterCommand,
    MilterReply,
    OptionNegotiation,
    Quarantine,
    Quit,
    Reject,
    ReplaceBody,
    ReplyWithCode,
    Tempfail,
)
from pochta.protocols.smtp.replies import Reply
from pochta.server.app import Server
from pochta.spam.milter import parse_address
from tests.dnsserver import ZoneServer
from tests.factories import make_rsa_dkim_key
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, serving_in_process, set_key
from tests.integration.test_verdict_policy import mail_of, subject, wait_for_message

BOB = f"bob@{DOMAIN}"
OPENDKIM = shutil.which("opendkim") or (
    "/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None
)
SIGNING_DOMAIN = "sender.test"
SELECTOR = "milter"
PRIVATE_PEM, DKIM_TXT = make_rsa_dkim_key()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def opendkim_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's opendkim in the foreground on loopback, signing sender.test; killed after."""
    if OPENDKIM is None:
        pytest.skip("Debian's opendkim is not installed (scripts/test-packages.txt)")
    home = tmp_path_factory.mktemp("opendkim")
    key = home / f"{SELECTOR}.private"
    key.write_bytes(PRIVATE_PEM)
    key.chmod(0o600)
    port = free_port()
    (home / "opendkim.conf").write_text(
        "Syslog no\nBackground no\nMode s\n"
        f"Domain {SIGNING_DOMAIN}\nSelector {SELECTOR}\nKeyFile {key}\n"
        "Canonicalization simple/simple\n"
        "RequireSafeKeys false\n"  # the key lives under /tmp (world-writable parents)
        f"Socket inet:{port}@127.0.0.1\nPidFile {home / 'opendkim.pid'}\n"
    )
    log = (home / "opendkim.log").open("wb")
    proc = subprocess.Popen(
        [OPENDKIM, "-f", "-x", str(home / "opendkim.conf")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (home / "opendkim.log").read_text(errors="replace")
                pytest.fail(f"opendkim did not start (exit {proc.poll()}):\n{text}")
            time.sleep(0.1)
        yield f"inet:127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@asynccontextmanager
async def running(env: PochtaEnv, **milter: str) -> AsyncIterator[Server]:
    env.add_user(BOB, "secret-pw-1")
    async with AsyncExitStack() as stack:
        zone = stack.enter_context(ZoneServer("", origin="."))
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "2.0")
        for key, value in milter.items():
            set_key(env.config_path, "milter", key, value)
        server = await stack.enter_async_context(serving_in_process(env.config_path))
        yield server


def message(title: str) -> bytes:
    return (
        f"From: Alice <alice@{SIGNING_DOMAIN}>\r\nTo: <{BOB}>\r\nSubject: {title}\r\n"
        f"Date: {formatdate()}\r\nMessage-ID: <m1@{SIGNING_DOMAIN}>\r\n"
        "X-Folded: one\r\n\ttwo\r\n"
        "\r\nHello Bob,\r\n\r\nsigned by a milter.\r\n"
    ).encode()


def send_mx(port: int, content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.sender.test") as client:
        return client.sendmail(f"alice@{SIGNING_DOMAIN}", [BOB], content)


async def test_opendkim_signs_mail_through_pochta(
    pochta_env: PochtaEnv, opendkim_address: str
) -> None:
    async with running(pochta_env, servers=f'["{opendkim_address}"]') as server:
        port = pochta_env.ports["smtp"]
        assert await asyncio.to_thread(send_mx, port, message("signed")) == {}
        got = await wait_for_message(server, "INBOX", subject("signed"))
        [signature] = split_message(got).get_all("dkim-signature")
        assert f"d={SIGNING_DOMAIN}" in signature.text
        assert f"s={SELECTOR}" in signature.text

        def dns(name: bytes, timeout: int = 5) -> bytes:
            assert name == f"{SELECTOR}._domainkey.{SIGNING_DOMAIN}.".encode()
            return DKIM_TXT

        assert dkim.verify(got, dnsfunc=dns), got.decode(errors="replace")


async def test_unreachable_milter_tempfails_by_default(pochta_env: PochtaEnv) -> None:
    dead = f'["inet:127.0.0.1:{free_port()}"]'
    async with running(pochta_env, servers=dead) as server:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send_mx, pochta_env.ports["smtp"], message("later"))
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.7.1 ")
        assert mail_of(server).store.list_messages(BOB, "INBOX") == []


# -- a scripted milter ----------------------------------------------------------------------

Script = Callable[[MilterCommand], Sequence[MilterReply]]


@asynccontextmanager
async def scripted_milter(
    script: Script, *, actions: int = 0x33, protocol: int = 0
) -> AsyncIterator[tuple[str, list[MilterCommand]]]:
    """A milter on loopback answering each command with ``script(command)``."""
    seen: list[MilterCommand] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader()
        while data := await reader.read(65536):
            frames.feed(data)
            for raw in frames.frames():
                command = decode_command(raw)
                seen.append(command)
                if isinstance(command, OptionNegotiation):
                    writer.write(encode_reply(OptionNegotiation(6, actions, protocol)))
                elif isinstance(command, Quit):
                    writer.close()
                    return
                else:
                    writer.write(b"".join(encode_reply(r) for r in script(command)))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"inet:127.0.0.1:{port}", seen


def at_end(*replies: MilterReply) -> Script:
    """CONTINUE to everything but the end of message, answered with ``replies``."""

    def script(command: MilterCommand) -> Sequence[MilterReply]:
        if isinstance(command, EndOfMessage):
            return replies
        if isinstance(command, Header | Body) or type(command).__name__ in (
            "Connect",
            "Helo",
            "Mail",
            "Rcpt",
            "Data",
            "EndOfHeaders",
        ):
            return [Continue()]
        return []  # macros get no answer

    return script


CONTENT = (
    b"Received: from client\r\nSubject: one\r\nSubject: two\r\nX-Gone: yes\r\n\r\nold body\r\n"
)
MX = CleanupInput(
    sender="a@b.test",
    recipients=[BOB],
    client_ip="127.0.0.1",
    helo="client.test",
    queue_id="Q1",
    from_mx=True,
)


async def through(
    script: Script, *, default_action: str = "tempfail", milter_timeout: float = 5, **options: int
) -> tuple[CleanupResult | Reply, list[MilterCommand]]:
    async with scripted_milter(script, **options) as (address, seen):
        milter = MilterFilter(
            [parse_address(address)],
            hostname=HOSTNAME,
            timeout_seconds=milter_timeout,
            default_action=default_action,
        )
        done = await milter(CleanupResult(CONTENT, MX.sender, list(MX.recipients)), MX)
    return done, seen


async def test_header_and_body_changes_are_applied() -> None:
    done, seen = await through(
        at_end(
            AddHeader("X-Scanned", "by milter"),
            InsertHeader(0, "X-Top", "first\n\tfolded"),
            ChangeHeader(2, "Subject", "changed"),
            ChangeHeader(1, "X-Gone", ""),
            ReplaceBody(b"new "),
            ReplaceBody(b"body\r\n"),
            Accept(),
        )
    )
    assert isinstance(done, CleanupResult)
    assert done.content == (
        b"X-Top: first\r\n\tfolded\r\nReceived: from client\r\nSubject: one\r\n"
        b"Subject: changed\r\nX-Scanned: by milter\r\n\r\nnew body\r\n"
    )
    headers = [c for c in seen if isinstance(c, Header)]
    assert headers[1] == Header("Subject", "one")  # value without the leading space
    assert Body(b"old body\r\n") in seen


async def test_leading_space_is_kept_when_negotiated() -> None:
    done, seen = await through(
        at_end(AddHeader("X-Lead", " kept"), Accept()), protocol=int(Protocol.HDR_LEADSPC)
    )
    assert isinstance(done, CleanupResult)
    assert Header("Subject", " one") in seen
    assert b"X-Lead: kept\r\n" in done.content


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reject(), Reply(550, "5.7.1", "Message content rejected")),
        (Tempfail(), Reply(451, "4.7.1", "Service unavailable, try again later")),
        (ReplyWithCode("554 5.7.0 Virus found: Eicar"), Reply(554, "5.7.0", "Virus found: Eicar")),
        (ReplyWithCode("452-4.3.1 busy\r\n452 4.3.1 later"), Reply(452, "4.3.1", "busy\nlater")),
    ],
)
async def test_refusals(reply: MilterReply, expected: Reply) -> None:
    done, _seen = await through(at_end(reply))
    assert done == expected


async def test_a_replycode_that_is_not_4xx_or_5xx_is_a_milter_failure() -> None:
    done, _ = await through(at_end(ReplyWithCode("250 2.0.0 fine")))
    assert done == Reply(451, "4.7.1", "Mail filter unavailable, try again later")
    accepted, _ = await through(at_end(ReplyWithCode("250 ok")), default_action="accept")
    assert isinstance(accepted, CleanupResult)
    assert accepted.content == CONTENT


async def test_discard_and_quarantine_go_into_the_verdict() -> None:
    done, _ = await through(at_end(Discard()))
    assert isinstance(done, CleanupResult)
    assert done.verdict.action == "discard"
    held, _ = await through(at_end(Quarantine("suspicious"), Accept()))
    assert isinstance(held, CleanupResult)
    assert held.verdict.delivery_folder == "Junk"
    assert "suspicious" in held.verdict.reason


async def test_early_reject_at_mail_from_stops_the_conversation() -> None:
    def script(command: MilterCommand) -> Sequence[MilterReply]:
        if type(command).__name__ == "Mail":
            return [Reject()]
        if type(command).__name__ in ("Connect", "Helo"):
            return [Continue()]
        return []

    done, seen = await through(script)
    assert done == Reply(550, "5.7.1", "Message content rejected")
    assert not any(isinstance(c, Header) for c in seen)


async def test_a_hanging_milter_gets_the_default_action() -> None:
    done, _ = await through(at_end(), milter_timeout=0.2)  # never answers the end of message
    assert done == Reply(451, "4.7.1", "Mail filter unavailable, try again later")


async def test_steps_the_milter_declines_are_not_sent() -> None:
    no_steps = Protocol.NOCONNECT | Protocol.NOHELO | Protocol.NOHDRS | Protocol.NOBODY
    done, seen = await through(at_end(Accept()), protocol=int(no_steps))
    assert isinstance(done, CleanupResult)
    names = [type(c).__name__ for c in seen if type(c).__name__ != "DefineMacros"]
    assert names == [
        "OptionNegotiation",
        "Mail",
        "Rcpt",
        "Data",
        "EndOfHeaders",
        "EndOfMessage",
        "Quit",
    ]


async def test_an_envelope_change_that_was_not_offered_is_a_milter_failure() -> None:
    # The milter asks for ADDRCPT in its OPTNEG (dropped: pochta does not offer it after
    # DATA), then uses it anyway.
    done, _ = await through(at_end(AddRecipient("<x@y.test>"), Accept()), actions=0x3F)
    assert done == Reply(451, "4.7.1", "Mail filter unavailable, try again later")
