"""RFC 5260 ``date`` and ``currentdate``: a date part of a header's date or of the time of
the run (``context.now()``), compared with the keys. The parts and zones are in
``dateparts.py``; ``:index``/``:last`` on ``date`` come from ``index.py``.

Without ``:zone`` or ``:originalzone`` the date is shown in the local zone (RFC 5260 §2.4.1
"the local time zone"): pochta's local zone is the zone of ``context.now()``.
"""

from __future__ import annotations

from datetime import timezone

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.extensions import dateparts
from pochta.sieve.extensions.dateparts import DATE_PARTS, ZonedDate
from pochta.sieve.extensions.headeredit import valid_field_name
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, TagSpec, TestSpec

__all__ = ["date_values", "header_dates", "select_index"]


def select_index(run: Run, call: Call, values: list[str]) -> list[str]:
    """RFC 5260 §6: with ``:index N`` only the Nth value (1-based), counted from the end
    with ``:last``; none when there are fewer."""
    index = call.tags.get("index")
    if not isinstance(index, int):
        return values
    order = values[::-1] if "last" in call.tags else values
    return [order[index - 1]] if 0 < index <= len(order) else []


def _zone_of(run: Run, call: Call) -> timezone | None | str:
    """The zone to show dates in: a timezone, "original" for :originalzone, or None when a
    :zone made by variables is no zone (the test is then false)."""
    if "originalzone" in call.tags:
        return "original"
    given = call.tags.get("zone")
    if isinstance(given, str):
        return dateparts.parse_zone(run.expand(given))
    now = run.context.now()
    offset = now.utcoffset()
    return timezone(offset) if offset is not None else timezone.utc


def header_dates(run: Run, call: Call, name: str) -> list[ZonedDate]:
    """The dates in the fields called ``name`` (with :index applied); fields that hold no
    date are left out (RFC 5260 §4.2)."""
    raw = select_index(run, call, run.raw_header_values(name))
    out: list[ZonedDate] = []
    for value in raw:
        if name.lower() == "received":
            # RFC 5260 §4 (and RFC 5321 §4.4): a Received field's date follows its last ";".
            value = value.rpartition(";")[2]
        moment = dateparts.parse_header_date(value)
        if moment is not None:
            out.append(moment)
    return out


def date_values(run: Run, call: Call, moments: list[ZonedDate], part: str) -> list[str] | None:
    """The ``part`` of each moment in the call's zone; None when the part or the zone, made
    by variables, is not valid."""
    part = part.lower()
    if part not in DATE_PARTS:
        return None
    zone = _zone_of(run, call)
    if zone is None:
        return None
    shown = moments if zone == "original" else [dateparts.shift(m, zone) for m in moments]  # type: ignore[arg-type]
    return [dateparts.date_part(m, part) for m in shown]


def _date(run: Run, call: Call) -> bool:
    name = run.expand(call.string(0))
    values = date_values(run, call, header_dates(run, call, name), run.expand(call.string(1)))
    if values is None:
        return False
    return run.match(call, values, call.strings(2))


def _currentdate(run: Run, call: Call) -> bool:
    # RFC 5260 §5: the time the script runs; the same moment for the whole run.
    now = run.state.get("date.now")
    if now is None:
        now = run.state["date.now"] = dateparts.from_aware(run.context.now())
    values = date_values(run, call, [now], run.expand(call.string(0)))
    if values is None:
        return False
    return run.match(call, values, call.strings(1))


def _check(call: Call, state: CompileState, part_index: int) -> None:
    zone = call.tags.get("zone")
    variables = "variables" in state.required
    if isinstance(zone, str) and not (variables and "${" in zone):
        if dateparts.parse_zone(zone) is None:
            # RFC 5260 §4.1: zone = ("+" / "-") 4DIGIT
            raise call.error(f"':zone' needs a zone like \"+0200\" or \"-0500\", not '{zone}'")
    part = call.string(part_index)
    if not (variables and "${" in part) and part.lower() not in DATE_PARTS:
        names = ", ".join(sorted(DATE_PARTS))
        raise call.error(f"unknown date part '{part}' (RFC 5260 §4.2: one of {names})")


def _check_date(call: Call, state: CompileState) -> Call | None:
    _check(call, state, 1)
    name = call.string(0)
    if not ("variables" in state.required and "${" in name) and not valid_field_name(name):
        raise call.error(f"'{name}' is not a valid header field name")
    return None


def _check_currentdate(call: Call, state: CompileState) -> Call | None:
    _check(call, state, 0)
    return None


REGISTRY.add_capability(Capability("date"))
_ZONE_TAGS = (TagSpec("zone", arg="string", group="zone"), TagSpec("originalzone", group="zone"))
REGISTRY.add_test(
    TestSpec(
        name="date",
        capability="date",
        positional=("string", "string", "string-list"),
        tags=_ZONE_TAGS,
        comparator=True,
        match_type=True,
        handler=_date,
        validate=_check_date,
    )
)
REGISTRY.add_test(
    TestSpec(
        name="currentdate",
        capability="date",
        positional=("string", "string-list"),
        tags=(_ZONE_TAGS[0],),  # RFC 5260 §5: :originalzone makes no sense here
        comparator=True,
        match_type=True,
        handler=_currentdate,
        validate=_check_currentdate,
    )
)
