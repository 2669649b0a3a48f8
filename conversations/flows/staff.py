"""Coaches and admins: roles, invites, broadcasts, the patient list, statistics and export.
Every permission is checked by the channel's user id (admins) or the stored role (coaches),
never by a display name."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import secrets
from collections import defaultdict
from datetime import date, datetime, timedelta

from conversations.flow import Ctx, Flow, Step
from conversations.flows import holds
from conversations.messages import CHANNEL_NAME, ButtonToken, Document, Outbound
from conversations.numbers import whole
from conversations.questions import Question, choices
from conversations.schedule import local_datetime, zone
from storage.models import Broadcast, Hold, Invite, User
from storage.repository import Repository
from storage.stats import Stats, compute, weekly_rows

log = logging.getLogger(__name__)

INVITE_DAYS = 14
PAGE = 10
MAX_BROADCAST = 12_000  # well under MAX_TEXT_CHARS, so a cut-off input is refused
SCHEDULE_AHEAD = timedelta(days=366)
PERIODS = {"7d": 7, "30d": 30, "90d": 90, "all": None}
CODE = re.compile(r"^[A-Z0-9]{6,16}$")


def who(user: User) -> str:
    return f"{user.channel}:{user.channel_user_id}"


async def refuse(ctx: Ctx, role: str) -> None:
    """A command the user may not use: a clear answer, a log line and an audit entry."""
    log.warning("refused /%s for %s (not %s)", ctx.inbound.command, who(ctx.user), role)
    ctx.repo.audit(who(ctx.user), "refused", ctx.now, command=ctx.inbound.command or "")
    who_may = "coaches" if role == "coach" else "admins"
    ctx.say(f"Sorry, /{ctx.inbound.command} is only for {who_may}.")


def is_coach(ctx: Ctx) -> bool:
    return ctx.user.role == "coach" or ctx.admin


_PERIOD = re.compile(r"^([1-9]\d{0,3})([dw])$", re.ASCII)  # any number of days or weeks: 45d, 12w
MAX_PERIOD_DAYS = 3660


def period_of(text: str) -> tuple[str, int | None] | None:
    """"30d", "12w" or "all" to (the period as written, its days; None for all)."""
    key = text.strip().lower()
    if key in PERIODS:
        return key, PERIODS[key]
    match = _PERIOD.match(key)
    if match is None:
        return None
    days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
    return (key, days) if days <= MAX_PERIOD_DAYS else None


def parse_period(args: tuple[str, ...]) -> tuple[str, int | None] | None:
    return period_of(args[0] if args else "30d")


def since_of(ctx: Ctx, days: int | None) -> date | None:
    return None if days is None else ctx.today - timedelta(days=days - 1)


# --- invites ---------------------------------------------------------------------------------
async def invite(ctx: Ctx) -> None:
    args = ctx.inbound.args
    if args and args[0].lower() == "revoke":
        code = args[1].upper() if len(args) > 1 else ""
        found = await ctx.repo.invite(code)
        if found is None or (found.coach_id != ctx.user.id and not ctx.admin):
            ctx.say("I know no invite with that code of yours. Usage: /invite revoke CODE")
            return
        found.revoked = True
        ctx.say(f"Invite {code} is revoked; nobody can join with it now.")
        return
    code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
    expires = ctx.now + timedelta(days=INVITE_DAYS)
    await ctx.repo.add_invite(code, ctx.user.id, expires, ctx.now)
    link = ctx.links.get(ctx.user.channel)
    ctx.say(f"Invite code: {code} (valid until {expires:%Y-%m-%d}). A patient sends "
            f"/join {code}" + (f", or opens {link.format(code=code)}" if link else "") +
            f". /invite revoke {code} cancels it.")


def unknown_invite(code: str) -> str:
    """Why a code did not link the patient to a coach, and how to get one that does."""
    shown = f"The invite code {code.upper()}" if CODE.match(code.upper()) else "That invite code"
    return (f"{shown} is unknown, revoked or expired (a code lasts {INVITE_DAYS} days), so you "
            "are not connected with a coach. Please ask your coach for a new code, then send "
            "/join CODE.")


async def _valid_invite(ctx: Ctx, code: str) -> Invite | None:
    return await ctx.repo.valid_invite(code.upper(), ctx.now) if CODE.match(
        code.upper()) else None


async def hold_invite(ctx: Ctx, code: str) -> None:
    """A code given with /start before consent: checked now, so the patient knows at once
    whether they will be linked; a good one waits in the answers until they agree."""
    found = await _valid_invite(ctx, code)
    if found is None:
        ctx.answers.pop("invite", None)
        ctx.say(f"{unknown_invite(code)} You can set up without a coach meanwhile.")
        return
    ctx.answers["invite"] = code.upper()
    coach = await ctx.repo.user_by_id(found.coach_id)
    name = coach.display_name if coach and coach.display_name else "your coach"
    ctx.say(f"Your invite code is valid: once you agree below, you will be connected with "
            f"{name}.")


async def attach(ctx: Ctx, code: str) -> bool:
    """Attach the patient to the coach of a valid invite code; say why not otherwise."""
    found = await _valid_invite(ctx, code)
    if found is None:
        ctx.say(unknown_invite(code))
        return False
    if found.coach_id == ctx.user.id:
        ctx.say("That is your own invite code.")
        return False
    coach = await ctx.repo.user_by_id(found.coach_id)
    ctx.user.coach_id = found.coach_id
    name = coach.display_name if coach and coach.display_name else "your coach"
    ctx.say(f"You are now connected with {name}, who will see your progress and may send "
            "you messages.")
    if ctx.user.consent_at is not None:
        await ctx.alert_coach("joined you with an invite code.")
    return True


async def join(ctx: Ctx) -> None:
    if not ctx.inbound.args:
        ctx.say("Usage: /join CODE, with the code your coach gave you.")
        return
    if ctx.user.consent_at is None:
        ctx.say("Please send /start first and agree to the terms; then /join CODE.")
        return
    await attach(ctx, ctx.inbound.args[0])


# --- roles -------------------------------------------------------------------------------------
async def grant(ctx: Ctx, give: bool) -> None:
    args = ctx.inbound.args
    verb = "grant" if give else "revoke"
    if len(args) != 2 or args[0].lower() != "coach":
        ctx.say(f"Usage: /{verb} coach USER, where USER is a channel id such as "
                f"{ctx.user.channel}:123456 (they must have sent /start).")
        return
    target = await find_user(ctx, args[1])
    if target is None:
        ctx.say(f"I know nobody with the id {args[1][:64]}. They must send /start to the bot "
                "first.")
        return
    ctx.say(await set_coach(ctx.repo, target, give, who(ctx.user), ctx.now))


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
    repo.audit(actor, f"{verb}_coach", now, target=who(target), detached=len(detached))
    note = ("You are now a coach on kneecoach: /invite, /broadcast, /patients." if give
            else "You are no longer a coach on kneecoach.")
    await _tell(repo, target, note, now)
    for patient in detached:
        await _tell(repo, patient, "Your coach is no longer on kneecoach, so nobody sees your "
                    "progress for now. Your program goes on as before; a new coach can send "
                    "you an invite code.", now)
    said = f"{who(target)} is {'now a coach' if give else 'no longer a coach'}."
    if detached:
        said += (f" Their {len(detached)} patient{'s are' if len(detached) > 1 else ' is'} "
                 "now without a coach: " + ", ".join(who(p) for p in detached) + ".")
    return said


async def _tell(repo: Repository, user: User, text: str, now: datetime) -> None:
    await repo.enqueue(
        user_id=user.id, channel=user.channel, chat_id=user.chat_id, kind="reply",
        payload=Outbound(channel=user.channel, chat_id=user.chat_id,  # type: ignore[arg-type]
                         text=text).model_dump(mode="json"), now=now)


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
CLEAR_USAGE = ("Usage: /clear USER [level], where USER is your patient's channel id such as "
               "telegram:123456, and level (optional) the level to restart at.")


async def clear(ctx: Ctx) -> None:
    """/clear USER [level]: the patient's coach (or an admin) lifts their hold."""
    args = ctx.inbound.args
    if not args or len(args) > 2:
        ctx.say(CLEAR_USAGE)
        return
    level = None
    if len(args) == 2:
        top = ctx.program.top_level
        level = whole(args[1], 1, top)
        if level is None:
            ctx.say(f"The level must be a whole number from 1 to {top}. {CLEAR_USAGE}")
            return
    target = await find_user(ctx, args[0])
    if target is None or not (ctx.admin or target.coach_id == ctx.user.id):
        _refuse_clear(ctx, args[0][:64])
        ctx.say(f"{args[0][:64]} is not one of your patients, so you cannot clear their hold.")
        return
    hold = await ctx.repo.open_hold(target.id)
    if hold is None:
        ctx.say(f"{holds.named(target)} has no hold to clear.")
        return
    await _clear(ctx, target, hold, level)


