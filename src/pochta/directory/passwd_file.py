"""Import a Dovecot passwd-file into the directory.

The format (Dovecot "passwd-file" auth database, doc.dovecot.org/configuration_manual/
authentication/passwd_file/) is one user per line::

    user:password:uid:gid:(gecos):home:(shell):extra_fields

``user`` is ``name`` or ``name@domain``; ``password`` is ``{SCHEME}value``, a bare crypt(3)
string (``$6$...``, read as ``{CRYPT}``) or libpam-pwdfile's ``value[13]`` (CRYPT) /
``value[34]`` (PLAIN-MD5); ``extra_fields`` is a space-separated list of ``key=value`` (or bare
``key``) that may itself contain ``:`` — Dovecot rejoins fields 8.. with ``:``
(src/auth/db-passwd-file.c). Empty lines and lines starting with ``#`` are ignored. uid, gid,
gecos, home and shell are not used: pochta's mailboxes live under its data directory.

Of the extra fields, the quota is imported (``userdb_quota_rule=*:storage=1G`` or
``*:bytes=N`` from Dovecot 2.3's quota plugin, ``userdb_quota_storage_size=1G`` from 2.4) and
``nopassword`` is refused. Other fields are kept on the entry for the report and not applied.

Hashes are imported as they are, scheme prefix kept: nothing is hashed here. The password layer
(``pochta.directory.passwords``) verifies the imported schemes and rehashes to Argon2id at the
first successful login.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pochta.directory.addresses import AddressError, check_mailbox_address, normalize_domain
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import Account

KIB = 1024
_MAX_BYTES = 2**63 - 1  # SQLite INTEGER

# Schemes that store a challenge-response secret, not something a password can be checked
# against (doc.dovecot.org "Password Schemes": CRAM-MD5 keeps an HMAC-MD5 context,
# DIGEST-MD5 an MD5 of user:realm:password, ...).
_CHALLENGE_ONLY = frozenset({"CRAM-MD5", "DIGEST-MD5", "RPA", "LANMAN", "NTLM", "OTP", "SKEY"})

_SCHEME_PREFIX = re.compile(r"^\{([A-Za-z0-9._-]{1,40})\}")
# Dovecot quota sizes (src/plugins/quota/quota-util.c quota_limit_parse): a number and an
# optional unit b/k/M/G/T, case-insensitive, binary multiples. A trailing "B"/"iB" ("1GB",
# "1GiB") is accepted as people write it.
_SIZE = re.compile(r"^\s*(\d+)\s*(?:([kmgt])(?:i?b)?|(b))?\s*$", re.IGNORECASE)
_UNITS = {"k": KIB, "m": KIB**2, "g": KIB**3, "t": KIB**4}


def parse_size(value: str, *, default_multiplier: int = 1) -> int:
    """Bytes of a size such as ``2G``, ``512M``, ``100k`` or ``1048576`` (binary units).

    A number without a unit is multiplied by ``default_multiplier`` (Dovecot's ``storage=``
    counts kibibytes, ``bytes=`` bytes). ValueError says what is wrong.
    """
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(
            f"{value!r} is not a size; use a number with an optional unit K, M, G or T "
            "(binary: 1K = 1024 bytes), e.g. 2G"
        )
    number = int(m.group(1))
    if m.group(2):
        size = number * _UNITS[m.group(2).lower()]
    elif m.group(3):
        size = number
    else:
        size = number * default_multiplier
    if size > _MAX_BYTES:
        raise ValueError(f"{value!r} is too large")
    return size


class PasswdEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One account read from a passwd-file line."""

    line: int  # 1-based line number in the file
    address: str  # normalised local@domain
    password_hash: str  # "{SCHEME}value", stored as is
    scheme: str  # upper-case scheme name
    scram_sha256: str = ""  # filled from a {SCRAM-SHA-256} hash (same format)
    quota_bytes: int | None = None  # None: the line names no quota
    extra_fields: tuple[str, ...] = ()  # all extra fields as written


@dataclass(frozen=True, slots=True)
class LineError:
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class PasswdFileError(DirectoryError):
    """The file has lines that cannot be read; ``errors`` lists every one."""

    def __init__(self, errors: list[LineError]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}")


@dataclass(slots=True)
class ImportReport:
    created: list[str] = field(default_factory=list)  # addresses added
    skipped: list[str] = field(default_factory=list)  # existing accounts left as they were
    errors: list[LineError] = field(default_factory=list)  # lines not imported

    @property
    def ok(self) -> bool:
        return not self.errors


class LineProblem(Exception):
    """One line of an account file that cannot be imported; the message says why."""


