"""A milter client: one message through one milter, over ``inet:HOST:PORT`` or ``unix:PATH``.

The asyncio glue of the sans-IO codec (``protocols/milter/``), one connection per message
(a milter may keep state per connection; cleanup runs once per message). The conversation
is Sendmail's and Postfix's (libmilter ``docs/``, Postfix ``MILTER_README``):

    OPTNEG (version 6, offered actions and steps)     -> the milter's OPTNEG answer
    MACRO C, CONNECT  (client name, family, port, address)
    MACRO H, HELO
    MACRO M, MAIL     (<sender>)
    MACRO R, RCPT     (<recipient>), once per recipient
    MACRO T, DATA
    HEADER            once per field, as name and value (folds as LF, like Postfix)
    EOH
    BODY              pieces of at most 65535 octets
    MACRO E, BODYEOB  -> the changes (ADDHEADER, INSHEADER, CHGHEADER, REPLBODY,
                         QUARANTINE, PROGRESS) and a final reply
    QUIT

A step the milter asked to leave out (``Protocol.NO*``) is not sent; one it said it does
not answer (``Protocol.NR_*``) is not waited for. ACCEPT, DISCARD, REJECT, TEMPFAIL and
REPLYCODE end the conversation at any step; SKIP ends the body. Macros are the ones Postfix
sends by default (``milter_*_macros``): ``j``, ``{daemon_name}``, ``{client_addr}``,
``{client_name}``, ``{auth_authen}``, ``{mail_addr}``, ``{rcpt_addr}``, ``i`` (the queue
id)...

Every wait is bounded by ``timeout_seconds`` (a PROGRESS reply restarts it, as in
libmilter); a milter that cannot be reached, times out or breaks the protocol raises
:class:`MilterError`, and the filter applies ``[milter] default_action``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pochta.protocols.milter.codec import (
    OFFERED_ACTIONS,
    OFFERED_PROTOCOL,
    FrameReader,
    MilterProtocolError,
    decode_reply,
    encode_command,
    negotiated,
)
from pochta.protocols.milter.constants import MILTER_CHUNK_BYTES, MILTER_VERSION, Command
from pochta.protocols.milter.constants import Protocol as P
from pochta.protocols.milter.events import (
    Accept,
    AddHeader,
    Body,
    ChangeHeader,
    Connect,
    Continue,
    Data,
    DefineMacros,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Header,
    Helo,
    InsertHeader,
    Mail,
    MilterCommand,
    MilterReply,
    OptionNegotiation,
    Progress,
    Quarantine,
    Quit,
    Rcpt,
    Reject,
    ReplaceBody,
    ReplyWithCode,
    Skip,
    Tempfail,
)

__all__ = [
    "MAX_REPLACED_BODY_BYTES",
    "MilterAddress",
    "MilterError",
    "MilterMessage",
    "MilterOutcome",
    "ask_milter",
    "parse_address",
]

MAX_REPLACED_BODY_BYTES = 256 << 20
"""Largest body a milter may substitute (REPLBODY pieces together)."""
_MAX_CHANGES = 10_000  # modification replies to one message

Decision = Literal["continue", "accept", "discard", "reject", "tempfail", "reply"]
Change = AddHeader | InsertHeader | ChangeHeader
_CHANGE_REPLIES = (AddHeader, InsertHeader, ChangeHeader, ReplaceBody, Quarantine)


class MilterError(Exception):
    """The milter could not be asked: unreachable, too slow, or it broke the protocol."""


@dataclass(frozen=True, slots=True)
class MilterAddress:
    """Where a milter listens: ``inet`` (host, port) or ``unix`` (path)."""

    kind: Literal["inet", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


def parse_address(text: str) -> MilterAddress:
    """``inet:HOST:PORT`` (Postfix; ``inet:[::1]:PORT`` for IPv6), ``inet:PORT@HOST``
    (Sendmail), ``inet6:...`` or ``unix:PATH`` / ``local:PATH``; ValueError says what is
    expected."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(f"milter address {text!r}: expected inet:HOST:PORT or unix:PATH")
    if kind in ("unix", "local"):
        return MilterAddress("unix", path=rest)
    if kind not in ("inet", "inet6"):
        raise ValueError(f"milter address {text!r}: the kind must be inet, inet6 or unix")
    if "@" in rest:
        port_text, _, host = rest.partition("@")
    elif rest.startswith("["):
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"milter address {text!r}: expected inet:HOST:PORT, port 1-65535")
    return MilterAddress("inet", host=host, port=int(port_text))


