"""Open the directory backend named by the settings (``[directory] backend``)."""

from __future__ import annotations

from pochta.config.settings import Settings
from pochta.directory.base import Directory, DirectoryError


def open_directory(settings: Settings) -> Directory:
    """The configured backend, opened (and its schema created or migrated)."""
    backend = settings.directory.backend
    if backend == "sqlite":
        from pochta.directory.sqlite import SqliteDirectory

        return SqliteDirectory(settings.directory_db)
    raise DirectoryError(  # pragma: no cover - the settings type admits only "sqlite" today
        f'unknown directory backend {backend!r}; set [directory] backend = "sqlite"'
    )
