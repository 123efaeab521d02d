"""TLS on a live asyncio stream: the server context from the settings, and the STARTTLS/STLS
upgrade every protocol listener shares (SMTP, IMAP, POP3)."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from pochta.logs import PochtaLogger, get_logger
from pochta.tls.context import TLSConfigError, server_context

if TYPE_CHECKING:
    from pochta.config.settings import Settings

log = get_logger("server")


def load_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None (logged) when the certificate cannot be loaded."""
    try:
        return server_context(
            settings.path(settings.tls.cert_file), settings.path(settings.tls.key_file)
        )
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