@dataclass(frozen=True, slots=True)
class MilterMessage:
    """One message and its transaction, as the milter sees it."""

    headers: Sequence[tuple[str, str]]  # (name, value without the leading space; folds: LF)
    body: bytes
    sender: str
    recipients: Sequence[str]
    hostname: str  # our host name: macro j
    client_ip: str = ""
    client_port: int = 0
    client_hostname: str = ""
    helo: str = ""
    queue_id: str = ""
    auth_user: str = ""
    leading_spaces: Sequence[str] = ()  # per header: the white space after the colon


@dataclass(frozen=True, slots=True)
class MilterOutcome:
    """What one milter decided, and the changes it asked for at end of message."""

    decision: Decision
    reply: str = ""  # REPLYCODE text, "550 5.7.1 ..."
    changes: tuple[Change, ...] = ()
    body: bytes | None = None  # the replacement body, if the milter sent one
    quarantine: str | None = None  # the QUARANTINE reason
    protocol: int = 0  # the negotiated protocol flags (HDR_LEADSPC: values keep their space)


@dataclass
class _Conversation:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    timeout: float
    frames: FrameReader = field(default_factory=FrameReader)
    protocol: int = 0

    async def send(self, *commands: MilterCommand) -> None:
        self.writer.write(b"".join(encode_command(c) for c in commands))
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()

    async def reply(self) -> MilterReply:
        """The next reply; PROGRESS restarts the clock and is not returned."""
        while True:
            async with asyncio.timeout(self.timeout):
                while True:
                    ready = next(self.frames.frames(), None)
                    if ready is not None:
                        break
                    data = await self.reader.read(65536)
                    if not data:
                        raise MilterError("the milter closed the connection")
                    self.frames.feed(data)
            found = decode_reply(ready)
            if not isinstance(found, Progress):
                return found


