"""The ``vnd.dovecot.testsuite`` extension, registered on the interpreter's registry.

Commands and tests as the Pigeonhole README's table lists them: ``test``, ``test_fail``,
``test_set``, ``test_script_compile``, ``test_script_run``, ``test_result_execute``,
``test_result_reset``, ``test_result_action``, ``test_result_print``, ``test_message``,
``test_mailbox_create``, ``test_error``, ``test_config_set``/``unset``/``reload``,
``test_binary_save``/``load``, ``test_multiscript``, ``test_imap_metadata_set`` and the
``tst`` variable namespace (``${tst.path}``).

The handlers read and change the file's ``Suite`` (the global state of README §3), which
``harness.run_file`` installs in ``CURRENT`` for the length of one file's run, and the
interpreter's ``Run`` of the ``.svtest`` script: its actions are "the current result".
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pochta.sieve.actions import SieveResult
from pochta.sieve.context import Envelope, MessageContext
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.interpreter import Run, StopScript
from pochta.sieve.limits import SieveLimits
from pochta.sieve.registry import (
    REGISTRY,
    Capability,
    CommandSpec,
    Namespace,
    Registry,
    TagSpec,
    TestSpec,
)
from tests.sieve.pigeonhole.execute import action_names, execute_result
from tests.sieve.pigeonhole.multiscript import plan_action_names
from tests.sieve.pigeonhole.outcome import FAIL, PASS, SKIP, BlockOutcome
from tests.sieve.pigeonhole.verdicts import spam_info, virus_info
from tests.sieve.pigeonhole.world import (
    DEFAULT_MESSAGE,
    CapturedMessage,
    Config,
    MailStore,
    UnmappedSetting,
    crlf,
    envelope_for,
    set_envelope_part,
)

if TYPE_CHECKING:
    from pochta.sieve.compiler import Call
    from pochta.sieve.script import Script

__all__ = ["CAPABILITY", "CURRENT", "FileLoader", "SkipBlock", "Suite", "TestFailed", "registry"]

CAPABILITY = "vnd.dovecot.testsuite"


class TestFailed(Exception):
    """``test_fail``: the current block failed; the run goes on after the block."""

    __test__ = False  # not a pytest class


class SkipBlock(Exception):
    """The block needs something this harness cannot give (a Dovecot setting, IMAP
    METADATA): it is skipped with this reason."""


@dataclass(slots=True)
class FileLoader:
    """README §4: ``include`` finds :personal scripts in ``<svtest dir>/included/`` and
    :global ones in ``<svtest dir>/included-global/``."""

    directory: Path

    def load(self, name: str, location: Literal["personal", "global"]) -> str | None:
        sub = "included" if location == "personal" else "included-global"
        path = self.directory / sub / f"{name}.sieve"
        try:
            return path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
            return None


@dataclass(slots=True)
class Suite:
    """README §3: the state one ``.svtest`` file's blocks share."""

    directory: Path
    message: bytes = DEFAULT_MESSAGE
    envelope: Envelope = field(default_factory=lambda: envelope_for(DEFAULT_MESSAGE))
    store: MailStore = field(default_factory=MailStore)
    outbox: list[CapturedMessage] = field(default_factory=list)
    config: Config = field(default_factory=Config)
    compiled: object | None = None  # the last test_script_compile's Script
    binaries: dict[str, object] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the error log
    outcomes: list[BlockOutcome] = field(default_factory=list)
    # The results of the sub-script runs in the current result: the first test_script_run
    # and each :append_result after it (Dovecot's multi-script accumulation).
    appended: list[SieveResult] = field(default_factory=list)
    block: str | None = None  # the block running now
    skip_next: str = ""  # a top-level unmappable setting: skip the next block

    @property
    def loader(self) -> FileLoader:
        return FileLoader(self.directory)

    def context(self) -> MessageContext:
        settings = self.config.active
        return MessageContext(
            message=self.message,
            envelope=self.envelope,
            # Dovecot reads the configured spam/virus headers of the current message.
            spam=spam_info(self.message, settings),
            virus=virus_info(self.message, settings),
            recipient_delimiter=self.config.recipient_delimiter,
            mailbox_exists=self.store.exists,
            loader=self.loader,
        )


