"""The admin's /coaches and /assign through the engine, on SQLite and PostgreSQL: the counts,
a patient moved with both coaches and the patient told, refusals and bad input explained."""

from __future__ import annotations

from typing import Any

import pytest
from clinic import ADMIN, audits, coach_named, patient_of, queued, reply_token
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import Patient, enrolled
from conversations.engine import Engine
from conversations.flows import admin as flow
from storage import messages
from storage.models import AuditLog, Outbox, User


async def _user(sessions: async_sessionmaker[DbSession], name: str) -> User:
    async with sessions() as db:
        return (await db.scalars(select(User).filter_by(channel_user_id=name))).one()


async def _notes(sessions: async_sessionmaker[DbSession], chat_id: str) -> list[str]:
    async with sessions() as db:
        payloads: list[dict[str, Any]] = list((await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "reply", Outbox.chat_id == chat_id).order_by(Outbox.id))).all())
    return [p["text"] for p in payloads]


async def test_coaches_lists_patients_open_holds_and_unread_messages(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    root = Patient(staff_engine, ADMIN[1])
    await root.send("/coaches")
    assert flow.NO_COACHES in root.text
    _, code = await coach_named(staff_engine, "coach")
    await coach_named(staff_engine, "other")
    pam = await patient_of(staff_engine, code, "pam")
    await patient_of(staff_engine, code, "pia")
    await enrolled(staff_engine, "ned")  # no coach
    await pam.send("/ask One.")
    await pam.send("/ask Two.")
    await pam.send("/pain")
    await pam.send("9")  # a pain pause: an open hold
    await root.send("/coaches")
    assert root.text == (
        "Coaches (page 1 of 1, 2 in all):\n"
        "1. console:coach: 2 patients, 1 open hold, 2 unread messages\n"
        "2. console:other: 0 patients, 0 open holds, 0 unread messages\n"
        "Without a coach: 1 patient, 0 open holds, 0 unread messages")

    async with sessions() as db, db.begin():  # what opening pam's file does
        await messages.mark_read(db, (await _user(sessions, "pam")).id, staff_engine.clock.now())
    await root.send("/coaches 99")  # past the last page: the last
    assert "1. console:coach: 2 patients, 1 open hold, 0 unread messages" in root.text


@pytest.mark.parametrize("command", ["/coaches", "/assign console:pam console:other"])
async def test_coaches_and_assign_are_for_admins_only(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession], command: str) -> None:
    coach, code = await coach_named(staff_engine, "coach")
    await coach_named(staff_engine, "other")
    pam = await patient_of(staff_engine, code, "pam")
    for who in (pam, coach):
        await who.send(command)
        assert "only for admins" in who.text
    assert (await _user(sessions, "pam")).coach_id == (await _user(sessions, "coach")).id
    assert [actor for actor, _ in await audits(sessions, "refused")] == [
        "console:pam", "console:coach"]


async def test_assign_moves_the_patient_and_tells_both_coaches_and_the_patient(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach, code = await coach_named(staff_engine, "coach")
    other, _ = await coach_named(staff_engine, "other")
    pam = await patient_of(staff_engine, code, "pam")
    await pam.send("/ask Still there?")  # queued to the coach, not yet sent
    (pending,) = await queued(sessions, "coach")
    root = Patient(staff_engine, ADMIN[1])
    await root.send("/assign console:pam console:other")
    assert root.text == ("Name of pam (console:pam) is now with console:other (before: "
                         "console:coach). I have told Name of pam (console:pam), "
                         "console:other, console:coach.")
    assert (await _user(sessions, "pam")).coach_id == (await _user(sessions, "other")).id
    assert (await _notes(sessions, "pam"))[-1].startswith("You are now with a new coach")
    assert (await _notes(sessions, "other"))[-1] == (
        "An admin has made you the coach of Name of pam (console:pam); 1 unread message in "
        "their file. /patients lists them.")
    assert (await _notes(sessions, "coach"))[-1] == (
        "Name of pam (console:pam) has moved to another coach (console:other); you no longer "
        "see their progress.")
    assert await queued(sessions, "coach") == []  # the unsent message to the former coach
    assert await audits(sessions, "assign") == [("console:root", {
        "patient": "console:pam", "former": "console:coach", "coach": "console:other"})]

    await coach.press_token(reply_token(pending))  # the former coach: no longer theirs
    assert "not yours to use" in coach.text
    await coach.send("/reply console:pam hello")
    assert "not one of your patients" in coach.text
    await other.send("/reply console:pam Hello, I am your new coach.")
    assert "Sent to" in other.text
    await pam.send("/ask Hello!")
    assert len(await queued(sessions, "other")) == 1


@pytest.mark.parametrize(("command", "said"), [
    ("/assign", "Usage: /assign USER COACH"),
    ("/assign console:pam", "Usage: /assign USER COACH"),
    ("/assign console:pam console:other extra", "Usage: /assign USER COACH"),
    ("/assign console:nobody console:other", "I know nobody with the id console:nobody"),
    ("/assign console:pam console:nobody", "I know nobody with the id console:nobody"),
    ("/assign 🦵 console:other", "I know nobody with the id 🦵"),
    ("/assign console:pam " + "9" * 100, "I know nobody with the id " + "9" * 64 + "."),
    ("/assign console:pam console:ned", "Name of ned (console:ned) is not a coach. "
                                        "/grant coach console:ned makes them one first."),
    ("/assign console:coach console:other", "console:coach is not a patient"),
    ("/assign console:new console:other", "console:new is not a patient"),
    ("/assign console:pam console:coach", "is with console:coach already"),
])
async def test_bad_assignments_are_explained_and_change_nothing(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession], command: str,
        said: str) -> None:
    _, code = await coach_named(staff_engine, "coach")
    await coach_named(staff_engine, "other")
    await patient_of(staff_engine, code, "pam")
    await enrolled(staff_engine, "ned")
    await Patient(staff_engine, "new").send("/start")  # has not agreed yet
    root = Patient(staff_engine, ADMIN[1])
    await root.send(command)
    assert said in root.text
    assert (await _user(sessions, "pam")).coach_id == (await _user(sessions, "coach")).id
    async with sessions() as db:
        assert (await db.scalars(select(AuditLog).filter_by(action="assign"))).all() == []
