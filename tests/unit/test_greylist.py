"""Greylisting (spam/greylist.py): the triplet state machine on an injected clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pochta.config.settings import GreylistSettings
from pochta.receive.policy import PolicyRequest
from pochta.spam.greylist import (
    CLEANUP_EVERY,
    GREYLISTED,
    Greylist,
    GreylistPolicy,
    client_network,
    reduce_sender,
)
from pochta.spam.store import connect_spam_db

DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, **fields: object) -> Greylist:
    settings = GreylistSettings(**fields)  # type: ignore[arg-type]
    return Greylist(settings, tmp_path / "spam.db", clock=clock)


def admit(g: Greylist, ip: str, sender: str, *rcpts: str) -> bool:
    return asyncio.run(g.admit(ip, sender, list(rcpts or ["bob@example.test"])))


def test_new_triplet_refused_then_too_early_then_passes(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, delay_seconds=300)
    assert admit(g, "198.51.100.7", "alice@example.org") is False  # new
    clock.now += 299
    assert admit(g, "198.51.100.7", "alice@example.org") is False  # too early
    clock.now += 1
    assert admit(g, "198.51.100.7", "alice@example.org") is True  # retried after the delay
    clock.now += 1
    assert admit(g, "198.51.100.7", "alice@example.org") is True  # remembered


def test_too_early_retry_keeps_first_seen(tmp_path: Path) -> None:
    """A client retrying every minute still passes 5 minutes after its first try."""
    clock = Clock()
    g = make(tmp_path, clock, delay_seconds=300)
    assert not admit(g, "198.51.100.7", "a@example.org")
    for _ in range(4):
        clock.now += 60
        assert not admit(g, "198.51.100.7", "a@example.org")
    clock.now += 60
    assert admit(g, "198.51.100.7", "a@example.org")


def test_retry_after_window_is_a_new_first_attempt(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, delay_seconds=300, retry_window_hours=48)
    assert not admit(g, "198.51.100.7", "a@example.org")
    clock.now += 48 * 3600 + 1
    assert not admit(g, "198.51.100.7", "a@example.org")  # window over: recorded afresh
    clock.now += 299
    assert not admit(g, "198.51.100.7", "a@example.org")
    clock.now += 1
    assert admit(g, "198.51.100.7", "a@example.org")


def test_passed_triplet_forgotten_after_keep_days(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, delay_seconds=300, keep_days=35, auto_allow_after=0)
    admit(g, "198.51.100.7", "a@example.org")
    clock.now += 300
    assert admit(g, "198.51.100.7", "a@example.org")
    clock.now += 30 * DAY
    assert admit(g, "198.51.100.7", "a@example.org")  # renews last_seen
    clock.now += 35 * DAY
    assert admit(g, "198.51.100.7", "a@example.org")  # 35 days after the last one: still
    clock.now += 35 * DAY + 1
    assert not admit(g, "198.51.100.7", "a@example.org")  # forgotten: greylisted afresh


def test_network_grouping_ipv4_24_ipv6_64(tmp_path: Path) -> None:
    assert client_network("198.51.100.7") == "198.51.100.0/24"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.0/24"
    assert client_network("2001:db8:1:2:aa::1") == "2001:db8:1:2::/64"
    clock = Clock()
    g = make(tmp_path, clock, delay_seconds=300)
    assert not admit(g, "198.51.100.7", "a@example.org")
    assert not admit(g, "2001:db8:1:2::5", "a@example.org")
    clock.now += 300
    # The retry comes from another host of the same farm.
    assert admit(g, "198.51.100.200", "a@example.org")
    assert admit(g, "2001:db8:1:2:ffff::9", "a@example.org")
    assert not admit(g, "198.51.101.7", "a@example.org")  # another /24: new
    assert not admit(g, "2001:db8:1:3::5", "a@example.org")  # another /64: new


@pytest.mark.parametrize(
    ("sender", "reduced"),
    [
        ("Alice@Example.ORG", "alice@example.org"),
        ("alice+news@example.org", "alice@example.org"),
        ("bounce-123-456@lists.example.org", "bounce-#-#@lists.example.org"),
        ("prvs=1234abcd=alice@example.org", "alice@example.org"),
        ("msprvs1=17abc=alice@example.org", "alice@example.org"),
        ("btv1==1234abcd==alice@example.org", "alice@example.org"),
        ("SRS0=HHH=TT=example.org=alice@forwarder.example", "alice@example.org"),
        ("SRS1=HHH=fwd.example==HHH=TT=example.org=alice@second.example", "alice@example.org"),
        ("", ""),
    ],
)
def test_sender_reduction(sender: str, reduced: str) -> None:
    assert reduce_sender(sender) == reduced


def test_reduced_senders_share_one_triplet(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock)
    assert not admit(g, "198.51.100.7", "prvs=0001aaaa=alice+x@example.org")
    clock.now += 300
    assert admit(g, "198.51.100.7", "prvs=0002bbbb=alice+y@example.org")


def test_every_recipient_is_a_triplet(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock)
    assert not admit(g, "198.51.100.7", "a@example.org", "bob@example.test")
    clock.now += 300
    assert admit(g, "198.51.100.7", "a@example.org", "bob@example.test")
    # bob's triplet passed; carol's is new, so the message waits.
    assert not admit(g, "198.51.100.7", "a@example.org", "bob@example.test", "carol@example.test")
    clock.now += 300
    assert admit(g, "198.51.100.7", "a@example.org", "bob@example.test", "carol@example.test")


def _pass_once(g: Greylist, clock: Clock, ip: str, sender: str) -> None:
    assert not admit(g, ip, sender)
    clock.now += 300
    assert admit(g, ip, sender)
    clock.now += 3600  # passes count at most once an hour


def test_auto_allow_after_passes(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, auto_allow_after=3)
    for n in range(3):
        # Not yet allowed: a new triplet from the network is refused.
        assert not admit(g, "198.51.100.99", "someone@else.example", f"probe{n}@example.test")
        _pass_once(g, clock, "198.51.100.7", f"s{chr(97 + n)}@example.org")
    # The network passed 3 times: a brand-new triplet from it passes at once.
    assert admit(g, "198.51.100.99", "someone@else.example", "other@example.test")
    assert not admit(g, "198.51.101.1", "someone@else.example", "other@example.test")


def test_auto_allow_counts_once_an_hour(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, auto_allow_after=2)
    admit(g, "198.51.100.7", "a@example.org")
    clock.now += 300
    for _ in range(5):  # five messages within the hour: one pass counted
        assert admit(g, "198.51.100.7", "a@example.org")
    assert not admit(g, "198.51.100.7", "new@example.org")


def test_auto_allow_zero_is_off(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, auto_allow_after=0)
    for n in range(3):
        _pass_once(g, clock, "198.51.100.7", f"s{chr(97 + n)}@example.org")
    assert not admit(g, "198.51.100.7", "new@example.org")


def test_allow_networks_and_sender_domains(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, allow=["192.0.2.0/24", "2001:db8::/32", "example.net"])
    assert admit(g, "192.0.2.9", "x@spam.example")
    assert admit(g, "2001:db8:ff::1", "x@spam.example")
    assert admit(g, "198.51.100.7", "x@example.net")
    assert admit(g, "198.51.100.7", "x@mail.example.net")
    assert not admit(g, "198.51.100.7", "x@notexample.net")


def test_state_is_shared_through_the_database(tmp_path: Path) -> None:
    """Another process (another Greylist on the same spam.db) sees the first attempt."""
    clock = Clock()
    assert not admit(make(tmp_path, clock), "198.51.100.7", "a@example.org")
    clock.now += 300
    assert admit(make(tmp_path, clock), "198.51.100.7", "a@example.org")


def test_old_rows_expire(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, retry_window_hours=1, keep_days=1)
    admit(g, "198.51.100.7", "never-retries@example.org")
    admit(g, "198.51.100.8", "a@example.org")
    clock.now += 300
    admit(g, "198.51.100.8", "a@example.org")  # passed
    clock.now += 3601
    assert g.expire() == 1  # the unretried one, past its window
    clock.now += DAY
    assert g.expire() == 1  # the passed one, past keep_days
    conn = connect_spam_db(tmp_path / "spam.db")
    assert conn.execute("SELECT count(*) FROM greylist").fetchone()[0] == 0


def test_cleanup_runs_every_n_writes(tmp_path: Path) -> None:
    clock = Clock()
    g = make(tmp_path, clock, retry_window_hours=1)
    admit(g, "198.51.100.7", "old@example.org")
    clock.now += 7200
    for n in range(CLEANUP_EVERY):
        g.admit_sync("198.51.100.8", "s@example.org", [f"r{n}@example.test"])
    conn = connect_spam_db(tmp_path / "spam.db")
    rows = conn.execute("SELECT sender FROM greylist WHERE sender = 'old@example.org'").fetchall()
    assert rows == []


def _request(**fields: object) -> PolicyRequest:
    base: dict[str, object] = {
        "stage": "rcpt",
        "listener": "smtp",
        "client_ip": "198.51.100.7",
        "client_hostname": "",
        "helo": "mx.example.org",
        "auth_user": "",
        "sender": "a@example.org",
        "recipient": "bob@example.test",
    }
    base.update(fields)
    return PolicyRequest(**base)  # type: ignore[arg-type]


def test_policy_mode_always(tmp_path: Path) -> None:
    clock = Clock()
    policy = GreylistPolicy(make(tmp_path, clock, mode="always"))
    assert asyncio.run(policy(_request())) == GREYLISTED
    assert str(GREYLISTED).startswith("451 4.7.1")
    assert asyncio.run(policy(_request(auth_user="bob@example.test"))) is None
    assert asyncio.run(policy(_request(listener="submission"))) is None
    assert asyncio.run(policy(_request(stage="mail", recipient=""))) is None
    clock.now += 300
    assert asyncio.run(policy(_request())) is None
