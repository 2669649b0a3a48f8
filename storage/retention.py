"""Retention: what is kept only for a while is deleted in batches by the scheduler's tick."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.models import AuditLog, Outbox, ProcessedUpdate

PRUNED = "pruned"  # a sent prompt whose payload was removed; the row stays for statistics

_updates, _outbox, _audit = ProcessedUpdate.__table__, Outbox.__table__, AuditLog.__table__


async def prune(db: DbSession, now: datetime, keep: timedelta, keep_audit: timedelta,
                limit: int) -> bool:
    """Delete up to `limit` each of the processed update ids and the messages sent (or given
    up on) older than `keep`, and of the audit entries older than `keep_audit`. Sent prompts
    are statistics' records (an erasure takes its patient's counts out through them), so they
    keep their row and lose their payload. True when a batch was full (there may be more)."""
    cutoff = now - keep
    # Done with: sent, or given up on (failed, blocked) and last due before the cutoff. A
    # message is sent after it was due, so `not_before < cutoff` holds for all: it lets
    # ix_outbox_due (status, not_before) find them. The others have an index on their time.
    done = (_outbox.c.status.in_(("sent", "failed", "blocked")), _outbox.c.not_before < cutoff,
            func.coalesce(_outbox.c.sent_at, _outbox.c.not_before) < cutoff)
    sent_prompt = and_(_outbox.c.kind == "prompt", _outbox.c.status == "sent")
    statements: list[Any] = [
        delete(_updates).where(tuple_(_updates.c.channel, _updates.c.update_id).in_(
            select(_updates.c.channel, _updates.c.update_id)
            .where(_updates.c.at < cutoff).limit(limit))),
        delete(_outbox).where(_outbox.c.id.in_(
            select(_outbox.c.id).where(*done, ~sent_prompt).limit(limit))),
        update(_outbox).where(_outbox.c.id.in_(
            select(_outbox.c.id).where(*done, sent_prompt, _outbox.c.tallied_coach.is_not(None))
            .limit(limit)))
        .values(status=PRUNED, payload={}),
        delete(_audit).where(_audit.c.id.in_(
            select(_audit.c.id).where(_audit.c.at < now - keep_audit).limit(limit))),
    ]
    full = False
    for statement in statements:
        full = (await db.execute(statement)).rowcount >= limit or full
    return full
