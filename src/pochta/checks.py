"""The config, loaded and checked for meaning: what ``pochta serve``, ``pochta check``, the
other commands and a SIGHUP reload read.

``config/`` is the kernel and imports nothing else of pochta: it reads the file and checks
syntax, types and ranges (``config/load.py``) and the rules that need only the settings
(``config/check.py``). The rules that need another package live here: host names and
addresses (``directory.addresses``), the relay host (``resolve.transport``), table files
(``tables``). The keys that were wrong are left out (defaults stand in), so the meaning of the
rest is checked too and one run lists every problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pochta.config import check as config_check
from pochta.config.load import Walked, read_config, walk_settings
from pochta.config.problems import ConfigError, Problem
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError, normalize_address, normalize_domain
from pochta.resolve.transport import TransportError, parse_transport

if TYPE_CHECKING:
    from pochta.tables.configured import ConfiguredTables
    from pochta.tls.context import CertInfo

__all__ = [
    "ConfigError",
    "certificate_warnings",
    "check_settings",
    "checked_settings_from_dict",
    "domain_class_warnings",
    "load_checked_settings",
]


def load_checked_settings(
    path: str | Path, *, check_files: bool = True, check_tables: bool = True
) -> Settings:
    """Read, check and convert the config file; ConfigError lists every problem.

    ``check_files=False`` skips the files the config names (data directory, certificates,
    tables), for commands that run where they may not be readable (``pochta sendmail``).
    ``check_tables=False`` skips only the table files ([tables], the tables and files in
    [local] domains): for the commands that never read them (``user add`` must work while
    a table is being edited) and for a reload, which keeps the last good version of each.
    """
    return _checked(read_config(path), check_files=check_files, check_tables=check_tables)


def checked_settings_from_dict(
    data: dict[str, Any], *, config_path: str = "", check_files: bool = True
) -> Settings:
    """``load_checked_settings`` of data already parsed from TOML."""
    return _checked(walk_settings(data, config_path=config_path), check_files=check_files)


def check_settings(
    settings: Settings, *, check_files: bool = True, check_tables: bool = True
) -> list[Problem]:
    """Every problem of meaning, in the order of the config's tables."""
    problems: list[Problem] = []
    for check in (
        _check_server,
        _check_tls,
        config_check.check_listeners,
        config_check.check_directory,
        config_check.check_networks,
        config_check.check_mailauth,
        _check_relayhost,
        config_check.check_delivery,
        config_check.check_local,
        config_check.check_queue,
        config_check.check_spam,
        config_check.check_sieve,
        _check_milters,
    ):
        problems.extend(check(settings))
    if check_files:
        problems.extend(config_check.check_files(settings))
        problems.extend(config_check.check_sieve_files(settings))
        problems.extend(config_check.check_source_addresses_bound(settings))
        problems.extend(config_check.check_directory_folder_for_run_as_user(settings))
    problems.extend(_check_domain_lists(settings))
    if check_files and check_tables:
        problems.extend(_check_tables(settings))
        problems.extend(_check_table_mailboxes(settings))

        problems.extend(_check_content_checks(settings))
    return problems


def _checked(walked: Walked, *, check_files: bool, check_tables: bool = True) -> Settings:
    if walked.settings is not None:
        walked.problems.extend(
            check_settings(walked.settings, check_files=check_files, check_tables=check_tables)
        )
    return walked.settings_or_raise()


def _check_server(s: Settings) -> Iterator[Problem]:
    try:
        normalize_domain(s.server.hostname)
    except AddressError as exc:
        yield Problem(
            "server.hostname",
            f'{exc}; write the fully qualified name of this host, e.g. "mail.example.org"',
        )
    if s.server.postmaster:
        try:
            normalize_address(s.server.postmaster)
        except AddressError as exc:
            yield Problem(
                "server.postmaster",
                f'{exc}; write the address that reads postmaster mail, e.g. "you@example.org", '
                'or "" for the first account',
            )


def _check_tls(s: Settings) -> Iterator[Problem]:
    """Each ``tls.certificates`` entry names at least one server name, each a domain name
    or a wildcard one label below one ("*.example.org")."""
    for i, entry in enumerate(s.tls.certificates):
        key = f"tls.certificates[{i}].names"
        if not entry.names:
            yield Problem(key, 'is empty; list the names it is for, e.g. ["mta-sts.example.org"]')
        for j, name in enumerate(entry.names):
            try:
                normalize_domain(name.removeprefix("*."))
            except AddressError as exc:
                yield Problem(
                    f"{key}[{j}]",
                    f'{exc}; write a server name, e.g. "mta-sts.example.org" or "*.example.org"',
                )


