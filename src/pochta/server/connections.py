"""What every mail protocol listener shares: the TLS context loaded before the privilege
drop, and a count of open connections per key (client IP, account) with a limit."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pochta.logs import get_logger

if TYPE_CHECKING:
    from pochta.server.app import Server

log = get_logger("server")


def load_tls_context(server: Server) -> ssl.SSLContext | None:
    """The server's TLS context, or None (logged) when the certificate cannot be loaded."""
    from pochta.tls.context import TLSConfigError, server_context

    s = server.settings
    try:
        return server_context(s.path(s.tls.cert_file), s.path(s.tls.key_file))
    except TLSConfigError as exc:
        log.error("tls_unavailable", error=str(exc))
        return None


class OpenCounts:
    """Open connections (or sessions) per key."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def get_count(self, key: str) -> int:
        return self.counts.get(key, 0)

    def full(self, key: str, limit: int) -> bool:
        return self.counts.get(key, 0) >= limit

    def add(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def remove(self, key: str) -> None:
        self.counts[key] -= 1
        if not self.counts[key]:
            del self.counts[key]

    @contextlib.contextmanager
    def holding(self, key: str) -> Iterator[None]:
        self.add(key)
        try:
            yield
        finally:
            self.remove(key)
