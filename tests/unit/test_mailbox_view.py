"""The IMAP session's view of a folder: numbers change only when the client is told."""

from __future__ import annotations

from pochta.access.mailbox_view import MailboxView
from pochta.store import FolderChanges, MessageInfo


def info(uid: int, *flags: str, modseq: int = 1) -> MessageInfo:
    return MessageInfo(uid, frozenset(flags), frozenset(), 0.0, 10, modseq)


def changes(
    *changed: MessageInfo, vanished: tuple[int, ...] = (), modseq: int = 10
) -> FolderChanges:
    uidnext = max([m.uid for m in changed] + list(vanished) + [0]) + 1
    return FolderChanges(7, uidnext, modseq, tuple(changed), vanished, True)


def test_arrivals_flags_and_expunges_in_order() -> None:
    view = MailboxView("INBOX", changes(info(1), info(2), info(3), info(5)))
    assert view.exists == 4
    assert view.seq_of(5) == 4
    assert view.seq_of(4) is None

    update = view.apply(
        changes(info(2, "\\Seen", modseq=11), info(6, modseq=12), vanished=(1, 3), modseq=12),
        allow_expunge=True,
    )
    # Highest first, so each number is right at its turn; then the arrival, then flags.
    assert update.expunged == [3, 1]
    assert update.exists == 3
    assert update.flags == [(1, info(2, "\\Seen", modseq=11))]
    assert view.uids == [2, 5, 6]
    assert view.highestmodseq == 12


def test_expunges_wait_while_fetch_store_search_run() -> None:
    view = MailboxView("INBOX", changes(info(1), info(2)))
    update = view.apply(changes(info(3, modseq=12), vanished=(1,), modseq=12), allow_expunge=False)
    assert update.expunged == []
    assert update.exists == 3  # EXISTS is always allowed
    assert view.seq_of(1) == 1  # still numbered...
    assert not view.is_live(1)  # ...but gone
    # A flag change of a pending-expunge message is not reported.
    assert (
        view.apply(changes(info(1, "\\Seen", modseq=13), modseq=13), allow_expunge=False).flags
        == []
    )
    later = view.flush_expunges()
    assert later.expunged == [1]
    assert view.uids == [2, 3]


def test_vanished_for_qresync_clients() -> None:
    view = MailboxView("INBOX", changes(info(1), info(2), info(3)))
    update = view.apply(changes(vanished=(1, 3), modseq=11), allow_expunge=True, use_vanished=True)
    assert update.vanished == [1, 3]
    assert update.expunged == []
    assert view.uids == [2]


def test_own_changes_are_not_echoed() -> None:
    view = MailboxView("INBOX", changes(info(1), info(2)))
    view.note_own_change(info(1, "\\Flagged", modseq=11))
    update = view.apply(changes(info(1, "\\Flagged", modseq=11), modseq=11), allow_expunge=True)
    assert not update
    assert view.note_own_expunge([1, 2]) == [2, 1]
    assert view.exists == 0


def test_resync_from_a_full_listing() -> None:
    view = MailboxView("INBOX", changes(info(1), info(2), info(3)))
    stale = FolderChanges(7, 5, 20, (), (), False)
    update = view.resync([info(2), info(4, modseq=20)], stale, allow_expunge=True)
    assert update.expunged == [3, 1]
    assert update.exists == 2
    assert view.uids == [2, 4]


def test_own_expunge_leaves_no_recent_behind() -> None:
    # RFC 3501 §7.3.2: "* n RECENT" counts messages of the mailbox; an expunged one is not.
    view = MailboxView("INBOX", changes(info(1), info(2), info(3)))
    view.recent.update({1, 2, 3})
    assert view.note_own_expunge([2]) == [2]
    assert view.recent == {1, 3}
    assert view.exists == 2


def test_update_names_the_keywords_to_announce_first() -> None:
    """RFC 9051 §7.3.5: the keywords of arrivals and flag changes, and the folder's own list,
    travel with the update so FLAGS can go out before EXISTS and FETCH."""
    view = MailboxView("INBOX", changes(info(1)))
    arrival = MessageInfo(2, frozenset(), frozenset({"$Project"}), 0.0, 10, 11)
    changed = MessageInfo(1, frozenset(), frozenset({"$Later"}), 0.0, 10, 12)
    folder = FolderChanges(7, 3, 12, (changed, arrival), (), True, keywords=("$Old",))
    update = view.apply(folder, allow_expunge=True)
    assert update.exists == 2
    assert update.keywords == {"$Project", "$Later", "$Old"}
    # A resync from a full listing keeps the folder's list.
    stale = FolderChanges(7, 3, 20, (), (), False, keywords=("$Old", "$Kept"))
    assert "$Kept" in view.resync([arrival, changed], stale, allow_expunge=True).keywords
