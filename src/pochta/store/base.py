"""The mailbox store interface: what every backend (Maildir + SQLite now, PostgreSQL + S3
later) provides to the delivery agent, IMAP, POP3 and the CLI.

Words are IMAP's (RFC 9051, RFC 3501): a *folder* is an IMAP mailbox, named in Unicode with
``"."`` as the hierarchy separator (``"Archive.2026"``); ``"INBOX"`` is case-insensitive
(RFC 3501 §5.1). Flags are IMAP flag names: the system flags ``\\Seen \\Answered \\Flagged
\\Deleted \\Draft`` and keywords (``$Forwarded``, ``$Junk``, ...). Sizes are RFC 5322 octets
with CRLF line ends (RFC822.SIZE). ``message`` bytes go in and come out with CRLF line ends.

Every method is synchronous and may block on disk; asyncio callers wrap them in
``asyncio.to_thread``, except ``changes_if_cached``, which never blocks. Failures are raised
as :class:`StoreError`: :class:`StoreUnavailable` when the disk or the index failed
(temporary: retry later), its other subclasses and StoreError itself when the request is
refused. A backend is safe to call from many threads at once. Addresses are normalised
(lower-case ``local@domain``) by the caller (``pochta.directory.addresses``).
"""

from __future__ import annotations

import abc
import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pochta.store.quota import QuotaCheck, QuotaUsage, evaluate_quota

__all__ = [
    "CHANGE_ORIGIN",
    "HIERARCHY_SEPARATOR",
    "INBOX",
    "SPECIAL_FOLDERS",
    "SPECIAL_USE_ROLES",
    "SYSTEM_FLAGS",
    "ChangeKind",
    "ChangeListener",
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
    "StoreFull",
    "StoreUnavailable",
    "SyncReport",
    "TextExtractor",
]

log = logging.getLogger("pochta.store")

INBOX = "INBOX"
HIERARCHY_SEPARATOR = "."

# RFC 3501 §2.3.2 system flags that a client may set (\Recent is per session, not stored).
SYSTEM_FLAGS: tuple[str, ...] = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")

# RFC 6154 §2 special-use attributes a folder may carry.
SPECIAL_USE_ROLES: frozenset[str] = frozenset(
    {"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"}
)

# Created with every mailbox (RFC 6154 roles recorded in the index), like Dovecot's
# `auto = subscribe` special-use mailboxes.
SPECIAL_FOLDERS: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Archive": "\\Archive",
}


class StoreError(Exception):
    """A request the store refuses or cannot carry out; the message says why."""


class StoreUnavailable(StoreError):
    """The store could not do it now (disk, permissions, a damaged or busy index): nothing was
    changed, try again later (SMTP 451 4.3.0, IMAP NO [UNAVAILABLE])."""


class StoreFull(StoreUnavailable):
    """The disk (or the disk quota) of the store is full: nothing new can be written, what is
    there can still be read (SMTP 452 4.3.1, RFC 3463 "mail system full")."""


class WouldBlock(StoreError):
    """A ``quick`` call needs disk work first (opening an account, a rescan): make it again
    from a thread."""


class NoSuchFolder(StoreError):
    """The folder does not exist (IMAP: NO [NONEXISTENT], or [TRYCREATE] for COPY/APPEND)."""


class FolderExists(StoreError):
    """CREATE or RENAME onto a name that is taken (IMAP: NO [ALREADYEXISTS])."""


class NoSuchMessage(StoreError):
    """No message with that UID in the folder (it was expunged)."""


