"""Channel adapters: each turns its platform's updates into Inbound and renders Outbound.

Every channel is one module here, named as the channel (bot/channels/telegram.py is
"telegram"), whose `CHANNEL` is its class; helpers have an underscore in their name
(telegram_send.py). Its settings say whether it runs (bot/settings.py, `Settings.chats`)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Protocol, TypeVar

from conversations.messages import CHANNEL_NAME

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from bot.delivery import Deliverer
    from bot.settings import Settings
    from bot.web import WebServer
    from conversations.engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")


class Channel(Protocol):
    """A running chat channel: started before any work begins, stopped once it has finished
    what it has in hand; its messages go out through its deliverer."""

    name: str
    deliverer: Deliverer

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ServedChannel(Protocol):
    """A chat channel's class, as the process that serves it uses it."""

    name: str

    def __call__(self, settings: Settings, engine: Engine, *,
                 server: WebServer | None = None) -> Channel: ...

    @staticmethod
    def deliverer(settings: Settings, sessions: async_sessionmaker[DbSession]) -> Deliverer:
        """A deliverer for the outbox sender alone (a worker handles no updates)."""
        ...


def names() -> list[str]:
    """Every channel's name, found without importing them (the terminal starts without the
    chat platforms' libraries)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if CHANNEL_NAME.fullmatch(m.name))


def served(name: str) -> ServedChannel:
    """The class of the channel `name`, its module imported now."""
    found: ServedChannel = importlib.import_module(f"{__name__}.{name}").CHANNEL
    return found


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
