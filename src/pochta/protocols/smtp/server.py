"""The sans-IO SMTP and LMTP server: bytes in, events out, replies as bytes.

No sockets, no asyncio, no clock. The glue is one loop (STYLE.md §2, like h11)::

    conn = SMTPServerConnection(hostname=..., settings=...)
    conn.greet(Reply(220, "", f"{hostname} ESMTP pochta"))
    while not conn.closed:
        write(conn.data_to_send())
        conn.receive_data(await read())           # b"" at EOF
        while (event := conn.next_event()) is not NEED_DATA:
            if event.needs_reply:
                conn.send_reply(decide(event))     # or conn.auth_challenge(...) for AUTH
                if isinstance(event, StartTLS) and conn.state is State.TLS:
                    write(conn.data_to_send()); await handshake(); conn.tls_started()
    write(conn.data_to_send())

Who answers what:

* the core, with no event: syntax errors, unknown commands (500), out-of-sequence commands
  (503), limits (500 5.5.6, 452 4.5.3, 552 5.3.4, 421), bad base64 and "*" in AUTH, EHLO's
  capability list, 354 after DATA, 250 after an intermediate BDAT chunk, HELP, EXPN;
* the core, with a notification event (``needs_reply`` False): RSET, QUIT, VRFY, NOOP;
* the glue: ``Helo``, ``StartTLS``, ``AuthStart``/``AuthResponse``, ``MailFrom``, ``RcptTo``,
  ``MessageData`` (LMTP: one reply per accepted recipient, RFC 2033 §4.2).

Replies are queued in order, so a pipelined batch (RFC 2920) gets its replies in order.

Choices made here, and why:

* EHLO/HELO/LHLO is an event so the glue can judge the name, but the core writes the
  capability list (from the constructor's arguments) when the glue accepts: the list must
  match what the core implements, so the core owns it.
* Enhanced status codes (RFC 2034) go on every reply but the greeting and the EHLO/HELO reply
  (RFC 2034 §3), whether or not the client said EHLO, as Postfix does.
* Errors: a command whose reply (or every LMTP reply) is 4xx/5xx counts once; at
  ``max_errors`` the core adds 421 4.7.0 and closes. A delivered message (any positive reply
  to MessageData) sets the count back to 0, like Postfix's smtpd_hard_error_limit ("errors
  ... without delivering mail").
* ``max_commands_before_mail``: every command outside a transaction counts (NOOP, RSET, VRFY,
  HELP, EHLO, unknown and malformed ones) except MAIL, AUTH, STARTTLS and QUIT; an accepted
  MAIL sets it back to 0. One too many gets 421 4.7.0 instead of its reply.
* A BDAT without a readable octet count gets 421 and the connection closes: nobody can tell
  where its chunk ends, and the chunk must never be read as commands.
* The core refuses a message itself (size, bare CR/LF, long line) only after the end of the
  data, so that the client and the server agree on where the message ended.
* STARTTLS, AUTH and MAIL need EHLO/HELO first; STARTTLS and AUTH are refused inside a mail
  transaction. After TLS starts, the EHLO name and the AUTH state are forgotten; the error
  and command counters are not (so STARTTLS cannot reset them).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from typing import Final, Literal

from pochta.config.settings import SMTPSettings
from pochta.protocols.smtp.data import ChunkedMessage, DataReader
from pochta.protocols.smtp.events import (
    AuthResponse,
    AuthStart,
    Event,
    Helo,
    MailFrom,
    MessageData,
    Noop,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
    Vrfy,
)
from pochta.protocols.smtp.parse import (
    ParseError,
    bdat_chunk_size,
    decode_base64,
    parse_auth,
    parse_bdat,
    parse_helo,
    parse_mail_from,
    parse_rcpt_to,
    split_command,
)
from pochta.protocols.smtp.replies import (
    ALREADY_AUTHENTICATED,
    AUTH_BAD_BASE64,
    AUTH_CANCELLED,
    AUTH_ENCRYPTION_REQUIRED,
    AUTH_REQUIRED,
    AUTH_UNKNOWN_MECHANISM,
    BARE_NEWLINE_COMMAND,
    BINARYMIME_NEEDS_BDAT,
    BYE,
    CANNOT_VRFY,
    DATA_AFTER_BDAT,
    HELP,
    LINE_TOO_LONG,
    NEED_HELO,
    NEED_LHLO,
    NEED_MAIL,
    NEED_RCPT,
    NESTED_MAIL,
    NO_SERVICE,
    NO_VALID_RECIPIENTS,
    NO_VALID_RECIPIENTS_LMTP,
    NOT_IMPLEMENTED,
    OK,
    START_DATA,
    TIMEOUT,
    TLS_ALREADY_ACTIVE,
    TOO_MANY_COMMANDS,
    TOO_MANY_ERRORS,
    TOO_MANY_RECIPIENTS,
    TRANSACTION_IN_PROGRESS,
    UNKNOWN_COMMAND,
    Reply,
)

__all__ = ["NEED_DATA", "LocalProtocolError", "NeedData", "SMTPServerConnection", "State"]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""``next_event`` has nothing more until ``receive_data`` is called (or the connection is
closed: check ``closed``)."""
NeedData = Literal[_Sentinel.NEED_DATA]


