"""The checks of the mail system's spam filter, made from the settings.

:func:`build_checks` is called where the mail system builds cleanup (``server/mail.py``,
again on reload) and by ``pochta spam score``; each part of the filter adds its own lines
here, with the settings and dependencies it needs (no globals).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pochta.config.settings import Settings
from pochta.spam.check import Check
from pochta.spam.gtube import Gtube

if TYPE_CHECKING:
    import dns.asyncresolver

    from pochta.directory.base import Directory

__all__ = ["build_checks"]


def build_checks(
    settings: Settings,
    *,
    directory: Directory | None,
    dns_resolver: dns.asyncresolver.Resolver | None,
) -> list[Check]:
    """Every check ``settings`` switches on, in the order they are reported."""
    # directory and dns_resolver are for the checks that need them (Bayes, lists, DNSBL).
    checks: list[Check] = [Gtube()]  # the end-to-end test string (spam/gtube.py)
    return checks
