"""What an address resolves to: final destinations, one record type per way of delivering.

Postfix ADDRESS_CLASS_README sorts every recipient domain into a class (local, virtual
alias, virtual mailbox, relay, default) and each class has its delivery agent. The resolver
expands an address (aliases, catch-alls) into a list of these destinations; the queue hands
each one to the agent of its type in ``deliver/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pochta.protocols.smtp.replies import Reply
from pochta.resolve.transport import Transport, parse_transport

__all__ = [
    "Destination",
    "DiscardDest",
    "FileDest",
    "MailboxDest",
    "PipeDest",
    "Rejection",
    "RelayDest",
    "RemoteDest",
    "ReportDest",
    "Resolution",
    "UnixDest",
    "report_target",
    "table_mailbox_problem",
]


@dataclass(frozen=True, slots=True)
class MailboxDest:
    """A virtual mailbox (Postfix virtual(8)): a directory account, or a virtual_mailbox_maps
    key in a virtual_mailbox_domains domain.

    ``account`` is the account address, or for virtual_mailbox_maps the key that matched
    (``user@domain``, or ``@domain`` for a table catch-all) with ``mailbox_path`` the map's
    value. ``extension`` is the recipient_delimiter extension without its delimiter
    (``user+news@d`` -> ``"news"``), kept for Sieve ``:detail`` (RFC 5233) and folders.
    """

    account: str
    extension: str = ""
    mailbox_path: str = ""
    # mailbox_path, when set, is under [store] mail_dir (virtual(8)): ending in "/" a
    # Maildir, else an mbox file; deliver/mailbox.py writes it (no directory account, no
    # quota, not readable over IMAP: there is no password for it).


def table_mailbox_problem(path: str) -> str | None:
    """What makes a virtual_mailbox_maps value unusable, or None.

    Postfix virtual(8) reads the value as a path under virtual_mailbox_base (ours:
    ``[store] mail_dir``): ending in ``/`` a Maildir, else an mbox file. It must stay under
    that root: no absolute path, no ``..`` part, no NUL.
    """
    if not path.strip():
        return "the value is empty; write the mailbox path under [store] mail_dir"
    if "\x00" in path:
        return "the value holds a NUL character"
    if path.startswith("/"):
        return (
            f"{path!r} is absolute; write it relative to [store] mail_dir (virtual(8) "
            "virtual_mailbox_base), e.g. example.org/bob/"
        )
    if ".." in path.split("/"):
        return f"{path!r} has a '..' part, which would leave [store] mail_dir; remove it"
    return None


@dataclass(frozen=True, slots=True)
class RemoteDest:
    """The default class: send to another server. ``transport`` is ``kind:nexthop``
    (``smtp:example.org`` or a transport_maps value such as ``lmtp:[127.0.0.1]:24``)."""

    address: str
    transport: str

    @property
    def route(self) -> Transport:
        return parse_transport(self.transport)


@dataclass(frozen=True, slots=True)
class RelayDest:
    """The relay class (relay_domains): accepted from anyone, delivered onward;
    ``transport`` defaults to ``relay:DOMAIN`` (Postfix relay_transport)."""

    address: str
    transport: str

    @property
    def route(self) -> Transport:
        return parse_transport(self.transport)


@dataclass(frozen=True, slots=True)
class PipeDest:
    """Pipe the message to ``command`` (an alias_maps ``|command`` target), run as ``user``:
    the owner of the alias file, or ``nobody`` when root owns it (local(8) "SECURITY",
    default_privs)."""

    command: str
    user: str


@dataclass(frozen=True, slots=True)
class FileDest:
    """Append the message to ``path`` (an alias_maps ``/file`` target) in mbox format, or
    deliver into the Maildir ``path`` when it ends in ``/`` (local(8)), as ``user`` (same
    rule as PipeDest); ``deliver/file.py``."""

    path: str
    user: str = "nobody"


@dataclass(frozen=True, slots=True)
class UnixDest:
    """A Unix account of this host (local class, ``[local] deliver_to_unix_accounts``):
    its ``~/Maildir/``, written as the account (``deliver/file.py``); never root."""

    user: str
    extension: str = ""


@dataclass(frozen=True, slots=True)
class DiscardDest:
    """Accept and throw away (``discard:`` in transport_maps, discard(8))."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReportDest:
    """Read the message as a report of ``kind`` and store it (an alias target
    ``report:KIND``: ``report:dmarc`` for RFC 7489 aggregate reports, ``report:tls`` for
    RFC 8460 TLS-RPT); ``deliver/report.py`` hands it to ``reports/inbox.ingest``."""

    kind: str


_REPORT_TARGET = re.compile(r"report:([a-z][a-z0-9-]{0,31})", re.IGNORECASE)


def report_target(text: str) -> ReportDest | None:
    """The ReportDest an alias target ``report:KIND`` names, or None for anything else."""
    match = _REPORT_TARGET.fullmatch(text.strip())
    return ReportDest(match.group(1).lower()) if match else None


@dataclass(frozen=True, slots=True)
class Rejection:
    """The address (or one branch of its expansion, ``address``) cannot be delivered."""

    reply: Reply
    address: str = ""


Destination = (
    MailboxDest
    | RemoteDest
    | RelayDest
    | PipeDest
    | FileDest
    | UnixDest
    | DiscardDest
    | ReportDest
    | Rejection
)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where mail for ``address`` goes: duplicates removed, in the order found."""

    address: str
    destinations: tuple[Destination, ...]

    @property
    def deliverable(self) -> tuple[Destination, ...]:
        return tuple(d for d in self.destinations if not isinstance(d, Rejection))

    @property
    def rejections(self) -> tuple[Rejection, ...]:
        return tuple(d for d in self.destinations if isinstance(d, Rejection))

    @property
    def rejected(self) -> Reply | None:
        """The reply when nothing at all is deliverable (the first rejection), else None."""
        if self.deliverable or not self.destinations:
            return None
        return self.rejections[0].reply
