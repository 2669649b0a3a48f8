"""The patient's own account: settings, pause / resume / stop, export and erasure."""

from __future__ import annotations

import json
from datetime import timedelta

from conversations import i18n
from conversations.context import ERASED, Ctx, Flow, Step
from conversations.flows import holds
from conversations.flows.onboarding import (
    ask_days,
    ask_time,
    ask_timezone,
    chosen_timezone,
    start_screen,
)
from conversations.i18n import N_, _
from conversations.localtime import SUMMARY_TIME, SUNDAY, describe_days, short_day
from conversations.messages import Document
from conversations.prompts import check_due
from conversations.questions import Question, choices, pain_scale, yes_no
from conversations.said import Said, wording
from storage.models import Hold, PainReport

EXPORT_SCHEMA = "kneecoach-export/1"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The summary's day, every week.
EVERY_WEEKDAY = (N_("Mondays"), N_("Tuesdays"), N_("Wednesdays"), N_("Thursdays"),
                 N_("Fridays"), N_("Saturdays"), N_("Sundays"))


async def reschedule(ctx: Ctx) -> None:
    """Recompute the next prompt and weekly summary from the patient's current settings, at
    once; none while the program is not active."""
    program = await ctx.repo.program(ctx.user.id)
    user = ctx.user
    if program is None or not (user.timezone and user.reminder_time and user.reminder_days):
        return
    holds.schedule(program, user, ctx.now)
    if program.next_check_at is not None:  # 09:00 in the zone the patient is in now
        unchecked = await ctx.repo.unchecked_session(user.id, ctx.today + timedelta(days=1))
        program.next_check_at = (check_due(unchecked.day, user.timezone, program.next_prompt_at)
                                 if unchecked else None)


def schedule_line(ctx: Ctx) -> str:
    user = ctx.user
    summary_day = EVERY_WEEKDAY[(user.summary_day or SUNDAY) - 1]
    return _("Reminders {days} at {time} ({timezone}); weekly summary on {summary_days} at "
             "{summary_time}.", days=describe_days(user.reminder_days or ""),
             time=user.reminder_time, timezone=user.timezone, summary_days=_(summary_day),
             summary_time=SUMMARY_TIME)


def ask_setting(ctx: Ctx) -> Question:
    return choices(schedule_line(ctx) + " " + _("What would you like to change?"),
                   [("time", _("Time")), ("days", _("Days")), ("timezone", _("Timezone")),
                    ("summary", _("Summary day")), ("nothing", _("Nothing"))], columns=2)


async def answer_setting(ctx: Ctx, value: str) -> str | None:
    if value == "nothing":
        ctx.say(_("No changes."))
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
        ctx.say(_("Saved. {schedule}", schedule=schedule_line(ctx)))
        return None

    return Step(asks[field], answer)


def ask_summary_day(ctx: Ctx) -> Question:
    return choices(_("On which day should your weekly summary come (at {time})?",
                     time=SUMMARY_TIME),
                   [(str(n), short_day(n)) for n in range(1, len(WEEKDAYS) + 1)],
                   columns=4)


async def answer_summary_day(ctx: Ctx, value: str) -> str | None:
    ctx.user.summary_day = int(value)
    await reschedule(ctx)
    ctx.say(_("Saved. {schedule}", schedule=schedule_line(ctx)))
    return None


async def resume_held(ctx: Ctx) -> str | None:
    """/resume while on hold (R9): a coach's patient asks the coach; a patient without one
    confirms an assessment, from the next local day after the hold began."""
    hold = await ctx.repo.open_hold(ctx.user.id)
    if hold is None:  # referred with nothing to lift: only a screen again can enrol them
        ctx.user.status = "onboarding"
        ctx.say(_("Let us go through the safety questions again."))
        return start_screen(ctx)
    if ctx.user.coach_id is not None and await ctx.repo.user_by_id(ctx.user.coach_id):
        await holds.request_clear(ctx, hold)
        return None
    if ctx.today <= hold.started_on:
        ctx.say(_("The hold began today ({day}), so that a physiotherapist or doctor can look "
                  "at your knee first. You can confirm that assessment from tomorrow at the "
                  "earliest: send /resume then.", day=i18n.short_date(hold.started_on)))
        return None
    ctx.answers = {"hold": hold.id}
    return "resume:assessed"


async def _hold(ctx: Ctx) -> Hold | None:
    hold = await ctx.repo.hold(int(ctx.answers.get("hold", 0)))
    if hold is None or hold.user_id != ctx.user.id or hold.lifted_at is not None:
        ctx.say(_("That hold is no longer open. /today shows where you are."))
        return None
    return hold


def ask_assessed(ctx: Ctx) -> Question:
    return yes_no(_("Since your program was put on hold, has a physiotherapist or doctor "
                    "assessed your knee and said you can carry on with these exercises?"),
                  yes=_("Yes, I was assessed and may exercise"), no=_("No, not yet"))


