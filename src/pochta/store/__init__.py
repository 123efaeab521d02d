"""The mailbox store: where delivered mail lives and what IMAP and POP3 read.

``base.py`` is the interface every backend implements; ``maildir.py`` + ``index.py`` the
embedded backend (Maildir++ files, one SQLite index per account); ``quota.py`` the quota
decision shared by SMTP, delivery and IMAP. ``open_store(settings)`` opens the configured one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pochta.store.base import (
    CHANGE_ORIGIN,
    HIERARCHY_SEPARATOR,
    INBOX,
    SPECIAL_FOLDERS,
    ChangeKind,
    CopyResult,
    Delivered,
    FlagMode,
    FlagUpdate,
    FolderChanges,
    FolderExists,
    FolderInfo,
    FolderStatus,
    MaildirMaintenance,
    MailStore,
    MessageInfo,
    NoSuchFolder,
    NoSuchMessage,
    ReindexReport,
    StoreError,
    StoreFlagsResult,
    StoreUnavailable,
    SyncReport,
    TextExtractor,
    WouldBlock,
)
from pochta.store.quota import QuotaCheck, QuotaUsage

if TYPE_CHECKING:
    from pochta.config.settings import Settings

__all__ = [
    "CHANGE_ORIGIN",
    "HIERARCHY_SEPARATOR",
    "INBOX",
    "SPECIAL_FOLDERS",
    "ChangeKind",
    "CopyResult",
    "Delivered",
    "FlagMode",
    "FlagUpdate",
    "FolderChanges",
    "FolderExists",
    "FolderInfo",
    "FolderStatus",
    "MailStore",
    "MaildirMaintenance",
    "MessageInfo",
    "NoSuchFolder",
    "NoSuchMessage",
    "QuotaCheck",
    "QuotaUsage",
    "ReindexReport",
    "StoreError",
    "StoreFlagsResult",
    "StoreUnavailable",
    "SyncReport",
    "TextExtractor",
    "WouldBlock",
    "open_store",
]


def open_store(
    settings: Settings,
    *,
    text_extractor: TextExtractor | None = None,
    index_at_delivery: bool = True,
) -> MailStore:
    """The backend named by ``[store] backend``, rooted at ``Settings.mail_dir``."""
    backend = settings.store.backend
    if backend == "maildir":
        from pochta.store.maildir import MaildirStore

        return MaildirStore(
            settings.mail_dir,
            hostname=settings.server.hostname,
            text_extractor=text_extractor,
            index_at_delivery=index_at_delivery,
        )
    raise StoreError(  # pragma: no cover - the settings type admits only "maildir" today
        f'unknown store backend {backend!r}; set [store] backend = "maildir"'
    )
