"""Sending at the platform's line: the outbox sender against a Bot API server that enforces
Telegram's limits over a sliding second (at most 30 messages in any one-second window overall,
one per second per chat; a request beyond them is answered 429 with retry_after).

1. Configured at the server's own limit (30/s): the achieved/configured ratio (goal >= 0.97)
   and the 429s (goal 0).
2. The same with one 429 (retry_after 3) injected part way: how long the sender waited (goal:
   exactly as told) and when it was back at the configured rate (goal: within retry_after
   + 1 s), with the arrivals per second around it (the dip).
3. Paid broadcasts: configured 1,000/s against the server allowing 1,000/s, to distinct
   chats; then a bare client (aiohttp, no python-telegram-bot, no database) sending the same
   requests to the same server, many in flight over one connection pool: the box's ceiling.
   Goal: sender / ceiling >= 0.8.

    python bench/delivery.py [--seconds 60]

Messages go through the real Telegram adapter (python-telegram-bot over HTTP) from an outbox in
a scratch SQLite database; in 1 and 2 a tenth of them go to chats that get several, so the
per-chat limit is exercised too. The last line is machine-readable:
`ratios: at_limit=X at_limit_429s=N paid_vs_ceiling=Z`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import multiprocessing.connection
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, TCPConnector, web  # noqa: E402
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
    over a sliding second: a request beyond them is answered 429 with retry_after. With
    `inject_after`, the request after that many accepted is answered 429 retry_after 3."""

    overall: int
    per_chat: float = 1.0
    inject_after: int | None = None
    accepted: list[float] = field(default_factory=list)  # arrival times
    too_many: int = 0
    injected_at: float | None = None
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
        if self.inject_after is not None and len(self.accepted) >= self.inject_after:
            self.inject_after, self.injected_at = None, now
            return _too_many(3)
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if (len(self._window) >= self.overall
                or now - self._last_in_chat.get(chat, -1e9) < self.per_chat):
            self.too_many += 1
            return _too_many(1)
        self._window.append(now)
        self._last_in_chat[chat] = now
        self.accepted.append(now)
        return web.json_response({"ok": True, "result": {
            "message_id": len(self.accepted), "date": int(time.time()),
            "chat": {"id": int(chat), "type": "private"}, "text": str(params.get("text", ""))}})


def _too_many(retry_after: int) -> web.Response:
    return web.json_response(
        {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after "
         f"{retry_after}", "parameters": {"retry_after": retry_after}}, status=429)


def serve(overall_limit: int, inject_after: int | None,
          port: multiprocessing.connection.Connection) -> None:
    """The server, in a process of its own as Telegram's is, so that it takes none of the
    sender's CPU. Sends its port, then serves until killed; GET /stats returns its counts."""
    api = LimitedBotApi(overall=overall_limit, inject_after=inject_after)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"accepted": api.accepted, "too_many": api.too_many,
                                  "injected_at": api.injected_at})

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


@dataclass
class Counted:
    """What the server counted in one run."""

    accepted: list[float]
    too_many: int
    injected_at: float | None

    def rate(self, window: int) -> float:
        """Sends per second between arrivals a whole number of `window` sends apart (the
        most that fit in a second at the limit): the same phase of each burst, so neither a
        sender that goes in bursts a second apart nor one that spreads its sends is
        flattered by where the run happens to end."""
        whole = (len(self.accepted) - 1) // window * window
        return whole / (self.accepted[whole] - self.accepted[0])


async def against_server(overall_limit: int, send: Any, inject_after: int | None = None
                         ) -> Counted:
    """Start a limited server, `await send(root)`, and return what the server counted."""
    here, there = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(overall_limit, inject_after, there),
                                     daemon=True)
    server.start()
    root = f"http://127.0.0.1:{here.recv()}"
    try:
        await send(root)
        async with ClientSession() as client, client.get(f"{root}/stats") as response:
            return Counted(**await response.json())
    finally:
        server.kill()


