"""The Telegram channel (python-telegram-bot): updates in private chats become `Inbound`, the
engine's `Outbound` replies become messages with inline keyboards. No flow logic lives here.

Polling by default; a webhook when KNEECOACH_TELEGRAM_WEBHOOK_URL is set, served on the
process's one web server (bot/web.py) beside Slack and the operator's routes: the secret token
is checked before the body is read (403 without it), the body is capped, bad JSON gets 400, and
no payload is logged. Updates of different chats are handled
concurrently, one chat's in order. A redelivered update is dropped by the engine (update id)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
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
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
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

from bot import logs, metrics
from bot.channels import InOrder, StartupError, at_start
from bot.delivery import (
    Blocked,
    DeliveryError,
    Part,
    Progress,
    RetryLater,
    Undeliverable,
    fit,
    send_parts,
    send_replies,
    split_text,
)
from bot.media import MediaIds, read_media
from bot.settings import Settings
from bot.web import WebServer
from conversations.engine import MENU, Engine
from conversations.messages import Inbound, Outbound

log = logging.getLogger(__name__)
# PTB 22's documented opt-in to the coming timedelta durations (RetryAfter.retry_after);
# without it PTB warns on every 429 it raises.
os.environ.setdefault("PTB_TIMEDELTA", "true")

TEXT_LIMIT = 4096  # UTF-16 units in one Telegram message
CAPTION_LIMIT = 1024  # UTF-16 units in a photo's, animation's or video's caption
UPDATES = ["message", "callback_query", "my_chat_member"]
APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."
PRIVATE_ONLY = ("I only talk in private chats, to keep your health data private. Open a chat "
                "with me directly to start.")
POLL_PAUSE = 0.5  # seconds between polls while only unconfirmed updates are in hand
COMMAND_TRIES = 3  # setMyCommands only sets the menu: a short retry, then a warning


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


def _rejected_token(exc: Exception) -> str | None:
    """The answer to a wrong token (401, or 404 for a malformed one); PTB's own message
    quotes the token, so it is not repeated."""
    return "the bot token was not accepted (401 Unauthorized)" if isinstance(
        exc, InvalidToken) else None


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
        self._chats = InOrder()

    async def do_process_update(self, update: object, coroutine: Any) -> None:
        chat = update.effective_chat.id if isinstance(update, Update) and (
            update.effective_chat) else None
        await self._chats.run(chat, coroutine)

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _bot_request(read_timeout: float) -> HTTPXRequest:
    return HTTPXRequest(connection_pool_size=64, connect_timeout=10.0, read_timeout=read_timeout,
                        write_timeout=20.0, pool_timeout=10.0)


class TelegramChannel:
    """The bot: a PTB Application whose handlers turn updates into `Inbound` for the engine."""

    def __init__(self, settings: Settings, engine: Engine, *, poll_timeout: int = 10,
                 server: WebServer | None = None) -> None:
        """`server`: the process's web server for the webhook route; without one, webhook
        mode starts a server of its own."""
        if settings.telegram_token is None:
            raise ValueError("KNEECOACH_TELEGRAM_TOKEN is not set")
        self.settings = settings
        self.engine = engine
        self.poll_timeout = poll_timeout
        secret = settings.telegram_webhook_secret
        self._secret = secret.get_secret_value() if secret else secrets.token_urlsafe(32)
        self._accepting = False
        self._own_server: WebServer | None = None
        url = settings.telegram_webhook_url
        if url:
            if server is None:
                server = self._own_server = WebServer(*settings.listen_host_port)
            server.add_post(urlparse(url).path or "/", self._webhook)
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
        self._polling: asyncio.Task[None] | None = None
        self._in_hand: dict[int, asyncio.Task[None]] = {}  # update id -> its handling
        self._fetched = 0  # the highest update id fetched

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
        """getMe (the bot's username, for invite deep links) is retried for a while, then a
        clear StartupError; the command menu is only a convenience: a warning if it fails."""
        await at_start("Telegram getMe", self.app.initialize, self.settings.startup_seconds,
                       _rejected_token)
        self.engine.invite_links["telegram"] = (
            f"https://t.me/{self.app.bot.username}?start={{code}}")
        commands = [BotCommand(name, about) for name, about in MENU]
        try:
            await at_start("Telegram setMyCommands",
                           lambda: self.app.bot.set_my_commands(commands),
                           min(self.settings.startup_seconds, 0.5 * COMMAND_TRIES),
                           _rejected_token)
        except StartupError as exc:
            log.warning("%s; going on without the command menu", exc)
        await self.app.start()
        url = self.settings.telegram_webhook_url
        if url:
            if self._own_server is not None:
                await self._own_server.start()
            self._accepting = True
            await at_start("Telegram setWebhook",
                           lambda: self.app.bot.set_webhook(url, allowed_updates=UPDATES,
                                                            secret_token=self._secret),
                           self.settings.startup_seconds, _rejected_token)
        else:
            await at_start("Telegram deleteWebhook", self.app.bot.delete_webhook,
                           self.settings.startup_seconds, _rejected_token)
            self._polling = asyncio.create_task(self._poll())
        log.info("telegram: @%s %s", self.app.bot.username, "webhook" if url else "polling")

    async def stop(self) -> None:
        """Stop fetching, finish the updates in hand (fetched ones included), shut down."""
        self._accepting = False  # webhook deliveries from now on get 503: Telegram retries them
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._polling
            if self._in_hand:
                await asyncio.gather(*self._in_hand.values(), return_exceptions=True)
            with contextlib.suppress(TelegramError):  # confirm what was handled
                await self.app.bot.get_updates(offset=self._fetched + 1, timeout=0, limit=1,
                                               allowed_updates=UPDATES)
        elif self._in_hand:  # webhook updates being handled
            await asyncio.gather(*self._in_hand.values(), return_exceptions=True)
        await self.app.update_queue.join()  # app.stop() would drop fetched, unhandled ones
        await self.app.stop()
        await self.app.shutdown()
        if self._own_server is not None:
            await self._own_server.stop()

    async def _webhook(self, request: web.Request) -> web.Response:
        """One update from Telegram, handled before it is answered."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
        if not secrets.compare_digest(given, self._secret.encode()):
            return web.Response(status=403)  # before the body is read
        if not self._accepting:
            return web.Response(status=503)
        try:
            update = Update.de_json(await request.json(), self.app.bot)
        except (ValueError, TypeError, KeyError, AttributeError):
            return web.Response(status=400)  # the payload is not logged: it is a patient's
        # Answered once handled (replies sent or queued in the outbox), as polling confirms an
        # update only then: Telegram delivers an unanswered one again. One chat's in order.
        task = asyncio.create_task(self.app.update_processor.process_update(
            update, self.app.process_update(update)))
        self._in_hand[update.update_id] = task
        task.add_done_callback(lambda _, uid=update.update_id: self._in_hand.pop(uid, None))
        await asyncio.shield(task)  # a dropped connection does not cancel the handling
        return web.Response()

    async def _poll(self) -> None:
        """Long-poll getUpdates and hand each update to PTB's handlers (one chat's in order).
        Not PTB's Updater: it confirms a batch (the next call's offset) as soon as it has it,
        so updates fetched but not yet handled were lost when the process died. Here the
        offset moves past an update only once it and every earlier one have been handled,
        their replies sent or queued in the outbox; after a crash Telegram hands out the rest
        again, and the engine drops any it had handled already (by update id)."""
        bot, wait = self.app.bot, 1.0
        while True:
            offset = min(self._in_hand) if self._in_hand else self._fetched + 1
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=0 if self._in_hand else self.poll_timeout,
                    allowed_updates=UPDATES)
                wait = 1.0
            except TelegramError as exc:  # network, 5xx, a conflicting webhook
                log.warning("telegram getUpdates failed (%s); trying again in %.0f s",
                            exc, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0)
                continue
            for update in updates:
                if update.update_id <= self._fetched:
                    continue  # in hand already
                self._fetched = update.update_id
                task = asyncio.create_task(self.app.update_processor.process_update(
                    update, self.app.process_update(update)))
                self._in_hand[update.update_id] = task
                task.add_done_callback(
                    lambda _, uid=update.update_id: self._in_hand.pop(uid, None))
            if self._in_hand:  # polling again returns those in hand at once: let one finish
                await asyncio.wait(list(self._in_hand.values()), timeout=POLL_PAUSE,
                                   return_when=asyncio.FIRST_COMPLETED)

    # --- updates -------------------------------------------------------------------------
    async def _handle(self, inbound: Inbound) -> None:
        with (logs.handling(inbound.channel, inbound.user_id, inbound.update_id),
              metrics.handling(inbound.channel)):
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
            except DeliveryError as exc:
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
        except DeliveryError as exc:
            log.info("could not apologise in chat %s: %s", chat.id, exc)
