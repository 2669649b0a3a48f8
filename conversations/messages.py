"""The neutral messages between channel adapters and the engine, and the button token format."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from conversations.numbers import whole

# A channel by its name (telegram, slack, console): the bot registers them, so a new one needs
# no change here; a name is its module's in bot/channels/.
CHANNEL_NAME = re.compile(r"^[a-z]{2,16}$")
Channel = Annotated[str, StringConstraints(pattern=CHANNEL_NAME.pattern)]

# Telegram's callback_data limit; Slack's button value limit (2000) is larger.
MAX_TOKEN_BYTES = 64
# Longer input is cut before it reaches a flow (one character over, so a flow can tell it was
# too long): no answer needs more, and nothing huge is stored.
MAX_TEXT_CHARS = 20_000
# What no database column can hold as text: NUL (PostgreSQL refuses it, SQLite keeps it) and
# lone surrogates (not UTF-8). Taken out where input arrives, so every store behaves alike.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` without NUL bytes, lone surrogates as U+FFFD."""
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


class Inbound(BaseModel):
    """One thing a user did: typed text, a command with arguments, or a button press."""

    model_config = ConfigDict(frozen=True)

    channel: Channel
    user_id: str = Field(min_length=1, max_length=64)
    chat_id: str = Field(min_length=1, max_length=64)
    display_name: str = Field("", max_length=256)
    text: str | None = None
    command: str | None = Field(None, max_length=64)
    args: tuple[str, ...] = ()
    # The arguments as typed, spacing and line breaks kept, for commands that take free text.
    arg_text: str = ""
    button: str | None = None
    # The channel's own id for this update, so a redelivered update is handled once.
    update_id: str | None = None
    # The message that carried the pressed button, so the adapter can retire its keyboard.
    message_id: str | None = None
    # The platform's language for this user (Telegram's language_code, Slack's locale), as
    # the platform spells it; the engine takes it at first contact.
    language: str | None = Field(None, max_length=35)

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        if isinstance(value, str):
            return storable(value)
        if isinstance(value, tuple | list):
            return tuple(storable(v) if isinstance(v, str) else v for v in value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [self.text is not None, self.command is not None, self.button is not None]
        if sum(kinds) != 1:
            raise ValueError("exactly one of text, command or button")
        return self

    @classmethod
    def parse_text(cls, channel: Channel, user_id: str, chat_id: str, raw: str, **extra: object
                   ) -> Inbound:
        """Turn what a user typed into a command (leading slash) or plain text."""
        raw = raw[:MAX_TEXT_CHARS + 1]
        stripped = raw.strip()
        if stripped.startswith("/") and len(stripped) > 1:
            head, *args = stripped[1:].split()
            # Telegram appends @botname in groups: /start@kneecoach_bot
            command = head.split("@", 1)[0].lower()[:64]
            return cls(channel=channel, user_id=user_id, chat_id=chat_id, command=command,
                       args=tuple(args), arg_text=stripped[1:].lstrip()[len(head):].lstrip(),
                       **extra)  # type: ignore[arg-type]
        return cls(channel=channel, user_id=user_id, chat_id=chat_id, text=raw,
                   **extra)  # type: ignore[arg-type]


class Button(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    token: str = Field(max_length=MAX_TOKEN_BYTES)


class Document(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"


class Media(BaseModel):
    """A picture or clip to show: an exercise's demonstration, or a clinic's own file. It is
    named by its path (a file on this host's disk, read when sent) and a key that changes when
    its content does, so a channel can re-send an upload by its id instead of the bytes."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["photo", "animation", "video"]
    path: str
    key: str = Field(min_length=1, max_length=64)


class Outbound(BaseModel):
    """One message to send. Text is plain; each channel formats it its own way.

    With `edit_message_id` it replaces that message (a pressed keyboard) instead; an edit with
    empty text only takes the buttons off and leaves the text as it was."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    channel: Channel
    chat_id: str
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    image: bytes | None = None
    document: Document | None = None
    # A picture or clip with the text as its caption (kept short: Telegram takes 1024).
    media: Media | None = None
    # Replace the message with this id (a pressed keyboard) instead of sending a new one.
    edit_message_id: str | None = None
    # The recipient's data has just been erased: a channel that keeps copies of what it sent
    # (the terminal's saved files) removes them.
    forget: bool = False


class ButtonToken(BaseModel):
    """What a button press means: the step it answers, a reference, and the chosen value.

    For a question in a flow the reference is the conversation's version, so a press on an old
    keyboard (stale or replayed) no longer matches. For a daily prompt it is the session id.
    """

    model_config = ConfigDict(frozen=True)

    step: str = Field(min_length=1, max_length=24, pattern=r"^[a-z0-9_]+$")
    ref: int = Field(ge=0, lt=10**12)
    value: str = Field(max_length=24, pattern=r"^[A-Za-z0-9_.+:-]*$")

    def encode(self) -> str:
        token = f"{self.step}|{self.ref}|{self.value}"
        assert len(token.encode()) <= MAX_TOKEN_BYTES
        return token

    @classmethod
    def decode(cls, token: str) -> ButtonToken | None:
        """None for anything that is not a token we made (forged, truncated, garbage)."""
        if len(token.encode()) > MAX_TOKEN_BYTES:
            return None
        parts = token.split("|")
        ref = whole(parts[1]) if len(parts) == 3 else None
        if ref is None:
            return None
        try:
            return cls(step=parts[0], ref=ref, value=parts[2])
        except ValidationError:
            return None
