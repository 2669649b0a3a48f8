"""Coaches and admins: roles, invites, clearing holds and the patient list (broadcasts and
the figures have modules of their own). Every permission is checked by the channel's user
id (admins) or the stored role (coaches), never by a display name."""

from __future__ import annotations

import logging
import re
import secrets
from collections import defaultdict
from datetime import date, datetime, timedelta

from conversations import i18n
from conversations.alerts import named
from conversations.context import Ctx
from conversations.flows import holds
from conversations.i18n import N_, _, ngettext
from conversations.messages import CHANNEL_NAME, Button, ButtonToken, Outbound
from conversations.numbers import whole
from conversations.said import wording
from storage.models import Hold, Invite, User
from storage.repository import Repository

log = logging.getLogger(__name__)

FILE_STEP = "file"  # the patient file's buttons (flows/patient_file.py, which imports this)
INVITE_DAYS = 14
PAGE = 10
CODE = re.compile(r"^[A-Z0-9]{6,16}$")


def is_coach(ctx: Ctx) -> bool:
    return ctx.user.role == "coach" or ctx.admin


# --- invites ---------------------------------------------------------------------------------
async def invite(ctx: Ctx) -> None:
    args = ctx.inbound.args
    if args and args[0].lower() == "revoke":
        code = args[1].upper() if len(args) > 1 else ""
        found = await ctx.repo.invite(code)
        if found is None or (found.coach_id != ctx.user.id and not ctx.admin):
            ctx.say(_("I know no invite with that code of yours. Usage: /invite revoke CODE"))
            return
        found.revoked = True
        ctx.say(_("Invite {code} is revoked; nobody can join with it now.", code=code))
        return
    code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
    expires = ctx.now + timedelta(days=INVITE_DAYS)
    await ctx.repo.add_invite(code, ctx.user.id, expires, ctx.now)
    link = ctx.links.get(ctx.user.channel)
    ctx.say(_("Invite code: {code} (valid until {day}). A patient sends /join {code}, or "
               "opens {link}. /invite revoke {code} cancels it.", code=code,
               day=f"{expires:%Y-%m-%d}", link=link.format(code=code)) if link else
             _("Invite code: {code} (valid until {day}). A patient sends /join {code}. "
               "/invite revoke {code} cancels it.", code=code, day=f"{expires:%Y-%m-%d}"))


def unknown_invite(code: str) -> str:
    """Why a code did not link the patient to a coach, and how to get one that does."""
    if CODE.match(code.upper()):
        return _("The invite code {code} is unknown, revoked or expired (a code lasts {days} "
                 "days), so you are not connected with a coach. Please ask your coach for a new "
                 "code, then send /join CODE.", code=code.upper(), days=INVITE_DAYS)
    return _("That invite code is unknown, revoked or expired (a code lasts {days} days), so "
             "you are not connected with a coach. Please ask your coach for a new code, then "
             "send /join CODE.", days=INVITE_DAYS)


async def _valid_invite(ctx: Ctx, code: str) -> Invite | None:
    return await ctx.repo.valid_invite(code.upper(), ctx.now) if CODE.match(
        code.upper()) else None


async def hold_invite(ctx: Ctx, code: str) -> None:
    """A code given with /start before consent: checked now, so the patient knows at once
    whether they will be linked; a good one waits in the answers until they agree."""
    found = await _valid_invite(ctx, code)
    if found is None:
        ctx.answers.pop("invite", None)
        ctx.say(unknown_invite(code) + " " + _("You can set up without a coach meanwhile."))
        return
    ctx.answers["invite"] = code.upper()
    coach = await ctx.repo.user_by_id(found.coach_id)
    name = coach.display_name if coach and coach.display_name else _("your coach")
    ctx.say(_("Your invite code is valid: once you agree below, you will be connected with "
              "{name}.", name=name))


