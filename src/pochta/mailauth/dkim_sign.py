"""DKIM signing of submitted mail: a cleanup filter (RFC 6376; Ed25519 per RFC 8463).

Which mail is signed: only what a local user submits (``CleanupInput.submission``), and only
when the RFC5322.From domain is a hosted domain with active selectors. The signing domain
``d=`` is the From domain itself, so that the signature is aligned for DMARC (RFC 7489 §3.1)
in both strict and relaxed mode. Anything else passes unchanged, with a debug line saying why.

One signature per active selector: a domain made by ``pochta dkim keygen`` has an RSA-2048
and an Ed25519 selector, so mail carries both side by side. RFC 8463 §1: verifiers that do
not know Ed25519 ignore that signature and use the RSA one. The RSA signature is placed on
top, because some verifiers only look at the first one.

What each signature covers (RFC 6376 §5.4.1 lists the fields a signer SHOULD sign):

- the fields of :data:`SIGNED_FIELDS` and every ``List-*`` field (RFC 2369, RFC 2919; RFC 8058
  §4 requires List-Unsubscribe and List-Unsubscribe-Post to be signed) that the message has,
  each instance;
- over-signing (RFC 6376 §5.4.2, §8.15): each field of :data:`OVERSIGNED_FIELDS` is listed
  once more than the message has it (once when it has none), so a field added on the way —
  a second From or Subject, a Reply-To, a Content-Type that reinterprets the body — breaks
  the signature instead of riding along. Sender and List-* are not over-signed: mailing lists
  add them legitimately.

Canonicalisation is relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4): it survives refolding and
whitespace changes by relays. No ``l=`` body length (RFC 6376 §8.2: it lets anyone append
content).

Keys are read with :func:`pochta.mailauth.dkim_keys.load_private_key` and kept in memory;
a key file that changes (inode, size or mtime) is read again. Parsing the message and hashing
the body are CPU work, so signing always runs in a thread (``asyncio.to_thread``).

A key that cannot be read refuses the message with ``451 4.3.0`` and an error line in the log:
the client tries again later, and nothing leaves unsigned by mistake.

The signature must be the last change to the header: this filter must be the **last** filter
of :class:`pochta.cleanup.pipeline.Cleanup` (see ``server/mail.py``). Fields prepended after
it would not break the signature, but any change to a signed field or the body would.

Mail queued by ``pochta sendmail`` does not pass through cleanup (the command runs as any
local user, who cannot read the keys): the server signs it with this same filter when it
leaves for another server (``server/mail.py``, ``Deliverer``'s ``sign_outgoing``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
import msgspec

from pochta.cleanup.canonical import address_spans
from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError, normalize_domain
from pochta.directory.base import Directory
from pochta.directory.model import DkimSelector
from pochta.logs import get_logger
from pochta.mailauth.dkim_keys import DkimKeyError, load_private_key
from pochta.mime.headers import MAX_HEADER_BLOCK_BYTES, HeaderField, split_message
from pochta.protocols.smtp.replies import Reply

__all__ = [
    "KEY_UNAVAILABLE",
    "MAX_SIGNED_FIELDS",
    "OVERSIGNED_FIELDS",
    "SIGNED_FIELDS",
    "TOO_MANY_FIELDS",
    "UNSIGNABLE_HEADER",
    "DkimSigner",
    "signed_field_names",
    "signing_domain",
]

log = get_logger("dkim")

# RFC 6376 §5.4.1: the fields a signer SHOULD sign, as far as a submitted message has them.
SIGNED_FIELDS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
# RFC 6376 §5.4.2 / §8.15: listed once more than present, so that none can be added. These are
# the fields RFC 5322 §3.6 and RFC 2045 allow at most once (Sender excepted: lists add it).
OVERSIGNED_FIELDS: frozenset[str] = frozenset(SIGNED_FIELDS) - {"sender"}
_SIGNED = frozenset(SIGNED_FIELDS)
_LIST_PREFIX = "list-"  # RFC 2369 / RFC 2919 / RFC 8058 List-* fields: signed when present

MAX_SIGNED_FIELDS = 256
"""Most names in one signature's ``h=`` list (over-signed ones included); a message that
would need more is refused (5.6.0) rather than signed in part."""

# Deviation from RFC 6376 (which says nothing about it): a key that cannot be used is a
# temporary failure, not a reason to send the message unsigned.
KEY_UNAVAILABLE = Reply(451, "4.3.0", "Cannot DKIM-sign the message now; try again later")
TOO_MANY_FIELDS = Reply(
    550, "5.6.0", f"Message has too many header fields to DKIM-sign (limit {MAX_SIGNED_FIELDS})"
)
UNSIGNABLE_HEADER = Reply(
    550, "5.6.0", "Message header cannot be DKIM-signed (white space before a colon?)"
)

_SIGNATURE_FIELD = "DKIM-Signature"
# RSA first: its signature ends on top (prepended last), see the module docstring.
_ALGORITHM_ORDER = {"rsa-sha256": 0, "ed25519-sha256": 1}
_KEY_CACHE_MAX = 1024  # selectors whose keys are kept; bounded by the directory anyway


class _KeyCache:
    """Private keys by file, read again when the file changes. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], tuple[tuple[int, int, int, int], bytes]] = {}

    def get(self, sel: DkimSelector) -> bytes:
        """The key in the form dkimpy takes; DkimKeyError when it cannot be read."""
        cache_key = (sel.key_path, sel.algorithm)
        try:
            st = os.stat(sel.key_path)
        except OSError:
            with self._lock:
                self._keys.pop(cache_key, None)
            return load_private_key(sel)  # raises DkimKeyError saying what is wrong
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._keys.get(cache_key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        # Read after stat: if the file changes in between, the next stat differs again.
        key = load_private_key(sel)
        with self._lock:
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[cache_key] = (stamp, key)
        return key


@dataclass(frozen=True, slots=True)
class _Signed:
    selector: str
    algorithm: str
    value: str  # the DKIM-Signature value, folded, without the name and the final newline


class _KeyProblem(Exception):
    def __init__(self, selector: str, reason: str) -> None:
        super().__init__(reason)
        self.selector = selector
        self.reason = reason


def signing_domain(headers: Sequence[HeaderField]) -> tuple[str | None, str]:
    """The RFC5322.From domain (A-label, lower case) to sign for, or None and why not.

    RFC 5322 §3.6: exactly one From field; its addresses must share one domain (RFC 7489
    §6.6.1: with several From domains there is no single domain to align with)."""
    froms = [h for h in headers if h.key == "from"]
    if not froms:
        return None, "no From field"
    if len(froms) > 1:
        return None, "several From fields"
    text = froms[0].text
    domains: set[str] = set()
    for start, end in address_spans(text):
        address = text[start:end]
        try:
            domains.add(normalize_domain(address.rpartition("@")[2]))
        except AddressError:
            return None, "From address without a usable domain"
    if not domains:
        return None, "no address in From"
    if len(domains) > 1:
        return None, "From addresses in several domains"
    return domains.pop(), ""


def signed_field_names(headers: Sequence[HeaderField]) -> list[str]:
    """The ``h=`` list: each signed field as often as present, in message order, then one
    more of each over-signed field (RFC 6376 §5.4.2: a name listed more often than the
    field occurs stands for a field that must not be there)."""
    names: list[str] = []
    for header in headers:
        key = header.key
        if key in _SIGNED or key.startswith(_LIST_PREFIX):
            names.append(key)
    # RFC 6376 §8.15: over-sign, also the fields the message does not have.
    names.extend(name for name in SIGNED_FIELDS if name in OVERSIGNED_FIELDS)
    return names


class DkimSigner:
    """Signs submitted mail for hosted domains; ``filter`` is a cleanup ``Filter`` and must
    be the last one (the signature is the last change to the header)."""

    def __init__(self, directory: Directory, settings: Settings) -> None:
        self._directory = directory
        self._enabled = settings.dkim.sign
        self._keys_dir = settings.dkim_dir
        self._keys = _KeyCache()

    async def filter(self, result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        """``result`` with one DKIM-Signature per active selector prepended, unchanged when
        the message is not to be signed, or a Reply refusing it (see the module docstring)."""
        if not self._enabled or not info.submission:
            return result
        # The header block is at most 1 MiB plus what cleanup added: no copy of the body.
        head = split_message(result.content[: 2 * MAX_HEADER_BLOCK_BYTES])
        domain, why = signing_domain(head.headers)
        if domain is None:
            log.debug("dkim_not_signed", queue_id=info.queue_id, reason=why)
            return result
        hosted = self._directory.get_domain(domain)
        if hosted is None:
            log.debug("dkim_not_signed", queue_id=info.queue_id, domain=domain, reason="not hosted")
            return result
        selectors = sorted(
            (s for s in hosted.dkim if s.active),
            key=lambda s: (_ALGORITHM_ORDER.get(s.algorithm, 2), s.selector),
        )
        if not selectors:
            log.debug(
                "dkim_not_signed",
                queue_id=info.queue_id,
                domain=domain,
                reason="no active selector",
            )
            return result
        names = signed_field_names(head.headers)
        if len(names) > MAX_SIGNED_FIELDS:
            log.info(
                "dkim_refused", queue_id=info.queue_id, domain=domain, reason="too many fields"
            )
            return TOO_MANY_FIELDS
        try:
            signed = await asyncio.to_thread(self._sign, result.content, domain, selectors, names)
        except _KeyProblem as exc:
            log.error(
                "dkim_key_unusable",
                queue_id=info.queue_id,
                domain=domain,
                selector=exc.selector,
                reason=exc.reason,
            )
            return KEY_UNAVAILABLE
        except dkim.MessageFormatError as exc:
            log.info("dkim_refused", queue_id=info.queue_id, domain=domain, reason=str(exc)[:200])
            return UNSIGNABLE_HEADER
        # Prepend in reverse: the first selector's signature ends on top.
        for sig in reversed(signed):
            result = result.prepend_header(_SIGNATURE_FIELD, sig.value)
        log.info(
            "dkim_signed",
            queue_id=info.queue_id,
            domain=domain,
            selectors=",".join(s.selector for s in signed),
        )
        return result

    def _key(self, sel: DkimSelector) -> bytes:
        path = Path(sel.key_path)
        if not path.is_absolute():  # the directory stores absolute paths; be lenient
            sel = msgspec.structs.replace(sel, key_path=str(self._keys_dir / path))
        if sel.algorithm not in _ALGORITHM_ORDER:
            raise _KeyProblem(sel.selector, f"unknown algorithm {sel.algorithm!r}")
        try:
            return self._keys.get(sel)
        except DkimKeyError as exc:
            raise _KeyProblem(sel.selector, str(exc)) from None

    def _sign(
        self, content: bytes, domain: str, selectors: Sequence[DkimSelector], names: list[str]
    ) -> list[_Signed]:
        """One signature per selector (runs in a thread). The message is parsed once."""
        keys = [self._key(sel) for sel in selectors]  # every key first: all or nothing
        message = dkim.DKIM(content)
        out: list[_Signed] = []
        for sel, key in zip(selectors, keys, strict=True):
            try:
                raw: bytes = message.sign(
                    sel.selector.encode("ascii"),
                    domain.encode("ascii"),
                    key,
                    signature_algorithm=sel.algorithm.encode("ascii"),
                    # RFC 6376 §3.4.2 / §3.4.4: relaxed header and body canonicalisation.
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[n.encode("ascii") for n in names],
                    length=False,  # RFC 6376 §8.2: no l=
                )
            except dkim.KeyFormatError as exc:
                raise _KeyProblem(sel.selector, f"key of {sel.key_path} unusable: {exc}") from None
            out.append(_Signed(sel.selector, sel.algorithm, _field_value(raw)))
        return out


def _field_value(raw: bytes) -> str:
    """The value of the ``DKIM-Signature: ...`` field dkimpy returns, for make_field: without
    the name, the space after the colon and the final line ending; folds kept."""
    text = raw.decode("ascii")
    name, colon, value = text.partition(":")
    if not colon or name.strip().lower() != "dkim-signature":  # pragma: no cover - dkimpy's form
        raise ValueError("dkimpy returned something other than a DKIM-Signature field")
    return value.lstrip(" ").rstrip("\r\n")
