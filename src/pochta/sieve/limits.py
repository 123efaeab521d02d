"""The limits one compile and one run of a script keep (``[sieve]`` settings)."""

from __future__ import annotations

from dataclasses import dataclass

from pochta.config.settings import SieveSettings

__all__ = ["SieveLimits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SieveLimits:
    max_script_bytes: int = 1024 * 1024
    max_redirects: int = 4
    max_actions: int = 32
    max_run_seconds: float = 5.0
    max_include_depth: int = 10
    max_includes: int = 255
    duplicate_default_period_seconds: int = 14 * 86400
    vacation_default_period_seconds: int = 7 * 86400
    vacation_min_period_seconds: int = 86400
    vacation_max_period_seconds: int = 90 * 86400
    # The matching one run may do, in steps (``MatchType.cost``: about one per character
    # compared): ``max_run_seconds`` is checked between commands and every few matches,
    # but a match itself cannot be interrupted, so its work is bounded before it starts.
    # 50 million steps is a 10 MB body searched for 5 keys; a script asking more fails
    # (the message is kept). Not a setting: a bound against abuse, not a policy.
    max_match_steps: int = 50_000_000

    @classmethod
    def from_settings(cls, settings: SieveSettings) -> SieveLimits:
        return cls(
            max_script_bytes=settings.max_script_bytes,
            max_redirects=settings.max_redirects,
            max_actions=settings.max_actions,
            max_run_seconds=settings.max_run_seconds,
            max_include_depth=settings.max_include_depth,
            max_includes=settings.max_includes,
            duplicate_default_period_seconds=settings.duplicate_default_period_seconds,
            vacation_default_period_seconds=settings.vacation_default_period_seconds,
            vacation_min_period_seconds=settings.vacation_min_period_seconds,
            vacation_max_period_seconds=settings.vacation_max_period_seconds,
        )
