"""Property tests over whole years: iterating `next_prompt_at` gives exactly one prompt per
chosen local day, at the chosen local time, or at the next valid minute when a daylight-saving
change skips that time; a time that happens twice fires once, the first time."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from conversations.localtime import local_date, next_prompt_at

ZONES = ["Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata",
         "Pacific/Chatham"]
# Wall times next to these zones' changes (01:00-02:00 London, 02:00-03:00 New York and Sydney,
# 02:45-03:45 Chatham) are drawn often; any other minute of the day too.
NEAR_CHANGES = ["00:59", "01:00", "01:30", "01:59", "02:00", "02:30", "02:45", "02:59",
                "03:00", "03:15", "03:44", "03:45", "03:46"]
hhmm = st.one_of(st.sampled_from(NEAR_CHANGES),
                 st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23),
                           st.integers(0, 59)))
weekdays = st.sets(st.integers(1, 7), min_size=1).map(lambda s: "".join(map(str, sorted(s))))
years = st.integers(2024, 2027)


def first_valid(day: date, hhmm: str, tz: ZoneInfo) -> datetime:
    """The oracle, by brute force: the first minute at or after the wall time that exists on
    that day, at its first occurrence (fold=0), as UTC."""
    wall = datetime.combine(day, time.fromisoformat(hhmm))
    for minutes in range(3 * 60):
        candidate = wall + timedelta(minutes=minutes)
        instant = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == candidate:
            return instant
    raise AssertionError(f"no valid minute after {wall} in {tz}")


def prompts_between(start: datetime, end: datetime, tz_name: str, hhmm: str,
                    days: str) -> list[datetime]:
    prompts, at = [], start
    while (at := next_prompt_at(at, tz_name, hhmm, days)) < end:
        prompts.append(at)
    return prompts


def year_of_prompts(year: int, tz_name: str, hhmm: str, days: str) -> list[datetime]:
    tz = ZoneInfo(tz_name)
    start = datetime(year, 1, 1, tzinfo=tz).astimezone(UTC) - timedelta(microseconds=1)
    end = datetime(year + 1, 1, 1, tzinfo=tz).astimezone(UTC)
    return prompts_between(start, end, tz_name, hhmm, days)


@settings(max_examples=150, deadline=None)
@given(tz_name=st.sampled_from(ZONES), hhmm=hhmm, days=weekdays, year=years)
def test_one_prompt_per_chosen_local_day_at_the_local_time(tz_name: str, hhmm: str,
                                                           days: str, year: int) -> None:
    tz = ZoneInfo(tz_name)
    prompts = year_of_prompts(year, tz_name, hhmm, days)
    chosen = [date(year, 1, 1) + timedelta(days=n)
              for n in range((date(year + 1, 1, 1) - date(year, 1, 1)).days)]
    chosen = [day for day in chosen if str(day.isoweekday()) in days]
    assert [local_date(p, tz_name) for p in prompts] == chosen
    for day, prompt in zip(chosen, prompts, strict=True):
        assert prompt == first_valid(day, hhmm, tz), (day, prompt.astimezone(tz))


@settings(max_examples=300, deadline=None)
@given(tz_name=st.sampled_from(ZONES), hhmm=hhmm, days=weekdays, year=years,
       offset=st.floats(0, 1), at_prompt=st.booleans())
# Once failed: 00:00 UTC on 1 January is still 31 December in New York, and the oracle listed
# only the prompts of the local year, so it expected the next Sunday instead of that evening.
@example(tz_name="America/New_York", hhmm="19:01", days="7", year=2024, offset=0.0,
         at_prompt=False)
def test_the_next_prompt_after_any_instant_is_the_first_scheduled_one_after_it(
        tz_name: str, hhmm: str, days: str, year: int, offset: float, at_prompt: bool) -> None:
    after = datetime(year, 1, 1, tzinfo=UTC) + timedelta(days=300 * offset)
    # The oracle covers more than a week either side of the instant, in UTC, whatever the local
    # date: the prompt nearest to it and the one after that are always inside.
    prompts = prompts_between(after - timedelta(days=8), after + timedelta(days=16), tz_name,
                              hhmm, days)
    if at_prompt:
        after = min(prompts, key=lambda p: abs(p - after))
    following = [p for p in prompts if p > after]
    assert following, "every weekday set has a prompt within a week"
    assert next_prompt_at(after, tz_name, hhmm, days) == following[0]


def test_a_skipped_time_moves_to_the_first_valid_minute() -> None:
    # London springs forward at 01:00 GMT on 29 March 2026: 01:00-01:59 does not exist.
    prompt = next_prompt_at(datetime(2026, 3, 28, 12, tzinfo=UTC), "Europe/London", "01:30",
                            "1234567")
    assert prompt.astimezone(ZoneInfo("Europe/London")).strftime("%d %H:%M") == "29 02:00"


def test_a_repeated_time_fires_once_at_its_first_occurrence() -> None:
    # New York falls back at 02:00 EDT on 1 November 2026: 01:00-01:59 happens twice.
    start = datetime(2026, 10, 31, 12, tzinfo=UTC)
    first = next_prompt_at(start, "America/New_York", "01:30", "1234567")
    second = next_prompt_at(first, "America/New_York", "01:30", "1234567")
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert second == datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # the next day, 01:30 EST
