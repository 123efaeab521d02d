"""DKIM keys per domain: generation, the DNS TXT value, and loading for the signer.

Files live at ``keys_dir/DOMAIN/SELECTOR.key`` (0600), always PEM so that openssl, OpenDKIM
and rspamd can read them too:

- RSA: PKCS#1 ``-----BEGIN RSA PRIVATE KEY-----``, which every DKIM implementation reads.
- Ed25519: PKCS#8 ``-----BEGIN PRIVATE KEY-----`` (RFC 8410 §7).

dkimpy (>= 1.1.8) takes RSA keys as PEM but Ed25519 keys only as the base64 of the 32-byte
seed (``nacl.signing.SigningKey(privkey, encoder=Base64Encoder)``), so the signer must read
keys with ``load_private_key``, which returns what ``dkim.sign(privkey=...)`` expects for
the selector's algorithm. It also accepts a key file that already holds a base64 seed (as
written by dkimpy's ``dknewkey``), so imported keys work.

Selectors are named ``rsa-YYYYMM`` and ``ed-YYYYMM`` (``-2``, ``-3``... when taken): a dated
name shows at a glance how old a key is and never collides with the previous one at rotation.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pochta.directory.addresses import normalize_domain
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import DkimSelector
from pochta.durable import write_atomic

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
ALGORITHMS: tuple[Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")
_PREFIX: dict[str, str] = {"rsa-sha256": "rsa", "ed25519-sha256": "ed"}
# RFC 6376 §3.6.1 k= tag values; "ed25519" is RFC 8463 §4.2.
_KEY_TYPE: dict[str, str] = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}

# RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use at least 2048. Above 4096
# the TXT record outgrows what many DNS providers accept.
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 4096

# RFC 6376 §3.1: selector = sub-domain *( "." sub-domain ) (RFC 5321 §4.1.2 sub-domain).
_SELECTOR = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_B64_SEED = re.compile(rb"^[A-Za-z0-9+/]{43}=$")


class DkimKeyError(Exception):
    """A DKIM key cannot be made or read; the message names the file and what to do."""


def key_path_for(keys_dir: Path, domain: str, selector: str) -> Path:
    """Where the private key of ``selector`` for ``domain`` lives (absolute)."""
    return Path(os.path.abspath(keys_dir)) / domain / f"{selector}.key"


def check_selector(selector: str) -> str:
    """The selector, lower-cased, or DkimKeyError saying why it cannot be used."""
    if not _SELECTOR.match(selector) or len(selector) > 63:
        raise DkimKeyError(
            f"{selector!r} is not a valid DKIM selector; use letters, digits and '-' "
            "(RFC 6376 §3.1), e.g. rsa-202501"
        )
    return selector.lower()


def _default_selector(
    algorithm: Algorithm, domain_dir: Path, taken: Collection[str], now: dt.datetime
) -> str:
    base = f"{_PREFIX[algorithm]}-{now:%Y%m}"
    taken_lower = {t.lower() for t in taken}
    n = 1
    while True:
        name = base if n == 1 else f"{base}-{n}"
        if name not in taken_lower and not (domain_dir / f"{name}.key").exists():
            return name
        n += 1


def _new_key(algorithm: Algorithm, rsa_bits: int) -> tuple[bytes, str]:
    """(private key PEM, public key base64 for p=)."""
    if algorithm == "rsa-sha256":
        if not MIN_RSA_BITS <= rsa_bits <= MAX_RSA_BITS:
            raise DkimKeyError(
                f"RSA DKIM keys must have {MIN_RSA_BITS} to {MAX_RSA_BITS} bits, not {rsa_bits} "
                "(RFC 8301 §3.2; 2048 is the usual choice)"
            )
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        pem = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        # RFC 6376 §3.6.1: p= is the base64 of the DER SubjectPublicKeyInfo for k=rsa.
        public = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem, base64.b64encode(public).decode("ascii")
    if algorithm == "ed25519-sha256":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        pem = ed_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # RFC 8463 §4.2: p= is the base64 of the raw 32-byte public key, not an SPKI.
        raw = ed_key.public_key().public_bytes_raw()
        return pem, base64.b64encode(raw).decode("ascii")
    raise DkimKeyError(f"unknown DKIM algorithm {algorithm!r}; use rsa-sha256 or ed25519-sha256")


def _give_to_keys_owner(keys_dir: Path, *paths: Path) -> None:
    """Run as root on a keys directory that the server's user owns (a running server that
    dropped privileges): new files get that owner, so the server can read them at once."""
    if os.geteuid() != 0:
        return
    st = keys_dir.stat()
    if st.st_uid == 0:
        return
    for path in paths:
        os.chown(path, st.st_uid, st.st_gid)


def generate_selector(
    domain: str,
    keys_dir: Path,
    algorithm: Algorithm,
    selector: str | None = None,
    rsa_bits: int = 2048,
    *,
    taken: Collection[str] = (),
    now: dt.datetime | None = None,
) -> DkimSelector:
    """Make a new key for ``domain``, write it to ``keys_dir/DOMAIN/SELECTOR.key`` (0600) and
    return its selector record (active). ``taken`` names selectors already in use (the
    directory's), besides those with a key file; an explicit ``selector`` that is taken is
    refused, a default one gets a ``-N`` suffix."""
    dom = normalize_domain(domain)
    stamp = now or dt.datetime.now(dt.UTC)
    domain_dir = key_path_for(keys_dir, dom, "x").parent
    if selector is None:
        name = _default_selector(algorithm, domain_dir, taken, stamp)
    else:
        name = check_selector(selector)
        if name in {t.lower() for t in taken}:
            raise DkimKeyError(f"selector {name} already exists for {dom}; choose another name")
    path = key_path_for(keys_dir, dom, name)
    if path.exists():
        raise DkimKeyError(
            f"key file {path} already exists; choose another selector or remove the file"
        )
    pem, public_b64 = _new_key(algorithm, rsa_bits)
    domain_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, pem, mode=0o600)
    _give_to_keys_owner(keys_dir, domain_dir, path)
    return DkimSelector(
        selector=name,
        algorithm=algorithm,
        key_path=str(path),
        public_key_b64=public_b64,
        active=True,
        created=int(stamp.timestamp()),
    )


def generate_domain_keys(
    domain: str, keys_dir: Path, *, taken: Collection[str] = ()
) -> list[DkimSelector]:
    """One RSA-2048 and one Ed25519 selector for ``domain``. Mail is signed with both: RFC 8463
    §1 verifiers that do not know Ed25519 ignore that signature and use the RSA one."""
    rsa_sel = generate_selector(domain, keys_dir, "rsa-sha256", taken=taken)
    ed_sel = generate_selector(domain, keys_dir, "ed25519-sha256", taken=[*taken, rsa_sel.selector])
    return [rsa_sel, ed_sel]


def add_selectors(
    directory: Directory,
    domain: str,
    keys_dir: Path,
    algorithms: Iterable[Algorithm],
    *,
    selector: str | None = None,
    rsa_bits: int = 2048,
    active: bool = True,
) -> list[DkimSelector]:
    """Make a key per algorithm for the hosted ``domain`` (a mail domain or the host name's
    signing-only row) and add its selector to the directory; every way of making keys
    (``pochta init``, ``domain add``, ``dkim keygen`` and ``rotate``) comes here. On failure
    (DkimKeyError, DirectoryError, OSError, raised) none of the new keys is left behind, in
    the directory or on disk. The files get the owner of ``keys_dir`` when run as root
    (``_give_to_keys_owner``), as a running server needs."""
    found = directory.get_domain(domain)
    if found is None:
        raise DirectoryError(
            f"domain {domain} is not hosted here; add it with: pochta domain add {domain}"
        )
    made: list[DkimSelector] = []
    taken = [s.selector for s in found.dkim]
    try:
        for algorithm in algorithms:
            sel = generate_selector(
                found.name, keys_dir, algorithm, selector, rsa_bits, taken=taken
            )
            sel = msgspec.structs.replace(sel, active=active)
            made.append(sel)
            taken.append(sel.selector)
            directory.add_dkim_selector(found.name, sel)
    except (DkimKeyError, DirectoryError, OSError):
        for sel in made:
            with contextlib.suppress(DirectoryError):
                directory.remove_dkim_selector(found.name, sel.selector)
            Path(sel.key_path).unlink(missing_ok=True)
        raise
    return made


def add_domain_keys(directory: Directory, domain: str, keys_dir: Path) -> list[DkimSelector]:
    """An RSA-2048 and an Ed25519 key for the hosted ``domain``, both signing at once (RFC
    8463 §1: verifiers that do not know Ed25519 ignore that signature and use the RSA one)."""
    return add_selectors(directory, domain, keys_dir, ALGORITHMS)


def host_needs_own_keys(directory: Directory, hostname: str) -> bool:
    """True when no directory row is ``hostname`` or one of its parent domains (never a
    top-level name alone), so the server's notices, From ``MAILER-DAEMON@HOSTNAME``, would
    find no key to sign with (``DkimSigner.hosted_signer`` walks the same way). The host
    name then gets a signing-only row of its own (``add_host_keys``)."""
    labels = normalize_domain(hostname).split(".")
    return all(
        directory.get_domain(".".join(labels[start:])) is None for start in range(len(labels) - 1)
    )


def add_host_keys(
    directory: Directory, hostname: str, keys_dir: Path, *, make_keys: bool = True
) -> list[DkimSelector]:
    """The signing-only row of ``hostname`` (``Domain.signing_only``) and, unless not
    ``make_keys``, its RSA and Ed25519 keys, as ``add_domain_keys`` makes them for a domain:
    the notices are then signed with ``d=HOSTNAME``, aligned with their From domain (RFC 7489
    §3.1.1). ``pochta init`` and ``pochta dkim keygen --all-missing`` call it when
    ``host_needs_own_keys``. Raises as ``add_selectors`` does; the row stays without keys
    then, for ``pochta dkim keygen --all-missing`` to fill."""
    name = normalize_domain(hostname)
    directory.add_domain(name, signing_only=True)
    return add_domain_keys(directory, name, keys_dir) if make_keys else []


def dkim_txt_value(sel: DkimSelector) -> str:
    """The TXT record value published at ``SELECTOR._domainkey.DOMAIN`` (RFC 6376 §3.6.1)."""
    try:
        key_type = _KEY_TYPE[sel.algorithm]
    except KeyError:
        raise DkimKeyError(
            f"selector {sel.selector} has unknown algorithm {sel.algorithm!r}"
        ) from None
    return f"v=DKIM1; k={key_type}; p={sel.public_key_b64}"


def split_txt(value: str) -> list[str]:
    """Cut a TXT value into character-strings of at most 255 octets (RFC 1035 §3.3 and
    §3.3.14); readers join them without separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
    data = value.encode("utf-8")
    if not data:
        return [""]
    chunks: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + 255, len(data))
        # Never cut inside a UTF-8 sequence (continuation bytes are 0b10xxxxxx).
        while end < len(data) and end > start and (data[end] & 0xC0) == 0x80:
            end -= 1
        chunks.append(data[start:end].decode("utf-8"))
        start = end
    return chunks


def load_private_key(sel: DkimSelector) -> bytes:
    """The private key of ``sel`` in the form ``dkim.sign(privkey=...)`` takes: PKCS#1 PEM for
    rsa-sha256, base64 of the 32-byte seed for ed25519-sha256."""
    path = Path(sel.key_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DkimKeyError(
            f"DKIM key {path} of selector {sel.selector} is missing; make a new one with: "
            "pochta dkim rotate DOMAIN"
        ) from None
    except OSError as exc:
        raise DkimKeyError(f"DKIM key {path} cannot be read: {exc.strerror}") from None
    if sel.algorithm == "ed25519-sha256" and _B64_SEED.match(data.strip()):
        return data.strip()  # already dkimpy's format (dknewkey)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise DkimKeyError(f"DKIM key {path} is not an unencrypted PEM private key") from None
    if sel.algorithm == "rsa-sha256" and isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if sel.algorithm == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes_raw()
        return base64.b64encode(seed)
    raise DkimKeyError(
        f"DKIM key {path} is not a {_KEY_TYPE.get(sel.algorithm, sel.algorithm)} key, "
        f"but selector {sel.selector} is {sel.algorithm}"
    )
