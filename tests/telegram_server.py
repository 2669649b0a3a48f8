"""A small Telegram Bot API server for the tests, on 127.0.0.1 over real HTTP (aiohttp).

python-telegram-bot is pointed at it (KNEECOACH_TELEGRAM_API_URL); it answers in the Bot API's
JSON envelope, records every call, keeps the messages the bot sent (so edits and keyboards can
be checked), serves injected user messages and button presses through long-polling getUpdates
(or posts them to a registered webhook), and fails as told: 429 with retry_after, 500, 403
"bot was blocked by the user", an answer that comes slowly, or a malformed answer (a 200 whose
result is not what the method returns). Lengths are counted as Telegram counts them, in UTF-16
code units."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web
from api_limits import Limits

from fake_api import FakeApi

TOKEN = "123456:TEST-token"
BOT_ID = 123456
USERNAME = "kneecoach_test_bot"
SENDS = ("sendMessage", "sendPhoto", "sendDocument", "sendAnimation", "sendVideo")


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 200
    at: float = field(default_factory=time.monotonic)  # arrival, for bench/ latencies


@dataclass
class Fault:
    """Applied to the next calls that match, after letting `after` of them through: `status`
    (429, 500, 403), `delay` seconds, or a `malformed` answer (nothing is delivered)."""

    methods: tuple[str, ...]
    times: int
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    chat: str | None = None
    after: int = 0
    malformed: bool = False


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Sent:
    """A message the bot sent, as it stands now (edits applied)."""

    chat_id: str
    message_id: int
    text: str
    buttons: list[list[dict[str, str]]]
    kind: str = "text"  # text, photo, document, animation, video
    content: bytes = b""  # empty when sent by file_id
    filename: str = ""
    file_id: str = ""  # the file's id: given by the server on upload, or sent by the bot

    def tokens(self) -> dict[str, str]:
        """Button label -> callback data."""
        return {b["text"]: b["callback_data"] for row in self.buttons for b in row}


class BotApiServer(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, int], Sent] = {}
        self.sent: list[Sent] = []  # in the order they arrived
        self.updates: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.blocked: set[str] = set()
        self.webhook: dict[str, Any] = {}
        self.commands: list[dict[str, str]] = []
        self.languages: dict[int, str] = {}  # user id -> their language_code, if any
        self.menus: dict[str, list[dict[str, str]]] = {}  # language_code ("": default) -> menu
        self.answered: list[str] = []  # callback query ids
        self.handed_out: dict[int, float] = {}  # update id -> when getUpdates first returned it
        self.succeeded: Counter[str] = Counter()  # method -> calls answered ok
        self.random_fault: Callable[[str], Fault | None] = lambda _method: None
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self.files: dict[str, bytes] = {}  # file_id -> content, for files uploaded to us
        self._file_ids = itertools.count(1)
        self.limits: Limits | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/bot{token}/{method}", self._handle)]

    # --- what the tests do ---------------------------------------------------------------
    def fail(self, *methods: str, times: int = 1, status: int | None = None,
             retry_after: int | None = None, delay: float = 0.0, chat: str | None = None,
             after: int = 0, malformed: bool = False) -> None:
        self.faults.append(Fault(methods or SENDS, times, status, retry_after, delay, chat,
                                 after, malformed))

    def limit(self, overall: int = 30, per_chat: float = 1.0) -> Limits:
        """Enforce Telegram's send limits from now on: a send beyond them is answered 429
        retry_after 1 and counted in the returned `Limits.refused`."""
        self.limits = Limits(overall, per_chat)
        return self.limits

    async def _push(self, update: dict[str, Any]) -> dict[str, Any]:
        if self.webhook.get("url"):
            await self.post_webhook(update)
        else:
            async with self._changed:
                self.updates.append(update)
                self._changed.notify_all()
        return update

    async def post_webhook(self, update: dict[str, Any], secret: str | None = "__registered__"
                           ) -> int:
        """POST an update to the registered webhook, as Telegram does; the HTTP status."""
        headers = {"Content-Type": "application/json"}
        if secret == "__registered__":
            secret = self.webhook.get("secret_token")
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with ClientSession() as client, client.post(
                self.webhook["url"], data=json.dumps(update), headers=headers) as response:
            return response.status

    def user(self, user_id: int, name: str = "Ann") -> dict[str, Any]:
        language = self.languages.get(user_id)
        return {"id": user_id, "is_bot": False, "first_name": name,
                **({"language_code": language} if language else {})}

    @staticmethod
    def chat(chat_id: int, kind: str = "private") -> dict[str, Any]:
        return {"id": chat_id, "type": kind, **({"title": "Knee group"} if kind != "private"
                                                else {"first_name": "Ann"})}

    def message_update(self, user_id: int, text: str, *, chat_id: int | None = None,
                       chat_type: str = "private", update_id: int | None = None,
                       **extra: Any) -> dict[str, Any]:
        message = {"message_id": next(self._message_ids), "date": int(time.time()),
                   "chat": self.chat(chat_id if chat_id is not None else user_id, chat_type),
                   "from": self.user(user_id), **extra}
        if text is not None:
            message["text"] = text
        return {"update_id": update_id or next(self._update_ids), "message": message}

    async def send_text(self, user_id: int, text: str, **kwargs: Any) -> dict[str, Any]:
        return await self._push(self.message_update(user_id, text, **kwargs))

    def press_update(self, user_id: int, message: Sent, data: str) -> dict[str, Any]:
        return {"update_id": next(self._update_ids), "callback_query": {
            "id": str(next(self._query_ids)), "from": self.user(user_id),
            "chat_instance": "ci", "data": data,
            "message": {"message_id": message.message_id, "date": int(time.time()),
                        "chat": self.chat(int(message.chat_id)), "text": message.text}}}

    async def press(self, user_id: int, message: Sent, label: str) -> dict[str, Any]:
        """Press the button with this label on a message the bot sent."""
        return await self._push(self.press_update(user_id, message, message.tokens()[label]))

    async def press_data(self, user_id: int, message: Sent, data: str) -> dict[str, Any]:
        return await self._push(self.press_update(user_id, message, data))

    async def added_to_group(self, user_id: int, group_id: int) -> dict[str, Any]:
        bot = {"id": BOT_ID, "is_bot": True, "first_name": "kneecoach", "username": USERNAME}
        return await self._push({"update_id": next(self._update_ids), "my_chat_member": {
            "chat": self.chat(group_id, "group"), "from": self.user(user_id),
            "date": int(time.time()),
            "old_chat_member": {"status": "left", "user": bot},
            "new_chat_member": {"status": "member", "user": bot}}})

    def to(self, chat_id: int | str) -> list[Sent]:
        return [m for m in self.sent if m.chat_id == str(chat_id)]

    def last(self, chat_id: int | str) -> Sent:
        return self.to(chat_id)[-1]

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.status == 200]

    # --- the API ---------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != TOKEN:
            return _error(401, "Unauthorized")
        params, files = await _read(request)
        call = Call(method, params, files)
        self.calls.append(call)
        async with self._changed:  # a test may wait for a call to arrive (slow ones too)
            self._changed.notify_all()
        fault = self._fault(method, str(params.get("chat_id", "")))
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.malformed:
            return web.json_response({"ok": True, "result": {"unexpected": "shape"}})
        if fault is not None and fault.status is not None:
            call.status = fault.status
            async with self._changed:
                self._changed.notify_all()
            if fault.status == 429:
                return _error(429, f"Too Many Requests: retry after {fault.retry_after}",
                              {"retry_after": fault.retry_after})
            if fault.status == 403:
                return _error(403, "Forbidden: bot was blocked by the user")
            return _error(fault.status, "Internal Server Error")
        if (self.limits is not None and method in SENDS
                and not self.limits.admit(str(params.get("chat_id")), call.at)):
            call.status = 429
            return _error(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        if method in SENDS and str(params.get("chat_id")) in self.blocked:
            call.status = 403
            return _error(403, "Forbidden: bot was blocked by the user")
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            call.status = 404
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(params, files)
        except ApiError as exc:
            call.status = 400
            return _error(400, str(exc))
        self.succeeded[method] += 1
        async with self._changed:
            self._changed.notify_all()
        return web.json_response({"ok": True, "result": result})

    def _fault(self, method: str, chat: str) -> Fault | None:
        for fault in self.faults:
            if method in fault.methods and fault.times > 0 and fault.chat in (None, chat):
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.times -= 1
                return fault
        return self.random_fault(method)

    async def _api_getMe(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return {"id": BOT_ID, "is_bot": True, "first_name": "kneecoach", "username": USERNAME,
                "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}

    async def _api_getUpdates(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if self.webhook.get("url"):
            raise ApiError("Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        async with self._changed:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            if not self.updates and timeout:  # long polling: answer when one comes
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.updates),
                                           timeout)
            batch = self.updates[:int(params.get("limit") or 100)]
            now = time.monotonic()
            for update in batch:
                self.handed_out.setdefault(update["update_id"], now)
            return batch

    def _store(self, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
        chat = str(params["chat_id"])
        markup = params.get("reply_markup") or {}
        sent = Sent(chat_id=chat, message_id=next(self._message_ids),
                    text=fields.pop("text", ""), buttons=markup.get("inline_keyboard", []),
                    **fields)
        self.messages[(chat, sent.message_id)] = sent
        self.sent.append(sent)
        return self._as_message(sent)

    @staticmethod
    def _as_message(sent: Sent) -> dict[str, Any]:
        message: dict[str, Any] = {"message_id": sent.message_id, "date": int(time.time()),
                                   "chat": {"id": int(sent.chat_id), "type": "private"}}
        if sent.kind == "text":
            message["text"] = sent.text
        elif sent.kind in ("photo", "animation", "video"):
            file = {"file_id": sent.file_id, "file_unique_id": sent.file_id, "width": 480,
                    "height": 480}
            if sent.kind == "photo":
                message["photo"] = [file]
            else:
                message[sent.kind] = {**file, "duration": 5}
            if sent.text:
                message["caption"] = sent.text
        if sent.buttons:
            message["reply_markup"] = {"inline_keyboard": sent.buttons}
        return message

    async def _api_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        text = str(params.get("text", ""))
        if not text.strip():
            raise ApiError("Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            raise ApiError("Bad Request: message is too long")
        for row in (params.get("reply_markup") or {}).get("inline_keyboard", []):
            for button in row:
                if len(button.get("callback_data", "").encode()) > 64:
                    raise ApiError("Bad Request: BUTTON_DATA_INVALID")
        return self._store(params, text=text)

    async def _media(self, kind: str, params: dict[str, Any], files: dict[str, bytes]
                     ) -> Any:
        """A photo, animation or video: uploaded (it gets a new file_id) or by a file_id we
        gave before; the caption and keyboard as with a text."""
        content = files.get(kind)
        caption = str(params.get("caption") or "")
        if len(caption) > 1024:
            raise ApiError("Bad Request: message caption is too long")
        if content is not None:
            if not content:
                raise ApiError(f"Bad Request: there is no {kind} in the request")
            file_id = f"{kind}-{next(self._file_ids)}"
            self.files[file_id] = content
            return self._store(params, kind=kind, content=content, file_id=file_id,
                               text=caption,
                               filename=str(params.get(f"__filename__{kind}", "")))
        file_id = str(params.get(kind) or "")
        if file_id not in self.files:
            raise ApiError("Bad Request: wrong file identifier/HTTP URL specified")
        return self._store(params, kind=kind, file_id=file_id, text=caption)

    async def _api_sendPhoto(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return await self._media("photo", params, files)

    async def _api_sendAnimation(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return await self._media("animation", params, files)

    async def _api_sendVideo(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return await self._media("video", params, files)

    async def _api_sendDocument(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        content = files.get("document")
        if content is None:
            raise ApiError("Bad Request: there is no document in the request")
        return self._store(params, kind="document", content=content,
                           filename=str(params.get("__filename__document", "")))

    def _message(self, params: dict[str, Any]) -> Sent:
        found = self.messages.get((str(params.get("chat_id")), int(params.get("message_id", 0))))
        if found is None:
            raise ApiError("Bad Request: message to edit not found")
        return found

    async def _api_editMessageText(self, params: dict[str, Any], files: dict[str, bytes]
                                   ) -> Any:
        message = self._message(params)
        text = str(params.get("text", ""))
        markup = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        if text == message.text and markup == message.buttons:
            raise ApiError("Bad Request: message is not modified")
        message.text, message.buttons = text, markup
        return self._as_message(message)

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any],
                                          files: dict[str, bytes]) -> Any:
        message = self._message(params)
        markup = (params.get("reply_markup") or {}).get("inline_keyboard", [])
        if markup == message.buttons:
            raise ApiError("Bad Request: message is not modified")
        message.buttons = markup
        return self._as_message(message)

    async def _api_answerCallbackQuery(self, params: dict[str, Any], files: dict[str, bytes]
                                       ) -> Any:
        self.answered.append(str(params["callback_query_id"]))
        return True

    async def _api_setMyCommands(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        language = str(params.get("language_code") or "")
        self.menus[language] = params.get("commands") or []
        if not language:
            self.commands = self.menus[language]
        return True

    async def _api_setWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.webhook = {"url": params.get("url"), "secret_token": params.get("secret_token")}
        return True

    async def _api_deleteWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.webhook = {}
        return True


class ApiError(Exception):
    """A 400 Bad Request with Telegram's description."""


