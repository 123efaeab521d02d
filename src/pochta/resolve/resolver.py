"""The resolver: Postfix address classes with pochta's directory as the first virtual map.

How an address is resolved (read top to bottom; Postfix ADDRESS_CLASS_README, virtual(5),
local(8), transport(5)):

1. **Parse.** The domain is lower-cased (RFC 5321 §2.4) and turned into its A-label form
   when it is an IDN; the local part is lower-cased by policy (like the directory), except a
   quoted local part, which is kept as given. UTF-8 local parts (RFC 6531) pass through. A
   bare local part means ``local@server.hostname`` (Postfix append_at_myorigin), so
   ``RCPT TO:<Postmaster>`` works (RFC 5321 §4.5.1).
   An SRS0/SRS1 address at the SRS domain (``[srs]``, ``mailauth/srs.py``; that domain is a
   local name) is a bounce to mail we forwarded: its hash and age are checked (550 5.1.1
   saying which fails) and it resolves as the address it stands for (SRS0: the original
   sender; SRS1: the first forwarder's SRS0 address).
2. **Disabled directory domain**: 550 5.1.2 for every address in it.
3. **Virtual aliases** (Postfix does this in cleanup(8), before any class): directory aliases
   and virtual_alias_maps, key by key in virtual(5) order: ``user+ext@d``, ``user@d`` (and
   ``user+ext``, ``user`` for local domains); at each key the directory is asked before the
   tables. A match found without the extension passes it on to every target
   (propagate_unmatched_extensions = canonical, virtual), so ``bob+news@d -> alice@d`` ends at
   ``alice+news@d`` and her mailbox sees ``extension="news"``. A target ``@other`` means the
   same user in ``other`` (mail_addr_map(3)). Every target is resolved again from step 1.
   An address among its own targets is delivered to itself and not expanded again (Postfix
   cleanup_map1n: "allow an address to expand into itself once"); a longer cycle is an
   error. The ``@domain`` catch-all key waits for step 4 (deviation, below).
4. **Domain class**, in this order:

   - *virtual mailbox*: a directory domain, or one in virtual_mailbox_domains. A directory
     account (exact, then without extension), else a virtual_mailbox_maps key (delivered at
     its value, a path under ``[store] mail_dir``; a value leaving it is 451 4.3.5); else
     ``postmaster`` goes to the local alias, else to the admin (below); else the table
     catch-alls (``@domain`` in virtual_alias_maps, then in virtual_mailbox_maps); else the
     directory domain's catch-all; else 550 5.1.1. A disabled account is 550 5.2.1. A
     signing-only directory row (the host name's DKIM keys, made by ``pochta init``) is no
     mail domain: its addresses fall through to the classes below (local, for the host name).
   - *local*: server.hostname and ``[local] domains``: alias_maps (Sendmail format) by local
     part, with then without extension (local(8)); ``|command`` and ``/file`` targets become
     PipeDest/FileDest when their source (alias file or ``:include:`` file) is allowed by
     ``[local] allow_mail_to_commands`` / ``allow_mail_to_files``, else a 550 5.7.1 branch
     (local(8) "DELIVERY RIGHTS"); else a Unix account (not root) when
     ``deliver_to_unix_accounts``; else ``postmaster`` goes to the admin; else 550 5.1.1.
   - *virtual alias*: a domain whose bare name is a key of virtual_alias_maps (Postfix's
     ``virtual_alias_domains = $virtual_alias_maps`` convention) and no alias matched:
     postmaster (local alias, then the admin), then the ``@domain`` key, else 550 5.1.1.
   - *relay*: relay_domains (a name also matches its subdomains, Postfix's
     parent_domain_matches_subdomains; ``TYPE:PATH`` tables and ``/file`` lists as
     postconf(5) reads them: ``tables/domain_list.py``); checked against
     relay_recipient_maps when there are any; RelayDest via transport_maps or ``relay:DOMAIN``.
   - *default*: everything else; RemoteDest via transport_maps or ``smtp:DOMAIN``.

Decisions and deviations, for the reader who changes this file:

- **Directory before local.** Postfix checks mydestination first. Here a domain added with
  ``pochta domain add`` is a virtual mailbox domain even if it is also a local name: the admin
  said so explicitly, and its accounts must not vanish behind the local class.
- **``@domain`` in virtual_alias_maps is a catch-all, not an override.** In Postfix it also
  captures existing mailboxes unless each has a ``user@d user@d`` line (virtual(5)); here it
  applies only when the address is not an account or a virtual_mailbox_maps key. Identity
  lines still work, so Postfix tables give the result their authors meant.
- **postmaster is never refused** (RFC 5321 §4.5.1: ``<postmaster>``, postmaster@HOSTNAME
  and postmaster@every domain we accept mail for MUST be accepted; the name is
  case-insensitive, §2.4). An explicit entry for postmaster@THAT-DOMAIN wins (directory
  alias, virtual_alias_maps, an account); else the local alias ``postmaster`` in alias_maps;
  else the **admin**: ``[server] postmaster`` (written by ``pochta init --postmaster``), or,
  when that is empty, the first account (oldest, then by name) of the first domain that has
  one, domains taken oldest first (so the domain ``pochta init`` created comes first). The
  admin comes before the catch-alls: postmaster mail is for the person who runs the server.
  With no admin and no account at all there is no mailbox to put the mail in: 451 4.3.5, so
  the sender retries until one exists, and a warning (once per domain) says how to set one;
  ``pochta check`` shows where postmaster mail goes.
- **Limits.** Postfix defers (4.6.0) past virtual_alias_recursion_limit /
  virtual_alias_expansion_limit; we refuse with 554 5.4.6 (a loop is an admin error that
  retrying cannot fix): depth 20, 1000 final destinations per address.
- **transport_maps** apply to the relay and default classes and to virtual_mailbox_maps
  mailboxes; never to directory accounts, the local class, pipes or files. ``local:`` and
  ``virtual:`` results mean "deliver as this class normally would"; ``error:`` and ``retry:``
  refuse (permanently / temporarily) already at RCPT time; an unknown transport name defers
  (451 4.3.5) and is logged, like Postfix's "mail transport unavailable".
"""

