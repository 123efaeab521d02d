"""The Sieve syntax tree (RFC 5228 §8.2): what the parser makes and the compiler checks.

Commands and tests have the same shape (an identifier, arguments, then tests), so one
``Node`` serves both; a command also has a block or not.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Argument", "Node", "NumberArg", "StringListArg", "TagArg"]


@dataclass(frozen=True, slots=True)
class TagArg:
    name: str  # without the ':', lower-case
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class NumberArg:
    value: int
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class StringListArg:
    """A string (``is_list`` False) or a string list ``[...]``."""

    values: tuple[str, ...]
    is_list: bool
    line: int
    column: int


Argument = TagArg | NumberArg | StringListArg


@dataclass(frozen=True, slots=True)
class Node:
    """A command or a test: ``name arguments [test | test-list]`` (+ a block for commands)."""

    name: str
    arguments: tuple[Argument, ...]
    tests: tuple[Node, ...]
    test_list: bool  # the tests were written as ``( ... )``
    block: tuple[Node, ...] | None
    line: int
    column: int
