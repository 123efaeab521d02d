"""TLS on a live asyncio stream: the server context from the settings, the SNI contexts
every TLS listener is bound with and that a reload loads again (``reloadable_tls_context``),
and the STARTTLS/STLS upgrade every protocol listener shares (SMTP, IMAP, POP3)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from pochta.logs import PochtaLogger, get_logger
from pochta.tls.context import SniContexts, TLSConfigError, reference_name, server_context

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


def _named_contexts(
    settings: Settings, keep: Mapping[str, ssl.SSLContext]
) -> dict[str, ssl.SSLContext]:
    """The context of each name in ``tls.certificates`` (the first entry naming a name wins).
    An entry whose files cannot be loaded is logged and left out; its names keep their
    context in ``keep`` (the running one, on a reload), else get the host's certificate."""
    by_name: dict[str, ssl.SSLContext] = {}
    for i, entry in enumerate(settings.tls.certificates):
        key = f"tls.certificates[{i}]"
        names = [n for n in map(reference_name, entry.names) if n is not None]
        try:
            context = server_context(
                settings.path(entry.cert_file),
                settings.path(entry.key_file),
                cert_setting=f"{key}.cert_file",
                key_setting=f"{key}.key_file",
            )
        except TLSConfigError as exc:
            log.error("tls_unavailable", error=str(exc), names=",".join(names))
            for name in names:
                if name in keep:
                    by_name.setdefault(name, keep[name])
            continue
        for name in names:
            by_name.setdefault(name, context)
    return by_name


def load_sni_contexts(settings: Settings) -> SniContexts | None:
    """The https listener's contexts: the host's certificate and ``tls.certificates`` by
    name; None (logged) when the host's certificate cannot be loaded."""
    default = load_tls_context(settings)
    if default is None:
        return None
    return SniContexts(default, _named_contexts(settings, {}))


class Reloadable(Protocol):
    """What :func:`reloadable_tls_context` needs of the server (``server.app.Server``)."""

    @property
    def settings(self) -> Settings: ...

    def on_reload(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after each successful reload (SIGHUP), with the new settings in place."""
        ...


def reloadable_tls_context(server: Reloadable) -> ssl.SSLContext | None:
    """The context a TLS listener (STARTTLS or implicit) is bound or upgraded with: the
    host's certificate, and those of ``tls.certificates`` picked by SNI (RFC 6066 §3), all
    loaded again on every reload, so a renewed certificate is served from the next handshake
    on (the new files must be readable by ``server.run_as_user``). None (logged) when the
    host's certificate cannot be loaded."""
    contexts = load_sni_contexts(server.settings)
    if contexts is None:
        return None
    server.on_reload(lambda: reload_sni_contexts(contexts, server.settings))
    return contexts.context


def reload_sni_contexts(contexts: SniContexts, settings: Settings) -> None:
    """Load the certificates again (SIGHUP), so renewed files are served from the next
    handshake; a certificate that cannot be loaded now keeps the running one (logged)."""
    try:
        default = server_context(
            settings.path(settings.tls.cert_file), settings.path(settings.tls.key_file)
        )
    except TLSConfigError as exc:
        log.error("tls_reload_failed", error=str(exc), action="kept the running certificate")
        default = contexts.default
    by_name = _named_contexts(settings, contexts.by_name)
    contexts.replace(default, by_name)
    log.info("tls_reloaded", names=len(by_name))


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
