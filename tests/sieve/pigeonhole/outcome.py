"""What running the suite gives: per block pass/fail/skip, per file, and the expected
failures kept in ``expected.txt``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.sieve.pigeonhole.layout import SvtestFile

__all__ = [
    "EXPECTED_PATH",
    "BlockOutcome",
    "Expected",
    "FileOutcome",
    "read_expected",
    "write_expected",
]

EXPECTED_PATH = Path(__file__).with_name("expected.txt")

PASS = "pass"
FAIL = "fail"
SKIP = "skip"


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    name: str
    status: str  # PASS, FAIL or SKIP
    reason: str = ""  # why it failed (the test_fail text or the error) or was skipped


@dataclass(slots=True)
class FileOutcome:
    file: SvtestFile
    blocks: list[BlockOutcome] = field(default_factory=list)
    # The .svtest file itself did not compile (every block then fails), or the run
    # failed outside a block: the message, listed in the report.
    file_error: str = ""

    def count(self, status: str) -> int:
        return sum(1 for b in self.blocks if b.status == status)

    def failed(self) -> list[tuple[str, str, str]]:
        return [(self.file.rel, b.name, b.reason) for b in self.blocks if b.status == FAIL]


@dataclass(frozen=True, slots=True)
class Expected:
    """One block expected to fail today, with a one-line reason."""

    rel: str
    block: str
    reason: str


_HEADER = """\
# Pigeonhole test blocks expected to FAIL today, one per line: file<TAB>block<TAB>reason.
# tests/sieve/test_pigeonhole.py fails when a block fails that is not listed here, and when a
# listed block passes (delete its line: the interpreter has grown). Rewrite the whole list
# with `python -m tests.sieve.pigeonhole.run --update-expected`, which keeps the reasons of
# lines that stay (not the automatic "needs extension" ones); new lines get a reason made from
# the failure (extension not built yet, Dovecot's error count or wording, else the failure
# message), to be edited by hand.
"""


def read_expected(path: Path = EXPECTED_PATH) -> dict[tuple[str, str], Expected]:
    out: dict[tuple[str, str], Expected] = {}
    if not path.exists():
        return out
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: want file<TAB>block<TAB>reason, got {line!r}")
        rel, block, reason = parts
        out[(rel, block)] = Expected(rel, block, reason)
    return out


# "error N is invalid": test_error :index N :matches "<Dovecot's text>" did not match ours.
_ERROR_TEXT = re.compile(r"error \d+ is invalid")
_UNSUPPORTED = re.compile(r"unsupported extension '([^']+)'")
# test_fail texts of blocks that check Dovecot's own error messages or their number.
_DOVECOT_ERRORS = (
    "wrong number of errors",
    "too many",
    "unexpected error",
    "error not reported",
    "errors reported",
)


def _one_line(text: str) -> str:
    """A first reason for a new line of expected.txt (to be refined by hand)."""
    m = _UNSUPPORTED.search(text)
    if m:
        return f"needs extension {m.group(1)}, not built yet"
    lowered = text.lower()
    if text.startswith("test_fail") and (
        any(k in lowered for k in _DOVECOT_ERRORS) or _ERROR_TEXT.search(lowered)
    ):
        return "asserts Dovecot's error count or wording: " + " ".join(text.split())[:150]
    return " ".join(text.split())[:200] or "failed"


def write_expected(
    outcomes: Iterable[FileOutcome],
    old: dict[tuple[str, str], Expected],
    path: Path = EXPECTED_PATH,
) -> int:
    """Rewrite ``path`` with the blocks that fail now; returns how many."""
    lines = []
    for outcome in outcomes:
        for rel, block, reason in outcome.failed():
            kept = old.get((rel, block))
            text = _one_line(reason)
            # A hand-written reason stays; an automatic "needs extension" one is redone, as
            # the extension may have come and the block fail for another reason now.
            if kept and not kept.reason.startswith("needs extension "):
                text = kept.reason
            lines.append(f"{rel}\t{block}\t{text}")
    path.write_text(_HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)
