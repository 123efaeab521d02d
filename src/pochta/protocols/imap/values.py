"""IMAP data values as plain Python objects (RFC 9051 §4), shared by the response writer and
the producers of response data (ENVELOPE, BODYSTRUCTURE, LIST, STATUS, ...).

The convention:

* ``None`` is NIL;
* ``int`` is a number (``0 <= n < 2**63``);
* ``str`` is a string: the writer sends it quoted when it can and as a literal otherwise
  (8-bit text, CR, LF, too long);
* ``bytes`` is a string of raw octets (message data): quoted when short and plain, else a
  literal;
* ``Atom`` is sent as it is, unquoted (flags, keywords, ``\\Noselect``, response codes);
* ``list`` and ``tuple`` are parenthesised lists of values.
"""

from __future__ import annotations

from typing import TypeAlias


class Atom(str):
    """An atom or flag written verbatim: ``Atom("\\\\Seen")`` is sent as ``\\Seen``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


IMAPValue: TypeAlias = "int | str | bytes | Atom | list[IMAPValue] | tuple[IMAPValue, ...] | None"
