"""RFC 5293 ``addheader`` and ``deleteheader``: edit the message's header. Later tests see
the edited message and later actions carry it (``Run.set_message``; each action's
``content`` and ``SieveResult.final_content``). The byte-level edits are in
``headeredit.py``; deleting Received or Auto-Submitted is ignored with a warning (RFC 5293
§7, see ``headeredit.PROTECTED_FIELDS``).
"""

from __future__ import annotations

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.extensions import headeredit
from pochta.sieve.extensions.index import INDEX_TAGS, check_index
from pochta.sieve.interpreter import Run, decode_words
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec

__all__: list[str] = []


def _name(run: Run, call: Call) -> str:
    name = run.expand(call.string(0))
    if not headeredit.valid_field_name(name):
        # RFC 5293 §4, §5: a name made by variables that is no field name is a runtime error
        raise SieveRuntimeError(f"'{name}' is not a valid header field name (RFC 5322 §2.2)")
    return name


def _addheader(run: Run, call: Call) -> None:
    name = _name(run, call)
    value = run.expand(call.string(1))
    if not headeredit.valid_field_value(value):
        raise SieveRuntimeError(f"the value for header '{name}' holds a NUL character")
    run.set_message(headeredit.add_field(run.message, name, value, last="last" in call.tags))


def _deleteheader(run: Run, call: Call) -> None:
    name = _name(run, call)
    if headeredit.is_protected(name):
        # RFC 5293 §7: the trace and the automatic-mail marker stay
        run.warnings.append(f"deleteheader '{name}' ignored: the field is protected")
        return
    patterns = call.strings(1) if len(call.args) > 1 else None
    index = call.tags.get("index")

    def matches(value: str) -> bool:
        return patterns is None or run.match(call, [decode_words(value)], patterns)

    edited, count = headeredit.delete_fields(
        run.message,
        name,
        matches,
        index=index if isinstance(index, int) else 0,
        last="last" in call.tags,
    )
    if count:
        run.set_message(edited)


def _check_name(call: Call, state: CompileState) -> None:
    name = call.string(0)
    if "variables" in state.required and "${" in name:
        return
    if not headeredit.valid_field_name(name):
        # RFC 5293 §4: a constant name that is no field name is a compile error
        raise call.error(f"'{name}' is not a valid header field name (RFC 5322 §2.2)")


def _check_add(call: Call, state: CompileState) -> Call | None:
    _check_name(call, state)
    value = call.string(1)
    if not headeredit.valid_field_value(value):
        raise call.error(f"the value for header '{call.string(0)}' holds a NUL character")
    return None


def _check_delete(call: Call, state: CompileState) -> Call | None:
    _check_name(call, state)
    check_index(call)
    return None


REGISTRY.add_capability(Capability("editheader"))
REGISTRY.add_command(
    CommandSpec(
        name="addheader",
        capability="editheader",
        positional=("string", "string"),
        tags=(TagSpec("last"),),
        handler=_addheader,
        validate=_check_add,
    )
)
REGISTRY.add_command(
    CommandSpec(
        name="deleteheader",
        capability="editheader",
        positional=("string", "string-list"),
        min_positional=1,
        tags=INDEX_TAGS,
        comparator=True,
        match_type=True,
        handler=_deleteheader,
        validate=_check_delete,
    )
)
