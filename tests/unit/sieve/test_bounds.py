"""Run-time bounds inside one test: ``max_run_seconds`` is read while a test matches many
values against many keys, and the work of the matches is bounded before it starts
(``SieveLimits.max_match_steps``), so no single test runs on for seconds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import compile_script, run_script

from .helpers import context


class CountingClock:
    """A clock that moves one second each time it is read, and counts the readings."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return float(self.reads)


def _many_headers(count: int, value: str = "frop") -> bytes:
    lines = "".join(f"X-Frop: {value}\r\n" for _ in range(count))
    return f"From: a@example.org\r\n{lines}\r\nbody\r\n".encode()


def test_the_clock_is_read_inside_one_test() -> None:
    # one command, one test: 5000 values x 20 keys, none matching
    keys = ", ".join(f'"nomatch{n}"' for n in range(20))
    script = compile_script(f'if header :contains "X-Frop" [{keys}] {{ discard; }}')
    clock = CountingClock()
    limits = SieveLimits(max_run_seconds=5.0)
    with pytest.raises(SieveRuntimeError, match="max_run_seconds"):
        run_script(script, context(_many_headers(5000), clock=clock), limits=limits)
    # stopped a few readings past the limit, not after all 100000 matches
    assert clock.reads < 10


def test_a_test_too_big_to_match_fails_before_it_matches() -> None:
    # a 200 kB header against 50 keys with '?': the backtracking matcher's bound is
    # 200000 x 12 steps per key, so the run fails at once instead of working for seconds
    message = _many_headers(1, "a" * 200_000)
    keys = ", ".join(f'"*a?b*{n}"' for n in range(50))
    script = compile_script(f'if header :matches "X-Frop" [{keys}] {{ discard; }}')
    clock = CountingClock()
    with pytest.raises(SieveRuntimeError, match="compare more than 50000000 characters"):
        run_script(script, context(message, clock=clock))
    assert clock.reads <= 3  # the start, the command, and no reading inside: it never ran


def test_ordinary_tests_stay_well_inside_the_bound() -> None:
    message = _many_headers(200, "Frop Friep <frop@example.org>")
    script = compile_script('if header :matches "X-Frop" "*friep?<*@example.org>" { discard; }')
    result = run_script(script, context(message, clock=lambda: 0.0))
    assert not result.implicit_keep


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.text(alphabet="ab?*", max_size=40), min_size=1, max_size=8),
    keys=st.lists(st.text(alphabet="ab?*", max_size=12), min_size=1, max_size=8),
)
def test_the_charged_steps_are_exactly_the_bound(values: list[str], keys: list[str]) -> None:
    from pochta.sieve.match import _matches_cost  # the private bound

    # keys that never match (a "c" the values lack), so every pair is tried and charged
    keys = [f"c{k}" for k in keys]
    total = sum(_matches_cost(v, k) for v in values for k in keys)
    assert total >= len(values) * len(keys)
    quoted = ", ".join(f'"{k}"' for k in keys)
    script = compile_script(f'if header :matches "Subject" [{quoted}] {{ discard; }}')
    message = "".join(f"Subject: {v}\r\n" for v in values).encode() + b"\r\nx\r\n"
    ctx = context(message, clock=lambda: 0.0)
    run_script(script, ctx, limits=SieveLimits(max_match_steps=total))
    with pytest.raises(SieveRuntimeError, match=f"compare more than {total - 1} characters"):
        run_script(script, ctx, limits=SieveLimits(max_match_steps=total - 1))


# -- variables: how many, how long a name (RFC 5229 §6) ---------------------------------


def test_a_script_sets_at_most_255_variables() -> None:
    sets = "".join(f'set "v{n}" "x";\n' for n in range(300))
    with pytest.raises(SieveError) as caught:
        compile_script(f'require "variables";\n{sets}')
    # one error, at the 256th, not one per further variable
    assert [e.line for e in caught.value.errors] == [257]
    assert "more than 255 variables" in str(caught.value)
    # setting the same ones again is fine
    again = "".join(f'set "v{n % 255}" "x";\n' for n in range(600))
    compile_script(f'require "variables";\n{again}')


def test_a_variable_name_has_at_most_64_characters() -> None:
    compile_script('require "variables"; set "' + "v" * 64 + '" "x";')
    with pytest.raises(SieveError, match="longer than 64 characters"):
        compile_script('require "variables"; set "' + "v" * 65 + '" "x";')
