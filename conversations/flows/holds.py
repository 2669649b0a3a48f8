"""Holds (CLINICAL.md 5a, rule R9): a referral or a pain pause stops the program until it is
lifted. With a coach only the coach (or an admin) lifts it; without one the patient does,
from the next local day, after confirming a clinician assessed the knee. Every hold and every
lift is stored, and the coach is told."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from conversations.alerts import alert_coach
from conversations.context import Ctx
from conversations.i18n import N_, _, short_date
from conversations.localtime import local_date, next_prompt_at, next_summary_at
from conversations.messages import Button, ButtonToken
from conversations.said import Said, shown, wording
from storage.models import Hold, ProgramState, ProgressionEvent, User

Kind = Literal["referral", "pain"]
REST_PAIN_LIMIT = 5  # a pain pause also needs a rest pain of 5 or less (R9)
CLEAR_STEP = "clear"  # the step of the buttons on a coach's clear request
# Where a pain report came from (PainReport.context): the stored word is the English a coach
# has always read, so it is its own message id.
PAIN_CONTEXTS = (N_("baseline"), N_("during"), N_("morning"), N_("adhoc"), N_("rest"))


def schedule(program: ProgramState, user: User, now: datetime) -> None:
    """Next prompt and weekly summary from the patient's settings; none unless active."""
    if not (user.timezone and user.reminder_time and user.reminder_days):
        return
    active = user.status == "active"
    program.next_prompt_at = (next_prompt_at(now, user.timezone, user.reminder_time,
                                             user.reminder_days) if active else None)
    program.next_summary_at = (next_summary_at(now, user.timezone, user.summary_day)
                               if active else None)
    program.updated_at = now


def restart_at(hold: Hold) -> int | None:
    """R9: one level lower than before the hold, never below 1; None: there is no program."""
    return None if hold.level is None else max(1, hold.level - 1)


async def place(ctx: Ctx, *, kind: Kind, rule: str, reason: Said) -> Hold:
    """Put the patient (ctx.user) on hold. `reason` is for the coach: what they reported,
    written so it reads after the patient's name ("reported pain 8/10 ..."); it is stored to
    be worded in each reader's language."""
    user = ctx.user
    program = await ctx.repo.program(user.id)
    user.status = "referred"
    if program is not None:
        program.paused_reason = rule
        program.next_prompt_at = program.next_check_at = program.next_summary_at = None
        program.updated_at = ctx.now
    hold = Hold(user_id=user.id, kind=kind, rule=rule, reason=reason.stored(),
                level=program.level if program else None, started_at=ctx.now,
                started_on=ctx.today)
    ctx.repo.add(hold)
    await ctx.repo.flush()
    ident = user.display_id
    await ctx.alert_coach(lambda: (
        _("{reason}; their program is paused until you clear it (/clear {ident}).",
          reason=reason.text(), ident=ident) if program is not None else
        _("{reason}; no program was started and they were advised to see a clinician; they "
          "stay on hold until you clear it (/clear {ident}).", reason=reason.text(),
          ident=ident)))
    return hold


async def lift(ctx: Ctx, patient: User, hold: Hold, *, by: str, why: Said,
               level: int | None = None) -> str:
    """Lift the hold; the sentence for the patient. `level` is the coach's choice; `why` is
    stored to be worded in each reader's language."""
    program = await ctx.repo.program(patient.id)
    restart = level if level is not None else restart_at(hold)
    hold.lifted_at, hold.lifted_by, hold.lift_reason = ctx.now, by, why.stored()
    ctx.repo.audit(by, "lift_hold", ctx.now, patient=patient.display_id, hold=hold.id)
    if program is None or restart is None:  # referred at the screen: screen again first
        patient.status = "onboarding"
        then = wording(N_("the safety questions are asked again before any program"))
        said = _("Your hold is lifted. Next, the safety questions again.")
    else:
        hold.restart_level = restart
        patient.status = "active"
        day = local_date(ctx.now, patient.timezone or "UTC")
        said = (_("Your hold is lifted. You restart at level {level}, as your coach set.",
                  level=restart) if level is not None else
                _("Your hold is lifted. You restart at level {level}, one level lower than "
                  "before, to let the knee get used to the exercises again.", level=restart))
        ctx.repo.add(ProgressionEvent(user_id=patient.id, at=ctx.now, day=day,
                                      from_level=program.level, to_level=restart,
                                      action="restart", rule="R9", message=said))
        program.level, program.paused_reason = restart, None
        schedule(program, patient, ctx.now)
        then = wording(N_("they restart at level {level}"), level=restart)
    coach = await _coach(ctx, patient)
    if coach is not None and by != coach.display_id:  # a coach who lifted it knows already
        reason = hold.reason
        await alert_coach(ctx.repo, patient, lambda: _(
            "hold ({reason}) was lifted by {by}: {why}; {then}.", reason=shown(reason),
            by=_("the patient") if by == patient.display_id else by, why=why.text(),
            then=then.text()), ctx.now, possessive=True, default_language=ctx.default_language)
    return said


async def _coach(ctx: Ctx, patient: User) -> User | None:
    return await ctx.repo.user_by_id(patient.coach_id) if patient.coach_id else None


async def request_clear(ctx: Ctx, hold: Hold) -> None:
    """The patient (with a coach) sent /resume: send the coach the reason and the latest
    answers, with buttons that clear the hold; once a day at most."""
    user = ctx.user
    pain = await ctx.repo.last_pain(user.id)
    kujala = await ctx.repo.latest_assessment(user.id, "kujala")
    default = restart_at(hold)
    options = [default] if default is not None else [None]
    if default is not None and default > 1:
        options.append(1)

    def write() -> str:  # in the coach's language
        latest = [_("last pain {pain}/10 ({context}, {day})", pain=pain.pain,
                    context=(_(pain.context) if pain.context in PAIN_CONTEXTS
                             else pain.context),
                    day=short_date(local_date(pain.at, user.timezone or "UTC")))
                  if pain else _("no pain reported"),
                  _("Kujala {score}/100", score=kujala.score)
                  if kujala and kujala.score is not None else _("no Kujala score")]
        return _("asks to resume. On hold since {day} because they {reason} (rule {rule}). "
                 "Latest: {latest}. Clear it below or with /clear {ident} [level].",
                 day=short_date(hold.started_on), reason=shown(hold.reason), rule=hold.rule,
                 latest=", ".join(latest), ident=user.display_id)

    def buttons() -> tuple[tuple[Button, ...], ...]:
        return tuple(
            (Button(label=(_("Clear, restart at level {level}", level=lvl) if lvl else
                           _("Clear: screen again")),
                    token=ButtonToken(step=CLEAR_STEP, ref=hold.id,
                                      value=str(lvl or 0)).encode()),)
            for lvl in options)

    sent = await alert_coach(ctx.repo, user, write, ctx.now, buttons=buttons,
                             dedupe_key=f"clear:{hold.id}:{ctx.today.isoformat()}",
                             default_language=ctx.default_language)
    hold.requested_at = hold.requested_at or ctx.now
    ctx.say(_("Your program is on hold until your coach clears it.") + " "
            + (_("I have sent them your request with your latest answers.")
               if sent else _("I sent them your request today already.")))
