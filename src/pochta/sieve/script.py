"""The public API of the Sieve interpreter: compile a script once, run it per message.

    script = compile_script(text, name="main", limits=limits)   # SieveError if broken
    result = run_script(script, context, limits=limits)         # SieveRuntimeError if it fails

``CAPABILITIES`` lists what ``require`` accepts (ManageSieve's SIEVE capability line).
``Script`` is immutable: cache it by the stored script's ``version``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass

from pochta.sieve import extensions as _extensions  # noqa: F401 - registers every extension
from pochta.sieve.actions import SieveResult
from pochta.sieve.compiler import Call, CompileState, available_capabilities, compile_tree
from pochta.sieve.context import MessageContext, ScriptLoader
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.interpreter import Run, StopScript
from pochta.sieve.limits import SieveLimits
from pochta.sieve.parser import parse
from pochta.sieve.registry import REGISTRY, Registry

__all__ = [
    "CAPABILITIES",
    "DEFAULT_LIMITS",
    "Script",
    "compile_script",
    "execute",
    "run_commands",
    "run_script",
]

CAPABILITIES: tuple[str, ...] = REGISTRY.advertised()
DEFAULT_LIMITS = SieveLimits()


@dataclass(frozen=True, slots=True)
class Script:
    """A compiled script: immutable, reusable for any number of runs."""

    name: str
    commands: tuple[Call, ...]
    required: frozenset[str]


def compile_script(
    text: str,
    *,
    name: str = "",
    limits: SieveLimits = DEFAULT_LIMITS,
    loader: ScriptLoader | None = None,
    extensions: Collection[str] | None = None,
    registry: Registry = REGISTRY,
) -> Script:
    """Compile ``text``; SieveError (``.errors`` lists every error found) if it is not a
    valid script. ``extensions`` limits what ``require`` may name (None: all registered)."""
    nodes = parse(text, max_bytes=limits.max_script_bytes)
    state = CompileState(
        registry=registry,
        available=available_capabilities(registry, extensions),
        limits=limits,
        name=name,
        loader=loader,
    )
    commands = compile_tree(nodes, state)
    return Script(name=name, commands=commands, required=frozenset(state.required))


def run_commands(run: Run, script: Script) -> None:
    """Run ``script``'s commands inside an existing run (include, the test harness);
    ``StopScript`` goes through to the caller."""
    saved = run.use_variables
    run.use_variables = "variables" in script.required
    try:
        run.run_block(script.commands)
    except RecursionError:
        raise SieveRuntimeError("the script nests too deeply") from None
    finally:
        run.use_variables = saved


def execute(run: Run, script: Script) -> None:
    """Run ``script`` in ``run`` to its end or its ``stop``."""
    with contextlib.suppress(StopScript):
        run_commands(run, script)


def run_script(
    script: Script, context: MessageContext, *, limits: SieveLimits = DEFAULT_LIMITS
) -> SieveResult:
    """Run ``script`` against one message; SieveRuntimeError when the run fails (the caller
    then keeps the message, RFC 5228 §2.10.6)."""
    run = Run(context, limits)
    execute(run, script)
    return run.result()
