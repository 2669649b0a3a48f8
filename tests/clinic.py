"""A clinic for the staff tests (a pytest plugin of conftest.py, so its fixtures are everyone's):
an admin, coaches with invite codes, their patients, and what was queued, stored and
audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.flows import messages as flow
from conversations.program.data import Program
from storage.models import AuditLog, Message, Outbox

ADMIN = ("console", "root")


@pytest.fixture
def staff_engine(sessions: async_sessionmaker[DbSession], program: Program,
                 clock: ManualClock) -> Engine:
    """The engine with ADMIN as the one admin."""
    return Engine(sessions, program, clock, admins=frozenset({ADMIN}))


@pytest.fixture
async def clinic(staff_engine: Engine) -> tuple[Patient, Patient, Patient, Patient]:
    """Two coaches with a patient each: (coach, pam), (other coach, obi)."""
    coach, code = await coach_named(staff_engine, "coach")
    other, other_code = await coach_named(staff_engine, "other")
    pam = await patient_of(staff_engine, code, "pam")
    obi = await patient_of(staff_engine, other_code, "obi")
    return coach, pam, other, obi


async def coach_named(engine: Engine, name: str) -> tuple[Patient, str]:
    """A coach (granted by the admin) and an invite code of theirs."""
    coach = Patient(engine, name)
    await coach.send("/start")
    await Patient(engine, ADMIN[1]).send(f"/grant coach console:{name}")
    await coach.send("/invite")
    return coach, coach.text.split("Invite code: ")[1].split(" ")[0]


async def patient_of(engine: Engine, code: str, name: str) -> Patient:
    patient = await enrolled(engine, name)
    await patient.send(f"/join {code}")
    assert "connected with" in patient.text, patient.text
    return patient


async def queued(sessions: async_sessionmaker[DbSession], chat_id: str) -> list[dict[str, Any]]:
    """The messages (kind "message") queued to a chat, oldest first."""
    async with sessions() as db:
        return list((await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "message", Outbox.chat_id == chat_id).order_by(Outbox.id))).all())


async def stored(sessions: async_sessionmaker[DbSession]) -> list[Message]:
    async with sessions() as db:
        return list((await db.scalars(select(Message).order_by(Message.id))).all())


async def audits(sessions: async_sessionmaker[DbSession], action: str
                 ) -> list[tuple[str, dict[str, Any]]]:
    async with sessions() as db:
        rows = (await db.scalars(select(AuditLog).filter_by(action=action)
                                 .order_by(AuditLog.id))).all()
    return [(a.actor, a.detail) for a in rows]


def reply_token(payload: dict[str, Any]) -> str:
    (row,) = payload["buttons"]
    (button,) = row
    assert button["label"] == flow.REPLY_BUTTON
    return str(button["token"])
