"""The outbox: queueing messages, and the sender's leases on them (claim, sent, retry, failed,
blocked, release); and the broadcasts whose copies have all left, for their coach's report.

A claim leases each due row to exactly one worker (PostgreSQL: `FOR UPDATE SKIP LOCKED`;
SQLite serialises writers, so the conditional UPDATE is the claim). A row knows nothing of
chats or messages: it has a channel name, a chat id and a JSON payload.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    String,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.crypto import SerializedJSON, encrypting
from storage.db import among, is_postgres, upsert
from storage.models import Broadcast, Outbox, Session, User, UTCDateTime

_users = User.__table__
_outbox = Outbox.__table__
_broadcasts = Broadcast.__table__
ERROR_CHARS = 256  # outbox.error


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row leased to this worker until `lease_until`."""

    id: int
    user_id: int | None
    channel: str
    chat_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    not_before: datetime
    lease_until: datetime
    parts_sent: int = 0  # the message resumes at this part


@dataclass(frozen=True, slots=True)
class BroadcastDone:
    """A broadcast whose every copy has been sent or given up on, for its coach's report."""

    id: int
    coach_id: int
    channel: str
    chat_id: str
    send_at: datetime
    outcomes: dict[str, int]  # outbox status (sent, blocked, failed) -> copies


# --- the outbox ----------------------------------------------------------------------------
async def enqueue_many(db: DbSession, rows: Sequence[Mapping[str, Any]], now: datetime) -> None:
    """Queue rows (user_id, channel, chat_id, kind, payload as JSON text, dedupe_key), due now;
    a dedupe key that exists already is skipped, so a message is queued at most once."""
    if not rows:
        return
    # `now` is the same for every row: written into the statement once, as the dialect writes
    # it, rather than bound and converted once per row.
    at = literal_column(str(literal(now, UTCDateTime()).compile(
        dialect=db.get_bind().dialect, compile_kwargs={"literal_binds": True})))
    insert = upsert(db, _outbox).values(
        payload=bindparam("payload", type_=SerializedJSON()), status="pending", attempts=0,
        not_before=at, created_at=at)
    await db.execute(insert.on_conflict_do_nothing(index_elements=["dedupe_key"]), list(rows))


async def enqueue_per_session(db: DbSession, kind: str, template: str, marks: tuple[str, str],
                              session_ids: Collection[int], now: datetime) -> None:
    """Queue, due now, a row per session to its user's chat, all from one payload `template`
    (JSON text): the database puts each one's chat id (as a JSON string) for the `marks[0]`
    text and its session id for `marks[1]`, in one INSERT ... SELECT, so a row costs no
    Python. Dedupe key "<kind>:<user id>:<day>"; a key that exists already is skipped. With
    encryption keys the payloads are made here and encrypted row by row instead."""
    if not session_ids:
        return
    chat_mark, session_mark = marks
    sessions = Session.__table__
    pg = is_postgres(db)
    day = (func.to_char(sessions.c.day, "YYYY-MM-DD") if pg  # whatever the DateStyle
           else cast(sessions.c.day, String))  # SQLite stores the ISO text
    chosen = (sessions.join(_users, _users.c.id == sessions.c.user_id),
              among(db, sessions.c.id, session_ids))
    if encrypting(db.get_bind().dialect):
        rows = [{"user_id": user_id, "channel": channel, "chat_id": chat_id, "kind": kind,
                 "payload": template.replace(session_mark, str(session_id))
                 .replace(chat_mark, json.dumps(chat_id)), "dedupe_key": f"{kind}:{user_id}:{on}"}
                for session_id, user_id, on, channel, chat_id in await db.execute(
                    select(sessions.c.id, sessions.c.user_id, day, _users.c.channel,
                           _users.c.chat_id).select_from(chosen[0]).where(chosen[1]))]
        await enqueue_many(db, rows, now)
        return
    # The session first: an id put in cannot hold the chat's mark, a chat id put in last is
    # never searched.
    payload = func.replace(func.replace(literal(template, Text()), session_mark,
                                        cast(sessions.c.id, String)),
                           chat_mark, cast(func.to_json(_users.c.chat_id), Text) if pg
                           else func.json_quote(_users.c.chat_id))
    at = literal(now, UTCDateTime())
    rows = select(sessions.c.user_id, _users.c.channel, _users.c.chat_id, literal(kind),
                  cast(payload, JSON) if pg else payload,  # SQLite: JSON is its text
                  literal(f"{kind}:") + cast(sessions.c.user_id, String) + ":" + day,
                  literal("pending"), literal(0), at, at).select_from(chosen[0]).where(chosen[1])
    await db.execute(upsert(db, _outbox).from_select(
        ["user_id", "channel", "chat_id", "kind", "payload", "dedupe_key", "status",
         "attempts", "not_before", "created_at"], rows)
        .on_conflict_do_nothing(index_elements=["dedupe_key"]))


