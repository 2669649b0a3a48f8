"""How long one tick takes to claim and queue the prompts of 100,000 due patients, on SQLite
and PostgreSQL, and its peak memory; against the floor: the very rows that tick wrote
(sessions, outbox rows, next prompt times) written into a copy of the database as it was
before the tick by the fastest bulk path it has (PostgreSQL COPY, the times through a COPY'd
temporary table and one UPDATE; SQLite one executemany per table in one transaction); side by
side, the same population scheduled the naive way (one APScheduler daily job per patient in
memory): start-up time and memory.

    python bench/dispatch.py [--patients 100000] [--postgres postgresql+asyncpg://...] [--no-naive]

PostgreSQL comes from --postgres or KNEECOACH_TEST_POSTGRES_URL; the benchmark works in a
scratch database it creates and drops. Each measurement runs in a fresh process, so its peak
RSS is its own. Goals: tick / floor <= 1.5 on both; <= 3 s on SQLite, <= 2 s on PostgreSQL,
RSS <= 200 MB. The last line: `ratios: sqlite_tick_floor=X postgres_tick_floor=Y`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
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
    print(f"seconds {elapsed}")


# What the tick writes, and the floor writes again: its columns as stored.
SESSION_COLUMNS = ("id", "user_id", "day", "level", "status", "morning_symptom", "prompted_at")
OUTBOX_COLUMNS = ("id", "user_id", "channel", "chat_id", "kind", "payload", "dedupe_key",
                  "status", "attempts", "parts_sent", "not_before", "created_at")


def floor_sqlite(ticked: str, copy: str) -> None:
    """The tick's rows, read from its database, written into the copy taken before it."""
    source = sqlite3.connect(ticked)
    sessions = source.execute(f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions").fetchall()
    outbox = source.execute(f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox").fetchall()
    # Every enrolment was due, so the tick moved every one on.
    times = source.execute("SELECT next_prompt_at, updated_at, user_id FROM program_state"
                           ).fetchall()
    source.close()
    target = sqlite3.connect(copy, isolation_level=None)
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):  # as db.py
        target.execute(f"PRAGMA {pragma}")
    target.execute("SELECT count(*) FROM program_state").fetchone()  # open and warm up
    started = time.perf_counter()
    target.execute("BEGIN IMMEDIATE")
    for table, columns, rows in (("sessions", SESSION_COLUMNS, sessions),
                                 ("outbox", OUTBOX_COLUMNS, outbox)):
        target.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                           f"({', '.join('?' * len(columns))})", rows)
    target.executemany("UPDATE program_state SET next_prompt_at = ?, updated_at = ? "
                       "WHERE user_id = ?", times)
    target.execute("COMMIT")
    elapsed = time.perf_counter() - started
    target.close()
    print(f"{len(sessions)} sessions, {len(outbox)} outbox rows, {len(times)} next times in "
          f"{elapsed:.2f} s")
    print(f"seconds {elapsed}")