def _check_relayhost(s: Settings) -> Iterator[Problem]:
    d = s.delivery
    if not d.relayhost:
        return
    try:
        route = parse_transport("smtp:" + d.relayhost)
    except TransportError as exc:
        yield Problem("delivery.relayhost", f"{exc}; write e.g. '[smtp.provider.net]:587'")
    else:
        if not route.nexthop or route.unix_socket:
            yield Problem("delivery.relayhost", "name a host, e.g. '[smtp.provider.net]:587'")


def _check_milters(s: Settings) -> Iterator[Problem]:
    """Each ``[milter] servers`` address parses (spam/milter.py)."""
    from pochta.spam.milter import parse_address

    for i, address in enumerate(s.milter.servers):
        try:
            parse_address(address)
        except ValueError as exc:
            yield Problem(f"milter.servers[{i}]", str(exc))


# The domain lists (postconf(5) "domain lists", tables/domain_list.py): key path, Postfix
# name, parent style (relay_domains is in Postfix 3.7's parent_domain_matches_subdomains).
DOMAIN_LISTS = (
    ("tables.virtual_mailbox_domains", "virtual_mailbox_domains", False),
    ("tables.relay_domains", "relay_domains", True),
    ("local.domains", "mydestination", False),
)


def _domain_list_values(s: Settings, key: str) -> list[str]:
    section, _, name = key.partition(".")
    values: list[str] = getattr(getattr(s, section), name)
    return values


def _check_domain_lists(s: Settings) -> Iterator[Problem]:
    """The patterns of each domain list parse (no file is read here): ``!`` before a pattern,
    a name (a domain name; [local] domains also takes one-label names like localhost), a
    ``TYPE:PATH`` table of a supported type, or a ``/file`` of names."""
    from pochta.tables import TableError, parse_table_spec
    from pochta.tables.domain_list import domain_list_tokens

    for key, postfix, _parent in DOMAIN_LISTS:
        for i, value in enumerate(_domain_list_values(s, key)):
            for token in domain_list_tokens(value):
                item = token.lstrip("!")
                fix = (
                    f"write a domain name (example.org), '.example.org' for its subdomains, "
                    f"'hash:/etc/postfix/{postfix}' for a table or '/etc/postfix/{postfix}' "
                    "for a file of names, each maybe after '!' to exclude it"
                )
                if not item:
                    yield Problem(f"{key}[{i}]", f"{token!r}: no pattern after '!'; {fix}")
                elif item.startswith("/"):
                    continue
                elif ":" in item and not item.startswith("["):
                    try:
                        parse_table_spec(item)
                    except TableError as exc:
                        yield Problem(f"{key}[{i}]", str(exc))
                elif key != "local.domains" or "." in item.strip("."):
                    try:
                        normalize_domain(item.removeprefix("."))
                    except AddressError as exc:
                        yield Problem(f"{key}[{i}]", f"{token!r}: {exc}; {fix}")


def _check_tables(s: Settings) -> Iterator[Problem]:
    """Every table and file the config names can be read as what it is for."""
    from pochta.tables import TableError, open_table
    from pochta.tables.domain_list import DomainList

    for key, _postfix, parent in DOMAIN_LISTS:
        for i, value in enumerate(_domain_list_values(s, key)):
            try:
                DomainList([value], parent_style=parent, setting=f"{key}[{i}]")
            except TableError as exc:
                message = str(exc)
                if "has no value" in message:
                    message += (
                        " (a domain table takes 'example.org OK' lines; for a file that "
                        "lists only names, name it without 'TYPE:': '/path/to/file')"
                    )
                yield Problem(f"{key}[{i}]", message)
    for name in type(s.tables).__struct_fields__:
        if name in ("virtual_mailbox_domains", "relay_domains"):
            continue
        specs: list[str] = getattr(s.tables, name)
        for i, spec in enumerate(specs):
            try:
                if name == "alias_maps":
                    open_table(spec, kind="aliases")
                else:
                    open_table(spec, kind="map")
            except TableError as exc:
                yield Problem(f"tables.{name}[{i}]", str(exc))


