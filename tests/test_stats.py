"""The statistics' grouped queries (tallies, partial and covering indexes) against the same
figures worked out the plain way, row by row in Python, on a small varied dataset."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import stats
from storage.db import create_engine, migrate, sessionmaker
from storage.models import Outbox, ProgramState, ProgressionEvent, Session, User

TODAY = date(2026, 3, 31)
AT = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ("prompted", "done", "partial", "skipped", "missed")
ACTIONS = ("start", "progress", "regress", "restart", "stop")


async def _fill(engine: AsyncEngine, rng: random.Random) -> None:
    async with sessionmaker(engine)() as db, db.begin():
        coaches = [User(channel="console", channel_user_id=f"c{n}", chat_id=f"c{n}",
                        role="coach", status="active", created_at=AT) for n in range(3)]
        db.add_all(coaches)
        await db.flush()
        for n in range(40):
            coach = rng.choice([None, *coaches])
            user = User(channel="console", channel_user_id=f"p{n}", chat_id=f"p{n}",
                        coach_id=coach.id if coach else None, created_at=AT,
                        status=rng.choice(("pending", "active", "paused", "referred",
                                           "stopped")))
            db.add(user)
            await db.flush()
            if n % 9 == 8:
                continue  # not enrolled: no program, counted nowhere but in its sessions
            db.add(ProgramState(user_id=user.id, level=1, updated_at=AT,
                                started_on=TODAY - timedelta(days=rng.randrange(120)),
                                baseline_worst_pain=rng.randrange(11),
                                kujala_change=rng.choice([None, *range(-10, 20)])))
            for day in rng.sample(range(100), rng.randrange(30)):
                db.add(Session(user_id=user.id, day=TODAY - timedelta(days=day), level=1,
                               status=rng.choice(STATUSES),
                               pain_during=rng.choice([None, *range(11)])))
            for day in rng.sample(range(100), rng.randrange(30)):
                sent = AT + timedelta(days=89 - day, hours=rng.randrange(24))
                db.add(Outbox(user_id=user.id, channel="console", chat_id=user.chat_id,
                              kind=rng.choice(("prompt", "prompt", "check")), payload={},
                              status=rng.choice(("sent", "sent", "pending", "failed")),
                              not_before=sent, created_at=sent, sent_at=sent))
            for _ in range(rng.randrange(4)):
                day = TODAY - timedelta(days=rng.randrange(100))
                db.add(ProgressionEvent(user_id=user.id, at=AT, day=day, from_level=1,
                                        to_level=2, action=rng.choice(ACTIONS), rule="R1",
                                        message=""))


def _median(values: list[int]) -> float | None:
    return statistics.median(values) if values else None


async def _plainly(engine: AsyncEngine, since: date | None) -> list[dict[str, Any]]:
    """The statistics from every row, as their definitions in storage/stats.py read."""
    async with sessionmaker(engine)() as db:
        users = {u.id: u for u in await db.scalars(select(User))}
        programs = list(await db.scalars(select(ProgramState)))
        sessions = list(await db.scalars(select(Session)))
        outbox = list(await db.scalars(select(Outbox)))
        events = list(await db.scalars(select(ProgressionEvent)))

    def groups(user_id: int) -> tuple[str, str]:
        coach = users[user_id].coach_id
        return stats.ALL, f"coach {coach}" if coach else "no coach"

    rows: dict[str, dict[str, Any]] = {}
    pains: dict[str, list[int]] = defaultdict(list)
    kujalas: dict[str, list[int]] = defaultdict(list)
    moves: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def row(name: str) -> dict[str, Any]:
        return rows.setdefault(name, {k: v for k, v in stats.Stats(group=name).public().items()})

    start = datetime.combine(since, time(), tzinfo=UTC) if since else None
    for s in sessions:
        if s.status != "prompted" and (since is None or s.day >= since):
            for name in groups(s.user_id):
                row(name)[s.status] += 1
    for o in outbox:
        if o.kind == "prompt" and o.status == "sent" and o.sent_at is not None and (
                start is None or o.sent_at >= start):
            for name in groups(o.user_id or 0):
                row(name)["prompts_sent"] += 1
    for p in programs:
        worst = [s.pain_during for s in sessions if s.user_id == p.user_id
                 and s.pain_during is not None and s.day >= TODAY - timedelta(days=6)]
        net = sum({"progress": 1, "regress": -1, "restart": -1}.get(e.action, 0)
                  for e in events if e.user_id == p.user_id and (since is None or e.day >= since))
        for name in groups(p.user_id):
            figures = row(name)
            figures["enrolled"] += 1
            figures["new"] += since is None or p.started_on >= since
            status = users[p.user_id].status
            if status in ("active", "paused", "referred", "stopped"):
                figures[status] += 1
            if worst:
                pains[name].append(max(worst) - p.baseline_worst_pain)
            if p.kujala_change is not None:
                kujalas[name].append(p.kujala_change)
            moves[name][0] += 1
            moves[name][1] += net > 0
            moves[name][2] += net < 0
    row(stats.ALL)
    for name, figures in rows.items():
        prompted = sum(figures[k] for k in stats.SESSION_MEASURES)
        done = figures["done"] + figures["partial"]
        figures["adherence"] = round(done / prompted, 3) if prompted else None
        figures["median_pain_change"] = _median(pains[name])
        figures["median_kujala_change"] = _median(kujalas[name])
        count, up, down = moves[name]
        if count:
            figures["progressed"] = round(up / count, 3)
            figures["regressed"] = round(down / count, 3)
            figures["held"] = round(1 - figures["progressed"] - figures["regressed"], 3)
    return [rows[stats.ALL], *(rows[k] for k in sorted(rows) if k != stats.ALL)]


@pytest.mark.parametrize("seed", [1, 2])
async def test_the_grouped_queries_give_the_plain_figures(database: AsyncEngine,
                                                          seed: int) -> None:
    await _fill(database, random.Random(seed))
    sessions = sessionmaker(database)

    async def check() -> None:
        for since in (None, TODAY - timedelta(days=89), TODAY - timedelta(days=6)):
            async with sessions() as db:
                fast = [row.public() for row in await stats.compute(db, since, TODAY)]
            assert fast == await _plainly(database, since), since

    await check()  # nothing tallied: every count read live
    async with sessions() as db, db.begin():
        await stats.fold(db, 50)  # some tallied, some not
    await check()
    while True:
        async with sessions() as db, db.begin():
            if not await stats.fold(db, 500):
                break
    await check()


async def test_an_in_memory_database_reads_one_query_at_a_time_with_the_same_figures() -> None:
    # One in-memory SQLite database is one connection (SQLAlchemy's StaticPool): the queries
    # that run side by side over connections of their own elsewhere share it, one by one.
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        await migrate(engine)
        await _fill(engine, random.Random(3))
        since = TODAY - timedelta(days=89)
        async with sessionmaker(engine)() as db:
            fast = [row.public() for row in await stats.compute(db, since, TODAY)]
        assert fast == await _plainly(engine, since)
    finally:
        await engine.dispose()
