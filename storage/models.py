"""The tables. Storage knows nothing of chats: a user is a channel name and an opaque id."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.crypto import EncryptedJSON, EncryptedText

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: the same on SQLite (no zones) and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Final sessions and sent prompts not yet folded into stat_tallies (a few ticks' worth): the
# statistics read these live through partial indexes, and the tallies for the rest. The
# indexes lead with the columns the condition tests for equality, so SQLite's planner, which
# has no statistics, prefers them to ix_outbox_due and ix_sessions_day.
UNTALLIED_SESSION = text("tallied_coach IS NULL AND status <> 'prompted'")
UNTALLIED_PROMPT = text("tallied_coach IS NULL AND kind = 'prompt' AND status = 'sent'")
PENDING = text("status = 'pending'")
REPORTED = text("pain_during IS NOT NULL")


def _user_fk() -> Any:
    return ForeignKey("users.id", ondelete="CASCADE")


def display_id(channel: str, channel_user_id: str) -> str:
    """A user's id as staff type it and the audit log names them: "telegram:123456"."""
    return f"{channel}:{channel_user_id}"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("channel", "channel_user_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    channel_user_id: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(16), default="patient")  # patient, coach
    coach_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # pending (consent not given yet), onboarding, active, paused, referred, stopped
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_version: Mapped[str | None] = mapped_column(String(32))
    knee: Mapped[str | None] = mapped_column(String(8))
    timezone: Mapped[str | None] = mapped_column(String(64))
    reminder_time: Mapped[str | None] = mapped_column(String(5))  # local HH:MM
    reminder_days: Mapped[str | None] = mapped_column(String(7))  # ISO weekdays, "12345"
    summary_day: Mapped[int | None] = mapped_column(Integer)  # ISO weekday; None: Sunday
    # The language the user reads ("es"); None: the service's default.
    language: Mapped[str | None] = mapped_column(String(8))
    # Set when the channel says the user blocked the bot; cleared when they write again.
    unreachable: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def display_id(self) -> str:
        return display_id(self.channel, self.channel_user_id)


class ConversationState(Base):
    __tablename__ = "conversation_state"

    user_id: Mapped[int] = mapped_column(ID, _user_fk(), primary_key=True)
    flow: Mapped[str] = mapped_column(String(32), default="idle")
    step: Mapped[str] = mapped_column(String(32), default="")
    answers: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON, default=dict)
    # Optimistic concurrency: every advance bumps it; a write against an old version fails.
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Assessment(Base):
    __tablename__ = "assessments"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # redflag, symptoms, kujala
    answers: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON)
    score: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProgramState(Base):
    """The enrolment: level, and when the next prompt is due (UTC)."""

    __tablename__ = "program_state"

    user_id: Mapped[int] = mapped_column(ID, _user_fk(), primary_key=True)
    level: Mapped[int] = mapped_column(Integer)
    started_on: Mapped[date] = mapped_column(Date)
    baseline_worst_pain: Mapped[int] = mapped_column(Integer)
    kujala_change: Mapped[int | None] = mapped_column(Integer)  # latest minus first score
    paused_reason: Mapped[str | None] = mapped_column(String(32))
    next_prompt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    next_summary_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Session(Base):
    """One scheduled (or self-started) exercise day."""

    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("user_id", "day"),
        Index("ix_sessions_untallied", "tallied_coach", "day", sqlite_where=UNTALLIED_SESSION,
              postgresql_where=UNTALLIED_SESSION),
        # Covers the statistics' last week of pain (storage/stats.py).
        Index("ix_sessions_pain", "day", "user_id", "pain_during", sqlite_where=REPORTED,
              postgresql_where=REPORTED),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    day: Mapped[date] = mapped_column(Date, index=True)  # the patient's local date
    level: Mapped[int] = mapped_column(Integer)
    # prompted, then once one of done, partial, skipped, missed (or created missed)
    status: Mapped[str] = mapped_column(String(16))
    pain_during: Mapped[int | None] = mapped_column(Integer)
    morning_delta: Mapped[int | None] = mapped_column(Integer)
    morning_symptom: Mapped[bool] = mapped_column(Boolean, default=False)
    prompted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    morning_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The coach (0: none) whose StatTally counts this session's final status; None: not yet.
    tallied_coach: Mapped[int | None] = mapped_column(BigInteger)


class PainReport(Base):
    __tablename__ = "pain_reports"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    pain: Mapped[int] = mapped_column(Integer)
    context: Mapped[str] = mapped_column(String(16))  # baseline, during, morning, adhoc


class ProgressionEvent(Base):
    __tablename__ = "progression_events"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    day: Mapped[date] = mapped_column(Date)
    from_level: Mapped[int] = mapped_column(Integer)
    to_level: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # start, progress, regress, restart, stop
    rule: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(EncryptedText)


