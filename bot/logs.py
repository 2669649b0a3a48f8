"""Logging set-up: quiet by default, JSON on request, never a token, secret or patient's text.

Our own loggers (bot, conversations, storage, kneecoach) log at KNEECOACH_LOG_LEVEL; every
library stays at WARNING whatever that level is, because at INFO and DEBUG they log what must
not be logged: httpx every request URL (Telegram's carry the bot token), APScheduler two lines
per tick, python-telegram-bot and slack-bolt whole updates (a patient's typed text), SQLAlchemy
statement parameters. As a second guard every line is passed through `redact`."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

OURS = ("bot", "conversations", "storage", "kneecoach")
LIBRARIES = ("httpx", "httpcore", "apscheduler", "telegram", "slack_bolt", "slack_sdk",
             "sqlalchemy", "aiohttp", "asyncio")
# Token shapes redacted even when the value is not known here (another bot's token, say).
PATTERNS = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+")
REDACTED = "[redacted]"

# The update being handled, for the JSON lines: set by the channel adapters.
update_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "kneecoach_update", default=None)


@contextmanager
def handling(channel: str, user_id: str, update_id: str | None) -> Iterator[None]:
    """Lines logged while an update is handled carry its ids (not its text)."""
    token = update_context.set({"channel": channel, "user_id": user_id,
                                "update_id": update_id or ""})
    try:
        yield
    finally:
        update_context.reset(token)


class Redactor:
    """Replaces every known secret and every token-shaped string in a formatted line."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            line = line.replace(secret, REDACTED)
        return PATTERNS.sub(REDACTED, line)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the update's ids if any."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update(update_context.get() or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(line, ensure_ascii=False))


def setup(level: str, fmt: str, secrets: Iterable[str], file: Path | None = None) -> None:
    """Configure the root logger once for the process. `file` set: lines go there (created
    0600) instead of stderr, as the terminal channel needs: its screen is the patient's chat."""
    redact = Redactor(secrets)
    if file is not None:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(file, 0o600)  # an older file made with looser rights
        handler: logging.Handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # every library
    for name in LIBRARIES:  # and these even if they set a level of their own
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in OURS:
        logging.getLogger(name).setLevel(level)