# -- a domain in two address classes (warnings of `pochta check`) ---------------------------

# pochta's order of the classes (resolve/resolver.py, step 4), with the reason each wins.
_CLASS_ORDER = (
    ("hosted", "a directory domain (pochta domain add)"),
    ("local", "server.hostname or [local] domains (Postfix mydestination)"),
    ("virtual_mailbox_domains", "[tables] virtual_mailbox_domains"),
    ("relay_domains", "[tables] relay_domains"),
)


def domain_class_warnings(
    settings: Settings, tables: ConfiguredTables, hosted: Iterable[str]
) -> list[str]:
    """One line per domain that is in more than one address class, saying which class wins
    and why. Postfix: "a domain name must be listed in only one address class"
    (ADDRESS_CLASS_README); pochta's order is resolver.py's: directory, local,
    virtual_mailbox_domains, relay_domains."""
    from pochta.resolve.resolver import normalize_domain as resolver_domain

    hosted_set = {resolver_domain(d) for d in hosted}
    hostname = resolver_domain(settings.server.hostname)
    local = {hostname, *tables.local_domains.listed_names()}
    virtual = set(tables.virtual_mailbox_domains.listed_names())
    relay = set(tables.relay_domains.listed_names())
    out: list[str] = []
    # A domain named in two lists; a name matched only as a subdomain of a relay domain is
    # not (mail.example.org under relay_domains = example.org is the usual backup-MX set-up,
    # and the more specific class takes it in Postfix too).
    for domain in dict.fromkeys([*sorted(hosted_set), *local, *virtual, *relay]):
        member = {
            "hosted": domain in hosted_set,
            "local": domain in local and (domain == hostname or domain in tables.local_domains),
            "virtual_mailbox_domains": domain in virtual
            and domain in tables.virtual_mailbox_domains,
            "relay_domains": domain in relay and domain in tables.relay_domains,
        }
        classes = [(name, why) for name, why in _CLASS_ORDER if member[name]]
        if len(classes) < 2:
            continue
        (winner, why), losers = classes[0], classes[1:]
        others = " and ".join(w for _, w in losers)
        out.append(
            f"{domain} is in more than one address class: {why} and {others}; pochta treats it "
            f"as {winner} (the first in the order directory, local, virtual_mailbox_domains, "
            f"relay_domains), so it is not {', '.join(n for n, _ in losers)}. Postfix lists a "
            "domain in one class only (ADDRESS_CLASS_README); remove it from "
            f"{' and '.join(w for _, w in losers)}"
        )
    return out


def _check_table_mailboxes(s: Settings) -> Iterator[Problem]:
    """Each virtual_mailbox_maps value must name a path under [store] mail_dir (virtual(8)
    virtual_mailbox_base): the resolver refuses the others at RCPT (resolve/classes.py)."""
    from pochta.resolve.classes import table_mailbox_problem
    from pochta.tables import PostfixTable, TableError, open_table

    for i, spec in enumerate(s.tables.virtual_mailbox_maps):
        try:
            table = open_table(spec, kind="map")
        except TableError:
            continue  # _check_tables reports it
        if not isinstance(table, PostfixTable):
            continue
        for key, value in table.entries.items():
            problem = table_mailbox_problem(value)
            if problem is not None:
                line = table.lines.get(key, 0)
                yield Problem(
                    f"tables.virtual_mailbox_maps[{i}]", f"{table.path}:{line}: {key}: {problem}"
                )


def _check_content_checks(s: Settings) -> Iterator[Problem]:
    """header_checks / body_checks: pattern tables whose every action pochta carries out
    (cleanup/content_checks.py); a table that does not parse is _check_tables' report."""
    from pochta.cleanup.content_checks import check_actions

    for name in ("header_checks", "body_checks"):
        specs: list[str] = getattr(s.tables, name)
        for index, message in check_actions(specs, name, parse_errors=False):
            yield Problem(f"tables.{name}[{index}]", message)


# -- which names the certificates cover (warnings of `pochta check`) -------------------------

# The listeners that present tls.cert_file under the host name (no SNI there: mail clients
# and MTAs check the certificate against the name they connected to, the MX or host name).
MAIL_TLS_LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
# The names of each hosted domain that clients fetch over HTTPS (dns/records.py publishes
# them): the MTA-STS policy (RFC 8461 §3.3), Thunderbird's autoconfig, Outlook's autodiscover.
HTTPS_NAME_PREFIXES = ("mta-sts", "autoconfig", "autodiscover")


