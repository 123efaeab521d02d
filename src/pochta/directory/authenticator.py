"""Checking credentials against the directory: Dovecot's passdb, as a library.

``Authenticator.check_password`` verifies a user name and password (for PLAIN, LOGIN, the
CLI's ``pochta auth test`` and POP3 USER/PASS); ``resolve_step`` is the glue between a sans-IO
SASL mechanism (``pochta.directory.sasl``) and the directory, so a protocol server's
AUTHENTICATE loop only handles Challenge, Success and Failure.

Defences, each one here so that every protocol gets it:

* timing: an unknown or malformed user name is verified against ``DUMMY_HASH``, so it costs
  the same Argon2id computation as a known user; SCRAM gets fake keys for unknown users;
* tarpit: failures are counted per client address (/64 for IPv6) and per account
  (``FailureTracker``); over the threshold every answer, success or not, waits first, and
  the wait does not depend on whether the user exists;
* hashing runs in threads (``asyncio.to_thread``), at most ``max_concurrent_hashes`` at
  once, so a burst of logins neither blocks the event loop nor takes 64 MiB per connection;
* upgrade on login: a hash that is not our Argon2id with our parameters is replaced after a
  successful login, and SCRAM-SHA-256 keys are added when missing (only a login sees the
  password);
* the verified-credential cache (``CredentialCache``, directory/auth_cache.py, Dovecot's
  auth_cache): the outcome of a verification is remembered per account, stored hash and
  password; only the Argon2id work is skipped: the account is read afresh, and a cached
  failure is counted and tarpitted like a computed one. Each verification logs
  ``password_verified`` (debug) with ``source`` "hash" or "cache".

The directory is called from the event loop thread only (its methods are fast, indexed
lookups; the SQLite backend keeps one connection per thread).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from pochta.config.settings import AuthSettings
from pochta.directory.addresses import AddressError, normalize_address, strip_extension
from pochta.directory.auth_cache import CredentialCache
from pochta.directory.auth_failures import FailureTracker
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import Account
from pochta.directory.passwords import (
    DUMMY_HASH,
    hash_password,
    make_scram_sha256,
    needs_rehash,
    verify_password,
)
from pochta.directory.sasl import (
    Failure,
    Mechanism,
    NeedPassword,
    NeedScramKeys,
    Step,
    Success,
)
from pochta.directory.sasl_exchange import Outcome, Resolve, SaslExchange, SendChallenge

__all__ = ["AuthResult", "Authenticator"]

log = structlog.get_logger("pochta.auth")

_T = TypeVar("_T")
_MAX_LOGGED_NAME = 320  # RFC 5321 §4.5.3.1: 64 + 1 + 255 octets is the longest address


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    account: Account | None  # the account (after any rehash) when ok, else None
    reason: str  # "ok", or why not: for the log, never told to the client in detail


@dataclass(slots=True)
class _ScramLookup:
    """What resolve_step learnt at NeedScramKeys, needed again at the exchange's end."""

    address: str | None  # the canonical account address, None for a malformed name
    counted_as: str | None  # the tracker's account key
    found: bool  # an enabled account with usable SCRAM keys


async def _no_sleep(_seconds: float) -> None:
    return None


