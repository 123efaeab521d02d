"""``variables`` (RFC 5229): ``set`` with its modifiers, the ``string`` test, and (in
``Run.expand``) ``${name}`` in strings with the match variables ``${0}``..``${9}`` and more.
A reference to a namespace nobody registered is a compile error (RFC 5229 §3), checked
by the compiler."""

from __future__ import annotations

import re

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec, TestSpec

__all__ = ["MAX_VARIABLES", "MAX_VARIABLE_NAME", "quote_wildcards"]

# RFC 5229 §6 lets an implementation limit variables; with values of at most
# interpreter.MAX_VARIABLE_BYTES each, these bound a run's variables to about 1 MB whatever
# the script's size (Pigeonhole's defaults: 255 variables, names of 64 characters).
MAX_VARIABLES = 255  # distinct variables one script sets
MAX_VARIABLE_NAME = 64  # characters in a variable's name

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def quote_wildcards(text: str) -> str:
    # RFC 5229 §4.1 :quotewildcard: "*", "?" and "\" get a backslash before them
    return re.sub(r"([*?\\])", r"\\\1", text)


def _quote_regex(text: str) -> str:
    # draft-ietf-sieve-regex-01 §4 :quoteregex: every regex special character escaped
    return re.sub(r"([\\^$.\[\]|()?*+{}])", r"\\\1", text)


def _upperfirst(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lowerfirst(text: str) -> str:
    return text[:1].lower() + text[1:]


# RFC 5229 §4.1: modifiers apply in order of precedence, highest (40) first
_MODIFIERS = (
    ("lower", str.lower),
    ("upper", str.upper),
    ("lowerfirst", _lowerfirst),
    ("upperfirst", _upperfirst),
    ("quotewildcard", quote_wildcards),
    ("quoteregex", _quote_regex),
    ("length", lambda s: str(len(s))),
)


def _set(run: Run, call: Call) -> None:
    value = run.expand(call.string(1))
    for tag, modify in _MODIFIERS:
        if tag in call.tags:
            value = modify(value)
    run.set_variable(call.string(0), value)


def _check_set(call: Call, state: CompileState) -> Call | None:
    name = call.string(0)
    if not _NAME.match(name):
        raise call.error(f"'{name}' is not a valid variable name (RFC 5229 §3)")
    if len(name) > MAX_VARIABLE_NAME:
        raise call.error(
            f"variable name '{name[:20]}...' is longer than {MAX_VARIABLE_NAME} characters"
        )
    if "." in name:
        namespace = state.registry.namespaces.get(name.split(".")[0].lower())
        if namespace is None or namespace.set is None:
            raise call.error(f"variable '{name}' is in a namespace that cannot be set")
        return None
    names: set[str] = state.data.setdefault("variables.names", set())
    if name.lower() not in names:
        if len(names) >= MAX_VARIABLES:
            if state.data.get("variables.too_many"):
                return None  # said once: each further one is the same mistake
            state.data["variables.too_many"] = True
            raise call.error(
                f"the script sets more than {MAX_VARIABLES} variables (RFC 5229 §6 limit); "
                "reuse variables"
            )
        names.add(name.lower())
    return None


def _string(run: Run, call: Call) -> bool:
    values = run.expand_all(call.strings(0))
    if call.match_type is not None and call.match_type.counts:
        values = [v for v in values if v]  # RFC 5229 §5: empty strings are not counted
    return run.match(call, values, call.strings(1))


REGISTRY.add_capability(Capability("variables", ihave=False))
REGISTRY.add_command(
    CommandSpec(
        name="set",
        capability="variables",
        positional=("string", "string"),
        tags=(
            TagSpec("lower", group="case"),
            TagSpec("upper", group="case"),
            TagSpec("lowerfirst", group="first"),
            TagSpec("upperfirst", group="first"),
            TagSpec("quotewildcard", group="quote"),
            TagSpec("length", group="length"),
        ),
        handler=_set,
        validate=_check_set,
    )
)
REGISTRY.add_tag("command", "set", TagSpec("quoteregex", group="quote", capability="regex"))
REGISTRY.add_test(
    TestSpec(
        name="string",
        capability="variables",
        positional=("string-list", "string-list"),
        comparator=True,
        match_type=True,
        handler=_string,
    )
)
