"""A coach's prescription for their own patient (CLINICAL.md 5b), typed or from the file's
buttons: set the level, hold progression, switch an exercise off or on, add an instruction
shown with every session. Each change is stored (storage/prescriptions.py), told to the
patient in one sentence, and audited by ids. The safety rules R4 and R7 are not exercises
and cannot be switched off; a held progression only stops R1 (program/rules.py: decide)."""

from __future__ import annotations

import logging
import re

from conversations import i18n
from conversations.alerts import named
from conversations.context import Ctx
from conversations.flows.howto import short
from conversations.flows.staff import find_user, tell
from conversations.i18n import N_, _
from conversations.localtime import local_date
from conversations.messages import Button, ButtonToken
from conversations.numbers import whole
from conversations.program.data import Exercise
from storage import prescriptions
from storage.models import ProgressionEvent, User

log = logging.getLogger(__name__)

STEP = "rx"  # the buttons' step; ref: the patient's user id; value: "<action>.<version>"
INSTRUCTION_CHARS = 300  # "a short instruction" (5b): it is shown with every session
REMOVE = ("-", "off")  # /instruct USER - (or off) removes the instruction
SAFETY_RULES = ("R4", "R7")

# What people read, kept together for the message catalogs.
NOT_YOURS = N_("{target} is not one of your patients, so you cannot see or change their "
               "program.")
NOT_PATIENT = N_("{user} is not a patient, so they have no program to change.")
LEVEL_USAGE = N_("Usage: /level USER N, where N is the level to set, 1 to {top}.")
LEVEL_RANGE = N_("The level must be a whole number from 1 to {top}. Usage: /level USER N, "
                 "where N is the level to set, 1 to {top}.")
HOLD_USAGE = N_("Usage: /hold USER keeps the patient at their level (easy sessions no longer "
                "move them up; the safety rules still lower or pause it); /unhold USER lets "
                "the rules move them up again.")
EXERCISE_USAGE = N_("Usage: /exercise USER EXERCISE off|on, where EXERCISE is one of: {ids}.")
INSTRUCT_USAGE = N_("Usage: /instruct USER text (at most {most} characters) shows the text "
                    "with every session until you remove it with /instruct USER -.")
TOO_LONG = N_("That instruction is {n} characters; at most {most}, please, since it comes "
              "with every session.")
SAFETY = N_("{rule} is a safety rule, not an exercise: R4 and R7 (pain, flares and warning "
            "signs pause the program) can never be switched off. /hold USER only stops the "
            "level going up.")
UNKNOWN_EXERCISE = N_("I know no exercise {name}. Usage: /exercise USER EXERCISE off|on, "
                      "where EXERCISE is one of: {ids}.")
NO_PROGRAM = N_("{patient} has no program yet (they have not finished setting up).")
ON_HOLD = N_("{patient} is on hold; /clear {ident} N lifts the hold and sets the level to "
             "restart at.")
SAME_LEVEL = N_("{patient} is at level {level} already.")
HELD_ALREADY = N_("The progression of {patient} is held already. /unhold {ident} lets it "
                  "move.")
NOT_HELD = N_("The progression of {patient} is not held. /hold {ident} holds it.")
OFF_ALREADY = N_("{exercise} is switched off for {patient} already.")
ON_ALREADY = N_("{exercise} is on for {patient} already.")
LAST_EXERCISE = N_("Switching off {exercise} would leave level {level} with no exercise but "
                   "optional hip work, so I kept it on.")
NO_INSTRUCTION = N_("{patient} has no instruction to remove.")
STALE = N_("That button is from an earlier view of the prescription, so I ignored it. Here it "
           "is now:")
FORGED = N_("That button is not yours to use, so I ignored it.")
DONE = N_("{change} for {patient}. I have told them.")
MENU = N_("Prescription of {patient}: level {level} of {top}, {progression}. Exercises off: "
          "{off}. Instruction: {instruction}. Press to change it; /instruct {ident} text sets "
          "the instruction.")
# To the patient, one sentence each, in the patient's language.
TELL_LEVEL = N_("Your coach has set your level to {level}; /today shows the session.")
TELL_HOLD = N_("Your coach has asked you to stay at your current level for now, so easy "
               "sessions will not move you up until they change that.")
TELL_UNHOLD = N_("Your coach has let your level move up again as your sessions allow.")
TELL_OFF = N_("Your coach has taken {exercise} out of your sessions.")
TELL_ON = N_("Your coach has put {exercise} back into your sessions.")
TELL_INSTRUCT = N_("Your coach has added an instruction to every session: {text}")
TELL_UNINSTRUCT = N_("Your coach has removed their instruction from your sessions.")


def told(patient: User, message: str, exercise: Exercise | None = None,
         **values: object) -> str:
    """`message` to the patient in their language, whoever made the change."""
    with i18n.speaking(patient.language):
        if exercise is not None:
            values["exercise"] = short(exercise)
        return _(message, **values)


