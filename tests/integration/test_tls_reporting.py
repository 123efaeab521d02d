"""TLS-RPT end to end (RFC 8460): a real pochta delivers over STARTTLS (verified with a test
CA) to a local sink whose domain publishes ``_smtp._tls`` on a loopback ZoneServer; the
session's outcome is recorded in reports.db; ``pochta report send --tls`` (the report job's
run) queues the report of that whole UTC day to the rua through the maildrop, and the
restarted server's pickup sends it to the sink. A report mailed to tlsrpt@ our domain (the
alias ``report:tls`` that ``domain add`` makes) is stored and ``pochta report tls``
summarises it."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller

from pochta.checks import load_checked_settings
from pochta.mailauth.tls_report import parse_report, report_from_mail
from pochta.reports.tls_store import open_tls_db, sessions_between
from tests.dnsserver import ZoneServer
from tests.harness import (
    DOMAIN,
    client_tls,
    make_pochta_env,
    run_pochta,
    serve,
    set_key,
    wait_until,
)
from tests.integration.test_remote_agent import Sink, ca_file, free_port, server_tls

PASSWORD = "correct horse 1"


def _submit(port: int, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.starttls(context=client_tls())
        s.login(f"alice@{DOMAIN}", PASSWORD)
        s.sendmail(
            f"alice@{DOMAIN}",
            [to],
            f"From: alice@{DOMAIN}\r\nTo: {to}\r\nSubject: hi\r\n\r\nHello.\r\n".encode(),
        )


def test_outcome_recorded_and_report_queued_to_the_rua(tmp_path: Path) -> None:
    env = make_pochta_env(tmp_path / "data")
    env.add_user(f"alice@{DOMAIN}", PASSWORD)
    ca = trustme.CA()
    sink = Sink()
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        server_hostname="mx.remote.test",
        tls_context=server_tls(ca, "mx.remote.test"),
        require_starttls=True,
    )
    controller.start()
    zone_text = (
        "remote.test. 300 IN MX 10 mx.remote.test.\n"
        "mx.remote.test. 300 IN A 127.0.0.1\n"
        '_smtp._tls.remote.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@remote.test"\n'
    )
    try:
        with ZoneServer(zone_text, origin=".") as zone:
            set_key(env.config_path, "dns", "nameservers", f'["{zone.address}"]')
            set_key(env.config_path, "delivery", "smtp_port", str(port))
            set_key(env.config_path, "delivery", "tls_security_level", '"verify"')
            set_key(env.config_path, "delivery", "tls_ca_file", f'"{ca_file(ca, tmp_path)}"')
            start = time.time() - 1
            with serve(env.config_path) as server:
                _submit(env.ports["submission"], "bob@remote.test")
                server.wait_for("delivered")  # recorded, not sent again after the restart
            assert sink.messages[0].tls
            end = time.time() + 1

            settings = load_checked_settings(str(env.config_path))
            conn = open_tls_db(settings)
            found = sessions_between(conn, start, end)
            (outcome,) = found["remote.test"]
            assert outcome.success
            assert outcome.policy_type == "no-policy-found"
            assert (outcome.mx_host, outcome.receiving_ip) == ("mx.remote.test", "127.0.0.1")
            # TLS reports cover whole UTC days (RFC 8460 §4.1) and today is not over: move
            # the session to yesterday, as if the test had run then.
            conn.execute("UPDATE tls_sessions SET at = at - 86400")
            conn.close()

            sent = run_pochta("--config", str(env.config_path), "report", "send", "--tls")
            assert sent.returncode == 0, sent.stderr
            assert "remote.test to tlsrpt@remote.test" in sent.stdout, sent.stdout
            again = run_pochta("--config", str(env.config_path), "report", "send", "--tls")
            assert "no TLS reports due" in again.stdout, again.stdout  # a day is reported once

            with serve(env.config_path) as server:
                server.wait_for("delivered")
                # The sink records the message in its own thread: wait for it there too.
                assert wait_until(
                    lambda: any(m.rcpt_tos == ["tlsrpt@remote.test"] for m in sink.messages), 60
                )
            (report_mail,) = [m for m in sink.messages if m.rcpt_tos == ["tlsrpt@remote.test"]]
            assert report_mail.mail_from == "<>"
            msg = email.message_from_bytes(report_mail.content, policy=email.policy.default)
            assert msg["TLS-Report-Domain"] == "remote.test"
            assert msg["Subject"].startswith("Report Domain: remote.test Submitter: ")
            report = parse_report(report_from_mail(report_mail.content))
            (policy,) = report.policies
            assert policy.policy.policy_domain == "remote.test"
            assert policy.summary.total_successful_session_count == 1
            assert policy.summary.total_failure_session_count == 0
    finally:
        controller.stop()


def test_pochta_report_tls_summarises_received_reports(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from pochta.cli.report_tls import tls
    from pochta.reports.tls_store import ingest_tls_report
    from tests.unit.test_tls_store import _received

    env = make_pochta_env(tmp_path / "data")
    settings = load_checked_settings(str(env.config_path))
    conn = open_tls_db(settings)
    ingest_tls_report(conn, _received("google.com", "r1", 2), now=time.time())
    conn.close()
    runner = CliRunner()
    config = {"POCHTA_CONFIG": str(env.config_path)}
    result = runner.invoke(tls, ["--days", "3660"], env=config)
    assert result.exit_code == 0, result.output
    assert "ours.example  from google.com: 1 reports, 4 successful, 2 failed" in result.output
    assert "certificate-expired: 2 sessions (MX mx.ours.example)" in result.output
    result = runner.invoke(
        tls, ["--json", "--days", "3660", "--domain", "ours.example"], env=config
    )
    (row,) = json.loads(result.output)
    assert row["failures"] == {
        "certificate-expired": {"sessions": 2, "mx_hosts": ["mx.ours.example"]}
    }
    result = runner.invoke(tls, ["--domain", "other.example"], env=config)
    assert "No TLS reports about other.example" in result.output
