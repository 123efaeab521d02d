"""RFC 6609 ``include``, ``return`` and ``global`` (with the ``global.`` variable namespace).

Where the included scripts come from: the ``ScriptLoader`` (``context.ScriptLoader``;
``scripts.ScriptStore.loader(account)``): ``:personal`` (the default) the account's own
scripts, ``:global`` the administrator's ``sieve-global/include/``.

When they are compiled: with the compile-time loader (``compile_script(loader=...)``) every
include is read and compiled with the including script, so an error in an included script,
a missing one (without ``:optional``), an include loop (RFC 6609 §3.2) or a limit passed is
a compile error of the including script. Without one (the loader is only known when the
message comes), the script is read through ``context.loader`` and compiled when the include
runs; the same faults are then runtime errors (the message is kept, RFC 5228 §2.10.6).

Limits: ``[sieve] max_include_depth`` (nesting, the main script at depth 0) and
``max_includes`` (distinct scripts included by one compile or one run).

Running: the included script's commands run in the same run (one result, one implicit keep,
RFC 6609 §3.2), with its own local variables; a name declared ``global`` (§3.3) is shared
by every script that declares it, and ``${global.name}`` (§3.5) reaches it from anywhere.
``:once`` skips a script already included in this run; ``return`` ends the current included
script (in the main script it is ``stop``, §3.4); ``stop`` ends everything.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

from pochta.sieve.compiler import Call, CompileState, compile_tree
from pochta.sieve.context import ScriptLoader
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.extensions import variables as _variables  # noqa: F401 - set is wrapped
from pochta.sieve.interpreter import Run, StopScript
from pochta.sieve.parser import parse
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, Namespace, TagSpec
from pochta.sieve.scripts import ScriptNameError, check_script_name

__all__ = ["Included", "check_include_name"]

Location = Literal["personal", "global"]
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Return(Exception):
    """``return`` (RFC 6609 §3.4): leave the current included script."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    commands: tuple[Call, ...]
    required: frozenset[str]


@dataclass(frozen=True, slots=True)
class Included:
    """What an include call carries: the script, compiled when the compile had a loader
    (None then means an :optional script that is missing); ``compiled`` False means it is
    read and compiled when the include runs."""

    location: Location
    name: str
    once: bool
    optional: bool
    compiled: bool
    script: _Compiled | None = None
    loop: bool = False  # an :once include of a script that includes this one


@dataclass(slots=True)
class _Shared:
    """The state of one whole compile, shared by the nested compiles of included scripts."""

    cache: dict[tuple[Location, str], _Compiled | None] = field(default_factory=dict)


def check_include_name(name: str) -> str | None:
    """Why ``name`` cannot name an included script, or None. RFC 6609 §3.2 and RFC 5804
    §1.6: no "/" (the name is not a path), no control characters (C0, DEL, C1), no
    LINE/PARAGRAPH SEPARATOR."""
    try:
        check_script_name(name)
    except ScriptNameError as e:
        return str(e)
    if "/" in name:
        return "a script name must not contain '/'"
    if any(0x80 <= ord(c) <= 0x9F for c in name):
        return "a script name must not contain control characters"
    return None


def _location(call: Call) -> Location:
    return "global" if "global" in call.tags else "personal"


def _compile_text(
    text: str,
    key: tuple[Location, str],
    state: CompileState,
    chain: tuple[tuple[Location, str], ...],
    shared: _Shared,
    depth: int,
) -> _Compiled:
    nodes = parse(text, max_bytes=state.limits.max_script_bytes)
    child = CompileState(
        registry=state.registry,
        available=state.available,
        limits=state.limits,
        name=key[1],
        loader=state.loader,
        data={
            "include.chain": (*chain, key),
            "include.depth": depth,
            "include.shared": shared,
        },
    )
    commands = compile_tree(nodes, child)
    return _Compiled(commands, frozenset(child.required))


