"""The repository the conversation engine works through: one instance per transaction."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.orm.attributes import set_committed_value

from storage import stats
from storage.db import upsert
from storage.models import (
    PERSONAL_TABLES,
    Assessment,
    AuditLog,
    Base,
    ConversationState,
    Hold,
    Invite,
    MediaUpload,
    Outbox,
    PainReport,
    ProcessedUpdate,
    ProgramState,
    ProgressionEvent,
    Session,
    User,
)

# Every message anyone sends runs these three statements. Built once with bound parameters,
# they are compiled once: building them per call was most of a reply's time in Python
# (bench/telegram_update_cost.py, profiled).
_FIRST_DELIVERY = {
    dialect: insert(ProcessedUpdate.__table__)
    .values(channel=bindparam("channel"), update_id=bindparam("update_id"), at=bindparam("at"))
    .on_conflict_do_nothing(index_elements=["channel", "update_id"])
    for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))}
_USER_WITH_STATE = (
    select(User, ConversationState).outerjoin(ConversationState)
    .where(User.channel == bindparam("channel"),
           User.channel_user_id == bindparam("channel_user_id"))
    .execution_options(populate_existing=True))
_state = ConversationState.__table__
_SAVE_STATE = (
    update(_state)
    .where(_state.c.user_id == bindparam("of"), _state.c.version == bindparam("expected"))
    .values(flow=bindparam("to_flow"), step=bindparam("to_step"),
            answers=bindparam("to_answers"), version=bindparam("to_version"),
            updated_at=bindparam("at")))


class StaleState(Exception):
    """Another process advanced this conversation first; the caller retries from fresh state."""


class Repository:
    def __init__(self, db: DbSession) -> None:
        self.db = db

    # --- files a chat platform holds for a bot -------------------------------------------
    async def media_file_id(self, bot: str, media_key: str) -> str | None:
        return await self.db.scalar(select(MediaUpload.file_id).where(
            MediaUpload.bot == bot, MediaUpload.media_key == media_key))

    async def remember_media(self, bot: str, media_key: str, file_id: str | None,
                             now: datetime) -> None:
        """Keep (or with None, forget) the platform's id for this bot's upload of the file."""
        if file_id is None:
            await self.db.execute(delete(MediaUpload).where(
                MediaUpload.bot == bot, MediaUpload.media_key == media_key))
            return
        statement = upsert(self.db, MediaUpload).values(
            bot=bot, media_key=media_key, file_id=file_id, created_at=now)
        await self.db.execute(statement.on_conflict_do_update(
            index_elements=["bot", "media_key"],
            set_={"file_id": file_id, "created_at": now}))

    # --- idempotency -------------------------------------------------------------------
    async def first_delivery(self, channel: str, update_id: str, now: datetime) -> bool:
        """Record an update id; False if it was handled before (a redelivery). One statement
        on both databases: this runs for every message anyone sends."""
        result = await self.db.execute(
            _FIRST_DELIVERY[self.db.get_bind().dialect.name],
            {"channel": channel, "update_id": update_id, "at": now})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # --- users and conversation state ----------------------------------------------------
    async def user(self, channel: str, channel_user_id: str) -> User | None:
        return await self.db.scalar(
            select(User).where(User.channel == channel, User.channel_user_id == channel_user_id)
        )

    async def user_with_state(self, channel: str, channel_user_id: str
                              ) -> tuple[User, ConversationState] | None:
        """The user and their conversation, in one query: every message starts with this."""
        row = (await self.db.execute(_USER_WITH_STATE, {
            "channel": channel, "channel_user_id": channel_user_id})).first()
        if row is None:
            return None
        if row[1] is None:
            raise StaleState("no conversation state")
        return row[0], row[1]

    async def user_by_id(self, user_id: int) -> User | None:
        return await self.db.get(User, user_id)

    async def add_user(self, channel: str, channel_user_id: str, chat_id: str, now: datetime
                       ) -> User:
        user = User(channel=channel, channel_user_id=channel_user_id, chat_id=chat_id,
                    display_name="", status="pending", created_at=now)
        self.db.add(user)
        await self.db.flush()
        self.db.add(ConversationState(user_id=user.id, flow="idle", step="", answers={},
                                      version=0, updated_at=now))
        await self.db.flush()
        return user

    async def set_unreachable(self, channel: str, chat_id: str) -> None:
        await self.db.execute(update(User).where(User.channel == channel, User.chat_id == chat_id)
                              .values(unreachable=True))

    async def state(self, user_id: int) -> ConversationState:
        state = await self.db.get(ConversationState, user_id, populate_existing=True)
        if state is None:
            raise StaleState("no conversation state")
        return state

    async def save_state(self, state: ConversationState, flow: str, step: str,
                         answers: dict[str, Any], now: datetime) -> int:
        """Write the state only if nobody advanced it since it was read; the new version.
        `state` is brought up to date as loaded, so the session writes nothing more."""
        expected = state.version
        result = await self.db.execute(_SAVE_STATE, {
            "of": state.user_id, "expected": expected, "to_flow": flow, "to_step": step,
            "to_answers": answers, "to_version": expected + 1, "at": now})
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StaleState(f"user {state.user_id} moved past version {expected}")
        for key, value in (("flow", flow), ("step", step), ("answers", answers),
                           ("version", expected + 1), ("updated_at", now)):
            set_committed_value(state, key, value)
        return expected + 1

    async def erase_user(self, user_id: int) -> None:
        """Every trace of the user: their rows, messages about them queued for others (a
        coach's alerts), and audit entries naming them as actor or target. The caller adds
        the one audit entry that says an erasure happened, without an id."""
        user = await self.db.get(User, user_id)
        if user is None:
            return
        ident = user.display_id
        await stats.untally(self.db, user_id)
        await self.db.execute(delete(Outbox).where(Outbox.about_id == user_id))
        await self.db.execute(delete(AuditLog).where(AuditLog.actor == ident))
        # Others' entries may name them in their detail (a role change, a lifted hold): JSON
        # is not queried alike on both databases, and erasures are rare, so read them all.
        for entry in (await self.db.scalars(select(AuditLog))).all():
            if ident in (entry.detail or {}).values():
                await self.db.delete(entry)
        await self.db.execute(update(User).where(User.coach_id == user_id).values(coach_id=None))
        for model, column in PERSONAL_TABLES:
            await self.db.execute(delete(model).where(getattr(model, column) == user_id))

    async def export_user(self, user_id: int) -> dict[str, list[dict[str, Any]]]:
        """Every row about the user, table by table, as plain JSON-able values."""
        out: dict[str, list[dict[str, Any]]] = {}
        for model, column in PERSONAL_TABLES:
            rows = (await self.db.scalars(
                select(model).where(getattr(model, column) == user_id))).all()
            out[model.__tablename__] = [_row_dict(row) for row in rows]
        return out

    # --- clinical records ----------------------------------------------------------------
    def add(self, row: Base) -> None:
        self.db.add(row)

    async def flush(self) -> None:
        await self.db.flush()

    async def program(self, user_id: int) -> ProgramState | None:
        return await self.db.get(ProgramState, user_id, populate_existing=True)

    async def session(self, session_id: int) -> Session | None:
        return await self.db.get(Session, session_id, populate_existing=True)

    async def session_on(self, user_id: int, day: date) -> Session | None:
        return await self.db.scalar(
            select(Session).where(Session.user_id == user_id, Session.day == day))

    async def sessions_since(self, user_id: int, since: date) -> list[Session]:
        return list((await self.db.scalars(
            select(Session).where(Session.user_id == user_id, Session.day >= since)
            .order_by(Session.day))).all())

    async def unchecked_session(self, user_id: int, before: date) -> Session | None:
        """The latest reported session before `before` whose next-morning check is open."""
        return await self.db.scalar(
            select(Session).where(Session.user_id == user_id, Session.day < before,
                                  Session.status.in_(("done", "partial")),
                                  Session.morning_at.is_(None))
            .order_by(Session.day.desc()).limit(1))

    async def events_since(self, user_id: int, since: date) -> list[ProgressionEvent]:
        return list((await self.db.scalars(
            select(ProgressionEvent).where(ProgressionEvent.user_id == user_id,
                                           ProgressionEvent.day >= since)
            .order_by(ProgressionEvent.id))).all())

    async def last_pain(self, user_id: int) -> PainReport | None:
        return await self.db.scalar(
            select(PainReport).where(PainReport.user_id == user_id)
            .order_by(PainReport.at.desc(), PainReport.id.desc()).limit(1))

    async def assessments(self, user_id: int, kind: str) -> list[Assessment]:
        return list((await self.db.scalars(
            select(Assessment).where(Assessment.user_id == user_id, Assessment.kind == kind)
            .order_by(Assessment.id))).all())

    async def pain_reports(self, user_id: int) -> list[PainReport]:
        return await self.pains_of([user_id], datetime.min.replace(tzinfo=UTC))

    async def first_assessment(self, user_id: int, kind: str) -> Assessment | None:
        return await self.db.scalar(
            select(Assessment).where(Assessment.user_id == user_id, Assessment.kind == kind)
            .order_by(Assessment.id).limit(1))

    async def latest_assessment(self, user_id: int, kind: str) -> Assessment | None:
        return await self.db.scalar(
            select(Assessment).where(Assessment.user_id == user_id, Assessment.kind == kind)
            .order_by(Assessment.id.desc()).limit(1))

    # --- holds (R9) ------------------------------------------------------------------------
    async def open_hold(self, user_id: int) -> Hold | None:
        """The hold not yet lifted, if any (the newest, should there be several)."""
        return await self.db.scalar(
            select(Hold).where(Hold.user_id == user_id, Hold.lifted_at.is_(None))
            .order_by(Hold.id.desc()).limit(1))

    async def holds_of(self, user_id: int) -> list[Hold]:
        """Every hold of the user, lifted or open, oldest first."""
        return list((await self.db.scalars(
            select(Hold).where(Hold.user_id == user_id).order_by(Hold.id))).all())

    async def hold(self, hold_id: int) -> Hold | None:
        return await self.db.get(Hold, hold_id, populate_existing=True)

    # --- coaches and invites -------------------------------------------------------------
    async def patients_of(self, coach_id: int, statuses: tuple[str, ...] | None = None
                          ) -> list[User]:
        query = select(User).where(User.coach_id == coach_id).order_by(User.id)
        if statuses is not None:
            query = query.where(User.status.in_(statuses))
        return list((await self.db.scalars(query)).all())

    async def add_invite(self, code: str, coach_id: int, expires_at: datetime, now: datetime
                         ) -> None:
        self.db.add(Invite(code=code, coach_id=coach_id, expires_at=expires_at, revoked=False,
                           created_at=now))
        await self.db.flush()

    async def valid_invite(self, code: str, now: datetime) -> Invite | None:
        invite = await self.db.get(Invite, code)
        if invite is None or invite.revoked or invite.expires_at <= now:
            return None
        return invite

    async def invite(self, code: str) -> Invite | None:
        return await self.db.get(Invite, code)

    async def detach_patients(self, coach_id: int) -> list[User]:
        """Take a former coach's access away: their patients (returned) are left without a
        coach, their invite codes are voided, and alerts not yet sent to them are dropped."""
        patients = await self.patients_of(coach_id)
        for patient in patients:
            patient.coach_id = None
        await self.db.execute(update(Invite).where(Invite.coach_id == coach_id)
                              .values(revoked=True))
        await self.db.execute(delete(Outbox).where(
            Outbox.user_id == coach_id, Outbox.kind == "alert", Outbox.status == "pending"))
        return patients

    async def sessions_of(self, user_ids: list[int], since: date) -> list[Session]:
        if not user_ids:
            return []
        return list((await self.db.scalars(
            select(Session).where(Session.user_id.in_(user_ids), Session.day >= since)
            .order_by(Session.user_id, Session.day))).all())

    async def pains_of(self, user_ids: list[int], since: datetime) -> list[PainReport]:
        if not user_ids:
            return []
        return list((await self.db.scalars(
            select(PainReport).where(PainReport.user_id.in_(user_ids), PainReport.at >= since)
            .order_by(PainReport.user_id, PainReport.at, PainReport.id))).all())

    # --- outgoing ------------------------------------------------------------------------
    async def message_coach(self, patient: User, payload: dict[str, Any], now: datetime,
                            dedupe_key: str | None = None) -> bool:
        """Queue a message (an Outbound's fields but the recipient) about the patient to their
        coach; False if they have none, or one with this dedupe key is queued already."""
        coach = await self.user_by_id(patient.coach_id) if patient.coach_id else None
        if coach is None:
            return False
        message = {**payload, "channel": coach.channel, "chat_id": coach.chat_id}
        return await self.enqueue(user_id=coach.id, channel=coach.channel,
                                  chat_id=coach.chat_id, kind="alert", payload=message, now=now,
                                  dedupe_key=dedupe_key, about_id=patient.id)

    async def enqueue(self, *, user_id: int | None, channel: str, chat_id: str, kind: str,
                      payload: dict[str, Any], now: datetime, dedupe_key: str | None = None,
                      broadcast_id: int | None = None, not_before: datetime | None = None,
                      parts_sent: int = 0, attempts: int = 0, about_id: int | None = None
                      ) -> bool:
        """Queue a message for the sender (from part `parts_sent` on: those before went out
        already; `attempts` made so far); False if one with this dedupe key already exists."""
        if dedupe_key is not None and await self.db.scalar(
                select(Outbox.id).where(Outbox.dedupe_key == dedupe_key)):
            return False
        self.db.add(Outbox(user_id=user_id, channel=channel, chat_id=chat_id, kind=kind,
                           payload=payload, dedupe_key=dedupe_key, status="pending",
                           attempts=attempts, not_before=not_before or now, created_at=now,
                           broadcast_id=broadcast_id, parts_sent=parts_sent, about_id=about_id))
        await self.db.flush()
        return True

    def audit(self, actor: str, action: str, now: datetime, **detail: Any) -> None:
        self.db.add(AuditLog(at=now, actor=actor, action=action, detail=detail))


def _row_dict(row: Base) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        values[column.key] = value.isoformat() if isinstance(value, (date, datetime)) else value
    return values
