"""Modified UTF-7 (RFC 3501 §5.1.3): mailbox names on the IMAP wire without UTF8=ACCEPT, and
the Maildir++ folder directory names (as Dovecot writes them). One implementation for both,
so a name the IMAP server refuses can never name a folder directory and the other way round.

Imports nothing of pochta.
"""

from __future__ import annotations

import base64


def _printable(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def _shifted(text: str) -> str:
    """``&`` + modified BASE64 of the UTF-16BE of ``text`` + ``-``."""
    raw = text.encode("utf-16-be")
    # RFC 3501 §5.1.3: modified BASE64 uses "," instead of "/" and no "=" padding.
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def encode_modified_utf7(name: str) -> str:
    """Printable US-ASCII stands for itself, "&" is "&-", every run of other characters is
    one ``&...-`` shift sequence (RFC 3501 §5.1.3). UnicodeEncodeError (a ValueError) for a
    lone surrogate."""
    out: list[str] = []
    pending: list[str] = []
    for ch in name:
        if _printable(ch):
            if pending:
                out.append(_shifted("".join(pending)))
                pending.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_shifted("".join(pending)))
    return "".join(out)


def decode_modified_utf7(text: str) -> str:
    """The name that ``text`` encodes. ValueError, saying why, for text that is not modified
    UTF-7 in its one canonical form: 8-bit or control characters, an unterminated or broken
    shift sequence, printable US-ASCII inside one, padding bits that are not zero, or a shift
    sequence that the encoder would have written differently (RFC 3501 §5.1.3)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not _printable(ch):
            # RFC 3501 §5.1.3: modified UTF-7 is printable US-ASCII only.
            raise ValueError(f"{text!r}: 8-bit or control character in a modified UTF-7 name")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError(f"{text!r}: unterminated &... shift sequence (modified UTF-7)")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")  # RFC 3501 §5.1.3: "&" is represented by "&-"
        else:
            b64 = chunk.replace(",", "/")
            try:
                raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
                decoded = raw.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"{text!r}: invalid modified base64 in a mailbox name") from None
            if any(_printable(c) for c in decoded):
                # RFC 3501 §5.1.3: printable US-ASCII MUST NOT be encoded in modified BASE64.
                raise ValueError(f"{text!r}: non-canonical modified UTF-7 (encodes ASCII)")
            if _shifted(decoded) != "&" + chunk + "-":
                # Nonzero padding bits or a wrong length: two spellings of one name would
                # name two folders.
                raise ValueError(f"{text!r}: non-canonical modified UTF-7")
            out.append(decoded)
        i = end + 1
    return "".join(out)
