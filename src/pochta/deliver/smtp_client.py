"""One outbound SMTP or LMTP client session, on top of ``aiosmtplib.SMTP``.

``ClientSession.open`` connects to one address of one host and gets the session ready for
mail: greeting, EHLO (HELO when the server does not know EHLO, RFC 5321 §3.2) or LHLO for
LMTP (RFC 2033 §4.1), STARTTLS as the ``HostTLS`` level asks, and AUTH for a relayhost.
``ClientSession.send`` then runs one mail transaction and returns one reply per recipient.
A session can be kept open and used again after ``reset`` (RSET), which is what the
connection cache of ``remote.py`` does.

What aiosmtplib does and what we add
------------------------------------
aiosmtplib does the connection (over a socket we connect, so that the connect timeout and the
source address are ours), implicit TLS, STARTTLS, EHLO/HELO and the parsing of its
extensions, AUTH PLAIN/LOGIN, RSET and QUIT. Its protocol object reads exactly one reply per
command, and a second reply that arrives in the same read is lost (tried with 5.1.3: two
replies in one TCP segment, the second read times out); it has no LMTP client either (its
issue #210, "Support LMTP", is open).
LMTP sends one reply per recipient after the final dot (RFC 2033 §4.2) and PIPELINING
(RFC 2920) sends several commands before reading their replies, so the mail transaction
itself runs on ``ReplyParser``, a small sans-IO reply reader: for the transaction the
transport is handed to a ``_ReplyReader`` protocol (``transport.set_protocol``) and handed
back to aiosmtplib afterwards. With PIPELINING offered, MAIL, every RCPT and DATA go out in
one write (RFC 2920 §3.1); without it, one command at a time.

TLS levels (Postfix smtp_tls_security_level, see ``tls_policy.py``)
-------------------------------------------------------------------
- ``none``: no STARTTLS;
- ``may``: STARTTLS when offered, any certificate; a STARTTLS refusal continues in plain text
  on the same connection, a failed handshake reconnects without TLS (RFC 7435 §3:
  opportunistic security never fails where plain text would have worked);
- ``encrypt``: TLS required, any certificate;
- ``verify``: TLS required, the certificate must chain to a trusted CA (``tls_ca_file`` in
  addition to the system store) and name the MX host (the name, never the IP: RFC 6125 §6,
  RFC 7672 §3.2.2 for the same rule under DANE);
- ``dane``: TLS required, and the caller's ``dane_check(chain_der, tlsa)`` must accept the
  peer's certificate chain (RFC 7672 §3.1).

A required level that cannot be met fails the host (the caller tries the next one).
Every reply is recorded as text "CODE X.Y.Z text": a server reply without an enhanced
status code gets the generic "X.0.0" of its class (RFC 3463 §3.1).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import aiosmtplib

from pochta.deliver.tls_policy import LEVEL_ORDER, HostTLS, Level, TLSARecord
from pochta.logs import get_logger
from pochta.mime.headers import split_message
from pochta.protocols.smtp.parse import xtext_encode
from pochta.protocols.smtp.replies import Reply

log = get_logger("deliver")

__all__ = [
    "ClientSession",
    "ClientSettings",
    "Credentials",
    "DaneCheck",
    "Endpoint",
    "OutgoingMessage",
    "RecipientSpec",
    "ReplyParser",
    "ReplyProtocolError",
    "ServerReply",
    "SessionFailure",
    "TLSState",
    "TransactionResult",
    "address_problem",
    "data_payload",
    "normalize_reply",
    "xtext",
]

# Checks a peer's certificate chain (DER, leaf first) against validated TLSA records.
DaneCheck = Callable[[list[bytes], tuple[TLSARecord, ...]], bool]
VerifiedBy = Literal["ca", "dane", "none"]
# What the caller does when a session fails (see SessionFailure).
FailureScope = Literal["next_host", "bounce_if_last", "final"]

# RFC 5321 §4.5.3.1.5 allows 512 octets per reply line; real servers send longer ones.
MAX_REPLY_LINE_BYTES = 4096
MAX_REPLY_LINES = 100
# Reply text kept for the queue and DSNs (the server's text is the peer's, and unbounded).
MAX_REPLY_TEXT = 1000
# DATA is written in pieces of this size, waiting for the transport's buffer to drain.
DATA_CHUNK_BYTES = 256 * 1024
# Longest wait for QUIT's reply when closing politely.
QUIT_TIMEOUT_SECONDS = 5.0
# Longest wait for RSET's reply on a cached session (Postfix smtp_rset_timeout is 20 s): a
# connection that died while idle must not hold the next message for a command timeout.
RSET_TIMEOUT_SECONDS = 20.0

# RFC 3461 §4.1: NEVER, or any of SUCCESS, FAILURE, DELAY.
_NOTIFY_VALUES = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?= |$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


# --- replies --------------------------------------------------------------------------------


class ReplyProtocolError(Exception):
    """The peer sent something that is not an SMTP reply (RFC 5321 §4.2)."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    """A reply, as the queue records it: ``text`` is "CODE X.Y.Z text"."""

    code: int
    text: str

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return self.text


def normalize_reply(code: int, lines: Sequence[str]) -> ServerReply:
    """A reply's code and text lines (without "CODE-") as one "CODE X.Y.Z text" line.

    RFC 2034 §4: the enhanced code follows the reply code on every line; it is taken from the
    first line and removed from the others. A missing one becomes "C.0.0" (RFC 3463 §3.1:
    "other undefined status"), and one whose class contradicts the reply code gets the reply
    code's class (RFC 3463 §2: the class must match). Control characters are replaced and the
    text is cut at ``MAX_REPLY_TEXT``.
    """
    klass = str(code)[0] if 200 <= code < 600 else "4"
    clean = [_CONTROL.sub("?", line).strip() for line in lines] or [""]
    enhanced = ""
    match = _ENHANCED.match(clean[0])
    if match:
        enhanced = f"{klass}.{match.group(2)}.{match.group(3)}"
        prefix = match.group(0)
        clean = [line[len(prefix) :].strip() if line.startswith(prefix) else line for line in clean]
    if klass in "245" and not enhanced:
        enhanced = f"{klass}.0.0"
    text = str(Reply(code, enhanced, "\n".join(part for part in clean if part)))
    if len(text) > MAX_REPLY_TEXT:
        text = text[: MAX_REPLY_TEXT - 3] + "..."
    return ServerReply(code, text)


def _from_response(response: aiosmtplib.SMTPResponse) -> ServerReply:
    return normalize_reply(response.code, response.message.split("\n"))


class ReplyParser:
    """Sans-IO: bytes in, complete replies out (RFC 5321 §4.2, multi-line form §4.2.1).

    ``feed`` returns the replies completed by the data, in order, and keeps any partial line;
    a line longer than ``max_line_bytes``, a reply of more than ``max_lines`` lines, a line
    that does not start with a 3-digit code followed by " ", "-" or its end, or a multi-line
    reply whose code changes raise ``ReplyProtocolError``. Lines may end in CRLF or, leniently,
    in a bare LF.
    """

    def __init__(
        self, *, max_line_bytes: int = MAX_REPLY_LINE_BYTES, max_lines: int = MAX_REPLY_LINES
    ) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code = 0
        self._max_line = max_line_bytes
        self._max_lines = max_lines

    def feed(self, data: bytes) -> list[tuple[int, list[str]]]:
        self._buffer += data
        done: list[tuple[int, list[str]]] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    raise ReplyProtocolError(f"reply line longer than {self._max_line} octets")
                return done
            if end + 1 > self._max_line:
                raise ReplyProtocolError(f"reply line longer than {self._max_line} octets")
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            # RFC 5321 §4.2: Reply-code [ ( SP / "-" ) textstring ] CRLF; code %x32-35 DIGIT
            if (
                len(line) < 3
                or not line[:3].isdigit()
                or line[:1] not in (b"2", b"3", b"4", b"5")
                or line[3:4] not in (b"", b" ", b"-")
            ):
                raise ReplyProtocolError(f"not an SMTP reply line: {line[:80]!r}")
            code = int(line[:3])
            if self._lines and code != self._code:
                raise ReplyProtocolError(f"reply code changed inside a reply: {line[:80]!r}")
            self._code = code
            self._lines.append(line[4:].decode("utf-8", "replace"))
            if len(self._lines) > self._max_lines:
                raise ReplyProtocolError(f"reply of more than {self._max_lines} lines")
            if line[3:4] != b"-":
                done.append((code, self._lines))
                self._lines = []


# --- message, recipients, results -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    """One RCPT TO: the address and its RFC 3461 parameters (``orcpt`` is "type;address",
    decoded; it is xtext-encoded when sent)."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str = ""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message for one transaction."""

    queue_id: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[RecipientSpec, ...]
    content: bytes
    body: Literal["7BIT", "8BITMIME", "BINARYMIME"] = "7BIT"
    smtputf8: bool = False
    requiretls: bool = False
    ret: Literal["FULL", "HDRS", ""] = ""
    envid: str = ""


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """One reply per recipient (in the order given) and the reply that ended the
    transaction (the reply to the final dot, or the last refusal), for the logs."""

    replies: tuple[ServerReply, ...]
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class TLSState:
    """The session's TLS: ``version`` as OpenSSL names it ("TLSv1.3"), "" without TLS;
    ``verified`` says how the peer was authenticated."""

    version: str = ""
    verified: VerifiedBy = "none"

    @property
    def shown(self) -> str:
        return self.version or "none"


