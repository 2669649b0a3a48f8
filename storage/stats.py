"""Adherence and outcome statistics over all patients, overall and per coach, in a handful of
grouped queries (no per-patient round trips), so 100,000 patients stay fast. Session and prompt
counts come from stat_tallies, which the scheduler's tick keeps (`fold`), plus the few rows
not folded in yet; erasing a patient takes theirs out (`untally`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import BigInteger, Select, case, cast, func, literal_column, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.pool import StaticPool

from storage.db import is_postgres, upsert
from storage.models import (
    UNTALLIED_PROMPT,
    UNTALLIED_SESSION,
    Outbox,
    ProgramState,
    ProgressionEvent,
    Session,
    StatTally,
    User,
)

ALL = "all"
NO_COACH = 0  # stat_tallies' coach_id for patients without one
SESSION_MEASURES = ("done", "partial", "skipped", "missed")
PROMPT = "prompt"
_PROMPT_SQL = literal_column(f"'{PROMPT}'")  # inline: a bare parameter has no type to PostgreSQL

_sessions, _outbox, _tallies = Session.__table__, Outbox.__table__, StatTally.__table__
_UNTALLIED = {_sessions: UNTALLIED_SESSION, _outbox: UNTALLIED_PROMPT}


@dataclass
class Stats:
    group: str  # "all", or "coach <id>"
    enrolled: int = 0
    new: int = 0
    active: int = 0
    paused: int = 0
    referred: int = 0
    stopped: int = 0
    prompts_sent: int = 0
    done: int = 0
    partial: int = 0
    skipped: int = 0
    missed: int = 0
    adherence: float | None = None  # (done + partial) / sessions prompted
    median_pain_change: float | None = None  # worst pain in the last 7 days minus baseline
    median_kujala_change: float | None = None  # latest minus first Kujala score
    progressed: float | None = None  # share of patients whose level went up in the period
    held: float | None = None
    regressed: float | None = None
    _pain: Counter[int] = field(default_factory=Counter, repr=False)  # change -> patients
    _kujala: Counter[int] = field(default_factory=Counter, repr=False)
    _moves: list[int] = field(default_factory=lambda: [0, 0, 0], repr=False)  # all, up, down

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def _group(coach_id: int) -> str:
    return f"coach {coach_id}" if coach_id != NO_COACH else "no coach"


def _coach(column: Any) -> Any:
    # NO_COACH inline: PostgreSQL matches a GROUP BY expression to the selected one only if
    # they are written alike, and two bound parameters are not.
    return func.coalesce(column, literal_column(str(NO_COACH)))


async def compute(db: DbSession, since: date | None, today: date) -> list[Stats]:
    """Statistics for the period from `since` (None: all time) to `today`: the first row is
    everyone, then one row per coach. Sessions and prompts count for the coach the patient
    had when they were recorded; the other figures for the patient's coach now."""
    patients = (select(_coach(User.coach_id), User.status, func.count(),
                       func.sum(case((ProgramState.started_on >= since, 1), else_=0))
                       if since is not None else func.count())
                .join(ProgramState, ProgramState.user_id == User.id)
                .group_by(_coach(User.coach_id), User.status))

    # Pain and Kujala changes come back as (coach, change, patients): a few hundred rows, from
    # which the medians follow, rather than a row per patient.
    # Grouped by an expression ("+ 0"), not the column: SQLite then reads the last week from
    # the covering ix_sessions_pain rather than walking every session in user order to spare
    # itself a sort (3 s of 4 at 100,000 patients x 90 days).
    patient = (Session.user_id + 0).label("user_id")
    worst = (select(patient, func.max(Session.pain_during).label("worst"))
             .where(Session.day >= today - timedelta(days=6), Session.pain_during.is_not(None))
             .group_by(patient).subquery())
    pain_change = worst.c.worst - ProgramState.baseline_worst_pain
    pain = (select(_coach(User.coach_id), pain_change, func.count()).select_from(worst)
            .join(ProgramState, ProgramState.user_id == worst.c.user_id)
            .join(User, User.id == worst.c.user_id)
            .group_by(_coach(User.coach_id), pain_change))

    kujala = (select(_coach(User.coach_id), ProgramState.kujala_change, func.count())
              .join(ProgramState, ProgramState.user_id == User.id)
              .where(ProgramState.kujala_change.is_not(None))
              .group_by(_coach(User.coach_id), ProgramState.kujala_change))

    net = func.sum(case((ProgressionEvent.action == "progress", 1),
                        (ProgressionEvent.action.in_(("regress", "restart")), -1), else_=0))
    moves = select(ProgressionEvent.user_id, net.label("net")).group_by(ProgressionEvent.user_id)
    if since is not None:
        moves = moves.where(ProgressionEvent.day >= since)
    moved = moves.subquery()
    shares = (select(_coach(User.coach_id), func.count(),
                     func.sum(case((moved.c.net > 0, 1), else_=0)),
                     func.sum(case((moved.c.net < 0, 1), else_=0)))
              .select_from(User).join(ProgramState, ProgramState.user_id == User.id)
              .outerjoin(moved, moved.c.user_id == User.id).group_by(_coach(User.coach_id)))

    by_patient, by_count, by_pain, by_kujala, by_move = await _read_all(
        db, [patients, _counts(since), pain, kujala, shares])

    groups: dict[str, Stats] = {}

    def rows(coach_id: int) -> tuple[Stats, Stats]:
        for name in (ALL, _group(coach_id)):
            groups.setdefault(name, Stats(group=name))
        return groups[ALL], groups[_group(coach_id)]

    for coach_id, status, count, new in by_patient:
        for row in rows(coach_id):
            row.enrolled += count
            row.new += new or 0
            if status in ("active", "paused", "referred", "stopped"):
                setattr(row, status, getattr(row, status) + count)
    for coach_id, measure, count in by_count:
        for row in rows(coach_id):
            if measure == PROMPT:
                row.prompts_sent += count
            elif measure in SESSION_MEASURES:
                setattr(row, measure, getattr(row, measure) + count)
    for coach_id, change, count in by_pain:
        for row in rows(coach_id):
            row._pain[change] += count
    for coach_id, change, count in by_kujala:
        for row in rows(coach_id):
            row._kujala[change] += count
    for coach_id, count, up, down in by_move:
        for row in rows(coach_id):
            row._moves[0] += count
            row._moves[1] += up or 0
            row._moves[2] += down or 0

    for row in groups.values():
        prompted = row.done + row.partial + row.skipped + row.missed
        row.adherence = round((row.done + row.partial) / prompted, 3) if prompted else None
        row.median_pain_change = _median(row._pain)
        row.median_kujala_change = _median(row._kujala)
        count, up, down = row._moves
        if count:
            row.progressed = round(up / count, 3)
            row.regressed = round(down / count, 3)
            row.held = round(1 - row.progressed - row.regressed, 3)
    groups.setdefault(ALL, Stats(group=ALL))
    return [groups[ALL], *(groups[k] for k in sorted(groups) if k != ALL)]


