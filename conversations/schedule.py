"""Local time for patients: parsing their timezone, reminder time and days, and finding the
next prompt in UTC. Pure functions over zoneinfo, so DST rules come from the tz database."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from conversations.numbers import whole

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# re.ASCII: \d is 0-9 only, as everywhere numbers are read (conversations/numbers.py).
_OFFSET = re.compile(r"^(?:utc|gmt)?\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?$", re.ASCII)
_TIME = re.compile(r"^(\d{1,2})(?:[:.h](\d{2}))?\s*(am|pm)?$", re.ASCII)


@cache
def _zones_by_key() -> dict[str, str]:
    """Lower-case IANA names and their last component ("new york") to the IANA name."""
    names = sorted(n for n in available_timezones() if "/" in n and not n.startswith("Etc/"))
    keys: dict[str, str] = {}
    for name in names:
        keys[name.lower()] = name
        city = name.rsplit("/", 1)[1].replace("_", " ").lower()
        keys.setdefault(city, name)
    for name in ("UTC",):
        keys[name.lower()] = name
    return keys


def parse_timezone(text: str) -> str | None:
    """An IANA name, a city, or a UTC offset ("+5:30", "UTC-3") to a stored zone name."""
    cleaned = " ".join(text.strip().lower().replace("_", " ").split())
    if not cleaned or len(cleaned) > 64:
        return None
    offset = _OFFSET.match(cleaned.replace(" ", ""))
    if offset:
        sign, hours, minutes = offset.group(1), int(offset.group(2)), int(offset.group(3) or 0)
        if hours > 14 or minutes >= 60 or (hours == 14 and minutes):
            return None
        return f"UTC{sign}{hours:02d}:{minutes:02d}"
    if cleaned in ("utc", "gmt", "z"):
        return "UTC"
    keys = _zones_by_key()
    return keys.get(cleaned) or keys.get(cleaned.replace(" ", "_"))


def zone(name: str) -> tzinfo:
    """The tzinfo for a name `parse_timezone` produced."""
    if name.startswith("UTC") and len(name) == 9:
        sign = 1 if name[3] == "+" else -1
        return timezone(sign * timedelta(hours=int(name[4:6]), minutes=int(name[7:9])))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_time(text: str) -> str | None:
    """"7", "07:30", "7.30 pm", "19h30" to "HH:MM"; None when it is not a time of day."""
    match = _TIME.match(text.strip().lower().replace(" ", ""))
    if not match:
        return None
    hour, minute, half = int(match.group(1)), int(match.group(2) or 0), match.group(3)
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return f"{hour:02d}:{minute:02d}"


def parse_days(text: str) -> str | None:
    """"every day", "weekdays", "mon wed fri", "1,3,5" to ISO weekday digits ("135")."""
    cleaned = text.strip().lower()
    if cleaned in ("every day", "everyday", "daily", "all", "1234567"):
        return "1234567"
    if cleaned in ("weekdays", "work days", "12345"):
        return "12345"
    if cleaned in ("weekends", "weekend", "67"):
        return "67"
    days: set[int] = set()
    for word in re.split(r"[\s,;/&]+|\band\b", cleaned):
        if not word:
            continue
        if (day := whole(word, 1, 7, max_digits=1)) is not None:
            days.add(day)
        elif len(word) >= 3 and any(name.startswith(word[:3]) for name in DAY_NAMES):
            days.add(next(i for i, n in enumerate(DAY_NAMES, 1) if n == word[:3]))
        else:
            return None
    return "".join(str(d) for d in sorted(days)) or None


def describe_days(days: str) -> str:
    if days == "1234567":
        return "every day"
    if days == "12345":
        return "on weekdays"
    return "on " + ", ".join(DAY_NAMES[int(d) - 1].capitalize() for d in days)


def local_date(now: datetime, tz_name: str) -> date:
    return now.astimezone(zone(tz_name)).date()


def local_datetime(day: date, hhmm: str, tz_name: str) -> datetime:
    """The UTC instant of local `hhmm` on `day`. A wall time that does not exist (spring
    forward) becomes the first minute after it that does; one that happens twice (fall back)
    is the first."""
    tz = zone(tz_name)
    wall = datetime.combine(day, time.fromisoformat(hhmm))
    candidate = wall
    # A nonexistent time round-trips to another wall time. Gaps are an hour or less in
    # practice (a whole day at most, Samoa 2011), so stepping by minutes is cheap and exact.
    for _ in range(24 * 60):
        instant = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == candidate:
            return instant
        candidate += timedelta(minutes=1)
    raise ValueError(f"{wall} does not exist in {tz_name}")


def next_prompt_at(after: datetime, tz_name: str, hhmm: str, days: str) -> datetime:
    """The first prompt strictly after `after` on a chosen local day at the local time."""
    day = local_date(after, tz_name) - timedelta(days=1)
    for _ in range(9):
        if str(day.isoweekday()) in days:
            candidate = local_datetime(day, hhmm, tz_name)
            if candidate > after:
                return candidate
        day += timedelta(days=1)
    raise ValueError(f"no prompt day in {days!r}")


SUMMARY_TIME = "18:00"  # the weekly summary comes on the evening of the chosen day
SUNDAY = 7


def next_summary_at(after: datetime, tz_name: str, day: int | None) -> datetime:
    """When the next weekly summary is due: the chosen ISO weekday (Sunday unless chosen)."""
    return next_prompt_at(after, tz_name, SUMMARY_TIME, str(day or SUNDAY))
