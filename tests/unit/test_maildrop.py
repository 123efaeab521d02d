"""The maildrop file format (receive/maildrop.py): round trip, limits, and that any bytes give
either a Drop or MaildropError; the pickup checks that refuse a file; the directory modes."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.protocols.smtp.replies import Reply
from pochta.queue.envelope import Envelope
from pochta.receive.maildrop import (
    MAGIC,
    MAILDROP_MODE,
    Drop,
    MaildropError,
    address_problem,
    decode,
    encode,
    ensure_maildrop,
    write_drop,
)
from pochta.receive.pickup import Pickup, _check
from tests.factories import make_settings

addresses = st.from_regex(r"[a-z0-9.+_-]{1,20}@[a-z0-9-]{1,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
drops = st.builds(
    lambda sender, recipients, notify, ret, envid, body, uid, content: (
        Drop(
            sender=sender,
            recipients=recipients,
            notify=notify,
            ret=ret,
            envid=envid,
            body=body,
            uid=uid,
            size=len(content),
        ),
        content,
    ),
    st.one_of(st.just(""), addresses),
    st.lists(addresses, min_size=1, max_size=5),
    st.sampled_from([[], ["NEVER"], ["SUCCESS", "FAILURE"], ["DELAY"]]),
    st.sampled_from(["", "FULL", "HDRS"]),
    st.text(max_size=40),
    st.sampled_from(["", "7BIT", "8BITMIME"]),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.binary(max_size=2000),
)


@given(drops)
def test_round_trip(pair: tuple[Drop, bytes]) -> None:
    drop, content = pair
    assert decode(encode(drop, content)) == (drop, content)


@given(st.binary(max_size=300))
@example(MAGIC + b'{"sender":"","recipients":[],"uid":0,"size":1}\n')
@example(MAGIC + b'{"sender":"","recipients":[],"uid":0,"size":0,"evil":1}\n')
@example(MAGIC + b"[]\n")
@example(MAGIC)
def test_any_bytes_give_a_drop_or_maildrop_error(data: bytes) -> None:
    try:
        drop, content = decode(data)
    except MaildropError:
        return
    assert drop.size == len(content)


@given(drops)
def test_any_cut_of_a_good_file_is_refused(pair: tuple[Drop, bytes]) -> None:
    data = encode(*pair)
    with pytest.raises(MaildropError):
        decode(data[:-1])


def test_refusals_say_what_is_wrong() -> None:
    drop = Drop(sender="", recipients=["b@example.org"], uid=1, size=5)
    with pytest.raises(MaildropError, match="not a version 1 maildrop file"):
        decode(b"POCHTA-MAILDROP 2\n{}\n")
    with pytest.raises(MaildropError, match=r"more than smtp\.max_message_bytes"):
        decode(encode(drop, b"hello"), max_message_bytes=4)
    with pytest.raises(MaildropError, match="the envelope says 5"):
        decode(encode(drop, b"hello") + b"!")
    assert decode(encode(drop, b"hello"), max_message_bytes=5) == (drop, b"hello")


def test_pickup_checks() -> None:
    ok = Drop(sender="a@example.org", recipients=["b@example.org"], uid=1000, size=0)
    _check(ok, owner=1000, server_uid=999, max_recipients=10)
    _check(ok, owner=0, server_uid=999, max_recipients=10)  # root may write for anyone
    with pytest.raises(MaildropError, match="written by uid 1001 but claims uid 1000"):
        _check(ok, owner=1001, server_uid=999, max_recipients=10)
    many = Drop(sender="", recipients=[f"r{i}@example.org" for i in range(11)], uid=0, size=0)
    with pytest.raises(MaildropError, match=r"more than smtp\.max_recipients"):
        _check(many, owner=0, server_uid=999, max_recipients=10)
    bad = Drop(sender="", recipients=["no at sign"], uid=0, size=0)
    with pytest.raises(MaildropError, match="bad address"):
        _check(bad, owner=0, server_uid=999, max_recipients=10)
    assert address_problem("a@b") == ""
    assert address_problem("@b") != ""
    assert address_problem("a" * 250 + "@b.cd") != ""


def test_directories_and_a_durable_write(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        maildrop = ensure_maildrop(tmp_path / "queue")
    finally:
        os.umask(old)
    assert stat.S_IMODE(maildrop.stat().st_mode) == MAILDROP_MODE
    assert stat.S_IMODE((tmp_path / "queue").stat().st_mode) & 0o011 == 0o011
    assert stat.S_IMODE((tmp_path / "queue" / "maildrop-corrupt").stat().st_mode) == 0o700
    drop = Drop(sender="", recipients=["b@example.org"], uid=os.getuid(), size=2)
    path = write_drop(maildrop, encode(drop, b"hi"))
    assert [p.name for p in maildrop.iterdir()] == [path.name]  # no .tmp left
    assert decode(path.read_bytes()) == (drop, b"hi")


# -- the pickup stage with a stand-in door ------------------------------------------------------


class FakeDoor:
    """Cleanup answers as told per sender; submit records what would be queued."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies
        self.cleaned: list[CleanupInput] = []
        self.queued: list[tuple[Envelope, bytes]] = []
        self.fail_submit_for: set[str] = set()

    def new_queue_id(self) -> str:
        return f"Q{len(self.cleaned)}"

    async def clean(self, content: bytes, info: CleanupInput) -> CleanupResult:
        self.cleaned.append(info)
        reply = self.replies.get(info.sender)
        result = CleanupResult(b"Received: x\r\n" + content, info.sender, list(info.recipients))
        return dataclasses.replace(result, problems=[reply]) if reply else result

    async def submit(self, envelope: Envelope, content: bytes) -> str:
        if envelope.sender in self.fail_submit_for:
            raise OSError(28, "No space left on device")
        self.queued.append((envelope, content))
        return envelope.queue_id