_CLAIMED_COLUMNS = (_outbox.c.id, _outbox.c.user_id, _outbox.c.channel, _outbox.c.chat_id,
                    _outbox.c.kind, _outbox.c.payload, _outbox.c.attempts, _outbox.c.not_before,
                    _outbox.c.lease_until, _outbox.c.parts_sent)


def _holding(rows: Any, now: datetime) -> Any:
    """A pending row that is being retried or is out with a worker: the later rows to its
    chat wait for it, so a chat's messages leave in the order they were queued."""
    return and_(rows.c.status == "pending",
                or_(rows.c.attempts > 0, rows.c.lease_until >= now))


async def claim_outbox(db: DbSession, now: datetime, lease: timedelta, limit: int,
                       channels: Collection[str]) -> list[Claimed]:
    """Lease up to `limit` due pending rows of the given channels, oldest first. A row whose
    lease ran out (its worker died) is due again. A row waits while an earlier one to its
    chat is retried or in flight (the wait ends when that one is sent or given up on)."""
    earlier = _outbox.alias("earlier")
    waits = exists().where(earlier.c.channel == _outbox.c.channel,
                           earlier.c.chat_id == _outbox.c.chat_id,
                           earlier.c.id < _outbox.c.id, _holding(earlier, now))
    due = (select(_outbox.c.id)
           .where(_outbox.c.status == "pending", _outbox.c.not_before <= now,
                  or_(_outbox.c.lease_until.is_(None), _outbox.c.lease_until < now),
                  _outbox.c.channel.in_(channels), ~waits)
           .order_by(_outbox.c.not_before, _outbox.c.id).limit(limit))
    if is_postgres(db):
        due = due.with_for_update(skip_locked=True)
    rows = (await db.execute(
        update(_outbox).where(_outbox.c.id.in_(due.scalar_subquery()))
        .values(lease_until=now + lease).returning(*_CLAIMED_COLUMNS))).all()
    return sorted((Claimed(*row) for row in rows), key=lambda c: (c.not_before, c.id))


def _pending(row_id: int) -> Any:
    return and_(_outbox.c.id == row_id, _outbox.c.status == "pending")


def _held(row: Claimed) -> Any:
    """Still this worker's lease: once it ran out and someone else took the row, their
    outcome counts, not ours."""
    return and_(_pending(row.id), _outbox.c.lease_until == row.lease_until)


async def mark_sent(db: DbSession, row: Claimed, now: datetime) -> None:
    # Not lease-bound: the message went out, whoever else may hold the row now.
    await db.execute(update(_outbox).where(_pending(row.id))
                     .values(status="sent", sent_at=now, lease_until=None, error=None))


async def mark_sent_many(db: DbSession, sent: Sequence[tuple[int, datetime]]) -> None:
    """Mark many delivered rows sent in one statement (the sender's group commit): row id,
    when it went out. Not lease-bound, as `mark_sent`."""
    if sent:
        await db.execute(
            update(_outbox).where(_outbox.c.id == bindparam("row_id"),
                                  _outbox.c.status == "pending")
            .values(status="sent", sent_at=bindparam("at"), lease_until=None, error=None),
            [{"row_id": row_id, "at": at} for row_id, at in sent])


def _parts(parts_sent: int | None) -> dict[str, int]:
    """None: not known here (a timeout); what `record_parts` wrote stands."""
    return {} if parts_sent is None else {"parts_sent": parts_sent}


