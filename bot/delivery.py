"""How a message leaves: every channel adapter implements `Deliverer`, and reports each
failure as one of three kinds so that the reply path (here) and the outbox sender
(bot/sender.py) can decide alike whether to wait, retry or give up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from bot import metrics
from conversations.engine import Engine
from conversations.messages import Inbound, Outbound

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message failed at one of its parts; `sent` counts the parts of the whole message
    that went out before (they are never sent again: a retry resumes at part `sent`)."""

    def __init__(self, reason: str, sent: int = 0) -> None:
        super().__init__(reason)
        self.sent = sent


class RetryLater(DeliveryError):
    """A 429, a 5xx or a network error: the same message may go through later."""

    def __init__(self, reason: str, retry_after: float | None = None, sent: int = 0) -> None:
        super().__init__(reason, sent)
        self.retry_after = retry_after  # what the platform asked for, if it said


class Blocked(DeliveryError):
    """The user blocked the bot or left: do not retry until they write again."""


class Undeliverable(DeliveryError):
    """A request the platform will never accept (bad chat id, message rejected)."""


class Unexpected(DeliveryError):
    """A failure of no known kind (a malformed API answer, an adapter bug). The part may or
    may not have gone out: it is left to the outbox's backoff, not retried in place."""


class Deliverer(Protocol):
    channel: str

    async def deliver(self, outbound: Outbound, start: int = 0,
                      progress: Progress | None = None) -> str | None:
        """Send (or edit) one message, its parts from `start` on, awaiting `progress(n)`
        once n parts are out and more follow; return the platform's message id when there
        is one. Raises a DeliveryError kind."""
        ...


async def close_all(deliverers: Iterable[Deliverer]) -> None:
    """Deliverers that hold a connection pool of their own (Telegram's) release it."""
    for deliverer in deliverers:
        close = getattr(deliverer, "close", None)
        if close is not None:
            await close()


Part = Callable[[], Awaitable[str | None]]
Progress = Callable[[int], Awaitable[None]]


async def send_parts(parts: Sequence[Part], start: int, progress: Progress | None = None
                     ) -> str | None:
    """Send a message's parts in order from `start`; a failure says how many went out.
    Each part maps its platform's errors to the kinds above; any other error is Unexpected."""
    sent = None
    for n in range(start, len(parts)):
        try:
            sent = await parts[n]()
        except DeliveryError as exc:
            exc.sent = n
            raise
        except Exception as exc:
            raise Unexpected(repr(exc), n) from exc
        if progress is not None and n + 1 < len(parts):
            await progress(n + 1)
    return sent


# --- rendering help for the channels --------------------------------------------------------
def utf16_len(text: str) -> int:
    """The length as Telegram and Slack count it: UTF-16 code units (an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, limit: int) -> str:
    """The longest start of `text` within `limit` UTF-16 units (never half a character)."""
    n = min(len(text), limit)
    while (over := utf16_len(text[:n]) - limit) > 0:
        n -= max(1, over // 2)
    return text[:n]


def split_text(text: str, limit: int) -> list[str]:
    """Cut a long text into parts of at most `limit` UTF-16 units, at a line end, else a
    space, else anywhere; the whitespace at a cut is dropped, and no part is empty or only
    whitespace (platforms refuse those). Every channel splits here."""
    parts = []
    while text.strip():
        if utf16_len(text) <= limit:
            parts.append(text)
            break
        head = fit(text, limit)
        cut = head.rfind("\n")
        if cut <= 0:
            cut = max(head.rfind(" "), head.rfind("\t"))
        if cut <= 0:
            cut = len(head)
        if part := text[:cut].rstrip():
            parts.append(part)
        text = text[cut:].lstrip()
    return parts


# --- replies to what a user just sent ----------------------------------------------------
REPLY_TRIES = 4
REPLY_WAIT_CAP = 10.0  # seconds; a longer wait is the outbox's job, not the chat handler's


async def send_replies(deliverer: Deliverer, engine: Engine, inbound: Inbound,
                       replies: list[Outbound], behind: bool) -> None:
    """Send a handler's replies in order, retrying briefly in place from the part that
    failed. What still cannot go is queued in the outbox (the rest with it, to keep the
    order), so no reply is lost; nor does a reply overtake one the outbox holds for the chat
    (`behind`, as `Engine.handle_behind` read it). A chat that blocked the bot is marked
    unreachable."""
    if not replies:
        return
    if behind:
        log.info("replies to update %s queued behind the chat's outbox", inbound.update_id)
        await engine.defer(inbound, replies, tried=False)
        return
    for n, reply in enumerate(replies):
        try:
            await _send_now(deliverer, reply)
        except Blocked:
            await engine.mark_unreachable(inbound.channel, inbound.chat_id)
            return
        except Undeliverable as exc:  # say, an edit of a message that is gone: nothing to retry
            log.warning("reply to update %s undeliverable: %s", inbound.update_id, exc)
        except DeliveryError as exc:  # RetryLater, Unexpected
            log.info("reply to update %s queued in the outbox at part %s: %s",
                     inbound.update_id, exc.sent, exc)
            await engine.defer(inbound, replies[n:], exc.sent)
            return


async def _send_now(deliverer: Deliverer, reply: Outbound) -> None:
    sent = 0
    for attempt in range(REPLY_TRIES):
        try:
            await deliverer.deliver(reply, sent)
            return
        except RetryLater as exc:
            sent = exc.sent
            if exc.retry_after is not None:
                metrics.RATE_LIMITED.labels(deliverer.channel).inc()
            wait = exc.retry_after if exc.retry_after is not None else 0.5 * 2 ** attempt
            if attempt == REPLY_TRIES - 1 or wait > REPLY_WAIT_CAP:
                raise
            await asyncio.sleep(wait)