def drop_file(maildrop: Path, sender: str, name: str) -> None:
    content = b"Subject: s\r\n\r\nbody\r\n"
    drop = Drop(sender=sender, recipients=["b@example.org"], uid=os.getuid(), size=len(content))
    (maildrop / name).write_bytes(encode(drop, content))
    os.utime(maildrop / name, ns=(int(name[-1]) * 10**9, int(name[-1]) * 10**9))  # oldest first


async def test_pickup_queues_bounces_defers_and_goes_on(tmp_path: Path) -> None:
    settings = make_settings(
        {"server.hostname": "mail.example.org", "server.data_dir": str(tmp_path)}
    )
    door = FakeDoor(
        {
            "refused@example.org": Reply(550, "5.6.0", "Message header too large"),
            "later@example.org": Reply(451, "4.3.0", "Cannot DKIM-sign the message now"),
            "": Reply(550, "5.6.0", "no"),  # from <>: logged and removed, never bounced
        }
    )
    door.fail_submit_for.add("full@example.org")
    now = [0.0]
    pickup = Pickup(
        settings,
        lambda: door,  # type: ignore[arg-type, return-value]
        retry_seconds=60,
        clock=lambda: now[0],
    )
    maildrop = ensure_maildrop(settings.spool_dir)
    drop_file(maildrop, "full@example.org", "f1")
    drop_file(maildrop, "refused@example.org", "f2")
    drop_file(maildrop, "later@example.org", "f3")
    drop_file(maildrop, "good@example.org", "f4")
    (maildrop / "f5").write_bytes(b"junk")
    drop_file(maildrop, "", "f6")
    assert await pickup.scan() == 2  # the bounce and the good one
    left = sorted(p.name for p in maildrop.iterdir())
    assert left == ["f1", "f3"]  # the disk-full one and the 4xx one wait
    assert [p.name for p in (settings.spool_dir / "maildrop-corrupt").iterdir()] == ["f5"]
    bounced, good = door.queued
    assert [(r.status, r.reply) for r in bounced[0].recipients] == [
        ("bounced", "550 5.6.0 Message header too large")
    ]
    assert bounced[1] == b"Subject: s\r\n\r\nbody\r\n"  # the message as written, to return
    assert not good[0].recipients[0].is_final
    assert good[1].startswith(b"Received: x\r\n")
    info = door.cleaned[-1]
    assert (info.protocol, info.submission, info.local_uid) == ("local", True, os.getuid())
    assert await pickup.scan() == 0  # nothing is retried before retry_seconds
    assert len(door.cleaned) == 5
    now[0] = 61.0
    door.fail_submit_for.clear()
    door.replies.pop("later@example.org")
    assert await pickup.scan() == 2
    assert list(maildrop.iterdir()) == []


async def test_pickup_sweeps_only_stale_partial_files(tmp_path: Path) -> None:
    """A ``.tmp`` left by a sendmail that died mid-write goes after an hour; one being
    written now stays (the wall clock is injected)."""
    settings = make_settings(
        {"server.hostname": "mail.example.org", "server.data_dir": str(tmp_path)}
    )
    maildrop = ensure_maildrop(settings.spool_dir)
    now = 1_800_000_000.0
    pickup = Pickup(settings, lambda: FakeDoor({}), wall_clock=lambda: now)  # type: ignore[arg-type, return-value]
    for name, age in (("old.tmp", 3601.0), ("fresh.tmp", 5.0)):
        (maildrop / name).write_bytes(b"partial")
        os.utime(maildrop / name, (now - age, now - age))
    assert await pickup.scan() == 0
    assert sorted(p.name for p in maildrop.iterdir()) == ["fresh.tmp"]