async def ask_milter(
    address: MilterAddress, message: MilterMessage, *, timeout_seconds: float
) -> MilterOutcome:
    """Run ``message`` through the milter at ``address`` (module docstring); MilterError
    when it cannot be done."""
    try:
        async with asyncio.timeout(timeout_seconds):
            if address.kind == "unix":
                reader, writer = await asyncio.open_unix_connection(address.path)
            else:
                reader, writer = await asyncio.open_connection(address.host, address.port)
    except (OSError, TimeoutError) as exc:
        raise MilterError(f"cannot connect to milter {address}: {exc or 'timed out'}") from None
    talk = _Conversation(reader, writer, timeout_seconds)
    try:
        return await _converse(talk, message)
    except TimeoutError:
        raise MilterError(
            f"milter {address} did not answer within {timeout_seconds:g} s "
            "([milter] timeout_seconds)"
        ) from None
    except MilterProtocolError as exc:
        raise MilterError(f"milter {address} broke the protocol: {exc}") from None
    except OSError as exc:
        raise MilterError(f"milter {address}: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)


_FINAL: dict[type, Decision] = {
    Accept: "accept",
    Discard: "discard",
    Reject: "reject",
    Tempfail: "tempfail",
    ReplyWithCode: "reply",
}


def _stop(found: MilterReply, step: str) -> MilterOutcome | None:
    """None to go on (CONTINUE), or the outcome that ends the conversation."""
    if isinstance(found, Continue):
        return None
    decision = _FINAL.get(type(found))
    if decision is None:
        raise MilterProtocolError(f"reply {type(found).__name__} is not allowed after {step}")
    text = found.text if isinstance(found, ReplyWithCode) else ""
    return MilterOutcome(decision, reply=text)


async def _converse(talk: _Conversation, message: MilterMessage) -> MilterOutcome:
    await talk.send(OptionNegotiation(MILTER_VERSION, int(OFFERED_ACTIONS), int(OFFERED_PROTOCOL)))
    answer = await talk.reply()
    if not isinstance(answer, OptionNegotiation):
        raise MilterProtocolError(f"OPTNEG expected first, got {type(answer).__name__}")
    protocol = negotiated(answer).protocol
    talk.protocol = protocol

    async def step(
        macros: DefineMacros | None, command: MilterCommand, skip: P, no_reply: P, name: str
    ) -> MilterOutcome | None:
        if protocol & skip:
            return None
        await talk.send(*(c for c in (macros, command) if c is not None))
        if protocol & no_reply:
            return None
        outcome = _stop(await talk.reply(), name)
        if outcome is not None:
            return _with_protocol(outcome, protocol)
        return None

    m = message
    connect_macros = DefineMacros(
        Command.CONNECT,
        (
            ("j", m.hostname),
            ("{daemon_name}", "pochta"),
            ("v", "pochta"),
            ("{client_addr}", m.client_ip),
            ("{client_name}", m.client_hostname or "unknown"),
            ("_", f"{m.client_hostname or 'unknown'} [{m.client_ip}]"),
        ),
    )
    steps: list[tuple[DefineMacros | None, MilterCommand, P, P, str]] = [
        (connect_macros, _connect(m), P.NOCONNECT, P.NR_CONN, "CONNECT"),
        (None, Helo(m.helo or m.client_ip or "localhost"), P.NOHELO, P.NR_HELO, "HELO"),
        (
            DefineMacros(
                Command.MAIL,
                (
                    ("i", m.queue_id),
                    ("{auth_authen}", m.auth_user),
                    ("{auth_type}", "PLAIN" if m.auth_user else ""),
                    ("{mail_addr}", m.sender),
                ),
            ),
            Mail((f"<{m.sender}>",)),
            P.NOMAIL,
            P.NR_MAIL,
            "MAIL",
        ),
    ]
    for rcpt in m.recipients:
        rcpt_macros = DefineMacros(Command.RCPT, (("{rcpt_addr}", rcpt),))
        steps.append((rcpt_macros, Rcpt((f"<{rcpt}>",)), P.NORCPT, P.NR_RCPT, "RCPT"))
    steps.append(
        (DefineMacros(Command.DATA, (("i", m.queue_id),)), Data(), P.NODATA, P.NR_DATA, "DATA")
    )
    leading = protocol & P.HDR_LEADSPC
    for index, (name, value) in enumerate(m.headers):
        if leading:
            space = m.leading_spaces[index] if index < len(m.leading_spaces) else " "
            value = space + value
        steps.append((None, Header(name, value), P.NOHDRS, P.NR_HDR, "HEADER"))
    steps.append((None, EndOfHeaders(), P.NOEOH, P.NR_EOH, "EOH"))
    for macros, command, skip, no_reply, name in steps:
        outcome = await step(macros, command, skip, no_reply, name)
        if outcome is not None:
            await _quit(talk)
            return outcome
    if not protocol & P.NOBODY:
        for start in range(0, len(m.body), MILTER_CHUNK_BYTES):
            await talk.send(Body(m.body[start : start + MILTER_CHUNK_BYTES]))
            if protocol & P.NR_BODY:
                continue
            found = await talk.reply()
            if isinstance(found, Skip):
                break
            outcome = _stop(found, "BODY")
            if outcome is not None:
                await _quit(talk)
                return _with_protocol(outcome, protocol)
    await talk.send(DefineMacros(Command.BODYEOB, (("i", m.queue_id),)), EndOfMessage())
    outcome = await _end_of_message(talk)
    await _quit(talk)
    return _with_protocol(outcome, protocol)


async def _end_of_message(talk: _Conversation) -> MilterOutcome:
    """The changes after BODYEOB, up to the final reply."""
    changes: list[Change] = []
    body: bytearray | None = None
    quarantine: str | None = None
    while True:
        found = await talk.reply()
        if isinstance(found, AddHeader | InsertHeader | ChangeHeader):
            changes.append(found)
        elif isinstance(found, ReplaceBody):
            body = bytearray() if body is None else body
            body += found.chunk
            if len(body) > MAX_REPLACED_BODY_BYTES:
                raise MilterProtocolError(f"replacement body over {MAX_REPLACED_BODY_BYTES}")
        elif isinstance(found, Quarantine):
            quarantine = found.reason
        elif isinstance(found, Continue):
            found = Accept()  # libmilter: CONTINUE at end of message means accept
        if len(changes) > _MAX_CHANGES:
            raise MilterProtocolError(f"more than {_MAX_CHANGES} changes to one message")
        decision = _FINAL.get(type(found))
        if decision is not None:
            text = found.text if isinstance(found, ReplyWithCode) else ""
            return MilterOutcome(
                decision,
                reply=text,
                changes=tuple(changes),
                body=None if body is None else bytes(body),
                quarantine=quarantine,
            )
        if not isinstance(found, _CHANGE_REPLIES):
            raise MilterProtocolError(
                f"reply {type(found).__name__} is not allowed after end of message "
                "(pochta offers header and body changes and quarantine, no envelope changes)"
            )


async def _quit(talk: _Conversation) -> None:
    # The decision is made; a milter that hung up early is no error.
    with contextlib.suppress(OSError, TimeoutError):
        await talk.send(Quit())


def _with_protocol(outcome: MilterOutcome, protocol: int) -> MilterOutcome:
    return MilterOutcome(
        outcome.decision,
        outcome.reply,
        outcome.changes,
        outcome.body,
        outcome.quarantine,
        protocol,
    )


def _connect(m: MilterMessage) -> Connect:
    """SMFIC_CONNECT: family 4 or 6 with the address, U (unknown) for local mail."""
    name = m.client_hostname or (f"[{m.client_ip}]" if m.client_ip else "localhost")
    try:
        ip = ipaddress.ip_address(m.client_ip)
    except ValueError:
        return Connect(name)
    return Connect(name, "4" if ip.version == 4 else "6", m.client_port, str(ip))
