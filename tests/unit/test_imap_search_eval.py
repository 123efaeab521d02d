"""SEARCH on the view's data (flags, sizes, MODSEQ, internal dates) against a plain reading
of RFC 9051 §6.4.4, message by message: the set-wise evaluation must give the same UIDs."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.access.imap_search import SearchContext, evaluate
from pochta.access.mailbox_view import MailboxView
from pochta.store import FolderChanges, MessageInfo

FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Deleted")
DAY0 = dt.datetime(2024, 2, 28, tzinfo=dt.UTC).timestamp()

messages = st.lists(
    st.tuples(
        st.frozensets(st.sampled_from(FLAGS)),
        # Around three UTC days, with the midnights and the seconds next to them likely.
        st.one_of(
            st.floats(min_value=DAY0 - 86400, max_value=DAY0 + 2 * 86400),
            st.sampled_from([DAY0 - 1, DAY0, DAY0 + 86399, DAY0 + 86400, DAY0 + 86401]),
            # A hair before midnight: INTERNALDATE rounds it to the microsecond, into the
            # next day, and SEARCH must say the same.
            st.sampled_from([DAY0 - 2.5e-7, DAY0 - 4.9e-7, DAY0 - 7e-7, DAY0 + 86400 - 3e-7]),
        ),
        st.integers(min_value=0, max_value=50_000),
        st.integers(min_value=1, max_value=100),
    ),
    max_size=40,
)

keys = st.one_of(
    st.just(("all",)),
    st.tuples(st.just("flag"), st.sampled_from(FLAGS), st.booleans()),
    st.tuples(st.sampled_from(["larger", "smaller", "modseq"]), st.integers(0, 50_000)),
    st.tuples(
        st.just("date"),
        st.sampled_from(["before", "on", "since"]),
        st.sampled_from([dt.date(2024, 2, 27), dt.date(2024, 2, 28), dt.date(2024, 2, 29)]),
        st.just(False),
    ),
)


def _view(rows: list[tuple[frozenset[str], float, int, int]], gone: set[int]) -> MailboxView:
    infos = tuple(
        MessageInfo(
            uid=i * 3 + 1,
            flags=flags,
            keywords=frozenset(),
            internal_date=when,
            size=size,
            modseq=modseq,
        )
        for i, (flags, when, size, modseq) in enumerate(rows)
    )
    view = MailboxView(
        "INBOX",
        FolderChanges(
            uidvalidity=1,
            uidnext=len(rows) * 3 + 2,
            highestmodseq=100,
            changed=infos,
            vanished=(),
            complete=True,
        ),
    )
    view.pending_expunge = {u for u in view.uids if u % 2 == 0 and u in gone}
    return view


def _expected(view: MailboxView, key: tuple[object, ...]) -> list[int]:
    out = []
    for uid in view.uids:
        if uid in view.pending_expunge:
            continue
        m = view.info[uid]
        kind = key[0]
        if kind == "all":
            ok = True
        elif kind == "flag":
            ok = (key[1] in m.flags) == key[2]
        elif kind == "larger":
            ok = m.size > key[1]  # type: ignore[operator]
        elif kind == "smaller":
            ok = m.size < key[1]  # type: ignore[operator]
        elif kind == "modseq":
            ok = m.modseq >= key[1]  # type: ignore[operator]
        else:
            day = dt.datetime.fromtimestamp(m.internal_date, dt.UTC).date()
            how, wanted = key[1], key[2]
            ok = (
                day < wanted  # type: ignore[operator]
                if how == "before"
                else day == wanted
                if how == "on"
                else day >= wanted  # type: ignore[operator]
            )
        if ok:
            out.append(uid)
    return out


def _no_disk(*_args: object) -> object:
    raise AssertionError("these keys are answered from the view")


@settings(max_examples=300, deadline=None)
@given(messages, st.sets(st.integers(0, 130)), keys)
def test_view_keys_match_a_message_by_message_reading(
    rows: list[tuple[frozenset[str], float, int, int]], gone: set[int], key: tuple[object, ...]
) -> None:
    view = _view(rows, gone)
    found = evaluate(key, SearchContext(view, _no_disk, _no_disk))  # type: ignore[arg-type]
    assert found == _expected(view, key)


@settings(max_examples=200, deadline=None)
@given(messages, st.sets(st.integers(0, 130)), keys, keys)
def test_two_keys_together_match_both(
    rows: list[tuple[frozenset[str], float, int, int]],
    gone: set[int],
    first: tuple[object, ...],
    second: tuple[object, ...],
) -> None:
    view = _view(rows, gone)
    ctx = SearchContext(view, _no_disk, _no_disk)  # type: ignore[arg-type]
    both = set(_expected(view, first)) & set(_expected(view, second))
    assert evaluate(("and", [first, second]), ctx) == sorted(both)  # type: ignore[arg-type]
    either = set(_expected(view, first)) | set(_expected(view, second))
    assert evaluate(("or", first, second), ctx) == sorted(either)  # type: ignore[arg-type]


def test_a_pending_expunge_is_not_found_and_order_is_ascending() -> None:
    view = _view([(frozenset({"\\Seen"}), DAY0, 10, 1)] * 6, gone=set(range(20)))
    assert view.pending_expunge == {4, 10, 16}
    found = evaluate(("flag", "\\Seen", True), SearchContext(view, _no_disk, _no_disk))  # type: ignore[arg-type]
    assert found == [1, 7, 13]
