"""URLAUTH (RFC 4467) with URLAUTH=BINARY (RFC 5524), and the IMAP URLs that CATENATE
(RFC 4469) reads: GENURLAUTH, RESETKEY, URLFETCH, the mailbox access keys, and what a URL
names in the store.

Design notes:

- **Keys.** One random 64-octet mailbox access key per account and mailbox (RFC 4467 §7),
  made by the first GENURLAUTH for that mailbox and dropped by RESETKEY. They live in
  ``pochta-urlauth.sqlite3`` beside the account's index (``MaildirStore.account_root``), an
  SQLite file so that every process sees one key and a change survives a crash
  (``synchronous=FULL``). A key remembers the UIDVALIDITY it was made for: a mailbox deleted
  and created again under the same name gets a new key, so old URLs do not name new mail.
- **INTERNAL** (RFC 4467 §7): the token is HMAC-SHA256 of the URL's rump under the
  mailbox's key, after one version octet (1), hex-encoded; Dovecot builds it the same way.
- **Access** (RFC 4467 §3): ``anonymous`` and ``authuser`` let any logged-in user fetch,
  ``user+NAME`` only NAME; ``submit+NAME`` is for a submission server acting for NAME, and
  pochta's submission has no such role yet, so those URLs are signed but fetch NIL.
- Every store read runs in a thread (``SessionBase.blocking``); a URL that does not resolve
  for any reason gives NIL (URLFETCH) or NO [BADURL] (CATENATE), without saying why, as
  RFC 4467 §6.3 asks.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pochta.access.imap_errors import Bad, No
from pochta.access.imap_mime import (
    Part,
    UnknownTransferEncoding,
    body_structure,
    decoded_body,
    fetch_section,
    find_part,
    leaf_parts,
    parse_structure,
)
from pochta.access.imap_selected import SelectedMailbox
from pochta.logs import get_logger
from pochta.protocols.imap import commands as C
from pochta.protocols.imap import url as U
from pochta.protocols.imap.core import Command
from pochta.protocols.imap.values import Atom, IMAPValue
from pochta.store import INBOX, FolderInfo, MailStore, StoreError

log = get_logger("imap")

KEYS_FILE = "pochta-urlauth.sqlite3"
KEY_OCTETS = 64  # as Dovecot's IMAP_URLAUTH_KEY_LEN
INTERNAL_VERSION = b"\x01"
MECHANISMS = ("INTERNAL",)


class BadUrl(Exception):
    """A CATENATE URL that names nothing this user may read (RFC 4469 §6: NO [BADURL])."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


# -- mailbox access keys -------------------------------------------------------------------


@runtime_checkable
class AccountRoots(Protocol):
    """A store whose accounts are directories (the Maildir store)."""

    def account_root(self, address: str) -> Path: ...


def _keys_path(store: MailStore, address: str) -> Path:
    if not isinstance(store, AccountRoots):
        raise StoreError("URLAUTH keys need a store with account directories (maildir)")
    return store.account_root(address) / KEYS_FILE


@contextlib.contextmanager
def _keys_db(store: MailStore, address: str, *, create: bool) -> Iterator[sqlite3.Connection]:
    path = _keys_path(store, address)
    if not create and not path.exists():
        raise FileNotFoundError(path)
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS mailbox_keys ("
            "mailbox TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL, key BLOB NOT NULL)"
        )
        yield db
    finally:
        db.close()


def mailbox_key(
    store: MailStore, address: str, mailbox: str, uidvalidity: int, *, create: bool
) -> bytes | None:
    """The mailbox access key (RFC 4467 §7); with ``create``, made when there is none or
    when it was made for another UIDVALIDITY."""
    try:
        with _keys_db(store, address, create=create) as db:
            if create:
                db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT uidvalidity, key FROM mailbox_keys WHERE mailbox = ?", (mailbox,)
            ).fetchone()
            if row is not None and row[0] == uidvalidity:
                if create:
                    db.execute("COMMIT")
                return bytes(row[1])
            if not create:
                return None
            key = secrets.token_bytes(KEY_OCTETS)
            db.execute(
                "INSERT OR REPLACE INTO mailbox_keys (mailbox, uidvalidity, key) VALUES (?, ?, ?)",
                (mailbox, uidvalidity, key),
            )
            db.execute("COMMIT")
            return key
    except FileNotFoundError:
        return None
    except sqlite3.Error as exc:
        raise StoreError(f"URLAUTH keys of {address} cannot be read: {exc}") from exc


def reset_keys(store: MailStore, address: str, mailbox: str | None) -> None:
    """RFC 4467 §4 RESETKEY: drop the key of one mailbox, or of every mailbox."""
    try:
        with _keys_db(store, address, create=False) as db:
            if mailbox is None:
                db.execute("DELETE FROM mailbox_keys")
            else:
                db.execute("DELETE FROM mailbox_keys WHERE mailbox = ?", (mailbox,))
    except FileNotFoundError:
        return
    except sqlite3.Error as exc:
        raise StoreError(f"URLAUTH keys of {address} cannot be changed: {exc}") from exc


