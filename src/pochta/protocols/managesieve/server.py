"""The sans-IO ManageSieve server (RFC 5804): bytes in, events out, responses as bytes.

No sockets, no asyncio, no clock. The glue is one loop (STYLE.md §2, like h11)::

    conn = ManageSieveServerConnection(capabilities, tls_active=..., tls_available=...)
    conn.greet()
    while not conn.closed:
        write(conn.data_to_send())
        conn.receive_data(await read())           # b"" at EOF
        while (event := conn.next_event()) is not NEED_DATA:
            if event.needs_reply:
                answer(event)                      # respond, script_list, script, ...
                if conn.state is State.TLS:
                    write(conn.data_to_send()); await handshake(); conn.tls_started()
    write(conn.data_to_send())

Who answers what:

* the core, with no event: CAPABILITY, NOOP (with its TAG), every syntax error, unknown or
  out-of-state command, AUTHENTICATE before TLS, and the limits;
* the core, with a notification event (``needs_reply`` False): LOGOUT, UNAUTHENTICATE;
* the glue: everything about accounts and scripts (see ``events.py``).

Choices made here, and why:

* Lines end with CRLF (RFC 5804 §4); a bare LF is taken as one too, as Dovecot does: nothing
  here is stored as a line, so no smuggling is possible, and hand-typed sessions work.
* Literals: ``{N+}`` and ``{N}`` are both taken, and neither gets a continuation: RFC 5804
  §4 has none (``{N}`` is the form the server sends, old clients send it too).
* A command line outside its literals may have ``[managesieve] max_line_bytes``; a literal
  ``max_literal_bytes`` (the largest script plus a margin) once authenticated, and
  ``max_line_bytes`` before (it can only be a SASL answer then). A longer line is dropped to
  its end and answered NO; a larger literal is skipped (its octets are on their way: RFC
  5804 §4 literals are never refused before they come) and answered NO (QUOTA/MAXSIZE).
* Every NO the core sends for the client's syntax counts as an error; ``max_errors`` of them
  end the session with BYE (a client sending garbage is not going to recover).
* AUTHENTICATE is refused with NO (ENCRYPT-NEEDED) unless TLS is active or the glue allows
  plaintext (loopback, ``managesieve.allow_plaintext_on_loopback``), and the SASL capability
  is then empty (RFC 5804 §1.7 asks for it; Dovecot also lists none before TLS).
* ``max_auth_failures`` failed logins on one connection end it with BYE (Dovecot: 3).
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from typing import Final, Literal

from pochta.protocols.managesieve import responses as R
from pochta.protocols.managesieve.events import (
    Authenticate,
    AuthResponse,
    CheckScript,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    Logout,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    Unauthenticate,
)
from pochta.protocols.managesieve.parse import (
    Atom,
    Bad,
    Command,
    Incomplete,
    LiteralTooLarge,
    Token,
    TooLong,
    parse_command,
    parse_string_line,
)
from pochta.protocols.managesieve.responses import Response, ResponseError, encode_string

__all__ = [
    "NEED_DATA",
    "Capabilities",
    "LocalProtocolError",
    "ManageSieveServerConnection",
    "NeedData",
    "State",
]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
NeedData = Literal[_Sentinel.NEED_DATA]

MAX_LINE_BYTES: Final = 8192
MAX_LITERAL_BYTES: Final = 1024 * 1024 + 4096
MAX_ERRORS: Final = 10
MAX_AUTH_FAILURES: Final = 3  # Dovecot's login processes close after 3 failed attempts


class LocalProtocolError(RuntimeError):
    """The glue used the connection wrongly (answered nothing, answered twice...)."""


class State(enum.Enum):
    CONNECTED = "connected"  # greet() not called yet
    NOT_AUTHENTICATED = "not-authenticated"  # RFC 5804 §1.5... before AUTHENTICATE
    SASL = "sasl"  # a challenge was sent; the next line is the client's answer (§2.1)
    TLS = "tls"  # STARTTLS got OK; waiting for tls_started(), input dropped (§2.2)
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the server has (RFC 5804 §1.7); the core shows what fits the session's state."""

    implementation: str = "pochta"
    sieve: tuple[str, ...] = ()  # the extensions `require` accepts
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "PLAIN", "LOGIN")
    max_redirects: int | None = None


_N, _A = State.NOT_AUTHENTICATED, State.AUTHENTICATED

