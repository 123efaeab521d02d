"""The NOTIFY command's arguments (RFC 5465 §3.1, grammar in §8), from the parser's tokens.

    notify          = "NOTIFY" SP (notify-set / notify-none)
    notify-set      = "SET" [status-indicator] SP event-groups
    status-indicator = SP "(" "STATUS" ")"
    event-group     = "(" filter-mailboxes SP events ")"
    filter-mailboxes = "selected" / "selected-delayed" / "inboxes" / "personal" /
                       "subscribed" / ("subtree" SP one-or-more-mailbox) /
                       ("mailboxes" SP one-or-more-mailbox)
    events          = ("(" event *(SP event) ")") / "NONE"
    event           = ("MessageNew" [SP "(" fetch-att *(SP fetch-att) ")"]) /
                      "MessageExpunge" / "FlagChange" / "AnnotationChange" /
                      "MailboxName" / "SubscriptionChange" / "MailboxMetadataChange" /
                      "ServerMetadataChange" / event-ext

A grammar error raises ``BadArgs`` (BAD); an event this server does not offer raises
``UnsupportedEvents``, which the session answers with NO [BADEVENT (...)] (§3.1: NO, not
BAD).
"""

from __future__ import annotations

from dataclasses import dataclass

from pochta.protocols.imap.commands import BadArgs, atom, fetch_item, mailbox, parenthesised
from pochta.protocols.imap.core import Command, Quoted
from pochta.protocols.imap.fetch_items import FetchItem

MESSAGE_NEW = "MessageNew"
MESSAGE_EXPUNGE = "MessageExpunge"
FLAG_CHANGE = "FlagChange"
MAILBOX_NAME = "MailboxName"
SUBSCRIPTION_CHANGE = "SubscriptionChange"

# The events this server notifies of; BADEVENT lists them (RFC 5465 §3.1).
SUPPORTED_EVENTS = (MESSAGE_NEW, MESSAGE_EXPUNGE, FLAG_CHANGE, MAILBOX_NAME, SUBSCRIPTION_CHANGE)
MESSAGE_EVENTS = frozenset({MESSAGE_NEW, MESSAGE_EXPUNGE, FLAG_CHANGE, "AnnotationChange"})
_KNOWN = {e.lower(): e for e in (*SUPPORTED_EVENTS, "AnnotationChange")} | {
    e.lower(): e for e in ("MailboxMetadataChange", "ServerMetadataChange")
}
SELECTED_FILTERS = frozenset({"selected", "selected-delayed"})
FILTERS = frozenset(
    {"selected", "selected-delayed", "inboxes", "personal", "subscribed", "subtree", "mailboxes"}
)


class UnsupportedEvents(ValueError):
    """Events of a kind this server does not notify (RFC 5465 §3.1: tagged NO [BADEVENT])."""


@dataclass(frozen=True, slots=True)
class EventGroup:
    filter: str  # lower case: one of FILTERS
    mailboxes: tuple[str, ...]  # subtree / mailboxes: the names as the client sent them
    events: frozenset[str]  # canonical names; empty for NONE
    fetch: tuple[FetchItem, ...] = ()  # MessageNew's fetch-atts


@dataclass(frozen=True, slots=True)
class NotifySet:
    status: bool  # the STATUS indicator: a STATUS per watched folder before the OK (§3.1)
    groups: tuple[EventGroup, ...]

    @property
    def selected(self) -> EventGroup | None:
        return next((g for g in self.groups if g.filter in SELECTED_FILTERS), None)

    @property
    def others(self) -> tuple[EventGroup, ...]:
        return tuple(g for g in self.groups if g.filter not in SELECTED_FILTERS)


