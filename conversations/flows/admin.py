"""The admin's view of the coaches (/coaches) and moving a patient to another coach
(/assign USER COACH): both coaches and the patient are told, and the move is audited by ids."""

from __future__ import annotations

from conversations import i18n
from conversations.alerts import named
from conversations.context import Ctx
from conversations.flows.messages import message_button
from conversations.flows.staff import find_user, tell
from conversations.i18n import N_, _, ngettext
from conversations.numbers import whole
from storage import messages
from storage.messages import CoachCounts
from storage.models import User

PAGE = 20
COACH_ROLES = ("coach", "admin")  # an admin may have patients of their own

# What people read, kept together for the message catalogs.
NO_COACHES = N_("There are no coaches yet. /grant coach USER makes one.")
COACHES = N_("Coaches (page {page} of {pages}, {count} in all):")
NEXT = N_("Next: /coaches {page}")
WITHOUT = N_("Without a coach")
ASSIGN_USAGE = N_("Usage: /assign USER COACH, both channel ids such as telegram:123456: moves "
                "the patient USER to the coach COACH.")
UNKNOWN = N_("I know nobody with the id {ident}. They must send /start to the bot first.")
NOT_PATIENT = N_("{user} is not a patient who has agreed to the terms, so they cannot be "
               "assigned a coach.")
NOT_COACH = N_("{user} is not a coach. /grant coach {ident} makes them one first.")
ALREADY = N_("{patient} is with {coach} already.")
ASSIGNED = N_("{patient} is now with {coach}{before}. I have told {told}.")
TO_PATIENT = N_("You are now with {coach} as your coach, who will see your progress and may send "
              "you messages.")
TO_NEW_COACH = N_("An admin has made you the coach of {patient}{notes}. /patients lists them.")
TO_OLD_COACH = N_("{patient} has moved to another coach ({coach}); you no longer see their "
                  "progress.")


def _unread(n: int) -> str:
    return ngettext("{n} unread message", "{n} unread messages", n)


def _line(row: CoachCounts) -> str:
    counts = (ngettext("{n} patient", "{n} patients", row.patients) + ", "
              + ngettext("{n} open hold", "{n} open holds", row.open_holds) + ", "
              + _unread(row.unread))
    return f"{named(row.coach) if row.coach else _(WITHOUT)}: {counts}"


async def coaches(ctx: Ctx) -> None:
    """/coaches [page]: each coach with their patients, open holds and unread messages."""
    rows = await messages.coach_counts(ctx.repo.db)
    if not rows:
        ctx.say(_(NO_COACHES))
        return
    args = ctx.inbound.args
    pages = (len(rows) + PAGE - 1) // PAGE
    page = min((whole(args[0], 1, 10**6 - 1) if args else None) or 1, pages)
    count = sum(row.coach is not None for row in rows)
    lines = [_(COACHES, page=page, pages=pages, count=count)]
    lines += [f"{n}. {_line(row)}" if row.coach else _line(row)
              for n, row in enumerate(rows[(page - 1) * PAGE: page * PAGE], (page - 1) * PAGE + 1)]
    if page < pages:
        lines.append(_(NEXT, page=page + 1))
    ctx.say("\n".join(lines))


async def assign(ctx: Ctx) -> None:
    """/assign USER COACH: the patient moves to that coach; pending alerts and messages about
    them to the former coach are dropped (the stored messages stay in the patient's file)."""
    args = ctx.inbound.args
    if len(args) != 2:
        ctx.say(_(ASSIGN_USAGE))
        return
    patient, coach = await find_user(ctx, args[0]), await find_user(ctx, args[1])
    for ident, found in ((args[0], patient), (args[1], coach)):
        if found is None:
            ctx.say(_(UNKNOWN, ident=ident[:64]))
            return
    assert patient is not None and coach is not None
    if patient.role != "patient" or patient.consent_at is None:
        ctx.say(_(NOT_PATIENT, user=named(patient)))
        return
    if coach.role not in COACH_ROLES:
        ctx.say(_(NOT_COACH, user=named(coach), ident=coach.display_id))
        return
    if patient.coach_id == coach.id:
        ctx.say(_(ALREADY, patient=named(patient), coach=named(coach)))
        return
    former = await ctx.repo.user_by_id(patient.coach_id) if patient.coach_id else None
    patient.coach_id = coach.id
    ctx.repo.audit(ctx.user.display_id, "assign", ctx.now, patient=patient.display_id,
                   former=former.display_id if former else "", coach=coach.display_id)
    with i18n.speaking(patient.language):  # each note in its reader's language
        note, buttons = (_(TO_PATIENT, coach=coach.display_name or _("a new coach")),
                         message_button(patient))
    await tell(ctx.repo, patient, note, ctx.now, buttons=buttons)
    with i18n.speaking(coach.language):
        note = _(TO_NEW_COACH, patient=named(patient), notes=await _notes(ctx, patient))
    await tell(ctx.repo, coach, note, ctx.now, about=patient)
    told = [named(patient), named(coach)]
    if former is not None:
        await messages.drop_pending(ctx.repo.db, former.id, patient.id)
        with i18n.speaking(former.language):
            note = _(TO_OLD_COACH, patient=named(patient), coach=named(coach))
        await tell(ctx.repo, former, note, ctx.now, about=patient)
        told.append(named(former))
    ctx.say(_(ASSIGNED, patient=named(patient), coach=named(coach),
                            before=" " + _("(before: {coach})", coach=named(former))
                            if former else "",
                            told=", ".join(told)))


async def _notes(ctx: Ctx, patient: User) -> str:
    """What the new coach should know at once: an open hold, unread messages."""
    notes = []
    hold = await ctx.repo.open_hold(patient.id)
    if hold is not None:
        notes.append(_("on hold since {day} (/clear {patient} lifts it)",
                       day=i18n.short_date(hold.started_on), patient=patient.display_id))
    unread = len(await messages.unread(ctx.repo.db, patient.id))
    if unread:
        notes.append(_("{unread} in their file", unread=_unread(unread)))
    return f"; {', '.join(notes)}" if notes else ""
