"""Checks of meaning that need nothing but the settings, run after the structural walk.
With ``check_files`` the ones that look at this host too: the files the settings name, the
source addresses of delivery (bound once), the folder of the directory database.

The checks that need another package (host names and addresses from ``directory``, the
relay host's transport syntax from ``resolve``, table files from ``tables``) live in
``pochta.checks``, which runs these and those in the order ``pochta check`` prints them.
"""

from __future__ import annotations

import grp
import ipaddress
import itertools
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

from pochta.config.listen import parse_listen
from pochta.config.nameserver import parse_nameserver
from pochta.config.problems import Problem
from pochta.config.settings import LISTENER_NAMES, Settings


def check_listeners(s: Settings) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for name in LISTENER_NAMES:
        value: str = getattr(s.listen, name)
        if not value:
            continue
        try:
            addr = parse_listen(value)
        except ValueError as exc:
            yield Problem(f"listen.{name}", str(exc))
            continue
        key = str(addr)
        if key in seen:
            yield Problem(
                f"listen.{name}",
                f'"{value}" is already used by listen.{seen[key]}; give each listener its own port',
            )
        else:
            seen[key] = name


def check_directory(s: Settings) -> Iterator[Problem]:
    delim = s.directory.recipient_delimiter
    if any(ch in delim for ch in '@ \t"<>,'):
        yield Problem(
            "directory.recipient_delimiter",
            f'"{delim}" contains a character that cannot separate an extension; use "+" or "-"',
        )
    if len(delim) > 8:
        yield Problem(
            "directory.recipient_delimiter",
            'is longer than 8 characters; each character is a delimiter, e.g. "+-"',
        )


def check_networks(s: Settings) -> Iterator[Problem]:
    lists = {
        "http.metrics_allowed_networks": s.http.metrics_allowed_networks,
        "smtp.connection_limit_exceptions": s.smtp.connection_limit_exceptions,
    }
    for key, nets in lists.items():
        for i, net in enumerate(nets):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                yield Problem(
                    f"{key}[{i}]",
                    f'"{net}" is not a network; write an address or CIDR, e.g. "10.0.0.0/8"',
                )


def check_mailauth(s: Settings) -> Iterator[Problem]:
    """``mailauth.dmarc_allow``: each entry a client address/network or a domain name."""
    for i, entry in enumerate(s.mailauth.dmarc_allow):
        try:
            ipaddress.ip_network(entry, strict=False)
            continue
        except ValueError:
            pass
        labels = entry.rstrip(".").split(".")
        if "/" in entry or len(labels) < 2 or not all(labels) or any(" " in x for x in labels):
            yield Problem(
                f"mailauth.dmarc_allow[{i}]",
                f'"{entry}" is neither a network ("192.0.2.0/24") nor a domain '
                '("lists.example.org")',
            )


def check_spam(s: Settings) -> Iterator[Problem]:
    """The spam filter's thresholds in order, and the network lists of greylisting and the
    rate limits (a bad entry would otherwise be skipped silently)."""
    sp = s.spam
    steps = [
        (name, value)
        for name, value in (
            ("greylist_score", sp.greylist_score),
            ("junk_score", sp.junk_score),
            ("reject_score", sp.reject_score),
        )
        if value > 0  # 0 switches that action off
    ]
    for (low_name, low), (high_name, high) in itertools.pairwise(steps):
        if low >= high:
            yield Problem(
                f"spam.{high_name}",
                f"{high} is not above spam.{low_name} ({low}); the actions go greylist < "
                "junk < reject (0 switches one off)",
            )
    for i, entry in enumerate(s.rate_limits.exempt_networks):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            yield Problem(
                f"rate_limits.exempt_networks[{i}]",
                f'"{entry}" is not an address or network (e.g. "192.0.2.0/24")',
            )
    for i, entry in enumerate(s.greylist.allow):
        try:
            ipaddress.ip_network(entry, strict=False)
            continue
        except ValueError:
            pass
        labels = entry.lstrip("@").rstrip(".").split(".")
        if "/" in entry or len(labels) < 2 or not all(labels) or any(" " in x for x in labels):
            yield Problem(
                f"greylist.allow[{i}]",
                f'"{entry}" is neither a network ("192.0.2.0/24") nor a sender domain '
                '("example.org")',
            )


