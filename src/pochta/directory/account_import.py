"""Many accounts at once: the file of ``pochta user import``, read, checked and hashed.

Two formats, told apart by the first line that is not blank or a ``#`` comment:

- **CSV** with a header naming its columns (RFC 4180 quoting, one record per line): ``address``
  (required), then ``password`` (plaintext, hashed here) or ``password_hash`` (a Dovecot
  ``{SCHEME}value`` or a bare ``$...`` crypt(3) string, stored as it is), and optionally
  ``quota`` (``2G``, ``500M``, ``0``/``unlimited``; empty = the default quota) and ``enabled``
  (``yes``/``no``; empty = yes). Each row has a password or a hash, not both.
- **passwd-file lines**, as Dovecot writes them: ``user@domain:{SCHEME}hash:uid:gid::home::
  extra`` (``directory.passwd_file`` reads them: schemes, ``[NN]`` suffixes, the quota in the
  extra fields) or ``user@domain:password`` with a bare plaintext password. As in Dovecot,
  the password field ends at the next ``:``; a password holding ``:`` goes in the CSV form.

A ``{PLAIN}`` / ``{CLEARTEXT}`` value is a plaintext password and is hashed like one: the
directory never stores a password in clear. Plaintext passwords become Argon2id (the
parameters of ``passwords.hash_password``) plus SCRAM-SHA-256 keys, as ``pochta user add``
makes them; imported hashes are kept and rehashed to Argon2id at the first login.

The reading is pure (``read_accounts``: text in, entries and line errors out); ``plan_import``
checks the entries against the directory (hosted domains, existing accounts and aliases)
without changing it; ``hash_entries`` spreads the Argon2id work over the cores; the
directory's ``import_accounts`` writes everything in one transaction.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from pochta.directory.addresses import AddressError, check_mailbox_address
from pochta.directory.base import Directory
from pochta.directory.model import Account
from pochta.directory.passwd_file import LineError, LineProblem, parse_passwd_line, parse_size

if TYPE_CHECKING:
    from concurrent.futures import Executor

MAX_PASSWORD_LENGTH = 1024  # as `pochta user add` (cli/common.py)
MAX_LINE_LENGTH = 64 * 1024  # a longer line is not an account; refused with its number
CSV_COLUMNS = ("address", "password", "password_hash", "quota", "enabled")
_PLAIN = ("{PLAIN}", "{CLEARTEXT}")
_YES = {"", "yes", "y", "true", "1", "on", "enabled"}
_NO = {"no", "n", "false", "0", "off", "disabled"}


class ImportEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One account of the file. Exactly one of ``password`` (plaintext, to hash) and
    ``password_hash`` (stored as is) is set."""

    line: int
    address: str
    password: str = ""
    password_hash: str = ""
    scram_sha256: str = ""
    quota_bytes: int | None = None  # None: the file names no quota
    enabled: bool = True


def _check_password(password: str, address: str) -> str:
    if not password:
        raise LineProblem(f"{address} has an empty password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise LineProblem(
            f"{address}: the password is longer than {MAX_PASSWORD_LENGTH} characters"
        )
    if "\x00" in password:
        raise LineProblem(f"{address}: the password contains a NUL character")
    return password


def _plaintext(stored: str) -> str | None:
    """The password of a ``{PLAIN}``/``{CLEARTEXT}`` value, else None."""
    for prefix in _PLAIN:
        if stored[: len(prefix)].upper() == prefix:
            return stored[len(prefix) :]
    return None


def _address(raw: str) -> str:
    if "@" not in raw:
        raise LineProblem(f"{raw!r} has no @domain; write the whole address, user@domain")
    try:
        return check_mailbox_address(raw.strip())
    except AddressError as exc:
        raise LineProblem(str(exc)) from None


def _passwd_entry(line: str, number: int) -> ImportEntry:
    fields = line.split(":")
    if len(fields) < 2:
        raise LineProblem("no ':' after the address; write address:password")
    address = _address(fields[0])
    value = fields[1]
    bare = not value.startswith(("{", "$")) and not (
        len(value) > 4 and value[-1] == "]" and value[-4] == "["
    )
    if bare or _plaintext(value) is not None:
        password = value if bare else (_plaintext(value) or "")
        _check_password(password, address)
        quota_bytes = None
        if len(fields) > 2:
            # The rest of a passwd-file line (uid:gid:gecos:home:shell:extra) may name a
            # quota; passwd_file reads it from the same line with a stand-in password.
            rest = parse_passwd_line(f"{address}:{{PLAIN}}-:" + ":".join(fields[2:]), number, None)
            quota_bytes = rest.quota_bytes
        return ImportEntry(line=number, address=address, password=password, quota_bytes=quota_bytes)
    entry = parse_passwd_line(line, number, None)
    return ImportEntry(
        line=number,
        address=entry.address,
        password_hash=_checked_hash(entry.password_hash, entry.address),
        scram_sha256=entry.scram_sha256,
        quota_bytes=entry.quota_bytes,
    )


