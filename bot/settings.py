"""Configuration from environment variables (or a .env file), each with a safe default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conversations.numbers import whole
from storage.crypto import parse_keys

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KNEECOACH_", env_file=".env", extra="ignore", validate_default=True
    )

    database_url: str = "sqlite+aiosqlite:///kneecoach.db"
    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    listen: str = "0.0.0.0:8080"
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    # Kept as the raw string so a .env line `KNEECOACH_ADMINS=telegram:1` is not parsed as JSON.
    admins: str = ""
    tick_seconds: float = Field(30, gt=0, le=3600)
    grace_minutes: int = Field(180, ge=0, le=24 * 60)
    send_rate: float = Field(30, gt=0, le=1000)
    program_file: Path | None = None
    # Where the exercises' demonstration GIFs are kept (drawn once per program version).
    demo_dir: Path | None = None
    log_level: str = "INFO"
    # A new user's language when their platform names none we speak.
    default_language: Literal["en", "es", "de"] = "en"
    log_format: Literal["text", "json"] = "text"
    # How long start-up retries a platform that does not answer (5xx, timeouts) before exit 1.
    startup_seconds: float = Field(60, ge=0, le=3600)
    # Fernet keys, newest first: health data is encrypted at rest (storage/crypto.py).
    encryption_keys: SecretStr | None = None
    retention_days: int = Field(90, ge=1, le=36500)  # update ids, sent messages
    audit_retention_days: int = Field(365, ge=1, le=36500)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///file.db or postgresql+asyncpg://host/db")
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or whole(port, 1, 65535, max_digits=5) is None:
            raise ValueError("expected host:port, for example 0.0.0.0:8080")
        return value

    @field_validator("admins")
    @classmethod
    def _admin_ids(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            channel, sep, user_id = item.partition(":")
            if not sep or channel not in ("telegram", "slack", "console") or not user_id:
                raise ValueError(f"{item!r} is not channel:user_id (telegram:123, slack:U0ABC)")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_keys(value.get_secret_value())
        return value

    @property
    def keys(self) -> list[str]:
        """The encryption keys, newest first (empty: health data stored in plain text)."""
        return parse_keys(self.encryption_keys.get_secret_value()) if self.encryption_keys else []

    @property
    def admin_ids(self) -> frozenset[tuple[str, str]]:
        """(channel, channel user id) pairs: role checks go by id, never by display name."""
        pairs = (item.strip().partition(":") for item in self.admins.split(",") if item.strip())
        return frozenset((channel, user_id) for channel, _, user_id in pairs)

    @property
    def secrets(self) -> list[str]:
        """Every value that must never reach a log."""
        return [s.get_secret_value() for s in (
            self.telegram_token, self.telegram_webhook_secret, self.slack_bot_token,
            self.slack_signing_secret, self.slack_app_token) if s is not None] + [
            key.strip() for key in (self.encryption_keys.get_secret_value().split(",")
                                    if self.encryption_keys else ()) if key.strip()]

    def _needs(self) -> dict[str, list[tuple[str, bool]]]:
        """What each chat channel needs to run, its token first (set: the channel is on)."""
        return {
            "telegram": [("KNEECOACH_TELEGRAM_TOKEN", self.telegram_token is not None)],
            "slack": [("KNEECOACH_SLACK_BOT_TOKEN", self.slack_bot_token is not None),
                      ("KNEECOACH_SLACK_SIGNING_SECRET (or KNEECOACH_SLACK_APP_TOKEN)",
                       bool(self.slack_signing_secret or self.slack_app_token))]}

    @property
    def chats(self) -> list[str]:
        """The chat channels whose token is set: each runs by default, and the outbox sender
        sends to it (a worker too)."""
        return [name for name, needs in self._needs().items() if needs[0][1]]

    def missing(self, channel: str) -> str | None:
        """The first variable `channel` still needs to run; None when it can."""
        return next((name for name, ok in self._needs().get(channel, []) if not ok), None)

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host, int(port)


class SettingsError(Exception):
    """One clear line naming the variable; the CLI prints it and exits with code 2."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "KNEECOACH_" + str(first["loc"][0]).upper() if first["loc"] else "KNEECOACH_*"
        raise SettingsError(f"{name}: {first['msg']}") from None
