"""The Sieve parser (RFC 5228 §8.2): tokens to a ``syntax.Node`` tree.

It checks the grammar only (what a command or a test means is the compiler's job) and the
sizes that keep any input from exhausting the stack or memory: the script's size, the depth
of nested blocks and tests, and the length of a string list.
"""

from __future__ import annotations

from pochta.sieve.errors import SieveError
from pochta.sieve.lexer import Token, tokenize
from pochta.sieve.syntax import Argument, Node, NumberArg, StringListArg, TagArg

__all__ = ["MAX_LIST_ITEMS", "MAX_NESTING", "parse"]

MAX_NESTING = 32  # blocks and tests inside each other (Pigeonhole's default is 32)
MAX_LIST_ITEMS = 1024  # strings in one string list


def parse(text: str, *, max_bytes: int = 0) -> tuple[Node, ...]:
    """The commands of the script ``text``; SieveError at the first syntax error."""
    if max_bytes and len(text.encode("utf-8", "surrogateescape")) > max_bytes:
        raise SieveError(f"the script is larger than {max_bytes} octets ([sieve] max_script_bytes)")
    return _Parser(tokenize(text)).script()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def is_punct(self, char: str) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == "punct" and tok.value == char

    def fail(self, expected: str, tok: Token | None = None) -> SieveError:
        tok = tok or self.peek()
        return SieveError(f"expected {expected}, found {tok.describe()}", tok.line, tok.column)

    def script(self) -> tuple[Node, ...]:
        commands = self.commands(0)
        tok = self.peek()
        if tok.kind != "eof":
            if tok.kind == "punct" and tok.value == "}":
                raise SieveError("'}' without a matching '{'", tok.line, tok.column)
            raise self.fail("a command")
        return commands

    def commands(self, depth: int) -> tuple[Node, ...]:
        out: list[Node] = []
        while self.peek().kind == "identifier":
            out.append(self.command(depth))
        return tuple(out)

    def command(self, depth: int) -> Node:
        tok = self.take()
        name = str(tok.value)
        arguments, tests, test_list = self.arguments(depth, name)
        block: tuple[Node, ...] | None = None
        if self.is_punct(";"):
            self.take()
        elif self.is_punct("{"):
            if depth + 1 > MAX_NESTING:
                t = self.peek()
                raise SieveError(
                    f"blocks are nested more than {MAX_NESTING} deep", t.line, t.column
                )
            self.take()
            block = self.commands(depth + 1)
            if not self.is_punct("}"):
                raise self.fail(f"'}}' to close the block of '{name}' (or a command)")
            self.take()
        else:
            raise self.fail(f"';' after command '{name}'")
        return Node(name, arguments, tests, test_list, block, tok.line, tok.column)

    def arguments(
        self, depth: int, name: str
    ) -> tuple[tuple[Argument, ...], tuple[Node, ...], bool]:
        args: list[Argument] = []
        while True:
            tok = self.peek()
            if tok.kind == "tag":
                self.take()
                args.append(TagArg(str(tok.value), tok.line, tok.column))
            elif tok.kind == "number":
                self.take()
                assert isinstance(tok.value, int)
                args.append(NumberArg(tok.value, tok.line, tok.column))
            elif tok.kind == "string":
                self.take()
                args.append(StringListArg((str(tok.value),), False, tok.line, tok.column))
            elif tok.kind == "punct" and tok.value == "[":
                args.append(self.string_list())
            else:
                break
        tok = self.peek()
        if tok.kind == "identifier":
            return tuple(args), (self.test(depth + 1),), False
        if tok.kind == "punct" and tok.value == "(":
            return tuple(args), self.test_list(depth + 1, name), True
        return tuple(args), (), False

    def string_list(self) -> StringListArg:
        open_tok = self.take()
        values: list[str] = []
        while True:
            tok = self.peek()
            if tok.kind != "string":
                raise self.fail("a string in the string list")
            self.take()
            values.append(str(tok.value))
            if len(values) > MAX_LIST_ITEMS:
                raise SieveError(
                    f"a string list may hold at most {MAX_LIST_ITEMS} strings",
                    tok.line,
                    tok.column,
                )
            if self.is_punct(","):
                self.take()
                continue
            if self.is_punct("]"):
                self.take()
                return StringListArg(tuple(values), True, open_tok.line, open_tok.column)
            raise self.fail("',' or ']' in the string list")

    def test(self, depth: int) -> Node:
        tok = self.peek()
        if tok.kind != "identifier":
            raise self.fail("a test")
        if depth > MAX_NESTING:
            raise SieveError(f"tests are nested more than {MAX_NESTING} deep", tok.line, tok.column)
        self.take()
        arguments, tests, test_list = self.arguments(depth, str(tok.value))
        return Node(str(tok.value), arguments, tests, test_list, None, tok.line, tok.column)

    def test_list(self, depth: int, name: str) -> tuple[Node, ...]:
        self.take()  # '('
        tests = [self.test(depth)]
        while True:
            if self.is_punct(","):
                self.take()
                tests.append(self.test(depth))
            elif self.is_punct(")"):
                self.take()
                return tuple(tests)
            else:
                raise self.fail(f"',' or ')' in the test list of '{name}'")
