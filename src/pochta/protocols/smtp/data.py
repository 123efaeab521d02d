"""Message content framing: DATA's dot-stuffed lines (RFC 5321 §4.5.2) and BDAT chunks
(RFC 3030 §2).

``DataReader`` is where SMTP smuggling is stopped. Only ``CRLF "." CRLF`` ends a message
(RFC 5321 §4.1.1.4); only CRLF ends a line (RFC 5321 §2.3.8). A bare CR or LF is content:

* ``bare_newline="normalize"`` (the default, as Postfix 3.9's smtpd_forbid_bare_newline):
  each bare LF becomes CRLF in the content, so mail from scripts that write "\n" (Python's
  ``email.header.Header.encode()`` folds with it) is accepted; a "." line reached through a
  bare LF is content, never the terminator, and never dot-unstuffed.
* ``bare_newline="reject"``: the message is read to the real terminator and refused with
  550 5.5.2 (``BARE_LINEFEED``).

A bare CR is normalised too, to CRLF. Deviation from Postfix, which keeps a bare CR as an
ordinary octet: RFC 5322 §2.3 lets CR appear only in CRLF, the store keeps CRLF text and IMAP
cannot send a bare CR in a literal (RFC 9051 §4.3), so a lone CR (old Mac line ends) is
taken as the line end its writer meant.

BDAT content (``ChunkedMessage``) is normalised the same way in "normalize" mode unless the
transaction declared BODY=BINARYMIME (RFC 3030 §3: any octet, kept as sent); it has no
terminator, so it cannot smuggle.

Both readers consume from the caller's buffer and never hold more than the current line
(bounded by ``max_line_bytes``) plus the content (bounded by ``max_message_bytes``): once a
limit is passed, the rest is counted and dropped, and the failure is reported at the end,
after the terminator, so the client and the server agree on where the message stopped.
"""

from __future__ import annotations

import re
from typing import Literal

from pochta.protocols.smtp.replies import (
    BARE_LINEFEED,
    LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    Reply,
)

__all__ = ["ChunkedMessage", "DataReader"]

_BARE = re.compile(rb"[\r\n]")
_LINE_END = re.compile(rb"\r\n|\r|\n")  # CRLF, or a bare CR or LF: each becomes CRLF


