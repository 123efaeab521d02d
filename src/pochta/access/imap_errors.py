"""What an IMAP command handler raises to end a command or the session (RFC 9051 §7.1)."""

from __future__ import annotations

from pochta.store import FolderExists, NoSuchFolder, StoreError, StoreUnavailable


class Bad(Exception):
    """Answer the command with BAD (a protocol error: wrong state, wrong arguments)."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class No(Exception):
    """Answer the command with NO (refused or failed), with an optional response code."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class Closed(Exception):
    """The client went away (EOF) or the session ended."""


def store_code(exc: StoreError) -> str | None:
    """The response code (RFC 5530) of a NO caused by a store failure."""
    if isinstance(exc, NoSuchFolder):
        return "NONEXISTENT"
    if isinstance(exc, FolderExists):
        return "ALREADYEXISTS"
    if isinstance(exc, StoreUnavailable):
        return "UNAVAILABLE"
    return "CANNOT"