class Hold(Base):
    """A referral or pain pause (CLINICAL.md 5a, R9): no prompts until it is lifted, and who
    lifted it, when and why, kept for good."""

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # referral, pain
    rule: Mapped[str] = mapped_column(String(16))  # screen, 2b, R4, R7
    reason: Mapped[str] = mapped_column(EncryptedText)  # for the coach: what caused it
    level: Mapped[int | None] = mapped_column(Integer)  # the level before; None: no program
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_on: Mapped[date] = mapped_column(Date)  # the patient's local date
    # The patient's confirmation that a clinician assessed the knee (no coach), with its time.
    assessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # /resume asked a coach
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifted_by: Mapped[str | None] = mapped_column(String(96))  # channel:id, as on audit_log
    lift_reason: Mapped[str | None] = mapped_column(EncryptedText)
    restart_level: Mapped[int | None] = mapped_column(Integer)


class Message(Base):
    """A message between a patient and their coach, kept in the patient's record. A
    patient's message is unread until their coach opens the patient's file (or replies)."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    # The coach who wrote it or was written to; None once that coach's own data is erased.
    coach_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    sender: Mapped[str] = mapped_column(String(16))  # patient, coach
    text: Mapped[str] = mapped_column(EncryptedText)
    reply_to: Mapped[int | None] = mapped_column(ID)  # the patient's message it answers
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PrescriptionChange(Base):
    """One change a coach made to a patient's program (CLINICAL.md 5b): who, when, what. The
    patient's current prescription is these changes in order (storage/prescriptions.py)."""

    __tablename__ = "prescription_changes"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    # The coach or admin who made it; None once their own data is erased.
    by_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))  # level, hold, unhold, off, on, instruct
    exercise: Mapped[str | None] = mapped_column(String(24))  # off, on: the exercise id
    level: Mapped[int | None] = mapped_column(Integer)  # level: the level set
    text: Mapped[str | None] = mapped_column(EncryptedText)  # instruct: None removes it


class Outbox(Base):
    """Messages queued for delivery. A row is claimed with a lease, then marked sent once."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "not_before"),
        Index("ix_outbox_untallied", "tallied_coach", "status", "sent_at",
              sqlite_where=UNTALLIED_PROMPT, postgresql_where=UNTALLIED_PROMPT),
        # A chat's pending rows, for keeping its order (see outbox.claim_outbox).
        Index("ix_outbox_chat_pending", "channel", "chat_id", "id", sqlite_where=PENDING,
              postgresql_where=PENDING),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ID, _user_fk(), index=True)
    # Whom a message to someone else is about (a coach's alert about a patient): erasing
    # that patient erases it too.
    about_id: Mapped[int | None] = mapped_column(ID, _user_fk(), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # prompt, check, alert, broadcast, reply
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON)  # an Outbound, as JSON
    # One row per logical message: a prompt for a user's day, a broadcast to a user.
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    # pending, sent, failed, blocked
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Parts of the message (text pieces, a chart, a file) that went out: never sent again.
    parts_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    broadcast_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(String(256))
    tallied_coach: Mapped[int | None] = mapped_column(BigInteger)  # as on Session, for prompts


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    coach_id: Mapped[int | None] = mapped_column(
        ID, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    text: Mapped[str] = mapped_column(EncryptedText)
    send_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Invite(Base):
    __tablename__ = "invites"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    coach_id: Mapped[int] = mapped_column(ID, _user_fk(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProcessedUpdate(Base):
    """Channel update ids already handled: webhooks and event APIs redeliver."""

    __tablename__ = "processed_updates"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    update_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class StatTally(Base):
    """Adherence counts per day and coach (0: no coach), so statistics over 100,000 patients
    read a few thousand rows instead of every session. The scheduler's tick folds final
    sessions (measure: their status) and sent prompts (measure: "prompt") in; erasing a
    patient takes theirs out. No personal data: counts only."""

    __tablename__ = "stat_tallies"

    day: Mapped[date] = mapped_column(Date, primary_key=True)  # session day; prompt: UTC date
    coach_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    measure: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class MediaUpload(Base):
    """A file a chat platform holds for a bot (Telegram's file_id), by the bot and the media
    key (which changes with the file's content): sent once, then re-sent by its id."""

    __tablename__ = "media_uploads"

    bot: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditLog(Base):
    """Role changes, broadcasts, exports, erasures. Erasure entries hold no personal data."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(96))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# Every table holding rows about one user, by the column naming them; export and erase use it.
PERSONAL_TABLES: tuple[tuple[type[Base], str], ...] = (
    (ConversationState, "user_id"),
    (Assessment, "user_id"),
    (ProgramState, "user_id"),
    (Session, "user_id"),
    (PainReport, "user_id"),
    (ProgressionEvent, "user_id"),
    (Hold, "user_id"),
    (Message, "patient_id"),
    (PrescriptionChange, "user_id"),
    (Outbox, "user_id"),
    (Invite, "coach_id"),
    (User, "id"),
)
