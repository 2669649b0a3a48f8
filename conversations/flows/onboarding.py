"""Onboarding: consent, the red-flag screen, the symptom questionnaire, the Kujala scale,
the reminder schedule, and enrolment at a starting level."""

from __future__ import annotations

from conversations.context import ERASED, Answer, Ctx, Flow, Step
from conversations.flows import holds
from conversations.flows.staff import attach
from conversations.i18n import N_, _
from conversations.localtime import (
    AMBIGUOUS,
    ASK_WHICH,
    describe_days,
    next_prompt_at,
    next_summary_at,
    parse_days,
    parse_time,
    parse_timezone,
)
from conversations.program.rules import start_level
from conversations.program.screening import (
    BASELINE_PAIN_REFER,
    CONSENT_VERSION,
    DISCLAIMER,
    KUJALA,
    RED_FLAGS,
    SIGNS,
    WarningAnswer,
    kujala_score,
    warning_answer,
)
from conversations.questions import Choice, Question, choices, pain_scale, yes_no
from conversations.said import Said, wording
from storage.models import Assessment, PainReport, ProgramState, ProgressionEvent

REFERRAL = N_(
    "That answer is a warning sign that needs a physiotherapist or doctor to look at your knee "
    "before you start exercises, so I will not give you an exercise program now. If the knee is "
    "hot, red and swollen, your calf is painful or swollen, or you cannot bear weight, please "
    "seek urgent care today. Once you have been assessed and told exercise is fine, send "
    "/resume."
)
PAUSED_2B = N_(
    "That answer is a warning sign, so I have paused your program until a physiotherapist or "
    "doctor has looked at your knee. If the knee is hot, red and swollen, your calf is painful "
    "or swollen, or you cannot bear weight, please seek urgent care today. Once you have been "
    "assessed and told exercise is fine, send /resume."
)


async def refer(ctx: Ctx, *, rule: str, answered: str, reason: Said, record: dict[str, object]
                ) -> None:
    """A warning answer (the screen or CLINICAL.md 2b): record the referral with its reason,
    hold the program, tell the patient which answer caused it and alert the coach."""
    enrolled = await ctx.repo.program(ctx.user.id) is not None and ctx.flow != "onboarding"
    ctx.repo.add(Assessment(user_id=ctx.user.id, kind="redflag",
                            answers={**record, "rule": rule, "answered": answered},
                            score=None, created_at=ctx.now))
    await holds.place(ctx, kind="referral", rule=rule, reason=reason)
    ctx.say(_("Thank you for telling me. You answered: {answered}. ", answered=answered)
            + _(PAUSED_2B if enrolled else REFERRAL))


async def refer_later_sign(ctx: Ctx, sign: WarningAnswer, kujala: list[int]) -> None:
    """A Kujala answer of CLINICAL.md 2b, at baseline or in the 4-weekly score."""
    where = (wording(N_("at onboarding")) if ctx.flow == "onboarding" else
             wording(N_("in the 4-weekly knee score")))
    told = _('"{answer}" to "{question}" ({why})', answer=_(sign.answer),
             question=_(sign.question), why=_(sign.why))
    # The reason is the coach's record, in the words of the program's rules (CLINICAL.md).
    await refer(ctx, rule="2b", answered=told,
                reason=wording(N_('answered "{answer}" to "{question}" {where}'),
                            answer=wording(sign.answer), question=wording(sign.question),
                            where=where), record={"kujala": kujala})


def ask_consent(ctx: Ctx) -> Question:
    return choices(_(DISCLAIMER) + "\n\n" + _("Do you agree?"),
                   [("agree", _("I agree")), ("decline", _("I do not agree"))], columns=2)