def internal_token(key: bytes, rump: str) -> str:
    # RFC 4467 §7: the INTERNAL mechanism's token is an HMAC of the rump under the key
    # (HMAC-SHA256 after a version octet, as Dovecot).
    digest = hmac.new(key, rump.encode("ascii"), hashlib.sha256).digest()
    return (INTERNAL_VERSION + digest).hex()


# -- what a URL names ---------------------------------------------------------------------


def store_mailbox(name: str) -> str:
    """A URL's mailbox (UTF-8, RFC 5092 §3) in the store's words."""
    if name.upper() == INBOX:
        return INBOX
    if name.upper().startswith(INBOX + "."):
        return INBOX + name[len(INBOX) :]
    return name


def _folder(store: MailStore, owner: str, name: str) -> FolderInfo | None:
    try:
        folders = store.list_folders(owner)
    except StoreError:
        return None
    return next((f for f in folders if f.name == name), None)


def authorised(url: U.ImapUrl, user: str, now: float) -> bool:
    """RFC 4467 §3 and §6.3: the URL's access identifier lets ``user`` fetch it, and its
    EXPIRE has not passed."""
    if url.expire is not None and now >= url.expire.timestamp():
        return False
    if url.access in ("anonymous", "authuser"):
        return True
    if url.access is not None and url.access.lower().startswith("user+"):
        return (url.access_user or "").lower() == user.lower()
    return False  # submit+: no submission role in pochta yet


def read_url(
    store: MailStore, url: U.ImapUrl, owner: str, *, user: str, now: float
) -> bytes | None:
    """The message ``url`` names in ``owner``'s mailboxes, if ``user`` may read it (runs in a
    thread). A URL with URLAUTH is checked against its token; one without it names the
    user's own mail only."""
    if url.access is not None:
        if url.mechanism != "INTERNAL" or url.token is None or url.rump is None:
            return None
        if not authorised(url, user, now):
            return None
    elif owner.lower() != user.lower():
        return None
    folder = _folder(store, owner, store_mailbox(url.mailbox))
    if folder is None or (url.uidvalidity is not None and url.uidvalidity != folder.uidvalidity):
        return None
    if url.access is not None:
        assert url.rump is not None
        assert url.token is not None
        key = mailbox_key(store, owner, folder.name, folder.uidvalidity, create=False)
        if key is None or not hmac.compare_digest(internal_token(key, url.rump), url.token):
            return None
    try:
        return store.fetch_message(owner, folder.name, url.uid)
    except StoreError:
        return None


def _partial(data: bytes, url: U.ImapUrl) -> bytes:
    if url.partial is None:
        return data
    origin, length = url.partial  # RFC 5092 §11: past the end is empty
    return data[origin:] if length is None else data[origin : origin + length]


