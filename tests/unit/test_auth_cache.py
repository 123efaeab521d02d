"""The verified-credential cache (directory/auth_cache.py), on an injected clock."""

from __future__ import annotations

import pytest

from pochta.directory.auth_cache import CredentialCache

STORED = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA"


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, size: int = 10, ttl: float = 3600, negative: float = 60) -> CredentialCache:
    return CredentialCache(size=size, ttl_seconds=ttl, negative_ttl_seconds=negative, clock=clock)


def test_positive_entry_lives_its_ttl() -> None:
    clock = Clock()
    cache = make(clock)
    assert cache.lookup("a@example.org", STORED, "pw") is None
    cache.remember("a@example.org", STORED, "pw", True)
    clock.now += 3599
    assert cache.lookup("a@example.org", STORED, "pw") is True
    clock.now += 1
    assert cache.lookup("a@example.org", STORED, "pw") is None
    assert len(cache) == 0  # the expired entry went


def test_negative_entry_lives_the_negative_ttl_and_answers_only_that_password() -> None:
    clock = Clock()
    cache = make(clock)
    cache.remember("a@example.org", STORED, "wrong", False)
    assert cache.lookup("a@example.org", STORED, "wrong") is False
    assert cache.lookup("a@example.org", STORED, "right") is None  # never locks out
    clock.now += 60
    assert cache.lookup("a@example.org", STORED, "wrong") is None


def test_negative_ttl_zero_keeps_no_failures() -> None:
    cache = make(Clock(), negative=0)
    cache.remember("a@example.org", STORED, "wrong", False)
    assert cache.lookup("a@example.org", STORED, "wrong") is None
    assert len(cache) == 0


def test_changed_hash_misses() -> None:
    # pochta user passwd (another process) writes a new hash: the old entry must not answer.
    cache = make(Clock())
    cache.remember("a@example.org", STORED, "old-pw", True)
    new_stored = STORED.replace("aGFzaA", "bmV3aA")
    assert cache.lookup("a@example.org", new_stored, "old-pw") is None
    assert cache.lookup("b@example.org", STORED, "old-pw") is None  # nor another account


def test_lru_bound() -> None:
    cache = make(Clock(), size=3)
    for name in ("a", "b", "c"):
        cache.remember(f"{name}@example.org", STORED, "pw", True)
    assert cache.lookup("a@example.org", STORED, "pw") is True  # a is now the most recent
    cache.remember("d@example.org", STORED, "pw", True)
    assert len(cache) == 3
    assert cache.lookup("b@example.org", STORED, "pw") is None  # the least recently used
    for name in ("a", "c", "d"):
        assert cache.lookup(f"{name}@example.org", STORED, "pw") is True


def test_size_zero_is_off() -> None:
    cache = make(Clock(), size=0)
    cache.remember("a@example.org", STORED, "pw", True)
    assert cache.lookup("a@example.org", STORED, "pw") is None
    assert len(cache) == 0


def test_clear() -> None:
    cache = make(Clock())
    cache.remember("a@example.org", STORED, "pw", True)
    cache.clear()
    assert cache.lookup("a@example.org", STORED, "pw") is None


def test_holds_no_password_or_stored_hash() -> None:
    cache = make(Clock())
    cache.remember("a@example.org", STORED, "s3cret-horse", True)
    held = repr(vars(cache)) if hasattr(cache, "__dict__") else ""
    held += repr(list(cache._entries.items()))
    assert "s3cret-horse" not in held
    assert "aGFzaA" not in held
    # The key is per cache (per process): another cache cannot match this one's entries.
    other = make(Clock())
    assert cache._entries.keys().isdisjoint(
        other._entry_key("a@example.org", STORED, "s3cret-horse") for _ in (0,)
    )


def test_length_prefix_separates_fields() -> None:
    cache = make(Clock())
    cache.remember("a@example.org", "ab", "c", True)
    assert cache.lookup("a@example.org", "a", "bc") is None


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="ttl_seconds > 0"):
        CredentialCache(size=1, ttl_seconds=0, negative_ttl_seconds=0)
