"""The registry is open: a test-only extension registers commands, tests and a variable
namespace in its own copy, with handlers that see the run's state."""

from __future__ import annotations

import pytest

from pochta.sieve.actions import Discard
from pochta.sieve.compiler import Call
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import (
    REGISTRY,
    Capability,
    CommandSpec,
    Namespace,
    TagSpec,
    TestSpec,
)
from pochta.sieve.script import CAPABILITIES, compile_script, run_script

from .helpers import context


class Failed(SieveRuntimeError):
    pass


def _fail(run: Run, call: Call) -> None:
    raise Failed(run.expand(call.string(0)))


def _block(run: Run, call: Call) -> None:
    run.state.setdefault("names", []).append(call.string(0))
    run.run_block(call.block or ())


def _actions(run: Run, call: Call) -> bool:
    names = [type(a).__name__.lower() for a in run.actions]
    index = call.tags.get("index")
    if isinstance(index, int):
        names = names[index - 1 : index]
    return run.match(call, names, call.strings(0))


def make_registry():  # type: ignore[no-untyped-def]
    mine = REGISTRY.copy()
    mine.add_capability(Capability("vnd.example.test", advertised=False))
    mine.add_command(
        CommandSpec(
            name="test_fail",
            capability="vnd.example.test",
            positional=("string",),
            handler=_fail,
        )
    )
    mine.add_command(
        CommandSpec(
            name="test",
            capability="vnd.example.test",
            positional=("string",),
            block="required",
            handler=_block,
        )
    )
    mine.add_test(
        TestSpec(
            name="test_result_action",
            capability="vnd.example.test",
            positional=("string-list",),
            tags=(TagSpec("index", arg="number"),),
            comparator=True,
            match_type=True,
            handler=_actions,
        )
    )
    mine.add_namespace(
        Namespace(name="tst", capability="vnd.example.test", get=lambda run, rest: "/dir")
    )
    return mine


SCRIPT = """require ["vnd.example.test", "variables", "relational",
         "comparator-i;ascii-numeric"];
test "discarding" {
    discard;
    if not test_result_action :index 1 "discard" { test_fail "no discard"; }
    if not test_result_action :count "eq" :comparator "i;ascii-numeric" "1" {
        test_fail "wrong count";
    }
    if string "${tst.path}" "/dir" { test_fail "path ${tst.path}"; }
}
"""


def test_a_test_only_extension() -> None:
    mine = make_registry()
    script = compile_script(SCRIPT, registry=mine)
    with pytest.raises(Failed, match="path /dir"):
        run_script(script, context())
    assert "vnd.example.test" not in CAPABILITIES
    # the shared registry does not know it
    with pytest.raises(SieveError, match=r"unsupported extension 'vnd\.example\.test'"):
        compile_script(SCRIPT)


def test_handlers_see_the_run() -> None:
    mine = make_registry()
    script = compile_script(
        'require "vnd.example.test"; test "a" { discard; } test "b" { keep; }', registry=mine
    )
    result = run_script(script, context())
    assert result.actions[0] == Discard()
    with pytest.raises(SieveError, match="takes string positional"):
        compile_script('require "vnd.example.test"; test { }', registry=mine)


def test_registering_needs_the_capability_first() -> None:
    mine = REGISTRY.copy()
    with pytest.raises(ValueError, match="register capability"):
        mine.add_command(
            CommandSpec(name="x", capability="vnd.nope", handler=lambda run, call: None)
        )
