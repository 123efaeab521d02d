"""A SIGHUP that changes ``[dns]`` reaches the inbound checks, the client name lookup and
delivery (issue 14): the server is asked through the reload that SIGHUP runs, and answers
from the new name server.

Zone A says forged.test's SPF does not cover 127.0.0.1 (p=reject: refused); zone B, on another
loopback server, authorises 127.0.0.1 (SPF pass, aligned: delivered). Before the fix the
resolver made at start stayed, with its cache, and the second message was refused too.
"""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from tests.dnsserver import ZoneServer
from tests.harness import PochtaEnv, set_key
from tests.integration.test_inbound_auth import BOB, message, running, send_mx
from tests.integration.test_verdict_policy import mail_of, subject, wait_for_message

ZONE_B = """
forged.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=reject"
1.0.0.127.in-addr.arpa. 60 IN PTR client.forged.test.
client.forged.test. 60 IN A 127.0.0.1
"""


async def test_a_reload_with_a_new_name_server_reaches_the_checks(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env) as (server, _zone_a):
        port = pochta_env.ports["smtp"]
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(
                send_mx, port, "ceo@forged.test", [BOB], message("ceo@forged.test", "before")
            )
        assert refused.value.smtp_code == 550
        with ZoneServer(ZONE_B, origin=".") as zone_b:
            set_key(pochta_env.config_path, "dns", "nameservers", f'["{zone_b.address}"]')
            old_remote = mail_of(server).remote
            await server.reload()  # what SIGHUP runs (Server._on_sighup)
            assert mail_of(server).remote is not old_remote
            await asyncio.to_thread(
                send_mx, port, "ceo@forged.test", [BOB], message("ceo@forged.test", "after")
            )
            stored = await wait_for_message(server, "INBOX", subject("after"))
            assert b"spf=pass" in stored
            assert b"dmarc=pass" in stored
            # The client name (forward-confirmed PTR) is looked up in the new zone too.
            assert b"(client.forged.test [127.0.0.1])" in stored
