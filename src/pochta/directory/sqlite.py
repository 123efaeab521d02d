"""The embedded directory: domains, DKIM selectors, accounts and aliases in one SQLite file.

Design notes, for the reader who changes this file:

- **One connection per thread.** The server looks accounts up from the event-loop thread and
  changes them from a worker thread (hashing is slow). Each thread gets its own connection
  (``threading.local``); with WAL, readers never wait for a writer, so a bulk import does not
  stall lookups. ``close()`` closes every connection still alive.
- **Durability.** ``synchronous=FULL``: a directory change is an admin action that is rare and
  must not be lost on power failure once the command said "added". WAL+NORMAL would only lose
  the last commits, but the cost of FULL here is one fsync per admin command, which nobody
  notices (bulk imports use one transaction).
- **Writers serialise** with ``BEGIN IMMEDIATE``: the checks (is the domain hosted, is the
  address already an alias?) and the insert happen under the same write lock, so the CLI and
  a running server cannot race each other into a duplicate.
- **Case.** Callers hand in normalised (lower-case) addresses (``directory.addresses``); the
  backend lower-cases again and the key columns are ``COLLATE NOCASE``, so ``Bob@Example.COM``
  finds ``bob@example.org`` however it arrives (RFC 5321 §2.4: domains are case-insensitive;
  local parts by policy, like Postfix and Dovecot).
- **Schema versions** live in ``PRAGMA user_version``. ``_MIGRATIONS[i]`` takes the schema
  from version ``i`` to ``i + 1``; add a new entry at the end to add columns later.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pochta.directory.addresses import AddressError, check_mailbox_address, normalize_domain
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import Account, Alias, DkimSelector, Domain
from pochta.sqlite_connections import ThreadConnections, TrackedConnection

# Each entry migrates the schema from version i to i + 1 (index i). Statements run one by one
# inside one BEGIN IMMEDIATE transaction together with the user_version bump.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 0 -> 1: the first schema.
    (
        """CREATE TABLE domains (
            name TEXT NOT NULL COLLATE NOCASE PRIMARY KEY,
            enabled INTEGER NOT NULL DEFAULT 1,
            catchall TEXT NOT NULL DEFAULT '',
            created INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE dkim_selectors (
            domain TEXT NOT NULL COLLATE NOCASE REFERENCES domains(name),
            selector TEXT NOT NULL COLLATE NOCASE,
            algorithm TEXT NOT NULL,
            key_path TEXT NOT NULL,
            public_key_b64 TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            created INTEGER NOT NULL,
            PRIMARY KEY (domain, selector)
        ) WITHOUT ROWID""",
        # The primary key is the clustered index: get_account is one B-tree descent.
        """CREATE TABLE accounts (
            address TEXT NOT NULL COLLATE NOCASE PRIMARY KEY,
            local_part TEXT NOT NULL COLLATE NOCASE,
            domain TEXT NOT NULL COLLATE NOCASE REFERENCES domains(name),
            password_hash TEXT NOT NULL,
            scram_sha256 TEXT NOT NULL DEFAULT '',
            quota_bytes INTEGER NOT NULL DEFAULT 0,
            enabled INTEGER NOT NULL DEFAULT 1,
            created INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX accounts_by_domain ON accounts(domain)",
        # UNIQUE(source, target) is also the index get_alias uses (prefix "source").
        """CREATE TABLE alias_targets (
            source TEXT NOT NULL COLLATE NOCASE,
            domain TEXT NOT NULL COLLATE NOCASE REFERENCES domains(name),
            target TEXT NOT NULL COLLATE NOCASE,
            position INTEGER NOT NULL,
            UNIQUE (source, target)
        )""",
        "CREATE INDEX alias_targets_by_target ON alias_targets(target)",
        "CREATE INDEX alias_targets_by_domain ON alias_targets(domain)",
    ),
    # 1 -> 2: rows that only hold DKIM keys (the host name's; Domain.signing_only). Existing
    # rows are mail domains.
    ("ALTER TABLE domains ADD COLUMN signing_only INTEGER NOT NULL DEFAULT 0",),
)

SCHEMA_VERSION = len(_MIGRATIONS)

