"""What the SMTP/LMTP server core reports to the glue, named with the protocol's words.

Every event is a frozen dataclass. ``needs_reply`` says who answers it:

* ``True``: the glue decides and answers with ``conn.send_reply(reply)`` (or, for AUTH,
  ``conn.auth_challenge(data)``) before it asks for the next event;
* ``False``: the core has already answered (RSET, QUIT, VRFY, NOOP); the event is there so the
  glue can log it.

Replies the core sends on its own (syntax errors, sequence errors, limits, 354, 421) produce
no event at all; see ``server.py`` for the full table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "AuthResponse",
    "AuthStart",
    "Event",
    "Helo",
    "MailFrom",
    "MessageData",
    "Noop",
    "Quit",
    "RcptTo",
    "Reset",
    "StartTLS",
    "Vrfy",
]


class Event:
    """Base of every event."""

    __slots__ = ()
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Helo(Event):
    """HELO, EHLO or LHLO (RFC 5321 §4.1.1.1, RFC 2033 §4.1).

    Reply with any positive reply (e.g. ``OK``) to accept: the core then sends its own
    greeting line and capability list (RFC 5321 §4.1.1.1, ``ehlo-ok-rsp``) instead of the
    glue's reply text. A negative reply (e.g. 550 for a forged name) goes out as it is and the
    client stays un-greeted.
    """

    name: str  # the client's argument: a domain or an address literal, as sent
    extended: bool  # EHLO or LHLO: the client may use the advertised extensions


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """STARTTLS (RFC 3207 §4). Reply 220 (``SERVICE_READY_TLS``), write ``data_to_send()``,
    do the handshake, then call ``conn.tls_started()``; or refuse with 454 (``TLS_UNAVAILABLE``).
    After a 220 the core drops everything the client sent after STARTTLS (RFC 3207 §4.2)."""


@dataclass(frozen=True, slots=True)
class AuthStart(Event):
    """AUTH (RFC 4954 §4), base64 already decoded.

    Answer with ``conn.auth_challenge(data)`` (the core sends ``334 base64``) or finish with
    ``send_reply(AUTH_OK)`` / ``send_reply(AUTH_FAILED)`` (or any other reply)."""

    mechanism: str  # upper-cased, one of the mechanisms the connection offers
    # None: no initial response; b"": an empty one ("=", RFC 4954 §4). Holds secrets.
    initial_response: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """The client's answer to a 334 challenge, base64 already decoded. Answered like
    ``AuthStart``. A client's "*" never arrives here: the core answers it with 501 5.0.0."""

    data: bytes = field(repr=False)  # holds secrets


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """MAIL FROM (RFC 5321 §4.1.1.2), parsed and checked.

    ``address`` has no angle brackets and no source route; "" is the null reverse-path. The
    local part keeps its case and quoting. ``params`` maps upper-cased keywords to values
    (None for a keyword without "="): SIZE, BODY (upper-cased), SMTPUTF8, RET (upper-cased),
    ENVID (xtext-decoded), AUTH (as sent, RFC 4954 §5; ignore it). Reply ``SENDER_OK`` to open
    the transaction.
    """

    address: str
    params: dict[str, str | None]

    @property
    def size(self) -> int | None:
        """The declared message size (RFC 1870), if any."""
        value = self.params.get("SIZE")
        return int(value) if value is not None else None

    @property
    def body(self) -> str | None:
        """7BIT, 8BITMIME (RFC 6152) or BINARYMIME (RFC 3030), if declared."""
        return self.params.get("BODY")

    @property
    def smtputf8(self) -> bool:
        """RFC 6531 §3.4: the transaction may carry UTF-8 addresses and headers."""
        return "SMTPUTF8" in self.params


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """RCPT TO (RFC 5321 §4.1.1.3), parsed and checked. ``address`` as in ``MailFrom``
    ("Postmaster" alone is allowed, RFC 5321 §4.1.1.3). ``params``: NOTIFY (upper-cased,
    comma-separated, RFC 3461 §4.1) and ORCPT ("addr-type;decoded-address", RFC 3461 §4.2).
    Reply ``RECIPIENT_OK`` to accept the recipient."""

    address: str
    params: dict[str, str | None]

    @property
    def notify(self) -> tuple[str, ...]:
        """NEVER, or some of SUCCESS, FAILURE, DELAY; () when not given."""
        value = self.params.get("NOTIFY")
        return tuple(value.split(",")) if value else ()


@dataclass(frozen=True, slots=True)
class MessageData(Event):
    """The message after DATA's ``CRLF.CRLF`` (dot-unstuffed, RFC 5321 §4.5.2) or after
    ``BDAT … LAST`` (the chunks joined, RFC 3030 §2).

    SMTP: send one reply. LMTP: send one reply per accepted recipient, in RCPT order
    (RFC 2033 §4.2), by calling ``send_reply`` that many times or ``send_replies`` once."""

    content: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.content)

    def __repr__(self) -> str:
        return f"MessageData(<{len(self.content)} octets>)"


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """RSET (RFC 5321 §4.1.1.5); the core replied 250 and dropped the transaction."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT (RFC 5321 §4.1.1.10); the core replied 221 and closed the connection."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Vrfy(Event):
    """VRFY (RFC 5321 §4.1.1.6); the core replied 252 without looking anything up (§7.3)."""

    needs_reply: ClassVar[bool] = False
    argument: str


@dataclass(frozen=True, slots=True)
class Noop(Event):
    """NOOP (RFC 5321 §4.1.1.9); the core replied 250."""

    needs_reply: ClassVar[bool] = False
