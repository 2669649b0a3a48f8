"""The tick's claims: enrolments due a prompt, a next-morning check or a weekly summary, and
the bulk reads and writes of sessions (missed days, history) that go with them.

A claim hands each due row to exactly one worker. PostgreSQL: `SELECT ... FOR UPDATE SKIP
LOCKED`, so concurrent workers take disjoint rows and the locks last until the caller's
transaction commits. SQLite serialises writers, so there the claim is a conditional UPDATE
that must be the first statement of its transaction: it takes the write lock on a fresh
snapshot, and nobody else can claim until the caller commits. The caller then moves every
claimed row out of the due set (a new next_prompt_at, a cleared check) before committing.

Everything here works on whole batches (a handful of statements per batch, whatever its size)
and knows nothing of chats or messages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    false,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.db import among, is_postgres, upsert
from storage.models import ProgramState, Session, User, UTCDateTime

_program = ProgramState.__table__
_users = User.__table__
_sessions = Session.__table__


@dataclass(frozen=True, slots=True)
class DuePrompt:
    """An active, reachable enrolment whose next prompt time has come."""

    user_id: int
    channel: str
    chat_id: str
    timezone: str | None
    reminder_time: str | None
    reminder_days: str | None
    level: int
    next_prompt_at: datetime
    language: str | None  # the prompt is worded in it


@dataclass(frozen=True, slots=True)
class DueCheck:
    """An enrolment whose next-morning check time has come (whatever the user's status)."""

    user_id: int
    channel: str
    chat_id: str
    timezone: str | None
    status: str
    unreachable: bool
    next_check_at: datetime
    language: str | None


@dataclass(frozen=True, slots=True)
class DueSummary:
    """An enrolment whose weekly summary time has come."""

    user_id: int
    timezone: str | None
    summary_day: int | None
    next_summary_at: datetime


# --- enrolments ----------------------------------------------------------------------------
_PROMPT_COLUMNS = (_program.c.user_id, _users.c.channel, _users.c.chat_id, _users.c.timezone,
                   _users.c.reminder_time, _users.c.reminder_days, _program.c.level,
                   _program.c.next_prompt_at, _users.c.language)
_CHECK_COLUMNS = (_program.c.user_id, _users.c.channel, _users.c.chat_id, _users.c.timezone,
                  _users.c.status, _users.c.unreachable, _program.c.next_check_at,
                  _users.c.language)


def _due_prompts(db: DbSession, now: datetime) -> Select[Any]:
    active = _users.c.status == "active"
    if not is_postgres(db):  # else SQLite's planner walks every active user by the status index
        active = func.likely(active)
    return (select(*_PROMPT_COLUMNS)
            .join(_users, _users.c.id == _program.c.user_id)
            .where(_program.c.next_prompt_at <= now, active, _users.c.unreachable == false()))


def _due_checks(now: datetime) -> Select[Any]:
    return (select(*_CHECK_COLUMNS)
            .join(_users, _users.c.id == _program.c.user_id)
            .where(_program.c.next_check_at <= now))


async def _claim_enrolments(db: DbSession, due: Select[Any], order: Any, now: datetime,
                            limit: int) -> Sequence[Any]:
    if is_postgres(db):
        locked = due.order_by(order).limit(limit).with_for_update(skip_locked=True,
                                                                   of=_program)
        return (await db.execute(locked)).all()
    # SQLite: the touch takes the write lock and fixes the claimed set in one statement; the
    # user's columns come back through subqueries, as RETURNING names only the updated table.
    returned = [column if column.table is _program else
                select(column).where(_users.c.id == _program.c.user_id).scalar_subquery()
                for column in due.selected_columns]
    return (await db.execute(
        update(_program)
        .where(_program.c.user_id.in_(due.with_only_columns(_program.c.user_id)
                                      .order_by(order).limit(limit).scalar_subquery()))
        .values(updated_at=now)
        .returning(*returned))).all()


async def claim_due_summaries(db: DbSession, now: datetime, limit: int) -> list[DueSummary]:
    """Up to `limit` enrolments due a weekly summary; the caller moves each one's
    next_summary_at on (`advance_summaries`) in the same transaction."""
    due = (select(_program.c.user_id, _users.c.timezone, _users.c.summary_day,
                  _program.c.next_summary_at)
           .join(_users, _users.c.id == _program.c.user_id)
           .where(_program.c.next_summary_at <= now))
    rows = await _claim_enrolments(db, due, _program.c.next_summary_at, now, limit)
    return [DueSummary(*row) for row in rows]


async def advance_summaries(db: DbSession, moves: Mapping[datetime, Collection[int]],
                            now: datetime) -> None:
    for next_at, user_ids in moves.items():
        await db.execute(update(_program).where(among(db, _program.c.user_id, user_ids))
                         .values(next_summary_at=next_at, updated_at=now))


async def claim_due_prompts(db: DbSession, now: datetime, limit: int) -> list[DuePrompt]:
    """Up to `limit` enrolments due a prompt, held until the transaction ends. The caller
    must move each one's next_prompt_at past `now` (`advance`) in the same transaction."""
    rows = await _claim_enrolments(db, _due_prompts(db, now), _program.c.next_prompt_at, now,
                                   limit)
    return [DuePrompt(*row) for row in rows]


async def claim_due_checks(db: DbSession, now: datetime, limit: int) -> list[DueCheck]:
    """Up to `limit` enrolments due a next-morning check; the caller clears next_check_at
    (`clear_checks`) in the same transaction."""
    rows = await _claim_enrolments(db, _due_checks(now), _program.c.next_check_at, now, limit)
    return [DueCheck(*row) for row in rows]


async def advance(db: DbSession, next_at: Mapping[int, datetime | None],
                  levels: Mapping[int, int], now: datetime) -> None:
    """Move claimed enrolments on in one statement however many: each one's new
    next_prompt_at, and a new level for the given users (R6's restarts)."""
    if not next_at:
        return
    if is_postgres(db):  # one UPDATE ... FROM the arrays, unnested side by side
        ids = list(next_at)
        await db.execute(text(
            "UPDATE program_state AS p SET next_prompt_at = v.at, updated_at = :now, "
            "level = coalesce(v.level, p.level) "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:ats AS timestamp[]), "
            "CAST(:levels AS integer[])) AS v(user_id, at, level) WHERE p.user_id = v.user_id"
        ).bindparams(bindparam("now", type_=UTCDateTime())),
            {"now": now, "ids": ids, "levels": [levels.get(uid) for uid in ids],
             "ats": [None if at is None else at.astimezone(UTC).replace(tzinfo=None)
                     for at in (next_at[uid] for uid in ids)]})
        return
    # SQLite: one statement run over every row in one call (sqlite3's executemany loop).
    await db.execute(
        update(_program).where(_program.c.user_id == bindparam("uid"))
        .values(next_prompt_at=bindparam("at", type_=UTCDateTime()), updated_at=now,
                level=func.coalesce(bindparam("lvl", type_=Integer()), _program.c.level)),
        [{"uid": uid, "at": at, "lvl": levels.get(uid)} for uid, at in next_at.items()])


