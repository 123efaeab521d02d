"""RFC 6609 include, return, global and the global. namespace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from pochta.sieve.actions import FileInto, Keep, SieveResult
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import compile_script, run_script

from .helpers import context

MESSAGE = (
    b"From: boss@example.com\r\nTo: me@example.org\r\nSubject: Make money fast $$\r\n"
    b"List-Id: <ietf.lists.example.org>\r\n\r\nbody\r\n"
)


@dataclass
class Loader:
    """A ScriptLoader over a dict, counting its reads."""

    scripts: dict[tuple[str, str], str]
    reads: list[tuple[str, str]] = field(default_factory=list)

    def load(self, name: str, location: Literal["personal", "global"]) -> str | None:
        self.reads.append((location, name))
        return self.scripts.get((location, name))


RFC_EXAMPLE_1 = {
    ("personal", "always_allow"): 'if address :is "from" "boss@example.com" { keep; }',
    ("global", "spam_tests"): (
        'require ["reject"]; if header :contains "Subject" "$$" { reject "spam"; }'
    ),
    ("personal", "spam_tests"): (
        'require ["fileinto"]; if header :contains "Subject" "Make money" { fileinto "spam"; }'
    ),
    ("personal", "mailing_lists"): (
        'require ["fileinto"]; if exists "List-Id" { fileinto "lists"; }'
    ),
}
MAIN_1 = """require ["include"];
include :personal "always_allow";
include :global "spam_tests";
include :personal "spam_tests";
include :personal "mailing_lists";"""


def _run(text: str, loader: Loader, *, at_compile: bool = True, **kw: object) -> SieveResult:
    limits = kw.pop("limits", SieveLimits())
    assert isinstance(limits, SieveLimits)
    script = compile_script(text, name="main", limits=limits, loader=loader if at_compile else None)
    return run_script(script, context(MESSAGE, loader=loader, **kw), limits=limits)


def test_rfc6609_example_1_order_and_locations() -> None:
    # RFC 6609 §3.2 example 1: personal and global scripts, run in order, one result.
    loader = Loader(dict(RFC_EXAMPLE_1))
    loader.scripts[("global", "spam_tests")] = 'if header :contains "Subject" "$$" { stop; }'
    result = _run(MAIN_1, loader)
    assert result.actions == (Keep(),)  # the global script's stop ends the whole run
    # All four were read (and compiled) once, with the main script.
    assert loader.reads == [
        ("personal", "always_allow"),
        ("global", "spam_tests"),
        ("personal", "spam_tests"),
        ("personal", "mailing_lists"),
    ]


def test_rfc6609_example_1_all_scripts() -> None:
    loader = Loader(dict(RFC_EXAMPLE_1))
    loader.scripts[("global", "spam_tests")] = "keep;"
    result = _run(MAIN_1, loader)
    assert result.actions == (Keep(), FileInto(mailbox="spam"), FileInto(mailbox="lists"))
    assert not result.implicit_keep


RFC_EXAMPLE_2_MAIN = """require ["variables", "include", "relational", "fileinto"];
global "test";
global "test_mailbox";
set "test" "$$";
include "subject_tests";
set "test" "Make money";
include "subject_tests";
if string :count "eq" "${test_mailbox}" "1" { fileinto "${test_mailbox}"; stop; }"""
RFC_EXAMPLE_2_INCLUDED = """require ["variables", "include"];
global ["test", "test_mailbox"];
if header :contains "Subject" "${test}" { set "test_mailbox" "spam-${test}"; }"""


@pytest.mark.parametrize("at_compile", [True, False])
def test_rfc6609_example_2_globals(at_compile: bool) -> None:
    # RFC 6609 §3.3 example: global variables shared with the included script.
    loader = Loader({("personal", "subject_tests"): RFC_EXAMPLE_2_INCLUDED})
    result = _run(RFC_EXAMPLE_2_MAIN, loader, at_compile=at_compile)
    assert result.actions == (FileInto(mailbox="spam-Make money"),)


def test_locals_stay_local_and_global_namespace() -> None:
    loader = Loader(
        {
            ("personal", "inner"): (
                'require ["variables", "include"]; set "local" "inner";'
                ' set "global.shared" "from inner";'
            )
        }
    )
    result = _run(
        """require ["variables", "include", "fileinto"];
        set "local" "outer";
        include "inner";
        fileinto "${local}";
        fileinto "${global.shared}";""",
        loader,
    )
    assert result.actions == (FileInto(mailbox="outer"), FileInto(mailbox="from inner"))


def test_once_optional_and_return() -> None:
    loader = Loader(
        {
            ("personal", "a"): (
                'require ["include", "fileinto"]; fileinto "a"; return; fileinto "never";'
            )
        }
    )
    result = _run(
        """require ["include", "fileinto"];
        include "a";
        include :once "a";
        include :optional "missing";
        fileinto "after";
        return;
        fileinto "not reached";""",
        loader,
    )
    assert result.actions == (FileInto(mailbox="a"), FileInto(mailbox="after"))


def test_once_include_of_a_running_script_is_skipped() -> None:
    loader = Loader(
        {
            ("personal", "one"): 'require ["include", "fileinto"]; fileinto "one"; include "two";',
            ("personal", "two"): (
                'require ["include", "fileinto"]; fileinto "two"; include :once "one";'
            ),
        }
    )
    result = _run('require "include"; include "one";', loader)
    assert result.actions == (FileInto(mailbox="one"), FileInto(mailbox="two"))


@pytest.mark.parametrize(
    ("scripts", "main", "error"),
    [
        ({}, 'include "nope";', r"'nope' \(personal\) does not exist"),
        ({("personal", "x"): 'require "include"; include "x";'}, 'include "x";', "include loop"),
        (
            {
                ("personal", "x"): 'require "include"; include "y";',
                ("personal", "y"): 'require "include"; include "x";',
            },
            'include "x";',
            "include loop",
        ),
        ({("personal", "bad"): "if true {"}, 'include "bad";', "in included script 'bad'"),
        ({}, 'include "../x";', "must not contain '/'"),
        ({}, 'include "a\u0085b";', "control characters"),
    ],
)
def test_compile_errors(scripts: dict[tuple[str, str], str], main: str, error: str) -> None:
    with pytest.raises(SieveError, match=error):
        compile_script(f'require "include"; {main}', loader=Loader(scripts))


def test_limits_at_compile() -> None:
    chain = {("personal", f"d{n}"): f'require "include"; include "d{n + 1}";' for n in range(5)}
    chain[("personal", "d5")] = "keep;"
    limits = SieveLimits(max_include_depth=3)
    with pytest.raises(SieveError, match="max_include_depth"):
        compile_script('require "include"; include "d0";', loader=Loader(chain), limits=limits)
    compile_script('require "include"; include "d0";', loader=Loader(chain))
    many = {("personal", f"s{n}"): "keep;" for n in range(4)}
    main = 'require "include";' + "".join(f'include "s{n}";' for n in range(4))
    with pytest.raises(SieveError, match="max_includes"):
        compile_script(main, loader=Loader(many), limits=SieveLimits(max_includes=3))
    compile_script(main, loader=Loader(many), limits=SieveLimits(max_includes=4))


def test_read_at_run_time_without_a_compile_loader() -> None:
    loader = Loader({("global", "g"): 'require "fileinto"; fileinto "g";'})
    result = _run('require "include"; include :global "g";', loader, at_compile=False)
    assert result.actions == (FileInto(mailbox="g"),)
    with pytest.raises(SieveRuntimeError, match="does not exist"):
        _run('require "include"; include "missing";', loader, at_compile=False)
    assert _run('require "include"; include :optional "missing";', loader, at_compile=False)
    looping = Loader({("personal", "x"): 'require "include"; include "x";'})
    with pytest.raises(SieveRuntimeError, match="include loop"):
        _run('require "include"; include "x";', looping, at_compile=False)
    broken = Loader({("personal", "x"): "if {"})
    with pytest.raises(SieveRuntimeError, match="does not compile"):
        _run('require "include"; include "x";', broken, at_compile=False)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('require "include"; global "x";', 'needs require "variables"'),
        ('require ["include", "variables"]; set "x" "1"; global "x";', "set before"),
        ('require ["include", "variables"]; global "1x";', "not a valid variable name"),
        ("return;", 'needs require "include"'),
    ],
)
def test_global_and_return_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError, match=error):
        compile_script(script)