from __future__ import annotations

import contextlib
import enum
import os
import pwd
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pochta.config.settings import Settings
from pochta.directory.base import Directory
from pochta.directory.model import Domain
from pochta.logs import get_logger
from pochta.mailauth.srs import SrsCodec, SrsError, is_srs
from pochta.protocols.smtp.replies import RELAY_DENIED, UNKNOWN_USER, Reply
from pochta.resolve.classes import (
    Destination,
    DiscardDest,
    FileDest,
    MailboxDest,
    PipeDest,
    Rejection,
    RelayDest,
    RemoteDest,
    Resolution,
    UnixDest,
    report_target,
    table_mailbox_problem,
)
from pochta.resolve.transport import (
    NETWORK_KINDS,
    Transport,
    TransportError,
    parse_transport,
)
from pochta.tables import (
    AddressTarget,
    AliasTable,
    CommandTarget,
    FileTarget,
    IncludeTarget,
    TableError,
    Target,
    lookup_domain,
    match_address,
)
from pochta.tables.address_list import split_addresses
from pochta.tables.aliases_file import expand_alias_sources
from pochta.tables.configured import ConfiguredTables
from pochta.tables.domain_list import DomainList
from pochta.tables.postfix_text import PostfixTable, address_lookup_keys, split_extension

__all__ = [
    "ALIAS_LOOP",
    "ALIAS_TEMPFAIL",
    "ALIAS_TOO_MANY",
    "BAD_ADDRESS",
    "CONFIG_ERROR",
    "DOMAIN_DISABLED",
    "MAILBOX_DISABLED",
    "MAX_ALIAS_DEPTH",
    "MAX_DESTINATIONS",
    "NO_POSTMASTER_YET",
    "RELAY_UNKNOWN",
    "ROLE_NAMES",
    "VIRTUAL_ALIAS_UNKNOWN",
    "AddressError",
    "DomainClass",
    "ParsedAddress",
    "QuotaCheck",
    "Resolver",
    "parse_address",
    "split_addresses",
]

log = get_logger("resolve")

MAX_ALIAS_DEPTH = 20
"""Nesting of aliases (alias -> alias -> ...); deeper is treated as a loop."""
MAX_DESTINATIONS = 1000
"""Final destinations one address may expand to (Postfix virtual_alias_expansion_limit)."""
_MAX_STEPS = 10 * MAX_DESTINATIONS  # lookups per resolution: bounds diamond-shaped alias graphs
_MAX_ADDRESS_CHARS = 1000

# RFC 2142 §4-5 role mailboxes, plus MAILER-DAEMON (RFC 5321 §4.5.5 bounces come from it).
ROLE_NAMES = frozenset(
    {"postmaster", "root", "abuse", "hostmaster", "webmaster", "noc", "security", "mailer-daemon"}
)

# Replies, each with its RFC 3463 code.
BAD_ADDRESS = Reply(553, "5.1.3", "Bad recipient address syntax")
DOMAIN_DISABLED = Reply(550, "5.1.2", "Mail for this domain is not accepted here")
MAILBOX_DISABLED = Reply(550, "5.2.1", "Mailbox disabled, not accepting messages")
RELAY_UNKNOWN = Reply(550, "5.1.1", "User unknown in relay recipient table")
VIRTUAL_ALIAS_UNKNOWN = Reply(550, "5.1.1", "User unknown in virtual alias table")
ALIAS_LOOP = Reply(554, "5.4.6", "Alias expansion loop")  # RFC 3463 X.4.6 routing loop
ALIAS_TOO_MANY = Reply(554, "5.4.6", "Alias expansion has too many recipients")
ALIAS_TEMPFAIL = Reply(451, "4.3.0", "Alias expansion error; try again later")
CONFIG_ERROR = Reply(451, "4.3.5", "Server configuration error; try again later")
NO_POSTMASTER_YET = Reply(451, "4.3.5", "No postmaster mailbox is set up yet; try again later")
ADMIN_CACHE_SECONDS = 60.0  # how long the derived postmaster admin (first account) is kept

