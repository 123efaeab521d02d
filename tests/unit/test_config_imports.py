"""config/ is the kernel: it imports only itself (and the stdlib and third-party packages).

Every import statement of every module under src/pochta/config/ is read with ``ast``, those
inside functions too (a late import is still a dependency), so an arrow pointing up from the
kernel into directory/, dns/, resolve/, tables/, server/ ... fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pochta.config

CONFIG_DIR = Path(pochta.config.__file__).parent


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import in the file; relative imports resolved to pochta.config."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .load import y: inside config/
                found.append((node.lineno, ".".join(filter(None, ["pochta.config", node.module]))))
            elif node.module == "pochta":  # from pochta import x: x is the module
                found.extend((node.lineno, f"pochta.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _allowed(module: str) -> bool:
    if module == "pochta" or not module.startswith("pochta."):
        return module != "pochta"  # stdlib and third party; bare `pochta` is the whole tree
    return module == "pochta.config" or module.startswith(("pochta.config.", "pochta.logs"))


def test_config_imports_only_config() -> None:
    files = sorted(CONFIG_DIR.glob("*.py"))
    assert len(files) >= 5, files  # the walk found the package
    wrong = [
        f"{path.relative_to(CONFIG_DIR.parent)}:{line} imports {module}"
        for path in files
        for line, module in _imports(path)
        if not _allowed(module)
    ]
    assert wrong == [], "config/ must import only pochta.config.*:\n" + "\n".join(wrong)


def test_config_load_does_not_import_check() -> None:
    """The loader checks syntax, types and ranges; the checks of meaning run after it."""
    modules = {module for _, module in _imports(CONFIG_DIR / "load.py")}
    assert not {m for m in modules if m.startswith("pochta.config.check")}, modules


def test_the_walk_finds_late_and_relative_imports(tmp_path: Path) -> None:
    """A test that could not fail is a defect: the walk sees what check.py used to do."""
    module = tmp_path / "m.py"
    module.write_text(
        "from pochta.config.load import Problem\n"
        "from . import settings\n"
        "from pochta import tables\n"
        "def f():\n"
        "    from pochta.dns.records import parse_nameserver\n"
    )
    found = [m for _, m in _imports(module)]
    assert found == [
        "pochta.config.load",
        "pochta.config",
        "pochta.tables",
        "pochta.dns.records",
    ]
    assert [m for m in found if not _allowed(m)] == ["pochta.tables", "pochta.dns.records"]
