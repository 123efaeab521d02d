"""The sans-IO POP3 server: bytes in, events out, responses as bytes.

No sockets, no asyncio, no clock. The glue is one loop (STYLE.md §2, like h11)::

    conn = POP3ServerConnection(tls_active=..., tls_available=..., plaintext_login=...)
    conn.greet()
    while not conn.closed:
        write(conn.data_to_send())
        conn.receive_data(await read())           # b"" at EOF
        while (event := conn.next_event()) is not NEED_DATA:
            if event.needs_reply:
                answer(event)                      # open_maildrop, send_message, reject, ...
                if conn.state is State.TLS:
                    write(conn.data_to_send()); await handshake(); conn.tls_started()
    write(conn.data_to_send())

Who answers what:

* the core, with no event: CAPA, USER, STAT, LIST, UIDL, DELE, NOOP, RSET, AUTH without a
  mechanism, every syntax error, unknown or out-of-state command, and the limits;
* the core, with a notification event (``needs_reply`` False): QUIT before login (``Quit``);
* the glue: ``Login`` (USER + PASS), ``AuthStart``/``AuthResponse``, ``StartTLS``,
  ``Retrieve`` (RETR and TOP) and ``Update`` (QUIT after login).

The maildrop (message numbers, DELE marks, what RETR sent) lives in the core
(``maildrop.py``): the glue hands over a snapshot at login and gets the marks back in
``Update``. Responses are queued in order, so a pipelined batch (RFC 2449 §6.6) gets its
responses in order.

Choices made here, and why:

* Lines end with CRLF (RFC 1939 §3); a bare LF is also taken as a line end, as Dovecot does:
  nothing the client sends is ever stored, so there is no smuggling to fear, and hand-typed
  sessions work.
* A command line may have 512 octets with its CRLF: RFC 2449 §4 allows 255, the rest is a
  margin for long user names and passwords. AUTH lines and SASL responses may have 12288: a
  SASL response is not a command, and RFC 5034 §4 only asks clients to keep AUTH itself
  within 255 octets (by leaving the initial response out); we are lenient with clients that
  do not. A longer line is read to its end, dropped and answered "-ERR"; after
  ``max_long_lines`` of them the connection closes, as it does after ``max_errors`` "-ERR"
  responses.
* USER, PASS and AUTH are refused ("-ERR [AUTH]", RFC 3206 §5) unless the connection is
  under TLS (STLS, RFC 2595 §4, or implicit TLS, RFC 8314) or the glue says plaintext is
  allowed here (loopback, ``pop3.allow_plaintext_on_loopback``): no password in the clear.
  CAPA then lists neither USER nor SASL (RFC 2449 §6.2, §6.3).
* The USER reply never says whether the user exists (RFC 1939 §7 allows "-ERR"; that would
  tell an attacker which names to try).
* The idle timer ends the session without a response and without the UPDATE state (RFC 1939
  §3); so does a dropped connection. The glue's login and command-line timers (bytes that
  trickle in reset only the idle timer) answer "-ERR" with the reason, then close, with no
  UPDATE either (``timeout(response)``).
* Brute force on one connection: the ``max_auth_failures``-th login refused with [AUTH] is
  answered "-ERR [AUTH] ... closing connection" and the connection closes (Dovecot's login
  processes close after 3 failures). [IN-USE] and [SYS/TEMP] refusals do not count.
"""

from __future__ import annotations

import base64
import enum
from typing import Final, Literal

from pochta.protocols.pop3 import responses as R
from pochta.protocols.pop3.events import (
    AuthResponse,
    AuthStart,
    Event,
    Login,
    Quit,
    Retrieve,
    StartTLS,
    Update,
)
from pochta.protocols.pop3.maildrop import Maildrop, MaildropMessage
from pochta.protocols.pop3.parse import (
    decode_base64,
    dot_stuff,
    multiline,
    parse_number,
    split_command,
    top_of,
)
from pochta.protocols.pop3.responses import Response, ResponseError

