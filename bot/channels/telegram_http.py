"""python-telegram-bot's HTTP layer over aiohttp instead of httpx.

Measured with bench/delivery.py: with hundreds of requests waiting for one of httpx's pooled
connections, httpcore rescans every waiting request against every connection each time one is
freed (and looks up the running async library on each), so a paid broadcast at 1,000/s spent
most of its time there and sent barely an eighth of that. aiohttp's connector hands freed
connections to its waiters in order, at constant cost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import JSONDict, ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


class AiohttpRequest(BaseRequest):
    """One aiohttp session and connection pool per instance (as one HTTPXRequest), created on
    first use inside the running event loop."""

    def __init__(self, connection_pool_size: int = 64, *, connect_timeout: float = 10.0,
                 read_timeout: float = 10.0, write_timeout: float = 20.0,
                 pool_timeout: float = 10.0) -> None:
        self.pool_size = connection_pool_size
        self._connect = connect_timeout
        self._read = read_timeout
        self._write = write_timeout
        self._pool = pool_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read

    async def initialize(self) -> None:
        self._open()

    async def shutdown(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
                headers={"User-Agent": self.USER_AGENT})
        return self._session

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                         ) -> tuple[int, bytes]:
        read = _given(read_timeout, self._read)
        connect = _given(connect_timeout, self._connect)
        pool = _given(pool_timeout, self._pool)
        # aiohttp has no write timeout of its own: sending the body counts in `total` (with
        # the read), so a stuck upload ends too.
        write = _given(write_timeout, self._write)
        timeout = aiohttp.ClientTimeout(
            total=None if read is None or write is None else read + write,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect, sock_read=read)
        try:
            data, headers = _body(request_data)
            async with self._open().request(method, url, data=data, headers=headers,
                                            timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{exc.__class__.__name__}: {exc}") from exc


class UpdatesRequest(AiohttpRequest):
    """getUpdates' own request (PTB sends nothing else through it). The channel confirms an
    update only once handled, so while some are in hand every poll hands them out again: up
    to a hundred a poll, one poll per handled update in a burst. Parsing those again into PTB
    objects took most of the process's time (bench/telegram_update_cost.py, profiled), so they
    are dropped here from the decoded answer, by update id, before PTB parses it."""

    def __init__(self, fetched: Callable[[], int], read_timeout: float) -> None:
        """`fetched`: the highest update id the channel has in hand or has handled."""
        super().__init__(4, read_timeout=read_timeout)
        self._fetched = fetched

    async def post(self, url: str, request_data: RequestData | None = None,
                   read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                   write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                   connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                   pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
                   ) -> JSONDict | list[JSONDict] | bool:
        result = await super().post(url, request_data, read_timeout, write_timeout,
                                    connect_timeout, pool_timeout)
        if not isinstance(result, list):
            return result
        seen = self._fetched()
        return [update for update in result if not (
            isinstance(update, dict) and isinstance(update.get("update_id"), int)
            and update["update_id"] <= seen)]


def _given(value: ODVInput[float], default: float) -> float | None:
    return default if isinstance(value, DefaultValue) else value


def _body(request_data: RequestData | None) -> tuple[Any, dict[str, str] | None]:
    """The parameters as one JSON body (the Bot API takes JSON; encoded once, by PTB), or as
    multipart when there are files to upload."""
    if request_data is None:
        return None, None
    files = request_data.multipart_data
    if not files:
        return request_data.json_payload, {"Content-Type": "application/json"}
    form = aiohttp.FormData()
    for name, value in request_data.json_parameters.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in files.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form, None
