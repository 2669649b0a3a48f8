"""Adherence and outcome statistics over all patients, overall and per coach, in a handful of
grouped queries (no per-patient round trips), so 100,000 patients stay fast."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from statistics import median
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.models import Assessment, Outbox, ProgramState, ProgressionEvent, Session, User

ALL = "all"


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
    _pain: list[int] = field(default_factory=list, repr=False)
    _kujala: list[int] = field(default_factory=list, repr=False)
    _moves: list[int] = field(default_factory=list, repr=False)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def _group(coach_id: int | None) -> str:
    return f"coach {coach_id}" if coach_id is not None else "no coach"


async def compute(db: DbSession, since: date | None, today: date) -> list[Stats]:
    """Statistics for the period from `since` (None: all time) to `today`: the first row is
    everyone, then one row per coach."""
    groups: dict[str, Stats] = defaultdict(lambda: Stats(group=""))
    coach_of: dict[int, str] = {}

    def bump(group: str) -> list[Stats]:
        for name in (ALL, group):
            groups[name].group = name
        return [groups[ALL], groups[group]]

    patients = await db.execute(
        select(User.id, User.coach_id, User.status, ProgramState.started_on,
               ProgramState.baseline_worst_pain)
        .join(ProgramState, ProgramState.user_id == User.id))
    baseline: dict[int, int] = {}
    for user_id, coach_id, status, started_on, worst in patients:
        coach_of[user_id] = _group(coach_id)
        baseline[user_id] = worst
        for row in bump(coach_of[user_id]):
            row.enrolled += 1
            row.new += since is None or started_on >= since
            if status in ("active", "paused", "referred", "stopped"):
                setattr(row, status, getattr(row, status) + 1)

    by_coach = User.coach_id
    sessions = (select(by_coach, Session.status, func.count()).select_from(Session)
                .join(User, User.id == Session.user_id).group_by(by_coach, Session.status))
    if since is not None:
        sessions = sessions.where(Session.day >= since)
    for coach_id, status, count in (await db.execute(sessions)):
        for row in bump(_group(coach_id)):
            if status in ("done", "partial", "skipped", "missed"):
                setattr(row, status, getattr(row, status) + count)

    sent = (select(by_coach, func.count()).select_from(Outbox)
            .join(User, User.id == Outbox.user_id)
            .where(Outbox.kind == "prompt", Outbox.status == "sent").group_by(by_coach))
    if since is not None:
        sent = sent.where(Outbox.sent_at >= datetime.combine(since, time(), tzinfo=UTC))
    for coach_id, count in (await db.execute(sent)):
        for row in bump(_group(coach_id)):
            row.prompts_sent += count

    recent = (select(Session.user_id, func.max(Session.pain_during))
              .where(Session.day >= today - timedelta(days=6),
                     Session.pain_during.is_not(None))
              .group_by(Session.user_id))
    for user_id, worst in (await db.execute(recent)):
        if user_id in coach_of:
            for row in bump(coach_of[user_id]):
                row._pain.append(worst - baseline[user_id])

    kujala = (select(Assessment.user_id, Assessment.score)
              .where(Assessment.kind == "kujala", Assessment.score.is_not(None))
              .order_by(Assessment.user_id, Assessment.id))
    scores: dict[int, list[int]] = defaultdict(list)
    for user_id, score in (await db.execute(kujala)):
        scores[user_id].append(score)
    for user_id, series in scores.items():
        if len(series) > 1 and user_id in coach_of:
            for row in bump(coach_of[user_id]):
                row._kujala.append(series[-1] - series[0])

    net = func.sum(case((ProgressionEvent.action == "progress", 1),
                        (ProgressionEvent.action.in_(("regress", "restart")), -1), else_=0))
    moves = select(ProgressionEvent.user_id, net).group_by(ProgressionEvent.user_id)
    if since is not None:
        moves = moves.where(ProgressionEvent.day >= since)
    moved = {user_id: total for user_id, total in await db.execute(moves)}
    for user_id, group in coach_of.items():
        for row in bump(group):
            row._moves.append(int(moved.get(user_id) or 0))

    for row in groups.values():
        prompted = row.done + row.partial + row.skipped + row.missed
        row.adherence = round((row.done + row.partial) / prompted, 3) if prompted else None
        row.median_pain_change = median(row._pain) if row._pain else None
        row.median_kujala_change = median(row._kujala) if row._kujala else None
        if row._moves:
            n = len(row._moves)
            row.progressed = round(sum(m > 0 for m in row._moves) / n, 3)
            row.regressed = round(sum(m < 0 for m in row._moves) / n, 3)
            row.held = round(1 - row.progressed - row.regressed, 3)
    if ALL not in groups:
        groups[ALL].group = ALL
    return [groups[ALL], *(groups[k] for k in sorted(groups) if k != ALL)]


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
