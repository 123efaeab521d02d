"""``fileinto`` (RFC 5228 §4.1) with ``:copy`` (RFC 3894) and ``:create``, and the
``mailboxexists`` test (RFC 5490 "mailbox")."""

from __future__ import annotations

from pochta.sieve.actions import FileInto
from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec, TestSpec


def _check_mailbox(name: str) -> str | None:
    if not name:
        return "a mailbox name must not be empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"mailbox name {name!r} contains control characters"
    return None


def _fileinto(run: Run, call: Call) -> None:
    mailbox = run.expand(call.string(0))
    problem = _check_mailbox(mailbox)
    if problem:
        raise SieveRuntimeError(problem)
    run.add_action(
        FileInto(
            mailbox=mailbox,
            flags=run.flags_for(call),
            create="create" in call.tags,
            content=run.content(),
        ),
        cancels_keep="copy" not in call.tags,  # RFC 3894 §3
    )


def _check_fileinto(call: Call, state: CompileState) -> Call | None:
    name = call.string(0)
    if "${" in name and "variables" in state.required:
        return None
    problem = _check_mailbox(name)
    if problem:
        raise call.error(problem)
    return None


def _mailboxexists(run: Run, call: Call) -> bool:
    # RFC 5490 §3.1: true only if every named mailbox exists
    return all(run.context.mailbox_exists(m) for m in run.expand_all(call.strings(0)))


REGISTRY.add_capability(Capability("fileinto"))
REGISTRY.add_capability(Capability("mailbox"))
REGISTRY.add_command(
    CommandSpec(
        name="fileinto",
        capability="fileinto",
        positional=("string",),
        handler=_fileinto,
        validate=_check_fileinto,
    )
)
REGISTRY.add_tag("command", "fileinto", TagSpec("copy", capability="copy"))
REGISTRY.add_tag("command", "fileinto", TagSpec("create", capability="mailbox"))  # RFC 5490 §3.2
REGISTRY.add_test(
    TestSpec(
        name="mailboxexists",
        capability="mailbox",
        positional=("string-list",),
        handler=_mailboxexists,
    )
)
