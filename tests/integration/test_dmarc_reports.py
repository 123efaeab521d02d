"""DMARC aggregate reports through a real server (issue 14 point 3): the evaluation of MX
mail is recorded, ``pochta report send`` queues a gzipped Appendix C report to the rua
address (a mailbox of another domain we host), a report mailed to ``dmarc-reports@`` our
domain is stored and ``pochta report dmarc`` summarises it, a TLS report mailed to
``tlsrpt@`` is stored and ``pochta report tls`` summarises it; ``domain add`` makes the
report aliases.

The server runs in this process (as in test_inbound_auth.py) with the inbound checks on;
every DNS answer comes from a zone server on loopback; the clients are smtplib and the real
``pochta`` command.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from email.message import EmailMessage

from pochta.checks import load_checked_settings
from pochta.mailauth.tls_report import TlsOutcome
from pochta.reports.attachments import report_documents
from pochta.reports.dmarc_xml import parse_report
from pochta.reports.store import insert_evaluation
from pochta.reports.tls_store import TlsRecorder, open_tls_db
from tests.dnsserver import ZoneServer
from tests.harness import DOMAIN, PochtaEnv, set_key
from tests.integration.test_inbound_auth import running, send_mx
from tests.integration.test_verdict_policy import wait_for_message
from tests.unit.test_dmarc_reports import GOOGLE, evaluation
from tests.unit.test_tls_store import _received as tls_received

BOB = f"bob@{DOMAIN}"
OTHER = "other.test"  # a second hosted domain: the rua mailbox is there
AGG = f"agg@{OTHER}"

# sender.test: SPF passes for 127.0.0.1, DMARC p=none with its reports to AGG, which
# agrees to receive them (RFC 7489 §7.1: other.test is another organizational domain).
ZONE = f"""
sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.sender.test. 60 IN TXT "v=DMARC1; p=none; rua=mailto:{AGG}"
sender.test._report._dmarc.{OTHER}. 60 IN TXT "v=DMARC1"
"""


def ok(env: PochtaEnv, *args: str) -> str:
    proc = env.run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


async def test_domain_add_makes_the_report_aliases(pochta_env: PochtaEnv) -> None:
    out = ok(pochta_env, "domain", "add", OTHER, "--no-dkim")
    assert f"report alias dmarc-reports@{OTHER} -> report:dmarc" in out
    aliases = ok(pochta_env, "alias", "list", OTHER).splitlines()
    assert aliases == [
        f"dmarc-reports@{OTHER} -> report:dmarc",
        f"tlsrpt@{OTHER} -> report:tls",
    ]
    # Editable like any alias: keep a copy in a mailbox too.
    pochta_env.add_user(BOB, "secret-pw-1")
    ok(pochta_env, "alias", "add", f"dmarc-reports@{OTHER}", "report:dmarc", BOB)
    assert f"dmarc-reports@{OTHER} -> report:dmarc, {BOB}" in ok(pochta_env, "alias", "list")


async def test_report_sent_to_the_rua_address_parses_back(pochta_env: PochtaEnv) -> None:
    ok(pochta_env, "domain", "add", OTHER, "--no-dkim")
    pochta_env.add_user(AGG, "secret-pw-2")
    async with running(pochta_env) as (server, zone):
        zone.load(ZONE)
        port = pochta_env.ports["smtp"]
        content = (
            f"From: <news@sender.test>\r\nTo: <{BOB}>\r\nSubject: hi\r\n"
            "Message-ID: <2@sender.test>\r\n\r\nhello\r\n"
        ).encode()
        await asyncio.to_thread(send_mx, port, "news@sender.test", [BOB], content)
        await wait_for_message(server, "INBOX", lambda c: b"Subject: hi" in c)
        # The evaluation is written within a second (the recorder's batch) and reported
        # once it is older than that (server/report_job.RECORDING_DELAY).
        out = ""
        for _ in range(100):
            out = await asyncio.to_thread(ok, pochta_env, "report", "send", "--dmarc")
            if "queued" in out:
                break
            await asyncio.sleep(0.1)
        assert f"queued: sender.test to {AGG}" in out
        mail = await wait_for_message(
            server, "INBOX", lambda c: b"Report Domain: sender.test" in c, account=AGG
        )
    assert b"Submitter: mail.example.test Report-ID: <" in mail
    assert b"From: dmarc-reports@mail.example.test" in mail
    [document] = report_documents(mail)
    report = parse_report(document)
    assert report.domain == "sender.test"
    assert report.policy["p"] == "none"
    [record] = report.records
    assert (record.source_ip, record.count, record.spf, record.header_from) == (
        "127.0.0.1",
        1,
        "pass",
        "sender.test",
    )
    assert record.auth["spf"] == [{"domain": "sender.test", "result": "pass"}]


async def test_report_mailed_to_us_is_stored_and_summarised(pochta_env: PochtaEnv) -> None:
    # pochta init made both report aliases; one removed by the admin comes back with
    # `domain report-aliases` (for domains added before the aliases existed).
    ok(pochta_env, "alias", "remove", f"dmarc-reports@{DOMAIN}")
    out = ok(pochta_env, "domain", "report-aliases")
    assert f"added dmarc-reports@{DOMAIN} -> report:dmarc" in out
    assert "tlsrpt" not in out
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc-support@google.test"
    msg["To"] = f"dmarc-reports@{DOMAIN}"
    msg["Subject"] = f"Report domain: {DOMAIN} Submitter: google.test Report-ID: 1"
    msg.set_content("An aggregate report.\n")
    msg.add_attachment(
        gzip.compress(GOOGLE), maintype="application", subtype="gzip", filename="g.xml.gz"
    )
    broken = EmailMessage()
    broken["From"] = "noreply@broken.test"
    broken["To"] = f"dmarc-reports@{DOMAIN}"
    broken["Subject"] = "not a report"
    broken.set_content("nothing attached\n")
    async with running(pochta_env) as (_server, _zone):
        port = pochta_env.ports["smtp"]
        for m, sender in ((msg, "noreply-dmarc-support@google.test"), (broken, "x@broken.test")):
            refused = await asyncio.to_thread(
                send_mx, port, sender, [f"dmarc-reports@{DOMAIN}"], m.as_bytes()
            )
            assert refused == {}
        # A TLS report (RFC 8460 §5.3 mail) to tlsrpt@, the alias -> report:tls.
        tls_mail = tls_received("google.com", "r1", 2)
        refused = await asyncio.to_thread(
            send_mx, port, "noreply@google.com", [f"tlsrpt@{DOMAIN}"], tls_mail
        )
        assert refused == {}
        tls_rows: list[dict[str, object]] = []
        for _ in range(500):
            tls_rows = json.loads(
                await asyncio.to_thread(ok, pochta_env, "report", "tls", "--json", "--days", "3660")
            )
            if tls_rows:
                break
            await asyncio.sleep(0.05)
        [row] = tls_rows
        assert (row["policy_domain"], row["organization"]) == ("ours.example", "google.com")
        assert row["failures"] == {
            "certificate-expired": {"sessions": 2, "mx_hosts": ["mx.ours.example"]}
        }
        summary: dict[str, object] = {}
        bad = pochta_env.data_dir / "reports" / "bad"
        for _ in range(500):
            summary = json.loads(
                await asyncio.to_thread(
                    ok, pochta_env, "report", "dmarc", "--json", "--days", "3650"
                )
            )
            if summary["sources"] and bad.is_dir() and any(bad.iterdir()):
                break
            await asyncio.sleep(0.05)
    sources = {s["source_ip"]: s for s in summary["sources"]}  # type: ignore[attr-defined]
    assert sources["192.0.2.10"]["messages"] == 12
    assert sources["192.0.2.10"]["pass"] == 12
    assert sources["203.0.113.7"]["fail"] == 3
    assert sources["203.0.113.7"]["spf_alignment_fail"] == 3
    assert sources["203.0.113.7"]["orgs"] == ["google.com"]
    [kept] = list(bad.iterdir())
    assert b"nothing attached" in kept.read_bytes()
    table = ok(pochta_env, "report", "dmarc", "--days", "3650")
    assert "SPF not aligned from: 203.0.113.7" in table


def test_report_send_forgets_rows_older_than_keep_days(pochta_env: PochtaEnv) -> None:
    """[reports] keep_days bounds reports.db: the report run removes older DMARC evaluations
    and TLS sessions, and keeps the recent ones."""
    settings = load_checked_settings(str(pochta_env.config_path))
    now = time.time()
    conn = open_tls_db(settings)
    for age_days in (40, 1):
        insert_evaluation(conn, evaluation(time=now - age_days * 86_400, rua=()))
        TlsRecorder(lambda: conn, clock=lambda a=age_days: now - a * 86_400)(
            TlsOutcome("quiet.test", "no-policy-found", (), "mx.quiet.test", "192.0.2.3")
        )
    set_key(pochta_env.config_path, "reports", "keep_days", "30")
    # quiet.test publishes no _smtp._tls record: the zone server answers so, on loopback.
    with ZoneServer("", origin=".") as zone:
        set_key(pochta_env.config_path, "dns", "nameservers", f'["{zone.address}"]')
        ok(pochta_env, "report", "send")
    times = [row[0] for row in conn.execute("SELECT time FROM dmarc_evaluations")]
    sessions = [row[0] for row in conn.execute("SELECT at FROM tls_sessions")]
    conn.close()
    assert [round((now - t) / 86_400) for t in times] == [1]
    assert [round((now - t) / 86_400) for t in sessions] == [1]
