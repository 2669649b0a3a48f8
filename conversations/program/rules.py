"""The pain monitoring model of CLINICAL.md section 5 as pure functions: no I/O, no clock.

Each rule is its own function named after it; `decide` applies them in order of precedence
(R4 > R7 > R3 > R2 > R1). A decision is taken at two stages of a session: right after the
report of pain during it, and after the next-morning check, each stage looking only at what
it newly learned, so a session's pain is never counted twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from statistics import mean
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from conversations.i18n import N_, _
from conversations.said import Said, wording

Status = Literal["prompted", "done", "partial", "skipped", "missed"]
Stage = Literal["during", "morning"]
Pain = Field(ge=0, le=10)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SessionFact(_Frozen):
    model_config = ConfigDict(from_attributes=True)  # read from a stored session row

    day: date
    level: int = Field(ge=1)
    status: Status
    pain_during: int | None = Pain
    morning_delta: int | None = None  # next-morning pain minus usual; > 0 is worse
    morning_symptom: bool = False  # new swelling, locking or giving way at the morning check


class LevelChange(_Frozen):
    """A decision that moved, or was meant to move, the level (a regress at level 1 too)."""

    day: date
    from_level: int = Field(ge=1)
    to_level: int = Field(ge=1)
    rule: str
    action: Literal["progress", "regress", "restart", "set"]  # set: by a coach


class Decision(_Frozen):
    action: Literal["progress", "hold", "regress", "stop", "none"]
    rule: str | None
    level: int = Field(ge=1)
    message: str
    refer: bool = False  # pause the program, advise a clinician, alert the coach
    urgent: bool = False
    # A referral holds the program for a clinician; a pain pause also needs the pain to settle.
    hold: Literal["referral", "pain"] = "pain"
    # What happened, for the coach, read after the patient's name; worded when read.
    for_coach: Said = Said(id="")


NONE_MESSAGE = ""


def pain_zone(pain: int) -> Literal["safe", "acceptable", "too much"]:
    """0-2 safe, 3-5 acceptable, above 5 too much (Silbernagel and Crossley 2015)."""
    if not 0 <= pain <= 10:
        raise ValueError("pain is 0-10")
    return "safe" if pain <= 2 else "acceptable" if pain <= 5 else "too much"


def start_level(worst_weekly_pain: int) -> int:
    """R5: worst weekly pain >= 6 starts at level 1, otherwise level 2."""
    if not 0 <= worst_weekly_pain <= 10:
        raise ValueError("pain is 0-10")
    return 1 if worst_weekly_pain >= 6 else 2


def _latest(sessions: Sequence[SessionFact]) -> SessionFact | None:
    return max(sessions, key=lambda s: s.day, default=None)


def _none(level: int) -> Decision:
    return Decision(action="none", rule=None, level=level, message=NONE_MESSAGE)


def r4_stop(level: int, today: date, latest: SessionFact, changes: Sequence[LevelChange],
            stage: Stage, would_regress: bool) -> Decision | None:
    """R4: pain >= 8, a new red-flag symptom, or a second regression at level 1 in 14 days."""
    reason: str | None = None
    hold: Literal["referral", "pain"] = "pain"
    coach = Said(id="")
    if stage == "during" and latest.pain_during is not None and latest.pain_during >= 8:
        reason = _("Pain of {pain}/10 is more than exercise should cause.",
                   pain=latest.pain_during)
        coach = wording(N_("reported pain {pain}/10 during the session"), pain=latest.pain_during)
    elif stage == "morning" and latest.morning_symptom:
        reason = _("New swelling, locking or giving way needs a clinician to look at the knee.")
        coach = wording(N_("reported new swelling, locking or giving way at the next-morning "
                        "check"))
        hold = "referral"
    elif would_regress and level == 1 and any(
            c.action == "regress" and c.from_level == 1 and today - c.day <= timedelta(days=14)
            for c in changes):
        reason = _("The knee has flared twice in two weeks even at the easiest level.")
        coach = wording(N_("flared twice within two weeks at level 1"))
    if reason is None:
        return None
    return Decision(action="stop", rule="R4", level=level, refer=True, urgent=True,
                    message=_("{reason} I have paused your program.", reason=reason), hold=hold,
                    for_coach=coach)


def r7_flare(level: int, sessions: Sequence[SessionFact], changes: Sequence[LevelChange]
             ) -> Decision | None:
    """R7: next-morning pain still above usual 3 days running on the lowered dose."""
    regressions = [c for c in changes if c.action == "regress"]
    if not regressions:
        return None
    since = max(c.day for c in regressions)
    checked = sorted((s for s in sessions if s.day > since and s.morning_delta is not None),
                     key=lambda s: s.day)[-3:]
    if len(checked) < 3 or any(s.morning_delta <= 0 for s in checked):  # type: ignore[operator]
        return None
    if (checked[-1].day - checked[0].day).days != 2:
        return None  # not three days running
    return Decision(action="stop", rule="R7", level=level, refer=True,
                    message=_("Your knee has stayed worse than usual for three mornings even "
                              "on the lighter dose, so I have paused your program."),
                    for_coach=wording(N_("had next-morning pain above usual three days running "
                                      "on the lowered dose")))


def _week_means(sessions: Sequence[SessionFact], today: date) -> tuple[float, float] | None:
    def pains(first: int, last: int) -> list[int]:
        return [s.pain_during for s in sessions if s.pain_during is not None
                and first <= (today - s.day).days <= last]

    this_week, last_week = pains(0, 6), pains(7, 13)
    if not this_week or not last_week:
        return None
    return mean(this_week), mean(last_week)


def r3_regress(level: int, today: date, latest: SessionFact, sessions: Sequence[SessionFact],
               stage: Stage) -> Decision | None:
    """R3: pain during > 5, morning pain up 2+, or this week's mean pain 2+ above last week's."""
    reason = None
    if stage == "during" and latest.pain_during is not None and latest.pain_during > 5:
        reason = _("Pain of {pain}/10 during the exercises is more than 5",
                   pain=latest.pain_during)
    elif stage == "morning" and latest.morning_delta is not None and latest.morning_delta >= 2:
        reason = _("Your knee was clearly worse the next morning")
    elif stage == "during":
        means = _week_means(sessions, today)
        if means is not None and means[0] - means[1] >= 2:
            reason = _("Your pain this week is 2 points higher than last week")
    if reason is None:
        return None
    lower = max(1, level - 1)
    then = (_("so we go back to level {level}.", level=lower) if lower < level else
            _("so we stay at level 1, the easiest, and keep it gentle."))
    return Decision(action="regress", rule="R3", level=lower,
                    message=_("{reason}, {then}", reason=reason, then=then))


def r2_hold(level: int, latest: SessionFact, stage: Stage) -> Decision | None:
    """R2: pain during 3-5, or next-morning pain up by 1: stay, this is expected."""
    if stage == "during" and latest.pain_during is not None and 3 <= latest.pain_during <= 5:
        reason = _("Pain of {pain}/10 is acceptable during these exercises",
                   pain=latest.pain_during)
    elif stage == "morning" and latest.morning_delta == 1:
        reason = _("A little more soreness the next morning is expected")
    else:
        return None
    return Decision(action="hold", rule="R2", level=level,
                    message=_("{reason}, so we stay at level {level} for now.", reason=reason,
                              level=level))


def r1_progress(level: int, top_level: int, today: date, sessions: Sequence[SessionFact],
                changes: Sequence[LevelChange]) -> Decision | None:
    """R1: 3 sessions at this level in the last 7 days, each with pain during <= 2 and a
    next-morning pain no higher than usual: one level up (never above the top)."""
    since = max((c.day for c in changes), default=date.min)
    easy = [s for s in sessions
            if s.level == level and s.status in ("done", "partial") and s.day >= since
            and (today - s.day).days <= 6 and s.pain_during is not None and s.pain_during <= 2
            and s.morning_delta is not None and s.morning_delta <= 0]
    if len(easy) < 3:
        return None
    if level >= top_level:
        return Decision(action="hold", rule="R1", level=level,
                        message=_("Your knee is handling the top level well: keep going, and "
                                  "you may add reps up to 15."))
    return Decision(action="progress", rule="R1", level=level + 1,
                    message=_("Three easy sessions in a row with no extra pain the next "
                              "morning, so you move up to level {level}.", level=level + 1))


def decide(*, level: int, top_level: int, today: date, sessions: Sequence[SessionFact],
           changes: Sequence[LevelChange], stage: Stage, held: bool = False) -> Decision:
    """What the newest information means for the program. `stage` says what is new: the
    pain during the latest session, or its next-morning check. `held`: a coach holds the
    progression (CLINICAL.md 5b): R1 is off, R2-R4 and R7 work as ever."""
    latest = _latest(sessions)
    if latest is None:
        return _none(level)
    regress = r3_regress(level, today, latest, sessions, stage)
    stop = r4_stop(level, today, latest, changes, stage, would_regress=regress is not None)
    if stop:
        return stop
    if stage == "morning" and (flare := r7_flare(level, sessions, changes)):
        return flare
    if regress:
        return regress
    if hold := r2_hold(level, latest, stage):
        return hold
    if stage == "morning" and (progress := r1_progress(level, top_level, today, sessions,
                                                       changes)):
        return held_progress(level) if held and progress.action == "progress" else progress
    return _none(level)


def held_progress(level: int) -> Decision:
    """R1 would move the patient up, but their coach holds the progression."""
    return Decision(action="hold", rule="5b", level=level,
                    message=_("Three easy sessions in a row with no extra pain the next "
                              "morning. Your coach has asked you to stay at level {level} for "
                              "now.", level=level))


def pain_report_decision(pain: int, level: int) -> Decision:
    """An ad-hoc /pain report: R4 at 8 or more, otherwise nothing changes."""
    if pain_zone(pain) == "too much" and pain >= 8:
        return Decision(action="stop", rule="R4", level=level, refer=True, urgent=True,
                        message=_("Pain of {pain}/10 needs a clinician to look at your knee.",
                                  pain=pain),
                        for_coach=wording(N_("reported pain {pain}/10 (a /pain report)"),
                                       pain=pain))
    return _none(level)


def restart_level(*, level: int, today: date, sessions: Sequence[SessionFact]) -> int | None:
    """R6: missed days never move the level by themselves, but after 7 missed in a row the
    next session is offered one level lower, as a re-start."""
    before = sorted((s for s in sessions if s.day < today), key=lambda s: s.day)[-7:]
    if len(before) == 7 and all(s.status == "missed" for s in before):
        return max(1, level - 1)
    return None


class Restart(_Frozen):
    """R6 applied: the next session, on `day`, is offered at `to_level`; the fields of its
    progression event."""

    day: date
    from_level: int = Field(ge=1)
    to_level: int = Field(ge=1)
    action: Literal["restart"] = "restart"
    rule: Literal["R6"] = "R6"
    message: str


def r6_restart(*, level: int, today: date, sessions: Sequence[SessionFact], back: bool
               ) -> Restart | None:
    """R6 for the session of `today`, None when the level stays. `back`: the patient opened
    the session themselves; otherwise the prompt tells someone who may still be away."""
    lower = restart_level(level=level, today=today, sessions=sessions)
    if lower is None or lower == level:
        return None
    message = (_("Welcome back. After a week away we restart one level lower, at level "
                 "{level}, to let the knee get used to the exercises again.", level=lower)
               if back else
               _("After 7 missed days in a row we restart one level lower, at level {level}, "
                 "to let the knee get used to the exercises again.", level=lower))
    return Restart(day=today, from_level=level, to_level=lower, message=message)


def needs_review(*, enrolled_on: date, today: date, sessions: Sequence[SessionFact],
                 baseline_worst: int, current_worst: int | None, baseline_kujala: int | None,
                 current_kujala: int | None) -> bool:
    """R8: after 6 weeks with adherence >= 70% and no meaningful improvement (worst pain down
    < 2 and Kujala up < 10), recommend a clinician review; the program continues."""
    if (today - enrolled_on).days < 42:
        return False
    scheduled = [s for s in sessions if not (s.day == today and s.status == "prompted")]
    if not scheduled:
        return False
    adherence = sum(s.status in ("done", "partial") for s in scheduled) / len(scheduled)
    if adherence < 0.7:
        return False
    pain_better = current_worst is not None and baseline_worst - current_worst >= 2
    kujala_better = (current_kujala is not None and baseline_kujala is not None
                     and current_kujala - baseline_kujala >= 10)
    return not (pain_better or kujala_better)
