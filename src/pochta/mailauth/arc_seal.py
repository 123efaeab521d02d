"""The ARC sealer (RFC 8617 §5.1): one ARC set on mail we forward, with the host's key.

A forwarder that changes nothing still breaks SPF at the next hop (our IP is not in the
sender's record) and may break DKIM (a list footer, a changed Subject). ARC lets it say what
it saw: the ``ARC-Authentication-Results`` (AAR, RFC 8617 §4.1.1) is a copy of our
``Authentication-Results``, the ``ARC-Message-Signature`` (AMS, §4.1.2) signs the message as
it leaves, the ``ARC-Seal`` (AS, §4.1.3) signs the ARC sets so far. A receiver that trusts us
can then override a DMARC failure (RFC 8617 §7.2).

:func:`seal_fields` is pure: message bytes, the authserv-id of our Authentication-Results and
the key in, the three fields out (AS on top: §5.1 "prepended"), by dkimpy's ``arc_sign``
(which also needs the ``authres`` package to read the Authentication-Results). How it does
the rules of §5.1:

- §5.1.1: the instance ``i=`` is one more than the highest on the message, at most 50
  (§4.2.1); ``cv`` is the ``arc=`` result in our Authentication-Results (written by ARC
  verification of incoming mail); ``none`` for the first set.
- §5.1.2: a message with ARC sets but no ``arc=`` result of ours cannot be sealed (we would
  not know ``cv``): nothing is added (:class:`SealError`, kind ``chain``); the same when our
  Authentication-Results is missing (kind ``results``: the inbound checks did not run).
- §4.1.3 / §5.1.1: the AS covers every ARC set (only the new one when ``cv=fail``); RSA-SHA256
  only (dkimpy seals with RSA; RFC 8617 §4.1.2 names no other algorithm yet).

:class:`ArcSealer` is the adapter the door uses: the key is the one the DKIM signer finds
for the host name (its signing-only directory entry, or the hosted domain above it; see
``mailauth/dkim_sign.py``), read through the signer's key cache; signing runs in a thread.
"""

from __future__ import annotations

import asyncio
import time

import dkim

from pochta.logs import get_logger
from pochta.mailauth.dkim_sign import DkimSigner, SignError
from pochta.mime.headers import (
    MAX_HEADER_BLOCK_BYTES,
    SplitMessage,
    detect_newline,
    split_message,
)

__all__ = ["ARC_FIELDS", "ArcSealer", "SealError", "seal_fields"]

log = get_logger("arc")

ARC_FIELDS = ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results")
_MAX_INSTANCE = 50  # RFC 8617 §4.2.1: i= is 1..50


class SealError(Exception):
    """No ARC set can be added: ``kind`` is "results" (no Authentication-Results of ours),
    "chain" (a chain whose validity we did not record), "limit" (i= would pass 50), "key"
    (no usable RSA key) or "format" (a message dkimpy cannot parse)."""

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _head(content: bytes) -> SplitMessage:
    return split_message(content[: 2 * MAX_HEADER_BLOCK_BYTES])  # no copy of the body


def _arc_instances(content: bytes) -> int:
    head = _head(content)
    highest = 0
    for field in head.headers:
        if field.key != "arc-seal":
            continue
        for tag in field.text.split(";"):
            name, eq, value = tag.partition("=")
            if eq and name.strip() == "i" and value.strip().isdigit():
                highest = max(highest, int(value.strip()))
    return highest


def seal_fields(
    content: bytes,
    *,
    authserv_id: str,
    domain: str,
    selector: str,
    private_key: bytes,
    timestamp: int | None = None,
) -> bytes:
    """The new ARC set as raw header lines (AS, AMS, AAR, in that order, each ending with
    the message's line ending), ready to be prepended; SealError when none can be made."""
    if _arc_instances(content) >= _MAX_INSTANCE:
        raise SealError(f"the message has {_MAX_INSTANCE} ARC sets already", kind="limit")
    newline = detect_newline(_head(content))
    try:
        fields: list[bytes] = dkim.arc_sign(
            content,
            selector.encode("ascii"),
            domain.encode("ascii"),
            private_key,
            authserv_id.encode("ascii"),
            timestamp=timestamp if timestamp is not None else int(time.time()),
            linesep=newline,
        )
    except dkim.KeyFormatError as exc:
        raise SealError(f"key unusable: {exc}", kind="key") from None
    except (dkim.MessageFormatError, dkim.ParameterError) as exc:
        raise SealError(str(exc)[:200], kind="format") from None
    if not fields:
        # dkimpy returns nothing without our Authentication-Results, or with earlier ARC
        # sets and no arc= result to take cv from (RFC 8617 §5.1.2).
        if _arc_instances(content):
            raise SealError("earlier ARC sets, and no arc= result of ours", kind="chain")
        raise SealError(f"no Authentication-Results of {authserv_id}", kind="results")
    return b"".join(f if f.endswith(newline) else f + newline for f in fields)


class ArcSealer:
    """Seals with the RSA key the DKIM signer has for ``hostname`` (see the module
    docstring); ``authserv_id`` is the host name our Authentication-Results carry."""

    def __init__(self, signer: DkimSigner, hostname: str) -> None:
        self._signer = signer
        self.hostname = hostname.rstrip(".").lower()

    async def seal(self, content: bytes, *, queue_id: str = "") -> bytes:
        """``content`` with one ARC set prepended; SealError when none can be added."""
        try:
            key = self._signer.signing_key(self.hostname, "rsa-sha256")
        except SignError as exc:
            raise SealError(exc.reason, kind="key") from None
        if key is None:
            raise SealError(f"no active RSA DKIM selector for {self.hostname}", kind="key")
        fields = await asyncio.to_thread(
            seal_fields,
            content,
            authserv_id=self.hostname,
            domain=key.domain,
            selector=key.selector,
            private_key=key.private_key,
        )
        instance = _arc_instances(fields + content)
        log.info(
            "arc_sealed",
            queue_id=queue_id,
            instance=instance,
            domain=key.domain,
            selector=key.selector,
        )
        return fields + content
