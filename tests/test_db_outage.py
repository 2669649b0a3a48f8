"""A lost database is waited out: the engine holds the update in hand and answers it when the
database is back, the tick and the outbox sender back off and resume, each with one log line
for the outage and one for the recovery. PostgreSQL through a TCP proxy the test cuts and
restores (tests/db_proxy.py); the one-shot commands end with one line and exit 1."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import ClientSession
from db_proxy import DbProxy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from test_cli import kneecoach

from bot.channels.telegram import TelegramChannel
from bot.scheduler import run_worker
from bot.web import WebServer
from conftest import Patient, enrolled, telegram_settings
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.program.data import Program
from fake_api import free_port
from storage.db import create_engine, sessionmaker
from storage.models import Outbox
from telegram_server import BotApiServer, Person

FIRST_PROMPT_DELAY = timedelta(hours=23, seconds=10)  # clock fixture 14 Jan 08:00 -> 15 Jan 07:00


@pytest.fixture
async def proxy(database_url: str, database: object) -> AsyncIterator[DbProxy]:
    if database_url.startswith("sqlite"):
        pytest.skip("the proxy stands between the bot and PostgreSQL")
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    server = DbProxy(host or "127.0.0.1", int(port or 5432))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxied(proxy: DbProxy, database_url: str
                  ) -> AsyncIterator[async_sessionmaker[DbSession]]:
    """Sessions whose every connection goes through the proxy."""
    engine = create_engine(proxy.url(database_url))
    yield sessionmaker(engine)
    await engine.dispose()


class Watch(logging.Handler):
    """The warnings logged, and a wait for one: the bot's retries run on real time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], within: float = 90.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def lines(self, loop: str) -> tuple[int, int]:
        """How many 'lost' and 'back' lines one loop logged."""
        texts = [r.getMessage() for r in self.records if r.getMessage().startswith(loop + ":")]
        return (sum("database unreachable" in t for t in texts),
                sum("reachable again" in t for t in texts))


@pytest.fixture
def watch() -> Iterator[Watch]:
    handler = Watch()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


async def healthz(sessions: async_sessionmaker[DbSession]) -> tuple[int, list[str]]:
    """The status of /healthz on a web server over these sessions, and its failing parts."""
    port = free_port()
    server = WebServer("127.0.0.1", port, sessions=sessions)
    await server.start()
    try:
        async with ClientSession() as client, client.get(
                f"http://127.0.0.1:{port}/healthz") as answer:
            return answer.status, (await answer.json())["failing"]
    finally:
        await server.stop()


async def test_an_update_in_a_cut_is_answered_when_the_database_is_back(
        proxy: DbProxy, proxied: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock, watch: Watch) -> None:
    engine = Engine(proxied, program, clock)
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await proxy.cut()
    answers = [asyncio.create_task(Patient(engine, "u1").send("I agree")),
               asyncio.create_task(Patient(engine, "u2").send("/start"))]
    await watch.until(lambda: watch.lines("updates")[0] == 1)
    await asyncio.sleep(0)
    assert not any(task.done() for task in answers)  # held, not dropped nor failed
    await proxy.restore()
    agreed, started = await asyncio.gather(*answers)
    assert "Safety question 1" in "\n".join(r.text for r in agreed)
    assert "not a diagnosis" in "\n".join(r.text for r in started).lower()
    assert watch.lines("updates") == (1, 1)  # one line for the outage, one for the end


async def test_telegram_updates_sent_during_a_cut_are_all_answered(
        proxy: DbProxy, proxied: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock, telegram_api: BotApiServer,
        watch: Watch) -> None:
    channel = TelegramChannel(telegram_settings(telegram_api), Engine(proxied, program, clock),
                              poll_timeout=1)
    await channel.start()
    try:
        ann, bob = Person(telegram_api, 1001), Person(telegram_api, 1002)
        await ann.say("/start")
        await proxy.cut()
        await telegram_api.send_text(1001, "I agree")
        await telegram_api.send_text(1001, "/help")
        await telegram_api.send_text(1002, "/start")
        await watch.until(lambda: watch.lines("updates")[0] == 1)
        await proxy.restore()
        await ann.settle(within=60)
        await bob.settle(within=60)
    finally:
        await channel.stop()
    said = [m.text for m in telegram_api.to(1001)]
    assert any("Safety question 1" in t for t in said) and any("/pain" in t for t in said)
    assert any("not a diagnosis" in m.text.lower() for m in telegram_api.to(1002))
    assert not [m for m in telegram_api.sent if "went wrong" in m.text]  # no apology needed


async def test_the_worker_backs_off_through_a_cut_and_sends_when_back(
        proxy: DbProxy, proxied: async_sessionmaker[DbSession],
        sessions: async_sessionmaker[DbSession], engine: Engine, program: Program,
        clock: ManualClock, telegram_api: BotApiServer,
        watch: Watch) -> None:
    await enrolled(engine, "1001", channel="telegram")
    settings = telegram_settings(telegram_api, tick_seconds=0.2,
                                 database_url="postgresql+asyncpg://x/y")
    deliverers = {"telegram": TelegramChannel.deliverer(settings)}
    stop = asyncio.Event()
    await proxy.cut()
    clock.advance(FIRST_PROMPT_DELAY)  # the first prompt falls due while the database is away
    worker = asyncio.create_task(run_worker(settings, proxied, program, deliverers, clock, stop))
    await watch.until(lambda: watch.lines("scheduler tick")[0] == 1
                and watch.lines("outbox sender")[0] == 1)
    await asyncio.sleep(1)  # several ticks and claims fail meanwhile
    assert not worker.done()
    assert (await healthz(proxied)) == (503, ["database"])
    await proxy.restore()
    assert (await healthz(proxied)) == (200, [])
    await telegram_api.wait_for(lambda: any("Time for today's knee exercises" in m.text
                                            for m in telegram_api.to(1001)), 120)
    # The prompt can be out before the tick that queued it has finished its later steps and
    # said so: each loop says once that the database is back, and only once.
    await watch.until(lambda: watch.lines("scheduler tick")[1] >= 1
                      and watch.lines("outbox sender")[1] >= 1)
    stop.set()
    await asyncio.wait_for(worker, 90)
    async with sessions() as db:
        statuses = (await db.scalars(select(Outbox.status).filter_by(kind="prompt"))).all()
    assert statuses == ["sent"]
    assert watch.lines("scheduler tick") == (1, 1)
    assert watch.lines("outbox sender") == (1, 1)


@pytest.mark.parametrize("command", [["migrate"], ["stats"], ["grant", "coach", "telegram:1"],
                                     ["revoke", "coach", "telegram:1"], ["erase", "telegram:1"],
                                     ["run", "--worker"], ["run", "--user", "alice"]])
@pytest.mark.parametrize("url", ["postgresql+asyncpg://postgres:secret@127.0.0.1:{port}/x",
                                 "sqlite+aiosqlite:///{tmp}/no/such/dir/k.db"])
def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path, command: list[str],
                                                        url: str) -> None:
    full = url.format(port=free_port(), tmp=tmp_path)
    result = kneecoach(*command, env={"KNEECOACH_DATABASE_URL": full}, stdin="/start\n",
                       cwd=tmp_path)
    assert result.returncode == 1
    # Log lines aside (start-up may warn of plain-text storage), one line says why.
    said = [line for line in result.stderr.splitlines() if "cannot reach" in line]
    assert len(said) == 1 and said[0].startswith("kneecoach: cannot reach the database"), (
        result.stderr)
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
