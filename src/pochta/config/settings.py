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


# Valid ranges. Every int and float setting declares its range with msgspec.Meta(ge/gt/le/lt)
# in its Annotated; config/load.py reads them and reports a value outside with its key path
# and the range. Where 0 means "no limit", the doc says so (as Postfix and Dovecot do).
_MAX_COUNT = 1_000_000
"""Upper bound of counts (recipients, errors, connections): more is a typo, not a setting."""
_MAX_BYTES = 1 << 40
"""Upper bound of byte sizes and quotas (1 TiB)."""
_MAX_MESSAGE_BYTES = (1 << 31) - 1
"""Largest settable message size: fits the SIZE value (RFC 1870) of every client."""
_DAY = 86400


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
    postmaster: Annotated[
        str,
        _doc(
            "Who gets mail for postmaster (RFC 5321 §4.5.1: <postmaster>, postmaster@ this "
            "host and every hosted domain) when no alias names postmaster@DOMAIN: an address "
            "here or elsewhere. Empty: the first account of the first domain (the one pochta "
            "init made). `pochta check` shows where it goes."
        ),
    ] = ""
    log_format: Annotated[
        Literal["logfmt", "json"], _doc("One line per event: logfmt or json.")
    ] = "logfmt"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _doc("Lowest level written to the log.")
    ] = "info"
    processes: Annotated[
        int,
        _doc(
            "Processes, the main one included: the main one accepts connections and passes "
            "them on, the others serve SMTP, submission and IMAP sessions, and each delivers "
            "its share of the queue (Python uses one CPU per process). 0: one more process "
            "per CPU; 1: the main one does everything. Needs a restart."
        ),
        msgspec.Meta(ge=0, le=1024),
    ] = 0
    log_file: Annotated[
        str,
        _doc(
            "File the log is appended to (relative paths under data_dir); reopened on SIGHUP, "
            "so logrotate can move it away and signal. Empty: standard error."
        ),
    ] = ""
    pid_file: Annotated[
        str,
        _doc(
            "File `pochta serve` writes its process ID to while it runs (relative paths "
            "under data_dir), for init scripts and logrotate's postrotate. Empty: none."
        ),
    ] = "pochta.pid"


