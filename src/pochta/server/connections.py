"""A count of open connections per key (client IP, account) with a limit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class OpenCounts:
    """Open connections (or sessions) per key."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def get_count(self, key: str) -> int:
        return self.counts.get(key, 0)

    def full(self, key: str, limit: int) -> bool:
        return self.counts.get(key, 0) >= limit

    def add(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def remove(self, key: str) -> None:
        self.counts[key] -= 1
        if not self.counts[key]:
            del self.counts[key]

    @contextlib.contextmanager
    def holding(self, key: str) -> Iterator[None]:
        self.add(key)
        try:
            yield
        finally:
            self.remove(key)