async def clear_button(ctx: Ctx, token: ButtonToken) -> None:
    """A press on the buttons of a clear request (holds.request_clear)."""
    hold = await ctx.repo.hold(token.ref)
    patient = await ctx.repo.user_by_id(hold.user_id) if hold else None
    if hold is None or patient is None or not is_coach(ctx) or not (
            ctx.admin or patient.coach_id == ctx.user.id) or whole(token.value) is None:
        _refuse_clear(ctx, f"hold {token.ref}")
        ctx.say("That clear button is not yours to use, so I ignored it.")
        return
    if hold.lifted_at is not None:
        ctx.say(f"That hold of {holds.named(patient)} was lifted already, by {hold.lifted_by} "
                f"on {hold.lifted_at:%d %b %H:%M} UTC.")
        return
    level = int(token.value) or None
    if level is not None and not 1 <= level <= ctx.program.top_level:
        ctx.say("That clear button is not one I made, so I ignored it.")
        return
    await _clear(ctx, patient, hold, level if hold.level is not None else None)


def _refuse_clear(ctx: Ctx, target: str) -> None:
    log.warning("refused /clear for %s", who(ctx.user))
    ctx.repo.audit(who(ctx.user), "refused", ctx.now, command="clear", target=target)


async def _clear(ctx: Ctx, patient: User, hold: Hold, level: int | None) -> None:
    chosen = level if level is not None and level != holds.restart_at(hold) else None
    said = await holds.lift(ctx, patient, hold, by=who(ctx.user),
                            why="cleared by " + ("their coach" if patient.coach_id == ctx.user.id
                                                 else "an admin"), level=chosen)
    after = ("/today shows today's session." if patient.status == "active" else
             "Send /start to answer the safety questions again.")
    await ctx.repo.enqueue(
        user_id=patient.id, channel=patient.channel, chat_id=patient.chat_id, kind="reply",
        payload=Outbound(channel=patient.channel, chat_id=patient.chat_id,  # type: ignore[arg-type]
                         text=f"{said} {after}").model_dump(mode="json"), now=ctx.now)
    outcome = (f"they restart at level {hold.restart_level}" if hold.restart_level else
               "they answer the safety questions again before any program")
    ctx.say(f"Cleared the hold of {holds.named(patient)}: {outcome}. I have told them.")


