"""The milter protocol's messages as frozen dataclasses, named after ``mfdef.h``.

Commands go from the MTA (pochta) to a milter; replies come back. Strings are what the
protocol carries as NUL-terminated bytes, decoded as UTF-8 with ``surrogateescape`` so any
octet survives a round trip; they never contain NUL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Abort",
    "Accept",
    "AddHeader",
    "AddRecipient",
    "Body",
    "ChangeFrom",
    "ChangeHeader",
    "Connect",
    "ConnectionFailure",
    "Continue",
    "Data",
    "DefineMacros",
    "DeleteRecipient",
    "Discard",
    "EndOfHeaders",
    "EndOfMessage",
    "Header",
    "Helo",
    "InsertHeader",
    "Mail",
    "MilterCommand",
    "MilterReply",
    "OptionNegotiation",
    "Progress",
    "Quarantine",
    "Quit",
    "Rcpt",
    "Reject",
    "ReplaceBody",
    "ReplyWithCode",
    "Shutdown",
    "Skip",
    "Tempfail",
]


# -- commands (SMFIC_*) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionNegotiation:
    """SMFIC_OPTNEG (and the milter's answer, SMFIC_OPTNEG too): the version, the actions
    (``constants.Action``) and protocol flags (``constants.Protocol``); a milter's answer may
    name the macros it wants per stage (``constants.Stage`` -> names)."""

    version: int
    actions: int
    protocol: int
    macros: tuple[tuple[int, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class DefineMacros:
    """SMFIC_MACRO: macros for the command ``stage`` (its one-byte code) that follows."""

    stage: bytes
    macros: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Connect:
    """SMFIC_CONNECT: the client's name, family ("4", "6", "L" unix, "U" unknown), port and
    address (no port and address for "U")."""

    hostname: str
    family: str = "U"
    port: int = 0
    address: str = ""


@dataclass(frozen=True, slots=True)
class Helo:
    name: str


@dataclass(frozen=True, slots=True)
class Mail:
    """SMFIC_MAIL: ``<sender>`` then the ESMTP parameters."""

    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rcpt:
    """SMFIC_RCPT: ``<recipient>`` then the ESMTP parameters."""

    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class EndOfHeaders:
    pass


@dataclass(frozen=True, slots=True)
class Body:
    """SMFIC_BODY: one piece of the body, at most ``MILTER_CHUNK_BYTES``."""

    chunk: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """SMFIC_BODYEOB: the body is complete; the milter answers with its changes."""


@dataclass(frozen=True, slots=True)
class Abort:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


MilterCommand = (
    OptionNegotiation
    | DefineMacros
    | Connect
    | Helo
    | Mail
    | Rcpt
    | Data
    | Header
    | EndOfHeaders
    | Body
    | EndOfMessage
    | Abort
    | Quit
)

# -- replies (SMFIR_*) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the message; the milter wants nothing more of it."""


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Discard:
    """Accept and silently drop the message."""


@dataclass(frozen=True, slots=True)
class Reject:
    pass


@dataclass(frozen=True, slots=True)
class Tempfail:
    pass


@dataclass(frozen=True, slots=True)
class ReplyWithCode:
    """SMFIR_REPLYCODE: the SMTP reply to give, as the milter wrote it ("550 5.7.1 text")."""

    text: str


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class InsertHeader:
    """SMFIR_INSHEADER: insert before the header field at ``index`` (0: the top)."""

    index: int
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """SMFIR_CHGHEADER: the ``index``-th (from 1) field called ``name`` gets ``value``; an
    empty value deletes it."""

    index: int
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    """SMFIR_REPLBODY: one piece of the new body (the pieces are concatenated)."""

    chunk: bytes


@dataclass(frozen=True, slots=True)
class AddRecipient:
    """SMFIR_ADDRCPT, or SMFIR_ADDRCPT_PAR with ESMTP ``args``."""

    recipient: str
    args: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    recipient: str


@dataclass(frozen=True, slots=True)
class ChangeFrom:
    sender: str
    args: str | None = None


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: str


@dataclass(frozen=True, slots=True)
class Progress:
    """The milter is still working: wait another timeout."""


@dataclass(frozen=True, slots=True)
class Skip:
    """Send no more body pieces (needs ``Protocol.SKIP``)."""


@dataclass(frozen=True, slots=True)
class ConnectionFailure:
    """SMFIR_CONN_FAIL: the milter gives up on this connection."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """SMFIR_SHUTDOWN: the milter is shutting down."""


MilterReply = (
    OptionNegotiation
    | Accept
    | Continue
    | Discard
    | Reject
    | Tempfail
    | ReplyWithCode
    | AddHeader
    | InsertHeader
    | ChangeHeader
    | ReplaceBody
    | AddRecipient
    | DeleteRecipient
    | ChangeFrom
    | Quarantine
    | Progress
    | Skip
    | ConnectionFailure
    | Shutdown
)
