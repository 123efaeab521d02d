"""Run one ``.svtest`` file (Pigeonhole README, "How a harness runs one .svtest file").

The file is compiled as an ordinary script that requires ``vnd.dovecot.testsuite`` and run
once, top to bottom, in one interpreter ``Run``; each ``test`` block reports pass, fail or
skip. A compile error of the file fails every block; a runtime error (or ``test_fail``
outside a block) fails the block it happened in and every block not run yet.
"""

from __future__ import annotations

from pochta.sieve.errors import SieveError
from pochta.sieve.interpreter import Run
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import compile_script, execute
from tests.sieve.pigeonhole import testsuite
from tests.sieve.pigeonhole.layout import SvtestFile
from tests.sieve.pigeonhole.outcome import FAIL, PASS, SKIP, BlockOutcome, FileOutcome

__all__ = ["run_file"]

# The .svtest script itself takes actions in many blocks (and resets them with
# test_result_reset); its run is the harness's, so only sub-scripts keep pochta's limits.
_SUITE_LIMITS = SieveLimits(
    max_actions=10_000, max_redirects=10_000, max_run_seconds=3600.0, max_script_bytes=1 << 24
)


def _fail_rest(outcome: FileOutcome, done: list[BlockOutcome], reason: str) -> None:
    names_done = {b.name for b in done}
    outcome.blocks = list(done)
    outcome.blocks.extend(
        BlockOutcome(name, FAIL, reason) for name in outcome.file.blocks if name not in names_done
    )


def run_file(file: SvtestFile) -> FileOutcome:
    outcome = _run_file(file)
    if file.expect_failure and not file.skip:
        return _expecting_failure(outcome)
    return outcome


def _expecting_failure(outcome: FileOutcome) -> FileOutcome:
    """``testsuite -F`` (Pigeonhole src/testsuite/testsuite-common.c
    ``testsuite_testcase_result``): the file passes when its blocks failed, by test_fail or
    by a runtime error that aborted the script, and nothing crashed. A block that failed is
    then reported passed ("failed as expected"); one that passed, or any crash, fails."""
    crashed = outcome.file_error.startswith("crash")
    passed = [b.name for b in outcome.blocks if b.status == PASS]
    blocks: list[BlockOutcome] = []
    for block in outcome.blocks:
        if crashed:
            blocks.append(BlockOutcome(block.name, FAIL, f"-F: {outcome.file_error}"))
        elif block.status == PASS:
            blocks.append(
                BlockOutcome(block.name, FAIL, "-F: the block passed; failures/ expects it to fail")
            )
        elif passed:
            blocks.append(
                BlockOutcome(block.name, PASS, f"-F: failed as expected, but {passed} passed")
            )
        else:
            blocks.append(BlockOutcome(block.name, PASS, f"-F: failed as expected: {block.reason}"))
    outcome.blocks = blocks
    if not crashed:
        outcome.file_error = ""  # the failure was the expected outcome
    return outcome


def _run_file(file: SvtestFile) -> FileOutcome:
    outcome = FileOutcome(file)
    if file.skip:
        outcome.blocks = [BlockOutcome(name, SKIP, file.skip) for name in file.blocks]
        return outcome
    reg = testsuite.registry()
    suite = testsuite.Suite(directory=file.path.parent)
    try:
        script = compile_script(
            file.text, name=file.rel, limits=_SUITE_LIMITS, loader=suite.loader, registry=reg
        )
    except SieveError as e:
        outcome.file_error = f"does not compile: {e}"
        _fail_rest(outcome, [], f"the .svtest file does not compile: {e}")
        return outcome
    except Exception as e:  # a crash of the compiler: report it, the suite goes on
        outcome.file_error = f"crash while compiling: {type(e).__name__}: {e}"
        _fail_rest(outcome, [], outcome.file_error)
        return outcome
    token = testsuite.CURRENT.set(suite)
    try:
        run = Run(suite.context(), _SUITE_LIMITS, registry=reg)
        execute(run, script)
    except testsuite.TestFailed as e:
        outcome.file_error = f"test_fail outside a block: {e}"
    except testsuite.SkipBlock as e:
        outcome.file_error = f"outside a block: {e}"
    except SieveError as e:
        where = f"in block {suite.block!r}" if suite.block is not None else "outside a block"
        outcome.file_error = f"runtime error {where}: {e}"
        if suite.block is not None:
            suite.outcomes.append(BlockOutcome(suite.block, FAIL, f"runtime error: {e}"))
    except Exception as e:  # a crash of the interpreter or of a handler: report, go on
        where = f"in block {suite.block!r}" if suite.block is not None else "outside a block"
        outcome.file_error = f"crash {where}: {type(e).__name__}: {e}"
        if suite.block is not None:
            suite.outcomes.append(
                BlockOutcome(suite.block, FAIL, f"crash: {type(e).__name__}: {e}")
            )
    finally:
        testsuite.CURRENT.reset(token)
    if outcome.file_error:
        _fail_rest(outcome, suite.outcomes, f"not run: {outcome.file_error}")
    else:
        outcome.blocks = list(suite.outcomes)
        done = {b.name for b in suite.outcomes}
        outcome.blocks.extend(
            BlockOutcome(name, SKIP, "not reached: the script stopped before it")
            for name in file.blocks
            if name not in done
        )
    return outcome
