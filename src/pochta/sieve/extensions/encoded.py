"""``encoded-character`` (RFC 5228 §2.4.2.4): ``${hex:...}`` and ``${unicode:...}`` in
strings, decoded when the script is compiled. A sequence that does not follow the syntax is
left as written (§2.4.2.4 "not an encoded character"); a code point outside Unicode and
octets that are not UTF-8 are errors."""

from __future__ import annotations

import re

from pochta.sieve.registry import REGISTRY, Capability

__all__ = ["decode_encoded_characters"]

# RFC 5228 §2.4.2.4: "${hex:" hex-pair-seq "}" and "${unicode:" unicode-hex-seq "}", with
# blank separators; the words are case-insensitive.
_ENCODED = re.compile(
    r"\$\{(?:(?i:hex):([ \t\r\n]*[0-9A-Fa-f]{1,2}(?:[ \t\r\n]+[0-9A-Fa-f]{1,2})*[ \t\r\n]*)"
    r"|(?i:unicode):([ \t\r\n]*[0-9A-Fa-f]+(?:[ \t\r\n]+[0-9A-Fa-f]+)*[ \t\r\n]*))\}"
)


def _decode(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        octets = bytes(int(h, 16) for h in m.group(1).split())
        try:
            return octets.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{m.group(0)!r} is not UTF-8 (RFC 5228 §2.4.2.4)") from None
    out: list[str] = []
    for h in m.group(2).split():
        code = int(h, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"{m.group(0)!r} names no Unicode character (RFC 5228 §2.4.2.4)")
        out.append(chr(code))
    return "".join(out)


def decode_encoded_characters(text: str) -> str:
    if "${" not in text:
        return text
    return _ENCODED.sub(_decode, text)


REGISTRY.add_capability(Capability("encoded-character"))
REGISTRY.add_string_filter("encoded-character", decode_encoded_characters)
