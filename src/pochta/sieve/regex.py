"""A linear-time matcher for ``:regex`` (draft-ietf-sieve-regex-01: POSIX extended regular
expressions), so that no pattern and no message can make one match run for seconds.

Python's ``re`` backtracks: ``.*foo.*bar`` against 9000 octets of "foofoo..." takes half a
minute, ``(a|aa)*b`` doubles its time with each "a". POSIX EREs have no back-references,
so they are regular: here a pattern is compiled to a Thompson NFA (Pike's VM program) and

- whether it matches is decided by simulating the NFA with its state sets cached as a lazy
  DFA: each character costs one dictionary lookup once seen, at most one closure over the
  program otherwise, so a match is O(len(value) x len(program)) at worst;
- the match variables (RFC 5229 §3.2 ``${0}``, ``${1}``...) come from Pike's VM, the same
  bound, run only once a value matched (the test stops at its first match).

The answers are those of Python's ``re`` on the pattern ``match.compile_regex`` makes
(leftmost match, alternatives and repetitions in priority order, greedy unless followed by
``?``, ``.`` matching a newline, ``^`` at the start, ``$`` at the end or before a final
newline); ``compile_regex`` still checks a key's syntax. The cases fold as the comparator
says: "octet" none, "ascii" A-Z only, "unicode" lower/upper case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

__all__ = ["MAX_PROGRAM", "Program", "compile_program"]

MAX_PROGRAM = 20_000  # instructions, after {m,n} copies: a bound on a match's steps per octet

Case = Literal["octet", "ascii", "unicode"]
Pred = Callable[[str], bool]

# The instructions: (op, a, b).
_CHAR, _SPLIT, _JMP, _SAVE, _BOL, _EOL, _MATCH = range(7)

_POSIX_CLASSES: dict[str, Pred] = {
    "alpha": lambda c: c.isascii() and c.isalpha(),
    "digit": lambda c: "0" <= c <= "9",
    "alnum": lambda c: c.isascii() and c.isalnum(),
    "upper": lambda c: "A" <= c <= "Z",
    "lower": lambda c: "a" <= c <= "z",
    "space": lambda c: c in " \t\n\r\f\v",
    "blank": lambda c: c in " \t",
    "punct": lambda c: "!" <= c <= "/" or ":" <= c <= "@" or "[" <= c <= "`" or "{" <= c <= "~",
    "print": lambda c: " " <= c <= "~",
    "graph": lambda c: "!" <= c <= "~",
    "cntrl": lambda c: c <= "\x1f" or c == "\x7f",
    "xdigit": lambda c: c in "0123456789ABCDEFabcdef",
}


def _variants(c: str, case: Case) -> tuple[str, ...]:
    if case == "octet":
        return (c,)
    if case == "ascii":
        if "a" <= c <= "z" or "A" <= c <= "Z":
            return (c.lower(), c.upper())
        return (c,)
    low, up = c.lower(), c.upper()
    return tuple({c, low if len(low) == 1 else c, up if len(up) == 1 else c})


# -- the syntax tree ---------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    kind: Literal["char", "cat", "alt", "group", "rep", "bol", "eol"]
    pred: Pred | None = None
    items: list[_Node] = field(default_factory=list)
    index: int = 0  # group number
    low: int = 0
    high: int | None = None  # None: unbounded
    greedy: bool = True


class _Parser:
    def __init__(self, pattern: str, case: Case) -> None:
        self.p = pattern
        self.i = 0
        self.case = case
        self.groups = 0

    def fail(self, why: str) -> ValueError:
        return ValueError(f"bad regex {self.p!r}: {why}")

    def parse(self) -> _Node:
        node = self.alternation()
        if self.i < len(self.p):
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> _Node:
        branches = [self.branch()]
        while self.i < len(self.p) and self.p[self.i] == "|":
            self.i += 1
            branches.append(self.branch())
        return branches[0] if len(branches) == 1 else _Node("alt", items=branches)

    def branch(self) -> _Node:
        items: list[_Node] = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            items.append(self.piece())
        return _Node("cat", items=items)

    def piece(self) -> _Node:
        atom = self.atom()
        while self.i < len(self.p):
            c = self.p[self.i]
            if c in "*+?":
                self.i += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            elif c == "{":
                bounds = self.braces()
                if bounds is None:
                    break
                low, high = bounds
            else:
                break
            greedy = True
            if self.i < len(self.p) and self.p[self.i] == "?":
                greedy = False  # as Python's re reads the pattern: lazy
                self.i += 1
            atom = _Node("rep", items=[atom], low=low, high=high, greedy=greedy)
        return atom

    def braces(self) -> tuple[int, int | None] | None:
        """``{m}``, ``{m,}``, ``{m,n}``, ``{,n}`` at self.i, or None (a literal '{')."""
        end = self.p.find("}", self.i)
        if end < 0:
            return None
        inner = self.p[self.i + 1 : end]
        lo, comma, hi = inner.partition(",")
        if not (lo.isdigit() or (comma and lo == "")) or not (hi == "" or hi.isdigit()):
            return None
        if not lo and not comma:
            return None
        low = int(lo) if lo else 0
        high = (int(hi) if hi else None) if comma else low
        if high is not None and high < low:
            raise self.fail("min repeat greater than max repeat")
        self.i = end + 1
        return low, high

    def atom(self) -> _Node:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            if self.i < len(self.p) and self.p[self.i] == "?":
                raise self.fail("'(?' starts no POSIX group")
            self.groups += 1
            index = self.groups
            inner = self.alternation()
            if self.i >= len(self.p) or self.p[self.i] != ")":
                raise self.fail("missing ')'")
            self.i += 1
            return _Node("group", items=[inner], index=index)
        if c in "*+?":
            raise self.fail("nothing to repeat")
        if c == "[":
            return _Node("char", pred=self.bracket())
        if c == ".":
            return _Node("char", pred=lambda _c: True)  # DOTALL
        if c == "^":
            return _Node("bol")
        if c == "$":
            return _Node("eol")
        if c == "\\" and self.i < len(self.p):
            c = self.p[self.i]
            self.i += 1
        variants = frozenset(_variants(c, self.case))
        return _Node("char", pred=variants.__contains__)

    def bracket(self) -> Pred:
        negate = False
        if self.i < len(self.p) and self.p[self.i] == "^":
            negate = True
            self.i += 1
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        classes: list[Pred] = []
        first = True
        while True:
            if self.i >= len(self.p):
                raise self.fail("unbalanced '['")
            c = self.p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if self.p.startswith("[:", self.i):
                end = self.p.find(":]", self.i + 2)
                cls = _POSIX_CLASSES.get(self.p[self.i + 2 : end]) if end > 0 else None
                if cls is None:
                    raise self.fail("unknown character class")
                classes.append(cls)
                self.i = end + 2
                continue
            self.i += 1
            if (
                self.i + 1 < len(self.p)
                and self.p[self.i] == "-"
                and self.p[self.i + 1] != "]"
                and not self.p.startswith("[:", self.i + 1)
            ):
                hi = self.p[self.i + 1]
                if hi < c:
                    raise self.fail(f"bad character range {c}-{hi}")
                ranges.append((c, hi))
                self.i += 2
                continue
            chars.add(c)
        case = self.case

        def inside(ch: str) -> bool:
            for v in _variants(ch, case):
                if v in chars or any(lo <= v <= hi for lo, hi in ranges):
                    return True
                if any(cls(v) for cls in classes):
                    return True
            return False

        return (lambda ch: not inside(ch)) if negate else inside


# -- the program -------------------------------------------------------------------------


Inst = tuple[int, object, int]


def _emit(node: _Node, prog: list[Inst]) -> None:
    if len(prog) > MAX_PROGRAM:
        raise ValueError(
            f"regex too large: more than {MAX_PROGRAM} steps once its repetitions are "
            "expanded; use smaller {m,n} counts"
        )
    if node.kind == "char":
        prog.append((_CHAR, node.pred, 0))
    elif node.kind == "bol":
        prog.append((_BOL, None, 0))
    elif node.kind == "eol":
        prog.append((_EOL, None, 0))
    elif node.kind == "cat":
        for item in node.items:
            _emit(item, prog)
    elif node.kind == "group":
        prog.append((_SAVE, 2 * node.index, 0))
        _emit(node.items[0], prog)
        prog.append((_SAVE, 2 * node.index + 1, 0))
    elif node.kind == "alt":
        jumps: list[int] = []
        for n, branch in enumerate(node.items):
            if n < len(node.items) - 1:
                split = len(prog)
                prog.append((_SPLIT, split + 1, 0))  # second target patched below
                _emit(branch, prog)
                jumps.append(len(prog))
                prog.append((_JMP, 0, 0))
                prog[split] = (_SPLIT, split + 1, len(prog))
            else:
                _emit(branch, prog)
        for j in jumps:
            prog[j] = (_JMP, len(prog), 0)
    else:  # rep
        body = node.items[0]
        for _ in range(node.low):
            _emit(body, prog)
        if node.high is None:
            loop = len(prog)
            prog.append((_SPLIT, 0, 0))
            _emit(body, prog)
            prog.append((_JMP, loop, 0))
            after = len(prog)
            prog[loop] = (_SPLIT, loop + 1, after) if node.greedy else (_SPLIT, after, loop + 1)
        else:
            splits: list[int] = []
            for _ in range(node.high - node.low):
                splits.append(len(prog))
                prog.append((_SPLIT, 0, 0))
                _emit(body, prog)
            after = len(prog)
            for s in splits:
                prog[s] = (_SPLIT, s + 1, after) if node.greedy else (_SPLIT, after, s + 1)


@dataclass(frozen=True, slots=True, eq=False)
class Program:
    """A compiled pattern: ``search(value)`` says whether it matches somewhere,
    ``groups(value)`` gives ``[whole, group 1, ...]`` of the leftmost match (or None)."""

    prog: tuple[Inst, ...]
    groups_count: int
    _dfa: dict[tuple[frozenset[int], str], frozenset[int]] = field(default_factory=dict)
    _closures: dict[tuple[frozenset[int], bool, bool], frozenset[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prog)

    def _closure(self, seeds: frozenset[int], bol: bool, eol: bool) -> frozenset[int]:
        key = (seeds, bol, eol)
        found = self._closures.get(key)
        if found is not None:
            return found
        out: set[int] = set()
        seen: set[int] = set()
        stack = list(seeds)
        prog = self.prog
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            op, a, b = prog[pc]
            if op == _SPLIT:
                stack.append(b)
                assert isinstance(a, int)
                stack.append(a)
            elif op == _JMP:
                assert isinstance(a, int)
                stack.append(a)
            elif op == _SAVE:
                stack.append(pc + 1)
            elif op == _BOL:
                if bol:
                    stack.append(pc + 1)
            elif op == _EOL:
                if eol:
                    stack.append(pc + 1)
            else:  # CHAR, MATCH
                out.add(pc)
        result = frozenset(out)
        if len(self._closures) < 10_000:  # the cache is bounded; past it, recomputed
            self._closures[key] = result
        return result

    def search(self, value: str) -> bool:
        """Whether the pattern matches anywhere in ``value`` (the lazy DFA)."""
        n = len(value)
        match_pc = len(self.prog) - 1
        seeds: frozenset[int] = frozenset()
        for i in range(n + 1):
            at_eol = i == n or (i == n - 1 and value[i] == "\n")
            state = self._closure(seeds | {0}, i == 0, at_eol)
            if match_pc in state:
                return True
            if i == n:
                return False
            ch = value[i]
            key = (state, ch)
            nxt = self._dfa.get(key)
            if nxt is None:
                nxt = frozenset(
                    pc + 1
                    for pc in state
                    if self.prog[pc][0] == _CHAR and self.prog[pc][1](ch)  # type: ignore[operator]
                )
                if len(self._dfa) < 100_000:
                    self._dfa[key] = nxt
            seeds = nxt
        return False

    def groups(self, value: str) -> list[str] | None:
        """``[whole, group 1, ...]`` of the leftmost match, as Python's ``re`` finds it
        (Pike's VM: the threads in priority order), or None."""
        n = len(value)
        prog = self.prog
        slots = 2 * (self.groups_count + 1)
        empty: tuple[int | None, ...] = (None,) * slots
        matched: tuple[int | None, ...] | None = None

        def add(
            threads: list[tuple[int, tuple[int | None, ...]]],
            seen: set[int],
            pc: int,
            caps: tuple[int | None, ...],
            i: int,
        ) -> None:
            stack = [(pc, caps)]
            while stack:
                pc, caps = stack.pop()
                if pc in seen:
                    continue
                seen.add(pc)
                op, a, b = prog[pc]
                if op == _SPLIT:
                    assert isinstance(a, int)
                    stack.append((b, caps))
                    stack.append((a, caps))
                elif op == _JMP:
                    assert isinstance(a, int)
                    stack.append((a, caps))
                elif op == _SAVE:
                    assert isinstance(a, int)
                    stack.append((pc + 1, (*caps[:a], i, *caps[a + 1 :])))
                elif op == _BOL:
                    if i == 0:
                        stack.append((pc + 1, caps))
                elif op == _EOL:
                    if i == n or (i == n - 1 and value[i] == "\n"):
                        stack.append((pc + 1, caps))
                else:
                    threads.append((pc, caps))

        current: list[tuple[int, tuple[int | None, ...]]] = []
        seen: set[int] = set()
        for i in range(n + 1):
            if matched is None:
                start = (i, *empty[1:])
                add(current, seen, 0, start, i)
            if not current and matched is not None:
                break
            following: list[tuple[int, tuple[int | None, ...]]] = []
            following_seen: set[int] = set()
            for pc, caps in current:
                op, pred, _ = prog[pc]
                if op == _MATCH:
                    matched = caps  # SAVE 1 just set the end
                    break  # the threads after this one have lower priority
                if i < n and pred(value[i]):  # type: ignore[operator]
                    add(following, following_seen, pc + 1, caps, i + 1)
            current, seen = following, following_seen
        if matched is None:
            return None
        out: list[str] = []
        for g in range(self.groups_count + 1):
            a, b = matched[2 * g], matched[2 * g + 1]
            out.append(value[a:b] if a is not None and b is not None else "")
        return out


@lru_cache(maxsize=256)
def compile_program(pattern: str, case: Case) -> Program:
    """The program of a POSIX ERE key; ValueError says what is wrong with it."""
    parser = _Parser(pattern, case)
    tree = parser.parse()
    prog: list[Inst] = [(_SAVE, 0, 0)]
    _emit(tree, prog)
    prog.append((_SAVE, 1, 0))
    prog.append((_MATCH, None, 0))
    if len(prog) > MAX_PROGRAM:
        raise ValueError(
            f"regex too large: more than {MAX_PROGRAM} steps once its repetitions are "
            "expanded; use smaller {m,n} counts"
        )
    return Program(prog=tuple(prog), groups_count=parser.groups)
