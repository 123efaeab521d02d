"""RFC 8460 reports over bytes (mailauth/tls_report.py): the §4.4 example, build -> JSON ->
parse, gzip, the §5.3 mail, the §3 record, bombs and bad types, failure classification."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import gzip
import json

import pytest

from pochta.mailauth.tls_report import (
    TlsOutcome,
    TlsReportError,
    build_report,
    classify_failure,
    parse_report,
    parse_tlsrpt_record,
    report_from_mail,
    report_gzip,
    report_json,
    report_mail,
    sts_policy_string,
)

# RFC 8460 §4.4 example, with the additional-information URL on one line (the RFC prints it
# wrapped, which is not valid JSON).
RFC_EXAMPLE = """{
  "organization-name": "Company-X",
  "date-range": {
    "start-datetime": "2016-04-01T00:00:00Z",
    "end-datetime": "2016-04-01T23:59:59Z"
  },
  "contact-info": "sts-reporting@company-x.example",
  "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
  "policies": [{
    "policy": {
      "policy-type": "sts",
      "policy-string": ["version: STSv1","mode: testing",
            "mx: *.mail.company-y.example","max_age: 86400"],
      "policy-domain": "company-y.example",
      "mx-host": ["*.mail.company-y.example"]
    },
    "summary": {
      "total-successful-session-count": 5326,
      "total-failure-session-count": 303
    },
    "failure-details": [{
      "result-type": "certificate-expired",
      "sending-mta-ip": "2001:db8:abcd:0012::1",
      "receiving-mx-hostname": "mx1.mail.company-y.example",
      "failed-session-count": 100
    }, {
      "result-type": "starttls-not-supported",
      "sending-mta-ip": "2001:db8:abcd:0013::1",
      "receiving-mx-hostname": "mx2.mail.company-y.example",
      "receiving-ip": "203.0.113.56",
      "failed-session-count": 200,
      "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"
    }, {
      "result-type": "validation-failure",
      "sending-mta-ip": "198.51.100.62",
      "receiving-ip": "203.0.113.58",
      "receiving-mx-hostname": "mx-backup.mail.company-y.example",
      "failed-session-count": 3,
      "failure-error-code": "X509_V_ERR_PROOF_OF_POSSESSION_INVALID"
    }]
  }]
}"""

START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 5, 2, tzinfo=dt.UTC)


def _outcomes() -> list[TlsOutcome]:
    sts = sts_policy_string("enforce", ["mx.example.net"])
    ok = TlsOutcome("example.net", "sts", sts, "mx.example.net", "192.0.2.1")
    bad = TlsOutcome(
        "example.net", "sts", sts, "mx.example.net", "192.0.2.1", "", "certificate-expired"
    )
    return [ok, ok, ok, bad, bad]


def test_the_rfc_example_parses() -> None:
    report = parse_report(RFC_EXAMPLE.encode())
    assert report.organization_name == "Company-X"
    assert report.date_range.start_datetime == dt.datetime(2016, 4, 1, tzinfo=dt.UTC)
    (policy,) = report.policies
    assert policy.policy.policy_type == "sts"
    assert policy.policy.mx_host == ("*.mail.company-y.example",)
    assert policy.summary.total_successful_session_count == 5326
    assert [f.result_type for f in policy.failure_details] == [
        "certificate-expired",
        "starttls-not-supported",
        "validation-failure",
    ]
    assert policy.failure_details[1].receiving_ip == "203.0.113.56"
    assert policy.failure_details[2].failure_error_code.startswith("X509_V_ERR")


def test_build_json_parse_round_trip() -> None:
    report = build_report(
        _outcomes(),
        organization="mail.example.org",
        contact="postmaster@mail.example.org",
        report_id="r1@mail.example.org",
        start=START,
        end=END,
    )
    data = json.loads(report_json(report))
    assert data["date-range"]["start-datetime"] == "2024-05-01T00:00:00Z"
    policy = data["policies"][0]
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["policy"]["policy-string"] == [
        "version: STSv1",
        "mode: enforce",
        "mx: mx.example.net",
    ]
    assert policy["policy"]["mx-host"] == ["mx.example.net"]
    assert policy["summary"] == {
        "total-successful-session-count": 3,
        "total-failure-session-count": 2,
    }
    assert policy["failure-details"] == [
        {
            "result-type": "certificate-expired",
            "receiving-mx-hostname": "mx.example.net",
            "receiving-ip": "192.0.2.1",
            "failed-session-count": 2,
        }
    ]
    assert parse_report(report_json(report)) == report
    gz = report_gzip(report)
    assert gz[:2] == b"\x1f\x8b"
    assert gzip.decompress(gz) == report_json(report)
    assert parse_report(gz) == report


def test_report_mail_follows_section_5_3() -> None:
    report = build_report(
        _outcomes(), organization="o", contact="c", report_id="r1@sub", start=START, end=END
    )
    raw = report_mail(
        report,
        policy_domain="example.net",
        submitter="mail.example.org",
        from_address="noreply-tlsrpt@mail.example.org",
        to=["tlsrpt@example.net"],
        boundary="b1",
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert (
        msg["Subject"]
        == "Report Domain: example.net Submitter: mail.example.org Report-ID: <r1@sub>"
    )
    assert msg["TLS-Report-Domain"] == "example.net"
    assert msg["TLS-Report-Submitter"] == "mail.example.org"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    parts = [p for p in msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
    assert len(parts) == 1
    assert parts[0].get_filename() == "mail.example.org!example.net!1714521600!1714608000.json.gz"
    assert parse_report(report_from_mail(raw)) == report


def test_a_compression_bomb_is_refused() -> None:
    bomb = gzip.compress(b"{" + b" " * (11 * 1024 * 1024) + b"}")
    assert len(bomb) < 1024 * 1024
    with pytest.raises(TlsReportError, match="expands to more than"):
        parse_report(bomb)


def test_too_big_inputs_are_refused() -> None:
    with pytest.raises(TlsReportError, match="compressed report is"):
        parse_report(b"\x1f\x8b" + b"x" * 100, max_compressed=50)
    with pytest.raises(TlsReportError, match="more than the 10 allowed"):
        parse_report(b"{" + b" " * 20 + b"}", max_report=10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": "3"}),
            r"Expected `int`, got `str` - at `\$.policies\[0\].summary",
        ),
        (lambda d: d["policies"][0]["policy"].update({"policy-type": "smtp"}), r"policy-type"),
        (
            lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": -1}),
            r"Expected `int` >= 0",
        ),
        (lambda d: d.pop("report-id"), r"missing required field `report-id`"),
        (lambda d: d["date-range"].update({"start-datetime": "yesterday"}), r"start-datetime"),
    ],
)
def test_bad_types_are_refused_with_the_field(change, message) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(RFC_EXAMPLE)
    change(data)
    with pytest.raises(TlsReportError, match=message):
        parse_report(json.dumps(data).encode())


def test_not_json_and_broken_gzip() -> None:
    with pytest.raises(TlsReportError, match="not JSON"):
        parse_report(b"<xml/>")
    with pytest.raises(TlsReportError, match=r"truncated|not valid gzip"):
        parse_report(gzip.compress(RFC_EXAMPLE.encode())[:30])
    with pytest.raises(TlsReportError, match="no application/tlsrpt"):
        report_from_mail(b"Subject: hi\r\n\r\nhello\r\n")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "451 4.7.4 TLS is required, but mx[192.0.2.1]:25 does not offer STARTTLS",
            "starttls-not-supported",
        ),
        (
            "451 4.7.4 TLS is required, but mx refused STARTTLS: 454 4.7.0 no",
            "starttls-not-supported",
        ),
        (
            "550 5.7.30 Sender requested REQUIRETLS, but mx does not offer STARTTLS",
            "starttls-not-supported",
        ),
        (
            "451 4.7.5 TLS with mx failed: server certificate not verified: "
            "certificate has expired",
            "certificate-expired",
        ),
        (
            "451 4.7.5 TLS with mx failed: server certificate not verified: Hostname mismatch, "
            "certificate is not valid for 'mx.example.net'.",
            "certificate-host-mismatch",
        ),
        (
            "451 4.7.5 TLS with mx failed: server certificate not verified: "
            "self-signed certificate",
            "certificate-not-trusted",
        ),
        (
            "451 4.7.5 TLS with mx failed: server certificate not verified: unable to get local "
            "issuer certificate",
            "certificate-not-trusted",
        ),
        (
            "451 4.7.5 TLS with mx failed: certificate does not match the TLSA records",
            "tlsa-invalid",
        ),
        (
            "550 5.7.10 Sender requested REQUIRETLS, but TLS with mx failed: "
            "certificate has expired",
            "certificate-expired",
        ),
        ("451 4.7.5 TLS with mx failed: WRONG_VERSION_NUMBER", "validation-failure"),
        ("451 4.4.1 Connection to mx[192.0.2.1]:25 refused", None),
        ("451 4.3.0 Host mx refused to talk to me: 554 go away", None),
    ],
)
def test_failure_reasons_map_to_section_4_3(reply: str, expected: str | None) -> None:
    assert classify_failure(reply) == expected


def test_the_tlsrpt_record() -> None:
    record = parse_tlsrpt_record(
        ["v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls%2Breports@example.net,https://r.example.net/x;"]
    )
    assert record.mailto == ("tls+reports@example.net",)
    assert record.https == ("https://r.example.net/x",)
    with pytest.raises(TlsReportError, match="no TLSRPT record"):
        parse_tlsrpt_record(["v=spf1 -all"])
    with pytest.raises(TlsReportError, match="2 TLSRPT records"):
        parse_tlsrpt_record(["v=TLSRPTv1; rua=mailto:a@x", "v=TLSRPTv1;rua=mailto:b@x"])
    with pytest.raises(TlsReportError, match="no usable rua"):
        parse_tlsrpt_record(["v=TLSRPTv1; rua=ftp://x"])
