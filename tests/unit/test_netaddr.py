"""The one loopback rule and network membership (pochta.netaddr), and that every listener that
allows something on loopback asks it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from pochta import netaddr
from pochta.netaddr import in_networks, is_loopback
from pochta.web.http_server import HttpService, Request
from tests.factories import make_settings
from tests.unit.test_autoconfig import FakeDirectory, FakeServer

LOOPBACK_TABLE = [
    ("127.0.0.1", True),
    ("127.9.9.9", True),
    ("::1", True),
    ("::ffff:127.0.0.1", True),  # a dual-stack listener's IPv4 loopback client
    ("::ffff:10.0.0.1", False),
    ("10.0.0.1", False),
    ("::2", False),
    ("fe80::1%eth0", False),  # zone dropped, then link-local: not loopback
    ("::1%lo", True),
    ("", False),  # not an address (the HTTP listener's unix peers are its own case)
    ("garbage", False),
    ("127.0.0.1 ", False),
    ("256.0.0.1", False),
]


@pytest.mark.parametrize(("ip", "loopback"), LOOPBACK_TABLE)
def test_is_loopback_table(ip: str, loopback: bool) -> None:
    assert is_loopback(ip) is loopback


@pytest.mark.parametrize(
    ("ip", "inside"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped counts as its IPv4 address
        ("2001:db8::5", True),
        ("2001:db8::5%eth0", True),
        ("192.0.2.1", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_in_networks(ip: str, inside: bool) -> None:
    assert in_networks(ip, ["10.0.0.0/8", "2001:db8::/32", "not a network"]) is inside


def test_in_networks_with_no_networks() -> None:
    assert in_networks("127.0.0.1", []) is False


def test_netaddr_imports_nothing_of_pochta() -> None:
    """A kernel module: importing it loads no other pochta module (so no session package
    reaches pochta.server through it)."""
    code = (
        "import sys, pochta.netaddr; "
        "print(sorted(m for m in sys.modules if m.startswith('pochta') and m != 'pochta.netaddr'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pochta']"


@pytest.mark.parametrize(
    "module",
    ["pochta.access.imap_session", "pochta.access.pop3", "pochta.receive.smtp_service"],
)
def test_services_use_the_one_rule(module: str) -> None:
    """IMAP, POP3 and SMTP ask pochta.netaddr.is_loopback; the private copies are gone."""
    mod = importlib.import_module(module)
    assert not hasattr(mod, "_is_loopback")
    assert mod.is_loopback is netaddr.is_loopback


def test_runtime_and_http_use_the_one_rule() -> None:
    app = importlib.import_module("pochta.server.app")
    http = importlib.import_module("pochta.web.http_server")
    assert app.in_networks is netaddr.in_networks
    assert not hasattr(app, "_networks")
    assert http.in_networks is netaddr.in_networks
    # The HTTP listener's rule is the same one, plus its unix socket peers ("").
    for ip, loopback in LOOPBACK_TABLE:
        assert http.is_loopback(ip) is (loopback or ip == "")


def test_metrics_network_accepts_ipv4_mapped_client() -> None:
    """http.metrics_allowed_networks treats a dual-stack listener's ::ffff:a.b.c.d client as
    a.b.c.d, as server.max_connections_per_ip's exemptions do."""
    settings = make_settings(
        {
            "server.hostname": "mail.example.org",
            "http.metrics_allowed_networks": ["192.0.2.0/24"],
        }
    )
    service = HttpService(FakeServer(settings, FakeDirectory()))  # type: ignore[arg-type]
    request = Request(
        method="GET", path="/metrics", headers={"host": "example.org"}, client="::ffff:192.0.2.7"
    )
    assert service.respond(request).status == 200
    request = Request(
        method="GET", path="/metrics", headers={"host": "example.org"}, client="::ffff:10.0.0.7"
    )
    assert service.respond(request).status == 403
