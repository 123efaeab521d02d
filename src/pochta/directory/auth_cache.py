"""The verified-credential cache: Dovecot's ``auth_cache`` for password logins (pure).

A password check costs one Argon2id computation (directory/passwords.py, about 0.1 s of
both cores); a mail client opens an IMAP connection, and logs in, many times an hour. The
Authenticator remembers the outcome of each verification here, so the same account with the
same password (or the same wrong password) is answered from memory until the entry expires.

What an entry is keyed on, and why:

* the account (the normalised address; the raw name for a malformed one);
* an HMAC-SHA256, under a random key made per cache (so per process, never written
  anywhere), of the account, the *stored hash* and the password. The cache holds no password
  and nothing an offline attacker can test guesses against without the key. The stored hash
  in the MAC means a changed hash misses: ``pochta user passwd`` runs in another process and
  writes the directory, and the next login reads the new hash (the directory is asked on every
  login; only the Argon2id verification is skipped), so the old password stops working at
  once. ``user disable``/``remove`` and a disabled domain need nothing here: the Authenticator
  checks them on the fresh record after the verification, cached or not. An unknown user is
  checked against ``DUMMY_HASH``, so a user added later misses too.

Positive entries live ``ttl_seconds``, negative ones ``negative_ttl_seconds`` (0: none are
kept, as Dovecot's auth_cache_negative_ttl = 0). A negative entry only answers that exact
wrong password: it never locks out the right one, and it spares the Argon2id work of a client
retrying an old password after a change. The failure count and the tarpit do not live here:
the Authenticator counts a cached failure like a computed one, so a cached "wrong password"
makes no guessing faster.

At most ``size`` entries (LRU: a hit or a new entry moves to the back, the front goes first);
``size`` 0 turns the cache off. ``clear`` empties it (SIGHUP builds a new Authenticator with an
empty cache). A hit answers faster than a computed check: it tells that someone gave this
exact account and password within the TTL, which a caller able to guess it learns anyway,
for a known account and an unknown one alike.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CredentialCache"]

_KEY_BYTES = 32  # HMAC-SHA256 key: the hash's block output size (RFC 2104 §3)


@dataclass(frozen=True, slots=True)
class _Entry:
    matched: bool
    expires: float


class CredentialCache:
    def __init__(
        self,
        *,
        size: int,
        ttl_seconds: float,
        negative_ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 0 or ttl_seconds <= 0 or negative_ttl_seconds < 0:
            raise ValueError(
                "CredentialCache needs size >= 0, ttl_seconds > 0 and negative_ttl_seconds >= 0"
            )
        self.size = size
        self.ttl_seconds = float(ttl_seconds)
        self.negative_ttl_seconds = float(negative_ttl_seconds)
        self._clock = clock
        self._key = secrets.token_bytes(_KEY_BYTES)
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, account: str, stored: str, password: str) -> bool | None:
        """The remembered outcome of verifying ``password`` against ``stored`` for
        ``account``: True, False, or None when not cached (or expired)."""
        if self.size == 0:
            return None
        key = self._entry_key(account, stored, password)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.matched

    def remember(self, account: str, stored: str, password: str, matched: bool) -> None:
        """Keep the outcome of one verification (a failure only with a negative TTL)."""
        ttl = self.ttl_seconds if matched else self.negative_ttl_seconds
        if self.size == 0 or ttl == 0:
            return
        key = self._entry_key(account, stored, password)
        self._entries[key] = _Entry(matched, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)  # the least recently used

    def clear(self) -> None:
        self._entries.clear()

    def _entry_key(self, account: str, stored: str, password: str) -> tuple[str, bytes]:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (account, stored, password):
            # Length-prefixed, so no two (account, stored, password) give the same input.
            raw = part.encode("utf-8", "surrogatepass")
            mac.update(len(raw).to_bytes(8, "big"))
            mac.update(raw)
        return account, mac.digest()
