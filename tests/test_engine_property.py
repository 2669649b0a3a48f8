"""Random sequences of inbound events for several users at once: nothing escapes, every stored
state stays valid, and no user's data changes because of another user's input."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_SCREEN, Patient
from conversations.clock import ManualClock
from conversations.commands import COMMANDS
from conversations.engine import FLOWS, Engine
from conversations.program.data import Program
from storage.models import ConversationState, ProgramState, User
from storage.repository import Repository

STATUSES = {"pending", "onboarding", "active", "paused", "referred", "stopped", "staff"}
USERS = 3
# All of Unicode (surrogates included: a channel can hand them over), weighted towards the
# characters that look like digits to str.isdigit() but are not to int().
ANY_CHAR = st.one_of(st.characters(codec=None, exclude_categories=()),
                     st.sampled_from("²³¹⑦⓪٣３𝟕⁰0123456789|"))
any_text = st.text(ANY_CHAR, max_size=30)

event = st.one_of(
    st.tuples(st.just("command"), st.sampled_from([*COMMANDS, "start", "frob"])),
    st.tuples(st.just("text"), st.sampled_from([*CLEAN_SCREEN, "DELETE", "yes", "11", ""])),
    st.tuples(st.just("text"), any_text),
    st.tuples(st.just("command"), any_text.map(lambda t: t.replace(" ", "") or "x")),
    st.tuples(st.just("press"), st.integers(min_value=0, max_value=12)),
    st.tuples(st.just("forged"), st.text(ANY_CHAR, max_size=70)),
    st.tuples(st.just("forged"), st.tuples(
        st.sampled_from([*FLOWS["onboarding"], "prompt", "check"]), any_text, any_text)
        .map("|".join)),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=30)),
)


async def _snapshot(sessions: async_sessionmaker[DbSession], prefix: str
                    ) -> dict[str, Any]:
    async with sessions() as db:
        repo = Repository(db)
        users = (await db.scalars(select(User).where(User.channel_user_id.startswith(prefix))
                                  )).all()
        return {u.channel_user_id: await repo.export_user(u.id) for u in users}


async def _check_valid(sessions: async_sessionmaker[DbSession], program: Program) -> None:
    async with sessions() as db:
        for user in (await db.scalars(select(User))).all():
            assert user.status in STATUSES, user.status
            state = await db.get(ConversationState, user.id)
            assert state is not None
            if state.flow != "idle":
                assert state.step in FLOWS[state.flow], (state.flow, state.step)
            level = await db.get(ProgramState, user.id)
            if level is not None:
                assert 1 <= level.level <= program.top_level


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=st.lists(st.tuples(st.integers(0, USERS - 1), event), max_size=45))
async def test_random_events_keep_every_user_valid_and_apart(
        engine: Engine, sessions: async_sessionmaker[DbSession], program: Program,
        clock: ManualClock, events: list[tuple[int, tuple[str, Any]]]) -> None:
    prefix = uuid.uuid4().hex[:8]
    patients = [Patient(engine, f"{prefix}-{i}") for i in range(USERS)]
    for who, (kind, value) in events:
        patient = patients[who]
        before = await _snapshot(sessions, prefix)
        if kind == "command":
            await patient.send(f"/{value}")
        elif kind == "text":
            await patient.send(value)
        elif kind == "press" and patient.buttons:
            await patient.press_token(patient.buttons[value % len(patient.buttons)].token)
        elif kind == "forged":
            await patient.press_token(value)
        elif kind == "wait":
            clock.advance(timedelta(hours=value))
        after = await _snapshot(sessions, prefix)
        for other in patients:
            if other is not patient:
                assert before.get(other.user_id) == after.get(other.user_id)
    await _check_valid(sessions, program)
