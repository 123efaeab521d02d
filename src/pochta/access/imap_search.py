"""SEARCH evaluation (RFC 9051 §6.4.4, RFC 3501 §6.4.4, MODSEQ from RFC 7162 §3.1.5).

Keys arrive as a small normalised tree (``Key``) that the command adapter builds from the
parser's AST. Keys on flags, sizes, dates, UIDs and numbers are answered from the session's
view; TEXT and BODY from the store's full-text index; header keys (FROM, SUBJECT, HEADER,
SENT*) from the messages' headers, read once per command and only for the messages still in
question. String matching is a case-insensitive substring test on decoded text, as RFC 9051
§6.4.4 asks ("a substring ... case-insensitive"). FROM, TO, CC and BCC also match the
field's address list in a normal form (imap_headers.normalized_addresses), as Dovecot does:
display names, comments used as names, group names and group members all count.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pochta.access.mailbox_view import MailboxView
from pochta.protocols.imap.commands import Key
from pochta.protocols.imap.search_return import ReturnOptions


@dataclass(slots=True)
class SearchContext:
    view: MailboxView
    # UIDs whose headers or body contain a needle (from the store's index).
    full_text: Callable[[str, bool, bool], set[int]]
    # The decoded header fields of the given UIDs: {uid: {lower-case name: [values]}}.
    headers: Callable[[list[int]], dict[int, dict[str, list[str]]]]


def needs_headers(key: Key) -> bool:
    kind = key[0]
    if kind == "header" or (kind == "date" and key[3]):
        return True
    if kind == "not":
        return needs_headers(key[1])  # type: ignore[arg-type]
    if kind == "or":
        return needs_headers(key[1]) or needs_headers(key[2])  # type: ignore[arg-type]
    if kind == "and":
        return any(needs_headers(k) for k in key[1])  # type: ignore[attr-defined]
    return False


def evaluate(key: Key, ctx: SearchContext) -> list[int]:
    """UIDs of the live messages matching ``key``, ascending."""
    view = ctx.view
    # view.uids is ascending and holds exactly the keys of view.info; only a pending
    # expunge makes a UID read as gone.
    if view.pending_expunge:
        universe = [u for u in view.uids if u not in view.pending_expunge]
    else:
        universe = list(view.uids)
    direct = _view_key(key, view, universe)
    if direct is not None:  # one key on flags, sizes or dates: filtered in order, no sets
        return direct
    header_cache: dict[int, dict[str, list[str]]] = {}
    if needs_headers(key):
        header_cache = ctx.headers(universe)
    matched = _eval(key, ctx, set(universe), header_cache)
    return sorted(matched)


def _view_key(key: Key, view: MailboxView, among: Iterable[int]) -> list[int] | None:
    """The UIDs of ``among``, in their order, that match a key the view answers alone (a
    flag, a size, a MODSEQ, an internal date); None for any other key."""
    kind = key[0]
    info = view.info
    if kind == "all":
        return list(among)
    if kind == "flag":
        name = key[1]
        if key[2]:
            return [u for u in among if name in info[u].flags]
        return [u for u in among if name not in info[u].flags]
    if kind in ("larger", "smaller", "modseq"):
        limit = key[1]
        assert isinstance(limit, int)
        if kind == "larger":
            return [u for u in among if info[u].size > limit]
        if kind == "smaller":
            return [u for u in among if info[u].size < limit]
        return [u for u in among if info[u].modseq >= limit]
    if kind == "date" and not key[3]:
        how, day = str(key[1]), key[2]
        assert isinstance(day, dt.date)
        # RFC 9051 §6.4.4: dates compare "disregarding time and timezone"; we take the UTC
        # day, so each key compares with the instants that begin the day and the next.
        start = _first_instant(day)
        end = _first_instant(day + dt.timedelta(days=1)) if day < dt.date.max else math.inf
        if how == "before":
            return [u for u in among if info[u].internal_date < start]
        if how == "on":
            return [u for u in among if start <= info[u].internal_date < end]
        return [u for u in among if info[u].internal_date >= start]
    return None


def _first_instant(day: dt.date) -> float:
    """The first timestamp whose UTC date, as FETCH INTERNALDATE shows it, is ``day`` or
    later: midnight, or a float a hair before it that ``fromtimestamp`` rounds up to it
    (it rounds to the microsecond), so the comparison agrees with what the client sees.
    Found by bisection within the microsecond before midnight."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()

    def on_or_after(instant: float) -> bool:
        return dt.datetime.fromtimestamp(instant, dt.UTC).date() >= day

    low, high = midnight - 1e-6, midnight
    try:
        if on_or_after(low):  # no float between the two (far from 1970)
            return high
    except (ValueError, OverflowError, OSError):  # before year 1: every date is later
        return -math.inf
    while True:
        middle = (low + high) / 2
        if not low < middle < high:
            return high
        if on_or_after(middle):
            high = middle
        else:
            low = middle


