"""Transport map values, ``transport:nexthop``, read as transport(5) defines them.

A value names a delivery service and where it hands the mail (transport(5) "TABLE FORMAT"
and "RESULT FORMAT"):

- ``smtp:example.org`` / ``relay:example.org``: look up the MX records of the name;
- ``smtp:[mail.example.org]`` / ``relay:[10.0.0.5]:2525``: brackets mean "this host, no MX
  lookup" (transport(5): "[ ] suppresses MX lookups"); an optional ``:port`` follows;
- ``smtp:[2001:db8::1]`` or ``smtp:[ipv6:2001:db8::1]``: an IPv6 address, always in brackets;
- ``lmtp:[127.0.0.1]:24``, ``lmtp:inet:host:port``, ``lmtp:unix:/path``: LMTP never looks up
  MX records (lmtp(8)); ``unix:`` names a socket path;
- ``error:5.1.1 text`` / ``retry:4.3.0 text``: refuse or defer with that text (error(8));
- ``discard:text``: accept and throw the mail away (discard(8));
- ``smtp:`` or ``smtp`` (empty next hop): the recipient's domain; ``:host`` (empty transport):
  the address class's default transport.

The port may be a number or a service name from /etc/services (``:submission``), as Postfix
allows.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PORTS",
    "MESSAGE_KINDS",
    "NETWORK_KINDS",
    "Transport",
    "TransportError",
    "parse_transport",
]

# Transports whose next hop is a host (or a unix socket, for lmtp). Other names are master.cf
# services of the admin's own; we do not know them (see Resolver: they defer).
NETWORK_KINDS = frozenset({"smtp", "relay", "lmtp"})
# Transports whose "next hop" is free text (error(8), discard(8); retry is error(8) deferring).
MESSAGE_KINDS = frozenset({"error", "retry", "discard"})
DEFAULT_PORTS = {"smtp": 25, "relay": 25, "lmtp": 24}

_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


class TransportError(ValueError):
    """A transport map value that cannot be used; the message says what to write."""


@dataclass(frozen=True, slots=True)
class Transport:
    """A parsed ``transport:nexthop``.

    ``nexthop`` is the host name or address without brackets or port, the socket path for
    ``unix_socket``, the text for error/retry/discard, or "" for "the recipient's domain".
    ``port`` is None for the transport's default (25 for smtp/relay, 24 for lmtp).
    ``mx_lookup`` is False for a bracketed host, for a unix socket and for every lmtp hop.
    """

    kind: str
    nexthop: str = ""
    port: int | None = None
    mx_lookup: bool = True
    unix_socket: bool = False

    def with_nexthop(self, domain: str) -> Transport:
        """This transport with an empty next hop filled in by ``domain`` (transport(5):
        "an empty nexthop field means the recipient domain")."""
        if self.nexthop or self.kind in MESSAGE_KINDS:
            return self
        if domain.startswith("[") and domain.endswith("]"):
            # RFC 5321 §4.1.3 address literal: that host, never an MX lookup.
            host = domain[1:-1]
            host = host[5:] if host[:5].lower() == "ipv6:" else host
            return Transport(self.kind, host, self.port, False, False)
        return Transport(self.kind, domain, self.port, self.kind != "lmtp", False)

    @property
    def effective_port(self) -> int | None:
        """The port to connect to: the given one, else the transport's standard port."""
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.kind)

    def __str__(self) -> str:
        if self.kind in MESSAGE_KINDS or not self.nexthop:
            return f"{self.kind}:{self.nexthop}"
        if self.unix_socket:
            return f"{self.kind}:unix:{self.nexthop}"
        host = self.nexthop
        if not self.mx_lookup or ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.kind}:{host}{port}"


def parse_transport(value: str, *, default_kind: str = "smtp") -> Transport:
    """Parse a transport_maps value (see the module docstring); TransportError if malformed.

    ``default_kind`` fills an empty transport name (``:host``), as Postfix fills it from the
    address class (default_transport, relay_transport, ...).
    """
    text = value.strip()
    if not text:
        raise TransportError("empty transport; write e.g. 'smtp:[mail.example.org]:25'")
    # transport(5): the value is split at the first ':'; no ':' at all means no next hop.
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower() or default_kind
    if not _KIND.fullmatch(kind):
        raise TransportError(
            f"{value!r}: {kind!r} is not a transport name; write 'smtp:', 'relay:', 'lmtp:', "
            "'error:' or 'discard:' before the next hop"
        )
    if kind in MESSAGE_KINDS:
        # error(8), discard(8): the rest is text for the log and the bounce, kept as written.
        return Transport(kind, rest.strip(), None, False, False)
    rest = rest.strip()
    if not rest:
        return Transport(kind, "", None, kind != "lmtp", False)
    if kind == "lmtp" or rest.startswith(("unix:", "inet:")):
        # lmtp(8) "SMTP DESTINATION SYNTAX": unix:/path, inet:host:port, [host]:port, host:port.
        if rest.startswith("unix:"):
            path = rest[5:].strip()
            if not path.startswith("/"):
                raise TransportError(
                    f"{value!r}: a unix socket needs an absolute path; write "
                    f"'{kind}:unix:/path/to/socket'"
                )
            return Transport(kind, path, None, False, True)
        if rest.startswith("inet:"):
            rest = rest[5:].strip()
    host, port, bracketed = _split_host_port(rest, value)
    mx_lookup = not bracketed and kind != "lmtp"  # lmtp(8) does no MX lookups
    return Transport(kind, host, port, mx_lookup, False)


def _split_host_port(text: str, value: str) -> tuple[str, int | None, bool]:
    """``[host]:port``, ``[host]``, ``host:port`` or ``host`` -> (host, port, bracketed)."""
    if "," in text or any(c.isspace() for c in text):
        raise TransportError(
            f"{value!r}: one next hop per entry; lists of next hops are not supported"
        )
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise TransportError(f"{value!r}: '[' without ']'; write '[host]' or '[host]:port'")
        host, after = text[1:close], text[close + 1 :]
        if after and not after.startswith(":"):
            raise TransportError(f"{value!r}: unexpected text after ']'; write '[host]:port'")
        port = _port(after[1:], value) if after else None
        if host[:5].lower() == "ipv6:":  # RFC 5321 §4.1.3 address literal form
            host = host[5:]
        return _check_host(host, value, bracketed=True), port, True
    host, colon, port_text = text.rpartition(":")
    if not colon:
        return _check_host(text, value, bracketed=False), None, False
    if ":" in host:
        raise TransportError(
            f"{value!r}: an IPv6 address needs brackets; write 'smtp:[2001:db8::1]:25'"
        )
    return _check_host(host, value, bracketed=False), _port(port_text, value), False


def _check_host(host: str, value: str, *, bracketed: bool) -> str:
    if bracketed:
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
    if not host or not _HOST.fullmatch(host):
        raise TransportError(f"{value!r}: {host!r} is not a host name or IP address")
    return host.rstrip(".").lower()


def _port(text: str, value: str) -> int:
    text = text.strip()
    if text.isascii() and text.isdigit():
        port = int(text)
    else:
        try:
            port = socket.getservbyname(text, "tcp")  # Postfix accepts service names too
        except (OSError, ValueError, UnicodeError):
            raise TransportError(
                f"{value!r}: port {text!r} is neither a number nor a service name"
            ) from None
    if not 0 < port < 65536:
        raise TransportError(f"{value!r}: port {port} is out of range 1-65535")
    return port