CURRENT: ContextVar[Suite] = ContextVar("pigeonhole_suite")


def _suite() -> Suite:
    return CURRENT.get()


def _sync(run: Run, suite: Suite) -> None:
    """Make the run see the suite's current message and envelope."""
    run.context = suite.context()
    run.message = suite.message
    run.edited = False
    run._headers = None  # the interpreter caches the parsed header of the message


def _reset_result(run: Run) -> None:
    run.actions = []
    run.implicit_keep = True
    run.redirects = 0


# -- commands --------------------------------------------------------------------------


def _test(run: Run, call: Call) -> None:
    suite = _suite()
    name = call.string(0)
    seen = sum(1 for o in suite.outcomes if o.name == name or o.name.startswith(name + "#"))
    label = name if not seen else f"{name}#{seen + 1}"
    if suite.skip_next:
        suite.outcomes.append(BlockOutcome(label, SKIP, suite.skip_next))
        suite.skip_next = ""
        return
    suite.block = label
    assert call.block is not None
    try:
        run.run_block(call.block)
    except TestFailed as failed:
        suite.outcomes.append(BlockOutcome(label, FAIL, f"test_fail: {failed}{_log(suite)}"))
    except SkipBlock as skip:
        suite.outcomes.append(BlockOutcome(label, SKIP, str(skip)))
    except StopScript:
        # RFC 5228 §3.3: stop ends all processing; the block did not fail (as Dovecot).
        suite.outcomes.append(BlockOutcome(label, PASS))
        suite.block = None
        raise
    else:
        suite.outcomes.append(BlockOutcome(label, PASS))
    # Any other exception (a runtime error) leaves suite.block set for the harness's report.
    suite.block = None


def _log(suite: Suite) -> str:
    """The error log, shortened, for the report of a failed block."""
    if not suite.errors:
        return ""
    first = " ".join(suite.errors[0].split())[:160]
    return f" [error log: {len(suite.errors)}; first: {first}]"


def _test_fail(run: Run, call: Call) -> None:
    raise TestFailed(run.expand(call.string(0)))


def _test_set(run: Run, call: Call) -> None:
    suite = _suite()
    what = run.expand(call.string(0))
    value = run.expand(call.string(1))
    if what == "message":
        suite.message = crlf(value)
        suite.envelope = envelope_for(suite.message)
        run.flags = []  # a new message has no flags yet (a stored one's: _message_select)
    elif what.startswith("envelope."):
        suite.envelope = set_envelope_part(suite.envelope, what[len("envelope.") :], value)
    else:
        raise SkipBlock(f"test_set {what!r}: not a testsuite object this harness knows")
    _sync(run, suite)


def _test_result_reset(run: Run, call: Call) -> None:
    suite = _suite()
    _reset_result(run)
    suite.appended = []
    suite.outbox.clear()  # Dovecot resets the captured SMTP with the result


def _test_result_print(run: Run, call: Call) -> None:
    return None


def _test_mailbox_create(run: Run, call: Call) -> None:
    _suite().store.create(run.expand(call.string(0)))


def _config_problem(suite: Suite, reason: str) -> None:
    if suite.block is not None:
        raise SkipBlock(reason)
    suite.skip_next = reason


def _test_config_set(run: Run, call: Call) -> None:
    suite = _suite()
    try:
        suite.config.set(run.expand(call.string(0)), run.expand(call.string(1)))
    except UnmappedSetting as e:
        _config_problem(suite, str(e))


def _test_config_unset(run: Run, call: Call) -> None:
    suite = _suite()
    try:
        suite.config.set(run.expand(call.string(0)), None)
    except UnmappedSetting as e:
        _config_problem(suite, str(e))


