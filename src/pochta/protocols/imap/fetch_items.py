"""One requested FETCH item, normalised (RFC 9051 §6.4.5)."""

from __future__ import annotations

from dataclasses import dataclass

# Items answered from the view alone.
META = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
# Items that set \Seen unless the mailbox is read-only (RFC 9051 §6.4.5).
SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})


@dataclass(frozen=True, slots=True)
class FetchItem:
    kind: str  # FLAGS UID INTERNALDATE RFC822.SIZE MODSEQ ENVELOPE BODYSTRUCTURE BODY
    #            SECTION BINARY BINARY.SIZE RFC822 RFC822.HEADER RFC822.TEXT
    part: tuple[int, ...] = ()
    text: str | None = None  # HEADER HEADER.FIELDS HEADER.FIELDS.NOT TEXT MIME
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    peek: bool = False
    name: str = ""  # how the response names it, e.g. "BODY[HEADER.FIELDS (FROM)]<0>"

    @property
    def sets_seen(self) -> bool:
        return (self.kind in ("SECTION", "BINARY") and not self.peek) or self.kind in SETS_SEEN

    @property
    def needs_message(self) -> bool:
        return self.kind not in META and self.kind not in ("ENVELOPE", "BODYSTRUCTURE", "BODY")
