"""RFC 5235 spamtest, spamtestplus and virustest values from pochta's spam verdict."""

from __future__ import annotations

import pytest

from pochta.sieve.actions import FileInto
from pochta.sieve.context import SpamInfo, VirusInfo
from pochta.sieve.errors import SieveError
from pochta.sieve.extensions.spamscale import spamtest_percent, spamtest_value, virustest_value
from pochta.sieve.script import compile_script

from .helpers import run


def test_not_tested_is_zero() -> None:
    assert spamtest_value(SpamInfo()) == "0"
    assert spamtest_percent(SpamInfo()) == "0"


@pytest.mark.parametrize(
    ("score", "expected"),
    # Pigeonhole's spamtest.svtest values, with max 5.0.
    [(-1.6, "1"), (0.0, "1"), (1.0, "2"), (4.0, "8"), (5.0, "10"), (7.6, "10")],
)
def test_scaled_levels(score: float, expected: str) -> None:
    assert spamtest_value(SpamInfo(tested=True, score=score, max_score=5.0)) == expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, "0"),
        (0.01, "1"),
        (0.13, "13"),
        (0.29, "29"),
        (0.51, "51"),
        (0.89, "89"),
        (1.01, "100"),
    ],
)
def test_percent(score: float, expected: str) -> None:
    assert spamtest_percent(SpamInfo(tested=True, score=score, max_score=1.0)) == expected


def test_virustest_untested_is_zero() -> None:
    assert virustest_value(VirusInfo()) == "0"


@pytest.mark.parametrize(("status", "expected"), [(1, "1"), (4, "4"), (5, "5"), (9, "5")])
def test_virustest_reads_the_scanner_status(status: int, expected: str) -> None:
    assert virustest_value(VirusInfo(status=status)) == expected


def test_virustest_in_a_script() -> None:
    text = (
        'require ["virustest", "relational", "comparator-i;ascii-numeric", "fileinto"];\n'
        'if virustest :value "ge" :comparator "i;ascii-numeric" "4" { fileinto "Virus"; }'
    )
    filed = [a.mailbox for a in run(text, virus=VirusInfo(status=4)).actions]
    assert filed == ["Virus"]
    assert [a for a in run(text).actions if isinstance(a, FileInto)] == []


# -- the tests in scripts ----------------------------------------------------------------


def _filed(script: str, spam: SpamInfo) -> list[str]:
    result = run(script, spam=spam)
    return [a.mailbox for a in result.actions if isinstance(a, FileInto)]


SPAM = SpamInfo(tested=True, score=12.0, junk_score=6.0, max_score=15.0)


def test_rfc5235_examples() -> None:
    # RFC 5235 §3.2 example: file certain spam, keep untested mail apart.
    script = """require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];
    if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }
    elsif spamtest :value "ge" :comparator "i;ascii-numeric" "3" { fileinto "INBOX.spam-trap"; }"""
    assert _filed(script, SpamInfo()) == ["INBOX.unclassified"]
    assert _filed(script, SPAM) == ["INBOX.spam-trap"]
    assert _filed(script, SpamInfo(tested=True, score=-2.0)) == []
    # RFC 5235 §3.3 example with :percent.
    script = """require ["spamtestplus", "fileinto", "relational", "comparator-i;ascii-numeric"];
    if spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }
    elsif spamtest :percent :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "clean"; }
    elsif spamtest :percent :value "ge" :comparator "i;ascii-numeric" "75" { fileinto "spam"; }"""
    assert _filed(script, SPAM) == ["spam"]  # 12 of 15: 80%
    assert _filed(script, SpamInfo(tested=True, score=0.0)) == ["clean"]


def test_virustest_is_not_tested() -> None:
    script = """require ["virustest", "fileinto", "relational", "comparator-i;ascii-numeric"];
    if virustest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "untested"; }"""
    assert _filed(script, SPAM) == ["untested"]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('if spamtest "1" {}', 'needs require "spamtest" or "spamtestplus"'),
        ('require "spamtest"; if spamtest :percent "1" {}', 'needs require "spamtestplus"'),
        ('require "spamtest"; if spamtest 3 {}', "must be a string"),
        ('if virustest "1" {}', 'needs require "virustest"'),
    ],
)
def test_compile_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError, match=error):
        compile_script(script)
