"""What the POP3 server core reports to the glue, named with the protocol's words.

Every event is a frozen dataclass. ``needs_reply`` says who answers it:

* ``True``: the glue decides, with the connection method named in the event's doc, before it
  asks for the next event; ``conn.reject(response)`` answers any of them with an ``-ERR``;
* ``False``: the core has already answered; the event is there so the glue can log it.

The core answers everything else itself (CAPA, USER, STAT, LIST, UIDL, DELE, RSET, NOOP,
syntax and sequence errors, limits) and reports nothing for it: see ``server.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "AuthResponse",
    "AuthStart",
    "Event",
    "Login",
    "Quit",
    "Retrieve",
    "StartTLS",
    "Update",
]


class Event:
    """Base of every event."""

    __slots__ = ()
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """STLS (RFC 2595 §4). Call ``conn.start_tls()`` (the core sends "+OK" and drops whatever
    the client sent after STLS), write ``data_to_send()``, do the handshake, then call
    ``conn.tls_started()``; or ``conn.reject(...)``."""


@dataclass(frozen=True, slots=True)
class Login(Event):
    """PASS after USER (RFC 1939 §7). Verify the pair, lock and list the maildrop, then
    ``conn.open_maildrop(maildrop)``; or ``conn.reject(...)`` (``[AUTH]`` for bad credentials,
    ``[IN-USE]`` for a locked maildrop; RFC 2449 §8.1.2, RFC 3206 §5)."""

    username: str
    password: str = field(repr=False)  # never in a repr, a log line or a traceback


@dataclass(frozen=True, slots=True)
class AuthStart(Event):
    """AUTH mechanism [initial-response] (RFC 5034 §4), base64 already decoded. Answer with
    ``conn.auth_challenge(data)``, ``conn.open_maildrop(...)`` or ``conn.reject(...)``."""

    mechanism: str  # upper-cased, one the connection offers
    # None: no initial response; b"": an empty one ("=", RFC 5034 §4). Holds secrets.
    initial_response: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """The client's answer to a "+ " challenge, base64 already decoded; answered like
    ``AuthStart``. A client's "*" never arrives here: the core answers it (RFC 5034 §4)."""

    data: bytes = field(repr=False)  # holds secrets


@dataclass(frozen=True, slots=True)
class Retrieve(Event):
    """RETR (``lines`` None, RFC 1939 §5) or TOP msg n (``lines`` = n, RFC 1939 §7) of a message
    that exists and is not marked deleted. Fetch it and call ``conn.send_message(content)``
    with the whole message (CRLF line ends, ``size`` octets): the core cuts TOP, byte-stuffs
    and terminates it. Or ``conn.reject(...)`` when it cannot be read."""

    number: int
    uid: int
    size: int
    lines: int | None = None


@dataclass(frozen=True, slots=True)
class Update(Event):
    """QUIT in the TRANSACTION state: the UPDATE state (RFC 1939 §6). Remove the messages
    ``deleted`` (store UIDs) all at once, mark ``retrieved`` seen, then ``conn.update_done()``
    ("+OK"); or ``conn.reject(...)`` when nothing could be removed. Either way the connection
    closes."""

    deleted: tuple[int, ...]
    retrieved: tuple[int, ...]  # sent with RETR and not deleted


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT in the AUTHORIZATION state (RFC 1939 §4): the core said "+OK" and closed."""

    needs_reply: ClassVar[bool] = False
