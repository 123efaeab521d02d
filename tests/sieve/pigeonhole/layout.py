"""The Pigeonhole suite on disk: its ``.svtest`` files, their ``test`` blocks, and which
files this harness skips and why.

The suite's own README (``/work/shared/testdata/pigeonhole/README.md``) describes the layout.
A file is skipped as a whole only when none of its blocks could mean anything here: it
needs a Dovecot-only extension, an extension outside issue 16's list, or files that were not
copied. ``failures/`` runs in upstream's ``-F`` mode (``SvtestFile.expect_failure``).
Blocks that need one Dovecot setting this harness cannot map are skipped one by one while
the file runs (see ``testsuite.SkipBlock``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_ROOT",
    "SvtestFile",
    "discover",
    "load",
    "suite_root",
]

DEFAULT_ROOT = Path("/work/shared/testdata/pigeonhole/tests")


def suite_root() -> Path:
    """The suite's ``tests/`` directory: ``$POCHTA_PIGEONHOLE_DIR`` or the shared copy."""
    return Path(os.environ.get("POCHTA_PIGEONHOLE_DIR", str(DEFAULT_ROOT)))


# The extensions issue 16 asks for (sieve16.md's list), plus the two the testsuite needs
# everywhere and the testsuite itself.
IN_SCOPE = frozenset(
    {
        "fileinto",
        "reject",
        "ereject",
        "envelope",
        "body",
        "variables",
        "imap4flags",
        "vacation",
        "vacation-seconds",
        "relational",
        "subaddress",
        "copy",
        "include",
        "date",
        "index",
        "regex",
        "editheader",
        "duplicate",
        "spamtest",
        "spamtestplus",
        "virustest",
        "mailbox",
        "environment",
        "ihave",
        "encoded-character",
        "comparator-i;octet",
        "comparator-i;ascii-casemap",
        "comparator-i;ascii-numeric",
        "comparator-i;unicode-casemap",
        "vnd.dovecot.testsuite",
        # mailbox/errors.svtest requires it and never calls debug_log: a no-op require.
        "vnd.dovecot.debug",
    }
)

# Files skipped whatever they require: (path prefix relative to the suite root, reason).
_PATH_SKIPS: tuple[tuple[str, str], ...] = (
    ("execute/examples.svtest", "examples: needs ../../examples/*.sieve, not copied"),
    # Its script needs mime/foreverypart; and Python's re cannot be interrupted by
    # max_run_seconds inside one catastrophic match, so running it could hang the suite.
    (
        "execute/errors-cpu-limit.svtest",
        "extensions mime/foreverypart are not in issue 16's list (and a catastrophic regex)",
    ),
    ("extensions/variables/limits.svtest", "not run upstream (absent from Makefile.am)"),
    ("plugins/", "Dovecot-only extension vnd.dovecot.pipe/filter/execute (helpers not copied)"),
    ("extensions/vnd.dovecot/", "Dovecot-only extension vnd.dovecot.*"),
    # Whole directories of extensions outside issue 16's list: their errors.svtest files
    # compile sub-scripts that require them, so the top-level requires do not show it.
    ("extensions/extlists/", "extension extlists is not in issue 16's list"),
    ("extensions/enotify/", "extension enotify is not in issue 16's list"),
    ("extensions/mime/", "extensions mime/foreverypart/extracttext are not in issue 16's list"),
    ("extensions/metadata/", "extensions mboxmetadata/servermetadata are not in issue 16's list"),
    ("extensions/special-use/", "extension special-use is not in issue 16's list"),
)


@dataclass(frozen=True, slots=True)
class SvtestFile:
    """One test file: its path, text, the names of its ``test`` blocks (repeated names get
    ``#2``, ``#3``), what it requires at top level, and why it is skipped (or "")."""

    path: Path
    rel: str  # relative to the suite root, "/" separated
    text: str
    blocks: tuple[str, ...]
    requires: frozenset[str]
    skip: str

    @property
    def expect_failure(self) -> bool:
        """Upstream runs ``failures/`` with ``testsuite -F``: the file passes when every
        block fails and nothing crashes (the suite's README)."""
        return self.rel.startswith("failures/")

    @property
    def directory(self) -> str:
        """The directory the report groups this file under ("." for the top level)."""
        parent = os.path.dirname(self.rel)
        return parent or "."