# --- whose program ---------------------------------------------------------------------------
async def patient_for(ctx: Ctx, ident: str, command: str) -> User | None:
    """The patient `ident` names, when they are the caller's own (an admin: anyone's); else
    a refusal that says nothing about who they are, audited, and None."""
    found = await find_user(ctx, ident)
    if found is not None and (ctx.admin or found.coach_id == ctx.user.id):
        if found.role == "patient" and found.consent_at is not None:
            return found
        if ctx.admin:
            ctx.say(_(NOT_PATIENT, user=named(found)))
            return None
    refuse(ctx, command, ident[:64])
    ctx.say(_(NOT_YOURS, target=ident[:64]))
    return None


def refuse(ctx: Ctx, command: str, target: str) -> None:
    log.warning("refused /%s for %s", command, ctx.user.display_id)
    ctx.repo.audit(ctx.user.display_id, "refused", ctx.now, command=command, target=target)


# --- the typed commands ----------------------------------------------------------------------
async def level(ctx: Ctx) -> None:
    args, top = ctx.inbound.args, ctx.program.top_level
    if len(args) != 2:
        ctx.say(_(LEVEL_USAGE, top=top))
        return
    if (patient := await patient_for(ctx, args[0], "level")) is None:
        return
    if (number := whole(args[1], 1, top)) is None:
        ctx.say(_(LEVEL_RANGE, top=top))
        return
    await set_level(ctx, patient, number)


async def hold(ctx: Ctx, held: bool) -> None:
    args = ctx.inbound.args
    if len(args) != 1:
        ctx.say(_(HOLD_USAGE))
        return
    if (patient := await patient_for(ctx, args[0], "hold" if held else "unhold")) is not None:
        await set_held(ctx, patient, held)


async def exercise(ctx: Ctx) -> None:
    args = ctx.inbound.args
    usage = _(EXERCISE_USAGE, ids=", ".join(e.id for e in ctx.program.exercises))
    if len(args) != 3 or args[2].lower() not in ("off", "on"):
        ctx.say(usage)
        return
    if (patient := await patient_for(ctx, args[0], "exercise")) is None:
        return
    name = args[1]
    if name.upper() in SAFETY_RULES:
        refuse(ctx, "exercise", patient.display_id)
        ctx.say(_(SAFETY, rule=name.upper()))
        return
    found = ctx.program.exercise(name.lower())
    if found is None:
        ctx.say(_(UNKNOWN_EXERCISE, name=name[:24], ids=", ".join(
            e.id for e in ctx.program.exercises)))
        return
    await switch(ctx, patient, found, on=args[2].lower() == "on")


async def instruct(ctx: Ctx) -> None:
    parts = re.split(r"\s+", ctx.inbound.arg_text, maxsplit=1)
    ident, text = parts[0], (parts[1].strip() if len(parts) > 1 else "")
    if not ident or not text:
        ctx.say(_(INSTRUCT_USAGE, most=INSTRUCTION_CHARS))
        return
    if (patient := await patient_for(ctx, ident, "instruct")) is None:
        return
    if text.lower() in REMOVE:
        await set_instruction(ctx, patient, None)
    elif len(text) > INSTRUCTION_CHARS:
        ctx.say(_(TOO_LONG, n=f"{len(text):,}", most=INSTRUCTION_CHARS))
    else:
        await set_instruction(ctx, patient, text)


# --- the changes -----------------------------------------------------------------------------
async def _record(ctx: Ctx, patient: User, kind: str, notice: str, change: str,
                  **fields: object) -> None:
    """Store the change, audit it by ids, tell the patient and the coach."""
    row = await prescriptions.add(ctx.repo.db, user_id=patient.id, by_id=ctx.user.id,
                                  now=ctx.now, kind=kind, **fields)  # type: ignore[arg-type]
    ctx.repo.audit(ctx.user.display_id, "prescribe", ctx.now, patient=patient.display_id,
                   change=row.id, kind=kind)
    await tell(ctx.repo, patient, notice, ctx.now)
    ctx.say(_(DONE, change=change, patient=named(patient)))


async def set_level(ctx: Ctx, patient: User, number: int) -> None:
    program = await ctx.repo.program(patient.id)
    if program is None:
        ctx.say(_(NO_PROGRAM, patient=named(patient)))
        return
    if patient.status == "referred":
        ctx.say(_(ON_HOLD, patient=named(patient), ident=patient.display_id))
        return
    if program.level == number:
        ctx.say(_(SAME_LEVEL, patient=named(patient), level=number))
        return
    message = told(patient, TELL_LEVEL, level=number)
    day = local_date(ctx.now, patient.timezone or "UTC")
    ctx.repo.add(ProgressionEvent(user_id=patient.id, at=ctx.now, day=day,
                                  from_level=program.level, to_level=number, action="set",
                                  rule="coach", message=message))
    program.level, program.updated_at = number, ctx.now
    today = await ctx.repo.session_on(patient.id, day)
    if today is not None and today.status == "prompted":  # not reported: it is the new level
        today.level = number
    await _record(ctx, patient, "level", message, _("Level set to {level}", level=number),
                  level=number)