def _check_include(call: Call, state: CompileState) -> Call | None:
    name = call.string(0)
    problem = check_include_name(name)
    if problem:
        raise call.error(f"include '{name}': {problem}")
    location = _location(call)
    key = (location, name)
    # The scripts being compiled around this include (not the main script: its name need
    # not be that of a stored script; a main script that includes itself loops one level
    # further down and is caught there).
    chain: tuple[tuple[Location, str], ...] = state.data.get("include.chain", ())
    shared: _Shared = state.data.setdefault("include.shared", _Shared())
    info = Included(
        location=location,
        name=name,
        once="once" in call.tags,
        optional="optional" in call.tags,
        compiled=state.loader is not None,
    )
    loader: ScriptLoader | None = state.loader
    if loader is None:
        return _with(call, info)
    if key in chain:
        if info.once:
            # RFC 6609 §3.2: an :once include of a script already running is skipped
            return _with(call, dataclasses.replace(info, loop=True))
        # RFC 6609 §3.2: a script must not include itself, directly or not
        raise call.error(f"include loop: '{name}' ({location}) includes itself")
    depth = state.data.get("include.depth", 0) + 1  # the main script is at depth 0
    if depth > state.limits.max_include_depth:
        raise call.error(
            f"include '{name}' nests deeper than {state.limits.max_include_depth} "
            "([sieve] max_include_depth)"
        )
    if key not in shared.cache:
        if len(shared.cache) >= state.limits.max_includes:
            raise call.error(
                f"include '{name}': more than {state.limits.max_includes} scripts included "
                "([sieve] max_includes)"
            )
        text = loader.load(name, location)
        if text is None:
            if not info.optional:
                raise call.error(f"included script '{name}' ({location}) does not exist")
            shared.cache[key] = None
        else:
            shared.cache[key] = None  # counted now; a loop back to it is caught by the chain
            try:
                shared.cache[key] = _compile_text(text, key, state, chain, shared, depth)
            except SieveError as e:
                raise call.error(f"in included script '{name}' ({location}): {e}") from None
    elif shared.cache[key] is None and not info.optional:
        raise call.error(f"included script '{name}' ({location}) does not exist")
    script = shared.cache[key]
    return _with(call, dataclasses.replace(info, script=script))


def _with(call: Call, info: Included) -> Call:
    return dataclasses.replace(call, data=info)


# -- running -----------------------------------------------------------------------------


class _Scope(dict[str, str]):
    """One script's variables: its locals, and the names it declared global, which live
    in the run's one global table (RFC 6609 §3.3)."""

    def __init__(self, shared: dict[str, str], initial: dict[str, str] | None = None) -> None:
        super().__init__(initial or {})
        self.shared = shared
        self.declared: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        if key in self.declared:
            return self.shared.get(key, default)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        if key in self.declared:
            return self.shared[key]
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        if key in self.declared:
            self.shared[key] = value
        else:
            super().__setitem__(key, value)

    def __contains__(self, key: object) -> bool:
        if key in self.declared:
            return key in self.shared
        return super().__contains__(key)


def _globals(run: Run) -> dict[str, str]:
    table: dict[str, str] = run.state.setdefault("include.globals", {})
    return table


def _scope(run: Run) -> _Scope:
    if not isinstance(run.variables, _Scope):
        run.variables = _Scope(_globals(run), run.variables)
    return run.variables


def _load_at_run(run: Run, info: Included) -> _Compiled | None:
    key = (info.location, info.name)
    cache: dict[tuple[Location, str], _Compiled | None] = run.state.setdefault("include.cache", {})
    if key in cache:
        return cache[key]
    if len(cache) >= run.limits.max_includes:
        raise SieveRuntimeError(
            f"include '{info.name}': more than {run.limits.max_includes} scripts included "
            "([sieve] max_includes)"
        )
    loader = run.context.loader
    text = loader.load(info.name, info.location) if loader is not None else None
    if text is None:
        cache[key] = None
        return None
    state = CompileState(
        registry=run.registry,
        available=frozenset(run.registry.capabilities),
        limits=run.limits,
        name=info.name,
        loader=None,
    )
    try:
        nodes = parse(text, max_bytes=run.limits.max_script_bytes)
        compiled = _Compiled(compile_tree(nodes, state), frozenset(state.required))
    except SieveError as e:
        raise SieveRuntimeError(
            f"included script '{info.name}' ({info.location}) does not compile: {e}"
        ) from None
    cache[key] = compiled
    return compiled


