"""``fileinto`` (RFC 5228 §4.1) with ``:copy`` (RFC 3894) and ``:create``, and the
``mailboxexists`` test (RFC 5490 "mailbox").

A name that is no mailbox name. RFC 5228 §4.1 leaves a missing mailbox to the implementation
(error, create, or keep) and RFC 5490 §3.2 adds ``:create``; neither lets a message go to a
name that cannot be one. Our rule, as Pigeonhole's:

- a name that is empty, not valid UTF-8 (RFC 5228 §1.1 / RFC 3501 §5.1: mailbox names are
  UTF-8 here; octets from ``${hex:...}`` that are not UTF-8 are kept as surrogates) or has
  control characters is "invalid folder name": a compile error when the name is a literal,
  else a run-time error (``SieveRuntimeError``), so the caller keeps the message in the
  default folder (RFC 5228 §2.10.6) and the user sees why;
- any other name is the store's to judge when the action is executed: a name the store
  refuses (``store.maildir.check_folder_name``: "/", empty levels, LIST wildcards, length)
  fails that action at delivery, which then keeps the message in the default folder.
  The interpreter is pure and knows no store, so it does not guess the store's rules.
"""

from __future__ import annotations

from pochta.sieve.actions import FileInto
from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, CommandSpec, TagSpec, TestSpec


def _check_mailbox(name: str) -> str | None:
    """Why ``name`` is no mailbox name (see the module's rule), or None."""
    if not name:
        return "invalid folder name: a mailbox name must not be empty"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        try:
            shown = repr(name.encode("utf-8", "surrogateescape"))  # the octets, b'\xffrop'
        except UnicodeEncodeError:
            shown = repr(name)
        return (
            f"invalid folder name {shown}: it is not valid UTF-8 (check the "
            "${hex:...} encodings that built it; use ${unicode:...} for a character)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"invalid folder name {name!r}: it contains control characters"
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