async def answer_assessed(ctx: Ctx, value: str) -> str | None:
    if value == "no":
        ctx.say(_("Then please see a clinician first; your program stays on hold until then. "
                  "Send /resume after your appointment."))
        return None
    if (hold := await _hold(ctx)) is None:
        return None
    hold.assessed_at = ctx.now  # the confirmation, with its time
    ctx.repo.audit(ctx.user.display_id, "confirm_assessed", ctx.now, hold=hold.id)
    if hold.kind == "pain":
        return "rest_pain"
    return await _lift(ctx, hold, wording(N_("the patient confirmed a clinician assessed the "
                                          "knee")))


def ask_rest_pain(ctx: Ctx) -> Question:
    return pain_scale(_("How much does your knee hurt right now, at rest?"))


async def answer_rest_pain(ctx: Ctx, value: str) -> str | None:
    pain = int(value)
    ctx.repo.add(PainReport(user_id=ctx.user.id, at=ctx.now, pain=pain, context="rest"))
    if (hold := await _hold(ctx)) is None:
        return None
    if pain > holds.REST_PAIN_LIMIT:
        ctx.say(_("Pain of {pain}/10 at rest is still too much to restart; your program stays "
                  "on hold. Rest pain should be {limit} or less. Please talk to your "
                  "physiotherapist or doctor, and send /resume again another day.", pain=pain,
                  limit=holds.REST_PAIN_LIMIT))
        return None
    return await _lift(ctx, hold, wording(N_("the patient confirmed a clinician assessed the "
                                          "knee and reported rest pain {pain}/10"), pain=pain))


async def _lift(ctx: Ctx, hold: Hold, why: Said) -> str | None:
    said = await holds.lift(ctx, ctx.user, hold, by=ctx.user.display_id, why=why)
    if ctx.user.status == "onboarding":  # referred at the screen: screen again first
        ctx.say(_("Thank you. Let us go through the safety questions again."))
        return start_screen(ctx)
    ctx.say(_("Welcome back. {said} {schedule}", said=said, schedule=schedule_line(ctx)))
    return None


def ask_stop(ctx: Ctx) -> Question:
    return yes_no(_("Stop the program? I will send no more reminders. Your data stays until "
                    "you /delete it, and /resume starts again."))


async def answer_stop(ctx: Ctx, value: str) -> str | None:
    if value == "no":
        ctx.say(_("Good, nothing changed."))
        return None
    ctx.user.status = "stopped"
    await reschedule(ctx)
    ctx.say(_("Stopped. No more reminders. Send /resume any time to start again, or /delete "
              "to erase your data."))
    return None


async def stop_onboarding(ctx: Ctx) -> str | None:
    """/stop before the program has started ends the setting up: before consent nothing is
    kept (as when declining); after it, the answers so far are dropped."""
    ctx.answers = {}
    if ctx.user.consent_at is not None and ctx.flow == "idle":
        ctx.say(_("Setting up is stopped already. Send /start to begin the questions again."))
        return None
    if ctx.user.consent_at is None:
        await ctx.repo.erase_user(ctx.user.id)
        ctx.say(_("Stopped. I have not kept anything about you. If you change your mind, send "
                  "/start."), forget=True)
        return ERASED
    ctx.say(_("Stopped setting up: no more questions and no reminders. Your answers so far "
              "are not kept. Send /start to begin the questions again, or /delete to erase "
              "your consent and name too."))
    return None


def ask_delete(ctx: Ctx) -> Question:
    return Question(
        _("This erases everything I hold about you: answers, sessions, pain reports and "
          "settings. It cannot be undone. To confirm, type the word DELETE. /cancel keeps "
          "your data."),
        # The word in each language the question is asked in (es: BORRAR, de: LÖSCHEN).
        parse=lambda text: "confirm" if text in ("delete", "borrar", "löschen") else None,
        hint=_("Nothing was erased. To erase, type the word DELETE; /cancel keeps your data."))


async def answer_delete(ctx: Ctx, value: str) -> str | None:
    channel = ctx.user.channel
    await ctx.repo.erase_user(ctx.user.id)
    # The audit entry records that an erasure happened, and nothing about whom.
    ctx.repo.audit("patient", "erasure", ctx.now, channel=channel)
    ctx.say(_("Done: everything I held about you is erased and no more reminders will come. "
              "Take care of that knee. /start begins again."), forget=True)
    return ERASED


async def export(ctx: Ctx) -> None:
    """Send everything held about the patient as a JSON document."""
    data = await ctx.repo.export_user(ctx.user.id)
    payload = {"schema": EXPORT_SCHEMA, "exported_at": ctx.now.isoformat(), "tables": data}
    ctx.repo.audit(ctx.user.display_id, "export", ctx.now)
    ctx.say(_("Here is everything I hold about you, as JSON."),
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
    "resume": {"assessed": Step(ask_assessed, answer_assessed),
               "rest_pain": Step(ask_rest_pain, answer_rest_pain)},
    "stop": {"confirm": Step(ask_stop, answer_stop)},
    "delete": {"confirm": Step(ask_delete, answer_delete)},
}
