"""Pictures and clips on their way out: the file's bytes, and the ids a chat platform gave
a bot's earlier uploads of it (Telegram's file_id), kept in the database per bot and file so a
demonstration is uploaded once and then re-sent by its id, from any process."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.delivery import Undeliverable
from conversations.clock import Clock, SystemClock
from conversations.messages import Media
from storage.repository import Repository

log = logging.getLogger(__name__)


def read_media(media: Media) -> bytes:
    try:
        return Path(media.path).read_bytes()
    except OSError as exc:  # a worker on another host without the file: never sendable here
        raise Undeliverable(f"media file {Path(media.path).name}: "
                            f"{exc.strerror or exc}") from None


class MediaIds:
    """The platform's id for each (bot, media key). A failed read or write only costs an
    upload: the message itself has gone (or will go) either way."""

    def __init__(self, sessions: async_sessionmaker[DbSession], clock: Clock | None = None
                 ) -> None:
        self.sessions = sessions
        self.clock = clock or SystemClock()

    async def get(self, bot: str, key: str) -> str | None:
        try:
            async with self.sessions() as db:
                return await Repository(db).media_file_id(bot, key)
        except SQLAlchemyError:
            log.warning("media id lookup failed; uploading instead", exc_info=True)
            return None

    async def put(self, bot: str, key: str, file_id: str | None) -> None:
        try:
            async with self.sessions() as db, db.begin():
                await Repository(db).remember_media(bot, key, file_id, self.clock.now())
        except SQLAlchemyError:
            log.warning("could not keep the media id", exc_info=True)
