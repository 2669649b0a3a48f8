"""Shared fixtures: a migrated database on SQLite and (when KNEECOACH_TEST_POSTGRES_URL is
set) PostgreSQL, a manual clock, the engine, and a Patient that chats with it."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from bot.channels.telegram import TelegramChannel
from bot.settings import Settings
from conversations.clock import ManualClock
from conversations.demo import DemoCache
from conversations.engine import Engine
from conversations.messages import Button, Inbound, Outbound
from conversations.program.data import Program, load_program
from conversations.program.screening import RED_FLAGS
from slack_server import SlackServer
from storage.db import create_engine, is_sqlite, migrate, sessionmaker
from telegram_server import TOKEN, BotApiServer

pytest_plugins = ["clinic"]  # the staff tests' fixtures (tests/clinic.py)

POSTGRES_URL = os.environ.get("KNEECOACH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not POSTGRES_URL, reason="KNEECOACH_TEST_POSTGRES_URL is not set"))]


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A database of this test run's own, so parallel runs on one server never meet."""
    if not POSTGRES_URL:
        yield None
        return
    import asyncio

    name = f"kneecoach_test_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")  # type: ignore[arg-type]
        async with engine.connect() as connection:
            await connection.execute(text(statement))
        await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                       postgres_database: str | None) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'kneecoach.db'}"
        return
    assert postgres_database is not None
    engine = create_engine(postgres_database, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    yield postgres_database


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head per run: each test's database starts as its copy."""
    import asyncio

    path = tmp_path_factory.mktemp("template") / "kneecoach.db"

    async def build() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        await migrate(engine)
        await engine.dispose()

    # In a thread of its own: it is first asked for from inside a test's running loop.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, build()).result()
    return path


def _copy_of_template(request: pytest.FixtureRequest, file: str | None) -> None:
    """A new SQLite file starts as a copy of the migrated template (owner-only, as the bot
    makes it), which the migration then finds at head: migrating each from nothing took 0.2 s."""
    if not file or os.path.exists(file):
        return
    template = request.getfixturevalue("sqlite_template")
    os.close(os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    source, copy = sqlite3.connect(template), sqlite3.connect(file)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()


@pytest.fixture
async def database(database_url: str, request: pytest.FixtureRequest
                   ) -> AsyncIterator[AsyncEngine]:
    if is_sqlite(database_url):
        _copy_of_template(request, make_url(database_url).database)
    engine = create_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def second_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[DbSession]]:
    """A second worker process's own engine and connection pool on the same database."""
    engine = create_engine(database_url)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def sessions(database: AsyncEngine) -> async_sessionmaker[DbSession]:
    return sessionmaker(database)


@pytest.fixture(scope="session")
def program() -> Program:
    return load_program()


@pytest.fixture
def clock() -> ManualClock:
    # A Wednesday morning in London (GMT), away from any DST change.
    return ManualClock(datetime(2026, 1, 14, 8, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def demos(tmp_path_factory: pytest.TempPathFactory) -> DemoCache:
    """One drawing of each demonstration for the whole run, in a folder of its own."""
    return DemoCache(tmp_path_factory.mktemp("demos"))


@pytest.fixture
def engine(sessions: async_sessionmaker[DbSession], program: Program,
           clock: ManualClock, demos: DemoCache) -> Engine:
    return Engine(sessions, program, clock, demos=demos)


class Patient:
    """One person chatting with the engine: types text and presses buttons by label."""

    def __init__(self, engine: Engine, user_id: str, channel: str = "console") -> None:
        self.engine = engine
        self.user_id = user_id
        self.channel = channel
        self.replies: list[Outbound] = []
        self.buttons: list[Button] = []
        self._message = 0

    async def send(self, text: str, **extra: object) -> list[Outbound]:
        inbound = Inbound.parse_text(self.channel, self.user_id, self.user_id,  # type: ignore[arg-type]
                                     text, display_name=f"Name of {self.user_id}", **extra)
        return await self._handle(inbound)

    async def press(self, label: str, **extra: object) -> list[Outbound]:
        matches = [b for b in self.buttons if b.label == label]
        assert matches, f"no button {label!r} in {[b.label for b in self.buttons]}"
        return await self.press_token(matches[0].token, **extra)

    async def press_token(self, token: str, **extra: object) -> list[Outbound]:
        inbound = Inbound(channel=self.channel, user_id=self.user_id,  # type: ignore[arg-type]
                          chat_id=self.user_id, display_name=f"Name of {self.user_id}",
                          button=token, message_id=str(self._message), **extra)
        return await self._handle(inbound)

    async def _handle(self, inbound: Inbound) -> list[Outbound]:
        self.replies = await self.engine.handle(inbound)
        shown = [r for r in self.replies if r.edit_message_id is None]
        if shown and any(r.buttons for r in shown):
            self.buttons = [b for r in shown for row in r.buttons for b in row]
            self._message += 1
        elif shown:
            self.buttons = []
        return self.replies

    @property
    def text(self) -> str:
        """Everything the last replies said, edits excluded."""
        return "\n".join(r.text for r in self.replies if r.edit_message_id is None)

    async def answer_all(self, *answers: str) -> None:
        """Answer a run of questions by button label (or by typing, when no button fits)."""
        for answer in answers:
            if any(b.label == answer for b in self.buttons):
                await self.press(answer)
            else:
                await self.send(answer)


# The answer of no warning to each safety question, by its button (CLINICAL.md 2a).
SAFE_ANSWERS = tuple(q.no if q.warning == "yes" else q.yes for q in RED_FLAGS)
# A screen with no red flags, 5 signs, worst pain 4, the left knee, Kujala 13 answers.
CLEAN_SCREEN = ("I agree", *SAFE_ANSWERS, *["Yes"] * 5, "4", "Left",
                "None", "Painful", "More than 2 km", "Slight pain when going down",
                "Repeated squatting painful", "Pain after more than 2 km", "Slight difficulty",
                "Pain after exercise", "Slight and now and then", "Only after severe exertion",
                "None", "None", "Yes, fully (no deficit)",
                "London", "07:00", "Every day")
CLEAN_KUJALA = 5 + 3 + 3 + 8 + 4 + 8 + 7 + 8 + 8 + 8 + 10 + 5 + 5
# Where each part of CLEAN_SCREEN starts.
SIGNS_AT = 1 + len(RED_FLAGS)
WORST_AT = SIGNS_AT + 5
KUJALA_AT = WORST_AT + 2


async def enrolled(engine: Engine, user_id: str, worst_pain: str = "4",
                   channel: str = "console") -> Patient:
    patient = Patient(engine, user_id, channel)
    await patient.send("/start")
    screen = list(CLEAN_SCREEN)
    screen[WORST_AT] = worst_pain
    await patient.answer_all(*screen)
    assert "All set" in patient.text, patient.text
    return patient


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackServer]:
    server = SlackServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def telegram_api() -> AsyncIterator[BotApiServer]:
    """The test Bot API server on 127.0.0.1."""
    server = BotApiServer()
    await server.start()
    yield server
    await server.stop()


def telegram_settings(server: BotApiServer, **extra: object) -> Settings:
    return Settings(telegram_token=TOKEN, telegram_api_url=server.root,  # type: ignore[arg-type]
                    **extra)


@pytest.fixture
async def telegram_bot(telegram_api: BotApiServer, engine: Engine
                       ) -> AsyncIterator[TelegramChannel]:
    """kneecoach's Telegram channel, polling the test server."""
    channel = TelegramChannel(telegram_settings(telegram_api), engine, poll_timeout=1)
    await channel.start()
    yield channel
    await channel.stop()
