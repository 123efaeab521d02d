"""The Sieve extension API: every command, test, tag, comparator, match type, address part
and variable namespace is declared here once, with its signature and its capability.

An extension module only registers things; the compiler checks each command and test of a
script against its declared signature and the script's ``require`` (RFC 5228 §3.2), and the
interpreter calls the handler with the compiled ``Call`` (arguments already checked and
sorted) and the ``interpreter.Run`` (the message, the result so far, the variables).

Example, a test-only extension with one command and one test, in a copy of the registry
so that production scripts never see it (``compile_script(..., registry=mine)``; the runs
of a script use the registry it was compiled with)::

    from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TestSpec

    def fail(run, call):            # command: returns nothing
        raise MyFailure(run.expand(call.args[0]))

    def result_count(run, call):    # test: returns a bool
        return run.match(call, [str(len(run.actions))], call.args[0])

    mine = REGISTRY.copy()
    mine.add_capability(Capability("vnd.example.test", advertised=False))
    mine.add_command(CommandSpec(
        name="test_fail", capability="vnd.example.test",
        positional=("string",), handler=fail))
    mine.add_test(TestSpec(
        name="result_count", capability="vnd.example.test", positional=("string-list",),
        comparator=True, match_type=True, handler=result_count))

A tag another extension adds to an existing command (``:copy`` on ``fileinto``) is
``REGISTRY.add_tag("command", "fileinto", TagSpec("copy", capability="copy"))``.
A handler runs with the ``interpreter.Run`` of the run: ``run.message``/``set_message``,
``run.header_values``, ``run.actions``/``add_action``, ``run.implicit_keep``,
``run.variables``/``expand``/``set_variable``, ``run.match``, ``run.context`` (envelope,
clock, environment), ``run.state`` (the extension's own per-run data); ``run.run_block``
runs a block, ``script.run_commands`` a whole script inside the run (include).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pochta.sieve.compiler import Call, CompileState
    from pochta.sieve.interpreter import Run

__all__ = [
    "REGISTRY",
    "AddressPart",
    "ArgType",
    "Capability",
    "CommandSpec",
    "Comparator",
    "MatchType",
    "Namespace",
    "ParsedAddress",
    "Registry",
    "TagSpec",
    "TestSpec",
]

ArgType = Literal["number", "string", "string-list"]
ArgValue = int | str | tuple[str, ...]

CommandHandler = Callable[["Run", "Call"], None]
TestHandler = Callable[["Run", "Call"], bool]
# Further checks of one call at compile time: raise SieveError (``call.error(...)``); may
# return the call with ``data`` set (what the handler needs precomputed), or None.
Validator = Callable[["Call", "CompileState"], "Call | None"]
# Applied at compile time to every string argument while ``capability`` is required
# (encoded-character, RFC 5228 §2.4.2.4); raises ValueError with the reason.
StringFilter = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Capability:
    """A ``require`` name. ``advertised`` ones are listed to ManageSieve clients;
    ``ihave`` False for those that change how a script is read (RFC 5463 §4: variables,
    encoded-character), which ``ihave`` never reports."""

    name: str
    advertised: bool = True
    ihave: bool = True


@dataclass(frozen=True, slots=True)
class TagSpec:
    """An optional tagged argument ``:name`` and the argument that follows it, if any.
    Tags of one ``group`` exclude each other (``:over``/``:under``)."""

    name: str  # without ':'
    arg: ArgType | None = None
    group: str = ""
    capability: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Signature:
    name: str
    capability: str = ""
    positional: tuple[ArgType, ...] = ()
    min_positional: int | None = None  # None: all are required
    tags: tuple[TagSpec, ...] = ()
    required_groups: tuple[str, ...] = ()  # a tag of each of these groups must be given
    tests: Literal["none", "test", "test-list"] = "none"
    comparator: bool = False  # takes :comparator (RFC 5228 §2.7.3)
    match_type: bool = False  # takes :is/:contains/:matches and registered ones
    address_part: bool = False  # takes :all/:localpart/:domain and registered ones
    validate: Validator | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSpec(_Signature):
    handler: CommandHandler
    block: Literal["none", "required", "optional"] = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class TestSpec(_Signature):
    __test__ = False  # a Sieve test, not a pytest class: test modules import it

    handler: TestHandler


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparator:
    """RFC 4790 comparator. ``compare`` orders two values (negative, 0, positive);
    ``fold`` maps a value so that equal values fold alike (for :contains/:matches), or
    None when the comparator has no substring operations (i;ascii-numeric)."""

    name: str
    capability: str  # "" for the two every script has (RFC 5228 §2.7.3)
    compare: Callable[[str, str], int]
    fold: Callable[[str], str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchType:
    """A match type tag. ``match(comparator, relation, value, key)`` says whether the value
    matches the key and, for :matches/:regex, gives the match variables (RFC 5229 §3.2).
    ``counts`` match types (``:count``) match the number of values instead."""

    name: str  # the tag, without ':'
    capability: str
    match: Callable[[Comparator, str, str, str], tuple[bool, list[str] | None]]
    arg: ArgType | None = None  # :count/:value take the relation
    needs_substring: bool = False  # needs a comparator with ``fold``
    counts: bool = False
    validate_key: Callable[[str, Comparator], str | None] | None = None  # error text or None
    validate_arg: Callable[[str], str | None] | None = None
    # the work one ``match(value, key)`` may do, in steps (a bound, not a measure); None:
    # linear, len(value) + len(key). ``Run.match`` charges it to ``SieveLimits.max_match_steps``.
    cost: Callable[[str, str], int] | None = None


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    """An address as the address parts see it. One that did not parse has ``valid``
    False and ``full`` its raw text: only :all sees it (RFC 5228 §2.7.4)."""

    full: str
    local: str
    domain: str
    valid: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressPart:
    name: str
    capability: str
    # None: the address has no such part; the run gives the context (recipient_delimiter)
    extract: Callable[[Run, ParsedAddress], str | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    """A variable namespace (RFC 5229 §3): ``${name.rest}`` reads ``get(run, rest)``."""

    name: str
    capability: str
    get: Callable[[Run, str], str | None]
    set: Callable[[Run, str, str], None] | None = None


@dataclass(slots=True)
class Registry:
    capabilities: dict[str, Capability] = field(default_factory=dict)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    tests: dict[str, TestSpec] = field(default_factory=dict)
    extra_tags: dict[tuple[str, str], list[TagSpec]] = field(default_factory=dict)
    comparators: dict[str, Comparator] = field(default_factory=dict)
    match_types: dict[str, MatchType] = field(default_factory=dict)
    address_parts: dict[str, AddressPart] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    string_filters: dict[str, StringFilter] = field(default_factory=dict)  # by capability
    data: dict[str, Any] = field(default_factory=dict)  # for extensions' own tables

    def copy(self) -> Registry:
        """A registry with everything this one has, to add to without changing this one
        (a test suite's own extension)."""
        return Registry(
            capabilities=dict(self.capabilities),
            commands=dict(self.commands),
            tests=dict(self.tests),
            extra_tags={k: list(v) for k, v in self.extra_tags.items()},
            comparators=dict(self.comparators),
            match_types=dict(self.match_types),
            address_parts=dict(self.address_parts),
            namespaces=dict(self.namespaces),
            string_filters=dict(self.string_filters),
            data=dict(self.data),
        )

    def add_capability(self, capability: Capability) -> None:
        self.capabilities[capability.name] = capability

    def add_command(self, spec: CommandSpec) -> None:
        self._check_capability(spec.capability)
        self.commands[spec.name] = spec

    def add_test(self, spec: TestSpec) -> None:
        self._check_capability(spec.capability)
        self.tests[spec.name] = spec

    def add_tag(self, kind: Literal["command", "test"], name: str, tag: TagSpec) -> None:
        """An extension's tag on another's command or test (``:copy`` on ``redirect``)."""
        self._check_capability(tag.capability)
        self.extra_tags.setdefault((kind, name), []).append(tag)

    def add_comparator(self, comparator: Comparator) -> None:
        self._check_capability(comparator.capability)
        self.comparators[comparator.name] = comparator

    def add_match_type(self, match_type: MatchType) -> None:
        self._check_capability(match_type.capability)
        self.match_types[match_type.name] = match_type

    def add_address_part(self, part: AddressPart) -> None:
        self._check_capability(part.capability)
        self.address_parts[part.name] = part

    def add_namespace(self, namespace: Namespace) -> None:
        self._check_capability(namespace.capability)
        self.namespaces[namespace.name] = namespace

    def add_string_filter(self, capability: str, string_filter: StringFilter) -> None:
        self._check_capability(capability)
        self.string_filters[capability] = string_filter

    def tags_of(self, kind: Literal["command", "test"], spec: _Signature) -> list[TagSpec]:
        return [*spec.tags, *self.extra_tags.get((kind, spec.name), ())]

    def advertised(self) -> tuple[str, ...]:
        return tuple(sorted(c.name for c in self.capabilities.values() if c.advertised))

    def _check_capability(self, name: str) -> None:
        if name and name not in self.capabilities:
            raise ValueError(f"register capability {name!r} before what needs it")


REGISTRY = Registry()
