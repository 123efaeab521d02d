"""SMTP TLS Reporting (RFC 8460): the report, its mail, its DNS record, over bytes.

Pure: no I/O. The delivery agent hands a ``TlsOutcome`` per new outbound session to a
recorder (``reports/tls_store.py``); the daily sender (``reports/tls_sender.py``) groups them
into a ``TlsReport`` with ``build_report``, finds where to send it with ``parse_tlsrpt_record``
(§3) and sends ``report_gzip`` by mail (``report_mail``, §5.3) or HTTPS POST (§5.4). A report
received about our own domains is read back with ``parse_report`` (gzip or plain JSON, with
size limits on both, strict types, every error a ``TlsReportError`` saying what is wrong).

``classify_failure`` maps the reasons the smtp client gives for a TLS failure
(``deliver/smtp_client.py``: "does not offer STARTTLS", "server certificate not verified:
certificate has expired", "certificate does not match the TLSA records"...) onto the result
types of §4.3.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

PolicyType = Literal["tlsa", "sts", "no-policy-found"]

# RFC 8460 §4.3.1: negotiation failures.
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
CERTIFICATE_EXPIRED = "certificate-expired"
CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
VALIDATION_FAILURE = "validation-failure"
# RFC 8460 §4.3.2.1: DANE policy failures.
TLSA_INVALID = "tlsa-invalid"
DNSSEC_INVALID = "dnssec-invalid"
DANE_REQUIRED = "dane-required"
# RFC 8460 §4.3.2.2: MTA-STS policy failures.
STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
STS_POLICY_INVALID = "sts-policy-invalid"
STS_WEBPKI_INVALID = "sts-webpki-invalid"

RESULT_TYPES = frozenset(
    {
        STARTTLS_NOT_SUPPORTED,
        CERTIFICATE_HOST_MISMATCH,
        CERTIFICATE_EXPIRED,
        CERTIFICATE_NOT_TRUSTED,
        VALIDATION_FAILURE,
        TLSA_INVALID,
        DNSSEC_INVALID,
        DANE_REQUIRED,
        STS_POLICY_FETCH_ERROR,
        STS_POLICY_INVALID,
        STS_WEBPKI_INVALID,
    }
)

MEDIA_TYPE_GZIP = "application/tlsrpt+gzip"  # RFC 8460 §6.4
MEDIA_TYPE_JSON = "application/tlsrpt+json"  # RFC 8460 §6.3
# A report for one domain and day is a few kilobytes; these bound what a sender can make
# us hold. Compressed: what is read from the mail part; decompressed: what gzip may expand to.
MAX_COMPRESSED_BYTES = 1024 * 1024
MAX_REPORT_BYTES = 10 * 1024 * 1024
MAX_RECORD_BYTES = 4096  # one _smtp._tls TXT record is a few dozen octets

_Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
_Text = Annotated[str, msgspec.Meta(max_length=1024)]


class TlsReportError(ValueError):
    """A report, record or mail that cannot be read; the message says what is wrong."""


# -- the outcome of one session (what delivery records) ---------------------------------------


@dataclass(frozen=True, slots=True)
class TlsOutcome:
    """One outbound session attempt to a recipient domain's MX host (RFC 8460 §4.1: a report
    counts sessions). ``result_type`` is "" for a session that negotiated TLS as the policy
    asked, else a §4.3 result type; ``detail`` is the client's reason, for the operator."""

    policy_domain: str
    policy_type: PolicyType
    policy_string: tuple[str, ...]
    mx_host: str
    receiving_ip: str
    sending_ip: str = ""
    result_type: str = ""
    detail: str = ""

    @property
    def success(self) -> bool:
        return not self.result_type


# The reasons smtp_client.py gives, first match wins. ssl's verify messages are OpenSSL's
# X509_verify_cert_error_string texts (and Python's own "Hostname mismatch" message).
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"does not offer STARTTLS|refused STARTTLS", re.I), STARTTLS_NOT_SUPPORTED),
    (re.compile(r"does not match the TLSA records", re.I), TLSA_INVALID),
    (re.compile(r"no DANE check is available", re.I), TLSA_INVALID),
    (re.compile(r"DANE: ", re.I), DNSSEC_INVALID),
    (
        re.compile(r"hostname mismatch|IP address mismatch|not valid for", re.I),
        CERTIFICATE_HOST_MISMATCH,
    ),
    (
        re.compile(r"certificate has expired|certificate is not yet valid", re.I),
        CERTIFICATE_EXPIRED,
    ),
    (
        re.compile(
            r"self[- ]signed certificate|unable to get (local )?issuer certificate|"
            r"unable to verify the first certificate|certificate chain too long|"
            r"invalid CA certificate|certificate revoked|unsuitable certificate purpose",
            re.I,
        ),
        CERTIFICATE_NOT_TRUSTED,
    ),
)
# RFC 3463 §3.8: X.7.4 security features not supported, X.7.5 cryptographic failure; RFC
# 8689 §5: X.7.10 and X.7.30 for REQUIRETLS.
_TLS_CODES = re.compile(r"^[45][0-9][0-9] [45]\.7\.(4|5|10|30)\b")


