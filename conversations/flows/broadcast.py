"""A coach's broadcast to their active patients: the text, a preview, then now or at a local
time; one outbox row per patient, and the coach hears how it went (conversations/tick.py)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from conversations import i18n
from conversations.context import Ctx, Flow, Step
from conversations.i18n import _, ngettext
from conversations.localtime import local_datetime, zone
from conversations.messages import Outbound
from conversations.questions import Question, choices
from storage.models import Broadcast

MAX_BROADCAST = 12_000  # well under MAX_TEXT_CHARS, so a cut-off input is refused
SCHEDULE_AHEAD = timedelta(days=366)


def _broadcast_text(text: str) -> str | None:
    return text if text and len(text) <= MAX_BROADCAST else None


def ask_broadcast_text(ctx: Ctx) -> Question:
    return Question(_("Write the message for your active patients (up to {max} characters). "
                      "/cancel stops.", max=f"{MAX_BROADCAST:,}"), parse=_broadcast_text,
                    raw=True, hint=_("A broadcast needs some text, at most {max} characters.",
                                     max=f"{MAX_BROADCAST:,}"))


async def answer_broadcast_text(ctx: Ctx, value: str) -> str | None:
    ctx.answers["text"] = value
    return "confirm"


def ask_broadcast_confirm(ctx: Ctx) -> Question:
    count = ctx.answers.get("recipients", 0)
    text = ctx.answers["text"]
    preview = text if len(text) <= 500 else text[:500] + "... " + _(
        "({count} characters)", count=f"{len(text):,}")
    # The coach's text is shown as they wrote it, after the translated heading.
    return choices(ngettext("Preview, to {n} patient:", "Preview, to {n} patients:", count)
                   + f"\n\n{preview}",
                   [("now", _("Send now")), ("later", _("Schedule")), ("cancel", _("Cancel"))],
                   columns=3)


async def answer_broadcast_confirm(ctx: Ctx, value: str) -> str | None:
    if value == "cancel":
        ctx.say(_("Broadcast cancelled; nothing was sent."))
        return None
    if value == "later":
        return "when"
    await _queue_broadcast(ctx, ctx.now)
    return None


def _parse_when(text: str) -> str | None:
    text = " ".join(text.split())
    return text if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}", text, re.ASCII) else None


def ask_broadcast_when(ctx: Ctx) -> Question:
    return Question(_("When should it go? Send a date and time such as 2026-12-01 18:00 "
                      "({timezone}).", timezone=ctx.user.timezone or "UTC"), parse=_parse_when,
                    hint=_("Please send a date and time such as 2026-12-01 18:00."))


async def answer_broadcast_when(ctx: Ctx, value: str) -> str | None:
    day, hhmm = value.split(" ")
    try:
        when = local_datetime(date.fromisoformat(day), f"{int(hhmm[:-3]):02d}:{hhmm[-2:]}",
                              ctx.user.timezone or "UTC")
    except (ValueError, OverflowError):  # 9999-12-31 23:59 east of UTC is past year 9999
        ctx.say(_("That is not a real date and time. Please send one such as 2026-12-01 "
                  "18:00."))
        return "when"
    if when <= ctx.now:
        ctx.say(_("That time has passed. Please send a time in the future."))
        return "when"
    if when > ctx.now + SCHEDULE_AHEAD:
        ctx.say(_("A broadcast can be scheduled up to {days} days ahead. Please send an "
                  "earlier time.", days=SCHEDULE_AHEAD.days))
        return "when"
    await _queue_broadcast(ctx, when)
    return None


async def _queue_broadcast(ctx: Ctx, when: datetime) -> None:
    """One outbox row per patient, in this transaction: a crash can neither half-queue a
    broadcast nor send anyone a copy twice (the dedupe key is per broadcast and patient)."""
    text = ctx.answers["text"]
    row = Broadcast(coach_id=ctx.user.id, text=text, send_at=when, status="queued",
                    created_at=ctx.now)
    ctx.repo.add(row)
    await ctx.repo.flush()
    recipients = await ctx.repo.patients_of(ctx.user.id, ("active",))
    for patient in recipients:
        with i18n.speaking(patient.language):  # the heading in theirs; the text as written
            heading = _("Message from your coach:")
        message = Outbound(channel=patient.channel, chat_id=patient.chat_id,  # type: ignore[arg-type]
                           text=f"{heading}\n\n{text}")
        await ctx.repo.enqueue(user_id=patient.id, channel=patient.channel,
                               chat_id=patient.chat_id, kind="broadcast",
                               payload=message.model_dump(mode="json"), now=ctx.now,
                               dedupe_key=f"broadcast:{row.id}:{patient.id}",
                               broadcast_id=row.id, not_before=when)
    ctx.repo.audit(ctx.user.display_id, "broadcast", ctx.now, broadcast=row.id,
                   recipients=len(recipients))
    local = when.astimezone(zone(ctx.user.timezone or "UTC"))
    at = _("now") if when <= ctx.now else _("at {when}", when=f"{local:%Y-%m-%d %H:%M}")
    ctx.say(_("Broadcast queued to {count} patients, sending {at}. You will get a delivery "
              "report when it is done.", count=len(recipients), at=at))


FLOWS: dict[str, Flow] = {
    "broadcast": {
        "text": Step(ask_broadcast_text, answer_broadcast_text),
        "confirm": Step(ask_broadcast_confirm, answer_broadcast_confirm),
        "when": Step(ask_broadcast_when, answer_broadcast_when),
    },
}
