"""SRS, the Sender Rewriting Scheme: forwarded mail leaves with a MAIL FROM of ours.

SRS is not an RFC. This is the scheme of Shevek's libsrs2 (the "guarded" scheme of
``srs2.c``), the one postsrsd runs behind Postfix's sender_canonical_maps and
Mail::SRS describes; addresses made here read like theirs:

- **SRS0**, a sender we forward: ``SRS0=HHHH=TT=orig-domain=orig-local@srs-domain``.
  ``TT`` is a day stamp: the number of days since the epoch modulo 1024 in two base32
  characters (RFC 4648 §6 alphabet, high five bits first). ``HHHH`` is a keyed hash: the
  HMAC-SHA1 (RFC 2104) of ``TT``, ``orig-domain`` and ``orig-local``, each lower-cased,
  base64 (RFC 4648 §4), its first 4 characters, compared without regard to case (relays
  lower-case local parts).
- **SRS1**, a sender that is already an SRS0 address of a first forwarder
  (``SRS0=HHHH=TT=d=l@first``) or an SRS1 address: ``SRS1=HHHH=first==HHHH=TT=d=l@srs-domain``,
  the hash over ``first`` and the rest of the SRS0 local part (``=HHHH=TT=d=l``). A bounce
  to it goes back to the first forwarder's SRS0 address, which its hash protects; SRS1 has
  no stamp of its own (libsrs2 neither).

Reversing (:meth:`SrsCodec.reverse`) checks the hash with every secret (the first signs, all
verify: a new secret is put first and the old one kept until its addresses expire, like
postsrsd's secrets file) and, for SRS0, the age: a stamp older than ``max_age_days`` is
refused, so an address harvested from a bounce stops working. The clock is injected.

Pure: no I/O but :func:`read_secrets` and :func:`ensure_secret_file` (the secrets file, one
secret a line, the first signs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as secrets_module
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pochta.durable import write_atomic
from pochta.logs import get_logger

__all__ = [
    "DAY_SECONDS",
    "HASH_LENGTH",
    "SrsCodec",
    "SrsError",
    "SrsRewriter",
    "ensure_secret_file",
    "is_srs",
    "read_secrets",
]

DAY_SECONDS = 86400  # libsrs2 SRS_TIME_PRECISION
_TIME_SLOTS = 1024  # libsrs2 SRS_TIME_SLOTS: two base32 characters
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 §6 alphabet
HASH_LENGTH = 4  # libsrs2's default hash length (characters of base64)
_SEP = "="  # libsrs2's default separator (postsrsd SRS_SEPARATOR)
_SRS0 = "SRS0"
_SRS1 = "SRS1"

log = get_logger("srs")


class SrsError(ValueError):
    """An SRS address that cannot be reversed; ``reason`` says why (for the 550 text)."""

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "hash", "expired", "format"


def is_srs(local_part: str) -> bool:
    """Whether a local part is an SRS0 or SRS1 address (any case, libsrs2's separators)."""
    head = local_part[:5].upper()
    return head[:4] in (_SRS0, _SRS1) and head[4:5] in ("=", "+", "-")


@dataclass(frozen=True, slots=True)
class SrsCodec:
    """Makes and reverses SRS addresses at ``domain`` with ``secrets`` (the first signs)."""

    domain: str
    secrets: tuple[bytes, ...]
    max_age_days: int = 21
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("SRS needs at least one secret")
        if not self.domain:
            raise ValueError("SRS needs a domain")

    # -- forward --

    def forward(self, sender: str) -> str:
        """The SRS address for envelope sender ``sender`` (``local@domain``)."""
        local, at, domain = sender.rpartition("@")
        if not at or not local or not domain:
            raise ValueError(f"not an address with a domain: {sender!r}")
        if is_srs(local):
            return self._srs1(local, domain)
        stamp = self._stamp()
        digest = self._hash(self.secrets[0], stamp, domain, local)
        return f"{_SRS0}{_SEP}{digest}{_SEP}{stamp}{_SEP}{domain}{_SEP}{local}@{self.domain}"

    def _srs1(self, local: str, domain: str) -> str:
        # libsrs2 srs_compile_guarded: an SRS0 of "first" keeps its tail and names "first";
        # an SRS1 keeps its first forwarder and tail and gets a new hash of ours.
        sep = local[4]
        if local[:4].upper() == _SRS0:
            first, tail = domain, local[4:]
        else:
            parts = local[5:].split(sep, 2)  # HHHH, first, =rest
            if len(parts) < 3 or not parts[1]:
                raise ValueError(f"malformed SRS1 address: {local}@{domain}")
            first, tail = parts[1], parts[2]
        digest = self._hash(self.secrets[0], first, tail)
        return f"{_SRS1}{_SEP}{digest}{_SEP}{first}{_SEP}{tail}@{self.domain}"

    # -- reverse --

    def reverse(self, local_part: str) -> str:
        """The address an SRS local part (of our domain) stands for; SrsError when the hash
        is wrong, the stamp too old or the form unknown."""
        if not is_srs(local_part):
            raise SrsError("not an SRS address", kind="format")
        sep = local_part[4]
        rest = local_part[5:]
        if local_part[:4].upper() == _SRS1:
            parts = rest.split(sep, 2)
            if len(parts) < 3 or not parts[1] or not parts[2]:
                raise SrsError("malformed SRS1 address", kind="format")
            digest, first, tail = parts
            self._check_hash(digest, first, tail)
            return f"{_SRS0}{tail}@{first}"
        parts = rest.split(sep, 3)  # HHHH, TT, domain, local (the local part may hold "=")
        if len(parts) < 4 or not all(parts):
            raise SrsError("malformed SRS0 address", kind="format")
        digest, stamp, domain, local = parts
        self._check_hash(digest, stamp, domain, local)
        self._check_stamp(stamp)
        return f"{local}@{domain}"

    def _check_hash(self, digest: str, *data: str) -> None:
        given = digest.lower().encode("ascii", "replace")
        for secret in self.secrets:  # rotation: every secret verifies
            expected = self._hash(secret, *data).lower().encode("ascii")
            # libsrs2 compares case-insensitively (strncasecmp); constant time here.
            if hmac.compare_digest(given, expected):
                return
        raise SrsError("SRS address hash does not verify (forged or mistyped)", kind="hash")

    def _check_stamp(self, stamp: str) -> None:
        if len(stamp) != 2:
            raise SrsError("SRS address has a bad time stamp", kind="format")
        try:
            then = _BASE32.index(stamp[0].upper()) << 5 | _BASE32.index(stamp[1].upper())
        except ValueError:
            raise SrsError("SRS address has a bad time stamp", kind="format") from None
        now = self._today()
        # libsrs2 srs_timestamp_check: the stamp wraps every 1024 days.
        age = (now - then) % _TIME_SLOTS
        if age > self.max_age_days:
            raise SrsError(
                f"SRS address expired ({age} days old, at most {self.max_age_days})",
                kind="expired",
            )

    def _today(self) -> int:
        return int(self.clock() // DAY_SECONDS) % _TIME_SLOTS

    def _stamp(self) -> str:
        today = self._today()
        return _BASE32[(today >> 5) & 31] + _BASE32[today & 31]

    @staticmethod
    def _hash(secret: bytes, *data: str) -> str:
        # libsrs2 srs_hash_create_v: HMAC-SHA1 over each item lower-cased, base64, cut.
        mac = hmac.new(secret, digestmod=hashlib.sha1)
        for item in data:
            mac.update(item.lower().encode("utf-8"))
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]


class SrsRewriter:
    """The outbound side: which envelope senders leave as SRS (Postfix sender_canonical_maps
    with postsrsd). ``hosted(domain)`` says whether a domain is ours (local, virtual mailbox,
    virtual alias class or the host name); the null sender and our own senders are kept."""

    _LOGGED_MAX = 4096  # queue ids remembered so the rewrite is logged once per message

    def __init__(self, codec: SrsCodec, hosted: Callable[[str], bool]) -> None:
        self.codec = codec
        self._hosted = hosted
        self._logged: OrderedDict[str, None] = OrderedDict()

    def envelope_sender(self, sender: str, queue_id: str = "") -> str:
        """The MAIL FROM to send for envelope sender ``sender``."""
        local, at, domain = sender.rpartition("@")
        if not sender or not at or not local or not domain:
            return sender
        if domain.rstrip(".").lower() == self.codec.domain or self._hosted(domain):
            return sender
        rewritten = self.codec.forward(sender)
        if queue_id and queue_id not in self._logged:
            log.info("srs_rewrite", queue_id=queue_id, sender=sender, mail_from=rewritten)
            self._logged[queue_id] = None
            if len(self._logged) > self._LOGGED_MAX:
                self._logged.popitem(last=False)
        return rewritten


def read_secrets(path: Path) -> tuple[bytes, ...]:
    """The secrets of a postsrsd-style secrets file: one a line, the first signs; blank
    lines and ``#`` comments skipped. OSError/ValueError say what is wrong."""
    lines = path.read_bytes().splitlines()
    found = tuple(
        line.strip() for line in lines if line.strip() and not line.strip().startswith(b"#")
    )
    if not found:
        raise ValueError(f"{path} holds no SRS secret (one secret a line, the first signs)")
    return found


def ensure_secret_file(path: Path, owner: tuple[int, int] | None = None) -> bool:
    """Write ``path`` with one random secret (mode 0600) when it does not exist; True when
    it was made. ``pochta init`` and ``serve`` (for installs older than SRS) call it."""
    if path.exists():
        return False
    secret = base64.b64encode(secrets_module.token_bytes(24)) + b"\n"
    write_atomic(path, secret, mode=0o600, owner=owner, make_parents=True)
    return True
