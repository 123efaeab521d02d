"""When to try a deferred recipient again: exponential backoff (Postfix qmgr(8) semantics).

The rule, exactly: after the n-th failed attempt (n ≥ 1) of a recipient,

    base(n)  = min(maximal, minimal × 2^(n−1))
    delay(n) = min(maximal, base(n) × (1 + jitter × u)),  u uniform in [0, 1)
    next_attempt = now + delay(n)

With Postfix's defaults (minimal_backoff_time 300 s, maximal_backoff_time 4000 s) and no
jitter the waits are 300, 600, 1200, 2400, 4000, 4000, ... seconds.

How this relates to Postfix: mail_params.h says "after each failed attempt the backoff time
... is doubled until it reaches the maximum", and qmgr_active.c implements that as
``delay = now − create_time`` clamped to [minimal_backoff_time, maximal_backoff_time] (the
message's age, which doubles when each retry waits as long as the message is old). We count
attempts instead, so the schedule does not depend on when the message arrived (a message
held for a day and then released starts again at the minimal backoff rather than waiting the
maximum) and is exact to test. The jitter, 10% by default and only ever upward (never past
the maximum), spreads the retries of messages that failed together — e.g. everything queued
for a destination that was down — so they do not all come back in the same second;
Postfix gets the same spread from the age-based rule ("backoff times will be distributed").
"""

from __future__ import annotations

import random
from collections.abc import Callable

DEFAULT_JITTER = 0.1
_MAX_DOUBLINGS = 60  # 2^60 × anything is past every sensible maximum; avoids float overflow


def backoff_delay(
    attempts: int,
    minimal_seconds: float,
    maximal_seconds: float,
    *,
    jitter: float = DEFAULT_JITTER,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (see the module docstring).

    ``attempts`` below 1 counts as 1; a ``maximal_seconds`` below ``minimal_seconds`` is
    raised to it (Postfix requires maximal_backoff_time ≥ minimal_backoff_time).
    """
    maximal = max(maximal_seconds, minimal_seconds)
    doublings = min(max(attempts, 1) - 1, _MAX_DOUBLINGS)
    base = min(maximal, minimal_seconds * (2**doublings))
    if jitter <= 0:
        return float(base)
    return float(min(maximal, base * (1.0 + jitter * rng())))


def schedule(attempts: int, minimal_seconds: float, maximal_seconds: float) -> list[float]:
    """The waits after attempts 1..``attempts`` without jitter (for docs and tests)."""
    return [
        backoff_delay(n, minimal_seconds, maximal_seconds, jitter=0.0)
        for n in range(1, attempts + 1)
    ]
