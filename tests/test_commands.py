"""The commands' declared guards, through the engine: every command declared for staff
refuses a patient, every command declared for enrolled patients sends someone still setting
up back to it, and a new command is one declaration plus its handler."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import Patient, enrolled
from conversations.commands import COMMANDS, STAY, command
from conversations.context import Ctx
from conversations.engine import Engine
from storage.models import AuditLog, ConversationState

ADMIN = ("console", "root")
STAFF = sorted(name for name, c in COMMANDS.items() if c.role is not None)
FOR_ENROLLED = sorted(name for name, c in COMMANDS.items() if c.enrolled)


def test_the_guards_are_declared_where_the_commands_are() -> None:
    assert STAFF == ["assign", "broadcast", "clear", "coaches", "exercise", "export", "grant",
                     "hold", "instruct", "invite", "level", "patient", "patients", "reply",
                     "revoke", "stats", "unhold"]
    assert FOR_ENROLLED == ["pain", "pause", "progress", "resume", "settings", "today"]


@pytest.mark.parametrize("name", STAFF)
async def test_every_staff_command_refuses_a_patient(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession], name: str) -> None:
    patient = await enrolled(staff_engine, "u1")
    await patient.send(f"/{name}")
    who = "coaches" if COMMANDS[name].role == "coach" else "admins"
    assert patient.replies[0].text == f"Sorry, /{name} is only for {who}."
    async with sessions() as db:
        (refused,) = (await db.scalars(select(AuditLog).filter_by(action="refused"))).all()
    assert (refused.actor, refused.detail) == ("console:u1", {"command": name})


@pytest.mark.parametrize("name", FOR_ENROLLED)
async def test_every_command_for_enrolled_patients_waits_for_the_set_up(
        engine: Engine, sessions: async_sessionmaker[DbSession], name: str) -> None:
    newcomer = Patient(engine, "new")
    await newcomer.send("/start")
    consent = newcomer.text
    await newcomer.send(f"/{name}")
    # Then the question they were on, asked again.
    assert newcomer.text == f"Let us finish setting up first.\n{consent}"
    async with sessions() as db:
        (state,) = (await db.scalars(select(ConversationState))).all()
    assert (state.flow, state.step) == ("onboarding", "consent")


@pytest.fixture
def ping() -> Iterator[None]:
    """A command added as every command is: a handler under one declaration."""
    @command("ping", role="admin")
    async def _ping(ctx: Ctx) -> str | None:
        ctx.say("pong")
        return STAY

    yield
    del COMMANDS["ping"]


@pytest.mark.usefixtures("ping")
async def test_a_new_command_is_one_declaration_and_its_handler(staff_engine: Engine) -> None:
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/ping")
    assert [r.text for r in admin.replies] == ["pong"]
    patient = await enrolled(staff_engine, "u1")
    await patient.send("/ping")
    assert patient.replies[0].text == "Sorry, /ping is only for admins."
