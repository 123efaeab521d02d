"""The embedded mailbox store: Maildir++ files (readable by mutt and Dovecot) plus one SQLite
index per account (``index.py``).

Layout, as Dovecot's default Maildir++ (``mail_location = maildir:MAIL_DIR/%d/%n``)::

    MAIL_DIR/DOMAIN/LOCALPART/            INBOX: cur/ new/ tmp/
        .Sent/ .Archive.2026/ ...         folders, "." is the hierarchy separator; each has
                                          cur/ new/ tmp/, a `maildirfolder` file and
                                          `pochta-uidlist`
        pochta-index.sqlite3              the index of every folder (UIDs, MODSEQs, flags,
                                          keywords, quota counters)
        pochta-uidlist                    (in each folder dir, INBOX's in the root) UID <->
                                          file name, in dovecot-uidlist v3 format, so UIDs
                                          survive the loss of the index
        pochta-uidvalidity                the last UIDVALIDITY handed out
        subscriptions                     subscribed folder names, one per line

File names: ``<secs>.M<usecs>P<pid>Q<counter>.<host>,S=<size>,W=<vsize>[:2,<flags>]`` with
LF line ends on disk (what mutt and Dovecot expect); ``S`` is the file size and ``W`` the
RFC822.SIZE with CRLF, which is also what the index and the quota count.

Design notes, for the reader who changes this file:

- **Durability.** A delivery writes tmp/, fsyncs the file, takes the account's write lock,
  appends its line to pochta-uidlist, links the file into new/ (cur/ when it has flags),
  fsyncs the directory and commits the index row: only then does ``deliver`` return.
- **Crash recovery.** A crash after the uidlist line but before the commit leaves a file the
  index does not know. Each folder row remembers the uidlist size and the new/ and cur/
  mtimes after our last change; when they differ (checked when an account is first opened in
  a process, before each delivery batch, and on ``list_messages``), the folder is rescanned
  and the file adopted with the UID and dedupe key of its uidlist line (Dovecot also adopts
  unknown files in new/). So a delivery that crashed is found before the queue retries it:
  the message is there once.
- **Group commit.** Deliveries, STOREs and EXPUNGEs of one account queue up while another
  thread holds the write lock; the thread that gets the lock commits the whole queue with
  one directory fsync (deliveries) and one index transaction (flat combining), so
  concurrent changes share fsyncs. A lone writer finds the lock free and commits at once:
  there is no window to wait for. A change refused alone (no such folder) is rolled back
  to its savepoint; the others commit. A STORE or EXPUNGE from an event loop (``quick``)
  is made there when the lock is free (``_quick_change``), committed without an fsync; the
  caller answers only after ``sync_quick_writes`` (one fdatasync of the WAL for every
  quick change made before it, as a commit at synchronous=FULL would do), which the IMAP
  sessions share (``access/quick_sync.py``).
- **Flags and expunges are metadata; the file names follow lazily.** A STORE or EXPUNGE
  changes the index rows and records the file work in the index (``file_work``: rename
  this message's file to the name its flags give; unlink that file), in the same
  transaction: one commit (one WAL fsync), no rename and no directory fsync before the
  answer. Concurrent STOREs, EXPUNGEs and deliveries of an account share the transaction
  (the group commit below). ``messages.info`` is always the name on disk, so reads find the
  file whatever is pending. The work is done in batches (``_flush_folder_locked``, the
  renames and unlinks, then one fsync per directory, then the records dropped, in one
  transaction): when the account has been quiet for ``flush_delay_seconds`` (the flusher
  thread), when an account is evicted or retired, at ``close``, on ``flush()`` (tools that
  read the files: backup, export), and before anything that reads names from disk (a
  rescan, COPY/MOVE, reindex, ``message_path``). A crash leaves the work in the index; the
  next opening of the account does it before reading names (the index is the truth).
- **Who wins when another program renames a file with a rename pending.** The newer
  change: the file is found by its base name; if its ctime (set by the other program's
  rename) is later than our commit, its flags win and are taken into the index (a new
  MODSEQ); else ours go on its name, keeping its letters that are not IMAP flags. An
  expunged file changed after the expunge is kept and adopted again as a new message.
  Nothing is ever unlinked for a rename, so no file is lost.
- **Keywords** are kept in the index only. Dovecot also writes up to 26 of them as letters
  a-z in the file name with a per-folder dovecot-keywords file; we keep such letters when we
  rename a file but do not add them.
- **Locking.** Every change holds the account's SQLite write lock (``BEGIN IMMEDIATE``) for
  its file operations too, so threads and processes (the server, the CLI) never interleave
  renames; an in-process lock per account queues our own threads without SQLite's polling.
  Other programs (mutt) do not take it: their renames are picked up by the rescans.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import functools
import itertools
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from pochta.durable import fsync_directory as fsync_dir
from pochta.durable import write_atomic
from pochta.durable import write_new_file as write_file
from pochta.mime.utf7 import decode_modified_utf7, encode_modified_utf7
from pochta.store.base import (
    CHANGE_ORIGIN,
    INBOX,
    SPECIAL_FOLDERS,
    SPECIAL_USE_ROLES,
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
    QuotaUsage,
    ReindexReport,
    StoreError,
    StoreFlagsResult,
    StoreFull,
    StoreUnavailable,
    SyncReport,
    TextExtractor,
    WouldBlock,
)
from pochta.store.index import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAG_BITS,
    FLAGGED,
    INDEX_FILE,
    SEEN,
    WAL_PAGE_BYTES,
    AccountIndex,
    FolderRow,
    IndexDamaged,
    IndexNotWritable,
    MessageRow,
    is_damage,
    is_no_space,
)

log = logging.getLogger("pochta.store")

UIDLIST_FILE = "pochta-uidlist"
DOVECOT_UIDLIST_FILE = "dovecot-uidlist"
UIDVALIDITY_FILE = "pochta-uidvalidity"
SUBSCRIPTIONS_FILE = "subscriptions"
FOLDER_MARKER_FILE = "maildirfolder"
_DELETED_PREFIX = "pochta-deleted-"
# Maildir spec (cr.yp.to/proto/maildir.html): tmp/ files untouched for 36 hours are debris
# (Dovecot removes them when it opens the folder, as we do when an account is opened).
TMP_MAX_AGE_SECONDS = 36 * 3600
_UIDLIST_COMPACT_BYTES = 64 * 1024
# A busy account's renames wait at most this many flush delays.
FLUSH_DELAY_CAP = 5
# Full-text indexing after delivery: text per write transaction (a change that waits behind
# one waits for this much FTS5 work, some 10 ms, not for a whole batch), and the lock file
# that keeps two processes from indexing one account at once.
TEXT_CHUNK_BYTES = 256 * 1024
FTS_LOCK_FILE = "pochta-fts.lock"
# File names read ahead by a FETCH that misses, and kept per account at most. Any commit
# to the account drops them, so a client that fetches one message at a time between STOREs
# misses every time: 32 rows cost some 50 us more than one, 256 some 300 us (a FETCH of a
# range still misses once per 32 messages).
NAME_PREFETCH = 32
NAME_CACHE_MAX = 100_000
# A STORE of at most this many messages is made on the event loop (``store_flags`` quick):
# larger sets go to the thread at once.
QUICK_STORE_MAX = 100
# A folder_changes answer of at most this many messages is kept for the folder's other
# sessions (``_Snapshot.delta``).
DELTA_CACHE_MAX = 500
# About how many index pages a quick STORE or EXPUNGE writes (its WAL estimate).
QUICK_CHANGE_PAGES = 8

# -- flags in the file name (Maildir "2," info) --

# Maildir info letters of the IMAP system flags; P (passed) has no IMAP flag and is kept as is.
_LETTER_BITS: dict[str, int] = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
_BIT_LETTERS: dict[int, str] = {bit: letter for letter, bit in _LETTER_BITS.items()}
_SYSTEM_BY_LOWER: dict[str, str] = {name.lower(): name for name in FLAG_BITS}
_NAME_OF_BIT: dict[int, str] = {bit: name for name, bit in FLAG_BITS.items()}
_ALL_BITS = sum(_NAME_OF_BIT)
_FLAG_SETS: dict[int, frozenset[str]] = {}
_NO_KEYWORDS: frozenset[str] = frozenset()
_KEYWORD_SETS: dict[str, frozenset[str]] = {}
# RFC 3501 §9: flag-keyword = atom; atom-specials are ( ) { SP CTL % * " \ ] (and > 0x7e).
_ATOM = re.compile(r"^[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+$")


def flags_from_info(info: str | None) -> int:
    """System-flag bits of a Maildir info part ("2,FRS"); letters we do not know are ignored."""
    if not info or not info.startswith("2,"):
        return 0
    bits = 0
    for letter in info[2:].split(",", 1)[0]:
        bits |= _LETTER_BITS.get(letter, 0)
    return bits


def info_with_flags(flags: int, old_info: str | None = None) -> str:
    """The "2,<letters>" info for ``flags``, letters in ASCII order (Maildir spec). Letters of
    ``old_info`` that are not system flags (P, Dovecot keyword letters a-z) and Dovecot's
    ",<extra>" fields after the letters are kept."""
    kept = ""
    extra = ""
    if old_info and old_info.startswith("2,"):
        letters, comma, rest = old_info[2:].partition(",")
        kept = "".join(c for c in letters if c not in _LETTER_BITS)
        extra = comma + rest
    ours = "".join(letter for bit, letter in _BIT_LETTERS.items() if flags & bit)
    return "2," + "".join(sorted(set(ours + kept))) + extra


def split_flags(flags: Iterable[str]) -> tuple[int, dict[str, str]]:
    """IMAP flag names -> (system-flag bits, keywords by lower-case name). Flags compare
    case-insensitively (RFC 9051 §2.3.2); a keyword keeps the spelling it was first given."""
    bits = 0
    keywords: dict[str, str] = {}
    for name in flags:
        if name.startswith("\\"):
            canonical = _SYSTEM_BY_LOWER.get(name.lower())
            if canonical is None:
                # RFC 3501 §2.3.2: \Recent is session-only; other \names are not flags.
                raise StoreError(
                    f"{name} cannot be stored; the system flags are {' '.join(FLAG_BITS)}"
                )
            bits |= FLAG_BITS[canonical]
        else:
            if not _ATOM.match(name):
                raise StoreError(f"{name!r} is not a valid keyword (RFC 3501 §9 flag-keyword)")
            keywords.setdefault(name.lower(), name)
    return bits, keywords


def join_keywords(keywords: dict[str, str]) -> str:
    return " ".join(sorted(keywords.values(), key=str.lower))


def parse_keywords(text: str) -> dict[str, str]:
    return {k.lower(): k for k in text.split()}


def flag_names(bits: int) -> frozenset[str]:
    """The system flags of ``bits``: one shared set per combination (a listing of a large
    folder builds none)."""
    bits &= _ALL_BITS
    names = _FLAG_SETS.get(bits)
    if names is None:
        names = frozenset(name for bit, name in _NAME_OF_BIT.items() if bits & bit)
        _FLAG_SETS[bits] = names
    return names


def keyword_set(text: str) -> frozenset[str]:
    """The keywords of an index row (space-separated), shared between rows that have the
    same ones; the memo is emptied when it grows past 1,024 distinct lists."""
    if not text:
        return _NO_KEYWORDS
    found = _KEYWORD_SETS.get(text)
    if found is None:
        if len(_KEYWORD_SETS) >= 1024:
            _KEYWORD_SETS.clear()
        found = _KEYWORD_SETS[text] = frozenset(text.split())
    return found


# -- folder names (RFC 3501 §5.1.3 modified UTF-7, as Dovecot names Maildir++ dirs) --


# Modified UTF-7 is the one of the IMAP server (pochta.mime.utf7): a name IMAP refuses never
# names a directory, and a directory whose name is not canonical is no folder.
encode_folder_name = encode_modified_utf7
decode_folder_name = decode_modified_utf7


def check_folder_name(name: str) -> str:
    """The folder name as stored ("INBOX" in any case becomes "INBOX"), or StoreError."""
    if name.upper() == INBOX:
        return INBOX  # RFC 3501 §5.1: INBOX is case-insensitive
    if not name:
        raise StoreError("the folder name is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise StoreError(f"{name!r}: folder names cannot contain control characters")
    if "/" in name:
        raise StoreError(f"{name!r}: folder names cannot contain '/'; the separator is '.'")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise StoreError(f"{name!r}: empty level in the folder name ('.' is the separator)")
    if "*" in name or "%" in name:
        raise StoreError(f"{name!r}: '*' and '%' are LIST wildcards (RFC 3501 §6.3.8)")
    if len(encode_folder_name(name).encode()) > 200:
        raise StoreError(f"{name!r}: the folder name is too long")
    return name


def folder_dir_name(name: str) -> str:
    """The Maildir++ directory of a folder, relative to the account root ("" for INBOX)."""
    return "" if name == INBOX else "." + encode_folder_name(name)


def folder_from_dir_name(dirname: str) -> str | None:
    """The folder of a ".Name" directory, or None when it is not one."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    try:
        name = decode_folder_name(dirname[1:])
        return check_folder_name(name)
    except (ValueError, StoreError):
        return None


