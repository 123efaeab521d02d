"""Sans-IO SASL server mechanisms: PLAIN, LOGIN and SCRAM-SHA-256.

A mechanism takes the client's raw bytes and returns one ``Step``; it never touches a socket,
the directory or a clock. Base64 framing (SMTP 334, IMAP "+") and the client's "*" abort
belong to the protocol layer. The glue (``Authenticator.resolve_step``) answers the two
requests a mechanism can make:

* ``NeedPassword``: verify the password, then ``mech.password_result(ok)``;
* ``NeedScramKeys``: fetch the account's stored SCRAM keys (None when unknown), then
  ``mech.scram_keys(keys)``.

so a protocol server only loops over ``Challenge`` (send it, feed back the reply),
``Success`` (send ``final_data`` if any, as the protocol allows, then succeed) and
``Failure``. Bad input is a ``Failure``; no method raises.

A loop, for a protocol server::

    mech = server_mechanism(name)
    step = await auth.resolve_step(ip, mech, mech.start(initial_response))
    while isinstance(step, Challenge):
        reply = await send_challenge_and_read(step.data)
        step = await auth.resolve_step(ip, mech, mech.respond(reply))
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scramp import ScramMechanism
from scramp.core import Gs2Header
from scramp.utils import ScramException, ServerError, saslprep

from pochta.directory.addresses import AddressError, normalize_address

__all__ = [
    "MAX_RESPONSE_BYTES",
    "MECHANISMS",
    "Challenge",
    "Failure",
    "LoginMechanism",
    "Mechanism",
    "NeedPassword",
    "NeedScramKeys",
    "PlainMechanism",
    "ScramSha256Mechanism",
    "Step",
    "Success",
    "server_mechanism",
]

MECHANISMS: tuple[str, ...] = ("SCRAM-SHA-256", "PLAIN", "LOGIN")
"""What we offer, strongest first (the order of the SMTP AUTH / IMAP AUTH= capability)."""

MAX_RESPONSE_BYTES = 8192
"""Longest client response accepted in one step (after base64 decoding)."""

# The reasons a client may see. A wrong password and an unknown user give the same one.
BAD_CREDENTIALS = "invalid credentials"
PROXY_REFUSED = (
    "proxy authorisation is not allowed: the authorisation identity must be empty "
    "or the user name itself"
)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client (the protocol layer base64-encodes it) and feed the reply
    to ``respond``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedPassword:
    """PLAIN/LOGIN: verify the password, then call ``password_result(ok)``."""

    authcid: str
    authzid: str  # "" when the client named none
    password: str = field(repr=False)  # never in a repr, a log line or a traceback


@dataclass(frozen=True, slots=True)
class NeedScramKeys:
    """SCRAM: look up the account's stored SCRAM string, then call ``scram_keys(keys)`` with
    it, or with None for an unknown or disabled account or one without SCRAM keys."""

    authcid: str
    authzid: str  # "" when the client named none


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as ``authcid`` (acting as ``authzid``, "" for the same identity).
    ``final_data`` is the server's last message (SCRAM's server-final ``v=...``), "additional
    data with success" in RFC 4422 §3.6 terms: how it travels is the protocol's business
    (SMTP: a 334 challenge answered by an empty line, RFC 4954 §4)."""

    authcid: str
    authzid: str
    final_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Authentication failed; ``reason`` is for the log and may be shown to the client."""

    reason: str


Step = Challenge | NeedPassword | NeedScramKeys | Success | Failure


class Mechanism(abc.ABC):
    """One authentication exchange on the server side. Use once; every method returns a Step
    and never raises. After a Success or Failure every call returns Failure."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._state = "initial"
        self.authcid: str | None = None  # the claimed identity once known (for the log)

    @property
    def done(self) -> bool:
        return self._state == "done"

    @abc.abstractmethod
    def start(self, initial_response: bytes | None) -> Step:
        """Begin; ``initial_response`` is None when the client sent none and b"" when it sent
        an empty one (SMTP/IMAP "=", RFC 4954 §4, RFC 4959 §3)."""

    @abc.abstractmethod
    def respond(self, data: bytes) -> Step:
        """The client's reply to the last Challenge."""

    def password_result(self, ok: bool) -> Step:
        """The glue's verdict on a NeedPassword."""
        return self._fail("password result out of sequence")

    def scram_keys(self, keys: str | None) -> Step:
        """The glue's answer to a NeedScramKeys."""
        return self._fail("SCRAM keys out of sequence")

    # -- helpers --
    def _fail(self, reason: str) -> Failure:
        self._state = "done"
        return Failure(reason)

    def _succeed(self, authcid: str, authzid: str, final_data: bytes | None = None) -> Success:
        self._state = "done"
        return Success(authcid, authzid, final_data)

    def _check_size(self, data: bytes) -> Failure | None:
        if len(data) > MAX_RESPONSE_BYTES:
            return self._fail(f"response longer than {MAX_RESPONSE_BYTES} bytes")
        return None

    def _check_authzid(self, authcid: str, authzid: str) -> Failure | None:
        # RFC 4422 §3.4.1: an authzid other than the authcid asks to act as someone else;
        # we have no policy that allows it yet. One equal to the authcid (isync/mbsync sends
        # it with SCRAM) asks for nothing more than the login itself.
        if authzid and not _same_identity(authcid, authzid):
            return self._fail(PROXY_REFUSED)
        return None