# --- the patient list ------------------------------------------------------------------------
async def patients(ctx: Ctx) -> None:
    args = ctx.inbound.args
    page = (whole(args[0], 1, 10**6 - 1) if args else None) or 1
    everyone = await ctx.repo.patients_of(ctx.user.id)
    if not everyone:
        ctx.say("You have no patients yet. /invite makes a code for them.")
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
    lines = [f"Your patients (page {page} of {pages}, {len(everyone)} in all):"]
    for n, patient in enumerate(shown, (page - 1) * PAGE + 1):
        program = await ctx.repo.program(patient.id)
        days = by_user[patient.id]
        lines.append(f"{n}. {patient.display_name or who(patient)} ({who(patient)}): " +
                     _patient_line(ctx, patient, program.level if program else None, days,
                                   pain_by[patient.id]))
    if page < pages:
        lines.append(f"Next: /patients {page + 1}")
    ctx.say("\n".join(lines))


def _adherence(sessions: list, since: date) -> str:
    window = [s for s in sessions if s.day >= since and s.status != "prompted"]
    kept = sum(s.status in ("done", "partial") for s in window)
    return f"{kept}/{len(window)}" if window else "-"


def _patient_line(ctx: Ctx, patient: User, level: int | None, sessions: list,
                  pains: list) -> str:
    parts = [f"level {level}" if level else f"no program ({patient.status})",
             f"7d {_adherence(sessions, ctx.today - timedelta(days=6))}",
             f"30d {_adherence(sessions, ctx.today - timedelta(days=29))}"]
    if pains:
        week = ctx.now - timedelta(days=7)
        this = [p.pain for p in pains if p.at >= week]
        before = [p.pain for p in pains if p.at < week]
        trend = ""
        if this and before:
            change = sum(this) / len(this) - sum(before) / len(before)
            trend = " rising" if change >= 1 else " falling" if change <= -1 else " steady"
        parts.append(f"last pain {pains[-1].pain}/10{trend}")
    flags = []
    if patient.status == "referred":
        flags.append("referred (red flag or pain spike)")
    if any(p.pain >= 8 for p in pains):
        flags.append("pain spike")
    recent = [s.status for s in sessions if s.status != "prompted"][-3:]
    if len(recent) == 3 and all(s == "missed" for s in recent):
        flags.append("3+ missed")
    if patient.unreachable:
        flags.append("unreachable")
    if flags:
        parts.append("FLAGS: " + ", ".join(flags))
    return ", ".join(parts)