async def retry_later(db: DbSession, row: Claimed, not_before: datetime, error: str,
                      parts_sent: int | None = None) -> None:
    """Try again from `not_before`, resuming at part `parts_sent` (those before went out)."""
    await db.execute(update(_outbox).where(_held(row))
                     .values(attempts=_outbox.c.attempts + 1, not_before=not_before,
                             lease_until=None, error=error[:ERROR_CHARS],
                             **_parts(parts_sent)))


async def record_parts(db: DbSession, row: Claimed, parts_sent: int) -> None:
    """The first `parts_sent` parts of the row's message went out: never send them again."""
    await db.execute(update(_outbox).where(_held(row)).values(parts_sent=parts_sent))


async def mark_failed(db: DbSession, row: Claimed, error: str, parts_sent: int | None = None
                      ) -> None:
    await db.execute(update(_outbox).where(_held(row))
                     .values(status="failed", attempts=_outbox.c.attempts + 1,
                             lease_until=None, error=error[:ERROR_CHARS],
                             **_parts(parts_sent)))


# Asked after every update that has a reply: built and compiled once.
_CHAT_WAITING = select(exists().where(
    _outbox.c.channel == bindparam("channel"), _outbox.c.chat_id == bindparam("chat_id"),
    _holding(_outbox, bindparam("now"))))


async def chat_waiting(db: DbSession, channel: str, chat_id: str, now: datetime) -> bool:
    """Whether the chat has a pending row being retried or in flight: a new message to it
    must queue behind, not overtake."""
    return bool(await db.scalar(_CHAT_WAITING,
                                {"channel": channel, "chat_id": chat_id, "now": now}))


async def mark_blocked(db: DbSession, channel: str, chat_id: str, error: str) -> None:
    """The chat blocked us: this row and every other pending one to that chat stop here."""
    await db.execute(update(_outbox)
                     .where(_outbox.c.channel == channel, _outbox.c.chat_id == chat_id,
                            _outbox.c.status == "pending")
                     .values(status="blocked", lease_until=None, error=error[:ERROR_CHARS]))


async def release(db: DbSession, rows: Iterable[Claimed]) -> None:
    """Give back leases this worker will not use (on shutdown), so others take them now."""
    by_lease: dict[datetime, list[int]] = {}
    for row in rows:
        by_lease.setdefault(row.lease_until, []).append(row.id)
    for lease_until, ids in by_lease.items():
        await db.execute(update(_outbox)
                         .where(_outbox.c.id.in_(ids), _outbox.c.status == "pending",
                                _outbox.c.lease_until == lease_until)
                         .values(lease_until=None))

# --- broadcasts ------------------------------------------------------------------------------
async def finish_broadcasts(db: DbSession, now: datetime) -> list[BroadcastDone]:
    """Mark done the queued broadcasts none of whose copies is still pending, and return them
    with their outcomes. The conditional update claims each for one worker only."""
    pending = exists().where(_outbox.c.broadcast_id == _broadcasts.c.id,
                             _outbox.c.status == "pending")
    done = (await db.execute(
        update(_broadcasts)
        .where(_broadcasts.c.status == "queued", _broadcasts.c.send_at <= now, ~pending)
        .values(status="done").returning(_broadcasts.c.id))).scalars().all()
    if not done:
        return []
    outcomes: dict[int, dict[str, int]] = {bid: {} for bid in done}
    for bid, status, count in await db.execute(
            select(_outbox.c.broadcast_id, _outbox.c.status, func.count())
            .where(among(db, _outbox.c.broadcast_id, done))
            .group_by(_outbox.c.broadcast_id, _outbox.c.status)):
        outcomes[bid][status] = count
    rows = await db.execute(
        select(_broadcasts.c.id, _broadcasts.c.coach_id, _users.c.channel, _users.c.chat_id,
               _broadcasts.c.send_at)
        .join(_users, _users.c.id == _broadcasts.c.coach_id)
        .where(among(db, _broadcasts.c.id, done)))
    return [BroadcastDone(*row, outcomes=outcomes[row[0]]) for row in rows]