QuotaCheck = Callable[[str], Reply | None]
"""Given a MailboxDest account, a refusal (452 4.2.2, 552 5.2.2) or None when it fits."""

_DSN_CODE = re.compile(r"([245])\.\d{1,3}\.\d{1,3}(?:\s+|$)")


class AddressError(ValueError):
    """An address the resolver cannot read; the message says what is wrong."""


class DomainClass(enum.Enum):
    """Postfix ADDRESS_CLASS_README, in the order the resolver tries them."""

    VIRTUAL_MAILBOX = "virtual mailbox"
    LOCAL = "local"
    VIRTUAL_ALIAS = "virtual alias"
    RELAY = "relay"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    local: str  # lower-cased unless quoted
    domain: str  # lower-case A-label, or an address literal "[...]"

    @property
    def text(self) -> str:
        return f"{self.local}@{self.domain}"


def normalize_domain(domain: str) -> str:
    """Lower-case, no trailing dot, A-label form when it is a valid IDN (else as given)."""
    d = domain.strip().rstrip(".").lower()
    if d.startswith("[") and d.endswith("]"):
        return d  # RFC 5321 §4.1.3 address literal
    if not d.isascii():
        # RFC 5890 A-label, like the directory keys. SMTPUTF8: a name the codec refuses
        # still passes through as given; no lookup will match it.
        with contextlib.suppress(UnicodeError):
            d = d.encode("idna").decode("ascii")
    return d


def parse_address(address: str, default_domain: str) -> ParsedAddress:
    """Split and normalise a recipient (see the module docstring); AddressError if unusable."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if text.startswith("@") and ":" in text:
        # RFC 5321 §4.1.1.3 / Appendix C: a source route is accepted and ignored.
        text = text.split(":", 1)[1]
    if not text or len(text) > _MAX_ADDRESS_CHARS:
        raise AddressError("empty or overlong address")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise AddressError("control characters in the address")
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, default_domain  # Postfix append_at_myorigin
    if not local:
        raise AddressError("empty local part")
    quoted = len(local) >= 2 and local[0] == '"' and local[-1] == '"'
    domain = normalize_domain(domain)
    if not domain or any(c.isspace() for c in domain):
        raise AddressError("bad domain")
    return ParsedAddress(local if quoted else local.lower(), domain)


def _add_extension(address: str, extension: str) -> str:
    """Insert ``+ext`` before the last ``@`` (mail_addr_crunch(3) extension propagation)."""
    at = address.rfind("@")
    return address + extension if at < 0 else address[:at] + extension + address[at:]


class _Abort(Exception):
    """Stops a whole resolution (loop, limits, unreadable include)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(slots=True)
class _State:
    """One resolution's bookkeeping."""

    steps: int = 0
    leaves: int = 0
    virtual_self: set[str] = field(default_factory=set)  # expanded to themselves: no more
    local_self: set[str] = field(default_factory=set)  # the same, for alias_maps


# An expansion item: an address still to resolve, or a final destination (pipe, file).
_Item = str | Destination


