"""The import rules of ARCHITECTURE.md, read from the source (ast), not from what happens to
be loaded: every ``import`` and ``from`` counts, including those under TYPE_CHECKING and
inside functions.

- No session package (``access``, ``receive``, ``web``, ``protocols``) imports
  ``pochta.server``: the sessions get the running parts through ``pochta.runtime``, and
  ``server/`` (which imports them) builds them, so there is no cycle.
- ``pochta.runtime`` imports nothing of pochta at run time (only under TYPE_CHECKING).
- Along the mail flow (receive, cleanup, queue, resolve, deliver, store, access) a stage
  imports the stages before it freely; from a stage after it, only the data types and
  interfaces (``DOWNSTREAM_INTERFACES``), never an implementation.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import pochta

SRC = Path(pochta.__file__).parent
SESSION_PACKAGES = ("access", "receive", "web", "protocols")


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, src: Path = SRC) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, under TYPE_CHECKING) of every import in ``path`` (the package
    ``src``); relative imports resolved against the module's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path, src)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for inner in node.body:
                checking.update(id(n) for n in ast.walk(inner))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, id(node) in checking
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base, id(node) in checking
            # ``from pochta import server`` imports the package pochta.server.
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}", id(node) in checking


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _session_files() -> list[Path]:
    return sorted(p for name in SESSION_PACKAGES for p in (SRC / name).rglob("*.py"))


def test_session_packages_exist() -> None:
    """The walk below sees every session package (a rename would make it pass vacuously)."""
    files = _session_files()
    for name in SESSION_PACKAGES:
        assert any(p.is_relative_to(SRC / name) for p in files), name
    assert SRC / "access" / "imap.py" in files
    assert SRC / "receive" / "smtp_service.py" in files


def test_sessions_do_not_import_the_server() -> None:
    found: dict[tuple[str, int], str] = {}
    for path in _session_files():
        for line, module, _ in _imports(path):
            key = (_module_name(path), line)
            if _is_within(module, "pochta.server") and len(module) < len(
                found.get(key, module + "_")
            ):
                found[key] = module  # one per line: the module, not also its names
    offenders = [
        f"{name} line {line}: imports {module}" for (name, line), module in sorted(found.items())
    ]
    assert not offenders, (
        "session packages must not import pochta.server; type against pochta.runtime "
        "instead:\n" + "\n".join(offenders)
    )


def test_runtime_imports_nothing_of_pochta_at_run_time() -> None:
    path = SRC / "runtime.py"
    assert path.is_file(), "src/pochta/runtime.py (the sessions' runtime interface) is missing"
    offenders = [
        f"pochta.runtime line {line}: imports {module} outside TYPE_CHECKING"
        for line, module, checking in _imports(path)
        if _is_within(module, "pochta") and not checking
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import pochta.server.app\n", True),
        ("from pochta.server import app\n", True),
        ("from pochta import server\n", True),
        ("def f():\n    from pochta.server.mail import MailSystem\n", True),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pochta.server\n", True),
        ("from ..server import app\n", True),
        ("from pochta.serverless import x\n", False),
        ("from pochta.runtime import Runtime\n", False),
    ],
)
def test_the_walk_finds_every_kind_of_import(tmp_path: Path, source: str, found: bool) -> None:
    """The checker itself: each way of writing an import is seen (a check that cannot fail
    is no check)."""
    package = tmp_path / "pochta" / "access"
    package.mkdir(parents=True)
    path = package / "probe.py"
    path.write_text(source)
    hits = [m for _, m, _ in _imports(path, tmp_path / "pochta") if _is_within(m, "pochta.server")]
    assert bool(hits) is found


# The flow of ARCHITECTURE.md's diagram, and what an earlier stage may take from a later one.
STAGES = ("receive", "cleanup", "queue", "resolve", "deliver", "store", "access")
DOWNSTREAM_INTERFACES = frozenset(
    {
        "pochta.cleanup.pipeline",  # CleanupInput / CleanupResult, the door's argument types
        "pochta.cleanup.door",  # the one way into the queue
        "pochta.cleanup.verdict",
        "pochta.queue.envelope",
        "pochta.queue.base",  # MessageQueue, its errors and the free-space rule
        "pochta.resolve.classes",  # destinations and resolutions
        "pochta.store.base",  # MailStore
    }
)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pochta" and parts[1] in STAGES else None


def test_stages_take_only_interfaces_from_later_stages() -> None:
    offenders = []
    for stage in STAGES:
        for path in sorted((SRC / stage).rglob("*.py")):
            for line, module, _checking in _imports(path):
                target = _stage(module)
                if target is None or STAGES.index(target) <= STAGES.index(stage):
                    continue
                if not any(_is_within(module, allowed) for allowed in DOWNSTREAM_INTERFACES):
                    if module.rpartition(".")[0] in DOWNSTREAM_INTERFACES:
                        continue  # ``from pochta.queue.base import X`` also yields base.X
                    offenders.append(f"{_module_name(path)}:{line} imports {module}")
    assert offenders == []


def test_only_the_door_enqueues() -> None:
    """ARCHITECTURE.md: every message enters the queue through ``cleanup/door.py``; nothing
    else in pochta calls a queue's ``enqueue`` (the queue package implements it)."""
    callers = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if module == "pochta.cleanup.door" or _is_within(module, "pochta.queue"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "enqueue"
            ):
                callers.append(f"{module}:{node.lineno}")
    assert callers == []