def check_delivery(s: Settings) -> Iterator[Problem]:
    """The relay host's login pair and the DNS servers (the relay host's syntax is
    ``pochta.checks``')."""
    d = s.delivery
    if bool(d.relayhost_username) != bool(d.relayhost_password_file):
        yield Problem(
            "delivery.relayhost_username",
            "set both relayhost_username and relayhost_password_file, or neither",
        )
    # Postfix smtp_bind_address / smtp_bind_address6: one IP address of its family. Any other
    # value would only fail at each connection, and the mail would wait out its lifetime.
    for key, value, version in (
        ("delivery.source_address", d.source_address, 4),
        ("delivery.source_address6", d.source_address6, 6),
    ):
        if value and _ip_version(value) != version:
            example = "192.0.2.25" if version == 4 else "2001:db8::25"
            yield Problem(
                key,
                f'"{value}" is not an IPv{version} address; write one of this host\'s '
                f'addresses, e.g. "{example}", or "" to let the system choose',
            )
    # The range of each number (ports, timeouts, counts) is declared in settings.py and
    # checked by the loader's walk; here only rules that join two settings.
    for i, server in enumerate(s.dns.nameservers):
        try:
            parse_nameserver(server)
        except ValueError as exc:
            yield Problem(f"dns.nameservers[{i}]", str(exc))


def _ip_version(value: str) -> int:
    """4 or 6 for an IP address literal, 0 for anything else."""
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return 0


def check_source_addresses_bound(s: Settings) -> Iterator[Problem]:
    """``delivery.source_address`` and ``source_address6`` are addresses of this host: the
    agent binds each outgoing socket to them, which fails for any other address (Postfix's
    smtp(8) then defers every delivery with "Cannot assign requested address")."""
    d = s.delivery
    for key, value, family in (
        ("delivery.source_address", d.source_address, socket.AF_INET),
        ("delivery.source_address6", d.source_address6, socket.AF_INET6),
    ):
        if not value or _ip_version(value) != (4 if family == socket.AF_INET else 6):
            continue  # empty, or a syntax problem check_delivery reports
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((value, 0))
        except OSError as exc:
            yield Problem(
                key,
                f'"{value}" cannot be sent from: {exc.strerror}; it is not an address of this '
                'host (see: ip addr); write one that is, or "" to let the system choose',
            )