class PlainMechanism(Mechanism):
    """PLAIN, RFC 4616."""

    name = "PLAIN"

    def start(self, initial_response: bytes | None) -> Step:
        if self._state != "initial":
            return self._fail("exchange already started")
        if initial_response is None:
            # RFC 4616 §2: the client sends the message in reply to an empty challenge.
            self._state = "message"
            return Challenge(b"")
        self._state = "message"
        return self.respond(initial_response)

    def respond(self, data: bytes) -> Step:
        if self._state != "message":
            return self._fail("unexpected response")
        if failure := self._check_size(data):
            return failure
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return self._fail("malformed PLAIN message: expected authzid NUL authcid NUL passwd")
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return self._fail("malformed PLAIN message: not UTF-8")
        # RFC 4616 §2: authcid = 1*SAFE, passwd = 1*SAFE (not empty).
        if not authcid or not password:
            return self._fail("malformed PLAIN message: empty user name or password")
        self.authcid = authcid
        if failure := self._check_authzid(authcid, authzid):
            return failure
        self._state = "verify"
        return NeedPassword(authcid, authzid, password)

    def password_result(self, ok: bool) -> Step:
        if self._state != "verify" or self.authcid is None:
            return self._fail("password result out of sequence")
        if not ok:
            return self._fail(BAD_CREDENTIALS)
        return self._succeed(self.authcid, "")


class LoginMechanism(Mechanism):
    """LOGIN, draft-murchison-sasl-login-00: "Username:" then "Password:" challenges."""

    name = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._username = ""

    def start(self, initial_response: bytes | None) -> Step:
        if self._state != "initial":
            return self._fail("exchange already started")
        self._state = "username"
        if initial_response is None:
            # draft-murchison-sasl-login §2.1: the server first asks "Username:".
            return Challenge(b"Username:")
        # An initial response carries the user name (draft §2.1, as clients send it).
        return self.respond(initial_response)

    def respond(self, data: bytes) -> Step:
        if failure := self._check_size(data):
            return failure
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("malformed LOGIN response: not UTF-8")
        if "\x00" in text:
            return self._fail("malformed LOGIN response: NUL in user name or password")
        if self._state == "username":
            if not text:
                return self._fail("malformed LOGIN response: empty user name")
            self._username = text
            self.authcid = text
            self._state = "password"
            return Challenge(b"Password:")
        if self._state == "password":
            if not text:
                return self._fail("malformed LOGIN response: empty password")
            self._state = "verify"
            return NeedPassword(self._username, "", text)
        return self._fail("unexpected response")

    def password_result(self, ok: bool) -> Step:
        if self._state != "verify":
            return self._fail("password result out of sequence")
        if not ok:
            return self._fail(BAD_CREDENTIALS)
        return self._succeed(self._username, "")


# A secret made once per process, for fake SCRAM keys of unknown users.
_FAKE_KEY_SECRET = secrets.token_bytes(32)
_SCRAM_ITERATIONS = 4096  # RFC 7677 §4: at least 4096; also what make_scram_sha256 uses


