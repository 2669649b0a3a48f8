"""One patient's file for their coach (/patient USER [page], or a button of /patients): page 1
is the overview with the patient's /progress chart; the history follows on the next pages,
each within PAGE_CHARS, with a "More" button. A coach opens only their own patients' files,
an admin anyone's; the patient's unread messages are read once their own coach opens it."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from conversations import i18n
from conversations.alerts import named
from conversations.chart import render
from conversations.context import Ctx
from conversations.flows import prescription, progress
from conversations.flows.howto import short
from conversations.flows.staff import FILE_STEP
from conversations.i18n import N_, _
from conversations.localtime import local_date, short_day, zone
from conversations.messages import Button, ButtonToken
from conversations.numbers import whole
from conversations.said import shown
from storage import messages, prescriptions
from storage.models import Hold, Message, PrescriptionChange, ProgressionEvent, Session, User

STEP = FILE_STEP  # the buttons' step; ref: the patient's user id; value: the page
# A page fits one message everywhere: Telegram takes 4096 characters, a Slack section 3000.
PAGE_CHARS = 2600  # and the header line, a name and an id
SESSION_DAYS = 14
MESSAGE_DAYS = 30
PREVIEW_CHARS = 80  # of each unread message on page 1; in full under "Messages"
PREVIEWS = 3

# What people read, kept together for the message catalogs.
USAGE = N_("Usage: /patient USER [page], where USER is your patient's channel id such as "
           "telegram:123456; /patients lists them with a button each.")
PRESCRIBE = N_("Change the prescription")
STATUS = {"active": N_("active"), "paused": N_("paused by the patient"),
          "stopped": N_("stopped by the patient"), "onboarding": N_("setting up"),
          "pending": N_("not set up"), "referred": N_("on hold")}
HOLD_KINDS = {"referral": N_("referral"), "pain": N_("pain")}
MORNING = {0: N_("same or better next morning"), 1: N_("a little worse next morning (+1)"),
           2: N_("clearly worse next morning (+2 or more)")}
SESSION_WORDS = {"done": N_("done"), "partial": N_("partly done"), "skipped": N_("skipped"),
                 "missed": N_("missed"), "prompted": N_("not reported yet")}
CHANGE_WORDS = {"hold": N_("progression held"), "unhold": N_("progression released"),
                "off": N_("{exercise} switched off"), "on": N_("{exercise} switched on"),
                "level": N_("level set to {level}"), "instruct": N_("instruction: {text}")}


def page_button(patient: User, page: int, pages: int) -> Button:
    return Button(label=_("More (page {page} of {pages})", page=page, pages=pages),
                  token=ButtonToken(step=STEP, ref=patient.id, value=str(page)).encode())


async def command(ctx: Ctx) -> None:
    args = ctx.inbound.args
    page = whole(args[1], 1, 10**6) if len(args) == 2 else 1
    if not args or len(args) > 2 or page is None:
        ctx.say(_(USAGE))
        return
    patient = await prescription.patient_for(ctx, args[0], "patient")
    if patient is not None:
        await show(ctx, patient, page)


async def press(ctx: Ctx, token: ButtonToken) -> None:
    """A file's or a prescription's button: the presser must be staff with this patient
    (an admin: any patient) now, whatever the button says."""
    patient = await ctx.repo.user_by_id(token.ref)
    allowed = patient is not None and patient.role == "patient" and (
        ctx.admin or (ctx.user.role == "coach" and patient.coach_id == ctx.user.id))
    page = whole(token.value, 1, 10**6) if token.step == STEP else 1
    if not allowed or patient is None or page is None:
        prescription.refuse(ctx, token.step, f"user {token.ref}")
        ctx.say(_(prescription.FORGED))
        return
    if token.step == STEP:
        await show(ctx, patient, page)
    else:
        await prescription.press(ctx, token, patient)


async def show(ctx: Ctx, patient: User, page: int) -> None:
    own = patient.coach_id == ctx.user.id
    unread = await messages.unread(ctx.repo.db, patient.id)
    pages = [await _overview(ctx, patient, unread), *_pack(await _history(ctx, patient))]
    page = min(page, len(pages))
    lines = [_("{patient}: patient file, page {page} of {pages}", patient=named(patient),
               page=page, pages=len(pages)),
             *pages[page - 1]]
    rows: list[tuple[Button, ...]] = []
    if page < len(pages):
        rows.append((page_button(patient, page + 1, len(pages)),))
    image = None
    if page == 1:
        rx = await prescriptions.current(ctx.repo.db, patient.id)
        rows.append((Button(label=_(PRESCRIBE), token=ButtonToken(
            step=prescription.STEP, ref=patient.id, value=f"m.{rx.version}").encode()),))
        data = await progress.gather(ctx.repo, patient, local_date(
            ctx.now, patient.timezone or "UTC"))
        image = render(data) if data is not None else None
        if own and unread:  # read by their coach now; an admin's look leaves them unread
            await messages.mark_read(ctx.repo.db, patient.id, ctx.now)
    ctx.repo.audit(ctx.user.display_id, "open_file", ctx.now, patient=patient.display_id,
                   page=page)
    ctx.say("\n".join(lines), tuple(rows), image=image)


# --- page 1: the overview --------------------------------------------------------------------
async def _overview(ctx: Ctx, patient: User, unread: list[Message]) -> list[str]:
    repo, tz = ctx.repo, patient.timezone or "UTC"
    today = local_date(ctx.now, tz)
    program = await repo.program(patient.id)
    rx = await prescriptions.current(repo.db, patient.id)
    hold = await repo.open_hold(patient.id)
    coach = await repo.user_by_id(patient.coach_id) if patient.coach_id else None
    status = _(STATUS[patient.status]) if patient.status in STATUS else patient.status
    lines = [_("Status: {status}", status=status) + (_(
        " since {day} ({kind} hold, rule {rule}): they {reason}. /clear {ident} [level] "
        "lifts it.", day=i18n.short_date(hold.started_on), kind=_kind(hold), rule=hold.rule,
        reason=shown(hold.reason), ident=patient.display_id) if hold else "")]
    lines.append(_("Coach: {coach}", coach=named(coach)) if coach else _("Coach: none"))
    if program is not None:
        lines.append(_("Level {level} of {top}", level=program.level,
                       top=ctx.program.top_level)
                     + (_("; progression held by the coach") if rx.held else "")
                     + _("; started {day}, worst pain then {pain}/10",
                         day=i18n.short_date(program.started_on, year=True),
                         pain=program.baseline_worst_pain))
    else:
        lines.append(_("No program yet"))
    off = [short(e) for e in ctx.program.exercises if e.id in rx.off]
    if off:
        lines.append(_("Exercises off: {exercises}", exercises=", ".join(off)))
    if rx.instruction:
        lines.append(_("Instruction: {text}", text=rx.instruction))
    sessions = await repo.sessions_since(patient.id, today - timedelta(days=29))
    lines.append(_("Adherence: last 7 days {week}, last 30 days {month}",
                   week=_adherence(sessions, today - timedelta(days=6)),
                   month=_adherence(sessions, today - timedelta(days=29))))
    lines.append(await _kujala(ctx, patient))
    if unread:
        lines.append(_("Unread messages from the patient: {n} (in full under Messages):",
                       n=len(unread)))
        lines += [f"- {_when(m.created_at, tz)}: {_preview(m.text)}" for m in unread[-PREVIEWS:]]
    else:
        lines.append(_("No unread messages from the patient."))
    return lines


def _kind(hold: Hold) -> str:
    return _(HOLD_KINDS[hold.kind]) if hold.kind in HOLD_KINDS else hold.kind


def _adherence(sessions: list[Session], since: date) -> str:
    window = [s for s in sessions if s.day >= since and s.status != "prompted"]
    kept = sum(s.status in ("done", "partial") for s in window)
    return f"{kept}/{len(window)} ({round(100 * kept / len(window))}%)" if window else "-"


async def _kujala(ctx: Ctx, patient: User) -> str:
    scores = [a for a in await ctx.repo.assessments(patient.id, "kujala") if a.score is not None]
    if not scores:
        return _("Kujala: no score yet")
    tz = patient.timezone or "UTC"
    first, last = scores[0], scores[-1]
    line = _("Kujala: baseline {score}/100 ({day})", score=first.score,
             day=i18n.short_date(local_date(first.created_at, tz)))
    if last is first:
        return line + _(", not asked again yet")
    change = (last.score or 0) - (first.score or 0)
    return line + _(", latest {score}/100 ({day}), change {change}", score=last.score,
                    day=i18n.short_date(local_date(last.created_at, tz)),
                    change=f"{change:+d}")


def _when(at: datetime, tz: str) -> str:
    local = at.astimezone(zone(tz))
    return f"{i18n.short_date(local.date())} {i18n.clock_time(local.time())}"


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[:PREVIEW_CHARS - 3] + "..."


# --- the next pages: the history -------------------------------------------------------------
async def _history(ctx: Ctx, patient: User) -> list[tuple[str, list[str]]]:
    repo, tz = ctx.repo, patient.timezone or "UTC"
    today = local_date(ctx.now, tz)
    program = await repo.program(patient.id)
    events = await repo.events_since(patient.id, program.started_on) if program else []
    holds = await repo.holds_of(patient.id)
    sessions = await repo.sessions_since(patient.id, today - timedelta(days=SESSION_DAYS - 1))
    changes = await prescriptions.changes(repo.db, patient.id)
    since = ctx.now - timedelta(days=MESSAGE_DAYS)
    recent = [m for m in await messages.of(repo.db, patient.id) if m.created_at >= since]
    sections = [(_("Level history"), [_event(e) for e in events]),
                (_("Holds"), [_hold(h, tz) for h in holds]),
                (_("Sessions, last {n} days", n=SESSION_DAYS), [_session(s) for s in sessions]),
                (_("Prescription changes and notes"),
                 [await _change(ctx, c, tz) for c in changes]),
                (_("Messages, last {n} days", n=MESSAGE_DAYS), [_message(m, tz) for m in recent])]
    # An empty section says so, but for holds: most patients never have one.
    return [(title, lines or [_("none")]) for i, (title, lines) in enumerate(sections)
            if lines or i != 1]


def _event(event: ProgressionEvent) -> str:
    values = {"day": i18n.short_date(event.day), "level": event.to_level,
              "rule": _("coach") if event.rule == "coach" else event.rule}
    if event.action == "start":
        return _("{day}: started at level {level} ({rule})", **values)
    if event.action == "review":
        return _("{day}: clinician review advised at level {level} ({rule})", **values)
    if event.action == "stop":
        return _("{day}: program paused at level {level} ({rule})", **values)
    return _("{day}: level {before} -> {level} ({rule})", before=event.from_level, **values)


def _hold(hold: Hold, tz: str) -> str:
    line = _("{day}: {kind} hold (rule {rule}), they {reason}",
             day=i18n.short_date(hold.started_on), kind=_kind(hold), rule=hold.rule,
             reason=shown(hold.reason))
    if hold.lifted_at is None:
        return line + _("; open")
    return (line + _("; lifted {when} by {by}: {reason}", when=_when(hold.lifted_at, tz),
                     by=hold.lifted_by, reason=shown(hold.lift_reason))
            + (_(", restart at level {level}", level=hold.restart_level)
               if hold.restart_level else ""))


def _session(session: Session) -> str:
    status = (_(SESSION_WORDS[session.status]) if session.status in SESSION_WORDS
              else session.status)
    parts = [f"{short_day(session.day.isoweekday())} {i18n.short_date(session.day)}: {status}",
             _("level {level}", level=session.level)]
    if session.pain_during is not None:
        parts.append(_("pain {pain}/10 during", pain=session.pain_during))
    if session.morning_at is not None:
        parts.append(_(MORNING[min(max(session.morning_delta or 0, 0), 2)])
                     + (_("; new swelling, locking or giving way") if session.morning_symptom
                        else ""))
    return ", ".join(parts)


async def _change(ctx: Ctx, change: PrescriptionChange, tz: str) -> str:
    by = await ctx.repo.user_by_id(change.by_id) if change.by_id else None
    exercise = ctx.program.exercise(change.exercise or "")
    what = (_("instruction removed") if change.kind == "instruct" and change.text is None else
            _(CHANGE_WORDS[change.kind], exercise=short(exercise) if exercise else change.exercise,
              level=change.level, text=change.text))
    return _("{when}, {by}: {what}", when=_when(change.at, tz),
             by=named(by) if by else _("a former coach"), what=what)


def _message(message: Message, tz: str) -> str:
    if message.sender == "patient":
        return _("{when}, from the patient: {text}", when=_when(message.created_at, tz),
                 text=message.text)
    return _("{when}, from the coach: {text}", when=_when(message.created_at, tz),
             text=message.text)


def _pack(sections: list[tuple[str, list[str]]]) -> list[list[str]]:
    """The sections in pages of at most PAGE_CHARS, a line too long for one cut in pieces; a
    section's heading goes with (the first piece of) its first line."""
    pages: list[list[str]] = []
    page: list[str] = []
    piece = PAGE_CHARS - 100  # a long line's pieces leave room for a heading

    def put(line: str, reserve: int = 0) -> None:
        nonlocal page
        if page and sum(len(p) + 1 for p in page) + len(line) + reserve > PAGE_CHARS:
            pages.append(page)
            page = []
        page.append(line.lstrip("\n") if not page else line)

    for title, lines in sections:
        put(f"\n{title}:", reserve=min(len(lines[0]), piece) + 1)
        for line in lines:
            for start in range(0, len(line), piece):
                put(line[start:start + piece])
    if page:
        pages.append(page)
    return pages
