"""Every answer's bad forms get a clear re-ask, and the stored state does not move."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from conftest import CLEAN_SCREEN, WORST_AT, Patient, enrolled
from conversations.engine import Engine
from conversations.messages import ButtonToken, Inbound
from storage.models import ConversationState, PainReport, Session, User

HUGE = "x" * 10_000
EMOJI = "🦵🔥😀"


async def _state(sessions: async_sessionmaker[DbSession], user_id: str
                 ) -> tuple[str, str, dict, int]:
    async with sessions() as db:
        user = (await db.scalars(select(User).filter_by(channel_user_id=user_id))).one()
        state = await db.get(ConversationState, user.id)
        assert state is not None
        return state.flow, state.step, state.answers, state.version


async def _at_step(engine: Engine, answers: int) -> Patient:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.answer_all(*CLEAN_SCREEN[:answers])
    return patient


@pytest.mark.parametrize("bad", ["11", "-1", "7.5", "", "   ", HUGE, EMOJI, "seven", "1O"])
async def test_bad_pain_answers_reask(engine: Engine, sessions: async_sessionmaker[DbSession],
                                      bad: str) -> None:
    patient = await _at_step(engine, WORST_AT)  # waiting for worst pain
    before = await _state(sessions, "u1")
    assert before[1] == "worst_pain"
    await patient.send(bad)
    assert "whole number from 0 (no pain) to 10" in patient.text
    assert "worst knee pain" in patient.text  # the question again
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("bad", ["maybe", "", HUGE, EMOJI, "42"])
async def test_bad_yes_no_answers_reask(engine: Engine, sessions: async_sessionmaker[DbSession],
                                        bad: str) -> None:
    patient = await _at_step(engine, 1)
    before = await _state(sessions, "u1")
    await patient.send(bad)
    assert 'answer "yes" or "no"' in patient.text and "Safety question 1" in patient.text
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("bad", ["Mars/Olympus", "UTC+15", "", HUGE, EMOJI, "12345"])
async def test_unknown_timezone_reasks(engine: Engine, sessions: async_sessionmaker[DbSession],
                                       bad: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 3)
    before = await _state(sessions, "u1")
    assert before[1] == "timezone"
    await patient.send(bad)
    assert "do not know that timezone" in patient.text
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("good,stored", [("new york", "America/New_York"),
                                         ("UTC+5:30", "UTC+05:30"), ("europe/berlin",
                                                                     "Europe/Berlin")])
async def test_timezone_forms(engine: Engine, sessions: async_sessionmaker[DbSession],
                              good: str, stored: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 3)
    await patient.send(good)
    assert (await _state(sessions, "u1"))[2]["timezone"] == stored


@pytest.mark.parametrize("bad", ["25:00", "7:60", "noon-ish", "", HUGE, EMOJI, "13pm"])
async def test_bad_reminder_time_reasks(engine: Engine, sessions: async_sessionmaker[DbSession],
                                        bad: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 2)
    before = await _state(sessions, "u1")
    assert before[1] == "reminder_time"
    await patient.send(bad)
    assert "time of day" in patient.text
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("bad", ["someday", "", HUGE, EMOJI, "8"])
async def test_bad_days_reask(engine: Engine, sessions: async_sessionmaker[DbSession],
                              bad: str) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 1)
    before = await _state(sessions, "u1")
    await patient.send(bad)
    assert "mon wed fri" in patient.text
    assert await _state(sessions, "u1") == before


async def test_typed_days_are_understood(engine: Engine, sessions: async_sessionmaker[DbSession]
                                         ) -> None:
    patient = await _at_step(engine, len(CLEAN_SCREEN) - 1)
    await patient.send("Monday, Thursday")
    assert "on Mon, Thu at 07:00" in patient.text


async def test_stale_button_is_refused_and_state_kept(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 1)
    old_no = next(b.token for b in patient.buttons if b.label == "No")
    await patient.press("No")
    before = await _state(sessions, "u1")
    await patient.press_token(old_no)  # the keyboard of question 1, pressed again
    assert "earlier question" in patient.text and "Safety question 2" in patient.text
    assert any(r.edit_message_id and r.text == "" for r in patient.replies)
    assert await _state(sessions, "u1") == before


@pytest.mark.parametrize("forged", [
    "redflag_2|999|yes", "nonsense", "", "a" * 200, "redflag_2|1|<script>", "🦵|1|yes",
    "prompt|424242|done", "check|1|2",
])
async def test_forged_buttons_do_nothing(engine: Engine, sessions: async_sessionmaker[DbSession],
                                         forged: str) -> None:
    patient = await _at_step(engine, 2)
    before = await _state(sessions, "u1")
    await patient.press_token(forged)
    assert "earlier question" in patient.text
    assert await _state(sessions, "u1") == before


async def test_a_button_with_a_value_the_step_does_not_offer_is_refused(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 1)
    _, step, _, version = await _state(sessions, "u1")
    token = ButtonToken(step=step, ref=version, value="maybe").encode()
    await patient.press_token(token)
    assert "earlier question" in patient.text
    assert (await _state(sessions, "u1"))[3] == version


async def test_another_users_session_button_does_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    alice = await enrolled(engine, "alice")
    bob = await enrolled(engine, "bob")
    await alice.send("/today")
    async with sessions() as db:
        session = (await db.scalars(select(Session))).one()
    await bob.press_token(ButtonToken(step="prompt", ref=session.id, value="done").encode())
    assert "earlier question" in bob.text
    async with sessions() as db:
        assert (await db.get(Session, session.id)).status == "prompted"  # type: ignore[union-attr]


async def test_unknown_command_mid_flow_reasks(engine: Engine,
                                               sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 3)
    before = await _state(sessions, "u1")
    await patient.send("/frobnicate now")
    assert "do not know /frobnicate" in patient.text and "Safety question 3" in patient.text
    assert await _state(sessions, "u1") == before


async def test_commands_before_start_store_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = Patient(engine, "u1")
    for text in ("/today", "/pain", "hello", HUGE, EMOJI, "/delete"):
        await patient.send(text)
        assert "Send /start to begin" in patient.text
    await patient.press_token("redflag_1|0|yes")
    async with sessions() as db:
        assert (await db.scalars(select(User))).all() == []


async def test_pain_report_bad_forms_store_nothing(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await enrolled(engine, "u1")
    await patient.send("/pain")
    for bad in ("11", "-1", "7.5", "", HUGE, EMOJI):
        await patient.send(bad)
        assert "whole number" in patient.text
    async with sessions() as db:
        contexts = (await db.scalars(select(PainReport.context))).all()
    assert contexts == ["baseline"]


async def test_redelivered_update_is_handled_once(
        engine: Engine, sessions: async_sessionmaker[DbSession]) -> None:
    patient = await _at_step(engine, 1)
    await patient.send("no", update_id="777")
    assert "Safety question 2" in patient.text
    await patient.send("no", update_id="777")
    assert patient.replies == []
    assert (await _state(sessions, "u1"))[1] == "redflag_2"


async def test_inbound_must_be_exactly_one_kind() -> None:
    with pytest.raises(ValueError):
        Inbound(channel="console", user_id="u", chat_id="c", text="hi", button="x")
    with pytest.raises(ValueError):
        Inbound(channel="console", user_id="u", chat_id="c")
