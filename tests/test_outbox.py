"""The outbox sender (storage/outbox.py's leases) on SQLite and PostgreSQL: a sender killed
after claiming, platform errors, time-outs, retries and their cap, 429s, blocked chats, a
stopping sender's rows given back: never lost, never doubled."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from tick_and_send import (
    FIRST_PROMPT,
    ROOT,
    Platform,
    add_patients,
    pending,
    rows,
    scheduler,
    send_until_empty,
    sender,
)

from bot.delivery import Blocked, Progress, RetryLater, Undeliverable
from conftest import enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.messages import Outbound
from conversations.program.data import Program
from storage.models import Outbox, User

KILLED_SENDER = """
import asyncio, sys
from datetime import datetime
from bot.sender import OutboxSender
from conversations.clock import ManualClock
from storage.db import create_engine, sessionmaker

class Stuck:
    channel = "console"
    async def deliver(self, outbound, start=0, progress=None):
        print("claimed", flush=True)  # the rows are leased; the platform never gets this one
        await asyncio.Event().wait()

async def main():
    sessions = sessionmaker(create_engine(sys.argv[1]))
    clock = ManualClock(datetime.fromisoformat(sys.argv[2]))
    await OutboxSender(sessions, {"console": Stuck()}, clock, rate=5).drain()

asyncio.run(main())
"""


async def test_a_sender_killed_after_claiming_loses_nothing(
        database_url: str, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 30, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_SENDER, database_url, clock.now().isoformat(),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 60) == b"claimed\n"
    process.send_signal(signal.SIGKILL)
    await process.wait()
    leased = [r for r in await rows(sessions, Outbox) if r.lease_until is not None]
    assert len(leased) == 10  # the dead sender's window: 2 seconds' worth at 5/s

    platform = Platform()
    outbox = sender(sessions, platform, clock)
    await outbox.drain()
    assert len(platform.received) == 20  # the dead sender's rows stay leased for now
    clock.advance(timedelta(minutes=2, seconds=1))
    await outbox.drain()
    assert Counter(o.chat_id for o in platform.received) == {f"p{n}": 1 for n in range(30)}
    assert {r.status for r in await rows(sessions, Outbox)} == {"sent"}


async def test_injected_429_500_and_timeouts_lose_nothing(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 300, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    chance = random.Random(4)
    hung = asyncio.Event()

    def flaky(outbound: Outbound) -> BaseException | None:
        roll = chance.random()
        if roll < 0.033:
            return RetryLater("429 Too Many Requests", retry_after=0.01)
        if roll < 0.066:
            return RetryLater("500 Internal Server Error")
        if roll < 0.1:
            hung.set()
            return TimeoutError()  # as the sender's own timeout raises it
        return None

    platform = Platform(fail=flaky)
    outbox = sender(sessions, platform, clock)
    await send_until_empty(outbox, sessions, clock)
    assert hung.is_set() and outbox.stats["rate_limited"] and outbox.stats["retried"] > 20
    assert Counter(o.chat_id for o in platform.received) == {f"p{n}": 1 for n in range(300)}
    queued = await rows(sessions, Outbox)
    assert {r.status for r in queued} == {"sent"} and max(r.attempts for r in queued) >= 1


async def test_a_hanging_delivery_times_out_and_is_retried(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 1, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()

    class Hangs(Platform):
        async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
            if self.calls == 0:
                self.calls += 1
                await asyncio.Event().wait()
            return await super().deliver(outbound, start, progress)

    platform = Hangs()
    outbox = sender(sessions, platform, clock, timeout=0.05)
    await outbox.drain()
    (row,) = await rows(sessions, Outbox)
    assert (row.status, row.attempts) == ("pending", 1) and "no answer" in (row.error or "")
    await send_until_empty(outbox, sessions, clock)
    assert len(platform.received) == 1


async def test_retries_give_up_after_the_attempt_cap_and_undeliverable_fails_at_once(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 2, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    platform = Platform(fail=lambda o: RetryLater("502 Bad Gateway") if o.chat_id == "p0"
                        else Undeliverable("400 chat not found"))
    outbox = sender(sessions, platform, clock, max_attempts=4, per_chat_seconds=0.01)
    for _ in range(6):
        await outbox.drain()
        clock.advance(timedelta(hours=1))
    by_chat = {r.chat_id: r for r in await rows(sessions, Outbox)}
    assert (by_chat["p0"].status, by_chat["p0"].attempts) == ("failed", 4)
    assert (by_chat["p1"].status, by_chat["p1"].attempts) == ("failed", 1)
    assert platform.calls == 5


async def test_a_429_waits_as_told_and_does_not_count_against_the_cap(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 1, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    told = iter([RetryLater("429 Too Many Requests", retry_after=0.01)] * 5)
    platform = Platform(fail=lambda _: next(told, None))
    outbox = sender(sessions, platform, clock, max_attempts=2, per_chat_seconds=0.01)
    for _ in range(5):
        await outbox.drain()
        (row,) = await rows(sessions, Outbox)
        assert row.status == "pending" and row.not_before == clock.now() + timedelta(
            seconds=0.01)
        clock.advance(timedelta(seconds=0.01))
    await outbox.drain()
    assert len(platform.received) == 1


async def test_a_blocked_user_is_not_retried_and_is_marked_unreachable(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    blocker = await enrolled(engine, "u1")
    await enrolled(engine, "u2")
    ticks = scheduler(sessions, program, clock)
    platform = Platform(fail=lambda o: Blocked("403 Forbidden: bot was blocked by the user")
                        if o.chat_id == "u1" else None)
    outbox = sender(sessions, platform, clock)
    clock.set(FIRST_PROMPT)
    await ticks.tick()
    await send_until_empty(outbox, sessions, clock)
    assert platform.calls == 2 and platform.texts("u2")
    by_chat = {r.chat_id: r for r in await rows(sessions, Outbox)}
    assert by_chat["u1"].status == "blocked" and by_chat["u2"].status == "sent"
    assert (await rows(sessions, User, channel_user_id="u1"))[0].unreachable

    clock.set(FIRST_PROMPT + timedelta(days=1))
    assert (await ticks.tick()).prompts == 1  # u2 only
    await send_until_empty(outbox, sessions, clock)
    assert platform.calls == 3

    await blocker.send("/help")  # writing again makes them reachable
    assert not (await rows(sessions, User, channel_user_id="u1"))[0].unreachable
    clock.set(FIRST_PROMPT + timedelta(days=2))
    assert (await ticks.tick()).prompts == 2


async def test_rows_claimed_by_a_stopping_sender_are_given_back(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 20, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    platform = Platform()
    await asyncio.wait_for(sender(sessions, platform, clock, rate=5).run(platform.arrived), 30)
    assert len(platform.received) == 1
    statuses = Counter((r.status, r.lease_until) for r in await rows(sessions, Outbox))
    assert statuses == {("sent", None): 1, ("pending", None): 19}


async def test_a_due_row_with_no_deliverer_for_its_channel_waits(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    clock.set(FIRST_PROMPT)
    await add_patients(sessions, 3, FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    async with sessions() as db, db.begin():
        await db.execute(update(Outbox).values(channel="slack"))
    platform = Platform("telegram")
    await sender(sessions, platform, clock).drain()
    assert platform.calls == 0 and await pending(sessions) == 3
