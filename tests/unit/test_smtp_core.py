"""The sans-IO SMTP/LMTP server core, bytes in and bytes out: scripted dialogs (like chasquid's
``.cmy`` files and Postfix's smtpd ``.in``/``.ref``), every command and every error reply,
pipelining, BDAT, STARTTLS, AUTH, LMTP, limits and SMTP smuggling probes.

The helpers here (``App``, ``make_conn``, ``exchange``, ``dialog``) are also used by
test_smtp_properties.py.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pytest

from pochta.config.settings import SMTPSettings
from pochta.directory.sasl import (
    Challenge,
    Mechanism,
    NeedPassword,
    Step,
    Success,
    server_mechanism,
)
from pochta.protocols.smtp import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    Event,
    Helo,
    LocalProtocolError,
    MailFrom,
    MessageData,
    Noop,
    Quit,
    RcptTo,
    Reset,
    SMTPServerConnection,
    StartTLS,
    State,
    Vrfy,
)
from pochta.protocols.smtp.replies import (
    AUTH_FAILED,
    AUTH_OK,
    BARE_LINEFEED,
    MAILBOX_FULL,
    OK,
    RECIPIENT_OK,
    SENDER_OK,
    SERVICE_CLOSING,
    SERVICE_READY_TLS,
    TLS_UNAVAILABLE,
    UNKNOWN_USER,
    Reply,
)

HOSTNAME = "mx.example.test"
GREETING = Reply(220, "", f"{HOSTNAME} ESMTP pochta")
QUEUED = Reply(250, "2.0.0", "Queued")
USERS = {"alice@example.test": "secret"}


@dataclass
class App:
    """The glue's decisions, kept simple: accept everything except a few names.

    * EHLO bad.example -> 550; sender bad@... -> 550; recipient unknown@... -> 550 5.1.1;
    * LMTP: a recipient full@... is accepted at RCPT and refused (452 4.2.2) after DATA;
    * AUTH: real SASL mechanisms against USERS;
    * STARTTLS: 220, and (auto_tls) the "handshake" succeeds at once.
    """

    auto_tls: bool = True
    events: list[Event] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    mech: Mechanism | None = None
    conn: SMTPServerConnection | None = None  # set by dialog()

    def __call__(self, conn: SMTPServerConnection, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, (Reset, MailFrom, Helo)):
            self.accepted.clear()
        if not event.needs_reply:
            return
        if isinstance(event, Helo):
            conn.send_reply(Reply(550, "5.7.1", "Go away") if event.name == "bad.example" else OK)
        elif isinstance(event, StartTLS):
            conn.send_reply(SERVICE_READY_TLS)
            if self.auto_tls:
                conn.tls_started()
        elif isinstance(event, AuthStart):
            self.mech = server_mechanism(event.mechanism)
            self._step(conn, self.mech.start(event.initial_response))
        elif isinstance(event, AuthResponse):
            assert self.mech is not None
            self._step(conn, self.mech.respond(event.data))
        elif isinstance(event, MailFrom):
            refused = event.address.startswith("bad@")
            conn.send_reply(Reply(550, "5.7.1", "Sender refused") if refused else SENDER_OK)
        elif isinstance(event, RcptTo):
            if event.address.startswith("unknown@"):
                conn.send_reply(UNKNOWN_USER)
            else:
                self.accepted.append(event.address)
                conn.send_reply(RECIPIENT_OK)
        elif isinstance(event, MessageData):
            if conn.lmtp:
                conn.send_replies(
                    [MAILBOX_FULL if a.startswith("full@") else QUEUED for a in self.accepted]
                )
            else:
                conn.send_reply(QUEUED)
            self.accepted.clear()
        else:  # pragma: no cover - every event that needs a reply is handled above
            raise AssertionError(event)

    def _step(self, conn: SMTPServerConnection, step: Step) -> None:
        assert self.mech is not None
        if isinstance(step, NeedPassword):
            ok = USERS.get(step.authcid) == step.password
            step = self.mech.password_result(ok)
        if isinstance(step, Challenge):
            conn.auth_challenge(step.data)
        elif isinstance(step, Success):
            conn.send_reply(AUTH_OK)
        else:
            conn.send_reply(AUTH_FAILED)


def make_conn(**kwargs: Any) -> SMTPServerConnection:
    """A greeted connection; ``settings`` fields may be given as keywords too."""
    fields = set(SMTPSettings.__struct_fields__)
    settings = SMTPSettings(**{k: kwargs.pop(k) for k in list(kwargs) if k in fields})
    conn = SMTPServerConnection(hostname=HOSTNAME, settings=settings, **kwargs)
    conn.greet(GREETING)
    assert conn.data_to_send() == b"220 mx.example.test ESMTP pochta\r\n"
    return conn


def drive(conn: SMTPServerConnection, app: App) -> None:
    """The glue's inner loop: take events until NEED_DATA, answering each."""
    while (event := conn.next_event()) is not NEED_DATA:
        app(conn, event)
        assert conn.pending is None


def exchange(conn: SMTPServerConnection, app: App, data: bytes) -> bytes:
    """Feed ``data``, run the app, return what the server wrote."""
    conn.receive_data(data)
    drive(conn, app)
    return conn.data_to_send()


def greet_ehlo(conn: SMTPServerConnection, app: App) -> None:
    verb = "LHLO" if conn.lmtp else "EHLO"
    out = exchange(conn, app, f"{verb} client.example\r\n".encode())
    assert out.startswith(b"250-mx.example.test\r\n"), out
    app.events.clear()


def dialog(script: str, *, app: App | None = None, ehlo: bool = False, **kwargs: Any) -> App:
    """Run a chasquid-style ``.cmy`` script against a fresh, greeted connection.

    ``c: text``: the client sends ``text`` + CRLF; consecutive ``c:`` lines go in one packet
    (so a run of them is a pipelined batch). ``s: text``: the next line the server writes
    after that packet; the server must write exactly these lines and nothing more (a "$"
    at the end of an ``s:`` line marks where it ends, for trailing spaces).
    ``eof``: the client closes. ``closed``: the server has closed. Blank lines and lines
    starting with "#" are ignored. Returns the app, whose ``events`` holds what was seen.
    """
    conn = make_conn(**kwargs)
    app = app or App()
    app.conn = conn
    if ehlo:
        greet_ehlo(conn, app)
    steps: list[tuple[bytes, list[str]]] = []
    for raw in script.split("\n"):
        line = raw.lstrip(" ")
        if not line or line.startswith("#"):
            continue
        if line.startswith("c:") or line == "eof":
            data = b"" if line == "eof" else (line[2:].removeprefix(" ") + "\r\n").encode()
            if steps and not steps[-1][1] and steps[-1][0] and data:
                steps[-1] = (steps[-1][0] + data, [])
            else:
                steps.append((data, []))
        elif line.startswith("s:"):
            assert steps, "a script starts with the client"
            steps[-1][1].append(line[2:].removeprefix(" ").removesuffix("$"))
        elif line == "closed":
            steps.append((b"", ["<closed>"]))
        else:  # pragma: no cover - a typo in a script
            raise AssertionError(f"bad script line {raw!r}")
    for data, expected in steps:
        if expected == ["<closed>"]:
            assert conn.closed, "the server should have closed the connection"
            continue
        out = exchange(conn, app, data).decode()
        got = out.split("\r\n")
        assert got[-1] == "", f"output does not end with CRLF: {out!r}"
        assert got[:-1] == expected, f"after sending {data!r}"
    app.conn = conn
    return app