async def clear_checks(db: DbSession, user_ids: Collection[int], now: datetime) -> None:
    if user_ids:
        await db.execute(update(_program).where(among(db, _program.c.user_id, user_ids))
                         .values(next_check_at=None, updated_at=now))


# --- sessions ------------------------------------------------------------------------------
async def miss_open_sessions(db: DbSession, before: Mapping[date, Collection[int]]
                             ) -> set[int]:
    """Prompted sessions left unanswered become missed: for each day, those of the given users
    on earlier days. Users are grouped by day so a batch costs a statement per distinct day.
    Returns the users who had one."""
    missed: set[int] = set()
    for day, user_ids in before.items():
        missed.update((await db.execute(
            update(_sessions)
            .where(among(db, _sessions.c.user_id, user_ids), _sessions.c.day < day,
                   _sessions.c.status == "prompted")
            .values(status="missed").returning(_sessions.c.user_id))).scalars())
    return missed


async def missed_in_a_row(db: DbSession, user_ids: Collection[int], runs: int
                          ) -> dict[int, date]:
    """The users with a coach whose latest `runs` sessions were missed, and the one before
    was not (or there was none): user -> the day of the latest. A run is reported once, when
    it reaches `runs`, not again each day it goes on."""
    if not user_ids:
        return {}
    latest = (select(_sessions.c.user_id, _sessions.c.day, _sessions.c.status,
                     func.row_number().over(partition_by=_sessions.c.user_id,
                                            order_by=_sessions.c.day.desc()).label("n"))
              .join(_users, _users.c.id == _sessions.c.user_id)
              .where(among(db, _sessions.c.user_id, user_ids), _users.c.coach_id.is_not(None))
              .subquery())
    recent: dict[int, list[tuple[date, str]]] = defaultdict(list)
    for user_id, day, status in await db.execute(
            select(latest.c.user_id, latest.c.day, latest.c.status)
            .where(latest.c.n <= runs + 1).order_by(latest.c.user_id, latest.c.n)):
        recent[user_id].append((day, status))
    return {user_id: days[0][0] for user_id, days in recent.items()
            if len(days) >= runs and all(status == "missed" for _, status in days[:runs])
            and (len(days) == runs or days[runs][1] != "missed")}


