"""The Authenticator (passdb glue) and the failure tracker behind its tarpit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import argon2
import msgspec
import pytest
import scramp
from structlog.testing import capture_logs

from pochta.config.settings import AuthSettings
from pochta.directory import authenticator as authenticator_module
from pochta.directory.auth_failures import FailureTracker, client_key
from pochta.directory.authenticator import Authenticator
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import Account, Alias, DkimSelector, Domain
from pochta.directory.passwords import (
    DUMMY_HASH,
    hash_password,
    make_scram_sha256,
    verify_password,
)
from pochta.directory.sasl import (
    Challenge,
    Failure,
    NeedScramKeys,
    Step,
    Success,
    server_mechanism,
)

SHA512_CRYPT = (
    "{SHA512-CRYPT}$6$GE.9sUKTQ4VRsm39$znFFH7nPTsJJk1kmhoW/jcCtBSRktvi3lPiqSknWvTn29ocjfIQJdEAo"
    "/xM5VNH.AsI.SliJ5ScMr8LJuxkQh0"
)  # "S3cret!pw", from shared/testdata/password-hashes
IP = "192.0.2.10"


class MemoryDirectory(Directory):
    """Just enough of a directory for the authenticator: dicts, no persistence."""

    def __init__(self) -> None:
        self.domains: dict[str, Domain] = {}
        self.accounts: dict[str, Account] = {}

    def add_domain(self, name: str, *, catchall: str = "") -> Domain:
        self.domains[name] = Domain(name=name, catchall=catchall)
        return self.domains[name]

    def get_domain(self, name: str) -> Domain | None:
        return self.domains.get(name)

    def list_domains(self) -> list[Domain]:
        return list(self.domains.values())

    def remove_domain(self, name: str, *, force: bool = False) -> None:
        del self.domains[name]

    def set_domain(
        self, name: str, *, enabled: bool | None = None, catchall: str | None = None
    ) -> Domain:
        d = self.domains[name]
        d = msgspec.structs.replace(
            d,
            enabled=d.enabled if enabled is None else enabled,
            catchall=d.catchall if catchall is None else catchall,
        )
        self.domains[name] = d
        return d

    def add_dkim_selector(self, domain: str, selector: DkimSelector) -> None:
        raise NotImplementedError

    def set_dkim_selector_active(self, domain: str, selector: str, active: bool) -> None:
        raise NotImplementedError

    def remove_dkim_selector(self, domain: str, selector: str) -> None:
        raise NotImplementedError

    def add_account(
        self,
        address: str,
        *,
        password_hash: str,
        scram_sha256: str = "",
        quota_bytes: int = 0,
        enabled: bool = True,
    ) -> Account:
        if address.rpartition("@")[2] not in self.domains:
            raise DirectoryError("domain not hosted")
        self.accounts[address] = Account(
            address=address,
            password_hash=password_hash,
            scram_sha256=scram_sha256,
            quota_bytes=quota_bytes,
            enabled=enabled,
        )
        return self.accounts[address]

    def add_accounts_bulk(self, accounts: Iterable[Account]) -> int:
        n = 0
        for a in accounts:
            self.accounts[a.address] = a
            n += 1
        return n

    def import_accounts(
        self, new: Sequence[Account], replace: Sequence[Account] = ()
    ) -> tuple[int, int]:
        return self.add_accounts_bulk(new), 0

    def get_account(self, address: str) -> Account | None:
        return self.accounts.get(address)

    def list_accounts(self, domain: str | None = None) -> list[Account]:
        return [a for a in self.accounts.values() if domain in (None, a.domain)]

    def update_account(
        self,
        address: str,
        *,
        password_hash: str | None = None,
        scram_sha256: str | None = None,
        quota_bytes: int | None = None,
        enabled: bool | None = None,
    ) -> Account:
        if address not in self.accounts:
            raise DirectoryError(f"no account {address}")
        a = self.accounts[address]
        changes = {
            "password_hash": password_hash,
            "scram_sha256": scram_sha256,
            "quota_bytes": quota_bytes,
            "enabled": enabled,
        }
        a = msgspec.structs.replace(a, **{k: v for k, v in changes.items() if v is not None})
        self.accounts[address] = a
        return a

    def remove_account(self, address: str) -> None:
        del self.accounts[address]

    def count_accounts(self, domain: str | None = None) -> int:
        return len(self.list_accounts(domain))

    def add_alias(self, source: str, targets: Sequence[str]) -> Alias:
        raise NotImplementedError

    def get_alias(self, source: str) -> Alias | None:
        return None

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        return []

    def aliases_targeting(self, address: str) -> list[Alias]:
        return []

    def remove_alias(self, source: str, target: str | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _sqlite_directory(path: Path) -> Directory:
    from pochta.directory.sqlite import SqliteDirectory

    return SqliteDirectory(path)


try:
    import pochta.directory.sqlite  # noqa: F401

    BACKENDS = ["memory", "sqlite"]
except ImportError:  # written by another part of the project
    BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
def directory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Directory]:
    d: Directory = (
        MemoryDirectory() if request.param == "memory" else _sqlite_directory(tmp_path / "d.db")
    )
    d.add_domain("example.org")
    d.add_domain("off.example")
    d.set_domain("off.example", enabled=False)
    d.add_account("alice@example.org", password_hash=hash_password("alice-pw"))
    d.add_account("old@example.org", password_hash=SHA512_CRYPT)
    d.add_account("gone@example.org", password_hash=hash_password("gone-pw"), enabled=False)
    d.add_account("bob@off.example", password_hash=hash_password("bob-pw"))
    yield d
    d.close()


class FakeTime:
    """A clock the test moves, and a sleep that only records."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def auth(directory: Directory, fake_time: FakeTime) -> Authenticator:
    return Authenticator(
        directory, AuthSettings(), "+", clock=fake_time.clock, sleep=fake_time.sleep
    )


