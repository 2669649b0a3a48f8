"""The patient's own account: settings, pause / resume / stop, export and erasure."""

from __future__ import annotations

import json
from datetime import timedelta

from conversations.flow import ERASED, Ctx, Flow, Step
from conversations.flows.onboarding import (
    ask_days,
    ask_time,
    ask_timezone,
    chosen_timezone,
    start_screen,
)
from conversations.messages import Document
from conversations.prompts import check_due
from conversations.questions import Question, choices, yes_no
from conversations.schedule import (
    SUMMARY_TIME,
    SUNDAY,
    describe_days,
    next_prompt_at,
    next_summary_at,
)

EXPORT_SCHEMA = "kneecoach-export/1"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


async def reschedule(ctx: Ctx) -> None:
    """Recompute the next prompt and weekly summary from the patient's current settings, at
    once; none while the program is not active."""
    program = await ctx.repo.program(ctx.user.id)
    user = ctx.user
    if program is None or not (user.timezone and user.reminder_time and user.reminder_days):
        return
    active = user.status == "active"
    program.next_prompt_at = (
        next_prompt_at(ctx.now, user.timezone, user.reminder_time, user.reminder_days)
        if active else None)
    program.next_summary_at = (next_summary_at(ctx.now, user.timezone, user.summary_day)
                               if active else None)
    if program.next_check_at is not None:  # 09:00 in the zone the patient is in now
        unchecked = await ctx.repo.unchecked_session(user.id, ctx.today + timedelta(days=1))
        program.next_check_at = (check_due(unchecked.day, user.timezone, program.next_prompt_at)
                                 if unchecked else None)
    program.updated_at = ctx.now


def schedule_line(ctx: Ctx) -> str:
    user = ctx.user
    summary_day = WEEKDAYS[(user.summary_day or SUNDAY) - 1]
    return (f"Reminders {describe_days(user.reminder_days or '')} at {user.reminder_time} "
            f"({user.timezone}); weekly summary on {summary_day}s at {SUMMARY_TIME}.")


def ask_setting(ctx: Ctx) -> Question:
    return choices(f"{schedule_line(ctx)} What would you like to change?",
                   [("time", "Time"), ("days", "Days"), ("timezone", "Timezone"),
                    ("summary", "Summary day"), ("nothing", "Nothing")], columns=2)


async def answer_setting(ctx: Ctx, value: str) -> str | None:
    if value == "nothing":
        ctx.say("No changes.")
        return None
    return value


def _setter(field: str) -> Step:
    asks = {"time": ask_time, "days": ask_days, "timezone": ask_timezone}
    column = {"time": "reminder_time", "days": "reminder_days", "timezone": "timezone"}[field]

    async def answer(ctx: Ctx, value: str) -> str | None:
        if field == "timezone":
            chosen = chosen_timezone(ctx, value)
            if chosen is None:
                return field
            value = chosen
        setattr(ctx.user, column, value)
        await reschedule(ctx)
        ctx.say(f"Saved. {schedule_line(ctx)}")
        return None

    return Step(asks[field], answer)


def ask_summary_day(ctx: Ctx) -> Question:
    return choices(f"On which day should your weekly summary come (at {SUMMARY_TIME})?",
                   [(str(n), name[:3]) for n, name in enumerate(WEEKDAYS, 1)],
                   columns=4)


async def answer_summary_day(ctx: Ctx, value: str) -> str | None:
    ctx.user.summary_day = int(value)
    await reschedule(ctx)
    ctx.say(f"Saved. {schedule_line(ctx)}")
    return None


def ask_assessed(ctx: Ctx) -> Question:
    return yes_no("Has a physiotherapist or doctor assessed your knee and said you can carry "
                  "on with these exercises?")


