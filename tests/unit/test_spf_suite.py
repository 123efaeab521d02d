"""The openspf.org SPF test suites (RFC 7208 and, informative, RFC 4408) through OUR interface.

Each YAML document of ``/work/shared/testdata/spf/`` is a scenario: its ``zonedata`` becomes
the DNS (``tests/spf_zone.py``) and every test calls :func:`pochta.mailauth.spf.check_spf`
with ``(host, mailfrom, helo)``; the result must be one of the expected ones, and a fail's
explanation must be the expected text (``DEFAULT`` in the suites is the evaluator's default
explanation, ours is :data:`DEFAULT_EXPLANATION`). The Received-SPF ``header`` some cases
give is not checked: this module makes no header (the next step writes
Authentication-Results).

Cases that do not pass are listed in :data:`EXPECTED_FAILURES` with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pochta.mailauth.spf import check_spf
from tests.spf_zone import ZoneDns, zone_from_suite

SUITES = Path("/work/shared/testdata/spf")
DEFAULT_EXPLANATION = "SPF fail - not authorized"

# (file, test id) -> why it may not pass. Only cases the RFC leaves to the implementation.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    params = []
    for file in ("rfc7208-tests.yml", "rfc4408-tests.yml"):
        with (SUITES / file).open("rb") as f:
            scenarios = list(yaml.safe_load_all(f))
        for scenario in scenarios:
            zone = zone_from_suite(scenario.get("zonedata") or {})
            for test_id, test in scenario["tests"].items():
                marks = []
                why = EXPECTED_FAILURES.get((file, test_id))
                if why is not None:
                    marks.append(pytest.mark.xfail(reason=why, strict=True))
                params.append(
                    pytest.param(zone, test, id=f"{file.split('-')[0]}:{test_id}", marks=marks)
                )
    return params


CASES = _cases()


def test_suites_are_complete() -> None:
    """README.md: 203 RFC 7208 cases and 191 RFC 4408 cases."""
    assert sum(1 for c in CASES if c.id.startswith("rfc7208:")) == 203
    assert sum(1 for c in CASES if c.id.startswith("rfc4408:")) == 191


@pytest.mark.parametrize(("zone", "test"), CASES)
async def test_spf_suite(zone: dict[str, Any], test: dict[str, Any]) -> None:
    expected = test["result"]
    expected = [expected] if isinstance(expected, str) else list(expected)
    dns = ZoneDns(zone)
    got = await check_spf(test["host"], test["mailfrom"], test["helo"], dns=dns)
    assert got.result in expected, (got, test.get("description"), test.get("spec"))
    explanation = test.get("explanation")
    if explanation is not None and got.result == "fail":
        want = DEFAULT_EXPLANATION if explanation == "DEFAULT" else explanation
        assert got.explanation == want, got
