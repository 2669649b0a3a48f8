"""What the service counts for the operator (Prometheus, served at /metrics by bot/web.py), and
the heartbeats /healthz reads. Counters live in the process; the outbox and holds gauges are
read from the database at each scrape, so every process reports the same figures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conversations.clock import Clock
from storage.models import Hold, Outbox

disable_created_metrics()  # the *_created series only double a scrape's size
REGISTRY = CollectorRegistry()  # ours alone: no process or platform collectors mixed in

UPDATES = Counter("kneecoach_updates", "Updates handled, by channel and outcome (ok, error)",
                  ["channel", "outcome"], registry=REGISTRY)
UPDATE_SECONDS = Histogram("kneecoach_update_seconds",
                           "Time to handle one update, replies sent included", ["channel"],
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
MESSAGES = Counter("kneecoach_messages", "Outbox messages by channel and outcome "
                   "(sent, retried, failed, blocked)", ["channel", "outcome"], registry=REGISTRY)
RATE_LIMITED = Counter("kneecoach_rate_limited", "429 answers (Retry-After) by channel",
                       ["channel"], registry=REGISTRY)
TICK_SECONDS = Histogram("kneecoach_tick_seconds", "Duration of one scheduler tick",
                         buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=REGISTRY)
TICK_FAILURES = Counter("kneecoach_tick_failures", "Scheduler ticks that raised",
                        registry=REGISTRY)
PROMPTS = Counter("kneecoach_prompts_claimed", "Daily prompts claimed and queued by the tick",
                  registry=REGISTRY)
OUTBOX_DEPTH = Gauge("kneecoach_outbox_depth", "Pending outbox rows by kind", ["kind"],
                     registry=REGISTRY)
OUTBOX_OLDEST = Gauge("kneecoach_outbox_oldest_due_seconds",
                      "Age of the oldest pending outbox row that is due (0: none)",
                      registry=REGISTRY)
HOLDS = Gauge("kneecoach_holds_open", "Referral and pain holds not lifted, by kind", ["kind"],
              registry=REGISTRY)


@contextmanager
def handling(channel: str) -> Iterator[None]:
    """Count one update and time it; an exception counts as an error and goes on up."""
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        UPDATES.labels(channel, outcome).inc()
        UPDATE_SECONDS.labels(channel).observe(time.perf_counter() - start)


async def read_database(sessions: async_sessionmaker[DbSession], now: datetime) -> None:
    """Set the outbox and holds gauges from the database (at each scrape)."""
    async with sessions() as db:
        holds = (await db.execute(select(Hold.kind, func.count()).where(
            Hold.lifted_at.is_(None)).group_by(Hold.kind))).all()
        depth = (await db.execute(select(Outbox.kind, func.count()).where(
            Outbox.status == "pending").group_by(Outbox.kind))).all()
        oldest = await db.scalar(select(func.min(Outbox.not_before)).where(
            Outbox.status == "pending", Outbox.not_before <= now))
    HOLDS.clear()
    for kind, count in holds:
        HOLDS.labels(kind).set(count)
    OUTBOX_DEPTH.clear()
    for kind, count in depth:
        OUTBOX_DEPTH.labels(kind).set(count)
    OUTBOX_OLDEST.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)


class Heartbeat:
    """When the tick last finished and whether the sender runs, by the injected clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = clock.now()
        self.tick_at: datetime | None = None
        self.sender_running = False

    def ticked(self) -> None:
        self.tick_at = self.clock.now()

    def tick_age(self) -> float:
        """Seconds since the last finished tick (since start while none has finished)."""
        return (self.clock.now() - (self.tick_at or self.started)).total_seconds()
