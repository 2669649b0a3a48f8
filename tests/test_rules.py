"""One test (or parametrized group) per rule of CLINICAL.md section 5, with its boundaries."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conversations.program.rules import (
    LevelChange,
    SessionFact,
    decide,
    needs_review,
    pain_report_decision,
    pain_zone,
    r6_restart,
    restart_level,
    start_level,
)

TODAY = date(2026, 3, 10)


def day(n: int) -> date:
    """n days before TODAY."""
    return TODAY - timedelta(days=n)


def s(n: int, pain: int | None = None, delta: int | None = None, level: int = 2,
      status: str = "done", symptom: bool = False) -> SessionFact:
    return SessionFact(day=day(n), level=level, status=status, pain_during=pain,  # type: ignore[arg-type]
                       morning_delta=delta, morning_symptom=symptom)


def regress(n: int, from_level: int, to_level: int) -> LevelChange:
    return LevelChange(day=day(n), from_level=from_level, to_level=to_level, rule="R3",
                       action="regress")


def run(sessions: list[SessionFact], stage: str, level: int = 2,
        changes: list[LevelChange] | None = None, top: int = 5):
    return decide(level=level, top_level=top, today=TODAY, sessions=sessions,
                  changes=changes or [], stage=stage)  # type: ignore[arg-type]


@pytest.mark.parametrize("pain,zone", [(0, "safe"), (2, "safe"), (3, "acceptable"),
                                       (5, "acceptable"), (6, "too much"), (10, "too much")])
def test_pain_zones(pain: int, zone: str) -> None:
    """Zones used with patients: 0-2 safe, 3-5 acceptable, above 5 too much."""
    assert pain_zone(pain) == zone


def test_pain_zone_refuses_out_of_range() -> None:
    with pytest.raises(ValueError):
        pain_zone(11)


# --- R1 progress --------------------------------------------------------------------------
def test_r1_three_easy_sessions_progress() -> None:
    """R1: 3 sessions at the current level within 7 days, pain during <= 2 and next morning
    no higher than usual -> one level up."""
    decision = run([s(4, 2, 0), s(2, 1, 0), s(0, 0, -1)], "morning")
    assert (decision.action, decision.rule, decision.level) == ("progress", "R1", 3)
    assert "level 3" in decision.message


@pytest.mark.parametrize("history", [
    [s(2, 1, 0), s(0, 0, 0)],  # only two sessions
    [s(7, 1, 0), s(2, 1, 0), s(0, 0, 0)],  # one of them 7 days ago: outside the window
    [s(4, 3, 0), s(2, 1, 0), s(0, 0, 0)],  # pain 3 is not <= 2
    [s(4, 1, None), s(2, 1, 0), s(0, 0, 0)],  # a missing morning check
    [s(4, 1, 0, level=1), s(2, 1, 0), s(0, 0, 0)],  # one at another level
    [s(4, 1, 0, status="skipped"), s(2, 1, 0), s(0, 0, 0)],
])
def test_r1_needs_all_three_conditions(history: list[SessionFact]) -> None:
    assert run(history, "morning").action == "none"


def test_r1_counts_only_sessions_after_the_last_level_change() -> None:
    history = [s(4, 1, 0), s(2, 1, 0), s(0, 0, 0)]
    assert run(history, "morning", changes=[regress(3, 3, 2)]).action == "none"


def test_r1_never_above_the_top() -> None:
    decision = run([s(4, 1, 0, level=5), s(2, 1, 0, level=5), s(0, 0, 0, level=5)], "morning",
                   level=5)
    assert decision.level == 5 and decision.action == "hold"


def test_r1_is_off_while_a_coach_holds_the_progression() -> None:
    """CLINICAL.md 5b: held, three easy sessions keep the level; R3 and R4 still act, and a
    coach's level change starts R1's count afresh."""
    easy = [s(4, 2, 0), s(2, 1, 0), s(0, 0, -1)]
    held = decide(level=2, top_level=5, today=TODAY, sessions=easy, changes=[],
                  stage="morning", held=True)
    assert (held.action, held.rule, held.level) == ("hold", "5b", 2)
    assert "stay at level 2" in held.message
    worse = decide(level=2, top_level=5, today=TODAY, sessions=[*easy[:2], s(0, 0, 2)],
                   changes=[], stage="morning", held=True)
    assert (worse.action, worse.rule) == ("regress", "R3")
    spike = decide(level=2, top_level=5, today=TODAY, sessions=[s(0, 8)], changes=[],
                   stage="during", held=True)
    assert (spike.action, spike.rule) == ("stop", "R4")
    set_by_coach = LevelChange(day=day(1), from_level=3, to_level=2, rule="coach",
                               action="set")
    assert run(easy, "morning", changes=[set_by_coach]).action == "none"


def test_r1_is_not_decided_before_the_morning_check() -> None:
    assert run([s(4, 1, 0), s(2, 1, 0), s(0, 0, None)], "during").action == "none"


# --- R2 hold ------------------------------------------------------------------------------
@pytest.mark.parametrize("pain,action", [(2, "none"), (3, "hold"), (5, "hold"), (6, "regress")])
def test_r2_pain_during_3_to_5_holds(pain: int, action: str) -> None:
    """R2: pain during 3-5 -> stay; tell the patient this is expected."""
    decision = run([s(0, pain)], "during")
    assert decision.action == action
    if action == "hold":
        assert decision.rule == "R2" and decision.level == 2 and "acceptable" in decision.message


@pytest.mark.parametrize("delta,action", [(0, "none"), (1, "hold"), (2, "regress")])
def test_r2_next_morning_up_by_1_holds(delta: int, action: str) -> None:
    """R2: next morning up by 1 -> stay."""
    assert run([s(0, 2, delta)], "morning").action == action


# --- R3 regress ---------------------------------------------------------------------------
def test_r3_pain_during_above_5_regresses() -> None:
    """R3: pain during > 5 -> one level down."""
    decision = run([s(0, 6)], "during", level=3)
    assert (decision.action, decision.rule, decision.level) == ("regress", "R3", 2)


def test_r3_morning_up_by_2_regresses() -> None:
    """R3: next-morning pain up by 2 or more over usual -> one level down."""
    decision = run([s(0, 1, 3)], "morning", level=3)
    assert (decision.action, decision.rule, decision.level) == ("regress", "R3", 2)


@pytest.mark.parametrize("this_week,action", [(4, "regress"), (3, "hold")])
def test_r3_weekly_mean_rise_of_2_regresses(this_week: int, action: str) -> None:
    """R3: this week's mean pain 2 or more above last week's -> one level down."""
    # Last week's mean is 1; this week's is (2 + this_week) / 2: 3.0 regresses, 2.5 does not
    # (and pain 3 alone is R2's hold).
    history = [s(10, 1, 0), s(8, 1, 0), s(3, 2, 0), s(0, this_week)]
    assert run(history, "during", level=3).action == action


def test_r3_weekly_rule_needs_both_weeks() -> None:
    assert run([s(3, 1), s(0, 2)], "during").action == "none"


def test_r3_never_below_level_1() -> None:
    decision = run([s(0, 7, level=1)], "during", level=1)
    assert (decision.action, decision.level) == ("regress", 1)


def test_r3_pain_is_not_counted_again_at_the_morning_check() -> None:
    """A session's pain during is judged once, when reported, not again next morning."""
    assert run([s(0, 7, 0)], "morning", level=3).action == "none"


