"""The syntax of a DNS server address (``dns.nameservers``, ``pochta dns --nameserver``).

Pure syntax (stdlib only), so the config check and the resolvers share one rule.
"""

from __future__ import annotations

import ipaddress


def parse_nameserver(value: str) -> tuple[str, int]:
    """("IP", port) of "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT"; ValueError saying why not."""
    text = value.strip()
    port = 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{value!r}: missing ']' after the IPv6 address")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{value!r}: expected [IPv6]:PORT")
            port_text = rest[1:]
            if not port_text.isdigit():
                raise ValueError(f"{value!r}: the port must be a number")
            port = int(port_text)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ValueError(f"{value!r}: the port must be a number")
        port = int(port_text)
    else:
        host = text
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address; use e.g. 192.0.2.53, 192.0.2.53:5353 or [::1]:53"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"{value!r}: port {port} is out of range")
    return ip, port
