"""MIME structure of a stored message for IMAP FETCH, with byte-exact offsets (RFC 9051
§6.4.5 sections, §7.5.2 ENVELOPE and BODYSTRUCTURE; RFC 2045-2046 for the structure;
RFC 3516 for BINARY).

Input is a message with CRLF line ends (what the store returns). Nothing here raises on a
malformed message: a part without its closing boundary ends where the message ends, a
header without an empty line is all header, and an unreadable Content-Type is text/plain.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pochta.access.imap_headers import decode_value, raw_fields
from pochta.mime.addresses import parse_address_list
from pochta.protocols.imap.values import IMAPValue

MAX_DEPTH = 50
MAX_PARTS = 5000

_NAME = rb"[\x21-\x39\x3b-\x7e]+"  # a field name (RFC 5322 §3.6.8: printable, no colon)
_FIELD = re.compile(rb"(" + _NAME + rb")[ \t]*:")
_NAMES = re.compile(_NAME)
# A field's lines after its name: the colon, the rest of the line and the lines that fold it
# (RFC 5322 §2.2.3), each ended by CRLF.
_FIELD_LINES = rb"[ \t]*:[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*"
# A header block whose every line is a field or folds one, every line ended by CRLF, with or
# without the empty line that ends it: one field is one match of a pattern at a line start.
_PLAIN_HEADER = re.compile(rb"(?:" + _NAME + _FIELD_LINES + rb")*(?:\r\n)?")
_ANY_FIELD = re.compile(rb"^(" + _NAME + rb")" + _FIELD_LINES, re.MULTILINE)
_TOKEN_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', re.DOTALL)


class UnknownTransferEncoding(Exception):
    """BINARY of a part whose Content-Transfer-Encoding we cannot decode (RFC 3516 §4.3:
    the server answers NO [UNKNOWN-CTE])."""


@dataclass(slots=True)
class Part:
    header_start: int
    body_start: int
    end: int
    fields: list[tuple[str, bytes, int, int]]  # (lower name, unfolded value, start, end)
    maintype: str = "text"
    subtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    children: list[Part] = field(default_factory=list)
    message: Part | None = None  # the encapsulated message of message/rfc822

    def value(self, name: str) -> bytes | None:
        for n, v, _, _ in self.fields:
            if n == name:
                return v
        return None

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Where the body starts: after the empty line that ends the header."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    i = raw.find(b"\r\n\r\n", start, end)
    return end if i < 0 else i + 4


def header_end(raw: bytes) -> int:
    """Where the message's body starts (its header's length, the empty line included)."""
    return _header_end(raw, 0, len(raw))


def header_part(header: bytes, *, fields: bool = True) -> Part:
    """A header block alone as the root part, with only its fields parsed (none without
    ``fields``: HEADER and RFC822.HEADER take the block whole): what the message's HEADER
    sections (RFC 9051 §6.4.5) are cut from; no Content-Type is read."""
    size = len(header)
    return Part(0, size, size, _fields(header, 0, size) if fields else [])


def select_fields(header: bytes, names: tuple[str, ...], *, exclude: bool = False) -> bytes | None:
    """HEADER.FIELDS (or, with ``exclude``, HEADER.FIELDS.NOT) of a header block (RFC 9051
    §6.4.5), cut out by a pattern rather than by splitting every field: the same octets as
    :func:`fetch_section` gives. None when the block holds a line that is neither a field
    nor folds one, or a line not ended by CRLF: those take the general path."""
    if _PLAIN_HEADER.fullmatch(header) is None:
        return None
    return _field_selector(names, exclude)(header)


@functools.lru_cache(maxsize=256)
def _field_selector(names: tuple[str, ...], exclude: bool) -> Callable[[bytes], bytes]:
    """What cuts the fields named ``names`` (or all others) from a plain header block: made
    once per list of names (a FETCH asks the same of every message)."""
    # A name that is no field name selects nothing (``_fields`` reads names as ASCII).
    wanted = frozenset(b for b in (n.lower().encode() for n in names) if _NAMES.fullmatch(b))
    if exclude:

        def others(header: bytes) -> bytes:
            kept = [m[0] for m in _ANY_FIELD.finditer(header) if m[1].lower() not in wanted]
            return b"".join(kept) + b"\r\n"

        return others
    if not wanted:
        return lambda header: b"\r\n"
    # Names compared as ASCII without case, at a line start.
    pattern = re.compile(
        rb"^(?:" + b"|".join(re.escape(n) for n in sorted(wanted)) + rb")" + _FIELD_LINES,
        re.MULTILINE | re.IGNORECASE,
    )

    def named(header: bytes) -> bytes:
        return b"".join(pattern.findall(header)) + b"\r\n"

    return named


_FOLD = re.compile(rb"\r\n([ \t])")


def _fields(raw: bytes, start: int, stop: int) -> list[tuple[str, bytes, int, int]]:
    """(lower name, unfolded value, start, end) of each field; end includes the CRLF."""
    found: list[tuple[str, int, int, int]] = []  # name, value offset, start, end
    pos = start
    while pos < stop:
        nl = raw.find(b"\r\n", pos, stop)
        line_end = stop if nl < 0 else nl + 2
        line = raw[pos:line_end]
        if line in (b"\r\n", b""):
            break
        if line[:1] in (b" ", b"\t"):
            if found:
                name, offset, s0, _ = found[-1]
                found[-1] = (name, offset, s0, line_end)
        else:
            m = _FIELD.match(line)
            if m:
                found.append((m.group(1).decode("ascii").lower(), m.end(), pos, line_end))
        pos = line_end
    result = []
    for name, offset, s0, e0 in found:
        value = raw[s0 + offset : e0]
        if b"\r\n " in value or b"\r\n\t" in value:  # folded (RFC 5322 §2.2.3)
            value = _FOLD.sub(rb"\1", value)
        result.append((name, value.strip(), s0, e0))
    return result


def _split_type(value: bytes | None) -> tuple[str, str, list[tuple[str, str]]]:
    if value is None:
        return "", "", []
    text = value.decode("utf-8", "replace")
    main, _, rest = text.partition(";")
    maintype, _, subtype = main.strip().partition("/")
    params = parse_params(";" + rest if rest else "")
    return maintype.strip().lower(), subtype.strip().lower(), params


def parse_params(text: str) -> list[tuple[str, str]]:
    """Parameters of Content-Type/Disposition, RFC 2231 continuations joined (the charset
    of extended values left encoded, as IMAP reports them)."""
    params: list[tuple[str, str]] = []
    for m in _TOKEN_PARAM.finditer(text):
        name, value = m.group(1).strip().lower(), m.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.append((name, value))
    joined: dict[str, list[tuple[int, str]]] = {}
    simple: list[tuple[str, str]] = []
    for name, value in params:
        cont = re.fullmatch(r"(.+)\*(\d+)\*?", name)
        if cont:
            joined.setdefault(cont.group(1), []).append((int(cont.group(2)), value))
        else:
            simple.append((name.rstrip("*"), value))
    for name, pieces in joined.items():
        simple.append((name, "".join(v for _, v in sorted(pieces))))
    return simple


def parse_structure(
    raw: bytes,
    start: int = 0,
    end: int | None = None,
    depth: int = 0,
    default: tuple[str, str] = ("text", "plain"),
    budget: list[int] | None = None,
) -> Part:
    end = len(raw) if end is None else end
    budget = budget if budget is not None else [MAX_PARTS]
    budget[0] -= 1
    body_start = _header_end(raw, start, end)
    fields = _fields(raw, start, body_start)
    part = Part(start, body_start, end, fields)
    maintype, subtype, params = _split_type(part.value("content-type"))
    if not maintype or not subtype:
        maintype, subtype = default
        params = [("charset", "us-ascii")] if default == ("text", "plain") else []
    part.maintype, part.subtype, part.params = maintype, subtype, params
    if depth >= MAX_DEPTH or budget[0] <= 0:
        return part
    if maintype == "multipart":
        boundary = dict(params).get("boundary")
        if boundary:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            for s, e in _split_multipart(raw, body_start, end, boundary.encode("utf-8", "replace")):
                part.children.append(parse_structure(raw, s, e, depth + 1, child_default, budget))
        if not part.children:
            # RFC 2046 §5.1: a multipart with no parts — shown as one empty text part.
            part.children.append(Part(body_start, body_start, body_start, []))
    elif maintype == "message" and subtype in ("rfc822", "global"):
        part.message = parse_structure(raw, body_start, end, depth + 1, ("text", "plain"), budget)
    return part


def _split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Body ranges of the parts (RFC 2046 §5.1.1: the CRLF before a delimiter belongs to it)."""
    delim = b"--" + boundary
    positions: list[tuple[int, int, bool]] = []  # (line start, after line, is close)
    pos = start
    while pos < end:
        i = raw.find(delim, pos, end)
        if i < 0:
            break
        if i == start or raw[i - 2 : i] == b"\r\n":
            after = i + len(delim)
            close = raw[after : after + 2] == b"--"
            nl = raw.find(b"\r\n", after, end)
            line_end = end if nl < 0 else nl + 2
            positions.append((i, line_end, close))
            if close:
                break
            pos = line_end
        else:
            pos = i + len(delim)
    parts = []
    for (_, body_from, close), nxt in zip(positions, [*positions[1:], None], strict=False):
        if close:
            break
        if nxt is None:
            parts.append((body_from, end))
        else:
            stop = nxt[0] - 2 if nxt[0] - 2 >= body_from else nxt[0]
            parts.append((body_from, max(body_from, stop)))
    return parts