def classify_failure(reply: str) -> str | None:
    """The §4.3 result type of a session failure, or None when it is no TLS failure (the
    connection was refused, the greeting was a 554...: no TLS session was attempted)."""
    if not _TLS_CODES.match(reply):
        return None
    for pattern, result_type in _REASONS:
        if pattern.search(reply):
            return result_type
    # RFC 8460 §4.3.1: "validation-failure: ... a general failure for a reason not matching
    # a category above" (a handshake error, a protocol version we do not share).
    return VALIDATION_FAILURE


def sts_policy_string(mode: str, mx_patterns: Sequence[str], max_age: int = 0) -> tuple[str, ...]:
    """RFC 8460 §4.4 policy-string for MTA-STS: the lines of the policy (RFC 8461 §3.2).
    Deviation: delivery knows mode and mx, not max_age; it is left out when unknown."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in mx_patterns)]
    if max_age:
        lines.append(f"max_age: {max_age}")
    return tuple(lines)


def tlsa_policy_string(records: Iterable[tuple[int, int, int, bytes]]) -> tuple[str, ...]:
    """RFC 8460 §4.4 policy-string for DANE: each TLSA record in presentation format."""
    return tuple(f"{u} {s} {m} {data.hex()}" for u, s, m, data in records)


# -- the report (RFC 8460 §4) -----------------------------------------------------------------


class DateRange(msgspec.Struct, frozen=True, kw_only=True, rename="kebab"):
    # RFC 8460 §4.4: RFC 3339 date-time, UTC.
    start_datetime: dt.datetime
    end_datetime: dt.datetime


class PolicyDesc(msgspec.Struct, frozen=True, kw_only=True, rename="kebab", omit_defaults=True):
    policy_type: PolicyType
    policy_string: tuple[_Text, ...] = ()
    policy_domain: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    # The §4.4 example gives a list (the MTA-STS mx patterns); some senders send one string.
    mx_host: tuple[_Text, ...] | _Text = ()


class Summary(msgspec.Struct, frozen=True, kw_only=True, rename="kebab"):
    total_successful_session_count: _Count
    total_failure_session_count: _Count


class FailureDetail(msgspec.Struct, frozen=True, kw_only=True, rename="kebab", omit_defaults=True):
    result_type: _Text
    sending_mta_ip: _Text = ""
    receiving_mx_hostname: _Text = ""
    receiving_mx_helo: _Text = ""
    receiving_ip: _Text = ""
    failed_session_count: _Count
    additional_information: _Text = ""
    failure_reason_code: _Text = ""
    failure_error_code: _Text = ""  # the name used by the §4.4 example


class PolicyResult(msgspec.Struct, frozen=True, kw_only=True, rename="kebab"):
    policy: PolicyDesc
    summary: Summary
    failure_details: tuple[FailureDetail, ...] = ()


class TlsReport(msgspec.Struct, frozen=True, kw_only=True, rename="kebab"):
    organization_name: _Text
    date_range: DateRange
    contact_info: _Text
    report_id: _Text
    policies: tuple[PolicyResult, ...]


def build_report(
    outcomes: Iterable[TlsOutcome],
    *,
    organization: str,
    contact: str,
    report_id: str,
    start: dt.datetime,
    end: dt.datetime,
) -> TlsReport:
    """One report from the outcomes of one policy domain's sessions (RFC 8460 §4): one
    policy entry per (type, policy string), its summary, and the failures grouped by result
    type, sending IP, MX host and receiving IP (§4.4 failure-details)."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[TlsOutcome]] = {}
    for outcome in outcomes:
        key = (outcome.policy_domain, outcome.policy_type, outcome.policy_string)
        groups.setdefault(key, []).append(outcome)
    policies = []
    for (domain, policy_type, policy_string), items in sorted(groups.items()):
        failures: dict[tuple[str, str, str, str], int] = {}
        for o in items:
            if not o.success:
                k = (o.result_type, o.sending_ip, o.mx_host, o.receiving_ip)
                failures[k] = failures.get(k, 0) + 1
        ok = sum(o.success for o in items)
        mx = (
            tuple(line[4:] for line in policy_string if line.startswith("mx: "))
            if policy_type == "sts"
            else ()
        )
        policies.append(
            PolicyResult(
                policy=PolicyDesc(
                    policy_type=policy_type,  # type: ignore[arg-type]
                    policy_string=policy_string,
                    policy_domain=domain,
                    mx_host=mx,
                ),
                summary=Summary(
                    total_successful_session_count=ok,
                    total_failure_session_count=len(items) - ok,
                ),
                failure_details=tuple(
                    FailureDetail(
                        result_type=rt,
                        sending_mta_ip=sip,
                        receiving_mx_hostname=mx_host,
                        receiving_ip=rip,
                        failed_session_count=count,
                    )
                    for (rt, sip, mx_host, rip), count in sorted(failures.items())
                ),
            )
        )
    return TlsReport(
        organization_name=organization,
        date_range=DateRange(start_datetime=_utc(start), end_datetime=_utc(end)),
        contact_info=contact,
        report_id=report_id,
        policies=tuple(policies),
    )


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError("report times must be timezone-aware (RFC 8460 §4.4: UTC)")
    return when.astimezone(dt.UTC)


