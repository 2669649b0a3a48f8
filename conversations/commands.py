"""The commands: each a small handler that returns where to go, as a step's answer does (see
conversations/context.py), under the guards its one declaration names.

Adding a command is a handler with `@command("name", ...)` over it: `enrolled=True` when it
needs a finished set-up, `role="coach"` or `role="admin"` when only staff may use it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from conversations.context import REASK, STAY, Ctx
from conversations.flows import (
    account,
    admin,
    howto,
    language,
    messages,
    onboarding,
    patient_file,
    prescription,
    progress,
    session,
    staff,
    statistics,
)
from conversations.i18n import N_, _

log = logging.getLogger(__name__)

ENROLLED = ("active", "paused", "referred", "stopped")

HELP = N_(
    "I am kneecoach, your knee-cap exercise coach.\n"
    "/today - today's exercises and report how it went\n"
    "/how - see how an exercise is done (/how 1 for the first)\n"
    "/pain - report your knee pain now\n"
    "/progress - your level, sessions and pain so far\n"
    "/settings - change reminder time, days or timezone\n"
    "/pause, /resume, /stop - pause, restart or stop the reminders\n"
    "/mydata - everything I hold about you, as a file\n"
    "/delete - erase everything I hold about you\n"
    "/ask - write to your coach (/ask and your message)\n"
    "/language - the language I write in (English, Español, Deutsch)\n"
    "/cancel - leave the current question; nothing half-done is kept\n"
    "I am not a diagnosis or a clinician. Stop an exercise that causes sharp pain and see a "
    "physiotherapist or doctor if you are worried."
)
STAFF_HELP = N_(
    "Coach commands: /invite (a code for a new patient; /invite revoke CODE), /patients "
    "[page], /broadcast (preview, then send now or schedule), /clear USER [level] (lift a "
    "patient's hold after a referral or pain pause), /reply USER [text] (write to a patient; "
    "their messages come with a Reply button).\n"
    "A patient's file and program: /patient USER (their file, chart and unread messages, "
    "with buttons to change the program), /level USER N, /hold USER and /unhold USER "
    "(keep them at their level, or let the rules move it up again), /exercise USER "
    "EXERCISE off|on, /instruct USER text (shown with every session; /instruct USER - "
    "removes it).\n"
    "Admin commands: /grant coach USER, /revoke coach USER, /stats [7d|30d|90d|all], "
    "/export [7d|30d|90d|all] (CSV), /coaches [page] (patients, open holds and unread "
    "messages of each coach), /assign USER COACH (move a patient to a coach).\n"
    "USER is a channel id such as telegram:123456. Patients' commands: /help."
)
# The command menu a channel shows (Telegram's setMyCommands): the patient's commands.
MENU: tuple[tuple[str, str], ...] = (
    ("today", N_("today's exercises; report how it went")),
    ("how", N_("see how an exercise is done")),
    ("pain", N_("report your knee pain now")),
    ("progress", N_("your chart: sessions, pain, level")),
    ("settings", N_("reminder time, days or timezone")),
    ("pause", N_("pause the reminders")),
    ("resume", N_("start the reminders again")),
    ("stop", N_("stop the program")),
    ("ask", N_("write to your coach")),
    ("mydata", N_("everything I hold about you, as a file")),
    ("delete", N_("erase everything I hold about you")),
    ("cancel", N_("leave the current question")),
    ("language", N_("the language I write in")),
    ("help", N_("what I can do")),
)
_NOT_ACTIVE = {
    "paused": N_("Your program is paused. Send /resume to start again."),
    "stopped": N_("Your program is stopped. Send /resume to start again."),
    "referred": N_("Your program is paused until a clinician has seen your knee. After that, "
                   "send /resume."),
    "active": "",
}

Role = Literal["coach", "admin"]
Handler = Callable[[Ctx], Awaitable[str | None]]


@dataclass(frozen=True)
class Command:
    handler: Handler
    enrolled: bool = False  # the patient has finished setting up (ENROLLED)
    role: Role | None = None  # only coaches (admins too) or only admins


COMMANDS: dict[str, Command] = {}


def command(name: str, *, enrolled: bool = False, role: Role | None = None
            ) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(handler, enrolled, role)
        return handler
    return register


async def run(ctx: Ctx, name: str) -> str | None:
    """The command's answer, once its guards let it through."""
    found = COMMANDS.get(name)
    if found is None:
        ctx.say(_("I do not know /{name}. /help lists what I can do.", name=name))
        return REASK
    if found.role is not None and not (staff.is_coach(ctx) if found.role == "coach"
                                       else ctx.admin):
        refuse(ctx, found.role)
        return REASK
    if found.enrolled and ctx.user.status not in ENROLLED:
        return finish_setting_up(ctx)
    return await found.handler(ctx)


