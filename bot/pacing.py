"""One channel's pace, over a sliding window, so that a platform counting arrivals in any one
second never counts more than its limit however the network's latency varies."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque


class Pacer:
    """At most `rate` sends in any one-second window, and to each chat one at least
    `per_chat` seconds after the previous delivery to it returned.

    A send holds its place in the window from the moment it is let go until one second after
    its answer came back: the platform stamps its arrival somewhere in between, so two sends
    `rate` apart always arrive at least a second apart (a token bucket, by contrast, lets a
    burst at a window's edge through twice). Within the window, sends are spread at twice
    the rate (a tenth of a window may go at once): a window's worth let go in one burst
    would queue behind each other in this process, each answer coming later and holding its
    place longer. Waiting sends are let go first come, first served, by one timer rather
    than each waking to look. A 429 pauses the whole channel, since Telegram's limit is per
    bot, not per chat. Times are the event loop's clock."""

    def __init__(self, rate: float, per_chat: float = 1.0) -> None:
        # A rate below 1/s (or not whole) keeps `capacity` sends per `span` seconds instead.
        self.capacity = max(1, math.floor(rate))
        self.span = max(1.0, self.capacity / rate)
        self.per_chat = per_chat
        self.gap = self.span / self.capacity / 2
        self._burst = self.gap * max(1, self.capacity // 10)
        self._spaced_at = 0.0  # the next send may go from then
        self._in_flight = 0
        self._leaving: deque[float] = deque()  # when answered sends leave the window, in order
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._paused_until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._chat_free: dict[str, float] = {}

    async def wait(self, chat_id: str, stop: asyncio.Event) -> bool:
        """Wait for this chat's turn and a place in the window; False if `stop` was set
        meanwhile (or `close` called). After True, call `done` once the send returned."""
        loop = asyncio.get_running_loop()
        # a loop's timer may fire a hair early: look again after sleeping
        while (chat_wait := self._chat_free.get(chat_id, 0.0) - loop.time()) > 0:
            await sleep_or_stop(chat_wait, stop)
            if stop.is_set():
                return False
        if stop.is_set():
            return False
        if not self._waiters and self._room(loop.time()):
            self._take(loop.time())
            return True
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        self._schedule()
        return await waiter

    def done(self, chat_id: str) -> None:
        """The send let go by `wait` has its answer (of whatever kind)."""
        now = asyncio.get_running_loop().time()
        self._in_flight -= 1
        self._leaving.append(now + self.span)
        if len(self._chat_free) > 10_000:  # forget chats whose spacing has passed
            self._chat_free = {c: t for c, t in self._chat_free.items() if t > now}
        self._chat_free[chat_id] = now + self.per_chat
        self._schedule()

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` from now (a 429's retry_after)."""
        until = asyncio.get_running_loop().time() + seconds
        if until > self._paused_until:
            self._paused_until = until
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._schedule()

    def close(self) -> None:
        """Stopping: every waiting send is told False."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def _room(self, now: float) -> bool:
        if now < self._paused_until or now < self._spaced_at:
            return False
        while self._leaving and self._leaving[0] <= now:
            self._leaving.popleft()
        return self._in_flight + len(self._leaving) < self.capacity

    def _take(self, now: float) -> None:
        self._in_flight += 1
        self._spaced_at = max(self._spaced_at, now - self._burst) + self.gap

    def _let_go(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._waiters and self._room(now):
            waiter = self._waiters.popleft()
            if not waiter.done():  # its task was cancelled
                self._take(now)
                waiter.set_result(True)
        self._schedule()

    def _schedule(self) -> None:
        """Wake `_let_go` when a place can next be free: the pause's end, the spacing's, or
        the earliest answered send leaving the window (with all in flight, `done` calls back
        here)."""
        if not self._waiters or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._paused_until or now < self._spaced_at:
            at = max(self._paused_until, self._spaced_at)
        elif self._room(now):
            at = now
        elif self._leaving:
            at = self._leaving[0]
        else:
            return
        self._timer = loop.call_at(at, self._let_go)


async def sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    """Sleep, waking early when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
