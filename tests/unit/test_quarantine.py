"""The quarantine store (spam/quarantine.py) and the door's quarantine action
(cleanup/door.py): a message whose verdict says ``quarantine`` is written there, durably,
instead of the queue; its envelope, score and symbols are kept; unknown ids get clear errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pochta.cleanup.door import Door
from pochta.cleanup.verdict import Symbol, Verdict
from pochta.queue.envelope import Envelope, Recipient, new_queue_id
from pochta.queue.spool import Spool
from pochta.resolve.classes import MailboxDest, Resolution
from pochta.spam.quarantine import (
    MAGIC,
    QuarantineError,
    QuarantineStore,
    UnknownQuarantineId,
    entry_of,
)

CONTENT = (
    b"X-Spam-Score: 1000.00\r\nFrom: <spammer@client.test>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nbuy now\r\n"
)
GTUBE = Symbol(name="GTUBE", score=1000.0, description="GTUBE test string in the body")


def envelope(queue_id: str | None = None, action: str = "quarantine") -> Envelope:
    verdict = Verdict(symbols=(GTUBE,)).with_action(action, "spam score 1000.00")  # type: ignore[arg-type]
    return Envelope(
        queue_id=queue_id or new_queue_id(),
        sender="spammer@client.test",
        recipients=[
            Recipient(address="bob@example.test", notify=("FAILURE",)),
            Recipient(address="carol@example.test", notify=("FAILURE",)),
        ],
        arrival=0.0,
        size=len(CONTENT),
        envid="E1",
        client_ip="192.0.2.7",
        client_helo="client.test",
        verdict=verdict,
    )


async def test_keep_writes_message_and_entry(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "quarantine")
    env = envelope()
    path = await store.keep(env, CONTENT)
    assert path == tmp_path / "quarantine" / env.queue_id
    assert path.read_bytes().startswith(MAGIC)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    entry, content = store.read(env.queue_id)
    assert content == CONTENT
    assert entry.sender == "spammer@client.test"
    assert entry.recipients == ["bob@example.test", "carol@example.test"]
    assert entry.score == 1000.0
    assert [s.name for s in entry.symbols] == ["GTUBE"]
    assert entry.subject == "Grüße"
    assert (entry.client_ip, entry.envid, entry.notify) == ("192.0.2.7", "E1", ["FAILURE"])
    assert store.entry(env.queue_id) == entry
    assert [e.queue_id for e in store.entries()] == [env.queue_id]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file


async def test_entries_oldest_first_and_remove(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    assert store.entries() == []  # no directory yet: nothing held
    first, second = envelope(), envelope()
    store.hold(entry_of(second, CONTENT, now=200.0), CONTENT)
    store.hold(entry_of(first, CONTENT, now=100.0), CONTENT)
    assert [e.queue_id for e in store.entries()] == [first.queue_id, second.queue_id]
    store.remove(first.queue_id)
    assert [e.queue_id for e in store.entries()] == [second.queue_id]


def test_unknown_and_malformed_ids_say_what_to_do(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    missing = new_queue_id()
    for call in (store.entry, store.read, store.remove):
        with pytest.raises(UnknownQuarantineId) as err:
            call(missing)
        assert str(err.value) == (
            f"no quarantined message {missing} in {tmp_path / 'q'} (see: pochta quarantine list)"
        )
    with pytest.raises(UnknownQuarantineId, match="is not a quarantine id"):
        store.read("../../etc/passwd")


def test_a_damaged_file_is_reported_and_left_out_of_the_list(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    good = envelope()
    store.hold(entry_of(good, CONTENT, now=1.0), CONTENT)
    bad = new_queue_id()
    (tmp_path / "q" / bad).write_bytes(b"something else\n")
    with pytest.raises(QuarantineError, match="not a version 1 quarantine file"):
        store.read(bad)
    cut = envelope()
    path = store.hold(entry_of(cut, CONTENT, now=2.0), CONTENT)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(QuarantineError, match="the message is 98 octets, the entry says 101"):
        store.read(cut.queue_id)
    # the list reads only the entry line: the cut one is listed, the foreign file is not
    assert [e.queue_id for e in store.entries()] == [good.queue_id, cut.queue_id]


class OneMailbox:
    def resolve(self, address: str) -> Resolution:
        return Resolution(address, (MailboxDest(account=address),))


def door(tmp_path: Path, store: QuarantineStore | None) -> tuple[Door, Spool]:
    spool = Spool(tmp_path / "spool")
    made = Door(
        spool,
        cleanup=lambda: None,  # type: ignore[arg-type, return-value]
        resolver=lambda: OneMailbox(),
        quarantine=lambda: store,
    )
    return made, spool


async def test_the_door_quarantines_instead_of_queueing(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "quarantine")
    made, spool = door(tmp_path, store)
    env = envelope()
    assert await made.submit(env, CONTENT) == env.queue_id
    assert [e.queue_id for e in store.entries()] == [env.queue_id]
    assert await spool.list() == []  # nothing in the queue
    other = envelope(action="accept")
    await made.submit(other, CONTENT)
    assert [e.queue_id for e in await spool.list()] == [other.queue_id]
    assert len(store.entries()) == 1


async def test_the_door_without_a_quarantine_queues_it(tmp_path: Path) -> None:
    made, spool = door(tmp_path, None)
    env = envelope()
    await made.submit(env, CONTENT)
    assert [e.queue_id for e in await spool.list()] == [env.queue_id]
