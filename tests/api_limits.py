"""A platform's send limits as Telegram enforces them, for the test API servers: at most
`overall` sends accepted in any one-second window, and one per `per_chat` seconds to a chat;
a send beyond them is refused (the server answers 429)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Limits:
    overall: int = 30
    per_chat: float = 1.0
    refused: int = 0  # sends answered 429 for going over
    _window: deque[float] = field(default_factory=deque)  # accepted in the last second
    _last_in_chat: dict[str, float] = field(default_factory=dict)

    def admit(self, chat: str, now: float) -> bool:
        """Whether a send arriving at `now` (monotonic seconds) is within the limits."""
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if (len(self._window) >= self.overall
                or now - self._last_in_chat.get(chat, -1e9) < self.per_chat):
            self.refused += 1
            return False
        self._window.append(now)
        self._last_in_chat[chat] = now
        return True
