"""Shared fixtures: a real `pochta` command in a fresh data directory (see tests/harness.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.harness import PochtaEnv, make_pochta_env


@pytest.fixture
def pochta_env(tmp_path: Path) -> PochtaEnv:
    return make_pochta_env(tmp_path / "data")


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A command run in this process (click's CliRunner) configures logging for itself
    (``pochta.logs.configure_logging``: level warning, its own stream); put back what was
    there, so the tests after it still see the events they wait for."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)
