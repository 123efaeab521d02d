"""DKIM signing over bytes (RFC 6376; Ed25519 per RFC 8463): a message in, signatures out.

Pure signing: keys come from the directory's selector records and the key files, the message
is bytes; nothing here knows about cleanup, the queue or SMTP replies. The cleanup filter
that calls it for submitted mail (``CleanupInput.submission``) and turns its refusals into
replies is ``cleanup/dkim_filter.py``.

Which domain signs: the RFC5322.From domain when it is hosted here; otherwise the nearest
hosted parent domain (From ``MAILER-DAEMON@mail.example.org`` is signed with ``d=example.org``:
RFC 7489 §3.1.1 relaxed alignment holds, as both share the organizational domain). The
first hosted domain found decides: without active selectors the message is not signed.
Anything not signed passes unchanged, with a debug line saying why.

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

A key that cannot be read raises :class:`SignError` (``temporary``): the filter refuses the
message with ``451 4.3.0``, the client tries again later, and nothing leaves unsigned by
mistake.

Mail from ``pochta sendmail`` and the server's notices pass through cleanup like any other
(the pickup stage and the door), so they are signed there too.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dkim
import msgspec

from pochta.directory.addresses import AddressError, normalize_domain
from pochta.directory.base import Directory
from pochta.directory.model import DkimSelector, Domain
from pochta.logs import get_logger
from pochta.mailauth.dkim_keys import DkimKeyError, load_private_key
from pochta.mime.addresses import address_spans
from pochta.mime.headers import MAX_HEADER_BLOCK_BYTES, HeaderField, split_message

__all__ = [
    "MAX_SIGNED_FIELDS",
    "OVERSIGNED_FIELDS",
    "SIGNATURE_FIELD",
    "SIGNED_FIELDS",
    "DkimSigner",
    "SignError",
    "Signatures",
    "SigningKey",
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

SIGNATURE_FIELD = "DKIM-Signature"
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


class SignError(Exception):
    """The message cannot be signed. ``kind``: "key" (a key that cannot be used now: a
    temporary failure), "fields" (more than MAX_SIGNED_FIELDS to sign), "format" (a header
    dkimpy refuses)."""

    def __init__(self, reason: str, *, kind: Literal["key", "fields", "format"]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    @property
    def temporary(self) -> bool:
        return self.kind == "key"


@dataclass(frozen=True, slots=True)
class Signatures:
    """The DKIM-Signature values for one message, first selector first (to go on top)."""

    domain: str
    selectors: tuple[str, ...]
    values: tuple[str, ...]  # field values, folded, without the name and the final newline


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A hosted domain's selector and its private key (the form dkimpy takes)."""

    domain: str
    selector: str
    private_key: bytes


class DkimSigner:
    """Signs messages for hosted domains with their active selectors' keys."""

    def __init__(self, directory: Directory, keys_dir: Path) -> None:
        self._directory = directory
        self._keys_dir = keys_dir
        self._keys = _KeyCache()

    def hosted_signer(self, domain: str) -> Domain | None:
        """The hosted domain that signs for ``domain``: itself, else its nearest hosted
        parent (never a top-level name alone)."""
        labels = domain.split(".")
        for start in range(len(labels) - 1):
            found = self._directory.get_domain(".".join(labels[start:]))
            if found is not None:
                return found
        return None

    def signing_key(self, domain: str, algorithm: str) -> SigningKey | None:
        """The first active selector of ``algorithm`` of the hosted domain that signs for
        ``domain`` (as :meth:`sign` finds it), with its private key from the key cache; None
        when there is none, SignError (kind "key") when its key cannot be read. The ARC
        sealer (``mailauth/arc_seal.py``) takes the host name's key here."""
        hosted = self.hosted_signer(domain)
        if hosted is None:
            return None
        for sel in sorted(hosted.dkim, key=lambda s: s.selector):
            if sel.active and sel.algorithm == algorithm:
                try:
                    return SigningKey(hosted.name, sel.selector, self._key(sel))
                except _KeyProblem as exc:
                    raise SignError(exc.reason, kind="key") from None
        return None

    async def sign(self, content: bytes, *, queue_id: str = "") -> Signatures | None:
        """The signatures for ``content``, None when it is not to be signed (a debug line
        says why), or SignError (see the module docstring)."""
        # The header block is at most 1 MiB plus what cleanup added: no copy of the body.
        head = split_message(content[: 2 * MAX_HEADER_BLOCK_BYTES])
        from_domain, why = signing_domain(head.headers)
        if from_domain is None:
            log.debug("dkim_not_signed", queue_id=queue_id, reason=why)
            return None
        hosted = self.hosted_signer(from_domain)
        if hosted is None:
            log.debug("dkim_not_signed", queue_id=queue_id, domain=from_domain, reason="not hosted")
            return None
        domain = hosted.name
        selectors = sorted(
            (s for s in hosted.dkim if s.active),
            key=lambda s: (_ALGORITHM_ORDER.get(s.algorithm, 2), s.selector),
        )
        if not selectors:
            log.debug(
                "dkim_not_signed", queue_id=queue_id, domain=domain, reason="no active selector"
            )
            return None
        names = signed_field_names(head.headers)
        if len(names) > MAX_SIGNED_FIELDS:
            log.info("dkim_refused", queue_id=queue_id, domain=domain, reason="too many fields")
            raise SignError(f"more than {MAX_SIGNED_FIELDS} fields to sign", kind="fields")
        try:
            signed = await asyncio.to_thread(self._sign, content, domain, selectors, names)
        except _KeyProblem as exc:
            log.error(
                "dkim_key_unusable",
                queue_id=queue_id,
                domain=domain,
                selector=exc.selector,
                reason=exc.reason,
            )
            raise SignError(exc.reason, kind="key") from None
        except dkim.MessageFormatError as exc:
            log.info("dkim_refused", queue_id=queue_id, domain=domain, reason=str(exc)[:200])
            raise SignError(str(exc)[:200], kind="format") from None
        log.info(
            "dkim_signed",
            queue_id=queue_id,
            domain=domain,
            selectors=",".join(s.selector for s in signed),
        )
        return Signatures(
            domain,
            tuple(s.selector for s in signed),
            tuple(s.value for s in signed),
        )

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
