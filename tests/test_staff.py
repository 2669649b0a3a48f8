"""Coaches and admins through the engine, on SQLite and PostgreSQL: roles by channel id,
invites, broadcasts, the patient list, statistics and export, and every refusal."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.scheduler import Scheduler
from conftest import Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.messages import Inbound
from conversations.program.data import Program
from storage import outbox, stats
from storage.models import AuditLog, Broadcast, Outbox, StatTally, User
from storage.repository import Repository

ADMIN = ("console", "root")


async def _user(sessions: async_sessionmaker[DbSession], user_id: str) -> User:
    async with sessions() as db:
        return (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()


async def _coach(engine: Engine, name: str = "coach") -> Patient:
    coach = Patient(engine, name)
    await coach.send("/start")
    admin = Patient(engine, ADMIN[1])
    await admin.send(f"/grant coach console:{name}")
    assert "now a coach" in admin.text, admin.text
    return coach


async def _invite_code(coach: Patient) -> str:
    await coach.send("/invite")
    return coach.text.split("Invite code: ")[1].split(" ")[0]


async def test_admin_grants_and_revokes_by_channel_id(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    assert (await _user(sessions, "coach")).role == "coach"
    await coach.send("/start")
    assert "Coach commands" in coach.text
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/revoke coach coach")
    assert "no longer a coach" in admin.text
    assert (await _user(sessions, "coach")).role == "patient"
    async with sessions() as db:
        actions = (await db.scalars(select(AuditLog.action).order_by(AuditLog.id))).all()
        notes = (await db.scalars(select(Outbox.payload).filter_by(kind="reply"))).all()
    assert actions == ["grant_coach", "revoke_coach"]
    assert [n["text"].split(":")[0] for n in notes] == [
        "You are now a coach on kneecoach", "You are no longer a coach on kneecoach."]


@pytest.mark.parametrize("command", ["/grant", "/grant coach", "/grant admin console:x",
                                     "/grant coach console:nobody", "/grant coach 🦵",
                                     "/grant coach " + "9" * 100])
async def test_bad_grants_are_explained(staff_engine: Engine, command: str,
                                        sessions: async_sessionmaker[DbSession]) -> None:
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send(command)
    assert "Usage" in admin.text or "know nobody" in admin.text
    async with sessions() as db:
        assert (await db.scalars(select(AuditLog))).all() == []


@pytest.mark.parametrize("command", ["/grant coach console:u1", "/revoke coach console:u1",
                                     "/stats", "/export", "/invite", "/patients", "/broadcast"])
async def test_patients_cannot_use_staff_commands(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession], command: str) -> None:
    patient = await enrolled(staff_engine, "u1")
    await patient.send(command)
    assert "only for" in patient.text
    assert (await _user(sessions, "u1")).role == "patient"
    async with sessions() as db:
        refused = (await db.scalars(select(AuditLog).filter_by(action="refused"))).one()
    assert refused.actor == "console:u1"


async def test_display_name_never_grants_a_role(staff_engine: Engine) -> None:
    """Someone whose display name is the admin's id is still refused."""
    replies = await staff_engine.handle(Inbound.parse_text(
        "console", "not-root", "not-root", "/stats", display_name="root"))
    assert "Send /start" in replies[0].text
    impostor = Patient(staff_engine, "not-root")
    await impostor.send("/start")
    replies = await staff_engine.handle(Inbound.parse_text(
        "console", "not-root", "not-root", "/stats", display_name="root"))
    assert any("only for admins" in r.text for r in replies)


