"""How long `kneecoach stats --since 90d` takes over 100,000 patients x 90 days of sessions and
pain reports, on SQLite and PostgreSQL. The data is generated inside the database (SQL series),
so setting up 9 million rows takes seconds, not hours.

    python bench/stats.py [--patients 100000] [--days 90] [--postgres URL]

PostgreSQL comes from --postgres or KNEECOACH_TEST_POSTGRES_URL; a scratch database is created
there and dropped afterwards. Prints the time of the statistics query in process and of the
whole command (Python start-up included)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conversations.tick import BATCH  # noqa: E402
from storage.db import create_engine, migrate, sessionmaker  # noqa: E402
from storage.stats import compute, fold  # noqa: E402

COACHES = 100
START = date(2026, 8, 1)

# status by a hash of (user, day): about 60% done, 15% partly, 10% skipped, 15% missed.
STATUS = ("CASE WHEN (u * 7 + d * 13) % 20 < 12 THEN 'done' WHEN (u * 7 + d * 13) % 20 < 15 "
          "THEN 'partial' WHEN (u * 7 + d * 13) % 20 < 17 THEN 'skipped' ELSE 'missed' END")
PAIN = "CASE WHEN (u * 7 + d * 13) % 20 < 15 THEN (u + d) % 7 ELSE NULL END"


def generate(dialect: str, patients: int, days: int) -> list[str]:
    if dialect == "postgresql":
        users = f"SELECT g AS u FROM generate_series(1, {patients + COACHES}) g"
        grid = (f"SELECT u, d FROM generate_series({COACHES + 1}, {patients + COACHES}) u "
                f"CROSS JOIN generate_series(0, {days - 1}) d")
        day = f"(DATE '{START}' + d)"
        ts = f"(TIMESTAMP '{START} 08:00:00' + d * INTERVAL '1 day')"
        start = f"DATE '{START}'"
        now = f"TIMESTAMP '{START} 08:00:00'"
        false = "false"
    else:
        users = (f"WITH RECURSIVE n(u) AS (SELECT 1 UNION ALL SELECT u + 1 FROM n WHERE u < "
                 f"{patients + COACHES}) SELECT u FROM n")
        grid = (f"WITH RECURSIVE n(u) AS (SELECT {COACHES + 1} UNION ALL SELECT u + 1 FROM n "
                f"WHERE u < {patients + COACHES}), m(d) AS (SELECT 0 UNION ALL SELECT d + 1 "
                f"FROM m WHERE d < {days - 1}) SELECT u, d FROM n CROSS JOIN m")
        day = f"date('{START}', '+' || d || ' days')"
        ts = f"datetime('{START} 08:00:00', '+' || d || ' days') || '.000000'"
        start = f"'{START}'"
        now = f"'{START} 08:00:00.000000'"
        false = "0"
    return [
        f"INSERT INTO users (id, channel, channel_user_id, chat_id, display_name, role, "
        f"coach_id, status, unreachable, created_at) SELECT u, 'telegram', u, u, '', "
        f"CASE WHEN u <= {COACHES} THEN 'coach' ELSE 'patient' END, CASE WHEN u > {COACHES} "
        f"THEN 1 + u % {COACHES} END, CASE WHEN u % 10 = 0 THEN 'paused' ELSE 'active' END, "
        f"{false}, {now} FROM ({users}) x",
        f"INSERT INTO program_state (user_id, level, started_on, baseline_worst_pain, "
        f"kujala_change, updated_at) SELECT u, 1 + u % 5, {start}, 3 + u % 5, "
        f"(65 + u % 25) - (60 + u % 20), {now} FROM ({users}) x "
        f"WHERE u > {COACHES}",
        f"INSERT INTO assessments (user_id, kind, answers, score, created_at) SELECT u, "
        f"'kujala', '{{}}', 60 + u % 20, {now} FROM ({users}) x WHERE u > {COACHES}",
        f"INSERT INTO assessments (user_id, kind, answers, score, created_at) SELECT u, "
        f"'kujala', '{{}}', 65 + u % 25, {now} FROM ({users}) x WHERE u > {COACHES}",
        # Every day but the last is tallied, as the tick leaves it; the last day is not yet
        # (as if the workers had been down that day), so the query reads 100,000 rows live.
        f"INSERT INTO sessions (user_id, day, level, status, pain_during, morning_symptom, "
        f"tallied_coach) SELECT u, {day}, 1 + u % 5, {STATUS}, {PAIN}, {false}, CASE WHEN "
        f"d < {days - 1} THEN 1 + u % {COACHES} END FROM ({grid}) x",
        f"INSERT INTO outbox (user_id, channel, chat_id, kind, payload, dedupe_key, status, "
        f"attempts, not_before, created_at, sent_at, tallied_coach) SELECT u, 'telegram', u, "
        f"'prompt', '{{}}', 'prompt:' || u || ':' || d, 'sent', 1, {ts}, {ts}, {ts}, CASE WHEN "
        f"d < {days - 1} THEN 1 + u % {COACHES} END FROM ({grid}) x",
        "INSERT INTO stat_tallies (day, coach_id, measure, count) SELECT day, tallied_coach, "
        "status, count(*) FROM sessions WHERE tallied_coach IS NOT NULL "
        "GROUP BY day, tallied_coach, status",
        f"INSERT INTO stat_tallies (day, coach_id, measure, count) SELECT {day}, 1 + u % "
        f"{COACHES}, 'prompt', count(*) FROM ({grid}) x WHERE d < {days - 1} "
        f"GROUP BY d, 1 + u % {COACHES}",
        f"INSERT INTO pain_reports (user_id, at, pain, context) SELECT u, {ts}, (u + d) % 7, "
        f"'during' FROM ({grid}) x WHERE (u * 7 + d * 13) % 20 < 15",
        f"INSERT INTO progression_events (user_id, at, day, from_level, to_level, action, rule, "
        f"message) SELECT u, {ts}, {day}, 2, 3, 'progress', 'R1', '' FROM ({grid}) x "
        f"WHERE d % 30 = 7",
    ]


async def measure(url: str, patients: int, days: int) -> tuple[float, ...]:
    engine = create_engine(url)
    await migrate(engine)
    started = time.perf_counter()
    async with engine.begin() as connection:
        for statement in generate(engine.dialect.name, patients, days):
            await connection.execute(text(statement))
        if engine.dialect.name == "postgresql":
            # Statistics, not VACUUM: a live database's last week has seldom been vacuumed
            # (autovacuum waits for a fifth of the table), so its pain is read from the heap.
            await connection.execute(text("ANALYZE"))
    setup = time.perf_counter() - started
    today = START + timedelta(days=days - 1)
    sessions = sessionmaker(engine)

    async def query() -> tuple[float, list[dict[str, object]]]:
        started = time.perf_counter()
        async with sessions() as db:
            rows = await compute(db, today - timedelta(days=89), today)
        assert rows[0].enrolled == patients, rows[0]
        return time.perf_counter() - started, [row.public() for row in rows]

    open_query, before = await query()
    started = time.perf_counter()
    while True:  # as the tick does: the last day's sessions and prompts into the tallies
        async with sessions() as db, db.begin():
            if not await fold(db, BATCH):
                break
    folding = time.perf_counter() - started
    # The median of three runs: one run on a shared 2-core machine varied by a fifth.
    runs = [await query() for _ in range(3)]
    tallied_query = statistics.median(seconds for seconds, _ in runs)
    assert all(after == before for _, after in runs), "the tallies and the live rows disagree"
    await engine.dispose()
    env = {**os.environ, "KNEECOACH_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "stats", "--since", "90d", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, error = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(error.decode())
    command = time.perf_counter() - started
    return setup, open_query, folding, tallied_query, command


async def scratch_postgres(url: str) -> tuple[str, str]:
    name = f"kneecoach_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name, name


async def drop_postgres(url: str, name: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--postgres", default=os.environ.get("KNEECOACH_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    print(f"{args.patients:,} patients x {args.days} days "
          f"({args.patients * args.days:,} sessions); stats --since 90d")
    print("query s: in process, with the last day not yet tallied (as if the workers had been\n"
          "down all day), then once the tick's fold has tallied it (median of 3); command s:\n"
          "the whole `kneecoach stats --since 90d` process, Python start-up included")
    print(f"{'database':<12}{'set-up s':>10}{'query s':>10}{'fold s':>9}{'query s':>10}"
          f"{'command s':>11}")

    def line(name: str, figures: tuple[float, ...]) -> None:
        setup, open_query, folding, tallied_query, command = figures
        print(f"{name:<12}{setup:>10.1f}{open_query:>10.2f}{folding:>9.2f}{tallied_query:>10.2f}"
              f"{command:>11.2f}")

    tallied: dict[str, float | None] = {"postgres": None, "sqlite": None}
    with tempfile.TemporaryDirectory() as folder:
        figures = await measure(f"sqlite+aiosqlite:///{folder}/bench.db", args.patients,
                                args.days)
        line("SQLite", figures)
        tallied["sqlite"] = figures[3]
    if args.postgres:
        url, name = await scratch_postgres(args.postgres)
        try:
            figures = await measure(url, args.patients, args.days)
            line("PostgreSQL", figures)
            tallied["postgres"] = figures[3]
        finally:
            await drop_postgres(args.postgres, name)
    else:
        print("PostgreSQL: skipped (set --postgres or KNEECOACH_TEST_POSTGRES_URL)")
    print("goal: query (tallied, as the tick keeps it) <= 0.5 s on PostgreSQL, <= 1 s on SQLite")
    print("ratios: " + " ".join(f"{name}_s={'n/a' if s is None else f'{s:.3f}'}"
                                for name, s in tallied.items()))


if __name__ == "__main__":
    asyncio.run(main())
