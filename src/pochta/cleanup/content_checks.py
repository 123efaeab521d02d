"""header_checks and body_checks: Postfix's built-in content inspection (header_checks(5)).

A cleanup filter, the first one (before mail authentication and signing, as Postfix's
cleanup(8) inspects the message as it reads it, before milters). It reads ``[tables]
header_checks`` and ``body_checks``, lists of ``regexp:`` / ``pcre:`` tables
(:mod:`pochta.tables.regexp`) asked in order, the first table with a matching rule wins.

What is matched (header_checks(5) "DESCRIPTION", "BUGS"):

- **headers**: each logical header field as one string, the name, colon and value, its
  continuation lines joined with their newlines (``"Subject: a\\n\\tb"``, line ends as LF),
  without the final line end. The primary message headers, and, as Postfix does by default
  (``mime_header_checks = $header_checks``, ``nested_header_checks = $header_checks``), the
  MIME headers of each part and the headers of attached messages (message/rfc822);
- **body**: each body line on its own, without its line end, of every MIME part, never
  decoded (Postfix does not decode base64 or quoted-printable for body_checks); MIME
  boundary lines and part headers are not body lines. As with Postfix's
  ``body_checks_size_limit = 51200``, only the first 51200 bytes of each part's body are
  inspected.

Actions (the result's first word, any case; the rest is the text), header_checks(5)
"TEXT PATTERNS ... ACTIONS":

- ``REJECT [text]``: the message is refused at the end of DATA, ``550 5.7.1 text``
  (default text "message content rejected"); nothing more is checked;
- ``WARN [text]``: logged, nothing else;
- ``DISCARD [text]``: accepted (250) and thrown away, logged; nothing more is checked;
- ``HOLD [text]``: accepted into the hold queue (``pochta queue release`` sends it on);
- ``REPLACE text``: the header field (text must be a whole ``Name: value``) or the body
  line is replaced by text;
- ``IGNORE``: the header field or body line is removed;
- ``PREPEND text``: a header field (or body line) ``text`` is inserted before this one;
- ``DUNNO`` / ``OK``: nothing; the next line is checked.

Any other action (FILTER, REDIRECT, BCC, a bare ``5xx`` reply, ...) is refused by ``pochta
check`` (:func:`check_actions`), so a setting that passes check does what it says.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply
from pochta.tables.regexp import RegexpTable
from pochta.tables.source import TableError
from pochta.tables.spec import TableSet, open_table_set

if TYPE_CHECKING:
    from pochta.cleanup.pipeline import CleanupInput, CleanupResult

__all__ = [
    "ACTIONS",
    "BODY_CHECKS_SIZE_LIMIT",
    "ContentChecks",
    "check_actions",
    "open_checks",
]

log = get_logger("cleanup")

ACTIONS = ("REJECT", "WARN", "DISCARD", "HOLD", "REPLACE", "IGNORE", "PREPEND", "DUNNO", "OK")
"""The header_checks(5) actions pochta carries out."""

_NEED_TEXT = frozenset({"REPLACE", "PREPEND"})

BODY_CHECKS_SIZE_LIMIT = 51200
"""Bytes of each part's body that body_checks inspect (Postfix body_checks_size_limit)."""

DEFAULT_REJECT_TEXT = "message content rejected"  # Postfix cleanup's default REJECT text

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)
_CONTENT_TYPE = re.compile(rb"content-type[ \t]*:[ \t]*([^;\s]+)", re.IGNORECASE)
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def open_checks(specs: Sequence[str]) -> TableSet[str] | None:
    """The tables of one setting as a TableSet (None when the list is empty)."""
    return open_table_set(specs, kind="map") if specs else None


