"""The directory interface: what every backend (SQLite now, PostgreSQL later) provides.

Methods are synchronous and fast (indexed lookups); the asyncio servers call them directly
for lookups and through a thread for anything that hashes a password.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

from pochta.directory.model import Account, Alias, DkimSelector, Domain


class DirectoryError(Exception):
    """A change the directory refuses (duplicate, missing domain, ...); the message says why."""


class Directory(abc.ABC):
    """Domains, accounts and aliases. Addresses are normalised by the caller
    (``pochta.directory.addresses``); backends compare them exactly."""

    # -- domains --
    @abc.abstractmethod
    def add_domain(self, name: str, *, catchall: str = "", signing_only: bool = False) -> Domain:
        """Add a mail domain, or with ``signing_only`` a row that only holds DKIM keys (see
        ``Domain.signing_only``). Adding a mail domain of the name of a signing-only row turns
        that row into the mail domain, keeping its DKIM selectors; any other existing name is
        refused (DirectoryError)."""

    @abc.abstractmethod
    def get_domain(self, name: str) -> Domain | None: ...

    @abc.abstractmethod
    def list_domains(self) -> list[Domain]: ...

    @abc.abstractmethod
    def remove_domain(self, name: str, *, force: bool = False) -> None:
        """Refuse (DirectoryError) while accounts or aliases exist in it, unless force."""

    @abc.abstractmethod
    def set_domain(
        self, name: str, *, enabled: bool | None = None, catchall: str | None = None
    ) -> Domain:
        """Change a mail domain; refused (DirectoryError) for a signing-only row."""

    @abc.abstractmethod
    def add_dkim_selector(self, domain: str, selector: DkimSelector) -> None: ...

    @abc.abstractmethod
    def set_dkim_selector_active(self, domain: str, selector: str, active: bool) -> None: ...

    @abc.abstractmethod
    def remove_dkim_selector(self, domain: str, selector: str) -> None: ...

    # -- accounts --
    @abc.abstractmethod
    def add_account(
        self,
        address: str,
        *,
        password_hash: str,
        scram_sha256: str = "",
        quota_bytes: int = 0,
        enabled: bool = True,
    ) -> Account:
        """DirectoryError when the domain is not hosted (or only signing-only) or the address
        exists (account or alias)."""

    @abc.abstractmethod
    def add_accounts_bulk(self, accounts: Iterable[Account]) -> int:
        """Insert many accounts in one transaction (imports, benchmarks). Returns the count."""

    @abc.abstractmethod
    def import_accounts(
        self, new: Sequence[Account], replace: Sequence[Account] = ()
    ) -> tuple[int, int]:
        """All or nothing, in one transaction (``pochta user import``): insert the accounts
        ``new`` and give the existing accounts of ``replace`` their password hash and SCRAM
        keys (and quota when it is not negative: -1 keeps it). DirectoryError, with nothing
        changed, when a domain is not a hosted mail domain, a new address exists (account or
        alias) or a replaced one does not. Returns (inserted, replaced)."""

    @abc.abstractmethod
    def get_account(self, address: str) -> Account | None: ...

    @abc.abstractmethod
    def list_accounts(self, domain: str | None = None) -> list[Account]: ...

    @abc.abstractmethod
    def update_account(
        self,
        address: str,
        *,
        password_hash: str | None = None,
        scram_sha256: str | None = None,
        quota_bytes: int | None = None,
        enabled: bool | None = None,
    ) -> Account: ...

    @abc.abstractmethod
    def remove_account(self, address: str) -> None: ...

    @abc.abstractmethod
    def count_accounts(self, domain: str | None = None) -> int: ...

    # -- aliases --
    @abc.abstractmethod
    def add_alias(self, source: str, targets: Sequence[str]) -> Alias:
        """Add targets to the alias ``source`` (created if new). The source's domain must be
        a hosted mail domain (not signing-only) and the source must not be an account."""

    @abc.abstractmethod
    def get_alias(self, source: str) -> Alias | None: ...

    @abc.abstractmethod
    def list_aliases(self, domain: str | None = None) -> list[Alias]: ...

    @abc.abstractmethod
    def aliases_targeting(self, address: str) -> list[Alias]:
        """Aliases that name ``address`` among their targets (for ``pochta user info``)."""

    @abc.abstractmethod
    def remove_alias(self, source: str, target: str | None = None) -> None:
        """Remove one target, or the whole alias when target is None."""

    @abc.abstractmethod
    def close(self) -> None: ...
