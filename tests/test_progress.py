"""Progress the patient can see and data they own: the chart, the Kujala follow-up, the export
and the erasure, through the engine on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import random
from datetime import date, timedelta

import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_KUJALA, CLEAN_SCREEN, KUJALA_AT, Patient, enrolled
from conversations.chart import DaySession, Progress, render
from conversations.clock import ManualClock
from conversations.engine import Engine
from storage import stats
from storage.models import PERSONAL_TABLES, AuditLog, Outbox, User

KUJALA_ANSWERS = CLEAN_SCREEN[KUJALA_AT:KUJALA_AT + 13]
BEST_KUJALA = ["None", "Full weight without pain", "Unlimited", "No difficulty",
               "No difficulty", "No difficulty", "No difficulty", "No difficulty", "None",
               "None", "None", "None", "Yes, fully (no deficit)"]


async def eight_weeks(patient: Patient, clock: ManualClock, seed: int = 7) -> None:
    """A realistic course: mostly done, some partly, skipped and missed days, pain easing."""
    rng = random.Random(seed)
    for day in range(56):
        await patient.send("/today")
        if "How does your knee feel" in patient.text:
            await patient.press(rng.choice(["Same or better"] * 5 + ["A little worse (+1)"]))
            await patient.press("No")
        if "Four weeks have passed" in patient.text:
            await patient.answer_all("Now", *BEST_KUJALA)
            await patient.send("/today")
        if "until a clinician" in patient.text:  # a flare paused it; assessed, they resume
            await patient.send("/resume")  # R9: from the day after the hold began
            if any(b.label.startswith("Yes, I was assessed") for b in patient.buttons):
                await patient.press("Yes, I was assessed and may exercise")
                if "at rest" in patient.text:  # a pain pause: the rest pain must be 5 or less
                    await patient.press("2")
                assert "Welcome back" in patient.text, patient.text
            await patient.send("/today")
        if "How did today's session go?" not in patient.text:
            clock.advance(timedelta(days=1))
            continue
        roll = rng.random()
        if roll < 0.08:
            clock.advance(timedelta(days=1))  # missed: never answered
            continue
        if roll < 0.15:
            await patient.press("Skipped")
        else:
            await patient.press("Partly" if roll < 0.3 else "Done")
            await patient.press(str(max(0, min(10, 5 - day // 12 + rng.randint(-1, 1)))))
        if day % 9 == 4:
            await patient.send("/pain")
            await patient.press(str(rng.randint(2, 5)))
        clock.advance(timedelta(days=1))


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_no_data_gets_a_friendly_message(engine: Engine) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/progress")
    assert "Nothing to chart yet" in patient.text
    assert all(r.image is None for r in patient.replies)


async def test_progress_chart_after_eight_weeks(engine: Engine, clock: ManualClock,
                                                tmp_path: object) -> None:
    patient = await enrolled(engine, "u1")
    await eight_weeks(patient, clock)
    await patient.send("/progress")
    reply = next(r for r in patient.replies if r.image)
    assert reply.text.startswith("Level ") and "This week:" in reply.text
    assert "current streak" in reply.text
    image = _png(reply.image)  # type: ignore[arg-type]
    assert image.size == (900, 1200)
    empty = _png(render(Progress(sessions=[], pains=[], levels=[], kujala=[],
                                 baseline_worst=4, today=date(2026, 3, 11))))
    differing = (np.asarray(image.convert("RGB")) != np.asarray(empty.convert("RGB"))
                 ).any(axis=2).sum()
    assert differing > 20_000  # lines, bars and dots, not just different tick labels


def test_a_year_of_data_renders() -> None:
    start = date(2025, 1, 1)
    days = [start + timedelta(days=n) for n in range(365)]
    data = Progress(
        sessions=[DaySession(d, ("done", "partial", "skipped", "missed")[n % 4], n % 6)
                  for n, d in enumerate(days)],
        pains=[(d, (n * 7) % 9) for n, d in enumerate(days)],
        levels=[(days[n], 2, 3) for n in (30, 90)], kujala=[(days[n], 60 + n // 30)
                                                             for n in range(0, 365, 28)],
        baseline_worst=6, today=days[-1])
    assert _png(render(data)).size == (900, 1200)


async def test_kujala_again_after_four_weeks_calls_out_a_meaningful_change(
        engine: Engine, clock: ManualClock, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    clock.advance(timedelta(days=27))
    await patient.send("/today")
    assert "Four weeks" not in patient.text
    clock.advance(timedelta(days=1))
    await patient.send("/today")
    assert "Four weeks have passed" in patient.text
    await patient.press("Later")
    assert "Today's session" in patient.text
    await patient.send("/cancel")
    await patient.send("/today")
    await patient.press("Now")
    await patient.answer_all(*BEST_KUJALA)
    assert f"100/100, up {100 - CLEAN_KUJALA} points" in patient.text
    assert "meaningful" in patient.text
    async with sessions() as db:
        alerts = await db.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.kind == "alert"))
    assert alerts == 0  # no coach, no alert
    await patient.send("/today")
    assert "Four weeks" not in patient.text
    await enrolled(engine, "u2")  # one score only: no change yet
    async with sessions() as db:
        everyone = (await stats.compute(db, None, clock.now().date()))[0]
    assert everyone.enrolled == 2 and everyone.median_kujala_change == 100 - CLEAN_KUJALA


async def test_export_round_trips_every_row_and_no_other_users(
        engine: Engine, clock: ManualClock, sessions: async_sessionmaker[DbSession]) -> None:
    other = await enrolled(engine, "other")
    await other.send("/pain")
    await other.press("3")
    patient = await enrolled(engine, "u1")
    await eight_weeks(patient, clock, seed=3)
    await patient.send("/mydata")
    exported = json.loads(next(r.document for r in patient.replies if r.document).content)
    async with sessions() as db:
        me = (await db.scalars(select(User).filter_by(channel_user_id="u1"))).one()
        for model, column in PERSONAL_TABLES:
            stored = await db.scalar(select(func.count()).select_from(model).where(
                getattr(model, column) == me.id))
            rows = exported["tables"][model.__tablename__]
            assert len(rows) == stored, model.__tablename__
            assert all(row.get(column, me.id) == me.id for row in rows)
    assert len(exported["tables"]["sessions"]) > 40


async def test_delete_erases_every_row_and_ends_prompts(
        engine: Engine, clock: ManualClock, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await eight_weeks(patient, clock, seed=5)
    async with sessions() as db:
        me = (await db.scalars(select(User).filter_by(channel_user_id="u1"))).one().id
    await patient.send("/delete")
    await patient.press_token("delete|999|confirm")  # no button erases: only the typed word
    await patient.send("delete please")
    await patient.send("DELETE")
    assert "everything I held about you is erased" in patient.text
    async with sessions() as db:
        for model, column in PERSONAL_TABLES:
            left = await db.scalar(select(func.count()).select_from(model).where(
                getattr(model, column) == me))
            assert left == 0, model.__tablename__
        audit = (await db.scalars(select(AuditLog).filter_by(action="erasure"))).one()
        assert audit.detail == {"channel": "console"}
