"""The daily tick's decisions: what falls due now, and what to send for it.

No job per patient lives in memory: each enrolment stores its next prompt time (UTC) and the
tick claims the due ones in batches (storage/due.py). In one transaction per batch it records
that local day's session, queues the prompt in the outbox (storage/outbox.py) and moves
next_prompt_at on, so a crash leaves either all of it or none, and several workers never claim
the same row. Prompts more than the grace window late are not sent: their days are recorded
as missed, so a restart after an outage never sends a burst. Then come the next-morning
checks, R6's restarts, the coach's missed-prompt alerts, the weekly summaries and the reports
of finished broadcasts. bot/scheduler.py runs this on APScheduler."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conversations import i18n
from conversations.alerts import alert_coach
from conversations.flows.progress import weekly_summary
from conversations.flows.session import HISTORY_DAYS
from conversations.i18n import ngettext
from conversations.localtime import local_date, next_prompt_at, next_summary_at
from conversations.messages import Channel, Outbound
from conversations.program.data import Program
from conversations.program.rules import Restart, SessionFact, r6_restart
from conversations.prompts import check_message, prompt_message
from storage import due, outbox, prescriptions, retention, stats
from storage.models import ProgressionEvent
from storage.repository import Repository

BATCH = 5000  # enrolments per transaction: locks held well under a second, ~10 statements
SUMMARY_BATCH = 200  # a summary reads the patient's history: a few queries each
MISSED_ALERT = 3  # prompts missed in a row before the coach is told
CHECK_LOOKBACK = timedelta(days=2)


@dataclass
class TickReport:
    prompts: int = 0  # prompts queued
    missed: int = 0  # scheduled days recorded as missed (too late to prompt)
    checks: int = 0  # next-morning checks queued
    restarts: int = 0  # R6: back one level after 7 missed days
    summaries: int = 0  # weekly summaries queued
    alerts: int = 0  # coaches told of 3 missed prompts in a row
    reports: int = 0  # broadcast delivery reports queued


@dataclass(frozen=True, slots=True)
class _Days:
    """What the scheduled prompt times passed by `now` come to for one schedule."""

    missed: tuple[date, ...] = ()  # too late to prompt: recorded as missed
    send: date | None = None  # the day to prompt for, still within the grace window
    last: date | None = None  # the latest scheduled day passed
    next_at: datetime | None = None


class _Prompts:
    """The prompt's payload, as JSON text, rendered once per channel and level for a tick that
    may queue 100,000: the database puts each patient's chat and session in for the stand-ins
    (storage/outbox.py; a test holds the copies equal to what `prompt_message` gives)."""

    CHAT = "chat-7f3e9a"  # stand-ins that no real chat id or session id is
    SESSION = 987_654_321_987
    MARKS = (json.dumps(CHAT), str(SESSION))

    def __init__(self, program: Program) -> None:
        self.program = program
        self._rendered: dict[tuple[str, int, str | None], str] = {}

    def template(self, channel: str, level: int, language: str | None) -> str:
        template = self._rendered.get((channel, level, language))
        if template is None:
            with i18n.speaking(language):
                template = _json(prompt_message(cast(Channel, channel), self.CHAT, self.SESSION,
                                                level, self.program))
            self._rendered[(channel, level, language)] = template
        return template


def _json(message: Outbound) -> str:
    return json.dumps(message.model_dump(mode="json"))


class Tick:
    """Claims and queues what is due at a moment. `parallel` batches run at once: worth it on
    PostgreSQL, where SKIP LOCKED hands them disjoint rows; SQLite serialises writers."""

    def __init__(self, sessions: async_sessionmaker[DbSession], program: Program, *,
                 grace: timedelta, batch: int = BATCH, parallel: int = 1,
                 retention: timedelta = timedelta(days=90),
                 audit_retention: timedelta = timedelta(days=365),
                 default_language: str = i18n.SOURCE) -> None:
        self.sessions = sessions
        self.program = program
        self.grace = grace
        self.batch = batch
        self.parallel = parallel
        self.retention = retention
        self.audit_retention = audit_retention
        # For a reader with no language stored (rows from before migration 0013).
        self.default_language = default_language
        self._prompts_payloads = _Prompts(program)
        self._days_cache: dict[tuple[datetime, str, str, str], _Days] = {}
        # Set on shutdown: a run ends after the batches in hand, each committed whole, and
        # leaves the rest due for the next run (of this worker or another).
        self.stopping = False

    async def run(self, now: datetime) -> TickReport:
        """Queue every check, prompt and weekly summary due at `now`, then the reports of
        finished broadcasts. Checks go first: when both fall due together the patient answers
        the morning question before the day's prompt. One run at a time (the caller's lock)."""
        report = TickReport()

        async def batches(step: Callable[[datetime, TickReport], Awaitable[bool]]) -> None:
            # True: a full batch, so there may be more
            while not self.stopping and await step(now, report):
                pass

        self._days_cache.clear()  # computed for this run's `now`
        for step in (self._checks, self._prompts, self._summaries, self._tallies, self._prune):
            await asyncio.gather(*(batches(step) for _ in range(self.parallel)))
        if not self.stopping:
            await self._broadcast_reports(now, report)
        return report

    # --- next-morning checks -------------------------------------------------------------
    async def _checks(self, now: datetime, report: TickReport) -> bool:
        async with self.sessions() as db, db.begin():
            claimed = await due.claim_due_checks(db, now, self.batch)
            # A check for someone paused, unreachable, or too late after an outage is dropped:
            # /today still asks the morning question of any open session.
            wanted = {d.user_id: local_date(now, d.timezone or "UTC") for d in claimed
                      if d.status == "active" and not d.unreachable
                      and now - d.next_check_at <= self.grace}
            # The check is for the session of the day before; older ones are left to /today.
            open_sessions = await due.unchecked_sessions(db, wanted, CHECK_LOOKBACK)
            rows = []
            for check in claimed:
                session_id = open_sessions.get(check.user_id)
                if session_id is None:
                    continue
                with i18n.speaking(check.language or self.default_language):
                    message = check_message(cast(Channel, check.channel), check.chat_id,
                                            session_id, now, check.timezone or "UTC")
                rows.append(_outbox_row(check.user_id, check.channel, check.chat_id, "check",
                                        _json(message), f"check:{session_id}"))
            await outbox.enqueue_many(db, rows, now)
            await due.clear_checks(db, [d.user_id for d in claimed], now)
        report.checks += len(rows)
        return len(claimed) == self.batch

    # --- daily prompts -------------------------------------------------------------------
    def _days(self, prompt: due.DuePrompt, now: datetime) -> _Days:
        tz, hhmm, days = prompt.timezone, prompt.reminder_time, prompt.reminder_days
        if not (tz and hhmm and days):
            return _Days()  # nothing to schedule by: next_prompt_at is cleared
        key = (prompt.next_prompt_at, tz, hhmm, days)
        found = self._days_cache.get(key)  # a tick's patients share a few schedules
        if found is not None:
            return found
        at, scheduled = prompt.next_prompt_at, []
        while at <= now:  # every scheduled time passed since the last tick (or outage)
            scheduled.append((local_date(at, tz), at))
            at = next_prompt_at(at, tz, hhmm, days)
        last, last_at = scheduled[-1]
        send = last if now - last_at <= self.grace else None
        found = _Days(missed=tuple(day for day, _ in scheduled if day != send), send=send,
                      last=last, next_at=at)
        self._days_cache[key] = found
        return found

    async def _prompts(self, now: datetime, report: TickReport) -> bool:
        async with self.sessions() as db, db.begin():
            claimed = await due.claim_due_prompts(db, now, self.batch)
            plans = [(d, self._days(d, now)) for d in claimed]
            # Unanswered prompts of earlier days are missed now that a later day has come.
            missing = await due.miss_open_sessions(
                db, _by_day((d.user_id, p.last) for d, p in plans))
            missed = [(d.user_id, day) for d, p in plans for day in p.missed]
            await due.add_sessions(db, _by_day(missed), "missed", now)
            report.missed += len(missed)
            report.alerts += await self._missed_alerts(
                db, missing | {user_id for user_id, _ in missed}, now)

            sending = {(d.user_id, p.send): d for d, p in plans if p.send is not None}
            # The patient may have opened the day's session already (/today): keep it.
            existing = await due.sessions_on(db, sending.keys())
            fresh = [(key[1], d) for key, d in sending.items() if key not in existing]
            restarts = await self._restarts(db, fresh, now)
            report.restarts += len(restarts)
            await due.advance(db, {d.user_id: p.next_at for d, p in plans},
                              {uid: r.to_level for uid, r in restarts.items()},
                              now)  # first: the new sessions take the level
            added = await due.add_sessions(
                db, _by_day((d.user_id, day) for day, d in fresh), "prompted", now)

            rows = []  # a re-start's prompt (it says why) and prescribed ones, built here
            # The rest in SQL, from one copy per channel, level and language.
            copies: dict[tuple[str, int, str | None], list[int]] = defaultdict(list)
            # A coach's prescription (exercises off, an instruction) makes a patient's own copy.
            rxs = await prescriptions.current_of(db, [uid for uid, _ in sending])
            for (user_id, day), d in sending.items():
                if (user_id, day) in existing:
                    session_id, status, level = existing[(user_id, day)]
                    if status != "prompted":
                        continue  # reported already: no reminder needed
                elif user_id in added:
                    session_id = added[user_id]
                    level = restarts[user_id].to_level if user_id in restarts else d.level
                else:
                    continue  # opened through /today this very moment: it is on screen
                rx = rxs.get(user_id, prescriptions.NONE)
                if user_id not in restarts and rx.plain:
                    language = d.language or self.default_language
                    copies[(d.channel, level, language)].append(session_id)
                    continue
                with i18n.speaking(d.language or self.default_language):
                    message = prompt_message(cast(Channel, d.channel), d.chat_id, session_id,
                                             level, self.program, rx.off, rx.instruction)
                before = f"{restarts[user_id].message}\n\n" if user_id in restarts else ""
                rows.append(_outbox_row(user_id, d.channel, d.chat_id, "prompt", _json(
                    message.model_copy(update={"text": before + message.text})),
                    f"prompt:{user_id}:{day.isoformat()}"))
            await outbox.enqueue_many(db, rows, now)
            for (channel, level, language), session_ids in copies.items():
                await outbox.enqueue_per_session(
                    db, "prompt", self._prompts_payloads.template(channel, level, language),
                    _Prompts.MARKS, session_ids, now)
            report.prompts += len(rows) + sum(map(len, copies.values()))
        return len(claimed) == self.batch

    async def _missed_alerts(self, db: DbSession, user_ids: set[int], now: datetime) -> int:
        """Tell the coach of each patient whose missed prompts just reached a run of three."""
        runs = await due.missed_in_a_row(db, user_ids, MISSED_ALERT)
        repo = Repository(db)
        for user_id, day in runs.items():
            patient = await repo.user_by_id(user_id)
            if patient is not None:
                await alert_coach(repo, patient, lambda day=day: i18n._(
                    "missed {n} prompts in a row (the latest on {day}).", n=MISSED_ALERT,
                    day=i18n.day(day)), now, dedupe_key=f"missed:{user_id}:{day.isoformat()}",
                    default_language=self.default_language)
        return len(runs)

    # --- weekly summaries and broadcast reports ---------------------------------------------
    async def _summaries(self, now: datetime, report: TickReport) -> bool:
        async with self.sessions() as db, db.begin():
            claimed = await due.claim_due_summaries(db, now, SUMMARY_BATCH)
            repo = Repository(db)
            moves: dict[datetime, list[int]] = defaultdict(list)
            rows = []
            for d in claimed:
                tz = d.timezone or "UTC"
                moves[next_summary_at(now, tz, d.summary_day)].append(d.user_id)
                if now - d.next_summary_at > self.grace:
                    continue  # the service was down: skip this week's rather than send late
                user = await repo.user_by_id(d.user_id)
                if user is None or user.status != "active" or user.unreachable:
                    continue
                today = local_date(now, tz)
                with i18n.speaking(user.language or self.default_language):
                    text = await weekly_summary(repo, user, today)
                    chart = i18n._("/progress shows the chart.")
                if text is None:
                    continue  # nothing to sum up yet
                year, week, _ = today.isocalendar()
                message = Outbound(channel=cast(Channel, user.channel), chat_id=user.chat_id,
                                   text=f"{text} {chart}")
                rows.append(_outbox_row(user.id, user.channel, user.chat_id, "summary",
                                        _json(message), f"summary:{user.id}:{year}-W{week:02d}"))
            await due.advance_summaries(db, moves, now)
            await outbox.enqueue_many(db, rows, now)
        report.summaries += len(rows)
        return len(claimed) == SUMMARY_BATCH

    async def _tallies(self, now: datetime, report: TickReport) -> bool:
        """Count the sessions reported and prompts sent since the last tick into the
        statistics' tallies."""
        async with self.sessions() as db, db.begin():
            return await stats.fold(db, self.batch)

    async def _prune(self, now: datetime, report: TickReport) -> bool:
        """Delete what is kept only for the retention periods (after the tallies counted
        the prompts sent)."""
        async with self.sessions() as db, db.begin():
            return await retention.prune(db, now, self.retention, self.audit_retention,
                                         self.batch)

    async def _broadcast_reports(self, now: datetime, report: TickReport) -> None:
        async with self.sessions() as db, db.begin():
            rows = []
            for done in await outbox.finish_broadcasts(db, now):
                sent, blocked, failed = (done.outcomes.get(k, 0)
                                         for k in ("sent", "blocked", "failed"))
                coach = await Repository(db).user_by_id(done.coach_id)
                with i18n.speaking((coach.language if coach else None) or self.default_language):
                    text = ngettext(
                        "Your broadcast of {when} UTC reached {n} patient; {blocked} had "
                        "blocked the bot; {failed} could not be delivered.",
                        "Your broadcast of {when} UTC reached {n} patients; {blocked} had "
                        "blocked the bot; {failed} could not be delivered.", sent,
                        when=f"{done.send_at:%Y-%m-%d %H:%M}", blocked=blocked, failed=failed)
                message = Outbound(channel=cast(Channel, done.channel), chat_id=done.chat_id,
                                   text=text)
                rows.append(_outbox_row(done.coach_id, done.channel, done.chat_id, "report",
                                        _json(message), f"broadcast-report:{done.id}"))
            await outbox.enqueue_many(db, rows, now)
        report.reports += len(rows)

    async def _restarts(self, db: DbSession, fresh: list[tuple[date, due.DuePrompt]],
                        now: datetime) -> dict[int, Restart]:
        """R6 for the sessions about to be created: user_id -> the re-start, for those whose
        missed days in a row call for one (stored as a progression event)."""
        history_days = timedelta(days=HISTORY_DAYS)
        # Only a patient whose latest session is a missed one can be in a run of missed days.
        candidates = await due.last_missed_before(
            db, _by_day((d.user_id, day) for day, d in fresh), history_days)
        if not candidates:
            return {}
        starting = {d.user_id: (day, d) for day, d in fresh if d.user_id in candidates}
        since = min(day for day, _ in starting.values()) - history_days
        history = await due.session_history(db, candidates, since)
        restarts: dict[int, Restart] = {}
        for user_id, (day, d) in starting.items():
            facts = [SessionFact.model_validate(s)
                     for s in history[user_id] if day - history_days <= s.day < day]
            with i18n.speaking(d.language or self.default_language):  # the prompt's first line
                restart = r6_restart(level=d.level, today=day, sessions=facts, back=False)
            if restart is not None:
                restarts[user_id] = restart
                db.add(ProgressionEvent(user_id=user_id, at=now, **restart.model_dump()))
        return restarts


def _by_day(pairs: Iterable[tuple[int, date | None]]) -> dict[date, list[int]]:
    grouped: dict[date, list[int]] = defaultdict(list)
    for user_id, day in pairs:
        if day is not None:
            grouped[day].append(user_id)
    return grouped


def _outbox_row(user_id: int, channel: str, chat_id: str, kind: str, payload: str,
                dedupe_key: str) -> dict[str, Any]:
    return {"user_id": user_id, "channel": channel, "chat_id": chat_id, "kind": kind,
            "payload": payload, "dedupe_key": dedupe_key}


