"""``environment`` (RFC 5183): the items the context gives, plus the standard ones pochta
knows: "domain", "host" (from the context), "location" "MDA", "name" "pochta", "phase"
"during", "version"."""

from __future__ import annotations

from importlib import metadata

from pochta.sieve.compiler import Call
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, TestSpec

try:
    _VERSION = metadata.version("pochta")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a tree
    _VERSION = "0"

STANDARD_ITEMS = {
    "location": "MDA",  # RFC 5183 §4.1: we run at delivery
    "name": "pochta",
    "phase": "during",
    "version": _VERSION,
}


def item(run: Run, name: str) -> str | None:
    name = name.lower()
    if name in run.context.environment:
        return run.context.environment[name]
    return STANDARD_ITEMS.get(name)


def _environment(run: Run, call: Call) -> bool:
    value = item(run, run.expand(call.string(0)))
    if value is None:
        return False  # RFC 5183 §4: an unknown item never matches
    return run.match(call, [value], call.strings(1))


REGISTRY.add_capability(Capability("environment"))
REGISTRY.add_test(
    TestSpec(
        name="environment",
        capability="environment",
        positional=("string", "string-list"),
        comparator=True,
        match_type=True,
        handler=_environment,
    )
)