# The SQL is spelled out in full (no string building) so every statement can be read as is.
_SELECT_ACCOUNT = (
    "SELECT address, password_hash, scram_sha256, quota_bytes, enabled, created "
    "FROM accounts WHERE address = ?"
)
_INSERT_ACCOUNT = (
    "INSERT INTO accounts (local_part, domain, address, password_hash, scram_sha256, "
    "quota_bytes, enabled, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _now() -> int:
    return int(time.time())


def _fold(value: str) -> str:
    return value.strip().lower()


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise DirectoryError(f"{address!r} is not an address; use local@domain")
    return local, domain


def _mailbox_address(address: str) -> str:
    """The canonical address of a new account, or DirectoryError when its local part cannot
    name a mailbox directory (MAIL_DIR/DOMAIN/LOCALPART): see check_mailbox_address."""
    try:
        return check_mailbox_address(address)
    except AddressError as exc:
        raise DirectoryError(str(exc)) from None


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count} {word}es" if word.endswith("s") else f"{count} {word}s"


def _account(row: Sequence[Any]) -> Account:
    address, password_hash, scram, quota, enabled, created = row
    return Account(
        address=address,
        password_hash=password_hash,
        scram_sha256=scram,
        quota_bytes=quota,
        enabled=bool(enabled),
        created=created,
    )


def _selector(row: Sequence[Any]) -> DkimSelector:
    selector, algorithm, key_path, public_key, active, created = row
    return DkimSelector(
        selector=selector,
        algorithm=algorithm,
        key_path=key_path,
        public_key_b64=public_key,
        active=bool(active),
        created=created,
    )


def _not_hosted(domain: str) -> DirectoryError:
    return DirectoryError(
        f"domain {domain} is not hosted here; add it with: pochta domain add {domain}"
    )


def _require_hosted(hosted: dict[str, bool], domain: str) -> None:
    """``domain`` is a mail domain of ``hosted`` (name -> signing_only), else the refusal."""
    if domain not in hosted:
        raise _not_hosted(domain)
    if hosted[domain]:
        raise _signing_only(domain)


def _account_row(account: Account, now: int) -> tuple[str, str, str, str, str, int, int, int]:
    """The accounts row of ``account`` (its address checked, its quota not negative)."""
    address = _mailbox_address(account.address)
    if account.quota_bytes < 0:
        raise DirectoryError(f"{address}: quota cannot be negative; 0 means unlimited")
    local, domain = _split(address)
    return (
        local,
        domain,
        address,
        account.password_hash,
        account.scram_sha256,
        account.quota_bytes,
        int(account.enabled),
        account.created or now,
    )


def _signing_only(domain: str) -> DirectoryError:
    return DirectoryError(
        f"domain {domain} only holds the DKIM keys of the host name (signing-only), it is not "
        f"a mail domain; host it first with: pochta domain add {domain} (its keys are kept)"
    )


def _domain(row: Sequence[Any], dkim: tuple[DkimSelector, ...]) -> Domain:
    name, enabled, catchall, created, signing_only = row
    return Domain(
        name=name,
        enabled=bool(enabled),
        catchall=catchall,
        created=created,
        dkim=dkim,
        signing_only=bool(signing_only),
    )


