"""Channel adapters: each turns its platform's updates into Inbound and renders Outbound."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class StartupError(Exception):
    """Start-up cannot go on: one line for the operator, and the process's exit code (2: the
    configuration is wrong, say a rejected token; 1: the platform could not be reached)."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code


async def at_start(what: str, call: Callable[[], Awaitable[T]], within: float,
                   fatal: Callable[[Exception], str | None]) -> T:
    """Run a start-up call, retrying with backoff for up to `within` seconds. `fatal` names
    an answer that no retry will change (a rejected token): exit 2 at once. What still fails
    at the end exits 1. The line names the call and its answer, never the token."""
    loop = asyncio.get_running_loop()
    deadline, wait = loop.time() + within, 0.5
    while True:
        try:
            return await call()
        except Exception as exc:
            reason = fatal(exc)
            if reason is not None:
                raise StartupError(f"{what} refused: {reason}", 2) from exc
            answer = str(exc) or type(exc).__name__
            if loop.time() + wait > deadline:
                raise StartupError(f"{what} failed: {answer}", 1) from exc
            log.warning("%s failed (%s); trying again in %.1f s", what, answer, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 10.0)


class InOrder:
    """Work of one key (a chat, a user) runs one at a time in the order it came; different
    keys' run concurrently. A key is forgotten when its last piece of work is done."""

    def __init__(self) -> None:
        self._keys: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self._idle = asyncio.Event()  # set while no work is in hand
        self._idle.set()

    async def run(self, key: Hashable, work: Awaitable[T]) -> T:
        lock, waiting = self._keys.get(key, (asyncio.Lock(), 0))
        self._keys[key] = (lock, waiting + 1)
        self._idle.clear()
        try:
            async with lock:
                return await work
        finally:
            lock, waiting = self._keys[key]
            if waiting == 1:
                del self._keys[key]
            else:
                self._keys[key] = (lock, waiting - 1)
            if not self._keys:
                self._idle.set()

    async def idle(self) -> None:
        """Return once no work is in hand."""
        await self._idle.wait()
