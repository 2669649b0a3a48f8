"""The one web server on KNEECOACH_LISTEN: the channels' routes (Telegram webhook, Slack
events) and the operator's `/healthz` and `/metrics`, in every mode but the terminal chat.

Channels add their routes before `start()`; aiohttp freezes the router once it serves."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import metrics

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # bytes; Telegram updates and Slack requests are far smaller
DB_TIMEOUT = 2.0  # seconds for the health check's SELECT 1
TICKS_LATE = 3  # tick periods without a finished tick before /healthz says 503

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServer:
    def __init__(self, host: str, port: int, *,
                 sessions: async_sessionmaker[DbSession] | None = None,
                 heartbeat: metrics.Heartbeat | None = None, tick_seconds: float = 30.0) -> None:
        self.host, self.port = host, port
        self.sessions = sessions
        self.heartbeat = heartbeat
        self.tick_seconds = tick_seconds
        # A larger body is refused (413) before it is read whole.
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    def add_post(self, path: str, handler: Handler) -> None:
        self.app.router.add_post(path, handler)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)  # access lines carry no use
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the operator's routes ---------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        """200 when every part works, else 503; the body names each part's state."""
        parts: dict[str, str] = {}
        if self.sessions is not None:
            parts["database"] = await self._database()
        if self.heartbeat is not None:
            age = self.heartbeat.tick_age()
            parts["tick"] = ("ok" if age <= TICKS_LATE * self.tick_seconds
                             else f"no tick finished for {age:.0f} s")
            parts["sender"] = "ok" if self.heartbeat.sender_running else "not running"
        healthy = all(state == "ok" for state in parts.values())
        failing = [name for name, state in parts.items() if state != "ok"]
        return web.json_response({"status": "ok" if healthy else "failing",
                                  "failing": failing, "parts": parts},
                                 status=200 if healthy else 503)

    async def _database(self) -> str:
        assert self.sessions is not None
        try:
            async with asyncio.timeout(DB_TIMEOUT), self.sessions() as db:
                await db.execute(text("SELECT 1"))
        except TimeoutError:
            return f"no answer within {DB_TIMEOUT:g} s"
        except Exception as exc:  # any driver's error: the check reports, never raises
            return f"unreachable: {type(exc).__name__}"
        return "ok"

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.sessions is not None:
            try:
                async with asyncio.timeout(DB_TIMEOUT):
                    await metrics.read_database(self.sessions, datetime.now(UTC))
            except Exception:  # the counters are still worth a scrape without the database
                log.warning("metrics: could not read the outbox and holds")
        return web.Response(body=generate_latest(metrics.REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def probe() -> int:
    """The container's health check (`python -m bot.web`): 0 when /healthz on this machine's
    KNEECOACH_LISTEN port says 200, else 1. The slim image has no curl."""
    port = os.environ.get("KNEECOACH_LISTEN", "0.0.0.0:8080").rpartition(":")[2]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except OSError:  # refused, timed out, or a 503 (HTTPError)
        return 1


if __name__ == "__main__":
    sys.exit(probe())
