"""receive/client_name.py through the system resolver (no dns.nameservers): getnameinfo, then
getaddrinfo must give the IP back, as Postfix's client_name."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pochta.receive.client_name import NameCache, system_client_name


class FakeLoop:
    """The two resolver calls of the running loop, answered from tables."""

    def __init__(self, names: dict[str, str], addresses: dict[str, list[str]]) -> None:
        self.names, self.addresses = names, addresses
        self.asked: list[str] = []

    async def getnameinfo(self, sockaddr: tuple[str, int], flags: int) -> tuple[str, str]:
        assert flags & socket.NI_NAMEREQD  # a name or an error, never the address as text
        self.asked.append(sockaddr[0])
        if sockaddr[0] not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[sockaddr[0]], "0"

    async def getaddrinfo(self, host: str, port: Any, **kwargs: Any) -> list[Any]:
        family = kwargs["family"]
        return [(family, socket.SOCK_STREAM, 6, "", (a, 0)) for a in self.addresses.get(host, [])]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLoop:
    loop = FakeLoop(
        {"192.0.2.1": "Mail.Example.TEST.", "192.0.2.2": "liar.example.test", "::1": "ip6-lo"},
        {"Mail.Example.TEST.": ["192.0.2.1"], "liar.example.test": ["192.0.2.99"]},
    )
    real = asyncio.get_running_loop

    def running() -> Any:
        actual = real()
        actual.getnameinfo = loop.getnameinfo  # type: ignore[method-assign]
        actual.getaddrinfo = loop.getaddrinfo  # type: ignore[method-assign]
        return actual

    monkeypatch.setattr(asyncio, "get_running_loop", running)
    return loop


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.1", "mail.example.test"),  # confirmed: lower case, no final dot
        ("::ffff:192.0.2.1", "mail.example.test"),  # a dual-stack listener's IPv4 client
        ("192.0.2.2", ""),  # the name's addresses do not give the IP back
        ("192.0.2.3", ""),  # no name at all
        ("::1", ""),  # a name without addresses of the family
        ("not an address", ""),  # a unix socket peer: nothing asked
    ],
)
async def test_the_name_counts_only_when_confirmed(fake: FakeLoop, ip: str, name: str) -> None:
    assert await system_client_name(ip, timeout_seconds=5) == name
    assert fake.asked == ([] if ip == "not an address" else [ip.removeprefix("::ffff:")])


@pytest.fixture
def hanging(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """getnameinfo never answers; the list records each call."""
    calls: list[object] = []

    async def never(*args: Any, **kwargs: Any) -> tuple[str, str]:
        calls.append(args)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    real = asyncio.get_running_loop

    def running() -> Any:
        actual = real()
        actual.getnameinfo = never  # type: ignore[method-assign]
        return actual

    monkeypatch.setattr(asyncio, "get_running_loop", running)
    return calls


async def test_a_lookup_that_does_not_end_gives_no_name(hanging: list[object]) -> None:
    assert await system_client_name("192.0.2.1", timeout_seconds=0.01) == ""
    assert len(hanging) == 1


async def test_loopback_is_answered_by_the_system_as_getnameinfo_says() -> None:
    """The real resolver: 127.0.0.1 gets the name the system confirms (from /etc/hosts on
    Debian: localhost), or "" when the system has none; never a different answer."""
    try:
        expected, _ = socket.getnameinfo(("127.0.0.1", 0), socket.NI_NAMEREQD)
        confirmed = "127.0.0.1" in {i[4][0] for i in socket.getaddrinfo(expected, None)}
    except OSError:
        expected, confirmed = "", False
    name = await system_client_name("127.0.0.1", timeout_seconds=5)
    assert name == (expected.rstrip(".").lower() if confirmed else "")


async def test_the_cache_keeps_names_and_no_names_but_not_timeouts(fake: FakeLoop) -> None:
    now = [0.0]
    cache = NameCache(seconds=60, entries=2, clock=lambda: now[0])
    for _ in range(3):
        assert await system_client_name("192.0.2.1", timeout_seconds=5, cache=cache) == (
            "mail.example.test"
        )
        assert await system_client_name("192.0.2.3", timeout_seconds=5, cache=cache) == ""
    assert fake.asked == ["192.0.2.1", "192.0.2.3"]  # once each: "no name" is kept too
    now[0] = 61.0  # past the time an answer is kept
    await system_client_name("192.0.2.1", timeout_seconds=5, cache=cache)
    assert fake.asked[-1] == "192.0.2.1"
    await system_client_name("192.0.2.2", timeout_seconds=5, cache=cache)  # a third IP
    assert len(cache._answers) == 2  # the oldest went


async def test_a_timeout_is_not_kept(hanging: list[object]) -> None:
    cache = NameCache()
    for _ in range(2):
        assert await system_client_name("192.0.2.1", timeout_seconds=0.01, cache=cache) == ""
    assert len(hanging) == 2  # asked again: a slow resolver is not an answer
