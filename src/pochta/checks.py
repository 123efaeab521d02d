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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pochta.config import check as config_check
from pochta.config.load import Walked, read_config, walk_settings
from pochta.config.problems import ConfigError, Problem
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError, normalize_address, normalize_domain
from pochta.resolve.transport import TransportError, parse_transport

__all__ = [
    "ConfigError",
    "check_settings",
    "checked_settings_from_dict",
    "load_checked_settings",
]


def load_checked_settings(path: str | Path, *, check_files: bool = True) -> Settings:
    """Read, check and convert the config file; ConfigError lists every problem.

    ``check_files=False`` skips the files the config names (data directory, certificates,
    tables), for commands that run where they may not be readable (``pochta sendmail``).
    """
    return _checked(read_config(path), check_files=check_files)


def checked_settings_from_dict(
    data: dict[str, Any], *, config_path: str = "", check_files: bool = True
) -> Settings:
    """``load_checked_settings`` of data already parsed from TOML."""
    return _checked(walk_settings(data, config_path=config_path), check_files=check_files)


def check_settings(settings: Settings, *, check_files: bool = True) -> list[Problem]:
    """Every problem of meaning, in the order of the config's tables."""
    problems: list[Problem] = []
    for check in (
        _check_server,
        config_check.check_listeners,
        config_check.check_directory,
        config_check.check_networks,
        config_check.check_mailauth,
        _check_relayhost,
        config_check.check_delivery,
        config_check.check_queue,
    ):
        problems.extend(check(settings))
    if check_files:
        problems.extend(config_check.check_files(settings))
        problems.extend(_check_tables(settings))
    return problems


def _checked(walked: Walked, *, check_files: bool) -> Settings:
    if walked.settings is not None:
        walked.problems.extend(check_settings(walked.settings, check_files=check_files))
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