# A reduced Sieve tokenizer (RFC 5228 §8.1), enough to find blocks and requires without
# the interpreter: comments and strings are skipped so a "test" inside them is not a block.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*.*?\*/)
  | (?P<text>text:[ \t]*(?:\#[^\n]*)?\r?\n(?P<body>.*?)^\.\r?$)
  | (?P<quoted>"(?:[^"\\]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        if kind == "body":  # lastgroup names the innermost group that matched
            kind = "text"
        if kind in ("space", "hash", "bracket"):
            continue
        value = m.group(0)
        if kind == "quoted":
            # RFC 5228 §2.4.2: \\ and \" stand for themselves, other backslashes vanish.
            value = re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)
        yield kind, value


def _scan(text: str) -> tuple[tuple[str, ...], frozenset[str]]:
    tokens = list(_tokens(text))
    blocks: list[str] = []
    seen: dict[str, int] = {}
    requires: set[str] = set()
    depth = 0
    for i, (kind, value) in enumerate(tokens):
        if kind == "other" and value == "{":
            depth += 1
        elif kind == "other" and value == "}":
            depth -= 1
        elif kind != "ident":
            continue
        elif (
            value == "test"
            and i + 2 < len(tokens)
            and tokens[i + 1][0] == "quoted"
            and tokens[i + 2] == ("other", "{")
        ):
            name = tokens[i + 1][1]
            seen[name] = seen.get(name, 0) + 1
            blocks.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        elif value == "require" and depth == 0:
            for kind2, value2 in tokens[i + 1 :]:
                if kind2 == "quoted":
                    requires.add(value2)
                elif value2 == ";":
                    break
    return tuple(blocks), frozenset(requires)


def _skip_reason(rel: str, requires: frozenset[str]) -> str:
    for prefix, reason in _PATH_SKIPS:
        if rel.startswith(prefix):
            return reason
    for name in sorted(requires - IN_SCOPE):
        if name.startswith("vnd.dovecot."):
            return f"Dovecot-only extension {name}"
        return f"extension {name} is not in issue 16's list"
    return ""


def _generated_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.name.endswith(".svtest.in"):
        # Upstream generates test-address.svtest with sed: `s/#UTF8#//` when the server
        # takes RFC 6532 UTF-8 addresses in headers. pochta does (SMTPUTF8).
        text = text.replace("#UTF8#", "")
    return text


def load(path: Path, root: Path) -> SvtestFile:
    text = _generated_text(path)
    rel = path.relative_to(root).as_posix()
    if rel.endswith(".in"):
        rel = rel[: -len(".in")]
    blocks, requires = _scan(text)
    return SvtestFile(
        path=path,
        rel=rel,
        text=text,
        blocks=blocks,
        requires=requires,
        skip=_skip_reason(rel, requires),
    )


def discover(root: Path, dirs: list[str] | None = None) -> list[SvtestFile]:
    """Every ``.svtest`` (and ``.svtest.in``) file under ``root``, or under the given
    directories of it (paths relative to ``root`` or absolute), sorted by path."""
    starts = (
        [root] if not dirs else [(root / d) if not Path(d).is_absolute() else Path(d) for d in dirs]
    )
    found: dict[Path, SvtestFile] = {}
    for start in starts:
        if start.is_file():
            candidates = [start]
        elif start.is_dir():
            candidates = [*start.rglob("*.svtest"), *start.rglob("*.svtest.in")]
        else:
            raise FileNotFoundError(f"{start}: no such test file or directory under {root}")
        for path in candidates:
            found[path] = load(path, root)
    return [found[p] for p in sorted(found, key=lambda p: found[p].rel)]