# The crypt(3) strings verify_password can check (directory/passwords.py): MD5-, SHA256- and
# SHA512-crypt (optional rounds=), bcrypt, Argon2 and 13-character DES. Anything else under a
# crypt scheme (yescrypt's "$y$", a plaintext password that starts with "$") would import
# and then never match: refused with the line.
_CRYPT_SHAPE = re.compile(
    r"\$[156]\$(?:rounds=\d{1,9}\$)?[^$:]{0,16}\$[./0-9A-Za-z]{22,86}"
    r"|\$2[abxy]\$\d\d\$[./0-9A-Za-z]{53}"
    r"|\$argon2(?:id|i)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
    r"|[./0-9A-Za-z]{13}"
)
_CRYPT_SCHEMES = frozenset(
    {"CRYPT", "DES-CRYPT", "MD5-CRYPT", "MD5", "SHA256-CRYPT", "SHA512-CRYPT", "BLF-CRYPT"}
    | {"ARGON2ID", "ARGON2I"}
)


def _checked_hash(stored: str, address: str) -> str:
    # parse_passwd_line always gives "{SCHEME}value" (a bare "$..." becomes {CRYPT}).
    scheme, _, value = stored[1:].partition("}")
    scheme = scheme.upper()
    if scheme in _CRYPT_SCHEMES and _CRYPT_SHAPE.fullmatch(value) is None:
        kind = (
            "yescrypt ($y$), which pochta cannot verify"
            if value.startswith("$y$")
            else ("not a crypt(3) hash pochta can verify ($1$, $5$, $6$, $2y$, $argon2id$ or DES)")
        )
        raise LineProblem(
            f"{address}: the {{{scheme}}} value is {kind}; a plaintext password that starts "
            "with '$' or '{' is written {PLAIN}password"
        )
    return stored


def _stored_hash(value: str, address: str) -> tuple[str, str]:
    """(password_hash, scram) of a CSV password_hash cell, checked as a passwd-file field."""
    entry = parse_passwd_line(f"{address}:{value}", 0, None)
    return _checked_hash(entry.password_hash, address), entry.scram_sha256


