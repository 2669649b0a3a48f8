"""The daily session: today's exercises, the report (done / partly / skipped, pain during),
the next-morning check, ad-hoc pain reports, and applying the pain monitoring model."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from conversations.context import Ctx, Flow, Step
from conversations.flows import holds, howto, messages
from conversations.flows.onboarding import refer
from conversations.i18n import N_, _
from conversations.localtime import zone
from conversations.program.rules import (
    Decision,
    LevelChange,
    SessionFact,
    decide,
    needs_review,
    pain_report_decision,
    pain_zone,
    r6_restart,
)
from conversations.program.screening import KUJALA, WarningAnswer, warning_answer
from conversations.prompts import check_due, check_question, instruction_line
from conversations.questions import Question, choices, pain_scale, yes_no
from conversations.said import wording
from storage import prescriptions
from storage.models import PainReport, ProgressionEvent, Session

# The progression events that move the level: the rules' and a coach's ("set", CLINICAL.md 5b).
LEVEL_ACTIONS = ("progress", "regress", "restart", "set")
KUJALA_EVERY = timedelta(days=28)  # the knee score is asked again every 4 weeks
HISTORY_DAYS = 60  # the rules look back at most 14 days, R7 to the last regression

CLINICIAN_URGENT = N_(
    "Please pause the exercises and see a physiotherapist or doctor soon. If the knee is hot, "
    "red and swollen, you feel unwell, your calf is painful or you cannot bear weight, seek "
    "urgent care today. I have paused your reminders; once a clinician has seen you, send "
    "/resume."
)
CLINICIAN_REVIEW = N_(
    "Please book a check with a physiotherapist or doctor. I have paused your reminders; once "
    "you have been assessed, send /resume."
)


def session_text(ctx: Ctx, level: int, rx: prescriptions.Current = prescriptions.NONE) -> str:
    """Today's session as the coach prescribed it (`rx`: exercises off, their instruction)."""
    lines = ctx.program.session_lines(level, off=rx.off)
    body = "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))
    return _("Today's session (level {level}):\n{body}\n\nRoll and stretch first. The squats, "
             "leg raises and knee extensions strengthen your thigh (quadriceps) muscles. "
             "Pain during the exercises may reach 5 out of 10 and should settle by the next "
             "morning. Stop any exercise that causes sharp pain.", level=level,
             body=body + instruction_line(rx.instruction))


async def open_today(ctx: Ctx) -> str | None:
    """Show today's session and ask how it went; None when there is nothing to ask."""
    program = await ctx.repo.program(ctx.user.id)
    if program is None:
        ctx.say(_("You have no exercise program yet. Send /start to set one up."))
        return None
    unchecked = await ctx.repo.unchecked_session(ctx.user.id, ctx.today)
    if unchecked is not None:
        ctx.answers = {"session_id": unchecked.id}
        return "morning:delta"
    last_score = await ctx.repo.latest_assessment(ctx.user.id, "kujala")
    if (last_score is not None and ctx.now - last_score.created_at >= KUJALA_EVERY
            and not ctx.answers.get("kujala_later")):
        ctx.answers = {}
        return "kujala:offer"
    session = await ctx.repo.session_on(ctx.user.id, ctx.today)
    if session is None:
        await restart_after_gap(ctx)
        session = Session(user_id=ctx.user.id, day=ctx.today, level=program.level,
                          status="prompted", prompted_at=ctx.now)
        ctx.repo.add(session)
        await ctx.repo.flush()
    if session.status not in ("prompted",):
        ctx.say(_("You have already reported today's session ({status}). Well done for keeping "
                  "track. /pain reports pain at any time.",
                  status=_(_STATUS_WORDS[session.status])))
        return None
    rx = await prescriptions.current(ctx.repo.db, ctx.user.id)
    ctx.say(session_text(ctx, session.level, rx),
            howto.buttons(ctx.program, session.level, off=rx.off))
    ctx.answers = {"session_id": session.id}
    return "session:status"


async def restart_after_gap(ctx: Ctx) -> None:
    """R6: after 7 missed days in a row the next session is offered one level lower."""
    program = await ctx.repo.program(ctx.user.id)
    assert program is not None
    restart = r6_restart(level=program.level, today=ctx.today, sessions=await _facts(ctx),
                         back=True)
    if restart is not None:
        ctx.repo.add(ProgressionEvent(user_id=ctx.user.id, at=ctx.now, **restart.model_dump()))
        program.level = restart.to_level
        program.updated_at = ctx.now
        ctx.say(restart.message)


_STATUS_WORDS = {"done": N_("done"), "partial": N_("partly done"), "skipped": N_("skipped"),
                 "missed": N_("missed"), "prompted": N_("not yet reported")}
_ZONE_WORDS = {"safe": N_("safe"), "acceptable": N_("acceptable"), "too much": N_("too much")}


