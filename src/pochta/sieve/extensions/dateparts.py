"""The date parts of RFC 5260 (date, currentdate): reading a header's date, shifting it to a
zone, and writing out each part. Pure: the registry glue lives in ``extensions/date.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import parsedate_tz

__all__ = [
    "DATE_PARTS",
    "ZonedDate",
    "date_part",
    "format_zone",
    "parse_header_date",
    "parse_zone",
    "shift",
]

# RFC 5260 §4.2: the date-part names (compared case-insensitively, §4.2 "case-insensitive").
DATE_PARTS = frozenset(
    {
        "year",
        "month",
        "day",
        "date",
        "julian",
        "hour",
        "minute",
        "second",
        "time",
        "iso8601",
        "std11",
        "zone",
        "weekday",
    }
)

# RFC 5260 §4.1: zone = ( "+" / "-" ) 4DIGIT, hours 00..23 (ours), minutes 00..59.
_ZONE = re.compile(r"([+-])([0-9]{2})([0-9]{2})")

_MINUS_ZERO = re.compile(r"-0000\s*(\(.*\))?\s*$")
_MJD_EPOCH = date(1858, 11, 17)  # RFC 5260 §4.2 "julian": days since 1858-11-17 00:00 UTC
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class ZonedDate:
    """A moment as shown in one zone. ``zone`` is the text "+hhmm"/"-hhmm" (kept as text
    because RFC 5322 §3.3's "-0000", time unknown zone, differs from "+0000")."""

    local: datetime  # naive: the wall-clock time in ``zone``
    zone: str


def parse_zone(text: str) -> timezone | None:
    """The zone of a ``:zone`` argument (RFC 5260 §4.1), or None when it is not one."""
    m = _ZONE.fullmatch(text.strip())
    if m is None:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3))
    if hours > 23 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if m.group(1) == "-" else offset)


def format_zone(offset: timedelta) -> str:
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 60:02d}{total % 60:02d}"


def parse_header_date(value: str) -> ZonedDate | None:
    """A header field's date-time (RFC 5322 §3.3, with its obsolete zone names via
    ``email.utils``), in its own zone; None when the value is no date (RFC 5260 §4.2: a test
    on such a field is false)."""
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9]
    if offset == 0 and _MINUS_ZERO.search(value):
        offset = None
    try:
        # RFC 5322 §3.3: second 60 is a leap second; datetime cannot hold it.
        local = datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return None
    if offset is None:  # "-0000" or no zone: the time is UTC, the zone unknown (RFC 5322 §3.3)
        return ZonedDate(local, "-0000")
    if abs(offset) >= 24 * 3600:
        return None
    return ZonedDate(local, format_zone(timedelta(seconds=offset)))


def shift(moment: ZonedDate, zone: timezone) -> ZonedDate:
    """The same moment on the clock of ``zone`` (RFC 5260 §2.4.1 ``:zone``)."""
    source = parse_zone(moment.zone) if moment.zone != "-0000" else UTC
    assert source is not None
    aware = moment.local.replace(tzinfo=source).astimezone(zone)
    offset = zone.utcoffset(None)
    return ZonedDate(aware.replace(tzinfo=None), format_zone(offset))


def from_aware(moment: datetime) -> ZonedDate:
    """A ``datetime`` with its zone (``context.now()``, currentdate) as a ZonedDate."""
    offset = moment.utcoffset() or timedelta(0)
    return ZonedDate(moment.replace(tzinfo=None), format_zone(offset))


def date_part(moment: ZonedDate, part: str) -> str:
    """The text of one date part (RFC 5260 §4.2), ``part`` being one of ``DATE_PARTS``."""
    d = moment.local
    match part.lower():
        case "year":
            return f"{d.year:04d}"
        case "month":
            return f"{d.month:02d}"
        case "day":
            return f"{d.day:02d}"
        case "date":
            return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
        case "julian":
            # RFC 5260 §4.2: the Modified Julian Day of the date in the zone used.
            return str((d.date() - _MJD_EPOCH).days)
        case "hour":
            return f"{d.hour:02d}"
        case "minute":
            return f"{d.minute:02d}"
        case "second":
            return f"{d.second:02d}"
        case "time":
            return f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        case "iso8601":
            # RFC 5260 §4.2: restricted ISO 8601, i.e. RFC 3339's date-time.
            z = moment.zone
            zone = "Z" if z in ("+0000", "-0000") else f"{z[:3]}:{z[3:]}"
            return f"{date_part(moment, 'date')}T{date_part(moment, 'time')}{zone}"
        case "std11":
            # RFC 5260 §4.2: as in a Date: header field (RFC 5322 §3.3).
            return (
                f"{_DAYS[d.weekday()]}, {d.day:02d} {_MONTHS[d.month - 1]} {d.year:04d} "
                f"{d.hour:02d}:{d.minute:02d}:{d.second:02d} {moment.zone}"
            )
        case "zone":
            return moment.zone
        case "weekday":
            return str((d.weekday() + 1) % 7)  # RFC 5260 §4.2: 0 is Sunday
    raise ValueError(f"unknown date part {part!r}")
