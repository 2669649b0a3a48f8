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
import logging
import secrets
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from telegram import BotCommand, ChatMember, Update
from telegram.constants import ChatType
from telegram.error import InvalidToken, TelegramError
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

from bot import logs, metrics
from bot.channels import InOrder, StartupError, at_start
from bot.channels.telegram_http import UpdatesRequest
from bot.channels.telegram_send import TelegramDeliverer, bot_request
from bot.delivery import DeliveryError, send_replies
from bot.media import MediaIds
from bot.settings import Settings
from bot.web import WebServer
from conversations.commands import MENU
from conversations.engine import APOLOGY, PRIVATE_ONLY, Engine
from conversations.i18n import LANGUAGES, SOURCE, _, speaking
from conversations.messages import Inbound, Outbound

log = logging.getLogger(__name__)
UPDATES = ["message", "callback_query", "my_chat_member"]
POLL_PAUSE = 0.5  # seconds between polls while only unconfirmed updates are in hand
# getUpdates hands out at most 100 from the offset, the unconfirmed ones in hand included.
# While ROOM or more are in hand, a poll would bring few new updates for many handed out
# again, so it waits for those in hand instead: in a burst, one poll per update was a third
# of the process's time (bench/telegram_update_cost.py, profiled).
ROOM = 50
COMMAND_TRIES = 3  # setMyCommands only sets the menu: a short retry, then a warning


def _rejected_token(exc: Exception) -> str | None:
    """The answer to a wrong token (401, or 404 for a malformed one); PTB's own message
    quotes the token, so it is not repeated."""
    return "the bot token was not accepted (401 Unauthorized)" if isinstance(
        exc, InvalidToken) else None


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


class TelegramChannel:
    """The bot: a PTB Application whose handlers turn updates into `Inbound` for the engine."""

    name = "telegram"

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
            .request(bot_request(10.0))
            .get_updates_request(UpdatesRequest(lambda: self._fetched, poll_timeout + 10.0))
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
                                        request=bot_request(10.0)),
                                 MediaIds(sessions) if sessions is not None else None)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """getMe (the bot's username, for invite deep links) is retried for a while, then a
        clear StartupError; the command menu is only a convenience: a warning if it fails."""
        await at_start("Telegram getMe", self.app.initialize, self.settings.startup_seconds,
                       _rejected_token)
        self.engine.invite_links["telegram"] = (
            f"https://t.me/{self.app.bot.username}?start={{code}}")
        # The menu in English for everyone, then in each language for users whose Telegram
        # is set to it; the command names stay the same in every language.
        for language in (None, *(code for code in LANGUAGES if code != SOURCE)):
            with speaking(language):
                commands = [BotCommand(name, _(about)) for name, about in MENU]
            try:
                await at_start("Telegram setMyCommands",
                               lambda commands=commands, language=language:
                               self.app.bot.set_my_commands(commands, language_code=language),
                               min(self.settings.startup_seconds, 0.5 * COMMAND_TRIES),
                               _rejected_token)
            except StartupError as exc:
                log.warning("%s; going on without the command menu", exc)
                break
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
            # Polling again returns those in hand at once: let one finish, and while ROOM or
            # more are in hand, more, within the pause.
            pause = asyncio.get_running_loop().time() + POLL_PAUSE
            while self._in_hand and (left := pause - asyncio.get_running_loop().time()) > 0:
                await asyncio.wait(list(self._in_hand.values()), timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
                if len(self._in_hand) < ROOM:
                    break

    # --- updates -------------------------------------------------------------------------
    async def _handle(self, inbound: Inbound) -> None:
        with (logs.handling(inbound.channel, inbound.user_id, inbound.update_id),
              metrics.handling(inbound.channel)):
            replies, behind = await self.engine.handle_behind(inbound)
            await send_replies(self.deliverer, self.engine, inbound, replies, behind)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.message, update.effective_user
        if message is None or user is None:
            return
        # Anything but text (a sticker, a voice note) reaches the engine as an empty answer,
        # which it re-asks clearly.
        await self._handle(Inbound.parse_text(
            "telegram", str(user.id), str(message.chat.id), message.text or "",
            display_name=user.full_name[:256], update_id=str(update.update_id),
            language=user.language_code))

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
            update_id=str(update.update_id), message_id=message_id,
            language=user.language_code))

    async def _on_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change, chat = update.my_chat_member, update.effective_chat
        if change is None or chat is None or chat.type == ChatType.PRIVATE:
            return
        joined = change.new_chat_member.status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR)
        was_in = change.old_chat_member.status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR)
        if joined and not was_in:  # said once, when added; group messages are ignored
            try:
                adder = update.effective_user
                await self.deliverer.deliver(Outbound(
                    channel="telegram", chat_id=str(chat.id),
                    text=self.engine.words(PRIVATE_ONLY, adder.language_code if adder else None)))
            except DeliveryError as exc:
                log.info("could not tell group %s: %s", chat.id, exc)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("update %s failed", update_id, exc_info=context.error)
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None or chat.type != ChatType.PRIVATE:
            return
        try:
            user = update.effective_user if isinstance(update, Update) else None
            await self.deliverer.deliver(Outbound(
                channel="telegram", chat_id=str(chat.id),
                text=self.engine.words(APOLOGY, user.language_code if user else None)))
        except DeliveryError as exc:
            log.info("could not apologise in chat %s: %s", chat.id, exc)


CHANNEL = TelegramChannel