def check_actions(
    specs: Sequence[str], setting: str, *, parse_errors: bool = True
) -> list[tuple[int, str]]:
    """Problems with the tables of ``setting`` (``header_checks`` or ``body_checks``), as
    (index of the table in the list, message): a table that is not regexp:/pcre:, does not
    parse (unless ``parse_errors`` is False), or has a result whose action pochta cannot
    carry out. Each message names the file and line and says what to write."""
    problems: list[tuple[int, str]] = []
    for index, spec in enumerate(specs):
        try:
            table = open_table_set([spec], kind="map").tables[0]
        except TableError as exc:
            if parse_errors:
                problems.append((index, str(exc)))
            continue
        if not isinstance(table, RegexpTable):
            message = (
                f"{spec}: {setting} tables are patterns; write "
                f"'regexp:{table.path}' or 'pcre:{table.path}' (header_checks(5))"
            )
            problems.append((index, message))
            continue
        for rule in table.rules:
            if rule.result is None:
                continue
            action, text = _split_action(rule.result)
            where = f"{table.path}:{rule.lineno}"
            if action not in ACTIONS:
                message = (
                    f"{where}: action {action!r} is not supported; use one of "
                    f"{', '.join(ACTIONS)} (header_checks(5))"
                )
                problems.append((index, message))
            elif action in _NEED_TEXT and not text:
                message = f"{where}: {action} needs a text, e.g. '{action} X-Seen: yes'"
                problems.append((index, message))
            elif (
                action in _NEED_TEXT
                and setting == "header_checks"
                and "$" not in text
                and not _FIELD_START.match(text.encode("utf-8", "surrogateescape"))
            ):
                message = (
                    f"{where}: {action} text {text!r} is not a header field; write "
                    f"'{action} Name: value'"
                )
                problems.append((index, message))
    return problems


def _split_action(result: str) -> tuple[str, str]:
    word, _, text = result.strip().partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        text = f"{more} {text}".strip()
    return word.upper(), text.strip()


@dataclass(slots=True)
class _Outcome:
    """What the checks decided for one message so far."""

    reject: str | None = None
    discard: str | None = None
    hold: str | None = None
    changed: bool = False


@dataclass(frozen=True, slots=True)
class _Line:
    """One unit of the message: a logical header field or a body line, raw bytes with
    its line end; ``kind`` is "header", "body" or "other" (boundaries, separators)."""

    kind: str
    raw: bytes


