"""The messages the scheduler sends on its own: the daily prompt and the next-morning check.
Their buttons are bound to the session (not to the conversation), so they stay valid while
the patient is in another flow and are refused once that session is answered."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime, timedelta

from conversations.flows import howto
from conversations.i18n import _
from conversations.localtime import local_datetime, zone
from conversations.messages import Button, ButtonToken, Channel, Outbound
from conversations.program.data import Program

SNOOZE = timedelta(hours=1)
CHECK_TIME = "09:00"  # local; earlier if the next day's prompt comes first


def _buttons(step: str, session_id: int, options: list[tuple[str, str]]
             ) -> tuple[tuple[Button, ...], ...]:
    return (tuple(Button(label=label, token=ButtonToken(step=step, ref=session_id,
                                                        value=value).encode())
                  for value, label in options),)


def instruction_line(instruction: str | None) -> str:
    """The coach's instruction as it stands under the day's exercises (CLINICAL.md 5b)."""
    if not instruction:
        return ""
    return "\n\n" + _("From your coach: {instruction}", instruction=instruction)


def prompt_message(channel: Channel, chat_id: str, session_id: int, level: int,
                   program: Program, off: Collection[str] = (),
                   instruction: str | None = None) -> Outbound:
    """The day's prompt, as the coach prescribed it: without the exercises switched `off`,
    with their `instruction`."""
    lines = "\n".join(f"{i}. {line}" for i, line in enumerate(
        program.session_lines(level, off=off), 1))
    return Outbound(
        channel=channel, chat_id=chat_id,
        text=_("Time for today's knee exercises (level {level}):\n{lines}\n\nStop any "
               "exercise that causes sharp pain. How did it go?", level=level,
               lines=lines + instruction_line(instruction)),
        # The report's row first, then a "Show me how" per exercise of the level.
        buttons=_buttons("prompt", session_id, [("done", _("Done")), ("partial", _("Partly")),
                                                ("skipped", _("Skipped")),
                                                ("snooze", _("In 1 hour"))])
        + howto.buttons(program, level, off=off))


def greeting(local: datetime) -> str:
    """A greeting for the patient's local time of day (the check may come with an evening
    prompt, or be opened with /today at any hour)."""
    if 5 <= local.hour < 12:
        return _("Good morning")
    return _("Good afternoon") if 12 <= local.hour < 18 else _("Good evening")


def check_question(local: datetime) -> str:
    return _("{greeting}. How does your knee feel today, since your last session, compared "
             "with your usual?", greeting=greeting(local))


def check_message(channel: Channel, chat_id: str, session_id: int, now: datetime,
                  tz_name: str) -> Outbound:
    """The next-morning check, greeting by the patient's local time `now`."""
    return Outbound(
        channel=channel, chat_id=chat_id, text=check_question(now.astimezone(zone(tz_name))),
        buttons=_buttons("check", session_id, [("0", _("Same or better")),
                                               ("1", _("A little worse (+1)")),
                                               ("2", _("Clearly worse (+2 or more)"))]))


def check_due(session_day: date, tz_name: str, next_prompt: datetime | None) -> datetime:
    """The next-morning check: 09:00 local the day after the session, or with that day's
    prompt when the prompt comes earlier."""
    morning = local_datetime(session_day + timedelta(days=1), CHECK_TIME, tz_name)
    if next_prompt is not None and next_prompt < morning and (
            next_prompt.astimezone(zone(tz_name)).date() == session_day + timedelta(days=1)):
        return next_prompt
    return morning