async def attach(ctx: Ctx, code: str) -> bool:
    """Attach the patient to the coach of a valid invite code; say why not otherwise."""
    found = await _valid_invite(ctx, code)
    if found is None:
        ctx.say(unknown_invite(code))
        return False
    if found.coach_id == ctx.user.id:
        ctx.say(_("That is your own invite code."))
        return False
    coach = await ctx.repo.user_by_id(found.coach_id)
    ctx.user.coach_id = found.coach_id
    name = coach.display_name if coach and coach.display_name else _("your coach")
    ctx.say(_("You are now connected with {name}, who will see your progress and may send "
              "you messages.", name=name))
    if ctx.user.consent_at is not None:
        await ctx.alert_coach(lambda: _("joined you with an invite code."))
    return True


async def join(ctx: Ctx) -> None:
    if not ctx.inbound.args:
        ctx.say(_("Usage: /join CODE, with the code your coach gave you."))
        return
    if ctx.user.consent_at is None:
        ctx.say(_("Please send /start first and agree to the terms; then /join CODE."))
        return
    await attach(ctx, ctx.inbound.args[0])


# --- roles -------------------------------------------------------------------------------------
async def grant(ctx: Ctx, give: bool) -> None:
    args = ctx.inbound.args
    verb = "grant" if give else "revoke"
    if len(args) != 2 or args[0].lower() != "coach":
        ctx.say(_("Usage: /{verb} coach USER, where USER is a channel id such as "
                  "{channel}:123456 (they must have sent /start).", verb=verb,
                  channel=ctx.user.channel))
        return
    target = await find_user(ctx, args[1])
    if target is None:
        ctx.say(_("I know nobody with the id {id}. They must send /start to the bot first.",
                  id=args[1][:64]))
        return
    ctx.say(await set_coach(ctx.repo, target, give, ctx.user.display_id, ctx.now))


async def set_coach(repo: Repository, target: User, give: bool, actor: str, now: datetime
                    ) -> str:
    """The one rule for granting and revoking the coach role, from a chat or the command
    line; returns what to tell the admin. A revoke takes all access away: the patients are
    detached and told, the invite codes void, the unsent alerts dropped."""
    verb = "grant" if give else "revoke"
    target.role = "coach" if give else "patient"
    if give and target.status == "pending":
        target.status = "staff"  # a coach needs no patient consent to use coach commands
    detached = [] if give else await repo.detach_patients(target.id)
    repo.audit(actor, f"{verb}_coach", now, target=target.display_id, detached=len(detached))
    with i18n.speaking(target.language):  # each note in its reader's language
        note = (_("You are now a coach on kneecoach: /invite, /broadcast, /patients.") if give
                else _("You are no longer a coach on kneecoach."))
    await tell(repo, target, note, now)
    for patient in detached:
        with i18n.speaking(patient.language):
            note = _("Your coach is no longer on kneecoach, so nobody sees your progress for "
                     "now. Your program goes on as before; a new coach can send you an invite "
                     "code.")
        await tell(repo, patient, note, now)
    said = (_("{user} is now a coach.", user=target.display_id) if give else
            _("{user} is no longer a coach.", user=target.display_id))
    if detached:
        said += " " + ngettext(
            "Their {n} patient is now without a coach: {patients}.",
            "Their {n} patients are now without a coach: {patients}.", len(detached),
            patients=", ".join(p.display_id for p in detached))
    return said


async def tell(repo: Repository, user: User, text: str, now: datetime, *,
               buttons: tuple[tuple[Button, ...], ...] = (), about: User | None = None) -> None:
    """Queue a note to a user who is not in this chat; one `about` a patient (to a coach) is
    erased with that patient."""
    await repo.enqueue(
        user_id=user.id, channel=user.channel, chat_id=user.chat_id, kind="reply",
        payload=Outbound(channel=user.channel, chat_id=user.chat_id,  # type: ignore[arg-type]
                         text=text, buttons=buttons).model_dump(mode="json"), now=now,
        about_id=about.id if about else None)


