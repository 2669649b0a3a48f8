"""What the test API servers (Telegram's, Slack's) share: listening on a free port of
127.0.0.1, and letting a test wait on what they record instead of on a timer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeApi:
    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.root = ""

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self, extra: tuple[web.RouteDef, ...] = ()) -> str:
        """Listen on a free port; `extra` routes are for a benchmark driving the server."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([*self.routes(), *extra])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{port}"
        return self.root

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def changed(self) -> None:
        """Wake the waiters: something was recorded."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, check: Callable[[], Any], within: float = 10.0) -> Any:
        """Wait until `check()` is truthy, re-checking whenever the server records a call."""
        async def until() -> Any:
            async with self._changed:
                while not (result := check()):
                    await self._changed.wait()
                return result
        return await asyncio.wait_for(until(), within)
