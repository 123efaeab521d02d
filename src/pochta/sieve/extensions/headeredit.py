"""editheader's edits on the raw message (RFC 5293), pure. The registry glue lives in
``extensions/editheader.py``.

Edits go through ``mime/headers.py``: fields not touched keep their bytes; new fields are
written with the message's own line ending, non-ASCII values as RFC 2047 encoded words
(RFC 5293 §5: "MUST ... be encoded ... as specified in [RFC2047]").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.header import Header

from pochta.mime.headers import HeaderField, SplitMessage, detect_newline, make_field, split_message

__all__ = [
    "PROTECTED_FIELDS",
    "add_field",
    "delete_fields",
    "encode_value",
    "field_values",
    "is_protected",
    "valid_field_name",
    "valid_field_value",
]

# RFC 5293 §7: a script must not remove the trace of how the message came (Received) nor
# its automatic-mail marker (Auto-Submitted, RFC 3834). Deleting them is ignored; adding
# them is allowed (it hides nothing), as in Dovecot Pigeonhole.
PROTECTED_FIELDS = frozenset({"received", "auto-submitted"})

# RFC 5322 §2.2 field-name = 1*ftext; RFC 5293 §4: a name that is not one is an error.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def valid_field_name(name: str) -> bool:
    return bool(_FIELD_NAME.fullmatch(name))


def valid_field_value(value: str) -> bool:
    """RFC 5293 §4: a value is text; its line breaks are folded by us, but a NUL can be in
    no header field (RFC 5322 §2.2)."""
    return "\0" not in value


def is_protected(name: str) -> bool:
    return name.lower() in PROTECTED_FIELDS


def encode_value(value: str) -> str:
    """RFC 5293 §4 and §5: a value with non-ASCII text is stored as RFC 2047 encoded words
    (UTF-8); an ASCII value as given, its line breaks unfolded to single spaces."""
    value = re.sub(r"[ \t]*\r?\n[ \t]*", " ", value).strip(" \t")
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def field_values(message: bytes, name: str) -> list[str]:
    """The values of the fields called ``name``, in order, unfolded (RFC 5322 §2.2.3)."""
    out = []
    for field in split_message(message).get_all(name):
        out.append(_unfold(field))
    return out


def _unfold(field: HeaderField) -> str:
    return re.sub(r"\r?\n", "", field.value.decode("utf-8", "surrogateescape")).strip(" \t")


def add_field(message: bytes, name: str, value: str, *, last: bool = False) -> bytes:
    """``addheader`` (RFC 5293 §4): the new field first in the header, or last with ``:last``."""
    split = split_message(message)
    newline = detect_newline(split)
    # The field is folded by Header when encoded; make_field checks the folding.
    field = make_field(name, encode_value(value).replace("\r\n", "\n"), newline)
    old = split.headers
    if old and not old[-1].raw.endswith(b"\n"):  # a header block cut off at its last field
        old = (*old[:-1], HeaderField(old[-1].raw + newline, old[-1].name))
    headers = (*old, field) if last else (field, *old)
    return SplitMessage(headers, split.separator, split.body).join()


def delete_fields(
    message: bytes,
    name: str,
    matches: Callable[[str], bool] | None = None,
    *,
    index: int = 0,
    last: bool = False,
) -> tuple[bytes, int]:
    """``deleteheader`` (RFC 5293 §5): remove the fields called ``name`` whose value
    ``matches`` accepts (None = all of them). ``index`` (1-based, RFC 5260 §6) limits it to
    the index-th such field counting from the top, or from the bottom with ``last``. Returns
    the new message and how many fields went."""
    split = split_message(message)
    key = name.lower()
    positions = [i for i, f in enumerate(split.headers) if f.key == key]
    if index:
        order = positions[::-1] if last else positions
        positions = [order[index - 1]] if index <= len(order) else []
    doomed = {i for i in positions if matches is None or matches(_unfold(split.headers[i]))}
    if not doomed:
        return message, 0
    headers = tuple(f for i, f in enumerate(split.headers) if i not in doomed)
    return SplitMessage(headers, split.separator, split.body).join(), len(doomed)