def refuse(ctx: Ctx, role: Role) -> None:
    """The guard of the staff commands: a clear answer, a log line and an audit entry."""
    log.warning("refused /%s for %s (not %s)", ctx.inbound.command, ctx.user.display_id, role)
    ctx.repo.audit(ctx.user.display_id, "refused", ctx.now, command=ctx.inbound.command or "")
    ctx.say(_("Sorry, /{command} is only for coaches.", command=ctx.inbound.command)
            if role == "coach" else
            _("Sorry, /{command} is only for admins.", command=ctx.inbound.command))


def finish_setting_up(ctx: Ctx) -> str:
    """The guard of the commands for enrolled patients."""
    ctx.say(_("Let us finish setting up first."))
    return "onboarding:consent" if ctx.flow == "idle" else REASK


# --- everyone -------------------------------------------------------------------------------
@command("start")
async def start(ctx: Ctx) -> str | None:
    if ctx.inbound.args and ctx.user.consent_at is not None:
        await staff.attach(ctx, ctx.inbound.args[0])
    elif ctx.inbound.args and ctx.user.status == "pending":
        await staff.hold_invite(ctx, ctx.inbound.args[0])
        return "onboarding:consent"  # keeps the code with the step
    if ctx.user.status == "staff":
        ctx.say(_(STAFF_HELP))
        return STAY
    if ctx.user.status in ("pending", "onboarding"):
        if ctx.flow == "onboarding":
            ctx.say(_("Welcome back; here is where we were."))
            return REASK
        if ctx.user.status == "onboarding":  # consented, then cancelled the questions
            ctx.say(_("Let us go through the questions from the start."))
            return onboarding.start_screen(ctx)
        return "onboarding:consent"
    if ctx.user.status == "referred":
        return await resume(ctx)
    ctx.say(_("You are already set up. /today shows today's exercises; /help lists "
              "everything."))
    return STAY


@command("help")
async def help_(ctx: Ctx) -> str | None:
    ctx.say(_(HELP))
    return REASK


@command("cancel")
async def cancel(ctx: Ctx) -> str | None:
    if ctx.flow == "idle":
        ctx.say(_("There is nothing to cancel. /help lists what I can do."))
        return STAY
    ctx.say(_("Cancelled. Nothing from that conversation was saved.") +
            (" " + _("Send /start to continue setting up.") if ctx.user.status in (
                "pending", "onboarding") else ""))
    return None


@command("how")
async def how(ctx: Ctx) -> str | None:
    await howto.command(ctx)
    return REASK


@command("language")
async def language_(ctx: Ctx) -> str | None:
    return REASK if await language.command(ctx) else STAY


@command("mydata")
async def mydata(ctx: Ctx) -> str | None:
    await account.export(ctx)
    return REASK


@command("delete")
async def delete(ctx: Ctx) -> str | None:
    ctx.answers = {}
    return "delete:confirm"


@command("ask")
async def ask(ctx: Ctx) -> str | None:
    return await messages.ask(ctx)


@command("join")
async def join(ctx: Ctx) -> str | None:
    await staff.join(ctx)
    return REASK


@command("stop")
async def stop(ctx: Ctx) -> str | None:
    if ctx.user.status in ("pending", "onboarding"):
        return await account.stop_onboarding(ctx)
    if ctx.user.status not in ENROLLED:  # staff: the enrolled patients' guard, after the above
        return finish_setting_up(ctx)
    ctx.answers = {}
    return "stop:confirm"


