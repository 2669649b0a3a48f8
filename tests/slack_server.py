"""A small Slack Web API server for the tests, on 127.0.0.1 over real HTTP (aiohttp), and a
`SlackPerson` who sends signed Events API, interactivity and slash-command requests to the
app's own HTTP endpoint, as Slack does.

The server answers auth.test, chat.postMessage, chat.update, views.publish,
conversations.open and the file upload (files.getUploadURLExternal, the upload URL,
files.completeUploadExternal); it records every call and can answer 429 with Retry-After.

It also speaks Socket Mode on the same port: apps.connections.open (with the app-level token)
gives a ws:// URL; on that WebSocket the server says hello, pushes events_api, interactive and
slash_commands envelopes, records the app's acknowledgements by envelope_id, and can send
`disconnect` (the app reconnects). As Slack does, an envelope not acknowledged when its
connection closes is delivered again on the next one, with retry_attempt raised.
`SocketPerson` is a `SlackPerson` whose requests go through envelopes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import ClientSession, WSMsgType, web

from fake_api import FakeApi

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-1-A1-test-app-token"
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
        self.locales: dict[str, str] = {}  # user -> their Slack locale ("de-DE"), users.info
        self._ts = itertools.count(1)
        self._uploads: dict[str, tuple[str, bytes]] = {}
        # Socket Mode
        self.sockets: list[web.WebSocketResponse] = []  # every connection made, in order
        self.acks: dict[str, dict[str, Any]] = {}  # envelope_id -> the acknowledgement
        self.unacked: dict[str, dict[str, Any]] = {}  # envelope_id -> the envelope
        self._envelopes = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/{method}", self._handle),
                web.get("/api/{method}", self._handle),  # slack_sdk's GET methods: users.info
                web.post("/upload/{file_id}", self._upload),
                web.get("/link", self._socket)]

    # --- Socket Mode ---------------------------------------------------------------------
    @property
    def socket(self) -> web.WebSocketResponse | None:
        """The connection in use: the newest one still open."""
        return next((ws for ws in reversed(self.sockets) if not ws.closed), None)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A1"},
                            "debug_info": {"host": "test", "approximate_connection_time": 3600}})
        old = [other for other in self.sockets if not other.closed]
        self.sockets.append(ws)
        for other in old:  # as Slack does once the app has a fresh connection
            await other.close()
        for envelope in list(self.unacked.values()):  # undelivered or unacknowledged
            envelope["retry_attempt"] += 1
            envelope["retry_reason"] = "timeout"
            await ws.send_json(envelope)
        await self.changed()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                ack = json.loads(message.data)
                self.unacked.pop(ack.get("envelope_id", ""), None)
                self.acks[str(ack.get("envelope_id"))] = ack
                await self.changed()
        await self.changed()
        return ws

    async def send_envelope(self, kind: str, payload: dict[str, Any], *,
                            envelope_id: str | None = None) -> str:
        """Push one envelope (events_api, interactive, slash_commands) on the connection in
        use; it stays unacknowledged until the app answers with its envelope_id."""
        envelope_id = envelope_id or f"env-{next(self._envelopes)}"
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": kind != "events_api",
                    "retry_attempt": 0, "retry_reason": ""}
        self.unacked[envelope_id] = envelope
        socket = self.socket
        if socket is not None:
            await socket.send_json(envelope)
        return envelope_id

    async def disconnect(self) -> None:
        """Ask the app to move to a new connection (Slack does every few hours)."""
        socket = self.socket
        assert socket is not None
        await socket.send_json({"type": "disconnect", "reason": "refresh_requested",
                                "debug_info": {"host": "test"}})

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
        if method == "apps.connections.open":  # the one call made with the app-level token
            if request.headers.get("Authorization") != f"Bearer {APP_TOKEN}":
                return self._record(method, params, 200, {"ok": False, "error": "invalid_auth"})
            return self._record(method, params, 200, {
                "ok": True, "url": self.root.replace("http://", "ws://") + "/link"})
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

    def _api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user"))
        found: dict[str, Any] = {"id": user}
        if params.get("include_locale") in (True, "true", "1") and user in self.locales:
            found["locale"] = self.locales[user]
        return {"ok": True, "user": found}

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


def sign(body: str, timestamp: int | str, secret: str = SIGNING_SECRET) -> str:
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

    async def post(self, body: str, content_type: str, *, timestamp: int | str | None = None,
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
        return await self._act(self.press_body(label, message),
                               "application/x-www-form-urlencoded")

    def press_body(self, label: str, message: Posted | None = None) -> str:
        """The interactivity request of pressing `label` (form-encoded)."""
        message = message or self.question
        button = message.buttons()[label]
        payload = {"type": "block_actions", "user": {"id": self.user}, "team": {"id": TEAM},
                   "api_app_id": "A1", "trigger_id": f"t{time.time()}",
                   "channel": {"id": self.channel},
                   "container": {"type": "message", "message_ts": message.ts},
                   "message": {"ts": message.ts, "text": message.text,
                               "blocks": message.blocks},
                   "actions": [{**button, "block_id": "b", "action_ts": f"{time.time():.6f}"}]}
        return urlencode({"payload": json.dumps(payload)})

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


class SocketPerson(SlackPerson):
    """A Slack user reached through Socket Mode: each request an envelope on the WebSocket,
    answered once the app acknowledges it."""

    def __init__(self, server: SlackServer, user: str) -> None:
        super().__init__(server, "", user)

    async def post(self, body: str, content_type: str, *, timestamp: int | None = None,
                   secret: str = SIGNING_SECRET, retry: int | None = None) -> int:
        if content_type == "application/json":
            kind, payload = "events_api", json.loads(body)
        else:
            form = dict(parse_qsl(body))
            kind, payload = (("interactive", json.loads(form["payload"])) if "payload" in form
                             else ("slash_commands", form))
        envelope_id = await self.server.send_envelope(kind, payload)
        await self.server.wait_for(lambda: envelope_id in self.server.acks, 20)
        return 200