# -- The state table (STYLE.md §2): each command, the states it is valid in, and its
# arguments ("s" string, "n" number, "?" the one before is optional) --
_COMMANDS: Final[dict[str, tuple[frozenset[State], str, str]]] = {
    "CAPABILITY": (frozenset({_N, _A}), "", "CAPABILITY"),  # §2.4
    "LOGOUT": (frozenset({_N, _A}), "", "LOGOUT"),  # §2.3
    "NOOP": (frozenset({_N, _A}), "s?", "NOOP [tag]"),  # §2.13
    "STARTTLS": (frozenset({_N}), "", "STARTTLS"),  # §2.2: before authentication only
    "AUTHENTICATE": (frozenset({_N}), "ss?", 'AUTHENTICATE "mechanism" ["initial"]'),  # §2.1
    "UNAUTHENTICATE": (frozenset({_A}), "", "UNAUTHENTICATE"),  # §2.14.1
    "HAVESPACE": (frozenset({_A}), "sn", 'HAVESPACE "name" size'),  # §2.5
    "PUTSCRIPT": (frozenset({_A}), "ss", 'PUTSCRIPT "name" {N+} script'),  # §2.6
    "CHECKSCRIPT": (frozenset({_A}), "s", "CHECKSCRIPT {N+} script"),  # §2.12
    "LISTSCRIPTS": (frozenset({_A}), "", "LISTSCRIPTS"),  # §2.7
    "SETACTIVE": (frozenset({_A}), "s", 'SETACTIVE "name"'),  # §2.8
    "GETSCRIPT": (frozenset({_A}), "s", 'GETSCRIPT "name"'),  # §2.9
    "DELETESCRIPT": (frozenset({_A}), "s", 'DELETESCRIPT "name"'),  # §2.10
    "RENAMESCRIPT": (frozenset({_A}), "ss", 'RENAMESCRIPT "old" "new"'),  # §2.11.1
}
_OUT_OF_STATE: Final[dict[State, Response]] = {_N: R.NEED_LOGIN, _A: R.ALREADY_LOGGED_IN}

# The transitions. Commands the core answers change state where they are handled; an
# event's change waits for the glue's answer:
#   greet()                           CONNECTED -> NOT_AUTHENTICATED
#   StartTLS + start_tls()            -> TLS; tls_started() -> NOT_AUTHENTICATED (§2.2)
#   Authenticate/AuthResponse + auth_challenge() -> SASL; its answer -> AuthResponse
#   Authenticate/AuthResponse + authenticated() -> AUTHENTICATED; + respond(NO) -> NOT_AUTH..
#   UNAUTHENTICATE                    AUTHENTICATED -> NOT_AUTHENTICATED (§2.14.1)
#   LOGOUT, EOF, timeout(), shutdown(), too many errors -> CLOSED


