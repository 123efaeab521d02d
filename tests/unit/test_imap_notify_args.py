"""NOTIFY's arguments (RFC 5465 §3.1, §8 grammar; §5 and §6.1 rules), read from the core's
tokens: the accepted forms, BAD for the grammar and the rules, BADEVENT for unknown events,
and a property: any NOTIFY SET written from the grammar reads back as written."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.protocols.imap import notify as N
from pochta.protocols.imap.commands import BadArgs
from pochta.protocols.imap.core import Command, CommandParser


def parse(line: str) -> Command:
    p = CommandParser()
    p.feed(line.encode() + b"\r\n")
    event = p.next_event()
    assert isinstance(event, Command), event
    return event


def args(line: str) -> N.NotifySet | None:
    return N.notify_args(parse("a " + line))


def test_notify_none_and_the_status_indicator() -> None:
    assert args("NOTIFY NONE") is None
    got = args("NOTIFY SET (STATUS) (personal (MessageNew MessageExpunge))")
    assert got is not None
    assert got.status
    assert got.groups == (
        N.EventGroup("personal", (), frozenset({"MessageNew", "MessageExpunge"})),
    )
    # A bare STATUS too, as Dovecot reads it (imaptest sends it so).
    bare = args("NOTIFY SET status (mailboxes Lists (MessageExpunge))")
    assert bare is not None
    assert bare.status
    assert bare.groups[0].mailboxes == ("Lists",)


def test_every_mailbox_specifier_and_message_new_fetch_attributes() -> None:
    got = args(
        "NOTIFY SET (selected-delayed (MessageNew (UID BODY.PEEK[HEADER.FIELDS (FROM)]) "
        "MessageExpunge FlagChange)) (inboxes NONE) (subscribed (MailboxName)) "
        '(subtree (Lists "Work") (SubscriptionChange)) (mailboxes INBOX (flagchange))'
    )
    assert got is not None
    assert not got.status
    selected = got.selected
    assert selected is not None
    assert selected.filter == "selected-delayed"
    assert [i.name for i in selected.fetch] == ["UID", "BODY[HEADER.FIELDS (FROM)]"]
    assert [g.filter for g in got.others] == ["inboxes", "subscribed", "subtree", "mailboxes"]
    assert got.others[0].events == frozenset()
    assert got.others[2].mailboxes == ("Lists", "Work")
    assert got.others[3].events == {"FlagChange"}  # event names read in any case (§8)


@pytest.mark.parametrize(
    "line",
    [
        "NOTIFY",
        "NOTIFY SET",
        "NOTIFY NONE (personal NONE)",
        "NOTIFY SET (nowhere (MessageNew MessageExpunge))",
        "NOTIFY SET (personal ())",
        "NOTIFY SET (mailboxes (MessageNew MessageExpunge))",
        # §5: MessageNew and MessageExpunge together; FlagChange needs both (selected).
        "NOTIFY SET (selected (MessageNew))",
        "NOTIFY SET (selected (MessageExpunge FlagChange))",
        # §6.1: one selected specifier; only message events for it.
        "NOTIFY SET (selected NONE) (selected-delayed NONE)",
        "NOTIFY SET (selected (MailboxName))",
        "NOTIFY SET (personal (MessageNew (UID) MessageExpunge))",  # fetch-atts: selected only
    ],
)
def test_bad(line: str) -> None:
    with pytest.raises(BadArgs):
        args(line)


def test_unsupported_events_are_badevent_not_bad() -> None:
    # §3.1: NO [BADEVENT], not BAD, for AnnotationChange, the METADATA events, and an
    # event-ext atom we do not know.
    for event in ("AnnotationChange", "MailboxMetadataChange", "XSomethingNew"):
        with pytest.raises(N.UnsupportedEvents):
            args(f"NOTIFY SET (personal ({event}))")


# -- the property: write a NOTIFY SET from the grammar, read it back ---------------------

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGH0123456789-_", min_size=1, max_size=8)
_other_events = st.sets(st.sampled_from(N.SUPPORTED_EVENTS)).map(frozenset)
_selected_events = st.sampled_from(
    [
        frozenset(),
        frozenset({"MessageNew", "MessageExpunge"}),
        frozenset({"MessageNew", "MessageExpunge", "FlagChange"}),
    ]
)


@st.composite
def notify_sets(draw: st.DrawFn) -> N.NotifySet:
    groups = []
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["selected", "selected-delayed"]))
        groups.append(N.EventGroup(kind, (), draw(_selected_events)))
    for _ in range(draw(st.integers(0 if groups else 1, 3))):
        kind = draw(st.sampled_from(["inboxes", "personal", "subscribed", "subtree", "mailboxes"]))
        names = ()
        if kind in ("subtree", "mailboxes"):
            names = tuple(draw(st.lists(_names, min_size=1, max_size=3)))
            names = tuple("INBOX" if n.upper() == "INBOX" else n for n in names)
        groups.append(N.EventGroup(kind, names, draw(_other_events)))
    return N.NotifySet(status=draw(st.booleans()), groups=tuple(groups))


def write(spec: N.NotifySet) -> str:
    out = ["NOTIFY SET"]
    if spec.status:
        out.append("(STATUS)")
    for g in spec.groups:
        parts = [g.filter.upper() if len(g.filter) % 2 else g.filter]
        if g.mailboxes:
            parts.append("(" + " ".join(f'"{m}"' for m in g.mailboxes) + ")")
        parts.append("(" + " ".join(sorted(g.events)) + ")" if g.events else "NONE")
        out.append("(" + " ".join(parts) + ")")
    return " ".join(out)


@given(notify_sets())
@settings(max_examples=300, deadline=None)
@example(N.NotifySet(status=True, groups=(N.EventGroup("personal", (), frozenset()),)))
def test_a_notify_set_reads_back_as_written(spec: N.NotifySet) -> None:
    assert args(write(spec)) == spec


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_arguments_give_a_result_or_bad_or_badevent(data: bytes) -> None:
    p = CommandParser()
    p.feed(b"a NOTIFY " + data.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
    event = p.next_event()
    if not isinstance(event, Command):
        return
    with contextlib.suppress(BadArgs, N.UnsupportedEvents):
        N.notify_args(event)
