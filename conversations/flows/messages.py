"""Messages between a patient and their coach: the patient's /ask (or the "Message my coach"
button), the coach's Reply button (or /reply USER text). Each message is stored in the
patient's record, goes through the outbox once (its dedupe key is the message's id) and is
audited by ids. A coach writes only to their own patients; a patient only to their coach."""

from __future__ import annotations

import logging
import re

from conversations import i18n
from conversations.alerts import named
from conversations.context import REASK, STAY, Ctx, Flow, Step
from conversations.flows.staff import find_user
from conversations.i18n import N_, _
from conversations.messages import Button, ButtonToken, Outbound
from conversations.questions import Question
from storage import messages
from storage.models import User

log = logging.getLogger(__name__)

MAX_MESSAGE = 12_000  # well under MAX_TEXT_CHARS, so a cut-off input is refused
# Buttons' steps, apart from any flow step's: a patient's "Message my coach" (its ref is the
# patient's user id) and a coach's Reply (its ref is the patient's message).
ASK_STEP = "to_coach"
REPLY_STEP = "reply_to"

# What people read, kept together for the message catalogs.
MESSAGE_BUTTON = N_("Message my coach")
REPLY_BUTTON = N_("Reply")
NO_COACH = N_("You have no coach to write to. If a coach gives you an invite code, send "
            "/join CODE to connect with them.")
ASK = N_("Write your message to {coach}; it goes to them as you write it. /cancel stops.")
REPLY = N_("Write your reply to {patient}. /cancel stops.")
HINT = N_("A message needs some text, at most {max} characters.")
TOO_LONG = N_("That message is too long: at most {max} characters, please.")
SENT_TO_COACH = N_("Sent to {coach}. Their reply will come here.")
SENT_TO_PATIENT = N_("Sent to {patient}.")
FROM_PATIENT = N_("Message from {patient}:\n\n{text}")
FROM_COACH = N_("Message from your coach{name}:\n\n{text}")
REPLY_USAGE = N_("Usage: /reply USER text, where USER is your patient's channel id such as "
               "telegram:123456 (the text may also follow on its own).")
NOT_YOURS = N_("{target} is not one of your patients, so you cannot write to them.")
NOT_YOUR_BUTTON = N_("That reply button is not yours to use, so I ignored it.")
NOT_OWN_BUTTON = N_("That button is not yours to use, so I ignored it.")
ANSWERED = N_("You have replied to that message already; /reply {patient} text writes again.")
YOUR_COACH = N_("your coach")


def message_button(user: User) -> tuple[tuple[Button, ...], ...]:
    """The "Message my coach" button for a patient who has a coach; none otherwise."""
    if user.coach_id is None:
        return ()
    token = ButtonToken(step=ASK_STEP, ref=user.id, value="").encode()
    return ((Button(label=_(MESSAGE_BUTTON), token=token),),)


def offer(ctx: Ctx) -> None:
    """The session report's last message carries the "Message my coach" button."""
    buttons = message_button(ctx.user)
    if buttons and ctx.replies and not ctx.replies[-1].buttons:
        ctx.replies[-1] = ctx.replies[-1].model_copy(update={"buttons": buttons})


def _text(text: str) -> str | None:
    return text if len(text) <= MAX_MESSAGE else None


def _coach_name(coach: User) -> str:
    return coach.display_name or _(YOUR_COACH)


async def _coach(ctx: Ctx) -> User | None:
    return await ctx.repo.user_by_id(ctx.user.coach_id) if ctx.user.coach_id else None


# --- the patient writes ----------------------------------------------------------------------
async def ask(ctx: Ctx) -> str | None:
    """/ask [text]: with text, send it at once; without, ask for it ("message:ask")."""
    coach = await _coach(ctx)
    if coach is None:
        ctx.say(_(NO_COACH))
        return REASK
    text = ctx.inbound.arg_text
    if not text:
        ctx.answers = {"coach_name": coach.display_name}
        return "message:ask"
    if _text(text) is None:
        ctx.say(_(TOO_LONG, max=f"{MAX_MESSAGE:,}"))
    else:
        await _to_coach(ctx, coach, text)
    return REASK


async def press_ask(ctx: Ctx, token: ButtonToken) -> str | None:
    """The "Message my coach" button: ask for the text."""
    coach = await _coach(ctx)
    if token.ref != ctx.user.id or coach is None:
        ctx.say(_(NOT_OWN_BUTTON if token.ref != ctx.user.id else NO_COACH))
        return STAY
    ctx.answers = {"coach_name": coach.display_name}
    return "message:ask"


def ask_patient_text(ctx: Ctx) -> Question:
    return Question(_(ASK, coach=ctx.answers.get("coach_name") or _(YOUR_COACH)), parse=_text,
                    raw=True, hint=_(HINT, max=f"{MAX_MESSAGE:,}"))


async def answer_patient_text(ctx: Ctx, value: str) -> str | None:
    coach = await _coach(ctx)
    if coach is None:  # moved or detached while they were writing
        ctx.say(_(NO_COACH))
        return None
    await _to_coach(ctx, coach, value)
    return None


