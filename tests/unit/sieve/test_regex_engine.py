"""``:regex`` on RE2 (``sieve/regex.py``): the same yes/no as Python's ``re`` on the same
pattern, POSIX's leftmost-longest match for the match variables, the comparators' case
folding, and no pattern or value that makes one match run long."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.regex import compile_regex, groups
from pochta.sieve.script import compile_script, run_script

from .helpers import context

# (POSIX ERE, the same for Python's re)
_ATOMS = st.sampled_from(
    [
        ("a", "a"),
        ("b", "b"),
        (".", "."),
        ("[ab]", "[ab]"),
        ("[^a]", "[^a]"),
        ("[[:digit:]]", "[0-9]"),
        ("x", "x"),
        ("\\.", "\\."),
        ("(a|b)", "(a|b)"),
        ("(ab|a)", "(ab|a)"),
        ("()", "()"),
        ("B", "B"),
    ]
)
_QUANT = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,3}", "{2,}"])


@st.composite
def patterns(draw: st.DrawFn) -> tuple[str, str]:
    pieces = draw(st.lists(st.tuples(_ATOMS, _QUANT), min_size=0, max_size=5))
    posix = "".join(a[0] + q for a, q in pieces)
    python = "".join(a[1] + q for a, q in pieces)
    if draw(st.booleans()):
        posix, python = f"({posix})", f"({python})"
    if draw(st.booleans()):
        alt = draw(st.sampled_from(["b", "a+", "x?", ""]))
        posix, python = posix + "|" + alt, python + "|" + alt
    start = "^" if draw(st.booleans()) else ""
    end = "$" if draw(st.booleans()) else ""
    return start + posix + end, start + python + end


_FLAGS = {"octet": 0, "ascii": re.IGNORECASE | re.ASCII, "unicode": re.IGNORECASE}


@settings(max_examples=400, deadline=None)
@given(
    pattern=patterns(),
    value=st.text(alphabet="abAB.1x\n", max_size=12),
    case=st.sampled_from(["octet", "ascii", "unicode"]),
)
def test_same_yes_or_no_as_python_re(pattern: tuple[str, str], value: str, case: str) -> None:
    posix, python = pattern
    compiled = compile_regex(posix, case)  # type: ignore[arg-type]
    # Python's "$" also matches before a final newline, POSIX's does not: compare with \Z
    python = python[:-1] + r"\Z" if python.endswith("$") else python
    expected = re.search(python, value, re.DOTALL | _FLAGS[case])
    found = groups(compiled, value)
    assert (found is not None) is (expected is not None)
    if found is not None and expected is not None:
        # leftmost-longest: never shorter than Python's leftmost-first match
        assert len(found[0]) >= len(expected.group(0))


@pytest.mark.parametrize(
    ("pattern", "value", "tail"),
    [
        # each of these runs Python's re for tens of seconds or more
        (".*foo.*bar", "foo" * 3000, "bar"),
        ("a*a*a*b", "a" * 10_000, "b"),
        ("(a|aa)*b", "a" * 10_000, "b"),
        ("x+x+y", "x" * 10_000, "y"),
        ("(a+)+b", "a" * 10_000, "b"),
    ],
)
def test_patterns_that_make_re_backtrack_answer(pattern: str, value: str, tail: str) -> None:
    compiled = compile_regex(pattern, "octet")
    assert groups(compiled, value) is None
    assert groups(compiled, value + tail) is not None


def test_posix_leftmost_longest_groups() -> None:
    # Python's re takes the first alternative that works ("a"); POSIX the longest match
    assert groups(compile_regex("x(a|ab)", "octet"), "xab") == ["xab", "ab"]
    found = groups(compile_regex("(a|aa)*(b)", "octet"), "a" * 5000 + "b")
    assert found is not None
    assert (found[0], found[2]) == ("a" * 5000 + "b", "b")


def test_posix_details() -> None:
    # a backslash before a letter is the letter; inside brackets it is itself
    assert groups(compile_regex("\\d", "octet"), "1d") == ["d"]
    assert groups(compile_regex("[\\]+", "octet"), "a\\\\b") == ["\\\\"]
    assert groups(compile_regex("[]a]+", "octet"), "x]a]") == ["]a]"]
    # "." takes a line end, "^" and "$" are the ends of the value only
    assert groups(compile_regex("a.b", "octet"), "a\nb") == ["a\nb"]
    assert groups(compile_regex("^b", "octet"), "a\nb") is None
    # POSIX reads "a+?" as "(a+)?" (there are no lazy quantifiers)
    assert groups(compile_regex("xa+?y", "octet"), "xy") == ["xy"]
    with pytest.raises(ValueError, match="collating"):
        compile_regex("[[=a=]]", "octet")
    with pytest.raises(ValueError, match="character class"):
        compile_regex("[[:nope:]]", "octet")


def test_case_folding_follows_the_comparator() -> None:
    assert groups(compile_regex("frop", "octet"), "FROP") is None
    assert groups(compile_regex("fr[o-p]p", "ascii"), "FROP") == ["FROP"]
    assert groups(compile_regex("[[:lower:]]+", "ascii"), "ABc") == ["ABc"]
    # i;ascii-casemap folds A-Z only (RFC 4790 §9.2); i;unicode-casemap folds É too
    assert groups(compile_regex("é", "ascii"), "É") is None
    assert groups(compile_regex("é", "unicode"), "É") == ["É"]


def test_repetition_counts_are_bounded() -> None:
    with pytest.raises(ValueError, match="bad regex"):
        compile_regex("a{1001}", "octet")
    with pytest.raises(ValueError, match="bad regex"):
        compile_regex("((a{100}){100}){100}", "octet")
    with pytest.raises(Exception, match="regex"):
        compile_script('require "regex"; if header :regex "s" "((a{100}){100}){100}" {}')


def test_a_regex_test_in_a_script_is_charged_its_bound() -> None:
    message = b"Subject: " + b"foo" * 3000 + b"\r\n\r\nx\r\n"
    text = 'require "regex";\nif header :regex "subject" ".*foo.*bar" { discard; }'
    script = compile_script(text)
    result = run_script(script, context(message, clock=lambda: 0.0))
    assert result.implicit_keep
    with pytest.raises(SieveRuntimeError, match="compare more than"):
        run_script(
            script, context(message, clock=lambda: 0.0), limits=SieveLimits(max_match_steps=1000)
        )


def test_pigeonhole_style_groups() -> None:
    compiled = compile_regex("^\\[([[:alpha:]]+)-([0-9]+)\\]", "ascii")
    assert groups(compiled, "[Frop-42] x") == ["[Frop-42]", "Frop", "42"]