# --- R4 stop and refer --------------------------------------------------------------------
@pytest.mark.parametrize("pain,action", [(7, "regress"), (8, "stop"), (10, "stop")])
def test_r4_pain_8_or_more_stops(pain: int, action: str) -> None:
    """R4: pain >= 8 at any report -> pause, advise a clinician, alert the coach."""
    decision = run([s(0, pain)], "during")
    assert decision.action == action
    if action == "stop":
        assert decision.refer and decision.urgent and decision.rule == "R4"


def test_r4_adhoc_pain_report() -> None:
    assert pain_report_decision(7, 2).action == "none"
    stop = pain_report_decision(8, 2)
    assert (stop.action, stop.rule, stop.refer, stop.urgent) == ("stop", "R4", True, True)


def test_r4_new_red_flag_symptom_stops() -> None:
    """R4: a new red-flag symptom (locking, giving way, new marked swelling)."""
    decision = run([s(0, 1, 0, symptom=True)], "morning")
    assert (decision.action, decision.rule, decision.urgent) == ("stop", "R4", True)


@pytest.mark.parametrize("days_ago,action", [(14, "stop"), (15, "regress")])
def test_r4_second_regression_at_level_1_within_14_days(days_ago: int, action: str) -> None:
    """R4: a regression at level 1 twice within 14 days."""
    decision = run([s(0, 6, level=1)], "during", level=1, changes=[regress(days_ago, 1, 1)])
    assert decision.action == action


