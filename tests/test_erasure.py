"""Erasure leaves no trace of the patient in any table: not their rows, not the alerts about
them queued for their coach, not audit entries naming them. Only an erasure event, no id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import Patient, enrolled
from conversations.engine import Engine
from storage.models import AuditLog, Base, Outbox

ADMIN = ("console", "root")


async def every_row(sessions: async_sessionmaker[DbSession]) -> dict[str, list[str]]:
    """Every row of every table, as text, table by table."""
    async with sessions() as db:
        out: dict[str, list[str]] = {}
        for table in Base.metadata.sorted_tables:
            rows = (await db.execute(select(table))).all()
            out[table.name] = [repr(tuple(row)) for row in rows]
        return out


async def test_delete_leaves_no_trace_in_any_table(
        staff_engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    coach = Patient(staff_engine, "coach")
    await coach.send("/start")
    admin = Patient(staff_engine, ADMIN[1])
    await admin.send("/grant coach console:coach")
    await coach.send("/invite")
    code = coach.text.split("Invite code: ")[1].split(" ")[0]
    zed = await enrolled(staff_engine, "zed2301")
    await zed.send(f"/join {code}")
    await zed.send("/ask A question from zed")  # a message, queued and audited
    await coach.send("/reply console:zed2301 An answer")  # audit: message, naming zed
    await zed.send("/pain")
    await zed.send("9")  # a spike: referred, and the coach alerted about "Name of zed2301"
    await zed.send("/resume")  # a clear request about zed, to the coach
    await coach.send("/clear console:zed2301")  # audit: lift_hold, naming zed
    assert "lifted" in coach.text.lower() or "cleared" in coach.text.lower(), coach.text
    await coach.send("/instruct console:zed2301 Gentle squats 🦵")  # a prescription, audited
    await coach.send("/exercise console:zed2301 squat off")
    await coach.send("/patient console:zed2301")  # audit: open_file, naming zed
    await zed.send("/mydata")  # audit: export
    await zed.send("/invite")  # audit: refused
    await zed.send("/clear console:coach")  # audit: refused, naming the coach
    await admin.send("/grant coach console:zed2301")  # audit: grant_coach, target zed
    await admin.send("/revoke coach console:zed2301")
    before = await every_row(sessions)
    assert any("Name of zed2301" in row for row in before["outbox"])
    assert sum("console:zed2301" in row for row in before["audit_log"]) >= 7
    assert len(before["messages"]) == 2
    assert len(before["prescription_changes"]) == 2

    await zed.send("/delete")
    await zed.send("DELETE")
    assert "everything I held about you is erased" in zed.text

    after = await every_row(sessions)
    assert after["prescription_changes"] == []
    for table, rows in after.items():
        for row in rows:
            assert "zed2301" not in row, (table, row)
    async with sessions() as db:
        kept = (await db.scalars(select(AuditLog).where(AuditLog.action == "erasure"))).all()
        coach_rows = (await db.scalars(select(Outbox))).all()
    assert [(a.actor, a.detail) for a in kept] == [("patient", {"channel": "console"})]
    # The coach's own messages (their role note) stay; only those about zed are gone.
    assert coach_rows and all("zed2301" not in repr(r.payload) for r in coach_rows)
