"""Shared fixtures: a real `pochta` command in a fresh data directory (see tests/harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import PochtaEnv, make_pochta_env


@pytest.fixture
def pochta_env(tmp_path: Path) -> PochtaEnv:
    return make_pochta_env(tmp_path / "data")