async def _read_all(db: DbSession, queries: list[Select[Any]]) -> list[list[Any]]:
    """Run independent queries at once, each over a connection of its own (a snapshot each,
    a moment apart: fine for statistics), so the database works on them in parallel: on
    PostgreSQL in its server processes, on SQLite in aiosqlite's thread per connection
    (SQLite lets readers run side by side; one in-memory database has a single connection,
    so there they run one by one). On PostgreSQL each has room to aggregate 100,000 patients
    in memory and no parallel workers of its own: those rebuilt the same hash tables in every
    worker while the other queries already held the cores (bench/stats.py on PostgreSQL:
    0.99 s -> 0.74 s on 2 cores)."""
    engine = db.bind
    if not isinstance(engine, AsyncEngine) or isinstance(engine.pool, StaticPool):
        return [list(await db.execute(query)) for query in queries]
    postgres = is_postgres(db)

    async def read(query: Select[Any]) -> list[Any]:
        async with engine.connect() as connection:
            if postgres:
                await connection.execute(text(
                    "SELECT set_config('work_mem', '64MB', true), set_config('jit', 'off', "
                    "true), set_config('max_parallel_workers_per_gather', '0', true)"))
            return list(await connection.execute(query))

    return list(await asyncio.gather(*(read(query) for query in queries)))


