"""The DMARC aggregate report document (RFC 7489 Appendix C), built and parsed.

Building: :func:`group_records` turns the evaluations of one policy domain into ``record``
rows (one per source IP and identical results, with a count), :func:`build_report` writes
the ``feedback`` document in the schema's element order.

Parsing (:func:`parse_report`): ``xml.etree.ElementTree`` over expat, which refuses entity
expansion bombs (expat ≥ 2.4, Python 3.11); a document with a DOCTYPE is refused outright
(a report has no use for one), and the caller caps the size (``attachments.py``). The
DMARCbis namespace (``urn:ietf:params:xml:ns:dmarc-2.0``) is accepted and ignored.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pochta.reports.attachments import ReportFormatError
from pochta.reports.store import DmarcEvaluation, ReceivedRecord, ReceivedReport

__all__ = [
    "MAX_RECORDS",
    "RecordRow",
    "ReportMetadata",
    "build_report",
    "group_records",
    "parse_report",
]

MAX_RECORDS = 100_000
"""Rows read from one received report; more is refused."""

# RFC 7489 Appendix C PolicyOverrideType.
_OVERRIDES = frozenset(
    {"forwarded", "sampled_out", "trusted_forwarder", "mailing_list", "local_policy", "other"}
)


@dataclass(frozen=True, slots=True)
class ReportMetadata:
    org_name: str
    email: str
    report_id: str
    begin: int
    end: int
    extra_contact_info: str = ""


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One ``record``: the results shared by ``count`` messages from ``source_ip``."""

    source_ip: str
    count: int
    disposition: str
    dkim_aligned: bool
    spf_aligned: bool
    override: str
    header_from: str
    envelope_from: str
    dkim: tuple[tuple[str, str, str], ...]
    spf_domain: str
    spf_result: str


_Key = tuple[str, str, bool, bool, str, str, str, tuple[tuple[str, str, str], ...], str, str]


def group_records(evaluations: Iterable[DmarcEvaluation]) -> list[RecordRow]:
    """One row per source IP and identical results (Appendix C ``RecordType``), counted,
    in the order first seen."""
    counts: dict[_Key, int] = {}
    for ev in evaluations:
        envelope_domain = ev.envelope_from.rpartition("@")[2].lower()
        key = (
            ev.source_ip,
            ev.disposition,
            ev.dkim_aligned,
            ev.spf_aligned,
            ev.override,
            ev.header_from,
            envelope_domain,
            ev.dkim,
            ev.spf_domain,
            ev.spf_result,
        )
        counts[key] = counts.get(key, 0) + 1
    rows = []
    for key, count in counts.items():
        ip, disposition, dkim_ok, spf_ok, override, hfrom, efrom, dkim, spf_d, spf_r = key
        rows.append(
            RecordRow(
                source_ip=ip,
                count=count,
                disposition=disposition,
                dkim_aligned=dkim_ok,
                spf_aligned=spf_ok,
                override=override,
                header_from=hfrom,
                envelope_from=efrom,
                dkim=dkim,
                spf_domain=spf_d,
                spf_result=spf_r,
            )
        )
    return rows


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


# RFC 7489 Appendix C DKIMResultType and SPFResultType: anything else is reported as such.
_DKIM_RESULTS = frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"})
_SPF_RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})


