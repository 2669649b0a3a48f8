"""Operating it: one web server on KNEECOACH_LISTEN with the webhook, Slack's events, /healthz
and /metrics, in polling, webhook and worker mode, tested over HTTP against the real
`kneecoach run`; SIGTERM ends it promptly with exit code 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from bot import metrics
from bot.cli import serve
from bot.metrics import Heartbeat
from bot.settings import Settings
from bot.web import MAX_BODY, WebServer
from conftest import CLEAN_SCREEN
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.data import Program
from fake_api import free_port
from slack_server import BOT_TOKEN, SIGNING_SECRET, SlackPerson, SlackServer
from storage.db import create_engine, migrate, sessionmaker
from telegram_server import TOKEN, BotApiServer, Person

ROOT = Path(__file__).resolve().parent.parent
MAIN = "import sys; from bot.cli import main; sys.exit(main(sys.argv[1:]))"
STOP_GRACE = 10.0  # seconds: docker stop's default before it kills


@dataclass
class Running:
    process: asyncio.subprocess.Process
    root: str
    log: Path

    async def get(self, path: str) -> tuple[int, str]:
        async with ClientSession() as client, client.get(self.root + path) as response:
            return response.status, await response.text()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> int:
        async with ClientSession() as client, client.post(self.root + path, data=body,
                                                          headers=dict(headers)) as response:
            return response.status

    async def listening(self, within: float = 60.0) -> None:
        async def until() -> None:
            while True:
                try:
                    await self.get("/healthz")
                    return
                except OSError:
                    assert self.process.returncode is None, self.log.read_text()
                    await asyncio.sleep(0.1)  # the process is starting; no schedule involved
        await asyncio.wait_for(until(), within)

    async def metric(self, name: str, **labels: str) -> float:
        _, scrape = await self.get("/metrics")
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "")
        found = re.search(rf"^{pattern} (\S+)$", scrape, re.M)
        return float(found.group(1)) if found else 0.0


@asynccontextmanager
async def kneecoach(tmp_path: Path, env: Mapping[str, str], *args: str
                    ) -> AsyncIterator[Running]:
    """`kneecoach run ARGS` on a free port; SIGTERM at the end must stop it promptly, exit 0."""
    listen = env.get("KNEECOACH_LISTEN") or f"127.0.0.1:{free_port()}"
    log = tmp_path / "stderr.log"
    full = {**os.environ, "KNEECOACH_LISTEN": listen,
            "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
            "PYTHONPATH": str(ROOT), **env}
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MAIN, "run", *args, env=full, cwd=tmp_path, stderr=err)
        try:
            running = Running(process, f"http://{listen}", log)
            await running.listening()
            yield running
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), STOP_GRACE) == 0, log.read_text()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def telegram_env(api: BotApiServer, **more: str) -> dict[str, str]:
    return {"KNEECOACH_TELEGRAM_TOKEN": TOKEN, "KNEECOACH_TELEGRAM_API_URL": api.root, **more}


async def test_polling_mode_serves_healthz_and_metrics_of_a_journey(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    async with kneecoach(tmp_path, telegram_env(telegram_api)) as bot:
        await telegram_api.wait_for(lambda: telegram_api.commands, within=30)
        ann = Person(telegram_api, 1301)
        await ann.say("/start")
        await ann.answer_all(*CLEAN_SCREEN)
        assert "All set" in ann.text
        bob = Person(telegram_api, 1303)  # a red flag at the screen: referred, a hold opens
        await bob.say("/start")
        await bob.answer_all("I agree", "Yes")
        status, body = await bot.get("/healthz")
        assert status == 200, body
        assert '"database": "ok"' in body and '"tick": "ok"' in body and '"sender": "ok"' in body
        _, scrape = await bot.get("/metrics")
        (tmp_path.parent / "metrics-scrape.txt").write_text(scrape)  # quoted in the notes
        handled = await bot.metric("kneecoach_updates_total", channel="telegram", outcome="ok")
        assert await bot.metric("kneecoach_holds_open", kind="pain") == 0
        assert handled == len(CLEAN_SCREEN) + 1 + 3
        assert await bot.metric("kneecoach_holds_open", kind="referral") == 1
        assert await bot.metric("kneecoach_update_seconds_count", channel="telegram") == handled
        assert await bot.metric("kneecoach_tick_seconds_count") >= 1
        for family in ("kneecoach_outbox_oldest_due_seconds", "kneecoach_prompts_claimed_total",
                       "kneecoach_messages_total", "kneecoach_rate_limited_total"):
            assert f"# TYPE {family.removesuffix('_total')}" in scrape, family


async def test_webhook_and_slack_http_share_one_port_and_the_webhook_is_guarded(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    """18.7: both used to bind KNEECOACH_LISTEN ("Address already in use"). 18.9: the secret
    is checked before the body is read, the body is capped, bad JSON gets 400, nothing of a
    payload is logged."""
    slack_api = SlackServer()
    await slack_api.start()
    port = free_port()
    env = telegram_env(
        telegram_api, KNEECOACH_LISTEN=f"127.0.0.1:{port}",
        KNEECOACH_TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram",
        KNEECOACH_SLACK_BOT_TOKEN=BOT_TOKEN, KNEECOACH_SLACK_SIGNING_SECRET=SIGNING_SECRET,
        KNEECOACH_SLACK_API_URL=f"{slack_api.root}/api/")
    try:
        async with kneecoach(tmp_path, env) as bot:
            await telegram_api.wait_for(lambda: telegram_api.webhook.get("url"), within=30)
            ben = Person(telegram_api, 1302)  # through the webhook
            await ben.say("/start")
            assert "not a diagnosis" in ben.text.lower()
            cleo = SlackPerson(slack_api, f"{bot.root}/slack/events", "U0CLEO")
            await cleo.say("/start")
            assert "not a diagnosis" in cleo.text.lower()

            secret = telegram_api.webhook["secret_token"]
            huge = b'{"update_id": 1, "message": "' + b"x" * (MAX_BODY * 5) + b'"}'
            assert await bot.post("/telegram", huge, {}) == 403
            assert await bot.post("/telegram", huge, {
                "X-Telegram-Bot-Api-Secret-Token": secret}) == 413
            malformed = b'{"update_id": 5, "message": {"text": "zebra-garnet pain story"'
            for body in (malformed, b'["not", "an", "update"]', b"null"):
                assert await bot.post("/telegram", body, {
                    "X-Telegram-Bot-Api-Secret-Token": secret}) == 400, body
            status, health = await bot.get("/healthz")
            assert status == 200, health
            assert await bot.metric("kneecoach_updates_total", channel="slack", outcome="ok") >= 1
    finally:
        await slack_api.stop()
    assert "zebra-garnet" not in (tmp_path / "stderr.log").read_text()


async def test_worker_mode_serves_healthz_and_metrics(
        telegram_api: BotApiServer, tmp_path: Path) -> None:
    async with kneecoach(tmp_path, telegram_env(telegram_api), "--worker") as worker:
        status, body = await worker.get("/healthz")
        assert status == 200, body
        status, scrape = await worker.get("/metrics")
        assert status == 200 and "kneecoach_outbox_oldest_due_seconds" in scrape
        assert telegram_api.called("getUpdates") == []  # a worker polls no chat
        # The container's health check, as docker runs it beside the process.
        listen = {**os.environ, "KNEECOACH_LISTEN": worker.root.removeprefix("http://"),
                  "PYTHONPATH": str(ROOT)}
        assert await _probe(listen) == 0
    assert await _probe({**listen, "KNEECOACH_LISTEN": f"127.0.0.1:{free_port()}"}) == 1


async def _probe(env: Mapping[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot.web", env=env)
    return await asyncio.wait_for(process.wait(), 30)


async def test_a_port_in_use_stops_start_up_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "KNEECOACH_LISTEN": f"127.0.0.1:{taken.getsockname()[1]}",
               "KNEECOACH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MAIN, "run", "--worker", env=env, cwd=tmp_path,
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert err.decode().strip().splitlines()[-1].startswith(
        "kneecoach: cannot listen on 127.0.0.1:"), err.decode()


async def test_a_stopped_tick_turns_healthz_to_503(
        tmp_path: Path, program: Program, clock: ManualClock) -> None:
    """The real wiring (`serve`, worker only) on the injected clock: one tick runs at start;
    with none after it for 3 tick periods, /healthz names the tick."""
    database = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await migrate(database)
    sessions = sessionmaker(database)
    port = free_port()
    settings = Settings(listen=f"127.0.0.1:{port}", tick_seconds=600)  # type: ignore[arg-type]
    stop = asyncio.Event()

    def ticks_finished() -> float:  # in this process: other tests' ticks count too
        return sum(x.value for x in metrics.TICK_SECONDS.collect()[0].samples
                   if x.name.endswith("_count"))

    before = ticks_finished()
    served = asyncio.create_task(serve(settings, sessions, program,
                                       Engine(sessions, program, clock), clock, [], stop))
    url = f"http://127.0.0.1:{port}/healthz"

    async def health() -> tuple[int, dict[str, Any]]:
        async with ClientSession() as client, client.get(url) as response:
            return response.status, await response.json()

    async def until_healthy() -> None:
        while True:
            try:
                # /healthz says 200 from the start, before the first tick has ended
                if ticks_finished() > before and (await health())[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)  # waiting for the first tick to finish, not a schedule
    try:
        await asyncio.wait_for(until_healthy(), 30)
        clock.advance(timedelta(seconds=3 * 600 - 1))
        assert (await health())[0] == 200
        clock.advance(timedelta(seconds=2))
        status, body = await health()
        assert status == 503 and body["failing"] == ["tick"], body
        assert body["parts"]["database"] == "ok" and body["parts"]["sender"] == "ok"
    finally:
        stop.set()
        await served
        await database.dispose()


async def test_healthz_says_503_naming_the_database_when_it_cannot_be_reached(
        clock: ManualClock) -> None:
    unreachable = create_engine(f"postgresql+asyncpg://kc@127.0.0.1:{free_port()}/none")
    heartbeat = Heartbeat(clock)
    heartbeat.sender_running = True
    server = WebServer("127.0.0.1", free_port(), sessions=sessionmaker(unreachable),
                       heartbeat=heartbeat)
    await server.start()
    try:
        async with ClientSession() as client, client.get(
                f"http://127.0.0.1:{server.port}/healthz") as response:
            body = await response.json()
            assert response.status == 503
        assert body["failing"] == ["database"] and body["parts"]["tick"] == "ok"
        assert body["parts"]["database"].startswith("unreachable")
    finally:
        await server.stop()
        await unreachable.dispose()