def certificate_warnings(settings: Settings, domains: Iterable[str]) -> list[str]:
    """One line per name a client will check that no certificate covers (RFC 6125 §6.4), each
    with the certificate to get and the setting to add; and one line when the host's
    certificate is self-signed. Warnings, not problems: TLS still works, clients may refuse.

    The names: the host name, for the mail listeners (tls.cert_file), and for each hosted
    domain in ``domains``, when listen.https is on, mta-sts.DOMAIN, autoconfig.DOMAIN and
    autodiscover.DOMAIN, each checked against the certificate the https listener picks for it
    (``tls.context.SniContexts``: tls.certificates by name, else tls.cert_file).
    """
    from pochta.tls.context import (
        TLSConfigError,
        covers,
        describe_certificate,
        reference_name,
        wildcard_of,
    )

    out: list[str] = []
    host_path = settings.path(settings.tls.cert_file)
    try:
        host = describe_certificate(host_path)
    except TLSConfigError as exc:
        return [str(exc)]
    hostname = settings.server.hostname
    if host.self_signed:
        out.append(
            f"tls.cert_file {host_path} is self-signed: mail clients, browsers and MTA-STS "
            "senders will not trust it; get a certificate from a public CA, e.g. "
            f"certbot certonly --manual --preferred-challenges dns -d {hostname}, and set "
            "tls.cert_file and tls.key_file to its fullchain.pem and privkey.pem"
        )
    if any(getattr(settings.listen, n) for n in MAIL_TLS_LISTENERS) and not host.matches_hostname(
        hostname
    ):
        out.append(
            f"tls.cert_file {host_path} does not cover the host name {hostname} "
            f"(it names {', '.join(host.subject_names) or 'nothing'}), which SMTP, IMAP and "
            "POP3 clients check; get a certificate for it, e.g. certbot certonly --manual "
            f"--preferred-challenges dns -d {hostname}, and set tls.cert_file and "
            "tls.key_file to its fullchain.pem and privkey.pem"
        )
    if not settings.listen.https:
        return out
    # Which entry the https listener serves for a name: the same table SniContexts.select
    # reads (the first entry naming a name wins, exact name before the wildcard).
    by_name: dict[str, tuple[str, CertInfo | None]] = {}
    for i, entry in enumerate(settings.tls.certificates):
        where = f"tls.certificates[{i}]"
        try:
            info: CertInfo | None = describe_certificate(
                settings.path(entry.cert_file), setting=f"{where}.cert_file"
            )
        except TLSConfigError as exc:
            out.append(str(exc))
            info = None
        for name in map(reference_name, entry.names):
            if name is not None:
                by_name.setdefault(name, (where, info))
    for domain in domains:
        names = [f"{prefix}.{domain}" for prefix in HTTPS_NAME_PREFIXES]
        entry_line = (
            f"{{ names = [{', '.join(f'{chr(34)}{n}{chr(34)}' for n in names)}], "
            f'cert_file = "/etc/letsencrypt/live/{names[0]}/fullchain.pem", '
            f'key_file = "/etc/letsencrypt/live/{names[0]}/privkey.pem" }}'
        )
        fix = (
            "get a certificate for "
            + ", ".join(names)
            + ", e.g. certbot certonly --manual --preferred-challenges dns "
            + " ".join(f"-d {n}" for n in names)
            + f", and add to [tls] certificates: {entry_line}"
        )
        for name in names:
            where, info = _picked(by_name, wildcard_of(name), name)
            if where:
                if info is None or covers(info.subject_names, name):
                    continue  # an unreadable file is reported above
                served = f"{where}, served for it by listen.https, covers only " + ", ".join(
                    info.subject_names
                )
            elif host.matches_hostname(name):
                continue
            else:
                served = (
                    "listen.https serves tls.cert_file for it (no tls.certificates entry "
                    f"names it), which covers only {', '.join(host.subject_names)}"
                )
            out.append(f"no certificate covers {name}: {served}; {fix}")
    return out


def _picked(
    by_name: dict[str, tuple[str, CertInfo | None]], wildcard: str | None, name: str
) -> tuple[str, CertInfo | None]:
    """The tls.certificates entry the https listener serves for ``name``, or ("", None)."""
    for key in (name, wildcard):
        if key and key in by_name:
            return by_name[key]
    return "", None
