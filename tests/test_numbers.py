"""Numbers are read one way (conversations/numbers.py): Unicode digits that pass
str.isdigit() ("²", "⑦", "⓪") are not numbers anywhere, and never raise."""

from __future__ import annotations

import io

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.channels.console import ConsoleChannel
from conftest import Patient, enrolled
from conversations.clock import ManualClock
from conversations.engine import Engine
from conversations.localtime import parse_days, parse_time, parse_timezone
from conversations.messages import ButtonToken
from conversations.numbers import whole
from conversations.program.data import Program
from conversations.questions import parse_pain

UNICODE_DIGITS = ["²", "³", "⑦", "⓪", "¹⁰", "٣", "３", "𝟕", "1²"]


@pytest.mark.parametrize("text", ["+7", " 7", "1_0", "-0"])
def test_what_int_accepts_beyond_digits_is_no_number(text: str) -> None:
    assert whole(text) is None


@pytest.mark.parametrize("text", UNICODE_DIGITS)
def test_only_ascii_digits_are_numbers(text: str) -> None:
    assert whole(text) is None
    assert parse_pain(text) is None
    assert parse_days(text) is None
    assert ButtonToken.decode(f"consent|{text}|agree") is None


def test_whole_numbers_and_their_bounds() -> None:
    assert whole("007") == 7 and whole("10", 0, 10) == 10
    assert whole("11", 0, 10) is None and whole("0", 1) is None
    assert whole("9" * 13) is None and whole("") is None
    assert parse_time("٧:٣٠") is None and parse_timezone("UTC+٣") is None


@pytest.mark.parametrize("text", ["²", "⑦", "⓪", "³"])
async def test_unicode_digit_typed_at_a_button_question_is_reasked(engine: Engine,
                                                                   text: str) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")  # consent: two buttons, which "1" and "2" would pick
    await patient.send(text)
    assert "pick one of the buttons" in patient.text
    await patient.send("1")
    assert "Safety question 1" in patient.text


@pytest.mark.parametrize("token", ["consent|²|agree", "consent|⑦|agree", "prompt|⓪|done",
                                   "check|³|1"])
async def test_unicode_digits_in_callback_data_are_stale(engine: Engine, token: str) -> None:
    patient = Patient(engine, "u1")
    await patient.send("/start")
    await patient.press_token(token)
    assert "earlier question" in patient.text


async def test_patients_page_in_unicode_digits_shows_page_one(
        sessions: async_sessionmaker[DbSession], program: Program, clock: ManualClock) -> None:
    engine = Engine(sessions, program, clock, admins=frozenset({("console", "root")}))
    admin = Patient(engine, "root")
    await admin.send("/start")
    await enrolled(engine, "u1")
    for page in ("²", "⑦", "1000000"):
        await admin.send(f"/patients {page}")
        assert "no patients yet" in admin.text


async def test_the_terminal_survives_unicode_digits(engine: Engine) -> None:
    out = io.StringIO()
    console = ConsoleChannel(engine, "alice", stdin=io.StringIO("/start\n²\n⑦\n1\n"),
                             stdout=out)
    await console.run()
    assert "pick one of the buttons" in out.getvalue()
    assert "Safety question 1" in out.getvalue()
