"""What every mail protocol listener shares: the TLS context loaded before the privilege
drop, and a count of open connections per key (client IP, account) with a limit."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pochta.logs import PochtaLogger, get_logger

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


async def upgrade_to_tls(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    context: ssl.SSLContext,
    client: str,
    logger: PochtaLogger,
) -> bool:
    """STARTTLS/STLS after the "go ahead" reply went out; False (logged) when the handshake
    fails and the session cannot go on.

    RFC 3207 §4.2, RFC 2595 §4, RFC 9051 §6.2.1 (CVE-2011-0411): plaintext that arrived after
    the command but before the handshake must never be read as if it came over TLS. The
    protocol core has dropped what it was fed; the stream may hold more, which asyncio
    would hand over after start_tls, so its buffer is emptied first. The outcome is logged
    to `logger`, the protocol's own.
    """
    reader._buffer.clear()  # type: ignore[attr-defined]  # no public API for this
    try:
        await writer.start_tls(context)
    except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
        logger.info("tls_failed", client=client, error=str(exc))
        return False
    obj = writer.get_extra_info("ssl_object")
    logger.info(
        "tls",
        client=client,
        version=obj.version() if obj else "",
        cipher=obj.cipher()[0] if obj and obj.cipher() else "",
    )
    return True


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