class Resolver:
    """Address classes over the directory and the [tables] maps (see the module docstring).

    Lookups are synchronous and fast (indexed SQLite reads, in-memory tables), like the
    Directory's; the asyncio servers call them directly.
    """

    def __init__(
        self,
        directory: Directory,
        tables: ConfiguredTables,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        srs: SrsCodec | None = None,
    ) -> None:
        self._directory = directory
        self._srs = srs
        self._tables = tables
        self._settings = settings
        self._hostname = normalize_domain(settings.server.hostname)
        # The SRS domain is a name this host receives mail for (its bounces come here).
        srs_domain = (normalize_domain(srs.domain),) if srs is not None else ()
        self._local_names = frozenset({self._hostname, *srs_domain})
        # [local] domains is Postfix's mydestination: a domain list (tables/domain_list.py).
        self._local_domains = tables.local_domains
        if self._local_domains.specs != tuple(settings.local.domains):
            self._local_domains = DomainList(
                settings.local.domains, parent_style=False, setting="local.domains"
            )
        self._delimiter = settings.directory.recipient_delimiter
        self._warned_postmaster: set[str] = set()
        self._clock = clock
        # The derived admin (first account): (when found, result); see postmaster_admin.
        self._admin_found: tuple[float, tuple[str, str]] | None = None

    # -- public API ------------------------------------------------------------------------

    def resolve(self, address: str) -> Resolution:
        """Expand ``address`` to its final destinations, duplicates removed."""
        try:
            text = parse_address(address, self._hostname).text
        except AddressError:
            return Resolution(address, (Rejection(BAD_ADDRESS, address),))
        state = _State()
        try:
            if self._srs is not None and self._is_srs(text):
                found = self._srs_reverse(address, text, state)
            else:
                found = self._resolve(text, (), state)
        except _Abort as abort:
            return Resolution(text, (Rejection(abort.reply, text),))
        return Resolution(text, _dedupe(found))

    def _is_srs(self, text: str) -> bool:
        local, _, domain = text.rpartition("@")
        return self._srs is not None and domain == self._srs.domain and is_srs(local)

    def _srs_reverse(self, address: str, text: str, state: _State) -> list[Destination]:
        """A bounce to an SRS address of ours (mailauth/srs.py): to the original sender
        (SRS0) or to the first forwarder's SRS0 address (SRS1), resolved like any address;
        a hash that does not verify or an expired stamp is 550 5.1.1 saying which."""
        assert self._srs is not None
        raw = address.strip().removeprefix("<").removesuffix(">")
        local = raw.rpartition("@")[0] or text.rpartition("@")[0]  # as sent: case kept
        try:
            original = self._srs.reverse(local)
        except SrsError as exc:
            log.info("srs_refused", recipient=text, reason=exc.reason)
            return self._leaves(state, Rejection(Reply(550, "5.1.1", exc.reason), text))
        return self._resolve(original, (text,), state)

    def domain_class(self, domain: str) -> DomainClass:
        """The address class of ``domain`` (a disabled directory domain is still ours)."""
        d = normalize_domain(domain)
        return self._class(d, self._directory.get_domain(d))

    def is_ours(self, domain: str) -> bool:
        """True when mail for ``domain`` is accepted from anyone (not the default class)."""
        return self.domain_class(domain) is not DomainClass.DEFAULT

    def check_recipient(
        self,
        address: str,
        *,
        authenticated: bool,
        client_is_local: bool = False,
        quota_check: QuotaCheck | None = None,
    ) -> Reply | None:
        """The RCPT TO verdict: None to accept, else the reply to send.

        - A foreign domain is refused (554 5.7.1) unless the client authenticated or is
          local: Postfix reject_unauth_destination, always on (no open relay). It is judged
          on the address as given, before aliases, as Postfix does.
        - Addresses in our domains are resolved now, so unknown users get 550 5.1.1 at RCPT
          time and no bounce is sent later (no backscatter).
        - An alias whose expansion is partly undeliverable is accepted while at least one
          branch is deliverable; the failing branches bounce later (Postfix behaves so too).
        - ``quota_check`` is asked for each MailboxDest; its refusal counts as that
          branch's.
        """
        try:
            parsed = parse_address(address, self._hostname)
        except AddressError:
            return BAD_ADDRESS
        # Postfix reject_unauth_destination (smtpd(8)), RFC 5321 §3.6.2 / RFC 5068 §3.
        if self.domain_class(parsed.domain) is DomainClass.DEFAULT and not (
            authenticated or client_is_local
        ):
            return RELAY_DENIED
        resolution = self.resolve(address)
        refused = list(resolution.rejections)
        accepted = 0
        for dest in resolution.deliverable:
            # A virtual_mailbox_maps mailbox has no account and no quota (deliver/mailbox.py).
            if isinstance(dest, MailboxDest) and not dest.mailbox_path and quota_check is not None:
                over = quota_check(dest.account)
                if over is not None:
                    refused.append(Rejection(over, dest.account))
                    continue
            accepted += 1
        if accepted:
            if refused:
                log.info(
                    "alias_partly_undeliverable",
                    recipient=resolution.address,
                    refused=[f"{r.address}: {r.reply}" for r in refused],
                )
            return None
        if refused:
            return refused[0].reply
        return CONFIG_ERROR  # unreachable: every resolution names at least one destination

    def owned_addresses(self, account: str) -> set[str]:
        """The sender addresses ``account`` may use (reject_sender_login_mismatch): itself
        and every alias source that names it directly, from the directory and from
        virtual_alias_maps (a scan of the in-memory tables; ``@domain`` catch-alls and the
        directory catch-all grant nothing). ``+ext`` forms of each are also allowed, see
        :meth:`sender_allowed`, which is the cheap per-message check."""
        me = account.strip().lower()
        owned = {me}
        owned.update(a.source for a in self._directory.aliases_targeting(me))
        aliases = self._tables.virtual_alias_maps
        for table in aliases.tables:
            if not isinstance(table, PostfixTable):
                continue
            for key, value in table.entries.items():
                if "@" not in key or key.startswith("@") or key in owned:
                    continue
                if aliases.get(key) != value or self._directory.get_alias(key) is not None:
                    continue  # shadowed by an earlier table or by the directory
                if me in self._normalised_targets(split_addresses(value)):
                    owned.add(key)
        return owned

    def sender_allowed(self, account: str, sender: str) -> bool:
        """May ``account`` use ``sender`` as MAIL FROM / From? (submission, RFC 6409 §6.1)

        Yes for the null sender (RFC 5321 §4.5.5: bounces, MDNs), the account itself, any
        ``+ext`` form of an owned address, and an alias source (directory alias or
        virtual_alias_maps entry, not a catch-all) that lists the account directly.
        """
        if not sender.strip() or sender.strip() == "<>":
            return True
        me = account.strip().lower()
        try:
            parsed = parse_address(sender, self._hostname)
        except AddressError:
            return False
        candidates = [parsed.text]
        user, extension = split_extension(parsed.local, self._delimiter)
        if extension is not None:
            candidates.append(f"{user}@{parsed.domain}")
        for candidate in candidates:
            if candidate == me:
                return True
            alias = self._directory.get_alias(candidate)
            if alias is not None:
                if me in self._normalised_targets(alias.targets):
                    return True
                continue  # the directory alias shadows the tables for this key
            value = self._tables.virtual_alias_maps.get(candidate)
            if value is not None and me in self._normalised_targets(split_addresses(value)):
                return True
        return False

    def postmaster_admin(self) -> tuple[str, str] | None:
        """Where postmaster mail goes when no alias names it: (address, why), or None when
        there is nowhere yet (see the module docstring)."""
        configured = self._settings.server.postmaster.strip()
        if configured:
            return configured, "server.postmaster"
        # Finding the first account lists a domain's accounts: kept a while, so that mail
        # for postmaster (a favourite of spammers) does not list them per RCPT.
        now = self._clock()
        if self._admin_found is not None and now - self._admin_found[0] < ADMIN_CACHE_SECONDS:
            return self._admin_found[1]
        found = self._first_account()
        self._admin_found = (now, found) if found is not None else None
        return found

    def _first_account(self) -> tuple[str, str] | None:
        domains = sorted(
            (d for d in self._directory.list_domains() if d.enabled),
            key=lambda d: (d.created, d.name),
        )
        for domain in domains:
            accounts = sorted(
                (a for a in self._directory.list_accounts(domain.name) if a.enabled),
                key=lambda a: (a.created, a.address),
            )
            if accounts:
                return accounts[0].address, f"the first account of {domain.name}"
        return None

    # -- the walk ----------------------------------------------------------------------------

    def _resolve(self, address: str, chain: tuple[str, ...], state: _State) -> list[Destination]:
        state.steps += 1
        if state.steps > _MAX_STEPS:
            raise _Abort(ALIAS_TOO_MANY)
        if len(chain) > MAX_ALIAS_DEPTH:
            log.warning("alias_too_deep", chain=" -> ".join((*chain, address)))
            raise _Abort(ALIAS_LOOP)
        try:
            parsed = parse_address(address, self._hostname)
        except AddressError:
            return self._leaves(state, Rejection(BAD_ADDRESS, address))
        text = parsed.text
        record = self._directory.get_domain(parsed.domain)
        if record is not None and not record.enabled:
            return self._leaves(state, Rejection(DOMAIN_DISABLED, text))
        cls = self._class(parsed.domain, record)
        if text not in state.virtual_self:
            targets = self._virtual_alias(parsed, cls, wildcard=False)
            if targets is not None:
                return self._expand(text, targets, chain, state, state.virtual_self)
        if cls is DomainClass.LOCAL:
            return self._local(parsed, chain, state)
        if cls is DomainClass.VIRTUAL_MAILBOX:
            return self._virtual_mailbox(parsed, record, chain, state)
        if cls is DomainClass.VIRTUAL_ALIAS:
            return self._unknown(parsed, record, chain, state, VIRTUAL_ALIAS_UNKNOWN)
        if cls is DomainClass.RELAY:
            return self._relay(parsed, state)
        return self._route(parsed, state, "smtp", RemoteDest)

    def _class(self, domain: str, record: Domain | None) -> DomainClass:
        if record is not None and not record.signing_only:
            return DomainClass.VIRTUAL_MAILBOX
        if domain in self._local_names or self._local_domains.contains(domain):
            return DomainClass.LOCAL
        if self._tables.virtual_mailbox_domains.contains(domain):
            return DomainClass.VIRTUAL_MAILBOX
        if self._tables.virtual_alias_maps.get(domain) is not None:
            return DomainClass.VIRTUAL_ALIAS
        if self._tables.relay_domains.contains(domain):
            return DomainClass.RELAY
        return DomainClass.DEFAULT

    def _expand(
        self,
        address: str,
        items: Sequence[_Item],
        chain: tuple[str, ...],
        state: _State,
        self_set: set[str],
    ) -> list[Destination]:
        """Resolve each target of ``address``; see the module docstring, step 3."""
        if not items:
            log.warning("alias_without_targets", recipient=address)
            raise _Abort(CONFIG_ERROR)
        normalised: list[_Item] = []
        for i in items:
            report = report_target(i) if isinstance(i, str) else None
            # A "report:KIND" target (like |command and /file) is a final destination.
            normalised.append(report or (self._normalise(i) if isinstance(i, str) else i))
        if address in normalised:
            self_set.add(address)  # Postfix cleanup_map1n: expand into itself once
        ancestors = (*chain, address)
        out: list[Destination] = []
        for item in normalised:
            if not isinstance(item, str):
                out.extend(self._leaves(state, item))
            elif item == address:
                out.extend(self._resolve(address, chain, state))
            elif item in ancestors and item not in state.virtual_self | state.local_self:
                log.warning("alias_loop", chain=" -> ".join((*ancestors, item)))
                raise _Abort(ALIAS_LOOP)
            else:
                out.extend(self._resolve(item, ancestors, state))
        return out

    def _leaves(self, state: _State, *dests: Destination) -> list[Destination]:
        state.leaves += len(dests)
        if state.leaves > MAX_DESTINATIONS:
            raise _Abort(ALIAS_TOO_MANY)
        return list(dests)

    def _normalise(self, address: str) -> str:
        try:
            return parse_address(address, self._hostname).text
        except AddressError:
            return address  # _resolve turns it into a Rejection with the address as written

    def _normalised_targets(self, targets: Iterable[str]) -> set[str]:
        return {self._normalise(t) for t in targets}

    # -- virtual aliases -------------------------------------------------------------------

    def _virtual_alias(
        self, parsed: ParsedAddress, cls: DomainClass, *, wildcard: bool
    ) -> list[str] | None:
        """Targets of the first matching key (virtual(5) order), or None.

        ``wildcard=False`` tries every key but ``@domain``; ``wildcard=True`` only that one.
        """
        if wildcard:
            # maps_find(3) DICT_FLAG_FIXED: a partial key is not asked of regexp:/pcre:.
            value = self._tables.virtual_alias_maps.get_fixed("@" + parsed.domain)
            return None if value is None else self._alias_targets(parsed, value, None)
        keys = address_lookup_keys(
            parsed.text, self._delimiter, local_part_lookup=cls is DomainClass.LOCAL
        )
        for key, extension in keys:
            if key.startswith("@"):
                continue
            if "@" in key:
                alias = self._directory.get_alias(key)
                if alias is not None:
                    return self._alias_targets(parsed, alias.targets, extension)
            # virtual(5): a pattern table sees the whole address only (TableSet.get_fixed).
            maps = self._tables.virtual_alias_maps
            value = maps.get(key) if key == parsed.text else maps.get_fixed(key)
            if value is not None:
                return self._alias_targets(parsed, value, extension)
        return None

    def _alias_targets(
        self, parsed: ParsedAddress, value: str | Sequence[str], extension: str | None
    ) -> list[str]:
        """mail_addr_map(3): ``@other`` is the same user in ``other``; an extension cut off
        to find the key is added to every target (propagate_unmatched_extensions)."""
        targets = split_addresses(value) if isinstance(value, str) else list(value)
        out: list[str] = []
        for target in targets:
            if report_target(target) is not None:
                out.append(target)  # report:KIND is no address: no extension, no @domain
                continue
            if target.startswith("@"):
                user = parsed.local
                if extension:
                    user = user[: len(user) - len(extension)]
                target = user + target
            out.append(_add_extension(target, extension) if extension else target)
        return out

    # -- local class -----------------------------------------------------------------------

    def _local(
        self, parsed: ParsedAddress, chain: tuple[str, ...], state: _State
    ) -> list[Destination]:
        text = parsed.text
        if text not in state.local_self:
            items = self._local_alias(parsed.local)
            if items is not None:
                return self._expand(text, items, chain, state, state.local_self)
        user, extension = split_extension(parsed.local, self._delimiter)
        if self._settings.local.deliver_to_unix_accounts and _unix_account_exists(user):
            return self._leaves(state, UnixDest(user, (extension or "")[1:]))
        if _is_postmaster(parsed):
            return self._postmaster(parsed, chain, state)
        return self._leaves(state, Rejection(UNKNOWN_USER, text))

    def _local_alias(self, local_part: str) -> list[_Item] | None:
        """alias_maps targets of ``local_part`` (tried with, then without its extension:
        local(8) "ALIAS EXPANSION"), with ``:include:`` files read, or None.

        local(8) "DELIVERY RIGHTS": a ``|command`` or ``/file`` target is kept only when
        where it was written (the aliases file: "alias", an include file: "include") is in
        ``[local] allow_mail_to_commands`` / ``allow_mail_to_files``; else that target is a
        5.7.1 refusal (the alias is refused at RCPT when nothing else is left)."""
        found = match_address(self._tables.alias_maps, local_part, self._delimiter)
        if found is None:
            return None
        sourced: Sequence[tuple[Target, str]] = [(t, "alias") for t in found.value]
        table = self._alias_table(found.key)
        if any(isinstance(t, IncludeTarget) for t in found.value) and table is not None:
            try:
                sourced = expand_alias_sources(table, found.key) or ()
            except TableError as exc:
                log.warning("alias_include_failed", alias=found.key, error=str(exc))
                raise _Abort(ALIAS_TEMPFAIL) from None
        user = _file_owner(table.path) if table is not None else "nobody"
        local = self._settings.local
        items: list[_Item] = []
        for target, source in sourced:
            if isinstance(target, AddressTarget):
                items.append(target.address)
            elif isinstance(target, CommandTarget):
                if source in local.allow_mail_to_commands:
                    items.append(PipeDest(target.command, user))
                else:
                    items.append(self._not_allowed("command", found.key, source, target.command))
            elif isinstance(target, FileTarget):
                if source in local.allow_mail_to_files:
                    items.append(FileDest(target.path, user))
                else:
                    items.append(self._not_allowed("file", found.key, source, target.path))
        return items

    def _not_allowed(self, what: str, alias: str, source: str, target: str) -> Rejection:
        """local(8) DELIVERY RIGHTS: mail to a command or file from ``source`` is refused."""
        setting = "allow_mail_to_commands" if what == "command" else "allow_mail_to_files"
        log.warning(
            "alias_target_not_allowed",
            alias=alias,
            target=target,
            source=source,
            hint=f'add "{source}" to [local] {setting} to allow it, or remove the target',
        )
        address = f"{alias}@{self._hostname}"
        return Rejection(Reply(550, "5.7.1", f"mail to {what} is not allowed"), address)

    def _alias_table(self, key: str) -> AliasTable | None:
        """The first alias_maps table that has ``key`` (where its targets came from)."""
        for table in self._tables.alias_maps.tables:
            if isinstance(table, AliasTable) and table.get(key) is not None:
                return table
        return None

    def _postmaster(
        self, parsed: ParsedAddress, chain: tuple[str, ...], state: _State
    ) -> list[Destination]:
        """RFC 5321 §4.5.1: postmaster with no alias of its own goes to the admin; with no
        admin yet, 451 (retried, never refused for good)."""
        text = parsed.text
        admin = self.postmaster_admin()
        if admin is not None and self._normalise(admin[0]) != text:
            return self._expand(text, [admin[0]], chain, state, state.virtual_self)
        self._warn_no_postmaster(parsed.domain)
        return self._leaves(state, Rejection(NO_POSTMASTER_YET, text))

    def _warn_no_postmaster(self, domain: str) -> None:
        if domain in self._warned_postmaster:
            return
        self._warned_postmaster.add(domain)
        # Every hint is a command that works as written: the host name and [local] domains
        # are the local class, where `pochta alias add` is refused (its aliases are
        # alias_maps lines); only a hosted domain takes a directory alias.
        record = self._directory.get_domain(domain)
        hosted = record is not None and not record.signing_only
        alias = f"; or pochta alias add postmaster@{domain} you@example.org" if hosted else ""
        log.warning(
            "no_postmaster",
            domain=domain,
            hint=(
                f"RFC 5321 §4.5.1 requires postmaster@{domain}; mail to it waits (451) until "
                "it has a mailbox: pochta config set server.postmaster you@example.org "
                f"(then reload){alias}"
            ),
        )

    # -- virtual mailbox and virtual alias classes -------------------------------------------

    def _virtual_mailbox(
        self, parsed: ParsedAddress, record: Domain | None, chain: tuple[str, ...], state: _State
    ) -> list[Destination]:
        text = parsed.text
        user, extension = split_extension(parsed.local, self._delimiter)
        account = self._directory.get_account(text)
        detail = ""
        if account is None and extension is not None:
            # RFC 5233 subaddress: user+detail@domain reaches user@domain.
            account = self._directory.get_account(f"{user}@{parsed.domain}")
            detail = extension[1:]
        if account is not None:
            if not account.enabled:
                return self._leaves(state, Rejection(MAILBOX_DISABLED, text))
            return self._leaves(state, MailboxDest(account.address, detail))
        maps = self._tables.virtual_mailbox_maps
        found = match_address(maps, text, self._delimiter)
        if found is not None and not found.key.startswith("@"):
            return self._table_mailbox(parsed, found.key, found.value, found.extension, state)
        return self._unknown(parsed, record, chain, state, UNKNOWN_USER)

    def _table_mailbox(
        self,
        parsed: ParsedAddress,
        key: str,
        path: str,
        extension: str | None,
        state: _State,
    ) -> list[Destination]:
        """A virtual_mailbox_maps mailbox, unless transport_maps send it elsewhere; a value
        that would leave [store] mail_dir is refused (451 and a warning: the admin's table)."""
        problem = table_mailbox_problem(path)
        if problem is not None:
            log.warning(
                "bad_mailbox_path",
                recipient=parsed.text,
                key=key,
                error=problem,
                hint="fix the value in [tables] virtual_mailbox_maps; `pochta check` lists them",
            )
            return self._leaves(state, Rejection(CONFIG_ERROR, parsed.text))
        value = self._transport_value(parsed)
        if value is not None:
            try:
                transport = parse_transport(value, default_kind="virtual")
            except TransportError as exc:
                return self._bad_transport(parsed, exc, state)
            if transport.kind not in ("virtual", "local"):
                return self._apply_transport(parsed, transport, state, RemoteDest)
        return self._leaves(state, MailboxDest(key, (extension or "")[1:], path))

    def _unknown(
        self,
        parsed: ParsedAddress,
        record: Domain | None,
        chain: tuple[str, ...],
        state: _State,
        reply: Reply,
    ) -> list[Destination]:
        """No account and no alias: postmaster, then the catch-alls, else ``reply``."""
        text = parsed.text
        if _is_postmaster(parsed) and text not in state.virtual_self:
            # RFC 5321 §4.5.1: postmaster@every domain we accept mail for.
            items = self._local_alias("postmaster")
            if items is not None:
                return self._expand(text, items, chain, state, state.local_self)
            return self._postmaster(parsed, chain, state)
        if text not in state.virtual_self:
            targets = self._virtual_alias(parsed, DomainClass.VIRTUAL_MAILBOX, wildcard=True)
            if targets is not None:
                return self._expand(text, targets, chain, state, state.virtual_self)
            found = self._tables.virtual_mailbox_maps.get_fixed("@" + parsed.domain)
            if found is not None:
                return self._table_mailbox(parsed, "@" + parsed.domain, found, None, state)
            if record is not None and record.catchall:
                # The domain's catch-all: only for local parts that are no account or alias.
                return self._expand(text, [record.catchall], chain, state, state.virtual_self)
        return self._leaves(state, Rejection(reply, text))

    # -- relay and default classes -----------------------------------------------------------

    def _relay(self, parsed: ParsedAddress, state: _State) -> list[Destination]:
        recipients = self._tables.relay_recipient_maps
        # Postfix relay_recipient_maps: when set, only listed recipients are accepted.
        if recipients.tables and match_address(recipients, parsed.text, self._delimiter) is None:
            return self._leaves(state, Rejection(RELAY_UNKNOWN, parsed.text))
        return self._route(parsed, state, "relay", RelayDest)

    def _route(
        self,
        parsed: ParsedAddress,
        state: _State,
        kind: str,
        make: Callable[[str, str], RemoteDest | RelayDest],
    ) -> list[Destination]:
        """Deliver via transport_maps, else via ``kind:DOMAIN`` (default/relay_transport)."""
        value = self._transport_value(parsed)
        transport = Transport(kind)
        if value is not None:
            try:
                transport = parse_transport(value, default_kind=kind)
            except TransportError as exc:
                return self._bad_transport(parsed, exc, state)
            if transport.kind in ("local", "virtual"):
                transport = Transport(kind, transport.nexthop, transport.port, transport.mx_lookup)
        return self._apply_transport(parsed, transport, state, make)

    def _transport_value(self, parsed: ParsedAddress) -> str | None:
        """transport(5) "TABLE SEARCH ORDER": user+ext@domain, user@domain, domain,
        .parent domains, then ``*``."""
        maps = self._tables.transport_maps
        if not maps.tables:
            return None
        value = maps.get(parsed.text)
        if value is None:
            user, extension = split_extension(parsed.local, self._delimiter)
            if extension is not None:
                value = maps.get_fixed(f"{user}@{parsed.domain}")
        if value is None:
            # transport(5) REGULAR EXPRESSION TABLES: a pattern sees the whole address only.
            value = lookup_domain(maps.fixed, parsed.domain, wildcard=True)
        return value

    def _apply_transport(
        self,
        parsed: ParsedAddress,
        transport: Transport,
        state: _State,
        make: Callable[[str, str], RemoteDest | RelayDest],
    ) -> list[Destination]:
        text = parsed.text
        if transport.kind == "error":
            return self._leaves(state, Rejection(_error_reply(transport.nexthop, "5"), text))
        if transport.kind == "retry":
            return self._leaves(state, Rejection(_error_reply(transport.nexthop, "4"), text))
        if transport.kind == "discard":
            return self._leaves(state, DiscardDest(transport.nexthop))
        if transport.kind not in NETWORK_KINDS:
            log.warning(
                "unknown_transport",
                recipient=text,
                transport=str(transport),
                hint="transport_maps may name smtp, relay, lmtp, error, retry or discard",
            )
            return self._leaves(state, Rejection(CONFIG_ERROR, text))
        return self._leaves(state, make(text, str(transport.with_nexthop(parsed.domain))))

    def _bad_transport(
        self, parsed: ParsedAddress, exc: TransportError, state: _State
    ) -> list[Destination]:
        log.warning("bad_transport", recipient=parsed.text, error=str(exc))
        return self._leaves(state, Rejection(CONFIG_ERROR, parsed.text))


