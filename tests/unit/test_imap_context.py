"""RFC 5267 in pieces: the RETURN options (PARTIAL, UPDATE), ESEARCH items in sort order,
and the live contexts' ADDTO / REMOVEFROM arithmetic (sans-IO: no server)."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.access.imap_context import (
    MAX_LIVE_CONTEXTS,
    MAX_SORTED_CONTEXTS,
    LiveContext,
    LiveContexts,
    pin_key,
)
from pochta.access.imap_search import esearch_parts, ordered_set_text
from pochta.access.mailbox_view import MailboxView
from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command, CommandParser, Quoted
from pochta.protocols.imap.search_return import (
    PartialRange,
    ReturnOptions,
    parse_partial,
    parse_return_options,
)
from pochta.store import FolderChanges, MessageInfo


def one(data: bytes) -> Command:
    p = CommandParser()
    p.feed(data)
    event = p.next_event()
    assert isinstance(event, Command)
    return event


# -- the RETURN options ----------------------------------------------------------------------


def test_partial_ranges_as_rfc_5267_and_rfc_9394_write_them() -> None:
    assert parse_partial("1:1") == PartialRange(1, 1)
    assert parse_partial("4:2") == PartialRange(2, 4)  # RFC 5267 §5: 500:400 is 400:500
    assert parse_partial("4:2").text() == "2:4"
    assert parse_partial("-1:-100") == PartialRange(1, 100, from_end=True)  # RFC 9394 §3.1
    assert parse_partial("-100:-1").text() == "-1:-100"
    for bad in ("1", "1:*", "*:1", "0:5", "-1:5", "1:-5", "1:4294967296", ":", "a:b"):
        with pytest.raises(ValueError, match="PARTIAL"):
            parse_partial(bad)
    with pytest.raises(ValueError, match="PARTIAL"):
        parse_partial(Quoted("1:5"))  # an atom, not a string


def test_partial_picks_positions_of_the_result() -> None:
    results = [3, 5, 8, 13, 21]
    assert PartialRange(1, 1).pick(results) == [3]
    assert PartialRange(2, 4).pick(results) == [5, 8, 13]
    assert PartialRange(1, 6).pick(results) == results  # past the end: what there is
    assert PartialRange(6, 6).pick(results) == []
    assert PartialRange(1, 2, from_end=True).pick(results) == [13, 21]
    assert PartialRange(5, 9, from_end=True).pick(results) == [3]
    assert PartialRange(6, 9, from_end=True).pick(results) == []


def test_return_option_lists() -> None:
    assert parse_return_options([]) == ReturnOptions(all=True)  # RFC 4731 §3.1
    assert parse_return_options(["update"]) == ReturnOptions(update=True)
    assert parse_return_options(["CONTEXT", "COUNT"]) == ReturnOptions(count=True, context=True)
    assert parse_return_options(["PARTIAL", "2:4", "UPDATE", "MIN"]) == ReturnOptions(
        min=True, partial=PartialRange(2, 4), update=True
    )
    for bad, why in (
        (["PARTIAL", "1:5", "ALL"], "PARTIAL and ALL"),  # RFC 5267 §4.4
        (["PARTIAL", "1:5", "PARTIAL", "6:9"], "one PARTIAL"),
        (["PARTIAL"], "range"),
        (["SAVE"], "Unknown RETURN option SAVE"),
        ([["MIN"]], "atoms"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_return_options(bad)


def test_search_and_sort_arguments_with_return() -> None:
    args = C.search_args(one(b"a SEARCH RETURN (PARTIAL 1:10 UPDATE) UNSEEN\r\n"))
    assert args.returns == ReturnOptions(partial=PartialRange(1, 10), update=True)
    assert args.key == ("flag", "\\Seen", False)
    args_sort = C.sort_args(one(b"a UID SORT RETURN (MIN MAX) (REVERSE DATE) UTF-8 ALL\r\n"))
    assert args_sort.returns == ReturnOptions(min=True, max=True)
    assert args_sort.criteria == [("DATE", True)]
    assert args_sort.uid
    assert C.sort_args(one(b"a SORT (ARRIVAL) UTF-8 ALL\r\n")).returns is None
    for bad in (
        b"a SORT RETURN (PARTIAL 1) (ARRIVAL) US-ASCII ALL\r\n",
        b"a SORT RETURN (PARTIAL 1:*) (ARRIVAL) US-ASCII ALL\r\n",
        b"a SORT RETURN (ARRIVAL) US-ASCII ALL\r\n",
        b"a SORT RETURN MIN (ARRIVAL) US-ASCII ALL\r\n",
    ):
        with pytest.raises(C.BadArgs):
            C.sort_args(one(bad))
    with pytest.raises(C.BadArgs, match="PARTIAL"):
        C.search_args(one(b"a SEARCH RETURN (PARTIAL *:1) ALL\r\n"))


_OPTION = st.one_of(
    st.sampled_from(["MIN", "MAX", "ALL", "COUNT", "UPDATE", "CONTEXT", "PARTIAL", "SAVE"]),
    st.from_regex(r"-?[0-9*]{1,11}:-?[0-9*]{1,11}", fullmatch=True),
    st.text(max_size=6),
)


@given(st.lists(_OPTION, max_size=6))
@example(["PARTIAL", "-0:-1"])
@example(["PARTIAL", "4294967295:1"])
def test_any_return_list_parses_or_is_refused(tokens: list[str]) -> None:
    try:
        options = parse_return_options(tokens)
    except ValueError:
        return
    if options.partial is not None:
        # What went out as the PARTIAL range reads back as the same range.
        assert parse_partial(options.partial.text()) == options.partial
        assert 1 <= options.partial.first <= options.partial.last < 2**32


# -- ESEARCH items -----------------------------------------------------------------------------


def test_ordered_sets_keep_the_order() -> None:
    assert ordered_set_text([5, 3, 4, 2, 1]) == "5,3:4,2,1"  # RFC 5267 §3.2
    assert ordered_set_text([1, 2, 3, 7]) == "1:3,7"
    assert ordered_set_text([]) == ""


@given(st.lists(st.integers(1, 50), unique=True))
def test_ordered_set_expands_back_to_the_list(numbers: list[int]) -> None:
    out: list[int] = []
    for piece in filter(None, ordered_set_text(numbers).split(",")):
        a, _, b = piece.partition(":")
        out += range(int(a), int(b or a) + 1)
    assert out == numbers


def test_esearch_items_for_search_and_sort() -> None:
    every = ReturnOptions(min=True, max=True, all=True, count=True)
    assert esearch_parts([2, 4, 5], every, ordered=False) == [
        "MIN 2",
        "MAX 5",
        "ALL 2,4:5",
        "COUNT 3",
    ]
    # RFC 5267 §3.1: MIN and MAX are the first and last sorted message.
    assert esearch_parts([5, 3, 4], every, ordered=True) == [
        "MIN 5",
        "MAX 4",
        "ALL 5,3:4",
        "COUNT 3",
    ]
    partial = ReturnOptions(partial=PartialRange(2, 4))
    assert esearch_parts([1, 2, 4, 5], partial, ordered=False) == ["PARTIAL (2:4 2,4:5)"]
    assert esearch_parts([5, 3, 4, 2, 1], partial, ordered=True) == ["PARTIAL (2:4 3:4,2)"]
    assert esearch_parts([1], ReturnOptions(partial=PartialRange(6, 6)), ordered=False) == [
        "PARTIAL (6:6 NIL)"
    ]
    assert esearch_parts([], ReturnOptions(update=True), ordered=False) == []


# -- live contexts -----------------------------------------------------------------------------

_LINE = re.compile(rb'\* ESEARCH \(TAG "t"\)( UID)? (ADDTO|REMOVEFROM) \((.*)\)\r\n')


def _expand(text: str) -> list[int]:
    out: list[int] = []
    for piece in text.split(","):
        a, _, b = piece.partition(":")
        out += range(int(a), int(b or a) + 1)
    return out


def apply_as_client(result: list[int], data: bytes, *, ordered: bool) -> list[int]:
    """What a client holding ``result`` has after these ESEARCH responses (RFC 5267
    §4.3.3-4: pairs processed in order; position 0 keeps mailbox order)."""
    out = list(result)
    for line in data.splitlines(keepends=True):
        m = _LINE.fullmatch(line)
        assert m is not None, line
        words = m.group(3).decode().split(" ")
        for position_text, numbers_text in zip(words[::2], words[1::2], strict=True):
            position, numbers = int(position_text), _expand(numbers_text)
            assert (position == 0) != ordered
            if m.group(2) == b"ADDTO":
                if ordered:
                    out[position - 1 : position - 1] = numbers
                else:
                    out = sorted(set(out) | set(numbers))
            elif ordered:
                assert out[position - 1 : position - 1 + len(numbers)] == numbers
                del out[position - 1 : position - 1 + len(numbers)]
            else:
                assert set(numbers) <= set(out)
                out = [n for n in out if n not in numbers]
    return out


def context(result: list[int], now: list[int], *, ordered: bool, uid: bool = True) -> LiveContext:
    async def evaluate() -> list[int]:
        return now

    return LiveContext(b'"t"', uid, ordered, evaluate, result)


def refresh(contexts: LiveContexts, numbering: list[int]) -> bytes:
    contexts.stale = True
    return asyncio.run(contexts.refresh(numbering))


@given(
    st.lists(st.integers(1, 40), unique=True, max_size=15),
    st.lists(st.integers(1, 40), unique=True, max_size=15),
)
@example([1, 2, 3, 4, 5], [2, 4, 6])
@example([5, 4, 3], [7, 5, 6, 3, 1])
def test_sorted_updates_bring_the_client_to_the_new_order(
    before: list[int], others: list[int]
) -> None:
    # A sort order fixed per message (here: by a key of each UID); the new result keeps the
    # common messages in their relative order, as a real sort does.
    rank = {u: (u * 7919) % 41 for u in range(1, 41)}
    before = sorted(before, key=rank.__getitem__)
    now = sorted(set(others), key=rank.__getitem__)
    contexts = LiveContexts(list(range(1, 41)))
    contexts.add(context(before, now, ordered=True))
    assert apply_as_client(before, refresh(contexts, list(range(1, 41))), ordered=True) == now
    contexts.add(context(sorted(before), sorted(now), ordered=False))
    data = refresh(contexts, list(range(1, 41)))
    assert apply_as_client(sorted(before), data, ordered=False) == sorted(now)


def test_search_updates_use_position_zero_and_sequence_numbers() -> None:
    contexts = LiveContexts([10, 20, 30, 40])
    contexts.add(context([20], [10, 20, 40], ordered=False, uid=False))
    assert refresh(contexts, [10, 20, 30, 40]) == b'* ESEARCH (TAG "t") ADDTO (0 1,4)\r\n'
    assert refresh(contexts, [10, 20, 30, 40]) == b""  # nothing changed: nothing said


def test_sorted_removal_goes_from_the_highest_position() -> None:
    contexts = LiveContexts([1, 2, 3, 4, 5])
    contexts.add(context([5, 4, 3, 2, 1], [5, 2], ordered=True))
    data = refresh(contexts, [1, 2, 3, 4, 5])
    # Position 5 first (message 1), then positions 2-3 (messages 4, 3): never "4:3".
    assert data == b'* ESEARCH (TAG "t") UID REMOVEFROM (5 1 2 4,3)\r\n'


def test_expunged_results_are_removed_with_the_numbers_the_client_still_has() -> None:
    contexts = LiveContexts([10, 20, 30, 40, 50])
    contexts.add(context([20, 40], [20, 40], ordered=False, uid=False))
    # 30 and 40 expunged: the client still numbers 40 as 4 until the EXPUNGE responses.
    data = contexts.expunging({10, 20, 50})
    assert data == b'* ESEARCH (TAG "t") REMOVEFROM (0 4)\r\n'
    assert contexts.numbering == [10, 20, 50]
    assert contexts.contexts[b'"t"'].result == [20]


def test_context_limits_refuse_with_a_reason() -> None:
    contexts = LiveContexts([])
    for n in range(MAX_SORTED_CONTEXTS):
        assert contexts.refusal(ordered=True) is None
        contexts.add(LiveContext(b"%d" % n, True, True, _never, []))
    assert "SORT contexts" in (contexts.refusal(ordered=True) or "")
    for n in range(MAX_SORTED_CONTEXTS, MAX_LIVE_CONTEXTS):
        assert contexts.refusal(ordered=False) is None
        contexts.add(LiveContext(b"%d" % n, True, False, _never, []))
    assert "at most 10" in (contexts.refusal(ordered=False) or "")
    assert contexts.cancel(b"0")
    assert not contexts.cancel(b"0")
    assert contexts.refusal(ordered=True) is None


async def _never() -> list[int]:
    raise AssertionError("not evaluated")


def test_sequence_numbers_in_the_search_program_are_pinned_to_uids() -> None:
    messages = tuple(MessageInfo(uid, frozenset(), frozenset(), 0.0, 10, 1) for uid in (4, 7, 9))
    view = MailboxView("INBOX", FolderChanges(1, 10, 1, messages, (), True))
    key = C.search_args(one(b"a SEARCH RETURN (UPDATE) OR 2:* UID 4 NOT 1\r\n")).key
    assert pin_key(key, view) == (
        "and",
        [("or", ("uid", [7, 9]), ("uid", [4])), ("not", ("uid", [4]))],
    )
