"""Records of the directory. Plain msgspec Structs so every backend returns the same thing."""

from __future__ import annotations

import msgspec


class DkimSelector(msgspec.Struct, frozen=True, kw_only=True):
    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256" (RFC 8463)
    key_path: str  # private key file, absolute
    public_key_b64: str  # the p= value of the DNS record
    active: bool = True  # signs new mail; an inactive selector stays published until retired
    created: int = 0  # unix seconds


class Domain(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # lower-case, A-label (punycode) form
    enabled: bool = True
    catchall: str = ""  # address that receives mail for unknown local parts; "" = none
    created: int = 0
    dkim: tuple[DkimSelector, ...] = ()
    # A row that only holds DKIM keys: the server's host name, whose notices (bounces from
    # MAILER-DAEMON@HOSTNAME) are signed with d=HOSTNAME when no hosted domain contains it.
    # Not a mail domain: no accounts or aliases, and the resolver passes it over (its
    # addresses stay in the local class).
    signing_only: bool = False


class Account(msgspec.Struct, frozen=True, kw_only=True):
    address: str  # canonical "local@domain", lower-case
    password_hash: str  # "{ARGON2ID}$argon2id$..." or an imported Dovecot "{SCHEME}..." value
    scram_sha256: str = ""  # "iterations,salt_b64,stored_key_b64,server_key_b64" (Dovecot format)
    quota_bytes: int = 0  # 0 = unlimited
    enabled: bool = True
    created: int = 0

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class Alias(msgspec.Struct, frozen=True, kw_only=True):
    source: str  # "local@domain" (lower-case)
    targets: tuple[str, ...]  # local or external addresses, in the order given