class LocalProtocolError(RuntimeError):
    """The glue used the connection wrongly (replied twice, replied to nothing, started TLS
    without a 220...). A bug in our code, never the client's doing."""


class State(enum.Enum):
    CONNECTED = "connected"  # greet() not called yet; input is kept for later
    REFUSED = "refused"  # greeted with 554: 503 to everything but QUIT (RFC 5321 §3.1)
    FRESH = "fresh"  # greeted, no HELO/EHLO/LHLO yet
    READY = "ready"  # HELO/EHLO/LHLO accepted, no mail transaction
    MAIL = "mail"  # MAIL accepted
    RCPT = "rcpt"  # MAIL and at least one RCPT accepted
    CHUNKING = "chunking"  # between BDAT chunks of a transaction (RFC 3030 §2)
    DATA = "data"  # reading DATA content up to CRLF.CRLF
    BDAT = "bdat"  # reading the octets of one BDAT chunk
    AUTH = "auth"  # a 334 challenge was sent; the next line is the client's response
    TLS = "tls"  # STARTTLS got 220; waiting for tls_started(), input is dropped
    CLOSED = "closed"


_S = State
_IN_TRANSACTION: Final = frozenset({_S.MAIL, _S.RCPT, _S.CHUNKING})
_WITHOUT_TRANSACTION: Final = frozenset({_S.FRESH, _S.READY, _S.REFUSED})

# -- The state table (STYLE.md §2: every rule about order lives here) --
#
# For each command, the states in which it is refused and the reply. A command not listed for
# a state is in order there. (REFUSED answers 503 to everything but QUIT before this table is
# consulted; DATA/BDAT/AUTH/TLS/CLOSED read no commands.)
_OUT_OF_SEQUENCE: Final[dict[str, dict[State, Reply]]] = {
    # RFC 5321 §4.1.4: a session starts with EHLO/HELO; RFC 3207 §4.2 / RFC 4954 §4: STARTTLS
    # and AUTH are not allowed during a mail transaction.
    "STARTTLS": {_S.FRESH: NEED_HELO, **dict.fromkeys(_IN_TRANSACTION, TRANSACTION_IN_PROGRESS)},
    "AUTH": {_S.FRESH: NEED_HELO, **dict.fromkeys(_IN_TRANSACTION, TRANSACTION_IN_PROGRESS)},
    # RFC 5321 §4.1.4: MAIL needs EHLO/HELO, and may not start a transaction inside one.
    "MAIL": {_S.FRESH: NEED_HELO, **dict.fromkeys(_IN_TRANSACTION, NESTED_MAIL)},
    # RFC 5321 §4.1.4: RCPT needs MAIL; RFC 3030 §2: no RCPT between BDAT chunks.
    "RCPT": {_S.FRESH: NEED_MAIL, _S.READY: NEED_MAIL, _S.CHUNKING: TRANSACTION_IN_PROGRESS},
    # RFC 5321 §4.1.4: DATA needs an accepted RCPT (in state MAIL: 503, or 554 "No valid
    # recipients" when RCPTs were all refused, RFC 2920 §3.1; LMTP 503, RFC 2033 §4.2).
    # RFC 3030 §2: DATA and BDAT do not mix in one transaction.
    "DATA": {
        _S.FRESH: NEED_MAIL,
        _S.READY: NEED_MAIL,
        _S.MAIL: NEED_RCPT,
        _S.CHUNKING: DATA_AFTER_BDAT,
    },
    # RFC 3030 §2: BDAT like DATA; the chunk's octets are read and dropped all the same.
    "BDAT": {_S.FRESH: NEED_MAIL, _S.READY: NEED_MAIL, _S.MAIL: NEED_RCPT},
}

