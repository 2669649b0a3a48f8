"""Local time for patients: parsing their timezone, reminder time and days, and finding the
next prompt in UTC. Pure functions over zoneinfo, so DST rules come from the tz database."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel.dates import get_day_names

from conversations import i18n
from conversations.i18n import _

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Each day as people write it: "mo", "mon", "mons", "monday", "mondays", "tues", "thurs".
_DAY_WORDS = {word: n for n, full in enumerate(_FULL_DAY_NAMES, 1)
              for word in (full[:2], full[:3], full[:3] + "s", full, full + "s")}
_DAY_WORDS.update({"tues": 2, "weds": 3, "thur": 4, "thurs": 4})
# Spanish and German days: every patient may type them, whatever language they read.
_DAY_WORDS.update({word: n for n, words in enumerate((
    ("lun", "lunes", "mo", "montag", "montags"),
    ("mar", "martes", "di", "dienstag", "dienstags"),
    ("mié", "mie", "miércoles", "miercoles", "mi", "mittwoch", "mittwochs"),
    ("jue", "jueves", "do", "donnerstag", "donnerstags"),
    ("vie", "viernes", "fr", "freitag", "freitags"),
    ("sáb", "sab", "sábado", "sabado", "sa", "samstag", "samstags", "sonnabend"),
    ("dom", "domingo", "so", "sonntag", "sonntags"),
), 1) for word in words})
_DAY_GROUPS = {
    **dict.fromkeys(("every day", "everyday", "each day", "daily", "all days", "all week",
                     "all", "7 days", "the whole week"), "1234567"),
    **dict.fromkeys(("weekdays", "weekday", "week days", "work days", "workdays",
                     "working days", "every weekday", "on weekdays"), "12345"),
    **dict.fromkeys(("weekends", "weekend", "at weekends", "on weekends", "every weekend",
                     "at the weekend"), "67"),
    **dict.fromkeys(("cada día", "cada dia", "todos los días", "todos los dias", "diario",
                     "a diario", "täglich", "taeglich", "jeden tag", "alle tage"), "1234567"),
    **dict.fromkeys(("entre semana", "días laborables", "dias laborables", "laborables",
                     "werktags", "wochentags", "an werktagen"), "12345"),
    **dict.fromkeys(("fines de semana", "fin de semana", "el fin de semana", "wochenende",
                     "am wochenende", "wochenenden"), "67"),
}
# Words between two days that make a range: any dash, "to", "through", "till".
_RANGE_WORDS = re.compile(
    r"\s*(?:[-\u2010-\u2015\u2212~]|\b(?:to|through|thru|till|until|a|hasta|bis)\b)\s*")
_LIST_WORDS = re.compile(r"[\s,;/&+.]+|\b(?:and|y|e|und)\b")
# A time's words in Spanish and German, as the am/pm and nothing they stand for:
# "7 de la tarde" is 7pm, "19 Uhr" is 19, "7 Uhr abends" is 7pm.
_TIME_WORDS = (("de la tarde", "pm"), ("de la noche", "pm"), ("de la mañana", "am"),
               ("de la manana", "am"), ("uhr abends", "pm"), ("uhr nachmittags", "pm"),
               ("uhr morgens", "am"), ("uhr früh", "am"), ("abends", "pm"),
               ("nachmittags", "pm"), ("morgens", "am"), ("uhr", ""))
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


# Abbreviations people use for their zone. Each stands for one region's zone, so summer time
# follows the tz database whichever of the pair (EST or EDT) they typed.
ABBREVIATIONS = {
    **dict.fromkeys(("est", "edt", "et"), "America/New_York"),
    **dict.fromkeys(("cdt", "ct"), "America/Chicago"),
    **dict.fromkeys(("mst", "mdt", "mt"), "America/Denver"),
    **dict.fromkeys(("pst", "pdt", "pt"), "America/Los_Angeles"),
    **dict.fromkeys(("akst", "akdt"), "America/Anchorage"),
    "hst": "Pacific/Honolulu",
    **dict.fromkeys(("wet", "west"), "Europe/Lisbon"),
    **dict.fromkeys(("cet", "cest", "met", "mez"), "Europe/Berlin"),
    **dict.fromkeys(("eet", "eest"), "Europe/Athens"),
    "msk": "Europe/Moscow",
    "pkt": "Asia/Karachi",
    "jst": "Asia/Tokyo",
    "kst": "Asia/Seoul",
    "hkt": "Asia/Hong_Kong",
    "sgt": "Asia/Singapore",
    "wib": "Asia/Jakarta",
    "awst": "Australia/Perth",
    **dict.fromkeys(("acst", "acdt"), "Australia/Adelaide"),
    **dict.fromkeys(("aest", "aedt"), "Australia/Sydney"),
    **dict.fromkeys(("nzst", "nzdt"), "Pacific/Auckland"),
    "sast": "Africa/Johannesburg",
    "eat": "Africa/Nairobi",
    "wat": "Africa/Lagos",
    "brt": "America/Sao_Paulo",
}
# Abbreviations that name several zones: the patient is asked which one they mean.
AMBIGUOUS = {
    "ist": (("India", "Asia/Kolkata"), ("Ireland", "Europe/Dublin"),
            ("Israel", "Asia/Jerusalem")),
    "cst": (("US Central", "America/Chicago"), ("China", "Asia/Shanghai")),
    "bst": (("UK (British Summer Time)", "Europe/London"), ("Bangladesh", "Asia/Dhaka")),
    "ast": (("Atlantic (Canada)", "America/Halifax"), ("Arabia", "Asia/Riyadh")),
}
ASK_WHICH = "?"  # parse_timezone's answer for an abbreviation in AMBIGUOUS: "?ist"


def parse_timezone(text: str) -> str | None:
    """An IANA name, a city, an abbreviation ("EST", "CET") or a UTC offset ("+5:30",
    "UTC-3") to a stored zone name; "?ist" for an abbreviation of several zones (AMBIGUOUS)."""
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
    if cleaned in AMBIGUOUS:
        return ASK_WHICH + cleaned
    if cleaned in ABBREVIATIONS:
        return ABBREVIATIONS[cleaned]
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
    spoken = " ".join(text.strip().lower().split())
    for words, half in _TIME_WORDS:
        spoken = spoken.replace(words, half)
    match = _TIME.match(spoken.replace(" ", ""))
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
    """Days as people type them to ISO weekday digits ("135"): "every day", "weekdays",
    "weekends", "mon wed fri", "Mon, Wed and Fri", "mon-fri", "Mon–Fri", "monday to friday",
    "fri-mon" (a range may wrap over the weekend), "weekends and wed". None for anything else,
    so a word that only starts like a day ("monkey") is not a Monday."""
    cleaned = " ".join(text.strip().lower().split())
    if not cleaned or len(cleaned) > 200:
        return None
    if cleaned in _DAY_GROUPS:
        return _DAY_GROUPS[cleaned]
    days: set[int] = set()
    for word in _LIST_WORDS.split(_RANGE_WORDS.sub("-", cleaned)):
        if not word or word in ("on", "every", "each", "los", "el", "cada", "am", "jeden"):
            continue
        first, dash, last = word.partition("-")
        if word in _DAY_GROUPS:
            days.update(int(d) for d in _DAY_GROUPS[word])
        elif not dash and word in _DAY_WORDS:
            days.add(_DAY_WORDS[word])
        elif dash and first in _DAY_WORDS and last in _DAY_WORDS:
            start_day, end_day = _DAY_WORDS[first], _DAY_WORDS[last]
            span = (end_day - start_day) % 7
            days.update((start_day - 1 + i) % 7 + 1 for i in range(span + 1))
        else:
            return None
    return "".join(str(d) for d in sorted(days)) or None


def describe_days(days: str) -> str:
    """The days in the current language: "every day", "on Mon, Wed, Fri", "lun, mié, vie"."""
    if days == "1234567":
        return _("every day")
    if days == "12345":
        return _("on weekdays")
    if days == "67":
        return _("at weekends")
    return _("on {days}", days=", ".join(short_day(int(d)) for d in days))


def short_day(iso_day: int) -> str:
    """ISO weekday 1-7 in a word of the current language: "Mon", "lun", "Mo."."""
    if i18n.current() == i18n.SOURCE:
        return DAY_NAMES[iso_day - 1].capitalize()
    if i18n.current() == i18n.PSEUDO:
        return i18n.pseudo(DAY_NAMES[iso_day - 1].capitalize())
    # Babel's days start on Monday (0), as ISO's do on 1.
    return str(get_day_names("abbreviated", locale=i18n.locale())[iso_day - 1])


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
    for _step in range(24 * 60):
        instant = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == candidate:
            return instant
        candidate += timedelta(minutes=1)
    raise ValueError(f"{wall} does not exist in {tz_name}")


def next_prompt_at(after: datetime, tz_name: str, hhmm: str, days: str) -> datetime:
    """The first prompt strictly after `after` on a chosen local day at the local time."""
    day = local_date(after, tz_name) - timedelta(days=1)
    for _step in range(9):
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
