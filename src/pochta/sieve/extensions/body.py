"""``body`` (RFC 5173): match the body as it is (``:raw``), its text decoded (``:text``,
the default), or the MIME parts of given types decoded (``:content``).

The MIME walk is our own over the message's octets (RFC 2045/2046), so that each part is
seen exactly as sent: multiparts are split on their boundary, ``message/rfc822`` parts
are descended into (RFC 5173 §5.2), and a part whose transfer encoding is unknown is
skipped rather than guessed. ``:text`` takes text/* parts, with the markup of HTML and
XHTML removed; ``:content`` of a multipart is its prologue and epilogue, of a
message/rfc822 the nested message's header (RFC 5173 §5). ``body`` never sets the match
variables (RFC 5173 §6).
"""

from __future__ import annotations

import binascii
import html
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser

from pochta.sieve.compiler import Call
from pochta.sieve.interpreter import Run, split_message
from pochta.sieve.registry import REGISTRY, Capability, TagSpec, TestSpec

__all__ = ["MAX_MIME_DEPTH", "MAX_PARTS", "body_texts", "mime_parts"]

MAX_PARTS = 256  # MIME parts looked at, so many tiny parts cannot make endless work
MAX_MIME_DEPTH = 16  # nested multiparts and messages followed
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.DOTALL | re.IGNORECASE)
_HTML_TYPES = {"text/html", "application/xhtml+xml"}


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str  # "type/subtype", lower-case; "" when the header is malformed
    header: bytes
    body: bytes | None  # None: the part has no body (no empty line after its header)
    headers: Message  # the parsed header, for parameters
    outside: bytes = b""  # a multipart's prologue and epilogue


def _content_type(headers: Message, default: str) -> str:
    raw = headers.get("content-type")
    if raw is None:
        return default
    value = str(raw).split(";", 1)[0].strip().lower()
    main, slash, sub = value.partition("/")
    # RFC 2045 §5.1: type "/" subtype, both tokens
    if not slash or not main or not sub or "/" in sub or " " in value:
        return ""
    return value


def body_of(message: bytes) -> tuple[bytes, bytes | None]:
    """The header and the body; None for the body of a header without the empty line after
    it (RFC 5173 §5: then there is no body, and every body test is false)."""
    head, body = split_message(message)
    if head == message and not message.startswith((b"\r\n", b"\n")):
        return head, None
    return head, body


def mime_parts(message: bytes, default: str = "text/plain", depth: int = 0) -> Iterator[Part]:
    head, body = body_of(message)
    headers = BytesHeaderParser().parsebytes(head)
    ctype = _content_type(headers, default)
    if ctype.startswith("multipart/") and body is not None and depth < MAX_MIME_DEPTH:
        boundary = headers.get_param("boundary")
        if isinstance(boundary, str) and boundary:
            pieces, outside = _split_multipart(body, boundary.encode("utf-8", "replace"))
            yield Part(ctype, head, body, headers, outside)
            child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            for piece in pieces:
                yield from mime_parts(piece, child_default, depth + 1)
            return
    yield Part(ctype, head, body, headers)
    if ctype == "message/rfc822" and body is not None and depth < MAX_MIME_DEPTH:
        yield from mime_parts(body, "text/plain", depth + 1)


def _split_multipart(body: bytes, boundary: bytes) -> tuple[list[bytes], bytes]:
    """RFC 2046 §5.1.1: the parts between ``--boundary`` lines; and the text outside them."""
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|$)")
    parts: list[bytes] = []
    start: int | None = None
    prologue = b""
    epilogue = b""
    for m in delimiter.finditer(body):
        if start is None:
            prologue = body[: m.start()]
        else:
            parts.append(body[start : m.start()])
        if m.group(1):
            epilogue = body[m.end() :]
            start = None
            break
        start = m.end()
    else:
        if start is None:
            return [], body  # no delimiter at all: everything is prologue
        parts.append(body[start:])
    return parts, prologue + epilogue


def _decoded(part: Part) -> bytes | None:
    """The body with its transfer encoding undone; None for an unknown encoding."""
    if part.body is None:
        return None
    cte = str(part.headers.get("content-transfer-encoding", "7bit")).strip().lower()
    if cte in ("7bit", "8bit", "binary", ""):
        return part.body
    if cte == "base64":
        clean = re.sub(rb"[^A-Za-z0-9+/=]", b"", part.body)
        clean = clean[: len(clean) - len(clean) % 4]
        try:
            return binascii.a2b_base64(clean)
        except binascii.Error:
            return None
    if cte == "quoted-printable":
        return quopri.decodestring(part.body)
    return None  # RFC 2045 §6.4: an unknown encoding cannot be read


def _text(part: Part, data: bytes) -> str:
    charset = part.headers.get_content_charset() or "us-ascii"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _strip_markup(text: str) -> str:
    return html.unescape(_TAG.sub(" ", text))


def _type_matches(content_type: str, wanted: str) -> bool:
    # RFC 5173 §5: "type" matches all its subtypes, "type/subtype" only itself
    wanted = wanted.strip().lower()
    if not wanted:
        return True
    if "/" in wanted:
        return content_type == wanted
    return content_type.split("/")[0] == wanted


def body_texts(run: Run, call: Call) -> list[str]:
    """The texts ``body`` matches for this call (RFC 5173 §5)."""
    if "raw" in call.tags:
        _, raw = body_of(run.message)
        return [] if raw is None else [raw.decode("utf-8", "replace")]
    content = call.tags.get("content")
    types = run.expand_all(content) if isinstance(content, tuple) else None
    out: list[str] = []
    for n, part in enumerate(mime_parts(run.message)):
        if n >= MAX_PARTS:
            break
        ctype = part.content_type
        if types is None:  # :text
            if ctype.startswith("text/") or ctype in _HTML_TYPES:
                data = _decoded(part)
                if data is not None:
                    text = _text(part, data)
                    out.append(_strip_markup(text) if ctype in _HTML_TYPES else text)
            continue
        if not ctype or not any(_type_matches(ctype, t) for t in types):
            continue
        if ctype.startswith("multipart/"):
            out.append(part.outside.decode("utf-8", "replace"))
        elif ctype == "message/rfc822":
            nested_head, _ = split_message(part.body or b"")
            out.append(nested_head.decode("utf-8", "replace"))
        else:
            data = _decoded(part)
            if data is not None:
                out.append(_text(part, data))
    return out


def _body(run: Run, call: Call) -> bool:
    # RFC 5173 §6: body does not set the match variables
    return run.match(call, body_texts(run, call), call.strings(0), match_values=False)


REGISTRY.add_capability(Capability("body"))
REGISTRY.add_test(
    TestSpec(
        name="body",
        capability="body",
        positional=("string-list",),
        tags=(
            TagSpec("raw", group="transform"),
            TagSpec("text", group="transform"),
            TagSpec("content", arg="string-list", group="transform"),
        ),
        comparator=True,
        match_type=True,
        handler=_body,
    )
)