# -- check_password --


async def test_success(auth: Authenticator, directory: Directory) -> None:
    result = await auth.check_password(IP, "Alice@Example.ORG", "alice-pw")
    assert result.ok
    assert result.reason == "ok"
    assert result.account is not None
    assert result.account.address == "alice@example.org"
    # SCRAM keys were missing: a login adds them (the hash itself is current).
    stored = directory.get_account("alice@example.org")
    assert stored is not None
    assert stored.scram_sha256
    assert verify_password("{SCRAM-SHA-256}" + stored.scram_sha256, "alice-pw")


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("alice@example.org", "Wr0ng-guess", "wrong password"),
        ("nobody@example.org", "alice-pw", "unknown user"),
        ("not an address", "alice-pw", "malformed user name"),
        ("", "alice-pw", "malformed user name"),
        ("gone@example.org", "gone-pw", "account disabled"),
        ("bob@off.example", "bob-pw", "domain disabled"),
    ],
)
async def test_failures(auth: Authenticator, username: str, password: str, reason: str) -> None:
    with capture_logs() as logs:
        result = await auth.check_password(IP, username, password)
    assert (result.ok, result.account, result.reason) == (False, None, reason)
    failed = [e for e in logs if e["event"] == "auth_failed"]
    assert len(failed) == 1
    assert failed[0]["ip"] == IP
    assert failed[0]["reason"] == reason
    assert failed[0]["mechanism"] == "PLAIN"
    assert all(password not in repr(e) for e in logs)


