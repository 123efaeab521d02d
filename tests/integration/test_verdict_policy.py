"""The seams of issue 13 through a real server: the recipient policy hook at MAIL FROM and
RCPT TO, the client's forward-confirmed name, the verdict of cleanup's filters (stored in
the queue, shown by `pochta queue show`, choosing the folder) and +extension folders.

The server runs in this process (one process: ``server.processes = 1``) so a test can plug
its own policies and filters into ``server.mail`` (the lists MailSystem builds); clients are
smtplib's, in their default configuration.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack

import pytest

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.protocols.smtp.replies import Reply
from pochta.receive.policy import PolicyRequest
from pochta.server.app import Server
from pochta.server.mail import MailSystem
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, PochtaEnv, serving_in_process, set_key

BOB = f"bob@{DOMAIN}"
# 127.0.0.5: PTR and A agree; 127.0.0.6: the PTR names a host whose A is elsewhere;
# 127.0.0.7: no PTR at all.
ZONE = """
5.0.0.127.in-addr.arpa. 60 IN PTR good.client.test.
good.client.test. 60 IN A 127.0.0.5
6.0.0.127.in-addr.arpa. 60 IN PTR liar.client.test.
liar.client.test. 60 IN A 192.0.2.6
"""


@pytest.fixture
async def server(pochta_env: PochtaEnv) -> AsyncIterator[Server]:
    env = pochta_env
    env.add_user(BOB, "secret-pw-1")
    with ExitStack() as stack:
        zone = stack.enter_context(ZoneServer(ZONE, origin="."))
        set_key(env.config_path, "server", "processes", "1")
        set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        set_key(env.config_path, "dns", "timeout_seconds", "2.0")
        set_key(env.config_path, "delivery", "save_to_detail_mailbox", "true")
        # Remote mail waits in the queue: its relay host refuses connections.
        set_key(env.config_path, "delivery", "relayhost", '"[127.0.0.1]:9"')
        set_key(env.config_path, "auth", "allow_plaintext_on_loopback", "true")
        async with serving_in_process(env.config_path) as running:
            yield running


def mail_of(server: Server) -> MailSystem:
    assert server.mail is not None
    return server.mail


def send(
    port: int, sender: str, recipients: list[str], subject: str, source: str = "127.0.0.1"
) -> dict[str, tuple[int, bytes]]:
    message = f"From: <{sender}>\r\nTo: <{BOB}>\r\nSubject: {subject}\r\n\r\nhello\r\n"
    with smtplib.SMTP(
        "127.0.0.1", port, local_hostname="helo.client.test", source_address=(source, 0)
    ) as client:
        return client.sendmail(sender, recipients, message.encode())


async def wait_for_message(
    server: Server, folder: str, check: Callable[[bytes], bool], account: str = BOB
) -> bytes:
    store = mail_of(server).store
    for _ in range(500):
        if any(f.name == folder for f in store.list_folders(account)):
            for info in store.list_messages(account, folder):
                content = store.fetch_message(account, folder, info.uid)
                if check(content):
                    return content
        await asyncio.sleep(0.02)
    raise AssertionError(f"no such message in {folder}")


def subject(text: str) -> Callable[[bytes], bool]:
    return lambda content: f"Subject: {text}\r\n".encode() in content


async def test_policies_see_mail_and_rcpt_and_may_refuse(
    server: Server, pochta_env: PochtaEnv
) -> None:
    asked: list[PolicyRequest] = []

    async def greylist(request: PolicyRequest) -> Reply | None:
        asked.append(request)
        if request.sender.startswith("spammer@"):
            return Reply(550, "5.7.23", "SPF says no")  # RFC 7372 §3.2
        if request.recipient.startswith("bob+later@"):
            return Reply(450, "4.7.1", "Greylisted, try again later")
        return None

    async def broken(request: PolicyRequest) -> Reply | None:
        if request.recipient.startswith("bob+broken@"):
            raise RuntimeError("policy daemon gone")
        return None

    mail_of(server).policies.extend([greylist, broken])
    port = pochta_env.ports["smtp"]
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await asyncio.to_thread(send, port, "spammer@far.test", [BOB], "no", "127.0.0.5")
    assert (refused.value.smtp_code, refused.value.smtp_error) == (550, b"5.7.23 SPF says no")
    recipients = [BOB, f"bob+later@{DOMAIN}", f"bob+broken@{DOMAIN}", f"nobody@{DOMAIN}"]
    failed = await asyncio.to_thread(
        send, port, "alice@far.test", recipients, "policy", "127.0.0.5"
    )
    assert failed[f"bob+later@{DOMAIN}"] == (450, b"4.7.1 Greylisted, try again later")
    assert failed[f"bob+broken@{DOMAIN}"][0] == 451
    assert failed[f"nobody@{DOMAIN}"][0] == 550  # refused by the server before any policy
    assert BOB not in failed
    await wait_for_message(server, "INBOX", subject("policy"))

    mail = [r for r in asked if r.stage == "mail"]
    rcpt = [r for r in asked if r.stage == "rcpt"]
    assert [r.sender for r in mail] == ["spammer@far.test", "alice@far.test"]
    assert [r.recipient for r in rcpt] == recipients[:3]  # nobody@ never reached a policy
    for request in asked:
        assert request.client_ip == "127.0.0.5"
        assert request.client_hostname == "good.client.test"
        assert request.helo == "helo.client.test"
        assert request.auth_user == ""
        assert request.listener == "smtp"
    assert {r.sender for r in rcpt} == {"alice@far.test"}


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("127.0.0.5", "good.client.test"),  # PTR confirmed by A
        ("127.0.0.6", "unknown"),  # PTR whose A does not give the IP back
        ("127.0.0.7", "unknown"),  # no PTR
    ],
)
async def test_received_names_the_client_only_when_confirmed(
    server: Server, pochta_env: PochtaEnv, source: str, shown: str
) -> None:
    names: list[str] = []

    async def record(request: PolicyRequest) -> Reply | None:
        names.append(request.client_hostname)
        return None

    mail_of(server).policies.append(record)
    port = pochta_env.ports["smtp"]
    await asyncio.to_thread(send, port, "alice@far.test", [BOB], f"from {source}", source)
    content = await wait_for_message(server, "INBOX", subject(f"from {source}"))
    assert f"Received: from helo.client.test ({shown} [{source}])".encode() in content
    assert names == [shown if shown != "unknown" else ""] * 2  # MAIL and RCPT


async def test_filters_pass_results_and_the_verdict_picks_the_folder(
    server: Server, pochta_env: PochtaEnv
) -> None:
    mail = mail_of(server)

    async def authenticate(result: CleanupResult, info: CleanupInput) -> CleanupResult:
        return result.add_auth_result("spf", "fail", smtp_mailfrom=info.sender)

    async def score(result: CleanupResult, info: CleanupInput) -> CleanupResult:
        if any(a.result == "fail" for a in result.verdict.auth_results("spf")):
            result = result.add_symbol("R_SPF_FAIL", 6.0, "SPF failed", [info.sender])
            return result.decide("folder", "SPF fail", folder="Junk")
        return result

    mail.cleanup.filters[:0] = [authenticate, score]
    mail.store.delete_folder(BOB, "Junk")  # made with the account: gone, to be made again
    assert "Junk" not in {f.name for f in mail.store.list_folders(BOB)}

    # One local and one remote recipient: the remote copy stays queued (its relay is down).
    def submit() -> None:
        message = f"From: <{BOB}>\r\nSubject: junk\r\n\r\nhello\r\n".encode()
        with smtplib.SMTP("127.0.0.1", pochta_env.ports["submission"]) as client:
            client.login(BOB, "secret-pw-1")
            client.sendmail(BOB, [BOB, "carol@nowhere.test"], message)

    await asyncio.to_thread(submit)
    await wait_for_message(server, "Junk", subject("junk"))  # Junk was created for it

    [queued] = json.loads(pochta_env.run("queue", "list", "--json", check=True).stdout)
    shown = pochta_env.run("queue", "show", queued["queue_id"], check=True).stdout
    assert "verdict: folder, score 6\n" in shown
    assert "  reason: SPF fail\n" in shown
    assert "  folder: Junk\n" in shown
    assert "  auth: spf=fail smtp.mailfrom=bob@example.test\n" in shown
    assert "  symbol: R_SPF_FAIL (6) SPF failed [bob@example.test]\n" in shown


async def test_the_extension_names_an_existing_folder(
    server: Server, pochta_env: PochtaEnv
) -> None:
    store = mail_of(server).store
    await asyncio.to_thread(send, pochta_env.ports["smtp"], "a@far.test", [BOB], "first")
    await wait_for_message(server, "INBOX", subject("first"))  # the account exists on disk
    store.create_folder(BOB, "lists")
    port = pochta_env.ports["smtp"]
    await asyncio.to_thread(send, port, "a@far.test", [f"bob+lists@{DOMAIN}"], "to lists")
    await asyncio.to_thread(send, port, "a@far.test", [f"bob+nothere@{DOMAIN}"], "to nothere")
    await wait_for_message(server, "lists", subject("to lists"))
    await wait_for_message(server, "INBOX", subject("to nothere"))
    assert "nothere" not in {f.name for f in store.list_folders(BOB)}

    # LMTP delivers the same way (Dovecot's lmtp_save_to_detail_mailbox).
    def lmtp() -> dict[str, tuple[int, bytes]]:
        with smtplib.LMTP(str(pochta_env.data_dir / "lmtp.sock")) as client:
            message = "From: <a@far.test>\r\nSubject: by lmtp\r\n\r\nhi\r\n"
            return client.sendmail("a@far.test", [f"bob+lists@{DOMAIN}"], message.encode())

    assert await asyncio.to_thread(lmtp) == {}
    await wait_for_message(server, "lists", subject("by lmtp"))
