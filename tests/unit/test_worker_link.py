"""The master-worker link (server/workers.py ``Link``): when the send buffer is full, store
changes collapse into one WAKE_ALL, and every counting message still arrives, in order."""

from __future__ import annotations

import socket

from pochta.server.workers import WAKE_ALL, Link, change_message


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
