"""How a message leaves: every channel adapter implements `Deliverer`, and reports each
failure as one of three kinds so that the reply path and the outbox sender can decide alike
whether to wait, retry or give up."""

from __future__ import annotations

from typing import Protocol

from conversations.messages import Outbound


class RetryLater(Exception):
    """A 429, a 5xx or a network error: the same message may go through later."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after  # what the platform asked for, if it said


class Blocked(Exception):
    """The user blocked the bot or left: do not retry until they write again."""


class Undeliverable(Exception):
    """A request the platform will never accept (bad chat id, message rejected)."""


class Deliverer(Protocol):
    channel: str

    async def deliver(self, outbound: Outbound) -> str | None:
        """Send (or edit) one message; return the platform's message id when there is one.
        Raises RetryLater, Blocked or Undeliverable."""
        ...