async def answer_assessed(ctx: Ctx, value: str) -> str | None:
    if value == "no":
        ctx.say("Then please see a clinician first; your program stays paused until then. "
                "Send /resume after your appointment.")
        return None
    program = await ctx.repo.program(ctx.user.id)
    ctx.repo.audit(f"{ctx.user.channel}:{ctx.user.channel_user_id}", "resume_after_referral",
                   ctx.now)
    if program is None:  # referred at the screen: screen again before any program
        ctx.user.status = "onboarding"
        ctx.say("Thank you. Let us go through the safety questions again.")
        return start_screen(ctx)
    ctx.user.status = "active"
    program.paused_reason = None
    await reschedule(ctx)
    ctx.say(f"Welcome back. You continue at level {program.level}. {schedule_line(ctx)}")
    return None


def ask_stop(ctx: Ctx) -> Question:
    return yes_no("Stop the program? I will send no more reminders. Your data stays until you "
                  "/delete it, and /resume starts again.")


async def answer_stop(ctx: Ctx, value: str) -> str | None:
    if value == "no":
        ctx.say("Good, nothing changed.")
        return None
    ctx.user.status = "stopped"
    await reschedule(ctx)
    ctx.say("Stopped. No more reminders. Send /resume any time to start again, or /delete "
            "to erase your data.")
    return None


async def stop_onboarding(ctx: Ctx) -> str | None:
    """/stop before the program has started ends the setting up: before consent nothing is
    kept (as when declining); after it, the answers so far are dropped."""
    ctx.answers = {}
    if ctx.user.consent_at is not None and ctx.flow == "idle":
        ctx.say("Setting up is stopped already. Send /start to begin the questions again.")
        return None
    if ctx.user.consent_at is None:
        await ctx.repo.erase_user(ctx.user.id)
        ctx.say("Stopped. I have not kept anything about you. If you change your mind, send "
                "/start.", forget=True)
        return ERASED
    ctx.say("Stopped setting up: no more questions and no reminders. Your answers so far are "
            "not kept. Send /start to begin the questions again, or /delete to erase your "
            "consent and name too.")
    return None


def ask_delete(ctx: Ctx) -> Question:
    return Question(
        "This erases everything I hold about you: answers, sessions, pain reports and "
        "settings. It cannot be undone. To confirm, type the word DELETE. /cancel keeps your "
        "data.",
        parse=lambda text: "confirm" if text == "delete" else None,
        hint="Nothing was erased. To erase, type the word DELETE; /cancel keeps your data.")


async def answer_delete(ctx: Ctx, value: str) -> str | None:
    channel = ctx.user.channel
    await ctx.repo.erase_user(ctx.user.id)
    # The audit entry records that an erasure happened, and nothing about whom.
    ctx.repo.audit("patient", "erasure", ctx.now, channel=channel)
    ctx.say("Done: everything I held about you is erased and no more reminders will come. "
            "Take care of that knee. /start begins again.", forget=True)
    return ERASED


async def export(ctx: Ctx) -> None:
    """Send everything held about the patient as a JSON document."""
    data = await ctx.repo.export_user(ctx.user.id)
    payload = {"schema": EXPORT_SCHEMA, "exported_at": ctx.now.isoformat(), "tables": data}
    ctx.repo.audit(f"{ctx.user.channel}:{ctx.user.channel_user_id}", "export", ctx.now)
    ctx.say("Here is everything I hold about you, as JSON.",
            document=Document(filename="kneecoach-mydata.json",
                              content=json.dumps(payload, indent=2).encode(),
                              mime_type="application/json"))


FLOWS: dict[str, Flow] = {
    "settings": {
        "what": Step(ask_setting, answer_setting),
        "time": _setter("time"),
        "days": _setter("days"),
        "timezone": _setter("timezone"),
        "summary": Step(ask_summary_day, answer_summary_day),
    },
    "resume": {"assessed": Step(ask_assessed, answer_assessed)},
    "stop": {"confirm": Step(ask_stop, answer_stop)},
    "delete": {"confirm": Step(ask_delete, answer_delete)},
}
