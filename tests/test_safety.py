"""CLINICAL.md 2a (how the screen is worded), 2b (warning signs given later) and 5a / R9 (holds
and who lifts them), each rule through the engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_SCREEN, KUJALA_AT, SAFE_ANSWERS, WORST_AT, Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.messages import ButtonToken
from conversations.program.data import Program
from conversations.program.screening import KUJALA, RED_FLAGS, WARNING_ANSWERS
from conversations.said import shown
from storage.models import Assessment, Hold, Outbox, ProgramState, ProgressionEvent, User

NEGATION = re.compile(r"\bnot\b|n't\b|\bcannot\b|\bunable\b|\bnever\b|\bno\b", re.IGNORECASE)
BASELINE = CLEAN_SCREEN[:KUJALA_AT]  # consent, screen, signs, worst pain 4, knee


async def _user(sessions: async_sessionmaker[DbSession], user_id: str) -> User:
    async with sessions() as db:
        return (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()


async def _rows(sessions: async_sessionmaker[DbSession], model: type, **where: object
                ) -> list:
    async with sessions() as db:
        return list((await db.scalars(select(model).filter_by(**where)
                                      .order_by(model.id))).all())  # type: ignore[attr-defined]


async def _program(sessions: async_sessionmaker[DbSession], user_id: str) -> ProgramState | None:
    user = await _user(sessions, user_id)
    async with sessions() as db:
        return await db.get(ProgramState, user.id)


async def _coach_texts(sessions: async_sessionmaker[DbSession], coach: str = "coach"
                       ) -> list[str]:
    return [r.payload["text"] for r in await _rows(sessions, Outbox, chat_id=coach,
                                                   kind="alert")]


async def make_coach(engine: Engine, sessions: async_sessionmaker[DbSession], *patients: str,
                     coach: str = "coach") -> Patient:
    """A coach (by role, as /grant sets it) with the given patients."""
    person = Patient(engine, coach)
    await person.send("/start")
    async with sessions() as db, db.begin():
        row = (await db.scalars(select(User).filter_by(channel_user_id=coach))).one()
        row.role, row.status = "coach", "staff"
        for name in patients:
            (await db.scalars(select(User).filter_by(channel_user_id=name))).one().coach_id = (
                row.id)
    return person


async def patient_with_coach(engine: Engine, sessions: async_sessionmaker[DbSession],
                             user_id: str = "u1") -> tuple[Patient, Patient]:
    patient = Patient(engine, user_id)
    await patient.send("/start")
    await patient.press("I agree")  # the coach is attached before the screen
    coach = await make_coach(engine, sessions, user_id)
    return patient, coach


# --- 2a: the screen's wording ----------------------------------------------------------------
@pytest.mark.parametrize("flag", RED_FLAGS, ids=lambda q: q.text[:30])
def test_2a_every_screen_question_is_asked_positively(flag: object) -> None:
    """2a: "asked positively, no double negatives ("Can you not ..." is wrong)"."""
    assert not NEGATION.search(flag.text), flag.text  # type: ignore[attr-defined]


@pytest.mark.parametrize("flag", RED_FLAGS, ids=lambda q: q.text[:30])
def test_2a_every_screen_question_is_one_question(flag: object) -> None:
    """2a: "One idea per question": one question mark, one sentence."""
    text = flag.text  # type: ignore[attr-defined]
    assert text.count("?") == 1 and text.endswith("?") and ". " not in text


def test_2a_the_answer_buttons_restate_the_warning() -> None:
    """2a: "The answer buttons restate the answer ("Yes, it locks or gives way" / "No")"."""
    assert RED_FLAGS[1].yes == "Yes, it locks or gives way" and RED_FLAGS[1].no == "No"
    for flag in RED_FLAGS:
        warning = flag.label(flag.warning)
        assert warning not in ("Yes", "No") and len(warning.split()) > 1, flag.text
        assert flag.yes.startswith("Yes") and flag.no.startswith("No")


async def test_2a_the_screen_shows_the_restating_buttons(engine: Engine) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.press("I agree")
    for n, flag in enumerate(RED_FLAGS):
        assert flag.text in patient.text
        assert [b.label for b in patient.buttons] == [flag.yes, flag.no]
        await patient.press(SAFE_ANSWERS[n])
    assert "no warning signs" in patient.text


async def test_2a_someone_who_cannot_walk_answering_no_is_referred(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """The seen case: "Can you not take four steps ...?" answered "No" by someone who cannot
    walk went on to a program. Asked positively, their "no" is the warning."""
    walk = next(i for i, q in enumerate(RED_FLAGS) if "four steps" in q.text)
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all("I agree", *SAFE_ANSWERS[:walk])
    await patient.send("No")
    assert "will not give you an exercise program" in patient.text
    assert (await _user(sessions, "u1")).status == "referred"


@pytest.mark.parametrize("index", range(len(RED_FLAGS)))
async def test_2_each_warning_answer_on_the_screen_refers_and_names_it(
        engine: Engine, sessions: async_sessionmaker[DbSession], index: int) -> None:
    patient, _ = await patient_with_coach(engine, sessions)
    await patient.answer_all(*SAFE_ANSWERS[:index])
    flag = RED_FLAGS[index]
    await patient.press(flag.label(flag.warning))
    assert f'You answered: "{flag.label(flag.warning)}"' in patient.text
    assert "will not give you an exercise program" in patient.text
    assert await _program(sessions, "u1") is None
    [hold] = await _rows(sessions, Hold)
    assert (hold.kind, hold.rule, hold.level, hold.lifted_at) == ("referral", "screen", None,
                                                                  None)
    [referral] = await _rows(sessions, Assessment, kind="redflag")
    assert referral.answers["flag"] == index + 1
    [alert] = await _coach_texts(sessions)
    assert alert.startswith(f'Name of u1 (console:u1) answered "{flag.label(flag.warning)}"')
    assert alert.endswith("until you clear it (/clear console:u1).")


# --- 2b: warning signs given later -----------------------------------------------------------
def _kujala_until(sign_question: str, sign_answer: str) -> list[str]:
    """CLEAN_SCREEN's Kujala answers up to the given item, which gets the given answer."""
    item = next(i for i, (text, _) in enumerate(KUJALA) if text == sign_question)
    return [*CLEAN_SCREEN[KUJALA_AT:KUJALA_AT + item], sign_answer]