async def answer_consent(ctx: Ctx, value: str) -> str | None:
    if value == "decline" and ctx.user.role != "patient":
        ctx.user.status = "staff"  # a coach or admin keeps their role, just no patient data
        ctx.say(_("Understood. Nothing about your health is stored."))
        return None
    if value == "decline":
        await ctx.repo.erase_user(ctx.user.id)
        ctx.say(_("Understood. I have not kept anything about you. If you change your mind, "
                  "send /start."), forget=True)
        return ERASED
    ctx.user.consent_at = ctx.now
    ctx.user.consent_version = CONSENT_VERSION
    ctx.user.status = "onboarding"
    ctx.user.display_name = ctx.inbound.display_name
    if ctx.answers.get("invite") and not await attach(ctx, ctx.answers["invite"]):
        ctx.say(_("We carry on without a coach; /join CODE connects you later."))
    ctx.say(_("Thank you. First, {count} quick safety questions.", count=len(RED_FLAGS)))
    return start_screen(ctx)


def start_screen(ctx: Ctx) -> str:
    ctx.answers = {"redflags": [], "signs": [], "kujala": []}
    return "onboarding:redflag_1"


def _numbered(prefix: str, count: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(1, count + 1)]


def _redflag_step(index: int) -> Step:
    flag = RED_FLAGS[index]

    def ask(ctx: Ctx) -> Question:
        return yes_no(_("Safety question {n} of {count}: {question}", n=index + 1,
                        count=len(RED_FLAGS), question=_(flag.text)),
                      yes=_(flag.yes), no=_(flag.no))

    async def answer(ctx: Ctx, value: str) -> str | None:
        ctx.answers["redflags"] = [*ctx.answers["redflags"][:index], value]
        if value == flag.warning:
            await refer(ctx, rule="screen", answered=f'"{_(flag.label(value))}"',
                        reason=wording(N_('answered "{answer}" to safety question {n} at '
                                       "onboarding"), answer=wording(flag.label(value)),
                                    n=index + 1),
                        record={"answers": ctx.answers["redflags"], "flag": index + 1})
            return None
        if index + 1 < len(RED_FLAGS):
            return f"redflag_{index + 2}"
        ctx.say(_("Thank you, no warning signs. Now five questions about your symptoms."))
        return "sign_1"

    return Step(ask, answer)


def _sign_step(index: int) -> Step:
    def ask(ctx: Ctx) -> Question:
        return yes_no(_("Symptom {n} of {count}: {question}", n=index + 1, count=len(SIGNS),
                        question=_(SIGNS[index])))

    async def answer(ctx: Ctx, value: str) -> str | None:
        ctx.answers["signs"] = [*ctx.answers["signs"][:index], value]
        return f"sign_{index + 2}" if index + 1 < len(SIGNS) else "worst_pain"

    return Step(ask, answer)


def ask_worst_pain(ctx: Ctx) -> Question:
    return pain_scale(_("In the last week, what was your worst knee pain during activity?"))


async def answer_worst_pain(ctx: Ctx, value: str) -> str | None:
    ctx.answers["worst_pain"] = pain = int(value)
    if pain >= BASELINE_PAIN_REFER:  # 2b: R4 at the start, assessment first
        await refer(ctx, rule="2b", answered=_(
                        "a worst pain of {pain}/10 last week (8 or more needs a clinician to "
                        "look at the knee first)", pain=pain),
                    reason=wording(N_("gave a worst pain of {pain}/10 for the last week at "
                                   "onboarding"), pain=pain),
                    record={"worst_pain": pain})
        return None
    return "knee"


def ask_knee(ctx: Ctx) -> Question:
    return choices(_("Which knee is painful?"),
                   [("left", _("Left")), ("right", _("Right")), ("both", _("Both"))], columns=3)


async def answer_knee(ctx: Ctx, value: str) -> str | None:
    ctx.answers["knee"] = value
    ctx.say(_("Now the {count} questions of the Kujala knee score, so we can see your "
              "progress over the weeks.", count=len(KUJALA)))
    return "kujala_1"


