"""The ``http`` listener: autoconfig, autodiscover, the MTA-STS policy, metrics, health.

HTTP/1.1 framing is h11's (sans-IO); this module is the asyncio glue, one read / feed / act /
write loop per connection as in hypercorn's ``asyncio/tcp_server.py``, plus a router
(``HttpService.respond``) that takes a parsed ``Request`` and returns a ``Response`` without
touching the socket, so routes are tested without a network.

The same service answers the ``https`` listener (``server/services.py``): the server wraps
its connections in TLS (implicit TLS, RFC 2818) and picks the certificate by SNI
(``tls/context.py`` ``SniContexts``), so the MTA-STS policy is fetched over HTTPS from
``mta-sts.DOMAIN`` as RFC 8461 §3.3 requires, with the certificate configured for that name
in ``tls.certificates``. Certificates come from the admin (no ACME yet), so the policy mode
stays "testing".
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import h11

from pochta.directory.addresses import AddressError, normalize_domain, split_address
from pochta.logs import get_logger
from pochta.netaddr import in_networks
from pochta.netaddr import is_loopback as is_loopback_ip
from pochta.web.autoconfig import (
    AUTODISCOVER_BODY_LIMIT,
    build_autoconfig,
    build_autodiscover,
    mta_sts_policy,
    parse_autodiscover_request,
    ports_from_listen,
)

if TYPE_CHECKING:
    from pochta.runtime import WebRuntime

log = get_logger("http")

HEAD_LIMIT_BYTES = 16 * 1024  # request line + headers
BODY_LIMIT_BYTES = AUTODISCOVER_BODY_LIMIT  # the only route with a body is autodiscover
IDLE_TIMEOUT_SECONDS = 30.0  # to receive a whole request, counted from the previous answer
MAX_REQUESTS_PER_CONNECTION = 100  # keep-alive, then "Connection: close"
READ_CHUNK_BYTES = 16 * 1024

MTA_STS_PREFIX = "mta-sts."  # RFC 8461 §3.3: the policy host is mta-sts.DOMAIN
AUTOCONFIG_PREFIX = "autoconfig."
AUTOCONFIG_PATHS = frozenset(
    {"/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"}
)
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"  # compared case-insensitively

TEXT = "text/plain; charset=utf-8"
XML = "application/xml; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request, as the router sees it."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last one wins
    body: bytes = b""
    client: str = ""  # peer IP address; "" on a unix socket

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


class _BodyTooLarge(Exception):
    pass


class _HeadTooLarge(Exception):
    pass


def is_loopback(client: str) -> bool:
    """The one loopback rule (pochta.netaddr.is_loopback); a unix socket peer ("") is local
    too."""
    return client == "" or is_loopback_ip(client)


def host_domain(host_header: str) -> str | None:
    """The domain name of a Host header (port and trailing dot removed); None for IPs."""
    host = host_header.strip()
    if host.startswith("["):
        return None  # an IPv6 literal
    host = host.rsplit(":", 1)[0] if ":" in host else host
    host = host.rstrip(".").lower()
    if not host:
        return None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return host
    return None


def _text(status: int, text: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = (text or HTTPStatus(status).phrase.lower()) + "\n"
    return Response(status, body.encode(), TEXT, headers)


_GET = frozenset({"GET", "HEAD"})


class HttpService:
    """The stream service registered as ``http`` and ``https`` in ``server/services.py``."""

    def __init__(
        self,
        server: WebRuntime,
        name: str = "http",
        *,
        metrics_allowed: Callable[[str], bool] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        # Implicit TLS (the https listener): the server wraps each connection in it.
        self.ssl_context = ssl_context
        self._server = server
        self._metrics_allowed = metrics_allowed or self._metrics_client_allowed
        self._routes: dict[str, tuple[frozenset[str], Callable[[Request], Response]]] = {
            "/healthz": (_GET, self._healthz),
            "/metrics": (_GET, self._metrics),
            "/.well-known/mta-sts.txt": (_GET, self._mta_sts),
            AUTODISCOVER_PATH: (frozenset({"POST"}), self._autodiscover),
        }
        for path in AUTOCONFIG_PATHS:
            self._routes[path] = (_GET, self._autoconfig)

    # -- routing (no I/O) ----------------------------------------------------------------

    def respond(self, request: Request) -> Response:
        path = request.path
        if path.lower() == AUTODISCOVER_PATH:  # Outlook writes /Autodiscover/Autodiscover.xml
            path = AUTODISCOVER_PATH
        route = self._routes.get(path)
        if route is None:
            return _text(404)
        methods, handler = route
        if request.method not in methods:
            # RFC 9110 §15.5.6: a 405 carries Allow.
            return _text(405, headers=(("Allow", ", ".join(sorted(methods))),))
        return handler(request)

    def _healthz(self, request: Request) -> Response:
        return Response(200, b"ok\n")

    def _metrics_client_allowed(self, client: str) -> bool:
        """Loopback and unix-socket clients, and those in http.metrics_allowed_networks (read
        at each request, so a reload applies)."""
        if is_loopback(client):
            return True
        return in_networks(client, self._server.settings.http.metrics_allowed_networks)

    def _metrics(self, request: Request) -> Response:
        if not self._metrics_allowed(request.client):
            return _text(
                403, "metrics are served to loopback and http.metrics_allowed_networks only"
            )
        return Response(
            200, self._server.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
        )

    def _hosted(self, domain: str) -> str | None:
        """The normalised domain if the directory hosts it (enabled, not the host name's
        signing-only entry), else None."""
        try:
            name = normalize_domain(domain)
        except AddressError:
            return None
        found = self._server.directory.get_domain(name)
        return name if found is not None and found.enabled and not found.signing_only else None

    def _mta_sts(self, request: Request) -> Response:
        # RFC 8461 §3.3: fetched from https://mta-sts.DOMAIN/.well-known/mta-sts.txt; answer
        # only for a DOMAIN we host, so the policy never covers someone else's mail.
        host = host_domain(request.host) or ""
        if not host.startswith(MTA_STS_PREFIX) or self._hosted(host[len(MTA_STS_PREFIX) :]) is None:
            return _text(404)
        # RFC 8461 §3.2: media type "text/plain".
        return Response(200, mta_sts_policy([self._server.settings.server.hostname]), "text/plain")

    def _autoconfig(self, request: Request) -> Response:
        emails = request.query.get("emailaddress")
        if emails:
            try:
                _, domain = split_address(emails[0])
            except AddressError:
                return _text(400, "emailaddress is not an address; use local@domain")
        else:
            domain = host_domain(request.host) or ""
            domain = domain.removeprefix(AUTOCONFIG_PREFIX)
        hosted = self._hosted(domain) if domain else None
        if hosted is None:
            return _text(404)
        settings = self._server.settings
        body = build_autoconfig(
            hosted, settings.server.hostname, ports_from_listen(settings.listen)
        )
        return Response(200, body, XML)

    def _autodiscover(self, request: Request) -> Response:
        try:
            email = parse_autodiscover_request(request.body)
            local, domain = split_address(email)
        except (ValueError, AddressError) as exc:
            return _text(400, f"not an autodiscover request: {exc}")
        if self._hosted(domain) is None:
            return _text(404)
        settings = self._server.settings
        body = build_autodiscover(
            f"{local}@{domain}", settings.server.hostname, ports_from_listen(settings.listen)
        )
        return Response(200, body, XML)

    # -- the connection loop -------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT_BYTES)
        client = _peer_ip(writer)
        for served in range(1, MAX_REQUESTS_PER_CONNECTION + 1):
            try:
                async with asyncio.timeout(IDLE_TIMEOUT_SECONDS):
                    request = await self._read_request(conn, reader, client)
            except TimeoutError:
                return  # idle (or too slow): close without an answer
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, writer, exc.error_status_hint)
                return
            except _HeadTooLarge:
                await self._send_error(conn, writer, 431)  # RFC 6585 §5
                return
            except _BodyTooLarge:
                await self._send_error(conn, writer, 413)  # RFC 9110 §15.5.14
                return
            if request is None:
                return
            response = self._safe_respond(request)
            last = served == MAX_REQUESTS_PER_CONNECTION or self._server.stopping.is_set()
            await self._send(conn, writer, request.method, response, close=last)
            log.debug(
                "http_request",
                method=request.method,
                path=request.path,
                status=response.status,
                client=client,
            )
            if last or conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _safe_respond(self, request: Request) -> Response:
        try:
            return self.respond(request)
        except Exception:
            log.exception("http_route_failed", method=request.method, path=request.path)
            return _text(500)

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, client: str
    ) -> Request | None:
        """Feed h11 until one whole request has arrived; None when the peer is gone."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if head is None and conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    data = await self._read_idle(reader)
                else:
                    data = await reader.read(READ_CHUNK_BYTES)
                conn.receive_data(data)  # b"" tells h11 about EOF
            elif isinstance(event, h11.Request):
                head = event
                # h11 bounds only heads still incomplete; one read may complete a bigger one.
                if _head_size(event) > HEAD_LIMIT_BYTES:
                    raise _HeadTooLarge
                length = _content_length(event)
                if length is not None and length > BODY_LIMIT_BYTES:
                    raise _BodyTooLarge
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > BODY_LIMIT_BYTES:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _make_request(head, bytes(body), client)
            else:  # ConnectionClosed, PAUSED
                return None

    async def _read_idle(self, reader: asyncio.StreamReader) -> bytes:
        """Wait for the next request, or return b"" (as if closed) when the server stops."""
        stopping = self._server.stopping
        if stopping.is_set():
            return b""
        read = asyncio.ensure_future(reader.read(READ_CHUNK_BYTES))
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not read.done():
                read.cancel()
        return read.result() if read.done() and not read.cancelled() else b""

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: str,
        response: Response,
        *,
        close: bool,
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            # RFC 9110 §6.6.1: an origin server with a clock sends Date.
            ("Date", formatdate(usegmt=True)),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        data = conn.send(
            h11.Response(
                status_code=response.status,
                headers=headers,
                reason=HTTPStatus(response.status).phrase,
            )
        )
        # RFC 9110 §9.3.2: HEAD gets the GET headers and no content.
        if method != "HEAD" and response.body:
            data = (data or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(data)
        await writer.drain()

    async def _send_error(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
            await self._send(conn, writer, "GET", _text(status), close=True)


def _head_size(event: h11.Request) -> int:
    """Size of the request line and header fields as sent (give or take whitespace)."""
    size = len(event.method) + len(event.target) + len(b" HTTP/1.1\r\n") + 1
    return size + sum(len(name) + len(value) + 4 for name, value in event.headers) + 2


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _make_request(head: h11.Request, body: bytes, client: str) -> Request:
    target = head.target.decode("ascii", "replace")
    parts = urlsplit(target)
    headers = {
        name.decode("ascii").lower(): value.decode("latin-1") for name, value in head.headers
    }
    return Request(
        method=head.method.decode("ascii", "replace"),
        path=parts.path or "/",
        query=parse_qs(parts.query, keep_blank_values=False, errors="replace"),
        headers=headers,
        body=body,
        client=client,
    )


def _peer_ip(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""
