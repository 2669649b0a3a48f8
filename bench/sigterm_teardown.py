"""How long `kneecoach run` takes to exit after SIGTERM, with Telegram polling the test Bot API
server (tests/telegram_server.py) and one update handled first.

    python bench/sigterm_teardown.py [--runs 5]

Prints each run's seconds from the signal to the exit, and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_api import free_port  # noqa: E402
from telegram_server import TOKEN, BotApiServer, Person  # noqa: E402

MAIN = "import sys; from bot.cli import main; sys.exit(main(['run']))"


async def once(api: BotApiServer, folder: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KNEECOACH_")}
    env |= {"KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{folder}/bot.db",
            "PYTHONPATH": str(ROOT), "KNEECOACH_TELEGRAM_TOKEN": TOKEN,
            "KNEECOACH_TELEGRAM_API_URL": api.root,
            "KNEECOACH_LISTEN": f"127.0.0.1:{free_port()}"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", MAIN, env=env,
                                                   cwd=folder, stderr=asyncio.subprocess.PIPE)
    await Person(api, 1015).say("/start")
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    await process.communicate()
    assert process.returncode == 0
    return time.monotonic() - began


async def main(runs: int) -> None:
    api = BotApiServer()
    await api.start()
    try:
        times = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as folder:
                times.append(await once(api, folder))
            print(f"teardown {times[-1]:.2f} s")
        print(f"median {statistics.median(times):.2f} s over {runs} runs")
    finally:
        await api.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