async def _session(ctx: Ctx) -> Session:
    session = await ctx.repo.session(int(ctx.answers["session_id"]))
    if session is None or session.user_id != ctx.user.id:
        raise LookupError("session is gone")
    return session


def ask_status(ctx: Ctx) -> Question:
    return choices(_("How did today's session go?"),
                   [("done", _("Done")), ("partial", _("Partly")), ("skipped", _("Skipped"))],
                   columns=3)


async def answer_status(ctx: Ctx, value: str) -> str | None:
    if value == "skipped":
        session = await _session(ctx)
        session.status, session.reported_at = "skipped", ctx.now
        ctx.say(_("Thanks for telling me. A skipped day is fine: missed days never change your "
                  "level by themselves."))
        messages.offer(ctx)
        return None
    ctx.answers["status"] = value
    return "pain"


def ask_pain_during(ctx: Ctx) -> Question:
    return pain_scale(_("What was your worst knee pain during the exercises?"))


async def answer_pain_during(ctx: Ctx, value: str) -> str | None:
    pain = int(value)
    session = await _session(ctx)
    session.status, session.pain_during, session.reported_at = ctx.answers["status"], pain, ctx.now
    ctx.repo.add(PainReport(user_id=ctx.user.id, at=ctx.now, pain=pain, context="during"))
    program = await ctx.repo.program(ctx.user.id)
    if program is not None:
        program.next_check_at = check_due(session.day, ctx.user.timezone or "UTC",
                                          program.next_prompt_at)
    await ctx.repo.flush()
    if not await refer_if_warning(ctx, pain):
        decision = await _decide(ctx, "during")
        if decision.action == "none":
            ctx.say(_("Recorded: {status}, pain {pain}/10 ({zone}). Tomorrow morning I will ask "
                      "how the knee feels.", status=_(_STATUS_WORDS[session.status]), pain=pain,
                      zone=_(_ZONE_WORDS[pain_zone(pain)])))
        await apply_decision(ctx, decision)
    messages.offer(ctx)
    return None


def ask_morning_delta(ctx: Ctx) -> Question:
    return choices(
        check_question(ctx.now.astimezone(zone(ctx.user.timezone or "UTC"))),
        [("0", _("Same or better")), ("1", _("A little worse (+1)")),
         ("2", _("Clearly worse (+2 or more)"))])


async def answer_morning_delta(ctx: Ctx, value: str) -> str | None:
    ctx.answers["delta"] = int(value)
    return "symptom"


def ask_morning_symptom(ctx: Ctx) -> Question:
    return yes_no(_("Since yesterday, any new swelling, or has the knee locked or given way?"))


async def answer_morning_symptom(ctx: Ctx, value: str) -> str | None:
    session = await _session(ctx)
    session.morning_delta = int(ctx.answers["delta"])
    session.morning_symptom = value == "yes"
    session.morning_at = ctx.now
    program = await ctx.repo.program(ctx.user.id)
    if program is not None:
        program.next_check_at = None
    await ctx.repo.flush()
    decision = await _decide(ctx, "morning")
    if decision.action == "none":
        ctx.say(_("Thanks, noted."))
    await apply_decision(ctx, decision)
    if ctx.user.status == "active":
        await review_if_due(ctx)
        return await open_today(ctx)
    return None


async def review_if_due(ctx: Ctx) -> None:
    """R8: six weeks in, adherent, and no meaningful improvement: recommend a review, once."""
    program = await ctx.repo.program(ctx.user.id)
    if program is None or any(e.rule == "R8" for e in await ctx.repo.events_since(
            ctx.user.id, program.started_on)):
        return
    facts = [f for f in await _facts(ctx) if f.day >= program.started_on]
    recent = [f.pain_during for f in facts
              if f.pain_during is not None and (ctx.today - f.day).days < 7]
    baseline = await ctx.repo.first_assessment(ctx.user.id, "kujala")
    latest = await ctx.repo.latest_assessment(ctx.user.id, "kujala")
    if not needs_review(
            enrolled_on=program.started_on, today=ctx.today, sessions=facts,
            baseline_worst=program.baseline_worst_pain,
            current_worst=max(recent) if recent else None,
            baseline_kujala=baseline.score if baseline else None,
            current_kujala=latest.score if latest and latest is not baseline else None):
        return
    message = _("Six weeks in, you have kept up the exercises well but your knee has not "
                "improved as much as we hoped. Please book a review with a physiotherapist or "
                "doctor; you can carry on with the program meanwhile.")
    ctx.repo.add(ProgressionEvent(user_id=ctx.user.id, at=ctx.now, day=ctx.today,
                                  from_level=program.level, to_level=program.level,
                                  action="review", rule="R8", message=message))
    ctx.say(message)
    await ctx.alert_coach(lambda: _("has kept up the exercises for six weeks without a "
                                    "meaningful improvement; they were advised to book a "
                                    "clinician review (rule R8). The program continues."))


