"""Run Dovecot's Pigeonhole test suite against pochta's Sieve interpreter.

    python -m tests.sieve.pigeonhole.run [DIR_OR_FILE...] [-v] [--update-expected]

DIR_OR_FILE is relative to the suite's ``tests/`` directory ($POCHTA_PIGEONHOLE_DIR, else
/work/shared/testdata/pigeonhole/tests); none means all of it. Prints, per directory, the
test blocks that passed, failed and were skipped, the reason for each skipped file, the
files that did not compile, and a total. ``-v`` lists every failed block with its reason.
``--update-expected`` rewrites ``expected.txt`` from this run (all directories only).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from tests.sieve.pigeonhole.harness import run_file
from tests.sieve.pigeonhole.layout import discover, suite_root
from tests.sieve.pigeonhole.outcome import (
    FAIL,
    PASS,
    SKIP,
    FileOutcome,
    read_expected,
    write_expected,
)

__all__ = ["main", "report"]


def report(outcomes: list[FileOutcome], *, verbose: bool = False) -> str:
    by_dir: dict[str, list[FileOutcome]] = defaultdict(list)
    for outcome in outcomes:
        by_dir[outcome.file.directory].append(outcome)
    width = max([len(d) for d in by_dir] + [len("directory")])
    lines = [f"{'directory':<{width}}  {'pass':>5} {'fail':>5} {'skip':>5}"]
    totals = {PASS: 0, FAIL: 0, SKIP: 0}
    for directory in sorted(by_dir):
        counts = {s: sum(o.count(s) for o in by_dir[directory]) for s in totals}
        for s in totals:
            totals[s] += counts[s]
        lines.append(f"{directory:<{width}}  {counts[PASS]:>5} {counts[FAIL]:>5} {counts[SKIP]:>5}")
    lines.append(f"{'total':<{width}}  {totals[PASS]:>5} {totals[FAIL]:>5} {totals[SKIP]:>5}")
    skipped = [o for o in outcomes if o.file.skip]
    if skipped:
        lines.append("")
        lines.append("skipped files:")
        lines.extend(f"  {o.file.rel}: {o.file.skip}" for o in skipped)
    broken = [o for o in outcomes if o.file_error]
    if broken:
        lines.append("")
        lines.append("files that failed as a whole (every block not yet passed counts failed):")
        lines.extend(f"  {o.file.rel}: {o.file_error}" for o in broken)
    skipped_blocks = [
        (o.file.rel, b) for o in outcomes if not o.file.skip for b in o.blocks if b.status == SKIP
    ]
    if skipped_blocks:
        lines.append("")
        lines.append("skipped blocks:")
        lines.extend(f"  {rel} / {b.name}: {b.reason}" for rel, b in skipped_blocks)
    if verbose:
        lines.append("")
        lines.append("failed blocks:")
        for o in outcomes:
            lines.extend(f"  {rel} / {name}: {reason}" for rel, name, reason in o.failed())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sieve.pigeonhole.run")
    parser.add_argument("paths", nargs="*", metavar="DIR_OR_FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="list failed blocks")
    parser.add_argument(
        "--update-expected",
        action="store_true",
        help="rewrite expected.txt with the blocks that fail now (needs the whole suite)",
    )
    args = parser.parse_args(argv)
    if args.update_expected and args.paths:
        parser.error("--update-expected runs the whole suite: give no paths")
    root = suite_root()
    outcomes = [run_file(f) for f in discover(root, args.paths or None)]
    print(report(outcomes, verbose=args.verbose))
    if args.update_expected:
        n = write_expected(outcomes, read_expected())
        print(f"\nexpected.txt: {n} blocks expected to fail")
    return 1 if any(o.count(FAIL) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
