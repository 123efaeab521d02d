"""RFC 5260 date parts and zones (the pure part of the date extension)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pochta.sieve.extensions.dateparts import (
    DATE_PARTS,
    date_part,
    from_aware,
    parse_header_date,
    parse_zone,
    shift,
)

DATE = "Mon, 20 Jul 2009 21:44:43 +0300"


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("year", "2009"),
        ("month", "07"),
        ("day", "20"),
        ("date", "2009-07-20"),
        ("julian", "55032"),
        ("hour", "21"),
        ("minute", "44"),
        ("second", "43"),
        ("time", "21:44:43"),
        ("iso8601", "2009-07-20T21:44:43+03:00"),
        ("std11", "Mon, 20 Jul 2009 21:44:43 +0300"),
        ("zone", "+0300"),
        ("weekday", "1"),
        ("WeekDay", "1"),
    ],
)
def test_parts_in_original_zone(part: str, expected: str) -> None:
    moment = parse_header_date(DATE)
    assert moment is not None
    assert date_part(moment, part) == expected


def test_every_rfc_part_is_known() -> None:
    moment = parse_header_date(DATE)
    assert moment is not None
    for part in DATE_PARTS:
        assert date_part(moment, part)


def test_julian_of_second_date() -> None:
    moment = parse_header_date("Mon, 22 Jul 2009 23:30:14 +0300")
    assert moment is not None
    assert date_part(moment, "julian") == "55034"


def test_zone_shift() -> None:
    # RFC 5260 §2.4.1: :zone shifts the time to the given zone.
    moment = parse_header_date(DATE)
    zone = parse_zone("+0200")
    assert moment is not None
    assert zone is not None
    shifted = shift(moment, zone)
    assert date_part(shifted, "time") == "20:44:43"
    assert date_part(shifted, "zone") == "+0200"
    west = shift(moment, timezone(-timedelta(hours=5)))
    assert date_part(west, "iso8601") == "2009-07-20T13:44:43-05:00"


def test_zone_shift_across_midnight() -> None:
    moment = parse_header_date("Mon, 22 Jul 2009 23:30:14 +0200")
    zone = parse_zone("+0800")
    assert moment is not None
    assert zone is not None
    assert date_part(shift(moment, zone), "iso8601") == "2009-07-23T05:30:14+08:00"


@pytest.mark.parametrize("text", ["+0260", "0200", "+02:00", "+2400", "x", ""])
def test_bad_zones(text: str) -> None:
    assert parse_zone(text) is None


def test_invalid_dates_are_none() -> None:
    assert parse_header_date("Moo, 34 Juul 3060 25:30:42 +6600") is None
    assert parse_header_date("") is None


def test_unknown_zone_is_minus_zero() -> None:
    # RFC 5322 §3.3: -0000 is UTC with the zone unknown; kept as such for "zone".
    moment = parse_header_date("Tue, 1 Dec 2015 20:36:54 -0000")
    assert moment is not None
    assert date_part(moment, "zone") == "-0000"
    assert date_part(moment, "iso8601") == "2015-12-01T20:36:54Z"


def test_obsolete_zone_names() -> None:
    moment = parse_header_date("Tue, 1 Dec 2015 12:37:00 PST")
    assert moment is not None
    assert date_part(moment, "zone") == "-0800"


def test_currentdate_from_aware_now() -> None:
    now = datetime(2026, 12, 6, 23, 59, 30, tzinfo=UTC)
    moment = from_aware(now)
    assert date_part(moment, "std11") == "Sun, 06 Dec 2026 23:59:30 +0000"
    assert date_part(moment, "weekday") == "0"
