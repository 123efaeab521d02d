"""The spam checks of a mail system, built from the settings (``build_checks``).

The scanner (``spam/scanner.py``) runs the list this returns. Each part of the filter adds
its own lines here, in the order the checks are listed in ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pochta.config.settings import Settings
from pochta.spam.bayes import BayesCheck, ScoreCurve
from pochta.spam.bayes_store import BayesStore
from pochta.spam.check import Check

if TYPE_CHECKING:
    from pochta.directory.base import Directory

__all__ = ["bayes_curve", "build_checks"]


def build_checks(
    settings: Settings, *, directory: Directory | None, dns_resolver: object
) -> list[Check]:
    """The checks to run on MX mail, each constructed with its settings and dependencies."""
    checks: list[Check] = []
    if settings.bayes.enabled:
        # Bayes: BAYES_SPAM / BAYES_HAM from the statistics in the directory database.
        checks.append(
            BayesCheck(
                BayesStore(settings.directory_db),
                min_learned=settings.bayes.min_learned,
                curve=bayes_curve(settings),
                is_local=_account_of(directory),
            )
        )
    return checks


def bayes_curve(settings: Settings) -> ScoreCurve:
    b = settings.bayes
    return ScoreCurve(
        spam_above=b.spam_probability,
        spam_min_score=b.spam_min_score,
        spam_max_score=b.spam_max_score,
        ham_below=b.ham_probability,
        ham_score=b.ham_score,
    )


def _account_of(directory: Directory | None) -> Callable[[str], str | None]:
    """An envelope recipient -> its account's address, None when it has none here."""

    def account_of(address: str) -> str | None:
        if directory is None:
            return None
        account = directory.get_account(address)
        return account.address if account is not None else None

    return account_of
