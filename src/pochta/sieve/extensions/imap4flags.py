"""``imap4flags`` (RFC 5232): ``setflag``/``addflag``/``removeflag`` on the internal
variable or a named one, the ``hasflag`` test, and ``:flags`` on ``keep`` and ``fileinto``
(read by ``Run.flags_for``)."""

from __future__ import annotations

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.interpreter import Run, split_flags
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec, TestSpec


def _target(run: Run, call: Call) -> tuple[str | None, list[str]]:
    """The variable the call works on (None: the internal one) and the flag list."""
    if len(call.args) == 2:
        name = run.expand(call.strings(0)[0])
        return name, split_flags([run.variable(name) or ""])
    return None, list(run.flags)


def _store(run: Run, name: str | None, flags: list[str]) -> None:
    if name is None:
        run.flags = flags
    else:
        run.set_variable(name, " ".join(flags))


def _flags_arg(run: Run, call: Call) -> list[str]:
    return split_flags(run.expand_all(call.strings(len(call.args) - 1)))


def _setflag(run: Run, call: Call) -> None:
    name, _ = _target(run, call)
    _store(run, name, _flags_arg(run, call))


def _addflag(run: Run, call: Call) -> None:
    name, current = _target(run, call)
    _store(run, name, split_flags([*current, *_flags_arg(run, call)]))


def _removeflag(run: Run, call: Call) -> None:
    name, current = _target(run, call)
    gone = {f.lower() for f in _flags_arg(run, call)}
    _store(run, name, [f for f in current if f.lower() not in gone])


def _hasflag(run: Run, call: Call) -> bool:
    if len(call.args) == 2:
        names = run.expand_all(call.strings(0))
        current = split_flags([run.variable(n) or "" for n in names])
    else:
        current = list(run.flags)
    keys = (
        split_flags(call.strings(len(call.args) - 1))
        if not run.use_variables
        else (split_flags(run.expand_all(call.strings(len(call.args) - 1))))
    )
    return run.match(call, current, keys)


def _check_variable(call: Call, state: CompileState) -> Call | None:
    if len(call.args) == 2:
        if "variables" not in state.required and call.name != "hasflag":
            raise call.error(f"'{call.name}' with a variable name needs require \"variables\"")
        if call.name != "hasflag" and len(call.strings(0)) != 1:
            raise call.error(f"the variable name of '{call.name}' must be one string")
    return None


REGISTRY.add_capability(Capability("imap4flags"))
for _name, _handler in (("setflag", _setflag), ("addflag", _addflag), ("removeflag", _removeflag)):
    REGISTRY.add_command(
        CommandSpec(
            name=_name,
            capability="imap4flags",
            positional=("string-list", "string-list"),
            min_positional=1,
            handler=_handler,
            validate=_check_variable,
        )
    )
REGISTRY.add_test(
    TestSpec(
        name="hasflag",
        capability="imap4flags",
        positional=("string-list", "string-list"),
        min_positional=1,
        comparator=True,
        match_type=True,
        handler=_hasflag,
        validate=_check_variable,
    )
)
for _command in ("keep", "fileinto"):
    REGISTRY.add_tag(
        "command", _command, TagSpec("flags", arg="string-list", capability="imap4flags")
    )
