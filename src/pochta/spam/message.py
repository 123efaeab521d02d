"""One message as the spam checks read it, parsed once per scan.

The checks (heuristics, Bayes, URI blocklists) need the decoded header values, the text of
the body parts, the links and the attachments. :class:`ScanMessage` parses the content once,
with the standard library's ``email`` package (``policy.compat32``: its header objects of
``policy.default`` cost more than the whole scan otherwise; the checks read header values
through :meth:`ScanMessage.header`, decoded here), within limits a client
cannot raise: only the first :data:`MAX_SCAN_BYTES` of a message are parsed (SpamAssassin's
``spamc`` stops at 500 KB, Rspamd's Bayes at its own limits), at most :data:`MAX_PARTS` MIME
parts are read, and each part's text is cut at :data:`MAX_PART_TEXT`. Nothing here raises on
bad input: a part whose charset is unknown or whose bytes do not decode is read with
replacement characters and counted in :attr:`ScanMessage.decode_errors`, which the charset
heuristics score.

HTML parts are read with :class:`html.parser.HTMLParser` (never a regular expression over
markup): the visible text (``script`` and ``style`` left out), every ``<a href>`` with the
text shown for it, and ``<img src>``.
"""

from __future__ import annotations

import codecs
import email.errors
import email.policy
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from functools import cached_property
from html.parser import HTMLParser

from pochta.mime.addresses import parse_address_list
from pochta.mime.headers import SplitMessage, split_message

__all__ = [
    "MAX_ADDRESSES",
    "MAX_PARTS",
    "MAX_PART_TEXT",
    "MAX_SCAN_BYTES",
    "MAX_URLS",
    "Attachment",
    "Author",
    "Link",
    "ScanMessage",
    "TextPart",
]

MAX_SCAN_BYTES = 1024 * 1024
"""Bytes of a message that are parsed; the rest is not scanned (a larger message is rarely
spam, and the cost of a scan must not grow with what a client sends)."""
MAX_PARTS = 100
"""MIME parts read per message; the rest are not looked at."""
MAX_PART_TEXT = 256 * 1024
"""Characters of text kept per part."""
MAX_URLS = 200
"""Links kept per message (URI blocklist lookups are bounded separately)."""
MAX_ADDRESSES = 1000
"""Addresses read per address field (From, To, Cc)."""

# Links in plain text: an explicit scheme, or a name starting with "www.".
_TEXT_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'`{}|\\^\[\]]+")
_TRAILING = ".,;:!?)'\""


@dataclass(frozen=True, slots=True)
class TextPart:
    """One text part: its content type (``text/plain``, ``text/html``), its declared charset
    ("" when none) and its decoded text (for HTML: the visible text, markup removed)."""

    content_type: str
    charset: str
    text: str
    transfer_encoding: str = ""  # Content-Transfer-Encoding, lower case; "" when absent
    raw_8bit: bool = False  # the encoded body holds octets above 127 (RFC 2045 §2.7: 7bit)


