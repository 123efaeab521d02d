"""``variables`` (RFC 5229): ``set`` with its modifiers, the ``string`` test, and (in
``Run.expand``) ``${name}`` in strings with the match variables ``${0}``..``${9}`` and more.
A reference to a namespace nobody registered is a compile error (RFC 5229 §3)."""

from __future__ import annotations

import re

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec, TestSpec

__all__ = ["quote_wildcards"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z0-9_.]+\}")


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
    if "." in name:
        namespace = state.registry.namespaces.get(name.split(".")[0].lower())
        if namespace is None or namespace.set is None:
            raise call.error(f"variable '{name}' is in a namespace that cannot be set")
    return None


def check_namespaces(text: str) -> str:
    """The string filter of "variables": references to unknown namespaces are errors."""
    for m in _REF.finditer(text):
        if m.group(1).lower() not in REGISTRY.namespaces:
            raise ValueError(f"unknown variable namespace '{m.group(1)}' in {m.group(0)!r}")
    return text


def _string(run: Run, call: Call) -> bool:
    values = run.expand_all(call.strings(0))
    if call.match_type is not None and call.match_type.counts:
        values = [v for v in values if v]  # RFC 5229 §5: empty strings are not counted
    return run.match(call, values, call.strings(1))


REGISTRY.add_capability(Capability("variables"))
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
REGISTRY.add_string_filter("variables", check_namespaces)
