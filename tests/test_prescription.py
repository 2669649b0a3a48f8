"""A coach's prescription (CLINICAL.md 5b) through the engine, on SQLite and PostgreSQL: the
level, a held progression, exercises off and on, an instruction; the next prompt and /today
show exactly the prescribed session; the rules keep working on it; each change is stored,
told to the patient, audited by ids, in /mydata; and every bad form of the commands and of
their buttons changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from clinic import ADMIN, audits
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from tick_and_send import FIRST_PROMPT, scheduler

from conftest import Patient
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.flows import patient_file
from conversations.flows import prescription as rx
from conversations.messages import ButtonToken
from conversations.program.data import Program
from storage.models import Outbox, PrescriptionChange, ProgramState, ProgressionEvent, User

KNEE_EXT = "Knee extension with the foot turned out"


async def told(sessions: async_sessionmaker[DbSession], chat_id: str) -> list[str]:
    """The notes (kind "reply") queued to a chat, oldest first."""
    async with sessions() as db:
        payloads = (await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "reply", Outbox.chat_id == chat_id).order_by(Outbox.id))).all()
    return [p["text"] for p in payloads]


async def prompt_of(sessions: async_sessionmaker[DbSession], chat_id: str) -> dict[str, Any]:
    async with sessions() as db:
        payloads = (await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "prompt", Outbox.chat_id == chat_id).order_by(Outbox.id))).all()
    return dict(payloads[-1])


async def changes(sessions: async_sessionmaker[DbSession]) -> list[PrescriptionChange]:
    async with sessions() as db:
        return list((await db.scalars(select(PrescriptionChange)
                                      .order_by(PrescriptionChange.id))).all())


def labels(payload: dict[str, Any]) -> list[str]:
    return [b["label"] for row in payload["buttons"] for b in row]


async def easy_day(patient: Patient, clock: ManualClock) -> None:
    """A session done at pain 1, and the next morning's check the same or better."""
    await patient.send("/today")
    await patient.press("Done")
    await patient.press("1")
    clock.advance(timedelta(days=1))
    await patient.send("/today")
    await patient.press("Same or better")
    await patient.press("No")


async def test_the_next_prompt_and_today_show_exactly_the_prescribed_session(
        clinic: tuple[Patient, ...], staff_engine: Engine, sessions: async_sessionmaker[DbSession],
        program: Program, clock: ManualClock) -> None:
    coach, pam, _, obi = clinic
    instruction = "Keep the *squats* shallow this week 🦵\nand ice after."
    await coach.send("/level console:pam 3")
    assert "Level set to 3 for Name of pam (console:pam). I have told them." in coach.text
    await coach.send("/exercise console:pam knee_ext off")
    assert f"{KNEE_EXT} switched off for Name of pam" in coach.text
    await coach.send(f"/instruct console:pam {instruction}")
    assert "Instruction set for Name of pam" in coach.text
    assert await told(sessions, "pam") == [
        rx.TELL_LEVEL.format(level=3), rx.TELL_OFF.format(exercise=KNEE_EXT),
        rx.TELL_INSTRUCT.format(text=instruction)]

    clock.set(FIRST_PROMPT)
    await scheduler(sessions, program, clock).tick()
    prompt = await prompt_of(sessions, "pam")
    expected = [f"{i}. {line}" for i, line in enumerate(
        program.session_lines(3, off={"knee_ext"}), 1)]
    assert prompt["text"] == ("Time for today's knee exercises (level 3):\n" + "\n".join(expected)
                              + f"\n\nFrom your coach: {instruction}\n\nStop any exercise that "
                                "causes sharp pain. How did it go?")
    assert KNEE_EXT not in prompt["text"]
    assert f"Show me how: {KNEE_EXT}" not in labels(prompt)
    # Level 3's own exercises come with it.
    assert "Show me how: Body-weight squat with the feet turned slightly out" in labels(prompt)
    # Another patient's prompt is the program's as ever.
    assert KNEE_EXT in (await prompt_of(sessions, "obi"))["text"]

    await pam.send("/today")
    assert "Today's session (level 3):\n" + "\n".join(expected) in pam.text
    assert f"From your coach: {instruction}" in pam.text
    assert KNEE_EXT not in pam.text
    assert f"Show me how: {KNEE_EXT}" not in [b.label for b in pam.buttons]
    await obi.send("/today")
    assert KNEE_EXT in obi.text and "From your coach" not in obi.text

    await coach.send("/instruct console:pam -")
    await coach.send("/exercise console:pam knee_ext on")
    await pam.send("/today")
    assert KNEE_EXT in pam.text and "From your coach" not in pam.text
    assert (await told(sessions, "pam"))[-2:] == [
        rx.TELL_UNINSTRUCT, rx.TELL_ON.format(exercise=KNEE_EXT)]

    stored = await changes(sessions)
    assert [(c.kind, c.exercise, c.level, c.text) for c in stored] == [
        ("level", None, 3, None), ("off", "knee_ext", None, None),
        ("instruct", None, None, instruction), ("instruct", None, None, None),
        ("on", "knee_ext", None, None)]
    async with sessions() as db:
        coach_id = (await db.scalars(select(User.id).filter_by(channel_user_id="coach"))).one()
        event = (await db.scalars(select(ProgressionEvent).filter_by(action="set"))).one()
    assert {c.by_id for c in stored} == {coach_id}
    assert (event.from_level, event.to_level, event.rule) == (2, 3, "coach")
    # Audited by ids: never the instruction's text.
    assert await audits(sessions, "prescribe") == [
        ("console:coach", {"patient": "console:pam", "change": c.id, "kind": c.kind})
        for c in stored]