def user_ref(ident: str, here: str) -> tuple[str, str] | None:
    """A user as staff name one: "telegram:123456", or a bare id on the channel they are on
    (`here`: "bob" typed in the terminal is console:bob). None when it cannot be anyone."""
    channel, sep, user_id = ident.strip().partition(":")
    if not sep:
        channel, user_id = here, ident.strip()
    if not CHANNEL_NAME.fullmatch(channel) or not user_id or len(user_id) > 64:
        return None
    return channel, user_id


async def find_user(ctx: Ctx, ident: str) -> User | None:
    ref = user_ref(ident, ctx.user.channel)
    return None if ref is None else await ctx.repo.user(*ref)


# --- clearing holds (R9) -----------------------------------------------------------------------
CLEAR_USAGE = N_("Usage: /clear USER [level], where USER is your patient's channel id such as "
               "telegram:123456, and level (optional) the level to restart at.")


async def clear(ctx: Ctx) -> None:
    """/clear USER [level]: the patient's coach (or an admin) lifts their hold."""
    args = ctx.inbound.args
    if not args or len(args) > 2:
        ctx.say(_(CLEAR_USAGE))
        return
    level = None
    if len(args) == 2:
        top = ctx.program.top_level
        level = whole(args[1], 1, top)
        if level is None:
            ctx.say(_("The level must be a whole number from 1 to {top}.", top=top) + " "
                    + _(CLEAR_USAGE))
            return
    target = await find_user(ctx, args[0])
    if target is None or not (ctx.admin or target.coach_id == ctx.user.id):
        _refuse_clear(ctx, args[0][:64])
        ctx.say(_("{user} is not one of your patients, so you cannot clear their hold.",
                  user=args[0][:64]))
        return
    hold = await ctx.repo.open_hold(target.id)
    if hold is None:
        ctx.say(_("{patient} has no hold to clear.", patient=named(target)))
        return
    await _clear(ctx, target, hold, level)


async def clear_button(ctx: Ctx, token: ButtonToken) -> None:
    """A press on the buttons of a clear request (holds.request_clear)."""
    hold = await ctx.repo.hold(token.ref)
    patient = await ctx.repo.user_by_id(hold.user_id) if hold else None
    if hold is None or patient is None or not is_coach(ctx) or not (
            ctx.admin or patient.coach_id == ctx.user.id) or whole(token.value) is None:
        _refuse_clear(ctx, f"hold {token.ref}")
        ctx.say(_("That clear button is not yours to use, so I ignored it."))
        return
    if hold.lifted_at is not None:
        ctx.say(_("That hold of {patient} was lifted already, by {by} on {when} UTC.",
                  patient=named(patient), by=hold.lifted_by,
                  when=i18n.short_date(hold.lifted_at.date()) + f" {hold.lifted_at:%H:%M}"))
        return
    level = int(token.value) or None
    if level is not None and not 1 <= level <= ctx.program.top_level:
        ctx.say(_("That clear button is not one I made, so I ignored it."))
        return
    await _clear(ctx, patient, hold, level if hold.level is not None else None)


def _refuse_clear(ctx: Ctx, target: str) -> None:
    log.warning("refused /clear for %s", ctx.user.display_id)
    ctx.repo.audit(ctx.user.display_id, "refused", ctx.now, command="clear", target=target)


async def _clear(ctx: Ctx, patient: User, hold: Hold, level: int | None) -> None:
    chosen = level if level is not None and level != holds.restart_at(hold) else None
    with i18n.speaking(patient.language):  # what the patient is told, in their language
        said = await holds.lift(ctx, patient, hold, by=ctx.user.display_id,
                                why=wording(N_("cleared by their coach") if patient.coach_id ==
                                         ctx.user.id else N_("cleared by an admin")),
                                level=chosen)
        after = (_("/today shows today's session.") if patient.status == "active" else
                 _("Send /start to answer the safety questions again."))
    await tell(ctx.repo, patient, f"{said} {after}", ctx.now)
    outcome = (_("they restart at level {level}", level=hold.restart_level)
               if hold.restart_level else
               _("they answer the safety questions again before any program"))
    ctx.say(_("Cleared the hold of {patient}: {outcome}. I have told them.",
              patient=named(patient), outcome=outcome))


