"""Listener addresses: what parses, and that every refusal says what to write."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pochta.config.listen import ListenAddress, parse_listen
from pochta.server.app import bind_error_message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:25", ListenAddress(host="0.0.0.0", port=25)),
        ("127.0.0.1:65535", ListenAddress(host="127.0.0.1", port=65535)),
        ("[::]:993", ListenAddress(host="::", port=993)),
        ("[::1]:1", ListenAddress(host="::1", port=1)),
        ("[2001:db8::1]:587", ListenAddress(host="2001:db8::1", port=587)),
        ("localhost:8080", ListenAddress(host="localhost", port=8080)),
        ("mail.example.org:25", ListenAddress(host="mail.example.org", port=25)),
        ("unix:lmtp.sock", ListenAddress(path="lmtp.sock")),
        ("unix:/run/pochta/lmtp", ListenAddress(path="/run/pochta/lmtp")),
    ],
)
def test_parses(value: str, expected: ListenAddress) -> None:
    assert parse_listen(value) == expected
    assert str(parse_listen(value)) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0.0.0.0:99999", '"0.0.0.0:99999" is not a port; use HOST:PORT with PORT 1-65535'),
        ("0.0.0.0:0", '"0.0.0.0:0" is not a port; use HOST:PORT with PORT 1-65535'),
        ("0.0.0.0:smtp", '"0.0.0.0:smtp" is not a port; use HOST:PORT with PORT 1-65535'),
        ("0.0.0.0:-1", '"0.0.0.0:-1" is not a port; use HOST:PORT with PORT 1-65535'),
        ("0.0.0.0:٢٥", '"0.0.0.0:٢٥" is not a port; use HOST:PORT with PORT 1-65535'),
        ("localhost", '"localhost" has no port; use HOST:PORT, e.g. "0.0.0.0:25", or "unix:PATH"'),
        ("0.0.0.0:", '"0.0.0.0:" has no port; use HOST:PORT with PORT 1-65535'),
        (":25", '":25" has no host; use "0.0.0.0:25" for all IPv4 addresses or "[::]:25"'),
        ("::1:25", '"::1:25" has an IPv6 address without brackets; write "[ADDRESS]:PORT"'),
        ("[::1:25", '"[::1:25" has no closing "]"; use "[IPv6]:PORT"'),
        ("[::1]", '"[::1]" has no port; use "[::1]:PORT" with PORT 1-65535'),
        ("[::1]25", '"[::1]25" has no port'),
        ("[1.2.3.4]:25", '"[1.2.3.4]:25" has no IPv6 address in brackets'),
        ("999.1.1.1:25", '"999.1.1.1:25" is not an IPv4 address; use four numbers 0-255'),
        ("*:25", '"*:25" has no valid host; use an IP address such as "0.0.0.0:25"'),
        ("bad_host:25", '"bad_host:25" has no valid host'),
        (" 0.0.0.0:25", '" 0.0.0.0:25" has spaces around it; write "0.0.0.0:25"'),
        ("", '"" is empty'),
        ("unix:", '"unix:" has no path; use "unix:PATH", e.g. "unix:lmtp.sock"'),
        ("unix:a\0b", "has a NUL character"),
        ("unix:" + "x" * 200, "the limit for unix sockets; use a shorter path"),
    ],
)
def test_refuses_with_a_hint(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_listen(value)
    assert ";" in str(info.value)  # every message says what to write


def test_unix_path_resolves_under_data_dir(tmp_path: Path) -> None:
    assert parse_listen("unix:lmtp.sock").resolve(tmp_path).path == str(tmp_path / "lmtp.sock")
    assert parse_listen("unix:/run/x.sock").resolve(tmp_path).path == "/run/x.sock"
    tcp = parse_listen("0.0.0.0:25")
    assert tcp.resolve(tmp_path) is tcp
    assert not tcp.is_unix
    assert parse_listen("unix:x").is_unix


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_value_error(value: str) -> None:
    try:
        address = parse_listen(value)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith('"')
        assert "; " in message  # what is wrong; what to write
        return
    assert parse_listen(str(address)) == address


@pytest.mark.parametrize(
    ("address", "err", "expected"),
    [
        (
            "0.0.0.0:80",
            errno.EACCES,
            "listen.http: cannot bind 0.0.0.0:80: Permission denied; "
            "run as root or choose a port above 1023",
        ),
        ("[::1]:25", errno.EADDRINUSE, "cannot bind [::1]:25: Address already in use; another"),
        ("192.0.2.1:25", errno.EADDRNOTAVAIL, "use an IP address of this host"),
        ("unix:/nope/x.sock", errno.ENOENT, "create the socket's directory"),
        ("1.2.3.4:5", errno.EIO, 'switch it off with listen.http = ""'),
    ],
)
def test_bind_error_messages(address: str, err: int, expected: str) -> None:
    message = bind_error_message("http", parse_listen(address), OSError(err, "ignored"))
    assert expected in message
    assert "\n" not in message
