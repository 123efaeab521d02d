"""ManageSieve responses (RFC 5804 §1.3, §4): ``OK``, ``NO`` or ``BYE``, an optional response
code in parentheses, an optional human-readable string; and the strings the server sends.

    response-ok    = "OK" [SP "(" resp-code ")"] [SP string] CRLF
    response-nobye = ("NO" / "BYE") [SP "(" resp-code ")"] [SP string] CRLF
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pochta.protocols.managesieve.parse import MAX_QUOTED_OCTETS

__all__ = [
    "Response",
    "ResponseError",
    "bye",
    "encode_string",
    "no",
    "ok",
]

# -- Response codes (RFC 5804 §1.3) --
AUTH_TOO_WEAK: Final = "AUTH-TOO-WEAK"  # the mechanism is too weak for this account
ENCRYPT_NEEDED: Final = "ENCRYPT-NEEDED"  # authenticate under TLS first (STARTTLS)
QUOTA: Final = "QUOTA"
QUOTA_MAXSCRIPTS: Final = "QUOTA/MAXSCRIPTS"  # too many scripts
QUOTA_MAXSIZE: Final = "QUOTA/MAXSIZE"  # the script (or the account's scripts) too large
REFERRAL: Final = "REFERRAL"
SASL: Final = "SASL"  # additional data with success (RFC 5804 §2.1)
TRANSITION_NEEDED: Final = "TRANSITION-NEEDED"
TRYLATER: Final = "TRYLATER"  # a temporary failure: try the same command later
ACTIVE: Final = "ACTIVE"  # the command cannot be done on the active script
NONEXISTENT: Final = "NONEXISTENT"  # no script of that name
ALREADYEXISTS: Final = "ALREADYEXISTS"  # a script of that name exists already
WARNINGS: Final = "WARNINGS"  # OK, but the script has warnings (RFC 5804 §1.3)
TAG: Final = "TAG"  # NOOP's echo (RFC 5804 §2.13)


def _safe_quoted(data: bytes) -> bool:
    return len(data) <= MAX_QUOTED_OCTETS and not any(c in data for c in b"\r\n\0")


def encode_string(text: str | bytes) -> bytes:
    """A ManageSieve string (RFC 5804 §4): quoted when it may be (no CR, LF or NUL, at most
    1024 octets; "\\" and '"' escaped), else ``literal-s2c``: ``{N}`` CRLF and the octets."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if _safe_quoted(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


@dataclass(frozen=True, slots=True)
class Response:
    kind: Literal["OK", "NO", "BYE"]
    text: str = ""
    code: str = ""  # one of the codes above, "" for none
    code_arg: str | None = None  # SASL, TAG and REFERRAL carry a string (RFC 5804 §4)

    @property
    def ok(self) -> bool:
        return self.kind == "OK"

    def encode(self) -> bytes:
        out = self.kind.encode()
        if self.code:
            out += b" (" + self.code.encode()
            if self.code_arg is not None:
                out += b" " + encode_string(self.code_arg)
            out += b")"
        if self.text:
            out += b" " + encode_string(self.text)
        return out + b"\r\n"


class ResponseError(Exception):
    """Raised where a rule refuses a command; caught at the command boundary and sent."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.text)
        self.response = response


def ok(text: str = "", code: str = "", code_arg: str | None = None) -> Response:
    return Response("OK", text, code, code_arg)


def no(text: str, code: str = "", code_arg: str | None = None) -> Response:
    return Response("NO", text, code, code_arg)


def bye(text: str, code: str = "") -> Response:
    return Response("BYE", text, code)


# -- What the core sends itself (protocols/managesieve/server.py) --
DONE = ok("Done")
NOOP_DONE = ok("Done")
LOGOUT_OK = ok("Logout completed")  # RFC 5804 §2.3: OK, then the server closes
BEGIN_TLS = ok("Begin TLS negotiation now")  # RFC 5804 §2.2
UNAUTHENTICATED = ok("Unauthenticate completed")  # RFC 5804 §2.14.1
NEED_LOGIN = no("Authenticate first (AUTHENTICATE)")
ALREADY_LOGGED_IN = no("Already authenticated")
UNKNOWN_COMMAND = no("Unknown command")
NOT_UTF8 = no("Strings must be UTF-8")
LINE_TOO_LONG = no("Command line too long")
TOO_MANY_ERRORS = bye("Too many errors; closing the connection")
TLS_ALREADY_ACTIVE = no("TLS is active already")  # RFC 5804 §2.2: only once
TLS_UNAVAILABLE = no("TLS is not available here")
ENCRYPT_FIRST = no("Authentication needs TLS: send STARTTLS first", ENCRYPT_NEEDED)
UNKNOWN_MECHANISM = no("Unknown or unoffered SASL mechanism")
AUTH_CANCELLED = no("Authentication cancelled")  # RFC 5804 §2.1: the client sent "*"
AUTH_FAILED = no("Authentication failed")
BAD_BASE64 = no("SASL data must be base64")
TOO_MANY_AUTH_FAILURES = bye("Too many authentication failures; closing the connection")
SHUTTING_DOWN = bye("Server shutting down", TRYLATER)
IDLE_TIMEOUT = bye("Idle for too long; closing the connection")
TOO_MANY_CONNECTIONS = bye("Too many connections from your address; try again later", TRYLATER)
SERVER_BUSY = bye("Too many connections; try again later", TRYLATER)
