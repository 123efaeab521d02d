"""Training the Bayes classifier: from files (``pochta spam learn``) and from IMAP.

:class:`Trainer` learns one message as spam or ham, for a user or globally: a user's learn
goes into the user's statistics and, with ``[bayes] learn_global`` (the default), into the
global ones too, so every user's Junk moves help the users who have not trained enough yet
(the global statistics are what the check uses for them). :func:`read_messages` reads what
``pochta spam learn`` is given: a message file, an mbox file (a file that starts with
``From ``), a Maildir (its ``cur`` and ``new``) or a folder of any of these.

:class:`MailboxTrainer` is what the IMAP sessions are handed (``runtime.SpamTrainer``):
Thunderbird and Apple Mail say "this is junk" by moving a message into the Junk folder
and/or setting the ``$Junk`` keyword, and "not junk" by moving it out or setting
``$NotJunk``. The session calls it after its answer has gone out; it only queues the work
on one background thread, which reads the messages from the store, learns them and logs
each learn, so the IMAP answer never waits for the statistics.
"""

from __future__ import annotations

import mailbox
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pochta.config.settings import Settings
from pochta.logs import get_logger
from pochta.spam.bayes import message_digest, token_hashes
from pochta.spam.bayes_store import GLOBAL, BayesStore, LearnOutcome
from pochta.spam.message import ScanMessage

__all__ = [
    "JUNK_KEYWORD",
    "NOT_JUNK_KEYWORD",
    "MailboxTrainer",
    "Source",
    "Trainer",
    "mailbox_trainer",
    "read_messages",
    "transfer_signal",
]

log = get_logger("spam")

