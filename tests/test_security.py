"""Data at rest: health data encrypted with the configured keys (and rotated), the SQLite and
terminal files private to their owner, and what is kept only for a while pruned by the tick."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from test_cli import kneecoach

from bot.channels.console import ConsoleChannel
from bot.files import write_private
from bot.scheduler import Scheduler
from conftest import Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.messages import Document, Outbound
from conversations.program.data import Program
from storage import crypto, stats
from storage.crypto import UndecryptableData
from storage.db import create_engine, migrate, sessionmaker
from storage.models import AuditLog, Base, Broadcast, Outbox, ProcessedUpdate, User
from storage.repository import Repository

TABLES = Base.metadata.sorted_tables
BROADCAST = "Quokka notice 7781: ice the knee after the long walk"
ADMIN = ("console", "root")


def new_key() -> str:
    return Fernet.generate_key().decode()


async def keyed_engine(url: str, keys: list[str]) -> AsyncEngine:
    engine = create_engine(url, keys)
    await migrate(engine)
    return engine


async def journey(engine: AsyncEngine, program: Program, clock: ManualClock) -> None:
    """A patient enrols (every questionnaire), their coach broadcasts, and they report pain
    that alerts the coach; then a tick queues the day's prompt."""
    sessions = sessionmaker(engine)
    chat = Engine(sessions, program, clock, admins=frozenset({ADMIN}))
    coach = Patient(chat, "coach")
    await coach.send("/start")
    await Patient(chat, ADMIN[1]).send("/grant coach console:coach")
    await coach.send("/invite")
    code = coach.text.split("Invite code: ")[1].split(" ")[0]
    patient = await enrolled(chat, "zed")
    await patient.send(f"/join {code}")
    await coach.send("/broadcast")
    await coach.send(BROADCAST)
    await coach.press("Send now")
    assert "queued to 1 patient" in coach.text, coach.text
    await patient.send("/pain")
    await patient.answer_all("9")
    await enrolled(chat, "amy")  # still active: the tick queues her prompt
    clock.advance(timedelta(days=1))
    await Scheduler(sessions, program, clock, grace=timedelta(hours=3)).tick()


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _leaves(item)


async def health_texts(engine: AsyncEngine) -> list[str]:
    """The values of the encrypted columns as they would be stored in plain text (read back
    decrypted): each whole JSON document and each text in it, cut to a fragment that fits
    within one database page."""
    found = [BROADCAST]
    async with sessionmaker(engine)() as db:
        for column in crypto.encrypted_columns(TABLES):
            for value in (await db.scalars(select(column))).all():
                plain = [value] if isinstance(value, str) else [
                    json.dumps(value), *(json.dumps(leaf)[1:-1] for leaf in _leaves(value))]
                found.extend(text[:40] for text in plain if len(text) >= 12)
    return found


