"""Inbound SPF, DKIM and DMARC (issue 14, point 1) through a real server: the SPF policy at
MAIL FROM, cleanup's auth filter, the Authentication-Results field, the verdict in the queue
and its decisions (550 5.7.1 at the end of DATA, Junk, 550 5.7.23 at MAIL FROM).

The server runs in this process (one process), as in test_verdict_policy.py; every DNS
answer comes from a zone server on loopback (tests/dnsserver.py); clients are smtplib's.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import dkim
import pytest

from pochta.mime.headers import split_message
from pochta.server.app import Server
from tests.dnsserver import ZoneServer
from tests.factories import make_rsa_dkim_key
from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, serving_in_process, set_key
from tests.integration.test_verdict_policy import mail_of, subject, wait_for_message

BOB = f"bob@{DOMAIN}"
PASSWORD = "secret-pw-1"
HELO = "helo.client.test"
SELECTOR = "sel"

PRIVATE_PEM, DKIM_TXT = make_rsa_dkim_key()


def _txt(value: str) -> str:
    """A TXT rdata in zone-file syntax, split into strings of at most 255 characters."""
    return " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))


# forged.test: p=reject, SPF only for an address that is not ours (127.0.0.1 sends).
# good.test: p=reject, SPF for 127.0.0.1, and the DKIM key of SELECTOR.
# lists.test: a mailing list whose ARC key is ARC_SELECTOR (the same key pair, for brevity).
# example.test (our hosted domain): p=reject with an SPF that 127.0.0.1 fails: a submission
# checked as MX mail would be refused.
ZONE = f"""
forged.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=reject"
good.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.good.test. 60 IN TXT "v=DMARC1; p=reject"
{SELECTOR}._domainkey.good.test. 60 IN TXT {_txt(DKIM_TXT.decode())}
{DOMAIN}. 60 IN TXT "v=spf1 ip4:192.0.2.9 -all"
arc._domainkey.lists.test. 60 IN TXT {_txt(DKIM_TXT.decode())}
_dmarc.{DOMAIN}. 60 IN TXT "v=DMARC1; p=reject"
"""


@asynccontextmanager
async def running(env: PochtaEnv, **mailauth: str) -> AsyncIterator[tuple[Server, ZoneServer]]:
    """``pochta serve`` in this process with the checks on and ``[mailauth]`` overrides."""
    env.add_user(BOB, PASSWORD)
    async with AsyncExitStack() as stack:
        zone = stack.enter_context(ZoneServer(ZONE, origin="."))
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "2.0")
        set_key(env.config_path, "delivery", "relayhost", '"[127.0.0.1]:9"')  # remote: queued
        set_key(env.config_path, "auth", "allow_plaintext_on_loopback", "true")
        set_key(env.config_path, "mailauth", "check_incoming", "true")
        for key, value in mailauth.items():
            set_key(env.config_path, "mailauth", key, value)
        server = await stack.enter_async_context(
            serving_in_process(env.config_path, ("smtp", "submission"))
        )
        yield server, zone


def message(sender: str, title: str, extra: str = "") -> bytes:
    return (
        f"{extra}From: <{sender}>\r\nTo: <{BOB}>\r\nSubject: {title}\r\n"
        "Message-ID: <1@client.test>\r\n\r\nhello\r\n"
    ).encode()


def signed(content: bytes) -> bytes:
    signature = dkim.sign(
        content,
        SELECTOR.encode(),
        b"good.test",
        PRIVATE_PEM,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return signature + content


def send_mx(port: int, sender: str, recipients: list[str], content: bytes) -> object:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=HELO) as client:
        return client.sendmail(sender, recipients, content)


def auth_results(content: bytes) -> list[str]:
    """Each Authentication-Results value, unfolded (a fold and its white space: one space)."""
    fields = split_message(content).get_all("authentication-results")
    return [re.sub(r"\r?\n[ \t]+", " ", h.text) for h in fields]


async def test_forged_mail_from_a_reject_domain_is_refused_at_end_of_data(
    pochta_env: PochtaEnv,
) -> None:
    async with running(pochta_env) as (server, _zone):
        port = pochta_env.ports["smtp"]
        content = message("ceo@forged.test", "forged")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send_mx, port, "ceo@forged.test", [BOB], content)
        assert refused.value.smtp_code == 550
        text = refused.value.smtp_error.decode()
        assert text.startswith("5.7.1 DMARC policy of forged.test rejects this message"), text
        assert "no aligned DKIM or SPF pass" in text
        assert mail_of(server).store.list_messages(BOB, "INBOX") == []


async def test_dmarc_reject_as_quarantine_delivers_to_junk(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env, dmarc_reject_action='"quarantine"') as (server, _zone):
        port = pochta_env.ports["smtp"]
        content = message("ceo@forged.test", "to junk")
        assert await asyncio.to_thread(send_mx, port, "ceo@forged.test", [BOB], content) == {}
        got = await wait_for_message(server, "Junk", subject("to junk"))
        [found] = auth_results(got)
        assert found.startswith(f"{HOSTNAME}; spf=fail"), found
        assert "dkim=none" in found
        assert "dmarc=fail" in found
        assert "header.from=forged.test" in found


async def test_signed_mail_passes_and_carries_the_results(pochta_env: PochtaEnv) -> None:
    forged = (
        f"Authentication-Results: {HOSTNAME.upper()}; dkim=pass header.d=forged.test\r\n"
        f"Authentication-Results: (comment) {HOSTNAME} 1; dmarc=pass\r\n"
        "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@good.test\r\n"
    )
    async with running(pochta_env) as (server, _zone):
        port = pochta_env.ports["smtp"]
        content = signed(message("alice@good.test", "good", forged))
        # An alias to a remote address: that copy stays queued (its relay host is down).
        pochta_env.run("alias", "add", f"away@{DOMAIN}", "carol@nowhere.test", check=True)
        recipients = [BOB, f"away@{DOMAIN}"]
        assert await asyncio.to_thread(send_mx, port, "alice@good.test", recipients, content) == {}
        got = await wait_for_message(server, "INBOX", subject("good"))
        results = auth_results(got)
        # RFC 8601 §5: the forged fields claiming our host name are gone, others stay.
        assert len(results) == 2, results
        ours, theirs = results
        assert theirs.startswith("other.example; spf=pass")
        # Ours on top of what we received (below delivery's Return-Path and Delivered-To).
        # (The ARC set of the forwarded copy, srs.seal_forwarded, rides along: one content;
        # the spam filter's X-Spam-* fields, prepended after it, are not this test's.)
        keys = [
            h.key for h in split_message(got).headers if not h.key.startswith(("arc-", "x-spam-"))
        ]
        assert keys[:4] == ["return-path", "delivered-to", "authentication-results", "received"]
        words = ours
        assert words.startswith(
            f"{HOSTNAME}; spf=pass smtp.mailfrom=alice@good.test; dkim=pass header.d=good.test"
        ), words
        assert f"header.s={SELECTOR}" in words
        assert "header.b=" in words
        assert words.endswith("dmarc=pass header.from=good.test policy.dmarc=reject"), words

        # `pochta queue show`: the verdict with every result.
        [queued] = json.loads(pochta_env.run("queue", "list", "--json", check=True).stdout)
        shown = pochta_env.run("queue", "show", queued["queue_id"], check=True).stdout
        assert "verdict: accept" in shown
        assert "  auth: spf=pass smtp.mailfrom=alice@good.test\n" in shown
        assert "  auth: dkim=pass header.d=good.test" in shown
        assert "  auth: dmarc=pass header.from=good.test policy.dmarc=reject\n" in shown


async def test_spf_reject_refuses_at_mail_from(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env, spf_reject="true") as (_server, _zone):
        port = pochta_env.ports["smtp"]
        content = message("ceo@forged.test", "spf")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await asyncio.to_thread(send_mx, port, "ceo@forged.test", [BOB], content)
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(b"5.7.23 SPF validation failed")
        # A pass is not refused.
        good = signed(message("alice@good.test", "spf pass"))
        assert await asyncio.to_thread(send_mx, port, "alice@good.test", [BOB], good) == {}


async def test_submission_mail_is_not_checked(pochta_env: PochtaEnv) -> None:
    async with running(pochta_env) as (server, zone):

        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", pochta_env.ports["submission"]) as client:
                client.login(BOB, PASSWORD)
                client.sendmail(BOB, [BOB], message(BOB, "submitted"))

        await asyncio.to_thread(submit)
        got = await wait_for_message(server, "INBOX", subject("submitted"))
        assert auth_results(got) == []
        asked = {name for name, _type in zone.queries}
        assert f"_dmarc.{DOMAIN}." not in asked
        assert f"{DOMAIN}." not in asked


def through_list(content: bytes) -> bytes:
    """What a mailing list at lists.test sends on: it checked the author's mail (DKIM and
    DMARC pass there), tagged the subject (which breaks the author's DKIM signature) and
    ARC-sealed the result with dkimpy's sealer."""
    changed = content.replace(b"Subject: via list\r\n", b"Subject: [list] via list\r\n")
    checked = (
        b"Authentication-Results: lists.test; dkim=pass header.d=good.test;\r\n"
        b"\tdmarc=pass header.from=good.test\r\n" + changed
    )
    arc_set = dkim.arc_sign(checked, b"arc", b"lists.test", PRIVATE_PEM, b"lists.test")
    assert arc_set
    return b"".join(arc_set) + checked


@pytest.mark.parametrize("trusted", [True, False])
async def test_list_mail_with_a_trusted_arc_seal_is_delivered(
    pochta_env: PochtaEnv, trusted: bool
) -> None:
    """RFC 8617 §7.2.1: good.test says p=reject; the list's change breaks DKIM and the list
    sends from its own address, so DMARC fails here. A trusted sealer's ARC chain saves it;
    an untrusted one does not."""
    sealers = '["lists.test"]' if trusted else "[]"
    async with running(pochta_env, trusted_arc_sealers=sealers) as (server, _zone):
        port = pochta_env.ports["smtp"]
        content = through_list(signed(message("alice@good.test", "via list")))
        sender = "list-bounces@lists.test"
        if not trusted:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await asyncio.to_thread(send_mx, port, sender, [BOB], content)
            assert refused.value.smtp_code == 550
            text = refused.value.smtp_error.decode()
            assert text.startswith("5.7.1 DMARC policy of good.test rejects this message"), text
            assert mail_of(server).store.list_messages(BOB, "INBOX") == []
            return
        assert await asyncio.to_thread(send_mx, port, sender, [BOB], content) == {}
        got = await wait_for_message(server, "INBOX", subject("[list] via list"))
        [ours, _lists] = auth_results(got)
        assert ours.startswith(f"{HOSTNAME}; spf=none"), ours
        assert "dkim=fail" in ours
        assert "arc=pass header.oldest-pass=0; dmarc=fail" in ours, ours