@dataclass(frozen=True, slots=True)
class Author:
    """The first mailbox of the From field: its display name (RFC 2047 words decoded, ""
    when none) and its address (``local@domain``, the domain lower case; "" when the field
    held no parsable mailbox)."""

    name: str
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Link:
    """A link: the URL as written, and for an HTML anchor the text shown for it (None for a
    link found in plain text or an image source)."""

    url: str
    shown: str | None = None
    source: str = "text"  # "text", "href" or "img"


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part that is not shown as text: its file name ("" when none), content type and the
    size of its encoded body in bytes."""

    filename: str
    content_type: str
    size: int


@dataclass(slots=True)
class _Parsed:
    text_parts: list[TextPart] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    decode_errors: int = 0
    parts: int = 0
    truncated: bool = False
    defects: int = 0


class ScanMessage:
    """A message parsed for scanning; every property is computed once, on first use."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    @cached_property
    def split(self) -> SplitMessage:
        """The byte-exact header fields and body (:mod:`pochta.mime.headers`)."""
        return split_message(self.content)

    @cached_property
    def email(self) -> Message:
        """The first :data:`MAX_SCAN_BYTES` parsed by ``email`` (``policy.compat32``)."""
        return BytesParser(policy=email.policy.compat32).parsebytes(self.content[:MAX_SCAN_BYTES])

    def header(self, name: str) -> str | None:
        """The first field ``name`` decoded (RFC 2047 encoded words, unfolded), None when
        absent. Never raises: undecodable words are kept as written."""
        found = self.split.get_all(name.lower())
        if not found:
            return None
        return decode_header_text(found[0].text)

    def headers(self, name: str) -> list[str]:
        """Every field ``name``, decoded as :meth:`header` does."""
        return [decode_header_text(f.text) for f in self.split.get_all(name.lower())]

    @cached_property
    def author(self) -> Author | None:
        """The first mailbox of the first From field, None when there is no From field.
        The address list is parsed on the field as written (mime/addresses.py), so an
        encoded word in the display name cannot pose as the address."""
        found = self.split.get_all("from")
        if not found:
            return None
        for entry in parse_address_list(found[0].text, limit=MAX_ADDRESSES):
            if entry.domain is None:  # a group's start or end
                continue
            name = decode_header_text(entry.name) if entry.name else ""
            if not entry.mailbox or not entry.domain:
                return Author(name, "")
            return Author(name, f"{entry.mailbox}@{entry.domain.lower()}")
        return Author("", "")

    def address_count(self, name: str) -> int:
        """Mailboxes in every ``name`` field (To, Cc), counted up to :data:`MAX_ADDRESSES`."""
        count = 0
        for fld in self.split.get_all(name.lower()):
            entries = parse_address_list(fld.text, limit=MAX_ADDRESSES)
            count += sum(1 for e in entries if e.domain is not None and not e.is_group_start)
            if count >= MAX_ADDRESSES:
                return MAX_ADDRESSES
        return count

    @property
    def text_parts(self) -> list[TextPart]:
        return self._parsed.text_parts

    @property
    def attachments(self) -> list[Attachment]:
        return self._parsed.attachments

    @property
    def links(self) -> list[Link]:
        """Every link in the text parts, HTML anchors and images, in order (at most
        :data:`MAX_URLS`)."""
        return self._parsed.links

    @property
    def decode_errors(self) -> int:
        """Text parts whose charset was unknown or whose bytes did not decode in it."""
        return self._parsed.decode_errors

    @property
    def truncated(self) -> bool:
        """True when the message was larger than what was scanned (bytes or parts)."""
        return self._parsed.truncated

    @property
    def defects(self) -> int:
        """MIME defects the parser noted (missing boundaries, bad encodings, ...)."""
        return self._parsed.defects

    @cached_property
    def text(self) -> str:
        """The text of every text part, joined by newlines (what Bayes and the body
        heuristics read)."""
        return "\n".join(p.text for p in self.text_parts)

    @cached_property
    def _parsed(self) -> _Parsed:
        out = _Parsed(truncated=len(self.content) > MAX_SCAN_BYTES)
        for part in self.email.walk():
            if out.parts >= MAX_PARTS:
                out.truncated = True
                break
            out.parts += 1
            out.defects += len(part.defects)
            if part.is_multipart():
                continue
            _read_part(part, out)
        return out


