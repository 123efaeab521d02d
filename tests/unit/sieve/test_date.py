"""RFC 5260 date parts and zones (the pure part of the date extension)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pochta.sieve.actions import FileInto, SieveResult
from pochta.sieve.errors import SieveError
from pochta.sieve.extensions.dateparts import (
    DATE_PARTS,
    date_part,
    from_aware,
    parse_header_date,
    parse_zone,
    shift,
)
from pochta.sieve.script import compile_script

from .helpers import run

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


# -- the date, currentdate and index tests in scripts (RFC 5260) ----------------------------

RECEIVED_SUNDAY = (
    b"Received: from mx.example.com by mx.example.org; Sun, 6 Dec 2026 10:00:00 +0100\r\n"
    b"Received: from a.example by mx.example.com; Sat, 5 Dec 2026 23:59:00 +0100\r\n"
    b"From: boss@example.com\r\nTo: me@example.org\r\n"
    b"Date: Fri, 4 Dec 2026 10:30:00 +0200\r\nSubject: x\r\n\r\nbody\r\n"
)


def _mailboxes(result: SieveResult) -> list[str]:
    return [a.mailbox for a in result.actions if isinstance(a, FileInto)]


def test_rfc5260_example_working_hours() -> None:
    script = """require ["date", "relational", "fileinto"];
    if allof(header :is "from" "boss@example.com",
             date :value "ge" :originalzone "date" "hour" "09",
             date :value "lt" :originalzone "date" "hour" "17")
    { fileinto "urgent"; }"""
    assert _mailboxes(run(script, RECEIVED_SUNDAY)) == ["urgent"]
    late = RECEIVED_SUNDAY.replace(b"10:30:00 +0200", b"18:30:00 +0200")
    assert _mailboxes(run(script, late)) == []


def test_rfc5260_example_weekend_from_received() -> None:
    # RFC 5260 §4 (and §7's example): the date of a Received field follows its last ";".
    script = """require ["date", "relational", "fileinto"];
    if anyof(date :is :originalzone "received" "weekday" "0",
             date :is :originalzone "received" "weekday" "6")
    { fileinto "weekend"; }"""
    assert _mailboxes(run(script, RECEIVED_SUNDAY)) == ["weekend"]


def test_rfc5260_example_currentdate_vacation_and_folder() -> None:
    now = datetime(2007, 7, 3, 12, 0, tzinfo=UTC)
    script = """require ["date", "relational", "vacation"];
    if allof(currentdate :value "ge" "date" "2007-06-30",
             currentdate :value "le" "date" "2007-07-07")
    { vacation :days 7 "I'm away during the first week in July."; }"""
    result = run(script, RECEIVED_SUNDAY, recipient="me@example.org", now=lambda: now)
    assert [type(a).__name__ for a in result.actions] == ["Vacation"]
    script = """require ["date", "variables", "fileinto"];
    if currentdate :matches "month" "*" { set "month" "${1}"; }
    if currentdate :matches "year"  "*" { set "year" "${1}"; }
    fileinto "${month}-${year}";"""
    assert _mailboxes(run(script, now=lambda: now)) == ["07-2007"]


def test_rfc5260_example_processing_date_header() -> None:
    script = """require ["date", "variables", "editheader"];
    if date :matches :originalzone "received" "iso8601" "*" {set "date" "${0}";}
    addheader "Processing-date" "${date}";"""
    result = run(script, RECEIVED_SUNDAY)
    assert result.final_content is not None
    assert result.final_content.startswith(b"Processing-date: 2026-12-06T10:00:00+01:00\r\n")


def test_default_zone_is_that_of_now() -> None:
    # RFC 5260 §2.4.1: without :zone/:originalzone the local zone: that of context.now().
    script = """require ["date", "fileinto"];
    if date "date" "time" "17:30:00" { fileinto "shifted"; }"""
    tokyo = timezone(timedelta(hours=9))
    assert _mailboxes(run(script, RECEIVED_SUNDAY, now=lambda: datetime.now(tokyo))) == ["shifted"]


def test_index_and_last() -> None:
    script = """require ["date", "index", "fileinto", "relational"];
    if date :index 2 :originalzone "received" "weekday" "6" { fileinto "second"; }
    if date :index 1 :last :originalzone "received" "day" "05" { fileinto "last"; }
    if header :index 1 :contains "received" "mx.example.com" { fileinto "first"; }
    if header :index 3 "received" "" { fileinto "never"; }
    if address :index 1 :localpart "to" "me" { fileinto "to"; }"""
    assert _mailboxes(run(script, RECEIVED_SUNDAY)) == ["second", "last", "first", "to"]


def test_count_counts_dates_not_fields() -> None:
    script = """require ["date", "relational", "fileinto", "comparator-i;ascii-numeric"];
    if date :count "eq" :comparator "i;ascii-numeric" "received" "date" "2" { fileinto "two"; }
    if date :count "eq" :comparator "i;ascii-numeric" "x-none" "date" "0" { fileinto "none"; }"""
    assert _mailboxes(run(script, RECEIVED_SUNDAY)) == ["two", "none"]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('require "date"; if date :zone "0200" "date" "hour" "1" {}', "':zone' needs a zone"),
        ('require "date"; if date "date" "hours" "1" {}', "unknown date part 'hours'"),
        ('require "date"; if currentdate :originalzone "hour" "1" {}', "unknown tag"),
        ('require "date"; if date :index 1 "date" "hour" "1" {}', 'needs require "index"'),
        ('require ["index"]; if header :last "x" "y" {}', "':last' needs ':index'"),
        ('require ["index"]; if header :index 0 "x" "y" {}', "counts from 1"),
        ('if date "date" "hour" "1" {}', 'needs require "date"'),
    ],
)
def test_compile_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError, match=error) as info:
        compile_script(script)
    assert info.value.line == 1


def test_invalid_header_name_matches_nothing() -> None:
    script = 'require ["date", "fileinto"]; if not date "da te" "hour" "*" { fileinto "no"; }'
    assert _mailboxes(run(script, RECEIVED_SUNDAY)) == ["no"]
