"""The RETURN options of SEARCH and SORT: RFC 4731 ESEARCH (MIN MAX ALL COUNT), RFC 5267
CONTEXT=SEARCH / CONTEXT=SORT (CONTEXT, UPDATE, PARTIAL) and ESORT (the same options on SORT).

Pure: tokens in, a :class:`ReturnOptions` out, ``ValueError`` with the reason for the BAD.
PARTIAL takes RFC 5267 §4.4's positive range (``1:100``; ``100:1`` is the same range) and
RFC 9394 §3.1's count from the end (``-1:-100``: the newest hundred); both without ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# RFC 5267 §5 partial-range = nz-number ":" nz-number; RFC 9394 §4 adds
# partial-range-last = MINUS nz-number ":" MINUS nz-number. Never "*".
_PARTIAL_RE = re.compile(r"(-?)([1-9][0-9]*):(-?)([1-9][0-9]*)")
_NZ_NUMBER_MAX = 2**32 - 1  # RFC 9051 §9 nz-number: a non-zero unsigned 32-bit integer

SIMPLE_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "CONTEXT", "UPDATE"})


@dataclass(frozen=True, slots=True)
class PartialRange:
    """Result positions ``first`` to ``last`` (1-based, first <= last); counted from the
    end of the result when ``from_end`` (RFC 9394 §3.1: -1 is the last result)."""

    first: int
    last: int
    from_end: bool = False

    def text(self) -> str:
        """The range as it goes back in the PARTIAL return data (lower end first)."""
        sign = "-" if self.from_end else ""
        return f"{sign}{self.first}:{sign}{self.last}"

    def pick(self, results: Sequence[int]) -> list[int]:
        """The results at these positions, in the result's order (RFC 5267 §4.4: positions
        past the end are simply absent)."""
        n = len(results)
        if self.from_end:
            lo, hi = max(n - self.last, 0), max(n - self.first + 1, 0)
        else:
            lo, hi = self.first - 1, self.last
        return list(results[lo:hi])


@dataclass(frozen=True, slots=True)
class ReturnOptions:
    """What a RETURN (...) list asks for. ``ALL`` is also set for an empty list (RFC 4731
    §3.1: ``RETURN ()`` means ALL)."""

    min: bool = False
    max: bool = False
    all: bool = False
    count: bool = False
    partial: PartialRange | None = None
    update: bool = False  # RFC 5267 §4.3: keep the result and send ADDTO / REMOVEFROM
    context: bool = False  # RFC 5267 §4.2: a hint only


def parse_partial(token: object) -> PartialRange:
    text = token if isinstance(token, str) and type(token) is str else None
    m = _PARTIAL_RE.fullmatch(text) if text is not None else None
    if m is None or m.group(1) != m.group(3):
        raise ValueError("PARTIAL needs a range such as 1:100 or -1:-100 (no *)")
    a, b = int(m.group(2)), int(m.group(4))
    if max(a, b) > _NZ_NUMBER_MAX:
        raise ValueError("PARTIAL range is beyond 4294967295")
    # RFC 5267 §5: "A range 500:400 is the same as 400:500" (RFC 9394 §4: -500:-400 too).
    return PartialRange(min(a, b), max(a, b), from_end=m.group(1) == "-")


def parse_return_options(tokens: Sequence[object]) -> ReturnOptions:
    """The options of ``RETURN (...)``, each token an atom (``str``, not quoted)."""
    seen: set[str] = set()
    partial: PartialRange | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if not isinstance(tok, str) or type(tok) is not str:
            raise ValueError("RETURN options are atoms")
        word = tok.upper()
        if word == "PARTIAL":
            if partial is not None:
                # RFC 5267 §4.4: one PARTIAL or one ALL, not both, not twice
                raise ValueError("Only one PARTIAL return option is allowed")
            if i >= len(tokens):
                raise ValueError("PARTIAL needs a range such as 1:100")
            partial = parse_partial(tokens[i])
            i += 1
        elif word in SIMPLE_OPTIONS:
            seen.add(word)
        else:
            raise ValueError(f"Unknown RETURN option {word[:40]}")
    if partial is not None and "ALL" in seen:
        raise ValueError("PARTIAL and ALL cannot be used together")  # RFC 5267 §4.4
    return ReturnOptions(
        min="MIN" in seen,
        max="MAX" in seen,
        # RFC 4731 §3.1: RETURN () is RETURN (ALL)
        all="ALL" in seen or not tokens,
        count="COUNT" in seen,
        partial=partial,
        update="UPDATE" in seen,
        context="CONTEXT" in seen,
    )
