"""Sustained send rate of the outbox sender against a Bot API server that enforces Telegram's
limits: at most 30 messages in any second overall and one per second per chat, answering 429
with retry_after beyond them. Prints the achieved/configured ratio (goal >= 0.95) and the
count of 429s (goal 0); then the ratio at a configured 300/s, as paid broadcasts allow, against
the same server with the overall limit raised to 1,000/s.

    python bench/delivery.py [--seconds 60]

Messages go through the real Telegram adapter (python-telegram-bot over HTTP) from an outbox in
a scratch SQLite database; a tenth of them go to chats that get several, so the per-chat limit
is exercised too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, web  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bot.channels.telegram import TelegramChannel  # noqa: E402
from bot.sender import OutboxSender  # noqa: E402
from bot.settings import Settings  # noqa: E402
from conversations.clock import SystemClock  # noqa: E402
from conversations.messages import Outbound  # noqa: E402
from storage import outbox  # noqa: E402
from storage.db import create_engine, migrate, sessionmaker  # noqa: E402
from storage.models import Outbox  # noqa: E402

TOKEN = "123456:bench"


@dataclass
class LimitedBotApi:
    """The part of the Bot API a sender uses (sendMessage), with Telegram's limits enforced
    over a sliding second: a request beyond them is answered 429 with retry_after."""

    overall: int
    per_chat: float = 1.0
    accepted: list[float] = field(default_factory=list)  # arrival times
    too_many: int = 0
    _window: deque[float] = field(default_factory=deque)
    _last_in_chat: dict[str, float] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        params = (await request.json() if request.content_type == "application/json"
                  else dict(await request.post()))
        method = request.match_info["method"]
        if method != "sendMessage":
            return web.json_response({"ok": True, "result": True})
        now = time.monotonic()
        chat = str(params["chat_id"])
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if (len(self._window) >= self.overall
                or now - self._last_in_chat.get(chat, -1e9) < self.per_chat):
            self.too_many += 1
            return web.json_response(
                {"ok": False, "error_code": 429, "description": "Too Many Requests: retry "
                 "after 1", "parameters": {"retry_after": 1}}, status=429)
        self._window.append(now)
        self._last_in_chat[chat] = now
        self.accepted.append(now)
        return web.json_response({"ok": True, "result": {
            "message_id": len(self.accepted), "date": int(time.time()),
            "chat": {"id": int(chat), "type": "private"}, "text": str(params.get("text", ""))}})



def serve(overall_limit: int, port: multiprocessing.connection.Connection) -> None:
    """The server, in a process of its own as Telegram's is, so that it takes none of the
    sender's CPU. Sends its port, then serves until killed; GET /stats returns its counts."""
    api = LimitedBotApi(overall=overall_limit)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"accepted": api.accepted, "too_many": api.too_many})

    async def listen() -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", api.handle)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.send(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(listen())


async def run(rate: float, count: int, overall_limit: int) -> None:
    here, there = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(overall_limit, there), daemon=True)
    server.start()
    root = f"http://127.0.0.1:{here.recv()}"
    with tempfile.TemporaryDirectory() as scratch:
        database = create_engine(f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}")
        await migrate(database)
        sessions = sessionmaker(database)
        clock = SystemClock()
        # Nine in ten messages to chats of their own, the rest to 50 chats that get several.
        chats = [str(1000 + n) if n % 10 else str(100 + n // 10 % 50) for n in range(count)]
        async with sessions() as db, db.begin():
            await outbox.enqueue_many(db, [
                {"user_id": None, "channel": "telegram", "chat_id": chat, "kind": "broadcast",
                 "payload": json.dumps(Outbound(channel="telegram", chat_id=chat,
                                                text=f"message {n}").model_dump(mode="json")),
                 "dedupe_key": f"bench:{n}"} for n, chat in enumerate(chats)], clock.now())
        deliverer = TelegramChannel.deliverer(Settings(telegram_token=TOKEN,
                                                       telegram_api_url=root))
        sender = OutboxSender(sessions, {"telegram": deliverer}, clock, rate=rate)
        while True:  # rows told to wait (a 429) come due again as time passes
            await sender.drain()
            async with sessions() as db:
                left = await db.scalar(select(func.count()).select_from(Outbox)
                                       .where(Outbox.status == "pending"))
            if not left:
                break
            await asyncio.sleep(0.2)
        await database.dispose()
    async with ClientSession() as client, client.get(f"{root}/stats") as response:
        counted = await response.json()
    server.kill()
    arrived = counted["accepted"]
    achieved = (len(arrived) - 1) / (arrived[-1] - arrived[0])
    print(f"configured {rate:g}/s: {sender.stats['sent']} sent, {len(arrived)} arrived, "
          f"achieved {achieved:.2f}/s, ratio {achieved / rate:.3f}, "
          f"429s {counted['too_many']}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60,
                        help="how long each run sends for at its configured rate")
    args = parser.parse_args()
    print("Server limits 30/s overall, 1/s per chat:")
    for rate in (28.0, 30.0):
        await run(rate, int(rate * args.seconds), overall_limit=30)
    print("Server limits 1000/s overall (paid broadcasts), 1/s per chat:")
    await run(300.0, int(300 * args.seconds / 3), overall_limit=1000)


if __name__ == "__main__":
    asyncio.run(main())