def ask_pain_now(ctx: Ctx) -> Question:
    return pain_scale(_("How much does your knee hurt right now?"))


async def answer_pain_now(ctx: Ctx, value: str) -> str | None:
    pain = int(value)
    ctx.repo.add(PainReport(user_id=ctx.user.id, at=ctx.now, pain=pain, context="adhoc"))
    program = await ctx.repo.program(ctx.user.id)
    decision = pain_report_decision(pain, program.level if program else 1)
    if decision.action == "none" and await refer_if_warning(ctx, pain):
        return None
    if decision.action == "none":
        zone = pain_zone(pain)
        advice = {
            "safe": N_("That is in the safe zone."),
            "acceptable": N_("That is acceptable during exercise; it should settle by "
                             "tomorrow."),
            "too much": N_("That is more than we want: go easier and tell me at your next "
                           "session."),
        }[zone]
        ctx.say(_("Recorded pain {pain}/10. {advice}", pain=pain, advice=_(advice)))
    await apply_decision(ctx, decision)
    return None


async def _sign_with_pain(ctx: Ctx, pain: int) -> WarningAnswer | None:
    """A 2b sign that this pain completes with the latest knee score (a constant limp)."""
    latest = await ctx.repo.latest_assessment(ctx.user.id, "kujala")
    answers = latest.answers.get("answers", []) if latest else []
    for item, option in enumerate(answers[:len(KUJALA)]):
        sign = warning_answer(item, option, pain)
        if sign is not None and sign.with_pain is not None:
            return sign
    return None


async def refer_if_warning(ctx: Ctx, pain: int) -> bool:
    """CLINICAL.md 2b on a pain report of an enrolled, active patient: refer as the screen."""
    if ctx.user.status != "active" or (sign := await _sign_with_pain(ctx, pain)) is None:
        return False
    await refer(ctx, rule="2b",
                answered=_('pain {pain}/10, with "{answer}" to "{question}" in your knee score '
                           "({why})", pain=pain, answer=_(sign.answer),
                           question=_(sign.question), why=_(sign.why)),
                reason=wording(N_('reported pain {pain}/10 with "{answer}" to "{question}" in '
                               "their knee score"), pain=pain, answer=wording(sign.answer),
                            question=wording(sign.question)), record={"pain": pain})
    return True


async def _facts(ctx: Ctx) -> list[SessionFact]:
    since = ctx.today - timedelta(days=HISTORY_DAYS)
    return [SessionFact.model_validate(s)
            for s in await ctx.repo.sessions_since(ctx.user.id, since)]


async def _decide(ctx: Ctx, stage: Literal["during", "morning"]) -> Decision:
    program = await ctx.repo.program(ctx.user.id)
    assert program is not None
    since = ctx.today - timedelta(days=HISTORY_DAYS)
    changes = [LevelChange(day=e.day, from_level=e.from_level, to_level=e.to_level, rule=e.rule,
                           action=e.action)  # type: ignore[arg-type]
               for e in await ctx.repo.events_since(ctx.user.id, since)
               if e.action in LEVEL_ACTIONS]
    rx = await prescriptions.current(ctx.repo.db, ctx.user.id)
    return decide(level=program.level, top_level=ctx.program.top_level, today=ctx.today,
                  sessions=await _facts(ctx), changes=changes, stage=stage, held=rx.held)


async def apply_decision(ctx: Ctx, decision: Decision) -> None:
    """Store and explain what the pain monitoring model decided."""
    if decision.action == "none":
        return
    program = await ctx.repo.program(ctx.user.id)
    if program is None:  # an ad-hoc report from someone referred at the screen
        ctx.say(f"{decision.message} "
                f"{_(CLINICIAN_URGENT if decision.urgent else CLINICIAN_REVIEW)}")
        return
    if decision.action in ("progress", "regress", "stop"):
        ctx.repo.add(ProgressionEvent(
            user_id=ctx.user.id, at=ctx.now, day=ctx.today, from_level=program.level,
            to_level=decision.level, action=decision.action, rule=decision.rule or "",
            message=decision.message))
        program.level = decision.level
        program.updated_at = ctx.now
    if decision.refer:
        if ctx.user.status != "referred":  # already on hold: it stays as it is
            await holds.place(ctx, kind=decision.hold, rule=decision.rule or "R4",
                              reason=decision.for_coach)
        ctx.say(f"{decision.message} "
                f"{_(CLINICIAN_URGENT if decision.urgent else CLINICIAN_REVIEW)}")
        return
    ctx.say(decision.message)


FLOWS: dict[str, Flow] = {
    "session": {
        "status": Step(ask_status, answer_status),
        "pain": Step(ask_pain_during, answer_pain_during),
    },
    "morning": {
        "delta": Step(ask_morning_delta, answer_morning_delta),
        "symptom": Step(ask_morning_symptom, answer_morning_symptom),
    },
    "pain": {
        "now": Step(ask_pain_now, answer_pain_now),
    },
}