async def test_a_held_progression_stays_put_after_three_easy_sessions(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession],
        clock: ManualClock) -> None:
    coach, pam, _, _ = clinic
    await coach.send("/hold console:pam")
    assert "Progression held for Name of pam" in coach.text
    assert (await told(sessions, "pam"))[-1] == rx.TELL_HOLD
    for _ in range(3):
        await easy_day(pam, clock)
    assert "Your coach has asked you to stay at level 2 for now." in pam.text
    assert "Today's session (level 2)" in pam.text
    async with sessions() as db:
        pam_id = (await db.scalars(select(User.id).filter_by(channel_user_id="pam"))).one()
        assert (await db.get(ProgramState, pam_id)).level == 2  # type: ignore[union-attr]
        assert not (await db.scalars(select(ProgressionEvent).filter_by(action="progress"))).all()

    await coach.send("/unhold console:pam")
    assert (await told(sessions, "pam"))[-1] == rx.TELL_UNHOLD
    await pam.press("Done")
    await pam.press("1")
    clock.advance(timedelta(days=1))
    await pam.send("/today")
    await pam.press("Same or better")
    await pam.press("No")
    assert "you move up to level 3" in pam.text  # R1 works again


async def test_the_safety_rules_stay_on_when_the_progression_is_held(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, _, _ = clinic
    await coach.send("/hold console:pam")
    await pam.send("/today")
    await pam.press("Done")
    await pam.press("8")  # R4: a pain pause, held or not
    assert "I have paused your program" in pam.text
    async with sessions() as db:
        assert (await db.scalars(select(User.status).filter_by(channel_user_id="pam"))).one() \
            == "referred"
    for rule in ("R4", "r7"):
        await coach.send(f"/exercise console:pam {rule} off")
        assert rx.SAFETY.format(rule=rule.upper()) in coach.text
    assert [d for _, d in await audits(sessions, "refused")] == [
        {"command": "exercise", "target": "console:pam"}] * 2
    await coach.send("/level console:pam 3")  # on hold: /clear sets the level
    assert rx.ON_HOLD.format(patient="Name of pam (console:pam)", ident="console:pam") \
        in coach.text
    assert [c.kind for c in await changes(sessions)] == ["hold"]


async def test_progression_never_switches_an_exercise_back_on(
        clinic: tuple[Patient, ...], clock: ManualClock) -> None:
    coach, pam, _, _ = clinic
    await coach.send("/exercise console:pam knee_ext off")
    for _ in range(3):
        await easy_day(pam, clock)
    assert "you move up to level 3" in pam.text
    assert "Today's session (level 3)" in pam.text
    assert KNEE_EXT not in pam.text
    await coach.send("/level console:pam 1")
    await pam.send("/today")
    assert "Today's session (level 1)" in pam.text and KNEE_EXT not in pam.text


async def test_the_last_required_exercise_of_a_level_stays_on(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession],
        program: Program) -> None:
    coach, _, _, _ = clinic
    required = [e.id for e in program.exercises if not e.optional]
    assert required == ["roll", "stretch", "ball_squat", "slr", "knee_ext", "squat"]
    refused = []
    for exercise in required:
        await coach.send(f"/exercise console:pam {exercise} off")
        if "so I kept it on" in coach.text:
            refused.append(exercise)
            assert "would leave level 1 with no exercise but optional hip work" in coach.text
    # Level 1 has no body-weight squat: its knee extension is the last one left.
    assert refused == ["knee_ext"]
    assert [c.exercise for c in await changes(sessions)] == [
        "roll", "stretch", "ball_squat", "slr", "squat"]