async def floor_postgres(ticked: str, copy: str) -> None:
    source = await asyncpg.connect(ticked)
    sessions = await source.fetch(f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions")
    outbox = await source.fetch(f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM outbox")
    times = await source.fetch("SELECT user_id, next_prompt_at, updated_at FROM program_state")
    await source.close()
    target = await asyncpg.connect(copy)
    await target.fetchval("SELECT count(*) FROM program_state")  # connect and warm up
    started = time.perf_counter()
    async with target.transaction():
        await target.copy_records_to_table("sessions", records=sessions,
                                           columns=SESSION_COLUMNS)
        await target.copy_records_to_table("outbox", records=outbox, columns=OUTBOX_COLUMNS)
        await target.execute("CREATE TEMPORARY TABLE times (user_id bigint, next_prompt_at "
                             "timestamp, updated_at timestamp) ON COMMIT DROP")
        await target.copy_records_to_table("times", records=times)
        await target.execute("UPDATE program_state AS p SET next_prompt_at = t.next_prompt_at, "
                             "updated_at = t.updated_at FROM times AS t "
                             "WHERE p.user_id = t.user_id")
    elapsed = time.perf_counter() - started
    await target.close()
    print(f"{len(sessions)} sessions, {len(outbox)} outbox rows, {len(times)} next times in "
          f"{elapsed:.2f} s")
    print(f"seconds {elapsed}")


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


def child(*args: str) -> float:
    """Run one step in a fresh interpreter, so its peak RSS is its own; its seconds, if any."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True,
                         text=True).stdout
    seconds = 0.0
    for line in out.splitlines():
        if line.startswith("seconds "):
            seconds = float(line.split()[1])
        else:
            print(line, flush=True)
    return seconds


def ratio(tick: float, floor: float) -> str:
    return f"{tick / floor:.2f}" if tick and floor else "nan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--postgres", default=os.environ.get("KNEECOACH_TEST_POSTGRES_URL"),
                        help="postgresql+asyncpg://user@host/db (a scratch database is made)")
    parser.add_argument("--no-naive", action="store_true", help="skip the APScheduler control")
    parser.add_argument("--step", nargs=3, metavar=("STEP", "URL", "COPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step, url, copy = args.step
        if step == "naive":
            naive(args.patients)
        elif step == "floor":
            if is_sqlite(url):
                floor_sqlite(url.split("///", 1)[1], copy.split("///", 1)[1])
            else:
                asyncio.run(floor_postgres(url.replace("+asyncpg", ""),
                                           copy.replace("+asyncpg", "")))
        else:
            asyncio.run(seed(url, args.patients) if step == "seed" else tick(url))
        return

    count = str(args.patients)
    print(f"{args.patients:,} patients over {len(ZONES)} timezones, all due at one tick")
    seconds: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"
        copy = f"sqlite+aiosqlite:///{Path(scratch) / 'floor.db'}"
        child("--patients", count, "--step", "seed", url, "-")
        with sqlite3.connect(url.split("///", 1)[1]) as seeded, \
                sqlite3.connect(copy.split("///", 1)[1]) as before:
            seeded.backup(before)
        print("SQLite:      ", end="", flush=True)
        tick_s = child("--patients", count, "--step", "tick", url, "-")
        print("SQLite floor: ", end="", flush=True)
        seconds["sqlite"] = tick_s, child("--patients", count, "--step", "floor", url, copy)
        print(f"SQLite tick / floor {ratio(*seconds['sqlite'])}")
    if args.postgres:
        name = f"kneecoach_bench_{uuid.uuid4().hex[:8]}"
        server = args.postgres.rsplit("/", 1)[0]
        asyncio.run(admin(f"{server}/postgres", f'CREATE DATABASE "{name}"'))
        try:
            child("--patients", count, "--step", "seed", f"{server}/{name}", "-")
            asyncio.run(admin(f"{server}/postgres",
                              f'CREATE DATABASE "{name}_floor" TEMPLATE "{name}"'))
            print("PostgreSQL:  ", end="", flush=True)
            tick_s = child("--patients", count, "--step", "tick", f"{server}/{name}", "-")
            print("PostgreSQL floor: ", end="", flush=True)
            seconds["postgres"] = tick_s, child("--patients", count, "--step", "floor",
                                                f"{server}/{name}", f"{server}/{name}_floor")
            print(f"PostgreSQL tick / floor {ratio(*seconds['postgres'])}")
        finally:
            for db in (name, f"{name}_floor"):
                asyncio.run(admin(f"{server}/postgres", f'DROP DATABASE IF EXISTS "{db}" '
                                  "WITH (FORCE)"))
    else:
        print("PostgreSQL: skipped (no --postgres and no KNEECOACH_TEST_POSTGRES_URL)")
    if not args.no_naive:
        print("Naive:      ", end="", flush=True)
        child("--patients", count, "--step", "naive", "-", "-")
    print(f"ratios: sqlite_tick_floor={ratio(*seconds['sqlite'])} "
          f"postgres_tick_floor={ratio(*seconds.get('postgres', (0.0, 0.0)))}")


if __name__ == "__main__":
    main()
