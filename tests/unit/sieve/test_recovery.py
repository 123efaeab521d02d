"""Compile error recovery: every independent error of a script is reported, none that only
follows from another (what a ManageSieve editor shows its user)."""

from __future__ import annotations

import pytest

from pochta.sieve.errors import SieveError
from pochta.sieve.script import compile_script


def errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(SieveError) as caught:
        compile_script(text)
    assert caught.value is caught.value.errors[0]
    return [(e.line, e.message) for e in caught.value.errors]


def test_the_block_of_a_wrong_command_is_still_checked() -> None:
    text = 'require "fileinto";\nif header :frop "a" "b" {\n  fileinto 1;\n  frml;\n}'
    found = errors(text)
    assert [line for line, _ in found] == [2, 3, 4]
    assert "unknown tag ':frop'" in found[0][1]
    assert "must be a string, not a number" in found[1][1]
    assert "unknown command 'frml'" in found[2][1]


def test_each_test_of_a_test_list_stands_alone() -> None:
    text = 'if anyof (header :frop "a" "b",\n  true,\n  address :is 1 "c") { keep; }'
    assert [line for line, _ in errors(text)] == [1, 3]


def test_the_tests_under_a_wrong_test_are_checked() -> None:
    text = 'if not anyof (exists 1, exists "a", size :frop 1) {}'
    assert len(errors(text)) == 2


def test_each_unknown_extension_of_a_require_is_one_error() -> None:
    found = errors('require ["_frop", "fileinto", "_friep"];\nfileinto "x";')
    assert [m for _, m in found] == [
        "unsupported extension '_frop' in require",
        "unsupported extension '_friep' in require",
    ]


@pytest.mark.parametrize(
    ("text", "count"),
    [
        # one wrong argument is one error, not one per argument after it
        ('require "fileinto";\nfileinto "a" "b" 3;', 1),
        # an unknown command: nothing under it is looked at (its arguments mean nothing)
        ("frop :x 1 { fileinto 1; }", 1),
        # a command that takes no block: its block is not checked
        ("stop { frml; }", 1),
        # a forgotten ':' makes a tag a test: the arguments and the test explain each other
        ('require "fileinto";\nfileinto true;', 2),
        # a correct command after a broken one is fine
        ('keep "x";\nkeep;\ndiscard;', 1),
    ],
)
def test_no_cascade(text: str, count: int) -> None:
    assert len(errors(text)) == count


def test_errors_are_in_script_order() -> None:
    text = 'if header :frop "a" "b" {\n  keep 1;\n}\nstop 2;'
    assert [line for line, _ in errors(text)] == [1, 2, 4]
