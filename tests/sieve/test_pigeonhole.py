"""Dovecot's Pigeonhole Sieve test suite against pochta's interpreter.

One test per directory of the suite (files skipped as a whole — Dovecot-only extensions,
extensions outside issue 16, files not copied — are not run; failures/ runs in -F mode).
A directory's test fails when a block fails that ``pigeonhole/expected.txt`` does not list,
and when a listed block passes: the list must shrink as the interpreter grows
(``python -m tests.sieve.pigeonhole.run --update-expected``).
"""

from __future__ import annotations

import pytest

from tests.sieve.pigeonhole.layout import discover, suite_root
from tests.sieve.pigeonhole.outcome import FAIL, PASS, read_expected

_ROOT = suite_root()
_FILES = discover(_ROOT) if _ROOT.is_dir() else []
_DIRS = sorted({f.directory for f in _FILES if not f.skip})


def test_suite_is_there() -> None:
    assert _ROOT.is_dir(), f"Pigeonhole suite not found at {_ROOT} (set POCHTA_PIGEONHOLE_DIR)"
    # The README's 700 `test` blocks (a grep), less the two commented out in
    # enotify/execute.svtest, plus failures/fuzz3.svtest's `test""` that grep missed.
    assert sum(len(f.blocks) for f in _FILES) == 699


def test_expected_lists_only_known_blocks() -> None:
    known = {(f.rel, b) for f in _FILES for b in f.blocks}
    stale = [key for key in read_expected() if key not in known]
    assert not stale, f"expected.txt names blocks that do not exist: {stale}"


@pytest.mark.parametrize("directory", _DIRS)
def test_directory(directory: str) -> None:
    from tests.sieve.pigeonhole.harness import run_file

    expected = read_expected()
    unexpected_fail: list[str] = []
    unexpected_pass: list[str] = []
    for f in _FILES:
        if f.directory != directory or f.skip:
            continue
        outcome = run_file(f)
        for block in outcome.blocks:
            listed = (f.rel, block.name) in expected
            if block.status == FAIL and not listed:
                unexpected_fail.append(f"{f.rel} / {block.name}: {block.reason}")
            elif block.status == PASS and listed:
                unexpected_pass.append(f"{f.rel} / {block.name}")
    message = []
    if unexpected_fail:
        message.append("failed, not in expected.txt:\n  " + "\n  ".join(unexpected_fail))
    if unexpected_pass:
        passing = "\n  ".join(unexpected_pass)
        message.append(f"now passes; take it out of expected.txt:\n  {passing}")
    assert not message, "\n".join(message)