class SqliteDirectory(Directory):
    """The SQLite backend of :class:`Directory`; the file and its schema are created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = ThreadConnections(
            self._connect, lambda: DirectoryError("the directory is closed")
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DirectoryError(
                f"cannot create the directory database folder {self.path.parent}: {exc.strerror}"
            ) from None
        self._migrate(self._conn())

    # -- connections and transactions --

    def _connect(self) -> TrackedConnection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=5.0,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # only so that close() may close it from any thread
                factory=TrackedConnection,
                cached_statements=256,
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise DirectoryError(
                f"cannot open the directory database {self.path}: {exc}; "
                "check the path (directory.sqlite_path) and its permissions"
            ) from None
        return conn

    def _conn(self) -> TrackedConnection:
        return self._pool.get()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from the start."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise DirectoryError(
                f"the directory database {self.path} is busy ({exc}); another process holds "
                "its write lock, try again"
            ) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._write():
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise DirectoryError(
                    f"the directory database {self.path} has schema version {version}, newer "
                    f"than this pochta understands ({SCHEMA_VERSION}); upgrade pochta"
                )
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                # PRAGMA does not take parameters; the value is our own integer.
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._pool.close()

    # -- helpers run inside a transaction --

    @staticmethod
    def _require_domain(conn: sqlite3.Connection, domain: str) -> None:
        """Any row: a mail domain or a signing-only one (DKIM selectors, removal)."""
        if conn.execute("SELECT 1 FROM domains WHERE name = ?", (domain,)).fetchone() is None:
            raise _not_hosted(domain)

    @staticmethod
    def _require_mail_domain(conn: sqlite3.Connection, domain: str) -> None:
        """A mail domain: accounts, aliases and its settings; a signing-only row is refused."""
        row = conn.execute("SELECT signing_only FROM domains WHERE name = ?", (domain,)).fetchone()
        if row is None:
            raise _not_hosted(domain)
        if row[0]:
            raise _signing_only(domain)

    @staticmethod
    def _alias_targets(conn: sqlite3.Connection, source: str) -> list[str]:
        rows = conn.execute(
            "SELECT target FROM alias_targets WHERE source = ? ORDER BY position", (source,)
        ).fetchall()
        return [str(r[0]) for r in rows]

    def _selectors(self, conn: sqlite3.Connection, domain: str) -> tuple[DkimSelector, ...]:
        rows = conn.execute(
            "SELECT selector, algorithm, key_path, public_key_b64, active, created "
            "FROM dkim_selectors WHERE domain = ? "
            "ORDER BY created, selector",
            (domain,),
        ).fetchall()
        return tuple(_selector(r) for r in rows)

    # -- domains --

    def add_domain(self, name: str, *, catchall: str = "", signing_only: bool = False) -> Domain:
        try:
            # It names the directory MAIL_DIR/DOMAIN: only a host name (no "/", no "..").
            name = normalize_domain(name)
        except AddressError as exc:
            raise DirectoryError(str(exc)) from None
        catchall = _fold(catchall)
        if signing_only and catchall:
            raise DirectoryError(f"{name}: a signing-only domain takes no mail, so no catch-all")
        created = _now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT signing_only FROM domains WHERE name = ?", (name,)
            ).fetchone()
            promote = row is not None and bool(row[0]) and not signing_only
            if row is not None and not promote:
                raise DirectoryError(f"domain {name} already exists")
            if promote:
                # A signing-only row becomes the mail domain; its DKIM selectors stay. It is
                # dated now, so the admin stays the first account of older domains.
                conn.execute(
                    "UPDATE domains SET signing_only = 0, enabled = 1, catchall = ?, created = ? "
                    "WHERE name = ?",
                    (catchall, created, name),
                )
            else:
                conn.execute(
                    "INSERT INTO domains (name, enabled, catchall, created, signing_only) "
                    "VALUES (?, 1, ?, ?, ?)",
                    (name, catchall, created, int(signing_only)),
                )
            dkim = self._selectors(conn, name)
        return Domain(
            name=name,
            enabled=True,
            catchall=catchall,
            created=created,
            dkim=dkim,
            signing_only=signing_only,
        )

    def get_domain(self, name: str) -> Domain | None:
        conn = self._conn()
        row = conn.execute(
            "SELECT name, enabled, catchall, created, signing_only FROM domains WHERE name = ?",
            (_fold(name),),
        ).fetchone()
        if row is None:
            return None
        return _domain(row, self._selectors(conn, row[0]))

    def list_domains(self) -> list[Domain]:
        conn = self._conn()
        selectors: dict[str, list[DkimSelector]] = {}
        for row in conn.execute(
            "SELECT domain, selector, algorithm, key_path, public_key_b64, active, created "
            "FROM dkim_selectors ORDER BY created, selector"
        ):
            selectors.setdefault(str(row[0]).lower(), []).append(_selector(row[1:]))
        return [
            _domain(row, tuple(selectors.get(str(row[0]).lower(), ())))
            for row in conn.execute(
                "SELECT name, enabled, catchall, created, signing_only FROM domains ORDER BY name"
            )
        ]

    def remove_domain(self, name: str, *, force: bool = False) -> None:
        name = _fold(name)
        with self._write() as conn:
            self._require_domain(conn, name)
            accounts = conn.execute(
                "SELECT count(*) FROM accounts WHERE domain = ?", (name,)
            ).fetchone()[0]
            aliases = conn.execute(
                "SELECT count(DISTINCT source) FROM alias_targets WHERE domain = ?", (name,)
            ).fetchone()[0]
            if (accounts or aliases) and not force:
                what = " and ".join(
                    _plural(n, word) for n, word in ((accounts, "account"), (aliases, "alias")) if n
                )
                raise DirectoryError(f"domain {name} has {what}; remove them first or use --force")
            conn.execute("DELETE FROM alias_targets WHERE domain = ?", (name,))
            conn.execute("DELETE FROM accounts WHERE domain = ?", (name,))
            conn.execute("DELETE FROM dkim_selectors WHERE domain = ?", (name,))
            conn.execute("DELETE FROM domains WHERE name = ?", (name,))

    def set_domain(
        self, name: str, *, enabled: bool | None = None, catchall: str | None = None
    ) -> Domain:
        name = _fold(name)
        with self._write() as conn:
            self._require_mail_domain(conn, name)
            if enabled is not None:
                conn.execute("UPDATE domains SET enabled = ? WHERE name = ?", (int(enabled), name))
            if catchall is not None:
                conn.execute(
                    "UPDATE domains SET catchall = ? WHERE name = ?", (_fold(catchall), name)
                )
        domain = self.get_domain(name)
        assert domain is not None
        return domain

    def add_dkim_selector(self, domain: str, selector: DkimSelector) -> None:
        domain = _fold(domain)
        with self._write() as conn:
            self._require_domain(conn, domain)
            if conn.execute(
                "SELECT 1 FROM dkim_selectors WHERE domain = ? AND selector = ?",
                (domain, selector.selector),
            ).fetchone():
                raise DirectoryError(
                    f"domain {domain} already has the DKIM selector {selector.selector}; "
                    "choose another selector name"
                )
            conn.execute(
                "INSERT INTO dkim_selectors (domain, selector, algorithm, key_path, "
                "public_key_b64, active, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    domain,
                    selector.selector,
                    selector.algorithm,
                    selector.key_path,
                    selector.public_key_b64,
                    int(selector.active),
                    selector.created or _now(),
                ),
            )

    def set_dkim_selector_active(self, domain: str, selector: str, active: bool) -> None:
        domain = _fold(domain)
        with self._write() as conn:
            self._require_domain(conn, domain)
            cur = conn.execute(
                "UPDATE dkim_selectors SET active = ? WHERE domain = ? AND selector = ?",
                (int(active), domain, selector),
            )
            if cur.rowcount == 0:
                raise self._unknown_selector(domain, selector)

    def remove_dkim_selector(self, domain: str, selector: str) -> None:
        domain = _fold(domain)
        with self._write() as conn:
            self._require_domain(conn, domain)
            cur = conn.execute(
                "DELETE FROM dkim_selectors WHERE domain = ? AND selector = ?", (domain, selector)
            )
            if cur.rowcount == 0:
                raise self._unknown_selector(domain, selector)

    @staticmethod
    def _unknown_selector(domain: str, selector: str) -> DirectoryError:
        return DirectoryError(
            f"domain {domain} has no DKIM selector {selector}; "
            f"list them with: pochta dkim show {domain}"
        )

    # -- accounts --

    def add_account(
        self,
        address: str,
        *,
        password_hash: str,
        scram_sha256: str = "",
        quota_bytes: int = 0,
        enabled: bool = True,
    ) -> Account:
        account = Account(
            address=_mailbox_address(address),
            password_hash=password_hash,
            scram_sha256=scram_sha256,
            quota_bytes=quota_bytes,
            enabled=enabled,
            created=_now(),
        )
        with self._write() as conn:
            self._insert_account(conn, account)
        return account

    def _insert_account(self, conn: sqlite3.Connection, account: Account) -> None:
        local, domain = _split(account.address)
        if account.quota_bytes < 0:
            raise DirectoryError(f"{account.address}: quota cannot be negative; 0 means unlimited")
        self._require_mail_domain(conn, domain)
        if conn.execute("SELECT 1 FROM accounts WHERE address = ?", (account.address,)).fetchone():
            raise DirectoryError(f"account {account.address} already exists")
        targets = self._alias_targets(conn, account.address)
        if targets:
            raise DirectoryError(
                f"{account.address} is an alias (-> {', '.join(targets)}); "
                f"remove it first with: pochta alias remove {account.address}"
            )
        conn.execute(
            _INSERT_ACCOUNT,
            (
                local,
                domain,
                account.address,
                account.password_hash,
                account.scram_sha256,
                account.quota_bytes,
                int(account.enabled),
                account.created or _now(),
            ),
        )

    def add_accounts_bulk(self, accounts: Iterable[Account]) -> int:
        count = 0
        now = _now()
        with self._write() as conn:
            rows = conn.execute("SELECT name, signing_only FROM domains").fetchall()
            hosted = {str(name).lower(): bool(signing) for name, signing in rows}
            for account in accounts:
                row = _account_row(account, now)
                _require_hosted(hosted, row[1])
                address = row[2]
                try:
                    conn.execute(_INSERT_ACCOUNT, row)
                except sqlite3.IntegrityError as exc:
                    if "UNIQUE" not in str(exc):
                        raise DirectoryError(
                            f"{address}: refused by the database ({exc})"
                        ) from None
                    raise DirectoryError(f"account {address} already exists") from None
                count += 1
            clash = conn.execute(
                "SELECT a.address FROM accounts AS a JOIN alias_targets AS t "
                "ON t.source = a.address LIMIT 1"
            ).fetchone()
            if clash is not None:
                raise DirectoryError(
                    f"{clash[0]} is an alias; remove it first with: pochta alias remove {clash[0]}"
                )
        return count

    def import_accounts(
        self, new: Sequence[Account], replace: Sequence[Account] = ()
    ) -> tuple[int, int]:
        now = _now()
        rows = [_account_row(account, now) for account in new]
        with self._write() as conn:
            hosted = {
                str(name).lower(): bool(signing)
                for name, signing in conn.execute("SELECT name, signing_only FROM domains")
            }
            for row in rows:
                _require_hosted(hosted, row[1])
            # The checks and the writes share the write lock: no other writer can slip an
            # account or an alias in between (see the module's design notes).
            for row in rows:
                address = row[2]
                if conn.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone():
                    raise DirectoryError(f"account {address} already exists")
                if self._alias_targets(conn, address):
                    raise DirectoryError(
                        f"{address} is an alias; remove it first with: "
                        f"pochta alias remove {address}"
                    )
            if rows:
                try:
                    conn.executemany(_INSERT_ACCOUNT, rows)
                except sqlite3.IntegrityError as exc:  # two equal addresses in ``new``
                    raise DirectoryError(f"refused by the database: {exc}") from None
            for account in replace:
                address = _fold(account.address)
                cur = conn.execute(
                    "UPDATE accounts SET password_hash = ?, scram_sha256 = ?, "
                    "quota_bytes = CASE WHEN ? < 0 THEN quota_bytes ELSE ? END "
                    "WHERE address = ?",
                    (
                        account.password_hash,
                        account.scram_sha256,
                        account.quota_bytes,
                        account.quota_bytes,
                        address,
                    ),
                )
                if cur.rowcount == 0:
                    raise self._unknown_account(address)
        return len(rows), len(replace)

    def get_account(self, address: str) -> Account | None:
        row = self._conn().execute(_SELECT_ACCOUNT, (_fold(address),)).fetchone()
        return None if row is None else _account(row)

    def list_accounts(self, domain: str | None = None) -> list[Account]:
        conn = self._conn()
        if domain is None:
            cur = conn.execute(
                "SELECT address, password_hash, scram_sha256, quota_bytes, enabled, created "
                "FROM accounts ORDER BY domain, address"
            )
        else:
            cur = conn.execute(
                "SELECT address, password_hash, scram_sha256, quota_bytes, enabled, created "
                "FROM accounts WHERE domain = ? ORDER BY address",
                (_fold(domain),),
            )
        return [_account(r) for r in cur]

    def update_account(
        self,
        address: str,
        *,
        password_hash: str | None = None,
        scram_sha256: str | None = None,
        quota_bytes: int | None = None,
        enabled: bool | None = None,
    ) -> Account:
        address = _fold(address)
        changes: dict[str, object] = {}
        if password_hash is not None:
            changes["password_hash"] = password_hash
        if scram_sha256 is not None:
            changes["scram_sha256"] = scram_sha256
        if quota_bytes is not None:
            if quota_bytes < 0:
                raise DirectoryError(f"{address}: quota cannot be negative; 0 means unlimited")
            changes["quota_bytes"] = quota_bytes
        if enabled is not None:
            changes["enabled"] = int(enabled)
        with self._write() as conn:
            if changes:
                # Column names come from the fixed keys above, never from input.
                assignments = ", ".join(f"{column} = ?" for column in changes)
                cur = conn.execute(
                    f"UPDATE accounts SET {assignments} WHERE address = ?",  # noqa: S608
                    (*changes.values(), address),
                )
                found = cur.rowcount > 0
            else:
                found = bool(
                    conn.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone()
                )
            if not found:
                raise self._unknown_account(address)
            row = conn.execute(_SELECT_ACCOUNT, (address,)).fetchone()
        return _account(row)

    def remove_account(self, address: str) -> None:
        address = _fold(address)
        with self._write() as conn:
            if conn.execute("DELETE FROM accounts WHERE address = ?", (address,)).rowcount == 0:
                raise self._unknown_account(address)

    @staticmethod
    def _unknown_account(address: str) -> DirectoryError:
        return DirectoryError(f"no account {address}; list accounts with: pochta user list")

    def count_accounts(self, domain: str | None = None) -> int:
        conn = self._conn()
        if domain is None:
            return int(conn.execute("SELECT count(*) FROM accounts").fetchone()[0])
        return int(
            conn.execute(
                "SELECT count(*) FROM accounts WHERE domain = ?", (_fold(domain),)
            ).fetchone()[0]
        )

    # -- aliases --

    def add_alias(self, source: str, targets: Sequence[str]) -> Alias:
        source = _fold(source)
        _, domain = _split(source)
        wanted: list[str] = []
        for target in targets:
            target = _fold(target)
            if target == source:
                raise DirectoryError(f"alias {source} cannot point to itself")
            if target not in wanted:
                wanted.append(target)
        if not wanted:
            raise DirectoryError(f"alias {source} needs at least one target address")
        with self._write() as conn:
            self._require_mail_domain(conn, domain)
            if conn.execute("SELECT 1 FROM accounts WHERE address = ?", (source,)).fetchone():
                raise DirectoryError(
                    f"{source} is an account; an alias cannot have the same address "
                    f"(remove the account first with: pochta user remove {source})"
                )
            existing = self._alias_targets(conn, source)
            present = {t.lower() for t in existing}
            position = int(
                conn.execute(
                    "SELECT coalesce(max(position), -1) FROM alias_targets WHERE source = ?",
                    (source,),
                ).fetchone()[0]
            )
            for target in wanted:
                if target in present:
                    continue  # adding a target twice changes nothing
                position += 1
                conn.execute(
                    "INSERT INTO alias_targets (source, domain, target, position) "
                    "VALUES (?, ?, ?, ?)",
                    (source, domain, target, position),
                )
                existing.append(target)
        return Alias(source=source, targets=tuple(existing))

    def get_alias(self, source: str) -> Alias | None:
        source = _fold(source)
        targets = self._alias_targets(self._conn(), source)
        return Alias(source=source, targets=tuple(targets)) if targets else None

    @staticmethod
    def _group(rows: Iterable[tuple[str, str]]) -> list[Alias]:
        grouped: dict[str, list[str]] = {}
        for source, target in rows:
            grouped.setdefault(source, []).append(target)
        return [Alias(source=s, targets=tuple(t)) for s, t in grouped.items()]

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        conn = self._conn()
        if domain is None:
            cur = conn.execute(
                "SELECT source, target FROM alias_targets ORDER BY domain, source, position"
            )
        else:
            cur = conn.execute(
                "SELECT source, target FROM alias_targets WHERE domain = ? "
                "ORDER BY source, position",
                (_fold(domain),),
            )
        return self._group(cur)

    def aliases_targeting(self, address: str) -> list[Alias]:
        cur = self._conn().execute(
            "SELECT source, target FROM alias_targets WHERE source IN "
            "(SELECT source FROM alias_targets WHERE target = ?) ORDER BY source, position",
            (_fold(address),),
        )
        return self._group(cur)

    def remove_alias(self, source: str, target: str | None = None) -> None:
        source = _fold(source)
        with self._write() as conn:
            if target is None:
                cur = conn.execute("DELETE FROM alias_targets WHERE source = ?", (source,))
                if cur.rowcount == 0:
                    raise DirectoryError(f"no alias {source}; list aliases with: pochta alias list")
                return
            cur = conn.execute(
                "DELETE FROM alias_targets WHERE source = ? AND target = ?", (source, _fold(target))
            )
            if cur.rowcount == 0:
                if not self._alias_targets(conn, source):
                    raise DirectoryError(f"no alias {source}; list aliases with: pochta alias list")
                raise DirectoryError(
                    f"alias {source} has no target {_fold(target)}; "
                    "list aliases with: pochta alias list"
                )