async def set_held(ctx: Ctx, patient: User, held: bool) -> None:
    rx = await prescriptions.current(ctx.repo.db, patient.id)
    if rx.held == held:
        ctx.say(_(HELD_ALREADY if held else NOT_HELD, patient=named(patient),
                  ident=patient.display_id))
        return
    await _record(ctx, patient, "hold" if held else "unhold",
                  told(patient, TELL_HOLD if held else TELL_UNHOLD),
                  _("Progression held") if held else _("Progression released"))


async def switch(ctx: Ctx, patient: User, exercise: Exercise, *, on: bool) -> None:
    rx = await prescriptions.current(ctx.repo.db, patient.id)
    values = {"exercise": short(exercise), "patient": named(patient)}
    if on != (exercise.id in rx.off):
        ctx.say(_(ON_ALREADY if on else OFF_ALREADY, **values))
        return
    if not on:
        off = rx.off | {exercise.id}
        for lvl in ctx.program.levels:
            if not any(e.id in lvl.doses and e.id not in off and not e.optional
                       for e in ctx.program.exercises):
                ctx.say(_(LAST_EXERCISE, exercise=short(exercise), level=lvl.number))
                return
    await _record(ctx, patient, "on" if on else "off",
                  told(patient, TELL_ON if on else TELL_OFF, exercise),
                  _("{exercise} switched on", exercise=short(exercise)) if on else
                  _("{exercise} switched off", exercise=short(exercise)), exercise=exercise.id)


async def set_instruction(ctx: Ctx, patient: User, text: str | None) -> None:
    if text is None and (await prescriptions.current(ctx.repo.db, patient.id)
                         ).instruction is None:
        ctx.say(_(NO_INSTRUCTION, patient=named(patient)))
        return
    await _record(ctx, patient, "instruct",
                  told(patient, TELL_INSTRUCT, text=text) if text else
                  told(patient, TELL_UNINSTRUCT),
                  _("Instruction set") if text else _("Instruction removed"), text=text)


# --- the buttons -----------------------------------------------------------------------------
def _token(patient: User, action: str, version: int) -> str:
    return ButtonToken(step=STEP, ref=patient.id, value=f"{action}.{version}").encode()


async def menu(ctx: Ctx, patient: User) -> None:
    """The prescription as it is, with a button for each change; the buttons carry the
    version they were made at, so a press after any other change does nothing."""
    rx = await prescriptions.current(ctx.repo.db, patient.id)
    program = await ctx.repo.program(patient.id)
    top, v = ctx.program.top_level, rx.version
    rows: list[tuple[Button, ...]] = []
    if program is not None:
        rows.append(tuple(Button(label=_("Level {level}", level=n),
                                 token=_token(patient, f"l{n}", v))
                          for n in range(1, top + 1) if n != program.level))
    rows.append((Button(label=_("Let the level move up") if rx.held else
                        _("Hold progression"),
                        token=_token(patient, "u" if rx.held else "h", v)),))
    toggles = [Button(label=_("Switch on: {exercise}", exercise=short(e)) if e.id in rx.off
                      else _("Switch off: {exercise}", exercise=short(e)),
                      token=_token(patient, f"{'n' if e.id in rx.off else 'f'}{i}", v))
               for i, e in enumerate(ctx.program.exercises)]
    rows += [tuple(toggles[i:i + 2]) for i in range(0, len(toggles), 2)]
    if rx.instruction:
        rows.append((Button(label=_("Remove the instruction"), token=_token(patient, "i", v)),))
    off = [short(e) for e in ctx.program.exercises if e.id in rx.off]
    ctx.say(_(MENU, patient=named(patient), level=program.level if program else "-", top=top,
              progression=_("progression held") if rx.held else _("the rules move the level"),
              off=", ".join(off) or _("none"), instruction=rx.instruction or _("none"),
              ident=patient.display_id), tuple(rows))


async def press(ctx: Ctx, token: ButtonToken, patient: User) -> None:
    """A prescription button of a patient already checked to be the presser's own."""
    action, _dot, version = token.value.partition(".")
    rx = await prescriptions.current(ctx.repo.db, patient.id)
    if whole(version) != rx.version:
        ctx.say(_(STALE))
        await menu(ctx, patient)
        return
    kind, arg = action[:1], whole(action[1:]) if action[1:] else None
    exercises = ctx.program.exercises
    if kind == "l" and arg is not None and 1 <= arg <= ctx.program.top_level:
        await set_level(ctx, patient, arg)
    elif kind in ("h", "u") and arg is None:
        await set_held(ctx, patient, kind == "h")
    elif kind in ("f", "n") and arg is not None and arg < len(exercises):
        await switch(ctx, patient, exercises[arg], on=kind == "n")
    elif kind == "i" and arg is None:
        await set_instruction(ctx, patient, None)
    elif kind != "m" or arg is not None:
        refuse(ctx, "prescribe", patient.display_id)
        ctx.say(_(FORGED))
        return
    await menu(ctx, patient)  # as it is now, for the next change
