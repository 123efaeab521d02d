"""The base subject of RFC 5256 §2.1, and the text helpers SORT and THREAD share.

`base_subject` follows the seven steps of RFC 5256 §2.1 literally; the ABNF of RFC 5256 §5
that drives steps (2) to (6) is quoted above each regular expression. Matching of the ABNF
literals ("re", "fwd", "(fwd)", "[fwd:") is case-insensitive in ASCII only (RFC 5234 §2.3).

`collation_key` turns a string into the key SORT and THREAD compare: i;ascii-casemap (RFC 4790
§9.2, the baseline comparator of RFC 5256) for ASCII text, and an approximation of
i;unicode-casemap (RFC 5051, the comparator of I18NLEVEL=1 in RFC 5255) for the rest.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import re
import unicodedata

__all__ = [
    "base_subject",
    "collation_key",
    "decode_encoded_words",
    "extract_base_subject",
    "is_reply_or_forward",
]

# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?=", with no
# spaces and no "?" inside encoded-text. Deviation from RFC 2047 §5: encoded words are decoded
# wherever they appear, also inside a word or quoted string, as deployed MUAs expect.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_WSP_RUN = re.compile(r"[ \t\r\n]+")
# Python codecs that are no MIME charset: a sender must not reach them through an encoded word.
_NOT_CHARSETS = frozenset(
    {"charmap", "idna", "punycode", "raw-unicode-escape", "undefined", "unicode-escape"}
)

# subj-blob    = "[" *BLOBCHAR "]" *WSP
# BLOBCHAR     = %x01-5a / %x5c / %x5e-ff      ; any CHAR8 except '[' and ']'
_BLOB = r"\[[^\[\]]*\][ \t]*"
# subj-refwd   = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD = rf"(?:re|fwd?)[ \t]*(?:{_BLOB})?:"
# subj-leader  = (*subj-blob subj-refwd) / WSP
_LEADER_REFWD = re.compile(rf"(?:{_BLOB})*{_REFWD}", re.IGNORECASE | re.ASCII)
_SUBJ_BLOB = re.compile(_BLOB)
# subj-fwd-hdr = "[fwd:" ; subj-fwd-trl = "]"
_FWD_HDR = "[fwd:"
_FWD_TRL = "]"
# subj-trailer = "(fwd)" / WSP
_FWD_TRAILER = "(fwd)"
_WSP = " \t"


def decode_encoded_words(text: str) -> str:
    """Decode the RFC 2047 encoded words in a header value to Unicode text.

    Linear white space between two encoded words is dropped (RFC 2047 §6.2). A word whose
    charset is unknown or whose encoded text is malformed stays as it was.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pos = 0
    previous_was_word = False
    for m in _ENCODED_WORD.finditer(text):
        gap = text[pos : m.start()]
        decoded = _decode_word(m.group(0), m.group(1))
        # RFC 2047 §6.2: white space between adjacent encoded words is not displayed.
        if not (previous_was_word and decoded is not None and not gap.strip(" \t\r\n")):
            out.append(gap)
        out.append(m.group(0) if decoded is None else decoded)
        previous_was_word = decoded is not None
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _decode_word(word: str, charset: str) -> str | None:
    try:
        parts = email.header.decode_header(word)
    except email.errors.HeaderParseError:  # bad base64
        return None
    # RFC 2231 §5: charset may carry a language, "utf-8*en".
    try:
        codec = codecs.lookup(charset.partition("*")[0]).name
    except LookupError:  # a charset Python does not know
        return None
    if codec in _NOT_CHARSETS:
        return None
    out: list[str] = []
    for chunk, _ in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        try:
            out.append(chunk.decode(codec, "replace"))
        except (LookupError, UnicodeError):  # bytes-to-bytes codecs ("zlib"), or a codec
            return None  # that ignores errors="replace"
    return "".join(out)


def extract_base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 §2.1: the base subject, and whether the message is a reply or forward.

    A message is a reply or forward (RFC 5256 §2.1, last paragraph, used by THREAD=REFERENCES
    §3 step 5) when the extraction removed a subj-refwd, a "(fwd)" subj-trailer, or a
    subj-fwd-hdr with its subj-fwd-trl.
    """
    # (1) Decode RFC 2047 encoded words; tabs and continuations become spaces; runs of
    # spaces become one space.
    text = _WSP_RUN.sub(" ", decode_encoded_words(subject))
    reply = False
    while True:
        # (2) Remove trailing subj-trailer text, repeatedly.
        while True:
            if text.endswith((" ", "\t")):
                text = text.rstrip(_WSP)
            elif text[-len(_FWD_TRAILER) :].lower() == _FWD_TRAILER:
                text = text[: -len(_FWD_TRAILER)]
                reply = True
            else:
                break
        # (5) Repeat (3) and (4) until no matches remain.
        while True:
            # (3) Remove prefix text matching subj-leader (a blob-prefixed subj-refwd, or WSP).
            m = _LEADER_REFWD.match(text)
            if m is not None:
                text = text[m.end() :]
                reply = True
                continue
            if text.startswith((" ", "\t")):
                text = text.lstrip(_WSP)
                continue
            # (4) Remove a prefix subj-blob if that leaves a non-empty subj-base (the blob
            # takes its trailing WSP, so what remains starts with NONWSP or is empty).
            m = _SUBJ_BLOB.match(text)
            if m is not None and m.end() < len(text):
                text = text[m.end() :]
                continue
            break
        # (6) "[fwd:" ... "]" around the whole text: unwrap and repeat from step (2).
        if (
            len(text) >= len(_FWD_HDR) + len(_FWD_TRL)
            and text[: len(_FWD_HDR)].lower() == _FWD_HDR
            and text.endswith(_FWD_TRL)
        ):
            text = text[len(_FWD_HDR) : -len(_FWD_TRL)]
            reply = True
            continue
        # (7) The resulting text is the base subject.
        return text, reply


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1: the base subject of a raw Subject value (case preserved).

    Compare base subjects through `collation_key`.
    """
    return extract_base_subject(subject)[0]


def is_reply_or_forward(subject: str) -> bool:
    """RFC 5256 §2.1: the extraction removed "Re:"/"Fw:"/"Fwd:", "(fwd)" or "[fwd: ...]"."""
    return extract_base_subject(subject)[1]


def collation_key(text: str) -> str:
    """The comparison key of `text` under an approximation of i;unicode-casemap.

    RFC 5051 §2 maps each character to its titlecase property, then to its full decomposition
    (effectively NFKD), and compares the results octet by octet. Here: NFKD, full case
    folding, then upper case. Upper case, not lower, keeps the ASCII order of both collations
    (RFC 4790 §9.2 maps a-z to A-Z): "_" sorts after the letters. Keys compare in code point
    order, which is the octet order of their UTF-8.
    """
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFKD", text).casefold().upper()
