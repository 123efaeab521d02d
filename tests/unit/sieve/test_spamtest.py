"""RFC 5235 spamtest, spamtestplus and virustest values from pochta's spam verdict."""

from __future__ import annotations

import pytest

from pochta.sieve.context import SpamInfo
from pochta.sieve.extensions.spamscale import spamtest_percent, spamtest_value, virustest_value


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


def test_virustest_is_never_tested() -> None:
    assert virustest_value() == "0"
