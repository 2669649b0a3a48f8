"""Daily prompts and checks through the tick and the outbox sender, on SQLite and PostgreSQL:
never lost, never doubled. The clock is a ManualClock that the tests move; nothing sleeps
waiting for a schedule."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.delivery import Blocked, Progress, RetryLater, Undeliverable
from bot.scheduler import Scheduler, run_worker
from bot.sender import OutboxSender
from bot.settings import Settings
from conftest import enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.messages import Outbound
from conversations.program.data import Program
from conversations.prompts import prompt_message
from storage.models import Outbox, ProgramState, ProgressionEvent, Session, User

GRACE = timedelta(minutes=180)
ROOT = Path(__file__).resolve().parent.parent
# The first prompt of a patient enrolled by `enrolled` (London, 07:00, every day) on the
# clock fixture's 14 January 2026: 15 January at 07:00 GMT.
FIRST_PROMPT = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)


class Platform:
    """A stand-in for the chat platform's API (not for our code): records what arrives and
    fails as told. `fail(outbound)` returns an exception to raise, or None to accept."""

    def __init__(self, channel: str = "console",
                 fail: Callable[[Outbound], BaseException | None] = lambda _: None) -> None:
        self.channel = channel
        self.fail = fail
        self.received: list[Outbound] = []
        self.calls = 0
        self.arrived = asyncio.Event()  # set by the first message that arrives

    async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
        self.calls += 1
        error = self.fail(outbound)
        if error is not None:
            raise error
        self.received.append(outbound)
        self.arrived.set()
        return str(len(self.received))

    def texts(self, chat_id: str) -> list[str]:
        return [o.text for o in self.received if o.chat_id == chat_id]


def scheduler(sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock,
              **options: Any) -> Scheduler:
    return Scheduler(sessions, program, clock, grace=GRACE, **options)


def sender(sessions: async_sessionmaker[DbSession], platform: Platform, clock: ManualClock,
           **options: Any) -> OutboxSender:
    options.setdefault("rate", 1000)
    return OutboxSender(sessions, {platform.channel: platform}, clock, **options)


async def rows(sessions: async_sessionmaker[DbSession], model: type, **where: Any) -> list[Any]:
    async with sessions() as db:
        return list((await db.scalars(select(model).filter_by(**where))).all())


async def user_id(sessions: async_sessionmaker[DbSession], channel_user_id: str) -> int:
    (user,) = await rows(sessions, User, channel_user_id=channel_user_id)
    return int(user.id)


async def add_patients(sessions: async_sessionmaker[DbSession], count: int, due: datetime
                       ) -> list[int]:
    """Enrolled patients due a prompt at `due`, written straight into the tables (onboarding
    thousands through the engine would only slow the test down)."""
    async with sessions() as db, db.begin():
        ids = list((await db.scalars(insert(User).returning(User.id), [
            {"channel": "console", "channel_user_id": f"p{n}", "chat_id": f"p{n}",
             "status": "active", "timezone": "Europe/London", "reminder_time": "07:00",
             "reminder_days": "1234567", "unreachable": False, "created_at": due}
            for n in range(count)])).all())
        await db.execute(insert(ProgramState), [
            {"user_id": uid, "level": 2, "started_on": due.date(), "baseline_worst_pain": 4,
             "next_prompt_at": due, "updated_at": due} for uid in ids])
    return ids


async def pending(sessions: async_sessionmaker[DbSession]) -> int:
    async with sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(Outbox)
                                   .where(Outbox.status == "pending")) or 0)


async def send_until_empty(outbox: OutboxSender, sessions: async_sessionmaker[DbSession],
                           clock: ManualClock, step: timedelta = timedelta(hours=1)) -> None:
    """Drain; rows told to wait come due as the clock moves on."""
    for _ in range(40):
        await outbox.drain()
        if not await pending(sessions):
            return
        clock.advance(step)
    raise AssertionError("the outbox never emptied")


# --- the tick and the sender -----------------------------------------------------------------
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


# --- several workers, crashes and failures -----------------------------------------------------
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


KILLED_SENDER = """
import asyncio, sys
from datetime import datetime
from bot.sender import OutboxSender
from conversations.clock import ManualClock
from storage.db import create_engine, sessionmaker

class Stuck:
    channel = "console"
    async def deliver(self, outbound, start=0, progress=None):
        print("claimed", flush=True)  # the rows are leased; the platform never gets this one
        await asyncio.Event().wait()

async def main():
    sessions = sessionmaker(create_engine(sys.argv[1]))
    clock = ManualClock(datetime.fromisoformat(sys.argv[2]))
    await OutboxSender(sessions, {"console": Stuck()}, clock, rate=5).drain()

