"""The outbox sender: drains the outbox through the channels' deliverers, paced within the
platforms' limits (bot/pacing.py), many sends in flight at once; the "sent" outcomes written
by group commit, every other outcome as soon as its delivery returns."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import metrics
from bot.delivery import Blocked, Deliverer, DeliveryError, RetryLater, Undeliverable
from bot.pacing import Pacer, sleep_or_stop
from conversations.clock import Clock
from conversations.messages import Outbound
from storage import outbox
from storage.db import Outage, backoff, database_lost, reason
from storage.repository import Repository

log = logging.getLogger(__name__)

# Claimed rows are leased; a row whose lease is this close to running out is left for the
# next claim rather than sent, so it never goes out twice from two workers.
LEASE = timedelta(minutes=2)
LEASE_MARGIN = timedelta(seconds=45)
MAX_ATTEMPTS = 8
BACKOFF = timedelta(seconds=5)
MAX_BACKOFF = timedelta(minutes=30)
DELIVER_TIMEOUT = 30.0  # seconds; an adapter that hangs longer is treated as a network error
MARK_TRIES = 3  # writing an outcome is retried: an unrecorded send would be sent again


class OutboxSender:
    """Drains the outbox through the channels' deliverers, within the platforms' limits.

    Rows are claimed a little ahead of sending (about `ahead` seconds' worth) and queued per
    chat; one task per chat sends its rows in order, the pacer letting many chats' sends be in
    flight at once. A row is marked sent only after the platform said OK; those marks are
    group-committed, many rows in one transaction, by one writer that takes whatever came
    in while its last transaction ran. Any other outcome is written in its own transaction
    right after the delivery returns. The one window for a double send: the process dies (or
    the database stays unreachable) between a successful delivery and the write that marks
    it sent; the row is then sent again when its lease runs out."""

    def __init__(self, sessions: async_sessionmaker[DbSession],
                 deliverers: Mapping[str, Deliverer], clock: Clock, *, rate: float,
                 per_chat_seconds: float = 1.0, lease: timedelta = LEASE,
                 max_attempts: int = MAX_ATTEMPTS, backoff: timedelta = BACKOFF,
                 max_backoff: timedelta = MAX_BACKOFF, timeout: float = DELIVER_TIMEOUT,
                 ahead: float = 2.0) -> None:
        self.sessions = sessions
        self.deliverers = dict(deliverers)
        self.clock = clock
        self.pacers = {channel: Pacer(rate, per_chat_seconds) for channel in self.deliverers}
        self.lease = lease
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.window = max(8, math.ceil(rate * ahead))
        self.stats: Counter[str] = Counter()  # sent, retried, rate_limited, failed, blocked
        self._queues: dict[tuple[str, str], deque[outbox.Claimed]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held = 0  # claimed and not finished
        self._low = 0  # `_progress` is set once `_held` is down to this
        self._progress = asyncio.Event()
        self._stop = asyncio.Event()
        self._sent: list[tuple[int, datetime]] = []  # delivered, not yet marked sent
        self._writer: asyncio.Task[None] | None = None

    async def drain(self) -> None:
        """Send every row due by the clock's time now and return; rows that must wait (a retry
        later) stay pending. For tests and benchmarks, which move the clock themselves."""
        while True:
            room = self.window - self._held
            claimed = await self._fill()
            if not claimed and not self._held:
                # a row behind one not yet marked sent is claimable once that one is
                if not await self._flush():
                    return
                continue
            await self._held_down_to(self.window // 2 if claimed == room else 0)

    async def run(self, stop: asyncio.Event, poll: float = 1.0) -> None:
        """Send until `stop` is set; rows claimed but not begun are given back on the way out."""
        self._stop = stop
        outage, tries = Outage("outbox sender", log), 0
        try:
            while not stop.is_set():
                room = self.window - self._held
                try:
                    claimed = await self._fill()
                except Exception as exc:
                    if not database_lost(exc):
                        if not isinstance(exc, SQLAlchemyError):
                            raise
                        log.exception("claiming outbox rows failed; trying again")
                        claimed = 0
                    else:  # wait it out: back off, then claim again
                        outage.lost(exc)
                        await sleep_or_stop(backoff(tries), stop)
                        tries += 1
                        continue
                outage.back()
                tries = 0
                if claimed and claimed == room:  # more may be due: refill as rows finish
                    await self._held_down_to(self.window // 2)
                else:
                    await sleep_or_stop(poll, stop)
        finally:
            for pacer in self.pacers.values():
                pacer.close()
            if self._tasks:
                await asyncio.gather(*self._tasks)
            await self._flush()
            leftover = [row for queue in self._queues.values() for row in queue]
            self._queues.clear()
            if leftover:
                try:
                    async with self.sessions() as db, db.begin():
                        await outbox.release(db, leftover)
                except Exception as exc:
                    if not database_lost(exc):
                        raise
                    log.warning("outbox sender: %s claimed rows not given back (%s); their "
                                "leases run out", len(leftover), reason(exc))

    async def _held_down_to(self, low: int) -> None:
        """Wait until at most `low` claimed rows are unfinished, or `stop` is set."""
        if self._held <= low or self._stop.is_set():
            return
        self._low = low
        self._progress.clear()
        waits = [asyncio.ensure_future(self._progress.wait()),
                 asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()

    def _finished(self, rows: int) -> None:
        self._held -= rows
        if self._held <= self._low:
            self._progress.set()

    async def _fill(self) -> int:
        room = self.window - self._held
        if room <= 0 or not self.deliverers:
            return 0
        async with self.sessions() as db, db.begin():
            rows = await outbox.claim_outbox(db, self.clock.now(), self.lease, room,
                                               list(self.deliverers))
        for row in rows:
            key = (row.channel, row.chat_id)
            queue = self._queues.get(key)
            self._held += 1
            if queue is not None:
                queue.append(row)
                continue
            self._queues[key] = deque([row])
            task = asyncio.create_task(self._chat(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _chat(self, key: tuple[str, str]) -> None:
        """Send one chat's rows in order, one at a time. When one is left to retry later,
        the rows behind it are given back: they wait for it (see outbox.claim_outbox)."""
        queue = self._queues[key]
        pacer = self.pacers[key[0]]
        try:
            while queue:
                if not await pacer.wait(key[1], self._stop):
                    return  # stopping: what is left is released by run()
                row = queue.popleft()
                try:
                    outcome = await self._attempt(row)
                except Exception:  # left leased: it is claimed again when the lease runs out
                    log.exception("outbox %s: sending failed", row.id)
                    outcome = "held"
                finally:
                    pacer.done(key[1])
                if outcome == "blocked":  # the other rows to this chat are marked blocked too
                    self._finished(1 + len(queue))
                    queue.clear()
                elif outcome == "held" and queue:
                    rest = list(queue)
                    queue.clear()
                    self._finished(1 + len(rest))
                    await self._record(self._release, rest[0], rest)
                else:
                    self._finished(1)
        finally:
            if not queue:
                del self._queues[key]

    @staticmethod
    async def _release(db: DbSession, row: outbox.Claimed, rows: list[outbox.Claimed]
                       ) -> None:
        await outbox.release(db, rows)

    async def _attempt(self, row: outbox.Claimed) -> str:
        """Deliver one row from its first unsent part and record the outcome: "done" (sent
        or given up on), "blocked" (the chat blocked us) or "held" (to be tried again)."""
        if self.clock.now() >= row.lease_until - LEASE_MARGIN:
            log.info("outbox %s: lease nearly over, left for the next claim", row.id)
            return "held"
        try:
            outbound = Outbound.model_validate(row.payload)
        except ValidationError as exc:
            await self._record(outbox.mark_failed, row, f"bad payload: {exc}")
            self._count("failed", row)
            return "done"
        try:
            async def progress(sent: int) -> None:  # recorded at once: a crash resumes there
                await self._record(outbox.record_parts, row, sent)

            async with asyncio.timeout(self.timeout):
                await self.deliverers[row.channel].deliver(outbound, row.parts_sent, progress)
        except RetryLater as exc:
            return await self._retry(row, str(exc) or "retry later", exc.retry_after, exc.sent)
        except TimeoutError:
            return await self._retry(row, f"no answer within {self.timeout:g} s", None)
        except Blocked as exc:
            log.info("outbox %s: %s:%s blocked the bot", row.id, row.channel, row.chat_id)
            await self._record(self._mark_blocked, row, str(exc) or "blocked")
            self._count("blocked", row)
            return "blocked"
        except Undeliverable as exc:
            log.warning("outbox %s undeliverable: %s", row.id, exc)
            await self._record(outbox.mark_failed, row, str(exc) or "undeliverable",
                               exc.sent)
            self._count("failed", row)
        except Exception as exc:  # Unexpected, or an adapter bug: retry with backoff
            log.exception("outbox %s: delivery raised", row.id)
            return await self._retry(row, repr(exc), None,
                                     exc.sent if isinstance(exc, DeliveryError) else None)
        else:
            self._mark_sent(row)
            self._count("sent", row)
        return "done"

    def _mark_sent(self, row: outbox.Claimed) -> None:
        self._sent.append((row.id, self.clock.now()))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_sent())

    async def _write_sent(self) -> None:
        """Group commit: each transaction marks sent every row delivered since the last."""
        while self._sent:
            batch, self._sent = self._sent, []
            await self._record(self._sent_many, None, batch)

    @staticmethod
    async def _sent_many(db: DbSession, row: None, batch: list[tuple[int, datetime]]
                         ) -> None:
        await outbox.mark_sent_many(db, batch)

    async def _flush(self) -> bool:
        """Wait for the "sent" marks of every delivered row; whether there were any."""
        if self._writer is None:
            return False
        writer, self._writer = self._writer, None
        await writer
        return True

    async def _retry(self, row: outbox.Claimed, reason: str, retry_after: float | None,
                     sent: int | None = None) -> str:
        """Back off, or give up after the attempt cap; `sent`: the parts that went out."""
        if retry_after is not None:  # the platform's own limit: wait as told, never give up
            self.pacers[row.channel].pause(retry_after)
            self._count("rate_limited", row)
            delay = timedelta(seconds=retry_after)
        elif row.attempts + 1 >= self.max_attempts:
            log.warning("outbox %s failed after %s attempts: %s", row.id, row.attempts + 1,
                        reason)
            await self._record(outbox.mark_failed, row, reason, sent)
            self._count("failed", row)
            return "done"
        else:  # exponential backoff with jitter, so a recovering platform is not stampeded
            delay = min(self.max_backoff, self.backoff * 2 ** row.attempts)
            delay *= random.uniform(0.5, 1.0)
        await self._record(outbox.retry_later, row, self.clock.now() + delay, reason, sent)
        self._count("retried", row)
        return "held"

    def _count(self, outcome: str, row: outbox.Claimed) -> None:
        self.stats[outcome] += 1
        if outcome == "rate_limited":
            metrics.RATE_LIMITED.labels(row.channel).inc()
        else:
            metrics.MESSAGES.labels(row.channel, outcome).inc()

    @staticmethod
    async def _mark_blocked(db: DbSession, row: outbox.Claimed, error: str) -> None:
        await outbox.mark_blocked(db, row.channel, row.chat_id, error)
        await Repository(db).set_unreachable(row.channel, row.chat_id)

    async def _record(self, write: Callable[..., Awaitable[None]],
                      row: outbox.Claimed | None, *args: Any) -> None:
        for attempt in range(1, MARK_TRIES + 1):
            try:
                async with self.sessions() as db, db.begin():
                    await write(db, row, *args)
                return
            except Exception as exc:
                if not isinstance(exc, SQLAlchemyError) and not database_lost(exc):
                    raise
                if attempt == MARK_TRIES:
                    log.exception("outbox %s: could not record the outcome",
                                  row.id if row is not None else f"({len(args[0])} rows)")
                    return
                await asyncio.sleep(0.2 * attempt)