def _test_config_reload(run: Run, call: Call) -> None:
    suite = _suite()
    try:
        suite.config.reload()
    except ValueError as e:
        _config_problem(suite, f"test_config_reload: {e}")
    # The settings the context carries (spam/virus verdicts, the recipient delimiter) take
    # effect for the .svtest script too, not only for the sub-scripts it runs.
    run.context = suite.context()


def _test_binary_save(run: Run, call: Call) -> None:
    # pochta keeps compiled scripts in memory: save/load keep the Script object.
    suite = _suite()
    if suite.compiled is not None:
        suite.binaries[run.expand(call.string(0))] = suite.compiled


def _test_binary_load(run: Run, call: Call) -> None:
    suite = _suite()
    suite.compiled = suite.binaries.get(run.expand(call.string(0)))


def _message_select(run: Run, call: Call) -> bool:
    suite = _suite()
    index = call.number(0)
    folder = call.tags.get("folder")
    if isinstance(folder, str):
        stored = suite.store.get(run.expand(folder), index)
        if stored is None:
            return False
        suite.message = stored.content
        _sync(run, suite)
        # The stored message's flags become the current ones, so hasflag reads what
        # fileinto/keep stored (as Dovecot's testsuite does for a message from a folder).
        run.flags = sorted(stored.flags)
        return True
    else:
        if not 0 <= index < len(suite.outbox):
            return False
        sent = suite.outbox[index]
        suite.message = sent.content
        suite.envelope = Envelope(
            sender=sent.sender, recipient=sent.recipient, original_recipient=sent.recipient
        )
    _sync(run, suite)
    return True


def _test_message_command(run: Run, call: Call) -> None:
    if not _message_select(run, call):
        where = call.tags.get("folder")
        what = f"folder {where!r}" if isinstance(where, str) else "smtp"
        # As Dovecot: a runtime error, which README §2 makes fail the whole file.
        raise SieveRuntimeError(f"test_message: no message {call.number(0)} in {what}")


def _test_multiscript(run: Run, call: Call) -> bool:
    from tests.sieve.pigeonhole.multiscript import run_multiscript

    return run_multiscript(_suite(), [run.expand(p) for p in call.strings(0)])


def _test_imap_metadata_set(run: Run, call: Call) -> None:
    raise SkipBlock("test_imap_metadata_set: IMAP METADATA is not in issue 16's list")


# -- tests -----------------------------------------------------------------------------


def _limits(suite: Suite) -> SieveLimits:
    return suite.config.limits


def _test_script_compile(run: Run, call: Call) -> bool:
    suite = _suite()
    rel = run.expand(call.string(0))
    path = suite.directory / rel
    suite.errors = []
    # As Pigeonhole's testsuite_script_compile: a failed compile keeps the last script.
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        suite.errors.append(f"{Path(rel).stem}: script not found ({e})")
        return False
    script, suite.errors = compile_logged(text, rel, _limits(suite), suite.loader)
    if script is None:
        return False
    suite.compiled = script
    return True


def compile_logged(
    text: str, rel: str, limits: SieveLimits, loader: FileLoader
) -> tuple[Script | None, list[str]]:
    """Compile a sub-script as the testsuite does: the Script, or None and the error log.

    Pigeonhole's ``sieve_compile_script`` (src/lib-sieve/sieve.c) logs each compile error
    to the testsuite's error handler and then one more error of its own on the same
    handler: "parse failed" when the parser gave up, "validation failed" when a parsed
    script did not validate. ``test_error :count`` counts that summary too
    (compile/errors/header.sieve says so: "Total errors: 9 (+1 validation failed msg =
    10)"). A script that cannot be read logs only "script not found" (sieve.c
    ``sieve_compile``)."""
    from pochta.sieve.parser import parse
    from pochta.sieve.script import compile_script

    name = Path(rel).stem
    try:
        return compile_script(text, name=rel, limits=limits, loader=loader, registry=registry()), []
    except SieveError as e:
        errors = getattr(e, "errors", None) or [e]
        log = [f"{rel}: {err}" for err in errors]
    try:
        parse(text, max_bytes=limits.max_script_bytes)
    except SieveError:
        log.append(f"{name}: parse failed")
    else:
        log.append(f"{name}: validation failed")
    return None, log