# -- file names --

_COUNTER = itertools.count(1)
_SIZE_FIELD = re.compile(r",S=(\d+)")
_VSIZE_FIELD = re.compile(r",W=(\d+)")
_NAME_TIME = re.compile(r"^(\d+)(?:\.M(\d+))?")


def maildir_host(hostname: str) -> str:
    """The host part of a Maildir name: "/" and ":" escaped as the Maildir spec says, and ","
    as Dovecot does (it separates the S= and W= fields)."""
    return hostname.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")


def new_base_name(host: str, size: int, vsize: int) -> str:
    """``<secs>.M<usecs>P<pid>Q<counter>.<host>,S=<size>,W=<vsize>``: unique per host
    (time, process, counter), with the sizes Dovecot reads from the name."""
    now = time.time_ns()
    secs, nanos = divmod(now, 1_000_000_000)
    return f"{secs}.M{nanos // 1000}P{os.getpid()}Q{next(_COUNTER)}.{host},S={size},W={vsize}"


def split_filename(name: str) -> tuple[str, str | None]:
    """(base, info) of a Maildir file name; info is None when there is no ":"."""
    base, colon, info = name.partition(":")
    return base, (info if colon else None)


def name_order(base: str) -> tuple[int, int, str]:
    """Delivery order of a Maildir base name (its time fields, then the name)."""
    m = _NAME_TIME.match(base)
    if m is None:
        return (1 << 62, 0, base)
    return (int(m.group(1)), int(m.group(2) or 0), base)


def to_stored(message: bytes) -> bytes:
    """The bytes written to disk: LF line ends, as mutt and Dovecot keep Maildir files."""
    return message.replace(b"\r\n", b"\n")


def crlf_size(stored: bytes) -> int:
    """RFC822.SIZE of stored bytes: every bare LF counts as CRLF."""
    return len(stored) + stored.count(b"\n") - stored.count(b"\r\n")


def to_wire(stored: bytes) -> bytes:
    """The message as IMAP sends it: CRLF line ends, exactly ``crlf_size(stored)`` octets."""
    if b"\r" in stored:
        stored = stored.replace(b"\r\n", b"\n")
    return stored.replace(b"\n", b"\r\n")


def read_file(path: str) -> bytes:
    """A whole file, by the descriptor: no buffered file object (pathlib's read_bytes opens
    one, with a stat, a terminal check and a seek: twice the system calls)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 262144):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# -- durable file operations --


# fsync_dir and write_file are pochta.durable's (imported above under the names this module
# has always used); replace_file leaves the directory fsync to its callers, which do it once.


def replace_file(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Atomically give ``path`` the content ``data`` (write aside, fsync, rename); the
    directory is not fsynced here."""
    write_atomic(path, data, sync=sync, sync_directory=False)


