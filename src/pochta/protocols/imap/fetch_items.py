"""One requested FETCH item, normalised (RFC 9051 §6.4.5)."""

from __future__ import annotations

from dataclasses import dataclass

# Items answered from the view alone.
META = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})
# Items that set \Seen unless the mailbox is read-only (RFC 9051 §6.4.5).
SETS_SEEN = frozenset({"RFC822", "RFC822.TEXT"})
TOP_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


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
    def top_header(self) -> bool:
        """The message's own header, whole or some fields (RFC822.HEADER, BODY[HEADER],
        BODY[HEADER.FIELDS (...)], BODY[HEADER.FIELDS.NOT (...)]): the structure cache
        keeps it, so it needs no read of the message when cached."""
        return self.kind == "RFC822.HEADER" or (
            self.kind == "SECTION" and not self.part and self.text in TOP_HEADER_TEXTS
        )

    @property
    def needs_message(self) -> bool:
        return self.kind not in META and self.kind not in ("ENVELOPE", "BODYSTRUCTURE", "BODY")
