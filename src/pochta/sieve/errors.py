"""The errors of Sieve: a script that does not compile, and one that fails while running."""

from __future__ import annotations

__all__ = ["SieveError", "SieveRuntimeError"]


class SieveError(Exception):
    """A script that cannot be compiled: what is wrong, and where (1-based line and column;
    0 when the error is about the script as a whole, such as its size)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.errors: list[SieveError] = [self]  # every error the compiler found, this first

    def __str__(self) -> str:
        if self.line:
            return f"line {self.line}, column {self.column}: {self.message}"
        return self.message


class SieveRuntimeError(SieveError):
    """A script that failed while running (a limit reached, an include missing, a run out of
    time). RFC 5228 §2.10.6: the implicit keep is then carried out."""
