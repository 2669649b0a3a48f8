"""The Slack channel (slack-bolt, async): direct messages, button actions and the
`/kneecoach <command>` slash command become `Inbound`; `Outbound` becomes Block Kit. No flow
logic lives here.

HTTP at /slack/events on the process's one web server (bot/web.py), where bolt checks the
signing secret (a bad signature or a timestamp over 5 minutes old: 401, nothing handled);
Socket Mode when
KNEECOACH_SLACK_APP_TOKEN is set. Bolt acknowledges each request before the work is done. One
user's requests are handled in the order they came; a retried event (same event id) is dropped
by the engine."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError, web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import logs, metrics
from bot.channels import InOrder, at_start
from bot.delivery import (
    Blocked,
    Part,
    Progress,
    RetryLater,
    Undeliverable,
    fit,
    send_parts,
    send_replies,
    split_text,
)
from bot.media import read_media
from bot.settings import Settings
from bot.web import WebServer
from conversations.engine import Engine
from conversations.messages import Inbound, Media, Outbound
from conversations.numbers import whole

log = logging.getLogger(__name__)

SECTION_CHARS = 3000  # Slack's limit for a section's text
BLOCKS_PER_MESSAGE = 50
BUTTONS_PER_ROW = 25  # elements in one actions block
ACTION = re.compile(r"^kc_")
BLOCKED = {"channel_not_found", "is_archived", "account_inactive", "not_in_channel",
           "user_disabled", "cannot_dm_bot", "messages_tab_disabled"}


def _sections(text: str) -> list[dict[str, Any]]:
    # plain_text, not mrkdwn: a patient's or coach's asterisks and underscores stay as typed.
    return [{"type": "section", "text": {"type": "plain_text", "text": part}}
            for part in split_text(text, SECTION_CHARS)]


def _actions(outbound: Outbound) -> list[dict[str, Any]]:
    blocks = []
    for r, row in enumerate(outbound.buttons):
        for start in range(0, len(row), BUTTONS_PER_ROW):
            blocks.append({"type": "actions", "block_id": f"kc_row_{r}_{start}", "elements": [
                {"type": "button", "action_id": f"kc_{r}_{start + n}", "value": button.token,
                 "text": {"type": "plain_text", "text": button.label[:75]}}
                for n, button in enumerate(row[start:start + BUTTONS_PER_ROW])]})
    return blocks


def _rejected_token(exc: Exception) -> str | None:
    """The answer to a wrong or revoked token, which no retry changes."""
    if isinstance(exc, SlackApiError) and exc.response.status_code < 500 and (
            exc.response.status_code != 429):
        return str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
    return None


def _failure(exc: SlackApiError) -> Exception:
    error = str(exc.response.get("error", ""))
    if exc.response.status_code == 429:
        return RetryLater(error or "ratelimited",
                          float(exc.response.headers.get("Retry-After", 1)))
    if error in BLOCKED:
        return Blocked(error)
    if exc.response.status_code >= 500:
        return RetryLater(f"{exc.response.status_code} {error}")
    return Undeliverable(error or f"HTTP {exc.response.status_code}")


class SlackDeliverer:
    """Sends one `Outbound` through the Web API, for replies and the outbox sender alike. A
    message's parts: its text in messages of up to 50 sections (the buttons on the last),
    then the chart, the file, the demonstration clip."""

    channel = "slack"

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        # The messages whose buttons are being answered, by (chat, ts): their blocks without
        # the buttons and their text. An edit without text shows them so (chat.update
        # replaces every block, and Slack's press carries the message).
        self.pressed: dict[tuple[str, str], tuple[list[dict[str, Any]], str]] = {}

    async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
        return await send_parts(self._parts(outbound), start, progress)

    async def _call(self, method: Callable[..., Awaitable[Any]], **kwargs: Any) -> str | None:
        """One Web API call, its failure as one of the delivery kinds."""
        try:
            response = await method(**kwargs)
        except SlackApiError as exc:
            raise _failure(exc) from exc
        except (ClientError, TimeoutError) as exc:
            raise RetryLater(repr(exc)) from exc
        ts = response.get("ts")
        return str(ts) if ts else None

    def _parts(self, outbound: Outbound) -> list[Part]:
        chat = outbound.chat_id
        if outbound.edit_message_id is not None:
            if outbound.text:
                blocks, text = _sections(outbound.text)[:1], fit(outbound.text, SECTION_CHARS)
            elif (chat, outbound.edit_message_id) in self.pressed:  # only the buttons off
                blocks, text = self.pressed[chat, outbound.edit_message_id]
            else:  # a message not pressed here: what it shows is not known, it stays
                return []
            return [functools.partial(self._call, self.client.chat_update, channel=chat,
                                      ts=outbound.edit_message_id, text=text, blocks=blocks)]
        sections, actions = _sections(outbound.text), _actions(outbound)
        room = BLOCKS_PER_MESSAGE - len(actions)
        messages = [sections[n:n + room] for n in range(0, len(sections), room)] or [[]]
        parts: list[Part] = []
        for n, blocks in enumerate(messages):
            if not blocks and not actions:
                break
            text = "\n".join(b["text"]["text"] for b in blocks)
            parts.append(functools.partial(
                self._call, self.client.chat_postMessage, channel=chat,
                text=fit(text, SECTION_CHARS) or " ",
                blocks=blocks + (actions if n == len(messages) - 1 else [])))
        for content, filename in ((outbound.image, "kneecoach-chart.png"),
                                  (outbound.document.content if outbound.document else None,
                                   outbound.document.filename if outbound.document else "")):
            if content is not None:
                parts.append(functools.partial(
                    self._call, self.client.files_upload_v2, channel=chat, content=content,
                    filename=filename, title=filename))
        if outbound.media is not None:  # GIFs play inline
            parts.append(functools.partial(self._upload_clip, chat, outbound.media))
        return parts

    async def _upload_clip(self, chat: str, media: Media) -> str | None:
        content = await asyncio.to_thread(read_media, media)  # read when its turn comes
        filename = media.path.rsplit("/", 1)[-1]
        return await self._call(self.client.files_upload_v2, channel=chat, content=content,
                                filename=filename, title=filename)


def _client(settings: Settings) -> AsyncWebClient:
    token = settings.slack_bot_token
    if token is None:
        raise ValueError("KNEECOACH_SLACK_BOT_TOKEN is not set")
    return AsyncWebClient(token=token.get_secret_value(), base_url=settings.slack_api_url)


class SlackChannel:
    """The bolt app: listeners turn Slack's requests into `Inbound` for the engine."""

    name = "slack"

    def __init__(self, settings: Settings, engine: Engine, *,
                 server: WebServer | None = None) -> None:
        """`server`: the process's web server for /slack/events; without one, HTTP mode
        starts a server of its own."""
        secret = settings.slack_signing_secret
        if secret is None and settings.slack_app_token is None:
            raise ValueError("KNEECOACH_SLACK_SIGNING_SECRET is needed for Slack over HTTP")
        self.settings = settings
        self.engine = engine
        client = _client(settings)
        self.deliverer = SlackDeliverer(client)
        self.app = AsyncApp(client=client, signing_secret=(
            secret.get_secret_value() if secret else None),
            request_verification_enabled=secret is not None)
        self.app.event("message")(self._on_message)
        self.app.event("app_home_opened")(self._on_home)
        self.app.action(ACTION)(self._on_press)
        self.app.command("/kneecoach")(self._on_command)
        self.app.error(self._on_error)
        self._users = InOrder()  # bolt runs each request in a task: one user's in order
        self._socket: Any = None
        self._own_server: WebServer | None = None
        if settings.slack_app_token is None:
            if server is None:
                server = self._own_server = WebServer(*settings.listen_host_port)
            server.add_post("/slack/events", self._http)

    @staticmethod
    def deliverer(settings: Settings, sessions: async_sessionmaker[DbSession] | None = None
                  ) -> SlackDeliverer:
        """A deliverer for the outbox sender alone (Slack keeps no uploads by id: `sessions`
        is not needed)."""
        return SlackDeliverer(_client(settings))

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """The token is checked with auth.test first (bolt's async app checks it only on the
        first request, too late for a clear start-up error)."""
        await at_start("Slack auth.test", self.app.client.auth_test,
                       self.settings.startup_seconds, _rejected_token)
        if self.settings.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(
                self.app, self.settings.slack_app_token.get_secret_value())
            await self._socket.connect_async()
            log.info("slack: socket mode")
            return
        if self._own_server is not None:
            await self._own_server.start()
        log.info("slack: HTTP at /slack/events")

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        if self._own_server is not None:
            await self._own_server.stop()
        await self._users.idle()  # requests already acknowledged are finished

    async def _http(self, request: web.Request) -> web.Response:
        # Bolt's verifier calls int() on this header and answers 500 to "abc": a malformed
        # timestamp is an unsigned request.
        if self.settings.slack_signing_secret and whole(
                request.headers.get("X-Slack-Request-Timestamp", "")) is None:
            return web.Response(status=401, text="invalid request")
        return await to_aiohttp_response(await self.app.async_dispatch(
            await to_bolt_request(request)))

    # --- requests ------------------------------------------------------------------------
    async def _handle(self, inbound: Inbound) -> None:
        inbound = await self._with_locale(inbound)  # in the user's order, as the rest
        with (logs.handling(inbound.channel, inbound.user_id, inbound.update_id),
              metrics.handling(inbound.channel)):
            replies, behind = await self.engine.handle_behind(inbound)
            await send_replies(self.deliverer, self.engine, inbound, replies, behind)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        if (event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id")
                or not event.get("user")):
            return  # only people's own direct messages; edits, joins and bots are not answers
        user = str(event["user"])
        inbound = Inbound.parse_text("slack", user, str(event["channel"]),
                                     str(event.get("text") or ""),
                                     update_id=str(body.get("event_id") or event.get("ts")))
        await self._users.run(user, self._handle(inbound))

    async def _on_press(self, ack: Callable[[], Awaitable[None]], body: dict[str, Any],
                        action: dict[str, Any]) -> None:
        await ack()
        user, channel = str(body["user"]["id"]), str(body.get("channel", {}).get("id", ""))
        message = body.get("message") or {}
        ts = message.get("ts")
        if not channel or not action.get("value"):
            return
        inbound = Inbound(channel="slack", user_id=user, chat_id=channel,
                          button=str(action["value"]),
                          update_id=f"action:{action.get('action_ts') or ts}", message_id=ts)
        pressed = (channel, str(ts))

        async def work() -> None:  # the engine's edit of the pressed message needs its blocks
            self.deliverer.pressed[pressed] = (
                [b for b in message.get("blocks", []) if b.get("type") != "actions"],
                message.get("text") or " ")
            try:
                await self._handle(inbound)
            finally:
                del self.deliverer.pressed[pressed]

        await self._users.run(user, work())

    async def _on_command(self, ack: Callable[..., Awaitable[None]], command: dict[str, Any],
                          client: AsyncWebClient) -> None:
        await ack()
        user = str(command["user_id"])
        # Answers go to the user's direct message with the app, wherever they typed it.
        opened = await client.conversations_open(users=user)
        channel = str(opened["channel"]["id"])
        words = str(command.get("text") or "help").strip().lstrip("/") or "help"
        inbound = Inbound.parse_text("slack", user, channel, f"/{words}",
                                     update_id=f"command:{command.get('trigger_id')}")
        await self._users.run(user, self._handle(inbound))

    async def _with_locale(self, inbound: Inbound) -> Inbound:
        """/start is where the engine takes a new user's language: only then is the user's
        Slack locale asked for (users.info), and a failure leaves the default."""
        if inbound.command != "start":
            return inbound
        try:
            found = await self.app.client.users_info(user=inbound.user_id, include_locale=True)
        except (SlackApiError, ClientError, TimeoutError) as exc:
            log.info("users.info for the locale failed: %s", exc)
            return inbound
        locale = (found.get("user") or {}).get("locale")
        return inbound.model_copy(update={"language": str(locale)[:35]}) if locale else inbound

    async def _on_home(self, event: dict[str, Any], client: AsyncWebClient) -> None:
        user = str(event["user"])

        async def work() -> None:
            text = await self.engine.home("slack", user)
            await client.views_publish(user_id=user, view={
                "type": "home", "blocks": _sections(text)[:BLOCKS_PER_MESSAGE]})

        await self._users.run(user, work())

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack request %s failed", body.get("event_id") or body.get("trigger_id"),
                  exc_info=error)


CHANNEL = SlackChannel
