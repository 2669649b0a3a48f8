"""The Telegram channel (python-telegram-bot): updates in private chats become `Inbound`, the
engine's `Outbound` replies become messages with inline keyboards. No flow logic lives here.

Polling by default; a webhook when KNEECOACH_TELEGRAM_WEBHOOK_URL is set (PTB's own server
checks the secret token and answers 403 without it). Updates of different chats are handled
concurrently, one chat's in order. A redelivered update is dropped by the engine (update id)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import (
    BotCommand,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    BaseUpdateProcessor,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot.delivery import Blocked, RetryLater, Undeliverable, send_replies, split_text
from bot.media import MediaIds, read_media
from bot.settings import Settings
from conversations.engine import MENU, Engine
from conversations.messages import Inbound, Outbound

log = logging.getLogger(__name__)
# PTB 22's documented opt-in to the coming timedelta durations (RetryAfter.retry_after);
# without it PTB warns on every 429 it raises.
os.environ.setdefault("PTB_TIMEDELTA", "true")

TEXT_LIMIT = 4096  # characters in one Telegram message
CAPTION_LIMIT = 1024  # characters in a photo's, animation's or video's caption
UPDATES = ["message", "callback_query", "my_chat_member"]
APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."
PRIVATE_ONLY = ("I only talk in private chats, to keep your health data private. Open a chat "
                "with me directly to start.")
PART_TRIES = 5  # a later part of a long message is retried here (see TelegramDeliverer)


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
    """Sends one `Outbound` through the Bot API, for replies and the outbox sender alike."""

    channel = "telegram"

    def __init__(self, bot: ExtBot[None], media_ids: MediaIds | None = None) -> None:
        self.bot = bot
        self.media_ids = media_ids

    async def deliver(self, outbound: Outbound) -> str | None:
        try:
            return await self._send(outbound)
        except BadRequest as exc:
            if "message is not modified" in exc.message.lower():
                return outbound.edit_message_id  # the keyboard was off already: done
            raise _failure(exc) from exc
        except TelegramError as exc:
            raise _failure(exc) from exc

    async def _send(self, outbound: Outbound) -> str | None:
        chat = int(outbound.chat_id) if outbound.chat_id.lstrip("-").isdigit() else (
            outbound.chat_id)
        if outbound.edit_message_id is not None:
            message_id = int(outbound.edit_message_id)
            if outbound.text:
                await self.bot.edit_message_text(outbound.text[:TEXT_LIMIT], chat, message_id,
                                                 reply_markup=_keyboard(outbound))
            else:  # only take the keyboard off
                await self.bot.edit_message_reply_markup(chat, message_id, reply_markup=None)
            return outbound.edit_message_id
        if outbound.media is not None:
            return await self._send_media(chat, outbound)
        parts = split_text(outbound.text, TEXT_LIMIT)
        sends: list[Any] = [
            (self.bot.send_message, {"chat_id": chat, "text": part,
                                     "reply_markup": _keyboard(outbound)
                                     if n == len(parts) - 1 else None})
            for n, part in enumerate(parts)]
        if outbound.image is not None:
            sends.append((self.bot.send_photo, {"chat_id": chat, "photo": outbound.image}))
        if outbound.document is not None:
            document = InputFile(outbound.document.content, filename=outbound.document.filename)
            sends.append((self.bot.send_document, {"chat_id": chat, "document": document}))
        sent = None
        for n, (method, kwargs) in enumerate(sends):
            sent = await (method(**kwargs) if n == 0 else self._part(method, kwargs))
        return str(sent.message_id) if sent is not None else None

    async def _send_media(self, chat: int | str, outbound: Outbound) -> str:
        """A picture or clip with its caption: by the file_id of this bot's earlier upload
        when there is one, else uploaded, and its file_id kept for next time."""
        media = outbound.media
        assert media is not None
        name, field = _MEDIA_SENDS[media.kind]
        method = getattr(self.bot, name)
        kwargs = {"chat_id": chat, "caption": outbound.text[:CAPTION_LIMIT] or None,
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
    async def _part(method: Any, kwargs: dict[str, Any]) -> Any:
        """A later part is retried here: once the first part is out, a retry of the whole
        message would send that part twice."""
        for attempt in range(PART_TRIES):
            try:
                return await method(**kwargs)
            except (RetryAfter, NetworkError) as exc:
                if isinstance(exc, BadRequest) or attempt == PART_TRIES - 1:
                    raise
                await asyncio.sleep(_seconds(exc) if isinstance(exc, RetryAfter)
                                    else 0.5 * 2 ** attempt)
        return None


_MEDIA_SENDS = {"animation": ("send_animation", "animation"), "video": ("send_video", "video"),
                "photo": ("send_photo", "photo")}


def _file_id(sent: Message, kind: str) -> str | None:
    if kind == "photo":
        return sent.photo[-1].file_id if sent.photo else None
    found = sent.video if kind == "video" else sent.animation or sent.document
    return found.file_id if found is not None else None


class PerChat(BaseUpdateProcessor):
    """Updates of different chats run concurrently; one chat's run in the order they came."""

    def __init__(self, max_concurrent_updates: int) -> None:
        super().__init__(max_concurrent_updates)
        self._chats: dict[object, tuple[asyncio.Lock, int]] = {}

    async def do_process_update(self, update: object, coroutine: Any) -> None:
        chat = update.effective_chat.id if isinstance(update, Update) and (
            update.effective_chat) else None
        lock, users = self._chats.get(chat, (asyncio.Lock(), 0))
        self._chats[chat] = (lock, users + 1)
        try:
            async with lock:
                await coroutine
        finally:
            lock, users = self._chats[chat]
            if users == 1:
                del self._chats[chat]
            else:
                self._chats[chat] = (lock, users - 1)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _bot_request(read_timeout: float) -> HTTPXRequest:
    return HTTPXRequest(connection_pool_size=64, connect_timeout=10.0, read_timeout=read_timeout,
                        write_timeout=20.0, pool_timeout=10.0)