def test_r4_earlier_regression_from_level_2_does_not_count() -> None:
    decision = run([s(0, 6, level=1)], "during", level=1, changes=[regress(3, 2, 1)])
    assert decision.action == "regress"


# --- R5 start level -----------------------------------------------------------------------
@pytest.mark.parametrize("worst,level", [(0, 2), (5, 2), (6, 1), (10, 1)])
def test_r5_start_level(worst: int, level: int) -> None:
    """R5: worst weekly pain >= 6 -> level 1; otherwise level 2."""
    assert start_level(worst) == level


# --- R6 missed days -----------------------------------------------------------------------
@pytest.mark.parametrize("missed,expected", [(6, None), (7, 2)])
def test_r6_seven_missed_days_restart_one_level_lower(missed: int, expected: int | None
                                                      ) -> None:
    """R6: missed days never move the level by themselves; 7 missed in a row -> the next
    session is offered one level lower."""
    history = [s(10, 1, 0), *[s(n, status="missed") for n in range(1, missed + 1)]]
    assert restart_level(level=3, today=TODAY, sessions=history) == expected


def test_r6_never_below_level_1_and_missed_days_do_not_decide() -> None:
    history = [s(n, status="missed", level=1) for n in range(1, 8)]
    assert restart_level(level=1, today=TODAY, sessions=history) == 1
    assert run(history, "during", level=1).action == "none"


@pytest.mark.parametrize("back,opening", [
    (True, "Welcome back. After a week away we restart one level lower, at level 2"),
    (False, "After 7 missed days in a row we restart one level lower, at level 2")])
def test_r6_restart_is_the_progression_event_and_its_wording(back: bool, opening: str
                                                             ) -> None:
    """The one R6 helper that /today and the tick both apply: the event's fields, worded for
    a patient who is back (/today) or may still be away (the prompt)."""
    history = [s(n, status="missed") for n in range(1, 8)]
    restart = r6_restart(level=3, today=TODAY, sessions=history, back=back)
    assert restart is not None
    assert (restart.day, restart.from_level, restart.to_level, restart.action, restart.rule) == (
        TODAY, 3, 2, "restart", "R6")
    assert restart.message.startswith(opening)


def test_r6_restart_is_none_when_the_level_stays() -> None:
    """Six missed days, or seven at level 1: nothing to re-start."""
    six = [s(n, status="missed") for n in range(1, 7)]
    assert r6_restart(level=3, today=TODAY, sessions=six, back=True) is None
    seven_at_1 = [s(n, status="missed", level=1) for n in range(1, 8)]
    assert r6_restart(level=1, today=TODAY, sessions=seven_at_1, back=False) is None


