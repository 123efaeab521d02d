"""The scripts on disk: each account's own, and the administrator's per domain.

Layout (under ``[sieve] scripts_dir`` and ``global_dir``, both relative to the data dir by
default)::

    sieve/DOMAIN/LOCALPART/NAME.sieve       an account's scripts (ManageSieve, pochta sieve)
    sieve/DOMAIN/LOCALPART/.active          the name of its active script (absent: none)
    sieve-global/DOMAIN/before.sieve        run before every account's script of DOMAIN
    sieve-global/DOMAIN/after.sieve         run after it (Dovecot's sieve_before/sieve_after)
    sieve-global/include/NAME.sieve         what ``include :global "NAME"`` reads (RFC 6609)

A script name (RFC 5804 §1.6: any UTF-8 without controls) is kept in the file name with
every octet outside ``[A-Za-z0-9_-]`` written ``%XX``, so a name can never climb out of its
directory or clash with ``.active``. Every write is durable (``durable.write_atomic``), and,
run as root over a data dir the server owns, gets the server's owner, so the running server
reads it at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

from pochta.config.settings import Settings
from pochta.durable import fsync_directory, owner_for_new_files, write_atomic
from pochta.sieve.context import ScriptLoader
from pochta.sieve.repository import StoredScript

__all__ = [
    "GlobalScope",
    "ScriptNameError",
    "ScriptNotFound",
    "ScriptQuotaError",
    "ScriptStore",
    "ScriptStoreError",
    "check_script_name",
]

GlobalScope = Literal["before", "after"]

MAX_NAME_CHARS = 128  # RFC 5804 §1.6 leaves the limit to the server; Dovecot allows 256 octets
SUFFIX = ".sieve"
ACTIVE_FILE = ".active"


class ScriptStoreError(Exception):
    """A script operation that cannot be done; the text says why."""


class ScriptNotFound(ScriptStoreError):
    pass


class ScriptNameError(ScriptStoreError):
    pass


class ScriptQuotaError(ScriptStoreError):
    pass


def check_script_name(name: str) -> None:
    """RFC 5804 §1.6: a name is UTF-8 without CTL (0-31, 127), LINE SEPARATOR (U+2028) or
    PARAGRAPH SEPARATOR (U+2029); we also refuse the empty name and very long ones."""
    if not name:
        raise ScriptNameError("a script name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise ScriptNameError(f"a script name must be at most {MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 or c in "\u2028\u2029" for c in name):
        raise ScriptNameError("a script name must not contain control characters")


def _file_name(name: str) -> str:
    return quote(name, safe="").replace(".", "%2E") + SUFFIX


def _script_name(file_name: str) -> str | None:
    if not file_name.endswith(SUFFIX) or file_name.startswith("."):
        return None
    return unquote(file_name[: -len(SUFFIX)])


@dataclass(frozen=True, slots=True)
class _Loader:
    store: ScriptStore
    account: str

    def load(self, name: str, location: Literal["personal", "global"]) -> str | None:
        try:
            if location == "global":
                return self.store.get_global_include(name)
            return self.store.get(self.account, name)
        except (ScriptNotFound, ScriptNameError):
            return None


class ScriptStore:
    """The scripts of every account and of the administrator (see the module docstring);
    implements ``repository.ScriptSource`` for delivery."""

    def __init__(
        self,
        scripts_dir: Path,
        global_dir: Path,
        *,
        max_script_bytes: int = 1024 * 1024,
        max_scripts: int = 0,
        max_storage_bytes: int = 0,
    ) -> None:
        self.scripts_dir = scripts_dir
        self.global_dir = global_dir
        self.max_script_bytes = max_script_bytes
        self.max_scripts = max_scripts
        self.max_storage_bytes = max_storage_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> ScriptStore:
        s = settings.sieve
        return cls(
            settings.path(s.scripts_dir),
            settings.path(s.global_dir),
            max_script_bytes=s.max_script_bytes,
            max_scripts=s.max_scripts,
            max_storage_bytes=s.max_storage_bytes,
        )

    # -- an account's scripts ------------------------------------------------------------

    def account_dir(self, account: str) -> Path:
        local, _, domain = account.lower().rpartition("@")
        if not local or not domain or "/" in account or account.startswith("."):
            raise ScriptNameError(f"not an account address: {account!r}")
        return self.scripts_dir / quote(domain, safe="") / quote(local, safe="")

    def _path(self, account: str, name: str) -> Path:
        check_script_name(name)
        return self.account_dir(account) / _file_name(name)

    def scripts(self, account: str) -> list[tuple[str, bool]]:
        """(name, active) of every script of ``account``, sorted by name."""
        folder = self.account_dir(account)
        active = self.active(account)
        try:
            files = os.listdir(folder)
        except FileNotFoundError:
            return []
        names = sorted(n for n in (_script_name(f) for f in files) if n is not None)
        return [(n, n == active) for n in names]

    def get(self, account: str, name: str) -> str:
        try:
            return self._path(account, name).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ScriptNotFound(f"no script named {name!r}") from None

    def exists(self, account: str, name: str) -> bool:
        return self._path(account, name).is_file()

    def space_problem(self, account: str, name: str, size: int) -> str | None:
        """Why a script of ``size`` octets named ``name`` would not fit (RFC 5804 §2.3
        HAVESPACE), or None. Replacing a script counts the new size, not both."""
        check_script_name(name)
        if size > self.max_script_bytes:
            return f"script is larger than {self.max_script_bytes} octets"
        scripts = self.scripts(account)
        others = [n for n, _ in scripts if n != name]
        if self.max_scripts and len(others) + 1 > self.max_scripts:
            return f"at most {self.max_scripts} scripts per account"
        if self.max_storage_bytes:
            used = sum(self._size(account, n) for n in others)
            if used + size > self.max_storage_bytes:
                return f"scripts may use at most {self.max_storage_bytes} octets in all"
        return None

    def _size(self, account: str, name: str) -> int:
        try:
            return self._path(account, name).stat().st_size
        except FileNotFoundError:
            return 0

    def put(self, account: str, name: str, text: str) -> None:
        """Store (or replace) ``name``; the caller has compiled it already."""
        data = text.encode("utf-8")
        problem = self.space_problem(account, name, len(data))
        if problem:
            raise ScriptQuotaError(problem)
        path = self._path(account, name)
        write_atomic(path, data, mode=0o600, owner=owner_for_new_files(path), make_parents=True)

    def delete(self, account: str, name: str) -> None:
        """RFC 5804 §2.10: the active script cannot be deleted."""
        if self.active(account) == name:
            raise ScriptStoreError(f"script {name!r} is active; deactivate it first")
        path = self._path(account, name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ScriptNotFound(f"no script named {name!r}") from None
        fsync_directory(path.parent)

    def rename(self, account: str, old: str, new: str) -> None:
        """RFC 5804 §2.11.1: the new name must be free; an active script stays active."""
        source, target = self._path(account, old), self._path(account, new)
        if not source.is_file():
            raise ScriptNotFound(f"no script named {old!r}")
        if target.exists():
            raise ScriptStoreError(f"a script named {new!r} exists already")
        was_active = self.active(account) == old
        os.rename(source, target)
        fsync_directory(target.parent)
        if was_active:
            self.set_active(account, new)

    def active(self, account: str) -> str | None:
        try:
            text = (self.account_dir(account) / ACTIVE_FILE).read_text("utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def set_active(self, account: str, name: str | None) -> None:
        """Make ``name`` the active script; None (ManageSieve SETACTIVE "") makes none."""
        marker = self.account_dir(account) / ACTIVE_FILE
        if not name:
            try:
                marker.unlink()
            except FileNotFoundError:
                return
            fsync_directory(marker.parent)
            return
        if not self.exists(account, name):
            raise ScriptNotFound(f"no script named {name!r}")
        write_atomic(
            marker, name.encode("utf-8"), owner=owner_for_new_files(marker), make_parents=True
        )

    # -- the administrator's scripts -----------------------------------------------------

    def global_path(self, domain: str, scope: GlobalScope) -> Path:
        domain = domain.lower().rstrip(".")
        if not domain or "/" in domain or domain.startswith("."):
            raise ScriptNameError(f"not a domain: {domain!r}")
        return self.global_dir / domain / f"{scope}{SUFFIX}"

    def get_global(self, domain: str, scope: GlobalScope) -> str | None:
        try:
            return self.global_path(domain, scope).read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None

    def put_global(self, domain: str, scope: GlobalScope, text: str | None) -> None:
        """Set (None: remove) the domain's before or after script."""
        path = self.global_path(domain, scope)
        if text is None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            fsync_directory(path.parent)
            return
        data = text.encode("utf-8")
        if len(data) > self.max_script_bytes:
            raise ScriptQuotaError(f"script is larger than {self.max_script_bytes} octets")
        write_atomic(path, data, mode=0o644, owner=owner_for_new_files(path), make_parents=True)

    def global_include_path(self, name: str) -> Path:
        check_script_name(name)
        return self.global_dir / "include" / _file_name(name)

    def put_global_include(self, name: str, text: str | None) -> None:
        """Set (None: remove) the global script ``include :global "NAME"`` reads."""
        path = self.global_include_path(name)
        if text is None:
            try:
                path.unlink()
            except FileNotFoundError:
                raise ScriptNotFound(f"no global script named {name!r}") from None
            fsync_directory(path.parent)
            return
        data = text.encode("utf-8")
        if len(data) > self.max_script_bytes:
            raise ScriptQuotaError(f"script is larger than {self.max_script_bytes} octets")
        write_atomic(path, data, mode=0o644, owner=owner_for_new_files(path), make_parents=True)

    def get_global_include(self, name: str) -> str:
        try:
            return self.global_include_path(name).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ScriptNotFound(f"no global script named {name!r}") from None

    # -- repository.ScriptSource ---------------------------------------------------------

    def delivery_scripts(self, account: str) -> list[StoredScript]:
        domain = account.rpartition("@")[2]
        found: list[StoredScript] = []
        before = self._stored(self.global_path(domain, "before"), "before", "before")
        if before:
            found.append(before)
        name = self.active(account)
        if name:
            personal = self._stored(self._path(account, name), name, "personal")
            if personal:
                found.append(personal)
        after = self._stored(self.global_path(domain, "after"), "after", "after")
        if after:
            found.append(after)
        return found

    def loader(self, account: str) -> ScriptLoader:
        return _Loader(self, account)

    @staticmethod
    def _stored(
        path: Path, name: str, scope: Literal["before", "personal", "after"]
    ) -> StoredScript | None:
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        version = f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"
        return StoredScript(
            name=name, text=data.decode("utf-8", "replace"), scope=scope, version=version
        )