__all__ = [
    "AUTH_LINE_BYTES",
    "MAX_COMMAND_BYTES",
    "NEED_DATA",
    "LocalProtocolError",
    "NeedData",
    "POP3ServerConnection",
    "State",
]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""``next_event`` has nothing more until ``receive_data`` is called (or the connection is
closed: check ``closed``)."""
NeedData = Literal[_Sentinel.NEED_DATA]

MAX_COMMAND_BYTES: Final = 512  # RFC 2449 §4 says 255 incl. CRLF; see the module docstring
AUTH_LINE_BYTES: Final = 12288  # AUTH lines and SASL responses; see the module docstring
MAX_ERRORS: Final = 20
MAX_LONG_LINES: Final = 3
MAX_AUTH_FAILURES: Final = 3  # Dovecot's login processes close after 3 failed attempts


class LocalProtocolError(RuntimeError):
    """The glue used the connection wrongly (answered nothing, answered twice, started TLS
    without STLS...). A bug in our code, never the client's doing."""


class State(enum.Enum):
    CONNECTED = "connected"  # greet() not called yet; input is kept for later
    AUTHORIZATION = "authorization"  # RFC 1939 §4
    AUTH = "auth"  # a "+ " challenge was sent; the next line is a SASL response (RFC 5034 §4)
    TLS = "tls"  # STLS got "+OK"; waiting for tls_started(), input is dropped (RFC 2595 §4)
    TRANSACTION = "transaction"  # RFC 1939 §5
    UPDATE = "update"  # QUIT in TRANSACTION: the glue is removing messages (RFC 1939 §6)
    CLOSED = "closed"


_A, _T = State.AUTHORIZATION, State.TRANSACTION

# -- The state table (STYLE.md §2: every rule about order lives here) --
#
# Each command and the states it is valid in; elsewhere it gets the response in _OUT_OF_STATE.
_VALID_IN: Final[dict[str, frozenset[State]]] = {
    "CAPA": frozenset({_A, _T}),  # RFC 2449 §5: in both states
    "QUIT": frozenset({_A, _T}),  # RFC 1939 §4, §6
    "USER": frozenset({_A}),  # RFC 1939 §7
    "PASS": frozenset({_A}),  # RFC 1939 §7 (and right after USER: see _command)
    "APOP": frozenset({_A}),  # RFC 1939 §7 (not offered)
    "AUTH": frozenset({_A}),  # RFC 5034 §4
    "STLS": frozenset({_A}),  # RFC 2595 §4
    "STAT": frozenset({_T}),  # RFC 1939 §5
    "LIST": frozenset({_T}),
    "RETR": frozenset({_T}),
    "DELE": frozenset({_T}),
    "NOOP": frozenset({_T}),
    "RSET": frozenset({_T}),
    "TOP": frozenset({_T}),  # RFC 1939 §7
    "UIDL": frozenset({_T}),  # RFC 1939 §7
}
_OUT_OF_STATE: Final[dict[State, Response]] = {_A: R.NEED_LOGIN, _T: R.ALREADY_LOGGED_IN}

# The transitions. Commands answered by the core change state where they are handled; an
# event's state change waits for the glue's answer:
#   greet()                       CONNECTED -> AUTHORIZATION (-ERR greeting: CLOSED)
#   StartTLS + start_tls()        -> TLS; tls_started() -> AUTHORIZATION (RFC 2595 §4)
#   AuthStart/AuthResponse + auth_challenge() -> AUTH; a SASL response -> AuthResponse
#   Login/AuthStart/AuthResponse + open_maildrop() -> TRANSACTION; + reject() -> AUTHORIZATION
#   QUIT in AUTHORIZATION         -> CLOSED (RFC 1939 §4: no UPDATE state)
#   QUIT in TRANSACTION           -> UPDATE; + update_done() or reject() -> CLOSED (§6)
#   EOF, timeout(), shutdown(), too many errors -> CLOSED (RFC 1939 §3: nothing removed)

# Argument counts (RFC 1939 §5, §7; RFC 2449 §5; RFC 2595 §4) and the syntax told on error.
_ARGUMENTS: Final[dict[str, tuple[int, int, str]]] = {
    "CAPA": (0, 0, "CAPA"),
    "QUIT": (0, 0, "QUIT"),
    "STLS": (0, 0, "STLS"),
    "STAT": (0, 0, "STAT"),
    "NOOP": (0, 0, "NOOP"),
    "RSET": (0, 0, "RSET"),
    "LIST": (0, 1, "LIST [msg]"),
    "UIDL": (0, 1, "UIDL [msg]"),
    "RETR": (1, 1, "RETR msg"),
    "DELE": (1, 1, "DELE msg"),
    "TOP": (2, 2, "TOP msg n"),
}