asyncio.run(main())
"""


async def test_a_sender_killed_after_claiming_loses_nothing(
        database_url: str, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 30, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_SENDER, database_url, clock.now().isoformat(),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 60) == b"claimed\n"
    process.send_signal(signal.SIGKILL)
    await process.wait()
    leased = [r for r in await rows(sessions, Outbox) if r.lease_until is not None]
    assert len(leased) == 10  # the dead sender's window: 2 seconds' worth at 5/s

    platform = Platform()
    outbox = sender(sessions, platform, clock)
    await outbox.drain()
    assert len(platform.received) == 20  # the dead sender's rows stay leased for now
    clock.advance(timedelta(minutes=2, seconds=1))
    await outbox.drain()
    assert Counter(o.chat_id for o in platform.received) == {f"p{n}": 1 for n in range(30)}
    assert {r.status for r in await rows(sessions, Outbox)} == {"sent"}


async def test_injected_429_500_and_timeouts_lose_nothing(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 300, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    chance = random.Random(4)
    hung = asyncio.Event()

    def flaky(outbound: Outbound) -> BaseException | None:
        roll = chance.random()
        if roll < 0.033:
            return RetryLater("429 Too Many Requests", retry_after=0.01)
        if roll < 0.066:
            return RetryLater("500 Internal Server Error")
        if roll < 0.1:
            hung.set()
            return TimeoutError()  # as the sender's own timeout raises it
        return None

    platform = Platform(fail=flaky)
    outbox = sender(sessions, platform, clock)
    await send_until_empty(outbox, sessions, clock)
    assert hung.is_set() and outbox.stats["rate_limited"] and outbox.stats["retried"] > 20
    assert Counter(o.chat_id for o in platform.received) == {f"p{n}": 1 for n in range(300)}
    queued = await rows(sessions, Outbox)
    assert {r.status for r in queued} == {"sent"} and max(r.attempts for r in queued) >= 1


async def test_a_hanging_delivery_times_out_and_is_retried(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 1, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()

    class Hangs(Platform):
        async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
            if self.calls == 0:
                self.calls += 1
                await asyncio.Event().wait()
            return await super().deliver(outbound, start, progress)

    platform = Hangs()
    outbox = sender(sessions, platform, clock, timeout=0.05)
    await outbox.drain()
    (row,) = await rows(sessions, Outbox)
    assert (row.status, row.attempts) == ("pending", 1) and "no answer" in (row.error or "")
    await send_until_empty(outbox, sessions, clock)
    assert len(platform.received) == 1


async def test_retries_give_up_after_the_attempt_cap_and_undeliverable_fails_at_once(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 2, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    platform = Platform(fail=lambda o: RetryLater("502 Bad Gateway") if o.chat_id == "p0"
                        else Undeliverable("400 chat not found"))
    outbox = sender(sessions, platform, clock, max_attempts=4, per_chat_seconds=0.01)
    for _ in range(6):
        await outbox.drain()
        clock.advance(timedelta(hours=1))
    by_chat = {r.chat_id: r for r in await rows(sessions, Outbox)}
    assert (by_chat["p0"].status, by_chat["p0"].attempts) == ("failed", 4)
    assert (by_chat["p1"].status, by_chat["p1"].attempts) == ("failed", 1)
    assert platform.calls == 5


async def test_a_429_waits_as_told_and_does_not_count_against_the_cap(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 1, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    told = iter([RetryLater("429 Too Many Requests", retry_after=0.01)] * 5)
    platform = Platform(fail=lambda _: next(told, None))
    outbox = sender(sessions, platform, clock, max_attempts=2, per_chat_seconds=0.01)
    for _ in range(5):
        await outbox.drain()
        (row,) = await rows(sessions, Outbox)
        assert row.status == "pending" and row.not_before == clock.now() + timedelta(
            seconds=0.01)
        clock.advance(timedelta(seconds=0.01))
    await outbox.drain()
    assert len(platform.received) == 1


async def test_a_blocked_user_is_not_retried_and_is_marked_unreachable(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    blocker = await enrolled(engine, "u1")
    await enrolled(engine, "u2")
    ticks = scheduler(sessions, program, clock)
    platform = Platform(fail=lambda o: Blocked("403 Forbidden: bot was blocked by the user")
                        if o.chat_id == "u1" else None)
    outbox = sender(sessions, platform, clock)
    clock.set(FIRST_PROMPT)
    await ticks.tick()
    await send_until_empty(outbox, sessions, clock)
    assert platform.calls == 2 and platform.texts("u2")
    by_chat = {r.chat_id: r for r in await rows(sessions, Outbox)}
    assert by_chat["u1"].status == "blocked" and by_chat["u2"].status == "sent"
    assert (await rows(sessions, User, channel_user_id="u1"))[0].unreachable

    clock.set(FIRST_PROMPT + timedelta(days=1))
    assert (await ticks.tick()).prompts == 1  # u2 only
    await send_until_empty(outbox, sessions, clock)
    assert platform.calls == 3

    await blocker.send("/help")  # writing again makes them reachable
    assert not (await rows(sessions, User, channel_user_id="u1"))[0].unreachable
    clock.set(FIRST_PROMPT + timedelta(days=2))
    assert (await ticks.tick()).prompts == 2


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


async def test_rows_claimed_by_a_stopping_sender_are_given_back(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 20, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    platform = Platform()
    await asyncio.wait_for(sender(sessions, platform, clock, rate=5).run(platform.arrived), 30)
    assert len(platform.received) == 1
    statuses = Counter((r.status, r.lease_until) for r in await rows(sessions, Outbox))
    assert statuses == {("sent", None): 1, ("pending", None): 19}


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


async def test_a_due_row_with_no_deliverer_for_its_channel_waits(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 3, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    async with sessions() as db, db.begin():
        await db.execute(update(Outbox).values(channel="slack"))
    platform = Platform("telegram")
    await sender(sessions, platform, clock).drain()
    assert platform.calls == 0 and await pending(sessions) == 3