def link_or_rename(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` without ever replacing an existing file: link() refuses an
    existing name, rename() would overwrite it (the qmail delivery rule)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
            if target.exists():
                raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
            os.rename(source, target)
            return
        raise


def dir_mtime_ns(folder_dir: Path) -> int:
    """max(mtime of new/, cur/): any delivery, rename or unlink there changes it."""
    try:
        return max(os.stat(folder_dir / "new").st_mtime_ns, os.stat(folder_dir / "cur").st_mtime_ns)
    except FileNotFoundError:
        return -1


def file_size(path: Path | str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


# -- pochta-uidlist (dovecot-uidlist version 3 format) --


@dataclass(slots=True)
class Uidlist:
    uidvalidity: int
    uidnext: int
    entries: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # base -> uid, key


def uidlist_header(uidvalidity: int, uidnext: int) -> str:
    return f"3 V{uidvalidity} N{uidnext}\n"


def uidlist_line(uid: int, base: str, dedupe_key: str | None) -> str:
    """``<uid> [K<key>] :<base>``; the dedupe key is %-quoted (no spaces, no newlines)."""
    if dedupe_key is None:
        return f"{uid} :{base}\n"
    return f"{uid} K{urllib.parse.quote(dedupe_key, safe='@+=')} :{base}\n"


def read_uidlist(path: Path) -> Uidlist | None:
    """Parse a pochta-uidlist or dovecot-uidlist (v3; v1 "uid name" lines also read). Later
    lines win; a torn last line (crash during an append) is skipped."""
    try:
        text = path.read_text("utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    lines = text.split("\n")
    header = lines[0].split()
    if not header:
        return None
    uidvalidity = uidnext = 0
    if header[0] == "3":
        for token in header[1:]:
            if token[:1] == "V" and token[1:].isdigit():
                uidvalidity = int(token[1:])
            elif token[:1] == "N" and token[1:].isdigit():
                uidnext = int(token[1:])
    elif header[0] == "1" and len(header) >= 3 and header[1].isdigit() and header[2].isdigit():
        uidvalidity, uidnext = int(header[1]), int(header[2])
    else:
        return None
    result = Uidlist(uidvalidity=uidvalidity, uidnext=uidnext)
    complete = lines[1:-1] if not text.endswith("\n") else lines[1:]
    for line in complete:
        if not line:
            continue
        if " :" in line:
            head, _, filename = line.partition(" :")
            tokens = head.split()
        else:  # version 1: "uid filename"
            tokens = line.split()
            if len(tokens) != 2:
                continue
            filename = tokens.pop()
        if not tokens or not tokens[0].isdigit() or not filename:
            continue
        uid = int(tokens[0])
        key = None
        for token in tokens[1:]:
            if token.startswith("K"):
                key = urllib.parse.unquote(token[1:])
        base = split_filename(filename)[0]
        result.entries[base] = (uid, key)
        result.uidnext = max(result.uidnext, uid + 1)
    return result


def append_lines(path: Path, text: str) -> int:
    """Append to a uidlist; returns its new size. Not fsync'd: see the module docstring (a
    crash of the process keeps the page cache; the index commit that follows is fsync'd).
    When the write fails (a full disk), the file is cut back to its old size, so no torn line
    is left for the next append to run into."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        before = os.fstat(fd).st_size
        data = text.encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_subscriptions(path: Path) -> set[str] | None:
    """Names in a `subscriptions` file: ours and Dovecot's version 1 (one name per line) or
    version 2 (a "V\\t2" header, then names with TAB between hierarchy levels)."""
    try:
        lines = path.read_text("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    if lines and lines[0] == "V\t2":
        return {line.replace("\t", ".") for line in lines[1:] if line}
    return {line for line in lines if line}


# -- errors at the interface --

P = ParamSpec("P")
R = TypeVar("R")


def _folder_info(
    row: FolderRow, messages: int, unseen: int, size: int, subscribed: bool
) -> FolderInfo:
    return FolderInfo(
        name=row.name,
        special_use=row.special_use,
        uidvalidity=row.uidvalidity,
        uidnext=row.uidnext,
        messages=messages,
        unseen=unseen,
        highestmodseq=row.highestmodseq,
        subscribed=subscribed,
        size=size,
    )


def _new_flags(
    m: MessageRow, mode: FlagMode, bits: int, keywords: dict[str, str]
) -> tuple[int, dict[str, str]]:
    """The system flag bits and keywords (lower case -> spelling) a STORE gives ``m``
    (RFC 9051 §6.4.6: +FLAGS adds, -FLAGS removes, FLAGS replaces)."""
    old_keywords = parse_keywords(m.keywords)
    if mode is FlagMode.ADD:
        new_keywords = dict(old_keywords)
        for k, spelling in keywords.items():
            new_keywords.setdefault(k, spelling)
        return m.flags | bits, new_keywords
    if mode is FlagMode.REMOVE:
        return m.flags & ~bits, {k: v for k, v in old_keywords.items() if k not in keywords}
    return bits, dict(keywords)


def _reported(method: Callable[P, R]) -> Callable[P, R]:
    """Raise disk and index failures as StoreUnavailable (the interface's promise), so callers
    catch one family of errors and can tell "try later" from "refused"."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except StoreError:
            raise
        except OSError as exc:
            if is_no_space(exc):
                raise StoreFull(f"mail store: no space left on device ({exc})") from exc
            raise StoreUnavailable(f"mail store: {exc}") from exc
        except sqlite3.Error as exc:
            if is_no_space(exc):
                raise StoreFull(f"mailbox index: no space left on device ({exc})") from exc
            if is_damage(exc):
                raise IndexDamaged(
                    f"a mailbox index is damaged ({exc}); rebuild it with: "
                    "pochta mailbox reindex ADDRESS"
                ) from exc
            raise StoreUnavailable(f"mailbox index: {exc}") from exc

    return wrapper


def _log_read_only(account: _Account, step: str, exc: BaseException) -> None:
    """One line, no traceback: a full disk is an operator's matter, not a bug."""
    log.warning(
        "mailbox %s: %s skipped, the index cannot be written (no space left on device: %s); "
        "serving what it has",
        account.address,
        step,
        exc,
    )


def _summary_info(row: tuple[int, int, str, float, int, int]) -> MessageInfo:
    uid, bits, keywords, internal_date, size, modseq = row
    return MessageInfo(uid, flag_names(bits), keyword_set(keywords), internal_date, size, modseq)


# -- one change waiting for the account's write lock --


@dataclass(eq=False, slots=True)
class _Op:
    """One change (a delivery, a STORE, an EXPUNGE) queued for the account's next write
    transaction: ``run`` does it inside the transaction of whichever thread holds the lock."""

    run: Callable[[sqlite3.Connection, _Batch], object]
    origin: object | None = None  # CHANGE_ORIGIN of the caller that queued it
    result: object = None
    error: BaseException | None = None
    done: bool = False


@dataclass(slots=True)
class _Batch:
    """What the changes of one write transaction share: the folder rows (each change
    advances the same row), the directories to fsync before the commit, the files linked
    (taken back out if the transaction fails), the folders to settle or save."""

    changes: _Changes
    folders: dict[str, FolderRow] = field(default_factory=dict)
    dirs_to_sync: set[Path] = field(default_factory=set)
    linked: list[Path] = field(default_factory=list)
    settle: dict[str, FolderRow] = field(default_factory=dict)
    save: dict[str, FolderRow] = field(default_factory=dict)
    file_work: bool = False  # a rename or unlink was left for the flush


@dataclass(eq=False, slots=True)
class _Job:
    folder: str
    create: bool
    tmp: Path
    base: str
    flags: int
    keywords: str
    internal_date: float
    size: int
    dedupe_key: str | None
    text: tuple[str, str] | None = None  # casefolded (headers, body) for full-text search


class _Account:
    """An account opened in this process: its index and its locks."""

    def __init__(self, address: str, root: Path, index: AccountIndex) -> None:
        self.address = address
        self.root = root
        self.index = index
        self.write_lock = threading.Lock()
        self.pending: list[_Op] = []
        self.pending_lock = threading.Lock()
        self.ready = False
        self.ready_lock = threading.Lock()
        self.users = 0
        self.retired = False
        # What the rescans at opening found, until `sync` reports it.
        self.open_reports: list[SyncReport] = []
        # What `folder_changes` last read of each folder, and a connection that only asks
        # SQLite whether anyone committed since (PRAGMA data_version): `changes_if_cached`.
        self.snapshots: dict[str, _Snapshot] = {}
        # (folder, uid) -> (base name, info) of files this process has looked up,
        # valid while no connection commits (names_version), so FETCH opens the file
        # without an index read (a stale name is also found out by the open failing).
        self.names: dict[tuple[str, int], tuple[str, str | None]] = {}
        self.names_version: int | None = None  # the probe's data_version when they were read
        self.probe: sqlite3.Connection | None = None
        self.probe_lock = threading.Lock()
        # Quick changes (``_quick_change``) made, and how many of them a sync of the
        # index's journal has made durable (``sync_quick_writes``); under probe_lock.
        self.quick_changes = 0
        self.quick_synced = 0
        # folder name -> (uidlist, new/, cur/) as strings: what _changed_on_disk stats.
        self.stat_paths: dict[str, tuple[str, str, str]] = {}


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A folder's row and keywords as read at ``version`` (the probe's data_version), and
    the last ``folder_changes`` read then (``delta``: its MODSEQ and answer), which the
    other sessions of the folder, woken by the same change, ask for next."""

    version: int
    row: FolderRow
    keywords: tuple[str, ...]
    delta: tuple[int, FolderChanges] | None = None


@dataclass(slots=True)
class _OldIndex:
    """What reindex keeps from a readable index: UIDs, keywords, dates, dedupe keys."""

    folders: dict[str, FolderRow]
    messages: dict[str, dict[str, MessageRow]]  # folder -> base name -> row
    subscriptions: list[str]


@dataclass(slots=True)
class _Changes:
    """Folders changed by one operation, notified after the commit, each with who made it
    (``origins``): the ``origin`` of every change recorded for it when that was always the
    same one, else None (a batch of several sessions' changes, a rescan, a flush)."""

    items: list[tuple[str, ChangeKind]] = field(default_factory=list)
    origins: dict[tuple[str, ChangeKind], object | None] = field(default_factory=dict)
    origin: object | None = None  # who makes the changes being recorded now

    def add(self, folder: str, kind: ChangeKind) -> None:
        key = (folder, kind)
        if key not in self.origins:
            self.items.append(key)
            self.origins[key] = self.origin
        elif self.origins[key] is not self.origin:
            self.origins[key] = None


class MaildirStore(MailStore, MaildirMaintenance):
    """:class:`MailStore` on Maildir++ files and a per-account SQLite index, with the
    repairs only files beside an index have (:class:`MaildirMaintenance`: ``message_path``,
    ``sync_folder``, ``reindex``).

    ``durable=False`` skips every fsync (tests and benchmarks of the logic only). ``clock``
    (seconds since the epoch) dates the tmp/ files that the opening of an account removes.
    ``flush_delay_seconds``: how long an account is quiet before the renames and unlinks of
    its STOREs and EXPUNGEs are done (see the module docstring); None: only when ``flush``
    is called, at close, and before the operations that read file names.
    """

    def __init__(
        self,
        mail_dir: Path,
        *,
        hostname: str,
        durable: bool = True,
        max_open_accounts: int = 256,
        text_extractor: TextExtractor | None = None,
        index_at_delivery: bool = True,
        clock: Callable[[], float] = time.time,
        flush_delay_seconds: float | None = 1.0,
    ) -> None:
        super().__init__()
        self._clock = clock
        # The file work of STORE and EXPUNGE waits until the account has been quiet this
        # long (at most FLUSH_DELAY_CAP times as long while it never is); None: only on
        # `flush`, close and the reads that need it (tests).
        self._flush_delay = flush_delay_seconds
        self._flush_due: dict[str, float] = {}
        self._flush_first: dict[str, float] = {}
        self._flush_cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        self.text_extractor = text_extractor
        # False: deliveries and APPENDs leave the full-text index to `index_pending` (a
        # background indexer) or to the next search, which indexes what is missing first.
        self.index_at_delivery = index_at_delivery
        self.mail_dir = Path(mail_dir)
        self.hostname = hostname
        self.durable = durable
        self._host = maildir_host(hostname)
        self._max_open = max(1, max_open_accounts)
        self._accounts: collections.OrderedDict[str, _Account] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    # -- accounts --

    def account_root(self, address: str) -> Path:
        """MAIL_DIR/DOMAIN/LOCALPART; StoreError for names that cannot be a directory."""
        local, at, domain = address.lower().rpartition("@")
        if not at or not local or not domain:
            raise StoreError(f"{address!r} is not an address; use local@domain")
        for part in (local, domain):
            if part.startswith(".") or "/" in part or "\x00" in part:
                raise StoreError(f"{address!r} cannot name a mailbox directory")
        return self.mail_dir / domain / local

    @contextlib.contextmanager
    def _use(self, address: str, *, quick: bool = False) -> Iterator[_Account]:
        key = address.lower()
        evicted: list[_Account] = []
        with self._lock:
            if self._closed:
                raise StoreError("the mail store is closed")
            account = self._accounts.get(key)
            if account is None:
                root = self.account_root(key)
                account = _Account(key, root, AccountIndex(root / INDEX_FILE, durable=self.durable))
                self._accounts[key] = account
            self._accounts.move_to_end(key)
            account.users += 1
            # LRU cap: connections are per thread per account; close the least used.
            while len(self._accounts) > self._max_open:
                _, old = self._accounts.popitem(last=False)
                old.retired = True
                if old.users == 0:
                    evicted.append(old)
        for old in evicted:
            self._close_account(old)
        try:
            if not account.ready:
                if quick:
                    raise WouldBlock(f"{address} is not open yet")
                with account.ready_lock:
                    if not account.ready:
                        self._open_account(account)
                        account.ready = True
            yield account
        finally:
            with self._lock:
                account.users -= 1
                close_now = account.retired and account.users == 0
            if close_now:
                self._close_account(account)

    def _retire(self, address: str) -> None:
        with self._lock:
            account = self._accounts.pop(address.lower(), None)
            if account is None:
                return
            account.retired = True
            close_now = account.users == 0
        if close_now:
            self._close_account(account)

    def _close_account(self, account: _Account) -> None:
        """Finish the account's file work, then close its index (eviction, retire, close)."""
        if account.ready:
            try:
                self._flush_account(account)
            except Exception as exc:
                # The work stays in the index: the next opening of the account does it.
                log.warning("mailbox %s: file renames left for later: %s", account.address, exc)
        with account.probe_lock:
            account.snapshots.clear()
            if account.probe is not None:
                account.probe.close()
                account.probe = None
        account.index.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            accounts = list(self._accounts.values())
            self._accounts.clear()
        with self._flush_cond:
            self._flush_due.clear()
            self._flush_cond.notify_all()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()
        for account in accounts:
            self._close_account(account)

    # -- the lazy file work of STORE and EXPUNGE --

    @_reported
    def flush(self, address: str | None = None) -> None:
        """Do the renames and unlinks that STORE and EXPUNGE left for later, for one account
        (opening it if need be) or every account open in this process. Tools that read the
        Maildir files directly (backup, export) call it first."""
        if address is not None:
            with self._use(address) as account:
                self._flush_account(account)
            return
        with self._lock:
            addresses = [a.address for a in self._accounts.values() if a.ready]
        for each in addresses:
            with self._use(each) as account:
                self._flush_account(account)

    def _flush_account(self, account: _Account) -> None:
        changes = _Changes()
        with account.write_lock, account.index.write() as conn:
            pending = AccountIndex.folders_with_file_work(conn)
            if not pending:
                return
            for folder in AccountIndex.folders(conn):
                if folder.id in pending:
                    self._flush_folder_locked(conn, account, folder, changes)
        for folder_name, kind in changes.items:
            self._notify(account.address, folder_name, kind)

    def _flush_later(self, account: _Account) -> None:
        """Have the flusher thread do the account's file work once it is quiet."""
        if self._flush_delay is None:
            return
        now = time.monotonic()
        with self._flush_cond:
            if self._closed:
                return
            first = self._flush_first.setdefault(account.address, now)
            waited = self._flush_due.get(account.address)
            due = min(now + self._flush_delay, first + FLUSH_DELAY_CAP * self._flush_delay)
            self._flush_due[account.address] = due
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flusher_loop, name="pochta-store-flush", daemon=True
                )
                self._flusher.start()
            if waited is None or due < waited:
                # A later time needs no wake-up: the flusher, woken at the earlier one,
                # finds it not due yet and waits again.
                self._flush_cond.notify()

    def _flusher_loop(self) -> None:
        while True:
            with self._flush_cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [a for a, t in self._flush_due.items() if t <= now]
                    if due:
                        for address in due:
                            del self._flush_due[address]
                            self._flush_first.pop(address, None)
                        break
                    wait = min(self._flush_due.values()) - now if self._flush_due else None
                    self._flush_cond.wait(wait)
            for address in due:
                try:
                    with self._use(address) as account:
                        self._flush_account(account)
                except Exception as exc:
                    # Left in the index: the next change, read or opening does it.
                    log.warning("mailbox %s: file renames left for later: %s", address, exc)

    def _flush_folder_locked(
        self,
        conn: sqlite3.Connection,
        account: _Account,
        folder: FolderRow,
        changes: _Changes,
        *,
        settle: bool = True,
    ) -> None:
        """Rename and unlink the files as the index says (``file_work``), in the caller's
        write transaction. A file another program renamed meanwhile is found by its base
        name, and the newer change wins (see the module docstring). ``settle``: remember
        the folder's new look afterwards (a rescan that calls this settles itself)."""
        work = AccountIndex.file_work(conn, folder.id)
        if not work:
            return
        outside = settle and self._changed_on_disk(account, folder)
        path = self._dir(account, folder.name)
        located: dict[str, tuple[str, str | None]] | None = None
        modseq: int | None = None
        touched: set[str] = set()
        unlinked = False

        def locate(base: str) -> tuple[Path, str | None, int] | None:
            """Where the file of ``base`` is now: (path, info, ctime_ns), or None."""
            nonlocal located
            if located is None:
                located = {}
                for sub in ("new", "cur"):
                    with contextlib.suppress(FileNotFoundError):
                        for entry in os.scandir(path / sub):
                            b, i = split_filename(entry.name)
                            located[b] = (sub, i)
            found = located.get(base)
            if found is None:
                return None
            sub, info = found
            file = path / sub / (f"{base}:{info}" if info is not None else base)
            disk_info = (info if info is not None else "") if sub == "cur" else None
            try:
                return file, disk_info, os.stat(file).st_ctime_ns
            except FileNotFoundError:
                return None

        for filename, uid, info, since_ns in work:
            if uid is None:
                file = (
                    path / "new" / filename
                    if info is None
                    else self._cur_file(path, filename, info)
                )
                try:
                    os.unlink(file)
                    touched.add(file.parent.name)
                    unlinked = True
                except FileNotFoundError:
                    found = locate(filename)
                    if found is not None:
                        if found[2] > since_ns:
                            # Another program changed the file after our EXPUNGE: the newer
                            # change wins, the file stays and the rescan adopts it.
                            log.info(
                                "mailbox %s: %s in %s changed after its expunge; kept",
                                account.address,
                                filename,
                                folder.name,
                            )
                        else:
                            os.unlink(found[0])
                            touched.add(found[0].parent.name)
                            unlinked = True
                continue
            m = AccountIndex.message(conn, folder.id, uid)
            if m is None or m.filename != filename:
                continue  # expunged or moved since: nothing to rename
            target = info_with_flags(m.flags, m.info)
            if (m.info is None and m.flags == 0) or target == m.info:
                continue
            source = self._message_file(account, folder.name, m)
            try:
                os.rename(source, path / "cur" / f"{filename}:{target}")
                touched.update((source.parent.name, "cur"))
                m.info = target
            except FileNotFoundError:
                found = locate(filename)
                if found is None:
                    continue  # gone: the rescan records it as expunged
                actual, disk_info, ctime_ns = found
                if ctime_ns > since_ns:
                    # Another program renamed it after our STORE: its flags are newer.
                    m.info = disk_info
                    bits = flags_from_info(disk_info)
                    if bits != m.flags:
                        if modseq is None:
                            modseq = folder.next_modseq()
                        m.flags = bits
                        m.modseq = modseq
                        changes.add(folder.name, ChangeKind.FLAGS)
                else:
                    # Our STORE is newer: our flags on its name (its other letters kept).
                    target = info_with_flags(m.flags, disk_info)
                    if target != disk_info:
                        os.rename(actual, path / "cur" / f"{filename}:{target}")
                        touched.update((actual.parent.name, "cur"))
                    m.info = target
            AccountIndex.update_message(conn, folder.id, m)
        if self.durable:
            for sub in touched:
                fsync_dir(path / sub)  # the names are on disk before the work is dropped
        AccountIndex.drop_file_work(conn, folder.id, [w[0] for w in work])
        if unlinked:
            self._maybe_compact_uidlist(conn, account, folder)
        if not settle:
            AccountIndex.save_folder(conn, folder)
            return
        if outside:
            self._sync_locked(conn, account, folder, changes)
        else:
            self._settle(conn, account, folder)

    @staticmethod
    def _cur_file(path: Path, base: str, info: str) -> Path:
        return path / "cur" / (f"{base}:{info}" if info else base)

    def _open_account(self, account: _Account) -> None:
        """First use in this process: create the mailbox, or rebuild a lost index, or rescan
        folders changed while we were not looking (a crash, another program). On a full disk
        an index that has the account's folders is read as it is: the rescans wait for the
        next change (``_current`` tries again)."""
        try:
            account.root.mkdir(parents=True, exist_ok=True)
            account.index.migrate()
            try:
                with account.write_lock, account.index.write() as conn:
                    folders = AccountIndex.folders(conn)
                    if not folders:
                        self._rebuild(conn, account, None)
                    else:
                        # File work left by a crash or a stop (it is in the index) is done
                        # now, before anything reads the names.
                        pending = AccountIndex.folders_with_file_work(conn)
                        for folder in folders:
                            if self._changed_on_disk(account, folder):
                                report = self._sync_locked(conn, account, folder, _Changes())
                                account.open_reports.append(report)
                            elif folder.id in pending:
                                self._flush_folder_locked(conn, account, folder, _Changes())
            except (IndexNotWritable, OSError) as exc:
                if not is_no_space(exc) and not isinstance(exc, IndexNotWritable):
                    raise
                account.open_reports = []
                with account.index.read() as conn:
                    if not AccountIndex.folders(conn):
                        raise IndexNotWritable(
                            f"the mailbox {account.root} has no index yet and the disk is full: "
                            "free space on that file system"
                        ) from None
                _log_read_only(account, "open", exc)
        except IndexNotWritable:
            raise
        except IndexDamaged as exc:
            raise IndexDamaged(
                f"{exc}; rebuild it with: pochta mailbox reindex {account.address}"
            ) from None
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise IndexDamaged(
                    f"the mailbox index {account.index.path} is damaged ({exc}); rebuild it "
                    f"with: pochta mailbox reindex {account.address}"
                ) from None
            raise StoreUnavailable(f"the mailbox index {account.index.path}: {exc}") from None
        except OSError as exc:
            if is_no_space(exc):
                raise StoreFull(f"cannot open the mailbox {account.root}: {exc}") from None
            raise StoreUnavailable(f"cannot open the mailbox {account.root}: {exc}") from None
        self._sweep(account)

    def _sweep(self, account: _Account) -> None:
        """Remove debris: folders whose delete was interrupted, and the tmp/ files of every
        folder untouched for TMP_MAX_AGE_SECONDS (a write cut off by a crash)."""
        now = self._clock()
        with contextlib.suppress(OSError):
            for entry in os.scandir(account.root):
                if entry.name.startswith(_DELETED_PREFIX):
                    shutil.rmtree(entry.path, ignore_errors=True)
        removed = 0
        for folder_dir in self._folder_dirs(account).values():
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder_dir / "tmp"):
                    with contextlib.suppress(OSError):
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                        # The ctime too: a tmp/ file being written by an APPEND already has
                        # its INTERNALDATE as mtime, which may be a year ago; its ctime is
                        # now (Dovecot's tmp/ cleanup looks at the ctime as well).
                        if (
                            now - st.st_mtime > TMP_MAX_AGE_SECONDS
                            and now - st.st_ctime > TMP_MAX_AGE_SECONDS
                        ):
                            os.unlink(entry.path)
                            removed += 1
        if removed:
            log.info("removed %d stale tmp/ file(s) of %s", removed, account.address)

    # -- folders on disk --

    def _dir(self, account: _Account, name: str) -> Path:
        sub = folder_dir_name(name)
        return account.root / sub if sub else account.root

    def _make_folder_dirs(self, account: _Account, name: str) -> Path:
        path = self._dir(account, name)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if name != INBOX and not (path / FOLDER_MARKER_FILE).exists():
            # Maildir++: marks a folder (Courier's maildrop and Dovecot's LDA look for it).
            (path / FOLDER_MARKER_FILE).touch()
        return path

    def _new_uidvalidity(self, conn: sqlite3.Connection, account: _Account) -> int:
        """A UIDVALIDITY above every one this account used (RFC 3501 §2.3.1.1): the time in
        seconds like Dovecot, raised past the last one, which is kept in the index and in a
        file beside it so that a lost index does not bring old values back."""
        path = account.root / UIDVALIDITY_FILE
        try:
            on_disk = int(path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            on_disk = 0
        last = max(AccountIndex.last_uidvalidity(conn), on_disk)
        value = min(max(int(time.time()), last + 1), 0xFFFFFFFF)  # RFC 3501 §9: 32 bits
        replace_file(path, f"{value}\n".encode(), sync=self.durable)
        AccountIndex.note_uidvalidity(conn, value)
        return value

    def _create_folder_locked(
        self,
        conn: sqlite3.Connection,
        account: _Account,
        name: str,
        special_use: str | None,
        *,
        subscribe: bool = False,
    ) -> FolderRow:
        """Make the folder's dirs and row. A directory left by a create that crashed before its
        commit is adopted with what its uidlist says."""
        path = self._make_folder_dirs(account, name)
        uidlist = read_uidlist(path / UIDLIST_FILE)
        if uidlist is not None and uidlist.uidvalidity:
            AccountIndex.note_uidvalidity(conn, uidlist.uidvalidity)
            folder = AccountIndex.add_folder(
                conn,
                name,
                uidvalidity=uidlist.uidvalidity,
                uidnext=max(uidlist.uidnext, 1),
                special_use=special_use,
            )
            self._sync_locked(conn, account, folder, _Changes())
        else:
            uidvalidity = self._new_uidvalidity(conn, account)
            replace_file(
                path / UIDLIST_FILE, uidlist_header(uidvalidity, 1).encode(), sync=self.durable
            )
            folder = AccountIndex.add_folder(
                conn, name, uidvalidity=uidvalidity, special_use=special_use
            )
            folder.uidlist_size = file_size(path / UIDLIST_FILE)
            folder.seen_mtime_ns = dir_mtime_ns(path)
            AccountIndex.save_folder(conn, folder)
        if self.durable:
            fsync_dir(path.parent if name != INBOX else path)
        if subscribe and AccountIndex.set_subscribed(conn, name, True):
            self._write_subscriptions(conn, account)
        return folder

    def _require_folder(self, conn: sqlite3.Connection, name: str) -> FolderRow:
        folder = AccountIndex.folder(conn, check_folder_name(name))
        if folder is None:
            raise NoSuchFolder(f"no folder {name!r}")
        return folder

    def _write_subscriptions(self, conn: sqlite3.Connection, account: _Account) -> None:
        """The `subscriptions` file beside the folders: one name per line (UTF-8, "."
        separator), the plain format Dovecot also reads."""
        names = AccountIndex.subscriptions(conn)
        text = "".join(f"{n}\n" for n in names)
        replace_file(account.root / SUBSCRIPTIONS_FILE, text.encode(), sync=self.durable)

    def _paths(self, account: _Account, name: str) -> tuple[str, str, str]:
        """The folder's uidlist file and its new/ and cur/ directories, as strings (kept:
        each command's check stats them and FETCH opens files in them)."""
        paths = account.stat_paths.get(name)
        if paths is None:
            base = os.fspath(self._dir(account, name))
            paths = (
                os.path.join(base, UIDLIST_FILE),
                os.path.join(base, "new"),
                os.path.join(base, "cur"),
            )
            account.stat_paths[name] = paths
        return paths

    def _changed_on_disk(self, account: _Account, folder: FolderRow) -> bool:
        """Another program changed the folder: its uidlist's size or the mtime of new/ or
        cur/ is not what the index saw (three stat calls, on every command's check)."""
        uidlist, new, cur = self._paths(account, folder.name)
        if file_size(uidlist) != folder.uidlist_size:
            return True
        try:
            mtime = max(os.stat(new).st_mtime_ns, os.stat(cur).st_mtime_ns)
        except FileNotFoundError:
            mtime = -1  # as dir_mtime_ns
        return mtime != folder.seen_mtime_ns

    def _settle(self, conn: sqlite3.Connection, account: _Account, folder: FolderRow) -> None:
        """Remember what the folder looks like after our change, and save its row."""
        path = self._dir(account, folder.name)
        folder.seen_mtime_ns = dir_mtime_ns(path)
        folder.uidlist_size = file_size(path / UIDLIST_FILE)
        AccountIndex.save_folder(conn, folder)

    # -- delivery --

    @_reported
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
        return self._deliver(address, message, folder, flags, internal_date, dedupe_key, True)

    @_reported
    def append(
        self,
        address: str,
        folder: str,
        message: bytes,
        *,
        flags: frozenset[str] = frozenset(),
        internal_date: float | None = None,
    ) -> Delivered:
        # RFC 3501 §6.3.11: APPEND to a folder that does not exist fails ([TRYCREATE]).
        return self._deliver(address, message, folder, flags, internal_date, None, False)

    def _deliver(
        self,
        address: str,
        message: bytes,
        folder: str,
        flags: frozenset[str],
        internal_date: float | None,
        dedupe_key: str | None,
        create: bool,
    ) -> Delivered:
        name = check_folder_name(folder)
        bits, keywords = split_flags(flags)
        stored = to_stored(message)
        size = crlf_size(stored)
        when = time.time() if internal_date is None else internal_date
        with self._use(address) as account:
            base = new_base_name(self._host, len(stored), size)
            tmp = account.root / "tmp" / base
            try:
                write_file(tmp, stored, mtime=when, sync=self.durable)
            except FileNotFoundError:
                (account.root / "tmp").mkdir(parents=True, exist_ok=True)
                write_file(tmp, stored, mtime=when, sync=self.durable)
            job = _Job(
                text=self._text_of(stored) if self.index_at_delivery else None,
                folder=name,
                create=create,
                tmp=tmp,
                base=base,
                flags=bits,
                keywords=join_keywords(keywords),
                internal_date=when,
                size=size,
                dedupe_key=dedupe_key,
            )
            try:
                result = self._combined(account, functools.partial(self._deliver_one, account, job))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # after the link into new/, or the debris of a failure
        assert isinstance(result, Delivered)
        return result

    def _combined(
        self, account: _Account, run: Callable[[sqlite3.Connection, _Batch], object]
    ) -> object:
        """Flat combining: queue the change; whoever holds the write lock runs every queued
        change in one transaction, with one fsync per directory and one commit (group
        commit). A lone caller finds the lock free and commits at once: there is no window
        to wait for. Returns what ``run`` returned, or raises what it raised."""
        op = _Op(run, CHANGE_ORIGIN.get())
        changes = self._combine(account, op)
        for changed_folder, kind in changes.items:
            self._notify(
                account.address, changed_folder, kind, changes.origins[(changed_folder, kind)]
            )
        if op.error is not None:
            raise op.error
        return op.result

    def _write_now(
        self, account: _Account, size: int, run: Callable[[sqlite3.Connection], object]
    ) -> object:
        """A change that may be lost in a crash (a \\Recent claim, the structure cache),
        made at once by a caller that must not wait (``quick``): WouldBlock while this
        process's writer or another process holds the index's write lock; committed without
        an fsync (``AccountIndex.write_now``)."""
        if not account.write_lock.acquire(blocking=False):
            raise WouldBlock(f"the mailbox index of {account.address} is being written")
        try:
            with account.index.write_now(size) as conn:
                return run(conn)
        except WouldBlock:
            raise
        except (sqlite3.Error, StoreError) as exc:
            # A full disk, a damaged index, a folder gone: nothing was written; the
            # thread's call says what went wrong as a durable write would.
            raise WouldBlock(f"the mailbox index of {account.address}: {exc}") from exc
        finally:
            account.write_lock.release()

    def _quick_change(
        self,
        account: _Account,
        folder: str,
        run: Callable[[sqlite3.Connection, _Batch], object],
    ) -> object:
        """A change of ``folder`` (a STORE, an EXPUNGE) made at once by a caller on an event
        loop, as ``_combined`` makes it in a thread, but committed without an fsync: the
        caller answers only after ``sync_quick_writes``. WouldBlock when the index is being
        written (by this process or another), the folder changed on disk (a rescan is a
        thread's work), or the change fails (the thread's call says why)."""
        changes = _Changes(origin=CHANGE_ORIGIN.get())
        state = _Batch(changes)

        def run_one(conn: sqlite3.Connection) -> object:
            row = AccountIndex.folder(conn, folder)
            if row is not None and self._changed_on_disk(account, row):
                raise WouldBlock(f"folder {folder!r} changed on disk: rescan first")
            result = run(conn, state)
            if state.settle or state.dirs_to_sync or state.linked:
                raise WouldBlock("a change with files to write")  # not a STORE or EXPUNGE
            for changed in state.save.values():
                AccountIndex.save_folder(conn, changed)
            return result

        result = self._write_now(account, QUICK_CHANGE_PAGES * WAL_PAGE_BYTES, run_one)
        if state.save:
            with account.probe_lock:
                account.quick_changes += 1
        if state.file_work:
            self._flush_later(account)
        for changed_folder, kind in changes.items:
            self._notify(
                account.address, changed_folder, kind, changes.origins[(changed_folder, kind)]
            )
        return result

    def quick_writes_pending(self, address: str) -> bool:
        with self._lock:
            account = self._accounts.get(address.lower())
        if account is None:
            return False
        with account.probe_lock:
            return account.quick_changes != account.quick_synced

    @_reported
    def sync_quick_writes(self, address: str) -> None:
        with self._use(address) as account:
            with account.probe_lock:
                made = account.quick_changes
                if made == account.quick_synced:
                    return
            if self.durable:
                account.index.sync_journal()
            with account.probe_lock:
                account.quick_synced = max(account.quick_synced, made)

    def _combine(self, account: _Account, op: _Op) -> _Changes:
        with account.pending_lock:
            account.pending.append(op)
        changes = _Changes()
        with account.write_lock:
            if op.done:
                return changes  # committed by another thread's batch; it notifies
            with account.pending_lock:
                batch, account.pending = account.pending, []
            try:
                self._run_batch(account, batch, changes)
            except BaseException as exc:
                error: BaseException = exc
                if isinstance(exc, OSError) and is_no_space(exc):
                    error = StoreFull(f"writing the mailbox of {account.address} failed: {exc}")
                elif isinstance(exc, OSError):
                    error = StoreUnavailable(
                        f"writing the mailbox of {account.address} failed: {exc}"
                    )
                elif isinstance(exc, sqlite3.Error):
                    error = StoreUnavailable(f"the mailbox index of {account.address}: {exc}")
                for other in batch:
                    if not other.done:
                        other.error = error
                        other.done = True
                if error is exc:
                    raise
                raise error from exc
        return changes

    def _run_batch(self, account: _Account, batch: list[_Op], changes: _Changes) -> None:
        state = _Batch(changes)
        try:
            with account.index.write() as conn:
                for op in batch:
                    conn.execute("SAVEPOINT op")
                    changes.origin = op.origin
                    try:
                        op.result = op.run(conn, state)
                    except StoreError as exc:
                        if isinstance(exc, StoreUnavailable):
                            raise  # the disk or the index: the whole batch fails
                        # A refusal of this change alone (no such folder, a bad flag).
                        conn.execute("ROLLBACK TO op")
                        op.error = exc
                    finally:
                        changes.origin = None
                    conn.execute("RELEASE op")
                if self.durable:
                    for directory in state.dirs_to_sync:
                        fsync_dir(directory)  # the links are on disk before we say so
                for name, folder in state.settle.items():
                    self._settle(conn, account, folder)
                    state.save.pop(name, None)
                for folder in state.save.values():
                    AccountIndex.save_folder(conn, folder)
        except BaseException:
            # Nothing of this batch is committed: take its files back out so a retry by the
            # queue does not find a second copy adopted later.
            for path in state.linked:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        for op in batch:
            op.done = True
        if state.file_work:
            self._flush_later(account)

    def _batch_folder(
        self,
        conn: sqlite3.Connection,
        account: _Account,
        state: _Batch,
        name: str,
        *,
        create: bool = False,
    ) -> FolderRow:
        """The folder row the changes of this batch share (created when ``create``); a
        folder changed on disk by another program is rescanned first."""
        folder = state.folders.get(name)
        if folder is not None:
            return folder
        found = AccountIndex.folder(conn, name)
        if found is None:
            if not create:
                raise NoSuchFolder(f"no folder {name!r}")
            found = self._create_folder_locked(
                conn, account, name, SPECIAL_FOLDERS.get(name), subscribe=name in SPECIAL_FOLDERS
            )
            state.changes.add(name, ChangeKind.FOLDERS)
        elif self._changed_on_disk(account, found):
            # A crashed delivery may have left this very message: adopt it first so that
            # its dedupe key is seen. What the rescan finds is nobody's own change.
            origin, state.changes.origin = state.changes.origin, None
            try:
                self._sync_locked(conn, account, found, state.changes)
            finally:
                state.changes.origin = origin
        state.folders[name] = found
        return found

    def _deliver_one(
        self, account: _Account, job: _Job, conn: sqlite3.Connection, state: _Batch
    ) -> Delivered:
        folder = self._batch_folder(conn, account, state, job.folder, create=job.create)
        if job.dedupe_key is not None:
            existing = AccountIndex.find_dedupe(conn, job.dedupe_key)
            if existing is not None:
                where, row = existing
                return Delivered(where.name, row.uid, where.uidvalidity, row.size, True)
        path = self._dir(account, folder.name)
        uid = folder.uidnext
        folder.uidnext += 1
        modseq = folder.next_modseq()
        # The uidlist line goes first: a crash after the link below is then seen as a grown
        # uidlist and the file adopted with this UID and key.
        append_lines(path / UIDLIST_FILE, uidlist_line(uid, job.base, job.dedupe_key))
        info = info_with_flags(job.flags) if (job.flags or job.keywords) else None
        target = path / "new" / job.base if info is None else path / "cur" / f"{job.base}:{info}"
        link_or_rename(job.tmp, target)
        state.linked.append(target)
        state.dirs_to_sync.add(target.parent)
        rowid = AccountIndex.insert_message(
            conn,
            folder.id,
            MessageRow(
                uid=uid,
                filename=job.base,
                info=info,
                flags=job.flags,
                keywords=job.keywords,
                internal_date=job.internal_date,
                size=job.size,
                modseq=modseq,
                dedupe_key=job.dedupe_key,
            ),
        )
        if job.text is not None:
            AccountIndex.put_text(conn, rowid, *job.text)
        AccountIndex.add_quota(conn, job.size, 1)
        state.changes.add(folder.name, ChangeKind.NEW)
        state.settle[folder.name] = folder
        return Delivered(folder.name, uid, folder.uidvalidity, job.size)

    # -- quota --

    @_reported
    def quota_usage(self, address: str) -> QuotaUsage:
        with self._use(address) as account:
            octets, messages = AccountIndex.quota(account.index.conn())
        return QuotaUsage(octets, messages)

    # -- folders --

    @_reported
    def list_folders(
        self, address: str, *, quick: bool = False, counts: bool = True
    ) -> list[FolderInfo]:
        with self._use(address, quick=quick) as account, account.index.read() as conn:
            rows = AccountIndex.folders(conn)
            stats = AccountIndex.folder_stats(conn) if counts else {}
            subscribed = set(AccountIndex.subscriptions(conn))
        result = []
        for row in rows:
            messages, unseen, size = stats.get(row.id, (0, 0, 0))
            result.append(_folder_info(row, messages, unseen, size, row.name in subscribed))
        result.sort(key=lambda f: (f.name != INBOX, f.name))
        return result

    @_reported
    def folder_status(self, address: str, folder: str, *, quick: bool = False) -> FolderStatus:
        with (
            self._use(address, quick=quick) as account,
            self._current(account, folder, quick=quick) as (conn, row),
        ):
            claimed = AccountIndex.recent_claimed(conn, row.id)
            messages, unseen, size, deleted, recent = AccountIndex.folder_counts(
                conn, row.id, claimed
            )
            subscribed = AccountIndex.is_subscribed(conn, row.name)
        info = _folder_info(row, messages, unseen, size, subscribed)
        return FolderStatus(info, deleted, recent)

    @_reported
    def create_folder(self, address: str, name: str, *, special_use: str | None = None) -> None:
        name = check_folder_name(name)
        if special_use is not None and special_use not in SPECIAL_USE_ROLES:
            # RFC 6154 §3: USEATTR for an attribute the server does not know.
            raise StoreError(f"{special_use} is not a special-use attribute (RFC 6154 §2)")
        with self._use(address) as account:
            with account.write_lock, account.index.write() as conn:
                if AccountIndex.folder(conn, name) is not None:
                    raise FolderExists(f"folder {name!r} already exists")
                self._create_folder_locked(conn, account, name, special_use)
            self._notify(account.address, name, ChangeKind.FOLDERS)

    @_reported
    def delete_folder(self, address: str, name: str) -> None:
        name = check_folder_name(name)
        if name == INBOX:
            raise StoreError("INBOX cannot be deleted (RFC 3501 §6.3.4)")
        with self._use(address) as account:
            with account.write_lock, account.index.write() as conn:
                folder = self._require_folder(conn, name)
                path = self._dir(account, name)
                # Rename out of sight first (one atomic step), drop the rows, commit, then
                # remove the files; debris of a crash is swept at the next open.
                aside = account.root / f"{_DELETED_PREFIX}{secrets.token_hex(8)}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, aside)
                octets, count = AccountIndex.remove_folder(conn, folder.id)
                AccountIndex.add_quota(conn, -octets, -count)
                if self.durable:
                    fsync_dir(account.root)
            shutil.rmtree(aside, ignore_errors=True)
            account.names.clear()
            self._notify(account.address, name, ChangeKind.FOLDERS)

    @_reported
    def rename_folder(self, address: str, old: str, new: str) -> None:
        old = check_folder_name(old)
        new = check_folder_name(new)
        if new == INBOX:
            raise FolderExists("INBOX always exists; it cannot be a rename target")
        if new == old or new.startswith(old + "."):
            raise StoreError(f"cannot rename {old!r} to {new!r}: it is inside itself")
        with self._use(address) as account:
            changes = _Changes()
            with account.write_lock, account.index.write() as conn:
                source = self._require_folder(conn, old)
                if AccountIndex.folder(conn, new) is not None:
                    raise FolderExists(f"folder {new!r} already exists")
                if old == INBOX:
                    # RFC 3501 §6.3.5: renaming INBOX moves its messages to a new folder and
                    # leaves INBOX empty; its inferiors stay where they are.
                    target = self._create_folder_locked(conn, account, new, None)
                    uids = [m.uid for m in AccountIndex.messages(conn, source.id)]
                    self._transfer_locked(conn, account, source, uids, target, True, changes)
                else:
                    # RFC 3501 §6.3.5: inferior hierarchical names are renamed too.
                    moving = [
                        f
                        for f in AccountIndex.folders(conn)
                        if f.name == old or f.name.startswith(old + ".")
                    ]
                    renames = [(f, new + f.name[len(old) :]) for f in moving]
                    for _, target_name in renames:
                        if AccountIndex.folder(conn, target_name) is not None:
                            raise FolderExists(f"folder {target_name!r} already exists")
                    for folder, target_name in renames:
                        os.rename(self._dir(account, folder.name), self._dir(account, target_name))
                        folder.name = target_name
                        AccountIndex.save_folder(conn, folder)
                        # Subscriptions follow the folder (as Dovecot does).
                        old_name = old + target_name[len(new) :]
                        if AccountIndex.set_subscribed(conn, old_name, False):
                            AccountIndex.set_subscribed(conn, target_name, True)
                    if self.durable:
                        fsync_dir(account.root)
                    self._write_subscriptions(conn, account)
                changes.add(old, ChangeKind.FOLDERS)
                changes.add(new, ChangeKind.FOLDERS)
            account.names.clear()
            for folder_name, kind in changes.items:
                self._notify(account.address, folder_name, kind)

    @_reported
    def subscribe(self, address: str, name: str) -> None:
        self._set_subscribed(address, name, True)

    @_reported
    def unsubscribe(self, address: str, name: str) -> None:
        self._set_subscribed(address, name, False)

    def _set_subscribed(self, address: str, name: str, subscribed: bool) -> None:
        name = check_folder_name(name)
        with self._use(address) as account:
            with account.write_lock, account.index.write() as conn:
                # RFC 9051 §6.3.9: a name may be subscribed whether or not it exists.
                changed = AccountIndex.set_subscribed(conn, name, subscribed)
                if changed:
                    self._write_subscriptions(conn, account)
            if changed:
                self._notify(account.address, name, ChangeKind.FOLDERS)

    @_reported
    def list_subscriptions(self, address: str, *, quick: bool = False) -> list[str]:
        with self._use(address, quick=quick) as account:
            return AccountIndex.subscriptions(account.index.conn())

    # -- messages --

    @_reported
    def list_messages(self, address: str, folder: str, *, quick: bool = False) -> list[MessageInfo]:
        with (
            self._use(address, quick=quick) as account,
            self._current(account, folder, quick=quick) as (conn, row),
        ):
            summaries = AccountIndex.summaries(conn, row.id)
        return [_summary_info(m) for m in summaries]

    @contextlib.contextmanager
    def _current(
        self, account: _Account, folder: str, *, quick: bool = False
    ) -> Iterator[tuple[sqlite3.Connection, FolderRow]]:
        """A read transaction on the folder, rescanned first if other programs changed it."""
        name = check_folder_name(folder)
        with account.index.read() as conn:
            row = self._require_folder(conn, name)
            if not self._changed_on_disk(account, row):
                yield conn, row  # the usual case: one read transaction
                return
        if quick:
            raise WouldBlock(f"folder {name!r} changed on disk: rescan first")
        # On a full disk the rescan cannot record what it finds: serve what the index has
        # (files it does not know yet wait for the next rescan).
        self._try_sync_folder(account, name, only_if_changed=True)
        with account.index.read() as conn:
            yield conn, self._require_folder(conn, name)

    @_reported
    def folder_changes(
        self, address: str, folder: str, since_modseq: int, *, quick: bool = False
    ) -> FolderChanges:
        if quick:
            cached = self.changes_if_cached(address, folder, since_modseq)
            if cached is not None:
                return cached
        with self._use(address, quick=quick) as account:
            try:
                version = self._data_version(account, open_probe=not quick)
            except sqlite3.Error:
                version = None  # no snapshot this time; the read below says what is wrong
            with self._current(account, folder, quick=quick) as (conn, row):
                changed = AccountIndex.summaries(conn, row.id, since_modseq)
                # From 0 (a SELECT) nothing was known, so nothing vanished: not every
                # expunge the folder ever had (40% of a worker's time on an aged index).
                vanished = (
                    AccountIndex.expunged_since(conn, row.id, since_modseq) if since_modseq else []
                )
                keywords = AccountIndex.folder_keywords(conn, row.id)
        result = FolderChanges(
            uidvalidity=row.uidvalidity,
            uidnext=row.uidnext,
            highestmodseq=row.highestmodseq,
            changed=tuple(map(_summary_info, changed)),
            vanished=tuple(vanished),
            complete=since_modseq == 0 or since_modseq >= row.expunged_since,
            keywords=tuple(keywords),
        )
        earlier = account.snapshots.get(row.name)
        if earlier is not None and earlier.row.uidvalidity != row.uidvalidity:
            account.names.clear()  # rebuilt elsewhere (reindex): UIDs name other files
        if version is not None:
            # A SELECT's whole listing (from 0) is not kept: only the small deltas that
            # every session of the folder reads after the same change.
            keep = since_modseq > 0 and len(changed) <= DELTA_CACHE_MAX
            with account.probe_lock:
                account.snapshots[row.name] = _Snapshot(
                    version,
                    dataclasses.replace(row),
                    result.keywords,
                    (since_modseq, result) if keep else None,
                )
        return result

    def changes_if_cached(
        self, address: str, folder: str, since_modseq: int
    ) -> FolderChanges | None:
        """``folder_changes`` answered from memory, for a caller on an event loop: no
        thread, no index transaction, only SQLite's data_version (has any connection, of
        any process, committed to the account's index since the last read?) and the stat
        calls that notice other programs. What changed after ``since_modseq`` comes from
        the last read of the folder when that read was from the same MODSEQ or an earlier
        one (the sessions woken by the same changes ask from about where they were). None
        when the disk must be read: the account is not open here, the folder was not read
        yet, something changed after ``since_modseq`` that the last read does not answer,
        or anyone wrote since."""
        with self._lock:
            account = self._accounts.get(address.lower())
        if account is None or not account.ready or account.retired:
            return None
        try:
            name = check_folder_name(folder)
        except StoreError:
            return None
        snapshot = account.snapshots.get(name)
        if snapshot is None:
            return None
        behind = since_modseq < snapshot.row.highestmodseq
        delta = snapshot.delta
        if behind and (
            delta is None
            or since_modseq < delta[0]
            or (since_modseq > delta[0] and delta[1].vanished)  # expunges carry no MODSEQ
        ):
            return None
        try:
            version = self._data_version(account, open_probe=False)
        except sqlite3.Error:
            return None
        if version != snapshot.version or self._changed_on_disk(account, snapshot.row):
            return None
        row = snapshot.row
        if behind:
            assert delta is not None
            if since_modseq == delta[0]:
                return delta[1]
            # From a later MODSEQ: the part of the read that is newer.
            return dataclasses.replace(
                delta[1],
                changed=tuple(m for m in delta[1].changed if m.modseq > since_modseq),
                complete=since_modseq >= row.expunged_since,
            )
        return FolderChanges(
            uidvalidity=row.uidvalidity,
            uidnext=row.uidnext,
            highestmodseq=row.highestmodseq,
            changed=(),
            vanished=(),
            complete=since_modseq == 0 or since_modseq >= row.expunged_since,
            keywords=snapshot.keywords,
        )

    @staticmethod
    def _data_version(account: _Account, *, open_probe: bool) -> int | None:
        """The probe connection's PRAGMA data_version: it changes when any other connection
        commits to the index. None when there is no probe (``open_probe`` makes one)."""
        with account.probe_lock:
            if account.probe is None:
                if not open_probe or account.retired:
                    return None
                # timeout=0: busy (a checkpoint of another process) fails at once and the
                # caller reads the index instead; an event loop never waits here.
                account.probe = sqlite3.connect(
                    account.index.path, timeout=0, isolation_level=None, check_same_thread=False
                )
            return int(account.probe.execute("PRAGMA data_version").fetchone()[0])

    def _text_of(self, stored: bytes) -> tuple[str, str] | None:
        if self.text_extractor is None:
            return None
        headers, body = self.text_extractor(stored)
        return headers.casefold(), body.casefold()

    @_reported
    def search_text(
        self, address: str, folder: str, needle: str, *, headers: bool, body: bool
    ) -> set[int]:
        name = check_folder_name(folder)
        with self._use(address) as account:
            self._index_text(account, name)
            with account.index.read() as conn:
                row = self._require_folder(conn, name)
                return AccountIndex.search_text(
                    conn, row.id, needle.casefold(), headers=headers, body=body
                )

    @_reported
    def claim_recent(
        self, address: str, folder: str, up_to_uid: int, *, claim: bool, quick: bool = False
    ) -> int:
        name = check_folder_name(folder)
        with self._use(address, quick=quick) as account:
            with account.index.read() as conn:
                row = self._require_folder(conn, name)
                before = AccountIndex.recent_claimed(conn, row.id)
            if not claim or up_to_uid <= before:
                return before  # nothing to claim: no write, no commit
            if quick:
                # RFC 3501 §2.3.2 lets a message be \\Recent in more than one session when
                # the server cannot tell: a claim lost in a crash needs no fsync.
                result = self._write_now(
                    account,
                    WAL_PAGE_BYTES,
                    lambda conn: self._claim_one(name, up_to_uid, conn, None),
                )
                assert isinstance(result, int)
                return result
            try:
                # A write only when there is something to claim, combined with the other
                # changes of the account (one commit for the sessions that claim at once).
                result = self._combined(
                    account, functools.partial(self._claim_one, name, up_to_uid)
                )
                assert isinstance(result, int)
                return result
            except IndexNotWritable as exc:
                # A full disk: the messages are \Recent in this session; the claim is made
                # by a later session that can write it (RFC 3501 §2.3.2 allows a message to be
                # \Recent in more than one session when the server cannot tell).
                _log_read_only(account, "claim_recent", exc)
                with account.index.read() as conn:
                    row = self._require_folder(conn, name)
                    return AccountIndex.recent_claimed(conn, row.id)

    @staticmethod
    def _claim_one(
        name: str, up_to_uid: int, conn: sqlite3.Connection, state: _Batch | None
    ) -> int:
        row = AccountIndex.folder(conn, name)
        if row is None:
            raise NoSuchFolder(f"no folder {name!r}")
        before = AccountIndex.recent_claimed(conn, row.id)
        if up_to_uid > before:
            AccountIndex.set_recent_claimed(conn, row.id, up_to_uid)
        return before

    @_reported
    def index_pending(self, address: str, folder: str, *, batch: int = 100) -> int:
        """Add the messages of the folder that are not in the full-text index yet, ``batch``
        read at a time, written in transactions of at most TEXT_CHUNK_BYTES of text; returns
        how many were indexed. Skipped (0) while another process indexes the account: it
        goes on until nothing is left, and a search indexes what is missing first."""
        name = check_folder_name(folder)
        with self._use(address) as account:
            lock = account.root / FTS_LOCK_FILE
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # another process (worker) is indexing this account
                return self._index_text(account, name, batch)
            finally:
                os.close(fd)  # releases the lock

    def _index_text(self, account: _Account, name: str, batch: int = 500) -> int:
        """Index what delivery did not (mail from before the index existed, crash leftovers,
        files adopted from disk). The text is extracted outside any lock; it goes into the
        index in chunks of at most TEXT_CHUNK_BYTES, each one change combined with the
        account's others (deliveries, APPENDs, STOREs wait for a chunk, not for the whole
        batch, and share its commit)."""
        if self.text_extractor is None:
            raise StoreError("full-text search is not available: no text extractor is set")
        done = 0
        while True:
            with account.index.read() as conn:
                row = self._require_folder(conn, name)
                todo = AccountIndex.unindexed(conn, row.id)[:batch]
            if not todo:
                return done
            chunk: list[tuple[int, tuple[str, str]]] = []
            chunk_bytes = 0
            for rowid, m in todo:
                try:
                    data = self._message_file(account, name, m).read_bytes()
                except FileNotFoundError:
                    data = b""  # gone on disk: the next rescan drops its row
                text = self._text_of(data)
                assert text is not None
                chunk.append((rowid, text))
                chunk_bytes += len(text[0]) + len(text[1])
                if chunk_bytes >= TEXT_CHUNK_BYTES:
                    self._combined(account, functools.partial(self._put_texts, chunk))
                    chunk, chunk_bytes = [], 0
            if chunk:
                self._combined(account, functools.partial(self._put_texts, chunk))
            done += len(todo)
            if len(todo) < batch:
                return done

    @staticmethod
    def _put_texts(
        texts: list[tuple[int, tuple[str, str]]], conn: sqlite3.Connection, state: _Batch
    ) -> None:
        for rowid, (head, body) in texts:
            if AccountIndex.needs_text(conn, rowid):  # still there, not indexed meanwhile
                AccountIndex.put_text(conn, rowid, head, body)

    @_reported
    def cached_structures(
        self, address: str, folder: str, uids: Iterable[int], *, quick: bool = False
    ) -> dict[int, bytes]:
        name = check_folder_name(folder)
        with self._use(address, quick=quick) as account, account.index.read() as conn:
            row = self._require_folder(conn, name)
            return AccountIndex.cached_structures(conn, row.id, uids)

    @_reported
    def cache_structures(
        self, address: str, folder: str, items: dict[int, bytes], *, quick: bool = False
    ) -> None:
        if not items:
            return
        name = check_folder_name(folder)
        with self._use(address, quick=quick) as account:
            if quick:  # a cache: lost in a crash, it is computed again
                self._write_now(
                    account,
                    WAL_PAGE_BYTES + sum(map(len, items.values())),
                    lambda conn: self._cache_structures_one(name, items, conn, None),
                )
                return
            # Combined with the account's other changes: one commit for them all.
            self._combined(account, functools.partial(self._cache_structures_one, name, items))

    @staticmethod
    def _cache_structures_one(
        name: str, items: dict[int, bytes], conn: sqlite3.Connection, state: _Batch | None
    ) -> None:
        row = AccountIndex.folder(conn, name)
        if row is None:
            raise NoSuchFolder(f"no folder {name!r}")
        AccountIndex.cache_structures(conn, row.id, items)

    def _message_file(self, account: _Account, folder: str, m: MessageRow) -> Path:
        path = self._dir(account, folder)
        if m.info is None:
            return path / "new" / m.filename
        return path / "cur" / (f"{m.filename}:{m.info}" if m.info else m.filename)

    def _find_message(self, account: _Account, folder: str, uid: int) -> Path:
        try:
            version = self._data_version(account, open_probe=True)
        except sqlite3.Error:
            version = None
        with account.index.read() as conn:
            row = self._require_folder(conn, folder)
            message = AccountIndex.message(conn, row.id, uid)
            # The next ones too: FETCH reads runs of UIDs (see _read_message).
            names = AccountIndex.message_names(conn, row.id, uid, uid + NAME_PREFETCH)
        if (
            version is None
            or version != account.names_version
            or len(account.names) + len(names) > NAME_CACHE_MAX
        ):
            account.names.clear()
            account.names_version = version
        if version is not None:
            for each, filename, info in names:
                account.names[(folder, each)] = (filename, info)
        if message is None:
            raise NoSuchMessage(f"no message with UID {uid} in {folder!r}")
        return self._message_file(account, folder, message)

    def _read_message(
        self,
        account: _Account,
        folder: str,
        uid: int,
        *,
        quick: bool = False,
        checked: int | None = None,
    ) -> tuple[str, bytes]:
        """The message's file and content. ``checked``: the names' version the caller saw
        confirmed by the index a moment ago (``message_reader``, one FETCH's run of
        messages); while it is still the names' version, no new check is made."""
        name = check_folder_name(folder)
        known = account.names.get((name, uid))
        if known is not None and (checked is None or checked != account.names_version):
            # Only while nobody committed since the names were read (an expunge elsewhere
            # leaves its file until the flush: the index must say the message is gone).
            try:
                current = self._data_version(account, open_probe=False)
            except sqlite3.Error:
                current = None
            if current is None or current != account.names_version:
                account.names.clear()
                known = None
        if known is not None:
            # The name this process last saw: right unless another process renamed or
            # removed the file since, which the index (below) then says.
            _, new, cur = self._paths(account, name)
            if known[1] is None:
                where = os.path.join(new, known[0])
            else:
                where = os.path.join(cur, f"{known[0]}:{known[1]}" if known[1] else known[0])
            try:
                return where, read_file(where)
            except FileNotFoundError:
                account.names.pop((name, uid), None)
        for attempt in range(2):
            path = os.fspath(self._find_message(account, name, uid))
            try:
                return path, read_file(path)
            except FileNotFoundError:
                if attempt:
                    break
                if quick:
                    raise WouldBlock(f"UID {uid} of {folder!r} moved: rescan first") from None
                # Another program renamed (flags) or removed it: rescan, then look again.
                if not self._try_sync_folder(account, name):
                    break
        raise NoSuchMessage(f"message UID {uid} of {folder!r} is gone from disk")

    @_reported
    def fetch_message(self, address: str, folder: str, uid: int, *, quick: bool = False) -> bytes:
        with self._use(address, quick=quick) as account:
            return to_wire(self._read_message(account, folder, uid, quick=quick)[1])

    def message_reader(
        self, address: str, folder: str, *, quick: bool = False
    ) -> Callable[[int], bytes]:
        # The names' version confirmed by the last read: the run asks the index whether
        # anyone committed once, not once per message (PRAGMA data_version is ~50 µs, about
        # what the file's read costs).
        checked: list[int | None] = [None]

        @_reported
        def read(uid: int) -> bytes:
            with self._use(address, quick=quick) as account:
                data = self._read_message(account, folder, uid, quick=quick, checked=checked[0])
                checked[0] = account.names_version
                return to_wire(data[1])

        return read

    @_reported
    def message_path(self, address: str, folder: str, uid: int) -> str:
        with self._use(address) as account:
            self._flush_account(account)  # a tool reads the file: give it the flushed name
            path = self._find_message(account, check_folder_name(folder), uid)
            if not path.exists():
                return self._read_message(account, folder, uid)[0]
            return str(path)

    @_reported
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
        name = check_folder_name(folder)
        mode = FlagMode(mode)
        bits, keywords = split_flags(flags)
        wanted = list(uids)
        if quick and len(wanted) > QUICK_STORE_MAX:
            raise WouldBlock("a large STORE")
        with self._use(address, quick=quick) as account:
            op = functools.partial(
                self._store_flags_one, account, name, wanted, mode, bits, keywords, unchanged_since
            )
            # quick: on the caller's loop, in one transaction: the few rows read, and changed
            # when the flags change (durable after sync_quick_writes).
            result = self._quick_change(account, name, op) if quick else self._combined(account, op)
        assert isinstance(result, StoreFlagsResult)
        return result

    def _store_flags_one(
        self,
        account: _Account,
        name: str,
        uids: list[int],
        mode: FlagMode,
        bits: int,
        keywords: dict[str, str],
        unchanged_since: int | None,
        conn: sqlite3.Connection,
        state: _Batch,
    ) -> StoreFlagsResult:
        """STORE in the batch's transaction: the rows change now; the files whose system
        flags changed are renamed by the next flush (``file_work``), so a STORE costs no
        rename and no directory fsync, and concurrent STOREs share one commit."""
        row = self._batch_folder(conn, account, state, name)
        updated: list[FlagUpdate] = []
        failed: list[int] = []
        modseq: int | None = None
        now_ns = time.time_ns()
        for m in AccountIndex.messages_by_uid(conn, row.id, uids):
            if unchanged_since is not None and m.modseq > unchanged_since:
                # RFC 7162 §3.1.3: changed since the client looked: leave it alone and
                # report it in [MODIFIED].
                failed.append(m.uid)
                continue
            new_bits, new_keywords = _new_flags(m, mode, bits, keywords)
            new_keyword_text = join_keywords(new_keywords)
            if new_bits == m.flags and new_keyword_text == m.keywords:
                continue  # nothing changes: the MODSEQ stays (RFC 7162 §3.1.3)
            if new_bits != m.flags:
                AccountIndex.add_rename(conn, row.id, m.filename, m.uid, now_ns)
                state.file_work = True
            if modseq is None:
                modseq = row.next_modseq()  # RFC 7162 §3.1.1: one per operation
            m.flags = new_bits
            m.keywords = new_keyword_text
            m.modseq = modseq
            AccountIndex.update_message(conn, row.id, m)
            updated.append(
                FlagUpdate(m.uid, modseq, flag_names(new_bits), frozenset(new_keywords.values()))
            )
        if modseq is not None:
            state.save[name] = row
            state.changes.add(name, ChangeKind.FLAGS)
        return StoreFlagsResult(tuple(updated), tuple(failed))

    @_reported
    def copy(self, address: str, source: str, uids: Iterable[int], target: str) -> CopyResult:
        return self._transfer(address, source, uids, target, move=False)

    @_reported
    def move(self, address: str, source: str, uids: Iterable[int], target: str) -> CopyResult:
        return self._transfer(address, source, uids, target, move=True)

    def _transfer(
        self, address: str, source: str, uids: Iterable[int], target: str, *, move: bool
    ) -> CopyResult:
        source = check_folder_name(source)
        target = check_folder_name(target)
        wanted = list(uids)
        changes = _Changes()
        with self._use(address) as account:
            with account.write_lock, account.index.write() as conn:
                src = self._require_folder(conn, source)
                dst = src if target == source else AccountIndex.folder(conn, target)
                if dst is None:
                    # RFC 3501 §6.4.7: the target must exist; IMAP answers [TRYCREATE].
                    raise NoSuchFolder(f"no folder {target!r}")
                result = self._transfer_locked(conn, account, src, wanted, dst, move, changes)
            for folder_name, kind in changes.items:
                self._notify(account.address, folder_name, kind)
        return result

    def _transfer_locked(
        self,
        conn: sqlite3.Connection,
        account: _Account,
        src: FolderRow,
        uids: Iterable[int],
        dst: FolderRow,
        move: bool,
        changes: _Changes,
    ) -> CopyResult:
        """COPY (hard links) or MOVE (renames) in the caller's transaction. The target's
        uidlist lines are written before the files appear, as for a delivery."""
        # Links and renames read the source names: our pending renames are done first.
        self._flush_folder_locked(conn, account, src, changes)
        src_path = self._dir(account, src.name)
        dst_path = self._dir(account, dst.name)
        pairs: list[tuple[int, int]] = []
        moved: list[MessageRow] = []
        copied_octets = 0
        lines: list[str] = []
        plans: list[tuple[MessageRow, Path, Path, MessageRow]] = []
        for m in AccountIndex.messages_by_uid(conn, src.id, uids):
            old_file = self._message_file(account, src.name, m)
            stored_size = _SIZE_FIELD.search(m.filename)
            base = new_base_name(
                self._host,
                int(stored_size.group(1)) if stored_size else file_size(old_file),
                m.size,
            )
            new_uid = dst.uidnext
            dst.uidnext += 1
            info = m.info
            new_file = (
                dst_path / "new" / base
                if info is None
                else dst_path / "cur" / (f"{base}:{info}" if info else base)
            )
            key = m.dedupe_key if move else None  # the delivery's key travels with a move
            copy_row = MessageRow(
                uid=new_uid,
                filename=base,
                info=info,
                flags=m.flags,
                keywords=m.keywords,
                internal_date=m.internal_date,
                size=m.size,
                modseq=0,
                dedupe_key=key,
            )
            lines.append(uidlist_line(new_uid, base, key))
            plans.append((m, old_file, new_file, copy_row))
        if not plans:
            return CopyResult(dst.uidvalidity, ())
        append_lines(dst_path / UIDLIST_FILE, "".join(lines))
        dst_modseq = dst.next_modseq()
        src_modseq = src.next_modseq() if move and src.id != dst.id else dst_modseq
        for m, old_file, new_file, copy_row in plans:
            try:
                if move:
                    os.rename(old_file, new_file)
                else:
                    os.link(old_file, new_file)
            except FileNotFoundError:
                continue  # gone meanwhile (another program); the next rescan notices
            if move:
                moved.append(m)
            copied_octets += m.size
            copy_row.modseq = dst_modseq
            source_rowid = AccountIndex.rowid(conn, src.id, m.uid)
            new_rowid = AccountIndex.insert_message(conn, dst.id, copy_row)
            if source_rowid is not None:
                AccountIndex.copy_text(conn, source_rowid, new_rowid)
            pairs.append((m.uid, copy_row.uid))
        if move:
            AccountIndex.delete_messages(conn, src, [m.uid for m in moved], src_modseq)
        else:
            AccountIndex.add_quota(conn, copied_octets, len(pairs))
        if self.durable:
            for directory in {dst_path / "new", dst_path / "cur"}:
                fsync_dir(directory)
            if move:
                for directory in {src_path / "new", src_path / "cur"}:
                    fsync_dir(directory)
        if move and src.id != dst.id:
            self._settle(conn, account, src)
            changes.add(src.name, ChangeKind.EXPUNGE)
        self._settle(conn, account, dst)
        changes.add(dst.name, ChangeKind.NEW)
        return CopyResult(dst.uidvalidity, tuple(pairs))

    @_reported
    def expunge(
        self,
        address: str,
        folder: str,
        uids: Iterable[int] | None = None,
        *,
        quick: bool = False,
    ) -> list[int]:
        name = check_folder_name(folder)
        wanted = None if uids is None else list(uids)
        if quick:
            # Clients send EXPUNGE and CLOSE when nothing is \\Deleted too: that is one
            # index read here; a real expunge is a write, made here too when the index is
            # free (durable after sync_quick_writes).
            with (
                self._use(address, quick=True) as account,
                self._current(account, name, quick=True) as (conn, row),
            ):
                if not AccountIndex.has_deleted(conn, row.id, wanted):
                    return []
            gone = self._quick_change(
                account, name, functools.partial(self._expunge_one, account, name, wanted)
            )
            assert isinstance(gone, list)
            return gone
        with self._use(address) as account:
            result = self._combined(
                account, functools.partial(self._expunge_one, account, name, wanted)
            )
        assert isinstance(result, list)
        return result

    def _expunge_one(
        self,
        account: _Account,
        name: str,
        uids: list[int] | None,
        conn: sqlite3.Connection,
        state: _Batch,
    ) -> list[int]:
        """EXPUNGE in the batch's transaction: the rows go now (recorded in `expunged`);
        the files are unlinked by the next flush (``file_work``)."""
        row = self._batch_folder(conn, account, state, name)
        candidates = (
            AccountIndex.messages(conn, row.id)
            if uids is None
            else AccountIndex.messages_by_uid(conn, row.id, uids)
        )
        # RFC 3501 §6.4.3 / RFC 4315 §2.1: only messages flagged \Deleted.
        doomed = [m for m in candidates if m.flags & DELETED]
        if not doomed:
            return []
        modseq = row.next_modseq()
        AccountIndex.delete_messages(conn, row, [m.uid for m in doomed], modseq)
        AccountIndex.add_quota(conn, -sum(m.size for m in doomed), -len(doomed))
        AccountIndex.add_unlinks(
            conn, row.id, [(m.filename, m.info) for m in doomed], time.time_ns()
        )
        for m in doomed:
            account.names.pop((name, m.uid), None)  # its file waits for the flush
        state.file_work = True
        state.save[name] = row
        state.changes.add(name, ChangeKind.EXPUNGE)
        return [m.uid for m in doomed]

    def _maybe_compact_uidlist(
        self, conn: sqlite3.Connection, account: _Account, folder: FolderRow
    ) -> None:
        """Rewrite the uidlist without the lines of expunged messages once it is mostly
        those. The header keeps N<uidnext> so that UIDs are never reused after a reindex."""
        path = self._dir(account, folder.name) / UIDLIST_FILE
        size = file_size(path)
        if size < _UIDLIST_COMPACT_BYTES:
            return
        rows = AccountIndex.messages(conn, folder.id)
        body = "".join(uidlist_line(m.uid, m.filename, m.dedupe_key) for m in rows)
        if size < 2 * len(body):
            return
        text = uidlist_header(folder.uidvalidity, folder.uidnext) + body
        replace_file(path, text.encode("utf-8"), sync=self.durable)

    # -- rescans --

    @_reported
    def sync_folder(self, address: str, folder: str) -> SyncReport:
        with self._use(address) as account:
            return self._sync_folder(account, check_folder_name(folder))

    def _try_sync_folder(
        self, account: _Account, name: str, *, only_if_changed: bool = False
    ) -> bool:
        """``_sync_folder`` for a reader: False (and one log line) when the disk is too full
        to record the rescan, so that the reader goes on with what the index has."""
        try:
            self._sync_folder(account, name, only_if_changed=only_if_changed)
        except (IndexNotWritable, OSError) as exc:
            if not is_no_space(exc) and not isinstance(exc, IndexNotWritable):
                raise
            _log_read_only(account, "rescan", exc)
            return False
        return True

    def _sync_folder(
        self, account: _Account, name: str, *, only_if_changed: bool = False
    ) -> SyncReport:
        """Rescan a folder. With `only_if_changed`, the on-disk test is made again under the
        write lock: a writer of this process renames and settles while holding it, so a
        reader that looked between the two must not take that for another program's change."""
        changes = _Changes()
        with account.write_lock, account.index.write() as conn:
            row = self._require_folder(conn, name)
            if only_if_changed and not self._changed_on_disk(account, row):
                return SyncReport(name)
            report = self._sync_locked(conn, account, row, changes)
        for folder_name, kind in changes.items:
            self._notify(account.address, folder_name, kind)
        return report

    def _scan(self, folder_dir: Path) -> dict[str, str | None]:
        """base -> info of every message file in new/ and cur/ (cur/ wins over new/; a cur/
        file without ":" has info "")."""
        found: dict[str, str | None] = {}
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(folder_dir / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                base, info = split_filename(entry.name)
                if sub == "new":
                    if info is not None:
                        # A new/ file with flags (some tools do this): move it to cur/.
                        with contextlib.suppress(OSError):
                            os.rename(entry.path, folder_dir / "cur" / entry.name)
                        found[base] = info
                    else:
                        found.setdefault(base, None)
                else:
                    found[base] = info if info is not None else ""
        return found

    def _sync_locked(
        self, conn: sqlite3.Connection, account: _Account, folder: FolderRow, changes: _Changes
    ) -> SyncReport:
        path = self._dir(account, folder.name)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        # The index is the truth: our renames and unlinks are done before the names on disk
        # are read, so no flag of ours is read back from a stale name and no file whose
        # expunge is pending is adopted again.
        self._flush_folder_locked(conn, account, folder, changes, settle=False)
        on_disk = self._scan(path)
        rows = {m.filename: m for m in AccountIndex.messages(conn, folder.id)}
        modseq: int | None = None

        def bump() -> int:
            nonlocal modseq
            if modseq is None:
                modseq = folder.next_modseq()
            return modseq

        vanished = [m for base, m in rows.items() if base not in on_disk]
        if vanished:
            AccountIndex.delete_messages(conn, folder, [m.uid for m in vanished], bump())
            AccountIndex.add_quota(conn, -sum(m.size for m in vanished), -len(vanished))
            changes.add(folder.name, ChangeKind.EXPUNGE)
        flags_changed = 0
        for base, m in rows.items():
            info = on_disk.get(base, m.info)
            if base not in on_disk or info == m.info:
                continue
            new_bits = flags_from_info(info)
            m.info = info
            if new_bits != m.flags:
                m.flags = new_bits
                m.modseq = bump()
                flags_changed += 1
                changes.add(folder.name, ChangeKind.FLAGS)
            AccountIndex.update_message(conn, folder.id, m)
        unknown = [base for base in on_disk if base not in rows]
        adopted = 0
        if unknown:
            uidlist = read_uidlist(path / UIDLIST_FILE)
            entries = uidlist.entries if uidlist else {}

            def order(base: str) -> tuple[int, tuple[int, int, str]]:
                listed = entries.get(base)
                return (listed[0] if listed else 1 << 62, name_order(base))

            lines: list[str] = []
            for base in sorted(unknown, key=order):
                info = on_disk[base]
                file = (
                    path / "new" / base
                    if info is None
                    else path / "cur" / (f"{base}:{info}" if info else base)
                )
                try:
                    st = os.stat(file)
                    vsize_field = _VSIZE_FIELD.search(base)
                    size = (
                        int(vsize_field.group(1)) if vsize_field else crlf_size(file.read_bytes())
                    )
                except FileNotFoundError:
                    continue
                listed = entries.get(base)
                # A listed UID is used only if the index never handed it out: below uidnext
                # it belongs to another message or to an expunged one (never reused).
                if listed is not None and listed[0] >= folder.uidnext:
                    uid = listed[0]
                else:
                    uid = folder.uidnext
                    lines.append(uidlist_line(uid, base, listed[1] if listed else None))
                folder.uidnext = uid + 1
                key = listed[1] if listed else None
                if key is not None and AccountIndex.find_dedupe(conn, key) is not None:
                    key = None  # already delivered elsewhere; keep the file, not the claim
                AccountIndex.insert_message(
                    conn,
                    folder.id,
                    MessageRow(
                        uid=uid,
                        filename=base,
                        info=info,
                        flags=flags_from_info(info),
                        keywords="",
                        internal_date=st.st_mtime,  # Dovecot: mtime is INTERNALDATE
                        size=size,
                        modseq=bump(),
                        dedupe_key=key,
                    ),
                )
                AccountIndex.add_quota(conn, size, 1)
                adopted += 1
            if lines:
                append_lines(path / UIDLIST_FILE, "".join(lines))
            if adopted:
                changes.add(folder.name, ChangeKind.NEW)
                log.info(
                    "adopted %d message file(s) in %s of %s", adopted, folder.name, account.address
                )
        self._settle(conn, account, folder)
        return SyncReport(folder.name, adopted, len(vanished), flags_changed)

    @_reported
    def sync(self, address: str) -> list[SyncReport]:
        reports: list[SyncReport] = []
        changes = _Changes()
        with self._use(address) as account:
            with account.write_lock, account.index.write() as conn:
                known = {f.name: f for f in AccountIndex.folders(conn)}
                on_disk = set(self._folder_dirs(account))
                for name in sorted(on_disk - set(known)):
                    # A folder made by hand or by another program: adopt it.
                    known[name] = self._create_folder_locked(
                        conn, account, name, SPECIAL_FOLDERS.get(name)
                    )
                    changes.add(name, ChangeKind.FOLDERS)
                for name in sorted(set(known) - on_disk):
                    folder = known.pop(name)
                    octets, count = AccountIndex.remove_folder(conn, folder.id)
                    AccountIndex.add_quota(conn, -octets, -count)
                    reports.append(SyncReport(name, 0, count, 0))
                    changes.add(name, ChangeKind.FOLDERS)
                earlier = {r.folder: r for r in account.open_reports}
                account.open_reports = []
                for name in sorted(known, key=lambda n: (n != INBOX, n)):
                    report = self._sync_locked(conn, account, known[name], changes)
                    if name in earlier:  # found when this process opened the account
                        before = earlier[name]
                        report = SyncReport(
                            name,
                            report.adopted + before.adopted,
                            report.vanished + before.vanished,
                            report.flags_changed + before.flags_changed,
                        )
                    reports.append(report)
            for folder_name, kind in changes.items:
                self._notify(account.address, folder_name, kind)
        self._sweep(account)
        return reports

    def _folder_dirs(self, account: _Account) -> dict[str, Path]:
        """Every folder on disk: INBOX (the root) and each ".Name" dir with cur/ or new/."""
        found = {INBOX: account.root}
        try:
            entries = list(os.scandir(account.root))
        except FileNotFoundError:
            return found
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            name = folder_from_dir_name(entry.name)
            if name is None or name == INBOX:
                continue
            path = Path(entry.path)
            if (path / "cur").is_dir() or (path / "new").is_dir():
                found[name] = path
        return found

    # -- reindex --

    @_reported
    def reindex(self, address: str) -> ReindexReport:
        root = self.account_root(address)
        self._retire(address)
        index_path = root / INDEX_FILE
        root.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        index = AccountIndex(index_path, durable=self.durable)
        old: _OldIndex | None = None
        existed = index_path.exists()
        try:
            index.migrate()
            if existed:
                # The renames and unlinks the index still owes the files are done first.
                self._flush_account(_Account(address.lower(), root, index))
            old = self._read_old_index(index) if existed else None
        except (sqlite3.DatabaseError, IndexDamaged) as exc:
            if isinstance(exc, sqlite3.Error) and not is_damage(exc):
                raise StoreError(f"the mailbox index {index_path}: {exc}") from None
            index.close()
            aside = index_path.with_name(f"{INDEX_FILE}.damaged-{int(time.time())}")
            os.replace(index_path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{index_path}{suffix}")
            notes.append(f"the old index could not be read ({exc}); it was moved to {aside}")
            index = AccountIndex(index_path, durable=self.durable)
            index.migrate()
        if old is None and not notes:
            notes.append("there was no index; UIDs come from the uidlist files")
        account = _Account(address.lower(), root, index)
        try:
            with account.write_lock, index.write() as conn:
                AccountIndex.wipe(conn)
                report = self._rebuild(conn, account, old)
        finally:
            index.close()
        self._sweep(account)
        return ReindexReport(
            report.folders,
            report.messages,
            report.kept_uids,
            report.new_uids,
            report.new_uidvalidity,
            tuple(notes),
        )

    @staticmethod
    def _read_old_index(index: AccountIndex) -> _OldIndex:
        with index.read() as conn:
            folders = {f.name: f for f in AccountIndex.folders(conn)}
            messages = {
                folder.name: {m.filename: m for m in AccountIndex.messages(conn, folder.id)}
                for folder in folders.values()
            }
            return _OldIndex(folders, messages, AccountIndex.subscriptions(conn))

    def _rebuild(
        self, conn: sqlite3.Connection, account: _Account, old: _OldIndex | None
    ) -> ReindexReport:
        """Fill an empty index from the files. UIDs come from pochta-uidlist (else
        dovecot-uidlist, for a mailbox moved from Dovecot), else from the old index; a folder
        with neither gets new UIDs and a new UIDVALIDITY (RFC 3501 §2.3.1.1)."""
        folders_done = messages_done = kept = fresh = 0
        changed_validity: list[str] = []
        dirs = self._folder_dirs(account)
        for name in SPECIAL_FOLDERS:
            dirs.setdefault(name, self._dir(account, name))
        subscribed: set[str] = set()
        for name in sorted(dirs, key=lambda n: (n != INBOX, n)):
            path = self._make_folder_dirs(account, name)
            uidlist = read_uidlist(path / UIDLIST_FILE) or read_uidlist(path / DOVECOT_UIDLIST_FILE)
            old_folder = old.folders.get(name) if old else None
            files = self._scan(path)
            if uidlist is not None and uidlist.uidvalidity:
                uidvalidity = uidlist.uidvalidity
                AccountIndex.note_uidvalidity(conn, uidvalidity)
                listed = {b: e[0] for b, e in uidlist.entries.items()}
            elif old_folder is not None:
                uidvalidity = old_folder.uidvalidity
                AccountIndex.note_uidvalidity(conn, uidvalidity)
                listed = {}
            else:
                uidvalidity = self._new_uidvalidity(conn, account)
                listed = {}
                if files:
                    changed_validity.append(name)
            keys = {b: e[1] for b, e in uidlist.entries.items()} if uidlist else {}
            old_rows = old.messages.get(name, {}) if old else {}
            if old_folder is not None:
                highest = old_folder.highestmodseq + 1
            elif uidlist is not None and files:
                # The MODSEQs handed out before the index was lost are unknown; RFC 7162
                # §3.1.1 needs new ones above them. Milliseconds since 1970 exceed any count
                # of changes a folder can have had, so clients see every message as changed.
                highest = time.time_ns() // 1_000_000
            else:
                highest = 1
            uidnext = max(
                uidlist.uidnext if uidlist else 1, old_folder.uidnext if old_folder else 1, 1
            )
            # Which UID each file keeps: its uidlist line, else its old index row.
            claimed: dict[int, str] = {}
            for base in sorted(files, key=name_order):
                uid = listed.get(base)
                if (
                    uid is None
                    and base in old_rows
                    and uidvalidity == (old_folder.uidvalidity if old_folder else -1)
                ):
                    uid = old_rows[base].uid
                if uid is not None and uid not in claimed:
                    claimed[uid] = base
            uidnext = max([uidnext, *(u + 1 for u in claimed)])
            kept_bases = {b: u for u, b in claimed.items()}
            role: str | None = old_folder.special_use if old_folder else SPECIAL_FOLDERS.get(name)
            folder = AccountIndex.add_folder(
                conn,
                name,
                uidvalidity=uidvalidity,
                uidnext=uidnext,
                highestmodseq=highest,
                special_use=role,
                created=old_folder.created if old_folder else None,
            )
            rows: list[MessageRow] = []
            for base in sorted(files, key=lambda b: (kept_bases.get(b, 1 << 62), name_order(b))):
                info = files[base]
                file = (
                    path / "new" / base
                    if info is None
                    else path / "cur" / (f"{base}:{info}" if info else base)
                )
                try:
                    st = os.stat(file)
                    vsize_field = _VSIZE_FIELD.search(base)
                    size = (
                        int(vsize_field.group(1)) if vsize_field else crlf_size(file.read_bytes())
                    )
                except FileNotFoundError:
                    continue
                uid = kept_bases.get(base)
                if uid is None:
                    uid = folder.uidnext
                    folder.uidnext += 1
                    fresh += 1
                else:
                    kept += 1
                before = old_rows.get(base)
                key = keys.get(base) or (before.dedupe_key if before else None)
                row = MessageRow(
                    uid=uid,
                    filename=base,
                    info=info,
                    flags=flags_from_info(info),
                    keywords=before.keywords if before else "",
                    internal_date=before.internal_date if before else st.st_mtime,
                    size=size,
                    modseq=highest,
                    dedupe_key=key,
                )
                AccountIndex.insert_message(conn, folder.id, row)
                rows.append(row)
            rows.sort(key=lambda r: r.uid)
            text = uidlist_header(uidvalidity, folder.uidnext) + "".join(
                uidlist_line(r.uid, r.filename, r.dedupe_key) for r in rows
            )
            replace_file(path / UIDLIST_FILE, text.encode("utf-8"), sync=self.durable)
            self._settle(conn, account, folder)
            folders_done += 1
            messages_done += len(rows)
            if name in SPECIAL_FOLDERS or name == INBOX:
                subscribed.add(name)
        if old is not None:
            subscribed = set(old.subscriptions)
        else:
            from_file = read_subscriptions(account.root / SUBSCRIPTIONS_FILE)
            if from_file is not None:
                subscribed = from_file
        for name in subscribed:
            AccountIndex.set_subscribed(conn, name, True)
        self._write_subscriptions(conn, account)
        AccountIndex.recount_quota(conn)
        if self.durable:
            fsync_dir(account.root)
        return ReindexReport(folders_done, messages_done, kept, fresh, tuple(changed_validity))

    # -- the whole account --

    @_reported
    def purge_account(self, address: str) -> bool:
        root = self.account_root(address)
        self._retire(address)
        if not root.exists():
            return False
        aside = root.with_name(f".{_DELETED_PREFIX}{root.name}-{secrets.token_hex(4)}")
        os.rename(root, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return True
