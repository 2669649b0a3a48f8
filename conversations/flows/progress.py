"""Progress the patient can see: the /progress chart and summary, the weekly summary text,
and the Kujala score asked again every 4 weeks."""

from __future__ import annotations

from datetime import date

from conversations import i18n
from conversations.chart import DaySession, Progress, render, summary
from conversations.context import Ctx, Flow, Step
from conversations.flows.onboarding import kujala_steps
from conversations.flows.session import LEVEL_ACTIONS, open_today
from conversations.i18n import N_, _
from conversations.localtime import local_date
from conversations.program.screening import kujala_score
from conversations.questions import Question, choices
from storage.models import Assessment, User
from storage.repository import Repository

KUJALA_MEANINGFUL = 10  # the scale's minimal clinically important difference (CLINICAL.md 4)


async def gather(repo: Repository, user: User, today: date) -> Progress | None:
    """Everything the chart shows; None for a patient with nothing to show yet."""
    program = await repo.program(user.id)
    if program is None:
        return None
    tz = user.timezone or "UTC"
    sessions = await repo.sessions_since(user.id, program.started_on)
    reports = await repo.pain_reports(user.id)
    pains = [(local_date(p.at, tz), p.pain) for p in reports if p.context != "baseline"]
    if not pains and not any(s.status != "prompted" for s in sessions):
        return None
    events = await repo.events_since(user.id, program.started_on)
    kujala = await repo.assessments(user.id, "kujala")
    return Progress(
        sessions=[DaySession(s.day, s.status, s.pain_during) for s in sessions],
        pains=pains,
        levels=[(e.day, e.from_level, e.to_level) for e in events
                if e.action in LEVEL_ACTIONS and e.from_level != e.to_level],
        kujala=[(local_date(a.created_at, tz), a.score) for a in kujala if a.score is not None],
        baseline_worst=program.baseline_worst_pain, today=today)


async def show(ctx: Ctx) -> None:
    program = await ctx.repo.program(ctx.user.id)
    data = await gather(ctx.repo, ctx.user, ctx.today)
    if program is None or data is None:
        ctx.say(_("Nothing to chart yet. Once you have reported a session or your pain "
                  "(/today, /pain), /progress shows how it is going."))
        return
    ctx.say(_("Level {level} of {top}. {summary}", level=program.level,
              top=ctx.program.top_level, summary=summary(data)),
            image=render(data))


def ask_offer(ctx: Ctx) -> Question:
    return choices(_("Four weeks have passed: time to fill in the knee score again (13 quick "
                     "questions), so we can see how you are doing."),
                   [("now", _("Now")), ("later", _("Later"))], columns=2)


def advice(data: Progress) -> str:
    """One sentence for the weekly summary, from the pain monitoring model's zones."""
    week = [s for s in data.sessions if (data.today - s.day).days < 7 and s.status != "prompted"]
    kept = sum(s.status in ("done", "partial") for s in week) / len(week) if week else 0
    pains = [p for d, p in data.pains if (data.today - d).days < 7]
    if pains and max(pains) > 5:
        return _("Your pain went above 5 this week: keep to the lighter dose, and stop any "
                 "exercise that causes sharp pain.")
    if kept < 0.5:
        return _("Try to fit in a few more sessions next week: regular exercise is what helps "
                 "knee-cap pain.")
    if pains and max(pains) <= 2 and kept >= 0.7:
        return _("A great week: easy sessions like these are how you move up a level.")
    return _("Steady work. Soreness up to 5 during exercise is fine as long as it settles by "
             "the next morning.")


async def weekly_summary(repo: Repository, user: User, today: date) -> str | None:
    """The text of the weekly summary, or None for a patient with nothing to sum up."""
    program = await repo.program(user.id)
    data = await gather(repo, user, today)
    if program is None or data is None:
        return None
    return _("Your week: level {level}. {summary} {advice}", level=program.level,
             summary=summary(data), advice=advice(data))


NOT_STARTED = N_("kneecoach is an exercise coach for knee-cap pain. Send /start in Messages (or "
               "/kneecoach start) to begin.")
SESSION_STATUS = {"prompted": N_("waiting for your report (/today)"), "done": N_("done"),
                  "partial": N_("partly done"), "skipped": N_("skipped"),
                  "missed": N_("missed")}


PROGRAM_STATUS = {"paused": N_("paused"), "referred": N_("referred"), "stopped": N_("stopped")}


async def home(repo: Repository, user: User, today: date) -> str:
    """The at-a-glance page (Slack's App Home): level, today's session and the last pain."""
    program = await repo.program(user.id)
    if user.consent_at is None or program is None:
        return _(NOT_STARTED)
    session = await repo.session_on(user.id, today)
    reports = [r for r in await repo.pain_reports(user.id) if r.context != "baseline"]
    tz = user.timezone or "UTC"
    lines = [_("Level {level}", level=program.level) + (
                 "" if user.status == "active" else
                 " " + _("(program {status}; /resume restarts it)",
                         status=_(PROGRAM_STATUS.get(user.status, user.status)))),
             _("Today's session: {status}", status=_(SESSION_STATUS.get(
                 session.status, session.status)) if session else _("not opened yet (/today)")),
             (_("Last pain: {pain}/10 on {day}", pain=reports[-1].pain,
                day=i18n.short_date(local_date(reports[-1].at, tz)))
              if reports else _("No pain reported yet (/pain)")),
             _("Not a diagnosis or a replacement for a clinician.")]
    return "\n".join(lines)


async def answer_offer(ctx: Ctx, value: str) -> str | None:
    if value == "now":
        ctx.answers = {"kujala": []}
        return "kujala_1"
    ctx.answers = {"kujala_later": True}
    return await open_today(ctx)


async def finish(ctx: Ctx, value: str) -> str | None:
    score = kujala_score(ctx.answers["kujala"])
    first = await ctx.repo.first_assessment(ctx.user.id, "kujala")
    ctx.repo.add(Assessment(user_id=ctx.user.id, kind="kujala",
                            answers={"answers": ctx.answers["kujala"]}, score=score,
                            created_at=ctx.now))
    change = score - first.score if first is not None and first.score is not None else 0
    program = await ctx.repo.program(ctx.user.id)
    if program is not None and first is not None and first.score is not None:
        program.kujala_change = change  # kept with the enrolment for the statistics
    if change >= KUJALA_MEANINGFUL:
        ctx.say(_("Your knee score is {score}/100, up {change} points since you started: a "
                  "real, meaningful improvement. Well done.", score=score, change=change))
        await ctx.alert_coach(lambda: _("has a Kujala score up {change} points, to "
                                        "{score}/100.", change=change, score=score))
    elif change <= -KUJALA_MEANINGFUL:
        ctx.say(_("Your knee score is {score}/100, down {change} points since you started. "
                  "That is a meaningful change: please talk to your physiotherapist or doctor.",
                  score=score, change=-change))
        await ctx.alert_coach(lambda: _("has a Kujala score down {change} points, to "
                                        "{score}/100: a meaningful worsening they were advised "
                                        "to discuss with a clinician.", change=-change,
                                        score=score))
    else:
        ctx.say(_("Your knee score is {score}/100 ({change} since you started). Thank you.",
                  score=score, change=f"{change:+d}"))
    return None


FLOWS: dict[str, Flow] = {
    "kujala": {"offer": Step(ask_offer, answer_offer), **kujala_steps(finish)},
}
