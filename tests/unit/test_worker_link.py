"""The master-worker link (server/workers.py ``Link``): when the send buffer is full, store
changes collapse into one WAKE_ALL, and every counting message still arrives, in order."""

from __future__ import annotations

import asyncio
import os
import socket

from pochta.server.workers import READY, WAKE_ALL, Link, MasterLink, WorkerPool, change_message


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65536))
        except BlockingIOError:
            return got


def _full_link() -> tuple[Link, socket.socket, int]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    link = Link(ours)
    sent = 0
    while link.pending == 0:  # store changes until the buffer is full
        link.send(change_message(f"u{sent}@example.test", "INBOX"))
        sent += 1
    return link, theirs, sent


def test_counting_messages_wait_for_room_and_keep_their_order() -> None:
    link, peer, changes = _full_link()
    counting = [b"Xsmtp\x00192.0.2.1", b"S+imap\x00alice", b"Xsmtp\x00192.0.2.2"]
    for message in counting:
        link.send(message)
    link.send(change_message("late@example.test", "INBOX"))  # folds into the WAKE_ALL
    assert link.pending == len(counting) + 1
    received: list[bytes] = []
    for _ in range(1000):
        received += _drain(peer)
        link.retry()
        if link.pending == 0:
            break
    received += _drain(peer)
    assert link.pending == 0
    assert [m for m in received if m[:1] in (b"X", b"S")] == counting
    # The changes that did not fit became one WAKE_ALL, sent before the counting messages.
    assert received.count(WAKE_ALL) == 1
    assert received.index(WAKE_ALL) < received.index(counting[0])
    assert len([m for m in received if m[:1] == b"C"]) == changes - 1
    link.close()
    peer.close()


def test_a_send_after_room_is_made_flushes_what_waits_first() -> None:
    link, peer, _ = _full_link()
    link.send(b"Xsmtp\x00192.0.2.1")
    _drain(peer)  # room again, no retry yet
    link.send(b"Xsmtp\x00192.0.2.2")
    got = _drain(peer)
    assert got[-3:] == [WAKE_ALL, b"Xsmtp\x00192.0.2.1", b"Xsmtp\x00192.0.2.2"]
    assert link.pending == 0
    link.close()
    peer.close()


def test_a_gone_peer_drops_what_waits() -> None:
    link, peer, _ = _full_link()
    link.send(b"Xsmtp\x00192.0.2.1")
    peer.close()
    link.retry()
    assert link.pending == 0
    link.send(b"Xsmtp\x00192.0.2.2")  # no error: the supervisor deals with the dead peer
    link.close()


def _linked_pool(count: int) -> tuple[WorkerPool, list[socket.socket]]:
    """A master's pool whose workers are the far ends of socket pairs (no processes)."""
    pool = WorkerPool([], [], count)
    peers = []
    for worker in pool._workers:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.setblocking(False)
        worker.link = Link(ours)
        worker.reader_fd = ours.fileno()
        peers.append(theirs)
    return pool, peers


def test_the_master_confirms_a_release_after_every_worker_has_the_total() -> None:
    """``W`` is answered by ``K`` only after what the worker sent before it is applied and
    the new totals have gone to every worker, in order on each link."""
    pool, peers = _linked_pool(2)
    key = "imap-userip:192.0.2.1/alice@example.test"
    peers[0].send(b"S+" + key.encode())
    pool.poll()
    assert pool.sessions(key) == 1
    assert _drain(peers[1]) == [b"N" + key.encode() + b"\x001"]
    _drain(peers[0])
    peers[0].send(b"S-" + key.encode())
    peers[0].send(b"W7")
    pool.poll()
    assert pool.sessions(key) == 0
    assert _drain(peers[0]) == [b"N" + key.encode() + b"\x000", b"K7"]
    assert _drain(peers[1]) == [b"N" + key.encode() + b"\x000"]
    for peer in peers:
        peer.close()


def test_a_worker_link_at_eof_no_longer_counts() -> None:
    """The master forgets a worker's sessions and connections as soon as its link ends."""
    pool, peers = _linked_pool(2)
    key = "imap:alice@example.test"
    peers[0].send(b"S+" + key.encode())
    pool._workers[0].open_per_ip[("imap", "192.0.2.1")] = 1
    pool.poll()
    _drain(peers[1])
    peers[0].close()
    pool.poll()
    assert pool.sessions(key) == 0
    assert pool.open_on("imap") == 0
    assert _drain(peers[1]) == [b"N" + key.encode() + b"\x000"]
    peers[1].close()


async def test_a_worker_reads_its_link_before_it_judges_and_waits_for_the_confirmation() -> None:
    """``MasterLink.poll`` applies totals that wait in the link; ``synced`` sends ``W`` and
    returns True at the master's ``K``, False when none comes in time."""
    ours, master_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = MasterLink(os.dup(ours.fileno()))
    ours.close()
    loop = asyncio.get_running_loop()
    link.start(loop, lambda a, f: None, lambda: None, lambda n, i, s: None, print, print)
    assert master_end.recv(64) == READY
    master_end.send(b"Nimap:alice@example.test\x002")
    link.poll()  # no turn of the loop needed
    assert link.totals == {"imap:alice@example.test": 2}

    waiting = asyncio.create_task(link.synced(30))
    await asyncio.sleep(0)
    token = master_end.recv(64)
    assert token[:1] == b"W"
    master_end.send(b"K" + token[1:])
    assert await waiting is True
    assert await link.synced(0.01) is False  # the master never answers this one
    link.close()
    master_end.close()
