"""Daily prompts and checks through the tick (conversations/tick.py) and out through the
outbox sender, on SQLite and PostgreSQL: never lost, never doubled, none late after an outage.
The clock is a ManualClock that the tests move; nothing sleeps waiting for a schedule."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from tick_and_send import (
    FIRST_PROMPT,
    Platform,
    add_patients,
    rows,
    scheduler,
    sender,
    user_id,
)

from bot.scheduler import run_worker
from bot.settings import Settings
from conftest import enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.messages import Outbound
from conversations.program.data import Program
from conversations.prompts import prompt_message
from storage.db import create_engine, migrate, sessionmaker
from storage.models import Outbox, ProgramState, ProgressionEvent, Session, User


async def test_a_tick_queues_the_due_prompt_and_the_sender_delivers_it_once(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    await enrolled(engine, "u1")
    uid = await user_id(sessions, "u1")
    ticks, platform = scheduler(sessions, program, clock), Platform()
    outbox = sender(sessions, platform, clock)

    clock.set(FIRST_PROMPT - timedelta(seconds=1))
    assert (await ticks.tick()).prompts == 0
    clock.set(FIRST_PROMPT + timedelta(seconds=20))
    assert (await ticks.tick()).prompts == 1
    assert (await ticks.tick()).prompts == 0  # claimed and moved on: never twice
    await outbox.drain()
    await outbox.drain()

    (prompt,) = platform.received
    assert prompt.chat_id == "u1" and "Time for today's knee exercises (level 2)" in prompt.text
    assert [b.label for b in prompt.buttons[0]] == ["Done", "Partly", "Skipped", "In 1 hour"]
    (session,) = await rows(sessions, Session, user_id=uid)
    assert (session.day.isoformat(), session.status, session.level) == ("2026-01-15",
                                                                        "prompted", 2)
    assert prompt == prompt_message("console", "u1", session.id, 2, program)
    (row,) = await rows(sessions, Outbox, user_id=uid)
    assert (row.kind, row.status, row.dedupe_key) == ("prompt", "sent", f"prompt:{uid}:2026-01-15")
    assert row.sent_at == row.not_before == row.created_at == clock.now()
    assert row.lease_until is None and row.attempts == 0
    (state,) = await rows(sessions, ProgramState, user_id=uid)
    assert state.next_prompt_at == FIRST_PROMPT + timedelta(days=1)


async def test_the_prompt_buttons_answer_the_session(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    platform = Platform()
    clock.set(FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    await sender(sessions, platform, clock).drain()
    (prompt,) = platform.received
    await patient.press_token(prompt.buttons[0][0].token)  # Done
    await patient.send("2")
    assert "Recorded: done, pain 2/10" in patient.text
    (session,) = await rows(sessions, Session, user_id=await user_id(sessions, "u1"))
    assert (session.status, session.pain_during) == ("done", 2)


async def test_the_next_morning_check_comes_once_the_morning_after_a_session(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    ticks, platform = scheduler(sessions, program, clock), Platform()
    outbox = sender(sessions, platform, clock)
    clock.set(FIRST_PROMPT)
    await ticks.tick()
    await outbox.drain()
    await patient.press_token(platform.received[0].buttons[0][0].token)
    await patient.send("3")

    # The check is due with the next day's prompt (07:00 comes before 09:00), and first.
    clock.set(FIRST_PROMPT + timedelta(days=1) - timedelta(seconds=1))
    assert (await ticks.tick()).checks == 0
    clock.advance(timedelta(seconds=30))
    report = await ticks.tick()
    assert (report.checks, report.prompts) == (1, 1)
    assert (await ticks.tick()).checks == 0
    await outbox.drain()
    check, prompt = platform.received[1:]
    assert check.text.startswith("Good morning") and prompt.text.startswith("Time for")
    (state,) = await rows(sessions, ProgramState, user_id=await user_id(sessions, "u1"))
    assert state.next_check_at is None

    await patient.press_token(check.buttons[0][0].token)  # Same or better
    await patient.press("No")
    first_day = (await rows(sessions, Session, day=FIRST_PROMPT.date()))[0]
    assert first_day.morning_delta == 0 and first_day.morning_at is not None
    clock.advance(timedelta(days=1))
    assert (await ticks.tick()).checks == 0


async def test_an_unanswered_prompt_is_missed_when_the_next_one_comes(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    await enrolled(engine, "u1")
    ticks = scheduler(sessions, program, clock)
    clock.set(FIRST_PROMPT)
    await ticks.tick()
    clock.advance(timedelta(days=1))
    await ticks.tick()
    statuses = {s.day.day: s.status for s in await rows(sessions, Session)}
    assert statuses == {15: "missed", 16: "prompted"}


async def test_a_long_outage_records_the_missed_days_and_sends_no_burst(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    await enrolled(engine, "u1")
    await enrolled(engine, "u2")
    uid = await user_id(sessions, "u1")
    ticks, platform = scheduler(sessions, program, clock), Platform()
    # Down from before the first prompt until 08:30 ten days later: the 07:00 prompt of that
    # day is 90 minutes late, inside the grace window; the ten before it are not.
    clock.set(FIRST_PROMPT + timedelta(days=10, minutes=90))
    report = await ticks.tick()
    assert (report.prompts, report.missed) == (2, 20)
    await sender(sessions, platform, clock).drain()
    assert len(platform.texts("u1")) == 1
    sessions_u1 = sorted(await rows(sessions, Session, user_id=uid), key=lambda s: s.day)
    assert [s.status for s in sessions_u1] == ["missed"] * 10 + ["prompted"]
    # R6: after 7 missed days in a row the session is offered one level lower.
    (text,) = platform.texts("u1")
    assert text.startswith("After 7 missed days in a row we restart one level lower, at "
                           "level 1") and "(level 1)" in text
    assert sessions_u1[-1].level == 1
    restart = [e for e in await rows(sessions, ProgressionEvent, user_id=uid)
               if e.rule == "R6"]
    assert [(e.from_level, e.to_level, e.action) for e in restart] == [(2, 1, "restart")]
    assert (await rows(sessions, ProgramState, user_id=uid))[0].level == 1


async def test_after_an_outage_beyond_the_grace_window_nothing_is_sent(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    await enrolled(engine, "u1")
    clock.set(FIRST_PROMPT + timedelta(days=3, minutes=181))
    report = await scheduler(sessions, program, clock).tick()
    assert (report.prompts, report.missed) == (0, 4)
    assert await rows(sessions, Outbox, kind="prompt") == []
    (state,) = await rows(sessions, ProgramState)
    assert state.next_prompt_at == FIRST_PROMPT + timedelta(days=4)


async def test_changing_the_reminder_time_reschedules_at_once(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/settings")
    await patient.press("Time")
    await patient.send("18:30")
    assert "Saved" in patient.text
    ticks = scheduler(sessions, program, clock)
    clock.set(datetime(2026, 1, 14, 18, 29, tzinfo=UTC))
    assert (await ticks.tick()).prompts == 0
    clock.set(datetime(2026, 1, 14, 18, 30, tzinfo=UTC))
    assert (await ticks.tick()).prompts == 1  # today, at the new time, not tomorrow at 07:00
    clock.set(FIRST_PROMPT)
    assert (await ticks.tick()).prompts == 0


async def test_pause_and_stop_mean_no_prompt_and_resume_brings_it_back(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    paused = await enrolled(engine, "u1")
    stopped = await enrolled(engine, "u2")
    await paused.send("/pause")
    await stopped.send("/stop")
    await stopped.press("Yes")
    ticks = scheduler(sessions, program, clock)
    clock.set(FIRST_PROMPT + timedelta(days=2))
    report = await ticks.tick()
    assert (report.prompts, report.missed) == (0, 0)
    await paused.send("/resume")
    clock.set(FIRST_PROMPT + timedelta(days=3))
    report = await ticks.tick()
    assert (report.prompts, report.missed) == (1, 0)  # paused days are not missed days
    assert [r.user_id for r in await rows(sessions, Outbox, kind="prompt")] == [
        await user_id(sessions, "u1")]


async def test_snooze_brings_the_prompt_back_an_hour_later(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    platform = Platform()
    outbox = sender(sessions, platform, clock)
    clock.set(FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    await outbox.drain()
    clock.advance(timedelta(minutes=5))
    await patient.press_token(platform.received[0].buttons[0][3].token)  # In 1 hour
    assert "again in an hour" in patient.text
    clock.advance(timedelta(minutes=59))
    await outbox.drain()
    assert len(platform.received) == 1
    clock.advance(timedelta(minutes=1))
    await outbox.drain()
    again = platform.received[1]
    assert again.text == platform.received[0].text and again.buttons == platform.received[0].buttons


async def test_two_workers_claim_2000_due_prompts_and_send_each_once(
        database_url: str, sessions: async_sessionmaker[DbSession],
        second_sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    ids = await add_patients(sessions, 2000, FIRST_PROMPT)
    one = scheduler(sessions, program, clock, batch=150)
    two = scheduler(second_sessions, program, clock, batch=150)
    first, second = await asyncio.gather(one.tick(), two.tick())
    assert first.prompts + second.prompts == 2000
    assert (await one.tick()).prompts == (await two.tick()).prompts == 0

    platform = Platform()
    # Each claims a quarter second's worth at a time, so the two interleave.
    senders = [sender(sessions, platform, clock, ahead=0.25),
               sender(second_sessions, platform, clock, ahead=0.25)]
    await asyncio.gather(*(s.drain() for s in senders))
    if database_url.startswith("postgresql"):  # SKIP LOCKED: both took a share at once
        assert first.prompts and second.prompts and all(s.stats["sent"] for s in senders)
    assert Counter(o.chat_id for o in platform.received) == {f"p{n}": 1 for n in range(2000)}
    queued = await rows(sessions, Outbox)
    assert len(queued) == 2000 and {r.status for r in queued} == {"sent"}
    assert {r.user_id for r in queued} == set(ids)
    # Each copy is what prompt_message renders for that patient's session (the tick renders
    # one per level and puts each patient's chat and session in).
    chats = {u.id: u.chat_id for u in await rows(sessions, User)}
    expected = {chats[s.user_id]: prompt_message("console", chats[s.user_id], s.id, 2, program)
                for s in await rows(sessions, Session, status="prompted")}
    assert {o.chat_id: o for o in platform.received} == expected


async def test_the_worker_ticks_and_sends_until_stopped(
        engine: Engine, database_url: str, sessions: async_sessionmaker[DbSession],
        program: Program, clock: ManualClock) -> None:
    await enrolled(engine, "u1")
    clock.set(FIRST_PROMPT)
    platform = Platform()
    settings = Settings(database_url=database_url, tick_seconds=3600)
    await asyncio.wait_for(run_worker(settings, sessions, program, {"console": platform},
                                      clock, stop=platform.arrived), 30)
    assert len(platform.received) == 1
    (row,) = await rows(sessions, Outbox)
    assert row.status == "sent"


def _when_the_first_prompt_is_queued(sessions: async_sessionmaker[DbSession],
                                     then: Callable[[], object]) -> None:
    """Call `then` as the tick writes its first prompt into the outbox: mid-batch."""
    called: list[bool] = []

    def check(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not called and statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            called.append(True)
            then()

    event.listen(sessions.kw["bind"].sync_engine, "before_cursor_execute", check)


async def test_a_stop_mid_tick_ends_it_after_the_batch_in_hand_and_the_rest_stays_due(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 30, FIRST_PROMPT)
    ticks = scheduler(sessions, program, clock, batch=10)
    stopped: list[asyncio.Task[None]] = []
    _when_the_first_prompt_is_queued(
        sessions, lambda: stopped.append(asyncio.ensure_future(ticks.stop())))
    assert (await ticks.tick()).prompts == 10  # the batch in hand, committed whole
    await stopped[0]
    assert len(await rows(sessions, Outbox)) == 10
    # The other 20 are still due: the next worker's tick queues them, each once.
    assert (await scheduler(sessions, program, clock, batch=10).tick()).prompts == 20
    queued = await rows(sessions, Outbox)
    assert sorted(r.user_id for r in queued) == sorted({r.user_id for r in queued})
    assert len(queued) == 30


async def test_a_worker_stopped_mid_tick_lets_the_tick_finish_and_logs_no_error(
        database_url: str, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 30, FIRST_PROMPT)
    stop = asyncio.Event()
    _when_the_first_prompt_is_queued(sessions, stop.set)  # as SIGTERM would, mid-tick
    settings = Settings(database_url=database_url, tick_seconds=3600)
    await asyncio.wait_for(run_worker(settings, sessions, program, {"console": Platform()},
                                      clock, stop=stop), 30)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(await rows(sessions, Outbox)) == 30  # the tick's batch was not thrown away


async def test_a_prompt_already_reported_through_today_is_not_sent(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    clock.set(FIRST_PROMPT - timedelta(hours=2))  # 05:00: up early, does it before the prompt
    await patient.send("/today")
    await patient.press("Done")
    await patient.send("1")
    clock.set(FIRST_PROMPT)
    assert (await scheduler(sessions, program, clock).tick()).prompts == 0
    (session,) = await rows(sessions, Session)
    assert session.status == "done"


# Chat ids the database must quote as JSON does when it puts them in a payload: quotes,
# backslashes, emoji, letters beyond ASCII, format marks, the stand-ins' own text, the longest.
AWKWARD_CHATS = ['say "hi"', "back\\slash", "knee 🦵", "Zoë-Ørsted", "%(chat)s %d {}",
                 "987654321987", '"chat-7f3e9a"', "chat-7f3e9a", "\t\n", "9" * 64]


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "encrypted"])
async def test_each_copy_is_its_patients_prompt_whatever_the_chat_level_or_channel(
        database_url: str, program: Program, clock: ManualClock, keyed: bool) -> None:
    """The tick renders a payload per channel and level and the database puts each patient's
    chat and session in (with keys, Python does and encrypts each): every copy is what
    prompt_message gives for that patient, and a second tick queues none again."""
    engine = create_engine(database_url, [Fernet.generate_key().decode()] if keyed else [])
    await migrate(engine)
    sessions = sessionmaker(engine)
    clock.set(FIRST_PROMPT)
    async with sessions() as db, db.begin():
        ids = list((await db.scalars(insert(User).returning(User.id), [
            {"channel": ("console", "telegram")[n % 2], "channel_user_id": str(n),
             "chat_id": chat, "status": "active", "timezone": "Europe/London",
             "reminder_time": "07:00", "reminder_days": "1234567", "unreachable": False,
             "created_at": FIRST_PROMPT} for n, chat in enumerate(AWKWARD_CHATS)])).all())
        await db.execute(insert(ProgramState), [
            {"user_id": uid, "level": 1 + n % 3, "started_on": FIRST_PROMPT.date(),
             "baseline_worst_pain": 4, "next_prompt_at": FIRST_PROMPT,
             "updated_at": FIRST_PROMPT} for n, uid in enumerate(ids)])
    ticks = scheduler(sessions, program, clock, batch=4)  # batches that split the groups
    assert (await ticks.tick()).prompts == len(AWKWARD_CHATS)
    assert (await ticks.tick()).prompts == 0

    users = {u.id: u for u in await rows(sessions, User)}
    expected = {s.user_id: prompt_message(users[s.user_id].channel, users[s.user_id].chat_id,
                                          s.id, s.level, program)
                for s in await rows(sessions, Session, status="prompted")}
    queued = await rows(sessions, Outbox, kind="prompt")
    assert {r.user_id: Outbound.model_validate(r.payload) for r in queued} == expected
    assert {(r.user_id, r.dedupe_key, r.channel, r.chat_id) for r in queued} == {
        (uid, f"prompt:{uid}:2026-01-15", users[uid].channel, users[uid].chat_id)
        for uid in ids}
    assert {(r.status, r.attempts, r.parts_sent, r.not_before, r.created_at)
            for r in queued} == {("pending", 0, 0, FIRST_PROMPT, FIRST_PROMPT)}
    async with engine.connect() as connection:  # as stored: encrypted with keys, else plain
        stored = (await connection.execute(text("SELECT CAST(payload AS TEXT) FROM outbox"
                                                ))).scalars().all()
    assert all(("Time for today's knee exercises" in s) is not keyed for s in stored)
    await engine.dispose()


async def test_one_batch_moves_each_enrolment_to_its_own_next_time_or_clears_it(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    """The times are written in one statement for the batch: each patient gets their own
    schedule's next time (another day, another hour), and one with no schedule left gets
    none, no prompt, and no other patient's time."""
    clock.set(FIRST_PROMPT)
    ids = await add_patients(sessions, 3, FIRST_PROMPT)
    schedules = [("07:00", "1234567"), ("07:00", "4"), (None, None)]  # 15 Jan 2026: a Thursday
    async with sessions() as db, db.begin():
        for uid, (hhmm, days) in zip(ids, schedules, strict=True):
            await db.execute(update(User).where(User.id == uid)
                             .values(reminder_time=hhmm, reminder_days=days))
    assert (await scheduler(sessions, program, clock).tick()).prompts == 2
    states = {s.user_id: s for s in await rows(sessions, ProgramState)}
    assert [states[uid].next_prompt_at for uid in ids] == [
        FIRST_PROMPT + timedelta(days=1), FIRST_PROMPT + timedelta(days=7), None]
    assert {states[uid].level for uid in ids} == {2}
    assert {s.user_id for s in await rows(sessions, Session)} == set(ids[:2])
