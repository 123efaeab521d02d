"""What the ManageSieve server core reports to the glue, named with the protocol's words.

Every event is a frozen dataclass. ``needs_reply`` says who answers it:

* ``True``: the glue decides, with the connection method named in the event's doc, before it
  asks for the next event; ``conn.respond(response)`` answers any of them with an OK or a NO;
* ``False``: the core has already answered; the event is there so the glue can act on it
  (Logout: stop counting the connection; Unauthenticate: forget the user).

The core answers everything else itself (CAPABILITY, NOOP, syntax and sequence errors,
limits) and reports nothing for it: see ``server.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "AuthResponse",
    "Authenticate",
    "CheckScript",
    "DeleteScript",
    "Event",
    "GetScript",
    "HaveSpace",
    "ListScripts",
    "Logout",
    "PutScript",
    "RenameScript",
    "SetActive",
    "StartTLS",
    "Unauthenticate",
]


class Event:
    """Base of every event."""

    __slots__ = ()
    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """STARTTLS (RFC 5804 §2.2): ``conn.start_tls()``, write ``data_to_send()``, do the
    handshake, then ``conn.tls_started()`` (which sends the capabilities again)."""


@dataclass(frozen=True, slots=True)
class Authenticate(Event):
    """AUTHENTICATE (RFC 5804 §2.1) with the mechanism (upper case, offered) and the decoded
    initial response (None: none sent). Answer ``auth_challenge(data)``,
    ``authenticated(user, final_data)`` or ``respond(NO ...)``."""

    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """The client's decoded answer to a challenge (the core answered "*" and bad base64)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Logout(Event):
    """LOGOUT (RFC 5804 §2.3): the core sent OK and closed."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Unauthenticate(Event):
    """UNAUTHENTICATE (RFC 5804 §2.14.1): the core sent OK; the session is back in the
    non-authenticated state."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class HaveSpace(Event):
    """HAVESPACE name size (RFC 5804 §2.5): OK, or NO (QUOTA...)."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class PutScript(Event):
    """PUTSCRIPT name script (RFC 5804 §2.6): compile, store; OK or NO."""

    name: str
    script: str


@dataclass(frozen=True, slots=True)
class CheckScript(Event):
    """CHECKSCRIPT script (RFC 5804 §2.12): compile only."""

    script: str


@dataclass(frozen=True, slots=True)
class ListScripts(Event):
    """LISTSCRIPTS (RFC 5804 §2.7): answer ``script_list([(name, active), ...])``."""


@dataclass(frozen=True, slots=True)
class SetActive(Event):
    """SETACTIVE name (RFC 5804 §2.8); the empty name deactivates."""

    name: str


@dataclass(frozen=True, slots=True)
class GetScript(Event):
    """GETSCRIPT name (RFC 5804 §2.9): answer ``script(text)``."""

    name: str


@dataclass(frozen=True, slots=True)
class DeleteScript(Event):
    """DELETESCRIPT name (RFC 5804 §2.10)."""

    name: str


@dataclass(frozen=True, slots=True)
class RenameScript(Event):
    """RENAMESCRIPT old new (RFC 5804 §2.11.1)."""

    old: str
    new: str