# The transitions. Commands answered by the core change state where they are handled; an
# event's state change waits for the glue's reply:
#   Helo + 2xx        -> READY (transaction dropped, RFC 5321 §4.1.4)
#   StartTLS + 220    -> TLS; tls_started() -> FRESH (RFC 3207 §4.2)
#   AuthStart/AuthResponse + auth_challenge() -> AUTH; + any reply -> READY
#   MailFrom + 2xx    -> MAIL;  RcptTo + 2xx -> RCPT
#   DATA (core: 354)  -> DATA;  end of data -> MessageData; its reply(ies) -> READY
#   BDAT              -> BDAT;  end of chunk -> CHUNKING, or MessageData (LAST) -> READY
#   RSET              -> READY (or FRESH before HELO);  QUIT, 421, EOF -> CLOSED

# RFC 5321 §4.1.1.4, .5, .10 and RFC 3207 §4: commands without arguments.
_NO_ARGUMENTS: Final = frozenset({"DATA", "RSET", "QUIT", "STARTTLS"})
_NOT_IMPLEMENTED: Final = frozenset({"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML"})
_AUTH_LINE_BYTES: Final = 12288 + 2  # RFC 4954 §4: AUTH lines of at least 12288 octets


class SMTPServerConnection:
    """One SMTP (or, with ``lmtp=True``, LMTP) server connection."""

    def __init__(
        self,
        *,
        hostname: str,
        settings: SMTPSettings,
        lmtp: bool = False,
        tls_active: bool = False,
        tls_available: bool = True,
        auth_mechanisms: Sequence[str] = (),
        auth_requires_tls: bool = True,
        require_auth: bool = False,
        dsn: bool = True,
    ) -> None:
        self.hostname = hostname
        self.settings = settings
        self.lmtp = lmtp
        self._tls_active = tls_active
        self._tls_available = tls_available
        self._mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self._auth_requires_tls = auth_requires_tls
        self._require_auth = require_auth
        self._dsn = dsn
        self._state = State.CONNECTED
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        # framing: the reply owed for a command line being dropped (too long / bare newline)
        self._dropping: Reply | None = None
        self._line_limit = max(settings.max_command_line_bytes, _AUTH_LINE_BYTES)
        # the event waiting for the glue, and how many replies it still wants
        self._pending: Event | None = None
        self._replies_due = 0
        self._any_positive = False
        # BDAT: a failed chunk's reply, repeated for chunks pipelined after it (RFC 3030 §2)
        self._bdat_failed: Reply | None = None
        self._bdat_failed_count = 1
        self._failed_rcpt_count = 1
        # session
        self.helo_name: str | None = None
        self.extended = False  # EHLO/LHLO rather than HELO
        self.authenticated = False
        self._errors = 0
        self._junk = 0  # commands since the last MAIL (max_commands_before_mail)
        # transaction (set by _reset_transaction)
        self._rcpt_count: int
        self._rcpt_tried: bool
        self._smtputf8: bool
        self._body: str | None
        self._data_reader: DataReader | None
        self._chunk: ChunkedMessage | None
        self._chunk_left: int
        self._chunk_size: int
        self._chunk_last: bool
        self._skip_reply: Reply | None  # a refused BDAT: reply after skipping its octets
        self._skip_reply_count: int
        self._after_chunk: State
        self._reset_transaction()

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
        """The event waiting for the glue's reply, if any."""
        return self._pending

    @property
    def replies_due(self) -> int:
        """How many replies the pending event still wants (LMTP MessageData: one per
        accepted recipient)."""
        return self._replies_due

    @property
    def recipients(self) -> int:
        """Recipients accepted in the current transaction."""
        return self._rcpt_count

    def greet(self, reply: Reply) -> None:
        """Send the opening greeting (RFC 5321 §4.3.1): 220 to serve; 554 to refuse (the core
        then answers 503 to all but QUIT, RFC 5321 §3.1); 421 to close at once."""
        if self._state is not State.CONNECTED:
            raise LocalProtocolError("greet() once, before anything else")
        if reply.code not in (220, 421, 554):
            raise LocalProtocolError(f"a greeting is 220, 421 or 554, not {reply.code}")
        self._state = {220: State.FRESH, 554: State.REFUSED}.get(reply.code, State.CLOSED)
        self._write(reply)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" means the client closed its side."""
        if self._state in (State.CLOSED, State.TLS):
            return  # RFC 3207 §4.2: nothing before the handshake is kept
        if not data:
            self._eof = True
        self._in += data

    def data_to_send(self) -> bytes:
        """The replies queued so far (the caller writes them in order)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Answer an event with ``needs_reply`` before asking
        for the next one."""
        if self._pending is not None:
            raise LocalProtocolError(f"reply to {self._pending!r} first")
        while True:
            state = self._state
            result: Event | NeedData | None
            if state in (State.CLOSED, State.CONNECTED, State.TLS):
                return NEED_DATA
            if state is State.DATA:
                result = self._read_data()
            elif state is State.BDAT:
                result = self._read_chunk()
            else:
                line = self._next_line()
                if line is None or line is NEED_DATA:
                    result = line
                elif state is State.AUTH:
                    result = self._auth_line(line)
                else:
                    result = self._command(line)
            if result is NEED_DATA:
                if self._eof:
                    self._close()  # EOF: whatever is unfinished is dropped
                return NEED_DATA
            if result is not None:
                if result.needs_reply:
                    self._pending = result
                    self._any_positive = False
                    # LMTP: one reply per accepted recipient (RFC 2033 §4.2)
                    lmtp_data = self.lmtp and isinstance(result, MessageData)
                    self._replies_due = self._rcpt_count if lmtp_data else 1
                return result

    def send_reply(self, reply: Reply) -> None:
        """Answer the pending event (see each event's doc for what a reply does)."""
        event = self._pending
        if event is None:
            raise LocalProtocolError("no event is waiting for a reply")
        _check_reply(reply)
        if reply.code == 334:
            raise LocalProtocolError("use auth_challenge() for a 334")
        self._replies_due -= 1
        positive = 200 <= reply.code < 300
        self._any_positive |= positive
        if isinstance(event, Helo) and positive:
            self._accept_helo(event)
        else:
            self._write(reply)
        if self._state is State.CLOSED:
            return  # the glue sent 421
        if isinstance(event, StartTLS) and reply.code == 220:
            self._state = State.TLS
            self._in.clear()  # RFC 3207 §4.2: discard input sent after STARTTLS
        elif isinstance(event, (AuthStart, AuthResponse)):
            if reply.code == 235:  # RFC 4954 §4
                self.authenticated = True
            self._state = State.READY
        elif isinstance(event, MailFrom) and positive:
            self._state = State.MAIL
            self._junk = 0
            self._smtputf8 = event.smtputf8
            self._body = event.body
        elif isinstance(event, RcptTo) and positive:
            self._state = State.RCPT
            self._rcpt_count += 1
        if self._replies_due > 0:
            return
        self._pending = None
        if isinstance(event, MessageData):
            if self._any_positive:
                self._errors = 0  # errors count between delivered messages (like Postfix)
            self._state = State.READY
            self._reset_transaction()
        self._account(error=not self._any_positive and reply.code >= 400)

    def send_replies(self, replies: Sequence[Reply]) -> None:
        """Several ``send_reply`` calls in one (LMTP's per-recipient replies)."""
        if len(replies) > self._replies_due:
            raise LocalProtocolError(f"{len(replies)} replies for {self._replies_due} due")
        for reply in replies:
            self.send_reply(reply)

    def auth_challenge(self, data: bytes) -> None:
        """Answer a pending AuthStart/AuthResponse with ``334 base64(data)`` (RFC 4954 §4)."""
        if not isinstance(self._pending, (AuthStart, AuthResponse)):
            raise LocalProtocolError("auth_challenge() answers AuthStart or AuthResponse only")
        self._pending = None
        self._replies_due = 0
        self._write(Reply(334, "", base64.b64encode(data).decode("ascii")))
        self._state = State.AUTH

    def tls_started(self) -> None:
        """The TLS handshake after our 220 to STARTTLS succeeded. RFC 3207 §4.2: forget
        everything learnt from the client (EHLO, AUTH) and anything it sent before."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_started() only after a 220 reply to StartTLS")
        self._in.clear()
        self._dropping = None
        self._bdat_failed = None
        self._tls_active = True
        self.helo_name = None
        self.extended = False
        self.authenticated = False
        self._reset_transaction()
        self._state = State.FRESH

    def timeout(self) -> None:
        """The idle or session timer ran out: 421 4.4.2 and close (RFC 5321 §4.5.3.2)."""
        if self._state is not State.CLOSED:
            self._write(TIMEOUT)

    # -- input --

    def _next_line(self) -> bytes | NeedData | None:
        """The next command line without its line end; NEED_DATA when there is none yet;
        None when a line was dropped for its framing (and answered).

        RFC 5321 §2.3.8: lines end with CRLF. "reject": only CRLF ends a line, and a line with
        a bare CR or LF in it is refused whole (500 5.5.2) and never executed. "normalize": an
        LF ends a line, with or without the CR before it; any other CR refuses the line.
        """
        normalize = self.settings.bare_newline == "normalize"
        buf = self._in
        if normalize:
            i = buf.find(b"\n")
            end, skip = (i - 1 if i > 0 and buf[i - 1] == 0x0D else i), i + 1
        else:
            i = buf.find(b"\r\n")
            end, skip = i, i + 2
        if i < 0:
            if len(buf) >= self._line_limit:
                # Too long before its end: drop it as it comes, answer at its end. Keep a
                # trailing CR, which may be the first half of the CRLF.
                self._dropping = self._dropping or LINE_TOO_LONG
                keep = 1 if buf.endswith(b"\r") and not normalize else 0
                del buf[: len(buf) - keep]
            return NEED_DATA
        line = bytes(buf[:end])
        del buf[:skip]
        if self._dropping is None:
            if len(line) + 2 > self._line_limit:
                self._dropping = LINE_TOO_LONG  # RFC 5321 §4.5.3.1.4
            elif b"\r" in line or b"\n" in line:
                self._dropping = BARE_NEWLINE_COMMAND  # RFC 5321 §2.3.8
        if self._dropping is None:
            return line
        reply, self._dropping = self._dropping, None
        if self._state is State.AUTH:
            self._state = State.READY  # the exchange ends with the error
        elif self._count_junk():
            return None
        self._finish([reply])
        return None

    def _read_data(self) -> MessageData | NeedData | None:
        reader = self._data_reader
        assert reader is not None
        del self._in[: reader.feed(self._in)]
        if not reader.done:
            return NEED_DATA
        self._data_reader = None
        failure = reader.failure
        if failure is not None:
            self._end_message(failure, lmtp_count=True)
            return None
        return self._message(reader.content)

    def _read_chunk(self) -> MessageData | NeedData | None:
        take = min(self._chunk_left, len(self._in))
        if self._skip_reply is None and self._chunk is not None:
            self._chunk.add(self._in[:take])
        del self._in[:take]
        self._chunk_left -= take
        if self._chunk_left:
            return NEED_DATA
        self._state = self._after_chunk
        if self._skip_reply is not None:  # a refused BDAT: its octets were only skipped
            reply, self._skip_reply = self._skip_reply, None
            self._finish([reply] * self._skip_reply_count)
            return None
        chunk = self._chunk
        assert chunk is not None
        failure = chunk.failure
        if failure is not None:
            self._end_message(failure, lmtp_count=self._chunk_last)
            if not self._chunk_last:
                # RFC 3030 §2: the transaction failed; BDAT chunks already pipelined after
                # this one are read, dropped and answered alike, up to BDAT LAST.
                self._bdat_failed = failure
                self._bdat_failed_count = self._failed_rcpt_count
            return None
        if not self._chunk_last:
            self._state = State.CHUNKING
            self._finish([Reply(250, "2.0.0", f"{self._chunk_size} octets received")])
            return None
        return self._message(chunk.content)

    def _message(self, content: bytes) -> MessageData:
        self._state = State.READY  # the transaction ends with the reply(ies)
        return MessageData(content)

    def _end_message(self, failure: Reply, *, lmtp_count: bool) -> None:
        """The core refuses the message (LMTP: once per recipient, RFC 2033 §4.2)."""
        count = self._rcpt_count if self.lmtp else 1
        self._failed_rcpt_count = count
        self._state = State.READY
        self._reset_transaction()
        self._finish([failure] * (count if lmtp_count else 1))

    def _auth_line(self, line: bytes) -> AuthResponse | None:
        self._state = State.READY
        text = line.decode("ascii", "replace")
        if text == "*":
            self._finish([AUTH_CANCELLED])  # RFC 4954 §4: the client cancels
            return None
        try:
            data = decode_base64(text)
        except ParseError as exc:
            self._finish([exc.reply])  # RFC 4954 §4: 501 5.5.2, the exchange ends
            return None
        self._state = State.AUTH
        return AuthResponse(data)

    # -- commands --

    def _count_junk(self) -> bool:
        """Count a command outside a transaction; True when that was one too many and the
        connection is closed (max_commands_before_mail, like Postfix's junk command limit)."""
        if self._state not in _WITHOUT_TRANSACTION:
            return False
        self._junk += 1
        if self._junk <= self.settings.max_commands_before_mail:
            return False
        self._write(TOO_MANY_COMMANDS)
        return True

    def _command(self, raw: bytes) -> Event | None:
        try:
            line: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = None
        verb, arg = split_command(line) if line is not None else ("", "")
        if verb not in ("MAIL", "AUTH", "STARTTLS", "QUIT") and self._count_junk():
            return None
        if verb != "BDAT":
            self._bdat_failed = None
        if line is None:
            self._finish([Reply(500, "5.5.2", "Command is not valid UTF-8")])
            return None
        if verb != "AUTH" and len(raw) + 2 > self.settings.max_command_line_bytes:
            self._finish([LINE_TOO_LONG])  # RFC 5321 §4.5.3.1.4 (AUTH: RFC 4954 §4)
            return None
        if self._state is State.REFUSED and verb != "QUIT":
            self._finish([NO_SERVICE])  # RFC 5321 §3.1
            return None
        if verb == "BDAT":
            self._bdat(arg)
            return None
        refused = self._out_of_sequence(verb)
        if refused is not None:
            self._finish([refused])
            return None
        if verb in _NO_ARGUMENTS and arg:
            # RFC 5321 §4.1.1.4 / .5 / .10, RFC 3207 §4: these take no parameters.
            self._finish([Reply(501, "5.5.4", f"Syntax: {verb} takes no parameters")])
            return None
        try:
            return self._dispatch(verb, arg)
        except ParseError as exc:
            self._finish([exc.reply])
            return None

    def _out_of_sequence(self, verb: str) -> Reply | None:
        refused = _OUT_OF_SEQUENCE.get(verb, {}).get(self._state)
        if refused is NEED_HELO and self.lmtp:
            return NEED_LHLO
        if refused is NEED_RCPT and self._rcpt_tried:
            return NO_VALID_RECIPIENTS_LMTP if self.lmtp else NO_VALID_RECIPIENTS
        return refused

    def _dispatch(self, verb: str, arg: str) -> Event | None:
        if verb in ("EHLO", "HELO", "LHLO"):
            # RFC 2033 §4.1: LMTP greets with LHLO only; SMTP never with LHLO.
            if (verb == "LHLO") != self.lmtp:
                self._finish([UNKNOWN_COMMAND])
                return None
            return Helo(parse_helo(arg, verb), extended=verb != "HELO")
        if verb == "MAIL":
            return self._mail(arg)
        if verb == "RCPT":
            return self._rcpt(arg)
        if verb == "DATA":
            self._data()
            return None
        if verb == "RSET":
            # RFC 5321 §4.1.1.5: drop the transaction, keep the session.
            if self._state is not State.FRESH:
                self._state = State.READY
            self._reset_transaction()
            self._finish([OK])
            return Reset()
        if verb == "NOOP":
            self._finish([OK])  # RFC 5321 §4.1.1.9
            return Noop()
        if verb == "QUIT":
            self._write(BYE)  # RFC 5321 §4.1.1.10
            self._close()
            return Quit()
        if verb == "VRFY":
            if not arg.strip(" "):
                raise ParseError(Reply(501, "5.5.4", "Syntax: VRFY address"))
            # RFC 5321 §3.5.3, §7.3: 252 and no lookup, so VRFY cannot enumerate users.
            self._finish([CANNOT_VRFY])
            return Vrfy(arg)
        if verb == "HELP":
            self._finish([HELP])  # RFC 5321 §4.1.1.8
            return None
        if verb == "STARTTLS":
            return self._starttls()
        if verb == "AUTH":
            return self._auth(arg)
        if verb in _NOT_IMPLEMENTED:
            self._finish([NOT_IMPLEMENTED])  # RFC 5321 §4.2.4: 502 known, not offered
            return None
        self._finish([UNKNOWN_COMMAND])  # RFC 5321 §4.2.4: 500 unknown
        return None

    def _mail(self, arg: str) -> MailFrom:
        if self._require_auth and not self.authenticated:
            raise ParseError(AUTH_REQUIRED)  # RFC 4954 §6: 530 5.7.0
        address, params = parse_mail_from(
            arg, max_message_bytes=self.settings.max_message_bytes, dsn=self._dsn
        )
        return MailFrom(address, params)

    def _rcpt(self, arg: str) -> RcptTo:
        self._rcpt_tried = True
        address, params = parse_rcpt_to(arg, smtputf8=self._smtputf8, dsn=self._dsn)
        if self._rcpt_count >= self.settings.max_recipients:
            raise ParseError(TOO_MANY_RECIPIENTS)  # RFC 5321 §4.5.3.1.10: 452 4.5.3
        return RcptTo(address, params)

    def _data(self) -> None:
        if self._body == "BINARYMIME":
            raise ParseError(BINARYMIME_NEEDS_BDAT)  # RFC 3030 §3: BINARYMIME needs BDAT
        self._finish([START_DATA])  # RFC 5321 §4.1.1.4: 354
        self._state = State.DATA
        self._data_reader = DataReader(
            max_message_bytes=self.settings.max_message_bytes,
            max_line_bytes=self.settings.max_data_line_bytes,
            bare_newline=self.settings.bare_newline,
        )

    def _bdat(self, arg: str) -> None:
        """BDAT (RFC 3030 §2). Whatever the reply, the chunk's octets are read first, so they
        are never taken for commands."""
        size = bdat_chunk_size(arg)
        if size is None:
            # Without a count nobody can tell where the chunk ends, and its octets could be
            # taken as commands: close rather than guess.
            self._write(Reply(421, "4.5.4", "Syntax: BDAT octets [LAST]; closing connection"))
            return
        last = arg.upper().endswith(" LAST")
        if self._bdat_failed is not None and self._state is State.READY:
            # RFC 3030 §2: a chunk pipelined after a failed one; LAST gets the failure once
            # per recipient in LMTP.
            reply, count = self._bdat_failed, (self._bdat_failed_count if last else 1)
            if last:
                self._bdat_failed = None
            self._skip_chunk(size, reply, count)
            return
        refused = self._out_of_sequence("BDAT")
        if refused is not None:
            self._skip_chunk(size, refused, 1)
            return
        try:
            _, last = parse_bdat(arg)
        except ParseError as exc:
            self._skip_chunk(size, exc.reply, 1)
            return
        if self._chunk is None:
            self._chunk = ChunkedMessage(
                max_message_bytes=self.settings.max_message_bytes,
                # RFC 3030 §3: BINARYMIME content is kept octet for octet.
                normalize=self.settings.bare_newline == "normalize" and self._body != "BINARYMIME",
            )
        self._chunk_left = self._chunk_size = size
        self._chunk_last = last
        self._after_chunk = State.READY
        self._state = State.BDAT

    def _skip_chunk(self, size: int, reply: Reply, count: int) -> None:
        """Refuse a BDAT command after reading past its octets (RFC 3030 §2)."""
        self._chunk_left = size
        self._skip_reply = reply
        self._skip_reply_count = count
        self._after_chunk = self._state
        self._state = State.BDAT

    def _starttls(self) -> Event | None:
        if self._tls_active:
            raise ParseError(TLS_ALREADY_ACTIVE)  # RFC 3207 §4.2: only once
        if not self._tls_available:
            raise ParseError(NOT_IMPLEMENTED)
        return StartTLS()

    def _auth(self, arg: str) -> Event | None:
        if not self._mechanisms:
            raise ParseError(NOT_IMPLEMENTED)
        if self.authenticated:
            raise ParseError(ALREADY_AUTHENTICATED)  # RFC 4954 §4: 503 after success
        mechanism, initial = parse_auth(arg)
        if self._auth_requires_tls and not self._tls_active:
            raise ParseError(AUTH_ENCRYPTION_REQUIRED)  # RFC 4954 §6: 538 5.7.11
        if mechanism not in self._mechanisms:
            raise ParseError(AUTH_UNKNOWN_MECHANISM)  # RFC 4954 §4: 504 5.5.4
        response: bytes | None = None
        if initial == "*":
            raise ParseError(AUTH_CANCELLED)  # RFC 4954 §4
        if initial == "=":
            response = b""  # RFC 4954 §4: "=" is an empty initial response
        elif initial is not None:
            try:
                response = decode_base64(initial)
            except ParseError:
                raise ParseError(AUTH_BAD_BASE64) from None
        return AuthStart(mechanism, response)

    # -- EHLO --

    def capabilities(self) -> list[str]:
        """The EHLO/LHLO keywords, exactly what is implemented and allowed now."""
        caps = [
            "PIPELINING",  # RFC 2920 §3 (LMTP: required, RFC 2033 §4.1)
            f"SIZE {self.settings.max_message_bytes}",  # RFC 1870 §4
            "8BITMIME",  # RFC 6152 §2
            "ENHANCEDSTATUSCODES",  # RFC 2034 §2 (LMTP: required, RFC 2033 §4.1)
            "SMTPUTF8",  # RFC 6531 §3.2
            "CHUNKING",  # RFC 3030 §2
            "BINARYMIME",  # RFC 3030 §3
        ]
        if self._dsn:
            caps.append("DSN")  # RFC 3461 §4
        if self._tls_available and not self._tls_active:
            caps.append("STARTTLS")  # RFC 3207 §4; never after TLS (§4.2)
        if self._mechanisms and (self._tls_active or not self._auth_requires_tls):
            caps.append("AUTH " + " ".join(self._mechanisms))  # RFC 4954 §3, §6
        return caps

    def _accept_helo(self, event: Helo) -> None:
        # RFC 5321 §4.1.4: EHLO/HELO again is an implicit RSET.
        self._reset_transaction()
        self._state = State.READY
        self.helo_name = event.name
        self.extended = event.extended
        # RFC 2034 §3: the EHLO/HELO reply carries no enhanced status code.
        lines = [self.hostname, *self.capabilities()] if event.extended else [self.hostname]
        self._write(Reply(250, "", "\n".join(lines)))

    # -- output and bookkeeping --

    def _write(self, reply: Reply) -> None:
        self._out += reply.encode()
        if reply.code == 421:
            self._close()  # RFC 5321 §3.8: 421 closes the channel

    def _finish(self, replies: list[Reply]) -> None:
        """Send the core's reply (or LMTP replies) to one command; count it if it failed."""
        for reply in replies:
            self._write(reply)
        self._account(error=all(r.code >= 400 for r in replies))

    def _account(self, *, error: bool) -> None:
        if self._state is State.CLOSED or not error:
            return
        self._errors += 1
        if self._errors >= self.settings.max_errors:
            self._write(TOO_MANY_ERRORS)  # Postfix's smtpd_hard_error_limit: 421 4.7.0

    def _close(self) -> None:
        self._state = State.CLOSED
        self._pending = None
        self._in.clear()

    def _reset_transaction(self) -> None:
        self._rcpt_count = 0
        self._rcpt_tried = False
        self._smtputf8 = False
        self._body = None
        self._data_reader = None
        self._chunk = None
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._skip_reply = None
        self._skip_reply_count = 1
        self._after_chunk = State.READY


def _check_reply(reply: Reply) -> None:
    if not 200 <= reply.code <= 599:
        raise LocalProtocolError(f"reply code {reply.code} is not 2xx-5xx")
    if "\r" in reply.text or "\r" in reply.enhanced or "\n" in reply.enhanced:
        raise LocalProtocolError("reply text must not contain CR (lines are split on LF)")
