"""The scanner: every check run on one message, the symbols summed, the action chosen.

Rspamd's pipeline in small (``spam/check.py`` says what a check is):

1. **Checks that wait run concurrently** (``asyncio.gather``), each under ``[spam]
   check_timeout_seconds``: a DNS list that does not answer costs one timeout, not the sum
   of them. The checks that never wait (``waits = False``: heuristics, GTUBE, the lists) run
   in place while the others wait, without a task each. A check that raises or runs out
   of time is logged with its name (``spam_check_failed``) and gives no symbols; the scan
   goes on without it, so a broken check never refuses mail.
2. **Scores are overridden** by ``[spam] scores`` (``{ BAYES_SPAM = 5.0 }``): the symbol
   keeps its name, description and options, the configured score replaces the check's.
   A symbol name found twice counts once (the later check's), as in Rspamd.
3. **The action by score** (Rspamd's actions and default thresholds; 0 switches one off):

   ============================  ==========================================================
   score >= ``reject_score`` 15  ``reject_action``: ``quarantine`` (default), ``reject``
                                 (550 5.7.1 at the end of DATA) or ``junk``
   score >= ``junk_score`` 6     ``junk``: delivered into the Junk folder (Rspamd's
                                 ``add header``; its ``rewrite subject`` has no twin here)
   score >= ``greylist_score`` 4 ``greylist``: the greylisting gate decides (``spam/
                                 greylist.py``, RFC 6647); a known triplet passes
   lower                         ``no action``
   ============================  ==========================================================

   ``is_spam`` is ``score >= junk_score`` (SpamAssassin's ``required``), the ``Yes``/``No``
   of ``X-Spam-Status``.

The header fields the filter writes (``cleanup/spam_filter.py``) are made here, so ``pochta
spam score`` and delivery agree: ``X-Spam-Score: 7.20``, ``X-Spam-Status: Yes, score=7.20
required=6.00`` (SpamAssassin's form) and ``X-Spam-Symbols: GTUBE(1000.00), ...`` folded
at 78 characters (RFC 5322 §2.1.1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pochta.cleanup.verdict import Symbol
from pochta.config.settings import SpamSettings
from pochta.logs import get_logger
from pochta.spam.check import Check, ScanInput

__all__ = [
    "SPAM_FIELDS",
    "ScanResult",
    "Scanner",
    "SpamAction",
    "action_for",
    "is_spam_field",
    "spam_headers",
    "symbols_text",
]

log = get_logger("spam")

SpamAction = Literal["no action", "greylist", "junk", "quarantine", "reject"]

SPAM_FIELDS = ("X-Spam-Score", "X-Spam-Status", "X-Spam-Symbols")
"""The fields the filter prepends, in the order they appear."""

_FOLD_AT = 78  # RFC 5322 §2.1.1: lines SHOULD be no more than 78 characters


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The symbols of one scan, their total and the action the thresholds give."""

    symbols: tuple[Symbol, ...]
    score: float
    action: SpamAction
    required: float  # junk_score: from here on the message is spam
    failed: tuple[str, ...] = ()  # names of the checks that raised or ran out of time

    @property
    def is_spam(self) -> bool:
        return self.required > 0 and self.score >= self.required


def action_for(score: float, settings: SpamSettings) -> SpamAction:
    """The action of ``score`` by the thresholds (see the module docstring); 0 is off."""
    if settings.reject_score and score >= settings.reject_score:
        return settings.reject_action
    if settings.junk_score and score >= settings.junk_score:
        return "junk"
    if settings.greylist_score and score >= settings.greylist_score:
        return "greylist"
    return "no action"


