"""The patient journey through the engine, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_KUJALA, CLEAN_SCREEN, SIGNS_AT, Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.screening import RED_FLAGS
from storage.models import (
    PERSONAL_TABLES,
    Assessment,
    AuditLog,
    ConversationState,
    Outbox,
    ProgramState,
    ProgressionEvent,
    Session,
    User,
)


async def _one(sessions: async_sessionmaker[DbSession], model: type, **where: object) -> object:
    async with sessions() as db:
        query = select(model).filter_by(**where)
        return (await db.scalars(query)).one()


async def _count(sessions: async_sessionmaker[DbSession], model: type) -> int:
    async with sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def test_start_shows_disclaimer_and_stores_only_the_pending_step(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    assert "not a diagnosis" in patient.text
    assert "not a replacement for a physiotherapist or doctor" in patient.text
    assert [b.label for b in patient.buttons] == ["I agree", "I do not agree"]
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "pending" and user.display_name == "" and user.consent_at is None
    state = await _one(sessions, ConversationState, user_id=user.id)
    assert (state.flow, state.step, state.answers) == ("onboarding", "consent", {})


async def test_declining_consent_erases_the_pending_row(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.press("I do not agree")
    assert "not kept anything" in patient.text
    for model, _ in PERSONAL_TABLES:
        assert await _count(sessions, model) == 0, model.__tablename__


async def test_full_onboarding_enrols_at_level_2(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    assert f"knee score is {CLEAN_KUJALA}/100" in patient.text
    assert "5 of the 5" in patient.text and "level 2" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "active" and user.timezone == "Europe/London"
    assert (user.reminder_time, user.reminder_days, user.knee) == ("07:00", "1234567", "left")
    assert user.consent_version and user.display_name == "Name of u1"
    program = await _one(sessions, ProgramState, user_id=user.id)
    assert program.level == 2 and program.baseline_worst_pain == 4
    # 08:00 UTC in January is 08:00 in London: the next 07:00 prompt is tomorrow.
    assert program.next_prompt_at == clock.now().replace(hour=7) + timedelta(days=1)
    kujala = await _one(sessions, Assessment, user_id=user.id, kind="kujala")
    assert kujala.score == CLEAN_KUJALA
    symptoms = await _one(sessions, Assessment, user_id=user.id, kind="symptoms")
    assert symptoms.score == 5 and symptoms.answers["worst_pain"] == 4
    start = await _one(sessions, ProgressionEvent, user_id=user.id)
    assert (start.rule, start.to_level) == ("R5", 2)


async def test_high_worst_pain_starts_at_level_1(engine: Engine) -> None:
    patient = await enrolled(engine, "u1", worst_pain="6")
    assert "level 1" in patient.text


async def test_red_flag_refers_and_gives_no_program(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all("I agree", "No", "Yes, it locks or gives way")
    assert 'You answered: "Yes, it locks or gives way"' in patient.text
    assert "physiotherapist or doctor" in patient.text
    assert "will not give you an exercise program" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "referred"
    referral = await _one(sessions, Assessment, user_id=user.id, kind="redflag")
    assert referral.answers == {"answers": ["no", "yes"], "flag": 2, "rule": "screen",
                                "answered": '"Yes, it locks or gives way"'}
    assert await _count(sessions, ProgramState) == 0
    await patient.send("/today")
    assert "clinician" in patient.text
    assert await _count(sessions, Session) == 0


async def test_referred_at_screen_can_screen_again_after_assessment(
        engine: Engine, clock: ManualClock) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all("I agree", "Yes")
    clock.advance(timedelta(days=1))  # R9: the next local day at the earliest
    await patient.send("/resume")
    await patient.press("No, not yet")
    assert "see a clinician first" in patient.text
    await patient.send("/resume")
    await patient.press("Yes, I was assessed and may exercise")
    assert f"Safety question 1 of {len(RED_FLAGS)}" in patient.text
    await patient.answer_all(*CLEAN_SCREEN[1:])
    assert "All set" in patient.text


async def test_today_lists_the_exercises_of_the_level(engine: Engine) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    text = patient.text.lower()
    assert "level 2" in text
    for words in ("foam-roll", "stretch", "ball", "straight leg raise", "knee extension",
                  "squat", "foot turned out", "3 x 10"):
        assert words in text, words
    # A "Show me how" per exercise of the level on the session, then the report's question.
    shows = [f"Show me how: {e.name.split(' (')[0]}" for e in engine.program.exercises
             if e.id in engine.program.levels[1].doses]
    assert [b.label for b in patient.buttons] == [*shows, "Done", "Partly", "Skipped"]


async def test_report_with_high_pain_regresses_and_says_why(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    await patient.press("Done")
    await patient.press("7")
    assert "level 1" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    program = await _one(sessions, ProgramState, user_id=user.id)
    assert program.level == 1
    session = await _one(sessions, Session, user_id=user.id)
    assert (session.status, session.pain_during) == ("done", 7)
    event = await _one(sessions, ProgressionEvent, user_id=user.id, action="regress")
    assert (event.rule, event.from_level, event.to_level) == ("R3", 2, 1)


async def test_pain_spike_pauses_refers_and_alerts_the_coach(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await enrolled(engine, "coach")
    async with sessions() as db, db.begin():
        coach_row = (await db.scalars(select(User).filter_by(channel_user_id="coach"))).one()
        coach_row.role = "coach"
        user = (await db.scalars(select(User).filter_by(channel_user_id="u1"))).one()
        user.coach_id = coach_row.id
    await patient.send("/pain")
    await patient.press("9")
    assert "urgent care" in patient.text and "/resume" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "referred"
    program = await _one(sessions, ProgramState, user_id=user.id)
    assert program.next_prompt_at is None and program.paused_reason == "R4"
    alert = await _one(sessions, Outbox, kind="alert")
    assert alert.chat_id == "coach" and alert.payload["text"] == (
        "Name of u1 (console:u1) reported pain 9/10 (a /pain report); their program is paused "
        "until you clear it (/clear console:u1).")
    await patient.send("/today")
    assert "until a clinician" in patient.text
    await patient.send("/resume")  # R9: with a coach, only the coach lifts it
    assert "until your coach clears it" in patient.text and not patient.buttons
    assert (await _one(sessions, User, channel_user_id="u1")).status == "referred"
    coach = Patient(engine, "coach")
    await coach.send("/clear console:u1")
    assert "restart at level 1" in coach.text
    assert (await _one(sessions, User, channel_user_id="u1")).status == "active"
    assert (await _one(sessions, ProgramState, user_id=user.id)).level == 1


async def test_three_easy_days_progress_a_level(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    for _ in range(3):
        await patient.send("/today")
        await patient.press("Done")
        await patient.press("1")
        clock.advance(timedelta(days=1))
        await patient.send("/today")  # asks the morning check first
        await patient.press("Same or better")
        await patient.press("No")
    assert "level 3" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    event = await _one(sessions, ProgressionEvent, user_id=user.id, action="progress")
    assert (event.rule, event.from_level, event.to_level) == ("R1", 2, 3)
    # After the check the new day's session is offered at the new level.
    assert "Today's session (level 3)" in patient.text


async def test_morning_symptom_stops_the_program(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    await patient.press("Partly")
    await patient.press("2")
    clock.advance(timedelta(days=1))
    await patient.send("/today")
    await patient.press("Same or better")
    await patient.press("Yes")
    assert "urgent care" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "referred"


async def test_skipped_day_changes_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    await patient.press("Skipped")
    assert "never change your level" in patient.text
    await patient.send("/today")
    assert "already reported" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    assert (await _one(sessions, ProgramState, user_id=user.id)).level == 2


async def test_settings_change_time_recomputes_next_prompt(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/settings")
    await patient.press("Time")
    await patient.send("25:00")
    assert "time of day" in patient.text
    await patient.send("18:30")
    assert "Saved" in patient.text and "18:30" in patient.text
    user = await _one(sessions, User, channel_user_id="u1")
    program = await _one(sessions, ProgramState, user_id=user.id)
    assert program.next_prompt_at == clock.now().replace(hour=18, minute=30)
    await patient.send("/settings")
    await patient.press("Timezone")
    await patient.send("Mars/Olympus")
    assert "do not know that timezone" in patient.text
    await patient.send("Asia/Kolkata")
    program = await _one(sessions, ProgramState, user_id=user.id)
    # 18:30 in Kolkata (UTC+5:30) is 13:00 UTC, still ahead today.
    assert program.next_prompt_at == clock.now().replace(hour=13, minute=0)


async def test_pause_resume_stop(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/pause")
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "paused"
    assert (await _one(sessions, ProgramState, user_id=user.id)).next_prompt_at is None
    await patient.send("/today")
    assert "paused" in patient.text
    await patient.send("/resume")
    assert (await _one(sessions, ProgramState, user_id=user.id)).next_prompt_at is not None
    await patient.send("/stop")
    await patient.press("Yes")
    user = await _one(sessions, User, channel_user_id="u1")
    assert user.status == "stopped"
    assert (await _one(sessions, ProgramState, user_id=user.id)).next_prompt_at is None


async def test_cancel_mid_onboarding_keeps_nothing_half_written(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*CLEAN_SCREEN[:SIGNS_AT + 3])
    await patient.send("/cancel")
    assert "Nothing from that conversation was saved" in patient.text
    assert await _count(sessions, Assessment) == 0
    state = await _one(sessions, ConversationState)
    assert (state.flow, state.answers) == ("idle", {})
    await patient.send("/start")
    assert "Safety question 1" in patient.text


async def test_help_mid_flow_reasks_the_same_question(engine: Engine) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*CLEAN_SCREEN[:3])
    await patient.send("/help")
    assert "/today" in patient.text and f"Safety question 3 of {len(RED_FLAGS)}" in patient.text


async def test_mydata_exports_and_delete_erases_everything(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    import json

    other = await enrolled(engine, "other")
    assert other.buttons == []
    patient = await enrolled(engine, "u1")
    await patient.send("/today")
    await patient.press("Done")
    await patient.press("3")
    await patient.send("/mydata")
    document = next(r.document for r in patient.replies if r.document)
    exported = json.loads(document.content)
    assert exported["schema"] == "kneecoach-export/1"
    assert exported["tables"]["users"][0]["channel_user_id"] == "u1"
    assert exported["tables"]["sessions"][0]["pain_during"] == 3
    other_id = (await _one(sessions, User, channel_user_id="other")).id
    assert exported["tables"]["users"][0]["id"] != other_id
    assert all(row.get("user_id") in (None, exported["tables"]["users"][0]["id"])
               for table in exported["tables"].values() for row in table)
    await patient.send("/delete")
    await patient.send("yes")
    assert "Nothing was erased" in patient.text
    await patient.send("DELETE")
    assert "erased" in patient.text
    async with sessions() as db:
        users = (await db.scalars(select(User.channel_user_id))).all()
        assert users == ["other"]
        for model, column in PERSONAL_TABLES:
            rows = (await db.scalars(select(model))).all()
            assert all(getattr(row, column) is not None for row in rows)
        audit = (await db.scalars(select(AuditLog).filter_by(action="erasure"))).one()
        assert "u1" not in str(audit.detail) and audit.actor == "patient"
    await other.send("/today")
    assert "Today's session" in other.text


async def test_six_week_review_is_recommended_once(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """R8 through the engine: 6 weeks of adherent sessions at pain 3-4 with no improvement."""
    patient = await enrolled(engine, "u1")
    reviews = 0
    for _ in range(44):
        await patient.send("/today")
        if "How does your knee feel" in patient.text:
            await patient.press("Same or better")
            await patient.press("No")
            reviews += "Six weeks in" in patient.text
        if "Four weeks have passed" in patient.text:
            await patient.press("Later")
        await patient.press("Done")
        await patient.press("4")
        clock.advance(timedelta(days=1))
    assert reviews == 1
    user = await _one(sessions, User, channel_user_id="u1")
    event = await _one(sessions, ProgressionEvent, user_id=user.id, rule="R8")
    assert event.action == "review"
    assert (await _one(sessions, ProgramState, user_id=user.id)).level == 2