class DataReader:
    """Reads DATA content after the 354 reply, up to and including ``CRLF.CRLF``.

    Call ``feed(buf)`` with everything received; it returns how many octets it used (the
    caller drops them) and sets ``done`` once the terminator was read. Then ``failure`` is
    None and ``content`` holds the message (unstuffed, CRLF line ends), or ``failure`` is the
    reply to send instead. The result does not depend on how the input was split.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int,
        max_line_bytes: int,
        bare_newline: Literal["reject", "normalize"],
    ) -> None:
        self._max_message = max_message_bytes
        self._max_line = max_line_bytes
        self._normalize = bare_newline == "normalize"
        self._content = bytearray()
        self.size = 0  # octets of content so far (after unstuffing and normalising)
        self.done = False
        self._mid_line = False  # part of the current line has been used already
        self._segment = 0  # octets since the last line end (CRLF, or a bare CR/LF)
        self._too_big = False
        self._too_long = False
        self._bare = False

    @property
    def failure(self) -> Reply | None:
        """Why the message is refused, if it is. One fixed order, so that the reply does not
        depend on which problem happened to be seen first."""
        if self._too_big:
            return MESSAGE_TOO_BIG  # RFC 5321 §4.5.3.1.10, RFC 1870 §6.3: 552 5.3.4
        if self._bare:
            return BARE_LINEFEED  # RFC 5321 §2.3.8: 550 5.5.2
        if self._too_long:
            return LINE_TOO_LONG  # RFC 5321 §4.5.3.1.6: 500 5.5.6 (we do not split lines)
        return None

    @property
    def content(self) -> bytes:
        return bytes(self._content)

    def feed(self, buf: bytes | bytearray) -> int:
        """Use what can be used of ``buf``; return the number of octets used."""
        pos = 0
        end = len(buf)
        fast_tried = not self._mid_line
        if fast_tried:
            pos = self._feed_plain_lines(buf, 0)
        while not self.done:
            i = buf.find(b"\r\n", pos)
            if i >= 0:
                line = bytes(buf[pos:i])
                pos = i + 2
                if not self._mid_line:
                    if line == b".":
                        self.done = True  # RFC 5321 §4.1.1.4: CRLF "." CRLF ends the data
                        break
                    if line.startswith(b"."):
                        line = line[1:]  # RFC 5321 §4.5.2: drop the stuffed dot
                was_mid_line = self._mid_line
                self._add(line, end_of_line=True)
                self._mid_line = False
                if was_mid_line and not fast_tried:
                    # The line left over from the previous read is complete: try the rest
                    # in one piece (once per call, so a block that needs the loop costs
                    # no repeated scans).
                    fast_tried = True
                    pos += self._feed_plain_lines(buf, pos)
                continue
            # No CRLF yet: the line is incomplete.
            if not self._mid_line:
                # Its first octets decide whether it is the terminator or stuffed; "." and
                # ".\r" could still become ".\r\n", so wait for three octets.
                if end - pos < 3:
                    break
                if buf[pos] == 0x2E:  # "."; not the terminator, or find() had found it
                    pos += 1
                self._mid_line = True
            # Keep the last octet back: a CR there may be the start of the line's CRLF.
            if end - 1 > pos:
                self._add(bytes(buf[pos : end - 1]), end_of_line=False)
                pos = end - 1
            break
        return pos

    def _feed_plain_lines(self, buf: bytes | bytearray, start: int) -> int:
        """Fast path: take the complete lines at the start of ``buf`` in one piece when none
        of them needs a rule (no line starting with ".", no bare CR or LF). The line loop in
        ``feed`` does the same work per line; this only saves the Python loop. Returns how
        many octets it used (0 when the block needs the line loop)."""
        if buf[start : start + 1] == b".":
            return 0
        # Stop before the first line that starts with "." (stuffed, or the terminator).
        dot = buf.find(b"\r\n.", start)
        last = dot if dot >= 0 else buf.rfind(b"\r\n", start)
        if last < start:
            return 0
        block = bytes(buf[start : last + 2])
        lines = block.split(b"\r\n")  # the last one is the empty rest after the final CRLF
        crlf = len(lines) - 1
        if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
            return 0
        longest = max(map(len, lines))
        if longest + 2 > self._max_line:
            self._too_long = True  # RFC 5321 §4.5.3.1.6, as in _add
        self.size += len(block)
        if self._max_message and self.size > self._max_message:
            self._too_big = True
        if self.failure is not None:
            self._content.clear()
        else:
            self._content += block
        return len(block)

    def _add(self, piece: bytes, *, end_of_line: bool) -> None:
        # Every CR or LF inside ``piece`` is bare: a CR before an LF would have been a CRLF.
        if _BARE.search(piece):
            if self._normalize:
                self._check_segments(_BARE.split(piece))
                piece = piece.replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            else:
                self._bare = True  # RFC 5321 §2.3.8: refused after the terminator
        else:
            self._segment += len(piece)
        if end_of_line:
            # RFC 5321 §4.5.3.1.6: a text line is at most the limit, CRLF included.
            if self._segment + 2 > self._max_line:
                self._too_long = True
            self._segment = 0
            piece += b"\r\n"
        elif self._segment + 1 > self._max_line:
            self._too_long = True  # it can only grow
        self.size += len(piece)
        if self._max_message and self.size > self._max_message:
            self._too_big = True  # RFC 1870 §6.3: refuse after the data, keep reading
        if self.failure is not None:
            self._content.clear()  # it will not be delivered: hold nothing
        else:
            self._content += piece

    def _check_segments(self, segments: list[bytes]) -> None:
        # Normalize mode: each bare CR/LF ends a line of the normalised content.
        first, *middle, last = segments
        lengths = [self._segment + len(first), *(len(s) for s in middle)]
        if max(lengths) + 2 > self._max_line:
            self._too_long = True
        self._segment = len(last)


class ChunkedMessage:
    """The content of a BDAT transaction (RFC 3030 §2): chunks of exact octet counts,
    no dot-stuffing, any octet allowed. With ``normalize`` each bare CR or LF becomes CRLF
    (a CR at the end of a chunk waits for the next one: it may be the CR of a CRLF).
    Octets past ``max_message_bytes`` are counted and dropped; ``failure`` is then 552
    5.3.4."""

    def __init__(self, *, max_message_bytes: int, normalize: bool = False) -> None:
        self._max_message = max_message_bytes
        self._normalize = normalize
        self._content = bytearray()
        self._cr = False  # normalize: the last chunk ended with a CR not yet written
        self.size = 0  # octets of content so far (after normalising)

    @property
    def failure(self) -> Reply | None:
        size = self.size + (2 if self._cr else 0)
        if self._max_message and size > self._max_message:
            return MESSAGE_TOO_BIG  # RFC 3030 §2 / RFC 1870 §6.3: 552 5.3.4
        return None

    @property
    def content(self) -> bytes:
        return bytes(self._content) + (b"\r\n" if self._cr else b"")

    def add(self, octets: bytes | bytearray) -> None:
        if self._normalize:
            data = (b"\r" if self._cr else b"") + bytes(octets)
            self._cr = data.endswith(b"\r")
            if self._cr:
                data = data[:-1]
            octets = _LINE_END.sub(b"\r\n", data)  # RFC 5322 §2.3: CR and LF only as CRLF
        self.size += len(octets)
        if self.failure is not None:
            self._content.clear()
        else:
            self._content += octets
