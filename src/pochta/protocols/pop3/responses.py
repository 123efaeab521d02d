"""POP3 status lines: ``+OK`` or ``-ERR``, an optional response code and text, with names for
the ones pochta sends.

RFC 1939 §3 (status indicators), RFC 2449 §8 (extended response codes in brackets after
``-ERR``), RFC 3206 (``SYS/TEMP``, ``SYS/PERM``, ``AUTH``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Response:
    ok: bool  # "+OK" or "-ERR" (RFC 1939 §3)
    text: str  # one line; no CR or LF
    # RFC 2449 §8: an extended response code such as "IN-USE", "AUTH", "SYS/TEMP"; "" for
    # none. Only sent with -ERR (RFC 2449 §8: "a response code ... after the -ERR").
    code: str = ""

    def line(self) -> str:
        """The status line without CRLF."""
        status = "+OK" if self.ok else "-ERR"
        code = f"[{self.code}] " if self.code and not self.ok else ""
        return f"{status} {code}{self.text}" if self.text or code else status

    def encode(self) -> bytes:
        return f"{self.line()}\r\n".encode()

    def __str__(self) -> str:
        return self.line()


class ResponseError(Exception):
    """Raised where a rule refuses a command; caught at the command boundary and sent."""

    def __init__(self, response: Response) -> None:
        super().__init__(str(response))
        self.response = response


def ok(text: str) -> Response:
    return Response(True, text)


def err(text: str, code: str = "") -> Response:
    return Response(False, text, code)


# -- Response codes (RFC 2449 §8.1, RFC 3206 §4-§5) --
IN_USE = "IN-USE"  # RFC 2449 §8.1.2: the maildrop is locked by another session
AUTH = "AUTH"  # RFC 3206 §5: the credentials are wrong (or not allowed here)
SYS_TEMP = "SYS/TEMP"  # RFC 3206 §4: a temporary system problem; try later
SYS_PERM = "SYS/PERM"  # RFC 3206 §4: a permanent system problem; call the admin

# -- What the core sends itself (protocols/pop3/server.py) --
GREETING = ok("pochta POP3 ready")  # RFC 1939 §4; no APOP timestamp: APOP is not offered
CAPA_FOLLOWS = ok("Capability list follows")  # RFC 2449 §5
BEGIN_TLS = ok("Begin TLS negotiation")  # RFC 2595 §4
USER_OK = ok("Send PASS")  # RFC 1939 §7: never says whether the user exists
QUIT_AUTHORIZATION = ok("pochta POP3 server signing off")  # RFC 1939 §4
NOOP_OK = ok("")  # RFC 1939 §5 NOOP: "+OK"
MESSAGE_DELETED = ok("Message deleted")  # RFC 1939 §5 DELE
TOP_FOLLOWS = ok("Top of message follows")  # RFC 1939 §7 TOP
UIDL_FOLLOWS = ok("Unique-id listing follows")  # RFC 1939 §7 UIDL
MECHANISMS_FOLLOW = ok("Authentication mechanisms follow")
UNKNOWN_COMMAND = err("Unknown command")  # RFC 1939 §3: -ERR for unknown commands
NOT_UTF8 = err("Command is not valid UTF-8")
LINE_TOO_LONG = err("Command line too long")  # RFC 2449 §4: 255 octets
TOO_MANY_LONG_LINES = err("Too many overlong command lines, closing connection")
TOO_MANY_ERRORS = err("Too many errors, closing connection")
NEED_LOGIN = err("Log in first, with USER/PASS or AUTH")  # RFC 1939 §4
ALREADY_LOGGED_IN = err("Already logged in")  # RFC 1939 §5
NEED_USER = err("Send USER first")  # RFC 1939 §7 PASS: "immediately after a successful USER"
# RFC 3206 §5 [AUTH]: no password in the clear; STLS (RFC 2595 §4) or POP3S (RFC 8314).
PLAINTEXT_REFUSED = err(
    "Plaintext authentication is not allowed on this connection; "
    "issue STLS first, or connect to the POP3S port",
    AUTH,
)
APOP_UNSUPPORTED = err("APOP is not supported; use USER/PASS or AUTH over TLS")
TLS_ALREADY_ACTIVE = err("TLS is already active")  # RFC 2595 §4
TLS_UNAVAILABLE = err("STLS is not available here", SYS_TEMP)  # RFC 2595 §4
UNKNOWN_MECHANISM = err("Unsupported authentication mechanism")  # RFC 5034 §4
AUTH_CANCELLED = err("Authentication cancelled")  # RFC 5034 §4: the client's "*"
BAD_BASE64 = err("Cannot decode base64")  # RFC 5034 §4
NO_SUCH_MESSAGE = err("No such message")  # RFC 1939 §5
MESSAGE_ALREADY_DELETED = err("Message already deleted")  # RFC 1939 §5 DELE
SHUTTING_DOWN = err("Server shutting down, try again later", SYS_TEMP)

# -- What the glue sends (access/pop3.py) --
AUTH_FAILED = err("Authentication failed", AUTH)  # RFC 3206 §5
IN_USE_RESPONSE = err("Maildrop is locked by another session; try again later", IN_USE)
MAILDROP_UNAVAILABLE = err("Cannot open the maildrop now; try again later", SYS_TEMP)
MESSAGE_UNAVAILABLE = err("Cannot read the message now; try again later", SYS_TEMP)
MESSAGE_GONE = err("Message was removed by another client")
TOO_MANY_CONNECTIONS = err("Too many connections from your address", SYS_TEMP)
SERVER_BUSY = err("Too many connections, try again later", SYS_TEMP)  # pop3.max_connections
# The last of pop3.max_auth_failures refused logins: RFC 3206 §5 [AUTH], then the close.
TOO_MANY_AUTH_FAILURES = err("Authentication failed; too many failures, closing connection", AUTH)
LOGIN_TIMEOUT = err("Login took too long, closing connection")  # pop3.login_timeout_seconds
COMMAND_TIMEOUT = err("Command line took too long, closing connection")
# RFC 1939 §6: "-ERR some deleted messages not removed"; here none are (all or nothing).
UPDATE_FAILED = err("Deleted messages were not removed; nothing was changed", SYS_TEMP)