class ContentChecks:
    """The header_checks / body_checks filter (a cleanup ``Filter``)."""

    def __init__(
        self, header_checks: TableSet[str] | None, body_checks: TableSet[str] | None
    ) -> None:
        self.header_checks = header_checks
        self.body_checks = body_checks

    async def __call__(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        return self.check(result, info)

    def check(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        """Run the checks over ``result.content`` (synchronous: no I/O)."""
        outcome = _Outcome()
        out: list[bytes] = []
        for line in _walk(result.content):
            if outcome.reject is not None or outcome.discard is not None:
                out.append(line.raw)  # header_checks(5): nothing more is inspected
                continue
            tables = self.header_checks if line.kind == "header" else self.body_checks
            if line.kind == "other" or tables is None:
                out.append(line.raw)
                continue
            out.extend(self._apply(tables, line, outcome, info))
        if outcome.reject is not None:
            return Reply(550, "5.7.1", outcome.reject)  # header_checks(5) REJECT
        if outcome.discard is not None:
            return result.decide("discard", f"{outcome.discard}")
        if outcome.changed:
            result = dataclasses.replace(result, content=b"".join(out))
        if outcome.hold is not None:
            result = result.decide("hold", outcome.hold)
        return result

    def _apply(
        self, tables: TableSet[str], line: _Line, outcome: _Outcome, info: CleanupInput
    ) -> list[bytes]:
        newline = b"\r\n" if line.raw.endswith(b"\r\n") else b"\n"
        text = line.raw.removesuffix(b"\n").removesuffix(b"\r")
        key = text.replace(b"\r\n", b"\n").decode("utf-8", "surrogateescape")
        found = tables.get(key)
        if found is None:
            return [line.raw]
        action, words = _split_action(found)
        what = f"{line.kind}_checks"
        shown = key[:200]
        fields = {"queue_id": info.queue_id, "client": info.client_ip, line.kind: shown}
        if action == "REJECT":
            outcome.reject = _reply_text(words) or DEFAULT_REJECT_TEXT
            log.info(what, action="reject", reason=outcome.reject, **fields)
        elif action == "DISCARD":
            outcome.discard = words or what
            log.info(what, action="discard", reason=words, **fields)
        elif action == "HOLD":
            outcome.hold = outcome.hold or words or what
            log.info(what, action="hold", reason=words, **fields)
        elif action == "WARN":
            log.warning(what, action="warn", reason=words, **fields)
        elif action == "IGNORE":
            outcome.changed = True
            return []
        elif action in _NEED_TEXT and words:
            outcome.changed = True
            new = words.encode("utf-8", "surrogateescape") + newline
            log.info(what, action=action.lower(), text=words[:200], **fields)
            return [new] if action == "REPLACE" else [new, line.raw]
        elif action not in ("DUNNO", "OK"):
            # pochta check refuses these; a table edited since is logged, not obeyed.
            log.warning(what, action="unsupported", result=found[:200], **fields)
        return [line.raw]


def _reply_text(text: str) -> str:
    """One reply line: printable ASCII, at most 200 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200].strip()


def _lines(content: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(content):
        end = content.find(b"\n", start)
        end = len(content) if end < 0 else end + 1
        yield content[start:end]
        start = end


def _is_blank(raw: bytes) -> bool:
    return raw in (b"\n", b"\r\n")


def _walk(content: bytes) -> Iterator[_Line]:
    """The message as header fields, body lines and the rest, following MIME structure:
    a multipart's boundaries (RFC 2046 §5.1.1) open part headers, message/rfc822 (RFC 2046
    §5.2.1) opens the attached message's headers. Joined back, the raw bytes are the content."""
    boundaries: list[bytes] = []
    in_header = True
    pending: list[bytes] = []  # the lines of the header field being read
    content_type = b""
    boundary: bytes | None = None
    part_bytes = 0

    def flush() -> Iterator[_Line]:
        nonlocal content_type, boundary
        if pending:
            raw = b"".join(pending)
            pending.clear()
            found = _CONTENT_TYPE.match(raw)
            if found:
                content_type = found.group(1).lower()
                param = _BOUNDARY.search(raw)
                if param and content_type.startswith(b"multipart/"):
                    boundary = param.group(1) or param.group(2)
            yield _Line("header", raw)

    for raw in _lines(content):
        if in_header:
            if pending and raw[:1] in (b" ", b"\t") and not _is_blank(raw):
                pending.append(raw)  # RFC 5322 §2.2.3: a continuation line
                continue
            if not _is_blank(raw) and _FIELD_START.match(raw):
                yield from flush()
                pending.append(raw)
                continue
            yield from flush()
            # The end of this header block: an empty line, or a line that starts the body.
            in_header = False
            part_bytes = 0
            if boundary is not None:
                boundaries.append(boundary)
            elif content_type == b"message/rfc822":
                in_header = True  # the attached message's own header follows
            content_type, boundary = b"", None
            if _is_blank(raw):
                yield _Line("other", raw)
                continue
        stripped = raw.rstrip(b"\r\n")
        if stripped.startswith(b"--") and boundaries:
            hit = _boundary_level(stripped, boundaries)
            if hit is not None:
                level, closing = hit
                del boundaries[level + 1 :]
                if closing:
                    boundaries.pop()
                else:
                    in_header = True
                yield _Line("other", raw)
                continue
        if in_header:  # a message/rfc822 body starting with a non-header line
            in_header = False
        part_bytes += len(raw)
        if part_bytes > BODY_CHECKS_SIZE_LIMIT:
            yield _Line("other", raw)
        else:
            yield _Line("body", raw)
    yield from flush()


def _boundary_level(line: bytes, boundaries: list[bytes]) -> tuple[int, bool] | None:
    """Which open boundary ``line`` is (innermost first), and whether it closes it."""
    for level in range(len(boundaries) - 1, -1, -1):
        marker = b"--" + boundaries[level]
        rest = line[len(marker) :] if line.startswith(marker) else None
        if rest is None:
            continue
        # RFC 2046 §5.1.1: the delimiter may be followed by whitespace only.
        if rest.rstrip(b" \t") == b"":
            return level, False
        if rest.startswith(b"--") and rest[2:].rstrip(b" \t") == b"":
            return level, True
    return None
