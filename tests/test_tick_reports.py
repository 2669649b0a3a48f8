"""What the tick sends besides prompts, on SQLite and PostgreSQL: the weekly summary (through
the Telegram test server), the coach's alert after 3 missed prompts in a row, and the
delivery report of a finished broadcast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.telegram import TelegramChannel
from bot.scheduler import Scheduler
from bot.sender import OutboxSender
from conftest import CLEAN_SCREEN, Patient, enrolled, telegram_settings
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.data import Program
from storage.models import Outbox, ProgramState
from telegram_server import BotApiServer, Person

GRACE = timedelta(minutes=180)
SUNDAY_EVENING = datetime(2026, 1, 18, 18, 0, tzinfo=UTC)  # London is on GMT in January


async def onboard(person: Person) -> None:
    await person.say("/start")
    await person.answer_all(*CLEAN_SCREEN)
    assert "All set" in person.text, person.text


async def outbox(sessions: async_sessionmaker[DbSession], kind: str) -> list[Outbox]:
    async with sessions() as db:
        return list((await db.scalars(select(Outbox).filter_by(kind=kind)
                                      .order_by(Outbox.id))).all())


# --- the weekly summary ----------------------------------------------------------------------
async def test_the_weekly_summary_arrives_once_per_local_week_on_telegram(
        telegram_api: BotApiServer, telegram_bot: TelegramChannel,
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    ann, bob = Person(telegram_api, 3001), Person(telegram_api, 3002)
    await onboard(ann)
    await onboard(bob)  # reports nothing
    await ann.say("/today")
    await ann.press("Done")
    await ann.answer_all("2")
    ticks = Scheduler(sessions, program, clock, grace=GRACE)
    sender = OutboxSender(sessions, {"telegram": telegram_bot.deliverer}, clock, rate=28)
    while clock.now() < SUNDAY_EVENING + timedelta(days=7, hours=1):  # ticks all through
        clock.advance(timedelta(hours=3))
        await ticks.tick()
        await sender.drain()

    summaries = [m for m in telegram_api.to(3001) if m.text.startswith("Your week")]
    assert len(summaries) == 2  # the Sunday of each week, once
    assert "level 2" in summaries[0].text and "/progress" in summaries[0].text
    assert "1 of 4 sessions done; worst pain this week 2/10" in summaries[0].text
    # Missing every session is worth a word of encouragement, not silence.
    idle = [m.text for m in telegram_api.to(3002) if m.text.startswith("Your week")]
    assert len(idle) == 2 and all("0 of" in t and "a few more sessions" in t for t in idle)
    assert sorted(r.dedupe_key.split(":")[-1] for r in await outbox(sessions, "summary")) == [
        "2026-W03", "2026-W03", "2026-W04", "2026-W04"]


async def test_the_summary_day_is_a_setting_and_an_outage_skips_a_late_summary(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/pain")
    await patient.answer_all("3")
    await patient.send("/settings")
    await patient.press("Summary day")
    await patient.send("9")  # not a day on offer
    assert "Wed" in [b.label for b in patient.buttons]
    await patient.press("Fri")
    assert "weekly summary on Fridays at 18:00" in patient.text
    async with sessions() as db:
        state = await db.get(ProgramState, 1)
    assert state is not None and state.next_summary_at == datetime(2026, 1, 16, 18, 0,
                                                                    tzinfo=UTC)
    ticks = Scheduler(sessions, program, clock, grace=GRACE)
    clock.set(datetime(2026, 1, 16, 22, 0, 1, tzinfo=UTC))  # down past the grace window
    await ticks.tick()
    assert await outbox(sessions, "summary") == []
    clock.set(datetime(2026, 1, 23, 18, 0, 30, tzinfo=UTC))
    assert (await ticks.tick()).summaries == 1
    await patient.send("/pause")
    clock.set(datetime(2026, 1, 30, 18, 0, 30, tzinfo=UTC))
    assert (await ticks.tick()).summaries == 0  # paused: no summary


# --- the coach's alerts and reports ----------------------------------------------------------
async def coach_with_patients(engine: Engine, names: list[str]) -> tuple[Patient,
                                                                         list[Patient]]:
    coach = Patient(engine, "coach")
    await coach.send("/start")
    await Patient(engine, "root").send("/grant coach console:coach")
    await coach.send("/invite")
    code = coach.text.split("Invite code: ")[1].split(" ")[0]
    patients = []
    for name in names:
        patient = await enrolled(engine, name)
        await patient.send(f"/join {code}")
        patients.append(patient)
    return coach, patients


async def test_the_coach_hears_once_when_a_patient_misses_3_prompts_in_a_row(
        sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({("console", "root")}))
    _, (keen, _absent) = await coach_with_patients(engine, ["keen", "absent"])
    ticks = Scheduler(sessions, program, clock, grace=GRACE)
    clock.set(datetime(2026, 1, 15, 7, 0, 30, tzinfo=UTC))  # the first prompt
    for _ in range(5):  # five days: `keen` reports each session, `absent` never does
        await ticks.tick()
        await keen.send("/today")
        for answer in ("Same or better", "No"):  # the morning check of yesterday's session
            if answer in [b.label for b in keen.buttons]:
                await keen.press(answer)
        await keen.press("Done")
        await keen.answer_all("1")
        clock.advance(timedelta(days=1))
    alerts = [r for r in await outbox(sessions, "alert") if "missed" in r.payload["text"]]
    assert len(alerts) == 1, [a.payload["text"] for a in alerts]
    assert alerts[0].chat_id == "coach"
    # Worded as every other alert: the patient as a coach reads them, then what happened.
    assert alerts[0].payload["text"].startswith(
        "Name of absent (console:absent) missed 3 prompts in a row")


async def test_a_finished_broadcast_sends_the_coach_one_delivery_report(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock,
        telegram_api: BotApiServer) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({("telegram", "4000")}))
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    await channel.start()
    try:
        admin, coach = Person(telegram_api, 4000), Person(telegram_api, 4001)
        await coach.say("/start")
        await admin.say("/grant coach telegram:4001")
        await coach.say("/invite")
        code = coach.text.split("Invite code: ")[1].split(" ")[0]
        for number in (4002, 4003, 4004):
            patient = Person(telegram_api, number)
            await onboard(patient)
            await patient.say(f"/join {code}")
        telegram_api.blocked.add("4003")
        await coach.say("/broadcast")
        await coach.say("Remember: ice after a long walk.")
        await coach.press("Send now")

        ticks = Scheduler(sessions, program, clock, grace=GRACE)
        sender = OutboxSender(sessions, {"telegram": channel.deliverer}, clock, rate=28)
        assert (await ticks.tick()).reports == 0  # still being sent
        await sender.drain()
        assert (await ticks.tick()).reports == 1
        assert (await ticks.tick()).reports == 0  # once
        await sender.drain()
        (report,) = [m for m in telegram_api.to(4001) if "Your broadcast" in m.text]
        assert "reached 2 patients; 1 had blocked the bot; 0 could not be delivered" in (
            report.text)
    finally:
        await channel.stop()
