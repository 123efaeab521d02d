"""The maildrop as one POP3 session sees it: message numbers, sizes, unique-ids and marks.

RFC 1939 §5: at login the server numbers the messages 1..n; the numbers do not change during
the session, and a message marked deleted keeps its number but may no longer be referred to.
The list is a snapshot: mail arriving later is seen by the next session (the numbers could
not stay fixed otherwise; Dovecot does the same).

Unique-ids (RFC 1939 §7 UIDL) follow Dovecot's default ``pop3_uidl_format = %08Xu%08Xv``: the
message's UID and then the folder's UIDVALIDITY, each as 8 upper-case hexadecimal digits. A
UID never changes and is never reused while UIDVALIDITY stays the same, so the id is stable
across sessions and restarts; and mail moved from Dovecot with its dovecot-uidlist keeps its
UIDs, so clients that "leave mail on the server" do not download everything again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Maildrop", "MaildropMessage", "unique_id"]

# RFC 1939 §7 UIDL: "The unique-id of a message ... consists of one to 70 characters in the
# range 0x21 to 0x7E".
_UNIQUE_ID = re.compile(r"[\x21-\x7e]{1,70}")


def unique_id(uidvalidity: int, uid: int) -> str:
    """The UIDL unique-id of message ``uid`` in a folder with ``uidvalidity`` (both 32-bit,
    RFC 3501 §2.3.1.1); the Dovecot default format, see the module docstring."""
    return f"{uid:08X}{uidvalidity:08X}"


@dataclass(frozen=True, slots=True)
class MaildropMessage:
    uid: int  # the store's UID: what RETR fetches and QUIT deletes
    size: int  # RFC 1939 §5 LIST: octets as sent (CRLF line ends), i.e. RFC822.SIZE
    unique_id: str  # RFC 1939 §7 UIDL

    def __post_init__(self) -> None:
        if not _UNIQUE_ID.fullmatch(self.unique_id):
            raise ValueError(f"unique-id {self.unique_id!r} is not 1-70 characters 0x21-0x7E")
        if self.size < 0:
            raise ValueError("a message size cannot be negative")


class Maildrop:
    """Numbers 1..n over a fixed list; DELE marks, RSET unmarks, RETR is remembered."""

    def __init__(self, messages: Sequence[MaildropMessage]) -> None:
        self._messages = tuple(messages)
        self._deleted: set[int] = set()  # message numbers
        self._retrieved: set[int] = set()

    def __len__(self) -> int:
        """How many messages the session started with (deleted ones included)."""
        return len(self._messages)

    def get(self, number: int) -> MaildropMessage | None:
        """Message ``number`` (1-based), or None when there is none or it is marked deleted
        (RFC 1939 §5: "may NOT refer to a message marked as deleted")."""
        if number < 1 or number > len(self._messages) or number in self._deleted:
            return None
        return self._messages[number - 1]

    def exists(self, number: int) -> bool:
        return 1 <= number <= len(self._messages)

    def is_deleted(self, number: int) -> bool:
        return number in self._deleted

    def visible(self) -> Iterable[tuple[int, MaildropMessage]]:
        """(number, message) of the messages not marked deleted, in order."""
        for i, message in enumerate(self._messages, 1):
            if i not in self._deleted:
                yield i, message

    @property
    def count(self) -> int:
        """RFC 1939 §5 STAT: messages not marked deleted."""
        return len(self._messages) - len(self._deleted)

    @property
    def octets(self) -> int:
        """RFC 1939 §5 STAT: their size in octets."""
        return sum(m.size for _, m in self.visible())

    def delete(self, number: int) -> None:
        self._deleted.add(number)

    def reset(self) -> None:
        """RFC 1939 §5 RSET: unmark every message marked deleted."""
        self._deleted.clear()

    def mark_retrieved(self, number: int) -> None:
        self._retrieved.add(number)

    @property
    def deleted_uids(self) -> tuple[int, ...]:
        return tuple(self._messages[n - 1].uid for n in sorted(self._deleted))

    @property
    def retrieved_uids(self) -> tuple[int, ...]:
        """UIDs sent with RETR and not marked deleted."""
        keep = sorted(self._retrieved - self._deleted)
        return tuple(self._messages[n - 1].uid for n in keep)
