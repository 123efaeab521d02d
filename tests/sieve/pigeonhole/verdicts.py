"""Dovecot's ``sieve_spamtest_*`` / ``sieve_virustest_*`` settings, turned into the verdicts
pochta's interpreter reads (``MessageContext.spam`` and ``MessageContext.virus``).

Dovecot has no spam filter of its own either: it reads a header of the message that a filter
added. The harness does the same reading here, following Pigeonhole's
``src/lib-sieve/plugins/spamvirustest/ext-spamvirustest-common.c`` (``get_value``) and
``ext-spamvirustest-settings.c`` (the checks of a reload), so the suite's blocks test how the
interpreter scales a verdict, not how a header is configured:

- ``status_header`` is ``Name`` or ``Name: regex``; with a regex the first group of the
  first match (case-insensitive, ASCII) is the status, else the whole (first) header value.
- ``status_type`` "score" (the default: a decimal), "strlen" (the number of repeats of one
  character, "" is 0) or "text" (``text_value/N`` gives the text that means N, compared
  exactly; N is 0..10 for spamtest, 0..5 for virustest, and that top is the maximum).
- score and strlen need exactly one of ``score_max_header`` (read like the status header,
  a decimal) and ``score_max_value``; a maximum of 0 is a failure.
- Any failure (not configured, a setting check that fails, the header absent, no match, a
  value that does not parse) means "not tested": spamtest and virustest give "0".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32

from pochta.sieve.context import SpamInfo, VirusInfo

__all__ = ["score_ratio", "spam_info", "virus_info"]


class _Failed(Exception):
    """The test gives "0" (Dovecot's ``goto failed`` and unconfigured extension)."""


@dataclass(frozen=True, slots=True)
class _HeaderSpec:
    name: str
    regex: re.Pattern[str] | None


def _header_spec(spec: str) -> _HeaderSpec:
    # ext_spamvirustest_header_spec_parse: the name runs to ':', space or tab; after it an
    # optional ':' and a regex (blanks before either skipped).
    if not spec:
        raise _Failed("empty header specification")
    m = re.fullmatch(r"[ \t]*([^: \t]*)[ \t]*(?::[ \t]*(.*))?", spec, re.DOTALL)
    if m is None:
        raise _Failed(f"bad header specification {spec!r}")
    name, pattern = m.group(1), m.group(2)
    if pattern is None:
        return _HeaderSpec(name, None)
    try:
        # DREGEX_ICASE | DREGEX_ASCII_ONLY
        return _HeaderSpec(name, re.compile(pattern, re.IGNORECASE | re.ASCII))
    except re.error as e:
        raise _Failed(f"bad regex {pattern!r}: {e}") from None


def _decimal(text: str) -> float:
    # ext_spamvirustest_parse_decimal_value: [+-] up to 5 digits [(.|,) up to 5 digits].
    m = re.fullmatch(r"([+-]?)(\d{0,5})(?:[.,](\d{0,5}))?", text)
    if not text or m is None:
        raise _Failed(f"not a decimal value: {text!r}")
    value = float(f"{m.group(2) or '0'}.{m.group(3) or '0'}")
    return -value if m.group(1) == "-" else value


def _strlen(text: str) -> float:
    # ext_spamvirustest_parse_strlen_value: "" is 0, else one character repeated.
    if text and text.strip(text[0]):
        raise _Failed(f"different characters in strlen value {text!r}")
    return float(len(text))


def _first_header(message: bytes, name: str) -> str | None:
    # mail_get_first_header_utf8: the first field of that name, unfolded and decoded.
    value = BytesHeaderParser(policy=compat32).parsebytes(message).get(name)
    if value is None:
        return None
    raw = re.sub(r"\r?\n(?=[ \t])", "", str(value)).strip()
    try:
        return str(make_header(decode_header(raw)))
    except (UnicodeDecodeError, LookupError, ValueError):
        return raw


def _read(message: bytes, spec: _HeaderSpec) -> str:
    value = _first_header(message, spec.name)
    if value is None:
        raise _Failed(f"header {spec.name!r} not found")
    if spec.regex is None:
        return value
    m = spec.regex.search(value)
    if m is None or m.re.groups < 1 or m.group(1) is None:
        raise _Failed(f"regex of {spec.name!r} did not match {value!r}")
    return m.group(1)


def score_ratio(message: bytes, settings: dict[str, str], prefix: str, top: int) -> float:
    """The status as a fraction of its maximum (0..1), or -1 for "not tested". ``prefix``
    is ``sieve_spamtest_`` or ``sieve_virustest_``; ``top`` 10 or 5 (the text values)."""
    try:
        return _ratio(message, settings, prefix, top)
    except _Failed:
        return -1.0


def _ratio(message: bytes, settings: dict[str, str], prefix: str, top: int) -> float:
    header = settings.get(prefix + "status_header", "")
    if not header:
        raise _Failed("not configured")
    status_type = settings.get(prefix + "status_type", "") or "score"
    if status_type not in ("score", "strlen", "text"):
        raise _Failed(f"invalid status type {status_type!r}")
    status_spec = _header_spec(header)
    if status_type == "text":
        texts: dict[int, str] = {}
        for key, text in settings.items():
            if key.startswith(prefix + "text_value/"):
                index = key.rpartition("/")[2]
                if not index.isdigit() or int(index) > top:
                    raise _Failed(f"text value index {index!r} out of range")
                texts[int(index)] = text
        status = _read(message, status_spec)
        found = [i for i in range(top + 1) if texts.get(i) == status]
        if not found:
            raise _Failed(f"no text value is {status!r}")
        status_value, max_value = float(found[0]), float(top)
    else:
        max_header = settings.get(prefix + "score_max_header", "")
        max_setting = settings.get(prefix + "score_max_value", "")
        if bool(max_header) == bool(max_setting):
            raise _Failed("exactly one of score_max_header and score_max_value is needed")
        if max_header:
            max_value = _decimal(_read(message, _header_spec(max_header)))
        else:
            max_value = _decimal(max_setting)
        if max_value == 0:
            raise _Failed("max value is 0")
        status = _read(message, status_spec)
        status_value = _decimal(status) if status_type == "score" else _strlen(status)
    if status_value < 0:
        return 0.0
    if status_value > max_value:
        return 1.0
    return status_value / max_value


def spam_info(message: bytes, settings: dict[str, str]) -> SpamInfo:
    """The verdict spamtest reads: the ratio as a score out of 1 (the interpreter scales
    it to 1..10 and to a percentage); "not tested" when Dovecot would give "0"."""
    ratio = score_ratio(message, settings, "sieve_spamtest_", 10)
    if ratio < 0:
        return SpamInfo(tested=False)
    return SpamInfo(tested=True, score=ratio, junk_score=1.0, max_score=1.0)


def virus_info(message: bytes, settings: dict[str, str]) -> VirusInfo:
    """The RFC 5235 §3.4 status virustest reads, 0 (not tested) or 1..5, scaled as
    Dovecot's ``ext_spamvirustest_get_score`` does for virustest: ``ratio * 4 + 1``."""
    ratio = score_ratio(message, settings, "sieve_virustest_", 5)
    if ratio < 0:
        return VirusInfo(status=0)
    return VirusInfo(status=math.floor(ratio * 4 + 1.001))
