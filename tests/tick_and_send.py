"""What the tests of the tick (test_tick.py) and of the outbox sender (test_outbox.py)
share: a stand-in for the chat platform, the two loops at the test's clock, and rows read or
written straight in the tables."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.delivery import Progress
from bot.scheduler import Scheduler
from bot.sender import OutboxSender
from conversations.clock import ManualClock
from conversations.messages import Outbound
from conversations.program.data import Program
from storage.models import Outbox, ProgramState, User

GRACE = timedelta(minutes=180)
ROOT = Path(__file__).resolve().parent.parent
# The first prompt of a patient enrolled by `enrolled` (London, 07:00, every day) on the
# clock fixture's 14 January 2026: 15 January at 07:00 GMT.
FIRST_PROMPT = datetime(2026, 1, 15, 7, 0, tzinfo=UTC)


class Platform:
    """A stand-in for the chat platform's API (not for our code): records what arrives and
    fails as told. `fail(outbound)` returns an exception to raise, or None to accept."""

    def __init__(self, channel: str = "console",
                 fail: Callable[[Outbound], BaseException | None] = lambda _: None) -> None:
        self.channel = channel
        self.fail = fail
        self.received: list[Outbound] = []
        self.calls = 0
        self.arrived = asyncio.Event()  # set by the first message that arrives

    async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
        self.calls += 1
        error = self.fail(outbound)
        if error is not None:
            raise error
        self.received.append(outbound)
        self.arrived.set()
        return str(len(self.received))

    def texts(self, chat_id: str) -> list[str]:
        return [o.text for o in self.received if o.chat_id == chat_id]


def scheduler(sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock,
              **options: Any) -> Scheduler:
    return Scheduler(sessions, program, clock, grace=GRACE, **options)


def sender(sessions: async_sessionmaker[DbSession], platform: Platform, clock: ManualClock,
           **options: Any) -> OutboxSender:
    options.setdefault("rate", 1000)
    return OutboxSender(sessions, {platform.channel: platform}, clock, **options)


async def rows(sessions: async_sessionmaker[DbSession], model: type, **where: Any) -> list[Any]:
    async with sessions() as db:
        return list((await db.scalars(select(model).filter_by(**where))).all())


async def user_id(sessions: async_sessionmaker[DbSession], channel_user_id: str) -> int:
    (user,) = await rows(sessions, User, channel_user_id=channel_user_id)
    return int(user.id)


async def add_patients(sessions: async_sessionmaker[DbSession], count: int, due: datetime
                       ) -> list[int]:
    """Enrolled patients due a prompt at `due`, written straight into the tables (onboarding
    thousands through the engine would only slow the test down)."""
    async with sessions() as db, db.begin():
        ids = list((await db.scalars(insert(User).returning(User.id), [
            {"channel": "console", "channel_user_id": f"p{n}", "chat_id": f"p{n}",
             "status": "active", "timezone": "Europe/London", "reminder_time": "07:00",
             "reminder_days": "1234567", "unreachable": False, "created_at": due}
            for n in range(count)])).all())
        await db.execute(insert(ProgramState), [
            {"user_id": uid, "level": 2, "started_on": due.date(), "baseline_worst_pain": 4,
             "next_prompt_at": due, "updated_at": due} for uid in ids])
    return ids


async def pending(sessions: async_sessionmaker[DbSession]) -> int:
    async with sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(Outbox)
                                   .where(Outbox.status == "pending")) or 0)


async def send_until_empty(outbox: OutboxSender, sessions: async_sessionmaker[DbSession],
                           clock: ManualClock, step: timedelta = timedelta(hours=1)) -> None:
    """Drain; rows told to wait come due as the clock moves on."""
    for _ in range(40):
        await outbox.drain()
        if not await pending(sessions):
            return
        clock.advance(step)
    raise AssertionError("the outbox never emptied")