def _include(run: Run, call: Call) -> None:
    info = call.data
    assert isinstance(info, Included)
    key = (info.location, info.name)
    done: set[tuple[Location, str]] = run.state.setdefault("include.done", set())
    if info.once and key in done:
        return  # RFC 6609 §3.2 :once
    stack: list[tuple[Location, str]] = run.state.setdefault("include.stack", [])
    if key in stack or info.loop:
        # RFC 6609 §3.2: an include loop
        raise SieveRuntimeError(f"include loop: '{info.name}' ({info.location}) includes itself")
    if len(stack) >= run.limits.max_include_depth:
        raise SieveRuntimeError(
            f"include '{info.name}' nests deeper than {run.limits.max_include_depth} "
            "([sieve] max_include_depth)"
        )
    script = info.script if info.compiled else _load_at_run(run, info)
    if script is None:
        if info.optional:
            return  # RFC 6609 §3.2 :optional: a missing script is no error
        raise SieveRuntimeError(f"included script '{info.name}' ({info.location}) does not exist")
    done.add(key)
    saved_variables = run.variables
    saved_use = run.use_variables
    saved_branch = run.branch_taken
    _scope(run)  # the includer's globals must be in the shared table before the call
    run.variables = _Scope(_globals(run))
    run.use_variables = "variables" in script.required
    stack.append(key)
    try:
        run.run_block(script.commands)
    except _Return:
        pass
    finally:
        stack.pop()
        run.variables = saved_variables
        run.use_variables = saved_use
        run.branch_taken = saved_branch


def _return(run: Run, call: Call) -> None:
    if run.state.get("include.stack"):
        raise _Return
    raise StopScript  # RFC 6609 §3.4: return in the main script ends it


def _global(run: Run, call: Call) -> None:
    scope = _scope(run)
    for name in call.strings(0):
        key = name.lower()
        if key in scope.declared:
            continue
        scope.declared.add(key)


def _check_global(call: Call, state: CompileState) -> Call | None:
    if "variables" not in state.required:
        # RFC 6609 §3.3: global declares variables, so it needs the variables extension
        raise call.error("command 'global' needs require \"variables\"")
    set_before: set[str] = state.data.get("include.set_names", set())
    for name in call.strings(0):
        if not _VARIABLE.match(name):
            raise call.error(f"'{name}' is not a valid variable name for 'global'")
        if name.lower() in set_before:
            # RFC 6609 §3.3: a variable is global from its declaration on; one the script
            # already used as a local cannot become global
            raise call.error(f"variable '{name}' is set before it is declared global")
    return None


def _watch_set() -> None:
    """Wrap ``set``'s validator to note the local variables a script sets, for the check
    above (the compiler runs validators in script order)."""
    spec = REGISTRY.commands["set"]
    validate = spec.validate

    def validator(call: Call, state: CompileState) -> Call | None:
        replaced = validate(call, state) if validate is not None else None
        if "include" in state.required:
            state.data.setdefault("include.set_names", set()).add(call.string(0).lower())
        return replaced

    REGISTRY.add_command(dataclasses.replace(spec, validate=validator))


def _global_get(run: Run, name: str) -> str | None:
    if not _VARIABLE.match(name):
        return None
    return _globals(run).get(name.lower(), "")


def _global_set(run: Run, name: str, value: str) -> None:
    if not _VARIABLE.match(name):
        raise SieveRuntimeError(f"'global.{name}' is not a valid variable name")
    _globals(run)[name.lower()] = value


REGISTRY.add_capability(Capability("include"))
REGISTRY.add_command(
    CommandSpec(
        name="include",
        capability="include",
        positional=("string",),
        tags=(
            TagSpec("personal", group="location"),
            TagSpec("global", group="location"),
            TagSpec("once"),
            TagSpec("optional"),
        ),
        handler=_include,
        validate=_check_include,
    )
)
REGISTRY.add_command(CommandSpec(name="return", capability="include", handler=_return))
REGISTRY.add_command(
    CommandSpec(
        name="global",
        capability="include",
        positional=("string-list",),
        handler=_global,
        validate=_check_global,
    )
)
# RFC 6609 §3.5: ${global.name}
REGISTRY.add_namespace(
    Namespace(name="global", capability="include", get=_global_get, set=_global_set)
)
_watch_set()