def _quota_cell(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if value.lower() in ("unlimited", "none"):
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        raise LineProblem(f"quota {exc}; 0 or 'unlimited' means no limit") from None


def _enabled_cell(value: str) -> bool:
    word = value.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise LineProblem(f"enabled {value!r} is not yes or no")


def _csv_cells(line: str) -> list[str]:
    try:
        return next(csv.reader([line], strict=True))
    except (csv.Error, StopIteration) as exc:
        raise LineProblem(f"not a CSV record ({exc})") from None


class _Header(msgspec.Struct, frozen=True):
    columns: tuple[str, ...]


def _csv_header(line: str) -> _Header:
    columns = tuple(cell.strip().lower() for cell in _csv_cells(line))
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        raise LineProblem(
            f"unknown column {unknown[0]!r}; the columns are {', '.join(CSV_COLUMNS)}"
        )
    twice = [c for c in columns if columns.count(c) > 1]
    if twice:
        raise LineProblem(f"the column {twice[0]!r} is named twice")
    if "address" not in columns:
        raise LineProblem("the header has no 'address' column")
    if "password" not in columns and "password_hash" not in columns:
        raise LineProblem("the header needs a 'password' or a 'password_hash' column")
    return _Header(columns)


def _csv_entry(header: _Header, line: str, number: int) -> ImportEntry:
    cells = _csv_cells(line)
    if len(cells) != len(header.columns):
        raise LineProblem(
            f"{len(cells)} fields where the header names {len(header.columns)} "
            f"({', '.join(header.columns)})"
        )
    row = dict(zip(header.columns, cells, strict=True))
    address = _address(row["address"])
    password = row.get("password", "")
    stored = row.get("password_hash", "").strip()
    if password and stored:
        raise LineProblem(f"{address} has both a password and a password_hash; give one")
    if not password and not stored:
        raise LineProblem(f"{address} has no password and no password_hash")
    plain = _plaintext(stored) if stored else password
    quota = _quota_cell(row.get("quota", ""))
    enabled = _enabled_cell(row.get("enabled", ""))
    if plain is not None:
        return ImportEntry(
            line=number,
            address=address,
            password=_check_password(plain, address),
            quota_bytes=quota,
            enabled=enabled,
        )
    password_hash, scram = _stored_hash(stored, address)
    return ImportEntry(
        line=number,
        address=address,
        password_hash=password_hash,
        scram_sha256=scram,
        quota_bytes=quota,
        enabled=enabled,
    )


def _is_csv_header(line: str) -> bool:
    try:
        cells = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return False
    return "address" in (cell.strip().lower() for cell in cells)


def read_accounts(text: str, source: str) -> tuple[list[ImportEntry], list[LineError]]:
    """Every entry of an import file and every line that cannot be one (with its number).
    A second entry for the same address is an error that names the first one's line."""
    entries: list[ImportEntry] = []
    errors: list[LineError] = []
    header: _Header | None = None
    first = True
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if first:
            first = False
            if _is_csv_header(line):
                try:
                    header = _csv_header(line)
                except LineProblem as exc:
                    # Every record would be read against a wrong header: stop here.
                    return [], [LineError(source, number, str(exc))]
                continue
        try:
            if len(line) > MAX_LINE_LENGTH:
                raise LineProblem(f"the line is longer than {MAX_LINE_LENGTH} characters")
            entry = _csv_entry(header, line, number) if header else _passwd_entry(line, number)
            if entry.address in seen:
                raise LineProblem(f"{entry.address} is already on line {seen[entry.address]}")
            seen[entry.address] = number
            entries.append(entry)
        except LineProblem as exc:
            errors.append(LineError(source, number, str(exc)))
    return entries, errors


@dataclass(slots=True)
class ImportPlan:
    """What an import would do, decided before anything changes."""

    new: list[ImportEntry] = field(default_factory=list)
    replace: list[ImportEntry] = field(default_factory=list)  # existing accounts (--update)
    create_domains: list[str] = field(default_factory=list)  # missing domains (--create-domains)
    errors: list[LineError] = field(default_factory=list)


def plan_import(
    directory: Directory,
    entries: Iterable[ImportEntry],
    source: str,
    *,
    update: bool,
    create_domains: bool,
) -> ImportPlan:
    """Sort the entries into new accounts and replaced passwords, and every entry the
    directory refuses into an error with its line (nothing is changed here)."""
    plan = ImportPlan()
    domains: dict[str, str] = {}  # name -> "mail", "signing", "missing"
    for entry in entries:
        domain = entry.address.rpartition("@")[2]
        if domain not in domains:
            found = directory.get_domain(domain)
            domains[domain] = (
                "missing" if found is None else "signing" if found.signing_only else "mail"
            )
            if domains[domain] == "missing" and create_domains:
                plan.create_domains.append(domain)
        state = domains[domain]
        problem = ""
        if state == "missing" and not create_domains:
            problem = (
                f"domain {domain} is not hosted here; add it with: pochta domain add {domain} "
                "(or import with --create-domains)"
            )
        elif state == "signing":
            problem = (
                f"{domain} is the host name, which holds only DKIM keys; to host mail for it "
                f"add it first with: pochta domain add {domain}"
            )
        elif state == "mail" and directory.get_account(entry.address) is not None:
            if update:
                plan.replace.append(entry)
                continue
            problem = (
                f"account {entry.address} already exists; import with --update to replace "
                "its password"
            )
        elif state == "mail" and directory.get_alias(entry.address) is not None:
            problem = (
                f"{entry.address} is an alias; remove it first with: "
                f"pochta alias remove {entry.address}"
            )
        if problem:
            plan.errors.append(LineError(source, entry.line, problem))
        else:
            plan.new.append(entry)
    return plan


def _hash_one(password: str) -> tuple[str, str]:
    from pochta.directory.passwords import hash_password, make_scram_sha256

    return hash_password(password), make_scram_sha256(password)


def hash_workers() -> int:
    """Processes for hashing: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def hash_entries(
    entries: Sequence[ImportEntry],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    executor: Executor | None = None,
) -> list[ImportEntry]:
    """The entries with their plaintext passwords replaced by Argon2id hashes and SCRAM keys.

    Hashing 20 passwords on this project's shared 2-core machine (bench/user_import_bench.py
    --pools 20): at load average about 4, one by one 2.90 s, a thread pool 2.05 s, a process
    pool 1.65 s; at load 8, 7.80 s, 6.01 s and 6.35 s; at load 14 all about 14 s. Threads
    and processes are close (argon2-cffi releases the GIL); processes were never much
    slower and do not depend on that, so the hashing runs in processes, one per core.
    ``progress(n)`` is called after every n entries done.
    """
    plain = [i for i, e in enumerate(entries) if e.password]
    done = list(entries)
    if not plain:
        return done
    count = workers or hash_workers()
    if count == 1 and executor is None:
        results: Iterable[tuple[str, str]] = map(_hash_one, (entries[i].password for i in plain))
        pool = None
    else:
        from concurrent.futures import ProcessPoolExecutor  # only when there is work for it

        pool = executor or ProcessPoolExecutor(count)
        results = pool.map(
            _hash_one, (entries[i].password for i in plain), chunksize=max(1, len(plain) // 64)
        )
    try:
        for index, (password_hash, scram) in zip(plain, results, strict=True):
            done[index] = msgspec.structs.replace(
                entries[index], password="", password_hash=password_hash, scram_sha256=scram
            )
            if progress is not None:
                progress(1)
    finally:
        if pool is not None and executor is None:
            pool.shutdown()
    return done


def to_account(entry: ImportEntry, default_quota_bytes: int, *, replacing: bool) -> Account:
    """The directory record of a hashed entry. A replaced account without a quota in the file
    keeps its own (quota -1, see ``Directory.import_accounts``)."""
    assert not entry.password, "hash_entries first"
    if entry.quota_bytes is not None:
        quota = entry.quota_bytes
    else:
        quota = -1 if replacing else default_quota_bytes
    return Account(
        address=entry.address,
        password_hash=entry.password_hash,
        scram_sha256=entry.scram_sha256,
        quota_bytes=quota,
        enabled=entry.enabled,
    )
