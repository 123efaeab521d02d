"""The queue's users ask the queue (queue/base.py ``MessageQueue``): they are typed against
the interface, not the filesystem ``Spool``, and no one outside queue/ computes a shard."""

from __future__ import annotations

import ast
from pathlib import Path

import pochta

SRC = Path(pochta.__file__).parent

# Modules that use a queue someone else built: they must not name the Spool class.
TYPED_AGAINST_THE_INTERFACE = (
    "queue/scheduler.py",
    "deliver/router.py",
    "deliver/notices.py",
)


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_users_are_typed_against_the_queue_interface() -> None:
    for rel in TYPED_AGAINST_THE_INTERFACE:
        names = _imported_names(SRC / rel)
        assert "pochta.queue.base.MessageQueue" in names, rel
        assert not {n for n in names if n.endswith(".Spool")}, rel


def test_only_the_queue_computes_shards() -> None:
    """queue_shard (the id's last digits) is the queue's; the server and the scheduler ask
    ``mine``, ``shard_of``, ``requeue_active_shard``."""
    users = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path.name not in ("envelope.py", "spool.py")
        and "pochta.queue.envelope.queue_shard" in _imported_names(path)
    ]
    assert users == []