def url_body(raw: bytes, url: U.ImapUrl) -> bytes | None:
    """The octets the URL names (RFC 5092 §11 isection, ipartial); None: no such part."""
    item = url.fetch_item
    root = parse_structure(raw)
    part = find_part(root, item.part) if item.part else root
    if part is None:
        return None
    # RFC 9051 §6.4.5: only a message/rfc822 part has a HEADER and a TEXT.
    texts = ("HEADER", "TEXT", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
    if item.text in texts and item.part and part.message is None:
        return None
    return _partial(fetch_section(raw, root, item.part, item.text, item.fields), url)


def url_structure(raw: bytes, url: U.ImapUrl, *, binary: bool = False) -> IMAPValue:
    """RFC 5524 §3.2 BODYPARTSTRUCTURE: the part's BODYSTRUCTURE (NIL for a header or text
    section, which is no body part). ``binary``: BINARY is asked too, and, as Dovecot reads
    RFC 5524, the sizes and line counts are those of the decoded content BINARY returns,
    the encodings still the parts' own."""
    item = url.fetch_item
    if item.text is not None:
        return None
    root = parse_structure(raw)
    part = find_part(root, item.part) if item.part else root
    if part is None:
        return None
    plain = body_structure(part, True, raw)
    edits = _decode_edits(raw, part) if binary else None
    if not edits:
        return plain
    decoded = _apply(raw, edits, 0, len(raw))
    new_root = parse_structure(decoded)
    new_part = find_part(new_root, item.part) if item.part else new_root
    if new_part is None:
        return plain
    structure = body_structure(new_part, True, decoded)
    # Decoded octets could hold a boundary and change the tree: then the plain structure.
    return structure if _restore_encodings(structure, part, new_part, decoded) else plain


def _restore_encodings(structure: IMAPValue, part: Part, new: Part, decoded: bytes) -> bool:
    """Put each leaf's own Content-Transfer-Encoding back into ``structure`` (built from
    ``new``, the part in the decoded message) and count its lines as Dovecot does (line
    ends only: decoded data rarely ends with one); False when the two trees differ."""
    if not isinstance(structure, list):
        return False
    if part.is_multipart:
        if len(structure) < len(part.children) or len(new.children) != len(part.children):
            return False
        return all(
            _restore_encodings(structure[i], c, new.children[i], decoded)
            for i, c in enumerate(part.children)
        )
    if len(structure) < 7:
        return False
    cte = part.value("content-transfer-encoding")
    structure[5] = cte.decode("utf-8", "replace").strip().lower() if cte else "7bit"
    lines = decoded.count(b"\n", new.body_start, new.end)
    if part.message is not None:
        if len(structure) < 10 or new.message is None:
            return False
        structure[9] = lines
        return _restore_encodings(structure[8], part.message, new.message, decoded)
    if part.maintype == "text" and len(structure) > 7:
        structure[7] = lines
    return True


def url_binary(raw: bytes, url: U.ImapUrl) -> bytes | None:
    """RFC 5524 §4 BINARY: the part with its content transfer encoding undone (RFC 3516);
    for a message or multipart, every leaf below it decoded and marked binary. None when
    an encoding is unknown or the part does not exist."""
    item = url.fetch_item
    root = parse_structure(raw)
    part = find_part(root, item.part) if item.part else root
    if part is None:
        return None
    if item.text is not None:
        return url_body(raw, url)
    if not item.part:
        data = _decoded_tree(raw, root, 0, len(raw))
    elif part.message is not None:
        data = _decoded_tree(raw, part.message, part.body_start, part.end)
    elif part.is_multipart:
        data = _decoded_tree(raw, part, part.body_start, part.end)
    else:
        data = _decoded_leaf(raw, part)
    return None if data is None else _partial(data, url)


_BINARY_CTE = b"Content-Transfer-Encoding: binary\r\n"


def _decoded_leaf(raw: bytes, part: Part) -> bytes | None:
    """The part's body decoded, or None when it cannot be (its encoding is unknown or its
    base64 unreadable): the URL then fetches NIL."""
    try:
        return decoded_body(raw, part)
    except UnknownTransferEncoding:
        return None


def _decode_edits(raw: bytes, top: Part) -> list[tuple[int, int, bytes]] | None:
    """The edits that decode every encoded leaf at or below ``top`` and mark it binary;
    None when an encoding is unknown."""
    edits: list[tuple[int, int, bytes]] = []
    for part in leaf_parts(top):
        cte = (part.value("content-transfer-encoding") or b"7bit").strip().lower()
        if cte in (b"7bit", b"8bit", b"binary"):
            continue
        body = _decoded_leaf(raw, part)
        if body is None:
            return None
        edits.append((part.body_start, part.end, body))
        for name, _, s, e in part.fields:
            if name == "content-transfer-encoding":
                edits.append((s, e, _BINARY_CTE))
    return edits


def _apply(raw: bytes, edits: list[tuple[int, int, bytes]], start: int, end: int) -> bytes:
    out = bytearray(raw[start:end])
    for s, e, replacement in sorted(edits, reverse=True):
        out[s - start : e - start] = replacement
    return bytes(out)


def _decoded_tree(raw: bytes, top: Part, start: int, end: int) -> bytes | None:
    edits = _decode_edits(raw, top)
    return None if edits is None else _apply(raw, edits, start, end)


def catenate(
    store: MailStore, parts: tuple[C.CatText | C.CatUrl, ...], *, user: str, now: float
) -> bytes:
    """RFC 4469 §5: one message from TEXT parts and the octets URL parts name (relative URLs
    are this server's; runs in a thread). BadUrl names the first URL that fails."""
    out = bytearray()
    for part in parts:
        if isinstance(part, C.CatText):
            out += part.data
            continue
        try:
            url = U.parse_url(part.url, relative=True)
        except U.UrlError:
            raise BadUrl(part.url) from None
        owner = url.owner or user
        raw = read_url(store, url, owner, user=user, now=now)
        data = None if raw is None else url_body(raw, url)
        if data is None:
            raise BadUrl(part.url)
        out += data
    return bytes(out)


def extended_data(raw: bytes, url: U.ImapUrl, params: tuple[str, ...]) -> bytes:
    """RFC 5524 §4 the data of URLFETCH (url param ...), in the order BODYPARTSTRUCTURE,
    BINARY, BODY (a literal8 where the decoded octets hold NUL)."""
    items: list[bytes] = []
    if "BODYPARTSTRUCTURE" in params:
        binary = "BINARY" in params
        items.append(b"BODYPARTSTRUCTURE " + C.render(url_structure(raw, url, binary=binary)))
    if "BINARY" in params:
        items.append(b"BINARY " + C.render(url_binary(raw, url), binary=True))
    if "BODY" in params:
        items.append(b"BODY " + C.render(url_body(raw, url)))
    return b" ".join(items)


def badurl_code(url: str) -> str:
    # RFC 4469 §6: "BADURL" SP url-resp-text; url-resp-text has no "]" nor CR/LF.
    return "BADURL " + re.sub(r"[\]\r\n\x00]", "", url)


class UrlAuthCommands(SelectedMailbox):
    """GENURLAUTH, RESETKEY and URLFETCH (RFC 4467, RFC 5524), valid once logged in."""

    def _clock(self) -> float:
        return time.time()

    def _owner(self, url: U.ImapUrl) -> str | None:
        """The account the URL names, as the directory spells it; None if there is none."""
        owner = url.owner
        if owner is None:
            return None
        account = self.server.directory.get_account(owner)
        return None if account is None else account.address

    async def cmd_genurlauth(self, cmd: Command) -> str:
        assert self.user is not None
        out: list[IMAPValue] = []
        for text, mechanism in U.genurlauth_args(cmd.args):
            try:
                url = U.parse_url(text)
            except U.UrlError as exc:
                raise Bad(str(exc)) from None
            if url.access is None or url.rump is None or url.token is not None:
                # RFC 4467 §6.1: a rump ends with ";URLAUTH=access" and has no verifier.
                raise Bad("GENURLAUTH needs a URL ending in ;URLAUTH=access, without a token")
            if mechanism not in MECHANISMS:
                raise No(f"Unknown URLAUTH mechanism {mechanism}; this server has INTERNAL")
            owner = url.owner or ""
            if owner.lower() != self.user.lower():
                # RFC 4467 §6.1: only the owner of the mailbox may authorise its URLs.
                raise No(f"URLs of {owner} can only be authorised by that user", "NOPERM")
            name = store_mailbox(url.mailbox)
            folder = await self.blocking(_folder, self.store, self.user, name)
            if folder is None:
                raise No(f"No mailbox {url.mailbox}", "NONEXISTENT")
            if url.uidvalidity is not None and url.uidvalidity != folder.uidvalidity:
                raise No(f"UIDVALIDITY of {url.mailbox} is {folder.uidvalidity}", "BADURL")
            key = await self.blocking(
                mailbox_key, self.store, self.user, name, folder.uidvalidity, create=True
            )
            assert key is not None
            out.append(f"{url.rump}:{mechanism}:{internal_token(key, url.rump)}")
        self.untagged(Atom("GENURLAUTH"), *out)  # RFC 4467 §9 genurlauth-data
        return "GENURLAUTH completed"

    async def cmd_resetkey(self, cmd: Command) -> str | None:
        assert self.user is not None
        wire, mechanisms = U.resetkey_args(cmd.args)
        unknown = [m for m in mechanisms if m not in MECHANISMS]
        if unknown:
            raise No(f"Unknown URLAUTH mechanism {unknown[0]}; this server has INTERNAL")
        if wire is None:
            await self.blocking(reset_keys, self.store, self.user, None)
            return "RESETKEY completed: every mailbox has a new key"
        name = self.folder_name(wire)
        if await self.blocking(_folder, self.store, self.user, name) is None:
            raise No(f"No mailbox {wire}", "NONEXISTENT")
        await self.blocking(reset_keys, self.store, self.user, name)
        # RFC 4467 §4: the OK of RESETKEY with a mailbox names the mechanisms.
        self.send(C.tagged(cmd.tag, "OK", "RESETKEY completed", "URLMECH INTERNAL"))
        return None

    async def cmd_urlfetch(self, cmd: Command) -> str:
        assert self.user is not None
        for text, params in U.urlfetch_args(cmd.args):
            raw: bytes | None = None
            url: U.ImapUrl | None = None
            try:
                url = U.parse_url(text)
            except U.UrlError:
                url = None
            owner = None if url is None else self._owner(url)
            if url is not None and owner is not None and url.token is not None:
                raw = await self.blocking(
                    read_url, self.store, url, owner, user=self.user, now=self._clock()
                )
            if url is None or raw is None:
                # RFC 4467 §6.3: a URL that fails is answered NIL, with no reason given.
                self.send(C.untagged(Atom("URLFETCH"), text, None))
                continue
            if params is None:
                body = await self.blocking(url_body, raw, url)
                self.send(C.untagged(Atom("URLFETCH"), text, C.render(body)))
                continue
            data = await self.blocking(extended_data, raw, url, params)
            self.send(b"* URLFETCH " + C.render(text) + b" (" + data + b")\r\n")
        return "URLFETCH completed"
