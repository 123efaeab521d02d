"""The linear-time ``:regex`` matcher (``sieve/regex.py``): the same answers as Python's
``re`` on the pattern ``match.compile_regex`` makes, without its backtracking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.match import compile_regex
from pochta.sieve.regex import MAX_PROGRAM, compile_program
from pochta.sieve.script import compile_script, run_script

from .helpers import context

_ATOMS = st.sampled_from(
    ["a", "b", ".", "[ab]", "[^a]", "[[:digit:]]", "x", "\\.", "(a|b)", "(ab|a)", "()", "B"]
)
_QUANT = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,3}", "{2,}", "*?", "+?"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.tuples(_ATOMS, _QUANT), min_size=0, max_size=5))
    body = "".join(a + q for a, q in pieces)
    if draw(st.booleans()):
        body = f"({body})"
    if draw(st.booleans()):
        body += "|" + draw(st.sampled_from(["b", "a+", "x?", ""]))
    return ("^" if draw(st.booleans()) else "") + body + ("$" if draw(st.booleans()) else "")


@settings(max_examples=400, deadline=None)
@given(
    pattern=patterns(),
    value=st.text(alphabet="abAB.1x\n", max_size=12),
    case=st.sampled_from(["octet", "ascii", "unicode"]),
)
def test_same_answers_as_python_re(pattern: str, value: str, case: str) -> None:
    try:
        python = compile_regex(pattern, case)  # type: ignore[arg-type]
    except ValueError:
        return  # refused at compile time either way
    program = compile_program(pattern, case)  # type: ignore[arg-type]
    m = python.search(value)
    assert program.search(value) is (m is not None)
    if m is not None:
        assert program.groups(value) == [m.group(0)] + [g or "" for g in m.groups()]
    else:
        assert program.groups(value) is None


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        # each of these runs Python's re for tens of seconds or more
        (".*foo.*bar", "foo" * 3000),
        ("a*a*a*b", "a" * 10_000),
        ("(a|aa)*b", "a" * 10_000),
        ("x+x+y", "x" * 10_000),
    ],
)
def test_no_backtracking_blow_up(pattern: str, value: str) -> None:
    program = compile_program(pattern, "octet")
    assert program.search(value) is False
    assert program.groups(value) is None
    # the lazy DFA: a few states, whatever the length: each further character is one lookup
    assert len(program._dfa) <= 4 * len(program)


def test_groups_of_a_long_match() -> None:
    program = compile_program("(a|aa)*(b)", "octet")
    assert program.groups("a" * 5000 + "b") == ["a" * 5000 + "b", "a", "b"]


def test_repetition_counts_are_bounded() -> None:
    with pytest.raises(ValueError, match=f"more than {MAX_PROGRAM} steps"):
        compile_program("((a{100}){100}){100}", "octet")
    with pytest.raises(Exception, match="too large"):
        compile_script('require "regex"; if header :regex "s" "a{9000}b{9000}c{9000}" {}')


def test_a_regex_test_in_a_script_is_charged_its_bound() -> None:
    message = b"Subject: " + b"foo" * 3000 + b"\r\n\r\nx\r\n"
    text = 'require "regex";\nif header :regex "subject" ".*foo.*bar" { discard; }'
    script = compile_script(text)
    result = run_script(script, context(message, clock=lambda: 0.0))
    assert result.implicit_keep  # no match, and no half minute spent finding that out
    with pytest.raises(SieveRuntimeError, match="compare more than"):
        run_script(
            script, context(message, clock=lambda: 0.0), limits=SieveLimits(max_match_steps=1000)
        )


def test_pigeonhole_style_groups() -> None:
    program = compile_program("^\\[([[:alpha:]]+)-([0-9]+)\\]", "ascii")
    assert program.groups("[Frop-42] x") == ["[Frop-42]", "Frop", "42"]
    assert re.search(r"^\[([a-zA-Z]+)-([0-9]+)\]", "[Frop-42] x") is not None