async def _to_coach(ctx: Ctx, coach: User, text: str) -> None:
    patient = ctx.user
    stored = await messages.add(ctx.repo.db, patient_id=patient.id, coach_id=coach.id,
                                sender="patient", text=text, now=ctx.now)
    reply = ButtonToken(step=REPLY_STEP, ref=stored.id, value="").encode()
    with i18n.speaking(coach.language):  # in the reader's language; their text as written
        message = Outbound(channel=coach.channel, chat_id=coach.chat_id,  # type: ignore[arg-type]
                           text=_(FROM_PATIENT, patient=named(patient), text=text),
                           buttons=((Button(label=_(REPLY_BUTTON), token=reply),),))
    await ctx.repo.enqueue(user_id=coach.id, channel=coach.channel, chat_id=coach.chat_id,
                           kind="message", payload=message.model_dump(mode="json"),
                           now=ctx.now, dedupe_key=f"message:{stored.id}", about_id=patient.id)
    ctx.repo.audit(patient.display_id, "message", ctx.now, coach=coach.display_id,
                   message=stored.id)
    ctx.say(_(SENT_TO_COACH, coach=_coach_name(coach)))


# --- the coach replies -----------------------------------------------------------------------
async def reply(ctx: Ctx) -> str | None:
    """/reply USER [text]: with text, send it at once; without, ask for it."""
    parts = re.split(r"\s+", ctx.inbound.arg_text, maxsplit=1)
    ident, text = parts[0], parts[1] if len(parts) > 1 else ""
    if not ident:
        ctx.say(_(REPLY_USAGE))
        return STAY
    patient = await _own_patient(ctx, ident)
    if patient is None:
        _refuse(ctx, ident[:64])
        ctx.say(_(NOT_YOURS, target=ident[:64]))
        return STAY
    if not text:
        ctx.answers = {"patient": patient.id, "patient_name": named(patient)}
        return "message:reply"
    if _text(text) is None:
        ctx.say(_(TOO_LONG, max=f"{MAX_MESSAGE:,}"))
    else:
        await _to_patient(ctx, patient, text)
    return STAY


async def press_reply(ctx: Ctx, token: ButtonToken) -> str | None:
    """A coach's Reply button under a patient's message: ask for the reply. A forged button,
    or one of a patient no longer theirs, is refused; one already answered says so."""
    found = await messages.get(ctx.repo.db, token.ref)
    patient = await ctx.repo.user_by_id(found.patient_id) if found else None
    if (found is None or patient is None or found.sender != "patient" or token.value
            or patient.coach_id != ctx.user.id):
        _refuse(ctx, f"message {token.ref}")
        ctx.say(_(NOT_YOUR_BUTTON))
        return STAY
    if await messages.answered(ctx.repo.db, found):
        ctx.say(_(ANSWERED, patient=patient.display_id))
        return STAY
    ctx.answers = {"patient": patient.id, "patient_name": named(patient), "reply_to": found.id}
    return "message:reply"


def ask_coach_text(ctx: Ctx) -> Question:
    return Question(_(REPLY, patient=ctx.answers.get("patient_name", "")), parse=_text,
                    raw=True, hint=_(HINT, max=f"{MAX_MESSAGE:,}"))


async def answer_coach_text(ctx: Ctx, value: str) -> str | None:
    patient = await ctx.repo.user_by_id(int(ctx.answers["patient"]))
    if patient is None or patient.coach_id != ctx.user.id:  # erased or moved meanwhile
        target = ctx.answers.get("patient_name", "")
        _refuse(ctx, patient.display_id if patient else "")
        ctx.say(_(NOT_YOURS, target=target))
        return None
    await _to_patient(ctx, patient, value, ctx.answers.get("reply_to"))
    return None


async def _own_patient(ctx: Ctx, ident: str) -> User | None:
    patient = await find_user(ctx, ident)
    return patient if patient is not None and patient.coach_id == ctx.user.id else None


async def _to_patient(ctx: Ctx, patient: User, text: str, reply_to: int | None = None) -> None:
    coach = ctx.user
    stored = await messages.add(ctx.repo.db, patient_id=patient.id, coach_id=coach.id,
                                sender="coach", text=text, now=ctx.now, reply_to=reply_to)
    name = f", {coach.display_name}" if coach.display_name else ""
    with i18n.speaking(patient.language):
        message = Outbound(channel=patient.channel, chat_id=patient.chat_id,  # type: ignore[arg-type]
                           text=_(FROM_COACH, name=name, text=text),
                           buttons=message_button(patient))
    await ctx.repo.enqueue(user_id=patient.id, channel=patient.channel,
                           chat_id=patient.chat_id, kind="message",
                           payload=message.model_dump(mode="json"), now=ctx.now,
                           dedupe_key=f"message:{stored.id}")
    ctx.repo.audit(coach.display_id, "message", ctx.now, patient=patient.display_id,
                   message=stored.id)
    ctx.say(_(SENT_TO_PATIENT, patient=named(patient)))


def _refuse(ctx: Ctx, target: str) -> None:
    log.warning("refused a message from %s", ctx.user.display_id)
    ctx.repo.audit(ctx.user.display_id, "refused", ctx.now, command="reply", target=target)


FLOWS: dict[str, Flow] = {
    "message": {
        "ask": Step(ask_patient_text, answer_patient_text),
        "reply": Step(ask_coach_text, answer_coach_text),
    },
}
