"""Listener addresses: ``"HOST:PORT"``, ``"[IPv6]:PORT"`` or ``"unix:PATH"``.

The config checker calls ``parse_listen`` too, so its messages say what is wrong and what to
write instead, in the form ``"VALUE" <problem>; <what to write>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

UNIX_PREFIX = "unix:"

# RFC 1123 §2.1 host names: letters, digits, hyphens; labels of 1-63 characters.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

# Linux sun_path is 108 bytes including the terminating NUL (unix(7)).
UNIX_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where one listener listens: a TCP host and port, or a unix socket path."""

    host: str = ""  # IP address or host name, without brackets; "" for unix sockets
    port: int = 0  # 1-65535; 0 for unix sockets
    path: str = ""  # unix socket path as written (relative to data_dir unless absolute)

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def resolve(self, data_dir: Path) -> ListenAddress:
        """The same address with a relative unix path made absolute under ``data_dir``."""
        if not self.is_unix or Path(self.path).is_absolute():
            return self
        return ListenAddress(path=str(data_dir / self.path))

    def __str__(self) -> str:
        if self.is_unix:
            return UNIX_PREFIX + self.path
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def _port(value: str, text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f'"{value}" is not a port; use HOST:PORT with PORT 1-65535')
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f'"{value}" is not a port; use HOST:PORT with PORT 1-65535')
    return port


def _check_host(value: str, host: str, port: int) -> None:
    labels = host.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f'"{value}" is not an IPv4 address; use four numbers 0-255, e.g. "0.0.0.0:{port}"'
            ) from None
        return
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(
            f'"{value}" has no valid host; use an IP address such as "0.0.0.0:{port}" '
            f'(all IPv4), "[::]:{port}" (all IPv6) or a host name'
        )


def parse_listen(value: str) -> ListenAddress:
    """Parse one listener setting; ValueError says what is wrong and what to write.

    An empty string means "switched off" in the config; callers check for it first, and this
    function refuses it.
    """
    if value != value.strip():
        raise ValueError(f'"{value}" has spaces around it; write "{value.strip()}"')
    if not value:
        raise ValueError('"" is empty; use HOST:PORT, "[IPv6]:PORT" or "unix:PATH"')
    if value.startswith(UNIX_PREFIX):
        path = value[len(UNIX_PREFIX) :]
        if not path:
            raise ValueError(f'"{value}" has no path; use "unix:PATH", e.g. "unix:lmtp.sock"')
        if "\0" in path:
            raise ValueError(f'"{value}" has a NUL character in the path; remove it')
        if len(path.encode()) > UNIX_PATH_MAX:
            raise ValueError(
                f'"{value}" is longer than {UNIX_PATH_MAX} bytes, the limit for unix sockets; '
                "use a shorter path"
            )
        return ListenAddress(path=path)
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f'"{value}" has no closing "]"; use "[IPv6]:PORT", e.g. "[::]:25"')
        host = value[1:end]
        rest = value[end + 1 :]
        if not rest.startswith(":") or not rest[1:]:
            raise ValueError(f'"{value}" has no port; use "[{host}]:PORT" with PORT 1-65535')
        port = _port(value, rest[1:])
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f'"{value}" has no IPv6 address in brackets; use e.g. "[::]:{port}", or '
                f"write an IPv4 address or host name without brackets"
            ) from None
        return ListenAddress(host=host, port=port)
    host, colon, port_text = value.rpartition(":")
    if not colon:
        raise ValueError(f'"{value}" has no port; use HOST:PORT, e.g. "0.0.0.0:25", or "unix:PATH"')
    if ":" in host:
        raise ValueError(
            f'"{value}" has an IPv6 address without brackets; write "[ADDRESS]:PORT", '
            f'e.g. "[{host}]:{port_text}"'
        )
    if not port_text:
        raise ValueError(f'"{value}" has no port; use HOST:PORT with PORT 1-65535')
    port = _port(value, port_text)
    if not host:
        raise ValueError(
            f'"{value}" has no host; use "0.0.0.0:{port}" for all IPv4 addresses or '
            f'"[::]:{port}" for all IPv6 addresses'
        )
    _check_host(value, host, port)
    return ListenAddress(host=host, port=port)