# Per-name certificates are a list of tables rather than a directory convention (one file
# pair per name in a directory): the files stay where the ACME client writes them
# (certbot's live/NAME/), one certificate may cover several names or a wildcard, and the
# loader checks every entry with its key path (tls.certificates[0].names[1]).
class NamedCertificate(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One certificate the https listener serves to the server names (SNI) it lists."""

    names: Annotated[
        list[str],
        _doc(
            'Server names (SNI) this certificate is served for, e.g. ["mta-sts.example.org", '
            '"autoconfig.example.org"]; "*.example.org" stands for one label.'
        ),
    ]
    cert_file: Annotated[str, _doc("PEM certificate chain (leaf first), e.g. fullchain.pem.")]
    key_file: Annotated[str, _doc("PEM private key matching cert_file, e.g. privkey.pem.")]


class TLSSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cert_file: Annotated[str, _doc("PEM certificate chain for all TLS listeners.")] = "tls/cert.pem"
    key_file: Annotated[str, _doc("PEM private key matching cert_file.")] = "tls/key.pem"
    certificates: Annotated[
        list[NamedCertificate],
        _doc(
            "More certificates for the https listener, picked by the name the client asks for "
            '(SNI), e.g. [{ names = ["mta-sts.example.org", "autoconfig.example.org"], '
            'cert_file = "/etc/letsencrypt/live/mta-sts.example.org/fullchain.pem", '
            'key_file = "/etc/letsencrypt/live/mta-sts.example.org/privkey.pem" }]. Other '
            "names, and clients that send none, get cert_file. Reloaded on SIGHUP (so the "
            "files must be readable by server.run_as_user); `pochta check` lists the names "
            "no certificate covers."
        ),
    ] = []


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
    managesieve: Annotated[
        str,
        _doc(
            "ManageSieve (RFC 5804, standard port 4190): users keep their Sieve scripts with "
            "it (STARTTLS offered; AUTHENTICATE only under TLS, see managesieve."
            'allow_plaintext_on_loopback). "" = off, the default of an old config; '
            "`pochta init` switches it on."
        ),
    ] = ""
    http: Annotated[str, _doc("HTTP: autoconfig, MTA-STS policy, metrics.")] = "0.0.0.0:80"
    https: Annotated[
        str,
        _doc(
            "HTTPS (implicit TLS, RFC 2818): what http serves, for the MTA-STS policy (RFC 8461 "
            "§3.3 fetches it over HTTPS) and Outlook's autodiscover; the certificate is picked "
            "by SNI from tls.certificates, else tls.cert_file."
        ),
    ] = "0.0.0.0:443"
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
        int,
        _doc("Quota given to new accounts when none is named; 0 means unlimited."),
        msgspec.Meta(ge=0, le=_MAX_BYTES),
    ] = 0


class AuthSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    failure_window_seconds: Annotated[
        int,
        _doc("Failed logins are counted per client IP and per account over this window."),
        msgspec.Meta(ge=1, le=_DAY),
    ] = 60
    failure_threshold: Annotated[
        int,
        _doc("After this many failures in the window, answers are delayed (tarpit)."),
        msgspec.Meta(ge=1, le=10_000),
    ] = 5
    tarpit_max_seconds: Annotated[
        float, _doc("Longest delay given to a tarpitted answer."), msgspec.Meta(ge=0, le=300)
    ] = 15.0
    allow_plaintext_on_loopback: Annotated[
        bool, _doc("Allow PLAIN/LOGIN without TLS from 127.0.0.0/8 and ::1 (never from elsewhere).")
    ] = False
    cache_size: Annotated[
        int,
        _doc(
            "Verified-credential cache (Dovecot's auth_cache_size, counted in entries, about "
            "350 bytes each): a password login answered from it skips the Argon2id check. "
            "Each process has its own; entries are keyed on an HMAC of the password and the "
            "stored hash, so `pochta user passwd` takes effect at once; SIGHUP empties it. "
            "0 = off."
        ),
        msgspec.Meta(ge=0, le=10_000_000),
    ] = 10_000
    cache_ttl_seconds: Annotated[
        int,
        _doc(
            "How long a right password stays in the cache (auth_cache_ttl). One hour, as "
            "Dovecot: a client reconnecting every few minutes costs one Argon2id check an "
            "hour; a password change does not wait for it (the stored hash is in the key)."
        ),
        msgspec.Meta(ge=1, le=_DAY),
    ] = 3600
    cache_negative_ttl_seconds: Annotated[
        int,
        _doc(
            "How long a wrong password stays in the cache (auth_cache_negative_ttl); it only "
            "answers that same wrong password, and is counted for the tarpit like any "
            "failure. 0 = wrong passwords are not cached."
        ),
        msgspec.Meta(ge=0, le=_DAY),
    ] = 3600


class DKIMSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    keys_dir: Annotated[str, _doc("Directory of DKIM private keys, DOMAIN/SELECTOR.key.")] = "dkim"
    sign: Annotated[
        bool, _doc("Sign mail that local users submit for hosted domains (active selectors).")
    ] = True


class DNSSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The resolver used for MX, TLSA, MTA-STS, SPF, DKIM and DMARC lookups."""

    nameservers: Annotated[
        list[str],
        _doc('Servers to ask ("IP", "IP:PORT", "[IPv6]:PORT"); empty: /etc/resolv.conf.'),
    ] = []
    timeout_seconds: Annotated[
        float, _doc("Give up on one lookup after this long."), msgspec.Meta(gt=0, le=300)
    ] = 10.0
    dnssec_validating: Annotated[
        bool,
        _doc(
            "The nameservers validate DNSSEC and are trusted (a local unbound): their AD bit "
            "enables DANE (RFC 7672)."
        ),
    ] = False


class MailAuthSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Checks of incoming mail: SPF (RFC 7208), DKIM (RFC 6376), DMARC (RFC 7489)."""

    check_incoming: Annotated[
        bool,
        _doc(
            "Check SPF, DKIM and DMARC on mail from the smtp (MX) listener and write one "
            "Authentication-Results field (RFC 8601); never on submission, the sendmail "
            "command's pickup or LMTP."
        ),
    ] = True
    spf_reject: Annotated[
        bool,
        _doc(
            "Refuse an SPF 'fail' of MAIL FROM at MAIL FROM with 550 5.7.23 (RFC 7372 §3.2). "
            "Off: the result only feeds DMARC and the verdict (forwarded mail often fails SPF)."
        ),
    ] = False
    dmarc_reject_action: Annotated[
        Literal["reject", "quarantine"],
        _doc(
            "What a DMARC failure under p=reject gets: 'reject' (550 5.7.1 at the end of "
            "DATA, RFC 7489 §6.7) or 'quarantine' (delivered to Junk)."
        ),
    ] = "reject"
    dmarc_allow: Annotated[
        list[str],
        _doc(
            'Client addresses or networks ("192.0.2.0/24") and sender domains '
            '("lists.example.org", the MAIL FROM or From domain) whose DMARC failure is '
            "recorded but not enforced: known forwarders and mailing lists."
        ),
    ] = []
    timeout_seconds: Annotated[
        float,
        _doc("Longest wait for each check's DNS lookups (SPF: the whole check, RFC 7208 §4.6.4)."),
        msgspec.Meta(gt=0, le=300),
    ] = 20.0
    trusted_arc_sealers: Annotated[
        list[str],
        _doc(
            "Signing domains (ARC-Seal d=) of ARC sealers, such as mailing lists and "
            'forwarders ("googlegroups.com"), whose ARC-Authentication-Results are trusted '
            "when our DMARC check fails: with a valid ARC chain (RFC 8617) whose newest set "
            "was sealed by a listed domain or a subdomain of one and says dmarc=pass, the "
            "failure is recorded but not enforced (RFC 7489 §6.6.2 local policy)."
        ),
    ] = []


class SRSSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Forwarded mail: SRS sender rewriting (libsrs2's scheme) and the ARC seal (RFC 8617)."""

    enabled: Annotated[
        bool,
        _doc(
            "Send mail whose envelope sender is not in a hosted domain (an alias forwarding "
            "outside) with an SRS0/SRS1 MAIL FROM at srs.domain, so SPF passes at the next "
            "hop; bounces to those addresses are checked and sent back to the original sender."
        ),
    ] = True
    domain: Annotated[
        str,
        _doc("Domain of the SRS addresses; its MX must be this host. Empty: server.hostname."),
    ] = ""
    secret_file: Annotated[
        str,
        _doc(
            "File of SRS secrets, one a line: the first signs, all verify (rotation: add the "
            "new one on top, remove the old one after max_age_days). Relative: under data_dir. "
            "pochta init writes one; serve makes it when missing."
        ),
    ] = "srs.secret"  # noqa: S105 - a file name, not a secret
    max_age_days: Annotated[
        int,
        _doc("Days an SRS address stays valid for bounces (libsrs2 maxage)."),
        msgspec.Meta(ge=1, le=365),
    ] = 21
    seal_forwarded: Annotated[
        bool,
        _doc(
            "Add an ARC set (ARC-Authentication-Results, ARC-Message-Signature, ARC-Seal; RFC "
            "8617 §5.1) signed with the host name's RSA DKIM key to MX mail that virtual "
            "aliases send to another host, so receivers that trust us can override DMARC."
        ),
    ] = True


class DeliverySettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Outbound SMTP, relay, LMTP and pipe delivery (Postfix smtp(8), lmtp(8), pipe(8))."""

    helo_name: Annotated[str, _doc("Name given in EHLO; empty: server.hostname.")] = ""
    source_address: Annotated[str, _doc("Local IPv4 address to send from; empty: any.")] = ""
    source_address6: Annotated[str, _doc("Local IPv6 address to send from; empty: any.")] = ""
    smtp_port: Annotated[
        int,
        _doc("Port of MX hosts (25; other values are for tests)."),
        msgspec.Meta(ge=1, le=65535),
    ] = 25
    tls_security_level: Annotated[
        Literal["none", "may", "encrypt", "dane", "verify"],
        _doc(
            "none: never TLS; may: STARTTLS when offered; encrypt: TLS required; dane: DANE "
            "where TLSA records are validated, else may; verify: a valid certificate for the "
            "MX name required. MTA-STS enforce and REQUIRETLS raise it per message."
        ),
    ] = "may"
    tls_ca_file: Annotated[
        str, _doc("Extra PEM CA certificates trusted when verifying peers; empty: system CAs.")
    ] = ""
    mta_sts: Annotated[bool, _doc("Honour recipient domains' MTA-STS policies (RFC 8461).")] = True
    relayhost: Annotated[
        str,
        _doc('Smarthost for all remote mail, "[host]:port" (no MX lookup) or "host"; empty: none.'),
    ] = ""
    relayhost_username: Annotated[str, _doc("AUTH user name at the relayhost.")] = ""
    relayhost_password_file: Annotated[
        str, _doc("File holding the relayhost AUTH password (one line).")
    ] = ""
    connect_timeout_seconds: Annotated[
        float, _doc("Give up connecting after this long."), msgspec.Meta(gt=0, le=3600)
    ] = 30.0
    command_timeout_seconds: Annotated[
        float,
        _doc("Longest wait for a reply to one command (RFC 5321 4.5.3.2)."),
        msgspec.Meta(gt=0, le=3600),
    ] = 300.0
    max_mx_hosts: Annotated[
        int, _doc("MX hosts tried per attempt, best first."), msgspec.Meta(ge=1, le=20)
    ] = 5
    connection_cache_seconds: Annotated[
        float,
        _doc("Keep an idle connection this long for the next message to that host; 0: none."),
        msgspec.Meta(ge=0, le=3600),
    ] = 2.0
    destination_rate_delay_seconds: Annotated[
        float,
        _doc("Pause between deliveries to one destination; 0: none."),
        msgspec.Meta(ge=0, le=3600),
    ] = 0.0
    pipe_timeout_seconds: Annotated[
        float, _doc("Longest run of a pipe command."), msgspec.Meta(gt=0, le=_DAY)
    ] = 1000.0
    bounces_per_minute: Annotated[
        int,
        _doc("Delivery status notifications sent per minute at most; more wait. 0 = no limit."),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 120
    save_to_detail_mailbox: Annotated[
        bool,
        _doc(
            "Deliver user+detail@domain into the folder named by the detail when the account "
            "has it (Dovecot's lmtp_save_to_detail_mailbox); when it does not exist the mail "
            "goes to INBOX (no folder is made from an address). A folder chosen by a filter's "
            "verdict (e.g. Junk) comes first and is created when missing."
        ),
    ] = False


class TablesSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Postfix lookup tables, next to the SQLite directory.

    A table is named "TYPE:PATH" as in Postfix: "texthash:PATH" reads the text file, "hash:PATH"
    and "lmdb:PATH" also read the text source PATH (the .db file is not needed). alias_maps
    take Sendmail alias files. Every *_maps key takes several tables, asked in order; the
    *_domains keys are Postfix domain lists (tables/domain_list.py).
    """

    virtual_alias_maps: Annotated[list[str], _doc("Virtual aliases: address -> targets.")] = []
    virtual_mailbox_maps: Annotated[
        list[str],
        _doc(
            "Extra virtual mailboxes: address -> path under [store] mail_dir (virtual(8)); "
            'a path ending in "/" is a Maildir, else an mbox file. No quota, no IMAP login '
            "(no password here)."
        ),
    ] = []
    virtual_mailbox_domains: Annotated[
        list[str],
        _doc(
            'Extra domains whose mailboxes we host: names, "TYPE:PATH" tables (the key is the '
            'domain), "/path" files of names, "!name" exclusions, as Postfix reads them; a name '
            "matches only itself."
        ),
    ] = []
    relay_domains: Annotated[
        list[str],
        _doc(
            'Domains we accept mail for and relay onward: names, "TYPE:PATH" tables, "/path" '
            'files of names, "!name" exclusions; a name also matches its subdomains (Postfix '
            "parent_domain_matches_subdomains), in a table too."
        ),
    ] = []
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
    header_checks: Annotated[
        list[str],
        _doc(
            'Postfix header_checks: "regexp:PATH" or "pcre:PATH" tables matched against each '
            "logical header field (MIME part and attached-message headers too) of mail "
            "cleanup receives; actions REJECT, WARN, DISCARD, HOLD, REPLACE, IGNORE, PREPEND, "
            "DUNNO, OK (docs/pattern-tables.md)."
        ),
    ] = []
    body_checks: Annotated[
        list[str],
        _doc(
            'Postfix body_checks: "regexp:PATH" or "pcre:PATH" tables matched against each '
            "body line (not decoded; the first 51200 bytes of each MIME part); actions REJECT, "
            "WARN, DISCARD, HOLD, REPLACE, IGNORE, PREPEND, DUNNO, OK."
        ),
    ] = []


class SMTPSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The SMTP, submission and LMTP servers (Postfix's smtpd_* limits)."""

    max_message_bytes: Annotated[
        int,
        _doc("Largest message accepted (SIZE, RFC 1870); Postfix message_size_limit."),
        msgspec.Meta(ge=1, le=_MAX_MESSAGE_BYTES),
    ] = 52428800
    max_recipients: Annotated[
        int,
        _doc("Recipients per message; more get 452 4.5.3."),
        # RFC 5321 §4.5.3.1.8: a server must take at least 100 recipients.
        msgspec.Meta(ge=100, le=_MAX_COUNT),
    ] = 1000
    max_command_line_bytes: Annotated[
        int,
        _doc("Longest command line incl. CRLF (RFC 5321 §4.5.3.1.4 says 512 at least)."),
        msgspec.Meta(ge=512, le=1 << 20),  # RFC 5321 §4.5.3.1.4: 512 octets at least
    ] = 4096
    max_data_line_bytes: Annotated[
        int,
        _doc("Longest line inside a message incl. CRLF; longer gets 500 5.5.6."),
        msgspec.Meta(ge=1000, le=1 << 24),  # RFC 5321 §4.5.3.1.6: 1000 octets at least
    ] = 65536
    max_commands_before_mail: Annotated[
        int,
        _doc("Commands (NOOP, RSET, VRFY, ...) allowed without a MAIL transaction."),
        msgspec.Meta(ge=1, le=_MAX_COUNT),
    ] = 100
    max_errors: Annotated[
        int,
        _doc("Errors per session before 421 and disconnect."),
        msgspec.Meta(ge=1, le=_MAX_COUNT),
    ] = 20
    idle_timeout_seconds: Annotated[
        int,
        _doc("Wait this long for the next command or data line (smtpd_timeout)."),
        msgspec.Meta(ge=1, le=_DAY),
    ] = 300
    session_timeout_seconds: Annotated[
        int, _doc("Longest whole session."), msgspec.Meta(ge=1, le=7 * _DAY)
    ] = 3600
    bare_newline: Annotated[
        Literal["reject", "normalize"],
        _doc(
            "A bare LF or CR in a command or message: normalize (each becomes CRLF in the "
            "stored message, as Postfix 3.9's default does) or reject (550 5.5.2). Either "
            "way only CRLF.CRLF ends DATA, so SMTP smuggling stays impossible."
        ),
    ] = "normalize"
    sender_login_mismatch: Annotated[
        Literal["reject", "allow"],
        _doc("Submission: MAIL FROM and From must belong to the logged-in account (553 5.7.1)."),
    ] = "reject"
    max_connections_per_ip: Annotated[
        int,
        _doc(
            "Open connections per client IP on each SMTP listener, all processes together "
            "(smtpd_client_connection_count_limit); a connection stops counting once QUIT is "
            "answered. 0 = no limit, as in Postfix. Addresses in connection_limit_exceptions "
            "are exempt."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 50
    connection_limit_exceptions: Annotated[
        list[str],
        _doc(
            "Client networks (address or CIDR) exempt from max_connections_per_ip, like "
            "Postfix's smtpd_client_event_limit_exceptions ($mynetworks, which includes the "
            "host itself). Default: loopback. [] exempts nobody."
        ),
    ] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    max_connections: Annotated[
        int,
        _doc(
            "Open connections on each SMTP listener (smtp, submission, submissions, lmtp "
            "each), all processes together, like a Postfix service's process limit; more get "
            "421 4.7.0. 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=1_000_000),
    ] = 1000
    command_timeout_seconds: Annotated[
        int,
        _doc(
            "Longest time one command line may take from its first byte to its line end; "
            "bytes that trickle in do not extend it (421 4.4.2). Message content is read with "
            "idle_timeout_seconds per read instead."
        ),
        msgspec.Meta(ge=1, le=86400),
    ] = 300
    max_auth_failures: Annotated[
        int,
        _doc(
            "Failed AUTH attempts per connection; the last one is answered 421 4.7.0 and the "
            "connection closes (Dovecot's login processes close after 3)."
        ),
        msgspec.Meta(ge=1, le=1000),
    ] = 3
    peername_lookup: Annotated[
        bool,
        _doc(
            "Look up each client's name at connect: the PTR name of its IP, kept only when "
            "that name's A/AAAA records give the IP back (Postfix smtpd_peername_lookup and "
            "client_name; 'unknown' otherwise). It shows in Received: and is given to the "
            "recipient policies; a DNS failure never refuses mail. Not for LMTP. With "
            "dns.nameservers empty the system resolver answers (getnameinfo/getaddrinfo, so "
            "/etc/hosts too, as Postfix); with nameservers set, those servers."
        ),
    ] = True
    peername_lookup_timeout_seconds: Annotated[
        float,
        _doc("Longest wait for the client's name (PTR and the forward check together)."),
        msgspec.Meta(gt=0, le=60),
    ] = 5.0


class QueueSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The queue and its retry schedule (Postfix's defaults)."""

    spool_dir: Annotated[
        str, _doc("Queue directory (incoming, active, deferred, hold, corrupt).")
    ] = "queue"
    min_free_bytes: Annotated[
        int,
        _doc(
            "Free bytes the spool's file system must keep to accept mail (Postfix "
            "queue_minfree): MAIL FROM gets 452 4.3.1 when less is free than the largest of "
            "this, 1.5 x smtp.max_message_bytes, this + SIZE= and 2 x SIZE=. 0: only the "
            "1.5 x max_message_bytes rule applies (as in Postfix)."
        ),
        msgspec.Meta(ge=0, le=1 << 50),
    ] = 0
    minimal_backoff_seconds: Annotated[
        int,
        _doc("Shortest wait before retrying; at most maximal_backoff_seconds."),
        msgspec.Meta(ge=1, le=_DAY),
    ] = 300
    maximal_backoff_seconds: Annotated[
        int, _doc("Longest wait between retries."), msgspec.Meta(ge=1, le=_DAY)
    ] = 4000
    maximal_lifetime_seconds: Annotated[
        int,
        _doc("Give up and bounce after this long in the queue."),
        msgspec.Meta(ge=1, le=100 * _DAY),
    ] = 432000
    delay_warning_seconds: Annotated[
        int,
        _doc(
            "Warn the sender after this long undelivered; 0 switches it off. Less than "
            "maximal_lifetime_seconds."
        ),
        msgspec.Meta(ge=0, le=100 * _DAY),
    ] = 14400
    destination_concurrency: Annotated[
        int,
        _doc(
            "Parallel deliveries to one destination (domain or next hop), all processes "
            "together: each delivering process takes this divided by their number, rounded up."
        ),
        msgspec.Meta(ge=1, le=10_000),
    ] = 20


class StoreSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Mailboxes: Maildir files plus one SQLite index per account."""

    backend: Annotated[Literal["maildir"], _doc("Where messages live.")] = "maildir"
    mail_dir: Annotated[str, _doc("Root of the mailboxes: MAIL_DIR/DOMAIN/LOCALPART/.")] = "mail"
    default_message_limit: Annotated[
        int,
        _doc(
            "Most messages an account may hold, for every account (Dovecot's quota_rule = "
            "*:messages=N): the next one is refused at RCPT TO with 452 4.2.2 and at IMAP "
            "APPEND/COPY with NO [OVERQUOTA]; 0 = unlimited."
        ),
        msgspec.Meta(ge=0, le=1 << 32),
    ] = 0


class LocalSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The local address class: the host's own names (Postfix mydestination)."""

    domains: Annotated[
        list[str],
        _doc(
            "Names that mean this host besides server.hostname (Postfix mydestination): names, "
            '"TYPE:PATH" tables (the key is the name), "/path" files of names, "!name" '
            "exclusions; a name matches only itself."
        ),
    ] = msgspec.field(default_factory=lambda: ["localhost"])
    deliver_to_unix_accounts: Annotated[
        bool,
        _doc(
            "Deliver mail for a local name's user to that Unix account's ~/Maildir/, as the "
            "account (off: only alias_maps apply). Needs a server that keeps root "
            '(server.run_as_user = "").'
        ),
    ] = False
    allow_mail_to_commands: Annotated[
        list[Literal["alias", "include"]],
        _doc(
            'Where "|command" targets may come from (Postfix allow_mail_to_commands): "alias" '
            '(alias_maps files), "include" (:include: files). A target from elsewhere is '
            "refused at RCPT. [] forbids commands."
        ),
    ] = msgspec.field(default_factory=lambda: ["alias"])
    allow_mail_to_files: Annotated[
        list[Literal["alias", "include"]],
        _doc(
            'Where "/file" targets may come from (Postfix allow_mail_to_files): "alias", '
            '"include". The message is appended to the file in mbox format with a lock (a path '
            'ending in "/" is a Maildir), as the alias file\'s owner. A target from elsewhere '
            "is refused at RCPT. [] forbids files."
        ),
    ] = msgspec.field(default_factory=lambda: ["alias"])


class HTTPSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP listener (autoconfig, MTA-STS policy, metrics)."""

    metrics_allowed_networks: Annotated[
        list[str],
        _doc('Networks besides loopback that may read /metrics, e.g. ["10.0.0.0/8"].'),
    ] = []


class IMAPSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The IMAP server (Dovecot's imap_* and login settings)."""

    allow_plaintext_on_loopback: Annotated[
        bool,
        _doc("LOGIN/AUTHENTICATE without TLS from 127.0.0.1/::1 (webmail on the same host)."),
    ] = True
    max_literal_bytes: Annotated[
        int,
        _doc("Largest literal a client may send (APPEND; APPENDLIMIT advertises it)."),
        msgspec.Meta(ge=1, le=_MAX_MESSAGE_BYTES),
    ] = 52428800
    max_command_bytes: Annotated[
        int,
        _doc("Longest command, literals of non-APPEND commands included."),
        # RFC 7162 §4: a server SHOULD accept command lines of 8192 octets at least.
        msgspec.Meta(ge=8192, le=1 << 26),
    ] = 65536
    idle_timeout_seconds: Annotated[
        int,
        _doc("Log out a client silent this long (RFC 9051 §5.4 asks 30 minutes at least)."),
        msgspec.Meta(ge=1, le=_DAY),
    ] = 1800
    max_connections_per_ip: Annotated[
        int,
        _doc(
            "Open connections per client IP on the imap and imaps listeners together, all "
            "processes together; high, because many users may share one NAT address (see "
            "max_userip_connections). 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 500
    max_connections_per_account: Annotated[
        int,
        _doc("Open IMAP sessions per account, from all IPs. 0 = no limit."),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 50
    max_userip_connections: Annotated[
        int,
        _doc(
            "Open IMAP sessions of one account from one client IP, checked at login "
            "(NO [LIMIT]); Dovecot's mail_max_userip_connections. 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=100_000),
    ] = 10
    max_connections: Annotated[
        int,
        _doc(
            "Open connections on the imap and imaps listeners together, all processes "
            "together (Dovecot's imap-login service); more get * BYE [UNAVAILABLE]. 0 = no "
            "limit."
        ),
        msgspec.Meta(ge=0, le=1_000_000),
    ] = 1000
    max_auth_failures: Annotated[
        int,
        _doc(
            "Failed LOGIN/AUTHENTICATE per connection; after the last one's NO the server "
            "says BYE and closes (Dovecot's imap-login disconnects after failed attempts)."
        ),
        msgspec.Meta(ge=1, le=1000),
    ] = 3
    max_append_bytes: Annotated[
        int,
        _doc(
            "Largest (MULTI)APPEND: all its messages together, held in memory until the last "
            "one is in (RFC 3502 is all or nothing). One message stays under "
            "max_literal_bytes. Larger ones get NO [TOOBIG] before their data is sent."
        ),
        msgspec.Meta(ge=1, le=2**40),
    ] = 104857600
    max_literal_bytes_before_login: Annotated[
        int,
        _doc(
            "Largest literal before login (LOGIN, AUTHENTICATE). Larger ones, and APPEND, are "
            "refused without '+'; a larger LITERAL+ closes the connection."
        ),
        msgspec.Meta(ge=1, le=1048576),
    ] = 8192
    login_timeout_seconds: Annotated[
        int,
        _doc(
            "Close a connection that has not logged in this long after connecting, however "
            "busy it is (Dovecot closes such clients after about a minute)."
        ),
        msgspec.Meta(ge=1, le=86400),
    ] = 60
    command_timeout_seconds: Annotated[
        int,
        _doc(
            "Close a connection whose command takes longer than this to arrive, counted from "
            "its first octet; its literals (APPEND messages) add the time they take at "
            "min_literal_bytes_per_second. Does not limit the wait between commands "
            "(idle_timeout_seconds does)."
        ),
        msgspec.Meta(ge=1, le=86400),
    ] = 300
    min_literal_bytes_per_second: Annotated[
        int,
        _doc(
            "The slowest upload command_timeout_seconds allows for literals (4096: a 50 MB "
            "APPEND may take 3.5 hours)."
        ),
        msgspec.Meta(ge=1, le=10**9),
    ] = 4096
    notify_max_pending_folders: Annotated[
        int,
        _doc(
            "NOTIFY (RFC 5465): how many changed folders a session may have waiting for it "
            "(while it runs a command or its client reads slowly); changes to one folder "
            "count once. One more and the client gets OK [NOTIFICATIONOVERFLOW] and its "
            "NOTIFY ends (RFC 5465 §5.8), as if it had sent NOTIFY NONE."
        ),
        msgspec.Meta(ge=1, le=1_000_000),
    ] = 1000


class POP3Settings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The POP3 server."""

    allow_plaintext_on_loopback: Annotated[
        bool, _doc("USER/PASS and AUTH without TLS from 127.0.0.1/::1.")
    ] = True
    idle_timeout_seconds: Annotated[
        int,
        _doc("Close a connection silent this long (RFC 1939 §3: at least 10 minutes)."),
        msgspec.Meta(ge=1, le=_DAY),
    ] = 600
    max_connections_per_ip: Annotated[
        int,
        _doc(
            "Open connections per client IP on the pop3 and pop3s listeners together; a "
            "connection stops counting once QUIT is answered. 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 20
    max_connections: Annotated[
        int,
        _doc(
            "Open connections on the pop3 and pop3s listeners together; more get "
            "-ERR [SYS/TEMP]. 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=1_000_000),
    ] = 500
    login_timeout_seconds: Annotated[
        int,
        _doc(
            "Close a connection not logged in after this long, whatever it sends (Dovecot "
            "closes unauthenticated clients after about a minute)."
        ),
        msgspec.Meta(ge=1, le=3600),
    ] = 60
    command_timeout_seconds: Annotated[
        int,
        _doc(
            "Longest time one command line may take from its first byte to its line end; "
            "bytes that trickle in do not extend it."
        ),
        msgspec.Meta(ge=1, le=3600),
    ] = 60
    max_auth_failures: Annotated[
        int,
        _doc(
            "Failed USER/PASS or AUTH attempts per connection; the last one closes the "
            "connection (Dovecot's login processes close after 3)."
        ),
        msgspec.Meta(ge=1, le=1000),
    ] = 3


class ReportsSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Aggregate reports: DMARC (RFC 7489 §7.2) and TLS-RPT (RFC 8460), sent and received,
    in ``reports.db``."""

    dmarc_send: Annotated[
        bool,
        _doc(
            "Send DMARC aggregate reports (RFC 7489 §7.2) to the rua= address of every From "
            "domain whose mail was checked here (mailauth.check_incoming), once per "
            "interval_hours, from dmarc-reports@HOST."
        ),
    ] = True
    tls_send: Annotated[
        bool,
        _doc(
            "Record the TLS outcome of every new outbound session to an MX host and send "
            "TLS reports (RFC 8460) for each whole UTC day to the domains that publish an "
            "_smtp._tls record, from noreply-tlsrpt@HOST."
        ),
    ] = True
    interval_hours: Annotated[
        int,
        _doc("Hours between two runs of the report job in the master (RFC 7489 §7.2: daily)."),
        msgspec.Meta(ge=1, le=168),
    ] = 24
    keep_days: Annotated[
        int,
        _doc(
            "Days the per-message rows (DMARC evaluations, outbound TLS sessions) are kept "
            "in reports.db for the reports and `pochta report dmarc --ours`; the report job "
            "removes older ones. Received reports are kept."
        ),
        msgspec.Meta(ge=1, le=3650),
    ] = 31
    organization: Annotated[
        str,
        _doc("org_name in the reports we send (RFC 7489 Appendix C). Empty: the host name."),
    ] = ""
    contact: Annotated[
        str,
        _doc(
            "email in the reports we send, where report readers may write (Appendix C). "
            "Empty: postmaster@HOST."
        ),
    ] = ""


class SpamSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The spam filter (Rspamd's role): checks scored as symbols, actions by score."""

    enabled: Annotated[
        bool,
        _doc(
            "Score every message from the smtp (MX) listener with the spam checks and act on "
            "the score (headers, Junk, greylisting, quarantine or reject); never submissions, "
            "the sendmail command's pickup or LMTP."
        ),
    ] = True
    check_timeout_seconds: Annotated[
        float,
        _doc(
            "Longest a single check may take (a DNS list that does not answer); a check that "
            "runs out of time or fails gives no symbols and the message is scored without it "
            "(Rspamd's task_timeout is 8 s for the whole scan)."
        ),
        msgspec.Meta(gt=0, le=300),
    ] = 8.0
    greylist_score: Annotated[
        float,
        _doc(
            "From this score on (below junk_score), a message from a new (client, sender, "
            "recipient) is answered 451 4.7.1 when greylisting is on ([greylist]); Rspamd's "
            "greylist action. 0: never."
        ),
        msgspec.Meta(ge=0, le=100_000),
    ] = 4.0
    junk_score: Annotated[
        float,
        _doc(
            "From this score on, the message is spam (X-Spam-Status: Yes, the required= "
            "value) and delivered into the Junk folder; Rspamd's add header action. 0: never."
        ),
        msgspec.Meta(ge=0, le=100_000),
    ] = 6.0
    reject_score: Annotated[
        float,
        _doc("From this score on, reject_action is taken; Rspamd's reject action. 0: never."),
        msgspec.Meta(ge=0, le=100_000),
    ] = 15.0
    reject_action: Annotated[
        Literal["quarantine", "reject", "junk"],
        _doc(
            'What a score at or above reject_score does: "quarantine" answers 250 and keeps '
            "the message in DATA_DIR/quarantine/ (`pochta quarantine list|show|release|"
            'delete`), "reject" answers 550 5.7.1 at the end of DATA, "junk" delivers into '
            "Junk like junk_score."
        ),
    ] = "quarantine"
    scores: Annotated[
        dict[str, Annotated[float, msgspec.Meta(ge=-10_000, le=10_000)]],
        _doc(
            "Scores that replace the checks' own, by symbol name, e.g. { BAYES_SPAM = 5.0, "
            "MISSING_DATE = 0.5 } (`pochta spam score FILE` lists the symbols of a message)."
        ),
    ] = {}


class SpamListsSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sender and recipient allow and block lists of the spam filter."""

    enabled: Annotated[bool, _doc("Score senders and recipients on the allow and block lists.")] = (
        True
    )
    allow_score: Annotated[
        float,
        _doc(
            "Score of a sender on an allow list (USER_/DOMAIN_/GLOBAL_ALLOWLIST; `pochta spam "
            "allow`): negative, large enough to outweigh the other checks."
        ),
        msgspec.Meta(ge=-1000, le=0),
    ] = -20.0
    block_score: Annotated[
        float,
        _doc(
            "Score of a sender on a block list (USER_/DOMAIN_/GLOBAL_BLOCKLIST; `pochta spam "
            "block`): positive, large enough to reach the spam actions alone."
        ),
        msgspec.Meta(ge=0, le=1000),
    ] = 20.0
    recipient_allow_score: Annotated[
        float,
        _doc(
            "Score of mail to a never-filtered recipient (RCPT_ALLOWLIST; `pochta spam allow "
            "add --recipient abuse@DOMAIN`): so negative that no action is ever taken."
        ),
        msgspec.Meta(ge=-100000, le=0),
    ] = -100.0


class DNSBLSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """DNS blocklists of the spam filter: client addresses and the domains of links."""

    enabled: Annotated[
        bool, _doc("Look up the client address and the links' domains in the DNS blocklists.")
    ] = True
    client_zones: Annotated[
        list[str],
        _doc(
            "Blocklists of client addresses (RFC 5782 §2), asked for every MX client that is "
            "not loopback, private or link-local, and for the IP literals in links. Spamhaus "
            "does not answer queries through public resolvers (8.8.8.8, 1.1.1.1...): use your "
            "own recursive resolver in [dns] nameservers. Empty: none."
        ),
    ] = msgspec.field(default_factory=lambda: ["zen.spamhaus.org"])
    uri_zones: Annotated[
        list[str],
        _doc(
            "Domain blocklists (RFC 5782 §3) asked for the registrable domain of each link "
            "in the message (hosted domains are not asked). Empty: none."
        ),
    ] = msgspec.field(default_factory=lambda: ["dbl.spamhaus.org", "multi.surbl.org"])
    default_score: Annotated[
        float,
        _doc(
            "Score of a listing in a zone whose return codes pochta does not know (symbol "
            "RBL_<ZONE> or URIBL_<ZONE>); the known zones (ZEN, DBL, SURBL) score per code."
        ),
        msgspec.Meta(ge=0, le=100),
    ] = 2.0
    max_uri_lookups: Annotated[
        int,
        _doc("Distinct link domains (and IP literals) asked per message; the rest are not."),
        msgspec.Meta(ge=1, le=1000),
    ] = 20
    timeout_seconds: Annotated[
        float,
        _doc(
            "Time limit of all the blocklist lookups of one message (they run concurrently); "
            "what has not answered by then gives no symbol."
        ),
        msgspec.Meta(gt=0, le=60),
    ] = 5.0


class BayesSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The Bayes classifier of the spam filter, per user and global."""

    enabled: Annotated[
        bool, _doc("Classify messages with the token statistics learnt from users' Junk moves.")
    ] = True
    min_learned: Annotated[
        int,
        _doc(
            "Spam AND ham messages a user's statistics must have learned before that user's "
            "mail is classified with them (else with the global ones, which need as many; "
            "SpamAssassin's bayes_min_spam_num / bayes_min_ham_num)."
        ),
        msgspec.Meta(ge=1, le=1_000_000),
    ] = 200
    learn_global: Annotated[
        bool,
        _doc(
            "Learn what a user trains (Junk moves, pochta spam learn --user) into the global "
            "statistics too, not only the user's."
        ),
    ] = True
    spam_probability: Annotated[
        float,
        _doc("Spam probability from which BAYES_SPAM is given (0.5 to 1)."),
        msgspec.Meta(ge=0.5, le=1.0),
    ] = 0.501
    spam_min_score: Annotated[
        float,
        _doc("Score of BAYES_SPAM at spam_probability; it grows linearly up to spam_max_score."),
        msgspec.Meta(ge=0.0, le=100.0),
    ] = 6.0
    spam_max_score: Annotated[
        float,
        _doc("Score of BAYES_SPAM at probability 1."),
        msgspec.Meta(ge=0.0, le=100.0),
    ] = 8.0
    ham_probability: Annotated[
        float,
        _doc("Spam probability up to which BAYES_HAM is given (0 to 0.5)."),
        msgspec.Meta(ge=0.0, le=0.5),
    ] = 0.1
    ham_score: Annotated[
        float,
        _doc("Score of BAYES_HAM at probability 0 (negative); 0 at ham_probability."),
        msgspec.Meta(ge=-100.0, le=0.0),
    ] = -5.0


class GreylistSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Greylisting (RFC 6647) of suspicious mail."""

    enabled: Annotated[
        bool, _doc("Answer a suspicious message from a new (client, sender, recipient) with 451.")
    ] = True
    mode: Annotated[
        Literal["score", "always"],
        _doc(
            '"score": greylist only mail whose spam score reaches [spam] greylist_score, at the '
            "end of DATA (Rspamd's way); \"always\": every new triplet at RCPT TO (postgrey's "
            "way). Authenticated sessions and other listeners than smtp are never greylisted."
        ),
    ] = "score"
    delay_seconds: Annotated[
        int,
        _doc(
            "How long a new (client network, sender, recipient) triplet is refused with "
            "451 4.7.1 before a retry passes (postgrey and Rspamd wait 5 minutes). "
            "Values under 60 are meant for tests."
        ),
        msgspec.Meta(ge=1, le=86_400),
    ] = 300
    retry_window_hours: Annotated[
        int,
        _doc(
            "How long after the first attempt a retry still passes; later, the triplet counts "
            "as new again (postgrey's retry window: 2 days)."
        ),
        msgspec.Meta(ge=1, le=720),
    ] = 48
    keep_days: Annotated[
        int,
        _doc(
            "How long a triplet that passed is remembered after its last message; it is not "
            "greylisted again meanwhile (postgrey's max-age: 35 days)."
        ),
        msgspec.Meta(ge=1, le=3650),
    ] = 35
    auto_allow_after: Annotated[
        int,
        _doc(
            "A client network (IPv4 /24, IPv6 /64) whose mail passed greylisting this many "
            "times (at most once an hour) skips it from then on (postgrey's "
            "auto-whitelist-clients). 0 = never."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 5
    allow: Annotated[
        list[str],
        _doc(
            'Never greylisted: client networks ("192.0.2.0/24", "2001:db8::/32", an address) '
            'and sender domains ("example.org" and its subdomains).'
        ),
    ] = []


class RateLimitSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rate limits per client address, authenticated user and recipient."""

    enabled: Annotated[bool, _doc("Apply the rate limits.")] = True
    messages_per_ip_per_hour: Annotated[
        int,
        _doc(
            "Messages (MAIL FROM) one client address may send to the smtp (MX) listener per "
            "hour, all processes together; more get 451 4.7.1 at MAIL FROM. High for any real "
            "MTA writing to one site, low for a spam run from one host. 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 1000
    messages_per_recipient_per_hour: Annotated[
        int,
        _doc(
            "Messages one recipient may receive per hour from unauthenticated clients (the "
            "MX); more get 451 4.7.1 at RCPT TO, so a flood cannot fill a mailbox. 0 = no "
            "limit."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 500
    messages_per_user_per_hour: Annotated[
        int,
        _doc(
            "Recipients an authenticated user may send to per hour (a message to 10 counts "
            "10). The excess is accepted and put on hold in the queue (`pochta queue release "
            "ID` sends it), with an error in the log the first time a user crosses the limit "
            "in an hour: a stolen password cannot make the server a spam cannon, and nothing "
            "a real user sends is lost. 500 is far above a person's day. 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 500
    exempt_networks: Annotated[
        list[str],
        _doc(
            "Client networks (address or CIDR) not counted per client or per recipient, "
            "like Postfix's smtpd_client_event_limit_exceptions. Default: loopback (programs "
            "on this host). [] exempts nobody."
        ),
    ] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])


class RspamdSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An external Rspamd asked over its HTTP protocol (/checkv2)."""

    url: Annotated[
        str,
        _doc(
            'Base URL of the Rspamd normal worker ("http://127.0.0.1:11333"); empty: off. '
            "Mail from the MX is posted to URL/checkv2 and Rspamd's action decides; while it "
            "is set, pochta's own scanner ([spam]) does not run."
        ),
    ] = ""
    timeout_seconds: Annotated[
        float,
        _doc("Longest wait for Rspamd's answer to one message (connect, send, scan, reply)."),
        msgspec.Meta(gt=0, le=600),
    ] = 20.0
    reject_action: Annotated[
        Literal["reject", "junk"],
        _doc(
            "What Rspamd's 'reject' action gets: 'reject' (550 5.7.1 at the end of DATA) or "
            "'junk' (delivered to the Junk folder, so nothing real is lost)."
        ),
    ] = "reject"
    failure_action: Annotated[
        Literal["accept", "tempfail"],
        _doc(
            "When Rspamd cannot be reached, times out or answers nonsense: 'accept' (the "
            "message is delivered unscanned, logged) or 'tempfail' (451 4.7.1, the client "
            "retries later)."
        ),
    ] = "accept"


class MilterSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """External filters spoken to with the Sendmail milter protocol."""

    servers: Annotated[
        list[str],
        _doc(
            'Milter addresses, asked in order ("inet:127.0.0.1:8891", "unix:/path"); empty: none.'
        ),
    ] = []
    timeout_seconds: Annotated[
        float,
        _doc(
            "Longest wait for one milter's answer to one command, and for its connection "
            "(Postfix milter_command_timeout)."
        ),
        msgspec.Meta(gt=0, le=600),
    ] = 30.0
    default_action: Annotated[
        Literal["tempfail", "accept"],
        _doc(
            "When a milter cannot be reached, times out or breaks the protocol: 'tempfail' "
            "(451 4.7.1, Postfix's milter_default_action) or 'accept' (the message goes on "
            "without that milter, logged)."
        ),
    ] = "tempfail"


class SieveSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sieve filtering at local delivery (RFC 5228, Dovecot Pigeonhole's role), the users'
    scripts kept with ManageSieve (RFC 5804) or ``pochta sieve``."""

    enabled: Annotated[
        bool,
        _doc(
            "Run the account's active Sieve script (and its domain's global before/after "
            "scripts) when mail is delivered into a local mailbox. An error in a script "
            "delivers the message to INBOX and is logged: nothing is lost."
        ),
    ] = True
    scripts_dir: Annotated[
        str,
        _doc(
            "Where the users' scripts are kept, one directory per account (relative paths are "
            "under server.data_dir)."
        ),
    ] = "sieve"
    global_dir: Annotated[
        str,
        _doc(
            "Where the administrator's scripts are kept: per domain a before and an after "
            "script (Dovecot's sieve_before/sieve_after) and the scripts `include :global` "
            "finds (relative paths are under server.data_dir)."
        ),
    ] = "sieve-global"
    max_script_bytes: Annotated[
        int,
        _doc("Largest script accepted (Dovecot's sieve_max_script_size)."),
        msgspec.Meta(ge=1, le=16 * 1024 * 1024),
    ] = 1024 * 1024
    max_scripts: Annotated[
        int,
        _doc(
            "Most scripts one account may keep (Dovecot's sieve_quota_max_scripts). 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 32
    max_storage_bytes: Annotated[
        int,
        _doc(
            "Most bytes of scripts one account may keep, all together (Dovecot's "
            "sieve_quota_max_storage). 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=1 << 40),
    ] = 4 * 1024 * 1024
    max_redirects: Annotated[
        int,
        _doc("Most redirect actions one message may cause (Dovecot's sieve_max_redirects)."),
        msgspec.Meta(ge=0, le=1000),
    ] = 4
    max_actions: Annotated[
        int,
        _doc("Most actions one script run may perform (Dovecot's sieve_max_actions)."),
        msgspec.Meta(ge=1, le=10_000),
    ] = 32
    max_run_seconds: Annotated[
        float,
        _doc(
            "Longest a script may run on one message (Dovecot's sieve_max_cpu_time); a script "
            "that runs out of time is an error: the message goes to INBOX."
        ),
        msgspec.Meta(gt=0, le=600),
    ] = 5.0
    max_include_depth: Annotated[
        int,
        _doc("Deepest nesting of include (RFC 6609; Dovecot's sieve_include_max_nesting_depth)."),
        msgspec.Meta(ge=1, le=100),
    ] = 10
    max_includes: Annotated[
        int,
        _doc("Most scripts one run may include (Dovecot's sieve_include_max_includes)."),
        msgspec.Meta(ge=1, le=10_000),
    ] = 255
    vacation_default_period_seconds: Annotated[
        int,
        _doc(
            "How long vacation stays silent to a sender it answered, when the script gives no "
            ":days or :seconds (RFC 5230 §4.1 suggests 7 days)."
        ),
        msgspec.Meta(ge=0, le=10 * 365 * 86400),
    ] = 7 * 86400
    vacation_min_period_seconds: Annotated[
        int,
        _doc(
            "Shortest period a script may ask for (RFC 6131 §2: a floor keeps a careless "
            ":seconds from flooding a sender); shorter asks are raised to it."
        ),
        msgspec.Meta(ge=0, le=10 * 365 * 86400),
    ] = 86400
    vacation_max_period_seconds: Annotated[
        int,
        _doc("Longest period a script may ask for; longer asks are lowered to it."),
        msgspec.Meta(ge=0, le=10 * 365 * 86400),
    ] = 90 * 86400
    duplicate_default_period_seconds: Annotated[
        int,
        _doc(
            "How long the duplicate test (RFC 7352) remembers a message id when the script "
            "gives no :seconds (Dovecot's sieve_duplicate_default_period)."
        ),
        msgspec.Meta(ge=1, le=10 * 365 * 86400),
    ] = 14 * 86400


class ManageSieveSettings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ManageSieve service (RFC 5804), on the managesieve listener."""

    idle_timeout_seconds: Annotated[
        int,
        _doc("A session that sends nothing for this long is closed (BYE)."),
        msgspec.Meta(ge=10, le=86400),
    ] = 1800
    max_line_bytes: Annotated[
        int,
        _doc("Longest command line, literals not counted."),
        msgspec.Meta(ge=1024, le=1 << 20),
    ] = 8192
    allow_plaintext_on_loopback: Annotated[
        bool,
        _doc(
            "AUTHENTICATE without TLS from 127.0.0.1/::1 (a webmail's Sieve plugin on the same "
            "host); elsewhere a client must send STARTTLS first."
        ),
    ] = True
    max_auth_failures: Annotated[
        int,
        _doc("Failed AUTHENTICATE per connection; after the last one's NO the server says BYE."),
        msgspec.Meta(ge=1, le=1000),
    ] = 3
    max_connections: Annotated[
        int,
        _doc(
            "Open connections on the managesieve listener, all processes together; more get "
            "BYE (TRYLATER). 0 = no limit."
        ),
        msgspec.Meta(ge=0, le=1_000_000),
    ] = 100
    max_connections_per_ip: Annotated[
        int,
        _doc("Open connections per client IP on the managesieve listener. 0 = no limit."),
        msgspec.Meta(ge=0, le=_MAX_COUNT),
    ] = 20


class Settings(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings
    tls: TLSSettings = TLSSettings()
    listen: ListenSettings = ListenSettings()
    directory: DirectorySettings = DirectorySettings()
    auth: AuthSettings = AuthSettings()
    dkim: DKIMSettings = DKIMSettings()
    dns: DNSSettings = DNSSettings()
    mailauth: MailAuthSettings = MailAuthSettings()
    srs: SRSSettings = SRSSettings()
    delivery: DeliverySettings = DeliverySettings()
    tables: TablesSettings = TablesSettings()
    smtp: SMTPSettings = SMTPSettings()
    queue: QueueSettings = QueueSettings()
    store: StoreSettings = StoreSettings()
    local: LocalSettings = LocalSettings()
    http: HTTPSettings = HTTPSettings()
    imap: IMAPSettings = IMAPSettings()
    pop3: POP3Settings = POP3Settings()
    reports: ReportsSettings = ReportsSettings()
    spam: SpamSettings = SpamSettings()
    spam_lists: SpamListsSettings = SpamListsSettings()
    dnsbl: DNSBLSettings = DNSBLSettings()
    bayes: BayesSettings = BayesSettings()
    greylist: GreylistSettings = GreylistSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    rspamd: RspamdSettings = RspamdSettings()
    milter: MilterSettings = MilterSettings()
    sieve: SieveSettings = SieveSettings()
    managesieve: ManageSieveSettings = ManageSieveSettings()

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
    def spool_dir(self) -> Path:
        return self.path(self.queue.spool_dir)

    @property
    def mail_dir(self) -> Path:
        return self.path(self.store.mail_dir)

    @property
    def dkim_dir(self) -> Path:
        return self.path(self.dkim.keys_dir)


LISTENER_NAMES: tuple[str, ...] = tuple(ListenSettings.__struct_fields__)

# Standard port of each listener (RFC 6335 names); see ``port_with_base``.
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
    "https": 443,
}


def port_with_base(port: int, base: int) -> int:
    """The port ``pochta init --port-base BASE`` gives a listener whose standard port is
    ``port``: BASE + port for ports below 1000, BASE + port % 1000 above (ManageSieve 4190
    -> BASE + 190), so every listener stays within BASE..BASE+999 and one block of 1000
    ports holds a whole test or demo instance. Base 0 keeps the standard ports."""
    if base == 0:
        return port
    return base + port % 1000