class FlagMode(StrEnum):
    """How STORE applies its flag list (RFC 3501 §6.4.6: +FLAGS, -FLAGS, FLAGS)."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


class ChangeKind(StrEnum):
    """What changed, for IMAP IDLE (RFC 2177) and NOTIFY listeners."""

    NEW = "new"  # messages arrived (delivery, APPEND, COPY, MOVE target)
    FLAGS = "flags"
    EXPUNGE = "expunge"  # messages left (EXPUNGE, MOVE source, vanished files)
    FOLDERS = "folders"  # created, deleted, renamed, (un)subscribed


ChangeListener = Callable[[str, str, ChangeKind], None]

# Who makes a change: an IMAP session sets a token of its own here for everything it does
# (``asyncio.to_thread`` carries it into the store's threads). While the listeners run it
# holds the token of whoever made the change being notified, or None when several did or
# nobody said (a delivery, a rescan, a flush). A session that reports its own STOREs and
# EXPUNGEs needs no wake-up for them (``access/change_hub.py``).
CHANGE_ORIGIN: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "pochta_change_origin", default=None
)


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where a delivered or appended message went. ``uidvalidity`` and ``uid`` are the
    APPENDUID response code (RFC 4315 §3). ``duplicate``: the dedupe key was already there and
    nothing was written; the fields describe the message delivered earlier."""

    folder: str
    uid: int
    uidvalidity: int
    size: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class FolderInfo:
    name: str
    special_use: str | None  # RFC 6154 attribute, e.g. "\\Sent"
    uidvalidity: int
    uidnext: int
    messages: int
    unseen: int
    highestmodseq: int  # RFC 7162 §3.1.1
    subscribed: bool
    size: int  # octets (CRLF) of all messages: RFC 8438 STATUS=SIZE


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """One folder's counts for IMAP STATUS (RFC 9051 §6.3.11), read at once."""

    folder: FolderInfo
    deleted: int  # messages flagged \\Deleted (STATUS DELETED)
    recent: int  # messages above the \\Recent claim (RFC 3501 §6.3.10 STATUS RECENT)


