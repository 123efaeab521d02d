"""The match types (RFC 5228 §2.7.1, RFC 5231 relational, draft-ietf-sieve-regex-01).

``:matches`` runs a wildcard matcher that never backtracks more than one ``*`` at a time
(linear in practice, quadratic at worst), so no pattern can take exponential time. It gives
the match variables of RFC 5229 §3.2: ``${0}`` the whole value, then one per ``*`` and ``?``
in order, each ``*`` taking the shortest text that lets the rest match.

``:regex`` takes POSIX extended regular expressions (the draft's syntax), matched by RE2
in linear time with POSIX's leftmost-longest rule (``sieve/regex.py``: the translation, the
case folding per comparator, the match variables). A key that RE2 refuses is the user's
error, said at compile time; one made from variables that does not compile matches nothing.

Each match type declares the work one match may do (``MatchType.cost``); ``Run.match``
charges it to ``SieveLimits.max_match_steps`` before matching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import re2

from pochta.sieve.regex import MAX_REGEX_CHARS, Case, compile_regex, groups
from pochta.sieve.regex import cost as regex_cost
from pochta.sieve.registry import REGISTRY, Capability, Comparator, MatchType

__all__ = [
    "MAX_REGEX_CHARS",
    "RELATIONS",
    "compile_regex",
    "wildcard_match",
    "wildcard_match_general",
]

RELATIONS = {"gt", "ge", "lt", "le", "eq", "ne"}  # RFC 5231 §5


def _is(comparator: Comparator, _: str, value: str, key: str) -> tuple[bool, list[str] | None]:
    return comparator.compare(value, key) == 0, None


def _contains(
    comparator: Comparator, _: str, value: str, key: str
) -> tuple[bool, list[str] | None]:
    assert comparator.fold is not None
    return comparator.fold(key) in comparator.fold(value), None


def _same(text: str) -> str:
    return text


def _pattern(key: str) -> list[str]:
    """The key's pieces: "*", "?" or one literal character (``\\`` escapes the next)."""
    out: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            out.append("\\" + key[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return out


def wildcard_match(
    value: str, key: str, fold: Callable[[str], str] | None = None
) -> list[str] | None:
    """RFC 5228 §2.7.1 ``:matches``: the match variables (``[whole, *1, ...]``) or None.
    ``fold`` maps characters for comparison (a comparator's ``fold``)."""
    f: Callable[[str], str] = fold if fold is not None else _same
    pieces = _pattern(key)
    if "?" not in pieces:
        found = _stars_only(value, pieces, f)
        if found is not False:
            return found
    return _backtracking(value, pieces, f)


def _stars_only(
    value: str, pieces: list[str], f: Callable[[str], str]
) -> list[str] | Literal[False] | None:
    """The fast way for keys of literals and ``*`` only: each literal run found leftmost
    with ``str.find`` (linear), the same answer as the general matcher. False when folding
    changes lengths (then positions in the folded text are not those of the value)."""
    segments: list[str] = [""]
    for p in pieces:
        if p == "*":
            segments.append("")
        else:
            segments[-1] += p[1] if len(p) == 2 and p[0] == "\\" else p
    folded = f(value)
    parts = [f(s) for s in segments]
    if len(folded) != len(value) or any(
        len(a) != len(b) for a, b in zip(parts, segments, strict=True)
    ):
        return False
    if len(parts) == 1:
        return [value] if folded == parts[0] else None
    first, last = parts[0], parts[-1]
    end = len(folded) - len(last)
    if end < len(first) or not folded.startswith(first) or not folded.endswith(last):
        return None
    pos = len(first)
    captures = [value]
    for part in parts[1:-1]:
        at = folded.find(part, pos, end)
        if at < 0:
            return None
        captures.append(value[pos:at])
        pos = at + len(part)
    captures.append(value[pos:end])
    return captures


def _backtracking(value: str, pieces: list[str], f: Callable[[str], str]) -> list[str] | None:
    fv = [f(c) for c in value]
    n, m = len(value), len(pieces)
    # captures[k]: (start, end) of the k-th wildcard
    caps: list[tuple[int, int]] = []
    vi = pi = 0
    star_pi = -1  # the piece index after the last '*'
    star_vi = 0
    star_caps = 0
    while vi < n or pi < m:
        if pi < m:
            p = pieces[pi]
            if p == "*":
                caps.append((vi, vi))
                star_pi, star_vi, star_caps = pi + 1, vi, len(caps)
                pi += 1
                continue
            if vi < n:
                if p == "?":
                    caps.append((vi, vi + 1))
                    vi += 1
                    pi += 1
                    continue
                lit = p[1] if len(p) == 2 and p[0] == "\\" else p
                if f(lit) == fv[vi]:
                    vi += 1
                    pi += 1
                    continue
        if star_pi < 0 or star_vi >= n:
            return None
        # let the last '*' take one more character and retry after it
        star_vi += 1
        del caps[star_caps:]
        start = caps[star_caps - 1][0]
        caps[star_caps - 1] = (start, star_vi)
        vi, pi = star_vi, star_pi
    return [value] + [value[a:b] for a, b in caps]


def wildcard_match_general(
    value: str, key: str, fold: Callable[[str], str] | None = None
) -> list[str] | None:
    """``wildcard_match`` without the fast way (for tests that compare the two)."""
    return _backtracking(value, _pattern(key), fold if fold is not None else _same)


def _matches_cost(value: str, key: str) -> int:
    """The steps of one ``wildcard_match``: linear for literals and ``*`` (``_stars_only``),
    else the one-star backtracking, at most len(value) x the key's pieces."""
    if "?" not in key and value.isascii() and key.isascii():
        return len(value) + len(key) + 1
    return (len(value) + 1) * (len(key) + 1)


def _matches(comparator: Comparator, _: str, value: str, key: str) -> tuple[bool, list[str] | None]:
    caps = wildcard_match(value, key, comparator.fold)
    return caps is not None, caps


def _relation(comparator: Comparator, relation: str, value: str, key: str) -> bool:
    c = comparator.compare(value, key)
    # RFC 5231 §5
    return {
        "gt": c > 0,
        "ge": c >= 0,
        "lt": c < 0,
        "le": c <= 0,
        "eq": c == 0,
        "ne": c != 0,
    }[relation]


def _check_relation(relation: str) -> str | None:
    if relation.lower() not in RELATIONS:
        return (
            f'unknown relation \'{relation}\': use one of "gt", "ge", "lt", "le", '
            '"eq", "ne" (RFC 5231)'
        )
    return None


def _count(
    comparator: Comparator, relation: str, value: str, key: str
) -> tuple[bool, list[str] | None]:
    return _relation(comparator, relation.lower(), value, key), None


def _value_rel(
    comparator: Comparator, relation: str, value: str, key: str
) -> tuple[bool, list[str] | None]:
    return _relation(comparator, relation.lower(), value, key), None


_REGEX_CASE: dict[str, Case] = {
    "i;ascii-casemap": "ascii",
    "i;unicode-casemap": "unicode",
}


def _compiled(key: str, comparator: Comparator) -> re2._Regexp:
    """The key compiled by RE2 (``sieve/regex.py``); ValueError says what is wrong."""
    return compile_regex(key, _REGEX_CASE.get(comparator.name, "octet"))


def _regex(comparator: Comparator, _: str, value: str, key: str) -> tuple[bool, list[str] | None]:
    try:
        compiled = _compiled(key, comparator)
    except ValueError:
        return False, None
    found = groups(compiled, value)  # RE2: linear in the value, never backtracking
    return (found is not None), found


def _regex_cost(value: str, key: str) -> int:
    """The bound of one ``_regex`` (``sieve/regex.cost``); a key that does not compile
    costs its length (it matches nothing)."""
    try:
        return regex_cost(compile_regex(key, "octet"), value)
    except ValueError:
        return len(value) + len(key) + 1


def _check_regex(key: str, comparator: Comparator) -> str | None:
    if "${" in key:
        return None  # checked when the variables are known
    try:
        _compiled(key, comparator)
    except ValueError as e:
        return str(e)
    return None


REGISTRY.add_capability(Capability("relational"))
REGISTRY.add_capability(Capability("regex"))
for _mt in (
    MatchType(name="is", capability="", match=_is),
    MatchType(name="contains", capability="", match=_contains, needs_substring=True),
    MatchType(
        name="matches", capability="", match=_matches, needs_substring=True, cost=_matches_cost
    ),
    MatchType(
        name="count",
        capability="relational",
        match=_count,
        arg="string",
        counts=True,
        validate_arg=_check_relation,
    ),
    MatchType(
        name="value",
        capability="relational",
        match=_value_rel,
        arg="string",
        validate_arg=_check_relation,
    ),
    MatchType(
        name="regex",
        capability="regex",
        match=_regex,
        needs_substring=True,
        validate_key=_check_regex,
        cost=_regex_cost,
    ),
):
    REGISTRY.add_match_type(_mt)