def _eval(
    key: Key, ctx: SearchContext, candidates: set[int], headers: dict[int, dict[str, list[str]]]
) -> set[int]:
    view = ctx.view
    kind = key[0]
    if kind == "all":
        return set(candidates)
    if kind == "none":
        return set()
    if kind == "recent":
        return candidates & view.recent
    if kind == "and":
        current = set(candidates)
        for sub in key[1]:  # type: ignore[attr-defined]
            current = _eval(sub, ctx, current, headers)
            if not current:
                break
        return current
    if kind == "or":
        left = _eval(key[1], ctx, candidates, headers)  # type: ignore[arg-type]
        right = _eval(key[2], ctx, candidates - left, headers)  # type: ignore[arg-type]
        return left | right
    if kind == "not":
        return candidates - _eval(key[1], ctx, candidates, headers)  # type: ignore[arg-type]
    direct = _view_key(key, view, candidates)
    if direct is not None:
        return set(direct)
    if kind == "keyword":
        name, present = str(key[1]), key[2]
        lowered = name.lower()
        return {
            u
            for u in candidates
            if any(k.lower() == lowered for k in view.info[u].keywords) == present
        }
    if kind == "seq":
        wanted = {view.uid_at(n) for n in key[1] if 1 <= n <= view.exists}  # type: ignore[attr-defined]
        return candidates & wanted
    if kind == "uid":
        wanted_uids = key[1]
        assert isinstance(wanted_uids, list)
        return candidates & set(wanted_uids)
    if kind == "date":  # SENT*: the internal date's keys were answered above
        how, day = str(key[1]), key[2]
        assert isinstance(day, dt.date)
        out = set()
        for u in candidates:
            when = _sent_date(headers.get(u, {}))
            if when is None:
                continue
            if (
                (how == "before" and when < day)
                or (how == "on" and when == day)
                or (how == "since" and when >= day)
            ):
                out.add(u)
        return out
    if kind == "header":
        name, needle = str(key[1]).lower(), str(key[2]).casefold()
        out = set()
        for u in candidates:
            values = headers.get(u, {}).get(name)
            if values is None:
                continue
            # RFC 9051 §6.4.4 HEADER: an empty string matches every message with the field,
            # even an empty one or one without a valid address in it.
            if not needle or any(needle in v.casefold() for v in values):
                out.add(u)
        return out
    if kind in ("text", "body"):
        needle = str(key[1])
        if not needle:
            return set(candidates)
        return candidates & ctx.full_text(needle, kind == "text", True)
    raise ValueError(f"unknown search key {kind!r}")


def _sent_date(fields: dict[str, list[str]]) -> dt.date | None:
    for value in fields.get("date", []):
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        if parsed is not None:
            # The date as written in the header, in its own zone (RFC 9051 SENTON).
            return parsed.date()
    return None


def ordered_set_text(numbers: Iterable[int]) -> str:
    """Numbers in their given order as a sequence set: only runs of ascending consecutive
    numbers become ranges (RFC 5267 §3.2: a range in a SORT result stands for its numbers in
    increasing order, so ``5,3:4,2`` is 5, 3, 4, 2)."""
    out: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def esearch_parts(numbers: list[int], returns: ReturnOptions, *, ordered: bool) -> list[str]:
    """The ESEARCH result items (RFC 4731 §3.1) for RETURN (MIN MAX ALL COUNT PARTIAL).

    ``numbers`` are the results in the requested order: mailbox order for SEARCH, the sort
    order for SORT (``ordered``), where MIN and MAX are the first and last sorted message
    (RFC 5267 §3.1) and ALL keeps the order (§3.2)."""
    parts: list[str] = []
    if returns.min and numbers:
        parts.append(f"MIN {numbers[0] if ordered else min(numbers)}")
    if returns.max and numbers:
        parts.append(f"MAX {numbers[-1] if ordered else max(numbers)}")
    if returns.all and numbers:
        parts.append(f"ALL {ordered_set_text(numbers if ordered else sorted(numbers))}")
    if returns.partial is not None:
        # RFC 5267 §4.4: the range as asked, and NIL when no result falls in it.
        picked = returns.partial.pick(numbers if ordered else sorted(numbers))
        found = ordered_set_text(picked) if picked else "NIL"
        parts.append(f"PARTIAL ({returns.partial.text()} {found})")
    if returns.count:
        parts.append(f"COUNT {len(numbers)}")
    return parts