def _writable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether the permission bits let uid/gids create files in the directory ``path``."""
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        return st.st_mode & 0o300 == 0o300
    if st.st_gid in gids:
        return st.st_mode & 0o030 == 0o030
    return st.st_mode & 0o003 == 0o003


def check_directory_folder_for_run_as_user(s: Settings) -> Iterator[Problem]:
    """``directory.sqlite_path`` outside data_dir with ``server.run_as_user``: the server
    opens the database after switching to that user, and SQLite (WAL mode) creates
    ``NAME-wal`` and ``NAME-shm`` next to it, so the user must be able to write the folder.
    pochta hands over data_dir and its own folders, never a folder outside it."""
    user = s.server.run_as_user
    db = s.directory_db
    folder = db.parent
    if not user or folder.is_relative_to(s.data_dir) or not folder.is_dir():
        return
    try:
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(s.server.run_as_group).gr_gid if s.server.run_as_group else pw.pw_gid
    except KeyError:
        return  # the server says at start which name is unknown (server/privileges.py)
    if not _writable_by(folder, pw.pw_uid, {gid, *os.getgrouplist(user, gid)}):
        yield Problem(
            "directory.sqlite_path",
            f"the server runs as {user} and SQLite must create {db.name}-wal and "
            f"{db.name}-shm in {folder}, which {user} cannot write; run: chown {user} "
            f"{folder} (a folder of its own), or put the database under data_dir "
            f"({s.data_dir})",
        )


def check_local(s: Settings) -> Iterator[Problem]:
    """Unix accounts are written as the account (local(8) "DELIVERY RIGHTS"): only a
    server that keeps root can switch to them; one that drops to ``server.run_as_user``
    would write every ~/Maildir/ as that user, which the homes refuse."""
    if s.local.deliver_to_unix_accounts and s.server.run_as_user:
        yield Problem(
            "local.deliver_to_unix_accounts",
            f"the server drops root for server.run_as_user ({s.server.run_as_user!r}), so it "
            "cannot write into each account's ~/Maildir/ as that account; set "
            'server.run_as_user = "" (the server keeps root for delivery, as Postfix\'s '
            "local(8) does) or deliver_to_unix_accounts = false and alias the users in "
            "alias_maps",
        )


def check_queue(s: Settings) -> Iterator[Problem]:
    q = s.queue
    if q.minimal_backoff_seconds > q.maximal_backoff_seconds:
        yield Problem(
            "queue.minimal_backoff_seconds",
            f"{q.minimal_backoff_seconds} is more than queue.maximal_backoff_seconds "
            f"({q.maximal_backoff_seconds}); make the minimal backoff the smaller one",
        )
    if q.delay_warning_seconds and q.delay_warning_seconds >= q.maximal_lifetime_seconds:
        yield Problem(
            "queue.delay_warning_seconds",
            f"{q.delay_warning_seconds} is not less than queue.maximal_lifetime_seconds "
            f"({q.maximal_lifetime_seconds}), so no warning would ever be sent; make it "
            "smaller, or 0 to switch warnings off",
        )


def check_sieve(s: Settings) -> Iterator[Problem]:
    """[sieve] vacation periods in order (min <= default <= max, a max of 0 = no maximum);
    [managesieve] connection limits that agree."""
    sv = s.sieve
    low, default, high = (
        sv.vacation_min_period_seconds,
        sv.vacation_default_period_seconds,
        sv.vacation_max_period_seconds,
    )
    if high and low > high:
        yield Problem(
            "sieve.vacation_min_period_seconds",
            f"{low} is more than sieve.vacation_max_period_seconds ({high}); make the minimum "
            "the smaller one (a maximum of 0 means none)",
        )
    elif default < low:
        yield Problem(
            "sieve.vacation_default_period_seconds",
            f"{default} is less than sieve.vacation_min_period_seconds ({low}); a script "
            "without :days would be answered with the minimum instead: make the default at "
            "least the minimum",
        )
    elif high and default > high:
        yield Problem(
            "sieve.vacation_default_period_seconds",
            f"{default} is more than sieve.vacation_max_period_seconds ({high}); make the "
            "default at most the maximum (a maximum of 0 means none)",
        )
    ms = s.managesieve
    if ms.max_connections and ms.max_connections_per_ip > ms.max_connections:
        yield Problem(
            "managesieve.max_connections_per_ip",
            f"{ms.max_connections_per_ip} is more than managesieve.max_connections "
            f"({ms.max_connections}); make the per-IP limit the smaller one (0 means none)",
        )


def _writable_dir(path: Path) -> str | None:
    """Why pochta could not keep files in the directory ``path`` (made when missing), or
    None when it can."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a directory; point it at a directory, or remove the file"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable; give the user pochta runs as write access"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist and cannot be made in {parent}; create it"
    return None


def check_sieve_files(s: Settings) -> Iterator[Problem]:
    """The Sieve script directories can be written (ManageSieve and ``pochta sieve`` store
    scripts there), and the ManageSieve listener has its certificate: STARTTLS is how a
    client logs in (RFC 5804 §2.2) but from loopback."""
    for key, value in (
        ("sieve.scripts_dir", s.sieve.scripts_dir),
        ("sieve.global_dir", s.sieve.global_dir),
    ):
        why = _writable_dir(s.path(value))
        if why is not None:
            yield Problem(key, why)
    if s.listen.managesieve:
        missing = [
            str(s.path(value))
            for value in (s.tls.cert_file, s.tls.key_file)
            if not s.path(value).is_file()
        ]
        if missing:
            yield Problem(
                "listen.managesieve",
                f"needs TLS (STARTTLS, RFC 5804 §2.2) but {' and '.join(missing)} do not "
                'exist; set tls.cert_file and tls.key_file, or listen.managesieve = "" to '
                "switch ManageSieve off",
            )


def check_files(s: Settings) -> Iterator[Problem]:
    if s.server.data_dir and not s.data_dir.is_dir():
        yield Problem(
            "server.data_dir",
            f"{s.data_dir} is not a directory; create it or run pochta init --data {s.data_dir}",
        )
        return
    for key, value in (("tls.cert_file", s.tls.cert_file), ("tls.key_file", s.tls.key_file)):
        path = s.path(value)
        if not path.is_file():
            yield Problem(
                key,
                f"{path} does not exist; point it at your PEM file or run pochta init to "
                "make a self-signed one",
            )
    for i, entry in enumerate(s.tls.certificates):
        for name, value in (("cert_file", entry.cert_file), ("key_file", entry.key_file)):
            path = s.path(value)
            if not path.is_file():
                yield Problem(
                    f"tls.certificates[{i}].{name}",
                    f"{path} does not exist; point it at the PEM file of the certificate for "
                    f"{', '.join(entry.names) or 'its names'}, or remove the entry",
                )
