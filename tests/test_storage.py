"""Storage on SQLite and PostgreSQL: migrations, times, idempotency, optimistic versions."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from conftest import Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.data import Program
from storage import due, stats
from storage.db import create_engine, migrate, sessionmaker
from storage.models import Base, ConversationState, Hold, StatTally, User
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


@given(st.lists(st.integers(min_value=-100, max_value=100), max_size=50))
def test_the_median_from_counts_is_the_median_of_the_values(values: list[int]) -> None:
    expected = statistics.median(values) if values else None
    assert stats._median(Counter(values)) == expected


def _insert(table: str, **values: object) -> str:
    """An INSERT with its values written in: rows for an older schema than the models'."""
    def sql(value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool | int):
            return str(value).lower()
        return "'" + str(value).replace("'", "''") + "'"

    return (f"INSERT INTO {table} ({', '.join(values)}) "
            f"VALUES ({', '.join(sql(v) for v in values.values())})")


async def test_the_upgrade_to_tallies_counts_what_was_there(database_url: str) -> None:
    """A database from before the tallies (revision 0002) keeps its statistics: the upgrade
    counts its sessions and sent prompts and works out each Kujala change."""
    engine = create_engine(database_url)
    await migrate(engine, "0002")
    at = "2026-01-15 07:00:00"
    statements = [
        *(_insert("users", id=uid, channel="console", channel_user_id=name, chat_id=name,
                  display_name="", role=role, coach_id=coach, status="active",
                  unreachable=False, created_at=at)
          for uid, name, role, coach in ((1, "coach", "coach", None), (2, "p2", "patient", 1),
                                         (3, "p3", "patient", None))),
        *(_insert("program_state", user_id=uid, level=1, started_on="2026-01-14",
                  baseline_worst_pain=4, updated_at=at) for uid in (2, 3)),
        *(_insert("sessions", user_id=uid, day=day, level=1, status=status,
                  morning_symptom=False)
          for uid, day, status in ((2, "2026-01-15", "done"), (2, "2026-01-16", "missed"),
                                   (2, "2026-01-17", "prompted"), (3, "2026-01-15", "skipped"))),
        *(_insert("outbox", user_id=uid, channel="console", chat_id=f"p{uid}", kind="prompt",
                  payload="{}", dedupe_key=key, status=status, attempts=1, not_before=at,
                  created_at=at, sent_at=at if status == "sent" else None)
          for uid, key, status in ((2, "2:15", "sent"), (3, "3:15", "sent"),
                                   (2, "2:17", "pending"))),
        *(_insert("assessments", user_id=uid, kind="kujala", answers="{}", score=score,
                  created_at=at) for uid, score in ((2, 50), (2, 65), (3, 70))),
    ]
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))
    await migrate(engine)
    async with sessionmaker(engine)() as db:
        rows = await stats.compute(db, None, datetime(2026, 1, 17).date())
        tallied = await db.scalar(select(func.sum(StatTally.count)))
        assert not await stats.fold(db, 100)  # nothing left for the tick
    await engine.dispose()
    figures = {r.group: (r.prompts_sent, r.done, r.skipped, r.missed, r.median_kujala_change)
               for r in rows}
    assert figures == {"all": (2, 1, 1, 1, 15), "coach 1": (1, 1, 0, 1, 15),
                       "no coach": (1, 0, 1, 0, None)}
    assert tallied == 5  # read from the tallies, not live


async def test_the_upgrade_to_holds_gives_every_referred_patient_an_open_hold(
        database_url: str) -> None:
    """Patients referred before holds were kept (revision 0008) stay held, under R9: a
    screen referral without a program, and a pain pause with its level."""
    engine = create_engine(database_url)
    await migrate(engine, "0008")
    at = "2026-01-15 07:00:00"
    statements = [
        *(_insert("users", id=uid, channel="console", channel_user_id=f"p{uid}",
                  chat_id=f"p{uid}", display_name="", role="patient", status=status,
                  unreachable=False, created_at=at)
          for uid, status in ((1, "referred"), (2, "referred"), (3, "active"))),
        *(_insert("program_state", user_id=uid, level=3, started_on="2026-01-14",
                  baseline_worst_pain=4, paused_reason=reason, updated_at=at)
          for uid, reason in ((2, "R4"), (3, None))),
    ]
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))
    await migrate(engine)
    async with sessionmaker(engine)() as db:
        holds = (await db.scalars(select(Hold).order_by(Hold.user_id))).all()
    await engine.dispose()
    assert [(h.user_id, h.kind, h.rule, h.level, h.lifted_at) for h in holds] == [
        (1, "referral", "screen", None, None), (2, "pain", "R4", 3, None)]
    assert holds[1].started_on.isoformat() == "2026-01-15"


async def test_two_workers_folding_at_once_count_each_session_once(
        engine: Engine, clock: ManualClock, sessions: async_sessionmaker[DbSession],
        second_sessions: async_sessionmaker[DbSession]) -> None:
    for n in range(20):
        await enrolled(engine, f"p{n}")
    today = clock.now().date()
    async with sessions() as db, db.begin():
        patients = list(await db.scalars(select(User.id)))
        await due.add_sessions(db, {today - timedelta(days=d): patients for d in range(1, 11)},
                                    "missed", clock.now())

    async def worker(maker: async_sessionmaker[DbSession]) -> None:
        while True:  # small batches, so the two interleave
            async with maker() as db, db.begin():
                if not await stats.fold(db, 7):
                    return

    await asyncio.gather(worker(sessions), worker(second_sessions))
    async with sessions() as db:
        counted = await db.scalar(select(func.sum(StatTally.count))
                                  .where(StatTally.measure == "missed"))
    assert counted == 20 * 10