def chats_for(count: int, distinct: bool) -> list[str]:
    """Nine in ten messages to chats of their own, the rest to 50 chats that get several;
    or every one to a chat of its own (a broadcast)."""
    if distinct:
        return [str(1000 + n) for n in range(count)]
    return [str(1000 + n) if n % 10 else str(100 + n // 10 % 50) for n in range(count)]


async def sender_run(rate: float, chats: list[str], overall_limit: int,
                     inject_after: int | None = None) -> tuple[Counted, OutboxSender]:
    """The outbox sender, through python-telegram-bot, from a scratch SQLite outbox."""
    senders: list[OutboxSender] = []

    async def send(root: str) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            database = create_engine(f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}")
            await migrate(database)
            sessions = sessionmaker(database)
            clock = SystemClock()
            async with sessions() as db, db.begin():
                await outbox.enqueue_many(db, [
                    {"user_id": None, "channel": "telegram", "chat_id": chat,
                     "kind": "broadcast", "payload": json.dumps(Outbound(
                         channel="telegram", chat_id=chat, text=f"message {n}"
                     ).model_dump(mode="json")), "dedupe_key": f"bench:{n}"}
                    for n, chat in enumerate(chats)], clock.now())
            deliverer = TelegramChannel.deliverer(Settings(telegram_token=TOKEN,
                                                           telegram_api_url=root))
            sender = OutboxSender(sessions, {"telegram": deliverer}, clock, rate=rate)
            senders.append(sender)
            while True:  # rows told to wait (a 429) come due again as time passes
                await sender.drain()
                async with sessions() as db:
                    left = await db.scalar(select(func.count()).select_from(Outbox)
                                           .where(Outbox.status == "pending"))
                if not left:
                    break
                await asyncio.sleep(0.05)
            await deliverer.close()
            await database.dispose()

    counted = await against_server(overall_limit, send, inject_after)
    return counted, senders[0]


async def bare_run(chats: list[str], overall_limit: int, in_flight: int = 64) -> Counted:
    """The box's ceiling: the same sendMessage requests from a bare aiohttp client, `in_flight`
    at a time over one pool; a request answered 429 goes to the back of the queue."""
    async def send(root: str) -> None:
        queue = deque(enumerate(chats))
        url = f"{root}/bot{TOKEN}/sendMessage"
        async with ClientSession(connector=TCPConnector(limit=in_flight)) as client:
            async def worker() -> None:
                while queue:
                    n, chat = queue.popleft()
                    async with client.post(url, data={"chat_id": chat,
                                                      "text": f"message {n}"}) as response:
                        await response.read()
                        if response.status == 429:
                            queue.append((n, chat))
            await asyncio.gather(*(worker() for _ in range(in_flight)))

    return await against_server(overall_limit, send)


def per_second(arrivals: list[float], around: float, before: int = 2, after: int = 6
               ) -> list[int]:
    """Arrivals in each second from `before` s before `around` to `after` s after."""
    counts = [0] * (before + after)
    for at in arrivals:
        slot = int((at - around + before) // 1)
        if 0 <= slot < len(counts):
            counts[slot] += 1
    return counts


def back_at_rate(arrivals: list[float], since: float, rate: float) -> float | None:
    """Seconds from `since` to the first arrival after which the last second holds at least
    0.97 of `rate` arrivals (the configured rate again)."""
    need = int(0.97 * rate)
    later = [at for at in arrivals if at > since]
    for n in range(need - 1, len(later)):
        if later[n] - later[n - need + 1] < 1.0:
            return later[n] - since
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60,
                        help="how long each run sends for at its configured rate")
    args = parser.parse_args()
    limit = 30
    print(f"1. Server limits {limit}/s overall, 1/s per chat; sender configured {limit}/s:")
    counted, sender = await sender_run(limit, chats_for(int(limit * args.seconds), False),
                                       limit)
    achieved = counted.rate(limit)
    at_limit, at_limit_429s = achieved / limit, counted.too_many
    print(f"   {sender.stats['sent']} sent, {len(counted.accepted)} arrived, achieved "
          f"{achieved:.2f}/s, ratio {at_limit:.3f} (goal >= 0.97), 429s {at_limit_429s}")

    print("2. The same, one 429 retry_after 3 injected part way:")
    count = int(limit * max(args.seconds, 12))
    counted, sender = await sender_run(limit, chats_for(count, False), limit,
                                       inject_after=count // 3)
    assert counted.injected_at is not None
    hit = counted.injected_at
    later = [at for at in counted.accepted if hit < at < hit + 5.0]
    # sends already out when the 429 came arrive just after it; the pause is the gap after
    resumed = max(itertools.pairwise([hit, *later]), key=lambda pair: pair[1] - pair[0])[1] - hit
    back = back_at_rate(counted.accepted, hit, limit)
    print(f"   {len([at for at in later if at < hit + 1.0])} sends already out arrived after "
          f"the 429; sending resumed {resumed:.2f} s after it (told 3 s); back at {limit}/s "
          f"{back:.2f} s after it (goal <= 4 s); other 429s {counted.too_many}" if back
          else f"   resumed {resumed:.2f} s after the 429; never back at {limit}/s")
    print(f"   arrivals per second from 2 s before the 429: "
          f"{per_second(counted.accepted, hit)}")

    paid = 1000
    chats = chats_for(int(paid * args.seconds / 2), True)
    print(f"3. Server limits {paid}/s overall (paid broadcasts), {len(chats)} distinct chats:")
    counted, sender = await sender_run(paid, chats, paid)
    sent_rate = counted.rate(paid)
    print(f"   sender configured {paid}/s: {sender.stats['sent']} sent, achieved "
          f"{sent_rate:.1f}/s, 429s {counted.too_many}")
    counted = await bare_run(chats, paid)
    print(f"   bare aiohttp client (the ceiling): {len(counted.accepted)} arrived, achieved "
          f"{counted.rate(paid):.1f}/s, 429s {counted.too_many}")
    paid_vs_ceiling = sent_rate / counted.rate(paid)
    print(f"ratios: at_limit={at_limit:.3f} at_limit_429s={at_limit_429s} "
          f"paid_vs_ceiling={paid_vs_ceiling:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
