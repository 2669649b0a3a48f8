"""Messages about a patient to their coach, worded in one place and in the coach's language
(the reader's): the patient as a coach reads them ("Pam (telegram:3101)"), then what happened.
Storage only finds the coach and queues."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from conversations import i18n
from conversations.i18n import _
from conversations.messages import Button
from storage.models import User
from storage.repository import Repository

Buttons = tuple[tuple[Button, ...], ...]


def named(user: User) -> str:
    """How a coach reads a patient: "Pam (telegram:3101)"."""
    return f"{user.display_name} ({user.display_id})" if user.display_name else user.display_id


def coach_alert(patient: User, text: str, buttons: Buttons = (), *,
                possessive: bool = False) -> dict[str, Any]:
    """An Outbound's fields but the recipient: `text` reads after the patient's name (after
    "Pam (telegram:3101)'s" when `possessive`), in the current language."""
    line = (_("{patient}'s {text}", patient=named(patient), text=text) if possessive else
            _("{patient} {text}", patient=named(patient), text=text))
    payload: dict[str, Any] = {"text": line}
    if buttons:
        payload["buttons"] = [[button.model_dump(mode="json") for button in row]
                              for row in buttons]
    return payload


async def alert_coach(repo: Repository, patient: User, write: Callable[[], str], now: datetime,
                      *, buttons: Callable[[], Buttons] | None = None,
                      possessive: bool = False, dedupe_key: str | None = None,
                      default_language: str = i18n.SOURCE) -> bool:
    """Queue the alert to the patient's coach, `write` and `buttons` worded in the coach's
    language (`default_language` if none is stored); False if they have none, or this
    dedupe key is queued already."""
    coach = await repo.user_by_id(patient.coach_id) if patient.coach_id else None
    if coach is None:
        return False
    with i18n.speaking(coach.language or default_language):
        payload = coach_alert(patient, write(), buttons() if buttons else (),
                              possessive=possessive)
    return await repo.message_coach(patient, payload, now, dedupe_key=dedupe_key)