async def test_invite_deep_link_attaches_a_new_patient(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    staff_engine.invite_links["console"] = "https://t.me/kneecoach_bot?start={code}"
    coach = await _coach(staff_engine)
    code = await _invite_code(coach)
    assert f"https://t.me/kneecoach_bot?start={code}" in coach.text
    patient = Patient(staff_engine, "u1")
    await patient.send(f"/start {code}")
    assert (await _user(sessions, "u1")).coach_id is None  # nothing before consent
    await patient.press("I agree")
    assert "connected with" in patient.text
    assert (await _user(sessions, "u1")).coach_id == (await _user(sessions, "coach")).id


async def test_join_and_bad_codes(staff_engine: Engine, clock: ManualClock,
                                  sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    code = await _invite_code(coach)
    patient = await enrolled(staff_engine, "u1")
    for bad in ("NOPE1234", "🦵", "x" * 500, code.lower() + "Z"):
        await patient.send(f"/join {bad}")
        assert "unknown, revoked or expired" in patient.text
    await patient.send("/join")
    assert "Usage" in patient.text
    clock.advance(timedelta(days=15))
    await patient.send(f"/join {code}")
    assert "expired" in patient.text
    fresh = await _invite_code(coach)
    await coach.send(f"/invite revoke {fresh}")
    assert "revoked" in coach.text
    await patient.send(f"/join {fresh}")
    assert "revoked" in patient.text
    assert (await _user(sessions, "u1")).coach_id is None
    working = await _invite_code(coach)
    await patient.send(f"/join {working}")
    assert "connected" in patient.text
    async with sessions() as db:
        alert = (await db.scalars(select(Outbox).filter_by(kind="alert"))).one()
    assert "joined you" in alert.payload["text"]


async def test_another_coach_cannot_revoke_my_invite(staff_engine: Engine) -> None:
    mine = await _coach(staff_engine, "coach")
    other = await _coach(staff_engine, "coach2")
    code = await _invite_code(mine)
    await other.send(f"/invite revoke {code}")
    assert "no invite" in other.text


async def _with_patients(engine: Engine, coach: Patient, names: list[str]) -> list[Patient]:
    code = await _invite_code(coach)
    patients = []
    for name in names:
        patient = await enrolled(engine, name)
        await patient.send(f"/join {code}")
        patients.append(patient)
    return patients


async def test_broadcast_preview_confirm_goes_to_own_active_patients_only(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    other_coach = await _coach(staff_engine, "coach2")
    mine = await _with_patients(staff_engine, coach, ["p1", "p2", "p3"])
    await _with_patients(staff_engine, other_coach, ["q1"])
    await mine[2].send("/pause")
    text = "Hello *team* <b>not html</b> & _underscores_\n\nSecond paragraph. " + "x" * 9_900
    await coach.send("/broadcast")
    await coach.send(text)
    assert "Preview, to 2 patients" in coach.text
    await coach.press("Send now")
    assert "queued to 2 patients" in coach.text
    async with sessions() as db:
        rows = (await db.scalars(select(Outbox).filter_by(kind="broadcast")
                                 .order_by(Outbox.chat_id))).all()
        broadcast = (await db.scalars(select(Broadcast))).one()
    assert [r.chat_id for r in rows] == ["p1", "p2"]
    assert all(r.payload["text"].endswith(text) for r in rows)  # intact, formatting and all
    assert broadcast.text == text


async def test_broadcast_cancel_schedule_and_bad_forms(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession],
        clock: ManualClock) -> None:
    coach = await _coach(staff_engine)
    await coach.send("/broadcast")
    assert "no active patients" in coach.text
    await _with_patients(staff_engine, coach, ["p1"])
    await coach.send("/broadcast")
    await coach.send("   ")
    assert "needs some text" in coach.text
    await coach.send("y" * 12_001)
    assert "at most 12,000" in coach.text
    await coach.send("See you at the clinic 🦵")
    await coach.press("Cancel")
    assert "nothing was sent" in coach.text
    await coach.send("/broadcast")
    await coach.send("Later message")
    await coach.press("Schedule")
    for bad in ("tomorrow", "2026-02-30 10:00", "2020-01-01 10:00"):
        await coach.send(bad)
        assert "date and time" in coach.text or "passed" in coach.text
    await coach.send("2026-01-20 18:00")
    assert "sending at 2026-01-20 18:00" in coach.text
    async with sessions() as db:
        row = (await db.scalars(select(Outbox).filter_by(kind="broadcast"))).one()
    assert row.not_before == clock.now().replace(day=20, hour=18)


async def test_patient_list_shows_flags_and_pages(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    patients = await _with_patients(staff_engine, coach, [f"p{i:02d}" for i in range(12)])
    await patients[0].send("/pain")
    await patients[0].press("9")
    await patients[1].send("/today")
    await patients[1].press("Done")
    await patients[1].press("3")
    await coach.send("/patients")
    lines = coach.text.splitlines()
    assert "page 1 of 2, 12 in all" in lines[0]
    assert "FLAGS: referred" in lines[1] and "pain spike" in lines[1]
    assert "level 2" in lines[2] and "7d 1/1" in lines[2] and "last pain 3/10" in lines[2]
    assert lines[-1] == "Next: /patients 2"
    await coach.send("/patients 2")
    assert "page 2 of 2" in coach.text and "11. " in coach.text
    await coach.send("/patients 🦵")
    assert "page 1 of 2" in coach.text
    other = await _coach(staff_engine, "coach2")
    await other.send("/patients")
    assert "no patients yet" in other.text


async def test_stats_and_export(staff_engine: Engine,
                                sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    patients = await _with_patients(staff_engine, coach, ["p1", "p2"])
    await enrolled(staff_engine, "loner")
    await patients[0].send("/today")
    await patients[0].press("Done")
    await patients[0].press("7")  # regresses
    await patients[1].send("/today")
    await patients[1].press("Skipped")
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/stats 7d")
    blocks = admin.text.split("\n\n")
    assert blocks[0].startswith("all (7d): 3 enrolled (3 new), 3 active")
    assert "1 done, 0 partly, 1 skipped, 0 missed; adherence 50%" in blocks[0]
    coach_id = (await _user(sessions, "coach")).id
    coach_block = next(b for b in blocks if b.startswith(f"coach {coach_id}"))
    assert "2 enrolled" in coach_block and "regressed 50%" in coach_block
    await admin.send("/stats forever")
    assert "Usage" in admin.text
    await admin.send("/export all")
    document = next(r.document for r in admin.replies if r.document)
    rows = list(csv.DictReader(io.StringIO(document.content.decode())))
    assert {(r["patient"], r["done"], r["skipped"]) for r in rows} == {
        (str((await _user(sessions, "p1")).id), "1", "0"),
        (str((await _user(sessions, "p2")).id), "0", "1")}


async def test_statistics_read_the_same_once_tallied_and_forget_erased_people(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock) -> None:
    coach = await _coach(staff_engine)
    p1, p2 = await _with_patients(staff_engine, coach, ["p1", "p2"])
    await enrolled(staff_engine, "loner")
    ticks = Scheduler(sessions, program, clock, grace=timedelta(minutes=180))
    clock.set(datetime(2026, 1, 15, 7, 0, 30, tzinfo=UTC))  # everyone's 07:00 prompt
    await ticks.tick()
    async with sessions() as db, db.begin():
        for row in await outbox.claim_outbox(db, clock.now(), timedelta(minutes=1), 10,
                                               ["console"]):
            await outbox.mark_sent(db, row, clock.now())
    await p1.send("/today")
    await p1.press("Done")
    await p1.press("2")
    await p2.send("/today")
    await p2.press("Skipped")
    today = clock.now().date()

    async def figures() -> dict[str, tuple[int | None, ...]]:
        async with sessions() as db:
            rows = await stats.compute(db, today - timedelta(days=6), today)
        return {r.group: (r.enrolled, r.prompts_sent, r.done, r.partial, r.skipped, r.missed)
                for r in rows}

    async def tallied() -> int:
        async with sessions() as db:
            return await db.scalar(select(func.coalesce(func.sum(StatTally.count), 0))) or 0

    coach_id = (await _user(sessions, "coach")).id
    live = await figures()  # read from the sessions and the outbox: nothing is tallied yet
    assert await tallied() == 0
    assert live == {"all": (3, 3, 1, 0, 1, 0), f"coach {coach_id}": (2, 2, 1, 0, 1, 0),
                    "no coach": (1, 1, 0, 0, 0, 0)}
    await ticks.tick()
    assert await tallied() == 5  # 3 prompts, 1 done, 1 skipped
    assert await figures() == live
    await ticks.tick()  # counted once only
    assert await tallied() == 5 and await figures() == live

    async def erase(name: str) -> None:
        user_id = (await _user(sessions, name)).id
        async with sessions() as db, db.begin():
            await Repository(db).erase_user(user_id)

    await erase("p1")
    assert await figures() == {"all": (2, 2, 0, 0, 1, 0), f"coach {coach_id}": (1, 1, 0, 0, 1, 0),
                               "no coach": (1, 1, 0, 0, 0, 0)}
    await erase("coach")  # what was counted under them goes to "no coach", as p2 does
    assert await figures() == {"all": (2, 2, 0, 0, 1, 0), "no coach": (2, 2, 0, 0, 1, 0)}
    await erase("p2")
    assert await figures() == {"all": (1, 1, 0, 0, 0, 0), "no coach": (1, 1, 0, 0, 0, 0)}
    assert await tallied() == 1


async def test_revoke_takes_every_access_away(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    code = await _invite_code(coach)
    spare = await _invite_code(coach)
    patients = [await enrolled(staff_engine, name) for name in ("p1", "p2")]
    for patient in patients:
        await patient.send(f"/join {code}")
    await patients[0].send("/pain")
    await patients[0].send("9")  # an alert for the coach, not yet sent
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/revoke coach console:coach")
    assert "no longer a coach" in admin.text
    assert "2 patients are now without a coach: console:p1, console:p2" in admin.text
    assert [(await _user(sessions, p.user_id)).coach_id for p in patients] == [None, None]
    coach_id = (await _user(sessions, "coach")).id
    async with sessions() as db:
        told = (await db.scalars(select(Outbox.payload).where(
            Outbox.kind == "reply", Outbox.user_id != coach_id))).all()
        alerts = (await db.scalars(select(Outbox).filter_by(user_id=coach_id, kind="alert"))
                  ).all()
    assert sum("Your coach is no longer on kneecoach" in t["text"] for t in told) == 2
    assert alerts == []
    await patients[1].send("/pain")
    await patients[1].send("9")  # no coach now: no alert for anyone
    newcomer = await enrolled(staff_engine, "p3")
    await newcomer.send(f"/join {spare}")
    assert "unknown, revoked or expired" in newcomer.text
    await coach.send("/patients")
    assert "only for coaches" in coach.text
    async with sessions() as db:
        assert (await db.scalars(select(Outbox).filter_by(kind="alert"))).all() == []


@pytest.mark.parametrize("when", ["9999-12-31 23:59", "9999-12-31 00:00", "2028-01-01 10:00"])
async def test_a_broadcast_too_far_ahead_is_answered_clearly(
        staff_engine: Engine, when: str) -> None:
    coach = await _coach(staff_engine)
    await _with_patients(staff_engine, coach, ["p1"])
    async with staff_engine.sessions() as db, db.begin():
        row = (await db.scalars(select(User).filter_by(channel_user_id="coach"))).one()
        row.timezone = "Pacific/Kiritimati"  # UTC+14: 9999-12-31 23:59 is past year 9999 in UTC
    await coach.send("/broadcast")
    await coach.send("Far future")
    await coach.press("Schedule")
    await coach.send(when)
    assert "days ahead" in coach.text or "not a real date" in coach.text
    await coach.send("2026-01-20 18:00")
    assert "sending at 2026-01-20 18:00" in coach.text


async def test_nul_bytes_in_a_broadcast_and_a_display_name_are_taken_out(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach = await _coach(staff_engine)
    await _with_patients(staff_engine, coach, ["p1"])
    await coach.send("/broadcast")
    await coach.send("Hello\x00 team \ud800!")
    await coach.press("Send now")
    assert "queued to 1 patients" in coach.text
    await staff_engine.handle(Inbound(channel="console", user_id="p1", chat_id="p1",
                                      display_name="Zed\x00 Null", text="/help"))
    async with sessions() as db:
        broadcast = (await db.scalars(select(Broadcast))).one()
        row = (await db.scalars(select(Outbox).filter_by(kind="broadcast"))).one()
    assert broadcast.text == "Hello team \ufffd!" and row.payload["text"].endswith(broadcast.text)
    assert (await _user(sessions, "p1")).display_name == "Zed Null"
