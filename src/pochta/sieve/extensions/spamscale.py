"""The numbers spamtest and virustest give (RFC 5235), from pochta's spam verdict. Pure: the
registry glue lives in ``extensions/spamtest.py``.

The scaling is linear in the filter's score against ``SpamInfo.max_score`` (the score read
as "certainly spam"), the way Dovecot's Pigeonhole scales a configured score header:

- spamtest (RFC 5235 §3.2): "0" when no filter looked at the message; else
  ``1 + floor(9 * ratio)`` with ``ratio = score / max_score`` clamped to 0..1, so a score of
  0 or less is 1 (clean) and ``max_score`` or more is 10 (certain spam). With pochta's
  defaults (junk at 6, max 15) the junk threshold reads as 4.
- spamtest :percent (spamtestplus, RFC 5235 §3.3): ``round(100 * ratio)``, 0..100. A message
  no filter looked at also reads "0" (the RFC leaves no other value for it).
- virustest (RFC 5235 §3.4): ``VirusInfo.status``, "0" (not tested) when no scanner ran.
"""

from __future__ import annotations

import math

from pochta.sieve.context import SpamInfo, VirusInfo

__all__ = ["spamtest_percent", "spamtest_value", "virustest_value"]


def _ratio(spam: SpamInfo) -> float:
    if spam.max_score <= 0:
        return 1.0 if spam.score > 0 else 0.0
    # Rounded first, so 0.29 * 100 is 29 and not 28.999...
    return min(1.0, max(0.0, round(spam.score / spam.max_score, 9)))


def spamtest_value(spam: SpamInfo) -> str:
    """RFC 5235 §3.2: "0" not tested, "1" not spam .. "10" certainly spam."""
    if not spam.tested:
        return "0"
    return str(1 + math.floor(9 * _ratio(spam) + 1e-9))


def spamtest_percent(spam: SpamInfo) -> str:
    """RFC 5235 §3.3 (spamtestplus ``:percent``): "0" .. "100"."""
    if not spam.tested:
        return "0"
    return str(round(100 * _ratio(spam)))


def virustest_value(virus: VirusInfo) -> str:
    """RFC 5235 §3.4: the scanner's status, "0" (not tested) .. "5" (a virus that could not
    be removed). pochta runs no scanner of its own: the delivery side fills ``VirusInfo``
    from one, else it stays 0, "not tested". A status outside 0..5 is clamped to it."""
    return str(min(5, max(0, virus.status)))
