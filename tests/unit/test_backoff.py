"""The retry schedule: doubling from minimal_backoff to maximal_backoff, with upward jitter."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pochta.queue.backoff import backoff_delay, schedule


def test_postfix_defaults_schedule() -> None:
    assert schedule(8, 300, 4000) == [300, 600, 1200, 2400, 4000, 4000, 4000, 4000]


def test_small_values_and_edges() -> None:
    assert schedule(4, 60, 500) == [60, 120, 240, 480]
    assert backoff_delay(5, 60, 500, jitter=0) == 500
    assert backoff_delay(0, 300, 4000, jitter=0) == 300  # before any attempt: the minimum
    assert backoff_delay(-3, 300, 4000, jitter=0) == 300
    assert backoff_delay(10_000, 300, 4000, jitter=0) == 4000  # no overflow
    assert backoff_delay(3, 300, 100, jitter=0) == 300  # maximal below minimal: raised


def test_jitter_spreads_upward_only() -> None:
    assert backoff_delay(1, 300, 4000, jitter=0.1, rng=lambda: 0.0) == 300
    assert backoff_delay(1, 300, 4000, jitter=0.1, rng=lambda: 0.5) == 315
    assert backoff_delay(2, 300, 4000, jitter=0.1, rng=lambda: 0.99) == 600 * 1.099
    # at the maximum it cannot go further
    assert backoff_delay(6, 300, 4000, jitter=0.1, rng=lambda: 0.99) == 4000


def test_jitter_actually_spreads() -> None:
    rng = random.Random(7)
    values = {backoff_delay(1, 300, 4000, rng=rng.random) for _ in range(50)}
    assert len(values) > 40
    assert all(300 <= v < 330 for v in values)


@given(
    attempts=st.integers(min_value=-5, max_value=5000),
    minimal=st.integers(min_value=1, max_value=10_000),
    maximal=st.integers(min_value=1, max_value=100_000),
    u=st.floats(min_value=0.0, max_value=0.999999),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_always_between_minimal_and_maximal(
    attempts: int, minimal: int, maximal: int, u: float, jitter: float
) -> None:
    delay = backoff_delay(attempts, minimal, maximal, jitter=jitter, rng=lambda: u)
    assert minimal <= delay <= max(minimal, maximal)
    # and never shorter than the previous attempt's wait without jitter
    if attempts > 1:
        assert delay >= backoff_delay(attempts - 1, minimal, maximal, jitter=0)
