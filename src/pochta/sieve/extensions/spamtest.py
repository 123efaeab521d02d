"""RFC 5235 ``spamtest``, ``spamtestplus`` (``:percent``) and ``virustest``: the spam
filter's verdict (``context.spam``) as a number matched against the key. The scaling is in
``spamscale.py``: spamtest "0" = not tested, "1" clean .. "10" certain spam; ``:percent``
"0".."100"; virustest the ``VirusInfo`` status, "0" (not tested) when no scanner ran.

RFC 5235 §3.3: ``require "spamtestplus"`` also gives ``spamtest``. The registry has one
capability per test, so the test is registered without one and its validator asks for
either.
"""

from __future__ import annotations

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.extensions.spamscale import spamtest_percent, spamtest_value, virustest_value
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, TagSpec, TestSpec

__all__: list[str] = []


def _spamtest(run: Run, call: Call) -> bool:
    spam = run.context.spam
    value = spamtest_percent(spam) if "percent" in call.tags else spamtest_value(spam)
    return run.match(call, [value], [call.string(0)])


def _virustest(run: Run, call: Call) -> bool:
    return run.match(call, [virustest_value(run.context.virus)], [call.string(0)])


def _check_spamtest(call: Call, state: CompileState) -> Call | None:
    if not (state.has("spamtest") or state.has("spamtestplus")):
        # RFC 5228 §3.2, RFC 5235 §3.3: the test needs one of the two requires
        raise call.error('test \'spamtest\' needs require "spamtest" or "spamtestplus"')
    return None


REGISTRY.add_capability(Capability("spamtest"))
REGISTRY.add_capability(Capability("spamtestplus"))
REGISTRY.add_capability(Capability("virustest"))
REGISTRY.add_test(
    TestSpec(
        name="spamtest",
        positional=("string",),
        tags=(TagSpec("percent", capability="spamtestplus"),),
        comparator=True,
        match_type=True,
        handler=_spamtest,
        validate=_check_spamtest,
    )
)
REGISTRY.add_test(
    TestSpec(
        name="virustest",
        capability="virustest",
        positional=("string",),
        comparator=True,
        match_type=True,
        handler=_virustest,
    )
)