class TelegramChannel:
    """The bot: a PTB Application whose handlers turn updates into `Inbound` for the engine."""

    def __init__(self, settings: Settings, engine: Engine, *, poll_timeout: int = 10) -> None:
        if settings.telegram_token is None:
            raise ValueError("KNEECOACH_TELEGRAM_TOKEN is not set")
        self.settings = settings
        self.engine = engine
        self.poll_timeout = poll_timeout
        root = settings.telegram_api_url.rstrip("/")
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            Application.builder().token(settings.telegram_token.get_secret_value())
            .base_url(f"{root}/bot").base_file_url(f"{root}/file/bot")
            .request(_bot_request(10.0))
            .get_updates_request(_bot_request(poll_timeout + 10.0))
            .concurrent_updates(PerChat(256))
            .build())
        self.deliverer = TelegramDeliverer(self.app.bot, MediaIds(engine.sessions, engine.clock))
        self.app.add_handler(MessageHandler(
            filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE, self._on_message))
        self.app.add_handler(CallbackQueryHandler(self._on_press))
        self.app.add_handler(ChatMemberHandler(self._on_membership,
                                               ChatMemberHandler.MY_CHAT_MEMBER))
        self.app.add_error_handler(self._on_error)

    @staticmethod
    def deliverer(settings: Settings, sessions: async_sessionmaker[DbSession] | None = None
                  ) -> TelegramDeliverer:
        """A deliverer for the outbox sender alone (a worker process polls no updates);
        with `sessions`, uploads are re-sent by the file_id kept in the database."""
        if settings.telegram_token is None:
            raise ValueError("KNEECOACH_TELEGRAM_TOKEN is not set")
        root = settings.telegram_api_url.rstrip("/")
        return TelegramDeliverer(ExtBot(settings.telegram_token.get_secret_value(),
                                        base_url=f"{root}/bot",
                                        base_file_url=f"{root}/file/bot",
                                        request=_bot_request(10.0)),
                                 MediaIds(sessions) if sessions is not None else None)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self.app.initialize()  # getMe: the bot's username, for invite deep links
        self.engine.invite_links["telegram"] = (
            f"https://t.me/{self.app.bot.username}?start={{code}}")
        await self.app.bot.set_my_commands([BotCommand(name, about) for name, about in MENU])
        await self.app.start()
        url = self.settings.telegram_webhook_url
        if url:
            host, port = self.settings.listen_host_port
            secret = self.settings.telegram_webhook_secret
            await self.app.updater.start_webhook(  # type: ignore[union-attr]
                listen=host, port=port, url_path=urlparse(url).path.lstrip("/"),
                webhook_url=url, allowed_updates=UPDATES,
                secret_token=secret.get_secret_value() if secret else secrets.token_urlsafe(32))
        else:
            await self.app.updater.start_polling(  # type: ignore[union-attr]
                poll_interval=0.0, timeout=self.poll_timeout, allowed_updates=UPDATES)
        log.info("telegram: @%s %s", self.app.bot.username, "webhook" if url else "polling")

    async def stop(self) -> None:
        """Stop fetching, finish the updates in hand (fetched ones included), shut down."""
        await self.app.updater.stop()  # type: ignore[union-attr]
        await self.app.update_queue.join()  # app.stop() would drop fetched, unhandled ones
        await self.app.stop()
        await self.app.shutdown()

    # --- updates -------------------------------------------------------------------------
    async def _handle(self, inbound: Inbound) -> None:
        replies = await self.engine.handle(inbound)
        await send_replies(self.deliverer, self.engine, inbound, replies)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.message, update.effective_user
        if message is None or user is None:
            return
        # Anything but text (a sticker, a voice note) reaches the engine as an empty answer,
        # which it re-asks clearly.
        await self._handle(Inbound.parse_text(
            "telegram", str(user.id), str(message.chat.id), message.text or "",
            display_name=user.full_name[:256], update_id=str(update.update_id)))

    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query, user = update.callback_query, update.effective_user
        if query is None or user is None:
            return
        try:  # answered first, so the button stops spinning whatever happens next
            await query.answer()
        except TelegramError as exc:
            log.info("answerCallbackQuery for update %s failed: %s", update.update_id, exc)
        chat = update.effective_chat
        if query.data is None or chat is None or chat.type != ChatType.PRIVATE:
            return
        message_id = str(query.message.message_id) if query.message else None
        await self._handle(Inbound(
            channel="telegram", user_id=str(user.id), chat_id=str(chat.id),
            display_name=user.full_name[:256], button=query.data,
            update_id=str(update.update_id), message_id=message_id))

    async def _on_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change, chat = update.my_chat_member, update.effective_chat
        if change is None or chat is None or chat.type == ChatType.PRIVATE:
            return
        joined = change.new_chat_member.status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR)
        was_in = change.old_chat_member.status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR)
        if joined and not was_in:  # said once, when added; group messages are ignored
            try:
                await self.deliverer.deliver(Outbound(channel="telegram", chat_id=str(chat.id),
                                                      text=PRIVATE_ONLY))
            except (RetryLater, Blocked, Undeliverable) as exc:
                log.info("could not tell group %s: %s", chat.id, exc)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed", update_id, exc_info=context.error)
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None or chat.type != ChatType.PRIVATE:
            return
        try:
            await self.deliverer.deliver(Outbound(channel="telegram", chat_id=str(chat.id),
                                                  text=APOLOGY))
        except (RetryLater, Blocked, Undeliverable) as exc:
            log.info("could not apologise in chat %s: %s", chat.id, exc)
