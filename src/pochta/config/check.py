"""Checks of meaning, run after the structure of the file is known to be right."""

from __future__ import annotations

from collections.abc import Iterator

from pochta.config.load import Problem
from pochta.config.settings import LISTENER_NAMES, Settings
from pochta.directory.addresses import AddressError, normalize_address, normalize_domain
from pochta.dns.records import parse_nameserver
from pochta.resolve.transport import TransportError, parse_transport


def check_semantics(settings: Settings, *, check_files: bool = True) -> list[Problem]:
    problems: list[Problem] = []
    for check in (
        _check_server,
        _check_listeners,
        _check_directory,
        _check_http,
        _check_delivery,
        _check_queue,
    ):
        problems.extend(check(settings))
    if check_files:
        problems.extend(_check_files(settings))
        problems.extend(_check_tables(settings))
    return problems


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


def _check_listeners(s: Settings) -> Iterator[Problem]:
    from pochta.config.listen import parse_listen

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


def _check_directory(s: Settings) -> Iterator[Problem]:
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


def _check_http(s: Settings) -> Iterator[Problem]:
    import ipaddress

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


def _check_delivery(s: Settings) -> Iterator[Problem]:
    d = s.delivery
    if d.relayhost:
        try:
            route = parse_transport("smtp:" + d.relayhost)
        except TransportError as exc:
            yield Problem("delivery.relayhost", f"{exc}; write e.g. '[smtp.provider.net]:587'")
        else:
            if not route.nexthop or route.unix_socket:
                yield Problem("delivery.relayhost", "name a host, e.g. '[smtp.provider.net]:587'")
    if bool(d.relayhost_username) != bool(d.relayhost_password_file):
        yield Problem(
            "delivery.relayhost_username",
            "set both relayhost_username and relayhost_password_file, or neither",
        )
    # The range of each number (ports, timeouts, counts) is declared in settings.py and
    # checked by the loader's walk; here only rules that join two settings.
    for i, server in enumerate(s.dns.nameservers):
        try:
            parse_nameserver(server)
        except ValueError as exc:
            yield Problem(f"dns.nameservers[{i}]", str(exc))


def _check_queue(s: Settings) -> Iterator[Problem]:
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


def _check_files(s: Settings) -> Iterator[Problem]:
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


def _check_tables(s: Settings) -> Iterator[Problem]:
    from pochta.tables import TableError, open_table

    for name in type(s.tables).__struct_fields__:
        specs: list[str] = getattr(s.tables, name)
        if name in ("virtual_mailbox_domains", "relay_domains"):
            for i, dom in enumerate(specs):
                if ":" in dom or "/" in dom:
                    try:
                        open_table(dom, kind="map")
                    except TableError as exc:
                        yield Problem(f"tables.{name}[{i}]", str(exc))
                else:
                    try:
                        normalize_domain(dom)
                    except AddressError as exc:
                        yield Problem(f"tables.{name}[{i}]", str(exc))
            continue
        for i, spec in enumerate(specs):
            try:
                if name == "alias_maps":
                    open_table(spec, kind="aliases")
                else:
                    open_table(spec, kind="map")
            except TableError as exc:
                yield Problem(f"tables.{name}[{i}]", str(exc))
