"""DNS and URI blocklists with a real server: ``pochta init``'s config with [dnsbl] on, the
server's own cached resolver aimed at a loopback zone server (``[dns] nameservers``, as
``use_nameserver`` sets it) that holds the blocklist zones, a message sent by smtplib.

The scanner (``spam/scanner.py``) is not on main yet, so nothing in the server runs the
checks on its own: the test takes the message as it was delivered to the mailbox and runs
``spam.setup.build_checks`` over the server's settings, directory and resolver. Once the
scanner is there, the same test also expects the symbol in the delivered message's header.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from pochta.cleanup.verdict import Symbol
from pochta.config.load import load_settings
from pochta.server.app import Server
from pochta.spam.check import ScanInput
from pochta.spam.dnsbl import ClientBlocklists
from pochta.spam.message import ScanMessage
from pochta.spam.setup import build_checks
from pochta.spam.uribl import UriBlocklists
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, PochtaEnv, serving_in_process, set_key, use_nameserver
from tests.integration.test_verdict_policy import mail_of, subject, wait_for_message

BOB = f"bob@{DOMAIN}"
CLIENT = "81.2.69.160"  # a global address, only ever a name in the loopback zone
# The blocklist zones live on the loopback server under their real names: the server asks
# nothing else (its [dns] nameservers is that server alone).
ZONE = f"""
spam.test.dbl.spamhaus.org. 60 IN A 127.0.1.2
{DOMAIN}.dbl.spamhaus.org. 60 IN A 127.0.1.2
160.69.2.81.zen.spamhaus.org. 60 IN A 127.0.0.2
1.0.0.127.zen.spamhaus.org. 60 IN A 127.0.0.2
"""


@asynccontextmanager
async def running(env: PochtaEnv) -> AsyncIterator[tuple[Server, ZoneServer]]:
    """``pochta serve`` in this process, [dnsbl] on, DNS from a loopback zone server."""
    async with AsyncExitStack() as stack:
        zone = stack.enter_context(ZoneServer(ZONE, origin="."))
        set_key(env.config_path, "server", "processes", "1")
        use_nameserver(env.config_path, zone.address)
        set_key(env.config_path, "dnsbl", "enabled", "true")
        set_key(env.config_path, "dnsbl", "client_zones", '["zen.spamhaus.org"]')
        set_key(env.config_path, "dnsbl", "uri_zones", '["dbl.spamhaus.org"]')
        server = await stack.enter_async_context(serving_in_process(env.config_path))
        yield server, zone


def send(port: int, content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as client:
        return client.sendmail("news@sender.test", [BOB], content)


async def scan(server: Server, content: bytes, client_ip: str) -> list[Symbol]:
    checks = build_checks(
        server.settings, directory=server.directory, dns_resolver=mail_of(server).dns_resolver
    )
    found: list[Symbol] = []
    for check in checks:
        if not isinstance(check, ClientBlocklists | UriBlocklists):
            continue  # the other checks have their own tests
        found += await check(
            ScanInput(
                message=ScanMessage(content),
                sender="news@sender.test",
                recipients=[BOB],
                client_ip=client_ip,
                helo="client.test",
                from_mx=True,
            )
        )
    return found


def test_pochta_env_switches_the_blocklists_off(pochta_env: PochtaEnv) -> None:
    """Tests never ask the real zones: make_pochta_env turns [dnsbl] off."""
    settings = load_settings(pochta_env.config_path)
    assert settings.dnsbl.enabled is False
    assert settings.dnsbl.client_zones == ["zen.spamhaus.org"]  # what init writes, unused


async def test_listed_link_domain_gets_the_symbol(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(BOB, "secret-pw-1")
    async with running(pochta_env) as (server, zone):
        content = (
            f"From: <news@sender.test>\r\nTo: <{BOB}>\r\nSubject: cheap pills\r\n"
            "Message-ID: <1@sender.test>\r\nContent-Type: text/html\r\n\r\n"
            '<p><a href="http://www.spam.test/buy">our shop</a> or '
            f'<a href="https://mail.{DOMAIN}/">your mailbox</a></p>\r\n'
        ).encode()
        assert await asyncio.to_thread(send, pochta_env.ports["smtp"], content) == {}
        # DBL_SPAM (6.5) alone reaches [spam] junk_score (6): the server filed it as Junk.
        delivered = await wait_for_message(server, "Junk", subject("cheap pills"))
        header = delivered.split(b"\r\n\r\n", 1)[0]
        assert b"DBL_SPAM(6.50)" in header, header.decode(errors="replace")
        symbols = {s.name: s for s in await scan(server, delivered, CLIENT)}
        assert set(symbols) == {"DBL_SPAM", "RBL_ZEN_SBL"}
        assert symbols["DBL_SPAM"].options == ("spam.test",)
        assert symbols["DBL_SPAM"].score == 6.5
        asked = [name for name, _ in zone.queries]
        assert "spam.test.dbl.spamhaus.org." in asked
        assert f"{DOMAIN}.dbl.spamhaus.org." not in asked  # hosted: never asked
        # The real client (127.0.0.1, loopback) is not asked, even though the zone lists it.
        assert [s.name for s in await scan(server, delivered, "127.0.0.1")] == ["DBL_SPAM"]
        assert "1.0.0.127.zen.spamhaus.org." not in [name for name, _ in zone.queries]