def _test_script_run(run: Run, call: Call) -> bool:
    from pochta.sieve.script import Script, execute

    suite = _suite()
    suite.errors = []
    if suite.compiled is None:
        suite.errors.append("test_script_run: no script compiled")
        return False
    append = "append_result" in call.tags
    try:
        assert isinstance(suite.compiled, Script)
        sub = Run(suite.context(), _limits(suite), registry=registry())
        execute(sub, suite.compiled)
        result = sub.result()
    except SieveError as e:
        suite.errors.append(str(e))
        if not append:
            _reset_result(run)
        return False
    if not append:
        _reset_result(run)
        suite.appended = []
        run.implicit_keep = result.implicit_keep
    else:
        run.implicit_keep = run.implicit_keep and result.implicit_keep
    run.actions.extend(result.actions)
    suite.appended.append(result)
    run.flags = list(result.keep_flags)
    if result.final_content is not None:
        run.message = result.final_content
        run.edited = True
        run._headers = None
    return True


def _test_result_execute(run: Run, call: Call) -> bool:
    suite = _suite()
    suite.errors = []
    execution = execute_result(
        run.result(),
        message=suite.message,
        envelope=suite.envelope,
        store=suite.store,
        outbox=suite.outbox,
    )
    suite.errors.extend(execution.errors)
    return execution.ok


def _indexed(call: Call, values: list[str]) -> list[str]:
    index = call.tags.get("index")
    if isinstance(index, int):
        return [values[index - 1]] if 1 <= index <= len(values) else []
    return values


def _test_error(run: Run, call: Call) -> bool:
    return run.match(call, _indexed(call, _suite().errors), call.strings(0))


def _test_result_action(run: Run, call: Call) -> bool:
    suite = _suite()
    if len(suite.appended) > 1:
        # Several scripts' results in one (test_script_run :append_result): combined by
        # pochta's multi-script rule, deliver/sieve_delivery.plan_results.
        names = plan_action_names(suite.appended)
    else:
        names = action_names(run.result())
    return run.match(call, _indexed(call, names), call.strings(0))


def _tst_namespace(run: Run, rest: str) -> str | None:
    if rest.lower() == "path":
        return str(_suite().directory)
    return None


_REGISTRY: list[Registry] = []


def registry() -> Registry:
    """The interpreter's registry plus ``vnd.dovecot.testsuite``: a copy, so the test-only
    extension never becomes something a real script may require."""
    if _REGISTRY:
        return _REGISTRY[0]
    import pochta.sieve.script  # noqa: F401 - registers every extension on REGISTRY

    reg = Registry(
        capabilities=dict(REGISTRY.capabilities),
        commands=dict(REGISTRY.commands),
        tests=dict(REGISTRY.tests),
        extra_tags={k: list(v) for k, v in REGISTRY.extra_tags.items()},
        comparators=dict(REGISTRY.comparators),
        match_types=dict(REGISTRY.match_types),
        address_parts=dict(REGISTRY.address_parts),
        namespaces=dict(REGISTRY.namespaces),
        string_filters=dict(REGISTRY.string_filters),  # encoded-character (sieve-ext)
        data=dict(REGISTRY.data),
    )
    _register(reg)
    _REGISTRY.append(reg)
    return reg