def _supported_schemes() -> frozenset[str] | None:
    """The schemes the password layer verifies, or None when it cannot say."""
    try:
        from pochta.directory import passwords
    except ImportError:  # pragma: no cover - the password layer is part of the package
        return None
    schemes = getattr(passwords, "SUPPORTED_SCHEMES", None)
    return frozenset(schemes) if schemes is not None else None


def _password(raw: str | None, address: str) -> tuple[str, str]:
    """(stored hash with its {SCHEME} prefix, upper-case scheme)."""
    if not raw:
        raise LineProblem(
            f"{address} has no password; set one after the import with: pochta user add {address}"
        )
    m = _SCHEME_PREFIX.match(raw)
    if m:
        scheme = m.group(1).upper()
        if not raw[m.end() :]:
            raise LineProblem(f"{address}: the {{{scheme}}} password has no value after it")
        stored = raw
    elif raw.startswith("$"):
        # A bare crypt(3) string: Dovecot's default scheme for passwd-file is CRYPT.
        scheme, stored = "CRYPT", "{CRYPT}" + raw
    elif len(raw) > 4 and raw[-1] == "]" and raw[-4] == "[":
        # libpam-pwdfile's "password[NN]": 34 = MD5 digest, 13 (and others) = crypt(3).
        kind, value = raw[-3:-1], raw[:-4]
        scheme = {"34": "PLAIN-MD5", "56": "DIGEST-MD5"}.get(kind, "CRYPT")
        stored = "{" + scheme + "}" + value
    else:
        hint = " ({CRYPT} if it is a 13-character DES crypt(3) hash)" if len(raw) == 13 else ""
        raise LineProblem(
            f"{address}: the password has no {{SCHEME}} prefix and is not a $-crypt(3) hash; "
            f"write it as {{SCHEME}}hash, e.g. {{SHA512-CRYPT}}$6$...{hint}"
        )
    if scheme in _CHALLENGE_ONLY:
        raise LineProblem(
            f"{address}: a {{{scheme}}} value can only answer {scheme} challenges, not check a "
            f"password; give the user a new one with: pochta user add {address}"
        )
    supported = _supported_schemes()
    if supported is not None and scheme not in supported:
        names = ", ".join(sorted(s for s in supported if "." not in s))
        raise LineProblem(
            f"{address}: pochta cannot verify {{{scheme}}} passwords; supported: {names}"
        )
    return stored, scheme


def _quota_rule(value: str) -> int | None:
    """Bytes of a Dovecot 2.3 ``quota_rule`` value for the whole mailbox, or None when the rule
    does not set one (another mailbox, ``ignore``, messages only)."""
    mask, sep, limits = value.partition(":")
    if not sep:
        raise LineProblem(f"quota_rule {value!r} has no ':'; write it as *:storage=1G")
    if mask not in ("*", "?"):
        return None  # a per-mailbox rule (Trash:storage=+100M): pochta has one quota per user
    if limits == "ignore" or limits.startswith("backend="):
        return None
    quota: int | None = None
    for limit in limits.split(":"):
        key, _, number = limit.partition("=")
        if key == "messages":
            continue  # message-count quotas are not supported; the byte limit still applies
        if key not in ("storage", "bytes"):
            raise LineProblem(f"quota_rule {value!r}: unknown limit {key!r}")
        if number.startswith(("+", "-")) or number.endswith("%"):
            raise LineProblem(f"quota_rule {value!r}: the default rule needs an absolute size")
        try:
            # quota-util.c: storage= counts kibibytes without a unit, bytes= counts bytes.
            quota = parse_size(number, default_multiplier=KIB if key == "storage" else 1)
        except ValueError as exc:
            raise LineProblem(f"quota_rule {value!r}: {exc}") from None
    return quota


def _quota(extras: list[str]) -> int | None:
    quota: int | None = None
    for item in extras:
        key, _, value = item.partition("=")
        if key == "userdb_quota_rule":
            rule = _quota_rule(value)
            quota = rule if rule is not None else quota
        elif key == "userdb_quota_storage_size":  # Dovecot 2.4
            if value.lower() == "unlimited":
                quota = 0
                continue
            try:
                quota = parse_size(value)
            except ValueError as exc:
                raise LineProblem(f"quota_storage_size: {exc}") from None
    return quota


