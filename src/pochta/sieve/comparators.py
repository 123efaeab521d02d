"""The comparators of RFC 4790 a Sieve script can name (RFC 5228 §2.7.3).

- ``i;octet`` (RFC 4790 §9.3): the UTF-8 octets as they are. Python compares strings by
  code point, which orders exactly as their UTF-8 octets do.
- ``i;ascii-casemap`` (RFC 4790 §9.2, the default): a–z and A–Z alike, every other octet as
  it is.
- ``i;ascii-numeric`` (RFC 4790 §9.1): the number the leading digits spell; a string that
  does not start with a digit (including "") is +infinity. No substring operations.
- ``i;unicode-casemap`` (RFC 5051): each string titlecased and decomposed (NFKD), here done
  with Python's full case folding and NFKD, which agrees on every character with a simple
  titlecase mapping.
"""

from __future__ import annotations

import unicodedata

from pochta.sieve.registry import REGISTRY, Capability, Comparator

__all__ = ["ASCII_CASEMAP", "ASCII_NUMERIC", "OCTET", "UNICODE_CASEMAP", "fold_ascii"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _cmp(a: str, b: str) -> int:
    return (a > b) - (a < b)


def fold_ascii(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def fold_unicode(text: str) -> str:
    # RFC 5051 §2: titlecase then NFKD; casefold covers the titlecase mapping of Sieve's use
    return unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())


def _numeric(text: str) -> int | None:
    """RFC 4790 §9.1.1: the leading digits' value; None (+infinity) when there are none."""
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return int(text[:end]) if end else None


def _compare_numeric(a: str, b: str) -> int:
    x, y = _numeric(a), _numeric(b)
    if x is None or y is None:
        return (x is None) - (y is None)  # RFC 4790 §9.1.1: +infinity is above every number
    return (x > y) - (x < y)


OCTET = Comparator(name="i;octet", capability="", compare=_cmp, fold=lambda s: s)
ASCII_CASEMAP = Comparator(
    name="i;ascii-casemap",
    capability="",
    compare=lambda a, b: _cmp(fold_ascii(a), fold_ascii(b)),
    fold=fold_ascii,
)
ASCII_NUMERIC = Comparator(
    name="i;ascii-numeric",
    capability="comparator-i;ascii-numeric",
    compare=_compare_numeric,
    fold=None,
)
UNICODE_CASEMAP = Comparator(
    name="i;unicode-casemap",
    capability="comparator-i;unicode-casemap",
    compare=lambda a, b: _cmp(fold_unicode(a), fold_unicode(b)),
    fold=fold_unicode,
)

for _name in (
    "comparator-i;octet",
    "comparator-i;ascii-casemap",
    "comparator-i;ascii-numeric",
    "comparator-i;unicode-casemap",
):
    REGISTRY.add_capability(Capability(_name))
for _comparator in (OCTET, ASCII_CASEMAP, ASCII_NUMERIC, UNICODE_CASEMAP):
    REGISTRY.add_comparator(_comparator)
