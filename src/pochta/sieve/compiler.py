"""The Sieve compiler: a ``syntax.Node`` tree to ``Call`` trees the interpreter runs as they
are, every command and test checked against its ``registry`` signature and the script's
``require`` (RFC 5228 §3.2).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pochta.sieve.errors import SieveError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.registry import (
    AddressPart,
    ArgType,
    ArgValue,
    CommandSpec,
    Comparator,
    MatchType,
    Registry,
    TestSpec,
)
from pochta.sieve.syntax import Argument, Node, NumberArg, StringListArg, TagArg

__all__ = ["MAX_ERRORS", "Call", "CompileState", "compile_tree"]

MAX_ERRORS = 50  # errors collected before the compiler gives up
_NAMESPACE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z0-9_.]+\}")
_TYPE_WORDS = {"number": "a number", "string": "a string", "string-list": "a string list"}


@dataclass(frozen=True, slots=True)
class Call:
    """One compiled command or test: its arguments checked and sorted."""

    name: str
    spec: CommandSpec | TestSpec
    tags: Mapping[str, ArgValue | None]  # the given tags (without ':') and their arguments
    args: tuple[ArgValue, ...]  # the positional arguments, in order
    tests: tuple[Call, ...]
    block: tuple[Call, ...] | None
    line: int
    column: int
    comparator: Comparator | None = None
    match_type: MatchType | None = None
    relation: str = ""  # the :count/:value argument
    address_part: AddressPart | None = None
    data: Any = None  # what the validator precomputed for the handler

    def error(self, message: str) -> SieveError:
        return SieveError(message, self.line, self.column)

    def string(self, index: int) -> str:
        value = self.args[index]
        assert isinstance(value, str)
        return value

    def strings(self, index: int) -> tuple[str, ...]:
        value = self.args[index]
        assert isinstance(value, tuple)
        return value

    def number(self, index: int) -> int:
        value = self.args[index]
        assert isinstance(value, int)
        return value


@dataclass(slots=True)
class CompileState:
    registry: Registry
    available: frozenset[str]  # the capabilities this compile may require
    limits: SieveLimits
    name: str = ""
    loader: Any = None  # context.ScriptLoader for include
    required: set[str] = field(default_factory=set)
    errors: list[SieveError] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # extensions' compile-time state

    def has(self, capability: str) -> bool:
        return not capability or capability in self.required


def available_capabilities(
    registry: Registry, extensions: Collection[str] | None
) -> frozenset[str]:
    known = frozenset(registry.capabilities)
    return known if extensions is None else known & frozenset(extensions)


def compile_tree(nodes: tuple[Node, ...], state: CompileState) -> tuple[Call, ...]:
    calls = _Compiler(state).block(nodes, top=True)
    if state.errors:
        errors = sorted(state.errors, key=lambda e: (e.line, e.column))
        errors[0].errors = errors
        raise errors[0]
    return calls


class _Reported(Exception):
    """A command or test could not be built; its errors are already in ``state.errors``."""


# Error recovery, as a ManageSieve editor needs it (Pigeonhole does the same): every
# independent error is reported, none that only follows from another. So a command whose
# own arguments are wrong (one error: the first bad argument) still has its tests and its
# block checked; an unknown command or test (nothing is known of its arguments) is one error
# and nothing under it is looked at; each test of a test list, each extension of a require
# and each command of a block stands alone.


class _Compiler:
    def __init__(self, state: CompileState) -> None:
        self.state = state
        self.registry = state.registry

    def fail(self, message: str, where: Node | Argument) -> SieveError:
        return SieveError(message, where.line, where.column)

    def block(self, nodes: tuple[Node, ...], *, top: bool = False) -> tuple[Call, ...]:
        out: list[Call] = []
        prev = ""
        others_seen = False
        for node in nodes:
            try:
                if node.name == "require":
                    if not top or others_seen:
                        # RFC 5228 §3.2: require only at the start of the script
                        raise self.fail(
                            "'require' must come before every other command of the script",
                            node,
                        )
                    self.require(node)
                    prev = "require"
                    continue
                others_seen = True
                if node.name in ("elsif", "else") and prev not in ("if", "elsif"):
                    raise self.fail(f"'{node.name}' must follow 'if' or 'elsif'", node)
                out.append(self.command(node))
            except SieveError as e:
                self.state.errors.append(e)
            except _Reported:
                pass
            finally:
                prev = node.name
            if len(self.state.errors) >= MAX_ERRORS:
                break
        return tuple(out)

    def require(self, node: Node) -> None:
        if len(node.arguments) != 1 or not isinstance(node.arguments[0], StringListArg):
            raise self.fail("'require' takes one string or string list: the extensions", node)
        if node.tests or node.block is not None:
            raise self.fail("expected ';' after command 'require'", node)
        failed = False
        for name in node.arguments[0].values:
            if name not in self.state.available:
                # RFC 5228 §3.2: requiring an unknown extension is an error, one per name
                self.state.errors.append(
                    self.fail(f"unsupported extension '{name}' in require", node.arguments[0])
                )
                failed = True
                continue
            self.state.required.add(name)
        if failed:
            raise _Reported

    def need(self, capability: str, what: str, where: Node | Argument) -> None:
        if capability and capability not in self.state.required:
            # RFC 5228 §3.2: an extension used without its require is an error
            raise self.fail(f'{what} needs require "{capability}"', where)

    def command(self, node: Node) -> Call:
        spec = self.registry.commands.get(node.name)
        if spec is None or (spec.capability not in self.state.available and spec.capability):
            if node.name in self.registry.tests:
                raise self.fail(f"'{node.name}' is a test, not a command", node)
            raise self.fail(f"unknown command '{node.name}'", node)
        call, failed = self.checked(node, spec, "command")
        block: tuple[Call, ...] | None = None
        if node.block is not None and spec.block != "none":
            # the block is checked even when the command is wrong: its errors are its own
            errors_before = len(self.state.errors)
            block = self.guarded_block(node, call) if call else self.block(node.block)
            failed = failed or len(self.state.errors) > errors_before
        if failed or call is None:
            raise _Reported
        call = dataclasses.replace(call, block=block)
        return self.validated(call, spec)

    def checked(
        self, node: Node, spec: CommandSpec | TestSpec, kind: Literal["command", "test"]
    ) -> tuple[Call | None, bool]:
        """The call with its arguments and tests, and whether anything was wrong (the errors
        recorded). The command's own arguments give at most one error (the first bad one);
        the shape of its tests (and, for a command, of its block) one more: a forgotten ':'
        turns a tag into a test, so the two often explain each other (as in Pigeonhole).
        Then each test is checked on its own."""
        call: Call | None = None
        what = f"{kind} '{node.name}'"
        try:
            self.need(spec.capability, what, node)
            call = self.signature(node, spec, kind)
        except SieveError as e:
            self.state.errors.append(e)
        shape = self.shape_problem(node, spec, what, kind, block_too=call is not None)
        if shape is not None:
            self.state.errors.append(shape)
        tests: list[Call] = []
        failed = call is None or shape is not None
        if spec.tests != "none":
            for t in node.tests:
                try:
                    tests.append(self.test(t))
                except SieveError as e:
                    self.state.errors.append(e)
                    failed = True
                except _Reported:
                    failed = True
        if failed or call is None:
            return None, True
        return dataclasses.replace(call, tests=tuple(tests)), False

    def shape_problem(
        self,
        node: Node,
        spec: CommandSpec | TestSpec,
        what: str,
        kind: Literal["command", "test"],
        *,
        block_too: bool,
    ) -> SieveError | None:
        """What is wrong with the tests the node has (RFC 5228 §2.9, §3.1), or with its
        block when ``block_too``; None when they fit the command."""
        if spec.tests == "none" and node.tests:
            return self.fail(f"{what} takes no test", node.tests[0])
        if spec.tests == "test" and (node.test_list or len(node.tests) != 1):
            return self.fail(f"{what} needs one test (not a test list)", node)
        if spec.tests == "test-list" and not node.test_list:
            return self.fail(f"{what} needs a test list '( test, test, ... )'", node)
        if kind == "command" and block_too and isinstance(spec, CommandSpec):
            if spec.block == "required" and node.block is None:
                return self.fail(f"expected a block '{{ ... }}' after {what}", node)
            if spec.block == "none" and node.block is not None:
                return self.fail(f"expected ';' after {what}, not a block", node)
        return None

    def guarded_block(self, node: Node, call: Call) -> tuple[Call, ...]:
        """The block; under ``if ihave`` (RFC 5463 §4) compiled only when every capability
        is known, with them required inside; otherwise skipped (it never runs)."""
        assert node.block is not None
        guards: list[Call] = []
        if node.name in ("if", "elsif") and call.tests:
            test = call.tests[0]
            # RFC 5463 §4: the ihave test itself, or one among the tests of an allof
            guards = [test] if test.name == "ihave" else []
            if test.name == "allof":
                guards = [t for t in test.tests if t.name == "ihave"]
        if guards:
            names = [n for g in guards for n in g.strings(0)]
            known = self.registry.capabilities
            if not all(n in self.state.available and known[n].ihave for n in names):
                return ()
            before = set(self.state.required)
            self.state.required.update(names)
            try:
                return self.block(node.block)
            finally:
                self.state.required = before
        return self.block(node.block)

    def test(self, node: Node) -> Call:
        spec = self.registry.tests.get(node.name)
        if spec is None or (spec.capability not in self.state.available and spec.capability):
            if node.name in self.registry.commands:
                raise self.fail(f"'{node.name}' is a command, not a test", node)
            raise self.fail(f"unknown test '{node.name}'", node)
        call, failed = self.checked(node, spec, "test")
        if failed or call is None:
            raise _Reported
        return self.validated(call, spec)

    def validated(self, call: Call, spec: CommandSpec | TestSpec) -> Call:
        if spec.validate is not None:
            replaced = spec.validate(call, self.state)
            if replaced is not None:
                return replaced
        return call

    def signature(
        self, node: Node, spec: CommandSpec | TestSpec, kind: Literal["command", "test"]
    ) -> Call:
        what = f"{kind} '{node.name}'"
        tag_specs = {t.name: t for t in self.registry.tags_of(kind, spec)}
        tags: dict[str, ArgValue | None] = {}
        groups: dict[str, str] = {}
        comparator: Comparator | None = None
        match_type: MatchType | None = None
        relation = ""
        address_part: AddressPart | None = None
        positional: list[tuple[ArgValue, Argument]] = []
        args = list(node.arguments)
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not isinstance(arg, TagArg):
                positional.append((self.value(arg), arg))
                continue
            if positional:
                # RFC 5228 §2.6.2: tagged arguments come before positional ones
                raise self.fail(
                    f"tag ':{arg.name}' of {what} must come before its positional arguments",
                    arg,
                )
            name = arg.name

            def follow(expected: ArgType, _arg: TagArg = arg) -> ArgValue:
                nonlocal i
                if i >= len(args) or isinstance(args[i], TagArg):
                    raise self.fail(
                        f"tag ':{_arg.name}' of {what} must be followed by {_TYPE_WORDS[expected]}",
                        _arg,
                    )
                value = self.typed(args[i], expected, f"the argument of ':{_arg.name}'", what)
                i += 1
                return value

            if name == "comparator" and spec.comparator:
                if comparator is not None:
                    raise self.fail(f"{what} has ':comparator' twice", arg)
                cname = follow("string")
                assert isinstance(cname, str)
                found = self.registry.comparators.get(cname)
                if found is None or (
                    found.capability not in self.state.available and found.capability
                ):
                    raise self.fail(f"unknown comparator '{cname}'", arg)
                self.need(found.capability, f"comparator '{cname}'", arg)
                comparator = found
            elif spec.match_type and name in self.registry.match_types:
                mt = self.registry.match_types[name]
                if mt.capability not in self.state.available and mt.capability:
                    raise self.fail(f"unknown tag ':{name}' for {what}", arg)
                self.need(mt.capability, f"match type ':{name}'", arg)
                if match_type is not None:
                    raise self.fail(
                        f"{what} takes one match type, not both ':{match_type.name}' and ':{name}'",
                        arg,
                    )
                match_type = mt
                if mt.arg is not None:
                    rel = follow(mt.arg)
                    assert isinstance(rel, str)
                    problem = mt.validate_arg(rel) if mt.validate_arg else None
                    if problem:
                        raise self.fail(problem, arg)
                    relation = rel
            elif spec.address_part and name in self.registry.address_parts:
                part = self.registry.address_parts[name]
                if part.capability not in self.state.available and part.capability:
                    raise self.fail(f"unknown tag ':{name}' for {what}", arg)
                self.need(part.capability, f"address part ':{name}'", arg)
                if address_part is not None:
                    raise self.fail(
                        f"{what} takes one address part, not both ':{address_part.name}' and "
                        f"':{name}'",
                        arg,
                    )
                address_part = part
            elif name in tag_specs:
                tag = tag_specs[name]
                if tag.capability and tag.capability not in self.state.available:
                    raise self.fail(f"unknown tag ':{name}' for {what}", arg)
                self.need(tag.capability, f"tag ':{name}'", arg)
                if name in tags:
                    raise self.fail(f"{what} has ':{name}' twice", arg)
                if tag.group:
                    other = groups.get(tag.group)
                    if other is not None:
                        raise self.fail(f"{what} takes ':{other}' or ':{name}', not both", arg)
                    groups[tag.group] = name
                tags[name] = follow(tag.arg) if tag.arg is not None else None
            else:
                raise self.fail(f"unknown tag ':{name}' for {what}", arg)
        for group in spec.required_groups:
            if group not in groups:
                options = " or ".join(
                    f"':{t.name}'" for t in tag_specs.values() if t.group == group
                )
                raise self.fail(f"{what} needs {options}", node)
        # positional arguments
        minimum = len(spec.positional) if spec.min_positional is None else spec.min_positional
        if len(positional) < minimum or len(positional) > len(spec.positional):
            expected = " ".join(spec.positional) or "no"
            raise self.fail(
                f"{what} takes {expected} positional argument(s) "
                f"({minimum}..{len(spec.positional)}), found {len(positional)}",
                node,
            )
        values: list[ArgValue] = []
        for n, ((_, arg), expected) in enumerate(zip(positional, spec.positional, strict=False)):
            values.append(self.typed(arg, expected, f"argument {n + 1}", what))
        # comparator and match type fit together (RFC 4790 §4.2: a comparator without
        # substring operations cannot do :contains/:matches)
        if spec.match_type:
            comp = comparator or self.registry.comparators["i;ascii-casemap"]
            mt = match_type or self.registry.match_types["is"]
            if mt.needs_substring and comp.fold is None:
                raise self.fail(f"comparator '{comp.name}' cannot be used with ':{mt.name}'", node)
            if mt.validate_key is not None and values and isinstance(values[-1], tuple):
                for key in values[-1]:
                    problem = mt.validate_key(key, comp)
                    if problem:
                        raise self.fail(problem, positional[-1][1])
        return Call(
            name=node.name,
            spec=spec,
            tags=tags,
            args=tuple(values),
            tests=(),  # checked apart (``subtests``), so their errors are their own
            block=None,
            line=node.line,
            column=node.column,
            comparator=comparator,
            match_type=match_type,
            relation=relation,
            address_part=address_part,
        )

    def value(self, arg: Argument) -> ArgValue:
        if isinstance(arg, NumberArg):
            return arg.value
        assert isinstance(arg, StringListArg)
        return tuple(self.filtered(v, arg) for v in arg.values)

    def filtered(self, text: str, where: Argument) -> str:
        for capability, string_filter in self.registry.string_filters.items():
            if capability in self.state.required:
                try:
                    text = string_filter(text)
                except ValueError as e:
                    raise self.fail(str(e), where) from None
        if "variables" in self.state.required and "${" in text:
            for m in _NAMESPACE_REF.finditer(text):
                # RFC 5229 §3: a namespace no extension provides is an error
                namespace = self.registry.namespaces.get(m.group(1).lower())
                if namespace is None or not self.state.has(namespace.capability):
                    raise self.fail(
                        f"unknown variable namespace '{m.group(1)}' in {m.group(0)!r}", where
                    )
        return text

    def typed(self, arg: Argument, expected: ArgType, which: str, what: str) -> ArgValue:
        if isinstance(arg, TagArg):
            raise self.fail(f"{which} of {what} must be {_TYPE_WORDS[expected]}", arg)
        if isinstance(arg, NumberArg):
            if expected != "number":
                raise self.fail(
                    f"{which} of {what} must be {_TYPE_WORDS[expected]}, not a number", arg
                )
            return arg.value
        if expected == "number":
            raise self.fail(f"{which} of {what} must be a number, not a string", arg)
        values = tuple(self.filtered(v, arg) for v in arg.values)
        if expected == "string":
            if arg.is_list:
                raise self.fail(f"{which} of {what} must be a string, not a string list", arg)
            return values[0]
        return values