class Scanner:
    """Runs ``checks`` on a message; see the module docstring."""

    def __init__(self, checks: Sequence[Check], settings: SpamSettings) -> None:
        self.checks = list(checks)
        self._in_place = [not getattr(check, "waits", True) for check in self.checks]
        self.settings = settings
        self._timeout = settings.check_timeout_seconds
        self._scores = dict(settings.scores)

    async def scan(self, scan: ScanInput) -> ScanResult:
        """Every check on ``scan``; never raises for a check's fault."""
        waiting = [i for i, in_place in enumerate(self._in_place) if not in_place]
        pending = None
        if waiting:
            pending = asyncio.gather(*(self._run(self.checks[i], scan) for i in waiting))
            await asyncio.sleep(0)  # their lookups go out before the in-place checks run
        found: list[Sequence[Symbol] | None] = [
            await self._run_in_place(check, scan) if in_place else None
            for check, in_place in zip(self.checks, self._in_place, strict=True)
        ]
        if pending is not None:
            for i, outcome in zip(waiting, await pending, strict=True):
                found[i] = outcome
        symbols: dict[str, Symbol] = {}
        failed: list[str] = []
        for check, outcome in zip(self.checks, found, strict=True):
            if outcome is None:
                failed.append(check.name)
                continue
            for symbol in outcome:
                symbols.pop(symbol.name, None)  # a name counts once: the later one
                symbols[symbol.name] = self._override(symbol)
        total = sum(s.score for s in symbols.values())
        return ScanResult(
            symbols=tuple(symbols.values()),
            score=total,
            action=action_for(total, self.settings),
            required=self.settings.junk_score,
            failed=tuple(failed),
        )

    async def _run(self, check: Check, scan: ScanInput) -> Sequence[Symbol] | None:
        """The check's symbols, or None (logged) when it raised or ran out of time."""
        try:
            async with asyncio.timeout(self._timeout):
                return await check(scan)
        except TimeoutError:
            _failed(
                check, scan, f"no result within {self._timeout:g} s (spam.check_timeout_seconds)"
            )
        except Exception as exc:
            _failed(check, scan, f"{type(exc).__name__}: {exc}")
        return None

    async def _run_in_place(self, check: Check, scan: ScanInput) -> Sequence[Symbol] | None:
        """A check that never waits: its symbols, or None (logged) when it raised."""
        try:
            return await check(scan)
        except Exception as exc:
            _failed(check, scan, f"{type(exc).__name__}: {exc}")
        return None

    def _override(self, symbol: Symbol) -> Symbol:
        score = self._scores.get(symbol.name)
        if score is None or score == symbol.score:
            return symbol
        return Symbol(
            name=symbol.name,
            score=score,
            description=symbol.description,
            options=symbol.options,
        )


def _failed(check: Check, scan: ScanInput, error: str) -> None:
    log.warning("spam_check_failed", queue_id=scan.queue_id, check=check.name, error=error[:300])


def symbols_text(symbols: Sequence[Symbol]) -> str:
    """``NAME(score)`` comma-separated, highest score first, for the log and the header."""
    ordered = sorted(symbols, key=lambda s: (-s.score, s.name))
    return ", ".join(f"{s.name}({s.score:.2f})" for s in ordered)


def spam_headers(result: ScanResult) -> list[tuple[str, str]]:
    """The ``(name, value)`` of the X-Spam-* fields for ``result``, in SPAM_FIELDS order.
    X-Spam-Symbols is folded before a symbol that would pass 78 characters."""
    score = f"{result.score:.2f}"
    status = f"{'Yes' if result.is_spam else 'No'}, score={score} required={result.required:.2f}"
    return [
        ("X-Spam-Score", score),
        ("X-Spam-Status", status),
        ("X-Spam-Symbols", _fold("X-Spam-Symbols", symbols_text(result.symbols).split(", "))),
    ]


def _fold(name: str, items: list[str]) -> str:
    """``items`` joined with ", ", a fold (CRLF + space, RFC 5322 §2.2.3) before an item
    that would make the line longer than 78 characters; an item is never cut."""
    items = [i for i in items if i]
    if not items:
        return ""
    lines: list[str] = []
    line = items[0]
    width = len(name) + 2  # "Name: "
    for item in items[1:]:
        if width + len(line) + 2 + len(item) > _FOLD_AT:
            lines.append(line + ",")
            line = " " + item
            width = 0
        else:
            line += ", " + item
    lines.append(line)
    return "\n".join(lines)


def is_spam_field(key: str) -> bool:
    """Whether a header field name (lowercase) is one of the X-Spam family (ours, or a
    SpamAssassin's: X-Spam-Flag, X-Spam-Level...), which the filter removes from the mail it
    receives: such a field from outside is a forgery the user's Sieve rules might trust."""
    return key == "x-spam" or key.startswith("x-spam-")