USAGE_LEVEL = rx.LEVEL_USAGE.format(top=5)
RANGE = rx.LEVEL_RANGE.format(top=5)
NOT_YOURS_PAM = rx.NOT_YOURS.format(target="console:obi")


@pytest.mark.parametrize(("typed", "said"), [
    ("/level", USAGE_LEVEL),
    ("/level console:pam", USAGE_LEVEL),
    ("/level console:pam 3 4", USAGE_LEVEL),
    ("/level console:pam 0", RANGE),
    ("/level console:pam 6", RANGE),
    ("/level console:pam -1", RANGE),
    ("/level console:pam three", RANGE),
    ("/level console:pam 🦵", RANGE),
    ("/level console:pam ³", RANGE),
    ("/level console:pam 99999999999999999999999", RANGE),
    ("/level console:pam 2", "Name of pam (console:pam) is at level 2 already."),
    ("/level console:obi 3", NOT_YOURS_PAM),
    ("/level console:nobody 3", rx.NOT_YOURS.format(target="console:nobody")),
    ("/level 🦵 3", rx.NOT_YOURS.format(target="🦵")),
    ("/level coach 3", rx.NOT_YOURS.format(target="coach")),
    ("/hold", rx.HOLD_USAGE),
    ("/hold console:pam extra", rx.HOLD_USAGE),
    ("/hold console:obi", NOT_YOURS_PAM),
    ("/unhold console:pam", "The progression of Name of pam (console:pam) is not held."),
    ("/exercise", rx.EXERCISE_USAGE.split(",")[0]),
    ("/exercise console:pam knee_ext", "Usage: /exercise USER EXERCISE off|on"),
    ("/exercise console:pam knee_ext maybe", "Usage: /exercise USER EXERCISE off|on"),
    ("/exercise console:pam lunges off", "I know no exercise lunges."),
    ("/exercise console:pam 🦵 off", "I know no exercise 🦵."),
    ("/exercise console:pam " + "x" * 500 + " off", "I know no exercise " + "x" * 24 + "."),
    ("/exercise console:pam knee_ext on", f"{KNEE_EXT} is on for Name of pam"),
    ("/exercise console:obi knee_ext off", NOT_YOURS_PAM),
    ("/instruct", rx.INSTRUCT_USAGE.format(most=rx.INSTRUCTION_CHARS)),
    ("/instruct console:pam", rx.INSTRUCT_USAGE.format(most=rx.INSTRUCTION_CHARS)),
    ("/instruct console:pam    ", rx.INSTRUCT_USAGE.format(most=rx.INSTRUCTION_CHARS)),
    ("/instruct console:pam " + "x" * 301, rx.TOO_LONG.format(n=301, most=rx.INSTRUCTION_CHARS)),
    ("/instruct console:pam " + "🦵" * 20_000, "That instruction is"),
    ("/instruct console:pam -", "Name of pam (console:pam) has no instruction to remove."),
    ("/instruct console:obi Go easy", NOT_YOURS_PAM),
])
async def test_bad_forms_of_the_commands_change_nothing(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession], typed: str,
        said: str) -> None:
    coach, _, _, _ = clinic
    await coach.send(typed)
    assert said in coach.text, coach.text
    assert await changes(sessions) == []
    assert await told(sessions, "pam") == await told(sessions, "obi") == []