def notify_args(cmd: Command) -> NotifySet | None:
    """NOTIFY's arguments; None for NOTIFY NONE."""
    args = list(cmd.args)
    if not args:
        raise BadArgs("NOTIFY needs SET or NONE")
    word = atom(args[0]).upper()
    if word == "NONE":
        if len(args) != 1:
            raise BadArgs("NOTIFY NONE takes no arguments")
        return None
    if word != "SET":
        raise BadArgs("NOTIFY needs SET or NONE")
    rest = args[1:]
    status = False
    # status-indicator = SP "(" "STATUS" ")"; Dovecot and some clients send a bare STATUS.
    if rest and _is_status(rest[0] if isinstance(rest[0], list) else [rest[0]]):
        status, rest = True, rest[1:]
    if not rest:
        raise BadArgs("NOTIFY SET needs at least one event group")
    groups = tuple(_event_group(token) for token in rest)
    unsupported = sorted(
        {e for g in groups for e in g.events if e not in SUPPORTED_EVENTS}, key=str.lower
    )
    if unsupported:
        raise UnsupportedEvents(" ".join(unsupported))
    # RFC 5465 §6.1: only one of SELECTED and SELECTED-DELAYED in a command.
    if sum(1 for g in groups if g.filter in SELECTED_FILTERS) > 1:
        raise BadArgs("Only one of SELECTED and SELECTED-DELAYED may be given")
    return NotifySet(status=status, groups=groups)


def _is_status(token: list[object]) -> bool:
    return (
        len(token) == 1
        and isinstance(token[0], str)
        and not isinstance(token[0], Quoted)
        and token[0].upper() == "STATUS"
    )


def _event_group(token: object) -> EventGroup:
    parts = parenthesised(token)
    if len(parts) < 2:
        raise BadArgs("An event group is (mailboxes events)")
    kind = atom(parts[0]).lower()
    if kind not in FILTERS:
        raise BadArgs(f"Unknown mailbox specifier {kind[:40]}")
    names: tuple[str, ...] = ()
    rest = parts[1:]
    if kind in ("subtree", "mailboxes"):
        # one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"
        given = rest[0]
        listed = given if isinstance(given, list) else [given]
        if not listed:
            raise BadArgs(f"{kind} needs at least one mailbox")
        names = tuple(mailbox(m) for m in listed)
        rest = rest[1:]
    if len(rest) != 1:
        raise BadArgs("An event group is (mailboxes events)")
    events, fetch = _events(rest[0])
    if kind in SELECTED_FILTERS:
        # RFC 5465 §6.1: only message events for the selected mailbox.
        others = events - MESSAGE_EVENTS
        if others:
            raise BadArgs(f"{sorted(others)[0]} cannot be asked for the selected mailbox")
        # RFC 5465 §5: MessageNew and MessageExpunge together, and both with FlagChange or
        # AnnotationChange; otherwise BAD. Deviation, as Dovecot: checked for the selected
        # mailbox only, whose sequence numbers they keep sound; for another a STATUS of
        # fewer items is harmless (and imaptest's notify test wants (MessageExpunge) OK).
        if (MESSAGE_NEW in events) != (MESSAGE_EXPUNGE in events):
            raise BadArgs("MessageNew and MessageExpunge must be given together")
        if events & {FLAG_CHANGE, "AnnotationChange"} and MESSAGE_NEW not in events:
            raise BadArgs("FlagChange needs MessageNew and MessageExpunge")
    elif fetch:
        raise BadArgs("FETCH attributes are for the selected mailbox only")
    return EventGroup(filter=kind, mailboxes=names, events=events, fetch=fetch)


def _events(token: object) -> tuple[frozenset[str], tuple[FetchItem, ...]]:
    if not isinstance(token, list):
        if atom(token).upper() == "NONE":
            return frozenset(), ()
        raise BadArgs("Events are a parenthesised list or NONE")
    if not token:
        raise BadArgs("An empty event list (use NONE)")
    events: set[str] = set()
    fetch: list[FetchItem] = []
    i = 0
    while i < len(token):
        name = atom(token[i])
        canonical = _KNOWN.get(name.lower(), name)  # event-ext: an atom we do not know
        events.add(canonical)
        if canonical == MESSAGE_NEW and i + 1 < len(token) and isinstance(token[i + 1], list):
            items = token[i + 1]
            if not items:
                raise BadArgs("MessageNew's FETCH attributes may not be empty")
            fetch += [fetch_item(atom(x)) for x in items]
            i += 1
        i += 1
    return frozenset(events), tuple(fetch)