# --- R7 flare that does not settle ----------------------------------------------------------
def test_r7_three_mornings_worse_on_the_lowered_dose() -> None:
    """R7: next-morning pain still above usual 3 days running on the lowered dose -> pause and
    advise a clinician, without the urgency of R4."""
    history = [s(5, 7, 2), s(3, 2, 1), s(2, 2, 1), s(1, 2, 1)]
    decision = run(history, "morning", level=1, changes=[regress(4, 2, 1)])
    assert (decision.action, decision.rule, decision.refer, decision.urgent) == (
        "stop", "R7", True, False)


@pytest.mark.parametrize("history", [
    [s(3, 2, 1), s(2, 2, 0), s(1, 2, 1)],  # one morning settled
    [s(4, 2, 1), s(2, 2, 1), s(1, 2, 1)],  # not three days running
    [s(2, 2, 1), s(1, 2, 1)],  # only two
])
def test_r7_needs_three_running(history: list[SessionFact]) -> None:
    decision = run(history, "morning", level=1, changes=[regress(5, 2, 1)])
    assert decision.rule != "R7"


def test_r7_needs_a_lowered_dose() -> None:
    history = [s(3, 2, 1), s(2, 2, 1), s(1, 2, 1)]
    assert run(history, "morning").rule != "R7"


# --- R8 six-week review -------------------------------------------------------------------
def _weeks(adherent: int, total: int = 42) -> list[SessionFact]:
    return [s(n, 2, 0) if n <= adherent else s(n, status="missed") for n in range(1, total + 1)]


@pytest.mark.parametrize("enrolled_days,adherent,expected", [
    (41, 42, False),  # not six weeks yet
    (42, 30, True),  # 30/42 = 71%
    (42, 29, False),  # 29/42 = 69%
])
def test_r8_six_week_review(enrolled_days: int, adherent: int, expected: bool) -> None:
    """R8: after 6 weeks with adherence >= 70% and no meaningful improvement -> recommend a
    clinician review."""
    assert needs_review(enrolled_on=day(enrolled_days), today=TODAY,
                        sessions=_weeks(adherent), baseline_worst=6, current_worst=5,
                        baseline_kujala=60, current_kujala=65) is expected


@pytest.mark.parametrize("worst,kujala", [(4, 65), (5, 70)])
def test_r8_meaningful_improvement_needs_no_review(worst: int, kujala: int) -> None:
    """Worst pain down 2 or Kujala up 10 is meaningful improvement."""
    assert not needs_review(enrolled_on=day(50), today=TODAY, sessions=_weeks(42),
                            baseline_worst=6, current_worst=worst, baseline_kujala=60,
                            current_kujala=kujala)


# --- any history ----------------------------------------------------------------------------
facts = st.builds(
    SessionFact, day=st.integers(0, 30).map(day), level=st.integers(1, 5),
    status=st.sampled_from(["done", "partial", "skipped", "missed"]),
    pain_during=st.none() | st.integers(0, 10), morning_delta=st.none() | st.integers(-3, 5),
    morning_symptom=st.booleans())
changes = st.builds(LevelChange, day=st.integers(0, 30).map(day), from_level=st.integers(1, 5),
                    to_level=st.integers(1, 5), rule=st.just("R3"),
                    action=st.sampled_from(["progress", "regress", "restart"]))


@given(level=st.integers(1, 5), history=st.lists(facts, max_size=20),
       moves=st.lists(changes, max_size=5), stage=st.sampled_from(["during", "morning"]))
def test_any_history_moves_at_most_one_level_within_bounds(
        level: int, history: list[SessionFact], moves: list[LevelChange], stage: str) -> None:
    decision = decide(level=level, top_level=5, today=TODAY, sessions=history, changes=moves,
                      stage=stage)  # type: ignore[arg-type]
    assert 1 <= decision.level <= 5
    assert abs(decision.level - level) <= 1
    assert (decision.action == "none") == (decision.rule is None)