def build_report(meta: ReportMetadata, policy: DmarcEvaluation, rows: Sequence[RecordRow]) -> bytes:
    """The ``feedback`` document, elements in the order of RFC 7489 Appendix C."""
    root = ET.Element("feedback")
    _sub(root, "version", "1.0")
    md = _sub(root, "report_metadata")
    _sub(md, "org_name", meta.org_name)
    _sub(md, "email", meta.email)
    if meta.extra_contact_info:
        _sub(md, "extra_contact_info", meta.extra_contact_info)
    _sub(md, "report_id", meta.report_id)
    dates = _sub(md, "date_range")
    _sub(dates, "begin", meta.begin)
    _sub(dates, "end", meta.end)
    pp = _sub(root, "policy_published")
    _sub(pp, "domain", policy.policy_domain)
    _sub(pp, "adkim", policy.adkim or "r")
    _sub(pp, "aspf", policy.aspf or "r")
    _sub(pp, "p", policy.p or "none")
    _sub(pp, "sp", policy.sp or policy.p or "none")
    _sub(pp, "pct", policy.pct)
    for row in rows:
        record = _sub(root, "record")
        r = _sub(record, "row")
        _sub(r, "source_ip", row.source_ip)
        _sub(r, "count", row.count)
        pe = _sub(r, "policy_evaluated")
        _sub(pe, "disposition", row.disposition)
        _sub(pe, "dkim", "pass" if row.dkim_aligned else "fail")  # DMARCResultType: aligned
        _sub(pe, "spf", "pass" if row.spf_aligned else "fail")
        if row.override:
            reason = _sub(pe, "reason")
            kind, _, comment = row.override.partition(":")
            _sub(reason, "type", kind if kind in _OVERRIDES else "other")
            if comment.strip() or kind not in _OVERRIDES:
                _sub(reason, "comment", (comment or row.override).strip())
        ids = _sub(record, "identifiers")
        if row.envelope_from:
            _sub(ids, "envelope_from", row.envelope_from)
        _sub(ids, "header_from", row.header_from)
        auth = _sub(record, "auth_results")
        for d, s, result in row.dkim:
            dk = _sub(auth, "dkim")
            _sub(dk, "domain", d)
            if s:
                _sub(dk, "selector", s)
            _sub(dk, "result", result if result in _DKIM_RESULTS else "temperror")
        spf = _sub(auth, "spf")  # Appendix C: at least one spf element
        _sub(spf, "domain", row.spf_domain or row.envelope_from or row.header_from)
        _sub(spf, "result", row.spf_result if row.spf_result in _SPF_RESULTS else "none")
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _strip_namespaces(root: ET.Element) -> None:
    for element in root.iter():
        element.tag = _local(element.tag)


def _text(parent: ET.Element | None, path: str, default: str = "") -> str:
    if parent is None:
        return default
    found = parent.find(path)
    return (found.text or "").strip() if found is not None and found.text else default


def _int(parent: ET.Element | None, path: str, what: str) -> int:
    value = _text(parent, path)
    try:
        return int(value)
    except ValueError:
        raise ReportFormatError(f"{what} is {value!r}, not a whole number") from None


def parse_report(document: bytes) -> ReceivedReport:
    """A received aggregate report; ReportFormatError says what is wrong."""
    if b"<!DOCTYPE" in document[:4096].upper() or b"<!ENTITY" in document.upper():
        raise ReportFormatError("the XML has a DOCTYPE or ENTITY declaration (refused)")
    try:
        # Safe here: no DOCTYPE (checked above), so no entities; expat loads nothing external.
        root = ET.fromstring(document)  # noqa: S314
    except ET.ParseError as exc:
        raise ReportFormatError(f"not well-formed XML: {exc}") from None
    _strip_namespaces(root)
    if root.tag != "feedback":
        raise ReportFormatError(f"root element is <{root.tag}>, not <feedback> (RFC 7489 App. C)")
    md = root.find("report_metadata")
    pp = root.find("policy_published")
    if md is None or pp is None:
        raise ReportFormatError("no report_metadata or policy_published element")
    policy = {child.tag: (child.text or "").strip() for child in pp}
    records: list[ReceivedRecord] = []
    for record in root.iterfind("record"):
        if len(records) >= MAX_RECORDS:
            raise ReportFormatError(f"more than {MAX_RECORDS} records")
        row = record.find("row")
        pe = row.find("policy_evaluated") if row is not None else None
        auth: dict[str, list[dict[str, str]]] = {}
        results = record.find("auth_results")
        if results is not None:
            for method in results:
                auth.setdefault(method.tag, []).append(
                    {child.tag: (child.text or "").strip() for child in method}
                )
        records.append(
            ReceivedRecord(
                source_ip=_text(row, "source_ip"),
                count=_int(row, "count", "record count"),
                disposition=_text(pe, "disposition", "none"),
                dkim=_text(pe, "dkim", "fail"),
                spf=_text(pe, "spf", "fail"),
                header_from=_text(record, "identifiers/header_from").lower(),
                auth=auth,
            )
        )
    return ReceivedReport(
        org_name=_text(md, "org_name"),
        email=_text(md, "email"),
        report_id=_text(md, "report_id"),
        begin=_int(md, "date_range/begin", "date_range begin"),
        end=_int(md, "date_range/end", "date_range end"),
        domain=policy.get("domain", "").lower(),
        policy=policy,
        records=tuple(records),
    )