async def test_rehash_on_login_then_scram(auth: Authenticator, directory: Directory) -> None:
    before = directory.get_account("old@example.org")
    assert before is not None
    assert before.password_hash.startswith("{SHA512-CRYPT}")
    assert not before.scram_sha256

    result = await auth.check_password(IP, "old@example.org", "S3cret!pw")
    assert result.ok
    after = directory.get_account("old@example.org")
    assert after is not None
    assert after.password_hash.startswith("{ARGON2ID}$argon2id$")
    assert verify_password(after.password_hash, "S3cret!pw")
    assert after.scram_sha256.startswith("4096,")

    # A second login does not rewrite the now current hash.
    assert (await auth.check_password(IP, "old@example.org", "S3cret!pw")).ok
    again = directory.get_account("old@example.org")
    assert again is not None
    assert again.password_hash == after.password_hash

    # And SCRAM-SHA-256 now works for this user.
    client = scramp.ScramClient(["SCRAM-SHA-256"], "old@example.org", "S3cret!pw")
    step = await _scram(auth, client)
    assert isinstance(step, Success)
    assert step.authcid == "old@example.org"


async def test_wrong_password_does_not_rehash(auth: Authenticator, directory: Directory) -> None:
    assert not (await auth.check_password(IP, "old@example.org", "nope")).ok
    account = directory.get_account("old@example.org")
    assert account is not None
    assert account.password_hash == SHA512_CRYPT


async def test_upgrade_off_leaves_hashes(directory: Directory) -> None:
    auth = Authenticator(directory, AuthSettings(), "+", sleep=None, upgrade=False)
    assert (await auth.check_password(IP, "old@example.org", "S3cret!pw")).ok
    account = directory.get_account("old@example.org")
    assert account is not None
    assert (account.password_hash, account.scram_sha256) == (SHA512_CRYPT, "")


async def test_hashing_does_not_block_the_loop(auth: Authenticator) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        for _ in range(3):
            await auth.check_password(IP, "ghost@example.org", "x")
    finally:
        task.cancel()
    assert ticks >= 10  # three Argon2id verifications: the loop kept running meanwhile


# -- tarpit --


async def test_tarpit_after_threshold(auth: Authenticator, fake_time: FakeTime) -> None:
    for _ in range(4):
        assert not (await auth.check_password(IP, "alice@example.org", "wrong")).ok
    assert fake_time.slept == []
    assert not (await auth.check_password(IP, "alice@example.org", "wrong")).ok
    assert fake_time.slept == [1.0]  # the 5th failure reaches the threshold
    for _ in range(5):
        await auth.check_password(IP, "alice@example.org", "wrong")
    assert fake_time.slept == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]  # doubling, capped
    # Over the threshold a right password waits too (its timing must not give it away).
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    assert fake_time.slept[-1] == 15.0


async def test_tarpit_same_for_wrong_user_and_wrong_password(
    directory: Directory,
) -> None:
    delays = []
    for username, password in (
        ("alice@example.org", "wrong"),
        ("ghost@example.org", "wrong"),
        ("not-an-address", "wrong"),
    ):
        t = FakeTime()
        auth = Authenticator(directory, AuthSettings(), "+", clock=t.clock, sleep=t.sleep)
        for _ in range(6):
            await auth.check_password(IP, username, password)
        delays.append(t.slept)
    assert delays[0] == delays[1] == delays[2] == [1.0, 2.0]


async def test_tarpit_per_account_across_addresses(
    auth: Authenticator, fake_time: FakeTime
) -> None:
    for i in range(5):
        # A different /64 each time, and varying "+tag" extensions of the same account.
        await auth.check_password(f"2001:db8:{i}::1", f"alice+{i}@example.org", "wrong")
    assert fake_time.slept == [1.0]
    # Another account from a fresh address is not slowed.
    await auth.check_password("198.51.100.1", "old@example.org", "wrong")
    assert fake_time.slept == [1.0]


async def test_window_expiry(auth: Authenticator, fake_time: FakeTime) -> None:
    for _ in range(5):
        await auth.check_password(IP, "alice@example.org", "wrong")
    assert fake_time.slept == [1.0]
    fake_time.now += 61
    await auth.check_password(IP, "alice@example.org", "wrong")
    assert fake_time.slept == [1.0]


