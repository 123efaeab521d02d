"""quick_ack.py: TCP_QUICKACK on a real TCP socket, and nothing where it cannot be."""

from __future__ import annotations

import socket
import sys

import pytest

from pochta.quick_ack import ack_now


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_QUICKACK is Linux's")
def test_ack_now_sets_quickack_on_a_tcp_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            assert ack_now(conn) is True
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_ack_now_is_a_no_op_without_a_tcp_socket() -> None:
    assert ack_now(None) is False
    a, b = socket.socketpair()  # AF_UNIX: no TCP options
    with a, b:
        assert ack_now(a) is False
