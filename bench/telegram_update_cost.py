"""What kneecoach costs per Telegram update, next to a plain python-telegram-bot echo bot.

    python bench/telegram_update_cost.py [--users 200] [--rounds 7] [--samples 300]

Both bots poll the test Bot API server (tests/telegram_server.py), which runs in a process of
its own and stamps, on its clock, when getUpdates hands an update out and when the reply's
sendMessage arrives. kneecoach answers red-flag screen questions (typed "No": PTB + engine +
SQLite, one transaction and one reply each); the echo bot sends the text back.

- throughput: users x rounds updates injected at once, handled per second, and the bot
  process's CPU time per update (the server's is not counted);
- latency: one update at a time, bot-side time from hand-out to reply, p50 and p99.
The ratio is kneecoach's cost over the echo bot's (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aiohttp import ClientSession, web  # noqa: E402
from telegram import Update  # noqa: E402
from telegram.ext import Application, ContextTypes, MessageHandler, filters  # noqa: E402

from bot.channels.telegram import PerChat, TelegramChannel  # noqa: E402
from bot.channels.telegram_send import bot_request  # noqa: E402
from bot.settings import Settings  # noqa: E402
from conversations.clock import SystemClock  # noqa: E402
from conversations.engine import Engine  # noqa: E402
from conversations.messages import Inbound  # noqa: E402
from conversations.program.data import load_program  # noqa: E402
from storage.db import create_engine, migrate, sessionmaker  # noqa: E402
from telegram_server import TOKEN, BotApiServer  # noqa: E402

FIRST_USER = 10_000


def serve(port: multiprocessing.connection.Connection) -> None:
    """The test server plus two control routes the benchmark drives it with."""
    api = BotApiServer()

    def replies() -> int:
        return api.succeeded["sendMessage"]

    async def exchange(request: web.Request) -> web.Response:
        """Inject one message, wait for its reply: the bot-side latency."""
        body = await request.json()
        update = await api.send_text(body["user"], body["text"])
        chat = str(body["user"])

        def reply() -> float | None:
            handed = api.handed_out.get(update["update_id"])
            return next((c.at - handed for c in reversed(api.calls) if handed is not None
                         and c.method == "sendMessage" and str(c.params["chat_id"]) == chat
                         and c.at > handed), None)

        return web.json_response({"latency": await api.wait_for(reply, within=30)})

    async def burst(request: web.Request) -> web.Response:
        """Inject many at once, wait for every reply: the seconds from first hand-out."""
        body = await request.json()
        before = replies()
        ids = [(await api.send_text(user, text))["update_id"] for user, text in body["items"]]
        await api.wait_for(lambda: replies() >= before + len(ids), within=600)
        first = min(api.handed_out[i] for i in ids)
        last = max(c.at for c in api.calls if c.method == "sendMessage")
        return web.json_response({"seconds": last - first})

    async def listen() -> None:
        port.send(await api.start((web.post("/control/exchange", exchange),
                                   web.post("/control/burst", burst))))
        await asyncio.Event().wait()

    asyncio.run(listen())


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.message is not None and update.message.text:
        await update.message.reply_text(update.message.text)


async def measure(root: str, users: int, rounds: int, samples: int) -> dict[str, float]:
    async with ClientSession() as client:
        async def call(route: str, body: dict[str, Any]) -> dict[str, Any]:
            async with client.post(f"{root}/control/{route}", json=body) as response:
                return await response.json()  # type: ignore[no-any-return]

        # Warm up (connections, lazy imports, caches) on users of their own, not counted.
        await call("burst", {"items": [(FIRST_USER + 2 * users + u, "No")
                                       for u in range(users)]})
        items = [(FIRST_USER + u, "No") for _ in range(rounds) for u in range(users)]
        cpu = time.process_time()  # this process's CPU, all threads (aiosqlite's too)
        seconds = (await call("burst", {"items": items}))["seconds"]
        cpu = time.process_time() - cpu
        # Latency: one at a time, walking fresh users through the screen's questions.
        latencies = [(await call("exchange", {"user": FIRST_USER + users + n % users,
                                              "text": "No"}))["latency"]
                     for n in range(samples)]
    cuts = statistics.quantiles(latencies, n=100)
    return {"rate": len(items) / seconds, "cpu": cpu / len(items) * 1000,
            "p50": cuts[49] * 1000, "p99": cuts[98] * 1000}


async def kneecoach(root: str, users: int, rounds: int, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        database = create_engine(f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}")
        await migrate(database)
        engine = Engine(sessionmaker(database), load_program(None), SystemClock())
        # Every user (burst, latency, warm-up) has agreed and waits at the first red-flag
        # question; the screen has
        # eight; the first seven answers each bring exactly one reply, the next question.
        for n in range(3 * users):
            for text in ("/start", "I agree"):
                await engine.handle(Inbound.parse_text("telegram", str(FIRST_USER + n),
                                                       str(FIRST_USER + n), text))
        channel = TelegramChannel(Settings(telegram_token=TOKEN,  # type: ignore[arg-type]
                                           telegram_api_url=root), engine)
        await channel.start()
        try:
            return await measure(root, users, rounds, samples)
        finally:
            await channel.stop()
            await database.dispose()


async def echo_bot(root: str, users: int, rounds: int, samples: int) -> dict[str, float]:
    # The same transport and update processing as kneecoach's, so the difference is ours.
    app = (Application.builder().token(TOKEN).base_url(f"{root}/bot")
           .request(bot_request(10.0)).get_updates_request(bot_request(20.0))
           .concurrent_updates(PerChat(256)).build())
    app.add_handler(MessageHandler(filters.TEXT, echo))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0.0, timeout=10)  # type: ignore[union-attr]
        try:
            return await measure(root, users, rounds, samples)
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7, choices=range(1, 8))
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    results = {}
    for name, run in (("echo bot", echo_bot), ("kneecoach", kneecoach)):
        here, there = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(there,), daemon=True)
        server.start()
        started = time.perf_counter()
        results[name] = await run(here.recv(), args.users, args.rounds, args.samples)
        print(f"{name}: measured in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        server.kill()
    ours, theirs = results["kneecoach"], results["echo bot"]
    print(f"{'':12}{'updates/s':>12}{'CPU ms/update':>15}{'p50 ms':>10}{'p99 ms':>10}")
    for name, figures in results.items():
        print(f"{name:12}{figures['rate']:12.1f}{figures['cpu']:15.2f}{figures['p50']:10.2f}"
              f"{figures['p99']:10.2f}")
    print(f"{'ratio':12}{theirs['rate'] / ours['rate']:12.2f}{ours['cpu'] / theirs['cpu']:15.2f}"
          f"{ours['p50'] / theirs['p50']:10.2f}{ours['p99'] / theirs['p99']:10.2f}"
          "   (kneecoach / echo bot; goal <= 1.5)")
    print(f"ratios: p50_vs_echo={ours['p50'] / theirs['p50']:.2f} "
          f"p99_vs_echo={ours['p99'] / theirs['p99']:.2f} "
          f"cpu_vs_echo={ours['cpu'] / theirs['cpu']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