async def stored_text(url: str, engine: AsyncEngine) -> str:
    """What the database holds, read past kneecoach: the SQLite files' bytes, or every
    PostgreSQL value as text."""
    if url.startswith("sqlite"):
        await engine.dispose()  # checkpoints the WAL into the file
        path = Path(url.split("///", 1)[1])
        files = [path, Path(f"{path}-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists()).decode("latin-1")
    parts = []
    async with engine.connect() as connection:
        for table in TABLES:
            for column in table.columns:
                rows = await connection.execute(
                    text(f"SELECT {column.name}::text FROM {table.name}"))
                parts.extend(str(row[0]) for row in rows)
    return "\n".join(parts)


@pytest.mark.parametrize("keyed", [True, False], ids=["encrypted", "plain"])
async def test_no_health_text_in_the_stored_database_with_a_key(
        database_url: str, program: Program, clock: ManualClock, keyed: bool) -> None:
    """With a key, none of the patient's answers, the pain alert, the session prompt or the
    broadcast text is in the database as stored; in plain mode they all are (so the search
    finds what it looks for), and the product works the same in both."""
    engine = await keyed_engine(database_url, [new_key()] if keyed else [])
    await journey(engine, program, clock)
    texts = await health_texts(engine)
    async with sessionmaker(engine)() as db:
        kinds = set((await db.scalars(select(Outbox.kind))).all())
        broadcast = (await db.scalars(select(Broadcast.text))).one()
    assert {"alert", "broadcast", "prompt", "reply"} <= kinds
    assert broadcast == BROADCAST
    # The pain alert's reason is among them (stored as its message and values, worded when
    # read), and the questionnaire's answers.
    assert any("reported pain" in t for t in texts) and any('"answers"' in t for t in texts)
    stored = await stored_text(database_url, engine)
    await engine.dispose()
    if keyed:
        assert [t for t in texts if t in stored] == []
    else:
        assert BROADCAST in stored
        assert [t for t in texts if t not in stored] == []


async def test_statistics_and_export_read_encrypted_data(
        database_url: str, program: Program, clock: ManualClock) -> None:
    engine = await keyed_engine(database_url, [new_key()])
    await journey(engine, program, clock)
    async with sessionmaker(engine)() as db:
        everyone = (await stats.compute(db, None, clock.now().date()))[0]
        zed = (await db.scalars(select(User).filter_by(channel_user_id="zed"))).one()
        export = await Repository(db).export_user(zed.id)
    await engine.dispose()
    assert (everyone.enrolled, everyone.active, everyone.referred) == (2, 1, 1)
    assert {a["kind"] for a in export["assessments"]} == {"redflag", "symptoms", "kujala"}
    assert all(isinstance(a["answers"], dict) and a["answers"] for a in export["assessments"])
    assert any("Pain of 9/10" in e["message"] for e in export["progression_events"])
    assert [row["payload"]["text"].endswith(BROADCAST) for row in export["outbox"]] == [True]


async def test_rotation_re_encrypts_every_value_with_the_newest_key(
        database_url: str, program: Program, clock: ManualClock) -> None:
    """Written without a key, rotated to key A (plain values get encrypted), then to B with A
    still listed, then read with B alone: every value reads as before and none is stored in
    plain text. Before the second rotation B alone cannot read, nor can no key."""
    old, new = new_key(), new_key()
    plain = await keyed_engine(database_url, [])
    await journey(plain, program, clock)
    before = await health_texts(plain)
    await plain.dispose()

    async def rotate(keys: list[str]) -> int:
        engine = create_engine(database_url, keys)
        async with sessionmaker(engine)() as db:
            written = await crypto.rotate(db, TABLES)
        await engine.dispose()
        return written

    async def check(keys: list[str]) -> None:
        engine = create_engine(database_url, keys)
        try:
            async with sessionmaker(engine)() as db:
                await crypto.check(db, TABLES)
        finally:
            await engine.dispose()

    assert await rotate([old]) > 10
    with pytest.raises(UndecryptableData, match="not in KNEECOACH_ENCRYPTION_KEYS"):
        await check([new])
    with pytest.raises(UndecryptableData, match="set KNEECOACH_ENCRYPTION_KEYS"):
        await check([])
    await rotate([new, old])
    await check([new])
    with pytest.raises(UndecryptableData):
        await check([old])
    rotated = create_engine(database_url, [new])
    assert await health_texts(rotated) == before
    stored = await stored_text(database_url, rotated)
    await rotated.dispose()
    assert [t for t in before if t in stored] == []


def test_command_line_warns_of_plain_text_rotates_and_names_a_wrong_key(
        tmp_path: Path) -> None:
    key, other = new_key(), new_key()
    chat = "/start\nI agree\n"
    plain = kneecoach("run", "--user", "alice", stdin=chat, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.count("WARNING") == 1 and "stored in plain text" in plain.stderr
    keyed = {"KNEECOACH_ENCRYPTION_KEYS": key}
    secret = kneecoach("run", "--user", "bob", stdin=chat, cwd=tmp_path, env=keyed)
    assert secret.returncode == 0 and "plain text" not in secret.stderr
    rotated = kneecoach("rotate-key", cwd=tmp_path, env=keyed)
    assert rotated.returncode == 0, rotated.stderr
    assert "encrypted with the first key" in rotated.stdout
    for env in ({"KNEECOACH_ENCRYPTION_KEYS": other}, {}):
        wrong = kneecoach("stats", cwd=tmp_path, env=env)
        assert wrong.returncode == 1
        said = [line for line in wrong.stderr.splitlines() if " INFO alembic" not in line]
        assert len(said) == 1 and "KNEECOACH_ENCRYPTION_KEYS" in said[0], wrong.stderr
        assert "Traceback" not in wrong.stderr and key not in wrong.stderr
        assert kneecoach("run", "--user", "carol", stdin=chat, cwd=tmp_path,
                         env=env).returncode == 1
    assert kneecoach("stats", cwd=tmp_path, env={"KNEECOACH_ENCRYPTION_KEYS": f"{other},{key}"}
                     ).returncode == 0
    bad = kneecoach("stats", cwd=tmp_path, env={"KNEECOACH_ENCRYPTION_KEYS": f"{key},nope"})
    assert bad.returncode == 2 and "key 2 is not a Fernet key" in bad.stderr
    assert key not in bad.stderr


# --- file modes --------------------------------------------------------------------------
@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
async def test_sqlite_file_wal_and_shm_are_private(tmp_path: Path, program: Program,
                                                   clock: ManualClock) -> None:
    path = tmp_path / "kneecoach.db"
    engine = await keyed_engine(f"sqlite+aiosqlite:///{path}", [])
    await enrolled(Engine(sessionmaker(engine), program, clock), "alice")
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    assert all(f.exists() for f in files)
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    await engine.dispose()


@pytest.mark.usefixtures("open_umask")
async def test_terminal_files_are_private(tmp_path: Path, engine: Engine) -> None:
    channel = ConsoleChannel(engine, "alice", files_dir=tmp_path)
    for name in ("kneecoach-mydata.json", "kneecoach-stats.csv"):
        channel.render(Outbound(channel="console", chat_id="alice", text="here",
                                document=Document(filename=name, content=b"data")))
    channel.render(Outbound(channel="console", chat_id="alice", text="chart", image=b"png"))
    folder = tmp_path / "alice"
    files = sorted(folder.iterdir())
    assert len(files) == 3 and mode(folder) == 0o700
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_private_files_are_tightened_when_they_exist(tmp_path: Path) -> None:
    path = tmp_path / "kneecoach-mydata.json"
    path.write_bytes(b"older and longer")
    path.chmod(0o644)
    write_private(path, b"new")
    assert (mode(path), path.read_bytes()) == (0o600, b"new")


# --- retention -----------------------------------------------------------------------------
@pytest.fixture
async def seeded(sessions: async_sessionmaker[DbSession], clock: ManualClock
                 ) -> AsyncIterator[dict[str, int]]:
    """Rows of each pruned kind, written at the clock's time (ids by name)."""
    now = clock.now()
    async with sessions() as db, db.begin():
        user = User(channel="console", channel_user_id="u", chat_id="u", status="active",
                    created_at=now)
        db.add(user)
        await db.flush()
        rows: dict[str, Any] = {}
        for kind in ("reply", "prompt", "alert"):
            rows[kind] = Outbox(user_id=user.id, channel="console", chat_id="u", kind=kind,
                                payload={"text": f"{kind} about the knee"}, status="sent",
                                attempts=1, not_before=now, created_at=now, sent_at=now,
                                dedupe_key=f"{kind}:u")
        rows["failed"] = Outbox(user_id=user.id, channel="console", chat_id="u", kind="reply",
                                payload={"text": "refused"}, status="failed", attempts=4,
                                not_before=now, created_at=now)
        rows["pending"] = Outbox(user_id=user.id, channel="console", chat_id="u", kind="reply",
                                 payload={"text": "waiting"}, status="pending", attempts=0,
                                 not_before=now, created_at=now)
        rows["audit"] = AuditLog(at=now, actor="console:u", action="export", detail={})
        db.add_all(rows.values())
        db.add(ProcessedUpdate(channel="console", update_id="1", at=now))
        await db.flush()
        ids = {name: row.id for name, row in rows.items()}
    yield ids


async def _left(sessions: async_sessionmaker[DbSession]) -> dict[str, Any]:
    async with sessions() as db:
        outbox = {(row.kind, row.status): row.payload
                  for row in (await db.scalars(select(Outbox))).all()}
        return {"outbox": outbox,
                "audit": len((await db.scalars(select(AuditLog))).all()),
                "updates": len((await db.scalars(select(ProcessedUpdate))).all())}


async def test_the_tick_prunes_what_is_past_its_retention(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock,
        seeded: dict[str, int]) -> None:
    """Update ids and sent or failed messages go after the retention period (a sent prompt
    keeps its row, for the statistics, but not its payload), pending messages stay, and audit
    entries go after the audit period. The prompt counts of the statistics do not change."""
    scheduler = Scheduler(sessions, program, clock, grace=timedelta(hours=3), batch=2,
                          retention=timedelta(days=90), audit_retention=timedelta(days=365))
    start = clock.now()
    await scheduler.tick()  # folds the sent prompt into the tallies
    async with sessions() as db:
        counted = (await stats.compute(db, None, start.date()))[0].prompts_sent
    assert counted == 1
    untouched = await _left(sessions)
    clock.set(start + timedelta(days=89, hours=23))
    await scheduler.tick()
    assert await _left(sessions) == untouched
    clock.set(start + timedelta(days=90, minutes=1))
    await scheduler.tick()
    assert await _left(sessions) == {
        "outbox": {("prompt", "pruned"): {}, ("reply", "pending"): {"text": "waiting"}},
        "audit": 1, "updates": 0}
    async with sessions() as db:
        assert (await stats.compute(db, None, clock.now().date()))[0].prompts_sent == counted
    clock.set(start + timedelta(days=365, minutes=1))
    await scheduler.tick()
    assert (await _left(sessions))["audit"] == 0


def test_retention_settings_have_their_defaults() -> None:
    from bot.settings import Settings

    settings = Settings()
    assert (settings.retention_days, settings.audit_retention_days) == (90, 365)
    assert settings.keys == []