async def test_no_sleep_mode_still_counts(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sleep=None (pochta auth test) hands each tarpit delay to a sleeper that never waits:
    # the delays are counted and recorded here, not measured on the clock.
    asked: list[float] = []

    async def record(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(authenticator_module, "_no_sleep", record)
    auth = Authenticator(directory, AuthSettings(), "+", sleep=None)
    for _ in range(7):
        await auth.check_password(IP, "alice@example.org", "wrong")
    assert asked == [1.0, 2.0, 4.0]  # the tarpit's delays, none of them waited for
    assert auth.tracker.delay(IP, "alice@example.org", time.monotonic()) == 4.0


async def test_unknown_and_malformed_users_cost_one_argon2id_check(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DUMMY_HASH defence: an unknown or malformed user name costs the same Argon2id
    # verification as a known one. Counted (which hash each check verified), not timed.
    verified: list[str] = []
    real = authenticator_module.verify_password

    def counting(stored: str, password: str) -> bool:
        verified.append(stored)
        return real(stored, password)

    monkeypatch.setattr(authenticator_module, "verify_password", counting)
    tracker = FailureTracker(threshold=1000)  # no tarpit here
    auth = Authenticator(directory, AuthSettings(), "+", tracker=tracker)
    alice = directory.get_account("alice@example.org")
    assert alice is not None
    known_hash = alice.password_hash
    await auth.check_password(IP, "alice@example.org", "wrong")
    await auth.check_password(IP, "ghost@example.org", "wrong")
    await auth.check_password(IP, "ghost", "wrong")
    assert verified == [known_hash, DUMMY_HASH, DUMMY_HASH]
    assert "$argon2id$" in known_hash
    assert "$argon2id$" in DUMMY_HASH


# -- the verified-credential cache (directory/auth_cache.py) --


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stored hashes ``verify_password`` was really asked about (Argon2id work done)."""
    calls: list[str] = []
    real = authenticator_module.verify_password

    def counting(stored: str, password: str) -> bool:
        calls.append(stored)
        return real(stored, password)

    monkeypatch.setattr(authenticator_module, "verify_password", counting)
    return calls


async def test_cache_second_login_skips_the_hash(auth: Authenticator, verified: list[str]) -> None:
    with capture_logs() as logs:
        assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
        result = await auth.check_password(IP, "Alice@Example.org", "alice-pw")
    assert result.ok
    assert result.account is not None
    assert result.account.address == "alice@example.org"
    assert len(verified) == 1
    sources = [e["source"] for e in logs if e["event"] == "password_verified"]
    assert sources == ["hash", "cache"]
    assert all("alice-pw" not in repr(e) for e in logs)


async def test_cache_positive_ttl(
    auth: Authenticator, verified: list[str], fake_time: FakeTime
) -> None:
    for _ in range(2):
        assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    assert len(verified) == 1
    fake_time.now += AuthSettings().cache_ttl_seconds
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    assert len(verified) == 2  # expired: verified again


async def test_cache_negative_ttl(directory: Directory, verified: list[str]) -> None:
    t = FakeTime()
    settings = AuthSettings(cache_negative_ttl_seconds=30, failure_threshold=1000)
    auth = Authenticator(directory, settings, "+", clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        assert not (await auth.check_password(IP, "alice@example.org", "wrong")).ok
        assert not (await auth.check_password(IP, "ghost@example.org", "wrong")).ok
    assert len(verified) == 2  # one each, known and unknown user alike
    t.now += 30
    assert not (await auth.check_password(IP, "alice@example.org", "wrong")).ok
    assert len(verified) == 3
    # A remembered wrong password never stands in the way of the right one.
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok


async def test_cache_negative_ttl_zero(directory: Directory, verified: list[str]) -> None:
    settings = AuthSettings(cache_negative_ttl_seconds=0, failure_threshold=1000)
    auth = Authenticator(directory, settings, "+", sleep=None)
    for _ in range(2):
        assert not (await auth.check_password(IP, "alice@example.org", "wrong")).ok
    assert len(verified) == 2


async def test_cache_size_zero_is_off(directory: Directory, verified: list[str]) -> None:
    auth = Authenticator(directory, AuthSettings(cache_size=0), "+", sleep=None)
    for _ in range(2):
        assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    assert len(verified) == 2


async def test_cache_lru_bound(directory: Directory, verified: list[str]) -> None:
    directory.add_account("carol@example.org", password_hash=hash_password("carol-pw"))
    auth = Authenticator(directory, AuthSettings(cache_size=1), "+", sleep=None)
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    assert (await auth.check_password(IP, "carol@example.org", "carol-pw")).ok
    assert len(auth.cache) == 1
    assert (await auth.check_password(IP, "carol@example.org", "carol-pw")).ok
    assert len(verified) == 2  # carol's entry answered
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    assert len(verified) == 3  # alice's had been pushed out


async def test_cache_misses_after_a_password_change(
    auth: Authenticator, directory: Directory, verified: list[str]
) -> None:
    # pochta user passwd runs in another process and only writes the directory.
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    directory.update_account("alice@example.org", password_hash=hash_password("new-pw"))
    result = await auth.check_password(IP, "alice@example.org", "alice-pw")
    assert (result.ok, result.reason) == (False, "wrong password")
    assert (await auth.check_password(IP, "alice@example.org", "new-pw")).ok
    assert len(verified) == 3


async def test_cache_does_not_outlive_disable_or_remove(
    auth: Authenticator, directory: Directory
) -> None:
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    directory.update_account("alice@example.org", enabled=False)
    result = await auth.check_password(IP, "alice@example.org", "alice-pw")
    assert (result.ok, result.reason) == (False, "account disabled")
    directory.update_account("alice@example.org", enabled=True)
    assert (await auth.check_password(IP, "alice@example.org", "alice-pw")).ok
    directory.remove_account("alice@example.org")
    result = await auth.check_password(IP, "alice@example.org", "alice-pw")
    assert (result.ok, result.reason) == (False, "unknown user")


async def test_cached_failures_are_counted_and_tarpitted(
    auth: Authenticator, fake_time: FakeTime, verified: list[str]
) -> None:
    # The same wrong password ten times: one Argon2id check, and the tarpit exactly as when
    # each was computed (test_tarpit_after_threshold).
    with capture_logs() as logs:
        for _ in range(10):
            assert not (await auth.check_password(IP, "alice@example.org", "wrong")).ok
    assert len(verified) == 1
    assert fake_time.slept == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert len([e for e in logs if e["event"] == "auth_failed"]) == 10
    assert auth.tracker.failures(IP, "alice@example.org", fake_time.now) == 10


async def test_rehash_when_argon2id_parameters_change(
    auth: Authenticator, directory: Directory, verified: list[str]
) -> None:
    # What pochta wrote before: argon2-cffi's defaults, p=4 lanes. Still verifies, and the
    # login rewrites it with today's parameters.
    old = "{ARGON2ID}" + argon2.PasswordHasher(parallelism=4).hash("carol-pw")
    directory.add_account("carol@example.org", password_hash=old)
    assert (await auth.check_password(IP, "carol@example.org", "carol-pw")).ok
    after = directory.get_account("carol@example.org")
    assert after is not None
    assert after.password_hash != old
    assert "$m=65536,t=3,p=2$" in after.password_hash
    assert verify_password(after.password_hash, "carol-pw")
    # The rewritten hash is in the cache too: the next login does no Argon2id work.
    assert (await auth.check_password(IP, "carol@example.org", "carol-pw")).ok
    assert verified == [old]


# -- SASL glue --


async def _scram(auth: Authenticator, client: scramp.ScramClient, ip: str = IP) -> Step:
    mech = server_mechanism("SCRAM-SHA-256")
    step = await auth.resolve_step(ip, mech, mech.start(client.get_client_first().encode()))
    if not isinstance(step, Challenge):
        return step
    client.set_server_first(step.data.decode())
    step = await auth.resolve_step(ip, mech, mech.respond(client.get_client_final().encode()))
    if isinstance(step, Success):
        assert step.final_data is not None
        client.set_server_final(step.final_data.decode())
    return step


async def test_resolve_plain(auth: Authenticator) -> None:
    mech = server_mechanism("PLAIN")
    step = await auth.resolve_step(IP, mech, mech.start(b"\x00ALICE@example.org\x00alice-pw"))
    assert step == Success("alice@example.org", "", None)  # canonical address
    mech = server_mechanism("PLAIN")
    step = await auth.resolve_step(IP, mech, mech.start(b"\x00alice@example.org\x00nope"))
    assert step == Failure("invalid credentials")
    assert auth.tracker.failures(IP, "alice@example.org", 1000.0) == 1  # counted once


async def test_resolve_login(auth: Authenticator) -> None:
    mech = server_mechanism("LOGIN")
    step = await auth.resolve_step(IP, mech, mech.start(None))
    assert step == Challenge(b"Username:")
    step = await auth.resolve_step(IP, mech, mech.respond(b"alice@example.org"))
    assert step == Challenge(b"Password:")
    with capture_logs() as logs:
        step = await auth.resolve_step(IP, mech, mech.respond(b"bad-guess-123"))
    assert step == Failure("invalid credentials")
    assert [e["mechanism"] for e in logs if e["event"] == "auth_failed"] == ["LOGIN"]
    assert "bad-guess-123" not in repr(logs)


async def test_resolve_malformed_counts_against_ip(auth: Authenticator) -> None:
    mech = server_mechanism("PLAIN")
    with capture_logs() as logs:
        step = await auth.resolve_step(IP, mech, mech.start(b"garbage"))
    assert isinstance(step, Failure)
    assert auth.tracker.failures(IP, None, 1000.0) == 1
    assert [e["event"] for e in logs] == ["auth_failed"]
    # Resolving the same final step again does not count it twice.
    await auth.resolve_step(IP, mech, step)
    assert auth.tracker.failures(IP, None, 1000.0) == 1


async def test_resolve_scram_success(auth: Authenticator, directory: Directory) -> None:
    directory.update_account("alice@example.org", scram_sha256=make_scram_sha256("alice-pw"))
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice@example.org", "alice-pw")
    step = await _scram(auth, client)
    assert isinstance(step, Success)
    assert step.authcid == "alice@example.org"


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice@example.org", "wrong"),
        ("ghost@example.org", "whatever"),
        ("gone@example.org", "gone-pw"),  # disabled
        ("old@example.org", "S3cret!pw"),  # no SCRAM keys yet
    ],
)
async def test_resolve_scram_failures_come_at_the_end(
    auth: Authenticator, directory: Directory, username: str, password: str
) -> None:
    directory.update_account("alice@example.org", scram_sha256=make_scram_sha256("alice-pw"))
    directory.update_account("gone@example.org", scram_sha256=make_scram_sha256("gone-pw"))
    client = scramp.ScramClient(["SCRAM-SHA-256"], username, password)
    mech = server_mechanism("SCRAM-SHA-256")
    first = mech.start(client.get_client_first().encode())
    assert isinstance(first, NeedScramKeys)
    step = await auth.resolve_step(IP, mech, first)
    assert isinstance(step, Challenge)  # no hint yet whether the user exists
    client.set_server_first(step.data.decode())
    with capture_logs() as logs:
        step = await auth.resolve_step(IP, mech, mech.respond(client.get_client_final().encode()))
    assert step == Failure("invalid credentials")
    failed = [e for e in logs if e["event"] == "auth_failed"]
    assert len(failed) == 1
    assert failed[0]["mechanism"] == "SCRAM-SHA-256"
    assert failed[0]["user"] == username
    assert auth.tracker.failures(IP, username, 1000.0) == 1


async def test_scram_tarpit(auth: Authenticator, directory: Directory, fake_time: FakeTime) -> None:
    directory.update_account("alice@example.org", scram_sha256=make_scram_sha256("alice-pw"))
    for _ in range(5):
        client = scramp.ScramClient(["SCRAM-SHA-256"], "alice@example.org", "wrong")
        assert isinstance(await _scram(auth, client), Failure)
    assert fake_time.slept == [1.0]


# -- FailureTracker --


def test_tracker_threshold_and_growth() -> None:
    t = FailureTracker(window_seconds=60, threshold=3, max_delay=5.0)
    assert t.delay("10.0.0.1", "a@x.org", 0) == 0
    for i in range(2):
        t.record_failure("10.0.0.1", "a@x.org", i)
    assert t.delay("10.0.0.1", "a@x.org", 2) == 0
    t.record_failure("10.0.0.1", "a@x.org", 2)
    assert t.delay("10.0.0.1", "a@x.org", 2) == 1.0
    t.record_failure("10.0.0.1", "a@x.org", 3)
    assert t.delay("10.0.0.1", None, 3) == 2.0
    for i in range(10):
        t.record_failure("10.0.0.1", "a@x.org", 4 + i)
    assert t.delay("10.0.0.1", "a@x.org", 14) == 5.0
    # By account from elsewhere, by address for another account.
    assert t.delay("10.9.9.9", "a@x.org", 14) == 5.0
    assert t.delay("10.0.0.1", "b@x.org", 14) == 5.0
    assert t.delay("10.9.9.9", "b@x.org", 14) == 0


def test_tracker_success_clears_account_not_ip() -> None:
    t = FailureTracker(threshold=2)
    for i in range(3):
        t.record_failure("10.0.0.1", "a@x.org", i)
    t.record_success("10.0.0.1", "a@x.org", 3)
    assert t.delay("10.9.9.9", "a@x.org", 3) == 0
    assert t.delay("10.0.0.1", "a@x.org", 3) > 0


def test_tracker_window() -> None:
    t = FailureTracker(window_seconds=10, threshold=2)
    t.record_failure("10.0.0.1", None, 0)
    t.record_failure("10.0.0.1", None, 5)
    assert t.delay("10.0.0.1", None, 9) == 1.0
    assert t.delay("10.0.0.1", None, 11) == 0  # the first one left the window
    t.record_failure("10.0.0.2", None, 100)  # purges the expired address
    assert t.entries() == 1


def test_tracker_ipv6_per_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2::ffff") == client_key("2001:db8:1:2:aaaa::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("unix") == "unix"
    t = FailureTracker(threshold=2)
    t.record_failure("2001:db8:1:2::1", None, 0)
    t.record_failure("2001:db8:1:2::2", None, 0)
    assert t.delay("2001:db8:1:2:ffff::9", None, 0) == 1.0
    assert t.delay("2001:db8:1:3::1", None, 0) == 0


def test_tracker_memory_is_bounded() -> None:
    t = FailureTracker(window_seconds=3600, threshold=2, max_entries=100)
    for i in range(10_000):
        t.record_failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"u{i}@x.org", i * 0.001)
    assert t.entries() == 200
    # The newest are kept, the oldest evicted.
    t.record_failure("10.0.39.15", None, 11)
    assert t.failures("10.0.39.15", None, 11) == 2  # 9999 = 10.0.39.15
    assert t.failures("10.0.0.0", None, 11) == 0


def test_tracker_bad_settings() -> None:
    with pytest.raises(ValueError, match="threshold"):
        FailureTracker(threshold=0)