def _register(reg: Registry) -> None:
    reg.add_capability(Capability(CAPABILITY, advertised=False))
    # README: mailbox/errors.svtest requires vnd.dovecot.debug and never logs; a no-op.
    reg.add_capability(Capability("vnd.dovecot.debug", advertised=False))
    reg.add_command(
        CommandSpec(
            name="debug_log",
            capability="vnd.dovecot.debug",
            positional=("string",),
            handler=_test_result_print,
        )
    )
    commands = [
        CommandSpec(
            name="test",
            capability=CAPABILITY,
            positional=("string",),
            block="required",
            handler=_test,
        ),
        CommandSpec(
            name="test_fail", capability=CAPABILITY, positional=("string",), handler=_test_fail
        ),
        CommandSpec(
            name="test_set",
            capability=CAPABILITY,
            positional=("string", "string"),
            handler=_test_set,
        ),
        CommandSpec(name="test_result_reset", capability=CAPABILITY, handler=_test_result_reset),
        CommandSpec(name="test_result_print", capability=CAPABILITY, handler=_test_result_print),
        CommandSpec(name="test_message_print", capability=CAPABILITY, handler=_test_result_print),
        CommandSpec(
            name="test_mailbox_create",
            capability=CAPABILITY,
            positional=("string",),
            handler=_test_mailbox_create,
        ),
        CommandSpec(
            name="test_config_set",
            capability=CAPABILITY,
            positional=("string", "string"),
            handler=_test_config_set,
        ),
        CommandSpec(
            name="test_config_unset",
            capability=CAPABILITY,
            positional=("string",),
            handler=_test_config_unset,
        ),
        CommandSpec(
            name="test_config_reload",
            capability=CAPABILITY,
            tags=(TagSpec("extension", "string"),),
            handler=_test_config_reload,
        ),
        CommandSpec(
            name="test_binary_save",
            capability=CAPABILITY,
            positional=("string",),
            handler=_test_binary_save,
        ),
        CommandSpec(
            name="test_binary_load",
            capability=CAPABILITY,
            positional=("string",),
            handler=_test_binary_load,
        ),
        CommandSpec(
            name="test_message",
            capability=CAPABILITY,
            positional=("number",),
            tags=(TagSpec("smtp", group="source"), TagSpec("folder", "string", group="source")),
            required_groups=("source",),
            handler=_test_message_command,
        ),
        CommandSpec(
            name="test_imap_metadata_set",
            capability=CAPABILITY,
            positional=("string", "string"),
            tags=(TagSpec("mailbox", "string"),),
            handler=_test_imap_metadata_set,
        ),
    ]
    tests = [
        TestSpec(
            name="test_script_compile",
            capability=CAPABILITY,
            positional=("string",),
            handler=_test_script_compile,
        ),
        TestSpec(
            name="test_script_run",
            capability=CAPABILITY,
            tags=(TagSpec("append_result"),),
            handler=_test_script_run,
        ),
        TestSpec(name="test_result_execute", capability=CAPABILITY, handler=_test_result_execute),
        TestSpec(
            name="test_message",
            capability=CAPABILITY,
            positional=("number",),
            tags=(TagSpec("smtp", group="source"), TagSpec("folder", "string", group="source")),
            required_groups=("source",),
            handler=_message_select,
        ),
        TestSpec(
            name="test_error",
            capability=CAPABILITY,
            positional=("string-list",),
            tags=(TagSpec("index", "number"),),
            comparator=True,
            match_type=True,
            handler=_test_error,
        ),
        TestSpec(
            name="test_result_action",
            capability=CAPABILITY,
            positional=("string-list",),
            tags=(TagSpec("index", "number"),),
            comparator=True,
            match_type=True,
            handler=_test_result_action,
        ),
        TestSpec(
            name="test_multiscript",
            capability=CAPABILITY,
            positional=("string-list",),
            handler=_test_multiscript,
        ),
    ]
    for command in commands:
        reg.add_command(command)
    for test in tests:
        reg.add_test(test)
    reg.add_namespace(Namespace(name="tst", capability=CAPABILITY, get=_tst_namespace))