@pytest.mark.parametrize("sign", WARNING_ANSWERS, ids=lambda s: f"{s.question[:12]}-{s.answer}")
async def test_2b_each_kujala_warning_at_baseline_ends_onboarding_like_a_screen_yes(
        engine: Engine, sessions: async_sessionmaker[DbSession], sign: object) -> None:
    """2b: "Each such answer ends onboarding like a screen "yes": a clear message naming the
    answer that caused it, a referral recorded with its reason, the coach alerted, no
    program." (the limp with the worst pain of 6 it needs)."""
    patient, _ = await patient_with_coach(engine, sessions)
    baseline = list(BASELINE[1:])
    baseline[WORST_AT - 1] = "6" if sign.with_pain else "5"  # type: ignore[attr-defined]
    await patient.answer_all(*baseline, *_kujala_until(sign.question, sign.answer))  # type: ignore[attr-defined]
    assert f'"{sign.answer}" to "{sign.question}"' in patient.text  # type: ignore[attr-defined]
    assert "will not give you an exercise program" in patient.text
    assert "All set" not in patient.text and not patient.buttons
    assert (await _user(sessions, "u1")).status == "referred"
    assert await _program(sessions, "u1") is None
    [referral] = await _rows(sessions, Assessment, kind="redflag")
    assert referral.answers["rule"] == "2b" and sign.answer in referral.answers["answered"]  # type: ignore[attr-defined]
    [hold] = await _rows(sessions, Hold)
    assert (hold.rule, hold.kind) == ("2b", "referral") and sign.answer in hold.reason  # type: ignore[attr-defined]
    [alert] = await _coach_texts(sessions)
    assert sign.answer in alert and "(/clear console:u1)" in alert  # type: ignore[attr-defined]
    await patient.send("/today")
    assert "Today's session" not in patient.text


async def test_2b_a_constant_limp_with_less_pain_is_no_warning(engine: Engine) -> None:
    """2b: "A limp that is "constant" together with pain 6 or more" -- not with 5."""
    patient = Patient(engine, "u1")
    await patient.send("/start")
    baseline = list(CLEAN_SCREEN)
    baseline[WORST_AT], baseline[KUJALA_AT] = "5", "Constant"
    await patient.answer_all(*baseline)
    assert "All set" in patient.text