# --- broadcasts --------------------------------------------------------------------------------
def _broadcast_text(text: str) -> str | None:
    return text if text and len(text) <= MAX_BROADCAST else None


def ask_broadcast_text(ctx: Ctx) -> Question:
    return Question("Write the message for your active patients (up to 12,000 characters). "
                    "/cancel stops.", parse=_broadcast_text, raw=True,
                    hint=f"A broadcast needs some text, at most {MAX_BROADCAST:,} characters.")


async def answer_broadcast_text(ctx: Ctx, value: str) -> str | None:
    ctx.answers["text"] = value
    return "confirm"


def ask_broadcast_confirm(ctx: Ctx) -> Question:
    count = ctx.answers.get("recipients", 0)
    text = ctx.answers["text"]
    preview = text if len(text) <= 500 else text[:500] + f"... ({len(text):,} characters)"
    return choices(f"Preview, to {count} patient{'s' if count != 1 else ''}:\n\n{preview}",
                   [("now", "Send now"), ("later", "Schedule"), ("cancel", "Cancel")],
                   columns=3)


async def answer_broadcast_confirm(ctx: Ctx, value: str) -> str | None:
    if value == "cancel":
        ctx.say("Broadcast cancelled; nothing was sent.")
        return None
    if value == "later":
        return "when"
    await _queue_broadcast(ctx, ctx.now)
    return None


def _parse_when(text: str) -> str | None:
    text = " ".join(text.split())
    return text if re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}", text, re.ASCII) else None


def ask_broadcast_when(ctx: Ctx) -> Question:
    return Question(f"When should it go? Send a date and time such as 2026-12-01 18:00 "
                    f"({ctx.user.timezone or 'UTC'}).", parse=_parse_when,
                    hint="Please send a date and time such as 2026-12-01 18:00.")


