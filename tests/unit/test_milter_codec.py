"""The sans-IO milter codec (protocols/milter/): frames, every command and reply, limits."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.protocols.milter.codec import (
    MAX_FRAME_BYTES,
    OFFERED_ACTIONS,
    OFFERED_PROTOCOL,
    FrameReader,
    MilterProtocolError,
    decode_command,
    decode_reply,
    encode_command,
    encode_reply,
    negotiated,
)
from pochta.protocols.milter.constants import Action, Protocol
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

COMMANDS: list[MilterCommand] = [
    OptionNegotiation(6, int(OFFERED_ACTIONS), int(OFFERED_PROTOCOL)),
    DefineMacros(b"C", (("j", "mail.example.test"), ("{client_addr}", "192.0.2.1"))),
    DefineMacros(b"E", ()),
    Connect("client.example.test", "4", 25, "192.0.2.1"),
    Connect("[2001:db8::1]", "6", 587, "2001:db8::1"),
    Connect("localhost"),
    Helo("client.example.test"),
    Mail(("<a@example.test>", "SIZE=100", "BODY=8BITMIME")),
    Rcpt(("<b@example.test>",)),
    Data(),
    Header("Subject", "h\u00e9llo\n\tfolded"),
    Header("X-Raw", "\udcff octet"),
    EndOfHeaders(),
    Body(b"line\r\n" * 100),
    Body(b""),
    EndOfMessage(),
    Abort(),
    Quit(),
]

# Every reply mfdef.h defines that a milter may send (SETSYMLIST is part of OPTNEG).
REPLIES: list[MilterReply] = [
    OptionNegotiation(6, int(Action.ADDHDRS), int(Protocol.NOCONNECT), ((5, ("i", "{auth}")),)),
    Accept(),
    Continue(),
    Discard(),
    Reject(),
    Tempfail(),
    ReplyWithCode("550 5.7.1 go away"),
    AddHeader("X-Scanned", "yes"),
    InsertHeader(0, "DKIM-Signature", "v=1; a=rsa-sha256;\n\tb=abc"),
    ChangeHeader(2, "Subject", ""),
    ReplaceBody(b"new body\r\n"),
    AddRecipient("<c@example.test>"),
    AddRecipient("<c@example.test>", "NOTIFY=NEVER"),
    DeleteRecipient("<b@example.test>"),
    ChangeFrom("<d@example.test>"),
    ChangeFrom("<d@example.test>", "SIZE=1"),
    Quarantine("looks odd"),
    Progress(),
    Skip(),
    ConnectionFailure(),
    Shutdown(),
]


def frames_of(data: bytes, max_frame: int = MAX_FRAME_BYTES) -> list[bytes]:
    reader = FrameReader(max_frame)
    reader.feed(data)
    return list(reader.frames())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: MilterCommand) -> None:
    [raw] = frames_of(encode_command(command))
    assert decode_command(raw) == command


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: type(r).__name__)
def test_every_reply_round_trips(reply: MilterReply) -> None:
    [raw] = frames_of(encode_reply(reply))
    assert decode_reply(raw) == reply


def test_wire_format_is_libmilters() -> None:
    # mfdef.h: 4-byte network-order length (code included), code, data.
    assert encode_reply(Accept()) == b"\x00\x00\x00\x01a"
    assert encode_reply(AddHeader("X", "y")) == b"\x00\x00\x00\x05hX\x00y\x00"
    assert encode_command(Helo("h")) == b"\x00\x00\x00\x03Hh\x00"
    assert encode_command(OptionNegotiation(6, 1, 2)) == struct.pack(">IcIII", 13, b"O", 6, 1, 2)
    assert encode_command(Connect("c", "4", 25, "1.2.3.4")) == (
        b"\x00\x00\x00\x0eCc\x004\x00\x191.2.3.4\x00"
    )


def test_frames_cut_anywhere_come_out_whole() -> None:
    stream = b"".join(encode_reply(r) for r in REPLIES)
    for size in (1, 2, 3, 5, 7, 64):
        reader = FrameReader()
        got: list[MilterReply] = []
        for start in range(0, len(stream), size):
            reader.feed(stream[start : start + size])
            got.extend(decode_reply(f) for f in reader.frames())
        assert got == REPLIES
        assert reader.pending == 0


def test_a_partial_frame_waits() -> None:
    reader = FrameReader()
    reader.feed(encode_reply(AddHeader("X-A", "b"))[:-1])
    assert list(reader.frames()) == []
    reader.feed(b"\x00")
    assert [decode_reply(f) for f in reader.frames()] == [AddHeader("X-A", "b")]


def test_oversize_frame_is_refused_before_its_data() -> None:
    reader = FrameReader()
    reader.feed(struct.pack(">I", MAX_FRAME_BYTES + 1) + b"b")
    with pytest.raises(MilterProtocolError, match="over the limit of 65536"):
        list(reader.frames())
    # The biggest allowed one passes.
    assert len(frames_of(encode_reply(ReplaceBody(b"x" * 65535)))[0]) == MAX_FRAME_BYTES


def test_zero_length_frame_is_refused() -> None:
    with pytest.raises(MilterProtocolError, match="length 0"):
        frames_of(b"\x00\x00\x00\x00")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"z", "unknown milter reply code"),
        (b"a!", "unexpected octets"),
        (b"hX\x00y", "not NUL-terminated"),
        (b"hX\x00", "2 strings expected"),
        (b"i\x00\x00", "too short"),
        (b"O\x00\x00\x00\x06", r"\(12\) expected"),
        (b"O" + bytes(12) + b"\x00\x00\x00\x05i", "macro list is not NUL-terminated"),
        (b"yone\x00two\x00", "1 strings expected"),
    ],
)
def test_malformed_replies_say_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(MilterProtocolError, match=why):
        decode_reply(raw)


def test_strings_with_nul_cannot_be_sent() -> None:
    with pytest.raises(MilterProtocolError, match="NUL"):
        encode_command(Header("X", "a\0b"))
    with pytest.raises(MilterProtocolError, match="65535"):
        encode_command(Body(b"x" * 65536))


def test_negotiation_keeps_only_what_was_offered() -> None:
    ok = OptionNegotiation(6, int(Action.ADDHDRS), int(Protocol.NR_HDR))
    assert negotiated(ok) == ok
    # Envelope changes and big frames are not offered: dropped from the agreement.
    greedy = OptionNegotiation(
        6, int(Action.ADDRCPT | Action.ADDHDRS), int(Protocol.MDS_256K | Protocol.NOHELO)
    )
    assert negotiated(greedy) == OptionNegotiation(6, int(Action.ADDHDRS), int(Protocol.NOHELO))
    with pytest.raises(MilterProtocolError, match="version 7"):
        negotiated(OptionNegotiation(7, 0, 0))


@given(st.binary(max_size=300))
@example(b"\x00\x00\x00\x02O\x00")
@example(b"\x00\x00\x00\x11O" + bytes(12) + b"\x00\x00\x00\x05")
@example(b"\x00\x00\x00\x02y\xff")
@example(b"\xff\xff\xff\xff")
def test_arbitrary_bytes_give_replies_or_the_codec_error(data: bytes) -> None:
    """h11's invariant: any input, whole or byte by byte, gives events or MilterProtocolError."""
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        reader = FrameReader()
        try:
            for piece in pieces:
                reader.feed(piece)
                for raw in reader.frames():
                    decode_reply(raw)
                    decode_command(raw)
        except MilterProtocolError:
            pass


@given(st.binary(max_size=200))
def test_arbitrary_frame_data_decodes_or_raises_the_codec_error(data: bytes) -> None:
    for code in b"+-24abcdefhilmpqrstyOABCDEHKLMNOQRTU":
        raw = bytes([code]) + data
        for decode in (decode_reply, decode_command):
            with contextlib.suppress(MilterProtocolError):
                decode(raw)
