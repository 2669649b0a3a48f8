"""Messages about a patient to their coach, worded in one place: the patient as a coach reads
them ("Pam (telegram:3101)"), then what happened. Storage only finds the coach and queues."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conversations.messages import Button
from storage.models import User
from storage.repository import Repository

POSSESSIVE = "'s"


def named(user: User) -> str:
    """How a coach reads a patient: "Pam (telegram:3101)"."""
    return f"{user.display_name} ({user.display_id})" if user.display_name else user.display_id


def coach_alert(patient: User, text: str, buttons: tuple[tuple[Button, ...], ...] = (), *,
                possessive: bool = False) -> dict[str, Any]:
    """An Outbound's fields but the recipient: `text` reads after the patient's name (after
    "Pam (telegram:3101)'s" when `possessive`)."""
    payload: dict[str, Any] = {
        "text": f"{named(patient)}{POSSESSIVE if possessive else ''} {text}"}
    if buttons:
        payload["buttons"] = [[button.model_dump(mode="json") for button in row]
                              for row in buttons]
    return payload


async def alert_coach(repo: Repository, patient: User, text: str, now: datetime, *,
                      buttons: tuple[tuple[Button, ...], ...] = (), possessive: bool = False,
                      dedupe_key: str | None = None) -> bool:
    """Queue the alert to the patient's coach; False if they have none, or this dedupe key
    is queued already."""
    return await repo.message_coach(patient, coach_alert(patient, text, buttons,
                                                         possessive=possessive),
                                    now, dedupe_key=dedupe_key)