# --- the patient list ------------------------------------------------------------------------
async def patients(ctx: Ctx) -> None:
    args = ctx.inbound.args
    page = (whole(args[0], 1, 10**6 - 1) if args else None) or 1
    everyone = await ctx.repo.patients_of(ctx.user.id)
    if not everyone:
        ctx.say(_("You have no patients yet. /invite makes a code for them."))
        return
    pages = (len(everyone) + PAGE - 1) // PAGE
    page = min(page, pages)
    shown = everyone[(page - 1) * PAGE: page * PAGE]
    ids = [p.id for p in shown]
    sessions = await ctx.repo.sessions_of(ids, ctx.today - timedelta(days=29))
    pains = await ctx.repo.pains_of(ids, ctx.now - timedelta(days=14))
    by_user: dict[int, list] = defaultdict(list)
    for s in sessions:
        by_user[s.user_id].append(s)
    pain_by: dict[int, list] = defaultdict(list)
    for p in pains:
        pain_by[p.user_id].append(p)
    lines = [_("Your patients (page {page} of {pages}, {count} in all):", page=page,
               pages=pages, count=len(everyone))]
    files = []  # a button per row opens the patient's file
    for n, patient in enumerate(shown, (page - 1) * PAGE + 1):
        program = await ctx.repo.program(patient.id)
        days = by_user[patient.id]
        lines.append(f"{n}. {patient.display_name or patient.display_id} ({patient.display_id}): " +
                     _patient_line(ctx, patient, program.level if program else None, days,
                                   pain_by[patient.id]))
        files.append((Button(label=f"{n}. {patient.display_name or patient.display_id}"[:60],
                             token=ButtonToken(step=FILE_STEP, ref=patient.id,
                                               value="1").encode()),))
    if page < pages:
        lines.append(_("Next: /patients {page}", page=page + 1))
    ctx.say("\n".join(lines), tuple(files))


def _adherence(sessions: list, since: date) -> str:
    window = [s for s in sessions if s.day >= since and s.status != "prompted"]
    kept = sum(s.status in ("done", "partial") for s in window)
    return f"{kept}/{len(window)}" if window else "-"


def _patient_line(ctx: Ctx, patient: User, level: int | None, sessions: list,
                  pains: list) -> str:
    parts = [_("level {level}", level=level) if level else
             _("no program ({status})", status=patient.status),
             f"7d {_adherence(sessions, ctx.today - timedelta(days=6))}",
             f"30d {_adherence(sessions, ctx.today - timedelta(days=29))}"]
    if pains:
        week = ctx.now - timedelta(days=7)
        this = [p.pain for p in pains if p.at >= week]
        before = [p.pain for p in pains if p.at < week]
        trend = ""
        if this and before:
            change = sum(this) / len(this) - sum(before) / len(before)
            trend = " " + (_("rising") if change >= 1 else _("falling") if change <= -1
                           else _("steady"))
        parts.append(_("last pain {pain}/10", pain=pains[-1].pain) + trend)
    flags = []
    if patient.status == "referred":
        flags.append(_("referred (red flag or pain spike)"))
    if any(p.pain >= 8 for p in pains):
        flags.append(_("pain spike"))
    recent = [s.status for s in sessions if s.status != "prompted"][-3:]
    if len(recent) == 3 and all(s == "missed" for s in recent):
        flags.append(_("3+ missed"))
    if patient.unreachable:
        flags.append(_("unreachable"))
    if flags:
        parts.append(_("FLAGS: {flags}", flags=", ".join(flags)))
    return ", ".join(parts)