NO_TLS = TLSState()


class SessionFailure(Exception):
    """This host could not take the message.

    ``reply`` is "CODE X.Y.Z text" for the recipients. ``scope``:

    - ``next_host``: try the next host; if there is none, defer (the code is 4xx, or the
      caller treats it as temporary, as Postfix's smtp_skip_5xx_greeting does);
    - ``bounce_if_last``: the message needs something this host lacks (SMTPUTF8,
      REQUIRETLS); try the next host, and bounce if none has it (Postfix does the same);
    - ``final``: the reply applies to the message at any host (5xx to MAIL FROM, too big).

    ``reusable``: the session is still in a clean state and may be kept.
    """

    def __init__(
        self,
        reply: str,
        scope: FailureScope = "next_host",
        *,
        tls: TLSState = NO_TLS,
        reusable: bool = False,
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.scope: FailureScope = scope
        self.tls = tls
        self.reusable = reusable

    @property
    def permanent(self) -> bool:
        return self.reply[:1] == "5"


# --- endpoints and settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: ``host`` is the name the certificate must match and the logs show
    (the MX name, the relayhost, or the IP when there is no name); ``address`` an IP address,
    or the socket path when ``unix``."""

    host: str
    address: str
    port: int = 25
    unix: bool = False

    def __str__(self) -> str:
        if self.unix:
            return f"unix:{self.address}"
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What every session needs besides its endpoint (from ``[delivery]``)."""

    helo_name: str
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    source_address: str = ""
    source_address6: str = ""
    ca_file: str = ""
    lmtp: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    """AUTH user and password for a relayhost; the password never reaches a log line."""

    username: str
    password: str = field(repr=False)


# --- helpers for commands ---------------------------------------------------------------------


def address_problem(address: str) -> str:
    """Why ``address`` cannot be put in MAIL FROM/RCPT TO as it is, or "" when it can.

    The address goes inside "<>" on a command line, so line breaks, other control characters
    and angle brackets would change the command (RFC 5321 §4.1.2: the Path grammar has none).
    """
    if _CONTROL.search(address):
        return "it contains a control character"
    if "<" in address or ">" in address:
        return "it contains '<' or '>'"
    if address and "@" not in address:
        return "it has no domain part"
    return ""


# RFC 3461 §4: the one xtext encoder is the SMTP parser's; the name stays for callers.
xtext = xtext_encode


def _utf8_addr_xtext(address: str) -> str:
    """RFC 6533 §3: utf-8-addr-xtext, non-ASCII (and "+", "=", "\\", controls) as \\x{HEX}."""
    out = []
    for char in address:
        point = ord(char)
        if 33 <= point <= 126 and char not in "+=\\":
            out.append(char)
        else:
            out.append(f"\\x{{{point:X}}}")
    return "".join(out)


def _orcpt_param(orcpt: str) -> str:
    """The ORCPT parameter value (RFC 3461 §4.2) for a decoded "type;address"."""
    kind, sep, address = orcpt.partition(";")
    if not sep:
        kind, address = "rfc822", orcpt
    if address.isascii():
        return f"{kind.strip() or 'rfc822'};{xtext_encode(address)}"
    # RFC 6533 §3: a non-ASCII original address travels as type "utf-8".
    return f"utf-8;{_utf8_addr_xtext(address)}"


def data_payload(content: bytes) -> bytes:
    """The DATA bytes for ``content``: every line ending CRLF (a bare CR or LF becomes CRLF,
    so no receiver can read a different end of data: the SMTP smuggling rule of DESIGN.md),
    lines starting with "." doubled (RFC 5321 §4.5.2), then the terminating ".\\r\\n"."""
    crlf = content.count(b"\r\n")
    if content.count(b"\r") == crlf and content.count(b"\n") == crlf:
        body = content  # already CRLF throughout: the usual case, no rewrite needed
    else:
        body = _LINE_ENDS.sub(b"\r\n", content)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if body.startswith(b".") or b"\n." in body:
        body = _LEADING_DOT.sub(b"..", body)
    return body + b".\r\n"


def _is_8bit_safe(content: bytes) -> bool:
    """RFC 2045 §2.8: 8bit data has no NUL, CR and LF only as CRLF, lines of at most 998
    octets. BINARYMIME content that is also 8bit data can go through DATA as 8BITMIME."""
    if b"\0" in content:
        return False
    if _LINE_ENDS.sub(b"\r\n", content).count(b"\r\n") != content.count(b"\r\n"):
        return False
    return all(len(line) <= 998 for line in content.split(b"\r\n"))


def _needs_smtputf8(message: OutgoingMessage) -> bool:
    """RFC 6531 §3.2 (with Postfix's reading, smtp_proto.c): SMTPUTF8 is needed when the
    envelope or the header section has non-ASCII text; a message flagged SMTPUTF8 whose
    envelope and headers are ASCII can go to a server without it."""
    if not message.sender.isascii():
        return True
    if any(not r.address.isascii() for r in message.recipients):
        return True
    if not message.smtputf8:
        return False
    # The header section as mime.headers splits it (RFC 5322 §2.2), never the body.
    return not all(field.raw.isascii() for field in split_message(message.content).headers)


@functools.lru_cache(maxsize=8)
def _tls_context(verify: bool, ca_file: str) -> ssl.SSLContext:
    """A client context: certificate and name checks for ``verify``, none otherwise (the
    opportunistic levels accept any certificate, RFC 7435 §3; DANE checks its own)."""
    context = ssl.create_default_context()
    if verify:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _peer_chain(ssl_object: Any) -> list[bytes]:
    """The peer's certificate chain as sent (DER, leaf first), for DANE. Python 3.13 has
    ``SSLObject.get_unverified_chain``; 3.10-3.12 have it on the private ``_sslobj`` only;
    without either, the leaf alone (enough for DANE-EE, RFC 7672 §3.1.1)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is not None:
        return [bytes(cert) for cert in getter() or []]
    inner = getattr(ssl_object, "_sslobj", None)
    inner_getter = getattr(inner, "get_unverified_chain", None)
    if inner_getter is not None:
        import _ssl

        return [cert.public_bytes(_ssl.ENCODING_DER) for cert in inner_getter() or []]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _stronger(level: Level, floor: Level) -> Level:
    return level if LEVEL_ORDER[level] >= LEVEL_ORDER[floor] else floor


# --- the reply reader that runs a transaction -------------------------------------------------


class _Broken(Exception):
    """The connection is gone or unusable (timeout, close, garbage); the text says which."""


class _ReplyReader(asyncio.Protocol):
    """Installed on the transport for one transaction: feeds ``ReplyParser`` and queues the
    replies; forwards flow control and the end of the connection to aiosmtplib's protocol,
    which gets the transport back afterwards."""

    def __init__(self, previous: asyncio.BaseProtocol, wait_seconds: float) -> None:
        self._previous = previous
        self._wait = wait_seconds
        self._parser = ReplyParser()
        self._replies: collections.deque[ServerReply] = collections.deque()
        self._error: str = ""
        self._changed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        if self._error:
            return
        try:
            for code, lines in self._parser.feed(data):
                self._replies.append(normalize_reply(code, lines))
        except ReplyProtocolError as exc:
            self._error = f"protocol error: {exc}"
        self._changed.set()

    def eof_received(self) -> bool:
        if not self._error:
            self._error = "connection closed by the server"
        self._changed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._error:
            self._error = f"connection lost ({exc})" if exc else "connection lost"
        self._changed.set()
        self._writable.set()
        self._previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writable.clear()
        self._previous.pause_writing()

    def resume_writing(self) -> None:
        self._writable.set()
        self._previous.resume_writing()

    async def reply(self) -> ServerReply:
        """The next reply, waiting at most the command timeout for it."""
        deadline = time.monotonic() + self._wait
        while not self._replies:
            if self._error:
                raise _Broken(self._error)
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Broken(f"no reply within {self._wait:g} s")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                raise _Broken(f"no reply within {self._wait:g} s") from None
        return self._replies.popleft()

    async def drained(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._error:
            raise _Broken(self._error)
        try:
            await asyncio.wait_for(self._writable.wait(), self._wait)
        except TimeoutError:
            raise _Broken(f"could not send data for {self._wait:g} s") from None
        if self._error:
            raise _Broken(self._error)


# --- the session ------------------------------------------------------------------------------


async def _connect_socket(endpoint: Endpoint, config: ClientSettings) -> socket.socket:
    loop = asyncio.get_running_loop()
    target: str | tuple[str, int]
    if endpoint.unix:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = endpoint.address
    else:
        family = socket.AF_INET6 if ":" in endpoint.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = (endpoint.address, endpoint.port)
    try:
        sock.setblocking(False)
        source = config.source_address6 if sock.family == socket.AF_INET6 else config.source_address
        if source and not endpoint.unix:
            sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, target), config.connect_timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_failure(endpoint: Endpoint, exc: BaseException, timeout: float) -> SessionFailure:
    # RFC 3463 §3.5: X.4.1 "no answer from host", X.4.2 "bad connection".
    where = f"{endpoint.host}[{endpoint}]" if endpoint.host != endpoint.address else str(endpoint)
    if isinstance(exc, TimeoutError):
        return SessionFailure(f"451 4.4.1 Connection to {where} timed out after {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return SessionFailure(f"451 4.4.1 Connection to {where} refused")
    if isinstance(exc, FileNotFoundError):
        return SessionFailure(f"451 4.4.1 No socket at {where}")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return SessionFailure(f"451 4.4.1 Cannot connect to {where}: {reason}")


class ClientSession:
    """An open, greeted session to one host (see the module docstring).

    Use ``ClientSession.open``; then ``send`` once per message, ``reset`` before the next
    one, and ``quit`` (polite) or ``close`` (abrupt) at the end.
    """

    def __init__(
        self,
        smtp: aiosmtplib.SMTP,
        endpoint: Endpoint,
        config: ClientSettings,
        tls: TLSState,
    ) -> None:
        self._smtp = smtp
        self.endpoint = endpoint
        self.config = config
        self.tls = tls
        self.opened_at = time.monotonic()
        self.messages = 0
        self._broken = False

    # -- opening --

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint,
        config: ClientSettings,
        tls: HostTLS,
        *,
        dane_check: DaneCheck | None = None,
        credentials: Credentials | None = None,
        implicit_tls: bool = False,
        requiretls: bool = False,
        queue_id: str = "",
    ) -> ClientSession:
        """Connect, greet, secure and authenticate; ``SessionFailure`` says why not.

        ``tls.level`` is the level to meet; ``requiretls`` marks a message whose sender asked
        for REQUIRETLS (RFC 8689 §4), which turns TLS failures into "try the next host,
        bounce after the last one" with 5.7.10 (Postfix does the same). With
        ``implicit_tls`` the connection starts with a TLS handshake (port 465, RFC 8314 §3).
        """
        level: Level = "none" if endpoint.unix and not implicit_tls else tls.level
        try:
            return await cls._open(
                endpoint, config, tls, level, dane_check, credentials, implicit_tls, requiretls
            )
        except _HandshakeFailed as failed:
            if level != "may" or implicit_tls:
                raise failed.failure from None
            # RFC 7435 §3 (and Postfix "may"): a failed handshake is retried in plain text.
            log.info(
                "tls_fallback",
                queue_id=queue_id,
                host=endpoint.host,
                ip=str(endpoint),
                reason=failed.failure.reply,
            )
            return await cls._open(
                endpoint, config, tls, "none", dane_check, credentials, False, requiretls
            )

    @classmethod
    async def _open(
        cls,
        endpoint: Endpoint,
        config: ClientSettings,
        tls: HostTLS,
        level: Level,
        dane_check: DaneCheck | None,
        credentials: Credentials | None,
        implicit_tls: bool,
        requiretls: bool,
    ) -> ClientSession:
        try:
            sock = await _connect_socket(endpoint, config)
        except (OSError, TimeoutError) as exc:
            raise _connect_failure(endpoint, exc, config.connect_timeout) from None
        tls_level: Level = _stronger(level, "encrypt") if implicit_tls else level
        context = _tls_context(tls_level == "verify", config.ca_file) if implicit_tls else None
        try:
            smtp = aiosmtplib.SMTP(
                hostname=endpoint.host,
                local_hostname=config.helo_name,
                timeout=config.command_timeout,
                use_tls=implicit_tls,
                start_tls=False,
                tls_context=context,
                sock=sock,
            )
        except BaseException:
            sock.close()  # e.g. a HELO name aiosmtplib refuses (ValueError)
            raise
        session = cls(smtp, endpoint, config, NO_TLS)
        try:
            await session._greet(implicit_tls, requiretls)
            await session._hello()
            if implicit_tls:
                session.tls = session._tls_state(tls_level, tls, dane_check, requiretls)
            elif tls_level != "none":
                await session._starttls(tls_level, tls, dane_check, requiretls)
            if credentials is not None:
                await session._authenticate(credentials)
        except SessionFailure:
            # The server is there but does not suit us (refusal, TLS, AUTH): say goodbye.
            await session.quit()
            raise
        except _HandshakeFailed:
            session.close()
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Whatever step was not caught above (the peer vanished between two steps).
            session.close()
            raise session._lost("while opening the session", exc) from None
        except BaseException:
            session.close()
            raise
        return session

    def _where(self) -> str:
        e = self.endpoint
        return f"{e.host}[{e}]" if e.host != e.address else str(e)

    def _lost(self, stage: str, exc: BaseException) -> SessionFailure:
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            text = f"451 4.4.2 Timed out {stage} with {self._where()}"
        else:
            text = f"451 4.4.2 Lost connection {stage} with {self._where()}: {exc}"
        return SessionFailure(text, tls=self.tls)

    async def _greet(self, implicit_tls: bool, requiretls: bool) -> None:
        try:
            await self._smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            # RFC 5321 §3.1: a 554 greeting means "no service here"; like Postfix
            # (smtp_skip_5xx_greeting) the next MX host is tried and the mail is deferred.
            reply = normalize_reply(exc.code, exc.message.split("\n"))
            raise SessionFailure(
                f"451 4.3.0 Host {self._where()} refused to talk to me: {reply}"
            ) from None
        except aiosmtplib.SMTPConnectError as exc:
            cause = exc.__cause__
            if implicit_tls and isinstance(cause, ssl.SSLError):
                raise _HandshakeFailed(self._tls_failure(cause, requiretls)) from None
            raise self._lost("waiting for the greeting", exc) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._lost("waiting for the greeting", exc) from None

    async def _hello(self) -> None:
        """EHLO, or HELO when EHLO is not known; LHLO for LMTP."""
        name = self.config.helo_name.encode("ascii", "replace")
        try:
            if self.config.lmtp:
                # RFC 2033 §4.1: LHLO replaces HELO and EHLO; its reply lists the extensions.
                response = await self._smtp.execute_command(b"LHLO", name)
                if response.code != 250:
                    raise SessionFailure(
                        f"451 4.3.0 Host {self._where()} refused LHLO: {_from_response(response)}",
                        tls=self.tls,
                    )
                self._smtp.last_ehlo_response = response
                return
            try:
                await self._smtp.ehlo()
            except aiosmtplib.SMTPHeloError as exc:
                if exc.code < 500 or not self._smtp.is_connected:
                    raise SessionFailure(
                        f"451 4.3.0 Host {self._where()} refused EHLO: "
                        f"{normalize_reply(exc.code, exc.message.split(chr(10)))}",
                        tls=self.tls,
                    ) from None
                # RFC 5321 §3.2: a server that does not know EHLO answers it with a 5xx
                # reply, and the client then uses HELO (no service extensions).
                await self._smtp.helo()
        except aiosmtplib.SMTPHeloError as exc:
            raise SessionFailure(
                f"451 4.3.0 Host {self._where()} refused HELO: "
                f"{normalize_reply(exc.code, exc.message.split(chr(10)))}",
                tls=self.tls,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._lost("after the greeting", exc) from None

    def _tls_failure(self, exc: BaseException | str, requiretls: bool) -> SessionFailure:
        reason = exc if isinstance(exc, str) else (getattr(exc, "reason", None) or str(exc))
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = f"server certificate not verified: {exc.verify_message}"
        if requiretls:
            # RFC 8689 §4: no message with REQUIRETLS over an unauthenticated channel;
            # X.7.10 "encryption needed" (RFC 5248), bounced when no host is left (Postfix).
            return SessionFailure(
                f"550 5.7.10 Sender requested REQUIRETLS, but TLS with {self._where()} "
                f"failed: {reason}",
                "bounce_if_last",
            )
        # RFC 3463 §3.8 X.7.5: cryptographic failure.
        return SessionFailure(f"451 4.7.5 TLS with {self._where()} failed: {reason}")

    async def _starttls(
        self, level: Level, tls: HostTLS, dane_check: DaneCheck | None, requiretls: bool
    ) -> None:
        required = level != "may"
        if not self._smtp.supports_extension("starttls"):
            if not required:
                return
            if requiretls:
                raise SessionFailure(
                    f"550 5.7.30 Sender requested REQUIRETLS, but {self._where()} does not "
                    "offer STARTTLS",
                    "bounce_if_last",
                )
            # RFC 3463 §3.8 X.7.4: security features not supported.
            raise SessionFailure(
                f"451 4.7.4 TLS is required, but {self._where()} does not offer STARTTLS"
            )
        context = _tls_context(level == "verify", self.config.ca_file)
        try:
            await self._smtp.starttls(server_hostname=self.endpoint.host, tls_context=context)
        except aiosmtplib.SMTPResponseException as exc:
            reply = normalize_reply(exc.code, exc.message.split("\n"))
            if not required:
                if self._smtp.is_connected:
                    # RFC 3207 §4: after a refused STARTTLS the session goes on without TLS.
                    return
                raise self._lost("after a refused STARTTLS", exc) from None
            if requiretls:
                raise SessionFailure(
                    f"550 5.7.10 Sender requested REQUIRETLS, but {self._where()} refused "
                    f"STARTTLS: {reply}",
                    "bounce_if_last",
                ) from None
            raise SessionFailure(
                f"451 4.7.4 TLS is required, but {self._where()} refused STARTTLS: {reply}"
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
            raise _HandshakeFailed(
                self._tls_failure(cause if isinstance(cause, BaseException) else exc, requiretls)
            ) from None
        self.tls = self._tls_state(level, tls, dane_check, requiretls)
        # RFC 3207 §4.2: everything learnt before TLS is forgotten; greet again.
        await self._hello()

    def _tls_state(
        self, level: Level, tls: HostTLS, dane_check: DaneCheck | None, requiretls: bool
    ) -> TLSState:
        ssl_object = self._smtp.get_transport_info("ssl_object")
        version = str(ssl_object.version() or "TLS") if ssl_object is not None else ""
        if level == "dane":
            chain = _peer_chain(ssl_object) if ssl_object is not None else []
            if dane_check is None or not tls.tlsa:
                raise self._tls_failure(
                    "no DANE check is available for its TLSA records", requiretls
                )
            if not chain or not dane_check(chain, tls.tlsa):
                # RFC 7672 §2.2: with usable TLSA records, an unmatched certificate is fatal.
                raise self._tls_failure("certificate does not match the TLSA records", requiretls)
            return TLSState(version, "dane")
        # "verify": the handshake checked the chain and the host name (ssl check_hostname).
        return TLSState(version, "ca" if level == "verify" else "none")

    async def _authenticate(self, credentials: Credentials) -> None:
        """AUTH PLAIN (RFC 4616), else LOGIN, and only inside TLS (RFC 4954 §4: a client
        must not send a password in the clear)."""
        if not self.tls.version:
            raise SessionFailure(
                f"451 4.7.0 Not sending the password to {self._where()} without TLS; "
                "set delivery.tls_security_level to encrypt or verify, or use port 465/587",
                tls=self.tls,
            )
        methods = self._smtp.server_auth_methods
        try:
            if "plain" in methods:
                await self._smtp.auth_plain(credentials.username, credentials.password)
            elif "login" in methods:
                await self._smtp.auth_login(credentials.username, credentials.password)
            else:
                offered = " ".join(methods) or "none"
                raise SessionFailure(
                    f"451 4.7.0 {self._where()} offers no AUTH PLAIN or LOGIN (offers: {offered})",
                    tls=self.tls,
                )
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Postfix smtp_sasl_auth_soft_bounce: a refused login is deferred, so mail waits
            # for the admin to fix the password instead of bouncing. RFC 4954 §6: X.7.8.
            reply = normalize_reply(exc.code, exc.message.split("\n"))
            raise SessionFailure(
                f"454 4.7.8 Authentication as {credentials.username} at {self._where()} "
                f"failed: {reply}",
                tls=self.tls,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._lost("during AUTH", exc) from None

    # -- state --

    @property
    def extensions(self) -> dict[str, str]:
        return dict(self._smtp.esmtp_extensions)

    def supports(self, extension: str) -> bool:
        return self._smtp.supports_extension(extension)

    @property
    def usable(self) -> bool:
        return not self._broken and self._smtp.is_connected

    async def reset(self) -> bool:
        """RSET (RFC 5321 §4.1.1.5) before the next message; False if the session is gone."""
        if not self.usable:
            return False
        try:
            await self._smtp.rset(timeout=min(RSET_TIMEOUT_SECONDS, self.config.command_timeout))
        except (aiosmtplib.SMTPException, OSError):
            self.close()
            return False
        return True

    async def quit(self) -> None:
        """QUIT politely (a short wait), then close."""
        if self._smtp.is_connected and not self._broken:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._smtp.quit(timeout=QUIT_TIMEOUT_SECONDS)
        self.close()

    def close(self) -> None:
        """Drop the connection at once (no QUIT, no TLS close_notify exchange)."""
        self._broken = True
        transport = self._smtp.transport
        if transport is not None:
            cast(asyncio.Transport, transport).abort()
        self._smtp.close()

    # -- one message --

    def _check(self, message: OutgoingMessage) -> bytes:
        """What this host must offer for the message; the DATA payload if all is well."""
        where = self._where()
        if _needs_smtputf8(message) and not self.supports("smtputf8"):
            # RFC 6531 §3.2: without SMTPUTF8 at the server, a message that needs it is not
            # sent there (no downgrade); X.6.7 (as RFC 6531 §3.5 uses it). Next host, then bounce.
            raise SessionFailure(
                f"550 5.6.7 The message needs SMTPUTF8, but {where} does not support it",
                "bounce_if_last",
                tls=self.tls,
                reusable=True,
            )
        if message.requiretls:
            if self.tls.verified == "none":
                raise SessionFailure(
                    f"550 5.7.10 Sender requested REQUIRETLS, but the TLS session with {where} "
                    "is not authenticated",
                    "bounce_if_last",
                    tls=self.tls,
                    reusable=True,
                )
            if not self.supports("requiretls"):
                # RFC 8689 §4: the server must offer REQUIRETLS after STARTTLS; X.7.30
                # "REQUIRETLS support required" (RFC 8689 §7).
                raise SessionFailure(
                    f"550 5.7.30 Sender requested REQUIRETLS, but {where} does not support it",
                    "bounce_if_last",
                    tls=self.tls,
                    reusable=True,
                )
        limit_text = self.extensions.get("size", "").strip()
        if limit_text.isdigit() and 0 < int(limit_text) < len(message.content):
            # RFC 1870 §6.1: a message larger than the server's fixed limit will not be
            # accepted; X.3.4 "message too big for system" (RFC 3463 §3.4).
            raise SessionFailure(
                f"552 5.3.4 Message of {len(message.content)} octets exceeds the limit of "
                f"{limit_text} octets of {where}",
                "final",
                tls=self.tls,
                reusable=True,
            )
        if message.body == "BINARYMIME" and not _is_8bit_safe(message.content):
            # RFC 3030 §3: BINARYMIME needs BDAT, which this client does not send; RFC 3463
            # §3.7 X.6.3 "conversion required but not supported".
            raise SessionFailure(
                "554 5.6.3 Binary content (BODY=BINARYMIME) cannot be sent with DATA, "
                "and this client does not send BDAT",
                "final",
                tls=self.tls,
                reusable=True,
            )
        return data_payload(message.content)

    def _mail_command(self, message: OutgoingMessage) -> bytes:
        params: list[str] = []
        if self.supports("size"):
            params.append(f"SIZE={len(message.content)}")  # RFC 1870 §3
        if message.body != "7BIT":
            if self.supports("8bitmime"):
                params.append("BODY=8BITMIME")  # RFC 6152 §3
            else:
                # Deviation from RFC 5321 §2.4 / RFC 6152 §3 (convert to 7 bit or bounce):
                # like Postfix with disable_mime_output_conversion = yes, 8-bit content goes
                # to a server without 8BITMIME as it is; nearly every server takes it.
                log.info("eightbit_unannounced", host=self.endpoint.host, ip=str(self.endpoint))
        utf8 = (message.smtputf8 or _needs_smtputf8(message)) and self.supports("smtputf8")
        if utf8:
            params.append("SMTPUTF8")  # RFC 6531 §3.4
        if self.supports("dsn"):
            if message.ret:
                params.append(f"RET={message.ret}")  # RFC 3461 §4.3
            if message.envid and message.envid.isascii():
                params.append(f"ENVID={xtext_encode(message.envid)}")  # RFC 3461 §4.4
        if message.requiretls and self.supports("requiretls"):
            params.append("REQUIRETLS")  # RFC 8689 §4
        return self._command("MAIL FROM", message.sender, params, utf8)

    def _rcpt_command(self, recipient: RecipientSpec, utf8: bool) -> bytes:
        params: list[str] = []
        if self.supports("dsn"):
            notify = [n.upper() for n in recipient.notify if n.upper() in _NOTIFY_VALUES]
            if notify:
                params.append("NOTIFY=" + ",".join(notify))  # RFC 3461 §4.1
            if recipient.orcpt:
                params.append("ORCPT=" + _orcpt_param(recipient.orcpt))  # RFC 3461 §4.2
        return self._command("RCPT TO", recipient.address, params, utf8)

    @staticmethod
    def _command(verb: str, address: str, params: list[str], utf8: bool) -> bytes:
        problem = address_problem(address)
        if problem:
            raise ValueError(f"{verb} address {address!r}: {problem}")
        line = " ".join([f"{verb}:<{address}>", *params]) + "\r\n"
        return line.encode("utf-8" if utf8 else "ascii")

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[_ReplyReader]:
        transport = self._smtp.transport
        previous = self._smtp.protocol
        if transport is None or previous is None or transport.is_closing():
            raise SessionFailure(
                f"451 4.4.2 Lost connection with {self._where()} before MAIL FROM", tls=self.tls
            )
        reader = _ReplyReader(previous, self.config.command_timeout)
        transport.set_protocol(reader)
        try:
            yield reader
        finally:
            if not transport.is_closing():
                transport.set_protocol(previous)

    async def send(self, message: OutgoingMessage) -> TransactionResult:
        """One mail transaction (RFC 5321 §3.3) for ``message``.

        Raises ``SessionFailure`` when nothing was accepted for a reason that concerns the
        whole message (see its ``scope``); otherwise returns one reply per recipient: the
        RCPT refusal, the reply to DATA, or the reply after the final dot (one per accepted
        recipient for LMTP, RFC 2033 §4.2). A connection lost after the final dot was sent
        leaves the accepted recipients with a 4xx reply: the server may have the message
        (RFC 1047), so it may arrive twice after the retry.
        """
        if not self.usable:
            raise SessionFailure(f"451 4.4.2 Lost connection with {self._where()}", tls=self.tls)
        payload = self._check(message)
        mail = self._mail_command(message)
        utf8 = b" SMTPUTF8" in mail
        rcpts = [self._rcpt_command(r, utf8) for r in message.recipients]
        self.messages += 1
        async with self._reader() as reader:
            try:
                result = await self._transaction(reader, mail, rcpts, payload)
            except _Broken as exc:
                self.close()
                raise SessionFailure(
                    f"451 4.4.2 Lost connection with {self._where()} during the transaction: {exc}",
                    tls=self.tls,
                ) from None
        if any(reply.code == 421 for reply in result.replies):
            # RFC 5321 §3.8: 421 means the server is closing the channel.
            self.close()
        return result

    def _write(self, data: bytes) -> None:
        transport = self._smtp.transport
        if transport is None or transport.is_closing():
            raise _Broken("connection closed")
        cast(asyncio.WriteTransport, transport).write(data)

    async def _transaction(
        self,
        reader: _ReplyReader,
        mail: bytes,
        rcpts: list[bytes],
        payload: bytes,
    ) -> TransactionResult:
        data_reply: ServerReply | None = None
        rcpt_replies: list[ServerReply] = []
        if self.supports("pipelining"):
            # RFC 2920 §3.1: MAIL, RCPT and DATA may go out together; DATA ends the group.
            self._write(mail + b"".join(rcpts) + b"DATA\r\n")
            mail_reply = await reader.reply()
            rcpt_replies = [await reader.reply() for _ in rcpts]
            data_reply = await reader.reply()
        else:
            self._write(mail)
            mail_reply = await reader.reply()
            if mail_reply.positive:
                for command in rcpts:
                    self._write(command)
                    rcpt_replies.append(await reader.reply())
                if any(r.positive for r in rcpt_replies):
                    self._write(b"DATA\r\n")
                    data_reply = await reader.reply()

        if not mail_reply.positive:
            if data_reply is not None and data_reply.code == 354:
                await self._empty_message(reader)
            # 5xx to MAIL FROM concerns the message anywhere; 4xx: try the next host
            # (RFC 5321 §4.5.4.1 retry strategy, §5.1 trying the other MX hosts).
            scope: FailureScope = "final" if mail_reply.permanent else "next_host"
            if mail_reply.code == 421:
                self.close()  # RFC 5321 §3.8: the server is closing the channel
            raise SessionFailure(mail_reply.text, scope, tls=self.tls, reusable=self.usable)

        replies = list(rcpt_replies)
        accepted = [i for i, r in enumerate(rcpt_replies) if r.positive]
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                # RFC 2920 §3.1: DATA accepted without valid recipients: send an empty
                # message (just the dot), which the server must not deliver.
                await self._empty_message(reader)
            return TransactionResult(tuple(replies), rcpt_replies[-1])
        assert data_reply is not None
        if data_reply.code != 354:
            for i in accepted:
                replies[i] = data_reply
            return TransactionResult(tuple(replies), data_reply)

        try:
            for start in range(0, len(payload), DATA_CHUNK_BYTES):
                self._write(payload[start : start + DATA_CHUNK_BYTES])
                await reader.drained()
        except _Broken as exc:
            # The final dot may not have gone out: nothing was delivered.
            raise _Broken(f"while sending the message: {exc}") from None

        last = data_reply
        pending = list(accepted)
        try:
            if self.config.lmtp:
                # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
                while pending:
                    last = await reader.reply()
                    replies[pending.pop(0)] = last
            else:
                last = await reader.reply()
                for i in pending:
                    replies[i] = last
                pending = []
        except _Broken as exc:
            self.close()
            lost = ServerReply(
                451,
                f"451 4.4.2 Lost connection with {self._where()} after the end of data "
                f"({exc}); the message may be delivered twice",
            )
            for i in pending:
                replies[i] = lost
            last = lost
        return TransactionResult(tuple(replies), last)

    async def _empty_message(self, reader: _ReplyReader) -> None:
        self._write(b".\r\n")
        await reader.reply()


class _HandshakeFailed(Exception):
    """A TLS handshake failed; ``failure`` is what to report if no plain-text retry."""

    def __init__(self, failure: SessionFailure) -> None:
        super().__init__(failure.reply)
        self.failure = failure
