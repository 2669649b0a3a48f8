"""A small Slack Web API server for the tests, on 127.0.0.1 over real HTTP (aiohttp), and a
`SlackPerson` who sends signed Events API, interactivity and slash-command requests to the
app's own HTTP endpoint, as Slack does.

The server answers auth.test, chat.postMessage, chat.update, views.publish,
conversations.open and the file upload (files.getUploadURLExternal, the upload URL,
files.completeUploadExternal); it records every call and can answer 429 with Retry-After."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientSession, web

from fake_api import FakeApi

BOT_TOKEN = "xoxb-test-token"
SIGNING_SECRET = "test-signing-secret"
TEAM = "T0TEST"


@dataclass
class Posted:
    """A message the bot posted, as it stands now (updates applied)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]

    def buttons(self) -> dict[str, dict[str, Any]]:
        """Button label -> the button element."""
        return {e["text"]["text"]: e for b in self.blocks if b.get("type") == "actions"
                for e in b["elements"]}

    def shown(self) -> str:
        """The text the user reads: the sections, else the fallback text."""
        sections = [b["text"]["text"] for b in self.blocks if b.get("type") == "section"]
        return "\n".join(sections) if sections else self.text


class SlackServer(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any], int]] = []
        self.posted: list[Posted] = []
        self.homes: dict[str, list[dict[str, Any]]] = {}
        self.files: list[tuple[str, str, bytes]] = []  # channel, name, bytes
        self.rate_limited = 0  # the next this many chat.postMessage calls get a 429
        self._ts = itertools.count(1)
        self._uploads: dict[str, tuple[str, bytes]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/{method}", self._handle),
                web.post("/upload/{file_id}", self._upload)]

    def to(self, channel: str) -> list[Posted]:
        return [p for p in self.posted if p.channel == channel]

    def called(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params, status in self.calls if name == method and status == 200]

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)  # slack_sdk sends some as a query
        if request.content_type == "application/json":
            params |= await request.json()
        else:
            params |= dict(await request.post())
        for key in ("blocks", "files", "view"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        if request.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
            return self._record(method, params, 200, {"ok": False, "error": "invalid_auth"})
        if self.rate_limited and method == "chat.postMessage":
            self.rate_limited -= 1
            self.calls.append((method, params, 429))
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": "1"})
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return self._record(method, params, 404, {"ok": False, "error": "unknown_method"})
        return self._record(method, params, 200, handler(params))

    def _record(self, method: str, params: dict[str, Any], status: int,
                body: dict[str, Any]) -> web.Response:
        self.calls.append((method, params, status if body.get("ok") else 400))
        asyncio.get_running_loop().create_task(self.changed())
        return web.json_response(body, status=status)

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "user_id": "UBOT", "bot_id": "BBOT", "team_id": TEAM,
                "url": "https://test.slack.com/"}

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        blocks = params.get("blocks") or []
        if not params.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        sections = [b["text"]["text"] for b in blocks if b.get("type") == "section"]
        if len(blocks) > 50 or any(len(t.encode("utf-16-le")) // 2 > 3000 or not t.strip()
                                   for t in sections):
            return {"ok": False, "error": "invalid_blocks"}
        posted = Posted(str(params["channel"]), f"{next(self._ts)}.000100",
                        str(params.get("text", "")), blocks)
        self.posted.append(posted)
        return {"ok": True, "channel": posted.channel, "ts": posted.ts}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        for posted in self.posted:
            if posted.channel == params.get("channel") and posted.ts == params.get("ts"):
                posted.text = str(params.get("text", posted.text))
                posted.blocks = params.get("blocks", posted.blocks)
                return {"ok": True, "channel": posted.channel, "ts": posted.ts}
        return {"ok": False, "error": "message_not_found"}

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        self.homes.setdefault(str(params["user_id"]), []).append(params["view"])
        return {"ok": True, "view": {"id": "V1"}}

    def _api_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": {"id": f"D{params['users']}"}}

    def _api_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{len(self._uploads) + 1}"
        self._uploads[file_id] = (str(params.get("filename", "")), b"")
        return {"ok": True, "upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        name, _ = self._uploads[file_id]
        self._uploads[file_id] = (name, await request.read())
        return web.Response(text="OK - 1")

    def _api_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        for item in params.get("files") or []:
            name, content = self._uploads[item["id"]]
            self.files.append((str(params.get("channel_id", "")), name, content))
        return {"ok": True, "files": [{"id": f["id"]} for f in params.get("files") or []]}


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SlackPerson:
    """Someone in a direct message with the app. Each action is a signed request to the
    app's endpoint; `settle` then opens the App Home, which the app handles after everything
    the user sent before (one user's requests run in order), and waits for it to be
    published: no timer is involved."""

    _events = itertools.count(1)

    def __init__(self, server: SlackServer, url: str, user: str) -> None:
        self.server = server
        self.url = url
        self.user = user
        self.channel = f"D{user}"
        self.new: list[Posted] = []

    async def post(self, body: str, content_type: str, *, timestamp: int | None = None,
                   secret: str = SIGNING_SECRET, retry: int | None = None) -> int:
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(stamp),
                   "X-Slack-Signature": sign(body, stamp, secret)}
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "timeout"}
        async with ClientSession() as client, client.post(self.url, data=body.encode(),
                                                          headers=headers) as response:
            return response.status

    def event_body(self, event: dict[str, Any], event_id: str | None = None) -> str:
        return json.dumps({"token": "x", "team_id": TEAM, "api_app_id": "A1",
                           "type": "event_callback", "event": event,
                           "event_id": event_id or f"Ev{next(self._events)}",
                           "event_time": int(time.time())})

    def message_body(self, text: str, event_id: str | None = None) -> str:
        return self.event_body({"type": "message", "channel_type": "im", "user": self.user,
                                "channel": self.channel, "text": text,
                                "ts": f"{time.time():.6f}"}, event_id)

    async def settle(self) -> None:
        before = len(self.server.homes.get(self.user, []))
        status = await self.post(self.event_body({"type": "app_home_opened", "user": self.user,
                                                  "channel": self.channel, "tab": "home"}),
                                 "application/json")
        assert status == 200
        await self.server.wait_for(lambda: len(self.server.homes.get(self.user, [])) > before,
                                   20)

    async def _act(self, body: str, content_type: str) -> list[Posted]:
        before = len(self.server.to(self.channel))
        assert await self.post(body, content_type) == 200
        await self.settle()
        self.new = self.server.to(self.channel)[before:]
        return self.new

    async def say(self, text: str) -> list[Posted]:
        return await self._act(self.message_body(text), "application/json")

    async def press(self, label: str, message: Posted | None = None) -> list[Posted]:
        message = message or self.question
        button = message.buttons()[label]
        payload = {"type": "block_actions", "user": {"id": self.user}, "team": {"id": TEAM},
                   "api_app_id": "A1", "trigger_id": f"t{time.time()}",
                   "channel": {"id": self.channel},
                   "container": {"type": "message", "message_ts": message.ts},
                   "message": {"ts": message.ts, "text": message.text,
                               "blocks": message.blocks},
                   "actions": [{**button, "block_id": "b", "action_ts": f"{time.time():.6f}"}]}
        return await self._act(urlencode({"payload": json.dumps(payload)}),
                               "application/x-www-form-urlencoded")

    async def command(self, text: str) -> list[Posted]:
        body = urlencode({"command": "/kneecoach", "text": text, "user_id": self.user,
                          "channel_id": "C0GENERAL", "team_id": TEAM,
                          "trigger_id": f"t{time.time()}", "response_url": "http://x/"})
        return await self._act(body, "application/x-www-form-urlencoded")

    @property
    def question(self) -> Posted:
        return [p for p in self.server.to(self.channel) if p.buttons()][-1]

    @property
    def text(self) -> str:
        return "\n".join(p.shown() for p in self.new)

    async def answer_all(self, *answers: str) -> None:
        for answer in answers:
            last = self.server.to(self.channel)[-1:]
            if last and answer in last[0].buttons():
                await self.press(answer, last[0])
            else:
                await self.say(answer)