def parse_passwd_line(line: str, number: int, default_domain: str | None) -> PasswdEntry:
    """One passwd-file line as an entry; LineProblem says what is wrong with it."""
    fields = line.split(":")
    user = fields[0].strip()
    if not user:
        raise LineProblem("the line has no user name before the first ':'")
    if "@" not in user:
        if not default_domain:
            raise LineProblem(f"user {user!r} has no @domain; name the domain with --domain")
        user = f"{user}@{default_domain}"
    try:
        # The line becomes an account, so its local part must name a mailbox directory;
        # a line that cannot is reported and skipped, the others are imported.
        address = check_mailbox_address(user)
    except AddressError as exc:
        raise LineProblem(str(exc)) from None
    extras: list[str] = []
    if len(fields) > 7 and fields[7] != "":
        extras = ":".join(fields[7:]).split()
    # (An empty 8th field is Dovecot's old format, where the 9th holds a mail location: unused.)
    flags = {item.partition("=")[0] for item in extras}
    if "nopassword" in flags:
        raise LineProblem(
            f"{address} has nopassword (any password logs in), which pochta does not import; "
            f"give the user a password with: pochta user add {address}"
        )
    stored, scheme = _password(fields[1].strip() if len(fields) > 1 else None, address)
    return PasswdEntry(
        line=number,
        address=address,
        password_hash=stored,
        scheme=scheme,
        scram_sha256=stored[len("{SCRAM-SHA-256}") :] if scheme == "SCRAM-SHA-256" else "",
        quota_bytes=_quota(extras),
        extra_fields=tuple(extras),
    )


def scan_passwd_file(
    text: str, source: str, default_domain: str | None
) -> tuple[list[PasswdEntry], list[LineError]]:
    """Every readable entry and every unreadable line (with its number) of a passwd-file."""
    if default_domain:
        default_domain = normalize_domain(default_domain)
    entries: list[PasswdEntry] = []
    errors: list[LineError] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(parse_passwd_line(line, number, default_domain))
        except LineProblem as exc:
            errors.append(LineError(source, number, str(exc)))
    return entries, errors


def parse_passwd_file(text: str, source: str, default_domain: str | None) -> list[PasswdEntry]:
    """The entries of a passwd-file; PasswdFileError (``source:line: ...``) if any line is bad."""
    entries, errors = scan_passwd_file(text, source, default_domain)
    if errors:
        raise PasswdFileError(errors)
    return entries


def _mail_domain(directory: Directory, domain: str) -> bool:
    """Accounts can be made in ``domain``: hosted, and not the host name's signing-only entry."""
    found = directory.get_domain(domain)
    return found is not None and not found.signing_only


def import_passwd_file(
    directory: Directory,
    path: Path,
    domain: str,
    *,
    skip_existing: bool,
    default_quota_bytes: int = 0,
) -> ImportReport:
    """Add the accounts of the passwd-file ``path`` to ``directory``.

    Bare user names go into ``domain``; ``user@other`` keeps its own domain, which must be
    hosted. Good lines are imported (in one transaction) even when others fail; each failed
    line is in ``report.errors``. An account that already exists is an error unless
    ``skip_existing``, which leaves it untouched.
    """
    domain = normalize_domain(domain)
    if not _mail_domain(directory, domain):
        raise DirectoryError(
            f"domain {domain} is not hosted here; add it with: pochta domain add {domain}"
        )
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryError(f"cannot read {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DirectoryError(f"{source} is not UTF-8 text ({exc.reason})") from None

    entries, errors = scan_passwd_file(text, source, domain)
    report = ImportReport(errors=errors)
    hosted: dict[str, bool] = {}
    seen: dict[str, int] = {}
    accounts: list[Account] = []
    for entry in entries:
        problem = ""
        entry_domain = entry.address.rpartition("@")[2]
        if entry_domain not in hosted:
            hosted[entry_domain] = _mail_domain(directory, entry_domain)
        if not hosted[entry_domain]:
            problem = (
                f"domain {entry_domain} is not hosted here; "
                f"add it with: pochta domain add {entry_domain}"
            )
        elif entry.address in seen:
            problem = f"{entry.address} is already on line {seen[entry.address]}"
        elif directory.get_account(entry.address) is not None:
            if skip_existing:
                report.skipped.append(entry.address)
            else:
                problem = (
                    f"account {entry.address} already exists; "
                    "use --skip-existing to keep it and import the rest"
                )
        elif directory.get_alias(entry.address) is not None:
            problem = (
                f"{entry.address} is an alias; remove it first with: "
                f"pochta alias remove {entry.address}"
            )
        else:
            quota = entry.quota_bytes
            accounts.append(
                Account(
                    address=entry.address,
                    password_hash=entry.password_hash,
                    scram_sha256=entry.scram_sha256,
                    quota_bytes=quota if quota is not None else default_quota_bytes,
                )
            )
        if problem:
            report.errors.append(LineError(source, entry.line, problem))
        seen.setdefault(entry.address, entry.line)
    report.errors.sort(key=lambda e: e.line)
    if accounts:
        directory.add_accounts_bulk(accounts)
        report.created.extend(a.address for a in accounts)
    return report