def _median(histogram: Counter[int]) -> float | None:
    """The median of the values counted, as statistics.median gives it."""
    total = sum(histogram.values())
    if not total:
        return None

    def at(position: int) -> int:  # the value at this position of the sorted values
        seen = 0
        for value in sorted(histogram):
            seen += histogram[value]
            if seen > position:
                return value
        raise IndexError(position)

    middle = total // 2
    return at(middle) if total % 2 else (at(middle - 1) + at(middle)) / 2


def _counts(since: date | None) -> Select[Any]:
    """(coach, measure, count) from the tallies and from the rows the tick has not folded in
    yet (found through the partial indexes of the same condition)."""
    # A whole number on PostgreSQL too, whose sum of a bigint is a numeric (a Decimal here).
    folded = select(_tallies.c.coach_id, _tallies.c.measure,
                    cast(func.sum(_tallies.c.count), BigInteger))
    sessions = select(_sessions.c.user_id, _sessions.c.status).where(UNTALLIED_SESSION)
    prompts = select(_outbox.c.user_id).where(UNTALLIED_PROMPT)
    if since is not None:
        folded = folded.where(_tallies.c.day >= since)
        sessions = sessions.where(_sessions.c.day >= since)
        prompts = prompts.where(_outbox.c.sent_at >= datetime.combine(since, time(), tzinfo=UTC))
    open_sessions, open_prompts = sessions.subquery(), prompts.subquery()
    return (folded.group_by(_tallies.c.coach_id, _tallies.c.measure)
            .union_all(
                select(_coach(User.coach_id), open_sessions.c.status, func.count())
                .select_from(open_sessions).join(User, User.id == open_sessions.c.user_id)
                .group_by(_coach(User.coach_id), open_sessions.c.status),
                select(_coach(User.coach_id), _PROMPT_SQL, func.count())
                .select_from(open_prompts).join(User, User.id == open_prompts.c.user_id)
                .group_by(_coach(User.coach_id))))


async def fold(db: DbSession, limit: int) -> bool:
    """Count up to `limit` final sessions and as many sent prompts into stat_tallies, each
    once: the rows are marked with the coach they were counted for. On PostgreSQL concurrent
    folds skip each other's rows. True when a batch was full (there may be more)."""
    counts: Counter[tuple[date, int, str]] = Counter()
    full = False
    for table in (_sessions, _outbox):
        batch = select(table.c.id).where(_UNTALLIED[table]).limit(limit)
        if is_postgres(db):
            batch = batch.with_for_update(skip_locked=True)
        coach = _coach(select(User.coach_id).where(User.id == table.c.user_id)
                       .scalar_subquery())
        marked = (update(table).where(table.c.id.in_(batch)).values(tallied_coach=coach)
                  .returning(table.c.day if table is _sessions else table.c.sent_at,
                             table.c.tallied_coach,
                             table.c.status if table is _sessions else _PROMPT_SQL))
        found = (await db.execute(marked)).all()
        full = full or len(found) == limit
        for day, coach_id, measure in found:
            counts[(day.date() if isinstance(day, datetime) else day, coach_id, measure)] += 1
    await _add(db, counts)
    return full