JUNK_KEYWORD = "$junk"
NOT_JUNK_KEYWORD = "$notjunk"
JUNK_FOLDER = "junk"
TRASH_FOLDER = "trash"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""A file larger than this is not read as one message (counted unreadable)."""


class Unreadable(Exception):
    """A message that cannot be learned; the text says why."""


class Trainer:
    """Learns messages into the statistics (blocking: call it from a thread)."""

    def __init__(self, store: BayesStore, *, learn_global: bool = True) -> None:
        self.store = store
        self.learn_global = learn_global

    def learn(self, content: bytes, *, spam: bool, user: str = "") -> LearnOutcome:
        """Learn ``content`` as spam or ham for ``user`` ("" = globally only). Raises
        :class:`Unreadable` for something that is not a message."""
        message = ScanMessage(content)
        if not content.strip() or not message.split.headers:
            raise Unreadable("not a message: no header fields")
        scopes = [user.lower()] if user else []
        if not user or self.learn_global:
            scopes.append(GLOBAL)
        return self.store.learn(scopes, message_digest(message), token_hashes(message), spam=spam)


# -- messages from files ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """One message to learn: where it came from and its bytes (None when unreadable, with
    the reason)."""

    name: str
    content: bytes | None
    error: str = ""


def read_messages(paths: Iterable[Path]) -> Iterator[Source]:
    """Every message in ``paths`` (files, mbox files, Maildirs, folders), in order."""
    for path in paths:
        if path.is_dir():
            yield from _read_folder(path)
        else:
            yield from _read_file(path)


def count_files(paths: Iterable[Path]) -> int:
    """How many files :func:`read_messages` will open (the progress bar's length)."""
    return sum(1 for _ in _files(paths))


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from _folder_files(path)
        else:
            yield path


def _folder_files(folder: Path) -> Iterator[Path]:
    if (folder / "cur").is_dir() or (folder / "new").is_dir():
        # A Maildir: its messages are in cur/ and new/ (tmp/ holds unfinished writes).
        for sub in ("cur", "new"):
            if (folder / sub).is_dir():
                yield from sorted(p for p in (folder / sub).iterdir() if p.is_file())
        return
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            yield from _folder_files(path)
        elif path.is_file():
            yield path


def _read_folder(folder: Path) -> Iterator[Source]:
    for path in _folder_files(folder):
        yield from _read_file(path)


def _read_file(path: Path) -> Iterator[Source]:
    try:
        with path.open("rb") as f:
            head = f.read(5)
        size = path.stat().st_size
    except OSError as exc:
        yield Source(str(path), None, exc.strerror or str(exc))
        return
    if head == b"From ":
        yield from _read_mbox(path)
        return
    if size > MAX_MESSAGE_BYTES:
        yield Source(str(path), None, f"larger than {MAX_MESSAGE_BYTES} bytes")
        return
    try:
        yield Source(str(path), path.read_bytes())
    except OSError as exc:
        yield Source(str(path), None, exc.strerror or str(exc))


def _read_mbox(path: Path) -> Iterator[Source]:
    try:
        box = mailbox.mbox(path, create=False)
        keys = box.keys()
    except (OSError, mailbox.Error) as exc:
        yield Source(str(path), None, str(exc))
        return
    try:
        for number, key in enumerate(keys, 1):
            try:
                content = box.get_bytes(key)
            except (OSError, KeyError) as exc:
                yield Source(f"{path}#{number}", None, str(exc))
                continue
            yield Source(f"{path}#{number}", content)
    finally:
        box.close()


# -- from IMAP ------------------------------------------------------------------------------

Role = Literal["junk", "trash", "other"]


def transfer_signal(source: Role, target: Role) -> bool | None:
    """What a MOVE/COPY from a folder of role ``source`` to one of role ``target`` says:
    True spam (into Junk), False ham (out of Junk, except into Trash: deleting junk says
    nothing), None nothing."""
    if target == "junk" and source != "junk":
        return True
    if source == "junk" and target not in ("junk", "trash"):
        return False
    return None


class FolderReader(Protocol):
    """What the trainer reads from the mail store (``store.base.MailStore``)."""

    def list_folders(self, address: str) -> Sequence[_FolderLike]: ...

    def fetch_message(self, address: str, folder: str, uid: int) -> bytes: ...


class _FolderLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def special_use(self) -> str | None: ...


def mailbox_trainer(settings: Settings, store: FolderReader) -> MailboxTrainer | None:
    """The IMAP sessions' trainer of a mail system, None when ``[bayes]`` is off."""
    if not settings.bayes.enabled:
        return None
    trainer = Trainer(BayesStore(settings.directory_db), learn_global=settings.bayes.learn_global)
    return MailboxTrainer(trainer, store)


@dataclass(slots=True)
class MailboxTrainer:
    """The IMAP sessions' trainer (``runtime.SpamTrainer``): queues learns on one thread."""

    trainer: Trainer
    store: FolderReader
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="bayes-learn")
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    pending: set[Future[None]] = field(default_factory=set)

    def messages_moved(self, account: str, source: str, target: str, uids: Sequence[int]) -> None:
        """MOVE or COPY of ``uids`` (their UIDs in ``target``) from ``source``; returns at
        once, the work is done on the trainer's thread."""
        if uids:
            self._submit(self._moved, account, source, target, list(uids))

    def keywords_added(
        self, account: str, folder: str, uids: Sequence[int], keywords: Iterable[str]
    ) -> None:
        """STORE that added ``keywords`` to ``uids`` of ``folder``: $Junk learns spam,
        $NotJunk ham (both set: nothing); returns at once."""
        lowered = {k.lower() for k in keywords}
        junk, not_junk = JUNK_KEYWORD in lowered, NOT_JUNK_KEYWORD in lowered
        if uids and junk != not_junk:
            reason = "$Junk" if junk else "$NotJunk"
            self._submit(self._learn_uids, account, folder, list(uids), junk, reason)

    def close(self) -> None:
        """Finish the queued learns, then close the statistics."""
        self._executor.shutdown(wait=True)
        self.trainer.store.close()

    def _submit(self, func: object, *args: object) -> None:
        assert callable(func)
        future: Future[None] = self._executor.submit(func, *args)
        with self._lock:
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self.pending.discard(future)
        exc = future.exception()
        if exc is not None:
            log.error("bayes_learn_failed", error=str(exc))

    def _role(self, account: str, folder: str) -> Role:
        for info in self.store.list_folders(account):
            if info.name == folder:
                if info.special_use == "\\Junk":
                    return "junk"
                if info.special_use == "\\Trash":
                    return "trash"
                break
        lowered = folder.lower()
        if lowered == JUNK_FOLDER:
            return "junk"
        return "trash" if lowered == TRASH_FOLDER else "other"

    def _moved(self, account: str, source: str, target: str, uids: list[int]) -> None:
        spam = transfer_signal(self._role(account, source), self._role(account, target))
        if spam is not None:
            reason = f"moved into {target}" if spam else f"moved out of {source} into {target}"
            self._learn_uids(account, target, uids, spam, reason)

    def _learn_uids(
        self, account: str, folder: str, uids: list[int], spam: bool, reason: str
    ) -> None:
        for uid in uids:
            try:
                content = self.store.fetch_message(account, folder, uid)
                outcome = self.trainer.learn(content, spam=spam, user=account)
            except Unreadable as exc:
                log.info(
                    "bayes_learn_skipped", user=account, folder=folder, uid=uid, reason=str(exc)
                )
                continue
            log.info(
                "bayes_learn",
                user=account,
                folder=folder,
                uid=uid,
                learned="spam" if spam else "ham",
                outcome=outcome,
                reason=reason,
            )
