"""Pacing at the platform's line (bot/pacing.py, the outbox sender): at most `rate` sends in
any one-second window and one per second per chat, counted by the pacer's own clock and by the
test Bot API server enforcing Telegram's limits; a 429's retry_after honoured by every chat;
nothing lost or sent twice. Behaviour only: no test asserts how fast anything went."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from tick_and_send import Platform

from bot.channels.telegram import TelegramChannel
from bot.channels.telegram_send import TelegramDeliverer
from bot.pacing import Pacer
from bot.sender import OutboxSender
from conftest import telegram_settings
from conversations.clock import ManualClock
from conversations.messages import Outbound
from storage import outbox
from storage.models import Outbox
from telegram_server import BotApiServer


@pytest.fixture
async def deliverer(telegram_api: BotApiServer) -> AsyncIterator[TelegramDeliverer]:
    sends = TelegramChannel.deliverer(telegram_settings(telegram_api))
    yield sends
    await sends.close()


async def queue(sessions: async_sessionmaker[DbSession], clock: ManualClock,
                chats: list[str], channel: str = "telegram") -> None:
    async with sessions() as db, db.begin():
        await outbox.enqueue_many(db, [
            {"user_id": None, "channel": channel, "chat_id": chat, "kind": "broadcast",
             "payload": json.dumps(Outbound(channel=channel, chat_id=chat,
                                            text=f"message {n}").model_dump(mode="json")),
             "dedupe_key": f"pace:{n}"} for n, chat in enumerate(chats)], clock.now())


async def statuses(sessions: async_sessionmaker[DbSession]) -> Counter[str]:
    async with sessions() as db:
        return Counter((await db.scalars(select(Outbox.status))).all())


async def test_the_pacer_never_has_more_than_rate_in_any_second_however_long_answers_take(
        ) -> None:
    """Each send may arrive anywhere between being let go and its answer: at any moment at
    most `rate` sends are out or answered within the last second; a chat's next send leaves
    a second after the previous one's answer."""
    pacer, rate, stop = Pacer(10), 10, asyncio.Event()
    loop = asyncio.get_running_loop()
    chance = random.Random(16)
    spans: list[tuple[str, float, float]] = []

    async def chat(chat_id: str, messages: int) -> None:
        for _ in range(messages):
            assert await pacer.wait(chat_id, stop)
            start = loop.time()
            await asyncio.sleep(chance.choice((0.0, 0.01, 0.05, 0.2)))  # the answer's latency
            spans.append((chat_id, start, loop.time()))
            pacer.done(chat_id)

    await asyncio.gather(*(chat(f"c{n}", 3 if n < 3 else 1) for n in range(24)))
    assert len(spans) == 30
    for _, at, _ in spans:
        holding = [s for s in spans if s[1] <= at < s[2] + 1.0]
        assert len(holding) <= rate
    for chat_id in ("c0", "c1", "c2"):
        mine = sorted((s for s in spans if s[0] == chat_id), key=lambda s: s[1])
        assert all(later[1] >= earlier[2] + 1.0 for earlier, later in itertools.pairwise(mine))


async def test_a_pacer_below_one_a_second_keeps_one_send_per_its_span() -> None:
    pacer, stop = Pacer(0.5), asyncio.Event()
    assert (pacer.capacity, pacer.span) == (1, 2.0)
    loop = asyncio.get_running_loop()
    assert await pacer.wait("a", stop)
    answered = loop.time()
    pacer.done("a")
    assert await pacer.wait("b", stop)
    assert loop.time() >= answered + 2.0
    pacer.done("b")


async def test_closing_the_pacer_tells_waiting_sends_to_stop() -> None:
    pacer, stop = Pacer(1), asyncio.Event()
    assert await pacer.wait("a", stop)
    waiting = asyncio.ensure_future(pacer.wait("b", stop))
    await asyncio.sleep(0)
    pacer.close()
    assert await waiting is False


