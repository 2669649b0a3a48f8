"""Messages between patients and their coaches, and the counts of the admin's coach list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.models import Hold, Message, Outbox, User


@dataclass(frozen=True)
class CoachCounts:
    coach: User | None  # None: the patients without a coach
    patients: int
    open_holds: int
    unread: int


async def add(db: DbSession, *, patient_id: int, coach_id: int, sender: str, text: str,
              now: datetime, reply_to: int | None = None) -> Message:
    message = Message(patient_id=patient_id, coach_id=coach_id, sender=sender, text=text,
                      reply_to=reply_to, created_at=now)
    db.add(message)
    await db.flush()
    return message


async def get(db: DbSession, message_id: int) -> Message | None:
    return await db.get(Message, message_id, populate_existing=True)


async def answered(db: DbSession, message: Message) -> bool:
    """Whether a coach has replied to this message of the patient's (by its Reply button)."""
    return bool(await db.scalar(select(func.count()).select_from(Message).where(
        Message.patient_id == message.patient_id, Message.reply_to == message.id)))


async def of(db: DbSession, patient_id: int) -> list[Message]:
    """Every message between the patient and a coach, oldest first."""
    return list((await db.scalars(select(Message).where(
        Message.patient_id == patient_id).order_by(Message.id))).all())


async def unread(db: DbSession, patient_id: int) -> list[Message]:
    """The patient's messages their coach has not read yet, oldest first."""
    return list((await db.scalars(select(Message).where(
        Message.patient_id == patient_id, Message.sender == "patient",
        Message.read_at.is_(None)).order_by(Message.id))).all())


async def mark_read(db: DbSession, patient_id: int, now: datetime) -> None:
    """The patient's unread messages are read from now (their coach opened the file)."""
    await db.execute(update(Message).where(
        Message.patient_id == patient_id, Message.sender == "patient",
        Message.read_at.is_(None)).values(read_at=now)
        .execution_options(synchronize_session=False))


async def drop_pending(db: DbSession, coach_id: int, patient_id: int) -> None:
    """Alerts and messages about the patient not yet sent to a coach who no longer has them."""
    await db.execute(delete(Outbox).where(
        Outbox.user_id == coach_id, Outbox.about_id == patient_id, Outbox.status == "pending"))


async def coach_counts(db: DbSession) -> list[CoachCounts]:
    """Every coach (a staff member with the role or with patients), by id, with their
    patients, open holds and unread messages; last, the patients without a coach."""
    patients = select(User.coach_id, func.count()).where(
        User.role == "patient", User.consent_at.is_not(None)).group_by(User.coach_id)
    holds = (select(User.coach_id, func.count()).join(Hold, Hold.user_id == User.id)
             .where(Hold.lifted_at.is_(None)).group_by(User.coach_id))
    unread_ = (select(User.coach_id, func.count()).join(Message, Message.patient_id == User.id)
               .where(Message.sender == "patient", Message.read_at.is_(None))
               .group_by(User.coach_id))
    counts = [{coach: n for coach, n in await db.execute(q)} for q in (patients, holds, unread_)]
    coaches: Sequence[User] = (await db.scalars(select(User).where(or_(
        User.role == "coach", User.id.in_(select(User.coach_id).where(
            User.coach_id.is_not(None))))).order_by(User.id))).all()
    rows = [CoachCounts(coach, *(c.get(coach.id, 0) for c in counts)) for coach in coaches]
    if counts[0].get(None):
        rows.append(CoachCounts(None, *(c.get(None, 0) for c in counts)))
    return rows