def decode_header_text(text: str) -> str:
    """RFC 2047 encoded words decoded and folding removed; bad words are kept as written."""
    unfolded = re.sub(r"\r?\n[ \t]", " ", text)
    if "=?" not in unfolded:
        return unfolded
    try:
        return str(make_header(decode_header(unfolded)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return unfolded


def _read_part(part: Message, out: _Parsed) -> None:
    content_type = part.get_content_type()
    disposition = part.get_content_disposition()
    filename = _filename(part)
    if content_type in ("text/plain", "text/html") and disposition != "attachment":
        text, bad = _part_text(part)
        out.decode_errors += bad
        charset = part.get_content_charset() or ""
        if content_type == "text/html":
            reader = _HtmlReader()
            try:
                reader.feed(text)
                reader.close()
            except (AssertionError, ValueError):  # html.parser on hostile markup
                pass
            text = reader.visible_text()
            _add_links(out, reader.links)
        elif _may_hold_links(text):
            _add_links(out, [Link(_clean_url(m.group())) for m in _TEXT_URL.finditer(text)])
        encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
        out.text_parts.append(
            TextPart(content_type, charset, text[:MAX_PART_TEXT], encoding, _raw_8bit(part))
        )
        return
    payload = part.get_payload(decode=False)
    size = len(payload) if isinstance(payload, str | bytes) else 0
    out.attachments.append(Attachment(filename, content_type, size))


def _may_hold_links(text: str) -> bool:
    """Whether ``_TEXT_URL`` can match at all: every link it finds begins with "http" or
    "www." in some case. Lowering the text and two substring tests cost a tenth of the
    case-blind regular expression's walk over text that has no link."""
    lowered = text.lower()
    return "http" in lowered or "www." in lowered


def _raw_8bit(part: Message) -> bool:
    """Whether the part's body as sent holds octets above 127 (the parser keeps them as
    non-ASCII characters in the undecoded payload)."""
    payload = part.get_payload(decode=False)
    return isinstance(payload, str) and not payload[: MAX_PART_TEXT * 4].isascii()


def _filename(part: Message) -> str:
    try:
        return decode_header_text(str(part.get_filename() or ""))
    except (email.errors.HeaderParseError, LookupError, ValueError):
        return ""


def _part_text(part: Message) -> tuple[str, int]:
    """The part's text, and 1 when its charset was unknown or its bytes did not decode."""
    raw = part.get_payload(decode=True)
    data = raw if isinstance(raw, bytes) else b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        return data[: MAX_PART_TEXT * 4].decode("utf-8", "replace"), 1
    try:
        return data[: MAX_PART_TEXT * 4].decode(charset), 0
    except UnicodeDecodeError:
        # us-ascii that is really 8-bit: common and harmless in old mail; count it anyway.
        return data[: MAX_PART_TEXT * 4].decode(charset, "replace"), 1
    except LookupError:
        return data[: MAX_PART_TEXT * 4].decode("utf-8", "replace"), 1


def _add_links(out: _Parsed, links: list[Link]) -> None:
    room = MAX_URLS - len(out.links)
    if room > 0:
        out.links.extend(links[:room])


def _clean_url(url: str) -> str:
    return url.rstrip(_TRAILING)


class _HtmlReader(HTMLParser):
    """Visible text, anchors with their shown text, and image sources of an HTML part."""

    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._hidden = 0
        self._anchor: str | None = None
        self._anchor_text: list[str] = []
        self.links: list[Link] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "a":
            self._close_anchor()
            href = dict(attrs).get("href")
            if href:
                self._anchor = href.strip()
                self._anchor_text = []
        elif tag == "img":
            src = dict(attrs).get("src")
            if src and len(self.links) < MAX_URLS:
                self.links.append(Link(src.strip(), None, "img"))
        elif tag in ("br", "p", "div", "tr", "li"):
            self._chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._chunks.append(data)
        if self._anchor is not None:
            self._anchor_text.append(data)

    def _close_anchor(self) -> None:
        if self._anchor is not None and len(self.links) < MAX_URLS:
            shown = " ".join("".join(self._anchor_text).split())
            self.links.append(Link(self._anchor, shown, "href"))
        self._anchor = None
        self._anchor_text = []

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def visible_text(self) -> str:
        return re.sub(r"[ \t]+", " ", "".join(self._chunks)).strip()
