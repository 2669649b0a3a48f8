"""What a flow step sees (the context) and is (a question plus what its answer does)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from conversations import i18n
from conversations.alerts import alert_coach
from conversations.demo import DemoCache
from conversations.localtime import local_date
from conversations.messages import Button, Inbound, Outbound
from conversations.program.data import Program
from conversations.questions import Question
from storage.models import User
from storage.repository import Repository

# A step's answer (and a command) returns where to go: "step" in the same flow, "flow:step",
# None (back to idle), or ERASED when the user's rows are gone and there is no state left to
# save. A command may also stay: REASK asks the current question again, STAY leaves it be.
ERASED = "!erased"
REASK = "!reask"
STAY = "!stay"


@dataclass
class Ctx:
    repo: Repository
    inbound: Inbound
    user: User
    now: datetime
    program: Program
    flow: str
    answers: dict[str, Any]
    replies: list[Outbound] = field(default_factory=list)
    admin: bool = False  # named in KNEECOACH_ADMINS by channel and user id
    # Per channel, how to link to the bot with an invite code: "https://t.me/bot?start={code}"
    links: dict[str, str] = field(default_factory=dict)
    # Where the exercises' demonstrations are drawn and kept (conversations/demo.py).
    demos: DemoCache = field(default_factory=DemoCache)
    # The language of a reader with none stored (KNEECOACH_DEFAULT_LANGUAGE).
    default_language: str = i18n.SOURCE

    def say(self, text: str, buttons: tuple[tuple[Button, ...], ...] = (), **extra: Any) -> None:
        self.replies.append(Outbound(channel=self.inbound.channel, chat_id=self.user.chat_id,
                                     text=text, buttons=buttons, **extra))

    @property
    def today(self) -> date:
        """The patient's local date."""
        return local_date(self.now, self.user.timezone or "UTC")

    async def alert_coach(self, write: Callable[[], str]) -> None:
        """Queue a message about the patient to their coach, if they have one; `write` gives
        it in the coach's language, to read after the patient's name and id:
        "Pam (telegram:3101) joined you ..."."""
        await alert_coach(self.repo, self.user, write, self.now,
                          default_language=self.default_language)


Ask = Callable[[Ctx], Question]
Answer = Callable[[Ctx, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Step:
    ask: Ask
    answer: Answer


Flow = dict[str, Step]
