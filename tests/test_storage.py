"""Storage on SQLite and PostgreSQL: migrations, times, idempotency, optimistic versions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from conftest import Patient
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.data import Program
from storage.models import Base, ConversationState, User
from storage.repository import Repository, StaleState


async def test_migrations_create_every_table(database: AsyncEngine) -> None:
    async with database.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert set(Base.metadata.tables) <= tables


async def test_times_come_back_aware_utc(sessions: async_sessionmaker[DbSession]) -> None:
    when = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    async with sessions() as db, db.begin():
        user = await Repository(db).add_user("console", "u", "u", when)
        user_id = user.id
    async with sessions() as db:
        stored = await db.get(User, user_id)
        assert stored is not None
        assert stored.created_at == when and stored.created_at.tzinfo == UTC


async def test_naive_times_are_refused(sessions: async_sessionmaker[DbSession]) -> None:
    with pytest.raises(Exception, match="naive"):
        async with sessions() as db, db.begin():
            await Repository(db).add_user("console", "u", "u", datetime(2026, 1, 1))


async def test_update_ids_are_recorded_once(sessions: async_sessionmaker[DbSession]) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    async with sessions() as db, db.begin():
        repo = Repository(db)
        assert await repo.first_delivery("telegram", "1", now)
        assert not await repo.first_delivery("telegram", "1", now)
        assert await repo.first_delivery("slack", "1", now)


async def test_a_write_against_an_old_version_fails(
        sessions: async_sessionmaker[DbSession]) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    async with sessions() as db, db.begin():
        user_id = (await Repository(db).add_user("console", "u", "u", now)).id
    async with sessions() as late, late.begin():
        stale = await Repository(late).state(user_id)  # read at version 0 ...
        async with sessions() as db, db.begin():  # ... while another process moves on
            state = await Repository(db).state(user_id)
            assert await Repository(db).save_state(state, "onboarding", "consent", {}, now) == 1
        with pytest.raises(StaleState):
            await Repository(late).save_state(stale, "onboarding", "redflag_1", {}, now)
    async with sessions() as db:
        state = await db.get(ConversationState, user_id)
        assert state is not None and (state.step, state.version) == ("consent", 1)


async def test_two_processes_pressing_one_button_advance_once(
        database: AsyncEngine, program: Program, clock: ManualClock,
        sessions: async_sessionmaker[DbSession]) -> None:
    """Two engines (as two bot processes) get the same press at once: one advances, the other
    finds the button stale. No answer is recorded twice."""
    first = Engine(sessions, program, clock)
    second = Engine(async_sessionmaker(database, expire_on_commit=False), program, clock)
    patient = Patient(first, "u1")
    await patient.send("/start")
    await patient.press("I agree")
    token = next(b.token for b in patient.buttons if b.label == "No")
    one, two = await asyncio.gather(
        Patient(first, "u1").press_token(token), Patient(second, "u1").press_token(token))
    texts = [" ".join(r.text for r in replies) for replies in (one, two)]
    assert sum("Safety question 2" in t and "earlier question" not in t for t in texts) == 1
    async with sessions() as db:
        user = (await db.scalars(select(User))).one()
        state = await db.get(ConversationState, user.id)
        assert state is not None
        assert state.step == "redflag_2" and state.answers["redflags"] == ["no"]