def report_json(report: TlsReport) -> bytes:
    """RFC 8460 §4.4: the report as JSON (I-JSON, UTF-8)."""
    return msgspec.json.encode(report)


def report_gzip(report: TlsReport) -> bytes:
    """RFC 8460 §5.3: the report compressed with gzip (application/tlsrpt+gzip); mtime 0
    so the same report gives the same bytes."""
    return gzip.compress(report_json(report), mtime=0)


# -- reading a received report ----------------------------------------------------------------

_DECODER = msgspec.json.Decoder(TlsReport)


def _gunzip(data: bytes, limit: int) -> bytes:
    """gzip data at most ``limit`` bytes long once expanded; a bomb is refused early."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise TlsReportError(f"the report is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TlsReportError(
            f"the report expands to more than {limit} bytes; refused (a compression bomb?)"
        )
    if not inflater.eof:
        raise TlsReportError("the gzip data of the report is truncated")
    return out


def parse_report(
    data: bytes,
    *,
    max_compressed: int = MAX_COMPRESSED_BYTES,
    max_report: int = MAX_REPORT_BYTES,
) -> TlsReport:
    """A received report, gzip (RFC 8460 §5.3) or plain JSON (§6.3); ``TlsReportError``
    says what is wrong (size, compression, JSON syntax, a field and its expected type)."""
    if data[:2] == b"\x1f\x8b":
        if len(data) > max_compressed:
            raise TlsReportError(
                f"the compressed report is {len(data)} bytes, more than the {max_compressed} "
                "allowed"
            )
        data = _gunzip(data, max_report)
    elif len(data) > max_report:
        raise TlsReportError(f"the report is {len(data)} bytes, more than the {max_report} allowed")
    try:
        report = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        # msgspec names the field path: "Expected `int`, got `str` - at `$.policies[0]...`"
        raise TlsReportError(f"the report does not follow RFC 8460 §4.4: {exc}") from None
    except msgspec.DecodeError as exc:
        raise TlsReportError(f"the report is not JSON: {exc}") from None
    if report.date_range.start_datetime.tzinfo is None:
        raise TlsReportError("date-range start-datetime has no time zone (RFC 3339 needs one)")
    if report.date_range.end_datetime.tzinfo is None:
        raise TlsReportError("date-range end-datetime has no time zone (RFC 3339 needs one)")
    return report


# -- the DNS record (RFC 8460 §3) -------------------------------------------------------------

# RFC 8460 §3: field-delim = *WSP ";" *WSP
_FIELD_DELIM = re.compile(r"[ \t]*;[ \t]*")
_URI = re.compile(r"(?:mailto:[^,!; \t]+|https://[^,!; \t]+)")


@dataclass(frozen=True, slots=True)
class TlsRptRecord:
    """The ``rua`` URIs of a ``_smtp._tls`` record: ``mailto:`` addresses and ``https:`` URLs."""

    rua: tuple[str, ...]

    @property
    def mailto(self) -> tuple[str, ...]:
        return tuple(_mailto_address(u) for u in self.rua if u.lower().startswith("mailto:"))

    @property
    def https(self) -> tuple[str, ...]:
        return tuple(u for u in self.rua if u.lower().startswith("https:"))


def _mailto_address(uri: str) -> str:
    from urllib.parse import unquote

    # RFC 6068 §2: mailto:addr-spec, percent-encoded; headers after "?" are ignored here.
    return unquote(uri[len("mailto:") :].partition("?")[0])


def parse_tlsrpt_record(texts: Sequence[str]) -> TlsRptRecord:
    """The one TLSRPT record among the TXT strings of ``_smtp._tls.DOMAIN``.

    RFC 8460 §3: records not beginning with "v=TLSRPTv1;" are discarded; if the number left
    is not one, the domain does not implement TLSRPT (``TlsReportError``)."""
    found = [t for t in texts if re.match(r"v=TLSRPTv1[ \t]*;", t)]
    if len(found) != 1:
        raise TlsReportError(
            "no TLSRPT record" if not found else f"{len(found)} TLSRPT records (RFC 8460 §3: one)"
        )
    text = found[0]
    if len(text) > MAX_RECORD_BYTES:
        raise TlsReportError(f"the TLSRPT record is longer than {MAX_RECORD_BYTES} characters")
    rua: list[str] = []
    for field in _FIELD_DELIM.split(text)[1:]:
        if not field:
            continue  # RFC 8460 §3: a trailing field-delim is allowed
        name, _, value = field.partition("=")
        if name == "rua":
            for uri in value.split(","):
                uri = uri.strip(" \t")
                # RFC 8460 §3: tlsrpt-uri = URI; mailto and https are the defined schemes.
                if _URI.fullmatch(uri):
                    rua.append(uri)
    if not rua:
        raise TlsReportError("the TLSRPT record has no usable rua= (mailto: or https: URI)")
    return TlsRptRecord(tuple(rua))


# -- the report mail (RFC 8460 §5.3) ----------------------------------------------------------


def report_filename(submitter: str, domain: str, start: dt.datetime, end: dt.datetime) -> str:
    """RFC 8460 §5.3: filename = sender "!" policy-domain "!" begin-timestamp "!"
    end-timestamp [ "!" unique-id ] "." extension; timestamps are seconds since the epoch."""
    return f"{submitter}!{domain}!{int(start.timestamp())}!{int(end.timestamp())}.json.gz"


def report_mail(
    report: TlsReport,
    *,
    policy_domain: str,
    submitter: str,
    from_address: str,
    to: Sequence[str],
    boundary: str,
) -> bytes:
    """The report as a message (RFC 8460 §5.3): multipart/report; report-type="tlsrpt",
    a text part for people, then the gzip report as an attachment. Date and Message-ID are
    added by cleanup, the DKIM signature (§5.3: MUST) by the DKIM filter."""
    gz = report_gzip(report)
    start = report.date_range.start_datetime
    end = report.date_range.end_datetime
    name = report_filename(submitter, policy_domain, start, end)
    encoded = base64.encodebytes(gz).decode("ascii").replace("\n", "\r\n")
    text = (
        f"This is an aggregate TLS report from {submitter} about the mail it sent to\r\n"
        f"{policy_domain} between {start:%Y-%m-%d %H:%M:%S}Z and {end:%Y-%m-%d %H:%M:%S}Z\r\n"
        "(RFC 8460). The report is attached.\r\n"
    )
    lines = [
        f"From: {from_address}",
        f"To: {', '.join(to)}",
        # RFC 8460 §5.3: Subject: Report Domain: D Submitter: S Report-ID: <id>
        f"Subject: Report Domain: {policy_domain} Submitter: {submitter} "
        f"Report-ID: <{report.report_id}>",
        # RFC 8460 §5.3: the two header fields, for filtering.
        f"TLS-Report-Domain: {policy_domain}",
        f"TLS-Report-Submitter: {submitter}",
        "MIME-Version: 1.0",
        # RFC 8460 §5.3: multipart/report (RFC 6522) with report-type "tlsrpt".
        f'Content-Type: multipart/report; report-type="tlsrpt"; boundary="{boundary}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: 7bit",
        "",
        text,
        f"--{boundary}",
        f"Content-Type: {MEDIA_TYPE_GZIP}",
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{name}"',
        "",
        encoded,
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def report_from_mail(message: bytes) -> bytes:
    """The report bytes of a received message: the ``application/tlsrpt+gzip`` or
    ``+json`` part of a multipart/report (§5.3), or a bare gzip/JSON body; ``TlsReportError``
    when there is none."""
    import email
    import email.policy

    stripped = message.lstrip()
    if stripped[:2] == b"\x1f\x8b" or stripped[:1] == b"{":
        return stripped
    msg = email.message_from_bytes(message, policy=email.policy.default)
    for part in msg.walk():
        ctype = part.get_content_type()
        filename = (part.get_filename() or "").lower()
        if ctype in (MEDIA_TYPE_GZIP, MEDIA_TYPE_JSON) or filename.endswith((".json.gz", ".json")):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload:
                return payload
    raise TlsReportError(
        f"the message has no {MEDIA_TYPE_GZIP} or {MEDIA_TYPE_JSON} part (RFC 8460 §5.3)"
    )