def kujala_steps(finish: Answer) -> dict[str, Step]:
    """The 13 Kujala items as steps; `finish` runs after the last one (with its answer)."""
    return {name: _kujala_step(i, finish)
            for i, name in enumerate(_numbered("kujala", len(KUJALA)))}


async def _to_timezone(ctx: Ctx, value: str) -> str | None:
    return "timezone"


def _kujala_step(index: int, finish: Answer) -> Step:
    text, options = KUJALA[index]

    def ask(ctx: Ctx) -> Question:
        return choices(_("Knee score {n} of {count}: {question}", n=index + 1,
                         count=len(KUJALA), question=_(text)),
                       [(str(i), _(label)) for i, (label, _points) in enumerate(options)])

    async def answer(ctx: Ctx, value: str) -> str | None:
        ctx.answers["kujala"] = [*ctx.answers["kujala"][:index], int(value)]
        if ctx.flow == "onboarding":
            pain = ctx.answers.get("worst_pain")
        else:
            last = await ctx.repo.last_pain(ctx.user.id)
            pain = last.pain if last else None
        if sign := warning_answer(index, int(value), pain):
            await refer_later_sign(ctx, sign, ctx.answers["kujala"])
            return None
        if index + 1 < len(KUJALA):
            return f"kujala_{index + 2}"
        return await finish(ctx, value)

    return Step(ask, answer)


TIMEZONE_HINT = N_("I do not know that timezone. Send a nearby city (Berlin), a timezone name "
                 "(America/New_York), an abbreviation (EST, CET) or an offset (UTC+5:30).")


def ask_timezone(ctx: Ctx) -> Question:
    which = ctx.answers.get("timezone_which")
    if which in AMBIGUOUS:  # they typed an abbreviation of several zones: which one?
        options = AMBIGUOUS[which]
        return Question(
            _("{abbreviation} can mean {zones} or {last}. Which one is yours? Pick one, or "
              "send your city.", abbreviation=which.upper(),
              zones=", ".join(name for name, _zone in options[:-1]), last=options[-1][0]),
            tuple(Choice(f"{_PICK}{i}", name) for i, (name, _zone) in enumerate(options)),
            parse=parse_timezone, hint=_(TIMEZONE_HINT), columns=1)
    return Question(_("Which timezone are you in? Send a city, a timezone name, an "
                      "abbreviation such as EST or a UTC offset."),
                    parse=parse_timezone, hint=_(TIMEZONE_HINT))


# A button of the "which one?" question carries the zone's place in AMBIGUOUS: a button
# token cannot carry the "/" of a zone name.
_PICK = "pick:"


def chosen_timezone(ctx: Ctx, value: str) -> str | None:
    """The zone to store for the timezone step's answer; None when it was an abbreviation of
    several zones, and the step asks again which one (naming them)."""
    if value.startswith(ASK_WHICH):
        ctx.answers["timezone_which"] = value.removeprefix(ASK_WHICH)
        return None
    which = ctx.answers.pop("timezone_which", None)
    if value.startswith(_PICK) and which in AMBIGUOUS:
        return AMBIGUOUS[which][int(value.removeprefix(_PICK))][1]
    return value


TIME_CHOICES = ("07:00", "08:00", "12:00", "18:00", "20:00")


def ask_time(ctx: Ctx) -> Question:
    # No numbering of the choices: a number on its own is always an hour ("5" is 05:00).
    return Question(_("At what local time should I send your daily exercise reminder? Pick "
                      "one or type a time such as 07:30 or 7pm. A number on its own is an "
                      "hour: 7 means 07:00, 19 means 19:00."),
                    tuple(Choice(t, t) for t in TIME_CHOICES), parse=parse_time,
                    hint=_("Please send a time of day such as 07:30, 7pm or 19 (an hour)."),
                    columns=3)


def ask_days(ctx: Ctx) -> Question:
    return choices(_("On which days? Pick one or type days such as: mon-fri, weekends, or "
                     "mon wed fri."),
                   [("1234567", _("Every day")), ("12345", _("Weekdays")),
                    ("135", _("Mon, Wed, Fri"))],
                   hint=_("Please pick a button or type days such as: mon-fri, weekends, or "
                          "mon wed fri."),
                   parse=parse_days)


