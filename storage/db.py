"""Engines, sessions and schema migration for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.crypto import use_keys

MIGRATIONS = Path(__file__).parent / "migrations"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def is_postgres(db: DbSession) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def upsert(db: DbSession, table: Table | type) -> PgInsert | SqliteInsert:
    """An INSERT with ON CONFLICT clauses, in the dialect of the session's database."""
    return (pg_insert if is_postgres(db) else sqlite_insert)(table)


def create_engine(url: str, keys: Sequence[str] = (), **kwargs: Any) -> AsyncEngine:
    """An engine for the URL; with `keys` (Fernet keys, newest first) health data is
    encrypted at rest (storage/crypto.py)."""
    engine = _create_engine(url, **kwargs)
    use_keys(engine, keys)
    return engine


def _private_file(url: str) -> None:
    """Create the SQLite file readable by its owner only, before SQLite does: SQLite gives
    its -wal and -shm files the database file's permissions."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        pass  # it exists (and keeps the permissions its operator gave it), or SQLite says why



def _create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if is_sqlite(url):
        # Writers queue on SQLite's lock for up to 30 s instead of failing at once. Every
        # session ends its own transaction (commit, or rollback on close), so the pool's extra
        # rollback on return is skipped: through aiosqlite each statement costs thread hops,
        # and this one was a fifth of a chat message's database time.
        engine = create_async_engine(url, connect_args={"timeout": 30},
                                     pool_reset_on_return=None, **kwargs)

        @event.listens_for(engine.sync_engine, "do_connect")
        def _create_private(*_args: Any) -> None:
            _private_file(url)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision` over the given engine (Alembic owns the schema)."""

    def _upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