async def add_sessions(db: DbSession, by_day: Mapping[date, Collection[int]], status: str,
                       now: datetime) -> dict[int, int]:
    """Give the users a session on the day, at their program's current level; a (user, day)
    that has one already keeps it (the patient may have opened or reported that day's session
    on their own). Written with INSERT ... SELECT, a statement per day, not per patient.
    Returns user_id -> id of each session inserted."""
    prompted_at = literal(now if status == "prompted" else None, UTCDateTime())
    added: dict[int, int] = {}
    for day, user_ids in by_day.items():
        rows = (select(_program.c.user_id, literal(day, Date()), _program.c.level,
                       literal(status, String()), false(), prompted_at)
                .where(among(db, _program.c.user_id, user_ids)))
        result = await db.execute(
            upsert(db, _sessions)
            .from_select(["user_id", "day", "level", "status", "morning_symptom",
                          "prompted_at"], rows)
            .on_conflict_do_nothing(index_elements=["user_id", "day"])
            .returning(_sessions.c.user_id, _sessions.c.id))
        added.update((user_id, session_id) for user_id, session_id in result)
    return added


async def sessions_on(db: DbSession, keys: Collection[tuple[int, date]]
                      ) -> dict[tuple[int, date], tuple[int, str, int]]:
    """(user_id, day) -> (session id, status, level) for the sessions that exist."""
    if not keys:
        return {}
    rows = await db.execute(
        select(_sessions.c.user_id, _sessions.c.day, _sessions.c.id, _sessions.c.status,
               _sessions.c.level)
        .where(among(db, _sessions.c.user_id, {uid for uid, _ in keys}),
               _sessions.c.day.in_({day for _, day in keys})))
    found = {(uid, day): (sid, status, level) for uid, day, sid, status, level in rows}
    return {key: found[key] for key in keys if key in found}


async def last_missed_before(db: DbSession, users: Mapping[date, Collection[int]],
                             since: timedelta) -> set[int]:
    """Users whose latest session in the `since` before the given day is a missed one: only
    they can be in a run of missed days that ends now."""
    found: set[int] = set()
    for day, user_ids in users.items():
        latest = (select(_sessions.c.user_id, func.max(_sessions.c.day).label("day"))
                  .where(among(db, _sessions.c.user_id, user_ids), _sessions.c.day < day,
                         _sessions.c.day >= day - since)
                  .group_by(_sessions.c.user_id).subquery())
        found.update((await db.execute(
            select(_sessions.c.user_id)
            .join(latest, and_(latest.c.user_id == _sessions.c.user_id,
                               latest.c.day == _sessions.c.day))
            .where(_sessions.c.status == "missed"))).scalars())
    return found


async def session_history(db: DbSession, user_ids: Collection[int], since: date
                          ) -> dict[int, list[Session]]:
    """Each user's sessions from `since` on, oldest first."""
    history: dict[int, list[Session]] = {uid: [] for uid in user_ids}
    if user_ids:
        for row in await db.scalars(select(Session).where(among(db, Session.user_id, user_ids),
                                                          Session.day >= since)
                                    .order_by(Session.user_id, Session.day)):
            history[row.user_id].append(row)
    return history


async def unchecked_sessions(db: DbSession, before: Mapping[int, date], within: timedelta
                             ) -> dict[int, int]:
    """user_id -> the id of their latest done or partial session in the `within` before the
    given day whose next-morning check is still open."""
    if not before:
        return {}
    rows = await db.execute(
        select(_sessions.c.user_id, _sessions.c.day, _sessions.c.id)
        .where(among(db, _sessions.c.user_id, before),
               _sessions.c.day >= min(before.values()) - within,
               _sessions.c.status.in_(("done", "partial")),
               _sessions.c.morning_at.is_(None))
        .order_by(_sessions.c.user_id, _sessions.c.day))
    latest: dict[int, int] = {}
    for uid, day, sid in rows:
        if before[uid] - within <= day < before[uid]:
            latest[uid] = sid  # ordered by day: the last one wins
    return latest
