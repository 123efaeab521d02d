"""``:regex`` keys (draft-ietf-sieve-regex-01) matched by RE2 (google-re2), in linear time.

The draft takes POSIX extended regular expressions, as Pigeonhole hands them to regcomp(3).
Python's ``re`` is the wrong engine for them twice over: it backtracks (``.*foo.*bar``
against 9000 octets of "foofoo..." runs for half a minute, ``(a|aa)*b`` doubles its time with
each "a"), and it picks the leftmost-first match where POSIX picks the leftmost-longest.
RE2 is made for patterns from untrusted users: its matching time is linear in the value,
its memory is capped (``max_mem``), and its POSIX mode has the leftmost-longest rule.

A key is translated before RE2 compiles it (:func:`translate`), for what POSIX says and
RE2's POSIX mode reads otherwise:

- a backslash before a letter or digit stands for that character (POSIX leaves it
  undefined; RE2 would read ``\\d`` as an unknown escape), before anything else it quotes it;
- inside a bracket expression a backslash is an ordinary character (POSIX), and ``]`` right
  after ``[`` or ``[^`` is a member; ``[:alpha:]`` and the other classes are RE2's too,
  ``[=a=]`` and ``[.a.]`` (collating elements) are refused with a clear error;
- ``i;ascii-casemap`` folds A-Z only (RFC 4790 §9.2): each ASCII letter is written as both
  cases (``a`` becomes ``[aA]``, ``[a-f]`` becomes ``[a-fA-F]``, ``[:upper:]`` and
  ``[:lower:]`` become ``[:alpha:]``), so "é" and "É" still differ; ``i;unicode-casemap``
  is RE2's case folding; ``i;octet`` folds nothing.

``.`` matches a line end too and ``^``/``$`` anchor at the ends of the value only (regcomp
without REG_NEWLINE). The match variables (RFC 5229 §3.2) are the groups of the leftmost-
longest match, ``${0}`` the whole of it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import re2

__all__ = ["MAX_REGEX_CHARS", "MAX_REGEX_MEMORY", "Case", "compile_regex", "groups", "translate"]

Case = Literal["octet", "ascii", "unicode"]

MAX_REGEX_CHARS = 1024
MAX_REGEX_MEMORY = 4 << 20  # RE2's max_mem per pattern: a bigger program is refused ("too large")

_CLASSES = frozenset(
    [
        "alpha",
        "digit",
        "alnum",
        "upper",
        "lower",
        "space",
        "blank",
        "punct",
        "print",
        "graph",
        "cntrl",
        "xdigit",
    ]
)


def _fold_member(c: str) -> str:
    """A bracket member and its other ASCII case."""
    if "a" <= c <= "z" or "A" <= c <= "Z":
        return c + c.swapcase()
    return c


def _ascii_letters(low: str, high: str) -> bool:
    """Whether ``low-high`` is a range of ASCII letters of one case (``a-f``, ``K-Z``)."""
    ends = low + high
    return ends.isascii() and ends.isalpha() and (ends.islower() or ends.isupper())


def _member(c: str) -> str:
    """A character written inside RE2 brackets (backslash, caret, dash and brackets quoted)."""
    return "\\" + c if c in "\\]^-[" else c


def _bracket(pattern: str, i: int, case: Case) -> tuple[str, int]:
    """The RE2 form of the bracket expression starting at ``pattern[i] == "["``, and the
    index after it."""
    n = len(pattern)
    j = i + 1
    out = ["["]
    if j < n and pattern[j] == "^":
        out.append("^")
        j += 1
    first = True
    while j < n and (pattern[j] != "]" or first):
        first = False
        if pattern.startswith("[:", j):
            k = pattern.find(":]", j + 2)
            name = pattern[j + 2 : k] if k > 0 else ""
            if name not in _CLASSES:
                raise ValueError(f"unknown character class [:{name}:] in regex {pattern!r}")
            if case == "ascii" and name in ("upper", "lower"):
                name = "alpha"  # POSIX with REG_ICASE: [:upper:] matches both cases
            out.append(f"[:{name}:]")
            j = k + 2
            continue
        if pattern.startswith("[=", j) or pattern.startswith("[.", j):
            raise ValueError(f"collating elements ([= =], [. .]) are not supported: {pattern!r}")
        c = pattern[j]
        if j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            low, high = c, pattern[j + 2]
            out.append(f"{_member(low)}-{_member(high)}")
            if case == "ascii" and _ascii_letters(low, high):
                out.append(f"{low.swapcase()}-{high.swapcase()}")
            j += 3
            continue
        members = _fold_member(c) if case == "ascii" else c
        out.append("".join(_member(m) for m in members))
        j += 1
    if j >= n:
        raise ValueError(f"unbalanced '[' in regex {pattern!r}")
    out.append("]")
    return "".join(out), j + 1


def translate(pattern: str, case: Case) -> str:
    """The RE2 (POSIX mode) pattern of a POSIX ERE key; see the module docstring."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            c = pattern[i + 1]
            i += 2
            if case == "ascii" and c.isascii() and c.isalpha():
                out.append(f"[{c.lower()}{c.upper()}]")
            elif c.isalnum() or not c.isascii():
                out.append(c)
            else:
                out.append("\\" + c)
        elif c == "[":
            part, i = _bracket(pattern, i, case)
            out.append(part)
        else:
            if case == "ascii" and c.isascii() and c.isalpha():
                out.append(f"[{c.lower()}{c.upper()}]")
            else:
                out.append(c)
            i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def compile_regex(pattern: str, case: Case) -> re2._Regexp:
    """The compiled key; ValueError says what is wrong with it."""
    if len(pattern) > MAX_REGEX_CHARS:
        raise ValueError(f"regex longer than {MAX_REGEX_CHARS} characters")
    options = re2.Options()
    options.posix_syntax = True
    options.longest_match = True  # POSIX: the leftmost-longest match
    options.one_line = True  # ^ and $ at the ends of the value only
    options.dot_nl = True
    options.case_sensitive = case != "unicode"
    options.max_mem = MAX_REGEX_MEMORY
    options.log_errors = False
    try:
        return re2.compile(translate(pattern, case), options)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else e
        raise ValueError(f"bad regex {pattern!r}: {why}") from None


def groups(compiled: re2._Regexp, value: str) -> list[str] | None:
    """The match variables of the first (leftmost-longest) match in ``value``: the match,
    then each group ("" for a group that took no part); None when nothing matches."""
    m = compiled.search(value)
    if m is None:
        return None
    return [m.group(0)] + [g or "" for g in m.groups()]


def cost(compiled: re2._Regexp, value: str) -> int:
    """A bound on RE2's work for one search with groups: the value's length times the
    program's size (its NFA; the DFA that decides most searches does less)."""
    return (len(value) + 1) * (int(compiled.programsize) + 1)
