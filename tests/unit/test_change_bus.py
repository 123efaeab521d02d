"""The change bus (pochta.runtime.ChangeBus): ChangeHub wakes the IDLE sessions of this
process and hands each change to a relay, which carries it to the other processes; theirs
come back through ``wake_remote``. The relay is a seam: the master-worker socket link today
(its wire format checked here), another (PostgreSQL LISTEN/NOTIFY) tomorrow."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from pochta.access.change_hub import ChangeHub
from pochta.runtime import ANY_FOLDER, ChangeBus, ChangeRelay
from pochta.server.workers import MasterLink, WorkerPool, change_message, parse_message
from pochta.store import CHANGE_ORIGIN, INBOX, FlagMode, MailStore, open_store
from tests.factories import make_settings

ALICE = "Alice@example.org"


class RecordingRelay:
    """A stand-in for any relay (the socket link, a LISTEN/NOTIFY one)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_change(self, address: str, folder: str) -> None:
        self.sent.append((address, folder))


def _store(tmp_path: Path) -> MailStore:
    settings = make_settings(
        {"server.hostname": "mail.example.org", "server.data_dir": str(tmp_path)}
    )
    return open_store(settings)


async def _woken(event: asyncio.Event) -> bool:
    await asyncio.sleep(0)  # publish hands the wake-up to the loop (call_soon_threadsafe)
    await asyncio.sleep(0)
    return event.is_set()


async def test_a_store_change_wakes_watchers_here_and_goes_to_the_relay(tmp_path: Path) -> None:
    store = _store(tmp_path)
    relay = RecordingRelay()
    bus: ChangeBus = ChangeHub(store, asyncio.get_running_loop(), relay)
    inbox, _ = bus.watch("alice@example.org", INBOX)
    anywhere, _ = bus.watch("alice@example.org", ANY_FOLDER)
    other, _ = bus.watch("bob@example.org", INBOX)
    await asyncio.to_thread(store.deliver, "alice@example.org", b"Subject: x\r\n\r\nx\r\n")
    assert await _woken(inbox)
    assert anywhere.is_set()
    assert not other.is_set()
    assert ("alice@example.org", INBOX) in relay.sent
    store.close()


async def test_a_watchers_own_flag_changes_and_expunges_do_not_wake_it(tmp_path: Path) -> None:
    """The store names who made a change (CHANGE_ORIGIN, carried into its thread by
    to_thread); the watch of that owner is not woken by its own STORE or EXPUNGE, which the
    session reports itself, but is by an arrival, and every other watcher is woken."""
    store = _store(tmp_path)
    store.deliver(ALICE, b"Subject: x\r\n\r\nx\r\n")
    hub = ChangeHub(store, asyncio.get_running_loop())
    me, other = object(), object()
    mine, _ = hub.watch(ALICE, INBOX, owner=me)
    theirs, _ = hub.watch(ALICE, INBOX, owner=other)
    nobodys, _ = hub.watch(ALICE, INBOX)

    async def as_owner(owner: object, func: Any, *args: Any) -> None:
        token = CHANGE_ORIGIN.set(owner)
        try:
            await asyncio.to_thread(func, *args)
        finally:
            CHANGE_ORIGIN.reset(token)

    for change in (
        (store.store_flags, ALICE, INBOX, [1], FlagMode.ADD, frozenset({"\\Deleted"})),
        (store.expunge, ALICE, INBOX),
    ):
        for event in (mine, theirs, nobodys):
            event.clear()
        await as_owner(me, *change)
        assert await _woken(theirs)
        assert nobodys.is_set()
        assert not mine.is_set()
    theirs.clear()
    await as_owner(me, store.deliver, ALICE, b"Subject: y\r\n\r\ny\r\n")
    assert await _woken(mine)  # an arrival: the session learns of it from the store
    assert theirs.is_set()
    hub.close()
    store.close()


async def test_publish_and_wake_remote(tmp_path: Path) -> None:
    store = _store(tmp_path)
    relay = RecordingRelay()
    hub = ChangeHub(store, asyncio.get_running_loop())
    hub.relay_to(relay)
    event, stop = hub.watch("alice@example.org", "Sent")
    hub.publish(ALICE, "Sent")
    assert await _woken(event)
    assert relay.sent == [(ALICE, "Sent")]
    # From another process: not relayed again (the master forwards to the other workers).
    event.clear()
    hub.wake_remote(ALICE, "Sent")
    assert event.is_set()
    event.clear()
    hub.wake_remote(None, None)  # anything may have changed
    assert event.is_set()
    assert relay.sent == [(ALICE, "Sent")]
    stop()
    event.clear()
    hub.wake_remote(ALICE, "Sent")
    assert not event.is_set()
    hub.close()
    hub.publish(ALICE, "Sent")  # closed: no relay any more
    assert relay.sent == [(ALICE, "Sent")]
    store.close()


def test_the_socket_links_are_relays_with_the_same_wire_format() -> None:
    """A worker's MasterLink and the master's WorkerPool are the hub's relays; the message
    on the wire is ``C`` address NUL folder, as before."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = MasterLink(ours.detach())
    relay: ChangeRelay = link
    relay.send_change(ALICE, "INBOX")
    data = theirs.recv(4096)
    assert data == change_message(ALICE, "INBOX") == b"Calice@example.org\x00INBOX"
    assert parse_message(data) == ("alice@example.org", "INBOX")
    link.close()
    theirs.close()
    pool: ChangeRelay = WorkerPool([], [], 0)
    pool.send_change(ALICE, "INBOX")  # no workers: nothing to tell, no error


async def test_a_folder_feed_follows_an_account_merged_and_bounded(tmp_path: Path) -> None:
    # NOTIFY (RFC 5465) follows a whole account: which folders changed, each once.
    store = _store(tmp_path)
    hub = ChangeHub(store, asyncio.get_running_loop())
    feed = hub.follow("alice@example.org", limit=2)
    other = hub.follow("bob@example.org", limit=2)
    await asyncio.to_thread(store.deliver, "alice@example.org", b"Subject: x\r\n\r\nx\r\n")
    await asyncio.to_thread(store.deliver, "alice@example.org", b"Subject: y\r\n\r\ny\r\n")
    assert await _woken(feed.ready)
    assert not other.ready.is_set()
    assert feed.take() == {INBOX}  # two deliveries, one folder
    assert not feed.ready.is_set()
    assert feed.take() == frozenset()
    # The bound: a third different folder waiting and the feed overflows (RFC 5465 §5.8).
    for folder in ("A", "B"):
        hub.wake_remote(ALICE, folder)
    assert not feed.overflowed
    hub.wake_remote(ALICE, "A")  # the same folder again costs nothing
    assert not feed.overflowed
    hub.wake_remote(ALICE, "C")
    assert feed.overflowed
    feed.take()
    assert not feed.overflowed  # taking starts afresh
    # Another process's change that names nothing: any folder may have changed.
    hub.wake_remote(None, None)
    assert feed.take() is None
    feed.close()
    hub.wake_remote(ALICE, "A")
    assert not feed.ready.is_set()  # closed: no longer followed
    other.close()
    hub.close()
    store.close()