async def test_2b_the_seen_case_all_no_then_kujala_warning_answers(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """Seen: every screen question "No", worst pain 5, then Kujala "Weight bearing impossible",
    "More than two dislocations", "Constant and severe" pain: got "Your knee score is 0/100
    ... We start at level 2". Now the first of them ends onboarding."""
    patient = Patient(engine, "u1")
    await patient.send("/start")
    baseline = list(BASELINE)
    baseline[WORST_AT] = "5"
    await patient.answer_all(*baseline, "None", "Weight bearing impossible")
    assert '"Weight bearing impossible" to "Can you put weight on the leg?"' in patient.text
    assert "knee score is" not in patient.text and "level 2" not in patient.text
    assert (await _user(sessions, "u1")).status == "referred"
    assert await _program(sessions, "u1") is None


async def test_2b_worst_pain_of_8_at_baseline_is_assessment_first(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """2b: "worst weekly pain 8 or more at baseline -> R4 at the start (assessment first)"."""
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*BASELINE[:WORST_AT], "8")
    assert "worst pain of 8/10" in patient.text
    assert "will not give you an exercise program" in patient.text
    assert (await _user(sessions, "u1")).status == "referred"
    [hold] = await _rows(sessions, Hold)
    assert hold.rule == "2b"


async def test_2b_a_warning_in_the_4_weekly_kujala_pauses_the_program(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """2b: "wherever they are given (baseline, the 4-weekly Kujala, ...)"."""
    patient = await enrolled(engine, "u1")
    await make_coach(engine, sessions, "u1")
    clock.advance(timedelta(days=28))
    await patient.send("/today")
    assert "Four weeks have passed" in patient.text
    await patient.answer_all("Now", *_kujala_until("Swelling?", "Constant"))
    assert '"Constant" to "Swelling?"' in patient.text and "paused your program" in patient.text
    assert (await _user(sessions, "u1")).status == "referred"
    program = await _program(sessions, "u1")
    assert program is not None and program.next_prompt_at is None
    assert program.paused_reason == "2b"
    [alert] = await _coach_texts(sessions)
    assert alert.startswith('Name of u1 (console:u1) answered "Constant" to "Swelling?" in the '
                            "4-weekly knee score; their program is paused until you clear it")
    await patient.send("/today")
    assert "Today's session" not in patient.text


@pytest.mark.parametrize("during", [False, True], ids=["pain report", "session report"])
async def test_2b_a_pain_report_with_a_constant_limp_refers(
        engine: Engine, sessions: async_sessionmaker[DbSession], during: bool) -> None:
    """2b: "A limp that is "constant" together with pain 6 or more", on a pain report of an
    enrolled patient (whose baseline pain was lower)."""
    patient = Patient(engine, "u1")
    await patient.send("/start")
    screen = list(CLEAN_SCREEN)
    screen[WORST_AT], screen[KUJALA_AT] = "5", "Constant"
    await patient.answer_all(*screen)
    assert "All set" in patient.text
    if during:
        await patient.send("/today")
        await patient.press("Done")
    else:
        await patient.send("/pain")
    await patient.press("6")
    assert '"Constant" to "Do you limp?"' in patient.text
    assert (await _user(sessions, "u1")).status == "referred"
    [hold] = await _rows(sessions, Hold)
    assert (hold.rule, hold.kind) == ("2b", "referral")
    # No regression was applied on top: the hold restarts from the level it held.
    assert hold.level == 2


# --- R9: who lifts a hold ----------------------------------------------------------------------
async def pain_paused(engine: Engine, sessions: async_sessionmaker[DbSession],
                      coach: bool = True) -> tuple[Patient, Patient | None]:
    """An enrolled patient (level 2) paused by R4 for pain 8/10 during a session."""
    patient = await enrolled(engine, "u1")
    person = await make_coach(engine, sessions, "u1") if coach else None
    await patient.send("/today")
    await patient.press("Done")
    await patient.press("8")
    assert "paused your program" in patient.text
    return patient, person


async def test_r9_a_pain_pause_alert_is_written_for_the_coach(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """Coach alerts are written for the coach, not in the patient's words."""
    await pain_paused(engine, sessions)
    [alert] = await _coach_texts(sessions)
    assert alert == ("Name of u1 (console:u1) reported pain 8/10 during the session; their "
                     "program is paused until you clear it (/clear console:u1).")
    assert "I have paused" not in alert


async def test_r9_with_a_coach_resume_asks_the_coach_and_lifts_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """R9: "A patient with a coach: only the coach (or an admin). The patient's /resume tells
    them it is waiting for their coach and sends the coach a request with the reason for the
    hold and the patient's latest answers". The seen case: /resume and "1" gave "Welcome
    back. You continue at level 1" with no alert to the coach."""
    patient, _ = await pain_paused(engine, sessions)
    clock.advance(timedelta(days=1))
    await patient.send("/resume")
    assert "until your coach clears it" in patient.text and "sent them" in patient.text
    await patient.send("1")
    await patient.send("yes")
    assert "Welcome back" not in patient.text
    assert (await _user(sessions, "u1")).status == "referred"
    [_, request] = await _rows(sessions, Outbox, chat_id="coach", kind="alert")
    text = request.payload["text"]
    assert text.startswith("Name of u1 (console:u1) asks to resume.")
    assert "reported pain 8/10 during the session (rule R4)" in text
    assert "last pain 8/10" in text and "Kujala" in text and "/clear console:u1" in text
    labels = [b["label"] for row in request.payload["buttons"] for b in row]
    assert labels == ["Clear, restart at level 1"]  # one below level 2
    await patient.send("/resume")  # asked again the same day: not sent twice
    assert "already" in patient.text
    assert len(await _rows(sessions, Outbox, chat_id="coach", kind="alert")) == 2


async def test_r9_the_coach_clears_with_a_command_and_the_patient_restarts_lower(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """R9: "the coach clears it"; "Restart: one level lower than before the hold (never below
    1)"; "Every lift is stored (who, when, why)"."""
    patient, coach = await pain_paused(engine, sessions)
    assert coach is not None
    await coach.send("/clear console:u1")
    assert "Cleared the hold of Name of u1 (console:u1): they restart at level 1" in coach.text
    user = await _user(sessions, "u1")
    assert user.status == "active"
    program = await _program(sessions, "u1")
    assert program is not None and program.level == 1 and program.next_prompt_at is not None
    [hold] = await _rows(sessions, Hold)
    assert (hold.lifted_by, shown(hold.lift_reason), hold.restart_level) == (
        "console:coach", "cleared by their coach", 1)
    assert hold.lifted_at is not None
    [event] = await _rows(sessions, ProgressionEvent, action="restart")
    assert (event.rule, event.from_level, event.to_level) == ("R9", 2, 1)
    told = [r.payload["text"] for r in await _rows(sessions, Outbox, chat_id="u1",
                                                    kind="reply")]
    assert told and "restart at level 1" in told[-1]
    await patient.send("/progress")
    assert "Level 1" in patient.text


async def test_r9_the_coach_sets_the_restart_level(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """R9: "the coach clears it, optionally setting the level to restart at"."""
    _, coach = await pain_paused(engine, sessions)
    assert coach is not None
    await coach.send("/clear console:u1 9")
    assert "from 1 to 5" in coach.text
    assert (await _user(sessions, "u1")).status == "referred"
    await coach.send("/clear console:u1 3")
    assert "restart at level 3" in coach.text
    program = await _program(sessions, "u1")
    assert program is not None and program.level == 3


async def test_r9_the_clear_button_on_the_request_lifts_the_hold_once(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """R9: a button on the request the patient's /resume sends; a stale press is refused."""
    patient, coach = await pain_paused(engine, sessions)
    assert coach is not None
    await patient.send("/resume")
    request = (await _rows(sessions, Outbox, chat_id="coach", kind="alert"))[-1]
    token = request.payload["buttons"][0][0]["token"]
    await coach.press_token(token)
    assert "they restart at level 1" in coach.text
    assert (await _user(sessions, "u1")).status == "active"
    await coach.press_token(token)  # the same button again
    assert "lifted already, by console:coach" in coach.text
    assert len(await _rows(sessions, ProgressionEvent, action="restart")) == 1


async def test_r9_a_forged_clear_button_or_another_coachs_clear_is_refused(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """R9, role checks by channel user id: the patient themselves, a forged button and another
    coach are refused clearly; the hold stays."""
    patient, _ = await pain_paused(engine, sessions)
    other = await enrolled(engine, "u2")
    stranger = await make_coach(engine, sessions, "u2", coach="coach2")
    [hold] = await _rows(sessions, Hold)
    forged = ButtonToken(step="clear", ref=hold.id, value="5").encode()
    await patient.press_token(forged)
    assert "not yours to use" in patient.text
    await patient.send("/clear console:u1")
    assert "only for coaches" in patient.text
    await other.press_token(forged)
    assert "not yours to use" in other.text
    await stranger.press_token(forged)
    assert "not yours to use" in stranger.text
    await stranger.send("/clear console:u1 3")
    assert "not one of your patients" in stranger.text
    await stranger.press_token(ButtonToken(step="clear", ref=hold.id + 99, value="1").encode())
    assert "not yours to use" in stranger.text
    [hold] = await _rows(sessions, Hold)
    assert hold.lifted_at is None
    assert (await _user(sessions, "u1")).status == "referred"


async def test_r9_an_admin_clears_and_the_coach_is_told(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    """R9: "only the coach (or an admin)"; "the coach is told, whoever lifted it"."""
    engine = Engine(sessions, program, clock, admins=frozenset({("console", "boss")}))
    await pain_paused(engine, sessions)
    admin = Patient(engine, "boss")
    await admin.send("/clear console:u1 2")
    assert "restart at level 2" in admin.text
    texts = await _coach_texts(sessions)
    assert texts[-1] == ("Name of u1 (console:u1)'s hold (reported pain 8/10 during the "
                         "session) was lifted by console:boss: cleared by an admin; they "
                         "restart at level 2.")


async def test_r9_the_seen_case_resume_23_seconds_after_a_locking_referral(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """Seen: referred for locking, /resume 23 s later, "yes, assessed", back in the program.
    R9 without a coach: "not before the next local calendar day after it began"."""
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all("I agree", SAFE_ANSWERS[0], RED_FLAGS[1].yes)
    clock.advance(timedelta(seconds=23))
    await patient.send("/resume")
    assert "from tomorrow at the earliest" in patient.text and not patient.buttons
    await patient.send("yes")
    assert (await _user(sessions, "u1")).status == "referred"
    [hold] = await _rows(sessions, Hold)
    assert hold.assessed_at is None and hold.lifted_at is None


async def test_r9_without_a_coach_the_confirmation_is_stored_from_the_next_day(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """R9: "the patient confirms a clinician assessed the knee since the hold ... the
    confirmation is stored with its time"; a screen referral screens again."""
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all("I agree", SAFE_ANSWERS[0], RED_FLAGS[1].yes)
    clock.advance(timedelta(hours=16, minutes=1))  # 00:01 the next day in London
    await patient.send("/resume")
    assert "Since your program was put on hold" in patient.text
    await patient.press("Yes, I was assessed and may exercise")
    assert "safety questions again" in patient.text
    [hold] = await _rows(sessions, Hold)
    assert hold.assessed_at == clock.now() and hold.lifted_at == clock.now()
    assert hold.lifted_by == "console:u1" and "confirmed" in (shown(hold.lift_reason) or "")
    await patient.answer_all(*CLEAN_SCREEN[1:])
    assert "All set" in patient.text


async def test_r9_a_pain_pause_needs_rest_pain_of_5_or_less(
        engine: Engine, sessions: async_sessionmaker[DbSession], clock: ManualClock) -> None:
    """R9: "A pain pause also needs a pain report of 5 or less at rest on that day"; the seen
    case of /resume and "1" the same day lifts nothing."""
    patient, _ = await pain_paused(engine, sessions, coach=False)
    await patient.send("/resume")
    assert "from tomorrow" in patient.text
    await patient.send("1")
    assert (await _user(sessions, "u1")).status == "referred"
    clock.advance(timedelta(days=1))
    await patient.send("/resume")
    await patient.press("Yes, I was assessed and may exercise")
    assert "at rest" in patient.text
    await patient.press("6")
    assert "stays on hold" in patient.text
    assert (await _user(sessions, "u1")).status == "referred"
    await patient.send("/resume")
    await patient.press("Yes, I was assessed and may exercise")
    await patient.press("5")
    assert "restart at level 1, one level lower than before" in patient.text
    assert (await _user(sessions, "u1")).status == "active"
    [hold] = await _rows(sessions, Hold)
    assert hold.restart_level == 1 and "rest pain 5/10" in (shown(hold.lift_reason) or "")


async def test_r9_the_restart_is_never_below_level_1(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """R9: "one level lower than before the hold (never below 1)"."""
    patient = await enrolled(engine, "u1", worst_pain="6")  # level 1
    coach = await make_coach(engine, sessions, "u1")
    await patient.send("/pain")
    await patient.press("9")
    await coach.send("/clear console:u1")
    assert "restart at level 1" in coach.text
    program = await _program(sessions, "u1")
    assert program is not None and program.level == 1


async def test_r9_a_hold_means_no_prompts(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    """5a: "no prompts, no program, until it is lifted"."""
    patient, _ = await pain_paused(engine, sessions)
    program = await _program(sessions, "u1")
    assert program is not None
    assert (program.next_prompt_at, program.next_check_at, program.next_summary_at) == (
        None, None, None)
    await patient.send("/today")
    assert "Today's session" not in patient.text
