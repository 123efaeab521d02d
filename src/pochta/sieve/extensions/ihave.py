"""``ihave`` and ``error`` (RFC 5463). The compiler skips the block of ``if ihave`` when a
capability is unknown and requires them inside it when all are known (RFC 5463 §4)."""

from __future__ import annotations

from pochta.sieve.compiler import Call
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TestSpec


def _ihave(run: Run, call: Call) -> bool:
    # RFC 5463 §4: true when every capability is one the implementation has
    return all(name in run.registry.capabilities for name in call.strings(0))


def _error(run: Run, call: Call) -> None:
    # RFC 5463 §5: the script fails with the message; the implicit keep is carried out
    raise SieveRuntimeError(f"error: {run.expand(call.string(0))}")


REGISTRY.add_capability(Capability("ihave"))
REGISTRY.add_test(
    TestSpec(name="ihave", capability="ihave", positional=("string-list",), handler=_ihave)
)
REGISTRY.add_command(
    CommandSpec(name="error", capability="ihave", positional=("string",), handler=_error)
)
