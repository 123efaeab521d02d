"""The envelope of a queued message: who sent it, to whom, and what happened to each recipient.

This is the queue's on-disk format (``spool.py`` writes it as JSON, one small file per message,
next to the immutable content file). Postfix keeps the same facts in the queue file's
``S``/``R``/``O``/``N`` records (postfix/src/global/rec_type.h); we keep them in a versioned
msgspec Struct so an admin can read one with ``cat`` or ``pochta queue show``.

Versioning: ``Envelope.version`` is written with every envelope. A reader accepts every
version up to ``ENVELOPE_VERSION``; fields added later must have defaults (old files still
decode) and unknown fields are ignored (a downgrade reads a newer file as far as it can). A
file whose version is newer than this code knows is refused (``EnvelopeError``) rather than
guessed at.

Queue ids follow Postfix's "long queue id" idea (postconf(5) ``enable_long_queue_ids``): they
sort by time, need no coordination between processes and are safe as file names.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Literal

import msgspec

from pochta.cleanup.verdict import Verdict

ENVELOPE_VERSION = 1

RecipientStatus = Literal["pending", "delivered", "deferred", "bounced", "expired"]
# A recipient is final once nothing more will be tried for it.
FINAL_STATUSES: frozenset[str] = frozenset({"delivered", "bounced", "expired"})


class EnvelopeError(ValueError):
    """An envelope file that cannot be read: not JSON, wrong shape, or a newer version."""


class Recipient(msgspec.Struct):
    """One envelope recipient and its delivery state.

    ``orcpt`` and ``notify`` are the RFC 3461 §4.2 ORCPT and §4.1 NOTIFY parameters of RCPT TO
    (``notify`` holds "SUCCESS", "FAILURE", "DELAY" or just "NEVER"; empty = not given).
    """

    address: str
    original: str = ""  # the address as given at RCPT, before alias expansion
    orcpt: str = ""  # RFC 3461 §4.2, "rfc822;addr" as received (xtext decoded)
    notify: tuple[str, ...] = ()  # RFC 3461 §4.1
    status: RecipientStatus = "pending"
    reply: str = ""  # last reply text, with its code ("451 4.7.1 try later")
    attempts: int = 0
    next_attempt: float = 0.0  # Unix time of the next try, when deferred
    # Filled by the router: "mailbox:alice@example.test", "smtp:example.org",
    # "relay:[host]:25", "lmtp:unix:/path", "pipe:...".
    destination: str = ""
    delivered_at: float = 0.0
    remote_mta: str = ""  # the host that gave ``reply`` (RFC 3464 §2.3.5), "" for our own
    # The final notice (bounce, or success when asked) is queued, or none is owed: set once the
    # recipient is final and its DSN writer returned, so a notice is neither lost nor doubled.
    notified: bool = False

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Envelope(msgspec.Struct):
    """The envelope of one message (RFC 5321 §2.3.1: MAIL FROM, RCPT TO and the parameters).

    ``sender`` is "" for the null reverse-path (RFC 5321 §4.5.5, bounces). ``ret`` and
    ``envid`` are RFC 3461 §4.3/§4.4 (MAIL FROM RET=, ENVID=); ``smtputf8`` RFC 6531 §3.4;
    ``body`` RFC 6152 (8BITMIME) and RFC 3030 (BINARYMIME); ``requiretls`` RFC 8689 §4.
    """

    queue_id: str
    sender: str
    recipients: list[Recipient]
    arrival: float  # Unix time the message was queued
    size: int  # bytes of content
    ret: Literal["FULL", "HDRS", ""] = ""
    envid: str = ""
    smtputf8: bool = False
    body: Literal["7BIT", "8BITMIME", "BINARYMIME"] = "7BIT"
    client_ip: str = ""
    client_helo: str = ""
    # The client's verified host name (receive/client_name.py, Postfix's client_name), ""
    # when unknown; absent in envelopes written before it existed, which load with "".
    client_hostname: str = ""
    auth_user: str = ""
    protocol: str = "ESMTP"  # RFC 3848 WITH keyword, or "sendmail" for the local command
    requiretls: bool = False
    warned_delay: bool = False  # the delay DSN (RFC 3464 action=delayed) went out already
    # zlib.crc32 of the content as queued (None: not recorded). Recovery uses it to tell a
    # complete recycled queue file from one whose overwrite a crash cut short (spool.py).
    crc32: int | None = None
    # What cleanup's filters found and decided (cleanup/verdict.py); absent in envelopes
    # written before it existed, which load with the empty verdict.
    verdict: Verdict = msgspec.field(default_factory=Verdict)
    version: int = ENVELOPE_VERSION

    def pending_recipients(self) -> list[Recipient]:
        """Recipients that still need an attempt (pending or deferred)."""
        return [r for r in self.recipients if not r.is_final]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """The envelope as one line of JSON (with a trailing newline, for ``cat``)."""
    return _encoder.encode(envelope) + b"\n"


def decode_envelope(data: bytes) -> Envelope:
    """Parse an envelope file; ``EnvelopeError`` says what is wrong with it."""
    try:
        envelope = _decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise EnvelopeError(f"not a valid envelope: {exc}") from None
    if envelope.version > ENVELOPE_VERSION:
        raise EnvelopeError(
            f"envelope version {envelope.version} is newer than this pochta understands "
            f"({ENVELOPE_VERSION}); upgrade pochta or move the file back by hand"
        )
    if not is_queue_id(envelope.queue_id):
        raise EnvelopeError(f"queue id {envelope.queue_id!r} is not valid")
    return envelope


# --- queue ids ------------------------------------------------------------------------------

# Digits, then upper, then lower case: the ASCII order, so ids sort as their numbers do.
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TIME_CHARS = 10  # 62**10 microseconds is ~26,000 years: the width never changes
_RANDOM_CHARS = 5  # 62**5 ≈ 9.2e8 choices per microsecond, and creation is O_EXCL anyway
QUEUE_ID_LENGTH = _TIME_CHARS + _RANDOM_CHARS
_SHARD_SPAN = 62 * 62  # shards are told apart by the last two digits: up to 3,844

_last_micros = 0
_id_lock = threading.Lock()


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def new_queue_id(now: float | None = None, shard: tuple[int, int] | None = None) -> str:
    """A new queue id: 10 base-62 digits of microseconds since 1970, then 5 random ones.

    Like Postfix's long queue ids (time first, so ``ls`` and ``sorted`` give arrival order)
    but without an inode number: the random tail keeps two processes (server and sendmail)
    apart, and the spool creates the content file with O_EXCL, so a clash is retried, never
    overwritten. Within one process the time part never goes backwards.

    ``shard`` (index, count): the id falls in that shard (``queue_shard``); its last two
    digits are drawn from those that put it there.
    """
    global _last_micros
    micros = int((time.time() if now is None else now) * 1_000_000)
    with _id_lock:
        if now is None:
            micros = max(micros, _last_micros + 1)
            _last_micros = micros
    tail = int.from_bytes(os.urandom(4), "big") % (62**_RANDOM_CHARS)
    return _base62(micros, _TIME_CHARS) + _base62(_in_shard(tail, shard), _RANDOM_CHARS)


def _in_shard(tail: int, shard: tuple[int, int] | None) -> int:
    if shard is not None and shard[1] > 1:
        index, count = shard
        # The last two digits v with v % count == index: v = index + count * k, k < choices.
        choices = (_SHARD_SPAN - index + count - 1) // count
        low = tail % _SHARD_SPAN
        tail = tail - low + index + count * (low % choices)
    return tail


def derived_queue_id(origin: str, salt: str, shard: tuple[int, int] | None = None) -> str:
    """The queue id of a message made while delivering ``origin`` (a Sieve redirect or
    vacation reply), the same each time for the same ``origin`` and ``salt``: a delivery
    tried again finds the message it queued before instead of queueing a second one. The
    time part is ``origin``'s, the rest a digest of both, put into ``shard`` as
    :func:`new_queue_id` does; never ``origin`` itself."""
    for n in range(100):
        data = f"{origin}\0{salt}\0{n}".encode()
        digest = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
        tail = _in_shard(digest % (62**_RANDOM_CHARS), shard)
        derived = origin[:_TIME_CHARS] + _base62(tail, _RANDOM_CHARS)
        if derived != origin:
            return derived
    raise ValueError(f"no queue id can be derived from {origin!r}")  # pragma: no cover


def queue_shard(queue_id: str, count: int) -> int:
    """Which of ``count`` delivering processes schedules ``queue_id``: the value of its last
    two digits modulo ``count`` (server/workers.py). Ids from ``pochta sendmail`` fall
    anywhere."""
    if count <= 1:
        return 0
    return (_ALPHABET.index(queue_id[-2]) * 62 + _ALPHABET.index(queue_id[-1])) % count


def is_queue_id(text: str) -> bool:
    """True for a string shaped like our queue ids (safe to use as a file name)."""
    return len(text) == QUEUE_ID_LENGTH and text.isascii() and text.isalnum()


def queue_id_time(queue_id: str) -> float:
    """The Unix time encoded in a queue id."""
    micros = 0
    for c in queue_id[:_TIME_CHARS]:
        micros = micros * 62 + _ALPHABET.index(c)
    return micros / 1_000_000