def _is_postmaster(parsed: ParsedAddress) -> bool:
    """RFC 5321 §4.5.1, §2.4: "postmaster" in any case, quoted or not."""
    local = parsed.local
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        local = local[1:-1]
    return local.lower() == "postmaster"


def _error_reply(text: str, default_class: str) -> Reply:
    """error(8): the text may start with a DSN code (``5.1.1 text``); 4.x.x defers."""
    code = f"{default_class}.0.0"
    match = _DSN_CODE.match(text)
    if match:
        code, text = match.group(0).strip(), text[match.end() :]
    text = text.strip() or "Recipient address rejected"
    return Reply(450 if code.startswith("4") else 550, code, text)


def _dedupe(found: Iterable[Destination]) -> tuple[Destination, ...]:
    """Keep the first of equal destinations; one MailboxDest per account."""
    seen: set[object] = set()
    out: list[Destination] = []
    for dest in found:
        key: object = ("mailbox", dest.account) if isinstance(dest, MailboxDest) else dest
        if key not in seen:
            seen.add(key)
            out.append(dest)
    return tuple(out)


def _unix_account_exists(user: str) -> bool:
    """A Unix account mail can be written for: not root, whose mail nobody may write as it
    (local(8) SECURITY: no delivery as root); alias root to a person, as aliases(5) does."""
    try:
        return pwd.getpwnam(user).pw_uid != 0
    except (KeyError, UnicodeEncodeError, ValueError):
        return False


def _file_owner(path: str) -> str:
    """local(8): alias commands and files run as the alias file's owner, or as
    default_privs (``nobody``) when root owns it."""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return "nobody"
    if uid == 0:
        return "nobody"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