# ---------------------------------------------------------------------------------------------
# Greeting (RFC 5321 §3.1, §4.3.1)


def test_nothing_is_sent_before_greet_and_early_input_waits() -> None:
    conn = SMTPServerConnection(hostname=HOSTNAME, settings=SMTPSettings())
    assert conn.state is State.CONNECTED
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""
    conn.greet(GREETING)
    assert conn.next_event() == Noop()
    assert conn.data_to_send() == b"220 mx.example.test ESMTP pochta\r\n250 2.0.0 OK\r\n"


def test_greet_554_answers_503_to_all_but_quit() -> None:
    # RFC 5321 §3.1: after a 554 greeting the server waits for QUIT, 503 to anything else.
    conn = SMTPServerConnection(hostname=HOSTNAME, settings=SMTPSettings())
    conn.greet(Reply(554, "5.7.1", "No service for you"))
    app = App()
    out = exchange(conn, app, b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\nNOOP\r\n")
    assert out == (
        b"554 5.7.1 No service for you\r\n"
        b"503 5.5.1 No SMTP service here, send QUIT\r\n"
        b"503 5.5.1 No SMTP service here, send QUIT\r\n"
        b"221 2.0.0 Bye\r\n"
    )
    assert app.events == [Quit()]
    assert conn.closed


def test_greet_421_closes() -> None:
    conn = SMTPServerConnection(hostname=HOSTNAME, settings=SMTPSettings())
    conn.greet(Reply(421, "4.3.2", "Busy"))
    assert conn.closed
    assert conn.data_to_send() == b"421 4.3.2 Busy\r\n"
    conn.receive_data(b"EHLO x\r\n")
    assert conn.next_event() is NEED_DATA


def test_greet_misuse() -> None:
    conn = SMTPServerConnection(hostname=HOSTNAME, settings=SMTPSettings())
    with pytest.raises(LocalProtocolError):
        conn.greet(Reply(250, "", "hi"))
    conn.greet(GREETING)
    with pytest.raises(LocalProtocolError):
        conn.greet(GREETING)


# ---------------------------------------------------------------------------------------------
# EHLO / HELO / LHLO


EHLO_LINES = [
    "250-mx.example.test",
    "250-PIPELINING",
    "250-SIZE 52428800",
    "250-8BITMIME",
    "250-ENHANCEDSTATUSCODES",
    "250-SMTPUTF8",
    "250-CHUNKING",
    "250-BINARYMIME",
    "250-DSN",
    "250 STARTTLS",
]


def _ehlo_output(**kwargs: Any) -> list[str]:
    conn = make_conn(**kwargs)
    out = exchange(conn, App(), b"EHLO client.example\r\n").decode()
    return out.split("\r\n")[:-1]


def test_ehlo_capabilities() -> None:
    assert _ehlo_output() == EHLO_LINES


def test_ehlo_capabilities_follow_the_connection() -> None:
    mechs = {"auth_mechanisms": ["plain", "LOGIN"]}
    # RFC 4954 §6 / RFC 3207: AUTH only once TLS is up (auth_requires_tls); STARTTLS not twice.
    assert _ehlo_output(**mechs) == EHLO_LINES
    assert _ehlo_output(tls_active=True, **mechs) == [*EHLO_LINES[:-1], "250 AUTH PLAIN LOGIN"]
    assert _ehlo_output(auth_requires_tls=False, **mechs) == [
        *EHLO_LINES[:-1],
        "250-STARTTLS",
        "250 AUTH PLAIN LOGIN",
    ]
    assert _ehlo_output(dsn=False, tls_available=False) == [
        *EHLO_LINES[:-3],
        "250 BINARYMIME",
    ]
    assert _ehlo_output(max_message_bytes=1000)[2] == "250-SIZE 1000"


def test_helo_has_no_capabilities() -> None:
    app = dialog(
        """
        c: HELO client.example
        s: 250 mx.example.test
        c: MAIL FROM:<a@example.org>
        s: 250 2.1.0 Sender OK
        """
    )
    assert app.events[0] == Helo("client.example", extended=False)
    assert app.conn is not None
    assert app.conn.helo_name == "client.example"
    assert not app.conn.extended


def test_ehlo_event_and_glue_refusal() -> None:
    app = dialog(
        """
        c: EHLO bad.example
        s: 550 5.7.1 Go away
        c: MAIL FROM:<a@example.org>
        s: 503 5.5.1 Send EHLO/HELO first
        """
    )
    assert app.events == [Helo("bad.example", extended=True)]


def test_ehlo_syntax() -> None:
    dialog(
        """
        c: EHLO
        s: 501 5.5.4 Syntax: EHLO hostname
        c: EHLO two words
        s: 501 5.5.4 Syntax: EHLO hostname
        c: HELO
        s: 501 5.5.4 Syntax: HELO hostname
        c: ehlo [192.0.2.1]
        s: 250-mx.example.test
        """.replace("s: 250-mx.example.test", "\n".join(f"s: {x}" for x in EHLO_LINES))
    )


def test_ehlo_again_resets_the_transaction() -> None:
    # RFC 5321 §4.1.4: a second EHLO is an implicit RSET.
    dialog(
        """
        c: MAIL FROM:<a@example.org>
        s: 250 2.1.0 Sender OK
        c: HELO again.example
        s: 250 mx.example.test
        c: RCPT TO:<b@example.org>
        s: 503 5.5.1 Need MAIL command
        """,
        ehlo=True,
    )


def test_lmtp_lhlo() -> None:
    # RFC 2033 §4.1: LHLO replaces HELO/EHLO; those are unknown in LMTP.
    app = dialog(
        """
        c: MAIL FROM:<a@example.org>
        s: 503 5.5.1 Send LHLO first
        c: EHLO client.example
        s: 500 5.5.2 Command not recognized
        c: HELO client.example
        s: 500 5.5.2 Command not recognized
        c: LHLO client.example
        """
        + "\n".join(f"s: {x}" for x in EHLO_LINES),
        lmtp=True,
    )
    assert app.events == [Helo("client.example", extended=True)]


def test_lhlo_is_unknown_in_smtp() -> None:
    dialog(
        """
        c: LHLO client.example
        s: 500 5.5.2 Command not recognized
        """
    )


# ---------------------------------------------------------------------------------------------
# A mail transaction (RFC 5321 §3.3)


def test_transaction() -> None:
    app = dialog(
        """
        c: MAIL FROM:<Alice@Example.org> SIZE=100 BODY=8bitmime
        s: 250 2.1.0 Sender OK
        c: RCPT TO:<Bob@example.test> NOTIFY=success,failure ORCPT=rfc822;Bob+2Bx@example.test
        s: 250 2.1.5 Recipient OK
        c: RCPT TO:<unknown@example.test>
        s: 550 5.1.1 No such user here
        c: DATA
        s: 354 End data with <CR><LF>.<CR><LF>
        c: Subject: hi
        c:
        c: ..leading dot
        c: .
        s: 250 2.0.0 Queued
        c: QUIT
        s: 221 2.0.0 Bye
        closed
        """,
        ehlo=True,
    )
    assert app.events == [
        MailFrom("Alice@Example.org", {"SIZE": "100", "BODY": "8BITMIME"}),
        RcptTo(
            "Bob@example.test", {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;Bob+x@example.test"}
        ),
        RcptTo("unknown@example.test", {}),
        MessageData(b"Subject: hi\r\n\r\n.leading dot\r\n"),
        Quit(),
    ]
    mail = app.events[0]
    assert isinstance(mail, MailFrom)
    assert (mail.size, mail.body, mail.smtputf8) == (100, "8BITMIME", False)
    rcpt = app.events[1]
    assert isinstance(rcpt, RcptTo)
    assert rcpt.notify == ("SUCCESS", "FAILURE")


def test_null_sender_and_postmaster() -> None:
    app = dialog(
        """
        c: MAIL FROM:<>
        s: 250 2.1.0 Sender OK
        c: RCPT TO:<Postmaster>
        s: 250 2.1.5 Recipient OK
        c: RCPT TO:<@relay.example,@other.example:user@example.test>
        s: 250 2.1.5 Recipient OK
        """,
        ehlo=True,
    )
    assert app.events == [
        MailFrom("", {}),
        RcptTo("Postmaster", {}),
        RcptTo("user@example.test", {}),
    ]


def test_empty_message() -> None:
    app = dialog(
        """
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<b@example.org>
        c: DATA
        s: 250 2.1.0 Sender OK
        s: 250 2.1.5 Recipient OK
        s: 354 End data with <CR><LF>.<CR><LF>
        c: .
        s: 250 2.0.0 Queued
        """,
        ehlo=True,
    )
    assert app.events[-1] == MessageData(b"")


def test_sender_refused_then_transaction_not_open() -> None:
    dialog(
        """
        c: MAIL FROM:<bad@example.org>
        s: 550 5.7.1 Sender refused
        c: RCPT TO:<b@example.org>
        s: 503 5.5.1 Need MAIL command
        c: MAIL FROM:<good@example.org>
        s: 250 2.1.0 Sender OK
        """,
        ehlo=True,
    )


@pytest.mark.parametrize(
    ("commands", "reply"),
    [
        (
            ["MAIL FROM:<a@example.org>", "MAIL FROM:<a@example.org>"],
            "503 5.5.1 Nested MAIL command",
        ),
        (["RCPT TO:<a@example.org>"], "503 5.5.1 Need MAIL command"),
        (["DATA"], "503 5.5.1 Need MAIL command"),
        (["BDAT 0 LAST"], "503 5.5.1 Need MAIL command"),
        (["MAIL FROM:<a@example.org>", "DATA"], "503 5.5.1 Need RCPT command"),
        (["MAIL FROM:<a@example.org>", "BDAT 0 LAST"], "503 5.5.1 Need RCPT command"),
        # RFC 2920 §3.1: all recipients refused, then DATA: 554.
        (
            ["MAIL FROM:<a@example.org>", "RCPT TO:<unknown@example.org>", "DATA"],
            "554 5.5.1 No valid recipients",
        ),
        (
            ["MAIL FROM:<a@example.org>", "STARTTLS"],
            "503 5.5.1 Not allowed during a mail transaction",
        ),
    ],
)
def test_out_of_sequence(commands: list[str], reply: str) -> None:
    conn = make_conn()
    app = App()
    greet_ehlo(conn, app)
    for command in commands[:-1]:
        out = exchange(conn, app, f"{command}\r\n".encode())
        assert out.startswith(b"25") or out.startswith(b"550"), out
    assert exchange(conn, app, f"{commands[-1]}\r\n".encode()) == f"{reply}\r\n".encode()


def test_commands_before_ehlo() -> None:
    dialog(
        """
        c: MAIL FROM:<a@example.org>
        s: 503 5.5.1 Send EHLO/HELO first
        c: STARTTLS
        s: 503 5.5.1 Send EHLO/HELO first
        c: AUTH PLAIN
        s: 503 5.5.1 Send EHLO/HELO first
        c: RCPT TO:<a@example.org>
        s: 503 5.5.1 Need MAIL command
        c: NOOP
        s: 250 2.0.0 OK
        c: RSET
        s: 250 2.0.0 OK
        c: VRFY someone
        s: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        c: HELP
        s: 214 2.0.0 pochta: see RFC 5321
        """
    )


def test_simple_commands() -> None:
    app = dialog(
        """
        c: NOOP
        s: 250 2.0.0 OK
        c: noop with an argument
        s: 250 2.0.0 OK
        c: VRFY root
        s: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        c: VRFY
        s: 501 5.5.4 Syntax: VRFY address
        c: EXPN staff
        s: 502 5.5.1 Command not implemented
        c: TURN
        s: 502 5.5.1 Command not implemented
        c: HELP
        s: 214 2.0.0 pochta: see RFC 5321
        c: XYZZY
        s: 500 5.5.2 Command not recognized
        c:
        s: 500 5.5.2 Command not recognized
        c: RSET now
        s: 501 5.5.4 Syntax: RSET takes no parameters
        c: MAIL FROM:<a@example.org>
        s: 250 2.1.0 Sender OK
        c: RCPT TO:<b@example.org>
        s: 250 2.1.5 Recipient OK
        c: DATA please
        s: 501 5.5.4 Syntax: DATA takes no parameters
        c: RSET
        s: 250 2.0.0 OK
        c: RCPT TO:<b@example.org>
        s: 503 5.5.1 Need MAIL command
        c: QUIT now
        s: 501 5.5.4 Syntax: QUIT takes no parameters
        c: QUIT
        s: 221 2.0.0 Bye
        closed
        """,
        ehlo=True,
    )
    assert app.events == [
        Noop(),
        Noop(),
        Vrfy("root"),
        MailFrom("a@example.org", {}),
        RcptTo("b@example.org", {}),
        Reset(),
        Quit(),
    ]


def test_nothing_after_quit() -> None:
    conn = make_conn()
    app = App()
    out = exchange(conn, app, b"QUIT\r\nEHLO x\r\nNOOP\r\n")
    assert out == b"221 2.0.0 Bye\r\n"
    assert app.events == [Quit()]
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""


def test_verbs_are_case_insensitive() -> None:
    dialog(
        """
        c: mail from:<a@example.org>
        s: 250 2.1.0 Sender OK
        c: Rcpt To:<b@example.org>
        s: 250 2.1.5 Recipient OK
        c: rset
        s: 250 2.0.0 OK
        """,
        ehlo=True,
    )


# ---------------------------------------------------------------------------------------------
# MAIL and RCPT arguments (details in test_smtp_parse.py)


def test_address_and_parameter_errors() -> None:
    dialog(
        """
        c: MAIL FROM:a@example.org
        s: 501 5.1.7 Bad sender address syntax
        c: MAIL TO:<a@example.org>
        s: 501 5.5.4 Syntax: MAIL FROM:<address>
        c: MAIL FROM:<a@example.org> FOO=bar
        s: 555 5.5.4 MAIL FROM/RCPT TO parameters not recognized or not implemented
        c: MAIL FROM:<a@example.org> SIZE=1000000000
        s: 552 5.3.4 Message size exceeds fixed maximum message size
        c: MAIL FROM:<a@example.org> SIZE=big
        s: 501 5.5.4 Bad SIZE parameter; syntax: SIZE=octets
        c: MAIL FROM:<jösé@example.org>
        s: 553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8
        c: MAIL FROM:<jösé@exämple.org> SMTPUTF8
        s: 250 2.1.0 Sender OK
        c: RCPT TO:<>
        s: 501 5.1.3 Bad recipient address syntax
        c: RCPT TO:<ü@example.org>
        s: 250 2.1.5 Recipient OK
        c: RCPT TO:<b@example.org> NOTIFY=NEVER,SUCCESS
        s: 501 5.5.4 Bad NOTIFY parameter; syntax: NOTIFY=NEVER|SUCCESS,FAILURE,DELAY
        c: RCPT TO:<b@example.org> FOO
        s: 555 5.5.4 MAIL FROM/RCPT TO parameters not recognized or not implemented
        """,
        ehlo=True,
    )


def test_utf8_recipient_needs_smtputf8_on_mail() -> None:
    dialog(
        """
        c: MAIL FROM:<a@example.org>
        s: 250 2.1.0 Sender OK
        c: RCPT TO:<ü@example.org>
        s: 553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8
        """,
        ehlo=True,
    )


def test_dsn_parameters_need_dsn() -> None:
    unknown = "555 5.5.4 MAIL FROM/RCPT TO parameters not recognized or not implemented"
    dialog(
        f"""
        c: MAIL FROM:<a@example.org> RET=HDRS
        s: {unknown}
        c: MAIL FROM:<a@example.org> ENVID=x
        s: {unknown}
        c: MAIL FROM:<a@example.org>
        s: 250 2.1.0 Sender OK
        c: RCPT TO:<b@example.org> NOTIFY=NEVER
        s: {unknown}
        """,
        ehlo=True,
        dsn=False,
    )


def test_require_auth() -> None:
    dialog(
        """
        c: MAIL FROM:<a@example.org>
        s: 530 5.7.0 Authentication required
        """,
        ehlo=True,
        require_auth=True,
    )


def test_max_recipients() -> None:
    # RFC 5321 §4.5.3.1.10: 452 for too many recipients; refused ones do not count.
    dialog(
        """
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<unknown@example.org>
        c: RCPT TO:<b@example.org>
        c: RCPT TO:<c@example.org>
        c: RCPT TO:<d@example.org>
        s: 250 2.1.0 Sender OK
        s: 550 5.1.1 No such user here
        s: 250 2.1.5 Recipient OK
        s: 250 2.1.5 Recipient OK
        s: 452 4.5.3 Too many recipients
        c: DATA
        s: 354 End data with <CR><LF>.<CR><LF>
        """,
        ehlo=True,
        max_recipients=2,
    )


def test_binarymime_needs_bdat() -> None:
    # RFC 3030 §3: BODY=BINARYMIME only with BDAT.
    dialog(
        """
        c: MAIL FROM:<a@example.org> BODY=BINARYMIME
        c: RCPT TO:<b@example.org>
        c: DATA
        s: 250 2.1.0 Sender OK
        s: 250 2.1.5 Recipient OK
        s: 503 5.5.1 BODY=BINARYMIME requires BDAT
        c: BDAT 5 LAST
        c: abc
        s: 250 2.0.0 Queued
        """,
        ehlo=True,
    )


# ---------------------------------------------------------------------------------------------
# Pipelining (RFC 2920)


def test_whole_session_in_one_packet() -> None:
    conn = make_conn()
    app = App()
    out = exchange(
        conn,
        app,
        b"EHLO client.example\r\n"
        b"MAIL FROM:<a@example.org>\r\n"
        b"RCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<unknown@example.org>\r\n"
        b"DATA\r\n"
        b"Subject: x\r\n\r\nbody\r\n.\r\n"
        b"MAIL FROM:<c@example.org>\r\n"
        b"RCPT TO:<d@example.org>\r\n"
        b"BDAT 5\r\nhello"
        b"BDAT 0 LAST\r\n"
        b"QUIT\r\n",
    )
    assert out.decode().split("\r\n") == [
        *EHLO_LINES,
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "550 5.1.1 No such user here",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Queued",
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "250 2.0.0 5 octets received",
        "250 2.0.0 Queued",
        "221 2.0.0 Bye",
        "",
    ]
    assert [type(e).__name__ for e in app.events] == [
        "Helo",
        "MailFrom",
        "RcptTo",
        "RcptTo",
        "MessageData",
        "MailFrom",
        "RcptTo",
        "MessageData",
        "Quit",
    ]
    assert app.events[4] == MessageData(b"Subject: x\r\n\r\nbody\r\n")
    assert app.events[7] == MessageData(b"hello")
    assert conn.closed


def test_same_session_byte_by_byte() -> None:
    data = (
        b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
        b"DATA\r\n.x\r\n..\r\n\r\n.\r\nBDAT 3 LAST\r\nabcQUIT\r\n"
    )
    whole_conn, whole_app = make_conn(), App()
    whole = exchange(whole_conn, whole_app, data)
    conn, app = make_conn(), App()
    out = b"".join(exchange(conn, app, data[i : i + 1]) for i in range(len(data)))
    assert out == whole
    assert app.events == whole_app.events


def test_glue_answers_later_replies_stay_in_order() -> None:
    # The glue may take its time: events come one at a time, replies keep their order.
    conn = make_conn()
    conn.receive_data(b"EHLO c.example\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\nNOOP\r\n")
    ev = conn.next_event()
    assert ev == Helo("c.example", extended=True)
    assert conn.pending == ev
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    conn.send_reply(OK)
    assert conn.next_event() == Noop()
    mail = conn.next_event()
    assert isinstance(mail, MailFrom)
    assert conn.data_to_send().decode().split("\r\n")[-2] == "250 2.0.0 OK"
    conn.send_reply(SENDER_OK)
    assert conn.next_event() == Noop()
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"250 2.1.0 Sender OK\r\n250 2.0.0 OK\r\n"


# ---------------------------------------------------------------------------------------------
# DATA (RFC 5321 §4.1.1.4, §4.5.2) and its limits


def _data_session(content: bytes, **kwargs: Any) -> tuple[App, bytes]:
    conn = make_conn(**kwargs)
    app = App()
    greet_ehlo(conn, app)
    head = exchange(conn, app, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    assert head.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    app.events.clear()
    return app, exchange(conn, app, content)


def test_dot_unstuffing() -> None:
    app, out = _data_session(b".\r\n")
    assert app.events == [MessageData(b"")]
    app, out = _data_session(b"..\r\n...x\r\n. \r\n.\r\n")
    assert app.events == [MessageData(b".\r\n..x\r\n \r\n")]
    assert out == b"250 2.0.0 Queued\r\n"


def test_data_too_big_is_read_to_the_end() -> None:
    # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: 552 after the terminator; the commands after it
    # are commands again.
    app, out = _data_session(
        b"x" * 50 + b"\r\n" + b"y" * 50 + b"\r\n.\r\nNOOP\r\n", max_message_bytes=80
    )
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
    assert app.events == [Noop()]


def test_data_line_too_long() -> None:
    # RFC 5321 §4.5.3.1.6: we refuse long lines (500 5.5.6) rather than split them.
    app, out = _data_session(b"x" * 99 + b"\r\n.\r\n", max_data_line_bytes=100)
    assert out == b"500 5.5.6 Line too long\r\n"
    assert app.events == []
    app, out = _data_session(b"x" * 98 + b"\r\n.\r\n", max_data_line_bytes=100)
    assert app.events == [MessageData(b"x" * 98 + b"\r\n")]


def test_data_bare_lf_rejected() -> None:
    app, out = _data_session(b"a\nb\r\n.\r\nNOOP\r\n", bare_newline="reject")
    assert out == (BARE_LINEFEED.encode() + b"250 2.0.0 OK\r\n")
    assert app.events == [Noop()]


def test_bare_newline_default_is_normalize() -> None:
    # Issue 12 point 2: Postfix 3.9's default; mail from scripts that fold with "\n" arrives.
    assert SMTPSettings().bare_newline == "normalize"
    app, out = _data_session(b"Subject: =?utf-8?b?QQ==?=\n =?utf-8?b?Qg==?=\r\n\r\nhi\nyo\r\n.\r\n")
    assert out == b"250 2.0.0 Queued\r\n"
    assert app.events == [
        MessageData(b"Subject: =?utf-8?b?QQ==?=\r\n =?utf-8?b?Qg==?=\r\n\r\nhi\r\nyo\r\n")
    ]


def test_data_bare_newlines_normalized() -> None:
    app, out = _data_session(b"a\nb\rc\r\r\n.\n.\r\n.\r\n", bare_newline="normalize")
    # "c\r" CRLF: the bare CR is a line end too; ".\n." is unstuffed to "\n." first.
    assert app.events == [MessageData(b"a\r\nb\r\nc\r\n\r\n\r\n.\r\n")]
    assert out == b"250 2.0.0 Queued\r\n"


def test_eof_in_data_delivers_nothing() -> None:
    conn = make_conn()
    app = App()
    greet_ehlo(conn, app)
    out = exchange(conn, app, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@e.org>\r\nDATA\r\nhi\r\n")
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert exchange(conn, app, b"") == b""
    assert conn.closed
    assert not any(isinstance(e, MessageData) for e in app.events)


def test_eof_mid_command() -> None:
    conn = make_conn()
    app = App()
    assert exchange(conn, app, b"NOOP\r\nEHLO x") == b"250 2.0.0 OK\r\n"
    assert exchange(conn, app, b"") == b""
    assert conn.closed
    assert app.events == [Noop()]


# ---------------------------------------------------------------------------------------------
# SMTP smuggling (RFC 5321 §2.3.8, §4.1.1.4): only CRLF.CRLF ends DATA


SMUGGLE_TAIL = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\nsmuggled\r\n.\r\n"
FAKE_ENDS = [b"\n.\n", b"\r.\r\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"]


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
@pytest.mark.parametrize("mode", ["reject", "normalize"])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_smuggling(fake_end: bytes, mode: str, split: bool) -> None:
    conn = make_conn(bare_newline=mode)
    app = App()
    greet_ehlo(conn, app)
    data = (
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLE_TAIL + b"QUIT\r\n"
    )
    if split:
        out = b"".join(exchange(conn, app, data[i : i + 1]) for i in range(len(data)))
    else:
        out = exchange(conn, app, data)
    assert not [e for e in app.events if isinstance(e, MailFrom) and "evil" in e.address]
    messages = [e for e in app.events if isinstance(e, MessageData)]
    lines = out.decode().split("\r\n")
    if mode == "reject":
        assert messages == []
        assert lines[3].startswith("550 5.5.2 Message contains bare CR or LF")
    else:
        assert len(messages) == 1
        assert b"MAIL FROM:<evil@x.example>\r\n" in messages[0].content
        assert messages[0].content.endswith(b"smuggled\r\n")
        bare = messages[0].content.replace(b"\r\n", b"")
        assert b"\r" not in bare  # every line end is CRLF now
        assert b"\n" not in bare
        assert lines[3] == "250 2.0.0 Queued"
    assert lines[:3] == [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "354 End data with <CR><LF>.<CR><LF>",
    ]
    assert lines[4:] == ["221 2.0.0 Bye", ""]


def test_smuggling_normalize_content_exact() -> None:
    app, _ = _data_session(b"hello\n.\nMAIL FROM:<evil@x>\r\n.\r\n", bare_newline="normalize")
    # The "." line reached through a bare LF is content, kept as it is (not unstuffed).
    assert app.events == [MessageData(b"hello\r\n.\r\nMAIL FROM:<evil@x>\r\n")]
    app, _ = _data_session(b"hello\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n", bare_newline="normalize")
    # A CRLF-started line beginning with "." is unstuffed, whatever follows the dot.
    assert app.events == [MessageData(b"hello\r\n\r\nMAIL FROM:<evil@x>\r\n")]


# ---------------------------------------------------------------------------------------------
# BDAT (RFC 3030)


def _bdat_session(data: bytes, **kwargs: Any) -> tuple[App, str]:
    conn = make_conn(**kwargs)
    app = App()
    greet_ehlo(conn, app)
    head = b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.org>\r\n"
    assert exchange(conn, app, head) == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
    app.events.clear()
    app.conn = conn
    return app, exchange(conn, app, data).decode()


def test_bdat_binary_chunks() -> None:
    binary = b"\x00\xff\n.\n\r\n.\r\nQUIT\r\n\r"
    assert len(binary) == 17
    app, out = _bdat_session(b"BDAT 17\r\n" + binary + b"BDAT 4\r\nRSETBDAT 0 LAST\r\nNOOP\r\n")
    assert out == (
        "250 2.0.0 17 octets received\r\n"
        "250 2.0.0 4 octets received\r\n"
        "250 2.0.0 Queued\r\n"
        "250 2.0.0 OK\r\n"
    )
    assert app.events == [MessageData(binary + b"RSET"), Noop()]


def _text_bdat_session(data: bytes, **kwargs: Any) -> tuple[App, bytes]:
    """BDAT without BODY=BINARYMIME: text lines (RFC 3030 §2)."""
    conn = make_conn(**kwargs)
    app = App()
    greet_ehlo(conn, app)
    head = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
    assert exchange(conn, app, head) == b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
    app.events.clear()
    return app, b"".join(exchange(conn, app, data[i : i + 1]) for i in range(len(data)))


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_bdat_text_bare_newlines_normalized(split: bool) -> None:
    # Issue 12 point 2, BDAT: bare LF and CR become CRLF; a CRLF cut between two chunks
    # stays one line end; a CR ending the last chunk becomes CRLF.
    chunks = [b"Subject: a\n b\r", b"\nx\ry\r\n\n", b"z\r"]
    data = b"".join(
        f"BDAT {len(c)}{' LAST' if i == len(chunks) - 1 else ''}\r\n".encode() + c
        for i, c in enumerate(chunks)
    )
    if split:
        app, out = _text_bdat_session(data)
    else:
        conn = make_conn()
        app = App()
        greet_ehlo(conn, app)
        exchange(conn, app, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n")
        app.events.clear()
        out = exchange(conn, app, data)
    assert out.endswith(b"250 2.0.0 Queued\r\n")
    assert app.events == [MessageData(b"Subject: a\r\n b\r\nx\r\ny\r\n\r\nz\r\n")]


def test_bdat_text_kept_in_reject_mode_and_binarymime_kept() -> None:
    # reject mode leaves BDAT content as it was; BINARYMIME is octets (RFC 3030 §3).
    app, out = _text_bdat_session(b"BDAT 4 LAST\r\na\nb\r", bare_newline="reject")
    assert app.events == [MessageData(b"a\nb\r")]
    app, out2 = _bdat_session(b"BDAT 4 LAST\r\na\nb\r")
    assert app.events == [MessageData(b"a\nb\r")]
    assert out.endswith(b"250 2.0.0 Queued\r\n")
    assert out2 == "250 2.0.0 Queued\r\n"


def test_bdat_normalized_size_counts_against_the_limit() -> None:
    # 600 bare LFs are 1200 octets once normalised: over a 1000-octet limit.
    body = b"\n" * 600
    app, out = _text_bdat_session(
        f"BDAT {len(body)} LAST\r\n".encode() + body, max_message_bytes=1000
    )
    assert out.startswith(b"552 5.3.4")
    assert app.events == []


def test_bdat_zero_last_alone() -> None:
    app, out = _bdat_session(b"BDAT 0 LAST\r\n")
    assert out == "250 2.0.0 Queued\r\n"
    assert app.events == [MessageData(b"")]


def test_bdat_last_is_case_insensitive_and_split_anywhere() -> None:
    conn = make_conn()
    app = App()
    greet_ehlo(conn, app)
    data = (
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nbdat 6 last\r\nab\r\ncdNOOP\r\n"
    )
    out = b"".join(exchange(conn, app, data[i : i + 1]) for i in range(len(data)))
    assert out.endswith(b"250 2.0.0 Queued\r\n250 2.0.0 OK\r\n")
    assert MessageData(b"ab\r\ncd") in app.events


def test_refused_bdat_octets_are_skipped() -> None:
    # RFC 3030 §2: a refused BDAT's octets are read and dropped, never taken as commands.
    app = dialog(
        """
        c: BDAT 28 LAST
        c: MAIL FROM:<evil@x.example>
        s: 503 5.5.1 Need MAIL command
        c: MAIL FROM:<a@example.org>
        c: BDAT 6
        c: RSET
        c: RCPT TO:<b@example.org>
        c: BDAT 6 LATER
        c: RSET
        c: BDAT 6 LAST
        c: RSET
        s: 250 2.1.0 Sender OK
        s: 503 5.5.1 Need RCPT command
        s: 250 2.1.5 Recipient OK
        s: 501 5.5.4 Syntax: BDAT octets [LAST]
        s: 250 2.0.0 Queued
        """,
        ehlo=True,
    )
    assert [type(e).__name__ for e in app.events] == ["MailFrom", "RcptTo", "MessageData"]
    assert app.events[-1] == MessageData(b"RSET\r\n")


def test_bdat_without_a_count_closes() -> None:
    dialog(
        """
        c: BDAT lots
        s: 421 4.5.4 Syntax: BDAT octets [LAST]; closing connection
        closed
        """,
        ehlo=True,
    )


def test_data_after_bdat() -> None:
    _, out = _bdat_session(b"BDAT 2\r\nabDATA\r\nRCPT TO:<c@example.org>\r\nBDAT 1 LAST\r\nc")
    assert out == (
        "250 2.0.0 2 octets received\r\n"
        "503 5.5.1 DATA and BDAT cannot be mixed in one transaction\r\n"
        "503 5.5.1 Not allowed during a mail transaction\r\n"
        "250 2.0.0 Queued\r\n"
    )


def test_bdat_too_big_across_chunks() -> None:
    # The chunk that passes the limit gets 552; chunks already pipelined behind it are read
    # and get the same reply, up to LAST (RFC 3030 §2); then the session goes on.
    app, out = _bdat_session(
        b"BDAT 6\r\n123456BDAT 6\r\n123456BDAT 6\r\n123456BDAT 6 LAST\r\n123456NOOP\r\n"
        b"MAIL FROM:<a@example.org>\r\n",
        max_message_bytes=10,
    )
    assert out == (
        "250 2.0.0 6 octets received\r\n"
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        "250 2.0.0 OK\r\n"
        "250 2.1.0 Sender OK\r\n"
    )
    assert [type(e).__name__ for e in app.events] == ["Noop", "MailFrom"]


def test_bdat_too_big_then_rset() -> None:
    _, out = _bdat_session(
        b"BDAT 20\r\n" + b"x" * 20 + b"RSET\r\nBDAT 1 LAST\r\nx", max_message_bytes=10
    )
    assert out == (
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        "250 2.0.0 OK\r\n"
        "503 5.5.1 Need MAIL command\r\n"
    )


def test_bdat_last_too_big() -> None:
    _, out = _bdat_session(b"BDAT 11 LAST\r\n" + b"x" * 11 + b"NOOP\r\n", max_message_bytes=10)
    assert out == "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"


# ---------------------------------------------------------------------------------------------
# LMTP (RFC 2033)


def test_lmtp_replies_per_recipient() -> None:
    app = dialog(
        """
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<b@example.org>
        c: RCPT TO:<unknown@example.org>
        c: RCPT TO:<full@example.org>
        c: RCPT TO:<c@example.org>
        c: DATA
        s: 250 2.1.0 Sender OK
        s: 250 2.1.5 Recipient OK
        s: 550 5.1.1 No such user here
        s: 250 2.1.5 Recipient OK
        s: 250 2.1.5 Recipient OK
        s: 354 End data with <CR><LF>.<CR><LF>
        c: hi
        c: .
        s: 250 2.0.0 Queued
        s: 452 4.2.2 Mailbox full
        s: 250 2.0.0 Queued
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<full@example.org>
        c: BDAT 4
        c: ab
        c: BDAT 0 LAST
        s: 250 2.1.0 Sender OK
        s: 250 2.1.5 Recipient OK
        s: 250 2.0.0 4 octets received
        s: 452 4.2.2 Mailbox full
        """,
        ehlo=True,
        lmtp=True,
    )
    assert sum(isinstance(e, MessageData) for e in app.events) == 2


def test_lmtp_no_valid_recipients_is_503() -> None:
    # RFC 2033 §4.2: DATA without a successful RCPT fails with 503.
    dialog(
        """
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<unknown@example.org>
        c: DATA
        s: 250 2.1.0 Sender OK
        s: 550 5.1.1 No such user here
        s: 503 5.5.1 No valid recipients
        """,
        ehlo=True,
        lmtp=True,
    )


def test_lmtp_core_refusal_is_repeated_per_recipient() -> None:
    too_big = "552 5.3.4 Message size exceeds fixed maximum message size"
    dialog(
        f"""
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<b@example.org>
        c: RCPT TO:<c@example.org>
        c: DATA
        s: 250 2.1.0 Sender OK
        s: 250 2.1.5 Recipient OK
        s: 250 2.1.5 Recipient OK
        s: 354 End data with <CR><LF>.<CR><LF>
        c: {"x" * 40}
        c: .
        s: {too_big}
        s: {too_big}
        c: MAIL FROM:<a@example.org>
        c: RCPT TO:<b@example.org>
        c: RCPT TO:<c@example.org>
        c: BDAT 30
        c: {"x" * 28}
        c: BDAT 5 LAST
        c: {"x" * 3}
        s: 250 2.1.0 Sender OK
        s: 250 2.1.5 Recipient OK
        s: 250 2.1.5 Recipient OK
        s: {too_big}
        s: {too_big}
        s: {too_big}
        """,
        ehlo=True,
        lmtp=True,
        max_message_bytes=20,
    )


def test_lmtp_replies_one_at_a_time() -> None:
    conn = make_conn(lmtp=True)
    app = App()
    greet_ehlo(conn, app)
    exchange(conn, app, b"MAIL FROM:<a@e.org>\r\nRCPT TO:<b@e.org>\r\nRCPT TO:<c@e.org>\r\n")
    conn.data_to_send()
    conn.receive_data(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
    event = conn.next_event()
    assert event == MessageData(b"hi\r\n")
    assert conn.replies_due == 2
    conn.send_reply(QUEUED)
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send_replies([QUEUED, QUEUED])
    conn.send_reply(MAILBOX_FULL)
    assert conn.next_event() == Noop()
    assert conn.data_to_send().decode().split("\r\n")[1:] == [
        "250 2.0.0 Queued",
        "452 4.2.2 Mailbox full",
        "250 2.0.0 OK",
        "",
    ]


# ---------------------------------------------------------------------------------------------
# STARTTLS (RFC 3207)


def test_starttls_discards_buffered_input() -> None:
    # RFC 3207 §4.2 and CVE-2011-0411: commands sent with STARTTLS in one packet are dropped.
    app = dialog(
        """
        c: STARTTLS
        c: MAIL FROM:<evil@x.example>
        c: RCPT TO:<victim@example.org>
        s: 220 2.0.0 Ready to start TLS
        c: MAIL FROM:<a@example.org>
        s: 503 5.5.1 Send EHLO/HELO first
        """,
        ehlo=True,
    )
    assert app.events == [StartTLS()]
    assert app.conn is not None
    assert app.conn.tls_active


def test_input_during_handshake_is_dropped() -> None:
    conn = make_conn()
    app = App(auto_tls=False)
    greet_ehlo(conn, app)
    assert exchange(conn, app, b"STARTTLS\r\nNOOP\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.state is State.TLS
    conn.receive_data(b"MAIL FROM:<evil@x.example>\r\n")
    assert conn.next_event() is NEED_DATA
    conn.tls_started()
    assert conn.state.name == "FRESH"
    assert exchange(conn, app, b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    assert app.events == [StartTLS(), Noop()]


def test_after_tls_the_client_starts_over() -> None:
    conn = make_conn(auth_mechanisms=["PLAIN"])
    app = App()
    greet_ehlo(conn, app)
    assert conn.helo_name == "client.example"
    assert exchange(conn, app, b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.helo_name is None
    out = exchange(conn, app, b"EHLO client.example\r\nSTARTTLS\r\nSTARTTLS x\r\n").decode()
    assert out.split("\r\n") == [
        *EHLO_LINES[:-1],
        "250 AUTH PLAIN",
        "503 5.5.1 TLS already active",
        "501 5.5.4 Syntax: STARTTLS takes no parameters",
        "",
    ]


def test_starttls_refused_by_glue_keeps_going() -> None:
    conn = make_conn()
    greet_ehlo(conn, App())
    conn.receive_data(b"STARTTLS\r\nNOOP\r\n")
    assert conn.next_event() == StartTLS()
    conn.send_reply(TLS_UNAVAILABLE)
    assert conn.next_event() == Noop()
    assert conn.data_to_send() == (
        b"454 4.7.0 TLS not available due to temporary reason\r\n250 2.0.0 OK\r\n"
    )


def test_starttls_not_available() -> None:
    dialog(
        """
        c: STARTTLS
        s: 502 5.5.1 Command not implemented
        """,
        ehlo=True,
        tls_available=False,
    )


def test_tls_started_misuse() -> None:
    conn = make_conn()
    with pytest.raises(LocalProtocolError):
        conn.tls_started()


# ---------------------------------------------------------------------------------------------
# AUTH (RFC 4954)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_OK = _b64(b"\x00alice@example.test\x00secret")
PLAIN_BAD = _b64(b"\x00alice@example.test\x00wrong")


def test_auth_plain_initial_response() -> None:
    app = dialog(
        f"""
        c: AUTH PLAIN {PLAIN_BAD}
        s: 535 5.7.8 Authentication credentials invalid
        c: AUTH plain {PLAIN_OK}
        s: 235 2.7.0 Authentication successful
        c: AUTH PLAIN {PLAIN_OK}
        s: 503 5.5.1 Already authenticated
        c: MAIL FROM:<alice@example.test>
        s: 250 2.1.0 Sender OK
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["PLAIN", "LOGIN"],
        require_auth=True,
    )
    assert app.events[1] == AuthStart("PLAIN", b"\x00alice@example.test\x00secret")
    assert "secret" not in repr(app.events[1])
    assert app.conn is not None
    assert app.conn.authenticated


def test_auth_plain_empty_challenge() -> None:
    app = dialog(
        f"""
        c: AUTH PLAIN
        s: 334 $
        c: {PLAIN_OK}
        s: 235 2.7.0 Authentication successful
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["PLAIN"],
    )
    assert app.events == [
        AuthStart("PLAIN", None),
        AuthResponse(b"\x00alice@example.test\x00secret"),
    ]


def test_auth_login_challenges() -> None:
    dialog(
        f"""
        c: AUTH LOGIN
        s: 334 VXNlcm5hbWU6
        c: {_b64(b"alice@example.test")}
        s: 334 UGFzc3dvcmQ6
        c: {_b64(b"secret")}
        s: 235 2.7.0 Authentication successful
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["LOGIN"],
    )


def test_auth_cancel_and_bad_base64() -> None:
    app = dialog(
        """
        c: AUTH LOGIN
        s: 334 VXNlcm5hbWU6
        c: *
        s: 501 5.0.0 Authentication cancelled
        c: AUTH LOGIN
        s: 334 VXNlcm5hbWU6
        c: not base64!
        s: 501 5.5.2 Cannot decode base64
        c: AUTH PLAIN %%%
        s: 501 5.5.2 Cannot decode base64
        c: AUTH PLAIN *
        s: 501 5.0.0 Authentication cancelled
        c: NOOP
        s: 250 2.0.0 OK
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["PLAIN", "LOGIN"],
    )
    assert [type(e).__name__ for e in app.events] == ["AuthStart", "AuthStart", "Noop"]


def test_auth_empty_initial_response() -> None:
    # RFC 4954 §4: "=" is an empty initial response (PLAIN then fails: no user, no password).
    app = dialog(
        """
        c: AUTH PLAIN =
        s: 535 5.7.8 Authentication credentials invalid
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["PLAIN"],
    )
    assert app.events == [AuthStart("PLAIN", b"")]


def test_auth_refusals() -> None:
    dialog(
        """
        c: AUTH PLAIN
        s: 538 5.7.11 Encryption required for requested authentication mechanism
        """,
        ehlo=True,
        auth_mechanisms=["PLAIN"],
    )
    dialog(
        """
        c: AUTH PLAIN
        s: 502 5.5.1 Command not implemented
        """,
        ehlo=True,
        tls_active=True,
    )
    dialog(
        """
        c: AUTH CRAM-MD5
        s: 504 5.5.4 Unrecognized authentication type
        c: AUTH
        s: 501 5.5.4 Syntax: AUTH mechanism [initial-response]
        c: MAIL FROM:<a@example.org>
        s: 250 2.1.0 Sender OK
        c: AUTH PLAIN
        s: 503 5.5.1 Not allowed during a mail transaction
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["PLAIN"],
    )


def test_auth_lines_may_be_long() -> None:
    # RFC 4954 §4: AUTH lines of 12288 octets, though other commands stay short.
    long = _b64(b"u" * 6000)
    assert len(long) == 8000
    app = dialog(
        f"""
        c: AUTH LOGIN {long}
        s: 334 UGFzc3dvcmQ6
        c: {long}
        s: 535 5.7.8 Authentication credentials invalid
        c: AUTH LOGIN
        s: 334 VXNlcm5hbWU6
        c: {"A" * 12289}
        s: 500 5.5.6 Line too long
        c: NOOP {"x" * 600}
        s: 500 5.5.6 Line too long
        """,
        ehlo=True,
        tls_active=True,
        auth_mechanisms=["LOGIN"],
        max_command_line_bytes=512,
    )
    assert [type(e).__name__ for e in app.events] == ["AuthStart", "AuthResponse", "AuthStart"]


def test_auth_challenge_misuse() -> None:
    conn = make_conn()
    greet_ehlo(conn, App())
    conn.receive_data(b"MAIL FROM:<a@example.org>\r\n")
    assert isinstance(conn.next_event(), MailFrom)
    with pytest.raises(LocalProtocolError):
        conn.auth_challenge(b"x")
    with pytest.raises(LocalProtocolError):
        conn.send_reply(Reply(334, "", "eA=="))
    with pytest.raises(LocalProtocolError):
        conn.send_reply(Reply(250, "", "a\r\nb"))
    with pytest.raises(LocalProtocolError):
        conn.send_reply(Reply(100, "", "x"))
    conn.send_reply(SENDER_OK)
    with pytest.raises(LocalProtocolError):
        conn.send_reply(OK)


# ---------------------------------------------------------------------------------------------
# Command framing (RFC 5321 §2.3.8, §4.5.3.1.4)


BARE_COMMAND = "500 5.5.2 Bare CR or LF in command; lines must end with CRLF (RFC 5321 §2.3.8)"


def test_bare_lf_in_command_is_never_executed() -> None:
    conn = make_conn(bare_newline="reject")
    app = App()
    greet_ehlo(conn, app)
    out = exchange(
        conn,
        app,
        b"MAIL FROM:<a@example.org>\nRCPT TO:<b@example.org>\r\n"
        b"NOOP\rMAIL FROM:<a@example.org>\r\n"
        b"NOOP\n\r\n"
        b"NOOP\r\n",
    )
    assert out.decode().split("\r\n") == [
        BARE_COMMAND,
        BARE_COMMAND,
        BARE_COMMAND,
        "250 2.0.0 OK",
        "",
    ]
    assert app.events == [Noop()]


def test_bare_lf_in_command_normalized() -> None:
    conn = make_conn(bare_newline="normalize")
    app = App()
    out = exchange(conn, app, b"EHLO x\nMAIL FROM:<a@example.org>\r\nNOOP\rRSET\n")
    assert out.decode().split("\r\n")[-3:] == [
        "250 2.1.0 Sender OK",
        BARE_COMMAND,
        "",
    ]
    assert [type(e).__name__ for e in app.events] == ["Helo", "MailFrom"]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_command_too_long(split: bool) -> None:
    conn = make_conn(max_command_line_bytes=100)
    app = App()
    data = b"NOOP " + b"x" * 93 + b"\r\n" + b"NOOP " + b"x" * 94 + b"\r\n" + b"RSET\r\n"
    data += b"NOOP " + b"y" * 20000 + b"\r\r\n" + b"NOOP\r\n"
    if split:
        out = b"".join(exchange(conn, app, data[i : i + 1]) for i in range(len(data)))
    else:
        out = exchange(conn, app, data)
    assert out == (
        b"250 2.0.0 OK\r\n"
        b"500 5.5.6 Line too long\r\n"
        b"250 2.0.0 OK\r\n"
        b"500 5.5.6 Line too long\r\n"
        b"250 2.0.0 OK\r\n"
    )
    assert [type(e).__name__ for e in app.events] == ["Noop", "Reset", "Noop"]


def test_invalid_utf8_command() -> None:
    conn = make_conn()
    assert exchange(conn, App(), b"NOOP \xff\r\n") == b"500 5.5.2 Command is not valid UTF-8\r\n"


# ---------------------------------------------------------------------------------------------
# Session limits


def test_too_many_commands_before_mail() -> None:
    conn = make_conn(max_commands_before_mail=3)
    app = App()
    out = exchange(conn, app, b"NOOP\r\nRSET\r\nVRFY x\r\nNOOP\r\nNOOP\r\n")
    assert out == (
        b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
        b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        b"421 4.7.0 Too many commands without a transaction, closing connection\r\n"
    )
    assert conn.closed


def test_mail_resets_the_command_count() -> None:
    # EHLO counts (1), then NOOP NOOP (3); MAIL resets; commands inside a transaction do not
    # count; after RSET four NOOPs are one too many.
    dialog(
        """
        c: NOOP
        c: NOOP
        c: MAIL FROM:<a@example.org>
        c: NOOP
        c: NOOP
        c: RSET
        c: NOOP
        c: NOOP
        c: NOOP
        c: NOOP
        s: 250 2.0.0 OK
        s: 250 2.0.0 OK
        s: 250 2.1.0 Sender OK
        s: 250 2.0.0 OK
        s: 250 2.0.0 OK
        s: 250 2.0.0 OK
        s: 250 2.0.0 OK
        s: 250 2.0.0 OK
        s: 250 2.0.0 OK
        s: 421 4.7.0 Too many commands without a transaction, closing connection
        closed
        """,
        ehlo=True,
        max_commands_before_mail=3,
    )


def test_too_many_errors() -> None:
    conn = make_conn(max_errors=3)
    app = App()
    greet_ehlo(conn, app)
    out = exchange(
        conn, app, b"FOO\r\nRCPT TO:<a@b.example>\r\nMAIL FROM:<bad@x.example>\r\nNOOP\r\n"
    )
    assert out == (
        b"500 5.5.2 Command not recognized\r\n"
        b"503 5.5.1 Need MAIL command\r\n"
        b"550 5.7.1 Sender refused\r\n"
        b"421 4.7.0 Too many errors, closing connection\r\n"
    )
    assert conn.closed


def test_errors_are_forgiven_after_a_delivered_message() -> None:
    conn = make_conn(max_errors=2)
    app = App()
    greet_ehlo(conn, app)
    out = exchange(
        conn,
        app,
        b"FOO\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 0 LAST\r\n"
        b"FOO\r\nNOOP\r\nFOO\r\n",
    )
    assert out.decode().split("\r\n")[-6:] == [
        "250 2.0.0 Queued",
        "500 5.5.2 Command not recognized",
        "250 2.0.0 OK",
        "500 5.5.2 Command not recognized",
        "421 4.7.0 Too many errors, closing connection",
        "",
    ]


def test_timeout() -> None:
    conn = make_conn()
    conn.receive_data(b"NOOP\r\n")
    conn.timeout()
    assert conn.closed
    assert conn.data_to_send() == b"421 4.4.2 Timeout, closing connection\r\n"
    assert conn.next_event() is NEED_DATA
    conn.timeout()
    assert conn.data_to_send() == b""


def test_glue_421_closes() -> None:
    conn = make_conn()
    conn.receive_data(b"EHLO x\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), Helo)
    conn.send_reply(SERVICE_CLOSING)
    assert conn.closed
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"421 4.3.2 Service closing transmission channel\r\n"


def test_reply_without_event() -> None:
    conn = make_conn()
    with pytest.raises(LocalProtocolError):
        conn.send_reply(OK)
    with pytest.raises(LocalProtocolError):
        conn.auth_challenge(b"")
