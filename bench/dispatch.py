"""How long one tick takes to claim and queue the prompts of 100,000 due patients, on SQLite
and PostgreSQL, and its peak memory; side by side, the same population scheduled the naive way
(one APScheduler daily job per patient in memory): start-up time and memory.

    python bench/dispatch.py [--patients 100000] [--postgres postgresql+asyncpg://...]

PostgreSQL comes from --postgres or KNEECOACH_TEST_POSTGRES_URL; the benchmark works in a
scratch database it creates and drops. Each measurement runs in a fresh process, so its peak
RSS is its own. Goals: <= 5 s on SQLite, <= 2 s on PostgreSQL, RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select, text  # noqa: E402

from bot.scheduler import PARALLEL, Scheduler  # noqa: E402
from conversations.clock import ManualClock  # noqa: E402
from conversations.localtime import next_prompt_at, zone  # noqa: E402
from conversations.program.data import load_program  # noqa: E402
from storage.db import create_engine, is_sqlite, migrate, sessionmaker  # noqa: E402
from storage.models import Outbox, ProgramState, User  # noqa: E402

ZONES = ["Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles",
         "America/Sao_Paulo", "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney",
         "Pacific/Auckland", "Pacific/Chatham", "Africa/Lagos", "UTC"]
# A Monday morning in London: the tick at which every patient below is due.
TICK = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
CHUNK = 10_000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def population(count: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """(timezone, reminder HH:MM, days) per patient, each due within the minute before TICK:
    the worst tick there is, every patient's local reminder time falling on it at once."""
    chance = random.Random(seed)
    people = []
    for _ in range(count):
        tz = chance.choice(ZONES)
        local = (TICK - timedelta(seconds=chance.randrange(60))).astimezone(zone(tz))
        days = "".join(sorted({str(local.isoweekday())}
                              | {str(chance.randint(1, 7)) for _ in range(3)}))
        people.append((tz, local.strftime("%H:%M"), days))
    return people


async def seed(url: str, count: int) -> None:
    engine = create_engine(url)
    await migrate(engine)
    sessions = sessionmaker(engine)
    people = population(count)
    for start in range(0, count, CHUNK):
        part = people[start:start + CHUNK]
        async with sessions() as db, db.begin():
            ids = (await db.scalars(insert(User).returning(User.id), [
                {"channel": "telegram", "channel_user_id": str(start + n),
                 "chat_id": str(start + n), "status": "active", "timezone": tz,
                 "reminder_time": hhmm, "reminder_days": days, "unreachable": False,
                 "created_at": TICK} for n, (tz, hhmm, days) in enumerate(part)])).all()
            await db.execute(insert(ProgramState), [
                {"user_id": uid, "level": 1 + uid % 3, "started_on": TICK.date(),
                 "baseline_worst_pain": 4, "updated_at": TICK,
                 "next_prompt_at": next_prompt_at(TICK - timedelta(minutes=2), tz, hhmm, days)}
                for uid, (tz, hhmm, days) in zip(ids, part, strict=True)])
    if not url.startswith("sqlite"):  # statistics, as autovacuum keeps them on a live database
        async with engine.connect() as connection:
            await connection.execute(text("ANALYZE"))
    await engine.dispose()


async def tick(url: str) -> None:
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    # As run_worker sets it up: batches in parallel on PostgreSQL only.
    scheduler = Scheduler(sessions, load_program(), ManualClock(TICK),
                          grace=timedelta(minutes=180), parallel=1 if is_sqlite(url) else PARALLEL)
    async with sessions() as db:  # connect and warm up outside the timing
        due = await db.scalar(select(func.count()).select_from(ProgramState)
                              .where(ProgramState.next_prompt_at <= TICK))
    started = time.perf_counter()
    report = await scheduler.tick()
    elapsed = time.perf_counter() - started
    async with sessions() as db:
        queued = await db.scalar(select(func.count()).select_from(Outbox))
    await engine.dispose()
    print(f"{due} due, {report.prompts} prompts queued ({queued} outbox rows) in "
          f"{elapsed:.2f} s = {report.prompts / elapsed:,.0f}/s; peak RSS {rss_mb():.0f} MB")


def naive(count: int) -> None:
    """One cron job per patient in APScheduler's memory store, as a JobQueue would hold them."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.cron import CronTrigger

    async def prompt(patient: int) -> None:
        """Would send the prompt."""

    async def main() -> None:
        people = population(count)
        before = rss_mb()
        started = time.perf_counter()
        scheduler = AsyncIOScheduler(timezone=UTC)
        for n, (tz, hhmm, days) in enumerate(people):
            hour, minute = hhmm.split(":")
            scheduler.add_job(prompt, CronTrigger(
                day_of_week=",".join(str(int(d) - 1) for d in days), hour=hour, minute=minute,
                timezone=tz), args=[n], id=str(n))
        scheduler.start(paused=False)
        elapsed = time.perf_counter() - started
        jobs = len(scheduler.get_jobs())
        scheduler.shutdown(wait=False)
        print(f"{jobs} jobs in memory: start-up {elapsed:.2f} s; peak RSS {rss_mb():.0f} MB "
              f"({before:.0f} MB before the jobs)")

    asyncio.run(main())


async def admin(server_url: str, statement: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(statement))
    await engine.dispose()


def child(*args: str) -> None:
    """Run one step in a fresh interpreter, so its peak RSS is its own."""
    subprocess.run([sys.executable, __file__, *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("KNEECOACH_TEST_POSTGRES_URL"),
                        help="postgresql+asyncpg://user@host/db (a scratch database is made)")
    parser.add_argument("--step", nargs=2, metavar=("STEP", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step, url = args.step
        if step == "naive":
            naive(args.patients)
        else:
            asyncio.run(seed(url, args.patients) if step == "seed" else tick(url))
        return

    count = str(args.patients)
    print(f"{args.patients:,} patients over {len(ZONES)} timezones, all due at one tick")
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"
        child("--patients", count, "--step", "seed", url)
        print("SQLite:     ", end="", flush=True)
        child("--patients", count, "--step", "tick", url)
    if args.postgres:
        name = f"kneecoach_bench_{uuid.uuid4().hex[:8]}"
        server = args.postgres.rsplit("/", 1)[0]
        asyncio.run(admin(f"{server}/postgres", f'CREATE DATABASE "{name}"'))
        try:
            child("--patients", count, "--step", "seed", f"{server}/{name}")
            print("PostgreSQL: ", end="", flush=True)
            child("--patients", count, "--step", "tick", f"{server}/{name}")
        finally:
            asyncio.run(admin(f"{server}/postgres", f'DROP DATABASE "{name}" WITH (FORCE)'))
    else:
        print("PostgreSQL: skipped (no --postgres and no KNEECOACH_TEST_POSTGRES_URL)")
    print("Naive:      ", end="", flush=True)
    child("--patients", count, "--step", "naive", "-")


if __name__ == "__main__":
    main()