class ScramSha256Mechanism(Mechanism):
    """SCRAM-SHA-256, RFC 5802 with RFC 7677's hash; no channel binding (no -PLUS).

    The messages are checked and signed by scramp's ScramServer. For an unknown account the
    exchange continues with fake keys derived from a per-process secret and the user name,
    so the salt a client sees is stable per name and the exchange fails only at the
    client-final proof, exactly like a wrong password (RFC 5802 §9; RFC 7677 §5).
    """

    name = "SCRAM-SHA-256"

    def __init__(self, *, server_nonce: str | None = None, fake_key_secret: bytes | None = None):
        super().__init__()
        self._server_nonce = server_nonce  # tests only: a fixed nonce makes RFC 7677 §3 exact
        self._fake_key_secret = fake_key_secret or _FAKE_KEY_SECRET
        self._client_first = ""  # as scramp gets it: without the authzid
        self._gs2_header = ""  # as the client sent it: with the authzid
        self._fake = False
        self._server: Any = None  # scramp.ScramServer, untyped

    def start(self, initial_response: bytes | None) -> Step:
        if self._state != "initial":
            return self._fail("exchange already started")
        self._state = "client-first"
        if initial_response is None:
            return Challenge(b"")  # RFC 5802 §5: the client speaks first
        return self.respond(initial_response)

    def respond(self, data: bytes) -> Step:
        if failure := self._check_size(data):
            return failure
        if self._state == "client-first":
            return self._client_first_message(data)
        if self._state == "client-final":
            return self._client_final_message(data)
        return self._fail("unexpected response")

    def _client_first_message(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("malformed SCRAM client-first message: not UTF-8")
        if "\x00" in text:
            return self._fail("malformed SCRAM client-first message: NUL")
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
        #   gs2-header = gs2-cbind-flag "," [ authzid ] ","
        flag, comma1, rest = text.partition(",")
        authzid_attr, comma2, bare = rest.partition(",")
        if not comma1 or not comma2:
            return self._fail("malformed SCRAM client-first message: no GS2 header")
        if flag.startswith("p="):
            # RFC 5802 §6: "p" means the client requires channel binding; we offer no -PLUS.
            return self._fail(
                "channel binding is not supported: use SCRAM-SHA-256 without channel binding"
            )
        if flag not in ("n", "y"):
            return self._fail("malformed SCRAM client-first message: bad GS2 flag")
        authzid = ""
        if authzid_attr:
            # RFC 5802 §7: authzid = "a=" saslname; "," and "=" travel as "=2C" and "=3D".
            unescaped = _unescape_saslname(authzid_attr[2:])
            if not authzid_attr.startswith("a=") or not unescaped:
                return self._fail("malformed SCRAM client-first message: bad authzid")
            try:
                # RFC 5802 §5.1: names are prepared with SASLprep (RFC 4013) before comparing.
                authzid = saslprep(unescaped)
            except ScramException:
                return self._fail("malformed SCRAM client-first message: authzid fails SASLprep")
        # RFC 5802 §7: client-first-message-bare = [reserved-mext ","] username "," nonce ...
        if bare.startswith("m="):
            # RFC 5802 §5.1: an unknown mandatory extension makes the exchange fail.
            return self._fail("SCRAM mandatory extensions are not supported")
        if not bare.startswith("n="):
            return self._fail("malformed SCRAM client-first message: no user name")
        raw_name = bare[2:].partition(",")[0]
        name = _unescape_saslname(raw_name)
        if not name:
            return self._fail("malformed SCRAM client-first message: bad user name")
        try:
            # RFC 5802 §5.1: the user name is prepared with SASLprep (RFC 4013).
            authcid = saslprep(name)
        except ScramException:
            return self._fail("malformed SCRAM client-first message: user name fails SASLprep")
        if not authcid:
            return self._fail("malformed SCRAM client-first message: empty user name")
        self.authcid = authcid
        if failure := self._check_authzid(authcid, authzid):
            return failure
        # RFC 5802 §5.1/§7: an authzid equal to the user name is allowed (isync sends one).
        # scramp's server refuses any authzid in the GS2 header, so it gets the header
        # without it, and the header the client sent is put back for client-final's c=
        # check (see _SentGs2Header).
        self._gs2_header = f"{flag},{authzid_attr},"
        self._client_first = f"{flag},,{bare}"
        self._state = "keys"
        return NeedScramKeys(authcid, authzid)

    def scram_keys(self, keys: str | None) -> Step:
        if self._state != "keys" or self.authcid is None:
            return self._fail("SCRAM keys out of sequence")
        parsed = _parse_scram_keys(keys) if keys else None
        if parsed is None:
            self._fake = True
            parsed = self._fake_keys(self.authcid)
        try:
            server = ScramMechanism("SCRAM-SHA-256").make_server(
                lambda _username: parsed, s_nonce=self._server_nonce
            )
            server.set_client_first(self._client_first)
            # RFC 5802 §7: c= of client-final is the base64 of the gs2-header the client
            # sent, authzid included; scramp compares it with its own header object.
            server.gs2_header = _SentGs2Header(self._gs2_header)
            server_first = server.get_server_first()
        except ScramException as exc:
            return self._fail(f"malformed SCRAM client-first message: {exc.args[0]}")
        except Exception as exc:  # scramp's own type checks; never let them escape
            return self._fail(f"SCRAM error: {exc}")
        self._server = server
        self._state = "client-final"
        return Challenge(str(server_first).encode("utf-8"))

    def _client_final_message(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("malformed SCRAM client-final message: not UTF-8")
        server = self._server
        if server is None or self.authcid is None:
            return self._fail("SCRAM client-final out of sequence")
        try:
            server.set_client_final(text)
            server_final = server.get_server_final()
        except ScramException as exc:
            if exc.server_error == ServerError.INVALID_PROOF:
                return self._fail(BAD_CREDENTIALS)
            return self._fail(f"malformed SCRAM client-final message: {exc.args[0]}")
        except Exception as exc:
            return self._fail(f"SCRAM error: {exc}")
        if self._fake:  # cannot happen (the proof cannot match a random key), but be sure
            return self._fail(BAD_CREDENTIALS)
        # The authzid, if any, is the user name itself (checked at client-first): "".
        return self._succeed(self.authcid, "", str(server_final).encode("utf-8"))

    def _fake_keys(self, authcid: str) -> tuple[bytes, bytes, bytes, int]:
        # Stable per user name within this process, unpredictable without the secret.
        def derive(label: bytes) -> bytes:
            msg = label + b"\x00" + authcid.encode("utf-8")
            return hmac.new(self._fake_key_secret, msg, hashlib.sha256).digest()

        return derive(b"salt")[:16], derive(b"stored"), derive(b"server"), _SCRAM_ITERATIONS


class _SentGs2Header(Gs2Header):  # type: ignore[misc]  # scramp is untyped
    """scramp's gs2-header, rendered as the client sent it (``n,a=user,``): scramp
    builds the expected c= of client-final from ``bytes(header)`` (RFC 5802 §7:
    cbind-input = gs2-header [ cbind-data ], the latter only for "p", which we refuse), so the
    client's header, authzid included, is what its c= must carry."""

    def __init__(self, sent: str) -> None:
        super().__init__(sent[0], None)
        self._sent = sent

    def __str__(self) -> str:
        return self._sent

    def __bytes__(self) -> bytes:
        return self._sent.encode("utf-8")  # RFC 5802 §7: saslname is UTF-8


def _same_identity(authcid: str, authzid: str) -> bool:
    """Whether ``authzid`` names the account ``authcid`` logs in as: the same string, or the
    same address once normalised (account lookups ignore case)."""
    if authzid == authcid:
        return True
    try:
        return normalize_address(authzid) == normalize_address(authcid)
    except AddressError:
        return False


def _unescape_saslname(value: str) -> str | None:
    # RFC 5802 §7: saslname: "=2C" is ",", "=3D" is "=", any other "=" is an error.
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            code = value[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _parse_scram_keys(keys: str) -> tuple[bytes, bytes, bytes, int] | None:
    """Dovecot's "iterations,salt_b64,StoredKey_b64,ServerKey_b64", or None if unusable."""
    parts = keys.split(",")
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    try:
        salt, stored, server = (base64.b64decode(p, validate=True) for p in parts[1:])
    except (ValueError, binascii.Error):
        return None
    iterations = int(parts[0])
    # scramp's limits: salt ≥ 12 octets, 4096 ≤ i ≤ 10,000,000 (RFC 7677 §4 minimum).
    if len(stored) != 32 or len(server) != 32 or len(salt) < 12:
        return None
    if not _SCRAM_ITERATIONS <= iterations <= 10_000_000:
        return None
    return salt, stored, server, iterations


_FACTORIES: dict[str, type[Mechanism]] = {
    "SCRAM-SHA-256": ScramSha256Mechanism,
    "PLAIN": PlainMechanism,
    "LOGIN": LoginMechanism,
}


def server_mechanism(name: str) -> Mechanism:
    """A fresh server-side mechanism for ``name`` (case-insensitive, one of MECHANISMS).
    ValueError for a name we do not offer: the protocol layer answers 504 / NO first."""
    factory = _FACTORIES.get(name.upper())
    if factory is not None:
        return factory()
    raise ValueError(f"unsupported SASL mechanism {name!r}; we offer {', '.join(MECHANISMS)}")
