"""``reject`` and ``ereject`` (RFC 5429). Their conflicts with other actions are checked
by ``Run.add_action`` (RFC 5429 §2.1.3)."""

from __future__ import annotations

from pochta.sieve.actions import Reject
from pochta.sieve.compiler import Call
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec


def _reject(run: Run, call: Call) -> None:
    run.add_action(Reject(reason=run.expand(call.string(0)), extended=call.name == "ereject"))


REGISTRY.add_capability(Capability("reject"))
REGISTRY.add_capability(Capability("ereject"))
REGISTRY.add_command(
    CommandSpec(name="reject", capability="reject", positional=("string",), handler=_reject)
)
REGISTRY.add_command(
    CommandSpec(name="ereject", capability="ereject", positional=("string",), handler=_reject)
)