@dataclass(frozen=True, slots=True)
class MessageInfo:
    uid: int
    flags: frozenset[str]  # system flags, e.g. {"\\Seen", "\\Flagged"}
    keywords: frozenset[str]  # e.g. {"$Forwarded"}
    internal_date: float  # unix seconds (RFC 3501 §2.3.3 INTERNALDATE)
    size: int  # RFC822.SIZE, octets with CRLF
    modseq: int  # RFC 7162 §3.1.1


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What changed in a folder after a MODSEQ (RFC 7162 CHANGEDSINCE / QRESYNC, and the
    IMAP session's view refresh): messages whose MODSEQ is higher (new ones included), and
    UIDs expunged with a higher MODSEQ. ``complete`` is False when the expunge record does not
    reach back that far (the caller then compares full UID lists)."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    changed: tuple[MessageInfo, ...]
    vanished: tuple[int, ...]
    complete: bool
    # Every keyword ever set in the folder, also those no message carries now (IMAP FLAGS).
    keywords: tuple[str, ...] = ()


# Turns a stored message into the text full-text search looks at: (headers, body), decoded.
TextExtractor = Callable[[bytes], tuple[str, str]]


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """A message whose flags STORE changed, with its new MODSEQ (for the untagged FETCH)."""

    uid: int
    modseq: int
    flags: frozenset[str]
    keywords: frozenset[str]


@dataclass(frozen=True, slots=True)
class StoreFlagsResult:
    updated: tuple[FlagUpdate, ...]
    # RFC 7162 §3.1.3: UIDs whose MODSEQ was above UNCHANGEDSINCE and were left alone
    # (the MODIFIED response code).
    failed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class CopyResult:
    """RFC 4315 §3 COPYUID: the target's UIDVALIDITY and (source uid, target uid) pairs in
    ascending source order. UIDs that no longer existed are left out."""

    uidvalidity: int
    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What a rescan of a folder found on disk that the index did not know."""

    folder: str
    adopted: int = 0  # files added to the index (crash leftovers, files dropped in by hand)
    vanished: int = 0  # index rows whose file was gone: recorded as expunged
    flags_changed: int = 0  # files renamed by another program (mutt marking a message read)


@dataclass(frozen=True, slots=True)
class ReindexReport:
    folders: int
    messages: int
    kept_uids: int  # messages that kept their UID (from the uidlist or the old index)
    new_uids: int  # messages that got a new UID
    new_uidvalidity: tuple[str, ...]  # folders whose UIDVALIDITY changed (clients resync)
    notes: tuple[str, ...] = ()


class MailStore(abc.ABC):
    """Mailboxes of all accounts. See the module docstring for names, flags and sizes."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._listeners_lock = threading.Lock()

    # -- change notification (IMAP IDLE) --

    def subscribe_changes(self, callback: ChangeListener) -> Callable[[], None]:
        """Call ``callback(address, folder, kind)`` after each committed change, from the
        thread that made it. Returns a function that removes the listener."""
        with self._listeners_lock:
            self._listeners = [*self._listeners, callback]

        def remove() -> None:
            with self._listeners_lock:
                self._listeners = [c for c in self._listeners if c is not callback]

        return remove

    def _notify(
        self, address: str, folder: str, kind: ChangeKind, origin: object | None = None
    ) -> None:
        """Call the listeners with CHANGE_ORIGIN set to ``origin``: who made the change
        (None: unknown, or more than one)."""
        token = CHANGE_ORIGIN.set(origin)
        try:
            for callback in self._listeners:  # a copy-on-write list: no lock needed to read
                try:
                    callback(address, folder, kind)
                except Exception:
                    log.exception("store change listener failed")
        finally:
            CHANGE_ORIGIN.reset(token)

    # -- changes made on an event loop --

    def quick_writes_pending(self, address: str) -> bool:
        """Whether changes that ``quick`` calls (STORE, EXPUNGE) made for the account wait
        for ``sync_quick_writes`` to be durable: cheap, for an event loop."""
        return False

    def sync_quick_writes(self, address: str) -> None:
        """Make the account's ``quick`` changes durable (an fsync: call it from a thread).
        A caller answers a client only after it. Backends whose quick calls never write
        have nothing to do."""
        return None

    # -- delivery --

    @abc.abstractmethod
    def deliver(
        self,
        address: str,
        message: bytes,
        *,
        folder: str = INBOX,
        flags: frozenset[str] = frozenset(),
        internal_date: float | None = None,
        dedupe_key: str | None = None,
    ) -> Delivered:
        """Store ``message`` durably (file and index on disk) before returning.

        The folder is created if missing (with its RFC 6154 role for the special names).
        ``dedupe_key`` (queue id + recipient) makes delivery idempotent: when a message with
        that key is already in the account, nothing is written and the earlier message is
        returned with ``duplicate=True``.
        """

    def append(
        self,
        address: str,
        folder: str,
        message: bytes,
        *,
        flags: frozenset[str] = frozenset(),
        internal_date: float | None = None,
    ) -> Delivered:
        """IMAP APPEND (RFC 3501 §6.3.11): the folder must exist (else NoSuchFolder, which
        IMAP answers with [TRYCREATE]). The result carries APPENDUID (RFC 4315 §3)."""
        if not any(f.name == folder for f in self.list_folders(address)) and (
            folder.upper() != INBOX
        ):
            raise NoSuchFolder(f"no folder {folder!r}")
        return self.deliver(
            address, message, folder=folder, flags=flags, internal_date=internal_date
        )

    # -- quota --

    @abc.abstractmethod
    def quota_usage(self, address: str) -> QuotaUsage: ...

    def check_quota(
        self, address: str, limit_bytes: int, limit_messages: int, incoming_size: int
    ) -> QuotaCheck:
        """Whether ``incoming_size`` more octets fit (limits of 0 = unlimited); a refusal is
        ``permanent`` (552 5.2.2) when the message alone exceeds the quota, else 452 4.2.2."""
        if limit_bytes <= 0 and limit_messages <= 0:
            return evaluate_quota(
                QuotaUsage(0, 0), limit_bytes=0, limit_messages=0, incoming_size=incoming_size
            )
        return evaluate_quota(
            self.quota_usage(address),
            limit_bytes=limit_bytes,
            limit_messages=limit_messages,
            incoming_size=incoming_size,
        )

    # -- folders --

    @abc.abstractmethod
    def list_folders(
        self, address: str, *, quick: bool = False, counts: bool = True
    ) -> list[FolderInfo]:
        """Every folder of the account, INBOX first, then by name. ``quick``: as for
        ``folder_changes``. ``counts=False``: messages, unseen and size are 0, not counted
        (a LIST needs only the names)."""

    @abc.abstractmethod
    def folder_status(self, address: str, folder: str, *, quick: bool = False) -> FolderStatus:
        """One folder's STATUS counts (NoSuchFolder when there is none), without marking
        anything \\Recent. ``quick``: as for ``folder_changes``."""

    @abc.abstractmethod
    def create_folder(self, address: str, name: str, *, special_use: str | None = None) -> None:
        """RFC 3501 §6.3.3 CREATE (and RFC 6154 §3 CREATE-SPECIAL-USE with ``special_use``)."""

    @abc.abstractmethod
    def delete_folder(self, address: str, name: str) -> None:
        """RFC 3501 §6.3.4 DELETE: the folder and its messages; INBOX cannot be deleted."""

    @abc.abstractmethod
    def rename_folder(self, address: str, old: str, new: str) -> None:
        """RFC 3501 §6.3.5 RENAME, with its inferiors; renaming INBOX moves its messages."""

    @abc.abstractmethod
    def subscribe(self, address: str, name: str) -> None: ...

    @abc.abstractmethod
    def unsubscribe(self, address: str, name: str) -> None: ...

    @abc.abstractmethod
    def list_subscriptions(self, address: str, *, quick: bool = False) -> list[str]:
        """Subscribed names, including names that no longer exist (RFC 9051 §6.3.9).
        ``quick``: as for ``folder_changes``."""

    # -- messages --

    @abc.abstractmethod
    def list_messages(self, address: str, folder: str, *, quick: bool = False) -> list[MessageInfo]:
        """All messages of the folder in UID order (ascending). ``quick``: as for
        ``folder_changes``."""

    @abc.abstractmethod
    def folder_changes(
        self, address: str, folder: str, since_modseq: int, *, quick: bool = False
    ) -> FolderChanges:
        """Messages changed and UIDs expunged after ``since_modseq`` (0: every message, and
        no expunged UIDs: the caller knew none).

        ``quick``: for a caller on an event loop, do no more than one index read and a few
        stat calls, and raise :class:`WouldBlock` when more is needed."""

    @abc.abstractmethod
    def claim_recent(
        self, address: str, folder: str, up_to_uid: int, *, claim: bool, quick: bool = False
    ) -> int:
        """RFC 3501 §2.3.2 \\Recent: the highest UID that an earlier session has already
        shown as recent (messages above it are recent for the caller). With ``claim``, the
        messages up to ``up_to_uid`` become the caller's, so no other session, in this
        process or another, sees them as recent; kept across restarts. ``quick``: as for
        ``folder_changes`` (a claim that has to write would block)."""

    def index_pending(self, address: str, folder: str, *, batch: int = 100) -> int:
        """Fill the full-text index for messages stored without it; how many were added.
        Backends that index as they store have nothing to do."""
        return 0

    @abc.abstractmethod
    def search_text(
        self, address: str, folder: str, needle: str, *, headers: bool, body: bool
    ) -> set[int]:
        """UIDs whose headers and/or body text contain ``needle``, ignoring case (RFC 9051
        §6.4.4 SEARCH TEXT / BODY: substring match), from the full-text index; messages not
        indexed yet are indexed first."""

    @abc.abstractmethod
    def cached_structures(
        self, address: str, folder: str, uids: Iterable[int], *, quick: bool = False
    ) -> dict[int, bytes]:
        """The structure blobs the IMAP server cached for these UIDs (ENVELOPE and
        BODYSTRUCTURE, in its own encoding), where it has cached one. ``quick``: as for
        ``folder_changes``."""

    @abc.abstractmethod
    def cache_structures(
        self, address: str, folder: str, items: dict[int, bytes], *, quick: bool = False
    ) -> None:
        """Keep structure blobs for later sessions (a lost one is simply computed again).
        ``quick``: for a caller on an event loop, :class:`WouldBlock` when the write would
        wait."""

    @abc.abstractmethod
    def fetch_message(self, address: str, folder: str, uid: int, *, quick: bool = False) -> bytes:
        """The message with CRLF line ends, exactly ``MessageInfo.size`` octets.

        ``quick``: for a caller on an event loop (the caller keeps it to small messages): one
        index read at most and the file's read, :class:`WouldBlock` when more is needed
        (the account is not open in this process, the file moved and a rescan must find it)."""

    def message_reader(
        self, address: str, folder: str, *, quick: bool = False
    ) -> Callable[[int], bytes]:
        """``fetch_message`` for a run of messages of one folder (a FETCH): what a store
        checks once per read (is its name cache still current?) it may check once for the
        run. The reader is for one command; ``quick`` as for ``fetch_message``."""

        def read(uid: int) -> bytes:
            return self.fetch_message(address, folder, uid, quick=quick)

        return read

    @abc.abstractmethod
    def store_flags(
        self,
        address: str,
        folder: str,
        uids: Iterable[int],
        mode: FlagMode,
        flags: frozenset[str],
        *,
        unchanged_since: int | None = None,
        quick: bool = False,
    ) -> StoreFlagsResult:
        """RFC 3501 §6.4.6 STORE, with RFC 7162 §3.1.3 UNCHANGEDSINCE. Unknown UIDs are
        ignored; messages whose flags do not change keep their MODSEQ. ``quick``: for a
        caller on an event loop: made at once, without waiting for the disk (durable once
        ``sync_quick_writes`` returns), or :class:`WouldBlock` (the index is being
        written, or more work is needed: do the call again in a thread)."""

    @abc.abstractmethod
    def copy(self, address: str, source: str, uids: Iterable[int], target: str) -> CopyResult:
        """RFC 3501 §6.4.7 COPY (flags, keywords and internal date kept), COPYUID data."""

    @abc.abstractmethod
    def move(self, address: str, source: str, uids: Iterable[int], target: str) -> CopyResult:
        """RFC 6851 MOVE, in one transaction: the source UIDs are expunged."""

    @abc.abstractmethod
    def expunge(
        self,
        address: str,
        folder: str,
        uids: Iterable[int] | None = None,
        *,
        quick: bool = False,
    ) -> list[int]:
        """RFC 3501 §6.4.3 EXPUNGE (``uids=None``) or RFC 4315 §2.1 UID EXPUNGE: remove the
        messages flagged \\Deleted (among ``uids``); returns their UIDs, ascending.
        ``quick``: for a caller on an event loop: [] when none is flagged, else the
        expunge made as a ``quick`` STORE is, or :class:`WouldBlock`."""

    # -- maintenance --

    @abc.abstractmethod
    def sync(self, address: str) -> list[SyncReport]:
        """Rescan the account: folders made or removed by hand, then every folder."""

    @abc.abstractmethod
    def purge_account(self, address: str) -> bool:
        """Delete the account's mailbox and all its mail; False if it had none."""

    def changes_if_cached(
        self, address: str, folder: str, since_modseq: int
    ) -> FolderChanges | None:
        """``folder_changes`` from memory, without blocking: for a caller on an event loop
        (the IMAP session's check after each command). None when the answer needs the disk
        (then call ``folder_changes`` in a thread). Backends without a cache answer None."""
        return None

    def flush(self, address: str | None = None) -> None:
        """Finish the file work a backend leaves for later (the Maildir store renames and
        unlinks files after STORE and EXPUNGE) for one account, or every account open here:
        tools that read the mail files directly call it first. Others have nothing to do."""
        return None

    @abc.abstractmethod
    def close(self) -> None: ...


@runtime_checkable
class MaildirMaintenance(Protocol):
    """The repairs of a store whose mail is files beside an index (the Maildir store): not
    part of ``MailStore``, since a database backend has no files to rescan nor an index to
    rebuild from them. ``pochta mailbox reindex`` checks for it with ``isinstance`` and says
    so when the store has none."""

    def message_path(self, address: str, folder: str, uid: int) -> str:
        """The file of the message, for logs and tools."""
        ...

    def sync_folder(self, address: str, folder: str) -> SyncReport:
        """Rescan one folder: adopt files the index does not know, drop rows whose file is
        gone (recorded as expunged), pick up flags changed by other programs."""
        ...

    def reindex(self, address: str) -> ReindexReport:
        """Rebuild the account's index from what is on disk."""
        ...