def _error(code: int, description: str, parameters: dict[str, Any] | None = None
           ) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


async def _read(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The parameters as the Bot API reads them: JSON body, form or multipart, where complex
    values (reply_markup, commands) arrive JSON-encoded."""
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        params = await request.json() if request.can_read_body else {}
    elif request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None:  # type: ignore[union-attr]
                name = part.name or ""  # type: ignore[union-attr]
                files[name] = bytes(await part.read())  # type: ignore[union-attr]
                params[f"__filename__{name}"] = part.filename  # type: ignore[union-attr]
            else:
                params[part.name or ""] = await part.text()  # type: ignore[union-attr]
    else:
        params = dict(await request.post())
    for key, value in list(params.items()):
        if isinstance(value, str) and value[:1] in "[{":
            params[key] = json.loads(value)
        elif isinstance(value, str) and value.startswith("attach://"):
            files[key] = files.get(value.removeprefix("attach://"), b"")
    return params, files


class Person:
    """Someone chatting with the bot in a private chat, through the server: types, presses
    buttons by label, and reads what came back.

    After each action it waits until the bot has finished with it: it sends a press of a game
    button (which the bot answers and ignores) and waits for that answer. The bot handles one
    chat's updates in order, so once the probe is answered every earlier update of the chat
    has been handled and its replies sent. No timer is involved."""

    def __init__(self, server: BotApiServer, user_id: int, chat_id: int | None = None,
                 chat_type: str = "private") -> None:
        self.server = server
        self.user_id = user_id
        self.chat_id = user_id if chat_id is None else chat_id
        self.chat_type = chat_type
        self.new: list[Sent] = []  # what the last action brought

    async def settle(self, within: float = 20.0) -> None:
        probe = str(next(self.server._query_ids))
        await self.server._push({"update_id": next(self.server._update_ids), "callback_query": {
            "id": probe, "from": self.server.user(self.user_id), "chat_instance": "ci",
            "game_short_name": "probe",
            "message": {"message_id": 0, "date": int(time.time()),
                        "chat": self.server.chat(self.chat_id, self.chat_type), "text": ""}}})
        await self.server.wait_for(lambda: probe in self.server.answered, within)

    async def _act(self, push: Callable[[], Any]) -> list[Sent]:
        before = len(self.server.to(self.chat_id))
        await push()
        await self.settle()
        self.new = self.server.to(self.chat_id)[before:]
        return self.new

    async def say(self, text: str, **kwargs: Any) -> list[Sent]:
        return await self._act(lambda: self.server.send_text(
            self.user_id, text, chat_id=self.chat_id, chat_type=self.chat_type, **kwargs))

    async def press(self, label: str, message: Sent | None = None) -> list[Sent]:
        message = message or self.question
        assert label in message.tokens(), f"no {label!r} in {list(message.tokens())}"
        return await self._act(lambda: self.server.press(self.user_id, message, label))

    @property
    def question(self) -> Sent:
        """The latest message with buttons."""
        return [m for m in self.server.to(self.chat_id) if m.buttons][-1]

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.new)

    async def answer_all(self, *answers: str) -> None:
        """Press the button with the answer's label on the latest question, else type it."""
        for answer in answers:
            last = self.server.to(self.chat_id)[-1:]
            if last and answer in last[0].tokens():
                await self.press(answer, last[0])
            else:
                await self.say(answer)
