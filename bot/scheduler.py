"""The worker: APScheduler runs the tick (conversations/tick.py) every few seconds next to
the outbox sender, one tick at a time, with its metrics and the heartbeat /healthz reads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import metrics
from bot.delivery import Deliverer
from bot.sender import OutboxSender
from bot.settings import Settings
from conversations.clock import Clock
from conversations.program.data import Program
from conversations.tick import BATCH, Tick, TickReport
from storage.db import Outage, database_lost, is_sqlite

log = logging.getLogger(__name__)

PARALLEL = 4  # batches at once on PostgreSQL


class Scheduler:
    """Runs the tick at the clock's time, one at a time."""

    def __init__(self, sessions: async_sessionmaker[DbSession], program: Program, clock: Clock,
                 *, grace: timedelta, batch: int = BATCH, parallel: int = 1,
                 retention: timedelta = timedelta(days=90),
                 audit_retention: timedelta = timedelta(days=365),
                 heartbeat: metrics.Heartbeat | None = None,
                 default_language: str = "en") -> None:
        self.clock = clock
        self.heartbeat = heartbeat or metrics.Heartbeat(clock)
        self._tick = Tick(sessions, program, grace=grace, batch=batch, parallel=parallel,
                          retention=retention, audit_retention=audit_retention,
                          default_language=default_language)
        self._running = asyncio.Lock()
        self._outage = Outage("scheduler tick", log)

    async def tick(self) -> TickReport:
        async with self._running:
            return await self._tick.run(self.clock.now())

    async def stop(self) -> None:
        """Start no more ticks; return once one in progress has ended after the batches in
        hand. Cancelled instead, it lost the batch under way and logged an error."""
        self._tick.stopping = True
        async with self._running:
            pass

    async def job(self) -> None:
        """The periodic job: a failed tick is logged and the next one tries again. A finished
        tick beats the heartbeat that /healthz reads."""
        start = time.perf_counter()
        try:
            report = await self.tick()
        except Exception as exc:
            metrics.TICK_FAILURES.inc()
            if database_lost(exc):  # the next tick tries again: one line per outage
                self._outage.lost(exc)
            else:
                log.exception("scheduler tick failed")
            return
        self._outage.back()
        metrics.TICK_SECONDS.observe(time.perf_counter() - start)
        metrics.PROMPTS.inc(report.prompts)
        self.heartbeat.ticked()
        if any(vars(report).values()):  # quiet unless the tick did something
            log.info("tick: %s", report)


async def run_worker(settings: Settings, sessions: async_sessionmaker[DbSession],
                     program: Program, deliverers: Mapping[str, Deliverer], clock: Clock,
                     stop: asyncio.Event, heartbeat: metrics.Heartbeat | None = None) -> None:
    """Tick every `tick_seconds` and drain the outbox until `stop` is set. Any number of
    workers may run against one PostgreSQL database. `heartbeat` hears of each finished tick
    and whether the sender runs."""
    heartbeat = heartbeat or metrics.Heartbeat(clock)
    scheduler = Scheduler(sessions, program, clock,
                          grace=timedelta(minutes=settings.grace_minutes),
                          parallel=1 if is_sqlite(settings.database_url) else PARALLEL,
                          retention=timedelta(days=settings.retention_days),
                          audit_retention=timedelta(days=settings.audit_retention_days),
                          heartbeat=heartbeat, default_language=settings.default_language)
    sender = OutboxSender(sessions, deliverers, clock, rate=settings.send_rate)
    jobs = AsyncIOScheduler(timezone=UTC)
    # One tick at a time; ticks missed while one ran long fold into one. First tick now.
    jobs.add_job(scheduler.job, "interval", seconds=settings.tick_seconds, max_instances=1,
                 coalesce=True, misfire_grace_time=None, next_run_time=datetime.now(UTC))
    jobs.start()
    heartbeat.sender_running = True
    try:
        await sender.run(stop)
    finally:
        heartbeat.sender_running = False
        # APScheduler's shutdown cancels a running job: no new tick, the one in progress
        # ends after its batch, then nothing is left for shutdown to cancel.
        jobs.pause()
        await scheduler.stop()
        jobs.shutdown(wait=False)
