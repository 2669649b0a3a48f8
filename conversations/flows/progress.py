"""Progress the patient can see: the /progress chart and summary, the weekly summary text,
and the Kujala score asked again every 4 weeks."""

from __future__ import annotations

from conversations.chart import DaySession, Progress, render, summary
from conversations.flow import Ctx, Flow, Step
from conversations.flows.onboarding import kujala_steps
from conversations.flows.session import open_today
from conversations.program.screening import kujala_score
from conversations.questions import Question, choices
from conversations.schedule import local_date
from storage.models import Assessment

KUJALA_MEANINGFUL = 10  # the scale's minimal clinically important difference (CLINICAL.md 4)


async def gather(ctx: Ctx) -> Progress | None:
    """Everything the chart shows; None for a patient with nothing to show yet."""
    program = await ctx.repo.program(ctx.user.id)
    if program is None:
        return None
    tz = ctx.user.timezone or "UTC"
    sessions = await ctx.repo.sessions_since(ctx.user.id, program.started_on)
    reports = await ctx.repo.pain_reports(ctx.user.id)
    pains = [(local_date(p.at, tz), p.pain) for p in reports if p.context != "baseline"]
    if not pains and not any(s.status != "prompted" for s in sessions):
        return None
    events = await ctx.repo.events_since(ctx.user.id, program.started_on)
    kujala = await ctx.repo.assessments(ctx.user.id, "kujala")
    return Progress(
        sessions=[DaySession(s.day, s.status, s.pain_during) for s in sessions],
        pains=pains,
        levels=[(e.day, e.from_level, e.to_level) for e in events
                if e.action in ("progress", "regress", "restart") and e.from_level != e.to_level],
        kujala=[(local_date(a.created_at, tz), a.score) for a in kujala if a.score is not None],
        baseline_worst=program.baseline_worst_pain, today=ctx.today)


async def show(ctx: Ctx) -> None:
    program = await ctx.repo.program(ctx.user.id)
    data = await gather(ctx)
    if program is None or data is None:
        ctx.say("Nothing to chart yet. Once you have reported a session or your pain (/today, "
                "/pain), /progress shows how it is going.")
        return
    ctx.say(f"Level {program.level} of {ctx.program.top_level}. {summary(data)}",
            image=render(data))


def ask_offer(ctx: Ctx) -> Question:
    return choices("Four weeks have passed: time to fill in the knee score again (13 quick "
                   "questions), so we can see how you are doing.",
                   [("now", "Now"), ("later", "Later")], columns=2)


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
    if change >= KUJALA_MEANINGFUL:
        ctx.say(f"Your knee score is {score}/100, up {change} points since you started: a "
                "real, meaningful improvement. Well done.")
        await ctx.alert_coach(f"Kujala score up {change} points to {score}/100.")
    elif change <= -KUJALA_MEANINGFUL:
        ctx.say(f"Your knee score is {score}/100, down {-change} points since you started. "
                "That is a meaningful change: please talk to your physiotherapist or doctor.")
        await ctx.alert_coach(f"Kujala score down {-change} points to {score}/100.")
    else:
        ctx.say(f"Your knee score is {score}/100 ({change:+d} since you started). Thank you.")
    return None


FLOWS: dict[str, Flow] = {
    "kujala": {"offer": Step(ask_offer, answer_offer), **kujala_steps(finish)},
}
