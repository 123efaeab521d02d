"""Binary MIME parts of an APPENDed message, re-encoded as base64 before they are stored.

RFC 3516 §4.4 lets a client APPEND binary content (a literal8); RFC 3516 §4.3 lets the
server keep it in any form as long as FETCH BINARY gives the original octets back. The
store keeps messages as CRLF text (NUL and bare CR or LF cannot survive that, nor can they
go out in a BODY[] literal, RFC 9051 §4.3), so a leaf part that is ``binary`` or holds NUL
is rewritten as base64: BODY[] then shows valid text and BINARY[] decodes to the exact
octets the client sent. Dovecot does the same.
"""

from __future__ import annotations

import base64

from pochta.access.imap_mime import Part, leaf_parts, parse_structure

_NEW_CTE = b"Content-Transfer-Encoding: base64\r\n"


def needs_encoding(message: bytes) -> bool:
    """Cheap test first: only messages that may hold binary parts are parsed."""
    return b"\0" in message or b"binary" in message.lower()


def encode_binary_parts(message: bytes) -> bytes:
    """`message` with each binary leaf part as base64; unchanged when there is none."""
    root = parse_structure(message)
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement)
    for part in leaf_parts(root):
        body = message[part.body_start : part.end]
        cte = (part.value("content-transfer-encoding") or b"").strip().lower()
        if cte != b"binary" and b"\0" not in body:
            continue
        edits.extend(_reencode(message, part, body))
    if not edits:
        return message
    out = bytearray(message)
    for start, end, replacement in sorted(edits, reverse=True):
        out[start:end] = replacement
    return bytes(out)


def _reencode(message: bytes, part: Part, body: bytes) -> list[tuple[int, int, bytes]]:
    encoded = base64.encodebytes(body).replace(b"\n", b"\r\n")
    edits = [(part.body_start, part.end, encoded)]
    fields = [f for f in part.fields if f[0] == "content-transfer-encoding"]
    if fields:
        for _, _, start, end in fields:
            edits.append((start, end, b""))
        first = fields[0][2]
        edits.append((first, first, _NEW_CTE))
    else:
        start = part.body_start
        if start >= 2 and start - 2 >= part.header_start and message[start - 2 : start] == b"\r\n":
            # The header ends with an empty line just before the body: the field goes first.
            edits.append((start - 2, start - 2, _NEW_CTE))
        else:  # no header at all: give it one
            edits.append((start, start, _NEW_CTE + b"\r\n"))
    return edits
