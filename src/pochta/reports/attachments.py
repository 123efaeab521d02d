"""The report document out of a report message: gzip, zip or plain, size-capped.

RFC 7489 §7.2.1.1: the aggregate report is an attachment, ``application/gzip`` when
compressed (``application/zip`` is widespread too), else ``text/xml``; RFC 8460 §5.3 does
the same for TLS-RPT JSON (``application/tlsrpt+gzip``). Senders label parts badly, so the
compression is found by its magic bytes, not only by the content type.

Every size is capped, so a small message cannot become a large document: the compressed
part (``MAX_COMPRESSED_BYTES``), the decompressed document (``MAX_DOCUMENT_BYTES``, read no
further than that: a decompression bomb stops there) and the members of a zip
(``MAX_ZIP_MEMBERS``).
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
import zlib
from email.message import EmailMessage

__all__ = [
    "MAX_COMPRESSED_BYTES",
    "MAX_DOCUMENT_BYTES",
    "MAX_ZIP_MEMBERS",
    "ReportFormatError",
    "decompress",
    "report_documents",
]

MAX_COMPRESSED_BYTES = 10 * 1024 * 1024
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
MAX_ZIP_MEMBERS = 4

_GZIP = b"\x1f\x8b"
_ZIP = b"PK\x03\x04"


class ReportFormatError(ValueError):
    """A report that cannot be read; the text says why."""


def decompress(data: bytes, *, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The document in ``data`` (gzip, zip or as it is), at most ``limit`` octets."""
    if len(data) > MAX_COMPRESSED_BYTES:
        raise ReportFormatError(f"attachment of {len(data)} octets, over {MAX_COMPRESSED_BYTES}")
    if data.startswith(_GZIP):
        return _gunzip(data, limit)
    if data.startswith(_ZIP):
        return _unzip(data, limit)
    if len(data) > limit:
        raise ReportFormatError(f"document of {len(data)} octets, over {limit}")
    return data


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # RFC 1952 gzip framing
    try:
        out = inflater.decompress(data, limit + 1)  # never more than limit + 1 octets
    except zlib.error as exc:
        raise ReportFormatError(f"bad gzip data: {exc}") from None
    if len(out) > limit:
        raise ReportFormatError(f"gzip document larger than {limit} octets (refused)")
    return out


def _unzip(data: bytes, limit: int) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ReportFormatError(f"bad zip data: {exc}") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise ReportFormatError("empty zip archive")
        if len(members) > MAX_ZIP_MEMBERS:
            raise ReportFormatError(f"zip with {len(members)} members, over {MAX_ZIP_MEMBERS}")
        member = members[0]
        if member.file_size > limit:
            raise ReportFormatError(f"zip member of {member.file_size} octets, over {limit}")
        try:
            with archive.open(member) as f:
                out = f.read(limit + 1)  # the header's size may lie: read no further
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error) as exc:
            raise ReportFormatError(f"bad zip member: {exc}") from None
    if len(out) > limit:
        raise ReportFormatError(f"zip document larger than {limit} octets (refused)")
    return out


def report_documents(message: bytes, *, limit: int = MAX_DOCUMENT_BYTES) -> list[bytes]:
    """Each decompressed document attached to ``message``, in order (the first leaf part
    that is compressed, XML or JSON; the text parts around it are skipped)."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    found: list[bytes] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        head = payload.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        compressed = payload.startswith(_GZIP) or payload.startswith(_ZIP)
        document = head in (b"<", b"{") and (
            ctype.endswith("xml") or ctype.endswith("json") or part.get_filename() is not None
        )
        if compressed or document or ctype in ("application/gzip", "application/zip"):
            found.append(decompress(payload, limit=limit))
    if not found:
        raise ReportFormatError("no gzip, zip, XML or JSON attachment in the message")
    return found
