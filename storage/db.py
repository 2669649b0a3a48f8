"""Engines, sessions and schema migration for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, Table, any_, event, func, literal, literal_column, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.crypto import use_keys

MIGRATIONS = Path(__file__).parent / "migrations"

# PostgreSQL classes 08 (connection exception) and 57 (operator intervention: shutdown,
# restart, "cannot connect now"); SQLite's ways of saying the file cannot be used now.
_PG_LOST = (asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError)
_SQLITE_LOST = ("unable to open", "database is locked", "disk i/o error")


def database_lost(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached (an outage to wait out), not that a
    statement was wrong. asyncpg raises the socket's own OSError (ConnectionRefusedError,
    ConnectionResetError) when it connects, outside SQLAlchemy's exception types."""
    seen: BaseException | None = exc
    for _ in range(8):  # along the chain of causes: SQLAlchemy wraps the driver's error
        if seen is None:
            return False
        if isinstance(seen, (OSError, sa_exc.TimeoutError, *_PG_LOST)):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, sqlite3.OperationalError) and str(seen).lower().startswith(
                _SQLITE_LOST):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Outage:
    """One loop's view of a lost database: a log line when it is lost and one when it is
    back, not one per try or per update in hand."""

    def __init__(self, loop: str, log: logging.Logger) -> None:
        self.loop = loop
        self.log = log
        self.since: float | None = None  # time.monotonic() when it was lost; None: reachable

    def lost(self, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s: database unreachable (%s); retrying with backoff",
                             self.loop, reason(exc))

    def back(self) -> None:
        if self.since is not None:
            self.log.warning("%s: database reachable again after %.1f s", self.loop,
                             time.monotonic() - self.since)
            self.since = None


def backoff(tries: int, first: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before try number `tries + 1` against a lost database."""
    return min(cap, first * 2 ** min(tries, 16))


def reason(exc: BaseException) -> str:
    """The first line of what went wrong, without SQL or parameters."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


_WRITERS: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, asyncio.Lock]] = (
    weakref.WeakKeyDictionary())


def one_writer(sessions: async_sessionmaker[DbSession]
               ) -> contextlib.AbstractAsyncContextManager[Any]:
    """On SQLite, which takes one writer at a time, a lock the process's update transactions
    queue on in order; elsewhere nothing. Left to SQLite's busy handler (which sleeps in
    growing steps up to 100 ms), a burst of concurrent updates ran at half the rate of the
    same updates one after another (bench/telegram_update_cost.py, profiled)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return contextlib.nullcontext()
    locks = _WRITERS.setdefault(bind.sync_engine, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()  # an asyncio.Lock belongs to one event loop
    if (lock := locks.get(loop)) is None:
        lock = locks[loop] = asyncio.Lock()
    return lock


def is_postgres(db: DbSession) -> bool:
    return db.get_bind().dialect.name == "postgresql"


def upsert(db: DbSession, table: Table | type) -> PgInsert | SqliteInsert:
    """An INSERT with ON CONFLICT clauses, in the dialect of the session's database."""
    return (pg_insert if is_postgres(db) else sqlite_insert)(table)


def among(db: DbSession, column: Any, ids: Collection[int]) -> Any:
    """`column IN ids` as a single parameter however many ids (building an IN list of
    thousands of parameters costs more than running it): an array on PostgreSQL, a JSON
    array unpacked by json_each on SQLite."""
    if is_postgres(db):
        return column == any_(literal(list(ids), ARRAY(BigInteger())))
    return column.in_(select(literal_column("value"))
                      .select_from(func.json_each(json.dumps(list(ids)))))


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


class _Ran:
    """What a statement leaves on its cursor for SQLAlchemy to read; the sqlite3 cursor
    itself was closed in aiosqlite's thread."""

    __slots__ = ("description", "lastrowid", "rowcount")

    def __init__(self, cursor: sqlite3.Cursor | None = None) -> None:
        self.description = cursor.description if cursor else None
        self.rowcount = cursor.rowcount if cursor else -1
        self.lastrowid = cursor.lastrowid if cursor else None

    def close(self) -> None:
        pass


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
         ) -> tuple[_Ran, list[Any]]:
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, parameters or ())
        return _Ran(cursor), cursor.fetchall() if cursor.description else []
    finally:
        cursor.close()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A statement, its rows and the cursor's close in one trip to aiosqlite's thread.
    SQLAlchemy's adapter makes four (open, execute, fetch, close), each a thread hand-off
    that cost about 65 us here: most of a chat message's database time
    (bench/telegram_update_cost.py, profiled). aiosqlite's own cursor runs its calls
    through the same `_execute`."""

    __slots__ = ()
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Ran()

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._trip(operation, seq_of_parameters, many=True)

    async def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            ran, rows = await connection._execute(_run, connection._conn, operation,
                                                  parameters, many)
        self._cursor = ran
        self._rows = collections.deque(rows)


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneTripCursor


class _OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        return _OneTripConnection(self, super().connect(*arg, **kw)._connection)


def _create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if is_sqlite(url) and make_url(url).get_driver_name() == "aiosqlite":
        kwargs.setdefault("module", _OneTripDbapi(aiosqlite, sqlite3))
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


def missing_directory(url: str) -> Path | None:
    """For a SQLite file URL, its directory when that does not exist: said up front, since a
    failed aiosqlite connect can still report from its thread after the event loop closed."""
    database = make_url(url).database if is_sqlite(url) else None
    if not database or database == ":memory:":
        return None
    folder = Path(database).expanduser().parent
    return None if folder.is_dir() else folder


async def ping(engine: AsyncEngine) -> None:
    """Raise now if the database cannot be reached, rather than at the first message."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


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