class POP3ServerConnection:
    """One POP3 server connection."""

    def __init__(
        self,
        *,
        tls_active: bool = False,
        tls_available: bool = True,
        plaintext_login: bool = False,
        auth_mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "PLAIN", "LOGIN"),
        implementation: str = "pochta",
        max_command_bytes: int = MAX_COMMAND_BYTES,
        max_errors: int = MAX_ERRORS,
        max_long_lines: int = MAX_LONG_LINES,
        max_auth_failures: int = MAX_AUTH_FAILURES,
    ) -> None:
        self._tls_active = tls_active
        self._tls_available = tls_available
        self._plaintext_login = plaintext_login
        self._mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self._implementation = implementation
        self._max_command_bytes = max_command_bytes
        self._line_limit = max(max_command_bytes, AUTH_LINE_BYTES)
        self._max_errors = max_errors
        self._max_long_lines = max_long_lines
        self._max_auth_failures = max_auth_failures
        self._auth_failures = 0  # logins refused "-ERR [AUTH]" (kept across STLS)
        self._state = State.CONNECTED
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._dropping = False  # a too-long line is being read and dropped
        self._pending: Event | None = None
        self._user: str | None = None  # the name of the USER just before, for PASS
        self._errors = 0
        self._long_lines = 0
        self.maildrop: Maildrop | None = None

    # -- public API --

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is State.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def pending(self) -> Event | None:
        """The event waiting for the glue's answer, if any."""
        return self._pending

    @property
    def login_allowed(self) -> bool:
        """USER/PASS and AUTH may be used now: under TLS, or where the glue allows plaintext
        (loopback)."""
        return self._tls_active or self._plaintext_login

    def greet(self, response: Response = R.GREETING) -> None:
        """Send the greeting (RFC 1939 §4: "+OK"); an "-ERR" greeting closes at once."""
        if self._state is not State.CONNECTED:
            raise LocalProtocolError("greet() once, before anything else")
        self._write(response)
        self._state = State.AUTHORIZATION if response.ok else State.CLOSED

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" means the client closed its side."""
        if self._state is State.TLS and not data:
            self._close()  # the handshake will not happen
        if self._state in (State.CLOSED, State.TLS):
            return  # RFC 2595 §4: nothing sent before the handshake is kept
        if not data:
            self._eof = True
        self._in += data

    def data_to_send(self) -> bytes:
        """The responses queued so far (the caller writes them in order)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Answer an event with ``needs_reply`` before asking
        for the next one."""
        if self._pending is not None:
            raise LocalProtocolError(f"answer {self._pending!r} first")
        while True:
            state = self._state
            if state not in (State.AUTHORIZATION, State.AUTH, State.TRANSACTION):
                return NEED_DATA
            line = self._next_line()
            if line is NEED_DATA:
                if self._eof:
                    self._close()  # RFC 1939 §3: a dropped session never enters UPDATE
                return NEED_DATA
            if line is None:
                continue
            result = self._auth_line(line) if state is State.AUTH else self._command(line)
            if result is not None:
                if result.needs_reply:
                    self._pending = result
                return result

    # -- the glue's answers --

    def start_tls(self) -> None:
        """Accept a pending StartTLS: "+OK", then drop every byte until ``tls_started``."""
        self._take(StartTLS)
        self._write(R.BEGIN_TLS)  # RFC 2595 §4
        self._state = State.TLS
        self._in.clear()  # RFC 2595 §4 / CVE-2011-0411: input sent after STLS is dropped

    def tls_started(self) -> None:
        """The TLS handshake after our "+OK" to STLS succeeded. RFC 2595 §4: the session
        starts over in the AUTHORIZATION state, with nothing kept from before."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_started() only after start_tls()")
        self._in.clear()
        self._dropping = False
        self._tls_active = True
        self._user = None
        self._state = State.AUTHORIZATION

    def auth_challenge(self, data: bytes) -> None:
        """Answer a pending AuthStart/AuthResponse with "+ base64(data)" (RFC 5034 §4)."""
        self._take(AuthStart, AuthResponse)
        self._out += b"+ " + base64.b64encode(data) + b"\r\n"
        self._state = State.AUTH

    def open_maildrop(self, maildrop: Maildrop) -> None:
        """Accept a pending Login/AuthStart/AuthResponse: the client is in, with this snapshot
        of its maildrop (RFC 1939 §4: the TRANSACTION state)."""
        self._take(Login, AuthStart, AuthResponse)
        self.maildrop = maildrop
        self._state = State.TRANSACTION
        # RFC 1939 §7 PASS: "+OK maildrop locked and ready".
        self._write(
            R.ok(f"Logged in, maildrop has {maildrop.count} messages ({maildrop.octets} octets)")
        )

    def send_message(self, content: bytes) -> None:
        """Answer a pending Retrieve with the whole message (CRLF line ends)."""
        event = self._take(Retrieve)
        assert isinstance(event, Retrieve)
        if event.lines is None:
            # RFC 1939 §5 RETR: "+OK" (with the size, as in its example), the message, ".".
            self._write(R.ok(f"{event.size} octets"))
            self._out += dot_stuff(content) + b".\r\n"
            assert self.maildrop is not None
            self.maildrop.mark_retrieved(event.number)
        else:
            self._write(R.TOP_FOLLOWS)  # RFC 1939 §7 TOP
            self._out += dot_stuff(top_of(content, event.lines)) + b".\r\n"

    def update_done(self) -> None:
        """Answer a pending Update: every message marked deleted is gone (RFC 1939 §6)."""
        event = self._take(Update)
        assert isinstance(event, Update)
        assert self.maildrop is not None
        left = self.maildrop.count
        self._write(
            R.ok(f"pochta POP3 server signing off ({len(event.deleted)} deleted, {left} left)")
        )
        self._close()

    def reject(self, response: Response) -> None:
        """Answer any pending event with "-ERR". A refused Update still ends the session
        (RFC 1939 §6: "-ERR some deleted messages not removed", then the connection closes);
        a refused login leaves the client in the AUTHORIZATION state to try again, unless it
        is the ``max_auth_failures``-th refused with [AUTH]: that one closes the connection
        (brute force on one connection; Dovecot closes after 3)."""
        if response.ok:
            raise LocalProtocolError("reject() takes an -ERR response")
        event = self._take(Event)
        if isinstance(event, Update):
            self._write(response)
            self._close()
            return
        if isinstance(event, (Login, AuthStart, AuthResponse)):
            self._state = State.AUTHORIZATION
            if response.code == R.AUTH:  # RFC 3206 §5: wrong credentials
                self._auth_failures += 1
                if self._auth_failures >= self._max_auth_failures:
                    self._write(R.TOO_MANY_AUTH_FAILURES)
                    self._close()
                    return
        self._finish(response)

    def timeout(self, response: Response | None = None) -> None:
        """A timer ran out. The idle timer (no `response`): RFC 1939 §3 "the session does NOT
        enter the UPDATE state -- the server should close the TCP connection without ...
        sending any response". The login and command-line timers are not the autologout
        timer of §3: they say why ("-ERR", `response`) and close, nothing removed either."""
        if response is not None and not self.closed:
            if response.ok:
                raise LocalProtocolError("timeout() takes an -ERR response")
            self._write(response)
        self._close()

    def shutdown(self) -> None:
        """The server is stopping: "-ERR [SYS/TEMP]" and close, nothing removed."""
        if self._state is not State.CLOSED:
            self._write(R.SHUTTING_DOWN)
            self._close()

    # -- CAPA --

    def capabilities(self) -> list[str]:
        """The CAPA list (RFC 2449 §5): exactly what is implemented and allowed now."""
        caps = [
            "TOP",  # RFC 2449 §6.1
            "UIDL",  # RFC 2449 §6.8
            "RESP-CODES",  # RFC 2449 §6.4
            "AUTH-RESP-CODE",  # RFC 3206 §6
            "PIPELINING",  # RFC 2449 §6.6
        ]
        if self._state is not State.TRANSACTION:
            if self.login_allowed:
                caps.append("USER")  # RFC 2449 §6.2: only where USER/PASS may be used
                if self._mechanisms:
                    caps.append("SASL " + " ".join(self._mechanisms))  # RFC 2449 §6.3
            if self._tls_available and not self._tls_active:
                caps.append("STLS")  # RFC 2595 §4; never after TLS has started
        caps.append(f"IMPLEMENTATION {self._implementation}")  # RFC 2449 §6.9
        return caps

    # -- input --

    def _next_line(self) -> bytes | NeedData | None:
        """The next line without its line end; NEED_DATA when there is none yet; None when a
        too-long line was dropped (and answered)."""
        buf = self._in
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) >= self._line_limit:
                # Too long before its end: drop it as it comes, answer at its end.
                self._dropping = True
                buf.clear()
            return NEED_DATA
        end = i - 1 if i > 0 and buf[i - 1] == 0x0D else i  # CRLF, or a bare LF (see above)
        line = bytes(buf[:end])
        del buf[: i + 1]
        if self._dropping or len(line) + 2 > self._line_limit:
            self._dropping = False
            self._too_long()
            return None
        return line

    def _too_long(self) -> None:
        if self._state is State.AUTH:
            self._state = State.AUTHORIZATION  # the exchange ends with the error
        self._long_lines += 1
        self._finish(R.LINE_TOO_LONG)  # RFC 2449 §4
        if self._long_lines >= self._max_long_lines and not self.closed:
            self._write(R.TOO_MANY_LONG_LINES)
            self._close()

    def _auth_line(self, line: bytes) -> AuthResponse | None:
        self._state = State.AUTHORIZATION
        text = line.decode("ascii", "replace")
        if text == "*":
            self._finish(R.AUTH_CANCELLED)  # RFC 5034 §4: the client cancels
            return None
        try:
            data = decode_base64(text)
        except ResponseError as exc:
            self._finish(exc.response)  # RFC 5034 §4: the exchange ends with -ERR
            return None
        self._state = State.AUTH
        return AuthResponse(data)

    # -- commands --

    def _command(self, raw: bytes) -> Event | None:
        user, self._user = self._user, None  # RFC 1939 §7: PASS only right after USER
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._finish(R.NOT_UTF8)
            return None
        verb, arg = split_command(line)
        if verb != "AUTH" and len(raw) + 2 > self._max_command_bytes:
            self._too_long()  # RFC 2449 §4
            return None
        valid = _VALID_IN.get(verb)
        if valid is None:
            self._finish(R.UNKNOWN_COMMAND)  # RFC 1939 §3
            return None
        if self._state not in valid:
            self._finish(_OUT_OF_STATE[self._state])
            return None
        try:
            return self._dispatch(verb, arg, user)
        except ResponseError as exc:
            self._finish(exc.response)
            return None

    def _dispatch(self, verb: str, arg: str, user: str | None) -> Event | None:
        if verb == "USER":
            self._user_command(arg)
            return None
        if verb == "PASS":
            return self._pass(arg, user)
        if verb == "AUTH":
            return self._auth(arg)
        if verb == "APOP":
            raise ResponseError(R.APOP_UNSUPPORTED)
        args = _arguments(verb, arg)
        if verb == "CAPA":
            self._write(R.CAPA_FOLLOWS)  # RFC 2449 §5
            self._out += multiline(self.capabilities())
            return None
        if verb == "STLS":
            return self._stls()
        if verb == "QUIT":
            return self._quit()
        maildrop = self.maildrop
        assert maildrop is not None  # TRANSACTION commands only from here on
        if verb == "STAT":
            self._write(R.ok(f"{maildrop.count} {maildrop.octets}"))  # RFC 1939 §5: "+OK nn mm"
        elif verb == "LIST":
            self._list(maildrop, args)
        elif verb == "UIDL":
            self._uidl(maildrop, args)
        elif verb == "RETR":
            number, message = self._message(args[0])
            return Retrieve(number, message.uid, message.size)  # RFC 1939 §5
        elif verb == "TOP":
            number, message = self._message(args[0])
            lines = parse_number(args[1], minimum=0)  # RFC 1939 §7: "a non-negative number"
            return Retrieve(number, message.uid, message.size, lines)
        elif verb == "DELE":
            number, _ = self._message(args[0])
            maildrop.delete(number)  # RFC 1939 §5: marked now, removed in the UPDATE state
            self._write(R.ok(f"Message {number} deleted"))
        elif verb == "NOOP":
            self._write(R.NOOP_OK)  # RFC 1939 §5
        elif verb == "RSET":
            maildrop.reset()  # RFC 1939 §5
            self._write(R.ok(f"Maildrop has {maildrop.count} messages ({maildrop.octets} octets)"))
        return None

    def _message(self, text: str) -> tuple[int, MaildropMessage]:
        """A message-number argument that names a message not marked deleted (RFC 1939 §5)."""
        maildrop = self.maildrop
        assert maildrop is not None
        number = parse_number(text)
        if maildrop.is_deleted(number):
            raise ResponseError(R.err(f"Message {number} already deleted"))
        message = maildrop.get(number)
        if message is None:
            raise ResponseError(R.NO_SUCH_MESSAGE)
        return number, message

    def _list(self, maildrop: Maildrop, args: list[str]) -> None:
        if args:
            number, message = self._message(args[0])
            self._write(R.ok(f"{number} {message.size}"))  # RFC 1939 §5: "+OK 2 200"
            return
        self._write(R.ok(f"{maildrop.count} messages ({maildrop.octets} octets)"))
        self._out += multiline([f"{n} {m.size}" for n, m in maildrop.visible()])

    def _uidl(self, maildrop: Maildrop, args: list[str]) -> None:
        if args:
            number, message = self._message(args[0])
            self._write(R.ok(f"{number} {message.unique_id}"))  # RFC 1939 §7
            return
        self._write(R.UIDL_FOLLOWS)
        self._out += multiline([f"{n} {m.unique_id}" for n, m in maildrop.visible()])

    def _user_command(self, arg: str) -> None:
        if not self.login_allowed:
            raise ResponseError(R.PLAINTEXT_REFUSED)
        if not arg.strip(" "):
            raise ResponseError(R.err("Syntax: USER name"))
        self._user = arg
        self._write(R.USER_OK)

    def _pass(self, arg: str, user: str | None) -> Login:
        if not self.login_allowed:
            raise ResponseError(R.PLAINTEXT_REFUSED)
        if user is None:
            raise ResponseError(R.NEED_USER)
        if not arg:
            raise ResponseError(R.err("Syntax: PASS password"))
        # RFC 1939 §7 PASS: the argument is the rest of the line, spaces included.
        return Login(user, arg)

    def _auth(self, arg: str) -> AuthStart | None:
        if not self._mechanisms:
            raise ResponseError(R.UNKNOWN_COMMAND)
        if not self.login_allowed:
            raise ResponseError(R.PLAINTEXT_REFUSED)
        parts = arg.split()
        if not parts:
            # AUTH alone lists the mechanisms: not in RFC 5034 (CAPA's SASL line does that),
            # but RFC 1734-era clients ask this way, and Dovecot answers too.
            self._write(R.MECHANISMS_FOLLOW)
            self._out += multiline(list(self._mechanisms))
            return None
        if len(parts) > 2:
            raise ResponseError(R.err("Syntax: AUTH mechanism [initial-response]"))
        mechanism = parts[0].upper()
        if mechanism not in self._mechanisms:
            raise ResponseError(R.UNKNOWN_MECHANISM)  # RFC 5034 §4
        initial: bytes | None = None
        if len(parts) == 2:
            if parts[1] == "*":
                raise ResponseError(R.AUTH_CANCELLED)
            # RFC 5034 §4: "=" is an empty initial response.
            initial = b"" if parts[1] == "=" else decode_base64(parts[1])
        return AuthStart(mechanism, initial)

    def _stls(self) -> StartTLS:
        if self._tls_active:
            raise ResponseError(R.TLS_ALREADY_ACTIVE)  # RFC 2595 §4: only once
        if not self._tls_available:
            raise ResponseError(R.TLS_UNAVAILABLE)
        return StartTLS()

    def _quit(self) -> Event:
        if self._state is State.AUTHORIZATION:
            self._write(R.QUIT_AUTHORIZATION)  # RFC 1939 §4: no UPDATE state
            self._close()
            return Quit()
        maildrop = self.maildrop
        assert maildrop is not None
        self._state = State.UPDATE  # RFC 1939 §6
        return Update(maildrop.deleted_uids, maildrop.retrieved_uids)

    # -- output and bookkeeping --

    def _take(self, *kinds: type[Event]) -> Event:
        event = self._pending
        if event is None or not isinstance(event, kinds):
            names = ", ".join(k.__name__ for k in kinds)
            raise LocalProtocolError(f"no pending {names} to answer (pending: {event!r})")
        self._pending = None
        return event

    def _write(self, response: Response) -> None:
        text = response.line()
        if "\r" in text or "\n" in text:
            raise LocalProtocolError("a response is one line: no CR or LF in it")
        self._out += response.encode()

    def _finish(self, response: Response) -> None:
        """Send the core's response to one command; count it if it is an error."""
        self._write(response)
        if response.ok or self.closed:
            return
        self._errors += 1
        if self._errors >= self._max_errors:
            self._write(R.TOO_MANY_ERRORS)
            self._close()

    def _close(self) -> None:
        self._state = State.CLOSED
        self._pending = None
        self._in.clear()


def _arguments(verb: str, arg: str) -> list[str]:
    """The space-separated arguments of ``verb``, checked against its count."""
    low, high, syntax = _ARGUMENTS[verb]
    args = arg.split()
    if not low <= len(args) <= high:
        raise ResponseError(R.err(f"Syntax: {syntax}"))
    return args
