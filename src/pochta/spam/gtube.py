"""GTUBE: the Generic Test for Unsolicited Bulk Email (SpamAssassin's, also Rspamd's).

A message whose body holds the 68-character GTUBE string scores 1000 (symbol ``GTUBE``), so
an admin can see the filter act on a real server end to end (quarantine, reject, Junk)
without real spam: ``swaks --body "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-
EMAIL*C.34X"``. SpamAssassin matches it in the decoded body; so does this check: first in
the raw body (no parsing: the common case, a plain-text test message), then in the decoded
text of the parts (``ScanMessage.text``, parsed once and shared with the other checks) when
the body is not plain: base64 or quoted-printable.
"""

from __future__ import annotations

from collections.abc import Sequence

from pochta.cleanup.verdict import Symbol
from pochta.spam.check import ScanInput

__all__ = ["GTUBE", "GTUBE_SCORE", "Gtube"]

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_SCORE = 1000.0  # SpamAssassin's and Rspamd's: above every reject threshold
_GTUBE_BYTES = GTUBE.encode("ascii")
_SYMBOL = Symbol(name="GTUBE", score=GTUBE_SCORE, description="GTUBE test string in the body")


class Gtube:
    """The GTUBE check (a :class:`~pochta.spam.check.Check`)."""

    name = "gtube"
    waits = False

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        body = scan.message.split.body
        if _GTUBE_BYTES in body:
            return (_SYMBOL,)
        lowered = body[:65536].lower()
        # Encoded parts: look in the decoded text (the parse is shared with other checks).
        if (b"base64" in lowered or b"quoted-printable" in lowered or _encoded_top(scan)) and (
            GTUBE in scan.message.text
        ):
            return (_SYMBOL,)
        return ()


def _encoded_top(scan: ScanInput) -> bool:
    """Whether the top-level part itself is transfer-encoded (its field is in the header)."""
    encoding = scan.message.header("content-transfer-encoding") or ""
    return encoding.strip().lower() in ("base64", "quoted-printable")
