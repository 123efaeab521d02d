"""The registry of services: which implementation answers on which listener.

A service serves one accepted stream connection at a time per ``handle`` call; the Server
owns the sockets, counts connections and cancels what is left at shutdown. A listener whose
name is not in ``SERVICES`` is not bound: pochta never accepts a connection it cannot serve.

Later issues add ``smtp``, ``submission``, ``imap``, ... here, each a factory that imports
its package lazily (so ``pochta.server`` does not import every protocol at start-up). The
session packages never import ``pochta.server``: they are typed against ``pochta.runtime``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pochta.server.app import Server


class Service(Protocol):
    """What a listener runs for each connection.

    Services read ``server.settings`` and ``server.directory`` at each use and never keep
    them: both are swapped on reload (SIGHUP) (see pochta.runtime).
    """

    # The listener name ("http", "imaps", ...), used in logs and metrics.
    name: str
    # Implicit TLS (RFC 8314): the server wraps accepted connections in this context. None
    # for plain listeners and for STARTTLS ones (the service upgrades the stream itself).
    ssl_context: ssl.SSLContext | None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it ends; the Server closes the writer afterwards."""
        ...


# A factory gets the Server (settings, directory, metrics, stopping) and the listener name:
# one implementation may serve several listeners (imap and imaps).
ServiceFactory = Callable[["Server", str], Service]


# The factories pass the Server itself to the services, which are typed against
# pochta.runtime: mypy checks here that Server (and its MailSystem) satisfy those interfaces.


def _http(server: Server, listener: str) -> Service:
    from pochta.web.http_server import HttpService

    return HttpService(server, listener)


def _https(server: Server, listener: str) -> Service:
    """The http service over implicit TLS (RFC 2818), its certificate picked by SNI; the
    certificates are loaded again on every reload (SIGHUP)."""
    from pochta.tls.streams import reloadable_tls_context
    from pochta.web.http_server import HttpService

    context = reloadable_tls_context(server)
    if context is None:
        raise RuntimeError(f"listen.{listener} needs a TLS certificate; see tls.cert_file")
    return HttpService(server, listener, ssl_context=context)


def _smtp(server: Server, listener: str) -> Service:
    from pochta.receive import smtp_service

    factories = {
        "smtp": smtp_service.smtp,
        "submission": smtp_service.submission,
        "submissions": smtp_service.submissions,
        "lmtp": smtp_service.lmtp,
    }
    return factories[listener](server, listener)


def _imap(server: Server, listener: str) -> Service:
    from pochta.access import imap

    factories = {"imap": imap.imap, "imaps": imap.imaps}
    return factories[listener](server, listener)


def _pop3(server: Server, listener: str) -> Service:
    from pochta.access import pop3

    factories = {"pop3": pop3.pop3, "pop3s": pop3.pop3s}
    return factories[listener](server, listener)


def _managesieve(server: Server, listener: str) -> Service:
    from pochta.access.managesieve import managesieve

    return managesieve(server, listener)


SERVICES: dict[str, ServiceFactory] = {
    "http": _http,
    "https": _https,
    "smtp": _smtp,
    "submission": _smtp,
    "submissions": _smtp,
    "lmtp": _smtp,
    "imap": _imap,
    "imaps": _imap,
    "pop3": _pop3,
    "pop3s": _pop3,
    "managesieve": _managesieve,
}

# Listeners that need the mail system (queue, store, delivery) running.
MAIL_LISTENERS = frozenset(
    {"smtp", "submission", "submissions", "lmtp", "imap", "imaps", "pop3", "pop3s", "managesieve"}
)