async def answer_broadcast_when(ctx: Ctx, value: str) -> str | None:
    day, hhmm = value.split(" ")
    try:
        when = local_datetime(date.fromisoformat(day), f"{int(hhmm[:-3]):02d}:{hhmm[-2:]}",
                              ctx.user.timezone or "UTC")
    except (ValueError, OverflowError):  # 9999-12-31 23:59 east of UTC is past year 9999
        ctx.say("That is not a real date and time. Please send one such as 2026-12-01 18:00.")
        return "when"
    if when <= ctx.now:
        ctx.say("That time has passed. Please send a time in the future.")
        return "when"
    if when > ctx.now + SCHEDULE_AHEAD:
        ctx.say(f"A broadcast can be scheduled up to {SCHEDULE_AHEAD.days} days ahead. "
                "Please send an earlier time.")
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
        message = Outbound(channel=patient.channel, chat_id=patient.chat_id,  # type: ignore[arg-type]
                           text=f"Message from your coach:\n\n{text}")
        await ctx.repo.enqueue(user_id=patient.id, channel=patient.channel,
                               chat_id=patient.chat_id, kind="broadcast",
                               payload=message.model_dump(mode="json"), now=ctx.now,
                               dedupe_key=f"broadcast:{row.id}:{patient.id}",
                               broadcast_id=row.id, not_before=when)
    ctx.repo.audit(who(ctx.user), "broadcast", ctx.now, broadcast=row.id,
                   recipients=len(recipients))
    local = when.astimezone(zone(ctx.user.timezone or "UTC"))
    at = "now" if when <= ctx.now else f"at {local:%Y-%m-%d %H:%M}"
    ctx.say(f"Broadcast queued to {len(recipients)} patients, sending {at}. You will get a "
            "delivery report when it is done.")


# --- statistics ------------------------------------------------------------------------------
COLUMNS = ("group", "enrolled", "new", "active", "paused", "referred", "stopped",
           "prompts_sent", "done", "partial", "skipped", "missed", "adherence",
           "median_pain_change", "median_kujala_change", "progressed", "held", "regressed")


def render(rows: list[Stats], fmt: str) -> str:
    data = [row.public() for row in rows]
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(data)
        return out.getvalue()
    cells = [[_cell(d[c]) for c in COLUMNS] for d in data]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def summary(row: Stats, period: str) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    return (f"{row.group} ({period}): {row.enrolled} enrolled ({row.new} new), {row.active} "
            f"active, {row.paused} paused, {row.referred} referred. Prompts sent "
            f"{row.prompts_sent}. Sessions: {row.done} done, {row.partial} partly, "
            f"{row.skipped} skipped, {row.missed} missed; adherence {pct(row.adherence)}. "
            f"Median change in worst pain {_cell(row.median_pain_change)}, in Kujala "
            f"{_cell(row.median_kujala_change)}. Progressed {pct(row.progressed)}, held "
            f"{pct(row.held)}, regressed {pct(row.regressed)}.")


async def stats(ctx: Ctx) -> None:
    period = parse_period(ctx.inbound.args)
    if period is None:
        ctx.say("Usage: /stats 7d, 30d, 12w (any number of days or weeks) or all.")
        return
    rows = await compute(ctx.repo.db, since_of(ctx, period[1]), ctx.today)
    ctx.say("\n\n".join(summary(row, period[0]) for row in rows))


async def export(ctx: Ctx) -> None:
    period = parse_period(ctx.inbound.args)
    if period is None:
        ctx.say("Usage: /export 7d, 30d, 12w (any number of days or weeks) or all.")
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["patient", "coach", "week_start", "level", "done", "partial", "skipped",
                     "missed", "mean_pain", "worst_pain"])
    async for row in weekly_rows(ctx.repo.db, since_of(ctx, period[1])):
        writer.writerow([row.patient, row.coach or "", row.week_start.isoformat(), row.level,
                         row.done, row.partial, row.skipped, row.missed,
                         "" if row.mean_pain is None else row.mean_pain,
                         "" if row.worst_pain is None else row.worst_pain])
    ctx.repo.audit(who(ctx.user), "export_csv", ctx.now, period=period[0])
    ctx.say(f"One row per patient per week ({period[0]}), as CSV.",
            document=Document(filename=f"kneecoach-{period[0]}.csv",
                              content=out.getvalue().encode(), mime_type="text/csv"))


FLOWS: dict[str, Flow] = {
    "broadcast": {
        "text": Step(ask_broadcast_text, answer_broadcast_text),
        "confirm": Step(ask_broadcast_confirm, answer_broadcast_confirm),
        "when": Step(ask_broadcast_when, answer_broadcast_when),
    },
}
