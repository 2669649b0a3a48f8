"""Health data encrypted at rest: column types that encrypt on write and decrypt on read with
Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`), so the rest of the code reads and
writes plain values. The keys belong to an engine (`use_keys`): a value is encrypted with the
newest key and decrypted with any of them, until `rotate` has re-encrypted every row.

Without keys values are stored as they are, and a database may hold both kinds: plain rows
written before keys were set stay readable, and `rotate` encrypts them too. A stored Fernet
token is told from plain text by its form (urlsafe base64, at least 100 characters, with the
version byte 0x80 and a timestamp, so "gAAAAA" first), which no text a person writes has."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import JSON, Column, Table, Text, TypeDecorator, bindparam, cast, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

_TOKEN = re.compile(r"gAAAAA[A-Za-z0-9_-]{92,}={0,2}")  # 73 bytes or more, in base64
_CIPHER = "kneecoach_cipher"  # the attribute of an engine's dialect holding its keys


class UndecryptableData(Exception):
    """Stored data that the configured keys cannot decrypt: one clear line for the operator."""


class Cipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("no key")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise UndecryptableData(
                "stored health data is encrypted with a key that is not in "
                "KNEECOACH_ENCRYPTION_KEYS (keep the old key after the new one until "
                "`kneecoach rotate-key` has run)") from None


def parse_keys(value: str) -> list[str]:
    """Comma-separated Fernet keys, newest first; ValueError naming the bad one's position
    (never its value: it is a secret)."""
    keys = [key.strip() for key in value.split(",") if key.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except ValueError:
            raise ValueError(f"key {position} is not a Fernet key (32 url-safe base64-encoded "
                             "bytes, as Fernet.generate_key() makes)") from None
    return keys


def use_keys(engine: AsyncEngine, keys: Sequence[str]) -> None:
    """Encrypt and decrypt through this engine with these keys (none: store plain text).
    A dialect belongs to one engine, so engines with other keys do not meet."""
    setattr(engine.sync_engine.dialect, _CIPHER, Cipher(keys) if keys else None)


def _cipher(dialect: Dialect) -> Cipher | None:
    cipher: Cipher | None = getattr(dialect, _CIPHER, None)
    return cipher


def encrypting(dialect: Dialect) -> bool:
    """Whether values written through this dialect are encrypted (so no SQL can build them)."""
    return _cipher(dialect) is not None


def _is_token(value: object) -> bool:
    return (isinstance(value, str) and len(value) % 4 == 0
            and _TOKEN.fullmatch(value) is not None)


def _decrypt(dialect: Dialect, token: str) -> str:
    cipher = _cipher(dialect)
    if cipher is None:
        raise UndecryptableData("the database holds encrypted health data: set "
                                "KNEECOACH_ENCRYPTION_KEYS to its keys")
    return cipher.decrypt(token)


class EncryptedText(TypeDecorator[str]):
    """Text, stored as a Fernet token when the engine has keys."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        cipher = _cipher(dialect)
        return value if value is None or cipher is None else cipher.encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return _decrypt(dialect, value) if _is_token(value) else value


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON document, stored as a JSON string holding the Fernet token of its text when the
    engine has keys (the column stays JSON, so no migration and plain rows still read)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        cipher = _cipher(dialect)
        return value if value is None or cipher is None else cipher.encrypt(json.dumps(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return json.loads(_decrypt(dialect, value)) if _is_token(value) else value


class SerializedJSON(TypeDecorator[str]):
    """For bulk inserts of payloads serialized already (a tick may queue 100,000 copies):
    the text goes to the driver as it is, or its token as a JSON string when there are keys.
    Read such columns as EncryptedJSON."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        cipher = _cipher(dialect)
        if cipher is None:
            return None
        return lambda text: None if text is None else json.dumps(cipher.encrypt(text))


def encrypted_columns(tables: Sequence[Table]) -> list[Column[Any]]:
    return [column for table in tables for column in table.columns
            if isinstance(column.type, EncryptedText | EncryptedJSON)]


async def check(db: DbSession, tables: Sequence[Table]) -> None:
    """Raise UndecryptableData when the first or last stored value of an encrypted column
    cannot be read with the session's keys: at start-up, one line instead of failures later."""
    for column in encrypted_columns(tables):
        (key,) = column.table.primary_key.columns
        for order in (key.asc(), key.desc()):
            await db.scalar(select(column).where(column.is_not(None)).order_by(order).limit(1))


async def rotate(db: DbSession, tables: Sequence[Table], batch: int = 500) -> int:
    """Re-encrypt every stored value of the encrypted columns with the newest key (plain ones
    are encrypted), committing every `batch` rows; the number of values written. A row changed
    meanwhile (compared as stored) is left as its writer left it: encrypted with the newest key
    already, as every process must have the new keys before a rotation starts."""
    cipher = _cipher(db.get_bind().dialect)
    if cipher is None:
        raise UndecryptableData("set KNEECOACH_ENCRYPTION_KEYS to rotate to its first key")
    written = 0
    for column in encrypted_columns(tables):
        table, is_json = column.table, isinstance(column.type, EncryptedJSON)
        (key,) = table.primary_key.columns
        stored = cast(column, Text)  # as stored: JSON text, or the text column itself
        # The new value goes in as plain (JSON) text, which the type encrypts.
        change = (update(table).where(key == bindparam("k"), stored == bindparam("old"))
                  .values({column.name: bindparam(
                      "new", type_=SerializedJSON() if is_json else EncryptedText())}))
        after: Any = None
        while True:
            query = select(key, stored).where(column.is_not(None)).order_by(key).limit(batch)
            if after is not None:
                query = query.where(key > after)
            rows = (await db.execute(query)).all()
            if not rows:
                break
            params = []
            for row_key, old in rows:
                token = json.loads(old) if is_json else old
                plain = cipher.decrypt(token) if _is_token(token) else old
                params.append({"k": row_key, "old": old, "new": plain})
            await db.execute(change, params)
            await db.commit()
            written += len(params)
            after = rows[-1][0]
    return written
