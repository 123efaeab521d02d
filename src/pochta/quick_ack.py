"""Acknowledge a client's bytes at once when a command is only partly in (Linux
TCP_QUICKACK, tcp(7)).

A client that writes a literal and then, in a second write, the CRLF that ends the command
(Python's imaplib does: ``send(literal)``, ``send(CRLF)``) holds that second write under
Nagle's algorithm (RFC 896) until its first one is acknowledged; the server's kernel delays
that acknowledgement (RFC 1122 §4.2.3.2; 40 ms on Linux) hoping to send it with an answer,
and there is no answer before the command is complete. Each such APPEND then waited 44 ms
here. Asking for the acknowledgement now, whenever the server is about to wait for the rest
of a command, breaks that wait; other reads are left to the kernel's delayed ACKs.
"""

from __future__ import annotations

import socket
from typing import Any

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def ack_now(sock: Any) -> bool:
    """Have the kernel acknowledge what it received on ``sock`` (a TCP socket, or the
    object asyncio's ``get_extra_info("socket")`` gives) now; False where it cannot (no
    socket, not TCP, not Linux)."""
    if sock is None or _QUICKACK is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except (OSError, AttributeError):
        return False
    return True