async def untally(db: DbSession, user_id: int) -> None:
    """Before a patient's rows are erased: take their counts out of the tallies. If they were
    a coach, the counts kept under them move to "no coach", as their patients do."""
    for table in (_sessions, _outbox):
        # A write first: a fold counting these rows now finishes first (PostgreSQL's row
        # locks) or cannot start (SQLite's write lock), so what is read below stays true.
        await db.execute(update(table).where(table.c.user_id == user_id)
                         .values(tallied_coach=table.c.tallied_coach))
    counts: Counter[tuple[date, int, str]] = Counter()
    for day, coach_id, status, count in await db.execute(
            select(Session.day, Session.tallied_coach, Session.status, func.count())
            .where(Session.user_id == user_id, Session.tallied_coach.is_not(None))
            .group_by(Session.day, Session.tallied_coach, Session.status)):
        counts[(day, coach_id, status)] -= count
    for sent_at, coach_id in await db.execute(
            select(Outbox.sent_at, Outbox.tallied_coach)
            .where(Outbox.user_id == user_id, Outbox.tallied_coach.is_not(None))):
        counts[(sent_at.date(), coach_id, PROMPT)] -= 1
    kept = await db.execute(select(StatTally.day, StatTally.measure, StatTally.count)
                            .where(StatTally.coach_id == user_id))
    moved = False
    for day, measure, count in kept:
        own = counts.pop((day, user_id, measure), 0)  # their own sessions, if their own coach
        counts[(day, NO_COACH, measure)] += count + own
        moved = True
    await _add(db, counts)
    if moved:  # a full scan of the tallied rows: rare, as a coach's erasure is
        await db.execute(_tallies.delete().where(_tallies.c.coach_id == user_id))
        for table in (_sessions, _outbox):
            await db.execute(update(table).where(table.c.tallied_coach == user_id)
                             .values(tallied_coach=NO_COACH))


async def _add(db: DbSession, counts: Counter[tuple[date, int, str]]) -> None:
    """Add the counts to stat_tallies, in key order so concurrent writers lock the rows in
    the same order (no deadlock)."""
    rows = [{"day": day, "coach_id": coach_id, "measure": measure, "count": count}
            for (day, coach_id, measure), count in sorted(counts.items()) if count]
    if not rows:
        return
    insert = upsert(db, _tallies)
    await db.execute(insert.on_conflict_do_update(
        index_elements=["day", "coach_id", "measure"],
        set_={"count": _tallies.c.count + insert.excluded.count}), rows)


@dataclass(frozen=True)
class WeekRow:
    patient: int
    coach: int | None
    week_start: date
    level: int | None
    done: int
    partial: int
    skipped: int
    missed: int
    mean_pain: float | None
    worst_pain: int | None


async def weekly_rows(db: DbSession, since: date | None) -> AsyncIterator[WeekRow]:
    """One row per patient per week (weeks start on Monday), streamed."""
    query = (select(Session.user_id, User.coach_id, Session.day, Session.level, Session.status,
                    Session.pain_during).select_from(Session)
             .join(User, User.id == Session.user_id).order_by(Session.user_id, Session.day))
    if since is not None:
        query = query.where(Session.day >= since)
    current: tuple[int, date] | None = None
    bucket: list[tuple[Any, ...]] = []
    result = await db.stream(query)
    async for user_id, coach_id, day, level, status, pain in result:
        key = (user_id, day - timedelta(days=day.weekday()))
        if key != current and bucket:
            yield _week(bucket, current)  # type: ignore[arg-type]
            bucket = []
        current = key
        bucket.append((coach_id, level, status, pain))
    if bucket and current is not None:
        yield _week(bucket, current)


def _week(bucket: list[tuple[Any, ...]], key: tuple[int, date]) -> WeekRow:
    pains = [p for *_, p in bucket if p is not None]
    statuses = [s for _, _, s, _ in bucket]
    return WeekRow(patient=key[0], coach=bucket[0][0], week_start=key[1], level=bucket[-1][1],
                   done=statuses.count("done"), partial=statuses.count("partial"),
                   skipped=statuses.count("skipped"), missed=statuses.count("missed"),
                   mean_pain=round(sum(pains) / len(pains), 2) if pains else None,
                   worst_pain=max(pains) if pains else None)
