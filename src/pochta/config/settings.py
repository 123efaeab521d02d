"""The typed settings of pochta.toml, one Struct per TOML table.

Every field has its default and a doc line (the ``doc`` metadata). The sample config that
``pochta init`` writes and the checker's hints are generated from these Structs, so this file
is the single reference for the configuration.

Paths that are relative are taken relative to ``server.data_dir`` (see ``Settings.path``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every TOML table: immutable, keyword-only, unknown keys rejected."""


class ServerSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    hostname: Annotated[
        str, _doc("Fully qualified name of this host (HELO/EHLO, banners, certificate).")
    ]
    data_dir: Annotated[
        str,
        _doc(
            "Directory holding the directory database, queue, mail and keys. "
            "Default: the config file's directory."
        ),
    ] = ""
    run_as_user: Annotated[
        str,
        _doc("After binding the listeners as root, switch to this user. Empty: stay as started."),
    ] = ""
    run_as_group: Annotated[
        str, _doc("Group to switch to; empty means the user's primary group.")
    ] = ""
    log_format: Annotated[
        Literal["logfmt", "json"], _doc("One line per event: logfmt or json.")
    ] = "logfmt"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _doc("Lowest level written to the log.")
    ] = "info"


class TLSSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cert_file: Annotated[str, _doc("PEM certificate chain for all TLS listeners.")] = "tls/cert.pem"
    key_file: Annotated[str, _doc("PEM private key matching cert_file.")] = "tls/key.pem"


class ListenSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Each listener is "HOST:PORT" ("[::]:PORT" for IPv6); an empty string switches it off."""

    smtp: Annotated[str, _doc("MX: inbound mail from the world (RFC 5321), STARTTLS offered.")] = (
        "0.0.0.0:25"
    )
    submission: Annotated[str, _doc("Message submission with STARTTLS (RFC 6409).")] = "0.0.0.0:587"
    submissions: Annotated[str, _doc("Message submission over implicit TLS (RFC 8314).")] = (
        "0.0.0.0:465"
    )
    imap: Annotated[str, _doc("IMAP with STARTTLS.")] = "0.0.0.0:143"
    imaps: Annotated[str, _doc("IMAP over implicit TLS.")] = "0.0.0.0:993"
    pop3: Annotated[str, _doc("POP3 with STLS.")] = "0.0.0.0:110"
    pop3s: Annotated[str, _doc("POP3 over implicit TLS.")] = "0.0.0.0:995"
    managesieve: Annotated[str, _doc("ManageSieve (RFC 5804).")] = "0.0.0.0:4190"
    http: Annotated[str, _doc("HTTP: autoconfig, MTA-STS policy, metrics.")] = "0.0.0.0:80"
    lmtp: Annotated[str, _doc('LMTP: "unix:PATH" (relative to data_dir) or "HOST:PORT".')] = (
        "unix:lmtp.sock"
    )


class DirectorySettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Annotated[Literal["sqlite"], _doc("Where domains, accounts and aliases live.")] = (
        "sqlite"
    )
    sqlite_path: Annotated[str, _doc("SQLite database file of the directory.")] = (
        "directory.sqlite3"
    )
    recipient_delimiter: Annotated[
        str,
        _doc('Plus-addressing: "user+tag@domain" reaches "user". Empty string switches it off.'),
    ] = "+"
    default_quota_bytes: Annotated[
        int, _doc("Quota given to new accounts when none is named; 0 means unlimited.")
    ] = 0


class AuthSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    failure_window_seconds: Annotated[
        int, _doc("Failed logins are counted per client IP and per account over this window.")
    ] = 60
    failure_threshold: Annotated[
        int, _doc("After this many failures in the window, answers are delayed (tarpit).")
    ] = 5
    tarpit_max_seconds: Annotated[float, _doc("Longest delay given to a tarpitted answer.")] = 15.0
    allow_plaintext_on_loopback: Annotated[
        bool, _doc("Allow PLAIN/LOGIN without TLS from 127.0.0.0/8 and ::1 (never from elsewhere).")
    ] = False


class DKIMSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    keys_dir: Annotated[str, _doc("Directory of DKIM private keys, DOMAIN/SELECTOR.key.")] = "dkim"


class TablesSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Postfix lookup tables, next to the SQLite directory.

    A table is named "TYPE:PATH" as in Postfix: "texthash:PATH" reads the text file, "hash:PATH"
    and "lmdb:PATH" also read the text source PATH (the .db file is not needed). alias_maps
    take Sendmail alias files.
    """

    virtual_alias_maps: Annotated[list[str], _doc("Virtual aliases: address -> targets.")] = []
    virtual_mailbox_maps: Annotated[
        list[str], _doc("Extra virtual mailboxes: address -> path.")
    ] = []
    virtual_mailbox_domains: Annotated[
        list[str], _doc("Extra domains whose mailboxes we host.")
    ] = []
    relay_domains: Annotated[list[str], _doc("Domains we accept mail for and relay onward.")] = []
    relay_recipient_maps: Annotated[list[str], _doc("Valid recipients in relay_domains.")] = []
    transport_maps: Annotated[
        list[str], _doc('Next hop per domain or address, e.g. "lmtp:[127.0.0.1]:24".')
    ] = []
    canonical_maps: Annotated[list[str], _doc("Address rewriting for sender and recipient.")] = []
    sender_canonical_maps: Annotated[list[str], _doc("Address rewriting for the sender only.")] = []
    recipient_canonical_maps: Annotated[
        list[str], _doc("Address rewriting for recipients only.")
    ] = []
    alias_maps: Annotated[
        list[str], _doc('Local aliases in Sendmail format, e.g. "hash:/etc/aliases".')
    ] = []


class Settings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings
    tls: TLSSettings = TLSSettings()
    listen: ListenSettings = ListenSettings()
    directory: DirectorySettings = DirectorySettings()
    auth: AuthSettings = AuthSettings()
    dkim: DKIMSettings = DKIMSettings()
    tables: TablesSettings = TablesSettings()

    # Set by the loader, not read from TOML: where the file was found.
    config_path: Annotated[str, _doc("(internal) path of the loaded file")] = ""

    @property
    def data_dir(self) -> Path:
        if self.server.data_dir:
            return Path(self.server.data_dir)
        return Path(self.config_path).resolve().parent if self.config_path else Path.cwd()

    def path(self, value: str) -> Path:
        """Resolve a path setting: absolute stays, relative is under data_dir."""
        p = Path(value)
        return p if p.is_absolute() else self.data_dir / p

    @property
    def directory_db(self) -> Path:
        return self.path(self.directory.sqlite_path)

    @property
    def dkim_dir(self) -> Path:
        return self.path(self.dkim.keys_dir)


LISTENER_NAMES: tuple[str, ...] = tuple(ListenSettings.__struct_fields__)

# Standard port of each listener; `pochta init --port-base N` adds N to each (RFC 6335 names).
STANDARD_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "pop3": 110,
    "pop3s": 995,
    "managesieve": 4190,
    "http": 80,
}