class ManageSieveServerConnection:
    """One ManageSieve server connection."""

    def __init__(
        self,
        capabilities: Capabilities,
        *,
        tls_active: bool = False,
        tls_available: bool = True,
        plaintext_login: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_literal_bytes: int = MAX_LITERAL_BYTES,
        max_errors: int = MAX_ERRORS,
        max_auth_failures: int = MAX_AUTH_FAILURES,
    ) -> None:
        self._caps = capabilities
        self._mechanisms = tuple(m.upper() for m in capabilities.mechanisms)
        self._tls_active = tls_active
        self._tls_available = tls_available
        self._plaintext_login = plaintext_login
        self._max_line_bytes = max_line_bytes
        self._max_literal_bytes = max_literal_bytes
        self._max_errors = max_errors
        self._max_auth_failures = max_auth_failures
        self._auth_failures = 0
        self._errors = 0
        self._state = State.CONNECTED
        self._in = bytearray()
        self._out = bytearray()
        self._need = 0  # parse again only once the buffer holds this many octets
        self._skip = 0  # octets of a too-large literal still to drop
        self._drop_line = False  # drop input up to and including the next LF
        self._eof = False
        self._pending: Event | None = None
        self.user: str | None = None

    # -- public API --

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def in_command(self) -> bool:
        """Part of a command is in and the rest is to come (a line without its end, a
        literal not all here, a refused literal being dropped): the glue then asks for an
        immediate TCP ACK (pochta.quick_ack), so that a client that wrote the command in two
        pieces is not held by Nagle's algorithm and the delayed ACK."""
        return bool(self._in) or self._skip > 0 or self._drop_line

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def login_allowed(self) -> bool:
        """AUTHENTICATE may be used now: under TLS, or where the glue allows plaintext."""
        return self._tls_active or self._plaintext_login

    def greet(self) -> None:
        """RFC 5804 §1.7: the capabilities, then OK."""
        if self._state is not State.CONNECTED:
            raise LocalProtocolError("greet() once, before anything else")
        self._state = State.NOT_AUTHENTICATED
        self._send_capabilities(R.ok(f"{self._caps.implementation} ManageSieve ready"))

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" means the client closed its side."""
        if self._state is State.TLS and not data:
            self._close()
        if self._state in (State.CLOSED, State.TLS):
            return  # RFC 5804 §2.2: nothing sent before the handshake is kept
        if not data:
            self._eof = True
        self._in += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Answer an event that ``needs_reply`` first."""
        if self._pending is not None:
            raise LocalProtocolError(f"answer {self._pending!r} first")
        while True:
            if self._state not in (State.NOT_AUTHENTICATED, State.SASL, State.AUTHENTICATED):
                return NEED_DATA
            if not self._discard():
                return self._starved()
            if len(self._in) < self._need:
                return self._starved()
            event = self._step()
            if event is NEED_DATA:
                return self._starved()
            if event is not None:
                if event.needs_reply:
                    self._pending = event
                return event

    # -- the glue's answers --

    def respond(self, response: Response) -> None:
        """Answer the pending event with OK or NO (OK only where no data goes with it)."""
        event = self._take(Event)
        if isinstance(event, Authenticate | AuthResponse):
            if response.ok:
                raise LocalProtocolError("answer a login with authenticated()")
            self._state = State.NOT_AUTHENTICATED
            if response.kind == "NO" and not response.code:
                self._auth_failures += 1
                if self._auth_failures >= self._max_auth_failures:
                    self._write(R.TOO_MANY_AUTH_FAILURES)
                    self._close()
                    return
        self._write(response)

    def start_tls(self) -> None:
        """Accept a pending StartTLS: OK, then drop every byte until ``tls_started``."""
        self._take(StartTLS)
        self._write(R.BEGIN_TLS)  # RFC 5804 §2.2
        self._state = State.TLS
        self._in.clear()

    def tls_started(self) -> None:
        """The handshake succeeded. RFC 5804 §2.2: the server re-issues the capabilities,
        followed by OK."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_started() only after start_tls()")
        self._reset_input()
        self._tls_active = True
        self._state = State.NOT_AUTHENTICATED
        self._send_capabilities(R.ok("TLS negotiation successful"))

    def auth_challenge(self, data: bytes) -> None:
        """RFC 5804 §2.1: a challenge is a string of base64, alone on its line."""
        self._take(Authenticate, AuthResponse)
        self._out += encode_string(base64.b64encode(data)) + b"\r\n"
        self._state = State.SASL

    def authenticated(self, user: str, final_data: bytes | None = None) -> None:
        """The client proved who it is. RFC 5804 §2.1: additional data with success goes in
        the OK's SASL response code."""
        self._take(Authenticate, AuthResponse)
        self.user = user
        self._state = State.AUTHENTICATED
        if final_data:
            self._write(R.ok("Logged in", R.SASL, base64.b64encode(final_data).decode()))
        else:
            self._write(R.ok("Logged in"))

    def script_list(self, scripts: list[tuple[str, bool]]) -> None:
        """Answer ListScripts: one line per script, ``ACTIVE`` after the active one (§2.7)."""
        self._take(ListScripts)
        for name, active in scripts:
            self._out += encode_string(name) + (b" ACTIVE\r\n" if active else b"\r\n")
        self._write(R.ok("Listscripts completed"))

    def script(self, text: str) -> None:
        """Answer GetScript with the script, as a literal, then OK (RFC 5804 §2.9)."""
        self._take(GetScript)
        data = text.encode("utf-8")
        self._out += b"{%d}\r\n" % len(data) + data + b"\r\n"
        self._write(R.ok("Getscript completed"))

    def timeout(self) -> None:
        """The idle timer ran out: BYE and close."""
        if not self.closed:
            self._write(R.IDLE_TIMEOUT)
        self._close()

    def shutdown(self) -> None:
        """The server is stopping: BYE (TRYLATER) and close."""
        if not self.closed:
            self._write(R.SHUTTING_DOWN)
        self._close()

    # -- capabilities --

    def capabilities(self) -> list[bytes]:
        """The capability lines (RFC 5804 §1.7) for the session's state now."""
        caps = self._caps
        lines = [encode_string("IMPLEMENTATION") + b" " + encode_string(caps.implementation)]
        if self._state is not State.AUTHENTICATED:
            mechanisms = " ".join(self._mechanisms) if self.login_allowed else ""
            lines.append(encode_string("SASL") + b" " + encode_string(mechanisms))
        lines.append(encode_string("SIEVE") + b" " + encode_string(" ".join(caps.sieve)))
        if self._tls_available and not self._tls_active and self._state is not _A:
            lines.append(encode_string("STARTTLS"))  # §1.7: never once TLS is active
        if caps.max_redirects is not None:
            lines.append(
                encode_string("MAXREDIRECTS") + b" " + encode_string(str(caps.max_redirects))
            )
        if self.user is not None and self._state is _A:
            lines.append(encode_string("OWNER") + b" " + encode_string(self.user))  # §1.7
        lines.append(encode_string("UNAUTHENTICATE"))  # §2.14.1
        lines.append(encode_string("VERSION") + b" " + encode_string("1.0"))  # §1.7
        return lines

    # -- input --

    def _starved(self) -> NeedData:
        if self._eof:
            self._close()
        return NEED_DATA

    def _reset_input(self) -> None:
        self._in.clear()
        self._need = 0
        self._skip = 0
        self._drop_line = False

    def _discard(self) -> bool:
        """Drop what a refused literal or line left; False when the buffer ran out first."""
        buf = self._in
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
            if self._skip:
                return False
        if self._drop_line:
            i = buf.find(b"\n")
            if i < 0:
                buf.clear()
                return False
            del buf[: i + 1]
            self._drop_line = False
        return True

    def _step(self) -> Event | NeedData | None:
        sasl = self._state is State.SASL
        literal_limit = (
            self._max_literal_bytes if self._state is State.AUTHENTICATED else self._max_line_bytes
        )
        parse = parse_string_line if sasl else parse_command
        parsed = parse(
            self._in, max_line_bytes=self._max_line_bytes, max_literal_bytes=literal_limit
        )
        if isinstance(parsed, Incomplete):
            self._need = parsed.need
            return NEED_DATA
        self._need = 0
        if sasl and not isinstance(parsed, Command):
            self._state = State.NOT_AUTHENTICATED  # the exchange ends with the error
        if isinstance(parsed, Bad):
            del self._in[: parsed.at]
            self._drop_line = True
            self._error(R.no(f"Syntax error: {parsed.message}"))
            return None
        if isinstance(parsed, TooLong):
            del self._in[: parsed.at]
            self._drop_line = True
            self._error(R.LINE_TOO_LONG)
            return None
        if isinstance(parsed, LiteralTooLarge):
            del self._in[: parsed.at]
            self._skip = parsed.size
            self._drop_line = True
            if self._state is State.AUTHENTICATED:
                self._error(
                    R.no(
                        f"A literal may have at most {literal_limit} octets here "
                        f"({parsed.size} sent)",
                        R.QUOTA_MAXSIZE,
                    )
                )
            else:
                self._error(R.no(f"A literal may have at most {literal_limit} octets before login"))
            return None
        del self._in[: parsed.end]
        if sasl:
            return self._sasl_answer(parsed.tokens[0])
        return self._command(parsed.tokens)

    def _sasl_answer(self, token: Token) -> AuthResponse | None:
        assert isinstance(token, bytes)
        self._state = State.NOT_AUTHENTICATED
        if token == b"*":
            self._write(R.AUTH_CANCELLED)  # RFC 5804 §2.1: the client cancels with "*"
            return None
        try:
            data = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            self._error(R.BAD_BASE64)
            return None
        self._state = State.SASL
        return AuthResponse(data)

    # -- commands --

    def _command(self, tokens: list[Token]) -> Event | None:
        if not tokens:
            return None  # an empty line: nothing to answer
        name = tokens[0]
        if not isinstance(name, Atom):
            self._error(R.no("Syntax error: a command starts with its name"))
            return None
        verb = name.text.upper()  # RFC 5804 §4: command names are case-insensitive
        spec = _COMMANDS.get(verb)
        if spec is None:
            self._error(R.UNKNOWN_COMMAND)
            return None
        valid, shape, syntax = spec
        if self._state not in valid:
            self._error(_OUT_OF_STATE[self._state])
            return None
        try:
            args = _arguments(tokens[1:], shape, syntax)
            return self._dispatch(verb, args)
        except ResponseError as exc:
            self._error(exc.response)
            return None

    def _dispatch(self, verb: str, args: list[str | int]) -> Event | None:
        if verb == "CAPABILITY":
            self._send_capabilities(R.ok("Capability completed"))  # §2.4
        elif verb == "NOOP":
            if args:  # §2.13: the tag comes back in the TAG response code
                self._write(R.ok("Done", R.TAG, str(args[0])))
            else:
                self._write(R.NOOP_DONE)
        elif verb == "LOGOUT":
            self._write(R.LOGOUT_OK)  # §2.3: OK, then close
            self._close()
            return Logout()
        elif verb == "STARTTLS":
            if self._tls_active:
                raise ResponseError(R.TLS_ALREADY_ACTIVE)
            if not self._tls_available:
                raise ResponseError(R.TLS_UNAVAILABLE)
            return StartTLS()
        elif verb == "AUTHENTICATE":
            return self._authenticate(args)
        elif verb == "UNAUTHENTICATE":
            self.user = None
            self._state = State.NOT_AUTHENTICATED  # §2.14.1
            self._write(R.UNAUTHENTICATED)
            return Unauthenticate()
        elif verb == "HAVESPACE":
            return HaveSpace(str(args[0]), int(args[1]))
        elif verb == "PUTSCRIPT":
            return PutScript(str(args[0]), str(args[1]))
        elif verb == "CHECKSCRIPT":
            return CheckScript(str(args[0]))
        elif verb == "LISTSCRIPTS":
            return ListScripts()
        elif verb == "SETACTIVE":
            return SetActive(str(args[0]))
        elif verb == "GETSCRIPT":
            return GetScript(str(args[0]))
        elif verb == "DELETESCRIPT":
            return DeleteScript(str(args[0]))
        elif verb == "RENAMESCRIPT":
            return RenameScript(str(args[0]), str(args[1]))
        return None

    def _authenticate(self, args: list[str | int]) -> Authenticate:
        if not self.login_allowed:
            raise ResponseError(R.ENCRYPT_FIRST)  # RFC 5804 §1.3 ENCRYPT-NEEDED
        mechanism = str(args[0]).upper()
        if mechanism not in self._mechanisms:
            raise ResponseError(R.UNKNOWN_MECHANISM)
        initial: bytes | None = None
        if len(args) == 2:
            try:
                initial = base64.b64decode(str(args[1]), validate=True)
            except (binascii.Error, ValueError):
                raise ResponseError(R.BAD_BASE64) from None
        return Authenticate(mechanism, initial)

    # -- output and bookkeeping --

    def _send_capabilities(self, done: Response) -> None:
        for line in self.capabilities():
            self._out += line + b"\r\n"
        self._write(done)

    def _take(self, *kinds: type[Event]) -> Event:
        event = self._pending
        if event is None or not isinstance(event, kinds):
            names = ", ".join(k.__name__ for k in kinds)
            raise LocalProtocolError(f"no pending {names} to answer (pending: {event!r})")
        self._pending = None
        return event

    def _write(self, response: Response) -> None:
        self._out += response.encode()

    def _error(self, response: Response) -> None:
        """A NO the core sends for the client's input; too many of them end the session."""
        self._write(response)
        self._errors += 1
        if self._errors >= self._max_errors and not self.closed:
            self._write(R.TOO_MANY_ERRORS)
            self._close()

    def _close(self) -> None:
        self._state = State.CLOSED
        self._pending = None
        self._reset_input()


def _arguments(tokens: list[Token], shape: str, syntax: str) -> list[str | int]:
    """The arguments against the command's shape: strings (UTF-8) and numbers."""
    wanted = [
        (c, i + 1 < len(shape) and shape[i + 1] == "?") for i, c in enumerate(shape) if c != "?"
    ]
    required = sum(1 for _, optional in wanted if not optional)
    if not required <= len(tokens) <= len(wanted):
        raise ResponseError(R.no(f"Syntax: {syntax}"))
    out: list[str | int] = []
    for token, (kind, _) in zip(tokens, wanted, strict=False):
        if kind == "n":
            # RFC 5804 §4: number = 1*DIGIT (an atom), 0 .. 4294967295
            if not isinstance(token, Atom) or not token.text.isdigit() or not token.text.isascii():
                raise ResponseError(R.no(f"Syntax: {syntax} (a number)"))
            out.append(int(token.text))
            continue
        if isinstance(token, Atom):
            raise ResponseError(R.no(f'Syntax: {syntax} (strings are "quoted" or literals)'))
        try:
            out.append(token.decode("utf-8"))
        except UnicodeDecodeError:
            raise ResponseError(R.NOT_UTF8) from None
    return out