class Authenticator:
    def __init__(
        self,
        directory: Directory,
        settings: AuthSettings,
        recipient_delimiter: str,
        *,
        tracker: FailureTracker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = asyncio.sleep,
        max_concurrent_hashes: int | None = None,
        upgrade: bool = True,
        cache: CredentialCache | None = None,
    ) -> None:
        """``sleep=None`` counts failures but never waits, and ``upgrade=False`` leaves
        stored hashes as they are (both for ``pochta auth test``). ``clock`` and ``sleep``
        are injectable for tests; so is ``cache`` (by default one made from ``[auth]``
        cache_*, on ``clock``)."""
        self.directory = directory
        self.settings = settings
        self.recipient_delimiter = recipient_delimiter
        self.tracker = (
            tracker
            if tracker is not None
            else FailureTracker(
                window_seconds=settings.failure_window_seconds,
                threshold=settings.failure_threshold,
                max_delay=settings.tarpit_max_seconds,
            )
        )
        self._clock = clock
        self.cache = (
            cache
            if cache is not None
            else CredentialCache(
                size=settings.cache_size,
                ttl_seconds=settings.cache_ttl_seconds,
                negative_ttl_seconds=settings.cache_negative_ttl_seconds,
                clock=clock,
            )
        )
        self._upgrade_on_login = upgrade
        self._sleep = sleep or _no_sleep
        self._hashing = asyncio.Semaphore(max_concurrent_hashes or max(2, os.cpu_count() or 2))
        # Exchanges whose outcome is already counted, and SCRAM lookups in flight.
        self._counted: weakref.WeakSet[Mechanism] = weakref.WeakSet()
        self._scram: weakref.WeakKeyDictionary[Mechanism, _ScramLookup] = (
            weakref.WeakKeyDictionary()
        )

    # -- passwords (PLAIN, LOGIN, USER/PASS, the CLI) --

    async def check_password(
        self, ip: str, username: str, password: str, *, mechanism: str = "PLAIN"
    ) -> AuthResult:
        """Verify ``username``/``password`` for a client at ``ip``; waits out the tarpit
        before answering. Directory errors (database down) propagate."""
        try:
            address: str | None = normalize_address(username)
        except AddressError:
            address = None
        account = self.directory.get_account(address) if address else None
        # Unknown user: the same Argon2id work as a known one (DUMMY_HASH never matches).
        stored = account.password_hash if account else DUMMY_HASH
        # The cache's account: a malformed name is kept as given (it never becomes a key
        # of the failure tracker's, but its answer is remembered like any other).
        cached_as = address if address is not None else username
        matched = await self._verify(cached_as, stored, password, username)

        reason = "ok"
        if address is None:
            reason = "malformed user name"
        elif account is None:
            reason = "unknown user"
        elif not matched:
            reason = "wrong password"
        elif not account.enabled:
            reason = "account disabled"
        elif not self._domain_enabled(account.domain):
            reason = "domain disabled"
        ok = reason == "ok"

        counted_as = self._account_key(address)
        if ok and account is not None and self._upgrade_on_login:
            account = await self._upgrade(account, password, cached_as)
        await self._count_and_wait(ip, counted_as, ok, username, mechanism, reason)
        return AuthResult(ok, account if ok else None, reason)

    # -- SASL glue --

    async def settle(
        self, ip: str, exchange: SaslExchange, action: Resolve | SendChallenge | Outcome
    ) -> SendChallenge | Outcome:
        """An exchange's action with its ``Resolve`` carried out (``resolve_step``), so that a
        protocol sees only a challenge to send or the outcome (directory/sasl_exchange.py)."""
        if isinstance(action, Resolve):
            return exchange.resolved(await self.resolve_step(ip, exchange.mechanism, action.step))
        return action

    async def resolve_step(self, ip: str, mech: Mechanism, step: Step) -> Step:
        """Do what ``step`` asks of the glue and return the next step for the protocol
        server: Challenge, Success or Failure. Call it on every step a mechanism returns.

        NeedPassword is verified with ``check_password``; NeedScramKeys gets the account's
        stored keys (None for an unknown or disabled account or one without keys). A final
        Success or Failure not yet counted (SCRAM, malformed input) is counted here, with the
        tarpit wait. A Success comes back with ``authcid`` set to the canonical account
        address.
        """
        if isinstance(step, NeedPassword):
            result = await self.check_password(ip, step.authcid, step.password, mechanism=mech.name)
            self._counted.add(mech)
            outcome = mech.password_result(result.ok)
            if isinstance(outcome, Success) and result.account is not None:
                return Success(result.account.address, outcome.authzid, outcome.final_data)
            return outcome
        if isinstance(step, NeedScramKeys):
            return mech.scram_keys(self._scram_lookup(mech, step.authcid))
        if isinstance(step, Success | Failure) and mech not in self._counted:
            self._counted.add(mech)
            lookup = self._scram.pop(mech, None)
            name = mech.authcid or ""
            counted_as = lookup.counted_as if lookup else None
            if isinstance(step, Success):
                address = lookup.address if lookup else None
                await self._count_and_wait(ip, counted_as, True, name, mech.name, "ok")
                return Success(address or step.authcid, step.authzid, step.final_data)
            reason = step.reason
            if lookup is not None and not lookup.found:
                reason = "unknown user, disabled or without SCRAM keys"
            await self._count_and_wait(ip, counted_as, False, name, mech.name, reason)
        return step

    # -- internals --

    def _scram_lookup(self, mech: Mechanism, authcid: str) -> str | None:
        try:
            address: str | None = normalize_address(authcid)
        except AddressError:
            address = None
        account = self.directory.get_account(address) if address else None
        usable = (
            account is not None
            and account.enabled
            and bool(account.scram_sha256)
            and self._domain_enabled(account.domain)
        )
        self._scram[mech] = _ScramLookup(address, self._account_key(address), usable)
        return account.scram_sha256 if usable and account is not None else None

    def _domain_enabled(self, name: str) -> bool:
        domain = self.directory.get_domain(name)
        return domain is not None and domain.enabled

    def _account_key(self, address: str | None) -> str | None:
        """The tracker's key for an account: the address without its "+tag", so varying
        the extension does not escape the per-account count."""
        if address is None:
            return None
        local, _, domain = address.rpartition("@")
        return f"{strip_extension(local, self.recipient_delimiter)}@{domain}"

    async def _count_and_wait(
        self,
        ip: str,
        counted_as: str | None,
        ok: bool,
        username: str,
        mechanism: str,
        reason: str,
    ) -> None:
        now = self._clock()
        if ok:
            # Over the threshold a success waits as long as a failure would have, so the
            # answer's timing does not tell a guesser they are right.
            delay = self.tracker.delay(ip, counted_as, now)
            self.tracker.record_success(ip, counted_as, now)
            log.debug("auth_ok", ip=ip, user=_loggable(username), mechanism=mechanism)
        else:
            self.tracker.record_failure(ip, counted_as, now)
            delay = self.tracker.delay(ip, counted_as, now)
            log.info(
                "auth_failed",
                ip=ip,
                user=_loggable(username),
                mechanism=mechanism,
                reason=reason,
                delay_seconds=delay,
            )
        if delay > 0:
            await self._sleep(delay)

    async def _verify(self, cached_as: str, stored: str, password: str, username: str) -> bool:
        """``verify_password``, answered from the cache when it holds this account, stored
        hash and password; a computed answer is remembered."""
        matched = self.cache.lookup(cached_as, stored, password)
        source = "cache"
        if matched is None:
            matched = await self._in_thread(verify_password, stored, password)
            self.cache.remember(cached_as, stored, password, matched)
            source = "hash"
        log.debug("password_verified", user=_loggable(username), source=source)
        return matched

    async def _upgrade(self, account: Account, password: str, cached_as: str) -> Account:
        """Rehash to our Argon2id and add SCRAM-SHA-256 keys when missing."""
        new_hash: str | None = None
        new_scram: str | None = None
        if needs_rehash(account.password_hash):
            new_hash = await self._in_thread(hash_password, password)
        if not account.scram_sha256:
            try:
                new_scram = await self._in_thread(make_scram_sha256, password)
            except Exception as exc:  # a password SASLprep refuses (RFC 4013 §2.3)
                log.warning("scram_keys_not_made", user=account.address, error=str(exc))
        if new_hash is None and new_scram is None:
            return account
        try:
            updated = self.directory.update_account(
                account.address, password_hash=new_hash, scram_sha256=new_scram
            )
        except DirectoryError as exc:  # removed meanwhile: the login itself was valid
            log.warning("rehash_failed", user=account.address, error=str(exc))
            return account
        if new_hash is not None:
            # The next login reads the new hash: let it find this verified password too.
            self.cache.remember(cached_as, new_hash, password, True)
        return updated

    async def _in_thread(self, func: Callable[..., _T], *args: str) -> _T:
        async with self._hashing:
            return await asyncio.to_thread(func, *args)


def _loggable(name: str) -> str:
    """A user name safe for one log line: bounded, control characters escaped."""
    short = name[:_MAX_LOGGED_NAME]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in short)