async def test_at_the_servers_own_limit_the_sender_is_never_refused(
        telegram_api: BotApiServer, deliverer: TelegramDeliverer,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    limits = telegram_api.limit(overall=30, per_chat=1.0)
    # 51 chats of their own and three that get three messages each.
    chats = [str(9000 + n % 3) if n % 6 == 0 else str(7000 + n) for n in range(60)]
    await queue(sessions, clock, chats)
    sender = OutboxSender(sessions, {"telegram": deliverer}, clock, rate=30)
    await sender.drain()
    assert limits.refused == 0
    assert Counter(m.chat_id for m in telegram_api.sent) == Counter(chats)
    assert await statuses(sessions) == {"sent": 60}
    for chat in ("9000", "9001", "9002"):  # each chat's messages in the order queued
        texts = [m.text for m in telegram_api.to(chat)]
        assert texts == sorted(texts, key=lambda t: int(t.split()[1]))


async def test_a_sender_over_the_limit_is_refused_and_loses_nothing(
        telegram_api: BotApiServer, deliverer: TelegramDeliverer,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """The server's counting catches a sender configured beyond the platform's limit; each
    refused message is retried after its retry_after and arrives once."""
    limits = telegram_api.limit(overall=10, per_chat=1.0)
    chats = [str(7000 + n) for n in range(30)]
    await queue(sessions, clock, chats)
    sender = OutboxSender(sessions, {"telegram": deliverer}, clock, rate=30)
    for _ in range(20):
        await sender.drain()
        if (await statuses(sessions))["pending"] == 0:
            break
        clock.advance(timedelta(seconds=1))
    assert limits.refused > 0 and sender.stats["rate_limited"] == limits.refused
    assert Counter(m.chat_id for m in telegram_api.sent) == Counter(chats)
    assert await statuses(sessions) == {"sent": 30}


async def test_a_429_pauses_every_chat_for_its_retry_after_then_the_row_goes_once(
        telegram_api: BotApiServer, deliverer: TelegramDeliverer,
        sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    # One at a time (rate 1), so that nothing is in flight when the 429 comes back.
    telegram_api.fail("sendMessage", times=1, status=429, retry_after=2, chat="8001")
    await queue(sessions, clock, ["8001", "8002", "8003"])
    sender = OutboxSender(sessions, {"telegram": deliverer}, clock, rate=1)
    await sender.drain()
    (refused,) = [c for c in telegram_api.calls if c.status == 429]
    assert [m.chat_id for m in telegram_api.sent] == ["8002", "8003"]
    later = [c for c in telegram_api.calls if c.at > refused.at]
    assert len(later) == 2 and all(c.at >= refused.at + 2.0 for c in later)
    assert sender.stats["rate_limited"] == 1 and await statuses(sessions) == {
        "sent": 2, "pending": 1}

    clock.advance(timedelta(seconds=2))  # the row's own retry_after, in the outbox's time
    await sender.drain()
    assert Counter(m.chat_id for m in telegram_api.sent) == {"8001": 1, "8002": 1, "8003": 1}
    assert await statuses(sessions) == {"sent": 3}


async def test_sent_marks_are_group_committed_and_each_row_is_sent_once(
        database: AsyncEngine, sessions: async_sessionmaker[DbSession],
        clock: ManualClock) -> None:
    marks: list[int] = []

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
              many: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE OUTBOX SET STATUS"):
            marks.append(len(params) if many else 1)

    event.listen(database.sync_engine, "before_cursor_execute", count)
    chats = [f"g{n}" for n in range(300)]
    await queue(sessions, clock, chats, channel="console")
    platform = Platform()
    # every row let go at once: the writer's first transaction marks one, the next the rest
    await OutboxSender(sessions, {"console": platform}, clock, rate=10_000).drain()
    event.remove(database.sync_engine, "before_cursor_execute", count)
    assert sum(marks) == 300 and len(marks) < 300 / 4  # many rows per transaction
    assert Counter(o.chat_id for o in platform.received) == Counter(chats)
    assert await statuses(sessions) == {"sent": 300}
