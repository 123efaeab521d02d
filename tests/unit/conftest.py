"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pochta.queue.spool import Spool


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    """An empty spool in the test's own directory."""
    s = Spool(tmp_path / "queue")
    yield s
    s.close()
