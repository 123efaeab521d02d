"""The DKIM signing filter of cleanup: ``mailauth/dkim_sign.py`` adapted to the pipeline.

Which mail is signed: what a local user submits (``CleanupInput.submission``: submission
listeners, ``pochta sendmail`` through pickup, the server's notices), when the signer finds
a hosted domain for the From domain (see ``mailauth/dkim_sign.py``). Each signature is
prepended as a ``DKIM-Signature:`` field, the first selector's on top.

The signature must be the last change to the header: this filter must be the **last** filter
of :class:`pochta.cleanup.pipeline.Cleanup` (see ``server/mail.py``). Fields prepended after
it would not break the signature, but any change to a signed field or the body would.
"""

from __future__ import annotations

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.mailauth.dkim_sign import MAX_SIGNED_FIELDS, SIGNATURE_FIELD, DkimSigner, SignError
from pochta.protocols.smtp.replies import Reply

__all__ = ["KEY_UNAVAILABLE", "TOO_MANY_FIELDS", "UNSIGNABLE_HEADER", "DkimFilter"]

# Deviation from RFC 6376 (which says nothing about it): a key that cannot be used is a
# temporary failure, not a reason to send the message unsigned.
KEY_UNAVAILABLE = Reply(451, "4.3.0", "Cannot DKIM-sign the message now; try again later")
TOO_MANY_FIELDS = Reply(
    550, "5.6.0", f"Message has too many header fields to DKIM-sign (limit {MAX_SIGNED_FIELDS})"
)
UNSIGNABLE_HEADER = Reply(
    550, "5.6.0", "Message header cannot be DKIM-signed (white space before a colon?)"
)
_REPLIES = {"key": KEY_UNAVAILABLE, "fields": TOO_MANY_FIELDS, "format": UNSIGNABLE_HEADER}


class DkimFilter:
    """A cleanup ``Filter``: ``result`` with the signatures prepended, unchanged when the
    message is not to be signed, or a Reply refusing it."""

    def __init__(self, signer: DkimSigner, *, enabled: bool = True) -> None:
        self.signer = signer
        self._enabled = enabled

    async def __call__(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        if not self._enabled or not info.submission:
            return result
        try:
            signed = await self.signer.sign(result.content, queue_id=info.queue_id)
        except SignError as exc:
            return _REPLIES[exc.kind]
        if signed is None:
            return result
        # Prepend in reverse: the first selector's signature ends on top.
        for value in reversed(signed.values):
            result = result.prepend_header(SIGNATURE_FIELD, value)
        return result
