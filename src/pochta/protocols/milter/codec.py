"""Milter frames: bytes in, events out; events in, bytes out. No sockets, no ``await``.

A frame is a 4-byte big-endian length, then that many octets: one command or reply code
and its data (``mfdef.h``; libmilter ``comm.c``). :class:`FrameReader` takes whatever bytes
arrive and gives whole frames; ``decode_reply``/``decode_command`` turn a frame into an
event and ``encode_command``/``encode_reply`` an event into a frame, so the MTA side
(``spam/milter.py``) and a test's fake milter share one codec.

Limits: a frame longer than ``max_frame_bytes`` (default: one code plus
``MILTER_CHUNK_BYTES`` of data, libmilter's own limit unless MDS_256K/MDS_1M are negotiated,
which pochta does not offer) or of length 0 is refused with :class:`MilterProtocolError`
before its data is read, and so is every malformed frame; nothing else is ever raised on
input.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from pochta.protocols.milter.constants import (
    MILTER_CHUNK_BYTES,
    MILTER_VERSION,
    Action,
    Command,
    Protocol,
    ReplyCode,
)
from pochta.protocols.milter.events import (
    Abort,
    Accept,
    AddHeader,
    AddRecipient,
    Body,
    ChangeFrom,
    ChangeHeader,
    Connect,
    ConnectionFailure,
    Continue,
    Data,
    DefineMacros,
    DeleteRecipient,
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
    Shutdown,
    Skip,
    Tempfail,
)

__all__ = [
    "MAX_FRAME_BYTES",
    "OFFERED_ACTIONS",
    "OFFERED_PROTOCOL",
    "FrameReader",
    "MilterProtocolError",
    "decode_command",
    "decode_reply",
    "encode_command",
    "encode_reply",
    "negotiated",
]

MAX_FRAME_BYTES = 1 + MILTER_CHUNK_BYTES
"""Longest frame accepted: a code and 65535 octets of data (libmilter's MILTER_CHUNK_SIZE)."""

# What pochta's MTA side can do: every change but the envelope ones it cannot honour after
# the SMTP transaction (ADDRCPT, DELRCPT, CHGFROM: see cleanup/milter_filter.py) ...
OFFERED_ACTIONS = Action.ADDHDRS | Action.CHGBODY | Action.CHGHDRS | Action.QUARANTINE
# ... and every step a milter may leave out or not answer; SKIP and leading spaces too.
OFFERED_PROTOCOL = (
    Protocol.NOCONNECT
    | Protocol.NOHELO
    | Protocol.NOMAIL
    | Protocol.NORCPT
    | Protocol.NOBODY
    | Protocol.NOHDRS
    | Protocol.NOEOH
    | Protocol.NR_HDR
    | Protocol.NOUNKNOWN
    | Protocol.NODATA
    | Protocol.SKIP
    | Protocol.NR_CONN
    | Protocol.NR_HELO
    | Protocol.NR_MAIL
    | Protocol.NR_RCPT
    | Protocol.NR_DATA
    | Protocol.NR_UNKN
    | Protocol.NR_EOH
    | Protocol.NR_BODY
    | Protocol.HDR_LEADSPC
)

_LENGTH = struct.Struct(">I")
_UINT32 = struct.Struct(">I")
_UINT16 = struct.Struct(">H")
_MAX_MACRO_STAGES = 16  # SETSYMLIST entries in one OPTNEG answer (mfdef.h has 7 stages)


class MilterProtocolError(ValueError):
    """A frame that breaks the protocol (too long, truncated, unknown code, bad fields);
    the message says which and what was expected."""


class FrameReader:
    """Whole frames out of a byte stream, each at most ``max_frame_bytes`` long."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def frames(self) -> Iterator[bytes]:
        """Every whole frame buffered so far (code + data); a partial one waits for more.
        Raises :class:`MilterProtocolError` on a length of 0 or over the limit."""
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length == 0:
                raise MilterProtocolError("milter frame of length 0: a frame has at least a code")
            if length > self._max:
                raise MilterProtocolError(
                    f"milter frame of {length} octets, over the limit of {self._max} "
                    "(a milter must send body pieces of at most 65535 octets)"
                )
            if len(self._buffer) < 4 + length:
                return
            frame = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            yield frame

    @property
    def pending(self) -> int:
        """Octets buffered that do not make a whole frame yet."""
        return len(self._buffer)


def frame(code: bytes, data: bytes = b"") -> bytes:
    """One frame: length, code, data."""
    if len(data) + 1 > 0xFFFFFFFF:
        raise MilterProtocolError("milter frame too long to encode")
    return _LENGTH.pack(len(data) + 1) + code + data


# -- strings --------------------------------------------------------------------------------


def _cstr(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise MilterProtocolError(f"a milter string cannot contain NUL: {text[:60]!r}")
    return raw + b"\0"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _strings(data: bytes, what: str) -> list[str]:
    """NUL-terminated strings filling ``data`` exactly."""
    if not data.endswith(b"\0"):
        raise MilterProtocolError(f"milter {what}: the last string is not NUL-terminated")
    return [_text(p) for p in data[:-1].split(b"\0")]


def _exactly(data: bytes, count: int, what: str) -> list[str]:
    found = _strings(data, what)
    if len(found) != count:
        raise MilterProtocolError(f"milter {what}: {count} strings expected, got {len(found)}")
    return found


def _uint32(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 4:
        raise MilterProtocolError(f"milter {what}: too short for its 32-bit field")
    return _UINT32.unpack_from(data)[0], data[4:]


def _empty(data: bytes, what: str) -> None:
    if data:
        raise MilterProtocolError(f"milter {what} carries {len(data)} unexpected octets")


# -- option negotiation ---------------------------------------------------------------------


def _encode_optneg(event: OptionNegotiation) -> bytes:
    data = _UINT32.pack(event.version) + _UINT32.pack(event.actions) + _UINT32.pack(event.protocol)
    for stage, names in event.macros:
        data += _UINT32.pack(stage) + _cstr(" ".join(names))
    return data


def _decode_optneg(data: bytes) -> OptionNegotiation:
    if len(data) < 12:
        raise MilterProtocolError(
            f"milter OPTNEG of {len(data)} octets: version, actions and protocol (12) expected"
        )
    version, actions, protocol = struct.unpack_from(">III", data)
    rest = data[12:]
    macros: list[tuple[int, tuple[str, ...]]] = []
    while rest:
        if len(macros) >= _MAX_MACRO_STAGES:
            raise MilterProtocolError("milter OPTNEG names macros for too many stages")
        stage, rest = _uint32(rest, "OPTNEG macro list")
        end = rest.find(b"\0")
        if end < 0:
            raise MilterProtocolError("milter OPTNEG macro list is not NUL-terminated")
        macros.append((stage, tuple(_text(rest[:end]).split())))
        rest = rest[end + 1 :]
    return OptionNegotiation(version, actions, protocol, tuple(macros))


def negotiated(answer: OptionNegotiation) -> OptionNegotiation:
    """The milter's OPTNEG answer checked against our offer (version 6, OFFERED_*): the
    version must be 2 to 6; actions and protocol flags beyond the offer are dropped, as
    Postfix's milter8 does (a milter asking for envelope changes still runs; should it then
    send one, that reply is a protocol error), and the rest is what both sides agreed."""
    if not 2 <= answer.version <= MILTER_VERSION:
        raise MilterProtocolError(
            f"milter speaks protocol version {answer.version}; pochta speaks 2 to {MILTER_VERSION}"
        )
    return OptionNegotiation(
        answer.version,
        answer.actions & int(OFFERED_ACTIONS),
        answer.protocol & int(OFFERED_PROTOCOL),
        answer.macros,
    )


# -- commands -------------------------------------------------------------------------------


def encode_command(event: MilterCommand) -> bytes:
    """The frame of one command; a string with NUL in it raises MilterProtocolError."""
    match event:
        case OptionNegotiation():
            return frame(Command.OPTNEG, _encode_optneg(event))
        case DefineMacros(stage=stage, macros=macros):
            if len(stage) != 1:
                raise MilterProtocolError("a macro stage is one command code")
            body = b"".join(_cstr(k) + _cstr(v) for k, v in macros)
            return frame(Command.MACRO, stage + body)
        case Connect(hostname=hostname, family=family, port=port, address=address):
            if family == "U":
                return frame(Command.CONNECT, _cstr(hostname) + b"U")
            if family not in ("4", "6", "L") or not 0 <= port <= 0xFFFF:
                raise MilterProtocolError(f"bad CONNECT family {family!r} or port {port}")
            data = _cstr(hostname) + family.encode() + _UINT16.pack(port) + _cstr(address)
            return frame(Command.CONNECT, data)
        case Helo(name=name):
            return frame(Command.HELO, _cstr(name))
        case Mail(args=args):
            return frame(Command.MAIL, b"".join(_cstr(a) for a in args))
        case Rcpt(args=args):
            return frame(Command.RCPT, b"".join(_cstr(a) for a in args))
        case Data():
            return frame(Command.DATA)
        case Header(name=name, value=value):
            return frame(Command.HEADER, _cstr(name) + _cstr(value))
        case EndOfHeaders():
            return frame(Command.EOH)
        case Body(chunk=chunk):
            if len(chunk) > MILTER_CHUNK_BYTES:
                raise MilterProtocolError(f"a BODY piece is at most {MILTER_CHUNK_BYTES} octets")
            return frame(Command.BODY, chunk)
        case EndOfMessage():
            return frame(Command.BODYEOB)
        case Abort():
            return frame(Command.ABORT)
        case Quit():
            return frame(Command.QUIT)
    raise MilterProtocolError(f"not a milter command: {event!r}")  # pragma: no cover


def _decode_connect(data: bytes) -> Connect:
    end = data.find(b"\0")
    if end < 0 or end + 1 >= len(data):
        raise MilterProtocolError("milter CONNECT: host name and family expected")
    hostname = _text(data[:end])
    family = chr(data[end + 1])
    rest = data[end + 2 :]
    if family == "U":
        _empty(rest, "CONNECT of an unknown family")
        return Connect(hostname)
    if family not in "46L" or len(rest) < 2:
        raise MilterProtocolError(f"milter CONNECT: bad family {family!r} or no port")
    (port,) = _UINT16.unpack_from(rest)
    [address] = _exactly(rest[2:], 1, "CONNECT address")
    return Connect(hostname, family, port, address)


def decode_command(raw: bytes) -> MilterCommand:
    """The command in one frame (code + data, as FrameReader gives it)."""
    code, data = raw[:1], raw[1:]
    if code == Command.OPTNEG:
        return _decode_optneg(data)
    if code == Command.MACRO:
        if not data:
            raise MilterProtocolError("milter MACRO without its stage")
        values = _strings(data[1:], "MACRO") if len(data) > 1 else []
        if len(values) % 2:
            raise MilterProtocolError("milter MACRO: names and values must pair up")
        pairs = tuple(zip(values[::2], values[1::2], strict=True))
        return DefineMacros(data[:1], pairs)
    if code == Command.CONNECT:
        return _decode_connect(data)
    if code == Command.HELO:
        return Helo(_exactly(data, 1, "HELO")[0])
    if code in (Command.MAIL, Command.RCPT):
        args = tuple(_strings(data, "MAIL/RCPT"))
        return Mail(args) if code == Command.MAIL else Rcpt(args)
    if code == Command.HEADER:
        name, value = _exactly(data, 2, "HEADER")
        return Header(name, value)
    if code == Command.BODY:
        return Body(data)
    simple: dict[bytes, Callable[[], MilterCommand]] = {
        Command.DATA: Data,
        Command.EOH: EndOfHeaders,
        Command.BODYEOB: EndOfMessage,
        Command.ABORT: Abort,
        Command.QUIT: Quit,
    }
    if code in simple:
        _empty(data, f"command {code!r}")
        return simple[code]()
    raise MilterProtocolError(f"unknown milter command code {code!r}")


# -- replies --------------------------------------------------------------------------------

_SIMPLE_REPLIES: dict[bytes, Callable[[], MilterReply]] = {
    ReplyCode.ACCEPT: Accept,
    ReplyCode.CONTINUE: Continue,
    ReplyCode.DISCARD: Discard,
    ReplyCode.REJECT: Reject,
    ReplyCode.TEMPFAIL: Tempfail,
    ReplyCode.PROGRESS: Progress,
    ReplyCode.SKIP: Skip,
    ReplyCode.CONN_FAIL: ConnectionFailure,
    ReplyCode.SHUTDOWN: Shutdown,
}
_SIMPLE_CODES: dict[object, bytes] = {kind: code for code, kind in _SIMPLE_REPLIES.items()}


def encode_reply(event: MilterReply) -> bytes:
    """The frame of one reply (what a milter sends; tests' fake milters use it)."""
    match event:
        case OptionNegotiation():
            return frame(Command.OPTNEG, _encode_optneg(event))
        case ReplyWithCode(text=text):
            return frame(ReplyCode.REPLYCODE, _cstr(text))
        case AddHeader(name=name, value=value):
            return frame(ReplyCode.ADDHEADER, _cstr(name) + _cstr(value))
        case InsertHeader(index=index, name=name, value=value):
            return frame(ReplyCode.INSHEADER, _UINT32.pack(index) + _cstr(name) + _cstr(value))
        case ChangeHeader(index=index, name=name, value=value):
            return frame(ReplyCode.CHGHEADER, _UINT32.pack(index) + _cstr(name) + _cstr(value))
        case ReplaceBody(chunk=chunk):
            return frame(ReplyCode.REPLBODY, chunk)
        case AddRecipient(recipient=recipient, args=None):
            return frame(ReplyCode.ADDRCPT, _cstr(recipient))
        case AddRecipient(recipient=recipient, args=str(args)):
            return frame(ReplyCode.ADDRCPT_PAR, _cstr(recipient) + _cstr(args))
        case DeleteRecipient(recipient=recipient):
            return frame(ReplyCode.DELRCPT, _cstr(recipient))
        case ChangeFrom(sender=sender, args=args):
            return frame(ReplyCode.CHGFROM, _cstr(sender) + (b"" if args is None else _cstr(args)))
        case Quarantine(reason=reason):
            return frame(ReplyCode.QUARANTINE, _cstr(reason))
    code = _SIMPLE_CODES.get(type(event))
    if code is None:  # pragma: no cover
        raise MilterProtocolError(f"not a milter reply: {event!r}")
    return frame(code)


def decode_reply(raw: bytes) -> MilterReply:
    """The reply in one frame (code + data, as FrameReader gives it)."""
    code, data = raw[:1], raw[1:]
    if code == Command.OPTNEG:
        return _decode_optneg(data)
    if code in _SIMPLE_REPLIES:
        _empty(data, f"reply {code!r}")
        return _SIMPLE_REPLIES[code]()
    if code == ReplyCode.REPLYCODE:
        return ReplyWithCode(_exactly(data, 1, "REPLYCODE")[0])
    if code == ReplyCode.ADDHEADER:
        name, value = _exactly(data, 2, "ADDHEADER")
        return AddHeader(name, value)
    if code in (ReplyCode.INSHEADER, ReplyCode.CHGHEADER):
        index, rest = _uint32(data, "INSHEADER/CHGHEADER")
        name, value = _exactly(rest, 2, "INSHEADER/CHGHEADER")
        if code == ReplyCode.INSHEADER:
            return InsertHeader(index, name, value)
        return ChangeHeader(index, name, value)
    if code == ReplyCode.REPLBODY:
        return ReplaceBody(data)
    if code == ReplyCode.ADDRCPT:
        return AddRecipient(_exactly(data, 1, "ADDRCPT")[0])
    if code == ReplyCode.ADDRCPT_PAR:
        recipient, args = _exactly(data, 2, "ADDRCPT_PAR")
        return AddRecipient(recipient, args)
    if code == ReplyCode.DELRCPT:
        return DeleteRecipient(_exactly(data, 1, "DELRCPT")[0])
    if code == ReplyCode.CHGFROM:
        found = _strings(data, "CHGFROM")
        if len(found) not in (1, 2):
            raise MilterProtocolError("milter CHGFROM: a sender and optional arguments expected")
        return ChangeFrom(found[0], found[1] if len(found) == 2 else None)
    if code == ReplyCode.QUARANTINE:
        return Quarantine(_exactly(data, 1, "QUARANTINE")[0])
    raise MilterProtocolError(f"unknown milter reply code {code!r}")