# --- enrolled patients ------------------------------------------------------------------------
@command("today", enrolled=True)
async def today(ctx: Ctx) -> str | None:
    if ctx.user.status != "active":
        ctx.say(_(_NOT_ACTIVE[ctx.user.status]))
        return STAY
    return await session.open_today(ctx)


@command("pain", enrolled=True)
async def pain(ctx: Ctx) -> str | None:
    ctx.answers = {}
    return "pain:now"


@command("settings", enrolled=True)
async def settings(ctx: Ctx) -> str | None:
    ctx.answers = {}
    return "settings:what"


@command("progress", enrolled=True)
async def progress_(ctx: Ctx) -> str | None:
    await progress.show(ctx)
    return REASK


@command("pause", enrolled=True)
async def pause(ctx: Ctx) -> str | None:
    if ctx.user.status != "active":
        ctx.say(_(_NOT_ACTIVE[ctx.user.status]))
        return STAY
    ctx.user.status = "paused"
    await account.reschedule(ctx)
    ctx.say(_("Paused: no reminders until you send /resume."))
    return REASK


@command("resume", enrolled=True)
async def resume(ctx: Ctx) -> str | None:
    if ctx.user.status == "referred":
        ctx.answers = {}
        return await account.resume_held(ctx)
    if ctx.user.status == "active":
        ctx.say(_("Your program is running already. /today shows today's session."))
        return STAY
    ctx.user.status = "active"
    await account.reschedule(ctx)
    ctx.say(_("Welcome back. {schedule} /today shows today's session.",
              schedule=account.schedule_line(ctx)))
    return REASK


# --- coaches ---------------------------------------------------------------------------------
@command("invite", role="coach")
async def invite(ctx: Ctx) -> str | None:
    await staff.invite(ctx)
    return STAY


@command("patients", role="coach")
async def patients(ctx: Ctx) -> str | None:
    await staff.patients(ctx)
    return STAY


@command("broadcast", role="coach")
async def broadcast(ctx: Ctx) -> str | None:
    recipients = await ctx.repo.patients_of(ctx.user.id, ("active",))
    if not recipients:
        ctx.say(_("You have no active patients to send to. /invite makes a code for them."))
        return STAY
    ctx.answers = {"recipients": len(recipients)}
    return "broadcast:text"


@command("clear", role="coach")
async def clear(ctx: Ctx) -> str | None:
    await staff.clear(ctx)
    return STAY


@command("reply", role="coach")
async def reply(ctx: Ctx) -> str | None:
    return await messages.reply(ctx)


@command("patient", role="coach")
async def patient(ctx: Ctx) -> str | None:
    await patient_file.command(ctx)
    return STAY


@command("level", role="coach")
async def level(ctx: Ctx) -> str | None:
    await prescription.level(ctx)
    return STAY


@command("hold", role="coach")
async def hold(ctx: Ctx) -> str | None:
    await prescription.hold(ctx, held=True)
    return STAY


@command("unhold", role="coach")
async def unhold(ctx: Ctx) -> str | None:
    await prescription.hold(ctx, held=False)
    return STAY


@command("exercise", role="coach")
async def exercise(ctx: Ctx) -> str | None:
    await prescription.exercise(ctx)
    return STAY


@command("instruct", role="coach")
async def instruct(ctx: Ctx) -> str | None:
    await prescription.instruct(ctx)
    return STAY


# --- admins ----------------------------------------------------------------------------------
@command("grant", role="admin")
async def grant(ctx: Ctx) -> str | None:
    await staff.grant(ctx, give=True)
    return STAY


@command("revoke", role="admin")
async def revoke(ctx: Ctx) -> str | None:
    await staff.grant(ctx, give=False)
    return STAY


@command("stats", role="admin")
async def stats(ctx: Ctx) -> str | None:
    await statistics.stats(ctx)
    return STAY


@command("export", role="admin")
async def export(ctx: Ctx) -> str | None:
    await statistics.export(ctx)
    return STAY


@command("coaches", role="admin")
async def coaches(ctx: Ctx) -> str | None:
    await admin.coaches(ctx)
    return STAY


@command("assign", role="admin")
async def assign(ctx: Ctx) -> str | None:
    await admin.assign(ctx)
    return STAY