async def answer_timezone(ctx: Ctx, value: str) -> str | None:
    zone_name = chosen_timezone(ctx, value)
    if zone_name is None:
        return "timezone"
    ctx.answers["timezone"] = zone_name
    return "reminder_time"


async def answer_time(ctx: Ctx, value: str) -> str | None:
    ctx.answers["reminder_time"] = value
    # "5" read as 05:00 is seen at once, not at the end
    ctx.say(_("Reminder time: {time}.", time=value))
    return "reminder_days"


async def answer_days(ctx: Ctx, value: str) -> str | None:
    ctx.answers["reminder_days"] = value
    await enrol(ctx)
    return None


async def enrol(ctx: Ctx) -> None:
    """Store the questionnaire, choose the start level (R5) and schedule the first prompt."""
    a, user = ctx.answers, ctx.user
    user.knee, user.timezone = a["knee"], a["timezone"]
    user.reminder_time, user.reminder_days = a["reminder_time"], a["reminder_days"]
    user.status = "active"
    kujala = kujala_score(a["kujala"])
    for kind, answers, score in (
        ("redflag", {"answers": a["redflags"]}, None),
        ("symptoms", {"signs": a["signs"], "worst_pain": a["worst_pain"], "knee": a["knee"]},
         a["signs"].count("yes")),
        ("kujala", {"answers": a["kujala"]}, kujala),
    ):
        ctx.repo.add(Assessment(user_id=user.id, kind=kind, answers=answers, score=score,
                                created_at=ctx.now))
    ctx.repo.add(PainReport(user_id=user.id, at=ctx.now, pain=a["worst_pain"],
                            context="baseline"))
    level = start_level(a["worst_pain"])
    reason = (N_("Your worst pain last week was 6 or more, so we start gently at level 1.")
              if level == 1 else N_("We start at level 2; it goes up as your knee allows."))
    existing = await ctx.repo.program(user.id)
    if existing is None:
        program = ProgramState(user_id=user.id, level=level, started_on=ctx.today,
                               baseline_worst_pain=a["worst_pain"], updated_at=ctx.now)
        ctx.repo.add(program)
    else:  # screened again after a referral
        program = existing
        program.level, program.paused_reason, program.updated_at = level, None, ctx.now
    program.next_prompt_at = next_prompt_at(ctx.now, user.timezone, user.reminder_time,
                                            user.reminder_days)
    program.next_summary_at = next_summary_at(ctx.now, user.timezone, user.summary_day)
    ctx.repo.add(ProgressionEvent(user_id=user.id, at=ctx.now, day=ctx.today, from_level=level,
                                  to_level=level, action="start", rule="R5", message=reason))
    ctx.say(_("All set. Your knee score is {score}/100 and you have {signs} of the 5 typical "
              "knee-cap signs. {reason} I will remind you {days} at {time} ({timezone}). "
              "Send /today to see your exercises now.", score=kujala,
              signs=a["signs"].count("yes"), reason=_(reason),
              days=describe_days(user.reminder_days), time=user.reminder_time,
              timezone=user.timezone))


FLOW: Flow = {
    "consent": Step(ask_consent, answer_consent),
    **{name: _redflag_step(i) for i, name in enumerate(_numbered("redflag", len(RED_FLAGS)))},
    **{name: _sign_step(i) for i, name in enumerate(_numbered("sign", len(SIGNS)))},
    "worst_pain": Step(ask_worst_pain, answer_worst_pain),
    "knee": Step(ask_knee, answer_knee),
    **kujala_steps(_to_timezone),
    "timezone": Step(ask_timezone, answer_timezone),
    "reminder_time": Step(ask_time, answer_time),
    "reminder_days": Step(ask_days, answer_days),
}
