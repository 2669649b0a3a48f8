"""The scheduler tick and the worker that runs it next to the outbox sender.

No job per patient lives in memory: each enrolment stores its next prompt time (UTC) and the
tick claims the due ones in batches (see storage/dispatch.py). In one transaction per batch it
records that local day's session, queues the prompt in the outbox and moves next_prompt_at on,
so a crash leaves either all of it or none, and several workers never claim the same row.
Prompts more than the grace window late are not sent: their days are recorded as missed, so a
restart after an outage never sends a burst."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import metrics
from bot.delivery import Deliverer
from bot.sender import OutboxSender
from bot.settings import Settings
from conversations.clock import Clock
from conversations.flows.progress import weekly_summary
from conversations.flows.session import HISTORY_DAYS
from conversations.messages import Channel, Outbound
from conversations.program.data import Program
from conversations.program.rules import SessionFact, restart_level
from conversations.prompts import check_message, prompt_message
from conversations.schedule import local_date, next_prompt_at, next_summary_at
from storage import dispatch, retention, stats
from storage.db import Outage, database_lost, is_sqlite
from storage.models import ProgressionEvent
from storage.repository import Repository

log = logging.getLogger(__name__)

BATCH = 5000  # enrolments per transaction: locks held well under a second, ~10 statements
SUMMARY_BATCH = 200  # a summary reads the patient's history: a few queries each
MISSED_ALERT = 3  # prompts missed in a row before the coach is told
PARALLEL = 4  # batches at once on PostgreSQL
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
    """Prompt payloads, as JSON text, for a tick that may queue 100,000: `prompt_message`
    renders one per channel and level, and each patient's copy gets their chat and session
    put in (a test holds the copies equal to what `prompt_message` gives)."""

    CHAT = "chat-7f3e9a"  # stand-ins that no real chat id or session id is
    SESSION = 987_654_321_987

    def __init__(self, program: Program) -> None:
        self.program = program
        self._rendered: dict[tuple[str, int], str] = {}

    def payload(self, channel: str, chat_id: str, session_id: int, level: int) -> str:
        template = self._rendered.get((channel, level))
        if template is None:
            message = prompt_message(cast(Channel, channel), self.CHAT, self.SESSION, level,
                                     self.program)
            template = (_json(message).replace("%", "%%")
                        .replace(json.dumps(self.CHAT), "%(chat)s")
                        .replace(str(self.SESSION), "%(session)d"))
            self._rendered[(channel, level)] = template
        return template % {"chat": json.dumps(chat_id), "session": session_id}


def _json(message: Outbound) -> str:
    return json.dumps(message.model_dump(mode="json"))


def restart_message(level: int) -> str:
    """R6 told with the prompt, to someone who may still be away (so no "welcome back")."""
    return (f"After 7 missed days in a row we restart one level lower, at level {level}, to let "
            "the knee get used to the exercises again.")


class Scheduler:
    """Claims and queues what is due. `parallel` batches run at once within a tick: worth it
    on PostgreSQL, where SKIP LOCKED hands them disjoint rows; SQLite serialises writers."""

    def __init__(self, sessions: async_sessionmaker[DbSession], program: Program, clock: Clock,
                 *, grace: timedelta, batch: int = BATCH, parallel: int = 1,
                 retention: timedelta = timedelta(days=90),
                 audit_retention: timedelta = timedelta(days=365),
                 heartbeat: metrics.Heartbeat | None = None) -> None:
        self.sessions = sessions
        self.heartbeat = heartbeat or metrics.Heartbeat(clock)
        self.retention = retention
        self.audit_retention = audit_retention
        self.program = program
        self.clock = clock
        self.grace = grace
        self.batch = batch
        self.parallel = parallel
        self._prompts_payloads = _Prompts(program)
        self._days_cache: dict[tuple[datetime, str, str, str], _Days] = {}
        self._running = asyncio.Lock()
        self._outage = Outage("scheduler tick", log)

    async def tick(self) -> TickReport:
        """Queue every check, prompt and weekly summary due now, then the reports of finished
        broadcasts. Checks go first: when both fall due together the patient answers the
        morning question before the day's prompt."""
        now = self.clock.now()
        report = TickReport()

        async def batches(step: Callable[[datetime, TickReport], Awaitable[bool]]) -> None:
            while await step(now, report):  # True: a full batch, so there may be more
                pass

        async with self._running:
            self._days_cache.clear()  # computed for this tick's `now`
            for step in (self._checks, self._prompts, self._summaries, self._tallies,
                         self._prune):
                await asyncio.gather(*(batches(step) for _ in range(self.parallel)))
            await self._broadcast_reports(now, report)
        return report

    async def idle(self) -> None:
        """Return once no tick is running."""
        async with self._running:
            pass

    async def job(self) -> None:
        """The periodic job: a failed tick is logged and the next one tries again. A finished
        tick beats the heartbeat that /healthz reads."""
        start = time.perf_counter()
        try:
            report = await self.tick()
        except Exception as exc:
            metrics.TICK_FAILURES.inc()
            if database_lost(exc):  # the next tick tries again: one line per outage
                self._outage.lost(exc)
            else:
                log.exception("scheduler tick failed")
            return
        self._outage.back()
        metrics.TICK_SECONDS.observe(time.perf_counter() - start)
        metrics.PROMPTS.inc(report.prompts)
        self.heartbeat.ticked()
        if any(vars(report).values()):  # quiet unless the tick did something
            log.info("tick: %s", report)

    # --- next-morning checks -------------------------------------------------------------
    async def _checks(self, now: datetime, report: TickReport) -> bool:
        async with self.sessions() as db, db.begin():
            due = await dispatch.claim_due_checks(db, now, self.batch)
            # A check for someone paused, unreachable, or too late after an outage is dropped:
            # /today still asks the morning question of any open session.
            wanted = {d.user_id: local_date(now, d.timezone or "UTC") for d in due
                      if d.status == "active" and not d.unreachable
                      and now - d.next_check_at <= self.grace}
            # The check is for the session of the day before; older ones are left to /today.
            open_sessions = await dispatch.unchecked_sessions(db, wanted, CHECK_LOOKBACK)
            rows = []
            for check in due:
                session_id = open_sessions.get(check.user_id)
                if session_id is None:
                    continue
                message = check_message(cast(Channel, check.channel), check.chat_id, session_id,
                                        now, check.timezone or "UTC")
                rows.append(_outbox_row(check.user_id, check.channel, check.chat_id, "check",
                                        _json(message), f"check:{session_id}"))
            await dispatch.enqueue_many(db, rows, now)
            await dispatch.clear_checks(db, [d.user_id for d in due], now)
        report.checks += len(rows)
        return len(due) == self.batch

    # --- daily prompts -------------------------------------------------------------------
    def _days(self, due: dispatch.DuePrompt, now: datetime) -> _Days:
        tz, hhmm, days = due.timezone, due.reminder_time, due.reminder_days
        if not (tz and hhmm and days):
            return _Days()  # nothing to schedule by: next_prompt_at is cleared
        key = (due.next_prompt_at, tz, hhmm, days)
        found = self._days_cache.get(key)  # a tick's patients share a few schedules
        if found is not None:
            return found
        at, scheduled = due.next_prompt_at, []
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
            due = await dispatch.claim_due_prompts(db, now, self.batch)
            plans = [(d, self._days(d, now)) for d in due]
            # Unanswered prompts of earlier days are missed now that a later day has come.
            missing = await dispatch.miss_open_sessions(
                db, _by_day((d.user_id, p.last) for d, p in plans))
            missed = [(d.user_id, day) for d, p in plans for day in p.missed]
            await dispatch.add_sessions(db, _by_day(missed), "missed", now)
            report.missed += len(missed)
            report.alerts += await self._missed_alerts(
                db, missing | {user_id for user_id, _ in missed}, now)

            sending = {(d.user_id, p.send): d for d, p in plans if p.send is not None}
            # The patient may have opened the day's session already (/today): keep it.
            existing = await dispatch.sessions_on(db, sending.keys())
            fresh = [(key[1], d) for key, d in sending.items() if key not in existing]
            restarts = await self._restarts(db, fresh, now)
            report.restarts += len(restarts)
            moves: dict[datetime | None, list[int]] = defaultdict(list)
            for d, p in plans:
                moves[p.next_at].append(d.user_id)
            await dispatch.advance(db, moves, restarts, now)  # first: sessions take the level
            added = await dispatch.add_sessions(
                db, _by_day((d.user_id, day) for day, d in fresh), "prompted", now)

            rows = []
            for (user_id, day), d in sending.items():
                if (user_id, day) in existing:
                    session_id, status, level = existing[(user_id, day)]
                    if status != "prompted":
                        continue  # reported already: no reminder needed
                elif user_id in added:
                    session_id, level = added[user_id], restarts.get(user_id, d.level)
                else:
                    continue  # opened through /today this very moment: it is on screen
                if user_id in restarts:
                    message = prompt_message(cast(Channel, d.channel), d.chat_id, session_id,
                                             level, self.program)
                    payload = _json(message.model_copy(
                        update={"text": f"{restart_message(level)}\n\n{message.text}"}))
                else:
                    payload = self._prompts_payloads.payload(d.channel, d.chat_id, session_id,
                                                             level)
                rows.append(_outbox_row(user_id, d.channel, d.chat_id, "prompt", payload,
                                        f"prompt:{user_id}:{day.isoformat()}"))
            await dispatch.enqueue_many(db, rows, now)
            report.prompts += len(rows)
        return len(due) == self.batch

    @staticmethod
    async def _missed_alerts(db: DbSession, user_ids: set[int], now: datetime) -> int:
        """Tell the coach of each patient whose missed prompts just reached a run of three."""
        runs = await dispatch.missed_in_a_row(db, user_ids, MISSED_ALERT)
        repo = Repository(db)
        for user_id, day in runs.items():
            patient = await repo.user_by_id(user_id)
            if patient is not None:
                await repo.alert_coach(
                    patient, f"missed {MISSED_ALERT} prompts in a row (the latest on "
                    f"{day.isoformat()}).", now, dedupe_key=f"missed:{user_id}:{day.isoformat()}")
        return len(runs)

    # --- weekly summaries and broadcast reports ---------------------------------------------
    async def _summaries(self, now: datetime, report: TickReport) -> bool:
        async with self.sessions() as db, db.begin():
            due = await dispatch.claim_due_summaries(db, now, SUMMARY_BATCH)
            repo = Repository(db)
            moves: dict[datetime, list[int]] = defaultdict(list)
            rows = []
            for d in due:
                tz = d.timezone or "UTC"
                moves[next_summary_at(now, tz, d.summary_day)].append(d.user_id)
                if now - d.next_summary_at > self.grace:
                    continue  # the service was down: skip this week's rather than send late
                user = await repo.user_by_id(d.user_id)
                if user is None or user.status != "active" or user.unreachable:
                    continue
                today = local_date(now, tz)
                text = await weekly_summary(repo, user, today)
                if text is None:
                    continue  # nothing to sum up yet
                year, week, _ = today.isocalendar()
                message = Outbound(channel=cast(Channel, user.channel), chat_id=user.chat_id,
                                   text=f"{text} /progress shows the chart.")
                rows.append(_outbox_row(user.id, user.channel, user.chat_id, "summary",
                                        _json(message), f"summary:{user.id}:{year}-W{week:02d}"))
            await dispatch.advance_summaries(db, moves, now)
            await dispatch.enqueue_many(db, rows, now)
        report.summaries += len(rows)
        return len(due) == SUMMARY_BATCH

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
            for done in await dispatch.finish_broadcasts(db, now):
                sent, blocked, failed = (done.outcomes.get(k, 0)
                                         for k in ("sent", "blocked", "failed"))
                text = (f"Your broadcast of {done.send_at:%Y-%m-%d %H:%M} UTC reached {sent} "
                        f"patient{'s' if sent != 1 else ''}; {blocked} had blocked the bot; "
                        f"{failed} could not be delivered.")
                message = Outbound(channel=cast(Channel, done.channel), chat_id=done.chat_id,
                                   text=text)
                rows.append(_outbox_row(done.coach_id, done.channel, done.chat_id, "report",
                                        _json(message), f"broadcast-report:{done.id}"))
            await dispatch.enqueue_many(db, rows, now)
        report.reports += len(rows)

    async def _restarts(self, db: DbSession, fresh: list[tuple[date, dispatch.DuePrompt]],
                        now: datetime) -> dict[int, int]:
        """R6 for the sessions about to be created: user_id -> the lower level, for those
        whose missed days in a row call for a re-start (stored as a progression event)."""
        history_days = timedelta(days=HISTORY_DAYS)
        # Only a patient whose latest session is a missed one can be in a run of missed days.
        candidates = await dispatch.last_missed_before(
            db, _by_day((d.user_id, day) for day, d in fresh), history_days)
        if not candidates:
            return {}
        starting = {d.user_id: (day, d) for day, d in fresh if d.user_id in candidates}
        since = min(day for day, _ in starting.values()) - history_days
        history = await dispatch.session_history(db, candidates, since)
        lowered: dict[int, int] = {}
        for user_id, (day, d) in starting.items():
            facts = [SessionFact(day=s.day, level=s.level, status=s.status,  # type: ignore[arg-type]
                                 pain_during=s.pain_during, morning_delta=s.morning_delta,
                                 morning_symptom=s.morning_symptom)
                     for s in history[user_id] if day - history_days <= s.day < day]
            lower = restart_level(level=d.level, today=day, sessions=facts)
            if lower is None or lower == d.level:
                continue
            lowered[user_id] = lower
            db.add(ProgressionEvent(user_id=user_id, at=now, day=day, from_level=d.level,
                                    to_level=lower, action="restart", rule="R6",
                                    message=restart_message(lower)))
        return lowered


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


