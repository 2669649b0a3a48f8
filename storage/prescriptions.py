"""A coach's prescription for a patient (CLINICAL.md 5b): every change is a row of its own,
kept for good (who, when, what), and the current prescription is those changes in order, so
the history and what is in force can never disagree."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from storage.models import PrescriptionChange

KINDS = ("level", "hold", "unhold", "off", "on", "instruct")


@dataclass(frozen=True)
class Current:
    """What is in force: progression held, exercises switched off, the instruction."""

    held: bool = False
    off: frozenset[str] = field(default_factory=frozenset)
    instruction: str | None = None
    version: int = 0  # the id of the latest change; 0: none yet

    @property
    def plain(self) -> bool:
        """Nothing that changes how a session reads."""
        return not self.off and self.instruction is None


NONE = Current()


def _fold(changes: list[PrescriptionChange]) -> Current:
    held, off, instruction, version = False, set[str](), None, 0
    for change in changes:
        version = change.id
        if change.kind in ("hold", "unhold"):
            held = change.kind == "hold"
        elif change.kind == "off" and change.exercise:
            off.add(change.exercise)
        elif change.kind == "on" and change.exercise:
            off.discard(change.exercise)
        elif change.kind == "instruct":
            instruction = change.text
    return Current(held, frozenset(off), instruction, version)


async def add(db: DbSession, *, user_id: int, by_id: int | None, now: datetime, kind: str,
              exercise: str | None = None, level: int | None = None, text: str | None = None
              ) -> PrescriptionChange:
    if kind not in KINDS:
        raise ValueError(f"unknown prescription change {kind!r}")
    change = PrescriptionChange(user_id=user_id, by_id=by_id, at=now, kind=kind,
                                exercise=exercise, level=level, text=text)
    db.add(change)
    await db.flush()
    return change


async def changes(db: DbSession, user_id: int) -> list[PrescriptionChange]:
    """The patient's changes, oldest first."""
    return list((await db.scalars(select(PrescriptionChange).where(
        PrescriptionChange.user_id == user_id).order_by(PrescriptionChange.id))).all())


async def current(db: DbSession, user_id: int) -> Current:
    return _fold(await changes(db, user_id))


async def current_of(db: DbSession, user_ids: Collection[int]) -> dict[int, Current]:
    """The prescriptions of many patients in one query (the tick's prompts); only those with
    any change are in the answer."""
    if not user_ids:
        return {}
    rows = (await db.scalars(select(PrescriptionChange).where(
        PrescriptionChange.user_id.in_(list(user_ids))).order_by(
        PrescriptionChange.user_id, PrescriptionChange.id))).all()
    by_user: dict[int, list[PrescriptionChange]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    return {user_id: _fold(found) for user_id, found in by_user.items()}
