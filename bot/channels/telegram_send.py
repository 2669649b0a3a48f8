"""How a message goes out on Telegram: one `Outbound` as Bot API calls, for replies and the
outbox sender alike, each failure as one of the delivery kinds."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from datetime import timedelta
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import ExtBot

from bot.channels.telegram_http import AiohttpRequest
from bot.delivery import (
    Blocked,
    Part,
    Progress,
    RetryLater,
    Undeliverable,
    fit,
    send_parts,
    split_text,
)
from bot.media import MediaIds, read_media
from conversations.messages import Outbound

log = logging.getLogger(__name__)
# PTB 22's documented opt-in to the coming timedelta durations (RetryAfter.retry_after);
# without it PTB warns on every 429 it raises.
os.environ.setdefault("PTB_TIMEDELTA", "true")

TEXT_LIMIT = 4096  # UTF-16 units in one Telegram message
CAPTION_LIMIT = 1024  # UTF-16 units in a photo's, animation's or video's caption


def bot_request(read_timeout: float) -> AiohttpRequest:
    """PTB's HTTP layer over aiohttp (see telegram_http.py for why not httpx)."""
    return AiohttpRequest(64, connect_timeout=10.0, read_timeout=read_timeout,
                          write_timeout=20.0, pool_timeout=10.0)


def _keyboard(outbound: Outbound) -> InlineKeyboardMarkup | None:
    if not outbound.buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.token)
                                  for b in row] for row in outbound.buttons])


def _seconds(exc: RetryAfter) -> float:
    value = exc.retry_after  # an int where someone set PTB_TIMEDELTA=false
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _failure(exc: TelegramError) -> Exception:
    """PTB's exception as one of the delivery failure kinds. Order matters: BadRequest and
    TimedOut are NetworkErrors in PTB."""
    if isinstance(exc, RetryAfter):
        return RetryLater(str(exc), _seconds(exc))
    if isinstance(exc, Forbidden):
        return Blocked(exc.message)
    if isinstance(exc, BadRequest):
        return Undeliverable(exc.message)
    return RetryLater(exc.message)  # network errors, timeouts, 5xx


class TelegramDeliverer:
    """Sends one `Outbound` through the Bot API, for replies and the outbox sender alike. A
    message's parts: its text in pieces of at most 4096 UTF-16 units, then the chart, then the
    file (the keyboard rides on the last text piece); a demonstration clip is one part, with
    its caption."""

    channel = "telegram"

    def __init__(self, bot: ExtBot[None], media_ids: MediaIds | None = None) -> None:
        self.bot = bot
        self.media_ids = media_ids

    async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
        return await send_parts(self._parts(outbound), start, progress)

    async def close(self) -> None:
        """Release the connection pool of a bot made for the outbox sender alone."""
        await self.bot.request.shutdown()

    def _parts(self, outbound: Outbound) -> list[Part]:
        chat = int(outbound.chat_id) if outbound.chat_id.lstrip("-").isdigit() else (
            outbound.chat_id)
        if outbound.edit_message_id is not None:
            message_id = int(outbound.edit_message_id)
            if outbound.text:
                return [lambda: self._call(
                    self.bot.edit_message_text, fit(outbound.text, TEXT_LIMIT), chat,
                    message_id, reply_markup=_keyboard(outbound))]
            # only take the keyboard off
            return [lambda: self._call(self.bot.edit_message_reply_markup, chat, message_id,
                                       reply_markup=None)]
        if outbound.media is not None:  # one part: the clip with its caption and keyboard
            return [functools.partial(self._call, self._send_media, chat, outbound)]
        texts = split_text(outbound.text, TEXT_LIMIT)
        parts: list[Part] = [
            functools.partial(self._call, self.bot.send_message, chat_id=chat, text=text,
                              reply_markup=_keyboard(outbound) if n == len(texts) - 1 else None)
            for n, text in enumerate(texts)]
        if outbound.image is not None:
            parts.append(functools.partial(self._call, self.bot.send_photo, chat_id=chat,
                                           photo=outbound.image))
        if outbound.document is not None:
            document = outbound.document
            parts.append(lambda: self._call(
                self.bot.send_document, chat_id=chat,
                document=InputFile(document.content, filename=document.filename)))
        return parts

    async def _send_media(self, chat: int | str, outbound: Outbound) -> str:
        """A picture or clip with its caption: by the file_id of this bot's earlier upload
        when there is one, else uploaded, and its file_id kept for next time."""
        media = outbound.media
        assert media is not None
        name, field = _MEDIA_SENDS[media.kind]
        method = getattr(self.bot, name)
        kwargs = {"chat_id": chat, "caption": fit(outbound.text, CAPTION_LIMIT) or None,
                  "reply_markup": _keyboard(outbound)}
        bot = self.bot.token.split(":", 1)[0]  # the bot's id: file_ids are per bot
        known = await self.media_ids.get(bot, media.key) if self.media_ids else None
        if known is not None and self.media_ids is not None:
            try:
                return str((await method(**kwargs, **{field: known})).message_id)
            except BadRequest as exc:  # Telegram no longer knows it: upload again
                log.info("file_id of %s refused (%s); uploading", media.key, exc.message)
                await self.media_ids.put(bot, media.key, None)
        content = await asyncio.to_thread(read_media, media)  # a clinic's clip may be 50 MB
        upload = InputFile(content, filename=media.path.rsplit("/", 1)[-1])
        sent = await method(**kwargs, **{field: upload})
        file_id = _file_id(sent, media.kind)
        if file_id is not None and self.media_ids is not None:
            await self.media_ids.put(bot, media.key, file_id)
        return str(sent.message_id)

    @staticmethod
    async def _call(method: Any, *args: Any, **kwargs: Any) -> str | None:
        """One Bot API call, its failure as one of the delivery kinds."""
        try:
            answer = await method(*args, **kwargs)
        except BadRequest as exc:
            if "message is not modified" in exc.message.lower():
                return None  # the keyboard was off already: done
            raise _failure(exc) from exc
        except TelegramError as exc:
            raise _failure(exc) from exc
        if isinstance(answer, Message):
            return str(answer.message_id)
        return answer if isinstance(answer, str) else None


_MEDIA_SENDS = {"animation": ("send_animation", "animation"), "video": ("send_video", "video"),
                "photo": ("send_photo", "photo")}


def _file_id(sent: Message, kind: str) -> str | None:
    if kind == "photo":
        return sent.photo[-1].file_id if sent.photo else None
    found = sent.video if kind == "video" else sent.animation or sent.document
    return found.file_id if found is not None else None
