"""The edges of the patient journey (issue 11), through the engine on SQLite and PostgreSQL:
invite codes given with /start, /stop while setting up, days and times as people type them,
timezone abbreviations, "5/10" as a pain answer, the next-morning check after a move, the
greeting by local time, and "partly" sessions in /progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.telegram import TelegramChannel
from bot.scheduler import Scheduler
from conftest import CLEAN_SCREEN, WORST_AT, Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.localtime import parse_days
from conversations.program.data import Program
from conversations.prompts import greeting
from storage.models import Assessment, ConversationState, Outbox, ProgramState, User
from telegram_server import BotApiServer, Person

HUGE = "x" * 10_000
EMOJI = "🦵🔥😀"
ADMIN = ("console", "root")
BEFORE_TIMEZONE = len(CLEAN_SCREEN) - 3  # answers up to the timezone question


async def _user(sessions: async_sessionmaker[DbSession], user_id: str) -> User | None:
    async with sessions() as db:
        return await db.scalar(select(User).filter_by(channel_user_id=user_id))


async def _state(sessions: async_sessionmaker[DbSession], user_id: str) -> ConversationState:
    async with sessions() as db:
        user = (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()
        state = await db.get(ConversationState, user.id)
        assert state is not None
        return state


async def _program(sessions: async_sessionmaker[DbSession], user_id: str) -> ProgramState:
    async with sessions() as db:
        user = (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()
        program = await db.get(ProgramState, user.id)
        assert program is not None
        return program


async def _invite_code(engine: Engine) -> str:
    coach = Patient(engine, "coach")
    await coach.send("/start")
    await Patient(engine, ADMIN[1]).send("/grant coach console:coach")
    await coach.send("/invite")
    return coach.text.split("Invite code: ")[1].split(" ")[0]


async def _at(engine: Engine, answers: int, user_id: str = "u1") -> Patient:
    patient = Patient(engine, user_id)
    await patient.send("/start")
    await patient.answer_all(*CLEAN_SCREEN[:answers])
    return patient


# --- invite codes ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["BADCODE1", "nope", EMOJI, HUGE, "expired", "revoked"])
async def test_start_with_a_bad_invite_code_says_so_before_anything_else(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock,
        bad: str) -> None:
    if bad in ("expired", "revoked"):
        code = await _invite_code(staff_engine)
        if bad == "revoked":
            await Patient(staff_engine, "coach").send(f"/invite revoke {code}")
        else:
            clock.advance(timedelta(days=15))
        bad = code
    patient = Patient(staff_engine, "u1")
    await patient.send(f"/start {bad}")
    told, consent = patient.replies[0].text, patient.replies[-1].text
    assert "unknown, revoked or expired" in told and "not connected with a coach" in told
    assert "ask your coach for a new code" in told and "/join CODE" in told
    assert "without a coach" in told and "Do you agree?" in consent
    assert len(told) < 400  # a huge code is not echoed
    assert "invite" not in (await _state(sessions, "u1")).answers
    await patient.answer_all(*CLEAN_SCREEN)
    assert "All set" in patient.text
    user = await _user(sessions, "u1")
    assert user is not None and user.coach_id is None


async def test_start_with_a_good_code_says_who_and_links_after_consent(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    code = await _invite_code(staff_engine)
    patient = Patient(staff_engine, "u1")
    await patient.send(f"/start {code.lower()}")
    assert "invite code is valid" in patient.replies[0].text
    await patient.press("I agree")
    assert "You are now connected with" in patient.text
    coach = await _user(sessions, "coach")
    user = await _user(sessions, "u1")
    assert user is not None and coach is not None and user.coach_id == coach.id


async def test_a_code_sent_again_before_consent_is_checked_and_kept(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    code = await _invite_code(staff_engine)
    patient = Patient(staff_engine, "u1")
    await patient.send("/start")
    await patient.send("/start BADCODE1")
    assert "unknown, revoked or expired" in patient.text and "Do you agree?" in patient.text
    await patient.send("/cancel")
    await patient.send(f"/start {code}")
    assert "invite code is valid" in patient.text
    await patient.press("I agree")
    assert "You are now connected with" in patient.text
    user = await _user(sessions, "u1")
    assert user is not None and user.coach_id is not None


async def test_a_code_that_expires_before_consent_is_told_at_consent(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession],
        clock: ManualClock) -> None:
    code = await _invite_code(staff_engine)
    patient = Patient(staff_engine, "u1")
    await patient.send(f"/start {code}")
    clock.advance(timedelta(days=15))
    await patient.press("I agree")
    assert "unknown, revoked or expired" in patient.text
    assert "carry on without a coach" in patient.text and "Safety question 1" in patient.text
    user = await _user(sessions, "u1")
    assert user is not None and user.coach_id is None


@pytest.mark.parametrize("bad", ["BADCODE1", EMOJI, HUGE])
async def test_join_with_a_bad_code_says_how_to_get_a_new_one(staff_engine: Engine,
                                                             bad: str) -> None:
    patient = await enrolled(staff_engine, "u1")
    await patient.send(f"/join {bad}")
    assert "unknown, revoked or expired" in patient.text
    assert "ask your coach for a new code, then send /join CODE" in patient.text


# --- /stop while setting up -----------------------------------------------------------------
async def test_stop_during_onboarding_ends_it(engine: Engine,
                                              sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at(engine, 3)  # consented, two safety questions answered
    await patient.send("/stop")
    assert "Stopped setting up" in patient.text and "Let us finish" not in patient.text
    assert patient.buttons == []
    state = await _state(sessions, "u1")
    assert (state.flow, state.answers) == ("idle", {})
    await patient.send("/stop")
    assert "stopped already" in patient.text
    async with sessions() as db:
        assert (await db.scalars(select(Assessment))).all() == []
    await patient.send("/start")
    assert "Safety question 1" in patient.text


async def test_stop_before_consent_keeps_nothing(engine: Engine,
                                                 sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.send("/stop")
    assert "not kept anything" in patient.text
    assert await _user(sessions, "u1") is None


# --- days -------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed,stored,said", [
    ("mon-fri", "12345", "on weekdays"),
    ("Mon–Fri", "12345", "on weekdays"),
    ("Mon - Fri", "12345", "on weekdays"),
    ("weekdays", "12345", "on weekdays"),
    ("weekends", "67", "at weekends"),
    ("mon, wed, fri", "135", "on Mon, Wed, Fri"),
    ("every day", "1234567", "every day"),
    ("Monday to Friday", "12345", "on weekdays"),
    ("Tuesdays and Thursdays", "24", "on Tue, Thu"),
    ("fri-mon", "1567", "on Mon, Fri, Sat, Sun"),
    ("weekends and wed", "367", "on Wed, Sat, Sun"),
])
async def test_days_as_people_type_them(engine: Engine, sessions: async_sessionmaker[DbSession],
                                        typed: str, stored: str, said: str) -> None:
    patient = await _at(engine, len(CLEAN_SCREEN) - 1)
    await patient.send(typed)
    assert f"I will remind you {said} at 07:00" in patient.text, patient.text
    user = await _user(sessions, "u1")
    assert user is not None and user.reminder_days == stored


@pytest.mark.parametrize("bad", ["monkey", "mon-", "-fri", "mon--fri", "mon-xyz", "funday",
                                 "1,3,5", "0", "", HUGE, EMOJI, "mon🦵"])
async def test_bad_days_get_a_hint_with_ranges(engine: Engine,
                                               sessions: async_sessionmaker[DbSession],
                                               bad: str) -> None:
    patient = await _at(engine, len(CLEAN_SCREEN) - 1)
    before = await _state(sessions, "u1")
    await patient.send(bad)
    assert "mon-fri, weekends, or mon wed fri" in patient.text
    after = await _state(sessions, "u1")
    assert (after.step, after.version) == (before.step, before.version)


def test_a_range_covers_every_day_between_its_ends() -> None:
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    for i, first in enumerate(names):
        for j, last in enumerate(names):
            days = parse_days(f"{first}-{last}")
            assert days is not None and len(days) == (j - i) % 7 + 1
            assert str(i + 1) in days and str(j + 1) in days


# --- the reminder time ----------------------------------------------------------------------
@pytest.mark.parametrize("typed,stored", [("5", "05:00"), ("7", "07:00"), ("1", "01:00"),
                                          ("19", "19:00"), ("0", "00:00"), ("20:00", "20:00"),
                                          ("7pm", "19:00")])
async def test_a_bare_number_is_always_an_hour(engine: Engine,
                                               sessions: async_sessionmaker[DbSession],
                                               typed: str, stored: str) -> None:
    patient = await _at(engine, len(CLEAN_SCREEN) - 2)
    assert "A number on its own is an hour" in patient.text
    assert [b.label for b in patient.buttons] == ["07:00", "08:00", "12:00", "18:00", "20:00"]
    await patient.send(typed)
    assert f"Reminder time: {stored}." in patient.text
    assert (await _state(sessions, "u1")).answers["reminder_time"] == stored


@pytest.mark.parametrize("bad", ["24", "99", "-1", "7:60", "5/10", "", HUGE, EMOJI])
async def test_bad_times_reask_with_the_hour_rule(engine: Engine,
                                                  sessions: async_sessionmaker[DbSession],
                                                  bad: str) -> None:
    patient = await _at(engine, len(CLEAN_SCREEN) - 2)
    before = await _state(sessions, "u1")
    await patient.send(bad)
    assert "19 (an hour)" in patient.text
    assert (await _state(sessions, "u1")).version == before.version


# --- timezones ------------------------------------------------------------------------------
@pytest.mark.parametrize("typed,stored", [("EST", "America/New_York"),
                                          ("edt", "America/New_York"),
                                          ("CET", "Europe/Berlin"), ("PST", "America/Los_Angeles"),
                                          ("AEST", "Australia/Sydney"), ("JST", "Asia/Tokyo")])
async def test_timezone_abbreviations(engine: Engine, sessions: async_sessionmaker[DbSession],
                                      typed: str, stored: str) -> None:
    patient = await _at(engine, BEFORE_TIMEZONE)
    await patient.send(typed)
    assert (await _state(sessions, "u1")).answers["timezone"] == stored
    assert "local time" in patient.text  # on to the reminder time


async def test_ist_asks_which_one(engine: Engine, sessions: async_sessionmaker[DbSession]
                                  ) -> None:
    patient = await _at(engine, BEFORE_TIMEZONE)
    await patient.send("IST")
    assert "IST can mean India, Ireland or Israel" in patient.text
    assert [b.label for b in patient.buttons] == ["India", "Ireland", "Israel"]
    assert "timezone" not in (await _state(sessions, "u1")).answers
    await patient.press("India")
    answers = (await _state(sessions, "u1")).answers
    assert answers["timezone"] == "Asia/Kolkata" and "timezone_which" not in answers


async def test_ist_in_settings_asks_which_one_too(engine: Engine,
                                                  sessions: async_sessionmaker[DbSession]
                                                  ) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/settings")
    await patient.press("Timezone")
    await patient.send("ist")
    assert "Which one is yours?" in patient.text
    await patient.send("Ireland")  # the label typed
    assert "Saved" in patient.text
    user = await _user(sessions, "u1")
    assert user is not None and user.timezone == "Europe/Dublin"


@pytest.mark.parametrize("bad", ["XST", "I S T", "", HUGE, EMOJI])
async def test_unknown_abbreviations_get_the_hint(engine: Engine,
                                                  sessions: async_sessionmaker[DbSession],
                                                  bad: str) -> None:
    patient = await _at(engine, BEFORE_TIMEZONE)
    await patient.send(bad)
    assert "an abbreviation (EST, CET)" in patient.text
    assert (await _state(sessions, "u1")).step == "timezone"


# --- pain answers -------------------------------------------------------------------------
@pytest.mark.parametrize("typed,stored", [("5/10", 5), ("5 / 10", 5), ("0/10", 0),
                                          ("10/10", 10), ("7 out of 10", 7)])
async def test_pain_out_of_ten(engine: Engine, sessions: async_sessionmaker[DbSession],
                               typed: str, stored: int) -> None:
    patient = await _at(engine, WORST_AT)  # the worst pain question
    await patient.send(typed)
    if stored >= 8:  # CLINICAL.md 2b ends onboarding there, naming the pain as read
        assert f"a worst pain of {stored}/10" in patient.text
    else:
        assert (await _state(sessions, "u1")).answers["worst_pain"] == stored


@pytest.mark.parametrize("bad", ["11/10", "5/100", "5/9", "5/", "-1/10", "", HUGE,
                                 EMOJI, "🦵/10"])
async def test_bad_pain_out_of_ten_reasks(engine: Engine,
                                          sessions: async_sessionmaker[DbSession],
                                          bad: str) -> None:
    patient = await _at(engine, WORST_AT)
    await patient.send(bad)
    assert "whole number from 0 (no pain) to 10" in patient.text
    assert (await _state(sessions, "u1")).step == "worst_pain"


async def test_a_session_pain_of_5_out_of_10(engine: Engine) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    await patient.press("Done")
    await patient.send("5/10")
    assert "5/10" in patient.text


# --- the next-morning check after a move, and greetings -----------------------------------
def _screen(timezone: str, reminder: str) -> list[str]:
    screen = list(CLEAN_SCREEN)
    screen[-3:-1] = [timezone, reminder]
    return screen


async def test_the_next_morning_check_follows_a_timezone_change(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    clock.set(datetime(2026, 1, 14, 17, 0, tzinfo=UTC))  # 18:00 in Paris
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*_screen("Paris", "20:00"))
    await patient.send("/today")
    await patient.press("Done")
    await patient.send("3")
    # 09:00 in Paris on 15 January.
    assert (await _program(sessions, "u1")).next_check_at == datetime(2026, 1, 15, 8, 0,
                                                                       tzinfo=UTC)
    await patient.send("/settings")
    await patient.press("Timezone")
    await patient.send("New York")
    # 09:00 in New York on 15 January, not 09:00 Paris time.
    due = datetime(2026, 1, 15, 14, 0, tzinfo=UTC)
    assert (await _program(sessions, "u1")).next_check_at == due

    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    clock.set(datetime(2026, 1, 15, 8, 30, tzinfo=UTC))  # 09:30 Paris, 03:30 New York
    assert (await ticks.tick()).checks == 0
    clock.set(due)
    assert (await ticks.tick()).checks == 1
    async with sessions() as db:
        check = (await db.scalars(select(Outbox).filter_by(kind="check"))).one()
    assert check.payload["text"].startswith("Good morning")


async def test_the_morning_question_at_teatime_does_not_say_good_morning(
        engine: Engine, clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")  # London
    await patient.send("/today")
    await patient.press("Done")
    await patient.send("2")
    clock.set(datetime(2026, 1, 15, 17, 20, tzinfo=UTC))  # 17:20 in London
    await patient.send("/today")
    assert "Good afternoon" in patient.text and "Good morning" not in patient.text


def test_greetings_follow_the_local_hour() -> None:
    said = {hour: greeting(datetime(2026, 1, 15, hour, 0)) for hour in range(24)}
    assert {h for h, g in said.items() if g == "Good morning"} == set(range(5, 12))
    assert {h for h, g in said.items() if g == "Good afternoon"} == set(range(12, 18))
    assert {h for h, g in said.items() if g == "Good evening"} == {*range(0, 5), *range(18, 24)}


# --- /progress ------------------------------------------------------------------------------
async def test_progress_counts_a_partly_session_as_partly(engine: Engine) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    await patient.press("Partly")
    await patient.send("2")
    await patient.send("/progress")
    assert "0 of 1 sessions done and 1 partly done" in patient.text
    assert "1 of 1 sessions done" not in patient.text


# --- once through Telegram ------------------------------------------------------------------
async def test_the_journey_edges_on_telegram(telegram_api: BotApiServer,
                                             telegram_bot: TelegramChannel,
                                             sessions: async_sessionmaker[DbSession]) -> None:
    ann = Person(telegram_api, 5101)
    await ann.say("/start BADCODE1")  # what a deep link with a stale code sends
    assert "unknown, revoked or expired" in ann.text and "Do you agree?" in ann.text
    screen = list(CLEAN_SCREEN)
    screen[-3:] = ["EST", "5", "Mon–Fri"]
    await ann.answer_all(*screen)
    assert "I will remind you on weekdays at 05:00 (America/New_York)" in ann.text, ann.text
    await ann.say("/today")
    await ann.press("Partly")
    await ann.say("5/10")
    await ann.say("/progress")
    assert "0 of 1 sessions done and 1 partly done" in ann.text
    user = await _user(sessions, "5101")
    assert user is not None and user.coach_id is None and user.reminder_days == "12345"

    bob = Person(telegram_api, 5102)
    await bob.say("/start")
    await bob.press("I agree")
    await bob.say("/stop")
    assert "Stopped setting up" in bob.text