# -- ENVELOPE -------------------------------------------------------------------------------


def _nstring(value: bytes | None) -> IMAPValue:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _envelope_string(text: str | None) -> str | bytes | None:
    """A parsed address field as an IMAP string: 8-bit octets that are not UTF-8 go out as
    they came (they were read with surrogateescape)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _addresses(part: Part, name: str) -> list[IMAPValue] | None:
    """RFC 9051 §7.5.2: the address structures of every `name` field of the part, or None
    (NIL) when there is no field or no address in it.

    Parsed like Dovecot (pochta.mime.addresses): a group is a start entry (NIL NIL "name"
    NIL) and an end entry (NIL NIL NIL NIL) around its members, a missing local part or
    domain reads MISSING_MAILBOX or MISSING_DOMAIN (a NIL host would mean a group), and
    display names are sent as written, RFC 2047 encoded words included. Several fields of
    one name count as one comma-separated list, as Dovecot does, so that no From field
    hides behind another.
    """
    out: list[IMAPValue] = []
    for field_name, value, _, _ in part.fields:
        if field_name != name:
            continue
        text = value.decode("utf-8", "surrogateescape")
        for addr in parse_address_list(text, fill_missing=True):
            out.append(
                [
                    _envelope_string(addr.name),
                    _envelope_string(addr.route),
                    _envelope_string(addr.mailbox),
                    _envelope_string(addr.domain),
                ]
            )
    return out or None


def envelope(part: Part) -> IMAPValue:
    """RFC 9051 §7.5.2 ENVELOPE of a message part."""
    from_ = _addresses(part, "from")
    # RFC 9051 §7.5.2: a missing Sender or Reply-To is the From; so is one without an
    # address in it (an empty field), as in Dovecot.
    return [
        _nstring(part.value("date")),
        _nstring(part.value("subject")),
        from_,
        _addresses(part, "sender") or from_,
        _addresses(part, "reply-to") or from_,
        _addresses(part, "to"),
        _addresses(part, "cc"),
        _addresses(part, "bcc"),
        _nstring(part.value("in-reply-to")),
        _nstring(part.value("message-id")),
    ]


# -- BODY / BODYSTRUCTURE -----------------------------------------------------------------


def _lines(raw: bytes, start: int, end: int) -> int:
    n = raw.count(b"\n", start, end)
    if end > start and raw[end - 1 : end] != b"\n":
        n += 1
    return n


def _param_list(params: list[tuple[str, str]]) -> IMAPValue:
    if not params:
        return None
    out: list[IMAPValue] = []
    for k, v in params:
        out += [k, v]
    return out


def _disposition(part: Part) -> IMAPValue:
    value = part.value("content-disposition")
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    kind, _, rest = text.partition(";")
    return [kind.strip().lower(), _param_list(parse_params(";" + rest if rest else ""))]


def _language(part: Part) -> IMAPValue:
    value = part.value("content-language")
    if value is None:
        return None
    langs: list[IMAPValue] = [
        x.strip() for x in value.decode("utf-8", "replace").split(",") if x.strip()
    ]
    return langs or None


def body_structure(part: Part, extended: bool, raw: bytes | None = None) -> IMAPValue:
    if raw is None:
        raise ValueError("raw is needed")
    if part.is_multipart:
        out: list[IMAPValue] = [body_structure(c, extended, raw) for c in part.children]
        out.append(part.subtype)
        if extended:
            out += [
                _param_list(part.params),
                _disposition(part),
                _language(part),
                _nstring(part.value("content-location")),
            ]
        return out
    cte = part.value("content-transfer-encoding")
    fields: list[IMAPValue] = [
        part.maintype,
        part.subtype,
        _param_list(part.params),
        _nstring(part.value("content-id")),
        _nstring(part.value("content-description")),
        (cte.decode("utf-8", "replace").strip().lower() if cte else "7bit"),
        part.end - part.body_start,
    ]
    if part.message is not None:
        fields += [
            envelope(part.message),
            body_structure(part.message, extended, raw),
            _lines(raw, part.body_start, part.end),
        ]
    elif part.maintype == "text":
        fields.append(_lines(raw, part.body_start, part.end))
    if extended:
        fields += [
            _nstring(part.value("content-md5")),
            _disposition(part),
            _language(part),
            _nstring(part.value("content-location")),
        ]
    return fields


# -- sections ------------------------------------------------------------------------------


def leaf_parts(top: Part) -> Iterator[Part]:
    """The leaf parts at or below ``top``: neither multipart nor message/rfc822 (whose
    enclosed message is walked instead)."""
    stack = [top]
    while stack:
        part = stack.pop()
        if part.is_multipart:
            stack.extend(part.children)
        elif part.message is not None:
            stack.append(part.message)
        else:
            yield part


def find_part(root: Part, path: tuple[int, ...]) -> Part | None:
    """RFC 9051 §6.4.5 part numbering: the parts of a multipart are 1..n; part 1 of a
    non-multipart is its body; below a message/rfc822 part the numbers address the parts
    of the message it holds."""
    part = root
    for depth, n in enumerate(path):
        if depth > 0 and part.message is not None:
            part = part.message
        if part.is_multipart:
            if n > len(part.children):
                return None
            part = part.children[n - 1]
        elif n != 1:
            return None
    return part


def fetch_section(
    raw: bytes, root: Part, path: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()
) -> bytes:
    part = find_part(root, path)
    if part is None:
        return b""
    if text is None:
        if not path:
            return raw
        return raw[part.body_start : part.end]
    if text == "MIME":
        return raw[part.header_start : part.body_start]
    msg = part if not path else part.message
    if msg is None:
        return b""
    if text == "TEXT":
        return raw[msg.body_start : msg.end]
    if text == "HEADER":
        return raw[msg.header_start : msg.body_start]
    wanted = {f.lower() for f in fields}
    keep = [
        raw[s:e] for name, _, s, e in msg.fields if (name in wanted) == (text == "HEADER.FIELDS")
    ]
    return b"".join(line if line.endswith(b"\r\n") else line + b"\r\n" for line in keep) + b"\r\n"


def decode_quoted_printable(body: bytes) -> bytes:
    """RFC 2045 §6.7: whitespace at the end of an encoded line is not data (rule 3) and
    "=" ending a line is a soft line break, also when whitespace follows it (rule 5).
    Lines come out with CRLF; a "=" not followed by two hex digits is kept as it is."""
    lines = re.split(rb"\r?\n", body)
    out: list[bytes] = []
    for i, line in enumerate(lines):
        line = line.rstrip(b" \t")
        last = i == len(lines) - 1
        if line.endswith(b"="):
            out.append(binascii.a2b_qp(line[:-1]))
        else:
            out.append(binascii.a2b_qp(line) + (b"" if last else b"\r\n"))
    return b"".join(out)


def decoded_body(raw: bytes, part: Part) -> bytes | None:
    """A leaf part's body decoded from its Content-Transfer-Encoding (RFC 2045 §6); None
    when its base64 cannot be read; UnknownTransferEncoding for an encoding RFC 2045 does
    not define (RFC 3516 §4.2: the server answers UNKNOWN-CTE)."""
    body = raw[part.body_start : part.end]
    cte = (part.value("content-transfer-encoding") or b"7bit").decode("ascii", "replace")
    cte = cte.strip().lower()
    if cte in ("7bit", "8bit", "binary"):
        return body
    if cte == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/]", b"", body) + b"===")
        except (binascii.Error, ValueError):
            return None
    if cte == "quoted-printable":
        return decode_quoted_printable(body)
    raise UnknownTransferEncoding(f"Unknown Content-Transfer-Encoding {cte[:40]}")


def fetch_binary(raw: bytes, root: Part, path: tuple[int, ...]) -> bytes:
    if not path:
        return raw
    part = find_part(root, path)
    if part is None:
        return b""
    data = decoded_body(raw, part)
    return b"" if data is None else data


# -- text for full-text search -----------------------------------------------------------

MAX_TEXT_CHARS = 1 << 20
_TAG = re.compile(r"<[^>]*>")


def search_text(stored: bytes) -> tuple[str, str]:
    """(decoded header text, decoded body text) of a message for SEARCH TEXT/BODY: RFC 2047
    words decoded, text/* parts decoded from their transfer encoding and charset, HTML
    reduced to its text; attachments that are not text are skipped."""
    headers = "\n".join(f"{name}: {decode_value(value)}" for name, value in raw_fields(stored))
    message = email.message_from_bytes(stored, policy=email.policy.default)
    chunks: list[str] = []
    size = 0
    for part in message.walk():
        if part.get_content_maintype() != "text" or part.is_attachment():
            continue
        try:
            text = part.get_content()
        except (LookupError, ValueError, AssertionError):
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
        if not isinstance(text, str):
            continue
        if part.get_content_subtype() == "html":
            text = _TAG.sub(" ", text)
        chunks.append(text)
        size += len(text)
        if size > MAX_TEXT_CHARS:
            break
    return headers, "\n".join(chunks)[:MAX_TEXT_CHARS]