async def run_worker(settings: Settings, sessions: async_sessionmaker[DbSession],
                     program: Program, deliverers: Mapping[str, Deliverer], clock: Clock,
                     stop: asyncio.Event, heartbeat: metrics.Heartbeat | None = None) -> None:
    """Tick every `tick_seconds` and drain the outbox until `stop` is set. Any number of
    workers may run against one PostgreSQL database. `heartbeat` hears of each finished tick
    and whether the sender runs."""
    heartbeat = heartbeat or metrics.Heartbeat(clock)
    scheduler = Scheduler(sessions, program, clock,
                          grace=timedelta(minutes=settings.grace_minutes),
                          parallel=1 if is_sqlite(settings.database_url) else PARALLEL,
                          retention=timedelta(days=settings.retention_days),
                          audit_retention=timedelta(days=settings.audit_retention_days),
                          heartbeat=heartbeat)
    sender = OutboxSender(sessions, deliverers, clock, rate=settings.send_rate)
    jobs = AsyncIOScheduler(timezone=UTC)
    # One tick at a time; ticks missed while one ran long fold into one. First tick now.
    jobs.add_job(scheduler.job, "interval", seconds=settings.tick_seconds, max_instances=1,
                 coalesce=True, misfire_grace_time=None, next_run_time=datetime.now(UTC))
    jobs.start()
    heartbeat.sender_running = True
    try:
        await sender.run(stop)
    finally:
        heartbeat.sender_running = False
        jobs.shutdown(wait=False)
        await scheduler.idle()  # a tick in progress commits (or rolls back) before we return