async def test_a_patient_cannot_prescribe_and_another_coach_is_refused_with_an_audit(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    _, pam, other, _ = clinic
    for typed in ("/level console:pam 3", "/exercise console:pam knee_ext off",
                  "/instruct console:pam hi", "/hold console:pam"):
        await pam.send(typed)
        assert "is only for coaches" in pam.text
        await other.send(typed)
        assert rx.NOT_YOURS.format(target="console:pam") in other.text
    assert await changes(sessions) == []
    refused = await audits(sessions, "refused")
    assert [(a, d.get("target")) for a, d in refused if a == "console:other"] == [
        ("console:other", "console:pam")] * 4
    assert sum(a == "console:pam" for a, _ in refused) == 4


async def test_an_admin_prescribes_for_anyone_and_the_coach_sees_who(
        clinic: tuple[Patient, ...], staff_engine: Engine,
        sessions: async_sessionmaker[DbSession]) -> None:
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/level console:obi 1")
    assert "Level set to 1 for Name of obi" in admin.text
    await admin.send("/level console:coach 1")
    assert rx.NOT_PATIENT.format(user="console:coach") in admin.text
    assert await told(sessions, "obi") == [rx.TELL_LEVEL.format(level=1)]


async def test_the_buttons_prescribe_and_forged_stale_or_replayed_ones_do_nothing(
        clinic: tuple[Patient, ...], sessions: async_sessionmaker[DbSession]) -> None:
    coach, pam, other, _ = clinic
    await coach.send("/patient console:pam")
    await coach.press(patient_file.PRESCRIBE)
    assert "Prescription of Name of pam (console:pam): level 2 of 5" in coach.text
    menu = {b.label: b.token for b in coach.buttons}
    await coach.press(f"Switch off: {KNEE_EXT}")
    assert f"{KNEE_EXT} switched off for Name of pam" in coach.text
    await coach.press_token(menu[f"Switch off: {KNEE_EXT}"])  # replayed: stale
    assert rx.STALE in coach.text and f"Exercises off: {KNEE_EXT}" in coach.text
    await coach.press_token(menu["Level 4"])  # an earlier view's button: stale too
    assert rx.STALE in coach.text
    await coach.press("Level 4")  # the fresh menu's
    await coach.press("Hold progression")
    assert [c.kind for c in await changes(sessions)] == ["off", "level", "hold"]

    async with sessions() as db:
        ids = {name: id_ for name, id_ in await db.execute(select(User.channel_user_id,
                                                                  User.id))}
    pam_id, obi_id = ids["pam"], ids["obi"]
    version = (await changes(sessions))[-1].id
    forged = [ButtonToken(step=rx.STEP, ref=obi_id, value=f"l3.{version}"),  # not theirs
              ButtonToken(step=rx.STEP, ref=10**9, value="l3.0"),  # nobody
              ButtonToken(step=rx.STEP, ref=pam_id, value=f"l9.{version}"),  # no level 9
              ButtonToken(step=rx.STEP, ref=pam_id, value=f"f99.{version}"),  # no exercise
              ButtonToken(step=rx.STEP, ref=pam_id, value=f"zz.{version}"),
              ButtonToken(step=rx.STEP, ref=pam_id, value=f"l.{version}")]
    for token in forged:
        await coach.press_token(token.encode())
        assert rx.FORGED in coach.text, (token, coach.text)
    await other.press_token(ButtonToken(step=rx.STEP, ref=pam_id,
                                        value=f"u.{version}").encode())
    assert rx.FORGED in other.text
    await pam.press_token(ButtonToken(step=rx.STEP, ref=pam_id, value=f"u.{version}").encode())
    assert rx.FORGED in pam.text
    for garbage in ("rx|1", "rx|x|l3.0", "rx|" + "9" * 40 + "|l3.0", "rx|1|l3.0|x"):
        await coach.press_token(garbage)
        assert rx.FORGED not in coach.text and "ignored" in coach.text
    assert [c.kind for c in await changes(sessions)] == ["off", "level", "hold"]


async def test_mydata_holds_the_prescription(
        clinic: tuple[Patient, ...]) -> None:
    coach, pam, _, _ = clinic
    await coach.send("/instruct console:pam Rest on Sundays 🙂")
    await coach.send("/exercise console:pam squat off")
    await pam.send("/mydata")
    (document,) = [r.document for r in pam.replies if r.document]
    exported = json.loads(document.content)
    rows = exported["tables"]["prescription_changes"]
    assert [(r["kind"], r["exercise"], r["text"]) for r in rows] == [
        ("instruct", None, "Rest on Sundays 🙂"), ("off", "squat", None)]


async def test_a_coachs_changes_stay_in_the_file_once_the_coach_is_erased(
        clinic: tuple[Patient, ...], staff_engine: Engine,
        sessions: async_sessionmaker[DbSession]) -> None:
    coach, _, _, _ = clinic
    await coach.send("/exercise console:pam squat off")
    await coach.send("/delete")
    await coach.send("DELETE")
    (change,) = await changes(sessions)
    assert (change.kind, change.exercise, change.by_id) == ("off", "squat", None)
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/patient console:pam")
    await admin.press("More (page 2 of 2)")
    assert ", a former coach: Body-weight squat with the feet turned slightly out switched " \
           "off" in admin.text
